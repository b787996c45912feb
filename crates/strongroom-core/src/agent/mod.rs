//! `strongroom agent`: runs scheduled jobs and serves metrics.
//!
//! Each step of a job (backup, forget, stats, prune, check, verify-restore)
//! runs as a child process of the same binary with `--json`, so a job that
//! crashes cannot take the agent down, each child takes its own tenant
//! lock and writes its own audit entries, and the agent learns results
//! from the children's JSON. Children run in their own process group: a
//! Ctrl-C on the agent's terminal does not reach them; on shutdown the
//! agent lets them finish for a grace period, then sends them SIGINT (a
//! backup then commits nothing), and SIGKILL if they still do not exit.
//!
//! Jobs run concurrently up to a limit; a job never runs twice at once (a
//! schedule that fires while the job is still running is skipped and
//! logged).

pub mod config;
pub mod http;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::metrics::{Labels, Metrics};
pub use config::{Config, Job, PasswordSource, Schedule};

/// The run records in the state directory, one JSON line per run.
pub const RUNS_FILE: &str = "runs.jsonl";
/// Size past which `runs.jsonl` is renamed to `runs.jsonl.1`.
const RUNS_FILE_MAX: u64 = 16 << 20;

/// What a run of a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Back up the sources, then apply the retention plan.
    Backup,
    /// `prune`.
    Prune,
    /// `check --read-data-subset`.
    Check,
    /// `verify-restore latest` (a restore drill).
    Drill,
}

impl Task {
    /// The name used in logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Backup => "backup",
            Task::Prune => "prune",
            Task::Check => "check",
            Task::Drill => "drill",
        }
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "backup" => Ok(Task::Backup),
            "prune" => Ok(Task::Prune),
            "check" => Ok(Task::Check),
            "drill" => Ok(Task::Drill),
            _ => Err(format!("unknown task {s:?}: use backup, prune, check or drill")),
        }
    }
}

/// The record of one run (logged, appended to `runs.jsonl` in the state
/// directory, printed by `agent run --json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Job name.
    pub job: String,
    /// Tenant.
    pub tenant: String,
    /// What ran.
    pub task: Task,
    /// Start time (RFC 3339, UTC).
    pub start: String,
    /// Wall time.
    pub duration_seconds: f64,
    /// True when every step succeeded (a backup that saved its snapshot
    /// but could not read some entries counts as a success, exit code 3).
    pub ok: bool,
    /// The exit code the run maps to (0, 3, or the failing step's).
    pub exit_code: u8,
    /// Snapshots the run created.
    pub snapshots: Vec<String>,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// Runs job steps as child processes and records their results.
pub struct Runner {
    /// The strongroom binary to run (normally `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Where results go.
    pub metrics: Arc<Metrics>,
    /// `--cache-dir` for the children (else they inherit the environment).
    pub cache_dir: Option<PathBuf>,
    /// `--lock-wait` for the children.
    pub lock_wait: Duration,
    /// Where `runs.jsonl` goes, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// Rewritten after each run, if set.
    pub metrics_textfile: Option<PathBuf>,
    /// Process ids of running children (for shutdown).
    children: Mutex<HashSet<u32>>,
}

struct Step {
    code: Option<i32>,
    json: Option<Value>,
    stderr: String,
}

impl Runner {
    /// A runner with no children yet.
    pub fn new(exe: PathBuf, metrics: Arc<Metrics>, cache_dir: Option<PathBuf>, lock_wait: Duration) -> Self {
        Self {
            exe,
            metrics,
            cache_dir,
            lock_wait,
            state_dir: None,
            metrics_textfile: None,
            children: Mutex::new(HashSet::new()),
        }
    }

