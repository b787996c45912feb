//! Tenants end to end: one tenant's key opens nothing of another (exit 12,
//! naming the tenant); identical content shares no stored byte across
//! tenants while dedup works within one; a canary in contents, names, tags,
//! hosts, hold reasons and audited arguments reaches no stored byte;
//! concurrent backups of two tenants, or of one tenant under a lock;
//! password and key-file slots; the escrow secret; erasure (also
//! interrupted); quotas; plans and per-tenant compression; dedup-aware
//! per-snapshot accounting.
//!
//! Also the edges around them: secrets in no log, listing or audit entry;
//! the escrow key pinned per host; tenant names checked; one tenant per
//! name under concurrent adds; no reuse of a name an unfinished erase left;
//! quotas under concurrent backups from several hosts.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::support::{
    assert_code, file_contents, random_bytes, run_as, set_mtime, stderr, u64_field, walk_files, TestRepo, KDF,
};

/// Tenant b's password (tenant `default` has the test password).
const PW_B: &str = "b has a password of its own";
/// Written into everything a user controls; must reach no stored byte.
const CANARY: &str = "CANARY-5f1e2d";

/// Like [`run_as`] with `--json`, expecting success; parses stdout.
fn json_as<S: AsRef<OsStr>>(r: &TestRepo, tenant: &str, password: Option<&str>, args: &[S]) -> Value {
    let mut all: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.push(OsStr::new("--json"));
    let out = run_as(r, tenant, password, &all, 0);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Adds tenant `name` with password `pw`.
fn add_tenant(r: &TestRepo, name: &str, pw: &str) {
    let out = r
        .command(&["tenant", "add", name, KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", pw)
        .output()
        .expect("run strongroom");
    assert_code(&out, 0, &format!("tenant add {name}"));
}

/// Writes `len` random bytes (seeded) plus a small text file below `dir`.
fn write_data(dir: &Path, seed: u64, len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("data.bin"), random_bytes(seed, len)).unwrap();
    std::fs::write(dir.join("note.txt"), format!("seed {seed}\n")).unwrap();
}

/// `len` bytes of text from a four-letter alphabet: compresses about 4:1
/// and, being random, does not dedup against itself.
fn compressible(seed: u64, len: usize) -> Vec<u8> {
    random_bytes(seed, len).into_iter().map(|b| b"acgt"[(b & 3) as usize]).collect()
}

fn stored_bytes(r: &TestRepo, tenant: &str, pw: &str) -> u64 {
    u64_field(&json_as(r, tenant, Some(pw), &["stats"]), "stored_bytes")
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

fn row<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no tenant {name} in {list}"))
}

/// Regular files below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if dir.exists() {
        walk_files(dir, &mut |p| v.push(p.to_path_buf()));
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Writes an escrow key pair into the test dir; returns (secret, public).
fn escrow_keygen(r: &TestRepo, name: &str) -> (PathBuf, PathBuf) {
    let secret = r.path(&format!("{name}.secret"));
    let public = r.path(&format!("{name}.public"));
    r.ok(&[
        OsStr::new("escrow"),
        OsStr::new("keygen"),
        OsStr::new("--secret-out"),
        secret.as_os_str(),
        OsStr::new("--public-out"),
        public.as_os_str(),
    ]);
    (secret, public)
}

/// A repository whose `default` tenant and tenant `b` each hold one
/// snapshot of `src-default` / `src-b`.
fn two_tenants() -> TestRepo {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    write_data(&r.path("src-default"), 1, 200_000);
    write_data(&r.path("src-b"), 2, 200_000);
    r.backup(&[&r.path("src-default")], &[]);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), r.path("src-b").as_os_str()]);
    r
}

#[test]
fn one_tenants_password_opens_nothing_of_another() {
    let r = two_tenants();
    let target = r.path("restored");
    let file = r.path("src-b").join("data.bin");
    let src_default = r.path("src-default");
    let commands: Vec<Vec<&OsStr>> = vec![
        vec!["snapshots".as_ref()],
        vec!["ls".as_ref(), "latest".as_ref()],
        vec!["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()],
        vec!["dump".as_ref(), "latest".as_ref(), file.as_os_str()],
        vec!["stats".as_ref()],
        vec!["check".as_ref()],
        vec!["audit".as_ref()],
        vec!["audit".as_ref(), "verify".as_ref()],
        vec!["find".as_ref(), "*.bin".as_ref()],
        vec!["forget".as_ref(), "--keep-last".as_ref(), "1".as_ref()],
        vec!["prune".as_ref()],
        vec!["hold".as_ref(), "add".as_ref(), "latest".as_ref(), "--reason".as_ref(), "x".as_ref()],
        vec!["backup".as_ref(), src_default.as_os_str()],
        vec!["tenant".as_ref(), "key".as_ref(), "list".as_ref()],
        vec!["tenant".as_ref(), "passwd".as_ref()],
        vec!["tenant".as_ref(), "set".as_ref(), "b".as_ref(), "--quota".as_ref(), "1".as_ref()],
        vec!["tenant".as_ref(), "erase".as_ref(), "b".as_ref(), "--yes".as_ref()],
        vec!["tenant".as_ref(), "key".as_ref(), "add".as_ref(), "--kdf-memory-kib".as_ref(), "19456".as_ref()],
        vec!["tenant".as_ref(), "key".as_ref(), "remove".as_ref(), "0".as_ref()],
        vec!["tenant".as_ref(), "rotate-key".as_ref()],
        vec!["diff".as_ref(), "latest".as_ref(), "latest".as_ref()],
        vec!["hold".as_ref(), "list".as_ref()],
        vec!["audit".as_ref(), "export".as_ref(), "--format".as_ref(), "csv".as_ref()],
        vec!["repair".as_ref()],
        vec!["unlock".as_ref(), "--remove-all".as_ref()],
    ];
    let before = r.objects_under("tenants/b/");
    for args in &commands {
        let mut c = r.command(args);
        c.env("STRONGROOM_TENANT", "b").env("STRONGROOM_NEW_PASSWORD", "whatever");
        let out = c.output().unwrap();
        let what = format!("default's password, --tenant b: {args:?}");
        assert_code(&out, 12, &what);
        let err = stderr(&out);
        assert!(err.contains("tenant b"), "{what}: stderr does not name tenant b:\n{err}");
        assert!(err.contains("wrong password or key"), "{what}: {err}");
    }
    assert!(!target.exists(), "a failed restore created {}", target.display());
    assert_eq!(r.objects_under("tenants/b/"), before, "tenant b's objects changed");
    // b's own password opens b, and not default.
    assert_eq!(json_as(&r, "b", Some(PW_B), &["snapshots"]).as_array().unwrap().len(), 1);
    let out = run_as(&r, "default", Some(PW_B), &["snapshots"], 12);
    assert!(stderr(&out).contains("tenant default"), "{}", stderr(&out));

    // Each audit log holds its own tenant's commands only.
    let audit_a = r.json(&["audit"]).to_string();
    let audit_b = json_as(&r, "b", Some(PW_B), &["audit"]).to_string();
    assert!(audit_a.contains("src-default") && !audit_a.contains("src-b"), "{audit_a}");
    assert!(audit_b.contains("src-b") && !audit_b.contains("src-default"), "{audit_b}");

    // Names need no key at all; details only for the tenant the key opens.
    let list = json_as(&r, "default", None, &["tenant", "list"]);
    assert_eq!(names(&list), ["b", "default"]);
    for t in list.as_array().unwrap() {
        assert_eq!(t["readable"], false, "{list}");
        assert!(
            t.get("snapshots").is_none() && t.get("stored_bytes").is_none() && t.get("key_slots").is_none(),
            "{list}"
        );
    }
    let text = run_as(&r, "default", None, &["tenant", "list"], 0);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("b ") && text.contains("default"), "{text}");

    let list = r.json(&["tenant", "list"]);
    assert_eq!(names(&list), ["b", "default"]);
    let a = row(&list, "default");
    assert_eq!(a["readable"], true, "{list}");
    assert_eq!(a["snapshots"], 1, "{list}");
    assert!(u64_field(a, "stored_bytes") > 200_000, "{list}");
    assert!(u64_field(a, "logical_bytes") >= 200_000, "{list}");
    assert_eq!(a["key_slots"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(a["snapshot_costs"].as_array().unwrap().len(), 1, "{list}");
    let b = row(&list, "b");
    assert_eq!(b["readable"], false, "{list}");
    for field in
        ["snapshots", "logical_bytes", "stored_bytes", "key_slots", "snapshot_costs", "created", "plan", "quota_bytes"]
    {
        assert!(b.get(field).is_none(), "tenant list with default's password shows b's {field}: {list}");
    }
    // And the other way round.
    let list = json_as(&r, "b", Some(PW_B), &["tenant", "list"]);
    assert_eq!(row(&list, "b")["readable"], true, "{list}");
    assert_eq!(row(&list, "default")["readable"], false, "{list}");
    assert!(row(&list, "default").get("stored_bytes").is_none(), "{list}");
}

#[test]
fn identical_content_shares_nothing_across_tenants_and_dedups_within_one() {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    let src = r.path("src");
    write_data(&src, 10, 400_000);
    std::fs::write(src.join("text.txt"), compressible(11, 100_000)).unwrap();
    let data_len = 500_000 + 8;
    r.backup(&[&src], &["--time", "2026-01-01T00:00:00Z", "--host", "h"]);
    json_as(
        &r,
        "b",
        Some(PW_B),
        &[
            OsStr::new("backup"),
            OsStr::new("--time"),
            OsStr::new("2026-01-01T00:00:00Z"),
            OsStr::new("--host"),
            OsStr::new("h"),
            src.as_os_str(),
        ],
    );

    let sa = &r.snapshots()[0];
    let sb = &json_as(&r, "b", Some(PW_B), &["snapshots"])[0];
    let (ta, tb) = (sa["tree"].as_str().unwrap(), sb["tree"].as_str().unwrap());
    assert_eq!(ta.len(), 64, "{sa}");
    assert_ne!(ta, tb, "the same tree has the same id in two tenants");
    assert_ne!(sa["id"], sb["id"], "the same snapshot has the same id in two tenants");

    let packs_a = r.objects_under("tenants/default/packs/");
    let packs_b = r.objects_under("tenants/b/packs/");
    assert!(!packs_a.is_empty() && !packs_b.is_empty());
    let name = |k: &str| k.rsplit('/').next().unwrap().to_string();
    let names_a: std::collections::BTreeSet<String> = packs_a.iter().map(|(k, _)| name(k)).collect();
    for (k, _) in &packs_b {
        assert!(!names_a.contains(&name(k)), "pack name {} in both tenants", name(k));
    }
    let bytes_a: Vec<Vec<u8>> = packs_a.iter().map(|(_, p)| std::fs::read(p).unwrap()).collect();
    for (k, p) in &packs_b {
        let b = std::fs::read(p).unwrap();
        assert!(!bytes_a.contains(&b), "{k} is byte-identical to a pack of tenant default");
        // No 64-byte run of a's packs appears in b's (not even a shared header or ciphertext block).
        for a in &bytes_a {
            let probe = &a[a.len() / 2..a.len() / 2 + 64];
            assert!(!contains(&b, probe), "{k} shares bytes with a pack of tenant default");
        }
    }

    // Within a tenant: the same data at another path, and after touching
    // every mtime, adds almost nothing.
    let copy = r.path("copy");
    crate::support::copy_dir(&src, &copy);
    let s = r.backup(&[&copy], &[]);
    let added = u64_field(&s, "added_bytes");
    assert!(added * 20 < data_len, "a copy at another path added {added} of {data_len} bytes: {s}");
    for f in ["data.bin", "note.txt", "text.txt"] {
        set_mtime(&src.join(f), 1_800_000_000, 5);
    }
    let s = r.backup(&[&src], &["--time", "2026-01-02T00:00:00Z", "--host", "h"]);
    assert!(u64_field(&s, "read_bytes") >= 500_000, "touched files were not re-read: {s}");
    let added = u64_field(&s, "added_bytes");
    assert!(added * 20 < data_len, "re-reading touched files added {added} of {data_len} bytes: {s}");
    // Tenant b dedups its own second backup too.
    let s = json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), copy.as_os_str()]);
    let added = u64_field(&s, "added_bytes");
    assert!(added * 20 < data_len, "tenant b: a copy added {added} of {data_len} bytes: {s}");
    r.ok(&["check", "--read-data"]);
    run_as(&r, "b", Some(PW_B), &["check", "--read-data"], 0);
    // Pruning default down to one snapshot leaves b's identical data alone.
    let b_before = r.objects_under("tenants/b/packs/");
    r.json(&["forget", "--keep-last", "1"]);
    r.ok(&["prune", "--max-unused", "0"]);
    r.ok(&["repair"]);
    assert_eq!(r.objects_under("tenants/b/packs/"), b_before, "prune or repair of default touched b's packs");
    run_as(&r, "b", Some(PW_B), &["check", "--read-data"], 0);
    r.ok(&["check", "--read-data"]);
}

