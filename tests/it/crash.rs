//! Crashes and interruptions mid-backup: no half snapshot appears, the repository stays consistent, and a rerun completes and deduplicates.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{assert_code, assert_trees_equal, random_bytes, restored_at, stderr, u64_field, TestRepo};

/// Writes `n` random files of `size` bytes each below `dir`.
fn random_files(dir: &Path, seed: u64, n: u64, size: usize) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("data-{i}.bin")), random_bytes(seed + i, size)).unwrap();
    }
    n * size as u64
}

fn snapshot_ids(r: &TestRepo) -> Vec<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// Restores snapshot `id` into a fresh directory and compares it with `src`.
fn assert_restores(r: &TestRepo, id: &str, src: &Path) {
    let t = r.path(&format!("restore-{}", &id[..8]));
    let _ = std::fs::remove_dir_all(&t);
    r.ok(&["restore", id, "--target", t.to_str().unwrap()]);
    assert_trees_equal(src, &restored_at(&t, src));
    std::fs::remove_dir_all(&t).unwrap();
}

/// `check` (with `--read-data` if asked) exits 0; unindexed packs left by
/// the crash are only warnings.
fn assert_check_passes(r: &TestRepo, read_data: bool, what: &str) {
    let args: &[&str] = if read_data { &["check", "--read-data"] } else { &["check"] };
    let out = r.cmd(args);
    assert_code(&out, 0, &format!("check after {what}"));
}

/// A small repository with one saved snapshot of `base/`, and a larger
/// `src/` not yet backed up.
struct Fixture {
    repo: TestRepo,
    base: PathBuf,
    base_id: String,
    src: PathBuf,
}

fn fixture() -> Fixture {
    let repo = TestRepo::small();
    let base = repo.path("base");
    random_files(&base, 100, 2, 150_000);
    std::fs::write(base.join("note.txt"), b"saved before the crash\n").unwrap();
    let base_id = repo.backup(&[&base], &[])["snapshot_id"].as_str().unwrap().to_string();
    let src = repo.path("src");
    random_files(&src, 200, 3, 1_100_000);
    Fixture { repo, base, base_id, src }
}

/// A copy of the fixture's repository that keeps its warm catalog, as the
/// crashed host would.
fn copy_with_cache(f: &Fixture) -> TestRepo {
    let c = f.repo.copy();
    crate::support::copy_dir(&f.repo.cache, &c.cache);
    c
}

fn backup_with_fault(r: &TestRepo, src: &Path, fault: &str) -> Output {
    r.command(&["backup", "--json", src.to_str().unwrap()]).env("STRONGROOM_FAULT", fault).output().unwrap()
}

/// After a failed backup: no snapshot, a passing check, the old snapshot
/// intact, and a rerun that succeeds and restores identically.
fn assert_recovers(r: &TestRepo, f: &Fixture, out: &Output, what: &str) {
    assert!(!String::from_utf8_lossy(&out.stdout).contains("snapshot_id"), "{what}: a snapshot was reported");
    assert_eq!(snapshot_ids(r), vec![f.base_id.clone()], "{what}: the snapshot list changed");
    assert_check_passes(r, true, what);
    assert_restores(r, &f.base_id, &f.base);
    let rerun = r.backup(&[&f.src], &[]);
    assert_restores(r, rerun["snapshot_id"].as_str().unwrap(), &f.src);
}

/// Runs the backup of `src` with `{mode}:N` for N = 1, 2, … until a run
/// makes fewer than N store writes (and so succeeds); each failed run is
/// checked with `failed` and [`assert_recovers`]. The number of packs
/// varies a little between runs (blobs go to one of two open packs at
/// random), so the count is found by running rather than fixed up front.
fn fault_each_store_write(mode: &str, failed: &dyn Fn(&Output, &str)) {
    let f = fixture();
    for n in 1..=64 {
        let what = format!("{mode}:{n}");
        let r = copy_with_cache(&f);
        let out = backup_with_fault(&r, &f.src, &what);
        if out.status.success() {
            // Past the last write: this run is a clean backup.
            assert!(n > 5, "the backup should write several packs, an index and a snapshot; it wrote {}", n - 1);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_restores(&r, v["snapshot_id"].as_str().unwrap(), &f.src);
            return;
        }
        failed(&out, &what);
        if snapshot_ids(&r).len() == 2 {
            // The fault hit the audit entry, the one write after the
            // snapshot record: the backup is committed and says so.
            if mode == "fail-put" {
                assert!(stderr(&out).contains("backup completed, but its audit entry"), "{what}: {}", stderr(&out));
            }
            let new_id = snapshot_ids(&r).into_iter().find(|id| *id != f.base_id).unwrap();
            assert_check_passes(&r, true, &what);
            assert_restores(&r, &new_id, &f.src);
            continue;
        }
        assert_recovers(&r, &f, &out, &what);
    }
    panic!("{mode}: the backup never got past its 64th store write");
}

