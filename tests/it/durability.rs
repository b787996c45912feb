//! The local store's write protocol, watched with strace: a backup's
//! objects are each synced before their name appears, their directory is
//! synced after, and a snapshot's name appears only once the names of the
//! packs and index deltas stored before it are on disk. Lock objects are
//! written without syncs. (A power cut cannot be staged here; this checks
//! the order of the system calls that make one harmless.)

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{random_bytes, TestRepo, SMALL};

/// One completed call of interest, in the order strace saw it complete
/// (a call split into "unfinished" and "resumed" lines counts at its
/// resumption; a link counts at its start, which is what later calls
/// must follow).
#[derive(Debug)]
enum Call {
    /// fsync or fdatasync of a path, done.
    Sync(String),
    /// A link or rename made `to` appear, from `from`.
    Link { from: String, to: String },
}

/// Parses `strace -f -y` output for syncs (done, with `= 0`) and links.
fn parse(log: &str) -> Vec<Call> {
    let mut out = Vec::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else { continue };
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<... ") {
            if (r.starts_with("fsync resumed>") || r.starts_with("fdatasync resumed>")) && r.ends_with("= 0") {
                if let Some(path) = pending.remove(pid) {
                    out.push(Call::Sync(path));
                }
            }
            continue;
        }
        if rest.starts_with("fsync(") || rest.starts_with("fdatasync(") {
            // fdatasync(12</path/of/file>) = 0, or ... <unfinished ...>
            let Some(path) = rest.split_once('<').and_then(|(_, p)| p.split_once('>')).map(|(p, _)| p.to_string())
            else {
                continue;
            };
            if rest.ends_with("<unfinished ...>") {
                pending.insert(pid.to_string(), path);
            } else if rest.ends_with("= 0") {
                out.push(Call::Sync(path));
            }
            continue;
        }
        if rest.starts_with("linkat(") || rest.starts_with("link(") || rest.starts_with("rename") {
            let quoted: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
            if let [from, to, ..] = quoted.as_slice() {
                out.push(Call::Link { from: from.to_string(), to: to.to_string() });
            }
        }
    }
    out
}

fn parent(p: &str) -> String {
    Path::new(p).parent().map(|d| d.display().to_string()).unwrap_or_default()
}

#[test]
fn a_backups_objects_are_synced_before_and_after_their_names_appear() {
    // strace must be installed and allowed to trace (ptrace).
    let probe = Command::new("strace").args(["-qq", "-o", "/dev/null", "true"]).stdout(Stdio::null()).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("strace missing or not allowed to trace: write protocol not checked (.ci/run installs it)");
        return;
    }
    let r = TestRepo::with_init(SMALL);
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(40 + i, 400_000)).unwrap();
    }
    let log = r.path("strace.log");
    // The test's command (its environment is exactly what it sets), run
    // under strace.
    let c = r.command(&["backup", src.to_str().unwrap()]);
    let bin = c.get_program().to_owned();
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let mut traced = Command::new("strace");
    traced
        .env_clear()
        .args(["-f", "-y", "-qq", "-s", "512", "-o"])
        .arg(&log)
        .args(["-e", "trace=fsync,fdatasync,link,linkat,rename,renameat,renameat2", "--"])
        .arg(bin)
        .args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    let out = traced.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = parse(&std::fs::read_to_string(&log).unwrap());

    let repo = r.repo.display().to_string();
    let mut synced: Vec<String> = Vec::new();
    // Objects linked so far: (name, kind), and whether their directory
    // was synced after the link.
    let mut linked: Vec<(String, String, bool)> = Vec::new();
    let mut kinds_seen = std::collections::BTreeSet::new();
    for call in &calls {
        match call {
            Call::Sync(p) => {
                synced.push(p.clone());
                for (to, _, dir_done) in linked.iter_mut() {
                    if parent(to) == *p {
                        *dir_done = true;
                    }
                }
            }
            Call::Link { from, to } if to.starts_with(&repo) => {
                let kind = to.trim_start_matches(&repo).split('/').nth(3).unwrap_or("").to_string();
                if kind == "locks" {
                    assert!(!synced.contains(from), "a lock was synced: {from}");
                    continue;
                }
                assert!(synced.contains(from), "{to} linked before its bytes were synced ({from})");
                if kind == "snapshots" {
                    for (earlier, k, dir_done) in &linked {
                        assert!(*dir_done, "snapshot {to} linked before the name of {k} {earlier} was synced");
                    }
                }
                kinds_seen.insert(kind.clone());
                linked.push((to.clone(), kind, false));
            }
            Call::Link { .. } => {}
        }
    }
    for (to, _, dir_done) in &linked {
        assert!(dir_done, "{to}: its directory was never synced");
    }
    for k in ["packs", "index", "snapshots", "audit"] {
        assert!(kinds_seen.contains(k), "no {k} object seen in the trace: {kinds_seen:?}");
    }
}
