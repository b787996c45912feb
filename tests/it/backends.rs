//! Object-store backends against real servers (SeaweedFS for S3, Azurite
//! for Azure, started by `.ci/run`): the CLI flow on each backend, two
//! hosts sharing one S3 tenant, conditional create under a race, and
//! network faults (server gone mid-backup, throttling). Each remote case
//! runs in a prefix of its own and says when it is skipped.

use std::path::Path;
use std::process::Stdio;

use crate::support::proxy::Proxy;
use crate::support::remote::Backend;
use crate::support::{
    assert_code, assert_trees_equal, build_all_kinds, random_bytes, restored_at, stderr, u64_field, TestRepo,
};

/// init, backup, snapshots, restore byte-identical, forget --prune and
/// check --read-data: the same flow on every backend.
fn check_cli_flow(b: &Backend) {
    let r = b.small_repo("cli-flow");
    let src = r.path("src");
    build_all_kinds(&src);
    let first = r.backup(&[&src], &["--tag", "one"]);
    assert!(u64_field(&first, "added_bytes") > 0, "{}: {first}", b.name);

    std::fs::write(src.join("sub/new.bin"), random_bytes(7, 300_000)).unwrap();
    std::fs::remove_file(src.join("empty")).ok();
    let second = r.backup(&[&src], &[]);
    assert_eq!(r.snapshots().len(), 2, "{}", b.name);

    let target = r.path("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));

    let v = r.json(&["forget", "--keep-last", "1", "--prune"]);
    assert!(v.is_object(), "{}: forget --prune --json: {v}", b.name);
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "{}", b.name);
    assert_eq!(snaps[0]["id"], second["snapshot_id"]);

    let out = r.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{}: {out}", b.name);
    let again = r.path("restore-after-prune");
    r.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&again, &src));
}

#[test]
fn cli_flow_on_every_backend() {
    for b in Backend::all("cli_flow_on_every_backend") {
        check_cli_flow(&b);
    }
}

/// The same repository seen from another host: its own cache dir.
fn other_host(r: &TestRepo) -> TestRepo {
    let mut h = TestRepo::uninitialized();
    h.repo = r.repo.clone();
    h.env = r.env.clone();
    h
}

