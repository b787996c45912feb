//! Stream sources: stdin and a command's output are stored exactly, and a failing command never becomes a snapshot.

use std::io::Write;
use std::process::Stdio;

use crate::support::{assert_code, random_bytes, stderr, TestRepo};

#[test]
fn stdin_backup_dumps_back_identically() {
    let r = TestRepo::small();
    let data = random_bytes(11, 700_000);
    let mut child = r
        .command(&["backup", "--stdin", "--stdin-name", "db.sql", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_code(&out, 0, "backup --stdin");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["logical_bytes"], data.len() as u64);

    let snaps = r.snapshots();
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/db.sql"]));
    let dumped = r.run(&["dump", "latest", "db.sql"], 0).stdout;
    assert!(dumped == data, "dump of db.sql differs from what was piped in");
}

#[test]
fn command_output_backup_stores_its_stdout() {
    let r = TestRepo::new();
    r.ok(&["backup", "--stdin-from-command", "--stdin-name", "x.txt", "--", "sh", "-c", "printf hello"]);
    assert_eq!(r.run(&["dump", "latest", "/x.txt"], 0).stdout, b"hello");
}

#[test]
fn failing_command_exits_1_and_creates_no_snapshot() {
    let r = TestRepo::new();
    r.ok(&["backup", "--stdin-from-command", "--stdin-name", "ok.txt", "--", "sh", "-c", "printf fine"]);
    let out = r
        .run(&["backup", "--stdin-from-command", "--stdin-name", "x.txt", "--", "sh", "-c", "echo partial; exit 1"], 1);
    let err = stderr(&out);
    assert!(err.contains("failed"), "message does not say the command failed: {err}");
    assert!(err.contains("no snapshot"), "{err}");
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "a failed command produced a snapshot");
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/ok.txt"]));
}

#[test]
fn unknown_command_exits_1_and_creates_no_snapshot() {
    let r = TestRepo::new();
    let out = r.run(&["backup", "--stdin-from-command", "--", "/no/such/program"], 1);
    assert!(stderr(&out).contains("/no/such/program"), "{}", stderr(&out));
    assert!(r.snapshots().is_empty());
}