/// Builds a tree with the canary in contents (amid random data), in file
/// and directory names.
fn canary_tree(dir: &Path, seed: u64) {
    let sub = dir.join(format!("dir-{CANARY}"));
    std::fs::create_dir_all(&sub).unwrap();
    let mut mixed = random_bytes(seed, 100_000);
    for i in 0..20 {
        let at = 1000 + i * 4_000;
        mixed[at..at + CANARY.len()].copy_from_slice(CANARY.as_bytes());
    }
    std::fs::write(sub.join(format!("{CANARY}.bin")), &mixed).unwrap();
    std::fs::write(dir.join(format!("note-{CANARY}.txt")), format!("{CANARY}\n").repeat(2000)).unwrap();
    std::fs::write(dir.join("plain.txt"), format!("says {CANARY} once\n")).unwrap();
}

#[test]
fn canary_reaches_no_stored_byte() {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    for (tenant, pw, seed) in [("default", crate::support::PASSWORD, 20), ("b", PW_B, 21)] {
        let src = r.path(&format!("src-{tenant}-{CANARY}"));
        canary_tree(&src, seed);
        let host = format!("host-{CANARY}");
        let tag = format!("tag-{CANARY}");
        json_as(
            &r,
            tenant,
            Some(pw),
            &[OsStr::new("backup"), "--host".as_ref(), host.as_ref(), "--tag".as_ref(), tag.as_ref(), src.as_os_str()],
        );
        // Standard input under a canary name.
        let stdin_name = format!("stdin-{CANARY}.txt");
        let mut child = r
            .command(&["backup", "--stdin", "--stdin-name", &stdin_name, "--tag", &tag, "--host", &host])
            .env("STRONGROOM_TENANT", tenant)
            .env("STRONGROOM_PASSWORD", pw)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{CANARY} from stdin\n").repeat(100).as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_code(&out, 0, "backup --stdin");
        let stream = format!("/{stdin_name}");
        let hold = ["hold", "add", "latest", "--path", &stream, "--reason", &format!("case {CANARY}")];
        run_as(&r, tenant, Some(pw), &hold, 0);
        run_as(&r, tenant, Some(pw), &["tenant", "set", tenant, "--plan", "basic"], 0);
        // A restore to a directory whose name holds the canary (audited arguments).
        let missing = r.path(&format!("missing-{CANARY}"));
        run_as(
            &r,
            tenant,
            Some(pw),
            &[
                OsStr::new("restore"),
                "latest".as_ref(),
                "--path".as_ref(),
                stream.as_ref(),
                "--target".as_ref(),
                missing.as_os_str(),
            ],
            0,
        );
        assert!(!file_contents(&missing).is_empty(), "restore wrote nothing");
        // The canary is readable back, so it was really stored (sealed).
        let snaps = json_as(&r, tenant, Some(pw), &["snapshots"]);
        assert!(snaps.to_string().contains(&host) && snaps.to_string().contains(&tag), "{snaps}");
        let audit = json_as(&r, tenant, Some(pw), &["audit"]);
        assert!(audit.to_string().contains(CANARY), "the audit log does not record the arguments: {audit}");
        let holds = run_as(&r, tenant, Some(pw), &["hold", "list"], 0);
        assert!(String::from_utf8_lossy(&holds.stdout).contains(CANARY), "hold list does not show the reason");
    }

    let mut scanned = 0;
    let mut hits = Vec::new();
    walk_files(&r.repo, &mut |p| {
        scanned += 1;
        let rel = p.strip_prefix(&r.repo).unwrap().to_string_lossy().to_string();
        if rel.contains(CANARY) {
            hits.push(format!("{rel} (name)"));
        }
        if contains(&std::fs::read(p).unwrap(), CANARY.as_bytes()) {
            hits.push(rel);
        }
    });
    assert!(scanned > 10, "only {scanned} objects scanned");
    assert!(hits.is_empty(), "the canary is stored in plaintext in: {hits:?}");
}

