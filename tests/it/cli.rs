//! CLI contracts: exit codes, JSON fields, and that what is backed up comes back byte for byte with its metadata.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{
    assert_code, assert_trees_equal, build_all_kinds, random_bytes, restored_at, set_mtime, stderr, u64_field,
    walk_files, TestRepo, PASSWORD,
};

/// A small tree: a few text files and a subdirectory.
fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/inner")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(root.join("b.log"), b"bravo\n").unwrap();
    std::fs::write(root.join("sub/c.txt"), b"charlie\n").unwrap();
    std::fs::write(root.join("sub/inner/d.bin"), b"delta\n").unwrap();
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|e| e["path"].as_str().expect("path").to_string()).collect()
}

#[test]
fn init_refuses_an_existing_repository() {
    let r = TestRepo::new();
    let out = r.run(&["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"], 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn backup_and_snapshots_json_carry_the_documented_fields() {
    let r = TestRepo::new();
    let src = r.path("src");
    small_tree(&src);
    let b = r.backup(&[&src], &["--tag", "nightly"]);
    for f in [
        "snapshot_id",
        "files_new",
        "files_changed",
        "files_unmodified",
        "logical_bytes",
        "added_bytes",
        "duration_seconds",
    ] {
        assert!(!b[f].is_null(), "backup --json lacks {f}: {b}");
    }
    assert_eq!(u64_field(&b, "files_new"), 4);
    assert_eq!(u64_field(&b, "logical_bytes"), 6 + 6 + 8 + 6);
    assert!(b["duration_seconds"].is_f64());

    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    for f in ["id", "short_id", "time", "tenant", "host", "paths", "tags", "parent", "summary"] {
        assert!(s.get(f).is_some(), "snapshots --json lacks {f}: {s}");
    }
    assert_eq!(s["id"], b["snapshot_id"]);
    assert!(s["id"].as_str().unwrap().starts_with(s["short_id"].as_str().unwrap()));
    assert_eq!(s["tenant"], "default");
    assert_eq!(s["paths"], serde_json::json!([src.display().to_string()]));
    assert_eq!(s["tags"], serde_json::json!(["nightly"]));
    assert!(s["parent"].is_null());
    assert_eq!(u64_field(&s["summary"], "files_new"), 4);
    for f in ["files_changed", "files_unmodified", "logical_bytes", "added_bytes"] {
        assert!(s["summary"][f].is_u64(), "summary lacks {f}: {s}");
    }
}

#[test]
fn restore_verify_reproduces_every_file_kind_exactly() {
    // Small chunks and packs: many packs, and the sparse file's holes span
    // whole chunks of zeros.
    let r = TestRepo::small();
    let src = r.path("src");
    let built = build_all_kinds(&src);
    let b = r.backup(&[&src], &[]);
    assert_eq!(u64_field(&b, "files_new"), built.n_files);
    let target = r.path("target");
    let out = r.run(&["restore", "latest", "--verify", "--target", target.to_str().unwrap()], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    assert_trees_equal(&src, &restored_at(&target, &src));
}

#[test]
fn unchanged_files_are_not_reread_and_one_edit_counts_as_one_change() {
    let r = TestRepo::new();
    let src = r.path("src");
    let built = build_all_kinds(&src);
    let first = r.backup(&[&src], &[]);
    let second = r.backup(&[&src], &[]);
    assert_eq!(u64_field(&second, "files_unmodified"), built.n_files, "{second}");
    assert_eq!(u64_field(&second, "files_new"), 0);
    assert_eq!(u64_field(&second, "files_changed"), 0);
    assert!(u64_field(&second, "added_bytes") < 64 * 1024, "unchanged backup added {second}");
    assert_eq!(second["parent"], first["snapshot_id"]);

    std::fs::write(src.join("hello.txt"), b"hello again, changed\n").unwrap();
    let third = r.backup(&[&src], &[]);
    assert_eq!(u64_field(&third, "files_changed"), 1, "{third}");
    assert_eq!(u64_field(&third, "files_unmodified"), built.n_files - 1);
    let out = r.run(&["dump", "latest", src.join("hello.txt").to_str().unwrap()], 0);
    assert_eq!(out.stdout, b"hello again, changed\n");
}

/// A backup reuses the parent's tree of a directory whose entries are all
/// as the parent recorded them (no encoding, no hashing); any change below
/// a directory, of content, metadata, membership or exclusion, must give
/// it and every directory above it a new tree.
#[test]
fn unchanged_directories_keep_their_trees_and_any_change_below_makes_new_ones() {
    use std::os::unix::fs::MetadataExt;
    let r = TestRepo::new();
    let src = r.path("src");
    let _ = build_all_kinds(&src);
    // src and its six directories (the temporary directory and those above
    // it change as other tests run, and are not counted).
    let dirs = 7;
    let backup = |what: &str, extra: &[&str]| -> u64 {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        let out = r.command(&args).arg(&src).env("STRONGROOM_LOG", "strongroom=debug").output().unwrap();
        assert_code(&out, 0, what);
        let log = stderr(&out);
        let line = log.lines().find(|l| l.contains("directories unchanged")).unwrap_or_else(|| panic!("{what}: {log}"));
        let n = line.split(" of ").next().and_then(|h| h.rsplit(' ').next()).and_then(|n| n.parse().ok());
        let n: u64 = n.unwrap_or_else(|| panic!("{what}: {line}"));
        let target = r.path(&format!("restore-{}", what.replace(' ', "-")));
        r.run(&["restore", "latest", "--target", target.to_str().unwrap()], 0);
        n
    };
    let restored = |what: &str| restored_at(&r.path(&format!("restore-{}", what.replace(' ', "-"))), &src);
    assert_eq!(backup("first", &[]), 0);
    assert_eq!(backup("again", &[]), dirs, "an unchanged tree was not reused");
    assert_trees_equal(&src, &restored("again"));

    // Each change below sub/deeper/deepest gives it, sub/deeper, sub and
    // src new trees; the other three directories keep theirs.
    let leaf = src.join("sub/deeper/deepest/leaf.txt");
    // Metadata only (mode; the content and size stay).
    std::fs::set_permissions(&leaf, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(backup("chmod deep", &[]), dirs - 4);
    assert_trees_equal(&src, &restored("chmod deep"));
    // Content, with the old size and mtime put back (the ctime tells).
    let md = std::fs::metadata(&leaf).unwrap();
    std::fs::write(&leaf, b"A LEAF DEEP DOWN\n").unwrap();
    set_mtime(&leaf, md.mtime(), md.mtime_nsec());
    assert_eq!(backup("same size and mtime", &[]), dirs - 4);
    assert_eq!(
        std::fs::read(restored("same size and mtime").join("sub/deeper/deepest/leaf.txt")).unwrap(),
        b"A LEAF DEEP DOWN\n"
    );
    // A new file, then a removed one, deep down.
    let new = src.join("sub/deeper/deepest/new.txt");
    std::fs::write(&new, b"new\n").unwrap();
    assert_eq!(backup("added", &[]), dirs - 4);
    assert!(restored("added").join("sub/deeper/deepest/new.txt").is_file());
    std::fs::remove_file(&new).unwrap();
    assert_eq!(backup("removed", &[]), dirs - 4);
    assert!(!restored("removed").join("sub/deeper/deepest/new.txt").exists());
    // Excluded now, present before; then included again.
    assert_eq!(backup("excluded", &["--exclude", "leaf.txt"]), dirs - 4);
    assert!(!restored("excluded").join("sub/deeper/deepest/leaf.txt").exists());
    assert_eq!(backup("included", &[]), dirs - 4);
    assert_trees_equal(&src, &restored("included"));
    assert_eq!(backup("unchanged at last", &[]), dirs);
    r.ok(&["check", "--read-data"]);
}

#[test]
fn restore_of_a_subpath_puts_its_contents_directly_in_the_target() {
    let r = TestRepo::new();
    let src = r.path("src");
    let _ = build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let target = r.path("t");
    let spec = format!("latest:{}", src.join("sub").display());
    r.run(&["restore", &spec, "--target", target.to_str().unwrap()], 0);
    assert_trees_equal(&src.join("sub"), &target);
    assert!(target.join("deeper/deepest/leaf.txt").is_file());
}

#[test]
fn restore_include_and_exclude_select_paths() {
    let r = TestRepo::new();
    let src = r.path("src");
    small_tree(&src);
    r.backup(&[&src], &[]);

    let inc = r.path("inc");
    r.run(&["restore", "latest", "--target", inc.to_str().unwrap(), "--include", "*.txt"], 0);
    let base = restored_at(&inc, &src);
    assert!(base.join("a.txt").is_file());
    assert!(base.join("sub/c.txt").is_file());
    assert!(!base.join("b.log").exists());
    assert!(!base.join("sub/inner").exists(), "a directory with nothing included was created");

    let exc = r.path("exc");
    r.run(&["restore", "latest", "--target", exc.to_str().unwrap(), "--exclude", "sub", "--exclude", "*.log"], 0);
    let base = restored_at(&exc, &src);
    assert!(base.join("a.txt").is_file());
    assert!(!base.join("b.log").exists());
    assert!(!base.join("sub").exists());
}

#[test]
fn backup_exclude_leaves_matching_names_and_paths_out() {
    let r = TestRepo::new();
    let src = r.path("src");
    small_tree(&src);
    let sub = src.join("sub");
    r.backup(&[&src], &["--exclude", "*.log", "--exclude", sub.join("inner").to_str().unwrap()]);
    let listed = names(&r.json(&["ls", "latest", src.to_str().unwrap(), "--recursive"]));
    let s = |rel: &str| src.join(rel).display().to_string();
    assert!(listed.contains(&s("a.txt")));
    assert!(listed.contains(&s("sub/c.txt")));
    assert!(!listed.contains(&s("b.log")), "{listed:?}");
    assert!(!listed.iter().any(|p| p.contains("inner")), "{listed:?}");
}

#[test]
fn ls_lists_entries_recursively_long_and_as_json() {
    let r = TestRepo::new();
    let src = r.path("src");
    let _ = build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let top = r.json(&["ls", "latest", src.to_str().unwrap()]);
    let paths = names(&top);
    assert!(paths.contains(&src.join("hello.txt").display().to_string()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("leaf.txt")), "non-recursive ls went deep: {paths:?}");
    let entry = |v: &Value, name: &str| -> Value {
        v.as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or_else(|| panic!("no {name}"))
    };
    let secret = entry(&top, "secret.key");
    assert_eq!(secret["type"], "file");
    assert_eq!(secret["mode"], 0o600);
    assert_eq!(secret["size"], 17);
    let link = entry(&top, "link-rel");
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["link_target"], "hello.txt");
    assert_eq!(entry(&top, "fifo")["type"], "fifo");
    assert_eq!(entry(&top, "sub")["type"], "dir");

    let deep = names(&r.json(&["ls", "latest", src.to_str().unwrap(), "--recursive"]));
    assert!(deep.contains(&src.join("sub/deeper/deepest/leaf.txt").display().to_string()), "{deep:?}");

    let long = r.ok(&["ls", "latest", src.to_str().unwrap(), "--long"]);
    let line = long.lines().find(|l| l.ends_with("secret.key")).expect("secret.key listed");
    assert!(line.starts_with("-rw-------"), "{line}");
    assert!(long.lines().any(|l| l.contains("link-rel -> hello.txt")), "{long}");
}

#[test]
fn dump_writes_the_exact_file_bytes() {
    let r = TestRepo::new();
    let src = r.path("src");
    let built = build_all_kinds(&src);
    r.backup(&[&src], &[]);
    for rel in [built.big, built.sparse, "empty", "übersicht ☃/naïve café.txt"] {
        let out = r.run(&["dump", "latest", src.join(rel).to_str().unwrap()], 0);
        assert!(out.stdout == std::fs::read(src.join(rel)).unwrap(), "dump of {rel} differs");
    }
}

#[test]
fn tags_host_time_and_point_in_time_selection() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("january.txt"), b"jan").unwrap();
    r.backup(&[&src], &["--time", "2026-01-01T00:00:00Z", "--tag", "monthly", "--host", "alpha"]);
    std::fs::write(src.join("february.txt"), b"feb").unwrap();
    r.backup(&[&src], &["--time", "2026-02-01T00:00:00Z", "--tag", "weekly", "--host", "beta"]);

    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["time"], "2026-01-01T00:00:00Z");
    assert_eq!(snaps[0]["host"], "alpha");
    assert_eq!(snaps[1]["tags"], serde_json::json!(["weekly"]));
    let tagged = r.json(&["snapshots", "--tag", "monthly"]);
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["id"], snaps[0]["id"]);
    let by_host = r.json(&["snapshots", "--host", "beta"]);
    assert_eq!(by_host.as_array().unwrap().len(), 1);
    assert_eq!(by_host[0]["id"], snaps[1]["id"]);

    let dir = src.to_str().unwrap();
    // Two hosts' snapshots of the path are two groups: --host picks one.
    let out = r.run(&["ls", "latest", dir], 1);
    assert!(stderr(&out).contains("latest is ambiguous"), "{}", stderr(&out));
    let mid = names(&r.json(&["ls", "latest", dir, "--at", "2026-01-15T00:00:00Z", "--host", "alpha"]));
    assert_eq!(mid, vec![src.join("january.txt").display().to_string()]);
    let now = names(&r.json(&["ls", "latest", dir, "--host", "beta"]));
    assert_eq!(now.len(), 2);
    let out = r.run(&["ls", "latest", dir, "--at", "2026-01-15T00:00:00Z", "--host", "beta"], 1);
    assert!(stderr(&out).contains("no snapshot at or before"), "{}", stderr(&out));

    let out = r.run(&["ls", "latest", dir, "--at", "2025-01-01 00:00", "--host", "alpha"], 1);
    assert!(stderr(&out).contains("no snapshot at or before"), "{}", stderr(&out));
    let out = r.run(&["ls", "latest", dir, "--at", "next tuesday"], 1);
    assert!(stderr(&out).contains("invalid time"), "{}", stderr(&out));
}

