//! A backup host's store rights (create new objects, read, list; no
//! delete, no overwrite), played by a proxy in front of SeaweedFS and
//! Azurite that refuses everything else: backups of directories and
//! streams (one after another and at once), restore, check and the read
//! commands never ask for more; forget and prune fail before any change
//! with exit 13 and a message naming the right they lack; the lock
//! objects the backups leave are swept by a prune with full rights; and a
//! backup's shared lock, held through the proxy, blocks a prune until it
//! ends, whatever release another host forges.

use std::io::Write;
use std::process::{Child, Stdio};

use crate::support::refusing_proxy::{Dialect, RefusingProxy};
use crate::support::remote::Backend;
use crate::support::{assert_code, assert_trees_equal, build_all_kinds, random_bytes, restored_at, stderr, TestRepo};

/// The maintenance host (`direct`, full rights), a backup host reaching
/// the same repository through a refusing proxy (its own cache), and the
/// proxy. The repository is initialized directly.
fn setup(b: &Backend, test: &str) -> (TestRepo, TestRepo, RefusingProxy) {
    let direct = b.small_repo(test);
    let mut host = TestRepo::uninitialized();
    host.repo = direct.repo.clone();
    host.env = direct.env.clone();
    let proxy = match b.name {
        "s3" => {
            let (_, endpoint) = host.env.iter().find(|(k, _)| k == "STRONGROOM_S3_ENDPOINT").unwrap().clone();
            let proxy = RefusingProxy::start(endpoint.trim_start_matches("http://").trim_end_matches('/'), Dialect::S3);
            for (k, v) in host.env.iter_mut() {
                if k == "STRONGROOM_S3_ENDPOINT" {
                    v.clone_from(&proxy.url);
                }
            }
            proxy
        }
        _ => {
            let upstream =
                std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".into());
            let proxy =
                RefusingProxy::start(upstream.trim_start_matches("http://").trim_end_matches('/'), Dialect::Azure);
            host.env.push(("AZURITE_BLOB_STORAGE_URL".into(), proxy.url.clone()));
            proxy
        }
    };
    host.env.push(("STRONGROOM_IO_RETRY_TIMEOUT".into(), "3s".into()));
    (direct, host, proxy)
}

