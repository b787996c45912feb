//! Health of a tenant for `strongroom health`: is the newest snapshot
//! recent enough, and did the last check find no damage?
//!
//! `check` leaves a small record of its outcome ([`CheckRecord`]) next to
//! the tenant's catalog in the local cache directory
//! (`<cache>/<repository id>/<tenant>/last-check.json`); `health` reads it
//! there. The record is local: a check run on another machine, or with
//! another cache directory, is not seen (`last_check` is then null, which
//! is not a failure). [`evaluate`] is pure.
//!
//! Per job of an agent configuration, [`evaluate_job`] judges the agent's
//! run records: a job whose last run of any task failed is unhealthy even
//! when another job of the same tenant succeeded (its snapshots keep the
//! tenant's newest snapshot fresh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::RunRecord;
use crate::check::{CheckSummary, ReadData};
use crate::id::TenantName;
use crate::snapshot::Snapshot;

/// The outcome of the last `check` of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// When the check ended (RFC 3339, UTC).
    pub time: String,
    /// True when it found no damage.
    pub ok: bool,
    /// Number of errors it reported.
    pub errors: usize,
    /// `none`, `all` or the subset, e.g. `5%`.
    pub read_data: String,
}

impl CheckRecord {
    /// The record of a check that just ended.
    pub fn new(s: &CheckSummary, read_data: ReadData) -> Self {
        Self {
            time: jiff::Timestamp::now().to_string(),
            ok: s.ok,
            errors: s.errors.len(),
            read_data: match read_data {
                ReadData::None => "none".into(),
                ReadData::All => "all".into(),
                ReadData::Subset(p) => format!("{p}%"),
            },
        }
    }
}

/// Where the check record of a tenant lives.
pub fn check_record_path(cache_dir: &Path, repository_id: &str, tenant: &TenantName) -> PathBuf {
    cache_dir.join(repository_id).join(tenant.as_str()).join("last-check.json")
}

/// Writes a check record atomically (temporary file, then rename).
pub fn save_check_record(path: &Path, rec: &CheckRecord) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".last-check.{}.tmp", std::process::id()));
    crate::private::write(&tmp, &serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// Reads a check record; `None` when there is none. An unreadable record
/// counts as a failed check, so damage is never hidden by a broken file.
pub fn load_check_record(path: &Path) -> Option<CheckRecord> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(unreadable(format!("{}: {e}", path.display()))),
        Ok(b) => Some(serde_json::from_slice(&b).unwrap_or_else(|e| unreadable(format!("{}: {e}", path.display())))),
    }
}

fn unreadable(why: String) -> CheckRecord {
    tracing::warn!("check record unreadable: {why}");
    CheckRecord { time: String::new(), ok: false, errors: 1, read_data: "unknown (record unreadable)".into() }
}

/// The health of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantHealth {
    /// Tenant.
    pub tenant: String,
    /// Repository URL (or what the caller names it by).
    pub repository: String,
    /// True when nothing is wrong.
    pub ok: bool,
    /// Number of snapshots.
    pub snapshots: u64,
    /// Id of the newest snapshot.
    pub newest_snapshot: Option<String>,
    /// Its time (RFC 3339, UTC).
    pub newest_time: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<f64>,
    /// The last check's record, if this machine has one.
    pub last_check: Option<CheckRecord>,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
}

/// Judges a tenant from its snapshots and last check record.
pub fn evaluate(
    tenant: &str,
    repository: &str,
    snapshots: &[Snapshot],
    last_check: Option<CheckRecord>,
    max_age: Duration,
    now_ns: i64,
) -> TenantHealth {
    let newest = snapshots.iter().max_by_key(|s| s.time_ns);
    let mut problems = Vec::new();
    let age_seconds = newest.map(|s| (now_ns.saturating_sub(s.time_ns)) as f64 / 1e9);
    match (newest, age_seconds) {
        (Some(s), Some(age)) if age > max_age.as_secs_f64() => problems.push(format!(
            "newest snapshot {} ({}) is {} old, more than {}",
            s.id.short(),
            s.record.time,
            human(age),
            human(max_age.as_secs_f64())
        )),
        (None, _) => problems.push("no snapshots".to_string()),
        _ => {}
    }
    if let Some(c) = &last_check {
        if !c.ok {
            problems.push(format!("last check ({}) failed with {} error(s)", c.time, c.errors));
        }
    }
    TenantHealth {
        tenant: tenant.to_string(),
        repository: repository.to_string(),
        ok: problems.is_empty(),
        snapshots: snapshots.len() as u64,
        newest_snapshot: newest.map(|s| s.id.to_hex()),
        newest_time: newest.map(|s| s.record.time.clone()),
        age_seconds,
        last_check,
        problems,
    }
}

/// The last runs of one task of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskRuns {
    /// Start of the last run that succeeded (RFC 3339, UTC).
    pub last_success: Option<String>,
    /// Start of the last run that failed.
    pub last_failure: Option<String>,
    /// What the last failure was.
    pub last_error: Option<String>,
    /// Whether the last run succeeded.
    pub last_ok: bool,
}

/// The health of one agent job, from its run records.
#[derive(Debug, Clone, Serialize)]
pub struct JobHealth {
    /// Job name.
    pub job: String,
    /// Tenant.
    pub tenant: String,
    /// Repository URL.
    pub repository: String,
    /// True when nothing is wrong.
    pub ok: bool,
    /// Per task that has run (`backup`, `prune`, `check`, `drill`).
    pub tasks: BTreeMap<String, TaskRuns>,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
}