#[test]
fn snapshot_ids_resolve_by_prefix_and_bad_prefixes_are_clear_errors() {
    let r = TestRepo::new();
    let src = r.path("src");
    small_tree(&src);
    let b = r.backup(&[&src], &[]);
    let id = b["snapshot_id"].as_str().unwrap().to_string();
    let file = src.join("a.txt");
    let file = file.to_str().unwrap();
    for reference in [&id[..], &id[..8], &id[..4]] {
        let out = r.run(&["dump", reference, file], 0);
        assert_eq!(out.stdout, b"alpha\n");
    }
    // A prefix of another first digit cannot match.
    let other = if id.starts_with('0') { "1111" } else { "0000" };
    let out = r.run(&["dump", other, file], 1);
    assert!(stderr(&out).contains("no snapshot matches"), "{}", stderr(&out));
    let out = r.run(&["dump", &id[..3], file], 1);
    assert!(stderr(&out).contains("4+ hex digits"), "{}", stderr(&out));
    let out = r.run(&["dump", "not-hex!", file], 1);
    assert!(stderr(&out).contains("invalid snapshot reference"), "{}", stderr(&out));
}

#[test]
fn ambiguous_snapshot_prefix_is_refused() {
    let r = TestRepo::new();
    let src = r.path("src");
    small_tree(&src);
    r.backup(&[&src], &[]);
    // Snapshot ids are hashes of records sealed with random nonces, so two
    // ids sharing four hex digits are made by sealing one record again and
    // again until a pair collides, then storing both objects.
    let (a, b) = colliding_snapshot_objects(&r);
    let prefix = &a[..4];
    assert_eq!(prefix, &b[..4]);
    let out = r.run(&["ls", prefix], 1);
    assert!(stderr(&out).contains("ambiguous"), "{}", stderr(&out));
    // A longer prefix that tells them apart still works.
    let n = (0..64).find(|&i| a.as_bytes()[i] != b.as_bytes()[i]).unwrap();
    r.run(&["ls", &a[..(n + 1).max(4)]], 0);
}

