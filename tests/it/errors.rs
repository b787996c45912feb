//! Error paths: wrong password, missing repository or tenant, no password, and unwritable restore targets fail cleanly with the documented exit codes.

use crate::support::{stderr, TestRepo};

#[test]
fn wrong_password_exits_12_with_one_line() {
    let mut r = TestRepo::new();
    r.password = Some("not the password".into());
    let out = r.run(&["snapshots"], 12);
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line: {err}");
    assert!(err.contains("wrong password"), "{err}");
    assert!(!err.contains("not the password"), "the password leaked into the message");
}

#[test]
fn missing_repository_exits_10() {
    let r = TestRepo::uninitialized();
    let out = r.run(&["snapshots"], 10);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    // An existing but empty directory is no repository either.
    std::fs::create_dir_all(&r.repo).unwrap();
    let out = r.run(&["snapshots"], 10);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn unknown_tenant_exits_10() {
    let r = TestRepo::new();
    let out = r.run(&["--tenant", "other", "snapshots"], 10);
    assert!(stderr(&out).contains("tenant other does not exist"), "{}", stderr(&out));
}

#[test]
fn no_password_and_no_terminal_exits_1_with_a_clear_message() {
    let mut r = TestRepo::new();
    r.password = None;
    let out = r.run(&["snapshots"], 1);
    assert!(stderr(&out).contains("no password given"), "{}", stderr(&out));
}

#[test]
fn password_file_is_read_and_its_trailing_newline_ignored() {
    let mut r = TestRepo::new();
    let f = r.path("pw");
    std::fs::write(&f, format!("{}\n", crate::support::PASSWORD)).unwrap();
    r.password = None;
    r.ok(&["--password-file", f.to_str().unwrap(), "snapshots"]);
}

#[test]
fn restore_into_a_path_below_a_regular_file_fails_clearly() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), b"x").unwrap();
    r.ok(&["backup", src.to_str().unwrap()]);
    let blocker = r.path("blocker");
    std::fs::write(&blocker, b"i am a file").unwrap();
    let target = blocker.join("target");
    let out = r.cmd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    crate::support::assert_no_panic(&out, "restore below a file");
    assert_ne!(out.status.code(), Some(0), "restore below a regular file succeeded");
    let err = stderr(&out);
    assert!(err.contains(blocker.to_str().unwrap()), "message does not name the target: {err}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"i am a file", "the blocking file was changed");
}

#[test]
fn restore_of_a_path_not_in_the_snapshot_fails_naming_it() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    r.ok(&["backup", src.to_str().unwrap()]);
    let t = r.path("t");
    let out = r.run(&["restore", "latest:/no/such/dir", "--target", t.to_str().unwrap()], 1);
    assert!(stderr(&out).contains("/no/such/dir"), "{}", stderr(&out));
}

#[test]
fn commands_on_an_empty_repository_explain_there_are_no_snapshots() {
    let r = TestRepo::new();
    let out = r.run(&["ls", "latest"], 1);
    assert!(stderr(&out).contains("no snapshots"), "{}", stderr(&out));
}

/// Unmounts (lazily) when dropped, so a failed assertion leaves no mount.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a small file system of `kind` (ext4 on a loop device, where
/// packs are written with O_DIRECT; or tmpfs, which refuses O_DIRECT and
/// takes the page-cache path) at `at`.
fn mount_small(r: &TestRepo, kind: &str, at: &std::path::Path) -> bool {
    std::fs::create_dir_all(at).unwrap();
    let run = |cmd: &mut std::process::Command| {
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
    };
    match kind {
        "ext4" => {
            let img = r.path("fs.img");
            std::fs::File::create(&img).unwrap().set_len(24 << 20).unwrap();
            run(std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))
                && run(std::process::Command::new("mount").args(["-o", "loop"]).arg(&img).arg(at))
        }
        _ => run(std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(at)),
    }
}

/// A repository whose disk fills up: the backup that does not fit fails
/// with exit 1 and one line saying the disk is full, no snapshot is made,
/// and the repository stays consistent (`check --read-data` finds nothing
/// wrong, the earlier snapshot restores byte for byte; on the still-full
/// disk their own audit entries may not fit, which they report).
#[test]
fn a_full_repository_disk_fails_the_backup_and_keeps_the_repository() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount small file systems");
        return;
    }
    for kind in ["ext4", "tmpfs"] {
        let r = TestRepo::uninitialized();
        if !mount_small(&r, kind, &r.repo) {
            eprintln!("skipped ({kind}): cannot mount a small {kind} here");
            continue;
        }
        let _unmount = Unmount(r.repo.clone());
        let mut init = vec!["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"];
        init.extend_from_slice(crate::support::SMALL);
        r.ok(&init);
        let src = r.path("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("small"), crate::support::random_bytes(1, 300_000)).unwrap();
        r.backup(&[&src], &[]);
        let first = r.path("first");
        r.ok(&["restore", "latest", "--target", first.to_str().unwrap()]);

        std::fs::write(src.join("big"), crate::support::random_bytes(2, 40 << 20)).unwrap();
        let out = r.cmd(&["backup", src.to_str().unwrap()]);
        crate::support::assert_code(&out, 1, &format!("backup onto a full {kind}"));
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{kind}: want one line:\n{err}");
        assert!(lines[0].starts_with("strongroom: ") && lines[0].contains("No space left"), "{kind}: {err}");
        assert_eq!(r.snapshots().len(), 1, "{kind}: a snapshot was made");

        // Reads still work on the full disk. Their audit entries may not
        // fit (tmpfs keeps no blocks for root): the read then completes
        // and says so in one line, exit 1, as documented.
        // A lock's release is a new object too: when it does not fit, the
        // command warns (a WARN log line) and its lock waits for a sweep.
        let read_completed = |out: &std::process::Output, what: &str| {
            let err = stderr(out);
            let err: String = err.lines().filter(|l| !l.contains(" WARN ")).collect::<Vec<_>>().join("\n");
            let audit_only = out.status.code() == Some(1)
                && err.trim().lines().count() == 1
                && err.contains(&format!("{what} completed, but its audit entry could not be written"))
                && err.contains("No space left");
            assert!(out.status.code() == Some(0) || audit_only, "{kind}: {what}: {:?}\n{err}", out.status);
        };
        read_completed(&r.cmd(&["check", "--read-data"]), "check");
        let again = r.path("again");
        read_completed(&r.cmd(&["restore", "latest", "--target", again.to_str().unwrap()]), "restore");
        assert_eq!(crate::support::file_contents(&again), crate::support::file_contents(&first), "{kind}");
    }
}