    /// Runs one task of a job to its end and records it.
    pub async fn run(&self, job: &Job, task: Task) -> RunRecord {
        let start = jiff::Timestamp::now();
        let t0 = Instant::now();
        tracing::info!(job = %job.name, tenant = %job.tenant.as_str(), task = task.as_str(), "run started");
        let mut rec = RunRecord {
            job: job.name.clone(),
            tenant: job.tenant.as_str().to_string(),
            task,
            start: start.to_string(),
            duration_seconds: 0.0,
            ok: false,
            exit_code: 1,
            snapshots: Vec::new(),
            error: None,
        };
        let result = match task {
            Task::Backup => self.backup(job, &mut rec).await,
            Task::Prune => self.simple(job, vec!["prune".into()]).await.map(|_| 0),
            Task::Check => self.check(job).await,
            Task::Drill => self.drill(job).await,
        };
        match result {
            Ok(code) => {
                rec.ok = true;
                rec.exit_code = code;
            }
            Err((code, e)) => {
                rec.exit_code = code;
                rec.error = Some(e);
            }
        }
        rec.duration_seconds = t0.elapsed().as_secs_f64();
        if rec.ok {
            tracing::info!(job = %rec.job, task = task.as_str(), seconds = rec.duration_seconds, "run succeeded");
        } else {
            tracing::warn!(
                job = %rec.job,
                task = task.as_str(),
                seconds = rec.duration_seconds,
                "run failed: {}",
                rec.error.as_deref().unwrap_or("")
            );
        }
        self.save(&rec);
        rec
    }

