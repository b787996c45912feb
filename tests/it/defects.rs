//! Small defects operators ran into, each pinned by a test: which secret
//! wins, benchmarks that must not touch a repository, counts and messages
//! that must say what happened.

use crate::support::{assert_code, random_bytes, stderr, TestRepo, PASSWORD};

#[test]
fn a_password_file_flag_beats_the_password_in_the_environment() {
    let r = TestRepo::new();
    let file = r.path("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let mut c = r.command(&["--password-file", file.to_str().unwrap(), "snapshots"]);
    c.env("STRONGROOM_PASSWORD", "not the password");
    assert_code(&c.output().unwrap(), 0, "--password-file with a wrong STRONGROOM_PASSWORD");
    // From the environment, the password still beats the file.
    let mut c = r.command(&["snapshots"]);
    c.env("STRONGROOM_PASSWORD_FILE", &file).env("STRONGROOM_PASSWORD", "not the password");
    assert_code(&c.output().unwrap(), 12, "STRONGROOM_PASSWORD over STRONGROOM_PASSWORD_FILE");
    // The flag also beats an escrow secret file named in the environment.
    let junk = r.path("junk-escrow");
    std::fs::write(&junk, b"not an escrow secret").unwrap();
    let mut c = r.command(&["--password-file", file.to_str().unwrap(), "snapshots"]);
    c.env("STRONGROOM_ESCROW_SECRET_FILE", &junk);
    assert_code(&c.output().unwrap(), 0, "--password-file with STRONGROOM_ESCROW_SECRET_FILE set");
    // Both flags at once are refused, naming them.
    let out = r.run(
        &["--password-file", file.to_str().unwrap(), "--escrow-secret", junk.to_str().unwrap(), "snapshots"],
        1,
    );
    assert!(stderr(&out).contains("either --password-file or --escrow-secret"), "{}", stderr(&out));
}

#[test]
fn a_new_password_file_flag_beats_the_new_password_in_the_environment() {
    let r = TestRepo::new();
    let file = r.path("new-pw");
    std::fs::write(&file, b"from the file").unwrap();
    let mut args = vec!["tenant", "passwd", "--new-password-file", file.to_str().unwrap()];
    args.extend_from_slice(&crate::support::KDF);
    let mut c = r.command(&args);
    c.env("STRONGROOM_NEW_PASSWORD", "from the environment");
    assert_code(&c.output().unwrap(), 0, "tenant passwd");
    let mut c = r.command(&["snapshots"]);
    c.env("STRONGROOM_PASSWORD", "from the file");
    assert_code(&c.output().unwrap(), 0, "the file's password opens the tenant");
}

#[allow(dead_code)]
fn unused(_: u64) -> Vec<u8> {
    random_bytes(0, 1)
}
