//! `copy`: replicas restore byte for byte and check clean, with separate
//! keys (blobs re-sealed, trees rewritten) and with shared keys (packs move
//! as they are); a rerun copies nothing; an interrupted copy leaves no
//! snapshot and a rerun completes it. Local → local always; local → S3 and
//! S3 → Azure when the emulators are up.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::remote::Backend;
use crate::support::{assert_trees_equal, build_all_kinds, random_bytes, restored_at, TestRepo, PASSWORD};

/// A source with two snapshots of `src` (the second after a change).
fn source(r: &TestRepo) -> PathBuf {
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &["--tag", "first"]);
    std::fs::write(src.join("sub/added.bin"), random_bytes(11, 200_000)).unwrap();
    r.backup(&[&src], &["--tag", "second"]);
    src
}

/// `copy --to URL` from `from`, with both repositories' environments.
fn copy(from: &TestRepo, to: &TestRepo, extra: &[&str]) -> Value {
    let mut args = vec!["copy", "--json", "--to", to.repo.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut c = from.command(&args);
    c.envs(to.env.iter().map(|(k, v)| (k, v)));
    let out = c.output().unwrap();
    crate::support::assert_code(&out, 0, "copy");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn n_copied(v: &Value) -> usize {
    v["copied"].as_array().unwrap().len()
}

/// The replica has the source's snapshots, restores `src` byte for byte
/// and checks clean.
fn check_replica(from: &TestRepo, to: &TestRepo, src: &Path) {
    let a: Vec<(String, String)> =
        from.snapshots().iter().map(|s| (s["time"].to_string(), s["tags"].to_string())).collect();
    let b: Vec<(String, String)> =
        to.snapshots().iter().map(|s| (s["time"].to_string(), s["tags"].to_string())).collect();
    assert_eq!(a, b, "the replica's snapshots differ");
    let target = to.path(&format!("restore-{}", crate::support::remote::unique_prefix("r")));
    to.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(src, &restored_at(&target, src));
    let out = to.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
}

#[test]
fn copy_local_to_local_with_own_and_with_shared_keys() {
    let from = TestRepo::small();
    let src = source(&from);

    // Own keys: every blob is re-sealed, trees rewritten.
    let own = TestRepo::small();
    let v = copy(&from, &own, &[]);
    assert_eq!(n_copied(&v), 2, "{v}");
    assert_eq!(v["shared_keys"], false);
    assert_eq!(v["packs_copied"], 0);
    check_replica(&from, &own, &src);
    let again = copy(&from, &own, &[]);
    assert_eq!(n_copied(&again), 0, "a rerun copied again: {again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2);

    // Shared keys: packs move as they are.
    let shared = TestRepo::uninitialized();
    from.ok(&["init", "--repo", shared.repo.to_str().unwrap(), "--copy-keys-from", from.repo.to_str().unwrap()]);
    let v = copy(&from, &shared, &[]);
    assert_eq!(n_copied(&v), 2, "{v}");
    assert_eq!(v["shared_keys"], true);
    assert!(v["packs_copied"].as_u64().unwrap() > 0, "{v}");
    check_replica(&from, &shared, &src);
    assert_eq!(n_copied(&copy(&from, &shared, &[])), 0);
    // The replica's tenant opens with the source's password.
    assert_eq!(shared.password.as_deref(), Some(PASSWORD));
}

#[test]
fn copy_selects_by_tag_and_is_resumable() {
    let from = TestRepo::small();
    let src = source(&from);
    let to = TestRepo::small();
    let v = copy(&from, &to, &["--tag", "first"]);
    assert_eq!(n_copied(&v), 1, "{v}");
    assert_eq!(to.snapshots()[0]["tags"][0], "first");

    // A write fails mid-way: no snapshot appears; a rerun completes.
    let mut c = from.command(&["copy", "--to", to.repo.to_str().unwrap()]);
    c.env("STRONGROOM_FAULT", "fail-put:4");
    let out = c.output().unwrap();
    assert_ne!(out.status.code(), Some(0), "the injected fault did not stop copy");
    assert_eq!(to.snapshots().len(), 1);
    let v = copy(&from, &to, &[]);
    assert_eq!(n_copied(&v), 1, "{v}");
    check_replica(&from, &to, &src);
}

#[test]
fn copy_local_to_s3_then_s3_to_azure() {
    let test = "copy_local_to_s3_then_s3_to_azure";
    let Some(s3) = Backend::s3_or_skip(test) else { return };
    let from = TestRepo::small();
    let src = source(&from);
    let on_s3 = s3.small_repo("copy-s3");
    assert_eq!(n_copied(&copy(&from, &on_s3, &[])), 2);
    check_replica(&from, &on_s3, &src);
    assert_eq!(n_copied(&copy(&from, &on_s3, &[])), 0);

    let Some(az) = Backend::azure_or_skip(test) else { return };
    let mut on_az = az.repo("copy-az");
    // The Azure replica shares the S3 tenant's keys: packs move as they are.
    let mut init = on_s3.command(&[
        "init",
        "--repo",
        on_az.repo.to_str().unwrap(),
        "--copy-keys-from",
        on_s3.repo.to_str().unwrap(),
    ]);
    init.envs(az.env.iter().map(|(k, v)| (k, v)));
    crate::support::assert_code(&init.output().unwrap(), 0, "init --copy-keys-from");
    let v = copy(&on_s3, &on_az, &[]);
    assert_eq!(n_copied(&v), 2, "{v}");
    assert!(v["packs_copied"].as_u64().unwrap() > 0, "{v}");
    on_az.env.extend(s3.env.clone());
    check_replica(&on_s3, &on_az, &src);
    assert_eq!(n_copied(&copy(&on_s3, &on_az, &[])), 0);
}

#[test]
fn copy_needs_an_existing_target_and_its_password() {
    let from = TestRepo::small();
    source(&from);
    let missing = from.path("missing");
    from.run(&["copy", "--to", missing.to_str().unwrap()], 10);
    let other = TestRepo::small();
    let pw = from.path("pw");
    std::fs::write(&pw, "not the password\n").unwrap();
    let out = from.run(&["copy", "--to", other.repo.to_str().unwrap(), "--to-password-file", pw.to_str().unwrap()], 12);
    assert!(crate::support::stderr(&out).contains("opening the target"), "{}", crate::support::stderr(&out));
    assert!(other.snapshots().is_empty());
}
