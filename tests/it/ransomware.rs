//! The ransomware-resistant setup (docs/GUIDE.md), attacked.
//!
//! 1. An attacker who took a backup host holds what the host holds: a
//!    put-only key and store credentials that can create, read and list
//!    but not delete or overwrite (a proxy in front of SeaweedFS refuses
//!    everything else). It tries every command that reads or destroys;
//!    each fails, nothing changes, and the host's own new backups still
//!    succeed. The maintenance host then restores every snapshot.
//! 2. An attacker with full S3 credentials (no governance bypass) against
//!    a repository under S3 Object Lock, in governance and in compliance
//!    mode (moto's server, which enforces it): it deletes every object and
//!    then every version by id; the store refuses every retained version,
//!    and after `repair undelete` every snapshot the plan keeps restores
//!    byte-identical.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Output, Stdio};

use crate::object_lock::{init, now_s, LockServer};
use crate::support::refusing_proxy::{Dialect, RefusingProxy};
use crate::support::remote::Backend;
use crate::support::{
    assert_code, assert_no_panic, assert_trees_equal, build_all_kinds, random_bytes, restored_at, stderr, u64_field,
    TestRepo,
};

/// The stolen host: the repository through a refusing proxy, only the
/// put-only key, its own cache.
struct StolenHost {
    repo: TestRepo,
    key: std::path::PathBuf,
    proxy: RefusingProxy,
}

impl StolenHost {
    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut c = self.repo.command(args);
        c.env_remove("STRONGROOM_PASSWORD")
            .env("STRONGROOM_PASSWORD_FILE", &self.key)
            .env("STRONGROOM_CACHE_DIR", self.repo.path("stolen-host-cache"));
        c.output().expect("run strongroom")
    }

    fn backup_stream(&self, name: &str, data: Vec<u8>) -> Output {
        let mut c = self.repo.command(&["backup", "--stdin", "--stdin-name", name]);
        c.env_remove("STRONGROOM_PASSWORD")
            .env("STRONGROOM_PASSWORD_FILE", &self.key)
            .env("STRONGROOM_CACHE_DIR", self.repo.path("stolen-host-cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run strongroom");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().expect("wait");
        let _ = writer.join();
        out
    }
}

fn setup_stolen_host(b: &Backend) -> (TestRepo, StolenHost) {
    let direct = b.small_repo("ransomware-backup-host");
    let key = direct.path("web-1.key");
    std::fs::write(&key, random_bytes(77, 48)).unwrap();
    let out = direct.ok(&[
        OsStr::new("tenant"),
        "key".as_ref(),
        "add".as_ref(),
        "--put-only".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
        "--label".as_ref(),
        "web-1".as_ref(),
    ]);
    assert!(out.contains("put-only"), "{out}");
    let mut repo = TestRepo::uninitialized();
    repo.repo = direct.repo.clone();
    repo.env = direct.env.clone();
    let (_, endpoint) = repo.env.iter().find(|(k, _)| k == "STRONGROOM_S3_ENDPOINT").expect("s3 endpoint").clone();
    let proxy = RefusingProxy::start(endpoint.trim_start_matches("http://").trim_end_matches('/'), Dialect::S3);
    for (k, v) in repo.env.iter_mut() {
        if k == "STRONGROOM_S3_ENDPOINT" {
            v.clone_from(&proxy.url);
        }
    }
    repo.env.push(("STRONGROOM_IO_RETRY_TIMEOUT".into(), "3s".into()));
    (direct, StolenHost { repo, key, proxy })
}