#[test]
fn two_hosts_back_up_one_s3_tenant_concurrently() {
    let Some(b) = Backend::s3_or_skip("two_hosts_back_up_one_s3_tenant_concurrently") else { return };
    let a = b.small_repo("two-hosts");
    let h = other_host(&a);
    let (src_a, src_b) = (a.path("data-a"), h.path("data-b"));
    for (i, d) in [&src_a, &src_b].into_iter().enumerate() {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("big.bin"), random_bytes(100 + i as u64, 4 << 20)).unwrap();
        std::fs::write(d.join("small.txt"), format!("host {i}\n")).unwrap();
    }
    // Both at once, each with its own cache dir.
    let start = |r: &TestRepo, src: &Path, host: &str| {
        r.command(&["backup", "--json", "--host", host, src.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (start(&a, &src_a, "host-a"), start(&h, &src_b, "host-b"));
    let (oa, ob) = (pa.wait_with_output().unwrap(), pb.wait_with_output().unwrap());
    assert_code(&oa, 0, "backup on host a");
    assert_code(&ob, 0, "backup on host b");
    for r in [&a, &h] {
        let hosts: Vec<String> = r.snapshots().iter().map(|s| s["host"].as_str().unwrap().to_string()).collect();
        assert_eq!(hosts.len(), 2, "{hosts:?}");
        assert!(hosts.contains(&"host-a".to_string()) && hosts.contains(&"host-b".to_string()), "{hosts:?}");
    }
    // Host b backs up what host a stored: it dedups against a's chunks.
    let again = h.backup(&[&src_a], &["--host", "host-b"]);
    let added = u64_field(&again, "added_bytes");
    assert!(added < 64 * 1024, "second host re-uploaded {added} bytes of data the first had stored");
    let out = h.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
}

/// Many concurrent `PutMode::Create`s of one key: exactly one wins, the
/// rest see `AlreadyExists`, and the object holds the winner's bytes.
fn check_create_race(b: &Backend) {
    use strongroom_core::store::{Error, Kind, Store};
    let url = b.unique_url("create-race");
    let store = Store::open(&url, &b.store_options(), false).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let tenant = strongroom_core::id::TenantName::new("race").unwrap();
    for round in 0..4 {
        let path = Store::path(&tenant, Kind::Locks, &format!("key-{round}"));
        let results = rt.block_on(futures::future::join_all((0..24u8).map(|i| {
            let (store, path) = (store.clone(), path.clone());
            async move { (i, store.create(&path, bytes::Bytes::from(vec![i; 1000])).await) }
        })));
        let winners: Vec<u8> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "{}: round {round}: {} creates succeeded", b.name, winners.len());
        for (i, r) in &results {
            assert!(
                r.is_ok() || matches!(r, Err(Error::AlreadyExists { .. })),
                "{}: create {i} failed otherwise: {r:?}",
                b.name
            );
        }
        let stored = rt.block_on(store.get(&path)).unwrap();
        assert_eq!(stored.as_ref(), vec![winners[0]; 1000].as_slice(), "{}: the winner's bytes", b.name);
        rt.block_on(store.delete(&path)).unwrap();
    }
}

#[test]
fn conditional_create_has_one_winner_on_the_emulators() {
    let test = "conditional_create_has_one_winner_on_the_emulators";
    for b in Backend::s3_or_skip(test).into_iter().chain(Backend::azure_or_skip(test)) {
        check_create_race(&b);
    }
}

/// A repository on S3 reached through a proxy, with retries kept short.
fn s3_through_proxy(b: &Backend, test: &str) -> (TestRepo, Proxy) {
    let endpoint = b.env.iter().find(|(k, _)| k == "STRONGROOM_S3_ENDPOINT").map(|(_, v)| v.clone()).unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://").trim_end_matches('/'));
    let mut r = b.repo(test);
    for (k, v) in r.env.iter_mut() {
        if k == "STRONGROOM_S3_ENDPOINT" {
            *v = proxy.url.clone();
        }
    }
    r.env.push(("STRONGROOM_IO_RETRY_TIMEOUT".into(), "3s".into()));
    let mut args = vec!["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"];
    args.extend_from_slice(crate::support::SMALL);
    r.ok(&args);
    (r, proxy)
}

#[test]
fn s3_server_gone_mid_backup_fails_clearly_and_a_rerun_succeeds() {
    let Some(b) = Backend::s3_or_skip("s3_server_gone_mid_backup_fails_clearly_and_a_rerun_succeeds") else {
        return;
    };
    let (r, proxy) = s3_through_proxy(&b, "server-gone");
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6u64 {
        std::fs::write(src.join(format!("f{i}.bin")), random_bytes(200 + i, 2 << 20)).unwrap();
    }
    // About a third of the 12 MiB reaches the server, then it is gone.
    proxy.cut_after_upstream_bytes(4 << 20);
    let out = r.cmd(&["backup", src.to_str().unwrap()]);
    assert!(proxy.is_cut(), "the proxy never cut: the backup sent less than 4 MiB");
    assert_code(&out, 1, "backup while the server is gone");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{err}");
    assert!(lines[0].starts_with("strongroom: "), "{err}");
    eprintln!("backup with the server gone: {}", lines[0]);

    proxy.resume();
    assert!(r.snapshots().is_empty(), "an interrupted backup left a snapshot");
    let done = r.backup(&[&src], &[]);
    assert_eq!(r.snapshots().len(), 1);
    assert!(u64_field(&done, "added_bytes") > 0);
    let out = r.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
    let target = r.path("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
}

#[test]
fn s3_throttling_is_retried() {
    let Some(b) = Backend::s3_or_skip("s3_throttling_is_retried") else { return };
    let (r, proxy) = s3_through_proxy(&b, "throttled");
    let src = r.path("src");
    build_all_kinds(&src);
    proxy.throttle_next_connections(3);
    r.backup(&[&src], &[]);
    assert_eq!(proxy.throttled(), 3, "the client did not come back after 503 SlowDown");
    proxy.throttle_next_connections(2);
    let target = r.path("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_trees_equal(&src, &restored_at(&target, &src));
    let out = r.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors"), "{out}");
}
