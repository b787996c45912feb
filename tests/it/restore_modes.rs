//! Restore into a target that already has files: `--overwrite` modes
//! (if-changed keeps what matches and so resumes an interrupted restore,
//! if-newer merges, never keeps, always rewrites), `--delete`, `--dry-run`
//! changes nothing, `--safety-snapshot` saves the target first, and files
//! that cannot be written are reported one line each with exit 1.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::*;

fn restore(r: &TestRepo, target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    r.json(&args)
}

fn ctime(p: &Path) -> (i64, i64) {
    let md = std::fs::symlink_metadata(p).unwrap();
    (md.ctime(), md.ctime_nsec())
}

#[test]
fn if_changed_keeps_matching_files_and_rewrites_the_rest() {
    let r = TestRepo::small();
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let target = r.path("t");
    let first = restore(&r, &target, &[]);
    assert!(u64_field(&first, "files") > 0 && u64_field(&first, "kept") == 0, "{first}");
    let at = restored_at(&target, &src);

    // A rerun writes nothing: every file is kept (size and mtime match).
    let big_ctime = ctime(&at.join("big.bin"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = restore(&r, &target, &[]);
    assert_eq!(u64_field(&again, "files"), 0, "{again}");
    assert!(u64_field(&again, "kept") > 0, "{again}");
    assert_eq!(ctime(&at.join("big.bin")), big_ctime, "big.bin was rewritten");
    assert_trees_equal(&src, &at);

    // An interrupted restore leaves files of full length with a fresh
    // mtime: one whose content is complete is kept (only its mtime is
    // fixed); one with a wrong byte, or another size, is rewritten.
    set_mtime(&at.join("sub/notes.md"), 1_800_000_000, 0);
    flip_middle_byte(&at.join("big.bin"));
    std::fs::write(at.join("hello.txt"), b"other content, other size\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let resumed = restore(&r, &target, &[]);
    assert_eq!(u64_field(&resumed, "files"), 2, "big.bin and hello.txt rewritten: {resumed}");
    // (notes.md was kept by content; its mtime is the snapshot's again.)
    assert_trees_equal(&src, &at);

    // --overwrite always rewrites everything.
    let always = restore(&r, &target, &["--overwrite", "always"]);
    assert_eq!(u64_field(&always, "kept"), 0, "{always}");
    assert_eq!(u64_field(&always, "files"), u64_field(&first, "files"));
    assert_trees_equal(&src, &at);
}

#[test]
fn if_newer_merges_and_never_keeps_every_existing_file() {
    let r = TestRepo::small();
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let target = r.path("t");
    restore(&r, &target, &[]);
    let at = restored_at(&target, &src);

    // Newer in the target: kept by if-newer; older and different: replaced.
    std::fs::write(at.join("hello.txt"), b"edited after the backup\n").unwrap();
    std::fs::write(at.join("run.sh"), b"old and different\n").unwrap();
    set_mtime(&at.join("run.sh"), 1_000_000_000, 0);
    let merged = restore(&r, &target, &["--overwrite", "if-newer"]);
    assert_eq!(u64_field(&merged, "files"), 1, "{merged}");
    assert_eq!(std::fs::read(at.join("hello.txt")).unwrap(), b"edited after the backup\n");
    assert_eq!(std::fs::read(at.join("run.sh")).unwrap(), std::fs::read(src.join("run.sh")).unwrap());

    // never: even an older, different file stays; missing ones are restored.
    std::fs::write(at.join("run.sh"), b"old and different\n").unwrap();
    set_mtime(&at.join("run.sh"), 1_000_000_000, 0);
    std::fs::remove_file(at.join("secret.key")).unwrap();
    let never = restore(&r, &target, &["--overwrite", "never"]);
    assert_eq!(u64_field(&never, "files"), 1, "only the missing file: {never}");
    assert_eq!(std::fs::read(at.join("run.sh")).unwrap(), b"old and different\n");
    assert_eq!(std::fs::read(at.join("secret.key")).unwrap(), std::fs::read(src.join("secret.key")).unwrap());

    // if-changed (the default) puts the snapshot's content back.
    restore(&r, &target, &[]);
    assert_trees_equal(&src, &at);

    let out = r.run(&["restore", "latest", "--target", target.to_str().unwrap(), "--overwrite", "sometimes"], 2);
    assert!(stderr(&out).contains("overwrite"), "{}", stderr(&out));
}

#[test]
fn dry_run_changes_nothing_and_delete_removes_what_the_snapshot_lacks() {
    let r = TestRepo::small();
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let target = r.path("t");
    restore(&r, &target, &[]);
    let at = restored_at(&target, &src);
    std::fs::write(at.join("extra.txt"), b"not in the snapshot\n").unwrap();
    std::fs::create_dir_all(at.join("sub/extra-dir/x")).unwrap();
    std::fs::write(at.join("sub/extra-dir/x/f"), b"f").unwrap();
    std::fs::write(at.join("hello.txt"), b"changed in the target, longer\n").unwrap();
    std::fs::remove_file(at.join("run.sh")).unwrap();
    // Excluded entries are never deleted.
    std::fs::write(at.join("keep.log"), b"excluded\n").unwrap();

    let before = file_contents(&target);
    let plan = restore(&r, &target, &["--dry-run", "--delete", "--exclude", "*.log"]);
    assert_eq!(file_contents(&target), before, "--dry-run changed the target");
    let actions = plan["actions"].as_array().unwrap();
    let find = |suffix: &str| {
        actions
            .iter()
            .find(|a| a["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no action for {suffix}: {plan}"))
    };
    assert_eq!(find("/extra.txt")["action"], "delete");
    assert_eq!(find("/sub/extra-dir")["action"], "delete");
    assert_eq!(find("/hello.txt")["action"], "write");
    assert_eq!(find("/hello.txt")["reason"], "changed");
    assert_eq!(find("/run.sh")["reason"], "new");
    assert_eq!(find("/big.bin")["action"], "keep");
    assert!(!actions.iter().any(|a| a["path"].as_str().unwrap().ends_with("keep.log")), "{plan}");
    let text = r.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--dry-run", "--delete"]);
    assert!(text.contains("delete") && text.contains("nothing changed"), "{text}");

    let done = restore(&r, &target, &["--delete", "--exclude", "*.log"]);
    assert_eq!(u64_field(&done, "deleted"), 2, "{done}");
    assert!(at.join("keep.log").exists());
    std::fs::remove_file(at.join("keep.log")).unwrap();
    assert_trees_equal(&src, &at);
}

/// A repository with one snapshot of a one-file tree, and a restore
/// target `t` that holds only `precious` (with `content`).
fn target_beside_a_snapshot(content: &[u8]) -> (TestRepo, std::path::PathBuf) {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"from the snapshot\n").unwrap();
    r.backup(&[&src], &[]);
    let target = r.path("t");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious"), content).unwrap();
    (r, target)
}

#[test]
fn safety_snapshot_saves_the_target_before_it_is_changed() {
    let (r, target) = target_beside_a_snapshot(b"only in the target\n");

    let out = r.json(&["restore", "latest", "--target", target.to_str().unwrap(), "--safety-snapshot", "--delete"]);
    let id = out["safety_snapshot"].as_str().unwrap_or_else(|| panic!("no safety_snapshot in {out}")).to_string();
    assert!(!target.join("precious").exists(), "--delete kept precious");
    let snaps = r.snapshots();
    let safety = snaps.iter().find(|s| s["short_id"] == id.as_str() || s["id"].as_str().unwrap().starts_with(&id));
    let safety = safety.unwrap_or_else(|| panic!("safety snapshot {id} not listed: {snaps:?}"));
    assert!(safety.to_string().contains("\"safety\""), "{safety}");

    // The safety snapshot brings the old target back.
    let back = r.path("back");
    r.ok(&["restore", &id, "--target", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(restored_at(&back, &target).join("precious")).unwrap(), b"only in the target\n");

    // Human output names it.
    let text = r.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--safety-snapshot"]);
    assert!(text.contains("safety snapshot"), "{text}");
}

#[test]
fn files_that_cannot_be_written_are_reported_one_line_each() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("small"), b"fits\n").unwrap();
    std::fs::write(src.join("big-1"), random_bytes(1, 3 << 20)).unwrap();
    std::fs::write(src.join("big-2"), random_bytes(2, 3 << 20)).unwrap();
    r.backup(&[&src], &[]);
    let target = r.path("full");
    std::fs::create_dir_all(&target).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    // The restore's audit entry aside, the repository stays as it was.
    let data_objects = || -> Vec<_> {
        r.objects().into_iter().filter(|(k, _)| !k.contains("/audit/") && !k.contains("/locks/")).collect()
    };
    let before = data_objects();
    let out = r.cmd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    let _ = std::process::Command::new("umount").arg(&target).status();
    assert_eq!(data_objects(), before, "a failed restore changed the repository");
    assert_code(&out, 1, "restore onto a full disk");
    assert!(err.contains("big-1") && err.contains("big-2"), "{err}");
    for line in err.lines().filter(|l| l.contains("big-")) {
        assert!(line.starts_with("strongroom: ") && line.contains("No space left"), "{line}");
    }
}

#[test]
fn an_interrupted_restore_leaves_only_complete_files_and_a_rerun_finishes_it() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        std::fs::write(src.join(format!("f{i:02}")), random_bytes(100 + i, 600_000)).unwrap();
    }
    r.backup(&[&src], &[]);
    let started = std::time::Instant::now();
    restore(&r, &r.path("whole"), &["--io-concurrency", "1"]);
    let full = started.elapsed();
    let target = r.path("t");
    let child = r
        .command(&["restore", "latest", "--target", target.to_str().unwrap(), "--io-concurrency", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt near the end, when some files are complete (files finish
    // late: their chunks are spread over the packs). The assertions below
    // hold wherever the signal lands.
    std::thread::sleep(full.mul_f64(0.85));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    // Whether the signal came in time or not, every file left in the
    // target with the snapshot's size and mtime has the snapshot's bytes.
    assert!(matches!(out.status.code(), Some(0) | Some(130)), "{:?}: {}", out.status, stderr(&out));
    assert_no_panic(&out, "interrupted restore");
    let at = restored_at(&target, &src);
    let mut complete = 0;
    for i in 0..40u64 {
        let name = format!("f{i:02}");
        let (Ok(got), Ok(want)) = (std::fs::metadata(at.join(&name)), std::fs::metadata(src.join(&name))) else {
            continue;
        };
        if got.len() == want.len() && got.mtime() == want.mtime() && got.mtime_nsec() == want.mtime_nsec() {
            assert!(std::fs::read(at.join(&name)).unwrap() == std::fs::read(src.join(&name)).unwrap(), "{name}");
            complete += 1;
        }
    }
    eprintln!("interrupted restore: exit {:?}, {complete} of 40 files complete", out.status.code());
    // The rerun writes only what was missing and keeps the rest.
    let rerun = restore(&r, &target, &[]);
    assert_eq!(u64_field(&rerun, "kept"), complete, "{rerun}");
    assert_eq!(u64_field(&rerun, "files") + complete, 40, "{rerun}");
    assert_trees_equal(&src, &at);
}

/// A restore reads each needed pack once (its byte ranges
/// coalesced), even when the same chunks appear in many files, and every
/// byte it writes equals the source.
#[test]
fn a_restore_reads_each_pack_once() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 12 files sharing most of their chunks, and a few of their own, over
    // several 1 MiB packs.
    let shared = random_bytes(7, 3 << 20);
    for i in 0..12u64 {
        let mut data = shared.clone();
        data.extend(random_bytes(100 + i, 200_000));
        std::fs::write(src.join(format!("f{i}")), &data).unwrap();
    }
    r.backup(&[&src], &[]);
    let packs = r.objects_under("tenants/default/packs/").len();
    assert!(packs >= 3, "want several packs, got {packs}");
    let target = r.path("t");
    let out = r
        .command(&["restore", "latest", "--target", target.to_str().unwrap()])
        .env("STRONGROOM_LOG", "strongroom=debug")
        .output()
        .unwrap();
    assert_code(&out, 0, "restore");
    let log = stderr(&out);
    let mut read: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reading pack"))
        .filter_map(|l| l.split("pack=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let all = read.len();
    read.sort();
    read.dedup();
    assert_eq!(all, read.len(), "a pack was read more than once:\n{log}");
    assert!(all >= 3 && all <= packs, "{all} packs read of {packs}:\n{log}");
    assert_eq!(file_contents(&restored_at(&target, &src)), file_contents(&src));
}

/// Files of many chunks stay open from their first chunk to their last;
/// past the open-file budget they are closed and reopened (as the same
/// inode) for their next chunk. With a budget of none, every file of
/// several chunks is parked after each, and the restore is still whole,
/// also when it replaces existing files.
#[test]
fn files_parked_past_the_open_file_budget_are_restored_whole() {
    let r = TestRepo::small();
    let src = r.path("src");
    build_all_kinds(&src);
    for i in 0..6u64 {
        std::fs::write(src.join(format!("multi-{i}")), random_bytes(50 + i, 700_000)).unwrap();
    }
    r.backup(&[&src], &[]);
    let target = r.path("t");
    let at = restored_at(&target, &src);
    for round in 0..2 {
        let out = r
            .command(&["restore", "latest", "--target", target.to_str().unwrap(), "--overwrite", "always"])
            .env("STRONGROOM_TEST_OPEN_FILES", "0")
            .output()
            .unwrap();
        assert_code(&out, 0, &format!("restore round {round} with no open-file budget"));
        assert_trees_equal(&src, &at);
    }
}

#[test]
fn library_safety_snapshot_that_fails_leaves_the_target_unchanged_and_restores_nothing() {
    use strongroom_core::lock::{self, LockKind};
    use strongroom_core::restore::{self, Overwrite, RestoreOptions, SAFETY_TAG};
    use strongroom_core::Error;

    let precious = random_bytes(5, 300_000);
    let (r, target) = target_beside_a_snapshot(&precious);
    let before = file_contents(&target);
    // The tenant already stores more than this quota: the safety snapshot
    // cannot store the target.
    r.ok(&["tenant", "set", "default", "--quota", "1"]);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let repo = r.open_library(&rt);
    let snap = repo.resolve("latest", None, &strongroom_core::snapshot::Pick::ANY).unwrap();
    let options = |target: &Path| RestoreOptions {
        target: target.to_path_buf(),
        includes: None,
        excludes: strongroom_core::source::Excludes::new(&[]).unwrap(),
        verify: false,
        overwrite: Overwrite::Always,
        delete: true,
        dry_run: false,
        subset: None,
        xattrs: true,
        io_concurrency: 2,
        cancel: strongroom_core::Cancel::new(),
        progress: std::sync::Arc::new(restore::NoProgress),
    };
    let restore_safely = |target: &Path, saved: &mut Option<String>| {
        let guard =
            rt.block_on(lock::acquire(repo.scope(), LockKind::Shared, std::time::Duration::ZERO, "test")).unwrap();
        let done = restore::with_safety_snapshot(&repo, &guard, &snap, None, &options(target), |s| {
            *saved = s.short_id.clone()
        });
        rt.block_on(guard.release()).unwrap();
        done
    };

    // Refused: the quota stopped the safety snapshot, and the restore
    // (with --delete) did not touch the target.
    let mut saved = None;
    let refused = restore_safely(&target, &mut saved);
    match &refused {
        Err(Error::SafetySnapshot { cause }) => assert!(matches!(**cause, Error::QuotaExceeded { .. }), "{cause}"),
        other => panic!("not a failed safety snapshot: {:?}", other.as_ref().map(|_| ())),
    }
    assert!(saved.is_none(), "a failed safety snapshot was reported saved");
    assert_eq!(file_contents(&target), before, "a failed safety snapshot let the restore change the target");
    assert_eq!(r.snapshots().len(), 1, "a failed safety snapshot left a snapshot");

    // Allowed: the target is saved with the tag, then replaced.
    r.ok(&["tenant", "set", "default", "--quota", "none"]);
    let done = restore_safely(&target, &mut saved).unwrap();
    let safety = done.safety.expect("no safety snapshot of a target with files");
    assert_eq!(saved.as_deref(), safety.short_id.as_deref(), "on_saved was not given the safety snapshot");
    assert!(done.restore.errors.is_empty(), "{:?}", done.restore.errors);
    assert!(!target.join("precious").exists(), "the restore with --delete kept precious");
    assert_eq!(std::fs::read(restored_at(&target, &r.path("src")).join("a")).unwrap(), b"from the snapshot\n");
    let back = r.path("back");
    r.ok(&["restore", safety.short_id.as_deref().unwrap(), "--target", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(restored_at(&back, &target).join("precious")).unwrap(), precious);
    let listed = r.snapshots();
    assert!(listed.iter().any(|s| s["tags"][0] == SAFETY_TAG), "no snapshot tagged {SAFETY_TAG}: {listed:?}");

    // A missing target has nothing to save.
    let mut saved = None;
    let fresh = restore_safely(&r.path("fresh"), &mut saved).unwrap();
    assert!(fresh.safety.is_none() && saved.is_none(), "a missing target was saved");
    assert_eq!(fresh.restore.files, 1);
}
