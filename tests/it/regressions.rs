//! Regression tests for bugs found while the suite was written: check with a
//! warm catalog, and sparse files with the default chunk sizes.

use crate::support::{assert_code, flip_middle_byte, random_bytes, stderr, TestRepo};

/// check --read-data must notice a damaged index delta or snapshot record
/// even when the local catalog read it in before the damage.
#[test]
fn check_detects_damaged_index_and_snapshot_with_a_warm_catalog() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.bin"), random_bytes(1, 300_000)).unwrap();
    r.backup(&[&src], &[]);
    r.ok(&["check", "--read-data"]); // the catalog is now warm
    for prefix in ["tenants/default/index/", "tenants/default/snapshots/"] {
        let (key, path) = r.objects_under(prefix).remove(0);
        let saved = std::fs::read(&path).unwrap();
        flip_middle_byte(&path);
        let out = r.cmd(&["check", "--read-data"]);
        assert_code(&out, 1, &format!("check with damaged {key} and a warm catalog"));
        assert!(stderr(&out).contains(key.rsplit('/').next().unwrap()), "{}", stderr(&out));
        std::fs::write(&path, saved).unwrap();
    }
}

/// A sparse file stays sparse after restore with the default chunk sizes.
#[test]
fn sparse_file_stays_sparse_with_default_chunk_sizes() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&[0x5a; 4096], 4 << 20).unwrap();
    drop(f);
    r.backup(&[&src], &[]);
    let t = r.path("t");
    r.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    let md = std::fs::metadata(t.join("sparse.img")).unwrap();
    assert!(md.blocks() * 512 < md.len(), "restored sparse file has {} blocks for {} bytes", md.blocks(), md.len());
}