/// Starts `backup` of `dir` as `tenant` without waiting.
fn spawn_backup(r: &TestRepo, tenant: &str, pw: &str, dir: &Path, extra: &[&str]) -> std::process::Child {
    let mut args: Vec<&OsStr> = vec!["backup".as_ref(), "--json".as_ref()];
    args.extend(extra.iter().map(OsStr::new));
    args.push(dir.as_os_str());
    r.command(&args)
        .env("STRONGROOM_TENANT", tenant)
        .env("STRONGROOM_PASSWORD", pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn concurrent_backups_of_two_tenants_and_of_one_tenant() {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    for i in 0..4u64 {
        write_data(&r.path(&format!("src{i}")), 30 + i, 600_000);
    }
    // Two tenants at once, without --lock-wait: neither may wait on the other.
    let a = spawn_backup(&r, "default", crate::support::PASSWORD, &r.path("src0"), &[]);
    let b = spawn_backup(&r, "b", PW_B, &r.path("src1"), &[]);
    assert_code(&a.wait_with_output().unwrap(), 0, "backup of default (concurrent with b)");
    assert_code(&b.wait_with_output().unwrap(), 0, "backup of b (concurrent with default)");
    assert_eq!(r.snapshots().len(), 1);
    assert_eq!(json_as(&r, "b", Some(PW_B), &["snapshots"]).as_array().unwrap().len(), 1);

    // Two processes, one tenant, waiting on the lock if needed.
    let x = spawn_backup(&r, "default", crate::support::PASSWORD, &r.path("src2"), &["--lock-wait", "60s"]);
    let y = spawn_backup(&r, "default", crate::support::PASSWORD, &r.path("src3"), &["--lock-wait", "60s"]);
    let (ox, oy) = (x.wait_with_output().unwrap(), y.wait_with_output().unwrap());
    assert_code(&ox, 0, "first of two concurrent backups of default");
    assert_code(&oy, 0, "second of two concurrent backups of default");
    let ids: Vec<String> = [&ox, &oy]
        .iter()
        .map(|o| serde_json::from_slice::<Value>(&o.stdout).unwrap()["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    for id in &ids {
        assert!(snaps.iter().any(|s| s["id"] == id.as_str()), "snapshot {id} missing");
    }
    r.ok(&["check", "--read-data"]);
    run_as(&r, "b", Some(PW_B), &["check", "--read-data"], 0);
    // x backed up src2, y src3: each restores byte-identical.
    for (i, id) in ids.iter().enumerate() {
        let t = r.path(&format!("restored{i}"));
        let src = r.path(&format!("src{}", i + 2));
        r.ok(&[OsStr::new("restore"), id.as_ref(), "--target".as_ref(), t.as_os_str()]);
        assert_eq!(file_contents(&crate::support::restored_at(&t, &src)), file_contents(&src), "snapshot {id}");
    }
    // Two hosts (own caches) back up the same tenant at once.
    for i in 4..6u64 {
        write_data(&r.path(&format!("src{i}")), 30 + i, 600_000);
    }
    let hosts: Vec<_> = (4..6u64)
        .map(|i| {
            let cache = r.path(&format!("cache-host{i}"));
            let d = r.path(&format!("src{i}"));
            r.command(&[OsStr::new("backup"), "--lock-wait".as_ref(), "60s".as_ref(), d.as_os_str()])
                .env("STRONGROOM_CACHE_DIR", &cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for h in hosts {
        assert_code(&h.wait_with_output().unwrap(), 0, "backup from a second host");
    }
    assert_eq!(r.snapshots().len(), 5);
    r.ok(&["check", "--read-data"]);
}

/// Lists key slots of the default tenant opened with `pw`.
fn slots(r: &TestRepo, pw: &str) -> Vec<Value> {
    json_as(r, "default", Some(pw), &["tenant", "key", "list"]).as_array().unwrap().clone()
}

#[test]
fn key_slots_passwd_add_remove() {
    let r = TestRepo::new();
    let src = r.path("src");
    write_data(&src, 40, 50_000);
    r.backup(&[&src], &[]);
    let old = crate::support::PASSWORD;
    let new = "a brand new password";

    let out = r
        .command(&["tenant", "passwd", KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", new)
        .output()
        .unwrap();
    assert_code(&out, 0, "tenant passwd");
    let out = run_as(&r, "default", Some(old), &["snapshots"], 12);
    assert!(stderr(&out).contains("tenant default"), "{}", stderr(&out));
    assert_eq!(json_as(&r, "default", Some(new), &["snapshots"]).as_array().unwrap().len(), 1);
    assert_eq!(slots(&r, new).len(), 1, "passwd left the old slot");

    // A second password, from a file.
    let pwfile = r.path("second.pw");
    std::fs::write(&pwfile, "second password\n").unwrap();
    run_as(
        &r,
        "default",
        Some(new),
        &[
            OsStr::new("tenant"),
            "key".as_ref(),
            "add".as_ref(),
            "--label".as_ref(),
            "second".as_ref(),
            "--new-password-file".as_ref(),
            pwfile.as_os_str(),
            KDF[0].as_ref(),
            KDF[1].as_ref(),
            KDF[2].as_ref(),
            KDF[3].as_ref(),
        ],
        0,
    );
    run_as(&r, "default", Some(new), &["snapshots"], 0);
    run_as(&r, "default", Some("second password"), &["snapshots"], 0);
    // The same password from --password-file.
    run_as(&r, "default", None, &[OsStr::new("--password-file"), pwfile.as_os_str(), "snapshots".as_ref()], 0);

    // A key file (binary, not ending in a newline).
    let keyfile = r.path("tenant.key");
    let mut kb = random_bytes(41, 64);
    kb[63] = b'k';
    std::fs::write(&keyfile, &kb).unwrap();
    run_as(
        &r,
        "default",
        Some(new),
        &[
            OsStr::new("tenant"),
            "key".as_ref(),
            "add".as_ref(),
            "--label".as_ref(),
            "file".as_ref(),
            "--key-file".as_ref(),
            keyfile.as_os_str(),
        ],
        0,
    );
    let t = r.path("restored");
    run_as(
        &r,
        "default",
        None,
        &[
            OsStr::new("--password-file"),
            keyfile.as_os_str(),
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            t.as_os_str(),
        ],
        0,
    );
    assert_eq!(file_contents(&crate::support::restored_at(&t, &src)), file_contents(&src));
    // Too short a key file is refused.
    let short = r.path("short.key");
    std::fs::write(&short, b"short").unwrap();
    run_as(
        &r,
        "default",
        Some(new),
        &[OsStr::new("tenant"), "key".as_ref(), "add".as_ref(), "--key-file".as_ref(), short.as_os_str()],
        1,
    );

    let s = slots(&r, new);
    let mut kinds: Vec<(&str, &str)> =
        s.iter().map(|x| (x["label"].as_str().unwrap(), x["kind"].as_str().unwrap())).collect();
    kinds.sort();
    assert_eq!(kinds, [("default", "password"), ("file", "key-file"), ("second", "password")], "{s:?}");
    let id = |label: &str| s.iter().find(|x| x["label"] == label).unwrap()["name"].as_str().unwrap()[..8].to_string();
    let json_text = serde_json::to_string(&s).unwrap();
    assert!(!json_text.contains(new) && !json_text.contains("second password"), "key list shows a password");

    // Remove the second password and the key file; then the last slot stays.
    run_as(&r, "default", Some(new), &["tenant", "key", "remove", &id("second")], 0);
    run_as(&r, "default", Some("second password"), &["snapshots"], 12);
    run_as(&r, "default", Some(new), &["tenant", "key", "remove", &id("file")], 0);
    run_as(&r, "default", None, &[OsStr::new("--password-file"), keyfile.as_os_str(), "snapshots".as_ref()], 12);
    let out = run_as(&r, "default", Some(new), &["tenant", "key", "remove", &id("default")], 1);
    assert!(stderr(&out).contains("last"), "{}", stderr(&out));
    assert_eq!(slots(&r, new).len(), 1);
    run_as(&r, "default", Some(new), &["check"], 0);
    // An unknown slot id.
    run_as(&r, "default", Some(new), &["tenant", "key", "remove", "ffffffffff"], 1);

    // The last slot of a tenant with a key file only: removing the password
    // works, the key file then cannot go.
    run_as(
        &r,
        "default",
        Some(new),
        &[OsStr::new("tenant"), "key".as_ref(), "add".as_ref(), "--key-file".as_ref(), keyfile.as_os_str()],
        0,
    );
    run_as(
        &r,
        "default",
        None,
        &[
            OsStr::new("--password-file"),
            keyfile.as_os_str(),
            "tenant".as_ref(),
            "key".as_ref(),
            "remove".as_ref(),
            id("default").as_ref(),
        ],
        0,
    );
    run_as(&r, "default", Some(new), &["snapshots"], 12);
    let s = json_as(
        &r,
        "default",
        None,
        &[OsStr::new("--password-file"), keyfile.as_os_str(), "tenant".as_ref(), "key".as_ref(), "list".as_ref()],
    );
    let last = s[0]["name"].as_str().unwrap().to_string();
    run_as(
        &r,
        "default",
        None,
        &[
            OsStr::new("--password-file"),
            keyfile.as_os_str(),
            "tenant".as_ref(),
            "key".as_ref(),
            "remove".as_ref(),
            last.as_ref(),
        ],
        1,
    );

    // Never a password on the command line.
    for args in
        [&["--password", "x", "snapshots"][..], &["snapshots", "--password", "x"], &["snapshots", "--password=x"]]
    {
        let out = run_as(&r, "default", None, args, 2);
        assert!(!stderr(&out).contains("panicked"));
    }
}

#[test]
fn key_file_ending_in_a_newline_opens_the_tenant() {
    // Key files made by `openssl rand -base64 32 > f` or `pwgen > f` end in a newline.
    let r = TestRepo::new();
    let keyfile = r.path("tenant.key");
    std::fs::write(&keyfile, "q8Vd0l3c0J5m0kq2y4bFz7QkqXnqkS8u0oS8kQm2Hn8xYc1Fh4Zr2w==\n").unwrap();
    r.run(&[OsStr::new("tenant"), "key".as_ref(), "add".as_ref(), "--key-file".as_ref(), keyfile.as_os_str()], 0);
    run_as(&r, "default", None, &[OsStr::new("--password-file"), keyfile.as_os_str(), "snapshots".as_ref()], 0);
}

/// A repository initialised with an escrow key; returns it with the
/// escrow secret file.
fn escrow_repo() -> (TestRepo, PathBuf) {
    let r = TestRepo::uninitialized();
    let (secret, public) = escrow_keygen(&r, "escrow");
    r.ok(&[
        OsStr::new("init"),
        KDF[0].as_ref(),
        KDF[1].as_ref(),
        KDF[2].as_ref(),
        KDF[3].as_ref(),
        "--pack-size-mib".as_ref(),
        "1".as_ref(),
        "--escrow-key".as_ref(),
        public.as_os_str(),
    ]);
    (r, secret)
}

fn escrow_args<'a>(secret: &'a Path, rest: &[&'a str]) -> Vec<&'a OsStr> {
    let mut v: Vec<&OsStr> = vec!["--escrow-secret".as_ref(), secret.as_os_str()];
    v.extend(rest.iter().map(|s| OsStr::new(*s)));
    v
}

#[test]
fn escrow_secret_opens_every_tenant_and_only_its_own() {
    let (r, secret) = escrow_repo();
    let fp = r.json(&["escrow", "show"]);
    assert!(fp["fingerprint"].is_string(), "{fp}");
    add_tenant(&r, "b", PW_B);
    let src = r.path("src-b");
    write_data(&src, 50, 150_000);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), src.as_os_str()]);
    r.backup(&[&r.path("src-b")], &[]);

    // The operator opens b without its password.
    let snaps = json_as(&r, "b", None, &escrow_args(&secret, &["snapshots"]));
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let t = r.path("restored");
    let mut args = escrow_args(&secret, &["restore", "latest", "--target"]);
    args.push(t.as_os_str());
    run_as(&r, "b", None, &args, 0);
    assert_eq!(file_contents(&crate::support::restored_at(&t, &src)), file_contents(&src));
    run_as(&r, "b", None, &escrow_args(&secret, &["check", "--read-data"]), 0);
    let list = json_as(&r, "default", None, &escrow_args(&secret, &["tenant", "list"]));
    assert_eq!(row(&list, "b")["readable"], true, "{list}");
    assert_eq!(row(&list, "default")["readable"], true, "{list}");
    let kinds: Vec<&str> =
        row(&list, "b")["key_slots"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "escrow").count(), 1, "{list}");

    // Another escrow secret opens nothing.
    let (other, _) = escrow_keygen(&r, "other");
    for tenant in ["b", "default"] {
        let out = run_as(&r, tenant, None, &escrow_args(&other, &["snapshots"]), 12);
        assert!(stderr(&out).contains(&format!("tenant {tenant}")), "{}", stderr(&out));
    }
    // The escrow secret is not a password: as --password-file it opens nothing.
    run_as(&r, "b", None, &[OsStr::new("--password-file"), secret.as_os_str(), "snapshots".as_ref()], 12);
    // Recovery: the operator gives b a new password with the escrow secret.
    let out = r
        .command(&escrow_args(
            &secret,
            &["tenant", "key", "add", "--label", "recovered", KDF[0], KDF[1], KDF[2], KDF[3]],
        ))
        .env("STRONGROOM_TENANT", "b")
        .env_remove("STRONGROOM_PASSWORD")
        .env("STRONGROOM_NEW_PASSWORD", "recovered password")
        .output()
        .unwrap();
    assert_code(&out, 0, "tenant key add with the escrow secret");
    run_as(&r, "b", Some("recovered password"), &["snapshots"], 0);
    // passwd with the escrow secret is refused (it would have no slot to replace).
    let out = r
        .command(&escrow_args(&secret, &["tenant", "passwd", KDF[0], KDF[1], KDF[2], KDF[3]]))
        .env("STRONGROOM_TENANT", "b")
        .env_remove("STRONGROOM_PASSWORD")
        .env("STRONGROOM_NEW_PASSWORD", "x")
        .output()
        .unwrap();
    assert_code(&out, 1, "tenant passwd with the escrow secret");
}

#[test]
fn escrow_set_later_gives_tenants_slots_as_they_are_opened() {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    let src = r.path("src");
    write_data(&src, 60, 100_000);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), src.as_os_str()]);
    let (secret, public) = escrow_keygen(&r, "escrow");
    // No escrow yet: the secret opens nothing.
    run_as(&r, "b", None, &escrow_args(&secret, &["snapshots"]), 12);

    r.ok(&[OsStr::new("escrow"), "set".as_ref(), public.as_os_str()]);
    let kinds = |tenant: &str, pw: &str| -> Vec<String> {
        json_as(&r, tenant, Some(pw), &["tenant", "key", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap().to_string())
            .collect()
    };
    // `escrow set` with the default tenant's password gave it a slot at once.
    assert!(kinds("default", crate::support::PASSWORD).contains(&"escrow".to_string()));
    // b has none until it is opened with its key; listing opens it.
    let b_slots = r.objects_under("tenants/b/keys/").len();
    assert_eq!(b_slots, 1, "b got a slot without being opened");
    run_as(&r, "b", None, &escrow_args(&secret, &["snapshots"]), 12);
    let k = kinds("b", PW_B);
    assert_eq!(k.iter().filter(|k| *k == "escrow").count(), 1, "{k:?}");
    let snaps = json_as(&r, "b", None, &escrow_args(&secret, &["snapshots"]));
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let t = r.path("restored");
    let mut args = escrow_args(&secret, &["restore", "latest", "--target"]);
    args.push(t.as_os_str());
    run_as(&r, "b", None, &args, 0);
    assert_eq!(file_contents(&crate::support::restored_at(&t, &src)), file_contents(&src));
    // Opening again does not add a second escrow slot.
    let k = kinds("b", PW_B);
    assert_eq!(k.iter().filter(|k| *k == "escrow").count(), 1, "{k:?}");
}

#[test]
fn erase_removes_every_object_and_key_of_the_tenant_only() {
    let (r, secret) = escrow_repo();
    add_tenant(&r, "b", PW_B);
    write_data(&r.path("src-a"), 70, 200_000);
    write_data(&r.path("src-b"), 71, 200_000);
    r.backup(&[&r.path("src-a")], &[]);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), r.path("src-b").as_os_str()]);
    run_as(&r, "b", Some(PW_B), &["hold", "add", "latest", "--reason", "keep"], 0);
    let all_before = r.objects();
    let a_before = r.objects_under("tenants/default/");

    // Without --yes: exit 1, nothing deleted.
    let out = run_as(&r, "b", Some(PW_B), &["tenant", "erase", "b"], 1);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(r.objects(), all_before, "erase without --yes deleted something");
    // With default's password: exit 12, nothing deleted.
    run_as(&r, "default", Some(crate::support::PASSWORD), &["tenant", "erase", "b", "--yes"], 12);
    assert_eq!(r.objects(), all_before, "erase with a wrong key deleted something");

    // A held snapshot stops the erase until the hold is named.
    let out = run_as(&r, "b", Some(PW_B), &["tenant", "erase", "b", "--yes"], 1);
    assert!(stderr(&out).contains("under hold"), "{}", stderr(&out));
    assert!(!r.objects_under("tenants/b/keys/").is_empty(), "a refused erase deleted key slots");
    run_as(&r, "b", Some(PW_B), &["tenant", "erase", "b", "--yes", "--including-held"], 0);
    let erasures = r.objects_under("erasures/");
    assert_eq!(erasures.len(), 1, "the erase is recorded at the repository root");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&erasures[0].1).unwrap()).unwrap();
    assert_eq!(rec["tenant"], "b");
    let left = files_below(&r.repo.join("tenants/b"));
    assert!(left.is_empty(), "erase left files of tenant b: {left:?}");
    assert_eq!(names(&json_as(&r, "default", None, &["tenant", "list"])), ["default"]);
    assert_eq!(names(&json_as(&r, "default", None, &escrow_args(&secret, &["tenant", "list"]))), ["default"]);
    for (pw, esc) in [(Some(PW_B), false), (None, true)] {
        for args in [&["snapshots"][..], &["restore", "latest", "--target", "/nonexistent-target"], &["audit"]] {
            let args: Vec<&OsStr> =
                if esc { escrow_args(&secret, args) } else { args.iter().map(OsStr::new).collect() };
            let out = run_as(&r, "b", pw, &args, 10);
            assert!(stderr(&out).contains("b"), "{}", stderr(&out));
        }
    }
    // Tenant default is untouched.
    assert_eq!(
        r.objects_under("tenants/default/")
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !k.contains("/audit/") && !k.contains("/locks/"))
            .collect::<Vec<_>>(),
        a_before
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !k.contains("/audit/") && !k.contains("/locks/"))
            .collect::<Vec<_>>()
    );
    r.ok(&["check", "--read-data"]);
    assert_eq!(r.snapshots().len(), 1);
    r.ok(&["audit", "verify"]);
    // A new tenant may take the name; it sees nothing of the old one.
    add_tenant(&r, "b", "another b");
    assert!(json_as(&r, "b", Some("another b"), &["snapshots"]).as_array().unwrap().is_empty());
    run_as(&r, "b", Some(PW_B), &["snapshots"], 12);
}