#[test]
fn abort_before_each_store_write_leaves_a_consistent_repository() {
    fault_each_store_write("abort-put", &|out, what| {
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{what}: expected an abort, got {:?}", out.status);
    });
}

#[test]
fn failure_of_each_store_write_fails_the_backup_cleanly() {
    fault_each_store_write("fail-put", &|out, what| {
        assert_code(out, 1, what);
        assert!(stderr(out).contains("injected fault"), "{what}: the store error is not reported:\n{}", stderr(out));
    });
}

/// Waits until the repository holds at least `n` packs, or the child ends.
fn wait_for_packs(r: &TestRepo, child: &mut std::process::Child, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if r.objects_under("tenants/default/packs/").len() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_a_backup_with_exit_130_and_the_rerun_dedups() {
    let r = TestRepo::small();
    let base = r.path("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("f"), b"before").unwrap();
    let base_id = r.backup(&[&base], &[])["snapshot_id"].as_str().unwrap().to_string();
    let src = r.path("src");
    let size = random_files(&src, 300, 6, 10_000_000);

    let mut child = r
        .command(&["backup", "--json", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Interrupt once some packs are stored, so the rerun has something to reuse.
    wait_for_packs(&r, &mut child, 4);
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        // The backup finished before the signal: nothing to check here.
        return;
    }
    assert_code(&out, 130, "interrupted backup");
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(snapshot_ids(&r), vec![base_id.clone()], "an interrupted backup left a snapshot");
    assert_check_passes(&r, false, "an interrupt");
    assert_restores(&r, &base_id, &base);
    let rerun = r.backup(&[&src], &[]);
    assert!(u64_field(&rerun, "added_bytes") < size, "the rerun reused nothing: {rerun}");
    assert_restores(&r, rerun["snapshot_id"].as_str().unwrap(), &src);
}

#[test]
fn sigkill_at_increasing_moments_never_leaves_a_broken_repository() {
    let r = TestRepo::small();
    let base = r.path("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("f"), b"before").unwrap();
    let base_id = r.backup(&[&base], &[])["snapshot_id"].as_str().unwrap().to_string();
    let src = r.path("src");
    let size = random_files(&src, 400, 4, 4_000_000);

    let mut saved = vec![base_id.clone()];
    // 42 kill moments here plus one before each store write in
    // `abort_before_each_store_write_…` (8 or more): at least 50 per backup.
    for i in 0..42u64 {
        let what = format!("SIGKILL {i}");
        let child = r
            .command(&["backup", "--json", src.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + i * 30));
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let out = child.wait_with_output().unwrap();
        assert!(!stderr(&out).contains("panicked"), "{what}: {}", stderr(&out));
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            saved.push(v["snapshot_id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{what}: {:?}\n{}", out.status, stderr(&out));
        }
        // A kill between the snapshot write and the report leaves a
        // snapshot nobody was told about: it must then be complete.
        for id in snapshot_ids(&r) {
            if !saved.contains(&id) {
                assert_restores(&r, &id, &src);
                saved.push(id);
            }
        }
        assert_eq!(snapshot_ids(&r).len(), saved.len(), "{what}: a reported snapshot is gone");
        assert_check_passes(&r, false, &what);
    }
    assert_check_passes(&r, true, "the SIGKILL loop");
    assert_restores(&r, &base_id, &base);
    // No dedup is asserted here: index deltas are written every 16 packs
    // (or 15 s) and at the end, so a killed backup of fewer packs leaves
    // only unindexed packs (check warns; prune or repair handles them).
    let rerun = r.backup(&[&src], &[]);
    assert_eq!(u64_field(&rerun, "logical_bytes"), size);
    assert_restores(&r, rerun["snapshot_id"].as_str().unwrap(), &src);
}
