//! Snapshot groups: `latest` and `--at` within the group a command names,
//! safety snapshots apart, retention per group (explicit rules replacing
//! the tenant's plan), forget by id and by job, `snapshots --group-by`,
//! `tag`, and the agent's job in its snapshots, forget and drill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::support::{assert_code, stderr, TestRepo, PASSWORD};

/// Backs up `data` from standard input as the stream `name`.
fn backup_stream(r: &TestRepo, name: &str, data: &[u8], extra: &[&str]) -> String {
    let mut args = vec!["--json", "backup", "--stdin", "--stdin-name", name];
    args.extend_from_slice(extra);
    let mut child =
        r.command(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0, "backup --stdin");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshot_id"].as_str().unwrap().to_string()
}

/// A tenant with two sources: a directory `src` (backed up at the times
/// given) and the stream `acme.sql` (at 10:00 and 12:00 on 2026-11-20),
/// the directory last. Returns the repository and the directory.
fn two_sources(dir_times: &[&str]) -> (TestRepo, PathBuf) {
    let r = TestRepo::new();
    backup_stream(&r, "acme.sql", b"dump one\n", &["--host", "h", "--time", "2026-11-20T10:00:00Z"]);
    backup_stream(&r, "acme.sql", b"dump two\n", &["--host", "h", "--time", "2026-11-20T12:00:00Z"]);
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, t) in dir_times.iter().enumerate() {
        std::fs::write(src.join("file.txt"), format!("version {i}\n")).unwrap();
        r.backup(&[&src], &["--host", "h", "--time", t]);
    }
    (r, src)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn dump_latest_picks_the_newest_snapshot_holding_the_file_not_the_newest_of_the_tenant() {
    let (r, _) = two_sources(&["2026-11-21T12:00:00Z"]);
    assert_eq!(r.ok(&["dump", "latest", "/acme.sql"]), "dump two\n");
    assert_eq!(r.ok(&["dump", "latest", "/acme.sql", "--at", "2026-11-20T11:00:00Z"]), "dump one\n");
    // Before any snapshot of the stream.
    let out = r.run(&["dump", "latest", "/acme.sql", "--at", "2026-11-20T09:00:00Z"], 1);
    assert!(stderr(&out).contains("no snapshot at or before"), "{}", stderr(&out));
}

#[test]
fn restore_latest_over_two_groups_names_them_and_a_path_or_filter_picks_one() {
    let (r, src) = two_sources(&["2026-11-21T12:00:00Z"]);
    let target = r.path("t");
    let t = target.to_str().unwrap();
    let out = r.run(&["restore", "latest", "--target", t], 1);
    let err = stderr(&out);
    assert!(err.contains("latest is ambiguous") && err.contains("2 groups"), "{err}");
    assert!(err.contains("paths /acme.sql") && err.contains(&format!("paths {}", src.display())), "{err}");
    assert!(err.contains("--path") && err.lines().count() == 1, "{err}");
    let s = src.to_str().unwrap();
    r.ok(&["restore", "latest", "--target", t, "--path", s]);
    assert_eq!(std::fs::read(crate::support::restored_at(&target, &src).join("file.txt")).unwrap(), b"version 0\n");
    let sub = format!("latest:{s}");
    r.ok(&["restore", &sub, "--target", r.path("t2").to_str().unwrap()]);
    assert_eq!(std::fs::read(r.path("t2").join("file.txt")).unwrap(), b"version 0\n");
    // An id needs no filter.
    let newest = ids(&r.json(&["snapshots", "--path", "/acme.sql"]))[1].clone();
    r.ok(&["restore", &newest[..8], "--target", r.path("t3").to_str().unwrap()]);
}

