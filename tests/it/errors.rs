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
