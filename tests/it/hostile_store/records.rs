//! A damaged or unauthenticated index delta or snapshot record is never
//! taken for absent: prune (and repair, key rotation) stop before deleting
//! anything and name it, `latest` and `--at` fail naming it instead of
//! picking an older snapshot, and only an explicit `repair index` or
//! `repair snapshots --forget-damaged` removes it, after verifying it
//! again. Every attack runs on a copy of the repository with a fresh
//! cache, as another host (or one that lost its cache) would see it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    assert_code, file_contents, flip_middle_byte, random_bytes, restored_at, stderr, truncate_half, TestRepo,
};

/// A repository with two snapshots of different data (the second one
/// newer), and their sources.
struct Fixture {
    repo: TestRepo,
    old_src: PathBuf,
    new_src: PathBuf,
    /// Snapshot ids, oldest first.
    ids: Vec<String>,
}

fn fixture() -> Fixture {
    let repo = TestRepo::small();
    let old_src = repo.path("old");
    let new_src = repo.path("new");
    std::fs::create_dir_all(&old_src).unwrap();
    std::fs::create_dir_all(&new_src).unwrap();
    std::fs::write(old_src.join("a.bin"), random_bytes(31, 600_000)).unwrap();
    std::fs::write(new_src.join("b.bin"), random_bytes(32, 1_200_000)).unwrap();
    std::fs::write(new_src.join("c.txt"), b"only in the newer snapshot\n").unwrap();
    let a = repo.backup(&[&old_src], &[]);
    let b = repo.backup(&[&new_src], &[]);
    let ids = [a, b].iter().map(|s| s["snapshot_id"].as_str().unwrap().to_string()).collect();
    Fixture { repo, old_src, new_src, ids }
}

fn snapshot_key(id: &str) -> String {
    format!("tenants/default/snapshots/{id}")
}

/// Every object of the store but locks and audit entries (which every
/// locking command writes), with its bytes.
fn store_state(r: &TestRepo) -> BTreeMap<String, Vec<u8>> {
    r.objects()
        .into_iter()
        .filter(|(k, _)| !k.contains("/locks/") && !k.contains("/audit/"))
        .map(|(k, p)| {
            let b = std::fs::read(&p).unwrap();
            (k, b)
        })
        .collect()
}

fn write_object(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    std::fs::write(path, bytes).unwrap();
}

/// The ways an attacker damages the newer snapshot's record; each
/// returns the records it damaged.
#[derive(Debug, Clone, Copy)]
enum Attack {
    Flip,
    Truncate,
    /// Another valid sealed record under its name.
    ReplaceWithOther,
    /// The two records' contents swapped.
    Swap,
}

const ATTACKS: [Attack; 4] = [Attack::Flip, Attack::Truncate, Attack::ReplaceWithOther, Attack::Swap];

impl Attack {
    fn apply(self, r: &TestRepo, ids: &[String]) -> Vec<String> {
        let old = r.repo.join(snapshot_key(&ids[0]));
        let new = r.repo.join(snapshot_key(&ids[1]));
        match self {
            Attack::Flip => flip_middle_byte(&new),
            Attack::Truncate => truncate_half(&new),
            Attack::ReplaceWithOther => write_object(&new, &std::fs::read(&old).unwrap()),
            Attack::Swap => {
                let (a, b) = (std::fs::read(&old).unwrap(), std::fs::read(&new).unwrap());
                write_object(&old, &b);
                write_object(&new, &a);
                return vec![ids[0].clone(), ids[1].clone()];
            }
        }
        vec![ids[1].clone()]
    }
}