/// Stores two valid snapshot records whose ids share their first four hex
/// digits; returns both ids.
fn colliding_snapshot_objects(r: &TestRepo) -> (String, String) {
    use strongroom_core::codec::sealed::{self, SNAPSHOT_MAGIC};
    use strongroom_core::codec::snapshot as fsnap;
    use strongroom_core::repo::{OpenOptions, Repo, Secret};
    use strongroom_core::store::{Kind, Store};

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(r.repo.to_str().unwrap(), &Default::default(), false).unwrap();
        let tenant = strongroom_core::id::TenantName::new("default").unwrap();
        let opts =
            OpenOptions { cache_dir: r.path("lib-cache"), lock_wait: std::time::Duration::ZERO, memory_dir: None };
        let repo = Repo::open(store.clone(), tenant.clone(), &Secret::new(PASSWORD.into()), &opts).await.unwrap();
        let record = repo.snapshots().unwrap().remove(0).record;
        let payload = fsnap::encode(&record);
        let dk = repo.data_key().unwrap();
        let mut seen: std::collections::HashMap<String, (String, Vec<u8>)> = Default::default();
        loop {
            let obj = sealed::seal(SNAPSHOT_MAGIC, dk.generation, &dk.key, tenant.as_str(), &payload);
            let id = hex::encode(strongroom_core::crypto::object_hash(&obj));
            if let Some((other, other_obj)) = seen.get(&id[..4]) {
                for (i, o) in [(&id, &obj), (other, other_obj)] {
                    store.create(&Store::path(&tenant, Kind::Snapshots, i), o.clone().into()).await.unwrap();
                }
                return (id, other.clone());
            }
            seen.insert(id[..4].to_string(), (id, obj));
        }
    })
}

