//! Requests to the store are what a command costs on object storage (each
//! one billed and a round trip): `snapshots` and `forget --dry-run` on a
//! new host read the snapshot records, not every index delta; a backup asks no size after
//! each pack a local store wrote; and what the lazier sync leaves out is
//! read in as soon as a command needs it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{random_bytes, restored_at, u64_field, TestRepo};

/// The counts of the `store requests: get N, range N, ...` line `-vv`
/// logs at the end of a command, by kind.
fn requests(r: &TestRepo, args: &[&str]) -> BTreeMap<String, u64> {
    let mut all = vec!["-vv"];
    all.extend_from_slice(args);
    let out = r.run(&all, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("store requests: ").map(|(_, counts)| counts))
        .unwrap_or_else(|| panic!("{args:?}: no request counts logged:\n{stderr}"));
    line.split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(' ').unwrap_or_else(|| panic!("malformed count {kv:?} in {line:?}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("malformed count {kv:?} in {line:?}")))
        })
        .collect()
}

/// Backs up `src` after writing a new file of `len` random bytes into it:
/// each backup adds an index delta and a snapshot record.
fn backup_changed(r: &TestRepo, src: &Path, seed: u64, len: usize) {
    std::fs::write(src.join(format!("f{seed}")), random_bytes(seed, len)).unwrap();
    r.backup(&[src], &[]);
}

/// `snapshots` with an empty cache directory; returns its request counts.
fn snapshots_on_a_new_host(r: &TestRepo, cache: &str) -> BTreeMap<String, u64> {
    let cache = r.path(cache);
    requests(r, &["--cache-dir", cache.to_str().unwrap(), "snapshots"])
}

#[test]
fn snapshots_on_a_new_host_reads_no_index_delta_however_many_there_are() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    backup_changed(&r, &src, 1, 50_000);
    let one = snapshots_on_a_new_host(&r, "new-host-1");
    for seed in 2..=4 {
        backup_changed(&r, &src, seed, 50_000);
    }
    assert!(r.objects_under("tenants/default/index/").len() >= 4, "each backup wrote an index delta");
    let four = snapshots_on_a_new_host(&r, "new-host-4");
    // One more GET per snapshot record, none per index delta.
    assert_eq!(four["get"], one["get"] + 3, "one snapshot: {one:?}; four: {four:?}");
    assert_eq!(four["list"], one["list"], "{one:?} {four:?}");
    // Start-up reads (config, key slot, keyring, binding, escrow) and
    // the records: a bound that does not grow with the repository.
    assert!(four["get"] <= 8 + 4, "{four:?}");
    assert_eq!((four["put"], four["delete"], four["head"], four["range"]), (0, 0, 0, 0), "{four:?}");
    // A dry-run forget plans from the same records (and lists the holds).
    let cache = r.path("new-host-forget");
    let forget = requests(&r, &["--cache-dir", cache.to_str().unwrap(), "forget", "--keep-last", "1", "--dry-run"]);
    assert!(forget["get"] <= four["get"] + 1, "snapshots: {four:?}; forget --dry-run: {forget:?}");
    assert_eq!(forget["put"], 0, "{forget:?}");
}

#[test]
fn a_backup_to_a_local_store_asks_no_size_after_each_pack() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("big{i}")), random_bytes(10 + i, 1_200_000)).unwrap();
    }
    let counts = requests(&r, &["backup", src.to_str().unwrap()]);
    let packs = r.objects_under("tenants/default/packs/").len() as u64;
    assert!(packs >= 3, "{packs} packs");
    // The packs, an index delta, the snapshot, the lock, the audit entry.
    assert!(counts["put"] >= packs + 2, "{counts:?}");
    // The one HEAD left is the lock's check that the key slot is still there.
    assert!(counts["head"] <= 1, "{packs} packs: {counts:?}");
}

#[test]
fn after_a_snapshots_only_sync_restore_check_and_backup_read_the_index() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    backup_changed(&r, &src, 1, 300_000);
    backup_changed(&r, &src, 2, 300_000);
    // A new host lists the snapshots first: its catalog holds the
    // records, not the index deltas.
    std::fs::remove_dir_all(&r.cache).unwrap();
    assert_eq!(r.snapshots().len(), 2);
    let target = r.path("t");
    r.ok(&["restore", "latest", "--verify", "--target", target.to_str().unwrap()]);
    crate::support::assert_trees_equal(&src, &restored_at(&target, &src));
    r.ok(&["check", "--read-data"]);
    // The catalog knows every chunk now: a forced rerun stores no data.
    let again = r.backup(&[&src], &["--force"]);
    assert_eq!(u64_field(&again, "blobs_new"), 0, "{again}");
}

