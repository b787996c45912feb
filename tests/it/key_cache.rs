//! The opt-in key cache (`--key-cache`). Risks covered: a cached key that
//! opens for the wrong password, the wrong tenant, after its expiry or
//! after its slot was removed; a wrong password that erases the entry; an
//! entry others can read; a cache used or written without the flag.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use crate::support::{assert_code, stderr, TestRepo, KDF, PASSWORD};

/// The debug line of a key derivation, and of an open from the cache.
const DERIVED: &str = "unwrapped (argon2)";
const CACHED: &str = "opened with the key cache of slot";

/// Runs `snapshots -vv` as `tenant` with `password`, the key cache on for
/// 15 minutes, a clock at `now` when given; asserts the exit code.
fn snapshots(r: &TestRepo, tenant: &str, password: &str, now: Option<i64>, code: i32) -> Output {
    let mut c = r.command(&["snapshots", "-vv", "--key-cache", "15m"]);
    c.env("STRONGROOM_TENANT", tenant).env("STRONGROOM_PASSWORD", password);
    if let Some(now) = now {
        c.env("STRONGROOM_TEST_NOW", now.to_string());
    }
    let out = c.output().expect("run strongroom");
    assert_code(&out, code, &format!("[tenant {tenant}] snapshots --key-cache 15m"));
    out
}

/// Which way the command opened the tenant: `"derived"` or `"cached"`.
fn opened(out: &Output) -> &'static str {
    let err = stderr(out);
    match (err.contains(DERIVED), err.contains(CACHED)) {
        (true, false) => "derived",
        (false, true) => "cached",
        _ => panic!("no single way of opening logged:\n{err}"),
    }
}

/// The key cache's entry files (the test's environment has no runtime
/// directory, so they are under the cache directory).
fn entries(r: &TestRepo) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(r.cache.join("keys")) else { return Vec::new() };
    let mut files: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_password_opens_from_the_key_cache_after_one_derivation() {
    let r = TestRepo::new();
    let out = r.run(&["snapshots", "-vv"], 0);
    assert!(stderr(&out).contains(DERIVED));
    assert!(!r.cache.join("keys").exists(), "a command without --key-cache wrote a key cache");

    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, None, 0)), "derived");
    let files = entries(&r);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(mode(&r.cache.join("keys")), 0o700);
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, None, 0)), "cached");

    // Off, the cache is neither read nor deleted.
    let out = r.run(&["snapshots", "-vv", "--key-cache", "off"], 0);
    assert!(stderr(&out).contains(DERIVED) && !stderr(&out).contains(CACHED));
    assert_eq!(entries(&r), files);

    let listed = r.json(&["key-cache", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["file"].as_str().unwrap(), files[0].to_str().unwrap());
    assert!(listed[0]["expires"].is_string(), "{listed}");
    assert_eq!(r.json(&["key-cache", "clear"])["removed"], 1);
    assert!(entries(&r).is_empty());
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, None, 0)), "derived");
}

#[test]
fn a_wrong_password_is_refused_and_leaves_the_entry_alone() {
    let r = TestRepo::new();
    snapshots(&r, "default", PASSWORD, None, 0);
    let files = entries(&r);
    let before = std::fs::read(&files[0]).unwrap();
    let out = snapshots(&r, "default", "not the password", None, 12);
    assert!(!stderr(&out).contains(CACHED), "{}", stderr(&out));
    assert_eq!(std::fs::read(&files[0]).unwrap(), before, "a wrong password changed the entry");
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, None, 0)), "cached");
}

