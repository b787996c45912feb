//! `forget`: the retention plan the CLI shows is the one it executes, and
//! it refuses to run without a policy.
//!
//! Snapshot times are at 10:00Z and 12:00Z, so that each lands on the same
//! calendar day in any local zone from UTC-10 to UTC+11 (the CLI uses the
//! machine's zone).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{stderr, TestRepo};

/// The instants backed up, oldest first.
const TIMES: [&str; 5] = [
    "2026-11-20T12:00:00Z",
    "2026-11-21T10:00:00Z",
    "2026-11-21T12:00:00Z",
    "2026-11-22T10:00:00Z",
    "2026-11-22T12:00:00Z",
];

/// A repository with one snapshot of a small directory at each of [`TIMES`]
/// (host `h`); returns it with the snapshot ids in the same order.
fn repo_with_snapshots() -> (TestRepo, Vec<String>) {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for (i, t) in TIMES.iter().enumerate() {
        std::fs::write(src.join("file.txt"), format!("version {i}\n")).unwrap();
        let b = r.backup(&[&src], &["--host", "h", "--time", t]);
        ids.push(b["snapshot_id"].as_str().unwrap().to_string());
    }
    (r, ids)
}

/// `forget ARGS --json` as an array of decisions.
fn forget_json(r: &TestRepo, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["forget"];
    all.extend_from_slice(args);
    match r.json(&all) {
        Value::Array(v) => v,
        other => panic!("forget --json is not an array: {other}"),
    }
}