#[test]
fn interrupted_erase_finishes_when_run_again() {
    let r = TestRepo::small();
    add_tenant(&r, "c", "c password");
    write_data(&r.path("src"), 80, 200_000);
    json_as(&r, "c", Some("c password"), &[OsStr::new("backup"), r.path("src").as_os_str()]);
    // An erase that stopped right after deleting the key slots.
    let keys = r.objects_under("tenants/c/keys/");
    assert!(!keys.is_empty());
    for (_, p) in keys {
        std::fs::remove_file(p).unwrap();
    }
    assert!(!r.objects_under("tenants/c/").is_empty());
    run_as(&r, "c", Some("c password"), &["snapshots"], 10);
    // Finishing needs no key (none opens it any more).
    run_as(&r, "default", None, &["tenant", "erase", "c", "--yes"], 0);
    let left = files_below(&r.repo.join("tenants/c"));
    assert!(left.is_empty(), "erase left files of tenant c: {left:?}");
    assert_eq!(names(&json_as(&r, "default", None, &["tenant", "list"])), ["default"]);
    r.ok(&["check"]);
}

#[test]
fn erasing_a_tenant_that_does_not_exist_exits_10() {
    let r = TestRepo::new();
    let out = r.run(&["tenant", "erase", "nobody", "--yes"], 10);
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
}