#[test]
fn an_expired_entry_or_one_written_in_the_future_is_not_used() {
    let r = TestRepo::new();
    let t = 1_800_000_000;
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, Some(t), 0)), "derived");
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, Some(t + 14 * 60), 0)), "cached");
    // Expired: derived again, and a new entry written from then.
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, Some(t + 15 * 60), 0)), "derived");
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, Some(t + 16 * 60), 0)), "cached");
    // The clock went back: an entry from the future is not trusted.
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, Some(t), 0)), "derived");
    // A shorter --key-cache cuts an older entry short.
    let out = r
        .command(&["snapshots", "-vv", "--key-cache", "1m"])
        .env("STRONGROOM_TEST_NOW", (t + 2 * 60).to_string())
        .output()
        .unwrap();
    assert_code(&out, 0, "snapshots --key-cache 1m");
    assert_eq!(opened(&out), "derived");
}

#[test]
fn an_entry_copied_to_another_tenant_or_edited_does_not_open() {
    let r = TestRepo::new();
    let out = r
        .command(&["tenant", "add", "other", KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_code(&out, 0, "tenant add other");
    snapshots(&r, "default", PASSWORD, None, 0);
    let default_entry = entries(&r).remove(0);
    snapshots(&r, "other", PASSWORD, None, 0);
    let other_entry = entries(&r).into_iter().find(|f| *f != default_entry).unwrap();

    // The other tenant's file now holds the default tenant's key.
    std::fs::copy(&default_entry, &other_entry).unwrap();
    let out = snapshots(&r, "other", PASSWORD, None, 0);
    assert_eq!(opened(&out), "derived");
    assert!(stderr(&out).contains("tenant other: key slot"), "{}", stderr(&out));
    assert_eq!(opened(&snapshots(&r, "other", PASSWORD, None, 0)), "cached");

    let mut bytes = std::fs::read(&default_entry).unwrap();
    let last = bytes.len() - 1;
    bytes[30] ^= 1;
    bytes[last] ^= 1;
    std::fs::write(&default_entry, &bytes).unwrap();
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, None, 0)), "derived");
    assert_ne!(std::fs::read(&default_entry).unwrap(), bytes, "the edited entry was not replaced");
    assert_eq!(opened(&snapshots(&r, "default", PASSWORD, None, 0)), "cached");
}

#[test]
fn a_cached_key_stops_opening_once_its_slot_is_removed() {
    let r = TestRepo::new();
    snapshots(&r, "default", PASSWORD, None, 0);
    let out = r
        .command(&["tenant", "passwd", KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", "a new password")
        .output()
        .unwrap();
    assert_code(&out, 0, "tenant passwd");
    let out = snapshots(&r, "default", PASSWORD, None, 12);
    assert!(!stderr(&out).contains(CACHED), "{}", stderr(&out));
    assert!(entries(&r).is_empty(), "the entry of a removed slot was kept: {:?}", entries(&r));
    assert_eq!(opened(&snapshots(&r, "default", "a new password", None, 0)), "derived");
    assert_eq!(opened(&snapshots(&r, "default", "a new password", None, 0)), "cached");
}

#[test]
fn entries_go_to_the_runtime_directory_only_when_it_is_private() {
    let r = TestRepo::new();
    let shared = r.path("shared-runtime");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = r.command(&["snapshots", "--key-cache", "15m"]);
    let out = c.env("XDG_RUNTIME_DIR", &shared).output().unwrap();
    assert_code(&out, 0, "snapshots with a shared runtime directory");
    assert!(!shared.join("strongroom").exists(), "an entry went to a runtime directory others can enter");
    assert_eq!(entries(&r).len(), 1);

    let private = r.path("runtime");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut c = r.command(&["snapshots", "-vv", "--key-cache", "15m"]);
    let out = c.env("XDG_RUNTIME_DIR", &private).output().unwrap();
    assert_code(&out, 0, "snapshots with a private runtime directory");
    assert_eq!(opened(&out), "derived", "the cache directory's entry was read with a runtime directory in use");
    let dir = private.join("strongroom/keys");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert_eq!(mode(&dir), 0o700);
    let listed = r.command(&["key-cache", "list", "--json"]).env("XDG_RUNTIME_DIR", &private).output().unwrap();
    assert_code(&listed, 0, "key-cache list");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "both places are listed: {listed}");
}