    /// Sends `signal` to the process group of every running child: the
    /// child and what it started (a stream command such as pg_dump).
    pub fn signal_children(&self, signal: rustix::process::Signal) {
        let pids: Vec<u32> = self.children.lock().map(|c| c.iter().copied().collect()).unwrap_or_default();
        for pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process_group(pid, signal);
                }
            }
        }
    }

    /// Sets the last-success timestamps from `runs.jsonl` (so they survive
    /// a restart of the agent), for the jobs of `config`.
    pub fn restore_timestamps(&self, config: &Config) {
        let Some(dir) = &self.state_dir else { return };
        let Ok(text) = std::fs::read_to_string(dir.join(RUNS_FILE)) else { return };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            let (Some(job), Some(task), Some(true)) = (v["job"].as_str(), v["task"].as_str(), v["ok"].as_bool()) else {
                continue;
            };
            let Some(job) = config.jobs.iter().find(|j| j.name == job) else { continue };
            let Some(start) = v["start"].as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else { continue };
            let end = start.as_millisecond() as f64 / 1000.0 + v["duration_seconds"].as_f64().unwrap_or(0.0);
            let name = match task {
                "backup" => "last_success_timestamp_seconds",
                "check" => "last_check_success_timestamp_seconds",
                "drill" => "last_drill_success_timestamp_seconds",
                _ => continue,
            };
            self.metrics.set_gauge(name, &Labels::new(job.tenant.as_str(), &job.name), end);
        }
    }

    fn save(&self, rec: &RunRecord) {
        if let Some(dir) = &self.state_dir {
            let line = serde_json::to_string(rec).unwrap_or_default() + "\n";
            let path = dir.join(RUNS_FILE);
            // Keep the record bounded: the current file and one older one.
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > RUNS_FILE_MAX) {
                let _ = std::fs::rename(&path, dir.join(format!("{RUNS_FILE}.1")));
            }
            // Run records name jobs and carry their errors: private, as the cache.
            let res = crate::private::create_dir_all(dir).and_then(|_| {
                let mut f = crate::private::file_options().create(true).append(true).open(&path)?;
                f.write_all(line.as_bytes())
            });
            if let Err(e) = res {
                tracing::warn!("cannot append to {}: {e}", dir.join("runs.jsonl").display());
            }
        }
        if let Some(path) = &self.metrics_textfile {
            if let Err(e) = self.metrics.write_textfile(path) {
                tracing::warn!("cannot write metrics to {}: {e}", path.display());
            }
        }
    }

    async fn backup(&self, job: &Job, rec: &mut RunRecord) -> Result<u8, (u8, String)> {
        let labels = Labels::new(job.tenant.as_str(), &job.name);
        // The job's name in each snapshot: its group for `latest`, drills
        // and retention (`--job=` so that no name is taken for an option).
        let mut common: Vec<OsString> = vec!["backup".into(), format!("--job={}", job.name).into()];
        for t in &job.tags {
            common.push("--tag".into());
            common.push(t.into());
        }
        if let Some(h) = &job.host {
            common.push("--host".into());
            common.push(h.into());
        }
        let mut runs = Vec::new();
        if !job.paths.is_empty() {
            let mut a = common.clone();
            for e in &job.exclude {
                a.push("--exclude".into());
                a.push(e.into());
            }
            // Absolute (checked by the config), so never taken for options.
            a.extend(job.paths.iter().map(|p| p.as_os_str().to_owned()));
            runs.push(a);
        }
        if !job.command.is_empty() {
            let mut a = common.clone();
            a.extend(["--stdin-from-command".into(), "--stdin-name".into(), job.stdin_name.clone().into()]);
            a.push("--".into());
            a.extend(job.command.iter().map(OsString::from));
            runs.push(a);
        }
        let (mut duration, mut size, mut added, mut partial) = (0.0, 0, 0, false);
        for args in runs {
            let v = match self.simple(job, args).await {
                Ok(v) => v,
                Err(e) => {
                    self.metrics.backup_failed(&labels);
                    return Err(e);
                }
            };
            partial |= v.1;
            let v = v.0;
            if let Some(id) = v["snapshot_id"].as_str() {
                rec.snapshots.push(id.to_string());
            }
            duration += v["duration_seconds"].as_f64().unwrap_or(0.0);
            size += v["logical_bytes"].as_u64().unwrap_or(0);
            added += v["added_bytes"].as_u64().unwrap_or(0);
        }
        self.metrics.backup_ok(&labels, duration, size, added);
        if let Some(plan) = job.plan {
            // The plan applies to this job's snapshots only, group by group.
            let forget = ["forget".into(), "--plan".into(), plan.name().into(), format!("--job={}", job.name)];
            self.simple(job, forget.into_iter().map(OsString::from).collect()).await?;
        }
        match self.simple(job, vec!["stats".into()]).await {
            Ok((v, _)) => self.metrics.repository(
                &labels,
                v["stored_bytes"].as_u64().unwrap_or(0),
                v["dedup_ratio"].as_f64().unwrap_or(0.0),
            ),
            Err((_, e)) => tracing::warn!(job = %job.name, "stats after backup failed: {e}"),
        }
        Ok(if partial { 3 } else { 0 })
    }

    async fn check(&self, job: &Job) -> Result<u8, (u8, String)> {
        let labels = Labels::new(job.tenant.as_str(), &job.name);
        let mut args: Vec<OsString> = vec!["check".into()];
        if job.check_subset > 0.0 {
            args.push("--read-data-subset".into());
            args.push(format!("{}%", job.check_subset).into());
        }
        let r = self.simple(job, args).await;
        self.metrics.check(&labels, r.is_ok());
        r.map(|_| 0)
    }

    async fn drill(&self, job: &Job) -> Result<u8, (u8, String)> {
        let labels = Labels::new(job.tenant.as_str(), &job.name);
        // The job's own latest snapshot of each of its sources (a job
        // with paths and a command makes two groups).
        let mut sources: Vec<Vec<OsString>> = Vec::new();
        if !job.paths.is_empty() {
            sources.push(job.paths.iter().flat_map(|p| ["--path".into(), p.as_os_str().to_owned()]).collect());
        }
        if !job.command.is_empty() {
            sources.push(vec!["--path".into(), format!("/{}", job.stdin_name).into()]);
        }
        let mut duration = Some(0.0);
        let mut r = Ok(());
        for filter in sources {
            let mut args: Vec<OsString> =
                vec!["verify-restore".into(), "latest".into(), format!("--job={}", job.name).into()];
            args.extend(filter);
            match self.simple(job, args).await {
                Ok((v, _)) => duration = duration.zip(v["duration_seconds"].as_f64()).map(|(a, b)| a + b),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        self.metrics.drill(&labels, r.is_ok(), duration.filter(|_| r.is_ok()));
        r.map(|()| 0)
    }

    /// Runs one step; Ok((json, partial)) on exit 0 or 3 (a backup saved
    /// with unreadable entries), else the exit code and an error message.
    async fn simple(&self, job: &Job, args: Vec<OsString>) -> Result<(Value, bool), (u8, String)> {
        let what = args.first().map(|a| a.to_string_lossy().to_string()).unwrap_or_default();
        let step = self.step(job, args).await.map_err(|e| (1, format!("{what}: {e}")))?;
        match step.code {
            Some(0) | Some(3) => Ok((step.json.unwrap_or(Value::Null), step.code == Some(3))),
            code => {
                let tail: Vec<&str> = step.stderr.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
                let how = match code {
                    Some(c) => format!("exit code {c}"),
                    None => "killed by a signal".to_string(),
                };
                let code = code.and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1);
                Err((code, format!("{what} failed ({how}): {}", tail.join(" | "))))
            }
        }
    }

    async fn step(&self, job: &Job, args: Vec<OsString>) -> Result<Step, String> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--repo").arg(&job.repository).arg("--tenant").arg(job.tenant.as_str());
        cmd.arg("--lock-wait").arg(format!("{}s", self.lock_wait.as_secs()));
        cmd.arg("--json");
        if let Some(d) = &self.cache_dir {
            cmd.arg("--cache-dir").arg(d);
        }
        if let Some(e) = &job.s3_endpoint {
            cmd.arg("--s3-endpoint").arg(e);
        }
        for v in ["STRONGROOM_PASSWORD", "STRONGROOM_PASSWORD_FILE", "STRONGROOM_REPO", "STRONGROOM_TENANT"] {
            cmd.env_remove(v);
        }
        match &job.password {
            PasswordSource::File(f) => {
                cmd.arg("--password-file").arg(f);
            }
            PasswordSource::Env(var) => {
                let p = std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
                cmd.env("STRONGROOM_PASSWORD", p);
            }
        }
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        let pid = child.id();
        if let (Some(pid), Ok(mut c)) = (pid, self.children.lock()) {
            c.insert(pid);
        }
        let out = child.wait_with_output().await;
        if let (Some(pid), Ok(mut c)) = (pid, self.children.lock()) {
            c.remove(&pid);
        }
        let out = out.map_err(|e| format!("waiting for {}: {e}", self.exe.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        for line in stderr.lines() {
            tracing::debug!(job = %job.name, "child: {line}");
        }
        Ok(Step { code: out.status.code(), json: serde_json::from_slice(&out.stdout).ok(), stderr })
    }
}

/// How the scheduler stops.
pub struct ServeOptions {
    /// Jobs at the same time at most.
    pub max_concurrent: usize,
    /// Time running jobs get to finish after shutdown is asked for.
    pub grace: Duration,
    /// Time after SIGINT before SIGKILL.
    pub kill_after: Duration,
}

/// What the scheduler did before it stopped.
#[derive(Debug, Default, Serialize)]
pub struct ServeSummary {
    /// Runs started.
    pub runs: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Firings skipped because the job was still running.
    pub skipped: u64,
    /// Runs that had to be interrupted at shutdown.
    pub interrupted: u64,
}

struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Waits up to `limit` for the running tasks; false if some still run.
async fn finish(tasks: &mut tokio::task::JoinSet<bool>, summary: &mut ServeSummary, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(r)) => {
                if !matches!(r, Ok(true)) {
                    summary.failed += 1;
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    true
}

/// Runs every job on its schedules until `shutdown` turns true, then
/// lets running jobs finish (see the module docs).
pub async fn serve(
    runner: Arc<Runner>,
    config: &Config,
    opts: &ServeOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> ServeSummary {
    let mut scheduler = Scheduler::new(runner, config, opts);
    tracing::info!(jobs = config.jobs.len(), "agent started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        scheduler.start_due();
        scheduler.reap();
        let wait = scheduler.until_next();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    scheduler.stop(opts).await
}

/// One schedule of one job.
struct Entry {
    job: Arc<Job>,
    task: Task,
    schedule: Schedule,
    next: Option<jiff::Timestamp>,
}

/// The state of [`serve`]: the schedules, which jobs run, the running
/// tasks, and the counts so far.
struct Scheduler {
    runner: Arc<Runner>,
    entries: Vec<Entry>,
    busy: HashMap<String, Arc<AtomicBool>>,
    permits: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<bool>,
    summary: ServeSummary,
}

impl Scheduler {
    /// Every schedule of every job, each due next after now.
    fn new(runner: Arc<Runner>, config: &Config, opts: &ServeOptions) -> Self {
        let now = jiff::Timestamp::now();
        let mut entries = Vec::new();
        for job in &config.jobs {
            let job = Arc::new(job.clone());
            let mut add = |task, s: &Option<Schedule>| {
                if let Some(s) = s {
                    let next = s.next_after(now).map(|z| z.timestamp());
                    entries.push(Entry { job: job.clone(), task, schedule: s.clone(), next });
                }
            };
            add(Task::Backup, &Some(job.schedule.clone()));
            add(Task::Prune, &job.prune_schedule);
            add(Task::Check, &job.check_schedule);
            add(Task::Drill, &job.drill_schedule);
        }
        let busy = config.jobs.iter().map(|j| (j.name.clone(), Arc::new(AtomicBool::new(false)))).collect();
        Scheduler {
            runner,
            entries,
            busy,
            permits: Arc::new(tokio::sync::Semaphore::new(opts.max_concurrent.max(1))),
            tasks: tokio::task::JoinSet::new(),
            summary: ServeSummary::default(),
        }
    }

    /// Starts each schedule that is due, unless its job is still running.
    fn start_due(&mut self) {
        let now = jiff::Timestamp::now();
        for e in self.entries.iter_mut() {
            let Some(next) = e.next else { continue };
            if next > now {
                continue;
            }
            // Computed from now: firings missed while the agent was busy or
            // asleep are not made up.
            e.next = e.schedule.next_after(now).map(|z| z.timestamp());
            let flag = self.busy.get(&e.job.name).cloned().unwrap_or_default();
            if flag.swap(true, Ordering::SeqCst) {
                tracing::warn!(job = %e.job.name, task = e.task.as_str(), "due, but the job is still running: skipped");
                self.summary.skipped += 1;
                continue;
            }
            self.summary.runs += 1;
            let (runner, job, task, permits) = (self.runner.clone(), e.job.clone(), e.task, self.permits.clone());
            self.tasks.spawn(async move {
                // Clears the job's busy flag however the run ends.
                let _busy = Busy(flag);
                let _permit = permits.acquire_owned().await;
                runner.run(&job, task).await.ok
            });
        }
    }

    /// Counts the runs that have ended in failure.
    fn reap(&mut self) {
        while let Some(r) = self.tasks.try_join_next() {
            if !matches!(r, Ok(true)) {
                self.summary.failed += 1;
            }
        }
    }

    /// Time until the next schedule is due, a minute at most.
    fn until_next(&self) -> Duration {
        let now = jiff::Timestamp::now();
        self.entries
            .iter()
            .filter_map(|e| e.next)
            .min()
            .and_then(|n| Duration::try_from(n.duration_since(now)).ok())
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60))
    }

    /// Lets running jobs finish within the grace period, then interrupts
    /// them, then kills them.
    async fn stop(mut self, opts: &ServeOptions) -> ServeSummary {
        let (tasks, summary) = (&mut self.tasks, &mut self.summary);
        let running = tasks.len();
        if running > 0 {
            tracing::info!(running, grace_seconds = opts.grace.as_secs_f64(), "stopping: waiting for running jobs");
        }
        if !finish(tasks, summary, opts.grace).await {
            tracing::warn!(running = tasks.len(), "grace period over: interrupting running jobs");
            summary.interrupted = tasks.len() as u64;
            self.runner.signal_children(rustix::process::Signal::INT);
            if !finish(tasks, summary, opts.kill_after).await {
                tracing::warn!("jobs did not stop after SIGINT: killing them");
                self.runner.signal_children(rustix::process::Signal::KILL);
                finish(tasks, summary, Duration::from_secs(10)).await;
            }
        }
        tracing::info!(runs = summary.runs, failed = summary.failed, skipped = summary.skipped, "agent stopped");
        self.summary
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_survive_a_restart_through_the_run_records() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::parse(
            "[[job]]\nname = \"j\"\ntenant = \"t\"\nrepository = \"/r\"\npassword_env = \"P\"\n\
             schedule = \"0 * * * *\"\npaths = [\"/srv\"]\n",
        )
        .unwrap();
        let mut r = Runner::new("strongroom".into(), Arc::new(Metrics::new()), None, Duration::from_secs(1));
        r.state_dir = Some(dir.path().to_path_buf());
        let rec = |task, ok| RunRecord {
            job: "j".into(),
            tenant: "t".into(),
            task,
            start: "2026-01-01T00:00:00Z".into(),
            duration_seconds: 2.5,
            ok,
            exit_code: 0,
            snapshots: vec![],
            error: None,
        };
        r.save(&rec(Task::Backup, true));
        r.save(&rec(Task::Check, false));
        r.save(&RunRecord { job: "gone".into(), ..rec(Task::Drill, true) });
        r.restore_timestamps(&config);
        let text = r.metrics.encode();
        assert!(text.contains(r#"last_success_timestamp_seconds{tenant="t",job="j"} 1767225602.5"#), "{text}");
        assert!(!text.contains("last_check_success_timestamp_seconds{"), "{text}");
        assert!(!text.contains("gone"), "{text}");
    }
}
