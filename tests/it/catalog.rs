//! The local catalog is only a cache: deleting it, rebuilding it or finding it garbage never loses a snapshot or a byte.

use std::path::{Path, PathBuf};

use crate::support::{assert_trees_equal, build_all_kinds, random_bytes, restored_at, u64_field, TestRepo};

/// A repository with two snapshots of an all-kinds tree (the second after
/// an edit); returns the source.
fn two_snapshots(r: &TestRepo) -> PathBuf {
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &[]);
    std::fs::write(src.join("added.bin"), random_bytes(5, 200_000)).unwrap();
    r.backup(&[&src], &[]);
    src
}

fn catalog_files(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    crate::support::walk_files(cache, &mut |p| {
        if p.extension().is_some_and(|e| e == "redb") {
            out.push(p.to_path_buf());
        }
    });
    out
}

fn assert_latest_restores(r: &TestRepo, src: &Path, name: &str) {
    let t = r.path(name);
    r.ok(&["restore", "latest", "--verify", "--target", t.to_str().unwrap()]);
    assert_trees_equal(src, &restored_at(&t, src));
}

#[test]
fn deleting_the_cache_dir_keeps_every_snapshot_and_restore() {
    let r = TestRepo::small();
    let src = two_snapshots(&r);
    let before = r.snapshots();
    std::fs::remove_dir_all(&r.cache).unwrap();
    assert_eq!(r.snapshots(), before);
    assert_latest_restores(&r, &src, "t");
    // The rebuilt catalog still knows every chunk: a rerun adds no data.
    let again = r.backup(&[&src], &["--force"]);
    assert_eq!(u64_field(&again, "blobs_new"), 0, "{again}");
}

/// A catalog left by a build on redb 2 (its file format 2, which redb 4
/// does not read) is reported and rebuilt from the store at the next
/// command: every snapshot is still listed and restores, and a rerun
/// stores no data again.
#[test]
fn a_catalog_in_redb_2s_file_format_is_rebuilt() {
    let r = TestRepo::small();
    let src = two_snapshots(&r);
    let before = r.snapshots();
    let catalog = catalog_files(&r.cache).into_iter().find(|p| p.ends_with("catalog.redb")).expect("a catalog");
    std::fs::remove_file(&catalog).unwrap();
    {
        let old = redb2::Database::create(&catalog).unwrap();
        let tx = old.begin_write().unwrap();
        tx.open_table(redb2::TableDefinition::<&str, u64>::new("meta")).unwrap().insert("schema", 2).unwrap();
        tx.commit().unwrap();
    }
    let out = r.run(&["snapshots", "--json"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("older file format") && stderr.contains("rebuilding it from the store"), "{stderr}");
    assert_eq!(r.snapshots(), before);
    assert_latest_restores(&r, &src, "t");
    let again = r.backup(&[&src], &["--force"]);
    assert_eq!(u64_field(&again, "blobs_new"), 0, "{again}");
}

#[test]
fn catalog_rebuild_reads_everything_in_again() {
    let r = TestRepo::small();
    let src = two_snapshots(&r);
    let before = r.snapshots();
    let rebuilt = r.json(&["catalog", "rebuild"]);
    assert_eq!(u64_field(&rebuilt, "snapshots_read"), 2, "{rebuilt}");
    assert!(u64_field(&rebuilt, "index_read") >= 1, "{rebuilt}");
    assert_eq!(u64_field(&rebuilt, "damaged"), 0, "{rebuilt}");
    assert_eq!(r.snapshots(), before);
    assert_latest_restores(&r, &src, "t");
}

#[test]
fn garbage_catalog_file_is_rebuilt_automatically() {
    let r = TestRepo::small();
    let src = two_snapshots(&r);
    let before = r.snapshots();
    let files = catalog_files(&r.cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let len = std::fs::metadata(&files[0]).unwrap().len() as usize;
    std::fs::write(&files[0], random_bytes(99, len.max(4096))).unwrap();
    assert_eq!(r.snapshots(), before);
    assert_latest_restores(&r, &src, "t");
    r.ok(&["check"]);
}

#[test]
fn empty_catalog_file_is_rebuilt_automatically() {
    let r = TestRepo::small();
    let src = two_snapshots(&r);
    let before = r.snapshots();
    let files = catalog_files(&r.cache);
    std::fs::write(&files[0], b"").unwrap();
    assert_eq!(r.snapshots(), before);
    assert_latest_restores(&r, &src, "t");
}

#[test]
fn repositories_sharing_a_cache_dir_keep_separate_catalogs() {
    let a = TestRepo::new();
    let mut b = TestRepo::new();
    b.cache = a.cache.clone();
    let src = a.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"only in a").unwrap();
    a.backup(&[&src], &[]);
    assert!(b.snapshots().is_empty(), "repository b sees a's snapshot through the shared cache");
    assert_eq!(a.snapshots().len(), 1);
}

#[test]
fn snapshots_made_through_another_cache_appear_after_sync() {
    // Two hosts, one repository: each catalog picks up the other's work.
    let a = TestRepo::new();
    let mut b = TestRepo::new();
    b.repo = a.repo.clone();
    let src = a.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"first").unwrap();
    a.backup(&[&src], &[]);
    assert_eq!(b.snapshots().len(), 1);
    std::fs::write(src.join("g"), b"second").unwrap();
    b.backup(&[&src], &[]);
    assert_eq!(a.snapshots().len(), 2);
    assert_eq!(a.run(&["dump", "latest", src.join("g").to_str().unwrap()], 0).stdout, b"second");
}