/// Judges a job from the run records (oldest first; other jobs' records
/// are ignored): unhealthy when the last run of a task failed, or when
/// its last successful backup is older than `max_age`. A job with no
/// record has not run yet, which is not a problem in itself. Runs
/// interrupted at shutdown (exit code 130) are left out: an agent
/// restart during a run says nothing about the job.
pub fn evaluate_job(
    job: &str,
    tenant: &str,
    repository: &str,
    runs: &[RunRecord],
    max_age: Duration,
    now_ns: i64,
) -> JobHealth {
    let mut tasks: BTreeMap<String, TaskRuns> = BTreeMap::new();
    // A run interrupted at shutdown neither failed nor succeeded.
    for r in runs.iter().filter(|r| r.job == job && !r.interrupted()) {
        let t = tasks.entry(r.task.as_str().to_string()).or_default();
        t.last_ok = r.ok;
        if r.ok {
            t.last_success = Some(r.start.clone());
        } else {
            t.last_failure = Some(r.start.clone());
            t.last_error = r.error.clone();
        }
    }
    let mut problems = Vec::new();
    for (task, t) in &tasks {
        if !t.last_ok {
            let when = t.last_failure.as_deref().unwrap_or("");
            problems.push(format!("last {task} ({when}) failed: {}", t.last_error.as_deref().unwrap_or("")));
        }
    }
    let last_backup = tasks.get("backup").and_then(|t| t.last_success.as_deref());
    if let Some(start) = last_backup.and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        let age = now_ns.saturating_sub(start.as_nanosecond() as i64) as f64 / 1e9;
        if age > max_age.as_secs_f64() {
            problems.push(format!(
                "last successful backup ({start}) is {} old, more than {}",
                human(age),
                human(max_age.as_secs_f64())
            ));
        }
    }
    JobHealth {
        job: job.to_string(),
        tenant: tenant.to_string(),
        repository: repository.to_string(),
        ok: problems.is_empty(),
        tasks,
        problems,
    }
}

/// `3d 4h`, `5m 2s`: two units at most.
fn human(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stale_and_failed() {
        let hour = 3_600_000_000_000i64;
        let now = 100 * hour;
        let h = evaluate("t", "r", &[], None, Duration::from_secs(3600), now);
        assert!(!h.ok);
        assert_eq!(h.problems, vec!["no snapshots".to_string()]);
        let failed = CheckRecord { time: "x".into(), ok: false, errors: 2, read_data: "none".into() };
        let h = evaluate("t", "r", &[], Some(failed), Duration::from_secs(3600), now);
        assert_eq!(h.problems.len(), 2);
        assert_eq!(human(90_000.0), "1d 1h");
        assert_eq!(human(61.0), "1m 1s");
    }

    #[test]
    fn a_job_whose_last_backup_failed_is_unhealthy() {
        let rec = |job: &str, task, start: &str, ok| RunRecord {
            job: job.into(),
            tenant: "t".into(),
            task,
            start: start.into(),
            duration_seconds: 1.0,
            ok,
            exit_code: if ok { 0 } else { 1 },
            snapshots: vec![],
            error: (!ok).then(|| "backup failed (exit code 1)".to_string()),
        };
        use crate::agent::Task;
        let runs = vec![
            rec("db", Task::Backup, "2026-01-01T00:00:00Z", true),
            rec("db", Task::Backup, "2026-01-01T06:00:00Z", false),
            rec("files", Task::Backup, "2026-01-01T06:00:00Z", true),
            rec("db", Task::Check, "2026-01-01T07:00:00Z", true),
        ];
        let now = "2026-01-01T08:00:00Z".parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64;
        let day = Duration::from_secs(86400);
        let db = evaluate_job("db", "t", "r", &runs, day, now);
        assert!(!db.ok);
        assert_eq!(db.problems, vec!["last backup (2026-01-01T06:00:00Z) failed: backup failed (exit code 1)"]);
        assert_eq!(db.tasks["backup"].last_success.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(db.tasks["backup"].last_failure.as_deref(), Some("2026-01-01T06:00:00Z"));
        assert!(db.tasks["check"].last_ok);
        assert!(evaluate_job("files", "t", "r", &runs, day, now).ok);
        assert!(evaluate_job("new", "t", "r", &runs, day, now).ok);
        // An interrupted run after a success leaves the job healthy, and
        // after a failure leaves it failed.
        let mut more = runs.clone();
        let interrupted = |job: &str| RunRecord {
            exit_code: crate::agent::EXIT_INTERRUPTED,
            error: Some("interrupted at shutdown".into()),
            ..rec(job, Task::Backup, "2026-01-01T07:30:00Z", false)
        };
        more.extend([interrupted("files"), interrupted("db")]);
        let files = evaluate_job("files", "t", "r", &more, day, now);
        assert!(files.ok, "{:?}", files.problems);
        assert_eq!(files.tasks["backup"].last_failure, None);
        assert_eq!(evaluate_job("db", "t", "r", &more, day, now).problems, db.problems);
        let stale = evaluate_job("files", "t", "r", &runs, Duration::from_secs(3600), now);
        assert!(stale.problems[0].contains("is 2h 0m old"), "{:?}", stale.problems);
    }

    #[test]
    fn records_round_trip_and_broken_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a").join("last-check.json");
        assert_eq!(load_check_record(&p), None);
        let r = CheckRecord { time: "2026-01-01T00:00:00Z".into(), ok: true, errors: 0, read_data: "5%".into() };
        save_check_record(&p, &r).unwrap();
        assert_eq!(load_check_record(&p), Some(r));
        std::fs::write(&p, b"{").unwrap();
        assert!(!load_check_record(&p).unwrap().ok);
    }
}