/// The decisions as (id, action, reasons).
fn decisions(v: &[Value]) -> Vec<(String, String, Vec<String>)> {
    v.iter()
        .map(|d| {
            let reasons = d["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (d["id"].as_str().unwrap().to_string(), d["action"].as_str().unwrap().to_string(), reasons)
        })
        .collect()
}

fn snapshot_ids(r: &TestRepo) -> BTreeSet<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn dry_run_keep_daily_lists_each_snapshot_with_its_reason() {
    let (r, ids) = repo_with_snapshots();
    let v = forget_json(&r, &["--keep-daily", "2", "--dry-run"]);
    for d in &v {
        for f in ["id", "short_id", "time", "host", "paths", "tags", "action", "reasons"] {
            assert!(d.get(f).is_some(), "forget --json lacks {f}: {d}");
        }
        assert_eq!(d["host"], "h");
        assert!(d["id"].as_str().unwrap().starts_with(d["short_id"].as_str().unwrap()));
    }
    let keep = |i: usize, day: &str| (ids[i].clone(), "keep".to_string(), vec![format!("daily {day}")]);
    let remove = |i: usize| (ids[i].clone(), "remove".to_string(), Vec::<String>::new());
    assert_eq!(
        decisions(&v),
        vec![keep(4, "2026-11-22"), remove(3), keep(2, "2026-11-21"), remove(1), remove(0)],
        "newest first: the newest snapshot of each of the last two days"
    );
    assert_eq!(snapshot_ids(&r).len(), 5, "--dry-run removed something");

    let text = r.ok(&["forget", "--keep-daily", "2", "--dry-run"]);
    assert!(text.contains("would remove 3 of 5 snapshots"), "{text}");
    assert!(text.contains("daily 2026-11-22"), "{text}");
}

#[test]
fn forget_removes_exactly_the_planned_snapshots() {
    let (r, ids) = repo_with_snapshots();
    let plan = decisions(&forget_json(&r, &["--keep-daily", "2", "--keep-last", "2", "--dry-run"]));
    let planned_keep: BTreeSet<String> = plan.iter().filter(|d| d.1 == "keep").map(|d| d.0.clone()).collect();
    assert_eq!(planned_keep, [&ids[4], &ids[3], &ids[2]].into_iter().cloned().collect());

    let done = decisions(&forget_json(&r, &["--keep-daily", "2", "--keep-last", "2"]));
    assert_eq!(done, plan, "the executed plan differs from the dry run");
    assert_eq!(snapshot_ids(&r), planned_keep);

    // Nothing more to do the second time, and a fresh catalog agrees.
    let again = decisions(&forget_json(&r, &["--keep-daily", "2", "--keep-last", "2"]));
    assert!(again.iter().all(|d| d.1 == "keep"), "{again:?}");
    let fresh = r.copy();
    assert_eq!(snapshot_ids(&fresh), planned_keep);
}

#[test]
fn plan_basic_keeps_daily_weekly_and_monthly() {
    let (r, ids) = repo_with_snapshots();
    let d = decisions(&forget_json(&r, &["--plan", "basic"]));
    let removed: BTreeSet<&str> = d.iter().filter(|d| d.1 == "remove").map(|d| d.0.as_str()).collect();
    assert_eq!(removed, [ids[1].as_str(), ids[3].as_str()].into_iter().collect());
    let newest = d.iter().find(|d| d.0 == ids[4]).unwrap();
    assert!(newest.2.contains(&"daily 2026-11-22".to_string()), "{newest:?}");
    assert!(newest.2.iter().any(|r| r.starts_with("weekly 2026-W47")), "{newest:?}");
    assert!(newest.2.iter().any(|r| r.starts_with("monthly 2026-11")), "{newest:?}");
    assert_eq!(snapshot_ids(&r).len(), 3);
}

#[test]
fn no_policy_is_refused() {
    let (r, _) = repo_with_snapshots();
    for args in [&["forget"][..], &["forget", "--keep-last", "0", "--keep-daily", "0"], &["forget", "--dry-run"]] {
        let out = r.run(args, 1);
        assert!(stderr(&out).contains("no retention policy"), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(snapshot_ids(&r).len(), 5, "a refused forget removed something");
}

/// The protocol as the library offers it: under the caller's exclusive
/// lock the plan reaches the caller before anything changes, a caller
/// that refuses the plan leaves every snapshot in place, and a snapshot
/// put under hold survives a policy that would otherwise remove it.
#[test]
fn library_forget_shows_the_plan_first_keeps_held_snapshots_and_deletes_nothing_when_refused() {
    use strongroom_core::forget::{self, ForgetOptions};
    use strongroom_core::lock::{self, LockKind};
    use strongroom_core::retention::Policy;

    let (r, ids) = repo_with_snapshots();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let open = || r.open_library(&rt);
    let opts = ForgetOptions {
        what: forget::ForgetWhat::Policy(Policy { keep_last: Some(1), ..Default::default() }),
        filter: Default::default(),
        group_by: Default::default(),
        now_ns: jiff::Timestamp::now().as_nanosecond() as i64,
        tz: jiff::tz::TimeZone::UTC,
        quarantine: strongroom_core::tombstone::DEFAULT_QUARANTINE,
    };
    let all = snapshot_ids(&r);
    assert_eq!(all.len(), TIMES.len());

    // Under a shared lock the protocol refuses to start.
    let repo = open();
    let shared = rt.block_on(lock::acquire(repo.scope(), LockKind::Shared, std::time::Duration::ZERO, "test")).unwrap();
    let wrong = forget::run(&repo, &shared, &opts, None, |_| panic!("planned under a shared lock"));
    assert!(matches!(wrong, Err(strongroom_core::Error::Internal(_))), "{:?}", wrong.err());
    rt.block_on(shared.release()).unwrap();
    assert_eq!(snapshot_ids(&r), all, "a forget under a shared lock deleted snapshots");

    // Refused after seeing it: the plan removed all but the newest, and
    // nothing was deleted.
    let guard =
        rt.block_on(lock::acquire(repo.scope(), LockKind::Exclusive, std::time::Duration::ZERO, "test")).unwrap();
    let mut planned_removals = 0;
    let refused = forget::run(&repo, &guard, &opts, None, |p| {
        planned_removals = p.plan.remove_ids().len();
        Err(strongroom_core::Error::Interrupted)
    });
    assert!(matches!(refused, Err(strongroom_core::Error::Interrupted)), "{:?}", refused.err());
    assert_eq!(planned_removals, TIMES.len() - 1);
    assert_eq!(snapshot_ids(&r), all, "a refused plan deleted snapshots");
    rt.block_on(guard.release()).unwrap();
    drop(repo);

    // The oldest snapshot under hold: kept, the others but the newest go.
    r.ok(&["hold", "add", &ids[0], "--reason", "legal"]);
    let repo = open();
    let guard =
        rt.block_on(lock::acquire(repo.scope(), LockKind::Exclusive, std::time::Duration::ZERO, "test")).unwrap();
    let done = forget::run(&repo, &guard, &opts, None, |_| Ok(())).unwrap();
    rt.block_on(guard.release()).unwrap();
    assert_eq!(done.removed.len(), TIMES.len() - 2);
    assert!(done.prune.is_none());
    let left = snapshot_ids(&r);
    assert_eq!(left, [ids[0].clone(), ids[TIMES.len() - 1].clone()].into_iter().collect(), "held and newest kept");
}