#[test]
fn quota_stops_a_backup_before_its_snapshot() {
    let r = TestRepo::small();
    write_data(&r.path("small"), 90, 100_000);
    r.backup(&[&r.path("small")], &[]);
    let stored = stored_bytes(&r, "default", crate::support::PASSWORD);
    let quota = stored + 200_000;
    r.ok(&["tenant", "set", "default", "--quota", &quota.to_string()]);
    let list = r.json(&["tenant", "list"]);
    assert_eq!(row(&list, "default")["quota_bytes"], quota, "{list}");

    let big = r.path("big");
    write_data(&big, 91, 2_000_000);
    let out = r.run(&[OsStr::new("backup"), big.as_os_str()], 1);
    let err = stderr(&out);
    assert!(err.contains("quota") && err.contains("tenant default"), "{err}");
    assert_eq!(r.snapshots().len(), 1, "a snapshot was written over quota");
    let after = stored_bytes(&r, "default", crate::support::PASSWORD);
    let pack = 1024 * 1024 + 64 * 1024;
    assert!(after <= quota + pack, "stored {after} bytes, quota {quota}: over by more than one pack");
    // The audit log records the failure.
    let audit = r.json(&["audit"]);
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!((&last["command"], &last["result"]), (&Value::from("backup"), &Value::from("error")), "{last}");
    assert!(last["error"].as_str().unwrap_or("").contains("quota"), "{last}");
    r.ok(&["check", "--read-data"]);

    r.ok(&["tenant", "set", "default", "--quota", "none"]);
    let s = r.backup(&[&big], &[]);
    assert!(u64_field(&s, "logical_bytes") >= 2_000_000, "{s}");
    assert_eq!(r.snapshots().len(), 2);
    assert!(row(&r.json(&["tenant", "list"]), "default").get("quota_bytes").is_none());
    r.ok(&["check", "--read-data"]);
}

