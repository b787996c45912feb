//! verify-restore: restores into a temporary directory, compares every
//! entry with the snapshot (content by chunk ids, sizes, modes, mtimes,
//! symlinks), reports pass/fail, exits 1 on a failure, and cleans up.

use crate::support::*;

#[test]
fn verify_restore_passes_on_a_good_snapshot_and_cleans_up() {
    let r = TestRepo::small();
    let src = r.path("src");
    let built = build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let tmp = r.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let v = r.json(&["verify-restore", "latest", "--tmp-dir", tmp.to_str().unwrap()]);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(u64_field(&v, "files"), built.n_files, "{v}");
    assert_eq!(u64_field(&v, "bytes"), built.file_bytes, "{v}");
    assert!(u64_field(&v, "dirs") >= 5 && u64_field(&v, "others") >= 4, "{v}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temporary restore left behind");

    let sample = r.json(&["verify-restore", "latest", "--subset", "30%", "--tmp-dir", tmp.to_str().unwrap()]);
    assert_eq!(sample["passed"], true, "{sample}");
    assert!(u64_field(&sample, "files") <= built.n_files, "{sample}");
    let text = r.ok(&["verify-restore", "latest", "--tmp-dir", tmp.to_str().unwrap()]);
    assert!(text.contains("PASS"), "{text}");
}

#[test]
fn verify_restore_fails_with_exit_1_on_damaged_data() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), random_bytes(9, 2_000_000)).unwrap();
    r.backup(&[&src], &[]);
    for (_, p) in r.objects_under("tenants/default/packs/") {
        flip_middle_byte(&p);
    }
    let tmp = r.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = r.run(&["verify-restore", "latest", "--tmp-dir", tmp.to_str().unwrap(), "--json"], 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(v["passed"], false, "{v}");
    assert!(!v["failures"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temporary restore left behind");
}

#[test]
fn library_verify_restore_reports_a_damaged_pack_as_a_failure_and_removes_its_directory() {
    use strongroom_core::lock::{self, LockKind};
    use strongroom_core::restore::{self, VerifyRestoreOptions};

    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), random_bytes(9, 2_000_000)).unwrap();
    r.backup(&[&src], &[]);
    let tmp = r.path("tmp");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Opened afresh for each run, so nothing read before the damage is
    // remembered.
    let verify = || {
        let repo = r.open_library(&rt);
        let snap = repo.resolve("latest", None, &strongroom_core::snapshot::Pick::ANY).unwrap();
        let opts = VerifyRestoreOptions {
            tmp_dir: tmp.clone(),
            subset: None,
            io_concurrency: 2,
            cancel: strongroom_core::Cancel::new(),
            progress: std::sync::Arc::new(restore::NoProgress),
        };
        let guard =
            rt.block_on(lock::acquire(repo.scope(), LockKind::Shared, std::time::Duration::ZERO, "test")).unwrap();
        let v = restore::verify_restore(&repo, &guard, &snap, &opts).unwrap();
        rt.block_on(guard.release()).unwrap();
        v
    };

    let good = verify();
    assert!(good.passed(), "{:?}", good.failures);
    assert_eq!((good.files, good.bytes), (1, 2_000_000));
    assert!(good.left_behind.is_none(), "{:?}", good.left_behind);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temporary restore left behind");

    for (_, p) in r.objects_under("tenants/default/packs/") {
        flip_middle_byte(&p);
    }
    let bad = verify();
    assert!(!bad.passed(), "a damaged pack passed");
    assert!(bad.failures.iter().any(|f| f.error.starts_with("restore: ")), "no restore failure: {:?}", bad.failures);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temporary restore left behind");
}
