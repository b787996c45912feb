//! Small defects operators ran into, each pinned by a test: which secret
//! wins, benchmarks that must not touch a repository, counts and messages
//! that must say what happened.

use crate::support::{assert_code, random_bytes, stderr, TestRepo, PASSWORD};

#[test]
fn a_password_file_flag_beats_the_password_in_the_environment() {
    let r = TestRepo::new();
    let file = r.path("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let mut c = r.command(&["--password-file", file.to_str().unwrap(), "snapshots"]);
    c.env("STRONGROOM_PASSWORD", "not the password");
    assert_code(&c.output().unwrap(), 0, "--password-file with a wrong STRONGROOM_PASSWORD");
    // From the environment, the password still beats the file.
    let mut c = r.command(&["snapshots"]);
    c.env("STRONGROOM_PASSWORD_FILE", &file).env("STRONGROOM_PASSWORD", "not the password");
    assert_code(&c.output().unwrap(), 12, "STRONGROOM_PASSWORD over STRONGROOM_PASSWORD_FILE");
    // The flag also beats an escrow secret file named in the environment.
    let junk = r.path("junk-escrow");
    std::fs::write(&junk, b"not an escrow secret").unwrap();
    let mut c = r.command(&["--password-file", file.to_str().unwrap(), "snapshots"]);
    c.env("STRONGROOM_ESCROW_SECRET_FILE", &junk);
    assert_code(&c.output().unwrap(), 0, "--password-file with STRONGROOM_ESCROW_SECRET_FILE set");
    // Both flags at once are refused, naming them.
    let out =
        r.run(&["--password-file", file.to_str().unwrap(), "--escrow-secret", junk.to_str().unwrap(), "snapshots"], 1);
    assert!(stderr(&out).contains("either --password-file or --escrow-secret"), "{}", stderr(&out));
}

#[test]
fn a_new_password_file_flag_beats_the_new_password_in_the_environment() {
    let r = TestRepo::new();
    let file = r.path("new-pw");
    std::fs::write(&file, b"from the file").unwrap();
    let mut args = vec!["tenant", "passwd", "--new-password-file", file.to_str().unwrap()];
    args.extend_from_slice(&crate::support::KDF);
    let mut c = r.command(&args);
    c.env("STRONGROOM_NEW_PASSWORD", "from the environment");
    assert_code(&c.output().unwrap(), 0, "tenant passwd");
    let mut c = r.command(&["snapshots"]);
    c.env("STRONGROOM_PASSWORD", "from the file");
    assert_code(&c.output().unwrap(), 0, "the file's password opens the tenant");
}

#[test]
fn an_interrupted_restore_says_what_it_left_and_that_the_repository_is_unchanged() {
    use std::io::{BufRead, Read};
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(src.join(name), random_bytes(name.len() as u64, 50_000)).unwrap();
    }
    r.backup(&[&src], &[]);
    let pause_dir = r.path("pause");
    std::fs::create_dir_all(&pause_dir).unwrap();
    let target = r.path("t");
    let rel_a = src.strip_prefix("/").unwrap().join("a");
    let mut child = r
        .command(&["restore", "latest", "--target", target.to_str().unwrap(), "--io-concurrency", "1"])
        .env("STRONGROOM_TEST_PAUSE", format!("restore-after-write:{}", rel_a.display()))
        .env("STRONGROOM_TEST_PAUSE_DIR", &pause_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped once `a` is complete: interrupt it, wait until it says it is
    // stopping (it is cancelled by then), and let it go on.
    while !pause_dir.join("reached").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the restore ended before the pause");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("stopping") {
        assert!(err.read_line(&mut seen).unwrap() > 0, "no interruption notice: {seen}");
    }
    std::fs::write(pause_dir.join("go"), b"").unwrap();
    err.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(!seen.contains("nothing was committed"), "{seen}");
    assert!(seen.contains("files completed in the target were kept"), "{seen}");
    assert!(seen.contains("the repository was not changed"), "{seen}");
    assert!(seen.contains("run the same restore again"), "{seen}");
}