#[test]
fn plan_and_compression_defaults_per_tenant() {
    let r = TestRepo::new();
    let src = r.path("src");
    write_data(&src, 100, 20_000);
    r.backup(&[&src], &["--time", "2026-01-01T00:00:00Z"]);
    r.backup(&[&src], &["--time", "2026-01-02T00:00:00Z"]);
    let out = r.run(&["forget"], 1);
    assert!(stderr(&out).contains("policy"), "{}", stderr(&out));
    r.ok(&["tenant", "set", "default", "--plan", "basic"]);
    assert_eq!(row(&r.json(&["tenant", "list"]), "default")["plan"], "basic");
    r.json(&["forget"]);
    r.run(&["tenant", "set", "default", "--plan", "platinum"], 1);
    for plan in ["pro", "enterprise"] {
        r.ok(&["tenant", "set", "default", "--plan", plan]);
        r.json(&["forget", "--dry-run"]);
    }
    r.ok(&["tenant", "set", "default", "--plan", "none"]);
    r.run(&["forget"], 1);

    // Compression: the repository default (3), then none, then default again.
    let len = 800_000u64;
    let backup_of = |seed: u64| {
        let d = r.path(&format!("text{seed}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("acgt.txt"), compressible(seed, len as usize)).unwrap();
        u64_field(&r.backup(&[&d], &[]), "added_bytes")
    };
    let zstd = backup_of(101);
    assert!(zstd < len / 2, "compressible data stored as {zstd} of {len} bytes with the default");
    r.ok(&["tenant", "set", "default", "--compression", "0"]);
    assert_eq!(row(&r.json(&["tenant", "list"]), "default")["compression"], 0);
    let plain = backup_of(102);
    assert!(plain >= len && plain < len + len / 20, "with --compression 0 stored {plain} for {len} bytes");
    // A backup's own --compression overrides the tenant's.
    let d = r.path("text-override");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("acgt.txt"), compressible(104, len as usize)).unwrap();
    let over = u64_field(&r.backup(&[&d], &["--compression", "5"]), "added_bytes");
    assert!(over < len / 2, "--compression 5 over the tenant's 0 stored {over} of {len}");
    r.ok(&["tenant", "set", "default", "--compression", "default"]);
    let again = backup_of(103);
    assert!(again < len / 2, "back to the default stored {again} of {len}");
    r.run(&["tenant", "set", "default", "--compression", "99"], 1);
    r.ok(&["check", "--read-data"]);
}

#[test]
fn snapshot_costs_predict_what_prune_frees() {
    let r = TestRepo::small();
    let src = r.path("src");
    write_data(&src, 110, 600_000);
    let unique = src.join("unique.bin");
    std::fs::write(&unique, random_bytes(111, 500_000)).unwrap();
    let with_unique = r.backup(&[&src], &["--time", "2026-01-01T00:00:00Z"]);
    std::fs::remove_file(&unique).unwrap();
    let shared_only = r.backup(&[&src], &["--time", "2026-01-02T00:00:00Z"]);
    let (u_id, s_id) = (with_unique["snapshot_id"].as_str().unwrap(), shared_only["snapshot_id"].as_str().unwrap());

    let stats = r.json(&["stats"]);
    let costs = stats["snapshot_costs"].as_array().unwrap();
    let cost =
        |id: &str| costs.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no cost for {id}: {stats}")).clone();
    let freed_u = u64_field(&cost(u_id), "freed_bytes");
    let freed_s = u64_field(&cost(s_id), "freed_bytes");
    assert!(freed_u >= 500_000, "the snapshot with a unique 500 KB file would free {freed_u}: {stats}");
    assert!(freed_u < 600_000, "the snapshot with a unique 500 KB file would free {freed_u}: {stats}");
    assert!(freed_s < 20_000, "the snapshot sharing all its data would free {freed_s}: {stats}");
    assert!(u64_field(&cost(u_id), "logical_bytes") >= 1_100_000, "{stats}");
    // tenant list reports the same costs.
    let list = r.json(&["tenant", "list"]);
    assert_eq!(row(&list, "default")["snapshot_costs"], stats["snapshot_costs"], "{list}");

    let before = u64_field(&stats, "stored_bytes");
    let f = r.json(&["forget", "--keep-last", "1"]);
    assert!(f.to_string().contains(u_id), "{f}");
    assert_eq!(r.snapshots().len(), 1);
    r.json(&["prune", "--quarantine", "0"]);
    let after = stored_bytes(&r, "default", crate::support::PASSWORD);
    let freed = before.saturating_sub(after);
    let slack = freed_u / 10 + 1024 * 1024;
    assert!(freed >= 450_000, "prune freed only {freed} bytes (predicted {freed_u})");
    assert!(freed.abs_diff(freed_u) <= slack, "prune freed {freed} bytes, predicted {freed_u}");
    r.ok(&["check", "--read-data"]);
}

#[test]
fn quota_lets_the_first_pack_in_and_a_rerun_dedups_it() {
    let r = TestRepo::small();
    let stored = stored_bytes(&r, "default", crate::support::PASSWORD);
    // Room for one 1 MiB pack, not for three.
    let quota = stored + 1_300_000;
    r.ok(&["tenant", "set", "default", "--quota", &quota.to_string()]);
    let big = r.path("big");
    write_data(&big, 120, 3_000_000);
    let out = r.run(&[OsStr::new("backup"), big.as_os_str()], 1);
    assert!(stderr(&out).contains("quota"), "{}", stderr(&out));
    assert!(r.snapshots().is_empty());
    let after = stored_bytes(&r, "default", crate::support::PASSWORD);
    assert!(after <= quota + 1024 * 1024 + 64 * 1024, "stored {after}, quota {quota}");
    r.ok(&["check", "--read-data"]);
    r.ok(&["tenant", "set", "default", "--quota", "10M"]);
    let s = r.backup(&[&big], &[]);
    let added = u64_field(&s, "added_bytes");
    let kept = after - stored;
    assert!(
        added + kept / 2 < 3_100_000,
        "the rerun added {added} bytes though {kept} bytes of packs stayed from the failed run: {s}"
    );
    r.ok(&["check", "--read-data"]);
}

#[test]
fn concurrent_backups_stay_within_quota_and_one_pack() {
    let r = TestRepo::small();
    let stored = stored_bytes(&r, "default", crate::support::PASSWORD);
    let quota = stored + 1_500_000;
    r.ok(&["tenant", "set", "default", "--quota", &quota.to_string()]);
    // Four hosts (own caches) back up 1.2 MB each at once: each alone fits,
    // together they do not.
    let children: Vec<_> = (0..4u64)
        .map(|i| {
            let d = r.path(&format!("src{i}"));
            write_data(&d, 130 + i, 1_200_000);
            let cache = r.path(&format!("cache-host{i}"));
            crate::support::copy_dir(&r.cache, &cache);
            r.command(&[OsStr::new("backup"), "--lock-wait".as_ref(), "60s".as_ref(), d.as_os_str()])
                .env("STRONGROOM_CACHE_DIR", &cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    assert!(codes.iter().all(|c| matches!(c, Some(0 | 1))), "{codes:?}");
    let after = stored_bytes(&r, "default", crate::support::PASSWORD);
    assert!(
        after <= quota + 1024 * 1024 + 64 * 1024,
        "four concurrent backups (exit codes {codes:?}) left the tenant at {after} bytes, quota {quota}: over by {} \
         bytes, more than one pack",
        after.saturating_sub(quota)
    );
    r.ok(&["check", "--read-data"]);
}

#[test]
fn tenant_names_are_checked_and_never_reused_while_taken() {
    let r = TestRepo::new();
    write_data(&r.path("src"), 140, 50_000);
    r.backup(&[&r.path("src")], &[]);
    let before = r.objects();
    // Adding an existing tenant fails and changes nothing.
    let out = r
        .command(&["tenant", "add", "default", KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", "intruder")
        .output()
        .unwrap();
    assert_code(&out, 1, "tenant add default (exists)");
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(r.objects(), before);
    run_as(&r, "default", Some("intruder"), &["snapshots"], 12);
    // Names that could escape the tenant prefix or clash are refused.
    for bad in ["..", "../default", "a/b", "", "UPPER", "with space", "default/../x"] {
        let out = r
            .command(&["tenant", "add", bad, KDF[0], KDF[1], KDF[2], KDF[3]])
            .env("STRONGROOM_NEW_PASSWORD", "x")
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(1 | 2)), "tenant add {bad:?}: {:?}\n{}", out.status, stderr(&out));
        let mut c = r.command(&["snapshots"]);
        let out = c.env("STRONGROOM_TENANT", bad).output().unwrap();
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "--tenant {bad:?} snapshots: {:?}\n{}",
            out.status,
            stderr(&out)
        );
    }
    assert_eq!(r.objects(), before, "a refused name wrote something");
    let list = json_as(&r, "default", None, &["tenant", "list"]);
    assert_eq!(names(&list), ["default"]);
}

#[test]
fn tenant_add_seals_only_to_the_pinned_escrow_key() {
    let (r, secret) = escrow_repo();
    // Someone with write access to the store swaps the escrow public key.
    let (evil_secret, evil_public) = escrow_keygen(&r, "evil");
    std::fs::write(r.repo.join("escrow"), std::fs::read(&evil_public).unwrap()).unwrap();
    // This host pinned the operator's key at init: existing tenants get no slot for the new key ...
    r.ok(&["snapshots"]);
    run_as(&r, "default", None, &escrow_args(&evil_secret, &["snapshots"]), 12);
    // ... and neither must a tenant created now.
    add_tenant(&r, "c", "c password");
    run_as(&r, "c", None, &escrow_args(&evil_secret, &["snapshots"]), 12);
    // The operator's own secret still opens default.
    run_as(&r, "default", None, &escrow_args(&secret, &["snapshots"]), 0);
}

#[test]
fn operator_erases_with_the_escrow_secret_and_a_stale_cache_sees_nothing() {
    let (r, secret) = escrow_repo();
    add_tenant(&r, "b", PW_B);
    write_data(&r.path("src"), 150, 150_000);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), r.path("src").as_os_str()]);
    // Another host's cache of b.
    let other_cache = r.path("other-cache");
    crate::support::copy_dir(&r.cache, &other_cache);
    run_as(&r, "b", None, &escrow_args(&secret, &["tenant", "erase", "b", "--yes"]), 0);
    assert!(files_below(&r.repo.join("tenants/b")).is_empty());
    run_as(&r, "b", None, &escrow_args(&secret, &["snapshots"]), 10);
    // A new tenant b, opened on the host with the stale cache: nothing of the old b.
    add_tenant(&r, "b", "new b");
    let out = r
        .command(&["snapshots", "--json"])
        .env("STRONGROOM_TENANT", "b")
        .env("STRONGROOM_PASSWORD", "new b")
        .env("STRONGROOM_CACHE_DIR", &other_cache)
        .output()
        .unwrap();
    assert_code(&out, 0, "snapshots of the new b with a stale cache");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().is_empty(), "a stale cache shows the erased tenant's snapshots: {v}");
    let out = r
        .command(&["stats", "--json"])
        .env("STRONGROOM_TENANT", "b")
        .env("STRONGROOM_PASSWORD", "new b")
        .env("STRONGROOM_CACHE_DIR", &other_cache)
        .output()
        .unwrap();
    assert_code(&out, 0, "stats of the new b with a stale cache");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshots"], 0, "{v}");
    assert!(u64_field(&v, "stored_bytes") < 10_000, "{v}");
}

#[test]
fn erase_deletes_nothing_while_a_backup_runs_and_everything_after() {
    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    write_data(&r.path("src"), 160, 100_000);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), r.path("src").as_os_str()]);
    // A backup of b from standard input holds b's lock until its input ends.
    let mut child = r
        .command(&["backup", "--stdin", "--stdin-name", "stream"])
        .env("STRONGROOM_TENANT", "b")
        .env("STRONGROOM_PASSWORD", PW_B)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(&random_bytes(161, 50_000)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while r.objects_under("tenants/b/locks/").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the stdin backup never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before: Vec<String> =
        r.objects_under("tenants/b/").into_iter().map(|(k, _)| k).filter(|k| !k.contains("/locks/")).collect();
    let out = run_as(&r, "b", Some(PW_B), &["tenant", "erase", "b", "--yes"], 11);
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    let now: Vec<String> =
        r.objects_under("tenants/b/").into_iter().map(|(k, _)| k).filter(|k| !k.contains("/locks/")).collect();
    assert_eq!(now, before, "an erase that could not lock deleted something");
    // An erase willing to wait runs once the backup has committed, and
    // deletes its snapshot too.
    let eraser = r
        .command(&["tenant", "erase", "b", "--yes", "--lock-wait", "60s"])
        .env("STRONGROOM_PASSWORD", PW_B)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    input.write_all(b"end").unwrap();
    drop(input);
    assert_code(&child.wait_with_output().unwrap(), 0, "backup --stdin of b");
    assert_code(&eraser.wait_with_output().unwrap(), 0, "tenant erase b --lock-wait 60s");
    let left = files_below(&r.repo.join("tenants/b"));
    assert!(left.is_empty(), "erase after a running backup left {left:?}");
    assert_eq!(names(&json_as(&r, "default", None, &["tenant", "list"])), ["default"]);
}

