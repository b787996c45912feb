//! Key rotation: `tenant rotate-key` gives new writes a new data
//! key while old data stays readable; `--rewrite` re-seals every pack,
//! index delta, snapshot record and hold under it and deletes the old key,
//! and finishes when run again after being stopped at any store write.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use serde_json::Value;

use crate::support::{assert_code, assert_trees_equal, random_bytes, restored_at, stderr, TestRepo};

fn write_version(dir: &Path, v: u64) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("shared.bin"), random_bytes(1, 150_000)).unwrap();
    std::fs::write(dir.join(format!("v{v}.bin")), random_bytes(10 + v, 120_000)).unwrap();
    std::fs::write(dir.join("sub/note.txt"), format!("version {v}\n")).unwrap();
}

fn keyrings(r: &TestRepo) -> Vec<String> {
    r.objects_under("tenants/default/keyring/")
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// Every sealed index and snapshot object's key generation (bytes 5..9).
fn generations(r: &TestRepo) -> Vec<u32> {
    let mut g = Vec::new();
    for prefix in ["tenants/default/index/", "tenants/default/snapshots/"] {
        for (_, p) in r.objects_under(prefix) {
            let b = std::fs::read(p).unwrap();
            g.push(u32::from_le_bytes(b[5..9].try_into().unwrap()));
        }
    }
    g
}

fn restore_matches(r: &TestRepo, data: &Path) {
    let target = r.path("restore");
    let _ = std::fs::remove_dir_all(&target);
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(data, &restored_at(&target, data));
}

fn repo_with_history() -> (TestRepo, std::path::PathBuf) {
    let r = TestRepo::small();
    let data = r.path("data");
    for v in 0..2 {
        write_version(&data, v);
        r.backup(&[&data], &[]);
    }
    r.ok(&["hold", "add", "latest", "--reason", "kept for audit"]);
    (r, data)
}

#[test]
fn rotate_then_rewrite_retires_the_old_key() {
    let (r, data) = repo_with_history();
    assert_eq!(keyrings(&r), ["00000001"]);

    let s = r.json(&["tenant", "rotate-key"]);
    assert_eq!(s["generation"], 2);
    assert_eq!(keyrings(&r), ["00000001", "00000002"]);
    write_version(&data, 2);
    r.backup(&[&data], &[]);
    assert!(generations(&r).contains(&1) && generations(&r).contains(&2));
    r.ok(&["check", "--read-data"]);
    restore_matches(&r, &data);

    let before: Vec<Value> = r.snapshots();
    let s = r.json(&["tenant", "rotate-key", "--rewrite"]);
    assert_eq!(s["generation"], 3);
    assert_eq!(s["retired_generations"], serde_json::json!([1, 2]));
    // The hold re-sealed as it moved with its snapshot counts (it was 0).
    assert_eq!(s["holds_resealed"], 1, "{s}");
    assert_eq!(keyrings(&r), ["00000003"]);
    assert!(generations(&r).iter().all(|g| *g == 3), "{:?}", generations(&r));
    // Every pack's trailer names its key generation: all 3 now.
    for (_, p) in r.objects_under("tenants/default/packs/") {
        let b = std::fs::read(p).unwrap();
        let gen_at = b.len() - 13 + 4;
        let g = u32::from_le_bytes(b[gen_at..gen_at + 4].try_into().unwrap());
        assert_eq!(g, 3, "pack trailer generation");
    }
    let after = r.snapshots();
    assert_eq!(after.len(), before.len());
    let times = |v: &[Value]| v.iter().map(|s| s["time"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(times(&after), times(&before));
    let holds = r.json(&["hold", "list"]);
    assert_eq!(holds.as_array().unwrap().len(), 1, "the hold moved with its snapshot: {holds}");
    assert_eq!(holds[0]["readable"], true);
    r.ok(&["check", "--read-data"]);
    restore_matches(&r, &data);
    // Backups after the rewrite still dedup against the rewritten data.
    let b = r.backup(&[&data], &["--force"]);
    assert!(b["added_bytes"].as_u64().unwrap() < 20_000, "{b}");
    let e = r.json(&["audit"]);
    assert!(e.as_array().unwrap().iter().any(|x| x["command"] == "tenant rotate-key"));
}

/// Pack trailers: does the layout put the key generation where the test
/// above reads it? Checked against a pack written under generation 1.
#[test]
fn pack_trailer_generation_offset() {
    let (r, _) = repo_with_history();
    for (_, p) in r.objects_under("tenants/default/packs/") {
        let b = std::fs::read(p).unwrap();
        let gen_at = b.len() - 13 + 4;
        assert_eq!(u32::from_le_bytes(b[gen_at..gen_at + 4].try_into().unwrap()), 1);
    }
}

#[test]
fn interrupted_rewrite_finishes_when_run_again() {
    let (base, data) = repo_with_history();
    let want = base.snapshots().len();
    let mut stopped = 0;
    // Every write point early on, then every third: bounded run time.
    for n in (1..=300u64).filter(|n| *n <= 8 || n % 3 == 0) {
        let r = base.copy();
        let out = r
            .command(&["tenant", "rotate-key", "--rewrite"])
            .env("STRONGROOM_FAULT", format!("abort-put:{n}"))
            .output()
            .unwrap();
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        if out.status.success() {
            assert!(stopped > 3, "the rewrite should have many store writes");
            break;
        }
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "abort-put:{n}: {}", stderr(&out));
        stopped += 1;
        // Every state in between is readable and checks clean...
        r.ok(&["check", "--read-data"]);
        // ...and a rerun finishes the job without duplicating snapshots.
        let out = r.run(&["tenant", "rotate-key", "--rewrite", "--lock-wait", "0s"], 0);
        assert_code(&out, 0, "rerun");
        assert_eq!(keyrings(&r).len(), 1, "abort-put:{n}: old keys retired: {:?}", keyrings(&r));
        assert_eq!(r.snapshots().len(), want, "abort-put:{n}: snapshot count");
        assert_eq!(r.json(&["hold", "list"]).as_array().unwrap().len(), 1, "abort-put:{n}: hold kept");
        r.ok(&["check", "--read-data"]);
        restore_matches(&r, &data);
    }
    assert!(stopped > 3);
}
