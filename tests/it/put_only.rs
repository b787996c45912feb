//! Put-only keys: a backup host given only `tenant key add --put-only`'s
//! key adds backups (deduplicated, unchanged files skipped) and can do
//! nothing else.
//!
//! Risks covered: a put-only key that reads, lists or deletes anything; a
//! put-only backup the full key cannot restore; a second put-only backup
//! that uploads everything again or re-reads unchanged files; a put-only
//! host fooled by a look-alike repository; a key rotation that leaves drop
//! generations behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;

const MESSAGE: &str = "tenant default: this key is put-only: it can add backups but not read or delete them";

/// A repository with a put-only key-file slot; returns it with the key file.
fn put_only_repo() -> (TestRepo, PathBuf) {
    let r = TestRepo::small();
    let key = r.path("put-only.key");
    std::fs::write(&key, random_bytes(7, 48)).unwrap();
    let out = r.ok(&[
        OsStr::new("tenant"),
        "key".as_ref(),
        "add".as_ref(),
        "--put-only".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
    ]);
    assert!(out.contains("put-only key slot"), "{out}");
    (r, key)
}

/// Runs `args` with the put-only key (and no password), with a cache
/// directory of the backup host's own.
fn as_put_only<S: AsRef<OsStr>>(r: &TestRepo, key: &Path, args: &[S], code: i32) -> Output {
    let mut c = r.command(args);
    c.env_remove("STRONGROOM_PASSWORD")
        .env("STRONGROOM_PASSWORD_FILE", key)
        .env("STRONGROOM_CACHE_DIR", r.path("backup-host-cache"));
    let out = c.output().expect("run strongroom");
    let what: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().to_string()).collect();
    assert_code(&out, code, &format!("[put-only] strongroom {}", what.join(" ")));
    out
}

fn put_only_json<S: AsRef<OsStr>>(r: &TestRepo, key: &Path, args: &[S]) -> serde_json::Value {
    let mut all: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.push(OsStr::new("--json"));
    let out = as_put_only(r, key, &all, 0);
    serde_json::from_slice(&out.stdout).expect("backup --json prints JSON")
}

fn stored_bytes(r: &TestRepo) -> u64 {
    r.objects().iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum()
}

fn source(r: &TestRepo) -> PathBuf {
    let src = r.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.bin"), random_bytes(1, 600_000)).unwrap();
    std::fs::write(src.join("sub/b.bin"), random_bytes(2, 300_000)).unwrap();
    std::fs::write(src.join("sub/c.txt"), b"small file\n").unwrap();
    src
}

#[test]
fn put_only_host_backs_up_and_full_key_restores() {
    let (r, key) = put_only_repo();
    let src = source(&r);
    // A full-key backup first: the put-only host dedups against it.
    r.backup(&[&src], &[]);
    let before = stored_bytes(&r);

    let first = put_only_json(&r, &key, &[OsStr::new("backup"), src.as_os_str()]);
    let grown = stored_bytes(&r) - before;
    assert!(grown < 100_000, "a put-only backup of data the tenant holds stored {grown} bytes");
    assert!(first["snapshot_id"].is_string(), "{first}");

    // Its second backup skips the unchanged files, from its own memory.
    std::fs::write(src.join("new.txt"), b"a new file\n").unwrap();
    let second = put_only_json(&r, &key, &[OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(u64_field(&second, "files_unmodified"), 3, "{second}");
    assert_eq!(u64_field(&second, "files_new"), 1, "{second}");

    // From standard input too.
    let mut c = r.command(&["backup", "--stdin-name", "dump.sql", "--stdin", "--json"]);
    c.env_remove("STRONGROOM_PASSWORD")
        .env("STRONGROOM_PASSWORD_FILE", &key)
        .env("STRONGROOM_CACHE_DIR", r.path("backup-host-cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &random_bytes(3, 200_000)).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0, "put-only backup --stdin");

    // The full key sees and restores all of it, byte for byte.
    assert_eq!(r.snapshots().len(), 4);
    let target = r.path("restored");
    let id = second["snapshot_id"].as_str().unwrap();
    r.ok(&["restore", id, "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
    r.ok(&["check", "--read-data"]);
    let verify = r.json(&["audit", "verify"]);
    assert_eq!(verify["problems"].as_array().map(Vec::len), Some(0), "{verify}");
}

#[test]
fn put_only_key_reads_and_destroys_nothing() {
    let (r, key) = put_only_repo();
    let src = source(&r);
    r.backup(&[&src], &[]);
    put_only_json(&r, &key, &[OsStr::new("backup"), src.as_os_str()]);
    let target = r.path("t");
    let t = target.to_str().unwrap();
    for args in [
        vec!["snapshots"],
        vec!["restore", "latest", "--target", t],
        vec!["ls", "latest"],
        vec!["dump", "latest", "/x"],
        vec!["diff", "latest", "latest"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["check"],
        vec!["tenant", "key", "list"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
    ] {
        let out = as_put_only(&r, &key, &args, 12);
        assert!(stderr(&out).contains(MESSAGE), "{args:?}: {}", stderr(&out));
    }
    assert!(!target.exists());
    assert_eq!(r.snapshots().len(), 2, "nothing was forgotten");
}

#[test]
fn put_only_host_refuses_a_look_alike_repository() {
    let (r, key) = put_only_repo();
    let src = source(&r);
    // The store's config rewritten with another repository id.
    let config = r.repo.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    std::fs::write(&config, text.replace(&id, &"ab".repeat(32))).unwrap();
    let out = as_put_only(&r, &key, &[OsStr::new("backup"), src.as_os_str()], 1);
    assert!(stderr(&out).contains("does not match tenant default's binding record: id differs"), "{}", stderr(&out));
    assert!(r.objects_under("tenants/default/keyring/drop-").is_empty(), "nothing written to a look-alike");
}

#[test]
fn key_rotation_retires_drop_generations() {
    let (r, key) = put_only_repo();
    let src = source(&r);
    put_only_json(&r, &key, &[OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.objects_under("tenants/default/keyring/drop-").len(), 1);
    r.ok(&["tenant", "rotate-key", "--rewrite"]);
    assert!(r.objects_under("tenants/default/keyring/drop-").is_empty(), "drop keyrings remain after a rewrite");
    let target = r.path("restored");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
    // The put-only host goes on with a new drop generation.
    put_only_json(&r, &key, &[OsStr::new("backup"), src.as_os_str()]);
}

#[test]
fn a_dedup_section_listing_other_blobs_is_damaged() {
    use strongroom_core::codec::{index, sealed};
    let r = TestRepo::small();
    let src = source(&r);
    r.backup(&[&src], &[]);
    // What a compromised put-only host could write: a delta whose dedup
    // section claims a blob its entries (and the store) lack, so that
    // other put-only hosts skip uploading it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = r.open_library(&rt);
    let keys = repo.keys();
    let dk = keys.current_data_key().unwrap();
    let fake = strongroom_core::id::BlobId([7; 32]);
    let obj = sealed::seal_index(dk.generation, &dk.key, keys.dedup_key(), "default", &index::encode(&[]), &[fake]);
    let name = hex::encode(strongroom_core::crypto::object_hash(&obj));
    std::fs::write(r.repo.join("tenants/default/index").join(name), obj).unwrap();
    drop(repo);
    let out = r.cmd(&["check"]);
    assert_ne!(out.status.code(), Some(0));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("dedup section lists other blobs than its entries"), "{text}");
}