#[test]
fn stats_counts_only_referenced_chunks_after_a_backup_the_quota_stopped() {
    let r = TestRepo::small();
    let (a, b) = (r.path("a"), r.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("f"), random_bytes(1, 1_000_000)).unwrap();
    std::fs::write(b.join("f"), random_bytes(2, 4_000_000)).unwrap();
    r.backup(&[&a], &[]);
    r.ok(&["tenant", "set", "default", "--quota", "3M"]);
    // Stopped by the quota: the packs it stored are indexed, no snapshot.
    let out = r.run(&["backup", b.to_str().unwrap()], 1);
    assert!(stderr(&out).contains("quota"), "{}", stderr(&out));
    let s = r.json(&["stats"]);
    assert_eq!(s["unique_bytes"], 1_000_000, "{s}");
    assert!((s["dedup_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-9, "one snapshot of random data: {s}");
    assert!(s["unreferenced_blob_bytes"].as_u64().unwrap() > 0, "the stopped backup's chunks: {s}");
    // stored_bytes is what the store holds, unreferenced packs included.
    assert!(s["stored_bytes"].as_u64().unwrap() > 1_000_000 + s["unreferenced_blob_bytes"].as_u64().unwrap(), "{s}");
    r.ok(&["prune"]);
    let s = r.json(&["stats"]);
    assert_eq!(s["unreferenced_blob_bytes"], 0, "{s}");
}

#[test]
fn benchmarks_never_touch_the_repository_in_the_environment() {
    let r = TestRepo::small();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), random_bytes(9, 300_000)).unwrap();
    r.backup(&[&data], &[]);
    let before = r.objects();
    let tmp = r.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let d = data.to_str().unwrap();
    let kept = r.path("bench-repo");
    let runs: [&[&str]; 5] = [
        &["bench", "chunking", "--sizes", "16K,64K,256K", d],
        &["bench", "pipeline", "--runs", "1", "--threads", "1", "--sizes", "16K,64K,256K", d],
        &["bench", "synthetic-index", "--blobs", "1000"],
        &["bench", "lookups", "--count", "100", "--blobs", "1000"],
        &["bench", "synthetic-index", "--blobs", "1000", "--create-repo", kept.to_str().unwrap()],
    ];
    for args in runs {
        // STRONGROOM_REPO and the cache dir name the real repository.
        let out = r.command(args).env("TMPDIR", &tmp).output().unwrap();
        assert_code(&out, 0, &args.join(" "));
    }
    assert_eq!(r.objects(), before, "a benchmark changed the repository");
    r.ok(&["check", "--read-data"]);
    let before = r.objects();
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "temporary benchmark repositories left behind: {left:?}");
    // The kept one is a repository of its own; an existing one is refused.
    assert!(kept.join("config").exists());
    let repo = r.repo.to_str().unwrap();
    let out = r.run(&["bench", "synthetic-index", "--blobs", "10", "--create-repo", repo], 1);
    assert!(stderr(&out).contains("a benchmark writes only into a repository it creates"), "{}", stderr(&out));
    assert_eq!(r.objects(), before);
}

#[test]
fn limit_upload_and_download_parse_refuse_bad_values_and_keep_bytes_identical() {
    let r = TestRepo::small();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), random_bytes(11, 600_000)).unwrap();
    for bad in ["-1", "fast", "1.5", ""] {
        let out = r.run(&[&format!("--limit-upload={bad}"), "snapshots"], 2);
        assert!(stderr(&out).contains("--limit-upload"), "{}", stderr(&out));
        r.run(&[&format!("--limit-download={bad}"), "snapshots"], 2);
    }
    // Limits high enough not to slow the test: what matters here is that
    // every byte goes through the limiter (which `-vv` reports) and comes
    // back the same.
    let limits = ["-vv", "--limit-upload", "1000000", "--limit-download", "1000000"];
    let stored = |r: &crate::support::TestRepo| -> u64 {
        r.objects().iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
    };
    let paced = |out: &std::process::Output| -> (u64, u64) {
        let err = stderr(out);
        let line = err.lines().find(|l| l.contains("bandwidth limits paced")).unwrap_or_else(|| panic!("{err}"));
        let n = |after: &str| -> u64 {
            let rest = &line[line.find(after).unwrap() + after.len()..];
            rest.split(' ').next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
        };
        (n("paced "), n("up, "))
    };
    let (before, packs_before) = (stored(&r), r.objects_under("tenants/default/packs/").len());
    let mut args = limits.to_vec();
    args.extend(["backup", data.to_str().unwrap()]);
    let (up, _) = paced(&r.run(&args, 0));
    let grown = stored(&r) - before;
    assert!(r.objects_under("tenants/default/packs/").len() > packs_before);
    // Every object written was paced; beyond them only small records
    // (locks, rewritten state) that are gone or replaced.
    assert!(up >= grown && grown >= 600_000 && up <= grown + 64 * 1024, "paced {up} up, stored {grown}");
    let target = r.path("t");
    let mut args = limits.to_vec();
    args.extend(["restore", "latest", "--target", target.to_str().unwrap()]);
    let (_, down) = paced(&r.run(&args, 0));
    assert!(down >= 600_000 && down <= stored(&r), "paced {down} down of {} stored", stored(&r));
    let restored = crate::support::restored_at(&target, &data);
    assert_eq!(std::fs::read(restored.join("f")).unwrap(), std::fs::read(data.join("f")).unwrap());
    r.ok(&["--limit-upload", "0", "--limit-download", "0", "check", "--read-data"]);
}
