//! Locks judged stale on too little evidence. A prune that takes a
//! running backup's lock for stale deletes the backup's packs, and the
//! backup then commits a snapshot that names them. A lock is stale only
//! by the store's clock, or when its process is proven dead on this very
//! machine: same host, boot id and PID namespace, and the pid gone or
//! started at another time. Each test leaves the lock under test with a
//! real process stopped at the `backup-before-commit` pause point (packs
//! and index deltas stored, snapshot not), then kills it or lets it go.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{assert_code, assert_trees_equal, random_bytes, restored_at, stderr, TestRepo, BIN};

/// A tree of a few random files (several packs with 1 MiB packs).
fn source(r: &TestRepo) -> PathBuf {
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(100 + i, 700_000)).unwrap();
    }
    src
}

/// A backup of `src` stopped before it writes its snapshot record, with
/// `env` added; returns it and its pause directory.
fn paused_backup(r: &TestRepo, src: &Path, env: &[(&str, &str)]) -> (Child, PathBuf) {
    let pause = r.path(&format!("pause-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&pause).unwrap();
    let mut c = r.command(&[std::ffi::OsStr::new("backup"), src.as_os_str()]);
    c.env("STRONGROOM_TEST_PAUSE", "backup-before-commit").env("STRONGROOM_TEST_PAUSE_DIR", &pause);
    c.envs(env.iter().copied());
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pause.join("reached").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("backup exited ({status}) before its pause point:\n{}", stderr(&out));
        }
        assert!(Instant::now() < deadline, "backup never reached its pause point");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, pause)
}

/// Kills a paused backup (SIGKILL): its lock stays behind.
fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn packs(r: &TestRepo) -> Vec<String> {
    r.objects_under("tenants/default/packs/").into_iter().map(|(k, _)| k).collect()
}

fn locks(r: &TestRepo) -> Vec<PathBuf> {
    r.objects_under("tenants/default/locks/").into_iter().map(|(_, p)| p).collect()
}

/// `prune` with its own cache directory (another host or container).
fn prune(r: &TestRepo) -> Output {
    r.command(&["prune", "--cache-dir"]).arg(r.path("cache-other")).output().unwrap()
}

fn unlock_removed(r: &TestRepo) -> usize {
    r.json(&["unlock"])["removed"].as_array().unwrap().len()
}

/// Start time (field 22 of `/proc/self/stat`) of this test process.
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// Whether `unshare --pid --fork` runs here (it needs root or a user
/// namespace); the reason when it does not.
fn unshare_refused() -> Option<String> {
    match Command::new("unshare").args(["--pid", "--fork", "true"]).output() {
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(o) if !o.status.success() => Some(format!("unshare --pid --fork refused: {}", stderr(&o).trim())),
        Ok(_) => None,
    }
}

#[test]
fn a_prune_in_another_pid_namespace_of_the_same_host_waits_for_a_running_backup() {
    if let Some(why) = unshare_refused() {
        eprintln!("skipping the PID-namespace case: {why}");
        return;
    }
    let r = TestRepo::small();
    let src = source(&r);
    let (backup, pause) = paused_backup(&r, &src, &[]);
    let before = packs(&r);
    assert!(!before.is_empty(), "the paused backup stored no packs");

    // Same host name, same boot, another PID namespace: the backup's pid
    // does not exist there, which proves nothing.
    let base = r.command(&["prune"]);
    let mut c = Command::new("unshare");
    c.env_clear().args(["--pid", "--fork"]).arg(BIN).arg("prune").arg("--cache-dir").arg(r.path("cache-other"));
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert_code(&out, 11, "prune in a new PID namespace beside a running backup");
    assert!(stderr(&out).contains("locked by a shared lock"), "{}", stderr(&out));
    assert_eq!(packs(&r), before, "prune deleted packs of a running backup");

    std::fs::write(pause.join("go"), b"").unwrap();
    let out = backup.wait_with_output().unwrap();
    assert_code(&out, 0, "the backup let go");
    r.run(&["check", "--read-data"], 0);
    let target = r.path("target");
    r.ok(&[std::ffi::OsStr::new("restore"), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
}

#[test]
fn a_lock_whose_process_died_on_this_machine_is_stale_at_once() {
    let r = TestRepo::small();
    let src = source(&r);
    let (backup, _pause) = paused_backup(&r, &src, &[]);
    kill(backup);
    assert_eq!(locks(&r).len(), 1, "the killed backup left its lock");
    assert_eq!(unlock_removed(&r), 1, "unlock removes the dead process's lock at once");
    assert_code(&prune(&r), 0, "prune beside the lock of a dead process of this machine");
    r.run(&["check", "--read-data"], 0);
}

#[test]
fn a_lock_of_this_host_name_from_another_boot_is_stale_only_by_the_store_clock() {
    let r = TestRepo::small();
    let src = source(&r);
    let other_boot = r#"{"boot_id": "00000000-0000-4000-8000-000000000000"}"#;
    let (backup, _pause) = paused_backup(&r, &src, &[("STRONGROOM_TEST_LOCK_OWNER", other_boot)]);
    kill(backup);
    let before = packs(&r);
    let out = prune(&r);
    assert_code(&out, 11, "prune beside a lock of this host name from another boot");
    assert!(stderr(&out).contains("locked by a shared lock"), "{}", stderr(&out));
    assert_eq!(unlock_removed(&r), 0, "unlock removed a lock it cannot prove dead");
    assert_eq!(packs(&r), before);

    // Ten minutes old by the store's clock (the file's mtime): stale.
    let lock = &locks(&r)[0];
    let old = std::fs::metadata(lock).unwrap().modified().unwrap() - Duration::from_secs(600);
    let old = old.duration_since(std::time::UNIX_EPOCH).unwrap();
    crate::support::set_mtime(lock, old.as_secs() as i64, 0);
    assert_eq!(unlock_removed(&r), 1);
    assert_code(&prune(&r), 0, "prune beside an expired lock");
    r.run(&["check", "--read-data"], 0);
}

#[test]
fn a_reused_pid_does_not_keep_a_dead_process_lock_alive() {
    let r = TestRepo::small();
    let src = source(&r);
    // The recorded pid runs (it is this test), started when the test did:
    // the lock's process may be that one, so the lock is live.
    let me = std::process::id();
    let same = format!(r#"{{"pid": {me}, "start_time": {}}}"#, own_start_time());
    let (backup, _pause) = paused_backup(&r, &src, &[("STRONGROOM_TEST_LOCK_OWNER", same.as_str())]);
    kill(backup);
    assert_code(&prune(&r), 11, "prune beside a lock whose process runs");
    assert_eq!(unlock_removed(&r), 0);
    for l in locks(&r) {
        std::fs::remove_file(l).unwrap();
    }

    // The same pid with another start time: the pid was reused, the
    // lock's process is dead.
    let reused = format!(r#"{{"pid": {me}, "start_time": {}}}"#, own_start_time() + 1);
    let (backup, _pause) = paused_backup(&r, &src, &[("STRONGROOM_TEST_LOCK_OWNER", reused.as_str())]);
    kill(backup);
    assert_code(&prune(&r), 0, "prune beside a lock whose pid was reused");
    r.run(&["check", "--read-data"], 0);
}