#[test]
fn a_snapshots_only_sync_notices_a_record_forgotten_elsewhere() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    backup_changed(&r, &src, 1, 50_000);
    backup_changed(&r, &src, 2, 50_000);
    assert_eq!(r.snapshots().len(), 2);
    // Another host forgets the older snapshot, behind this catalog's back.
    let other = r.path("other-cache");
    r.ok(&["--cache-dir", other.to_str().unwrap(), "forget", "--keep-last", "1"]);
    assert_eq!(r.snapshots().len(), 1);
    let target = r.path("t");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    crate::support::assert_trees_equal(&src, &restored_at(&target, &src));
}

#[test]
fn an_unchanged_re_backup_downloads_nothing_but_the_start_up_reads() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for seed in 1..=3 {
        backup_changed(&r, &src, seed, 200_000);
    }
    let counts = requests(&r, &["backup", src.to_str().unwrap()]);
    // Config, key slot, keyring, binding record: no pack (the
    // parent's trees are in the disk cache), no index delta (the catalog
    // has them), no snapshot record.
    assert!(counts["get"] <= 7, "{counts:?}");
    assert_eq!(counts["range"], 0, "{counts:?}");
    assert!(counts["downloaded"] <= 16 * 1024, "{counts:?}");
}

/// Every command's start-up on a host that opened the tenant before: the
/// config, the key slot that opened last time (read by name, no listing of
/// the others), the keyring (listed and read) and the binding record; the
/// repository's root `escrow` object only for the commands whose warning
/// about it matters (`tenant`, `escrow`, `check`).
#[test]
fn a_command_on_a_warm_host_starts_with_five_requests() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    backup_changed(&r, &src, 1, 1000);
    r.ok(&["snapshots"]);
    let counts = requests(&r, &["snapshots"]);
    // Start-up (4 GET, 1 LIST), the snapshot listing and the tombstone
    // listing (1 LIST each, concurrent).
    assert!(counts["get"] <= 4 && counts["list"] <= 3, "{counts:?}");
    assert_eq!((counts["put"], counts["delete"], counts["head"], counts["range"]), (0, 0, 0, 0), "{counts:?}");
    // Opened from the key cache, the same.
    r.ok(&["snapshots", "--key-cache", "5m"]);
    let cached = requests(&r, &["snapshots", "--key-cache", "5m"]);
    assert_eq!(cached, counts);
}

/// A backup's lock costs what it did when it deleted its lock: a create,
/// a listing and a release, now a new object instead of a DELETE. An
/// unchanged re-backup makes 4 puts (lock, snapshot record, audit entry,
/// release) and no delete; its lock objects wait for maintenance.
#[test]
fn an_unchanged_backup_deletes_nothing_and_its_lock_costs_three_requests() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    backup_changed(&r, &src, 1, 50_000);
    let counts = requests(&r, &["backup", src.to_str().unwrap()]);
    // Lock, snapshot record, audit entry and release (and a tree pack
    // and index delta when the walk saw a change). Listings: locks, index
    // deltas, snapshot records, tombstones and the audit log's tail.
    assert_eq!((counts["delete"], counts["list"]), (0, 5), "{counts:?}");
    assert!((4..=6).contains(&counts["put"]), "{counts:?}");
    assert!(counts["head"] <= 1, "{counts:?}");
    let locks: Vec<String> = r.objects_under("tenants/default/locks/").into_iter().map(|(name, _)| name).collect();
    assert_eq!(locks.len(), 4, "a record and a release per backup: {locks:?}");
    assert_eq!(locks.iter().filter(|n| n.ends_with(".end")).count(), 2, "{locks:?}");
    // A maintenance command sweeps them (its own lock it deletes).
    let counts = requests(&r, &["prune"]);
    assert!(counts["delete"] >= 4, "{counts:?}");
    assert_eq!(r.objects_under("tenants/default/locks/"), Vec::new());
}