#[test]
fn a_safety_snapshot_never_becomes_latest() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file.txt"), b"backed up\n").unwrap();
    let first = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    let target = r.path("t");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("local.txt"), b"local\n").unwrap();
    let sub = format!("latest:{}", src.display());
    r.ok(&["restore", &sub, "--target", target.to_str().unwrap(), "--safety-snapshot"]);
    assert_eq!(r.snapshots().len(), 2);
    // latest is still the source's snapshot, in every command.
    let v = r.json(&["ls", "-R", "latest"]);
    assert!(v.to_string().contains("file.txt") && !v.to_string().contains("local.txt"), "{v}");
    let again = r.path("again");
    r.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert!(crate::support::restored_at(&again, &src).join("file.txt").exists());
    // Asked for by tag, it is.
    let held = r.json(&["hold", "add", "latest", "--tag", "safety", "--reason", "keep"]);
    assert_ne!(held["snapshot"], first.as_str(), "{held}");
    // And it is its own group under forget.
    let v = r.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(v.as_array().unwrap().iter().all(|d| d["action"] == "keep"), "{v}");
}

#[test]
fn explicit_rules_replace_the_tenant_plan_unless_plus_plan() {
    let days = ["2026-11-21T12:00:00Z", "2026-11-22T12:00:00Z", "2026-11-23T12:00:00Z"];
    let (r, _) = two_sources(&days);
    r.ok(&["tenant", "set", "default", "--plan", "basic"]);
    let text = r.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(text.contains("replacing the tenant's plan basic"), "{text}");
    let v = r.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(v.as_array().unwrap().iter().all(|d| d["replaced_plan"] == "basic"), "{v}");
    let kept = |v: &Value| v.as_array().unwrap().iter().filter(|d| d["action"] == "keep").count();
    assert_eq!(kept(&v), 2, "one per group: {v}");
    // With --plus-plan, the plan's dailies stay too.
    let v = r.json(&["forget", "--keep-last", "1", "--plus-plan", "--dry-run"]);
    assert_eq!(kept(&v), 5, "{v}");
    assert!(v[0].get("replaced_plan").is_none(), "{v}");
    r.json(&["forget", "--keep-last", "1"]);
    assert_eq!(r.snapshots().len(), 2);
    assert_eq!(r.ok(&["dump", "latest", "/acme.sql"]), "dump two\n");
}

