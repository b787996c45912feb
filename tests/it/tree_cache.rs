//! The disk cache of tree packs: an unchanged re-backup on the host that
//! made the last one downloads no pack, a new host downloads the tree
//! packs once, a cached file that is not its pack (damaged, cut short,
//! another pack's bytes) is replaced and never gives wrong bytes, and
//! prune drops the tree packs it deletes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::{assert_trees_equal, random_bytes, restored_at, walk_files, TestRepo};

/// A small tree of a few directories, so that a snapshot has several trees.
fn source(r: &TestRepo, name: &str, seed: u64) -> PathBuf {
    let src = r.path(name);
    for d in 0..3u64 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..4u64 {
            std::fs::write(dir.join(format!("f{f}")), random_bytes(seed * 100 + d * 10 + f, 3000)).unwrap();
        }
    }
    src
}

/// What the store's objects say a command read: the number of whole-pack
/// GETs and ranged pack reads, from the trace log (`store request: ...`);
/// and the whole log.
struct Reads {
    pack_gets: usize,
    pack_ranges: usize,
    log: String,
}

fn run_counting(r: &TestRepo, cache: &Path, args: &[&str]) -> Reads {
    let mut all = vec!["--cache-dir", cache.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = r.command(&all).env("STRONGROOM_LOG", "strongroom=trace").output().unwrap();
    crate::support::assert_code(&out, 0, &format!("{args:?}"));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let count = |kind: &str| {
        log.lines().filter(|l| l.contains(&format!("store request: {kind} tenants/default/packs/"))).count()
    };
    Reads { pack_gets: count("get"), pack_ranges: count("range"), log }
}

/// The pack ids (file names) kept in the tree-pack cache below `cache`.
fn cached(cache: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if cache.exists() {
        walk_files(cache, &mut |p| {
            if p.components().any(|c| c.as_os_str() == "tree-packs") {
                out.insert(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        });
    }
    out
}

fn cached_path(cache: &Path, id: &str) -> PathBuf {
    let mut found = None;
    walk_files(cache, &mut |p| {
        if p.file_name().is_some_and(|n| n == id) {
            found = Some(p.to_path_buf());
        }
    });
    found.unwrap_or_else(|| panic!("pack {id} not cached"))
}

/// The store's object for pack `id`.
fn stored_pack(r: &TestRepo, id: &str) -> PathBuf {
    let found = r.objects_under("tenants/default/packs/").into_iter().find(|(k, _)| k.ends_with(id));
    found.unwrap_or_else(|| panic!("pack {id} not in the store")).1
}

fn stored_packs(r: &TestRepo) -> BTreeSet<String> {
    r.objects_under("tenants/default/packs/")
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

fn restore_and_compare(r: &TestRepo, cache: &Path, src: &Path, target: &str) -> Reads {
    let target = r.path(target);
    let reads = run_counting(r, cache, &["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(src, &restored_at(&target, src));
    reads
}

#[test]
fn an_unchanged_re_backup_on_the_same_host_reads_no_pack() {
    let r = TestRepo::small();
    let src = source(&r, "src", 1);
    r.backup(&[&src], &[]);
    assert!(!cached(&r.cache).is_empty(), "the backup's tree pack is written through");
    let again = run_counting(&r, &r.cache, &["backup", src.to_str().unwrap()]);
    assert_eq!((again.pack_gets, again.pack_ranges), (0, 0), "{}", again.log);
    // `ls` of the same host reads its trees from the cache as well.
    let ls = run_counting(&r, &r.cache, &["ls", "latest", src.join("d1").to_str().unwrap()]);
    assert_eq!((ls.pack_gets, ls.pack_ranges), (0, 0), "{}", ls.log);
}

#[test]
fn a_new_host_downloads_the_tree_packs_once() {
    let r = TestRepo::small();
    let src = source(&r, "src", 1);
    r.backup(&[&src], &[]);
    let host = r.path("other-host");
    let first = run_counting(&r, &host, &["backup", src.to_str().unwrap()]);
    assert!(first.pack_gets >= 1, "the parent's tree pack, read whole: {}", first.log);
    // The parent's tree pack is kept (with the one this backup wrote for
    // the directories above the source, whose times changed).
    assert!(cached(&r.cache).is_subset(&cached(&host)), "{:?} {:?}", cached(&r.cache), cached(&host));
    let second = run_counting(&r, &host, &["backup", src.to_str().unwrap()]);
    assert_eq!((second.pack_gets, second.pack_ranges), (0, 0), "{}", second.log);
    // A restore there reads data, and no tree pack again.
    let restore = restore_and_compare(&r, &host, &src, "t");
    assert_eq!(restore.pack_gets, 0, "{}", restore.log);
    assert!(restore.pack_ranges >= 1, "the data: {}", restore.log);
}

#[test]
fn a_cached_tree_pack_that_is_not_its_pack_is_replaced_and_never_served() {
    let r = TestRepo::small();
    let a = source(&r, "a", 1);
    r.backup(&[&a], &[]);
    let first = cached(&r.cache);
    let b = source(&r, "b", 2);
    r.backup(&[&b], &[]);
    let other = cached(&r.cache).difference(&first).next().cloned().expect("a second tree pack");
    let id = first.iter().next().unwrap().clone();
    let path = cached_path(&r.cache, &id);
    let intact = std::fs::read(stored_pack(&r, &id)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), intact, "kept as stored");
    let damages: [(&str, Vec<u8>); 3] = [
        ("other bytes", random_bytes(7, intact.len())),
        ("cut short", intact[..intact.len() / 2].to_vec()),
        ("another pack's bytes", std::fs::read(stored_pack(&r, &other)).unwrap()),
    ];
    for (i, (what, bytes)) in damages.into_iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        // The restore of the first snapshot needs that pack's trees.
        let target = r.path(&format!("t{i}"));
        let snap = r.snapshots()[0]["id"].as_str().unwrap().to_string();
        let reads = run_counting(&r, &r.cache, &["-vv", "restore", &snap, "--target", target.to_str().unwrap()]);
        assert_trees_equal(&a, &restored_at(&target, &a));
        assert!(reads.log.contains("deleted, reading the pack from the store"), "{what}: {}", reads.log);
        assert!(reads.pack_gets >= 1, "{what}: read from the store again: {}", reads.log);
        assert_eq!(std::fs::read(&path).unwrap(), intact, "{what}: replaced by the pack");
    }
}

#[test]
fn prune_drops_the_tree_packs_it_deletes_from_the_cache() {
    let r = TestRepo::small();
    let src = source(&r, "src", 1);
    r.backup(&[&src], &[]);
    std::fs::write(src.join("d0").join("new"), random_bytes(99, 5000)).unwrap();
    r.backup(&[&src], &[]);
    let before = cached(&r.cache);
    r.ok(&["forget", "--keep-last", "1"]);
    r.ok(&["prune", "--max-unused", "0", "--quarantine", "0"]);
    let in_store = stored_packs(&r);
    let deleted: Vec<&String> = before.iter().filter(|id| !in_store.contains(*id)).collect();
    assert!(!deleted.is_empty(), "prune deleted a tree pack: {before:?} {in_store:?}");
    let after = cached(&r.cache);
    assert!(after.is_subset(&in_store), "cached: {after:?}; stored: {in_store:?}");
    // What prune wrote (repacked trees) is written through.
    assert!(after.len() >= before.len() - deleted.len(), "{before:?} -> {after:?}");
    let reads = restore_and_compare(&r, &r.cache, &src, "t");
    assert_eq!(reads.pack_gets, 0, "{}", reads.log);
}

#[test]
fn check_judges_the_stores_tree_packs_not_the_cached_copies() {
    let r = TestRepo::small();
    let src = source(&r, "src", 1);
    r.backup(&[&src], &[]);
    let id = cached(&r.cache).into_iter().next().expect("a cached tree pack");
    let intact = std::fs::read(cached_path(&r.cache, &id)).unwrap();
    // The store's copy is damaged; this host's cached copy is intact.
    crate::support::flip_middle_byte(&stored_pack(&r, &id));
    let out = r.cmd(&["check"]);
    assert_ne!(out.status.code(), Some(0), "check passed on a damaged tree pack: {}", crate::support::stderr(&out));
    assert_eq!(std::fs::read(cached_path(&r.cache, &id)).unwrap(), intact, "the cached copy is not replaced");
}