#[test]
fn a_stolen_backup_host_can_add_backups_and_nothing_else() {
    let Some(b) = Backend::s3_or_skip("a_stolen_backup_host_can_add_backups_and_nothing_else") else { return };
    let (direct, host) = setup_stolen_host(&b);
    let src = direct.path("src");
    build_all_kinds(&src);
    // The maintenance host's own backup, and the backup host's first ones.
    direct.backup(&[&src], &[]);
    let out = host.run(&[OsStr::new("backup"), src.as_os_str()]);
    assert_code(&out, 0, "the backup host's backup");
    let stream = random_bytes(78, 400_000);
    assert_code(&host.backup_stream("db.sql", stream.clone()), 0, "the backup host's stream backup");
    assert_eq!(host.proxy.refused(), Vec::<String>::new(), "a backup asked for more than create and read");
    let before: Vec<String> =
        direct.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(before.len(), 3);
    let objects_before = object_names(&b, &direct);

    // The attacker tries everything that reads or destroys.
    let target = direct.path("attacker-restore");
    let t = target.to_str().unwrap();
    let id = before[0].as_str();
    let new_pw = direct.path("attacker-password");
    std::fs::write(&new_pw, "attacker password\n").unwrap();
    let pw = new_pw.to_str().unwrap();
    let attempts: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["ls", id],
        vec!["find", "*"],
        vec!["diff", id, id],
        vec!["restore", id, "--target", t],
        vec!["dump", id, "/x"],
        vec!["stats"],
        vec!["check"],
        vec!["forget", id],
        vec!["forget", "--keep-last", "1", "--prune"],
        vec!["prune"],
        vec!["hold", "add", id, "--reason", "x"],
        vec!["tag", id, "--add", "x"],
        vec!["undelete", "--all"],
        vec!["repair", "index"],
        vec!["tenant", "key", "list"],
        vec!["tenant", "key", "add", "--new-password-file", pw],
        vec!["tenant", "passwd", "--new-password-file", pw],
        vec!["tenant", "rotate-key"],
        vec!["tenant", "erase", "default", "--yes"],
        vec!["tenant", "set", "default", "--quarantine", "0"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
        vec!["unlock", "--remove-all"],
    ];
    for args in &attempts {
        let out = host.run(args);
        assert_no_panic(&out, &args.join(" "));
        let code = out.status.code();
        eprintln!("attempt `{}`: {code:?} {}", args.join(" "), stderr(&out).lines().last().unwrap_or(""));
        assert!(
            matches!(code, Some(12 | 13)),
            "`{}` by the stolen host exited {code:?}: {}",
            args.join(" "),
            stderr(&out)
        );
        // Each says why: the key, or the store's rights.
        let err = stderr(&out);
        assert!(err.contains("put-only") || err.contains("permission denied"), "{args:?}: {err}");
    }
    assert!(!target.exists(), "the stolen host restored something");
    // Nothing it holds decrypts what is stored: its cache holds no plaintext
    // of the maintenance host's data (file contents of the source).
    let secret_marker = std::fs::read(src.join("file")).ok();
    if let Some(marker) = secret_marker.filter(|m| m.len() >= 16) {
        let mut found = false;
        crate::support::walk_files(&direct.path("stolen-host-cache"), &mut |p| {
            let bytes = std::fs::read(p).unwrap_or_default();
            found |= bytes.windows(marker.len()).any(|w| w == marker.as_slice());
        });
        assert!(!found, "the stolen host's cache holds file contents");
    }
    // Nothing was removed or replaced.
    let objects_after = object_names(&b, &direct);
    for (name, etag) in &objects_before {
        if name.contains("/locks/") {
            continue;
        }
        assert_eq!(objects_after.get(name), Some(etag), "{name} was removed or replaced");
    }

    // Its new backups still succeed, and dedup against what is stored.
    std::fs::write(src.join("after-attack.bin"), random_bytes(79, 200_000)).unwrap();
    let out = host.run(&[OsStr::new("backup"), src.as_os_str()]);
    assert_code(&out, 0, "a backup after the attack");

    // The maintenance host sees every snapshot and restores them all.
    let snaps = direct.snapshots();
    assert_eq!(snaps.len(), 4, "{snaps:?}");
    let out = direct.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
    let newest = snaps.iter().rev().find(|s| s["paths"][0].as_str().is_some_and(|p| p.ends_with("/src"))).unwrap();
    let restored = direct.path("restored");
    direct.ok(&["restore", newest["id"].as_str().unwrap(), "--target", restored.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&restored, &src));
    let db = snaps.iter().find(|s| s["paths"][0].as_str().is_some_and(|p| p.ends_with("db.sql"))).unwrap();
    let dumped = direct.run(&["dump", db["id"].as_str().unwrap(), "db.sql"], 0);
    assert!(dumped.stdout == stream, "the stream backup does not dump byte-identical");
    let verify = direct.json(&["audit", "verify"]);
    assert_eq!(verify["problems"].as_array().map(Vec::len), Some(0), "{verify}");
    // And maintenance sweeps the lock objects the backup host left.
    direct.ok(&["prune"]);
    assert!(
        object_names(&b, &direct).keys().all(|k| !k.contains("/locks/")),
        "lock objects left after a maintenance prune"
    );
}