#[test]
fn forget_by_id_removes_exactly_those_and_a_hold_refuses() {
    let (r, _) = two_sources(&["2026-11-21T12:00:00Z"]);
    let all = ids(&Value::Array(r.snapshots()));
    let v = r.json(&["forget", &all[0][..8], &all[2]]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let left = ids(&Value::Array(r.snapshots()));
    assert_eq!(left, vec![all[1].clone()]);
    r.ok(&["hold", "add", &all[1], "--reason", "case 9"]);
    let out = r.run(&["forget", &all[1]], 1);
    assert!(stderr(&out).contains("case 9"), "{}", stderr(&out));
    assert_eq!(r.snapshots().len(), 1);
    let out = r.run(&["forget", &all[1], "--keep-last", "1"], 1);
    assert!(stderr(&out).contains("removes the snapshots named"), "{}", stderr(&out));
}

#[test]
fn forget_with_a_job_filter_touches_only_that_jobs_snapshots() {
    let r = TestRepo::new();
    for (i, t) in ["2026-11-20T12:00:00Z", "2026-11-21T12:00:00Z", "2026-11-22T12:00:00Z"].iter().enumerate() {
        backup_stream(&r, "a.sql", format!("{i}").as_bytes(), &["--job", "db", "--time", t]);
        backup_stream(&r, "a.sql", format!("{i}").as_bytes(), &["--time", t]);
    }
    r.json(&["forget", "--keep-last", "1", "--job", "db"]);
    let snaps = r.snapshots();
    let by_job = snaps.iter().filter(|s| s["job"] == "db").count();
    assert_eq!((by_job, snaps.len()), (1, 4), "{snaps:?}");
    // Grouped by job, the manual ones are their own group.
    let v = r.json(&["forget", "--keep-last", "1", "--group-by", "host,paths,job", "--dry-run"]);
    assert_eq!(v.as_array().unwrap().iter().filter(|d| d["action"] == "remove").count(), 2, "{v}");
}

#[test]
fn snapshots_group_by_host_paths_json_shape() {
    let (r, src) = two_sources(&["2026-11-21T12:00:00Z"]);
    let v = r.json(&["snapshots", "--group-by", "host,paths"]);
    let groups = v.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    for g in groups {
        assert_eq!(g["group_key"]["hostname"], "h", "{v}");
        assert!(g["group_key"]["tags"].is_null(), "{v}");
    }
    assert_eq!(groups[0]["group_key"]["paths"], serde_json::json!(["/acme.sql"]));
    assert_eq!(groups[0]["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(groups[1]["group_key"]["paths"], serde_json::json!([src.to_str().unwrap()]));
    // Without --group-by the JSON is the flat list as before.
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 3);
    assert_eq!(r.json(&["snapshots", "--host", "other"]).as_array().unwrap().len(), 0);
}

#[test]
fn tag_add_remove_set_rewrites_the_record_and_the_hold_follows() {
    let r = TestRepo::new();
    let old = backup_stream(&r, "x", b"data\n", &["--tag", "a"]);
    r.ok(&["hold", "add", &old, "--reason", "legal"]);
    let v = r.json(&["tag", "--add", "b,c", &old[..8]]);
    let new = v["changed"][0][1].as_str().unwrap().to_string();
    assert_eq!(v["changed"][0][0], old.as_str(), "{v}");
    assert_ne!(new, old);
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "the old record is gone: {snaps:?}");
    assert_eq!(snaps[0]["id"], new.as_str());
    assert_eq!(snaps[0]["tags"], serde_json::json!(["a", "b", "c"]));
    let holds = r.json(&["hold", "list"]);
    assert!(holds.to_string().contains(&new) && !holds.to_string().contains(&old), "{holds}");
    let out = r.run(&["restore", &old, "--target", r.path("t").to_str().unwrap()], 1);
    assert!(stderr(&out).contains("no snapshot matches"), "{}", stderr(&out));

    let v = r.json(&["tag", "--remove", "a", "--tag", "b"]);
    let newer = v["changed"][0][1].as_str().unwrap().to_string();
    assert_eq!(r.snapshots()[0]["tags"], serde_json::json!(["b", "c"]));
    let v = r.json(&["tag", "--set", "z", &newer]);
    assert_eq!(r.snapshots()[0]["tags"], serde_json::json!(["z"]), "{v}");
    let v = r.json(&["tag", "--add", "z", "latest"]);
    assert_eq!(v["changed"].as_array().unwrap().len(), 0, "nothing to change: {v}");
    assert_eq!(r.ok(&["dump", "latest", "/x"]), "data\n");
    r.ok(&["check", "--read-data"]);
    let audit = r.json(&["audit", "export"]);
    assert!(audit.to_string().contains("\"tag\""), "{audit}");
    let out = r.run(&["tag", "--set", "a", "--add", "b", "latest"], 2);
    assert!(!stderr(&out).is_empty());
}

#[test]
fn a_tag_killed_between_writing_the_new_record_and_deleting_the_old_loses_nothing_and_a_rerun_finishes() {
    let r = TestRepo::new();
    let old = backup_stream(&r, "x", b"data\n", &["--tag", "a"]);
    r.ok(&["hold", "add", &old, "--reason", "legal"]);
    let pause_dir = r.path("pause");
    std::fs::create_dir_all(&pause_dir).unwrap();
    let mut child = r
        .command(&["tag", "--add", "b", &old])
        .env("STRONGROOM_TEST_PAUSE", format!("tag-before-delete:{old}"))
        .env("STRONGROOM_TEST_PAUSE_DIR", &pause_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !pause_dir.join("reached").exists() {
        assert!(child.try_wait().unwrap().is_none(), "tag ended before the pause");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Both records are there, the old one still held: nothing was lost.
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let holds = r.json(&["hold", "list"]).to_string();
    assert!(holds.contains(&old), "{holds}");
    r.ok(&["check", "--read-data"]);

    // The same command again reuses the record written before the kill,
    // moves the hold and removes the old record.
    let v = r.json(&["tag", "--add", "b", &old]);
    let new = v["changed"][0][1].as_str().unwrap().to_string();
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], new.as_str());
    assert_eq!(snaps[0]["tags"], serde_json::json!(["a", "b"]));
    let holds = r.json(&["hold", "list"]).to_string();
    assert!(holds.contains(&new) && !holds.contains(&old), "{holds}");
    assert_eq!(r.ok(&["dump", "latest", "/x"]), "data\n");
    r.ok(&["check", "--read-data"]);
}

/// An agent job named `files` backing up `src` with the basic plan.
fn files_job(r: &TestRepo, src: &Path) -> PathBuf {
    let pw = r.path("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let text = format!(
        "[[job]]\nname = \"files\"\ntenant = \"default\"\nrepository = {:?}\npassword_file = {:?}\n\
         schedule = \"0 0 * * *\"\npaths = [{:?}]\nplan = \"basic\"\n",
        r.repo.to_str().unwrap(),
        pw.to_str().unwrap(),
        src.to_str().unwrap()
    );
    let cfg = r.path("agent.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn the_agents_plan_and_drill_stay_within_the_jobs_own_snapshots() {
    let r = TestRepo::new();
    // Snapshots of the same path the job backs up, made by hand (two on
    // one day, newer than the job's): applied to them, the basic plan
    // would remove the first.
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"by hand\n").unwrap();
    for t in ["2099-01-01T12:00:00Z", "2099-01-01T13:00:00Z"] {
        r.backup(&[&src], &["--time", t]);
    }
    backup_stream(&r, "other.sql", b"other\n", &[]);
    let cfg = files_job(&r, &src);
    let cfg = cfg.to_str().unwrap();
    std::fs::write(src.join("f"), b"by the agent\n").unwrap();
    for _ in 0..2 {
        let v = r.json(&["agent", "run", "--config", cfg, "files"]);
        assert_eq!(v["ok"], true, "{v}");
    }
    let snaps = r.snapshots();
    let n_manual = snaps.iter().filter(|s| s["job"].is_null() && s["paths"][0] == src.to_str().unwrap()).count();
    assert_eq!(n_manual, 2, "the job's plan removed a snapshot it did not make: {snaps:?}");
    assert!(snaps.iter().any(|s| s["job"] == "files"), "{snaps:?}");
    // The drill restores the job's own latest, though a stream is newer.
    backup_stream(&r, "newest.sql", b"newest\n", &[]);
    let v = r.json(&["agent", "run", "--config", cfg, "files", "--task", "drill"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn latest_with_a_path_that_two_hosts_back_up_names_both_and_host_picks() {
    let r = TestRepo::new();
    let src = r.path("etc");
    std::fs::create_dir_all(src.join("nginx")).unwrap();
    for (host, t) in [("web1", "2026-11-20T10:00:00Z"), ("web2", "2026-11-20T12:00:00Z")] {
        std::fs::write(src.join("nginx/site.conf"), format!("{host}\n")).unwrap();
        r.backup(&[&src], &["--host", host, "--time", t]);
    }
    let sub = format!("latest:{}", src.join("nginx").display());
    let out = r.run(&["restore", &sub, "--target", r.path("t").to_str().unwrap()], 1);
    let err = stderr(&out);
    assert!(err.contains("latest is ambiguous") && err.contains("host web1") && err.contains("host web2"), "{err}");
    assert!(!r.path("t").join("site.conf").exists(), "another host's file was restored");
    r.ok(&["restore", &sub, "--target", r.path("t").to_str().unwrap(), "--host", "web1"]);
    assert_eq!(std::fs::read(r.path("t").join("site.conf")).unwrap(), b"web1\n");
}

#[test]
fn a_job_whose_paths_shrank_still_drills_and_takes_its_parent_from_its_own_paths() {
    let r = TestRepo::new();
    let (src, etc) = (r.path("src"), r.path("etc"));
    for d in [&src, &etc] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), b"data\n").unwrap();
    }
    let cfg = files_job(&r, &src);
    let one = std::fs::read_to_string(&cfg).unwrap();
    let both = one.replace(&format!("paths = [{:?}]", src.to_str().unwrap()), &format!("paths = [{src:?}, {etc:?}]"));
    assert_ne!(one, both);
    std::fs::write(&cfg, &both).unwrap();
    let c = cfg.to_str().unwrap();
    assert_eq!(r.json(&["agent", "run", "--config", c, "files"])["ok"], true);
    std::fs::write(&cfg, &one).unwrap();
    assert_eq!(r.json(&["agent", "run", "--config", c, "files"])["ok"], true);
    let v = r.json(&["agent", "run", "--config", c, "files", "--task", "drill"]);
    assert_eq!(v["ok"], true, "{v}");
    // The same pick for `backup --parent latest`, though the older group
    // holds the path too.
    let s = src.to_str().unwrap();
    let v = r.json(&["backup", s, "--parent", "latest"]);
    let own = r.json(&["snapshots", "--path", s]);
    let paths_of = |id: &str| own.as_array().unwrap().iter().find(|x| x["id"] == id).map(|x| x["paths"].clone());
    assert_eq!(paths_of(v["parent"].as_str().unwrap()), Some(serde_json::json!([s])), "{v}");
}

#[test]
fn skip_if_unchanged_and_the_parent_stay_within_the_job() {
    let r = TestRepo::new();
    // Not below the shared temporary directory: the snapshot records the
    // directories above the source, and other tests change that one.
    let stable = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = stable.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data\n").unwrap();
    let s = src.to_str().unwrap();
    let backup = |job: &str| r.json(&["backup", s, "--skip-if-unchanged", "--job", job]);
    let a1 = backup("a");
    let b1 = backup("b");
    assert_eq!(b1["skipped"], false, "job b wrote nothing because job a's snapshot is the same: {b1}");
    let a2 = backup("a");
    assert_eq!(a2["skipped"], true, "{a2}");
    assert_eq!(a2["parent"], a1["snapshot_id"], "job a's parent is its own snapshot, not b's newer one");
    assert_eq!(ids(&r.json(&["snapshots", "--job", "b"])), vec![b1["snapshot_id"].as_str().unwrap().to_string()]);
}

#[test]
fn tag_without_ids_leaves_safety_snapshots_alone_unless_asked_for() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file.txt"), b"backed up\n").unwrap();
    r.backup(&[&src], &[]);
    let target = r.path("t");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("local.txt"), b"local\n").unwrap();
    let sub = format!("latest:{}", src.display());
    r.ok(&["restore", &sub, "--target", target.to_str().unwrap(), "--safety-snapshot"]);
    let safety_tags = |r: &TestRepo| -> Vec<Value> {
        r.snapshots()
            .into_iter()
            .filter(|s| s["tags"].to_string().contains("\"safety\""))
            .map(|s| s["tags"].clone())
            .collect()
    };
    assert_eq!(safety_tags(&r).len(), 1);
    let v = r.json(&["tag", "--set", "x"]);
    assert_eq!(v["changed"].as_array().unwrap().len(), 1, "only the source's snapshot: {v}");
    assert_eq!(safety_tags(&r).len(), 1, "a safety snapshot left its group: {:?}", r.snapshots());
    let v = r.json(&["tag", "--add", "y", "--tag", "safety"]);
    assert_eq!(v["changed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(safety_tags(&r)[0], serde_json::json!(["safety", "y"]));
}