#[test]
fn stats_json_reports_sizes_and_dedup_of_identical_backups() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), crate::support::random_bytes(7, 2 << 20)).unwrap();
    r.backup(&[&src], &[]);
    r.backup(&[&src], &[]);
    let s = r.json(&["stats"]);
    for f in [
        "snapshots",
        "logical_bytes",
        "unique_bytes",
        "stored_bytes",
        "chunks",
        "dedup_ratio",
        "compression_ratio",
        "total_ratio",
    ] {
        assert!(!s[f].is_null(), "stats --json lacks {f}: {s}");
    }
    assert_eq!(u64_field(&s, "snapshots"), 2);
    assert_eq!(u64_field(&s, "logical_bytes"), 2 * (2 << 20));
    assert_eq!(u64_field(&s, "unique_bytes"), 2 << 20);
    assert!(s["dedup_ratio"].as_f64().unwrap() > 1.9, "{s}");
    assert!(u64_field(&s, "stored_bytes") > 2 << 20, "random data cannot shrink: {s}");
}

#[test]
fn malformed_arguments_exit_2() {
    let r = TestRepo::new();
    for args in [
        &["backup", "--no-such-flag", "/tmp"][..],
        &["frobnicate"],
        &["backup"],
        &["init", "--chunk-sizes", "1,2"],
        &["check", "--read-data-subset", "150%"],
        &["restore", "latest"],
        &["--lock-wait", "soon", "snapshots"],
    ] {
        let out = r.cmd(args);
        assert_code(&out, 2, &format!("{args:?}"));
        assert!(!stderr(&out).is_empty(), "{args:?}: no message");
    }
}