/// The names under the default tenant's `locks/`, read with full rights.
fn lock_objects(b: &Backend, r: &TestRepo) -> Vec<String> {
    use strongroom_core::store::{Kind, Store};
    let store = Store::open(r.repo.to_str().unwrap(), &b.store_options(), false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tenant = strongroom_core::id::TenantName::new("default").unwrap();
    rt.block_on(store.list(&tenant, Kind::Locks)).unwrap().into_iter().map(|l| l.name).collect()
}

fn stream_backup(r: &TestRepo, name: &str, data: Vec<u8>) -> Child {
    let mut child = r
        .command(&["backup", "--stdin", "--stdin-name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(&data));
    child
}

fn dir_backup(r: &TestRepo, src: &std::path::Path) -> Child {
    r.command(&["backup", src.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Asserts a command failed for want of delete rights, in one line,
/// before the store refused anything but the permission probe.
fn assert_needs_delete(out: &std::process::Output, proxy: &RefusingProxy, b: &Backend, what: &str) {
    assert_code(out, 13, what);
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.contains(" WARN ")).collect();
    assert_eq!(lines.len(), 1, "{}: {what}: expected one line, got:\n{err}", b.name);
    let line = lines[0];
    assert!(line.contains("tenant default: the store refused to delete tenants/default/locks/probe-"), "{line}");
    assert!(line.contains("permission denied"), "{line}");
    assert!(line.contains("s3:DeleteObject") && line.contains("Azure SAS with d"), "{line}");
    let refused = proxy.refused();
    assert_eq!(refused.len(), 1, "{}: {what}: refused {refused:?}", b.name);
    // The probe's deletion: a DELETE, or (object_store sends deletions as
    // batches) an S3 `?delete` or Azure `comp=batch` POST naming it in the body.
    let probe = refused[0].starts_with("DELETE ") && refused[0].contains("/locks/probe-");
    let batch =
        refused[0].starts_with("POST ") && (refused[0].ends_with("?delete") || refused[0].ends_with("comp=batch"));
    assert!(probe || batch, "{refused:?}");
    proxy.clear();
}

fn check_backup_only(b: &Backend) {
    let (direct, host, proxy) = setup(b, "backup-only");
    let src = host.path("src");
    build_all_kinds(&src);

    // Backups of a directory, twice, and of a stream.
    host.backup(&[&src], &[]);
    std::fs::write(src.join("sub/new.bin"), random_bytes(31, 200_000)).unwrap();
    host.backup(&[&src], &[]);
    let stream = random_bytes(32, 300_000);
    let out = stream_backup(&host, "db.sql", stream.clone()).wait_with_output().unwrap();
    assert_code(&out, 0, "backup --stdin through the proxy");
    let out = host.cmd(&["backup", "--stdin-from-command", "--stdin-name", "cmd.txt", "--", "sh", "-c", "printf hi"]);
    assert_code(&out, 0, "backup --stdin-from-command through the proxy");
    // Several at once: each takes its shared lock next to the others'.
    let mut running = vec![dir_backup(&host, &src)];
    for i in 0..3u64 {
        running.push(stream_backup(&host, &format!("s{i}.bin"), random_bytes(40 + i, 150_000)));
    }
    for c in running {
        assert_code(&c.wait_with_output().unwrap(), 0, "concurrent backup through the proxy");
    }
    assert_eq!(proxy.refused(), Vec::<String>::new(), "{}: backups asked for more than create and read", b.name);
    assert_eq!(host.snapshots().len(), 8, "{}", b.name);

    // Everything that reads.
    let snaps = host.snapshots();
    let of = |path: &str| {
        let s = snaps.iter().rev().find(|s| s["paths"][0].as_str().is_some_and(|p| p.ends_with(path))).unwrap();
        s["id"].as_str().unwrap().to_string()
    };
    let (id, db) = (of("/src"), of("/db.sql"));
    let target = host.path("restore");
    host.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
    let out = host.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{}: {out}", b.name);
    host.ok(&["ls", &id]);
    host.ok(&["diff", &db, &id]);
    let dumped = host.run(&["dump", &db, "db.sql"], 0);
    assert!(dumped.stdout == stream, "{}: dump gave other bytes", b.name);
    assert_eq!(proxy.refused(), Vec::<String>::new(), "{}: a read command asked for more than read", b.name);

    // Forget and prune: refused before they change anything.
    let left = lock_objects(b, &direct);
    assert!(!left.is_empty(), "{}: the backups left no lock objects", b.name);
    let out = host.cmd(&["forget", "--keep-last", "1"]);
    assert_needs_delete(&out, &proxy, b, "forget");
    let out = host.cmd(&["prune"]);
    assert_needs_delete(&out, &proxy, b, "prune");
    let out = host.cmd(&["forget", "--keep-last", "1", "--prune"]);
    assert_needs_delete(&out, &proxy, b, "forget --prune");
    assert_eq!(direct.snapshots().len(), 8, "{}: a refused forget removed snapshots", b.name);
    let out = direct.ok(&["check"]);
    assert!(out.contains("no errors"), "{}: {out}", b.name);

    // With full rights, prune sweeps what the backup host left (probes
    // once past the TTL, here shortened).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = direct.command(&["prune"]).env("STRONGROOM_LOCK_TTL_SECS", "2").output().unwrap();
    assert_code(&out, 0, "prune with full rights");
    assert_eq!(lock_objects(b, &direct), Vec::<String>::new(), "{}: prune left lock objects", b.name);
    let out = direct.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{}: {out}", b.name);
    let again = direct.path("restore-after");
    direct.ok(&["restore", &id, "--target", again.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&again, &src));
}

#[test]
fn backup_only_rights_suffice_for_backups_and_reads_and_forget_and_prune_fail_cleanly() {
    let test = "backup_only_rights_suffice_for_backups_and_reads_and_forget_and_prune_fail_cleanly";
    for b in Backend::s3_or_skip(test).into_iter().chain(Backend::azure_or_skip(test)) {
        check_backup_only(&b);
    }
}

#[test]
fn a_backup_only_hosts_lock_blocks_prune_until_it_ends_and_a_forged_release_does_not_end_it() {
    let test = "a_backup_only_hosts_lock_blocks_prune_until_it_ends_and_a_forged_release_does_not_end_it";
    let Some(b) = Backend::s3_or_skip(test) else { return };
    let (mut direct, mut host, proxy) = setup(&b, "lock-blocks-prune");
    // A short TTL, for everyone: the forged release keeps the lock until it is stale.
    for r in [&mut direct, &mut host] {
        r.env.push(("STRONGROOM_LOCK_TTL_SECS".into(), "8".into()));
    }
    let mut child = host
        .command(&["backup", "--stdin", "--stdin-name", "slow.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&random_bytes(50, 10_000)).unwrap();
    // Its lock appears.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let record = loop {
        if let Some(n) = lock_objects(&b, &direct).into_iter().find(|n| n.starts_with("s-") && !n.contains('.')) {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "the backup took no lock");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let out = direct.cmd(&["prune"]);
    assert_code(&out, 11, "prune while a backup holds its lock");

    // Another host forges the release with a secret that is not the holder's.
    {
        use strongroom_core::store::{Kind, Store};
        let store = Store::open(direct.repo.to_str().unwrap(), &b.store_options(), false).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let tenant = strongroom_core::id::TenantName::new("default").unwrap();
        let end = Store::path(&tenant, Kind::Locks, &format!("{record}.end"));
        rt.block_on(store.create(&end, bytes::Bytes::from(vec![9u8; 32]))).unwrap();
    }
    let out = direct.cmd(&["prune"]);
    assert_code(&out, 11, "prune after a forged release");
    assert!(stderr(&out).contains("a shared lock"), "{}", stderr(&out));
    // The backup refreshes past the TTL, and still blocks.
    std::thread::sleep(std::time::Duration::from_secs(9));
    let out = direct.cmd(&["prune"]);
    assert_code(&out, 11, "prune after the TTL, the backup refreshing");

    stdin.write_all(&random_bytes(51, 10_000)).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0, "the slow backup through the proxy");
    assert_eq!(proxy.refused(), Vec::<String>::new());
    // Its release could not be written (the forged one took the name): the
    // lock ends when it is stale by the store's clock.
    let out = direct.cmd(&["--lock-wait", "30s", "prune"]);
    assert_code(&out, 0, "prune once the backup ended");
    let out = direct.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
    assert_eq!(direct.snapshots().len(), 1);
}
