//! The repository's identity and escrow key, as a store writer sees them:
//! the plaintext `config` and `escrow` objects. Each tenant's binding
//! record (sealed with its key) is what a host trusts; these tests swap,
//! delete and replay what the store holds and check that no tenant's
//! master key is sealed to a key the store alone named, that a changed
//! config is refused with exit 1 naming the tenant and the field, and that
//! a host's memory of the audit chain does not follow the config's id.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{assert_code, file_contents, random_bytes, restored_at, run_as, stderr, TestRepo, KDF};

/// Tenant b's password.
const PW_B: &str = "tenant b's own password";

/// `--escrow-secret FILE` followed by `rest`.
fn with_escrow<'a>(secret: &'a Path, rest: &[&'a str]) -> Vec<&'a OsStr> {
    let mut v: Vec<&OsStr> = vec!["--escrow-secret".as_ref(), secret.as_os_str()];
    v.extend(rest.iter().map(|s| OsStr::new(*s)));
    v
}

/// An escrow key pair in the test dir: (secret file, public file).
fn keygen(r: &TestRepo, name: &str) -> (PathBuf, PathBuf) {
    let (secret, public) = (r.path(&format!("{name}.secret")), r.path(&format!("{name}.public")));
    r.ok(&[
        OsStr::new("escrow"),
        "keygen".as_ref(),
        "--secret-out".as_ref(),
        secret.as_os_str(),
        "--public-out".as_ref(),
        public.as_os_str(),
    ]);
    (secret, public)
}

fn add_tenant(r: &TestRepo, name: &str, pw: &str) {
    let out = r
        .command(&["tenant", "add", name, KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", pw)
        .output()
        .unwrap();
    assert_code(&out, 0, &format!("tenant add {name}"));
}

/// Backs up a little seeded data from `name` below the test dir.
fn backup_as(r: &TestRepo, tenant: &str, pw: &str, name: &str, seed: u64) -> PathBuf {
    let src = r.path(name);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), random_bytes(seed, 100_000)).unwrap();
    std::fs::write(src.join("note.txt"), format!("secret note {seed}\n")).unwrap();
    run_as(r, tenant, Some(pw), &[OsStr::new("backup"), src.as_os_str()], 0);
    src
}

fn config(r: &TestRepo) -> Value {
    serde_json::from_slice(&std::fs::read(r.repo.join("config")).unwrap()).unwrap()
}

fn set_config(r: &TestRepo, c: &Value) {
    std::fs::write(r.repo.join("config"), serde_json::to_vec_pretty(c).unwrap()).unwrap();
}

/// The names of the tenant's key-slot objects.
fn slot_names(r: &TestRepo, tenant: &str) -> Vec<String> {
    r.objects_under(&format!("tenants/{tenant}/keys/")).into_iter().map(|(k, _)| k).collect()
}

/// Swaps the root `escrow` object for the public key in `public`.
fn plant_escrow(r: &TestRepo, public: &Path) {
    std::fs::write(r.repo.join("escrow"), std::fs::read(public).unwrap()).unwrap();
}

/// The same repository and cache, seen as a second process on the same host
/// would: used to show what a host without memory (a fresh cache) does.
fn fresh_host(r: &TestRepo) -> TestRepo {
    let other = TestRepo::uninitialized();
    TestRepo { repo: r.repo.clone(), ..other }
}

#[test]
fn a_public_key_planted_in_a_repository_without_escrow_gets_no_slot() {
    let r = TestRepo::small();
    let src = backup_as(&r, "default", crate::support::PASSWORD, "src", 1);
    let before = slot_names(&r, "default");
    let (attacker_secret, attacker_public) = keygen(&r, "attacker");
    plant_escrow(&r, &attacker_public);

    // The victim's next commands: no escrow slot, and from `check` (as from
    // `tenant` and `escrow` commands) a warning at the default log level
    // that the store names a key the tenant does not trust.
    r.run(&["snapshots"], 0);
    let out = r.run(&["check"], 0);
    assert!(stderr(&out).contains("escrow object names key"), "no warning: {}", stderr(&out));
    assert_eq!(slot_names(&r, "default"), before, "an escrow slot was added for a key read from the store");
    // The same from a host that never saw the repository.
    fresh_host(&r).run(&["snapshots"], 0);
    assert_eq!(slot_names(&r, "default"), before);

    let file = src.join("note.txt");
    let out =
        run_as(&r, "default", None, &with_escrow(&attacker_secret, &["dump", "latest", file.to_str().unwrap()]), 12);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret note"));
}

#[test]
fn a_swapped_escrow_key_and_config_id_are_refused_and_the_real_slot_stays() {
    let r = TestRepo::uninitialized();
    let (op_secret, op_public) = keygen(&r, "operator");
    r.ok(&[
        OsStr::new("init"),
        KDF[0].as_ref(),
        KDF[1].as_ref(),
        KDF[2].as_ref(),
        KDF[3].as_ref(),
        "--escrow-key".as_ref(),
        op_public.as_os_str(),
    ]);
    backup_as(&r, "default", crate::support::PASSWORD, "src", 2);
    let slots = slot_names(&r, "default");
    assert_eq!(slots.len(), 2, "a password slot and an escrow slot");
    let (attacker_secret, attacker_public) = keygen(&r, "attacker");
    plant_escrow(&r, &attacker_public);
    let original = config(&r);
    let mut swapped = original.clone();
    swapped["id"] = Value::String("5a".repeat(32));
    set_config(&r, &swapped);

    for host in [&r, &fresh_host(&r)] {
        let out = host.run(&["snapshots"], 1);
        let err = stderr(&out);
        assert!(err.contains("does not match tenant default's binding record") && err.contains("id differs"), "{err}");
        assert_eq!(err.trim().lines().filter(|l| l.starts_with("strongroom:")).count(), 1, "one line: {err}");
    }
    assert_eq!(slot_names(&r, "default"), slots, "key slots changed");
    run_as(&r, "default", None, &with_escrow(&attacker_secret, &["snapshots"]), 12);

    // The real id back: the operator's key still opens, the attacker's does not.
    set_config(&r, &original);
    run_as(&r, "default", None, &with_escrow(&op_secret, &["snapshots"]), 0);
    r.run(&["snapshots"], 0);
    fresh_host(&r).run(&["snapshots"], 0);
    assert_eq!(slot_names(&r, "default"), slots, "key slots changed");
    run_as(&r, "default", None, &with_escrow(&attacker_secret, &["snapshots"]), 12);
}

#[test]
fn swapping_the_config_id_does_not_reset_the_hosts_audit_memory() {
    let r = TestRepo::small();
    backup_as(&r, "default", crate::support::PASSWORD, "src", 3);
    backup_as(&r, "default", crate::support::PASSWORD, "src", 4);
    r.run(&["audit", "verify"], 0);
    let entries = r.objects_under("tenants/default/audit/");
    assert_eq!(entries.len(), 3, "init and two backups");
    std::fs::remove_file(&entries[2].1).unwrap();
    let out = r.run(&["audit", "verify"], 1);
    assert!(stderr(&out).contains("entries 3 to 3 are missing"), "{}", stderr(&out));

    // A new id would once have given this host a new, empty memory.
    let mut c = config(&r);
    let config_id = c["id"].as_str().unwrap().to_string();
    c["id"] = Value::String("77".repeat(32));
    set_config(&r, &c);
    let out = r.run(&["audit", "verify"], 1);
    assert!(stderr(&out).contains("id differs"), "{}", stderr(&out));
    // The memory is not named by the id: with the id put back and every
    // cache file named by it gone (catalog, anything an id swap could
    // point away from), this host still knows the log was longer.
    c["id"] = config_id.into();
    set_config(&r, &c);
    std::fs::remove_dir_all(r.cache.join(c["id"].as_str().unwrap())).unwrap();
    let out = r.run(&["audit", "verify"], 1);
    assert!(stderr(&out).contains("entries 3 to 3 are missing"), "{}", stderr(&out));
}

#[test]
fn a_config_changed_in_the_store_is_refused_naming_the_tenant_and_the_field() {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    let src = backup_as(&r, "b", PW_B, "src", 5);
    let original = config(&r);
    let changes: [(&str, Value); 4] = [
        ("id", Value::String("0f".repeat(32))),
        ("chunk_sizes", serde_json::json!({"min": 64, "avg": 256, "max": 1024})),
        ("pack_target_bytes", serde_json::json!(1024 * 1024 * 1024)),
        ("compression_level", serde_json::json!(22)),
    ];
    for (field, value) in changes {
        let mut c = original.clone();
        c[field] = value;
        set_config(&r, &c);
        let packs = r.objects_under("tenants/b/packs/");
        for args in [vec![OsStr::new("snapshots")], vec![OsStr::new("backup"), src.as_os_str()]] {
            let out = run_as(&r, "b", Some(PW_B), &args, 1);
            let err = stderr(&out);
            assert!(
                err.contains("tenant b's binding record") && err.contains(&format!("{field} differs")),
                "{field}: {err}"
            );
        }
        assert_eq!(r.objects_under("tenants/b/packs/"), packs, "{field}: a backup wrote packs");
        // Adding a tenant with the current tenant's key binds nothing to it.
        let out = r
            .command(&["tenant", "add", "c", KDF[0], KDF[1], KDF[2], KDF[3]])
            .env("STRONGROOM_NEW_PASSWORD", "c")
            .output()
            .unwrap();
        assert_code(&out, 1, &format!("{field}: tenant add c"));
        assert!(r.objects_under("tenants/c/").is_empty(), "{field}: tenant c was created");
    }
    set_config(&r, &original);
    run_as(&r, "b", Some(PW_B), &["check"], 0);
    let t = r.path("restored");
    run_as(&r, "b", Some(PW_B), &[OsStr::new("restore"), "latest".as_ref(), "--target".as_ref(), t.as_os_str()], 0);
    assert_eq!(file_contents(&restored_at(&t, &src)), file_contents(&src));
}

#[test]
fn a_deleted_binding_record_is_refused() {
    let r = TestRepo::small();
    r.run(&["snapshots"], 0);
    let binding = r.repo.join("tenants/default/meta/binding");
    std::fs::remove_file(&binding).unwrap();
    // A version 2 repository: every tenant has one, on any host.
    for host in [&r, &fresh_host(&r)] {
        let out = host.run(&["snapshots"], 1);
        assert!(stderr(&out).contains("tenants/default/meta/binding: missing"), "{}", stderr(&out));
    }
    // Set back to version 1 (where tenants may lack one): this host saw it.
    let mut c = config(&r);
    c["version"] = serde_json::json!(1);
    c["compression_level"] = serde_json::json!(22);
    set_config(&r, &c);
    let out = r.run(&["snapshots"], 1);
    assert!(stderr(&out).contains("missing, but this host saw it"), "{}", stderr(&out));
    assert!(!binding.exists(), "a binding record of the changed config was written");
}

#[test]
fn a_binding_record_put_back_from_before_an_escrow_change_is_refused() {
    let r = TestRepo::small();
    let (_, old_public) = keygen(&r, "old");
    r.ok(&[OsStr::new("escrow"), "set".as_ref(), old_public.as_os_str()]);
    let binding = r.repo.join("tenants/default/meta/binding");
    let old = std::fs::read(&binding).unwrap();
    let (new_secret, new_public) = keygen(&r, "new");
    r.ok(&[OsStr::new("escrow"), "set".as_ref(), new_public.as_os_str()]);
    run_as(&r, "default", None, &with_escrow(&new_secret, &["snapshots"]), 0);
    std::fs::write(&binding, old).unwrap();
    let out = r.run(&["snapshots"], 1);
    assert!(stderr(&out).contains("older than revision"), "{}", stderr(&out));
}

/// Turns a repository this build made into one a version 1 build would
/// have left: config version 1, no binding records, and this host's cache
/// as version 1 kept it (audit head under the repository id, a
/// trust-on-first-use escrow pin, no host memory or explicit escrow key).
fn make_version_1(r: &TestRepo, tofu_pin: &Path) {
    let mut c = config(r);
    c["version"] = serde_json::json!(1);
    set_config(r, &c);
    let id = c["id"].as_str().unwrap().to_string();
    for (key, path) in r.objects() {
        if key.ends_with("/meta/binding") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let memory = r.cache.join("memory");
    std::fs::remove_dir_all(&memory).unwrap();
    let _ = std::fs::remove_dir_all(r.cache.join("escrow-keys"));
    std::fs::create_dir_all(r.cache.join(&id)).unwrap();
    std::fs::copy(tofu_pin, r.cache.join(&id).join("escrow-pin")).unwrap();
}

#[test]
fn a_version_1_repository_is_upgraded_when_opened_and_escrow_keeps_working() {
    let r = TestRepo::uninitialized();
    let (op_secret, op_public) = keygen(&r, "operator");
    r.ok(&[
        OsStr::new("init"),
        KDF[0].as_ref(),
        KDF[1].as_ref(),
        KDF[2].as_ref(),
        KDF[3].as_ref(),
        "--escrow-key".as_ref(),
        op_public.as_os_str(),
    ]);
    add_tenant(&r, "b", PW_B);
    let src = backup_as(&r, "b", PW_B, "src-b", 6);
    backup_as(&r, "default", crate::support::PASSWORD, "src-default", 7);
    let (attacker_secret, attacker_public) = keygen(&r, "attacker");
    // A version 1 host that had pinned (on first use) a key the store
    // served it, and a store that now serves the attacker's key.
    make_version_1(&r, &attacker_public);
    plant_escrow(&r, &attacker_public);

    // Opened by this build: upgraded (a binding record of the config as it
    // is), readable as before, the old escrow slot kept, no slot for the
    // key the store or the old pin names.
    run_as(&r, "b", Some(PW_B), &["check"], 0);
    assert!(r.repo.join("tenants/b/meta/binding").exists(), "b was not upgraded");
    let t = r.path("restored");
    run_as(&r, "b", Some(PW_B), &[OsStr::new("restore"), "latest".as_ref(), "--target".as_ref(), t.as_os_str()], 0);
    assert_eq!(file_contents(&restored_at(&t, &src)), file_contents(&src));
    run_as(&r, "b", None, &with_escrow(&op_secret, &["snapshots"]), 0);
    run_as(&r, "b", None, &with_escrow(&attacker_secret, &["snapshots"]), 12);
    assert_eq!(slot_names(&r, "b").len(), 2, "b's slots changed: {:?}", slot_names(&r, "b"));
    // The config stays version 1 (other tenants may not be upgraded yet),
    // and an upgraded tenant's binding record is now checked.
    assert_eq!(config(&r)["version"], 1);
    let original = config(&r);
    let mut c = original.clone();
    c["compression_level"] = serde_json::json!(19);
    set_config(&r, &c);
    run_as(&r, "b", Some(PW_B), &["snapshots"], 1);
    set_config(&r, &original);

    // The operator gives this host the escrow key: default (open now) and
    // then b (when next opened here) are bound to it; the store's key
    // still gets no slot.
    r.ok(&[OsStr::new("escrow"), "set".as_ref(), op_public.as_os_str()]);
    plant_escrow(&r, &attacker_public);
    run_as(&r, "b", Some(PW_B), &["snapshots"], 0);
    for tenant in ["default", "b"] {
        run_as(&r, tenant, None, &with_escrow(&op_secret, &["snapshots"]), 0);
        run_as(&r, tenant, None, &with_escrow(&attacker_secret, &["snapshots"]), 12);
        assert_eq!(slot_names(&r, tenant).len(), 2, "{tenant}: {:?}", slot_names(&r, tenant));
    }
    // A tenant added now is bound to the operator's key too.
    add_tenant(&r, "c", "c password");
    run_as(&r, "c", None, &with_escrow(&op_secret, &["snapshots"]), 0);
    run_as(&r, "c", None, &with_escrow(&attacker_secret, &["snapshots"]), 12);
}

#[test]
fn the_audit_memory_of_a_version_1_host_is_taken_over() {
    let r = TestRepo::small();
    backup_as(&r, "default", crate::support::PASSWORD, "src", 8);
    let entries = r.objects_under("tenants/default/audit/");
    assert_eq!(entries.len(), 2);
    // Where version 1 kept the audit head: under the repository id.
    let id = config(&r)["id"].as_str().unwrap().to_string();
    let memory = r.cache.join("memory");
    let head =
        std::fs::read_dir(&memory).unwrap().map(|e| e.unwrap().path().join("audit-head")).find(|p| p.exists()).unwrap();
    let old_place = r.cache.join(&id).join("default").join("audit-head");
    std::fs::copy(&head, &old_place).unwrap();
    let (_, some_public) = keygen(&r, "unused");
    make_version_1(&r, &some_public);
    // The newest entry cut off before this build first opens the tenant.
    std::fs::remove_file(&entries[1].1).unwrap();
    let out = r.run(&["audit", "verify"], 1);
    assert!(stderr(&out).contains("entries 2 to 2 are missing"), "{}", stderr(&out));
}