#[test]
fn a_new_escrow_key_replaces_the_old_slots() {
    let (r, old_secret) = escrow_repo();
    add_tenant(&r, "b", PW_B);
    run_as(&r, "b", None, &escrow_args(&old_secret, &["snapshots"]), 0);
    let (new_secret, new_public) = escrow_keygen(&r, "new");
    // `escrow set` with default's password re-seals default at once; b when next opened.
    r.ok(&[OsStr::new("escrow"), "set".as_ref(), new_public.as_os_str()]);
    run_as(&r, "b", Some(PW_B), &["snapshots"], 0);
    for tenant in ["default", "b"] {
        run_as(&r, tenant, None, &escrow_args(&new_secret, &["snapshots"]), 0);
        let out = run_as(&r, tenant, None, &escrow_args(&old_secret, &["snapshots"]), 12);
        assert!(stderr(&out).contains(&format!("tenant {tenant}")), "{}", stderr(&out));
        let pw = if tenant == "b" { PW_B } else { crate::support::PASSWORD };
        let slots = json_as(&r, tenant, Some(pw), &["tenant", "key", "list"]);
        let n = slots.as_array().unwrap().iter().filter(|s| s["kind"] == "escrow").count();
        assert_eq!(n, 1, "{tenant}: {slots}");
    }
}

#[test]
fn tenant_add_refuses_a_name_left_by_an_unfinished_erase() {
    let r = TestRepo::small();
    add_tenant(&r, "c", "old c");
    write_data(&r.path("src"), 170, 200_000);
    json_as(&r, "c", Some("old c"), &[OsStr::new("backup"), r.path("src").as_os_str()]);
    // An erase that stopped after the key slots and keyrings (its first two steps).
    for (_, p) in r.objects_under("tenants/c/keys/").into_iter().chain(r.objects_under("tenants/c/keyring/")) {
        std::fs::remove_file(p).unwrap();
    }
    let left = r.objects_under("tenants/c/");
    assert!(!left.is_empty());
    // Re-creating c now would give the new tenant the old one's undecryptable
    // objects (and, on this host, the old one's catalog).
    let out = r
        .command(&["tenant", "add", "c", KDF[0], KDF[1], KDF[2], KDF[3]])
        .env("STRONGROOM_NEW_PASSWORD", "new c")
        .output()
        .unwrap();
    if out.status.code() == Some(0) {
        let snaps = json_as(&r, "c", Some("new c"), &["snapshots"]);
        let check =
            r.command(&["check"]).env("STRONGROOM_TENANT", "c").env("STRONGROOM_PASSWORD", "new c").output().unwrap();
        panic!(
            "tenant add c succeeded over the leftovers of an unfinished erase ({} objects); the new c lists \
             snapshots {snaps} and its check exits {:?}:\n{}",
            left.len(),
            check.status.code(),
            stderr(&check)
        );
    }
    assert_code(&out, 1, "tenant add c over an unfinished erase");
    assert!(stderr(&out).contains("erase"), "the error should say to finish the erase: {}", stderr(&out));
    assert_eq!(r.objects_under("tenants/c/"), left);
    // Finishing the erase frees the name.
    run_as(&r, "default", None, &["tenant", "erase", "c", "--yes"], 0);
    add_tenant(&r, "c", "new c");
    assert!(json_as(&r, "c", Some("new c"), &["snapshots"]).as_array().unwrap().is_empty());
    run_as(&r, "c", Some("new c"), &["check"], 0);
}

