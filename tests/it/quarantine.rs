//! Deletion with a quarantine: `forget` and `prune` name what they remove
//! in a tombstone and delete nothing; a later prune deletes it once the
//! quarantine has passed by the store's clock; `undelete` brings back a
//! forgotten snapshot meanwhile, byte-identical.
//!
//! The quarantine that has to pass is 2 s here (`--quarantine 2s`), with
//! real waiting: the store's clock is the local file system's, so no test
//! hook can move it.

use std::path::{Path, PathBuf};

use std::time::Duration;

use serde_json::Value;

use crate::support::{file_contents, random_bytes, stderr, u64_field, TestRepo};

const TOMBSTONES: &str = "tenants/default/tombstones/";

/// A repository with two snapshots of `src`: the first holds a file only
/// it has (so prune finds its pack unused once it is forgotten). Returns
/// the repository, the source dir, the snapshot ids and a copy of the
/// first version's tree.
fn two_snapshots() -> (TestRepo, PathBuf, [String; 2], PathBuf) {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("shared.bin"), random_bytes(1, 200_000)).unwrap();
    std::fs::write(src.join("sub/only-first.bin"), random_bytes(2, 1_500_000)).unwrap();
    let first = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    let golden = r.path("golden-first");
    crate::support::copy_dir(&src, &golden);
    std::fs::remove_file(src.join("sub/only-first.bin")).unwrap();
    std::fs::write(src.join("sub/only-second.bin"), random_bytes(3, 300_000)).unwrap();
    let second = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    (r, src, [first, second], golden)
}

fn listed(r: &TestRepo) -> Vec<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn n_packs(r: &TestRepo) -> usize {
    r.objects_under("tenants/default/packs/").len()
}

/// Restores snapshot `id` (its `src`) into a fresh dir and compares it
/// with `golden`.
fn restores_as(r: &TestRepo, id: &str, src: &Path, golden: &Path, name: &str) {
    let target = r.path(name);
    r.ok(&["restore", &format!("{id}:{}", src.display()), "--target", target.to_str().unwrap(), "--verify"]);
    assert_eq!(file_contents(&target), file_contents(golden), "snapshot {id} restores differently");
}

fn check_clean(r: &TestRepo) -> Value {
    let c = r.json(&["check", "--read-data"]);
    assert_eq!(c["ok"], Value::Bool(true), "{c}");
    c
}

