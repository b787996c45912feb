//! Store-enforced retention (S3 Object Lock) against moto's S3 server, the
//! local server that refuses deleting a locked version (`.ci/run` starts
//! it and sets `STRONGROOM_TEST_S3LOCK_ENDPOINT`; each test says when it is
//! skipped). Requests from outside strongroom (bucket creation, reading
//! lock headers, the attacker) go through `support/s3lock.py` (boto3).

use std::process::Command;

use serde_json::Value;

use crate::support::{assert_trees_equal, build_all_kinds, random_bytes, restored_at, u64_field, TestRepo};

const TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/s3lock.py");

pub(crate) struct LockServer {
    endpoint: String,
    bucket: String,
}

impl LockServer {
    /// A fresh bucket on moto (with Object Lock unless `plain`), or `None`
    /// with the reason printed.
    pub(crate) fn bucket_or_skip(test: &str, plain: bool) -> Option<Self> {
        let Ok(endpoint) = std::env::var("STRONGROOM_TEST_S3LOCK_ENDPOINT") else {
            eprintln!("{test}: skipped (STRONGROOM_TEST_S3LOCK_ENDPOINT unset; .ci/run starts moto)");
            return None;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let bucket =
            format!("sr-{}-{}", test.replace('_', "-").chars().take(30).collect::<String>(), nanos % 1_000_000_000);
        let s = Self { endpoint, bucket };
        s.tool(if plain { "create-plain" } else { "create" });
        Some(s)
    }

    fn tool(&self, cmd: &str) -> String {
        let out = Command::new("python3").args([TOOL, &self.endpoint, cmd, &self.bucket]).output().unwrap();
        assert!(out.status.success(), "s3lock.py {cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn json(&self, cmd: &str) -> Value {
        serde_json::from_str(&self.tool(cmd)).unwrap()
    }

    /// A repository at `s3://BUCKET/repo` (not initialized).
    pub(crate) fn repo(&self) -> TestRepo {
        let mut r = TestRepo::uninitialized();
        r.repo = format!("s3://{}/repo", self.bucket).into();
        r.env = vec![
            ("STRONGROOM_S3_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "strongroomtest".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "strongroomtestsecret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ];
        r
    }
}

pub(crate) fn init(r: &TestRepo, mode: &str) {
    r.ok(&[
        "init",
        "--kdf-memory-kib",
        "19456",
        "--kdf-passes",
        "2",
        "--chunk-sizes",
        "16K,64K,256K",
        "--pack-size-mib",
        "1",
        "--object-lock",
        mode,
    ]);
}

pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn init_with_object_lock_refuses_a_bucket_without_it() {
    let Some(s) = LockServer::bucket_or_skip("init_refuses_plain", true) else { return };
    let r = s.repo();
    let out = r.cmd(&["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2", "--object-lock", "governance"]);
    assert!(!out.status.success(), "init on a bucket without object lock succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not have S3 Object Lock enabled"), "{err}");
    // Nothing was written: a plain init still works.
    r.ok(&["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"]);
}

#[test]
fn backups_under_object_lock_carry_retention() {
    let Some(s) = LockServer::bucket_or_skip("backups_carry_retention", false) else { return };
    let r = s.repo();
    init(&r, "governance");
    let src = r.path("src");
    build_all_kinds(&src);
    let before = now_s();
    r.backup(&[&src], &[]);
    let locks = s.json("locks");
    let locks = locks.as_object().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (key, l) in locks {
        let dir = key.split('/').nth(3).unwrap_or("");
        let retained = key == "repo/config"
            || matches!(dir, "packs" | "index" | "snapshots" | "keys" | "keyring" | "audit")
            || key.ends_with("/meta/binding");
        if retained {
            assert_eq!(l["mode"], "GOVERNANCE", "{key}: {l}");
            let until = l["until"].as_i64().unwrap();
            // No plan: the default 30 days plus the default 7-day margin.
            let want = before + 37 * 86_400;
            assert!((want - 120..=want + 3_600).contains(&until), "{key}: retain until {until}, want about {want}");
            seen.insert(dir.to_string());
        } else {
            assert!(l["mode"].is_null(), "{key} should carry no retention: {l}");
        }
    }
    for dir in ["packs", "index", "snapshots", "keys", "keyring", "audit"] {
        assert!(seen.contains(dir), "no retained object under {dir}: {locks:?}");
    }

    // A plan lengthens what later objects get: pro keeps up to 3 years.
    r.ok(&["tenant", "set", "default", "--plan", "pro"]);
    std::fs::write(src.join("later.bin"), random_bytes(5, 100_000)).unwrap();
    let second = r.backup(&[&src], &[]);
    let id = second["snapshot_id"].as_str().unwrap();
    let locks = s.json("locks");
    let l = &locks[format!("repo/tenants/default/snapshots/{id}")];
    let want = now_s() + (1098 + 7) * 86_400;
    assert!((want - 3_600..=want + 120).contains(&l["until"].as_i64().unwrap()), "{l}");
}

#[test]
fn prune_defers_locked_objects_and_reports_them() {
    let Some(s) = LockServer::bucket_or_skip("prune_defers", false) else { return };
    let r = s.repo();
    init(&r, "governance");
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), random_bytes(1, 600_000)).unwrap();
    r.backup(&[&src], &[]);
    std::fs::write(src.join("a.bin"), random_bytes(2, 600_000)).unwrap();
    r.backup(&[&src], &[]);
    let packs_before = pack_keys(&s);

