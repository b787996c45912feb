//! Another local user reading what strongroom leaves on disk: key slots
//! of a local repository (password-wrapped keys, to guess at offline),
//! the cache (catalogs with plaintext file names, the escrow pin, the
//! audit memory). Whatever the umask, what strongroom creates there is
//! 0600 (files) and 0700 (directories). And the plaintext erasure record
//! at the repository root names no host and no user.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{assert_code, random_bytes, stderr, TestRepo, BIN};

/// Runs the binary as [`TestRepo::command`] does, under umask 022 (the
/// usual default, which leaves new files readable by everyone).
fn run_umask_022<S: AsRef<OsStr>>(r: &TestRepo, args: &[S], env: &[(&str, &str)], code: i32) -> Output {
    let base = r.command(args);
    let mut c = Command::new("sh");
    c.env_clear().arg("-c").arg("umask 022 && exec \"$0\" \"$@\"").arg(BIN).args(args);
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.envs(env.iter().copied()).stdin(std::process::Stdio::null());
    let out = c.output().unwrap();
    let words: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy().to_string()).collect();
    assert_code(&out, code, &format!("umask 022; strongroom {}", words.join(" ")));
    out
}

/// Every entry below `root` (and `root`) that is not 0600 (file) or 0700
/// (directory), with its mode.
fn not_private(root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let mode = md.mode() & 0o7777;
        let want = if md.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            bad.push(format!("{} {mode:04o}", p.display()));
        }
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    bad
}

#[test]
fn with_umask_022_every_object_and_directory_of_a_new_local_repository_and_its_cache_is_private() {
    let r = TestRepo::uninitialized();
    run_umask_022(&r, &["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2", "--pack-size-mib", "1"], &[], 0);
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random_bytes(1, 1_500_000)).unwrap();
    std::fs::write(src.join("b"), b"small").unwrap();
    run_umask_022(&r, &[OsStr::new("backup"), src.as_os_str()], &[], 0);
    run_umask_022(
        &r,
        &["tenant", "add", "second", "--kdf-memory-kib", "19456", "--kdf-passes", "2"],
        &[("STRONGROOM_NEW_PASSWORD", "pw")],
        0,
    );
    run_umask_022(&r, &["check", "--read-data"], &[], 0);
    run_umask_022(&r, &["forget", "--keep-last", "1", "--prune"], &[], 0);

    assert!(
        !r.objects_under("tenants/default/keys/").is_empty() && !r.objects_under("tenants/second/keys/").is_empty()
    );
    assert!(r.cache.exists(), "the commands left a cache");
    let bad = not_private(&r.repo);
    assert!(bad.is_empty(), "repository entries others may read:\n{}", bad.join("\n"));
    let bad = not_private(&r.cache);
    assert!(bad.is_empty(), "cache entries others may read:\n{}", bad.join("\n"));
}

#[test]
fn check_warns_about_key_slots_of_an_existing_repository_that_others_can_read_and_leaves_them() {
    use std::os::unix::fs::PermissionsExt;
    let r = TestRepo::new();
    let out = r.run(&["check"], 0);
    assert!(!stderr(&out).contains("key slot"), "{}", stderr(&out));
    let (name, slot) = r.objects_under("tenants/default/keys/").remove(0);
    std::fs::set_permissions(&slot, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = r.run(&["check"], 0);
    let err = stderr(&out);
    assert!(err.contains(&format!("warning: key slot {name}: mode 0644")), "{err}");
    assert_eq!(std::fs::metadata(&slot).unwrap().mode() & 0o777, 0o644, "check changed a mode");
}

#[test]
fn an_erasure_record_names_no_host_and_no_user() {
    let r = TestRepo::new();
    let add = r
        .command(&["tenant", "add", "gone", "--kdf-memory-kib", "19456", "--kdf-passes", "2"])
        .env("STRONGROOM_NEW_PASSWORD", "pw-gone")
        .output()
        .unwrap();
    assert_code(&add, 0, "tenant add gone");
    let erase = r
        .command(&["tenant", "erase", "gone", "--yes"])
        .env("STRONGROOM_TENANT", "gone")
        .env("STRONGROOM_PASSWORD", "pw-gone")
        .output()
        .unwrap();
    assert_code(&erase, 0, "tenant erase gone");
    let records = r.objects_under("erasures/");
    assert_eq!(records.len(), 1);
    let bytes = std::fs::read(&records[0].1).unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut keys: Vec<&str> = rec.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["bytes_deleted", "objects_deleted", "tenant", "time"], "{rec}");
    assert_eq!(rec["tenant"], "gone");
    let text = String::from_utf8_lossy(&bytes);
    let host = gethostname_of_this_machine();
    assert!(host.len() < 3 || !text.contains(&host), "the record names the host: {text}");
}

fn gethostname_of_this_machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