/// Forget hides the snapshot and prune quarantines its data; both stay in
/// the store, `check` reports them as quarantined (not as garbage), and
/// `undelete` brings the snapshot back byte-identical.
#[test]
fn forget_and_prune_quarantine_and_undelete_restores_byte_identical() {
    let (r, src, [first, second], golden) = two_snapshots();
    let packs_before = n_packs(&r);
    let forgotten = r.json(&["forget", &first]);
    assert!(forgotten[0]["deletable_after"].is_string(), "{forgotten}");
    assert_eq!(listed(&r), vec![second.clone()]);
    assert!(r.objects_under(&format!("tenants/default/snapshots/{first}")).len() == 1, "the record was deleted");

    let p = r.json(&["prune"]);
    assert_eq!(u64_field(&p, "bytes_freed"), 0, "{p}");
    assert!(u64_field(&p["quarantine"], "packs_quarantined") >= 1, "{p}");
    assert!(p["quarantine"]["deletable_after_ms"].is_i64(), "{p}");
    assert_eq!(u64_field(&p["quarantine"]["finalized"], "packs_deleted"), 0, "{p}");
    assert!(n_packs(&r) >= packs_before, "prune deleted packs in quarantine");
    let human = r.ok(&["prune", "--dry-run"]);
    assert!(human.contains("dry run"), "{human}");

    let c = check_clean(&r);
    let quarantined: Vec<&str> = c["quarantined"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(quarantined.iter().any(|q| q.starts_with("pack ")), "{c}");
    assert!(quarantined.iter().any(|q| q.contains(&first)), "{c}");
    assert!(!c["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("not in any index")), "{c}");

    let u = r.json(&["undelete", &first[..8]]);
    assert_eq!(u["snapshots"][0]["snapshot"], Value::String(first.clone()), "{u}");
    let mut now = listed(&r);
    now.sort();
    let mut want = vec![first.clone(), second];
    want.sort();
    assert_eq!(now, want);
    restores_as(&r, &first, &src, &golden, "restored-first");
    let c = check_clean(&r);
    assert!(c["quarantined"].as_array().unwrap().is_empty(), "{c}");
    // Nothing is lost by the next prune either.
    r.ok(&["prune", "--quarantine", "0"]);
    restores_as(&r, &first, &src, &golden, "restored-first-again");
}

/// Once the quarantine has passed, a prune deletes for good, and undelete
/// says it is too late.
#[test]
fn after_the_quarantine_prune_deletes_and_undelete_is_too_late() {
    let (r, src, [first, second], _) = two_snapshots();
    r.ok(&["forget", &first]);
    let p = r.json(&["prune", "--quarantine", "2s"]);
    let packs_quarantined = u64_field(&p["quarantine"], "packs_quarantined");
    assert!(packs_quarantined >= 1, "{p}");
    let packs = n_packs(&r);
    // Within the quarantine: nothing goes.
    let p = r.json(&["prune", "--quarantine", "1h"]);
    assert_eq!(u64_field(&p["quarantine"]["finalized"], "packs_deleted"), 0, "{p}");
    assert_eq!(n_packs(&r), packs);
    std::thread::sleep(Duration::from_millis(2500));
    let p = r.json(&["prune", "--quarantine", "2s"]);
    let f = &p["quarantine"]["finalized"];
    assert_eq!(u64_field(f, "snapshots_deleted"), 1, "{p}");
    assert_eq!(u64_field(f, "packs_deleted"), packs_quarantined, "{p}");
    assert!(u64_field(f, "tombstones_deleted") >= 2, "{p}");
    assert!(u64_field(&p, "bytes_freed") > 0, "{p}");
    assert_eq!(n_packs(&r), packs - packs_quarantined as usize);
    assert!(r.objects_under(&format!("tenants/default/snapshots/{first}")).is_empty());
    assert!(r.objects_under(TOMBSTONES).is_empty(), "{:?}", r.objects_under(TOMBSTONES));

    let out = r.run(&["undelete", &first], 1);
    assert!(stderr(&out).contains("too late"), "{}", stderr(&out));
    check_clean(&r);
    let golden = r.path("golden-second");
    crate::support::copy_dir(&src, &golden);
    restores_as(&r, &second, &src, &golden, "restored-second");
}

/// A forget tombstone the store replays after an undelete (the same bytes
/// under the same name: what a store writer who kept a copy can do) does
/// not forget the snapshot again; a new forget does.
#[test]
fn a_replayed_tombstone_does_not_forget_an_undeleted_snapshot() {
    let (r, src, [first, second], golden) = two_snapshots();
    r.ok(&["forget", &first]);
    let saved: Vec<(String, Vec<u8>)> =
        r.objects_under(TOMBSTONES).into_iter().map(|(k, p)| (k, std::fs::read(p).unwrap())).collect();
    assert_eq!(saved.len(), 1);
    r.ok(&["undelete", &first]);
    // The forget tombstone deleted and put back, then also copied under
    // another name (which does not match its hash).
    for (key, bytes) in &saved {
        let path = r.repo.join(key);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::write(r.repo.join(TOMBSTONES).join("ab".repeat(32)), bytes).unwrap();
    }
    assert_eq!(listed(&r).len(), 2, "a replayed tombstone forgot the snapshot again");
    // The misnamed copy is damaged: it hides nothing and stops final
    // deletions, but prune still runs and loses nothing.
    let out = r.cmd(&["check", "--json"]);
    assert!(!out.status.success());
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(c["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("damaged tombstone")), "{c}");
    let p = r.json(&["prune", "--quarantine", "0"]);
    assert!(p["quarantine"]["finalized"]["blocked"].is_string(), "{p}");
    restores_as(&r, &first, &src, &golden, "restored-first");
    std::fs::remove_file(r.repo.join(TOMBSTONES).join("ab".repeat(32))).unwrap();
    // Forgetting it again is a new tombstone, not voided by the old undelete.
    r.ok(&["forget", &first]);
    assert_eq!(listed(&r), vec![second]);
}

/// A held snapshot cannot be forgotten; one that a tombstone forgets
/// anyway (an undelete record deleted by a store writer) stops prune
/// before it changes anything.
#[test]
fn a_held_snapshot_is_never_deleted_from_quarantine() {
    let (r, src, [first, _second], golden) = two_snapshots();
    r.ok(&["forget", &first]);
    let tombstones_before: Vec<String> = r.objects_under(TOMBSTONES).into_iter().map(|(k, _)| k).collect();
    r.ok(&["undelete", &first]);
    r.ok(&["hold", "add", &first, "--reason", "legal"]);
    let out = r.cmd(&["forget", &first]);
    assert!(!out.status.success() && stderr(&out).contains("held"), "{}", stderr(&out));
    // Delete the undelete record: the old tombstone is in force again.
    for (k, p) in r.objects_under(TOMBSTONES) {
        if !tombstones_before.contains(&k) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let packs = n_packs(&r);
    let out = r.cmd(&["prune", "--quarantine", "0"]);
    assert!(!out.status.success() && stderr(&out).contains("is held but a tombstone forgets it"), "{}", stderr(&out));
    assert_eq!(n_packs(&r), packs);
    assert!(r.objects_under(&format!("tenants/default/snapshots/{first}")).len() == 1);
    r.ok(&["undelete", &first]);
    restores_as(&r, &first, &src, &golden, "restored-held");
    check_clean(&r);
}

/// A prune with a quarantine killed before each of its store writes (the
/// replacement index deltas, the tombstone) leaves a repository that
/// checks clean, and the forgotten snapshot can still be brought back.
#[test]
fn a_quarantining_prune_killed_at_each_write_leaves_a_consistent_repository() {
    let (base, src, [first, second], golden) = two_snapshots();
    base.ok(&["forget", &first]);
    let mut n = 1;
    loop {
        let r = base.copy();
        let out = r
            .command(&["prune", "--max-unused", "0"])
            .env("STRONGROOM_FAULT", format!("abort-put:{n}"))
            .output()
            .unwrap();
        let completed = out.status.success();
        check_clean(&r);
        assert_eq!(listed(&r), vec![second.clone()], "abort-put:{n}");
        r.ok(&["prune", "--max-unused", "0"]);
        check_clean(&r);
        r.ok(&["undelete", &first]);
        restores_as(&r, &first, &src, &golden, "restored");
        if completed {
            break;
        }
        n += 1;
        assert!(n < 40, "prune never completed");
    }
    assert!(n > 2, "too few kill points: {n}");
}

/// A final deletion killed before each of its deletions (snapshot record,
/// index delta, pack) leaves a repository that checks clean, and the next
/// prune finishes it.
#[test]
fn a_final_deletion_killed_before_each_delete_is_finished_by_the_next_prune() {
    let (base, src, [first, second], _) = two_snapshots();
    base.ok(&["forget", &first]);
    base.ok(&["prune", "--quarantine", "1s", "--max-unused", "0"]);
    let golden = base.path("golden-second");
    crate::support::copy_dir(&src, &golden);
    // A copy's objects are new to the store (new modification times): the
    // quarantine runs from the copy.
    let copies: Vec<TestRepo> = (0..3).map(|_| base.copy()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    for (point, r) in ["snapshot", "index", "pack"].into_iter().zip(copies) {
        let pause = r.path("pause");
        std::fs::create_dir_all(&pause).unwrap();
        let mut child = r
            .command(&["prune", "--quarantine", "1s", "--max-unused", "0"])
            .env("STRONGROOM_TEST_PAUSE", format!("finalize-delete:{point}"))
            .env("STRONGROOM_TEST_PAUSE_DIR", &pause)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !pause.join("reached").exists() {
            assert!(std::time::Instant::now() < deadline, "{point}: the prune never reached the point");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{point}: the prune ended ({status}) before the point");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        check_clean(&r);
        assert_eq!(listed(&r), vec![second.clone()], "{point}");
        r.ok(&["prune", "--quarantine", "1s", "--max-unused", "0"]);
        check_clean(&r);
        assert!(r.objects_under(TOMBSTONES).is_empty(), "{point}");
        restores_as(&r, &second, &src, &golden, &format!("restored-{point}"));
        let out = r.run(&["undelete", &first], 1);
        assert!(stderr(&out).contains("too late"), "{point}: {}", stderr(&out));
    }
}

/// `tenant set --quarantine` is the default of forget and prune; `0` is
/// today's immediate deletion, only when asked for.
#[test]
fn the_tenant_setting_sets_the_quarantine_and_zero_deletes_at_once() {
    let (r, _src, [first, _second], _) = two_snapshots();
    r.ok(&["tenant", "set", "default", "--quarantine", "0"]);
    let packs = n_packs(&r);
    r.ok(&["forget", &first, "--prune"]);
    assert!(r.objects_under(&format!("tenants/default/snapshots/{first}")).is_empty());
    assert!(n_packs(&r) < packs);
    assert!(r.objects_under(TOMBSTONES).is_empty());
    let out = r.run(&["undelete", "--all"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no forgotten snapshot"), "{out:?}");
    check_clean(&r);
    let out = r.cmd(&["tenant", "set", "default", "--quarantine", "soon"]);
    assert!(!out.status.success() && stderr(&out).contains("soon"), "{}", stderr(&out));
}

/// A key rotation's rewrite deletes everything sealed with the old keys,
/// so it would end the quarantine: it refuses while tombstones are in
/// force, naming the way out, and `--end-quarantine` says so explicitly.
#[test]
fn a_key_rotation_does_not_end_a_quarantine_unasked() {
    let r = crate::support::TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), crate::support::random_bytes(5, 50_000)).unwrap();
    r.backup(&[&src], &[]);
    std::fs::write(src.join("a"), crate::support::random_bytes(6, 50_000)).unwrap();
    r.backup(&[&src], &[]);
    r.ok(&["forget", "--keep-last", "1"]);
    let out = r.run(&["tenant", "rotate-key", "--rewrite"], 1);
    let err = crate::support::stderr(&out);
    assert!(err.contains("still in quarantine") && err.contains("--end-quarantine"), "{err}");
    // Nothing was rewritten: the forgotten snapshot still comes back.
    r.ok(&["undelete", "--all"]);
    assert_eq!(r.snapshots().len(), 2);
    r.ok(&["forget", "--keep-last", "1"]);
    r.ok(&["tenant", "rotate-key", "--rewrite", "--end-quarantine"]);
    assert_eq!(r.snapshots().len(), 1);
    r.ok(&["check", "--read-data"]);
}