fn all_output(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

#[test]
fn a_damaged_snapshot_record_stops_prune_before_it_deletes_anything() {
    let f = fixture();
    for attack in ATTACKS {
        let r = f.repo.copy();
        let intact = store_state(&r);
        let damaged = attack.apply(&r, &f.ids);
        let before = store_state(&r);
        let out = r.run(&["prune"], 1);
        let err = stderr(&out);
        for id in &damaged {
            assert!(err.contains(&snapshot_key(id)), "{attack:?}: prune does not name {id}:\n{err}");
        }
        assert!(err.contains("repair snapshots --forget-damaged"), "{attack:?}: no way forward given:\n{err}");
        assert!(store_state(&r) == before, "{attack:?}: prune changed the store");
        // A dry run stops too: its plan would be wrong.
        r.run(&["prune", "--dry-run"], 1);
        // The intact records put back: nothing was lost, and the damage
        // the catalog recorded is cleared by the next sync.
        for (k, b) in &intact {
            write_object(&r.repo.join(k), b);
        }
        r.run(&["check", "--read-data"], 0);
        r.ok(&["prune"]);
        r.run(&["check", "--read-data"], 0);
    }
}

/// Restores `reference` (with extra arguments) into a fresh target;
/// returns the output.
fn restore(r: &TestRepo, reference: &str, extra: &[&str]) -> (std::process::Output, PathBuf) {
    let target = r.path(&format!("t-{}", reference.len() + extra.len()));
    let _ = std::fs::remove_dir_all(&target);
    let mut args = vec!["restore", reference, "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    (r.cmd(&args), target)
}

#[test]
fn latest_and_at_fail_naming_a_damaged_newest_record_instead_of_restoring_an_older_one() {
    let f = fixture();
    let times: Vec<String> =
        f.repo.snapshots().iter().map(|s| s["time"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    for attack in [Attack::Flip, Attack::Truncate, Attack::ReplaceWithOther] {
        let r = f.repo.copy();
        attack.apply(&r, &f.ids);
        let key = snapshot_key(&f.ids[1]);
        for extra in [&[][..], &["--at", "2999-01-01T00:00:00Z"][..], &["--at", times[0].as_str()][..]] {
            let (out, target) = restore(&r, "latest", extra);
            assert_code(&out, 1, &format!("{attack:?}: restore latest {extra:?}"));
            assert!(stderr(&out).contains(&key), "{attack:?} {extra:?}: the record is not named:\n{}", stderr(&out));
            assert!(!target.exists() || file_contents(&target).is_empty(), "{attack:?} {extra:?}: restored something");
        }
        let out = r.run(&["ls", "latest"], 1);
        assert!(stderr(&out).contains(&key), "{}", stderr(&out));
        // The damaged record by its id: named.
        let (out, _) = restore(&r, &f.ids[1], &[]);
        assert_code(&out, 1, "restore of the damaged record's id");
        assert!(stderr(&out).contains(&key), "{}", stderr(&out));
        // A readable snapshot named by id (or prefix) still restores.
        for reference in [f.ids[0].clone(), f.ids[0][..12].to_string()] {
            let (out, target) = restore(&r, &reference, &[]);
            assert_code(&out, 0, "restore of the readable snapshot by id");
            assert_eq!(file_contents(&restored_at(&target, &f.old_src)), file_contents(&f.old_src));
        }
    }
}

#[test]
fn snapshots_and_check_name_a_damaged_record_distinctly() {
    let f = fixture();
    let r = f.repo.copy();
    Attack::Truncate.apply(&r, &f.ids);
    let list = r.snapshots();
    assert_eq!(list.len(), 2, "{list:?}");
    let readable: Vec<&Value> = list.iter().filter(|s| s.get("damaged").is_none()).collect();
    let damaged: Vec<&Value> = list.iter().filter(|s| s.get("damaged").is_some()).collect();
    assert_eq!(readable.len(), 1, "{list:?}");
    assert_eq!(readable[0]["id"], f.ids[0].as_str());
    assert_eq!(damaged.len(), 1, "{list:?}");
    assert_eq!(damaged[0]["id"], f.ids[1].as_str());
    assert!(damaged[0]["damaged"].as_str().unwrap().contains("does not match its name"), "{list:?}");
    let text = r.ok(&["snapshots"]);
    assert!(text.contains(&format!("{}  DAMAGED", &f.ids[1][..8])), "{text}");
    assert!(text.contains("1 damaged snapshot records"), "{text}");
    // A filter cannot tell whether the damaged record matches: it stays.
    let text = r.ok(&["snapshots", "--host", "no-such-host"]);
    assert!(text.contains("DAMAGED"), "{text}");
    let out = r.run(&["check"], 1);
    let text = all_output(&out);
    assert!(text.contains(&snapshot_key(&f.ids[1])) && text.contains("--forget-damaged"), "{text}");
}

/// Waits for a paused process to reach its pause point.
fn wait_reached(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("reached").exists() {
        assert!(Instant::now() < deadline, "the process never reached its pause point");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn repair_snapshots_forget_damaged_removes_exactly_the_damaged_record_then_prune_runs() {
    let f = fixture();
    let r = f.repo.copy();
    Attack::Flip.apply(&r, &f.ids);
    let before = store_state(&r);
    let dry = r.json(&["repair", "snapshots", "--forget-damaged", "--dry-run"]);
    assert_eq!(dry["damaged_removed"].as_array().unwrap().len(), 1, "{dry}");
    assert!(store_state(&r) == before, "a dry run changed the store");
    let s = r.json(&["repair", "snapshots", "--forget-damaged"]);
    let removed = s["damaged_removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{s}");
    assert_eq!(removed[0]["object"], snapshot_key(&f.ids[1]).as_str());
    let mut expected = before.clone();
    expected.remove(&snapshot_key(&f.ids[1]));
    let after = store_state(&r);
    assert_eq!(after.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    assert!(after == expected, "repair changed other objects");
    let audit = r.json(&["audit"]);
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["command"], "repair snapshots", "{last}");
    assert_eq!(last["snapshots"][0], f.ids[1].as_str(), "{last}");
    // Nothing is damaged now: prune deletes the lost snapshot's data, and
    // the rest is sound.
    r.ok(&["prune"]);
    r.run(&["check", "--read-data"], 0);
    let (out, target) = restore(&r, "latest", &[]);
    assert_code(&out, 0, "restore latest after the repair");
    assert_eq!(file_contents(&restored_at(&target, &f.old_src)), file_contents(&f.old_src));
}

#[test]
fn repair_snapshots_forget_damaged_keeps_a_record_put_back_before_its_deletion() {
    let f = fixture();
    let r = f.repo.copy();
    let key = snapshot_key(&f.ids[1]);
    let intact = std::fs::read(r.repo.join(&key)).unwrap();
    Attack::Truncate.apply(&r, &f.ids);
    let pause = r.path("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let child = r
        .command(&["repair", "snapshots", "--forget-damaged", "--json"])
        .env("STRONGROOM_TEST_PAUSE", format!("repair-reverify:snapshots/{}", f.ids[1]))
        .env("STRONGROOM_TEST_PAUSE_DIR", &pause)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_reached(&pause);
    // Between the sync that found it damaged and its deletion.
    write_object(&r.repo.join(&key), &intact);
    std::fs::write(pause.join("go"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0, "repair snapshots --forget-damaged");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["damaged_removed"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(s["damaged_intact"][0], key.as_str(), "{s}");
    assert_eq!(std::fs::read(r.repo.join(&key)).unwrap(), intact, "the intact record was deleted");
    let (out, target) = restore(&r, "latest", &["--path", f.new_src.to_str().unwrap()]);
    assert_code(&out, 0, "restore latest");
    assert_eq!(file_contents(&restored_at(&target, &f.new_src)), file_contents(&f.new_src));
}

#[test]
fn a_damaged_index_delta_stops_prune_until_repair_index_indexes_its_packs_again() {
    let f = fixture();
    let deltas = f.repo.objects_under("tenants/default/index/");
    assert!(deltas.len() >= 2, "{deltas:?}");
    for (key, _) in &deltas {
        let r = f.repo.copy();
        flip_middle_byte(&r.repo.join(key));
        let before = store_state(&r);
        let out = r.run(&["prune"], 1);
        assert!(stderr(&out).contains(key.as_str()), "prune does not name {key}:\n{}", stderr(&out));
        assert!(stderr(&out).contains("repair index"), "no way forward given:\n{}", stderr(&out));
        assert!(store_state(&r) == before, "prune changed the store with {key} damaged");
        // Nor do the whole repair, the snapshot rewrite, or a key
        // rotation's rewrite delete anything.
        for args in [&["repair"][..], &["repair", "snapshots"][..], &["tenant", "rotate-key", "--rewrite"][..]] {
            let out = r.run(args, 1);
            assert!(stderr(&out).contains(key.as_str()), "{args:?} does not name {key}:\n{}", stderr(&out));
            assert!(
                store_state(&r)
                    .into_iter()
                    .filter(|(k, _)| !k.contains("/keyring/") && !k.contains("/meta/"))
                    .eq(before.clone().into_iter().filter(|(k, _)| !k.contains("/keyring/") && !k.contains("/meta/"))),
                "{args:?} changed the store with {key} damaged"
            );
        }
        let s = r.json(&["repair", "index"]);
        assert_eq!(s["damaged_removed"][0]["object"], key.as_str(), "{s}");
        assert!(s["packs_indexed"].as_u64().unwrap() >= 1, "{s}");
        assert!(!r.repo.join(key).exists());
        r.ok(&["prune"]);
        r.run(&["check", "--read-data"], 0);
        for (id, src) in [(&f.ids[0], &f.old_src), (&f.ids[1], &f.new_src)] {
            let (out, target) = restore(&r, id, &[]);
            assert_code(&out, 0, "restore after repair index and prune");
            assert_eq!(file_contents(&restored_at(&target, src)), file_contents(src));
        }
    }
}

#[test]
fn forget_keeps_a_damaged_record_out_of_the_policy_and_says_so() {
    let f = fixture();
    // A third snapshot of the older source, damaged as another host (a
    // fresh cache) reads it.
    let c = f.repo.backup(&[&f.old_src], &[]);
    let newest = c["snapshot_id"].as_str().unwrap().to_string();
    let r = f.repo.copy();
    let key = snapshot_key(&newest);
    flip_middle_byte(&r.repo.join(&key));
    let out = r.run(&["forget", "--keep-last", "1", "--json"], 0);
    assert!(stderr(&out).contains(&key), "no warning names the damaged record:\n{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let decisions = v.as_array().unwrap();
    let damaged: Vec<&Value> = decisions.iter().filter(|d| d.get("damaged").is_some()).collect();
    assert_eq!(damaged.len(), 1, "{v}");
    assert_eq!(damaged[0]["id"], newest.as_str());
    assert_eq!(damaged[0]["action"], "keep");
    assert!(r.repo.join(&key).exists(), "forget deleted the damaged record");
    // The policy counted only readable snapshots, per group (host and
    // paths): each keeps its newest readable one.
    let kept: Vec<&str> = decisions
        .iter()
        .filter(|d| d.get("damaged").is_none() && d["action"] == "keep")
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{v}");
    assert!(kept.contains(&f.ids[0].as_str()) && kept.contains(&f.ids[1].as_str()), "{v}");
    let text = r.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(text.contains("damaged record: kept, not counted by the policy"), "{text}");
}