/// Every object of the tenant with the BLAKE3 hash of its bytes, read
/// with full rights.
fn object_names(b: &Backend, r: &TestRepo) -> std::collections::BTreeMap<String, String> {
    use strongroom_core::store::Store;
    let store = Store::open(r.repo.to_str().unwrap(), &b.store_options(), false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tenant = strongroom_core::id::TenantName::new("default").unwrap();
    rt.block_on(async {
        let mut out = std::collections::BTreeMap::new();
        for (key, _) in store.list_tenant_all(&tenant).await.unwrap() {
            if let Some(bytes) = store.get_opt(&key).await.unwrap() {
                out.insert(key.to_string(), blake3::hash(&bytes).to_hex().to_string());
            }
        }
        out
    })
}

fn attack_with_full_credentials(mode: &str) {
    let test = format!("full_credentials_{mode}");
    let Some(s) = LockServer::bucket_or_skip(&test, false) else { return };
    let r = s.repo();
    init(&r, mode);
    r.ok(&["tenant", "set", "default", "--plan", "basic"]);
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &[]);
    std::fs::write(src.join("second.bin"), random_bytes(9, 300_000)).unwrap();
    r.backup(&[&src], &[]);
    assert_eq!(r.snapshots().len(), 2);

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before_attack = now_s();
    let a = s.json("attack");
    assert!(u64_field(&a, "refused_versions") > 0, "{mode}: the server refused nothing: {a}");
    for v in s.json("versions").as_array().unwrap() {
        let key = v["key"].as_str().unwrap();
        assert!(v["marker"] == true || !v["latest"].as_bool().unwrap(), "{mode}: {key} still current after the attack");
        // Every retained object's data version survived.
        if ["/packs/", "/index/", "/snapshots/", "/keys/", "/keyring/"].iter().any(|k| key.contains(k)) {
            assert!(v["marker"] == true || v["version"].as_str().is_some(), "{mode}: {key}");
        }
    }
    let out = r.cmd(&["snapshots"]);
    assert!(!out.status.success(), "{mode}: snapshots worked on a deleted repository");

    let since = jiff::Timestamp::from_second(before_attack).unwrap().to_string();
    let v = r.json(&["repair", "undelete", "--since", &since]);
    assert!(u64_field(&v, "markers_removed") > 0, "{mode}: {v}");
    assert_eq!(v["lost"].as_array().unwrap().len(), 0, "{mode}: {v}");

    let after = r.snapshots();
    assert_eq!(after.len(), 2, "{mode}: {after:?}");
    let out = r.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{mode}: {out}");
    let t1 = r.path("restore-1");
    let t2 = r.path("restore-2");
    r.ok(&["restore", after[0]["id"].as_str().unwrap(), "--target", t1.to_str().unwrap()]);
    r.ok(&["restore", after[1]["id"].as_str().unwrap(), "--target", t2.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&t2, &src));
    r.backup(&[&src], &[]);
    std::fs::remove_file(src.join("second.bin")).unwrap();
    assert_trees_equal(&src, &restored_at(&t1, &src));
}

#[test]
fn full_s3_credentials_cannot_delete_what_the_plan_keeps_under_governance() {
    attack_with_full_credentials("governance");
}

#[test]
fn full_s3_credentials_cannot_delete_what_the_plan_keeps_under_compliance() {
    attack_with_full_credentials("compliance");
}