#[test]
fn nonexistent_backup_path_fails_naming_it_and_saves_nothing() {
    let r = TestRepo::new();
    let missing = r.path("no-such-dir");
    let out = r.run(&["backup", missing.to_str().unwrap()], 1);
    assert!(stderr(&out).contains(missing.to_str().unwrap()), "{}", stderr(&out));
    assert!(r.snapshots().is_empty());
}

/// As root every file mode is readable, so the unreadable source is
/// another process's `/proc/PID/mem`: opening or reading it fails.
#[test]
fn unreadable_source_file_exits_3_naming_it_and_saves_the_rest() {
    let r = TestRepo::new();
    let src = r.path("src");
    small_tree(&src);
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let mem = format!("/proc/{}/mem", sleeper.id());
    let out = r.cmd(&["backup", src.to_str().unwrap(), &mem]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_code(&out, 3, "backup of an unreadable file");
    assert!(stderr(&out).contains(&mem), "{}", stderr(&out));
    // Reported once, not by a log line and again by the summary.
    assert_eq!(stderr(&out).matches(mem.as_str()).count(), 1, "{}", stderr(&out));
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "the readable files must still be saved");
    let t = r.path("t");
    r.run(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    assert_eq!(std::fs::read(restored_at(&t, &src).join("sub/c.txt")).unwrap(), b"charlie\n");
}

/// A file whose size the kernel reports as 0 (procfs) is read to its
/// end, not to the size it was stat'ed at (small files are read by the
/// sealing workers, with one read of the stat'ed size plus one byte).
#[test]
fn a_file_stated_at_zero_bytes_is_read_to_its_end() {
    let r = TestRepo::new();
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let status = format!("/proc/{}/status", sleeper.id());
    assert_eq!(std::fs::metadata(&status).unwrap().len(), 0);
    let out = r.cmd(&["backup", &status]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_code(&out, 0, "backup of a procfs file");
    let t = r.path("t");
    r.run(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    let restored = std::fs::read_to_string(restored_at(&t, Path::new(&status))).unwrap();
    assert!(restored.contains("State:") && restored.contains("VmRSS"), "{restored}");
}

/// Owner, group and mode of every entry below `root`, by relative path.
fn owners_and_modes(root: &Path) -> std::collections::BTreeMap<PathBuf, (u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    walk_files(root, &mut |p| {
        let md = std::fs::symlink_metadata(p).unwrap();
        out.insert(p.strip_prefix(root).unwrap().to_path_buf(), (md.uid(), md.gid(), md.mode() & 0o7777));
    });
    out
}

#[test]
fn restored_owners_modes_and_lengths_do_not_depend_on_how_files_are_made() {
    // Files of one chunk are made with their final mode, files whose
    // owner is the restoring process are not chowned, and files whose last
    // write reaches their end are not truncated: check every case against
    // one that is not, into an empty target and into a setgid one.
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let mut trailing_zeros = random_bytes(7, 10 * 4096);
    trailing_zeros.extend(std::iter::repeat_n(0u8, 3 * 4096));
    // (name, content, mode, owner and group when run as root)
    type Made<'a> = (&'a str, Vec<u8>, u32, Option<(u32, u32)>);
    let files: Vec<Made> = vec![
        ("one-chunk-0640", b"small".to_vec(), 0o640, None),
        ("one-chunk-0444", b"read only".to_vec(), 0o444, None),
        ("one-chunk-0664", b"group writable".to_vec(), 0o664, None),
        ("many-chunks-0444", random_bytes(1, 600_000), 0o444, None),
        ("many-chunks-0755", random_bytes(2, 600_000), 0o755, None),
        ("sub/trailing-zero-blocks", trailing_zeros, 0o644, None),
        ("sub/empty-0600", Vec::new(), 0o600, None),
        ("other-owner", b"theirs".to_vec(), 0o644, Some((4321, 8765))),
        ("other-group", random_bytes(3, 300_000), 0o640, Some((0, 42))),
    ];
    for (name, data, mode, owner) in &files {
        let p = src.join(name);
        std::fs::write(&p, data).unwrap();
        if let (true, Some((u, g))) = (root, owner) {
            nix::unistd::chown(&p, Some((*u).into()), Some((*g).into())).unwrap();
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    r.backup(&[&src], &[]);
    let fresh = r.path("fresh");
    r.run(&["restore", "latest", "--target", fresh.to_str().unwrap()], 0);
    assert_trees_equal(&src, &restored_at(&fresh, &src));
    assert_eq!(owners_and_modes(&src), owners_and_modes(&restored_at(&fresh, &src)));
    if root {
        // A setgid target would give new files its group: the snapshot's wins.
        let setgid = r.path("setgid");
        std::fs::create_dir_all(&setgid).unwrap();
        nix::unistd::chown(&setgid, None, Some(42.into())).unwrap();
        std::fs::set_permissions(&setgid, std::fs::Permissions::from_mode(0o2775)).unwrap();
        r.run(&["restore", "latest", "--target", setgid.to_str().unwrap()], 0);
        assert_trees_equal(&src, &restored_at(&setgid, &src));
        assert_eq!(owners_and_modes(&src), owners_and_modes(&restored_at(&setgid, &src)));
    }
}

#[test]
fn restored_file_modes_survive_a_umask_free_round_trip() {
    // Modes are set explicitly, not inherited from the umask of restore.
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, mode) in [("setuid", 0o4755), ("world", 0o666), ("none", 0o000)] {
        let p = src.join(name);
        std::fs::write(&p, name).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    r.backup(&[&src], &[]);
    let t = r.path("t");
    r.run(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    assert_trees_equal(&src, &restored_at(&t, &src));
}