    // No quarantine: the deletions are tried at once, and object lock defers them.
    r.ok(&["forget", "--keep-last", "1", "--quarantine", "0"]);
    let p = r.json(&["prune", "--quarantine", "0"]);
    let d = &p["object_lock"];
    assert!(u64_field(d, "objects") > 0, "nothing deferred: {p}");
    assert!(u64_field(d, "bytes") > 0, "{p}");
    assert!(d["next_date"].as_str().is_some_and(|t| t.ends_with('Z')), "{p}");
    assert_eq!(u64_field(&p, "bytes_freed"), 0, "a locked pack was counted as freed: {p}");
    // Every pack is still there: none was even tried.
    let after = pack_keys(&s);
    assert!(packs_before.iter().all(|k| after.contains(k)), "{packs_before:?} -> {after:?}");
    let human = r.ok(&["prune", "--quarantine", "0"]);
    assert!(human.contains("object lock: deferred"), "{human}");
    // The repository is whole and the kept snapshot restores.
    let out = r.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
    let target = r.path("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
}

fn pack_keys(s: &LockServer) -> Vec<String> {
    let locks = s.json("locks");
    locks.as_object().unwrap().keys().filter(|k| k.contains("/packs/")).cloned().collect()
}

#[test]
fn hold_sets_and_clears_the_legal_hold() {
    let Some(s) = LockServer::bucket_or_skip("hold_legal_hold", false) else { return };
    let r = s.repo();
    init(&r, "governance");
    let src = r.path("src");
    build_all_kinds(&src);
    let snap = r.backup(&[&src], &[]);
    let id = snap["snapshot_id"].as_str().unwrap().to_string();

    let v = r.json(&["hold", "add", "latest", "--reason", "litigation"]);
    assert!(u64_field(&v["legal_holds"], "objects") >= 3, "{v}");
    let locks = s.json("locks");
    let held: Vec<&String> =
        locks.as_object().unwrap().iter().filter(|(_, l)| l["legal_hold"] == true).map(|(k, _)| k).collect();
    assert!(held.iter().any(|k| k.ends_with(&format!("/snapshots/{id}"))), "{held:?}");
    assert!(held.iter().any(|k| k.contains("/packs/")), "{held:?}");
    assert!(held.iter().any(|k| k.contains("/index/")), "{held:?}");
    assert!(!held.iter().any(|k| k.contains("/locks/") || k.contains("/keys/")), "{held:?}");

    let v = r.json(&["hold", "remove", &id]);
    assert_eq!(u64_field(&v["legal_holds"], "objects"), held.len() as u64, "{v}");
    let locks = s.json("locks");
    assert!(locks.as_object().unwrap().values().all(|l| l["legal_hold"] == false), "{locks}");
}
