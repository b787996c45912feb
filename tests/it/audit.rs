//! The tenant audit log: every state-changing command, every read of file
//! contents and every escrow opening appends a
//! sealed, hash-chained entry; `audit verify` names a removed, reordered
//! or altered entry, and a log cut short at its end on a host that saw it
//! longer.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{assert_code, random_bytes, stderr, TestRepo};

fn entries(r: &TestRepo) -> Vec<Value> {
    match r.json(&["audit"]) {
        Value::Array(v) => v,
        other => panic!("audit --json is not an array: {other}"),
    }
}

fn entry_files(r: &TestRepo) -> Vec<PathBuf> {
    r.objects_under("tenants/default/audit/").into_iter().map(|(_, p)| p).collect()
}

/// A repository whose log holds init, two backups, a failed backup, a
/// hold, a forget and a prune.
fn logged_repo() -> TestRepo {
    let r = TestRepo::small();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), random_bytes(1, 200_000)).unwrap();
    r.backup(&[&data], &["--tag", "first"]);
    std::fs::write(data.join("b.bin"), random_bytes(2, 100_000)).unwrap();
    r.backup(&[&data], &[]);
    // Fails after opening: an entry with result "error".
    let out = r.run(&["backup", "--parent", "ffffffff", data.to_str().unwrap()], 1);
    assert!(stderr(&out).contains("ffffffff"), "{}", stderr(&out));
    r.ok(&["hold", "add", "latest", "--reason", "legal"]);
    r.ok(&["forget", "--keep-last", "1"]);
    r.ok(&["prune"]);
    r
}

