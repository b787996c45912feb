//! Holds: a held snapshot survives `forget` and its data survives `prune`;
//! the dry run names the hold as the reason; the reason is never stored in
//! plaintext.

use std::path::Path;

use serde_json::Value;

use crate::support::{file_contents, random_bytes, stderr, TestRepo};

/// A reason that would be easy to spot in any stored byte.
const REASON: &str = "legal case 7f3a91-Smith-v-Jones";

/// Writes version `v` of a small tree whose content differs per version.
fn write_version(dir: &Path, v: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("data.bin"), random_bytes(300 + v, 200_000)).unwrap();
    std::fs::write(dir.join("note.txt"), format!("version {v}\n")).unwrap();
}

/// A repository with three snapshots of different content, one day apart;
/// returns it with the snapshot ids, oldest first.
fn repo_with_three() -> (TestRepo, Vec<String>) {
    let r = TestRepo::new();
    let src = r.path("src");
    let mut ids = Vec::new();
    for (v, t) in ["2026-11-20T12:00:00Z", "2026-11-21T12:00:00Z", "2026-11-22T12:00:00Z"].iter().enumerate() {
        write_version(&src, v as u64);
        let b = r.backup(&[&src], &["--host", "h", "--time", t]);
        ids.push(b["snapshot_id"].as_str().unwrap().to_string());
    }
    (r, ids)
}

fn snapshot_ids(r: &TestRepo) -> Vec<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn decision<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan.as_array().unwrap().iter().find(|d| d["id"] == id).unwrap_or_else(|| panic!("{id} not in {plan}"))
}

#[test]
fn held_snapshot_survives_forget_and_prune() {
    let (r, ids) = repo_with_three();
    let out = r.ok(&["hold", "add", &ids[0][..8], "--reason", REASON]);
    assert!(out.contains(REASON), "{out}");

    let dry = r.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let held = decision(&dry, &ids[0]);
    assert_eq!(held["action"], "keep", "{dry}");
    assert_eq!(held["reasons"], serde_json::json!([format!("hold: {REASON}")]), "{dry}");
    assert_eq!(decision(&dry, &ids[1])["action"], "remove", "{dry}");
    let text = r.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(text.contains(&format!("hold: {REASON}")), "{text}");

    r.json(&["forget", "--keep-last", "1"]);
    assert_eq!(snapshot_ids(&r), vec![ids[0].clone(), ids[2].clone()]);

    // Forget again with prune: nothing more goes, and the held data stays.
    let done = r.json(&["forget", "--keep-last", "1", "--prune"]);
    assert!(done.get("prune").is_some(), "{done}");
    r.json(&["prune", "--max-unused", "0"]);
    assert_eq!(snapshot_ids(&r), vec![ids[0].clone(), ids[2].clone()]);
    r.ok(&["check", "--read-data"]);
    let src = r.path("src");
    let expect = r.path("expect");
    write_version(&expect, 0);
    let target = r.path("restore");
    r.ok(&["restore", &format!("{}:{}", ids[0], src.display()), "--target", target.to_str().unwrap(), "--verify"]);
    assert_eq!(file_contents(&target), file_contents(&expect), "the held snapshot restores differently");
}

#[test]
fn removing_the_hold_lets_forget_remove_the_snapshot() {
    let (r, ids) = repo_with_three();
    r.ok(&["hold", "add", &ids[0], "--reason", "first reason"]);
    // Adding again replaces the reason.
    let h = r.json(&["hold", "add", &ids[0], "--reason", REASON]);
    assert_eq!(h["reason"], REASON, "{h}");
    r.ok(&["hold", "add", &ids[1], "--reason", "pre-deploy"]);

    let list = r.json(&["hold", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let first = list.iter().find(|h| h["snapshot"] == ids[0].as_str()).expect("hold on the first snapshot");
    assert_eq!(first["reason"], REASON);
    for f in ["snapshot", "reason", "created", "hostname", "username", "readable"] {
        assert!(first.get(f).is_some(), "hold list --json lacks {f}: {first}");
    }
    assert!(first["created"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{first}");

    r.json(&["forget", "--keep-last", "1"]);
    assert_eq!(snapshot_ids(&r), ids);

    r.ok(&["hold", "remove", &ids[0][..8]]);
    let list = r.json(&["hold", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    r.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(snapshot_ids(&r), vec![ids[1].clone(), ids[2].clone()]);
    r.ok(&["check", "--read-data"]);

    // Removing a hold that is not there is an error.
    let out = r.run(&["hold", "remove", &ids[0]], 1);
    assert!(stderr(&out).contains("no held snapshot"), "{}", stderr(&out));
}

#[test]
fn hold_on_a_missing_snapshot_exits_1() {
    let (r, _) = repo_with_three();
    let out = r.run(&["hold", "add", "deadbeef", "--reason", REASON], 1);
    assert!(stderr(&out).contains("no snapshot matches"), "{}", stderr(&out));
    assert_eq!(r.json(&["hold", "list"]), serde_json::json!([]));
    assert!(r.objects_under("tenants/default/holds/").is_empty());
    // No lock of its own left behind (the backups' ended locks wait for
    // a maintenance sweep).
    assert!(r.objects_under("tenants/default/locks/x-").is_empty());
}

#[test]
fn reason_is_never_stored_in_plaintext() {
    let (r, ids) = repo_with_three();
    r.ok(&["hold", "add", &ids[1], "--reason", REASON]);
    let holds = r.objects_under("tenants/default/holds/");
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0].0, format!("tenants/default/holds/{}", ids[1]));
    assert_eq!(&std::fs::read(&holds[0].1).unwrap()[..4], b"SRHD");
    let needle = REASON.as_bytes();
    for (key, path) in r.objects() {
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{key} contains the hold reason in plaintext");
    }
}