/// The catalog is written without disk syncs, so a power cut can leave it
/// torn: a tail cut off, or pages from different moments. Either way the
/// next command rebuilds or re-syncs it and loses nothing.
#[test]
fn torn_catalog_files_are_rebuilt_or_resynced() {
    for tear in ["truncated", "zeroed-middle"] {
        let r = TestRepo::small();
        let src = two_snapshots(&r);
        let before = r.snapshots();
        let files = catalog_files(&r.cache);
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let half = bytes.len() / 2;
        match tear {
            "truncated" => bytes.truncate(half),
            _ => bytes[half / 2..half].fill(0),
        }
        std::fs::write(&files[0], &bytes).unwrap();
        assert_eq!(r.snapshots(), before, "{tear}");
        assert_latest_restores(&r, &src, &format!("t-{tear}"));
        r.ok(&["check"]);
    }
}

/// Whether a process holds a lock (redb's `flock`) on the file at `path`,
/// read from /proc/locks: looking takes no lock, so it cannot make the
/// holder's open fail.
fn locked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else { return false };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:00:56789 0 EOF": the inode ends the sixth field.
    locks.lines().any(|l| {
        l.split_whitespace().nth(5).and_then(|f| f.rsplit(':').next()).and_then(|i| i.parse::<u64>().ok())
            == Some(md.ino())
    })
}

/// Two backups of one tenant at once from one cache directory: the second
/// finds the catalog in use and works on a private one, which it deletes
/// with its id filter when it exits.
#[test]
fn a_private_catalog_is_removed_with_its_filter() {
    use std::io::Write;
    let r = TestRepo::small();
    let b = r.path("b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("f"), random_bytes(7, 100_000)).unwrap();
    r.ok(&["snapshots"]);
    let catalog = catalog_files(&r.cache).into_iter().find(|p| p.ends_with("catalog.redb")).expect("a catalog");
    // The first backup holds the catalog while it waits for its input.
    let mut first =
        r.command(&["backup", "--stdin", "--stdin-name", "held"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !locked(&catalog) {
        assert!(std::time::Instant::now() < deadline, "the first backup never opened the catalog");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = r.command(&["-v", "backup", b.to_str().unwrap()]).output().unwrap();
    let mut input = first.stdin.take().unwrap();
    input.write_all(&random_bytes(8, 100_000)).unwrap();
    drop(input);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(first.wait().unwrap().success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("using a private one"), "the second backup did not meet the first: {err}");
    let mut left = Vec::new();
    crate::support::walk_files(&r.cache, &mut |p| left.push(p.file_name().unwrap().to_string_lossy().into_owned()));
    left.sort();
    assert!(left.iter().all(|n| !n.starts_with("catalog-")), "private catalog files left behind: {left:?}");
    assert!(left.contains(&"catalog.redb".to_string()) && left.contains(&"catalog.filter".to_string()), "{left:?}");
    assert_eq!(r.snapshots().len(), 2);
}