#[test]
fn commands_append_chained_entries_and_export() {
    let r = logged_repo();
    let e = entries(&r);
    let commands: Vec<&str> = e.iter().map(|x| x["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["init", "backup", "backup", "backup", "hold add", "forget", "prune"], "{e:#?}");
    for (i, x) in e.iter().enumerate() {
        assert_eq!(x["seq"].as_u64(), Some(i as u64 + 1));
        assert!(!x["host"].as_str().unwrap().is_empty());
        assert!(!x["user"].as_str().unwrap().is_empty());
    }
    assert_eq!(e[1]["result"], "ok");
    assert_eq!(e[1]["snapshots"].as_array().unwrap().len(), 1, "backup names its snapshot");
    assert!(e[1]["bytes"].as_u64().unwrap() > 200_000, "backup records the bytes added");
    assert_eq!(e[3]["result"], "error");
    assert!(e[3]["error"].as_str().unwrap().contains("ffffffff"));
    assert_eq!(e[5]["snapshots"].as_array().unwrap().len(), 1, "forget names the removed snapshot");
    assert!(e[1]["args"].as_array().unwrap().iter().any(|a| a == "backup"));

    let csv = r.ok(&["audit", "export", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "seq,prev,time,host,user,command,args,snapshots,bytes,result,error,paths,opened_with");
    assert_eq!(lines.len(), e.len() + 1);
    let json: Value = serde_json::from_str(&r.ok(&["audit", "export", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), e.len());

    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["entries"].as_u64(), Some(e.len() as u64));
    // Reading commands add nothing.
    r.ok(&["snapshots"]);
    assert_eq!(entries(&r).len(), e.len());
}

fn verify_fails(r: &TestRepo, needle: &str) {
    let out = r.run(&["audit", "verify"], 1);
    assert!(stderr(&out).contains(needle), "expected {needle:?} in:\n{}", stderr(&out));
}

#[test]
fn verify_names_removed_reordered_altered_and_truncated_entries() {
    let r = logged_repo();
    let files = entry_files(&r);
    assert_eq!(files.len(), 7);

    // Removed from the middle.
    let c = r.copy();
    std::fs::remove_file(&entry_files(&c)[2]).unwrap();
    verify_fails(&c, "entry 3 is missing");

    // Two entries swapped.
    let c = r.copy();
    let f = entry_files(&c);
    let tmp = c.path("swap");
    std::fs::rename(&f[3], &tmp).unwrap();
    std::fs::rename(&f[4], &f[3]).unwrap();
    std::fs::rename(&tmp, &f[4]).unwrap();
    verify_fails(&c, "entry 4: holds entry 5");

    // One byte altered.
    let c = r.copy();
    let f = entry_files(&c);
    let mut b = std::fs::read(&f[1]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&f[1], b).unwrap();
    verify_fails(&c, "entry 2: altered or damaged");

    // An entry replaced by a well-formed one from another log position:
    // entry 5 rewritten with entry 6's bytes fails the chain at 5.
    let c = r.copy();
    let f = entry_files(&c);
    std::fs::copy(&f[5], &f[4]).unwrap();
    verify_fails(&c, "entry 5: holds entry 6");

    // Cut off at the end: only a host that saw the longer log can tell.
    std::fs::remove_file(files.last().unwrap()).unwrap();
    verify_fails(&r, "entries 7 to 7 are missing");
    let fresh_host = r.copy();
    let out = fresh_host.run(&["audit", "verify"], 0);
    assert_code(&out, 0, "a host without memory of the log");
}

#[test]
fn appends_from_concurrent_processes_all_land() {
    let r = TestRepo::new();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x"), b"x").unwrap();
    // Holds are exclusive-locked; backups share the lock and run at once.
    let children: Vec<_> = (0..3)
        .map(|_| {
            r.command(&["backup", "--lock-wait", "60s", data.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        assert_code(&c.wait_with_output().unwrap(), 0, "concurrent backup");
    }
    let e = entries(&r);
    assert_eq!(e.len(), 4, "init and three backups: {e:#?}");
    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn two_hosts_taking_turns_keep_one_contiguous_chain() {
    // Each host chains to the entry it wrote last without listing the log;
    // the other host's entries in between make that first try fail, and
    // the retry finds the true end.
    let r = TestRepo::new();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x"), b"x").unwrap();
    let other_cache = r.path("other-host-cache");
    for turn in 0..3 {
        r.backup(&[&data], &[]);
        let out =
            r.command(&["backup", data.to_str().unwrap()]).env("STRONGROOM_CACHE_DIR", &other_cache).output().unwrap();
        assert_code(&out, 0, &format!("backup on the other host, turn {turn}"));
    }
    let e = entries(&r);
    let seqs: Vec<u64> = e.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>(), "init and six backups, in one chain: {e:#?}");
    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn a_host_appending_after_its_own_entry_does_not_list_the_log() {
    let r = TestRepo::new();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x"), b"x").unwrap();
    r.backup(&[&data], &[]);
    let out = r.run(&["-vvv", "backup", data.to_str().unwrap()], 0);
    let log = stderr(&out);
    let requests: Vec<&str> = log.lines().filter_map(|l| l.split_once("store request: ").map(|(_, x)| x)).collect();
    assert!(
        requests.iter().any(|x| x.starts_with("put ") && x.contains("/audit/")),
        "the entry is written: {requests:#?}"
    );
    assert!(
        !requests.iter().any(|x| x.starts_with("list ") && x.contains("audit")),
        "no listing of the log: {requests:#?}"
    );
}

/// The entries after the first `n`.
fn entries_after(r: &TestRepo, n: usize) -> Vec<Value> {
    entries(r).split_off(n)
}

/// A small repository with one backup of `data` (a.bin and sub/b.bin);
/// returns it with the data directory.
fn backed_up() -> (TestRepo, PathBuf) {
    let r = TestRepo::small();
    let data = r.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.bin"), random_bytes(3, 70_000)).unwrap();
    std::fs::write(data.join("sub/b.bin"), random_bytes(4, 30_000)).unwrap();
    r.backup(&[&data], &[]);
    (r, data)
}

#[test]
fn reads_of_file_contents_append_entries_naming_snapshot_paths_and_key() {
    let (r, data) = backed_up();
    let id = r.snapshots()[0]["id"].as_str().unwrap().to_string();
    let before = entries(&r).len();
    // Metadata reads add nothing; neither does a check of metadata only.
    r.ok(&["snapshots"]);
    r.ok(&["ls", "latest"]);
    r.ok(&["check"]);
    assert_eq!(entries(&r).len(), before, "{:#?}", entries(&r));

    let a = data.join("a.bin");
    let dumped = r.run(&["dump", "latest", a.to_str().unwrap()], 0);
    assert_eq!(dumped.stdout.len(), 70_000);
    let target = r.path("restored");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    r.ok(&["verify-restore", "latest"]);
    r.ok(&["check", "--read-data"]);
    let replica = TestRepo::uninitialized();
    r.ok(&["init", "--repo", replica.repo.to_str().unwrap(), "--copy-keys-from", r.repo.to_str().unwrap()]);
    r.ok(&["copy", "--to", replica.repo.to_str().unwrap()]);

    let e = entries_after(&r, before);
    let commands: Vec<&str> = e.iter().map(|x| x["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["dump", "restore", "verify-restore", "check", "copy (source)"], "{e:#?}");
    for x in &e {
        assert_eq!(x["result"], "ok", "{x}");
        assert_eq!(x["opened_with"], "password", "{x}");
    }
    assert_eq!(e[0]["snapshots"][0], id.as_str());
    assert_eq!(e[0]["paths"][0], a.to_str().unwrap(), "dump names the file it read");
    assert_eq!(e[0]["bytes"], 70_000);
    assert_eq!(e[1]["snapshots"][0], id.as_str());
    assert_eq!(e[1]["bytes"], 100_000, "restore records the bytes it wrote");
    assert!(e[1].get("paths").is_none(), "a whole-snapshot restore names no paths: {}", e[1]);
    assert_eq!(e[2]["snapshots"][0], id.as_str());
    assert_eq!(e[4]["snapshots"][0], id.as_str(), "copy names the source snapshot it read");
    // The target's log has the copy itself.
    let replica_log = replica.json(&["audit"]);
    let last = replica_log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["command"], "copy", "{last}");

    // A restore of a subtree names it.
    let sub = data.join("sub");
    let t2 = r.path("restored-sub");
    r.ok(&["restore", &format!("latest:{}", sub.display()), "--target", t2.to_str().unwrap()]);
    let last = entries(&r).pop().unwrap();
    assert_eq!(last["paths"][0], sub.to_str().unwrap(), "{last}");

    let csv = r.ok(&["audit", "export", "--format", "csv"]);
    assert_eq!(
        csv.lines().next().unwrap(),
        "seq,prev,time,host,user,command,args,snapshots,bytes,result,error,paths,opened_with"
    );
    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn entries_written_before_paths_and_key_kind_were_recorded_still_verify() {
    let (r, data) = backed_up();
    // An entry as earlier versions wrote it: no `paths`, no `opened_with`.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = r.open_library(&rt);
    let old = strongroom_core::audit::Record { command: "backup".into(), ..Default::default() };
    rt.block_on(strongroom_core::audit::append(repo.scope(), repo.host_memory(), &old)).unwrap();
    drop(repo);
    r.run(&["dump", "latest", data.join("a.bin").to_str().unwrap()], 0);
    let e = entries(&r);
    let n = e.len();
    assert!(e[n - 2].get("opened_with").is_none(), "{}", e[n - 2]);
    assert_eq!(e[n - 1]["opened_with"], "password");
    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["entries"].as_u64(), Some(n as u64));
}

/// Replaces the tenant's audit directory with a file: no entry can be
/// written (even as root, unlike a read-only directory).
fn break_audit_log(r: &TestRepo) {
    let dir = r.repo.join("tenants/default/audit");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
}

#[test]
fn escrow_openings_are_logged_before_any_read_or_refused() {
    let r = TestRepo::uninitialized();
    let secret = r.path("escrow.secret");
    let public = r.path("escrow.public");
    r.ok(&["escrow", "keygen", "--secret-out", secret.to_str().unwrap(), "--public-out", public.to_str().unwrap()]);
    let mut init = vec!["init", "--escrow-key", public.to_str().unwrap()];
    init.extend_from_slice(&crate::support::KDF);
    r.ok(&init);
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), random_bytes(5, 10_000)).unwrap();
    r.backup(&[&data], &[]);
    let a = data.join("a.bin");
    let escrow = |args: &[&str], code: i32| {
        let mut all = vec!["--escrow-secret", secret.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut c = r.command(&all);
        c.env_remove("STRONGROOM_PASSWORD");
        let out = c.output().unwrap();
        assert_code(&out, code, &all.join(" "));
        out
    };

    let before = entries(&r).len();
    escrow(&["snapshots"], 0);
    escrow(&["dump", "latest", a.to_str().unwrap()], 0);
    let e = entries_after(&r, before);
    let commands: Vec<&str> = e.iter().map(|x| x["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["escrow open", "escrow open", "dump"], "{e:#?}");
    for x in &e {
        assert_eq!(x["opened_with"], "escrow", "{x}");
    }
    assert!(e[0]["args"].as_array().unwrap().iter().any(|a| a == "snapshots"), "{}", e[0]);

    // No log, no read: the escrow-opened dump stops before any byte.
    let broken = r.copy();
    break_audit_log(&broken);
    let mut c = broken.command(&["--escrow-secret", secret.to_str().unwrap(), "dump", "latest", a.to_str().unwrap()]);
    c.env_remove("STRONGROOM_PASSWORD");
    let out = c.output().unwrap();
    assert_code(&out, 1, "escrow dump without an audit log");
    assert!(out.stdout.is_empty(), "{} bytes were returned", out.stdout.len());
    assert!(stderr(&out).contains("opened with the escrow secret"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was read"), "{}", stderr(&out));
    // An ordinary read completes, then fails for want of its entry.
    let out = broken.run(&["dump", "latest", a.to_str().unwrap()], 1);
    assert_eq!(out.stdout.len(), 10_000);
    assert!(stderr(&out).contains("dump completed, but its audit entry could not be written"), "{}", stderr(&out));
}