#[test]
fn passwd_opened_with_a_key_file_keeps_the_key_file() {
    let r = TestRepo::new();
    let keyfile = r.path("tenant.key");
    let mut kb = random_bytes(180, 48);
    kb[47] = b'k';
    std::fs::write(&keyfile, &kb).unwrap();
    r.ok(&[OsStr::new("tenant"), "key".as_ref(), "add".as_ref(), "--key-file".as_ref(), keyfile.as_os_str()]);
    // `tenant passwd` changes a password; opened with a key file there is none to change.
    let out = r
        .command(&[
            OsStr::new("--password-file"),
            keyfile.as_os_str(),
            "tenant".as_ref(),
            "passwd".as_ref(),
            KDF[0].as_ref(),
            KDF[1].as_ref(),
            KDF[2].as_ref(),
            KDF[3].as_ref(),
        ])
        .env_remove("STRONGROOM_PASSWORD")
        .env("STRONGROOM_NEW_PASSWORD", "a new password")
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{:?} {}", out.status, stderr(&out));
    let kinds: Vec<String> = r
        .json(&["tenant", "key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"key-file".to_string()),
        "passwd (exit {:?}) replaced the key-file slot: {kinds:?}",
        out.status.code()
    );
    run_as(&r, "default", None, &[OsStr::new("--password-file"), keyfile.as_os_str(), "snapshots".as_ref()], 0);
}

#[test]
fn secrets_reach_no_log_audit_entry_or_listing() {
    let (r, secret) = escrow_repo();
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    let secret_hex = secret_text.trim().rsplit(':').next().unwrap().to_string();
    assert_eq!(secret_hex.len(), 64, "{secret_text}");
    // The secret file is private and never overwritten.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o077, 0, "escrow secret readable by others");
    let other_public = r.path("other.public");
    r.run(
        &[
            OsStr::new("escrow"),
            "keygen".as_ref(),
            "--secret-out".as_ref(),
            secret.as_os_str(),
            "--public-out".as_ref(),
            other_public.as_os_str(),
        ],
        1,
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text, "keygen overwrote a secret");

    let keyfile = r.path("tenant.key");
    let key_text = "Zx9-key-file-bytes-4c1e7a0b9d2f6e3a8c5b1d7f0e4a2c6b";
    std::fs::write(&keyfile, key_text).unwrap();
    let new_pw = "Np-7d3c1b0a9e8f-new-password";
    let second_pw = "Sp-1a2b3c4d5e6f-second-password";
    let pwfile = r.path("second.pw");
    std::fs::write(&pwfile, second_pw).unwrap();
    let src = r.path("src");
    write_data(&src, 190, 30_000);

    let trace = |args: &[&OsStr], pw: Option<&str>, new: Option<&str>| -> String {
        let mut c = r.command(args);
        c.env("STRONGROOM_LOG", "trace");
        match pw {
            Some(p) => c.env("STRONGROOM_PASSWORD", p),
            None => c.env_remove("STRONGROOM_PASSWORD"),
        };
        if let Some(n) = new {
            c.env("STRONGROOM_NEW_PASSWORD", n);
        }
        let out = c.output().unwrap();
        assert_code(&out, 0, &format!("{args:?}"));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
    };
    let pw = crate::support::PASSWORD;
    let mut seen = String::new();
    seen += &trace(&["-vv".as_ref(), "backup".as_ref(), src.as_os_str()], Some(pw), None);
    seen += &trace(
        &[
            "-vv".as_ref(),
            "tenant".as_ref(),
            "passwd".as_ref(),
            KDF[0].as_ref(),
            KDF[1].as_ref(),
            KDF[2].as_ref(),
            KDF[3].as_ref(),
        ],
        Some(pw),
        Some(new_pw),
    );
    seen += &trace(
        &[
            "-vv".as_ref(),
            "tenant".as_ref(),
            "key".as_ref(),
            "add".as_ref(),
            "--new-password-file".as_ref(),
            pwfile.as_os_str(),
            KDF[0].as_ref(),
            KDF[1].as_ref(),
            KDF[2].as_ref(),
            KDF[3].as_ref(),
        ],
        Some(new_pw),
        None,
    );
    seen += &trace(
        &[
            "-vv".as_ref(),
            "tenant".as_ref(),
            "key".as_ref(),
            "add".as_ref(),
            "--key-file".as_ref(),
            keyfile.as_os_str(),
        ],
        Some(new_pw),
        None,
    );
    seen +=
        &trace(&["-vv".as_ref(), "--password-file".as_ref(), keyfile.as_os_str(), "snapshots".as_ref()], None, None);
    seen += &trace(
        &[
            "-vv".as_ref(),
            "--escrow-secret".as_ref(),
            secret.as_os_str(),
            "tenant".as_ref(),
            "list".as_ref(),
            "--json".as_ref(),
        ],
        None,
        None,
    );
    seen += &trace(
        &["-vv".as_ref(), "tenant".as_ref(), "key".as_ref(), "list".as_ref(), "--json".as_ref()],
        Some(second_pw),
        None,
    );
    seen += &trace(&["audit".as_ref(), "export".as_ref(), "--format".as_ref(), "json".as_ref()], Some(new_pw), None);
    seen += &trace(&["audit".as_ref(), "export".as_ref(), "--format".as_ref(), "csv".as_ref()], Some(new_pw), None);
    assert!(seen.contains("tenant passwd") && seen.contains("key add"), "the audit export lacks the key commands");
    for (what, s) in [
        ("the password", pw),
        ("the new password", new_pw),
        ("the second password", second_pw),
        ("the key file", key_text),
        ("the escrow secret", secret_hex.as_str()),
    ] {
        assert!(!seen.contains(s), "{what} appears in a log, listing or audit entry");
    }
    // Nor in any stored object.
    let mut hits = Vec::new();
    walk_files(&r.repo, &mut |p| {
        let b = std::fs::read(p).unwrap();
        for s in [pw, new_pw, second_pw, key_text, secret_hex.as_str()] {
            if contains(&b, s.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    });
    assert!(hits.is_empty(), "a secret is stored in plaintext in {hits:?}");
    // Every object lives under its tenant's prefix, but for the repository config and escrow key.
    for (k, _) in r.objects() {
        assert!(
            k == "config" || k == "escrow" || k.starts_with("tenants/default/"),
            "object outside a tenant prefix: {k}"
        );
    }
}

#[test]
fn concurrent_adds_of_one_name_make_one_tenant() {
    let r = TestRepo::new();
    for round in 0..3 {
        let name = format!("t{round}");
        let children: Vec<_> = (0..4)
            .map(|i| {
                r.command(&["tenant", "add", &name, KDF[0], KDF[1], KDF[2], KDF[3]])
                    .env("STRONGROOM_NEW_PASSWORD", format!("pw{i}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<Option<i32>> =
            children.into_iter().map(|c| c.wait_with_output().unwrap().status.code()).collect();
        assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 1, "{name}: exit codes {codes:?}");
        let winner = codes.iter().position(|c| *c == Some(0)).unwrap();
        for i in 0..4 {
            run_as(&r, &name, Some(&format!("pw{i}")), &["snapshots"], if i == winner { 0 } else { 12 });
        }
        let slots = json_as(&r, &name, Some(&format!("pw{winner}")), &["tenant", "key", "list"]);
        assert_eq!(slots.as_array().unwrap().len(), 1, "{name}: {slots}");
        run_as(&r, &name, Some(&format!("pw{winner}")), &["check"], 0);
    }
}

/// `health` with the escrow secret judges every tenant of the repository:
/// one with a fresh snapshot passes, one without any fails, by name.
#[test]
fn health_with_the_escrow_secret_covers_every_tenant() {
    let (r, secret) = escrow_repo();
    add_tenant(&r, "b", PW_B);
    let src = r.path("src");
    write_data(&src, 60, 50_000);
    r.backup(&[&src], &[]);
    let out = run_as(&r, "default", None, &escrow_args(&secret, &["health", "--max-age", "1h", "--json"]), 1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenants = v["tenants"].as_array().unwrap();
    let by = |n: &str| tenants.iter().find(|t| t["tenant"] == n).unwrap_or_else(|| panic!("{n} missing: {v}"));
    assert_eq!(by("default")["ok"], true, "{v}");
    assert_eq!(by("b")["ok"], false, "{v}");
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), src.as_os_str()]);
    run_as(&r, "default", None, &escrow_args(&secret, &["health", "--max-age", "1h"]), 0);
}

/// Malformed tenant settings, escrow key files and audit formats are
/// refused with one line, and change nothing.
#[test]
fn bad_settings_and_key_files_are_refused_and_change_nothing() {
    let r = TestRepo::new();
    r.ok(&["tenant", "set", "default", "--plan", "pro", "--quota", "1G"]);
    let before = r.objects_under("tenants/default/meta/");
    for (args, needle) in [
        (vec!["tenant", "set", "default", "--plan", "gold"], "unknown plan"),
        (vec!["tenant", "set", "default", "--quota", "lots"], "invalid size"),
        (vec!["tenant", "set", "default", "--compression", "fast"], "invalid compression level"),
    ] {
        let out = r.run(&args, 1);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{args:?}: {}", stderr(&out));
    }
    let settings = row(&r.json(&["tenant", "list"]), "default").clone();
    assert_eq!((settings["plan"].as_str(), settings["quota_bytes"].as_u64()), (Some("pro"), Some(1 << 30)));
    let after: Vec<Vec<u8>> =
        r.objects_under("tenants/default/meta/").iter().map(|(_, p)| std::fs::read(p).unwrap()).collect();
    let before: Vec<Vec<u8>> = before.iter().map(|(_, p)| std::fs::read(p).unwrap()).collect();
    assert_eq!(after, before, "a refused `tenant set` rewrote the settings");

    // An escrow key file that is not one, as public and as secret key.
    let junk = r.path("junk.key");
    std::fs::write(&junk, "strongroom-escrow-public-v1:zz\n").unwrap();
    let out = r.run(&[OsStr::new("escrow"), "set".as_ref(), junk.as_os_str()], 1);
    assert!(stderr(&out).contains("not hex"), "{}", stderr(&out));
    assert!(r.objects_under("escrow").is_empty(), "a refused escrow key was stored");
    let out = r.run(&[OsStr::new("--escrow-secret"), junk.as_os_str(), "snapshots".as_ref()], 1);
    assert!(stderr(&out).contains("not an escrow secret key file"), "{}", stderr(&out));
    r.run(&["audit", "export", "--format", "xml"], 2);
}

#[test]
fn library_erase_refuses_held_snapshots_keeping_every_key_slot_then_leaves_nothing_of_the_tenant() {
    use strongroom_core::erase::{self, EraseOptions};
    use strongroom_core::lock::{self, LockKind};
    use strongroom_core::repo::{OpenOptions, Repo, Secret};
    use strongroom_core::store::Store;

    let r = TestRepo::small();
    add_tenant(&r, "b", PW_B);
    write_data(&r.path("src-b"), 90, 100_000);
    json_as(&r, "b", Some(PW_B), &[OsStr::new("backup"), r.path("src-b").as_os_str()]);
    run_as(&r, "b", Some(PW_B), &["hold", "add", "latest", "--reason", "keep"], 0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = Store::open(r.repo.to_str().unwrap(), &Default::default(), false).unwrap();
    let tenant = strongroom_core::id::TenantName::new("b").unwrap();
    let open_locked = || -> strongroom_core::error::Result<lock::LockGuard> {
        let opts =
            OpenOptions { cache_dir: r.path("lib-cache"), lock_wait: std::time::Duration::ZERO, memory_dir: None };
        let repo = rt.block_on(Repo::open(store.clone(), tenant.clone(), &Secret::new(PW_B.into()), &opts))?;
        rt.block_on(lock::acquire(repo.scope(), LockKind::Exclusive, std::time::Duration::ZERO, "test"))
    };
    let keys = r.objects_under("tenants/b/keys/");
    assert!(!keys.is_empty());
    let default_keys = r.objects_under("tenants/default/keys/");

    // Held: refused with every key slot left, and the lock released.
    let refused = erase::run(rt.handle(), &store, &tenant, &EraseOptions::default(), open_locked);
    assert!(
        matches!(refused, Err(strongroom_core::Error::TenantHeld { held: 1, .. })),
        "{:?}",
        refused.map(|s| s.objects)
    );
    assert_eq!(r.objects_under("tenants/b/keys/"), keys, "a refused erase deleted key slots");
    assert!(r.objects_under("tenants/b/locks/x-").is_empty(), "a refused erase kept its lock");
    assert!(r.objects_under("erasures/").is_empty(), "a refused erase was recorded");

    // Including held: nothing of the tenant is left, and the erase is
    // recorded at the repository root.
    let before = r.objects_under("tenants/b/").len() as u64;
    let opts = EraseOptions { including_held: true };
    let erased = erase::run(rt.handle(), &store, &tenant, &opts, open_locked).unwrap();
    assert!(erased.objects >= before, "{} objects deleted of {before}", erased.objects);
    let left = files_below(&r.repo.join("tenants/b"));
    assert!(left.is_empty(), "erase left files of tenant b: {left:?}");
    assert_eq!(r.objects_under("erasures/").len(), 1);
    assert_eq!(r.objects_under("tenants/default/keys/"), default_keys, "erasing b touched tenant default");
}

#[test]
fn a_host_that_saw_the_escrow_slot_lists_no_slots_and_check_puts_a_lost_one_back() {
    let (r, _secret) = escrow_repo();
    r.ok(&["snapshots"]);
    let out = r.run(&["-vvv", "snapshots"], 0);
    let log = stderr(&out);
    let listed = |log: &str| log.lines().any(|l| l.contains("store request: list") && l.contains("/keys"));
    assert!(!listed(&log), "the escrow slot was seen last time: no listing of the slots\n{log}");
    // A store writer deletes the escrow slot: `check`, which checks the
    // escrow set-up whatever this host remembers, lists the slots and
    // seals a new one.
    let escrow_slots = |r: &TestRepo| -> Vec<String> {
        let list = r.json(&["tenant", "key", "list"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "escrow")
            .map(|s| s["name"].as_str().unwrap().into())
            .collect()
    };
    let gone = escrow_slots(&r);
    assert_eq!(gone.len(), 1);
    for (name, path) in r.objects_under("tenants/default/keys/") {
        if name.ends_with(&gone[0]) {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(r.objects_under("tenants/default/keys/").len(), 1, "only the password slot is left");
    r.ok(&["snapshots"]);
    let out = r.run(&["-vvv", "check"], 0);
    assert!(listed(&stderr(&out)), "{}", stderr(&out));
    assert_eq!(r.objects_under("tenants/default/keys/").len(), 2, "check sealed a new escrow slot");
    let back = escrow_slots(&r);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_ne!(back[0], gone[0]);
}
