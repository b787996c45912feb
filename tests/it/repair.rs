//! Repair: a repository that check finds damaged (orphaned packs, a lost
//! pack) is brought back to a state that checks clean, keeping every file
//! that can still be restored and naming those that cannot.

use crate::support::{assert_code, file_contents, random_bytes, stderr, u64_field, TestRepo, SMALL};

fn tree(dir: &std::path::Path, n: u64) {
    std::fs::create_dir_all(dir.join("d")).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("d/f{i}.bin")), random_bytes(700 + i, 200_000)).unwrap();
    }
}

#[test]
fn repair_indexes_packs_left_by_an_interrupted_backup() {
    let r = TestRepo::with_init(SMALL);
    let src = r.path("src");
    tree(&src, 12);
    // Abort late enough that several packs are stored but not indexed.
    let out = r.command(&["backup", src.to_str().unwrap()]).env("STRONGROOM_FAULT", "abort-put:6").output().unwrap();
    assert!(!out.status.success());
    let rep = r.json(&["repair"]);
    assert!(u64_field(&rep, "packs_indexed") >= 1, "{rep}");
    r.ok(&["check", "--read-data"]);
    // The recovered packs count for dedup: every chunk in them is reused,
    // none is stored again. (Which packs were complete when the process
    // died varies from run to run: packs upload concurrently, and the only
    // complete one may be a small pack, or the tree pack.)
    let b = r.backup(&[&src], &[]);
    let chunks = u64_field(&r.json(&["stats"]), "chunks");
    assert_eq!(u64_field(&b, "blobs_new") + u64_field(&rep, "chunks_indexed"), chunks, "{rep}\n{b}");
}

#[test]
fn repair_rewrites_a_snapshot_that_lost_a_pack() {
    let r = TestRepo::with_init(SMALL);
    let src = r.path("src");
    // 24 files of about 3 chunks over about 5 packs: one pack (about 16
    // chunks) cannot hold a chunk of every file (with 12 files, one in
    // about 15 runs lost them all).
    tree(&src, 24);
    r.backup(&[&src], &[]);
    // Lose one data pack: the biggest object under packs/ is a data pack.
    let mut packs = r.objects_under("tenants/default/packs/");
    packs.sort_by_key(|(_, p)| std::fs::metadata(p).unwrap().len());
    let (_, lost) = packs.pop().unwrap();
    std::fs::remove_file(&lost).unwrap();
    assert_code(&r.cmd(&["check"]), 1, "check with a lost pack");
    let dry = r.json(&["repair", "--dry-run"]);
    assert_eq!(dry["snapshots"].as_array().map(|a| a.len()), Some(1), "{dry}");
    let rep = r.json(&["repair"]);
    let removed = rep["snapshots"][0]["removed"].as_array().unwrap().len();
    assert!((1..24).contains(&removed), "{rep}");
    let out = r.run(&["check", "--read-data"], 0);
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0]["tags"].as_array().unwrap().iter().any(|t| t == "repaired"), "{:?}", snaps[0]);
    // Every file still in the snapshot restores byte-identically.
    let target = r.path("t");
    r.ok(&["restore", &format!("latest:{}", src.display()), "--target", target.to_str().unwrap(), "--verify"]);
    let restored = file_contents(&target);
    let original = file_contents(&src);
    assert_eq!(restored.len(), 24 - removed);
    for (p, bytes) in restored {
        assert_eq!(Some(&bytes), original.get(&p), "{}", p.display());
    }
}
