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
//! The runner unwraps the job's key slot once per run and hands the key
//! to each step on its standard input (`--key-fd 0`), so that a run pays
//! one key derivation, not one per step.
//!
//! Jobs run concurrently up to a limit; a job never runs twice at once,
//! and a task never gets lost: one that comes due while its job is busy
//! runs as soon as the job is free, and one missed while the agent was
//! down runs at start-up (see [`scheduler`]).
//!
//! Around a task the runner runs the job's hooks ([`hooks`]) and, when the
//! task's state changes (first failure, recovery), sends notifications
//! ([`notify`]).

pub mod config;
mod hooks;
pub mod http;
mod notify;
mod scheduler;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keyslots::Handoff;
use crate::metrics::{Labels, Metrics};
use crate::store::Store;
pub use config::{Config, Hooks, Job, Notify, PasswordSource, Schedule};
pub use scheduler::{serve, ServeOptions, ServeSummary};

/// The run records in the state directory, one JSON line per run.
pub const RUNS_FILE: &str = "runs.jsonl";
/// Size past which `runs.jsonl` is renamed to `runs.jsonl.1`.
const RUNS_FILE_MAX: u64 = 16 << 20;

/// Variables a job step does not inherit from the agent: the agent's
/// repository, tenant and secrets (each step gets its job's), and secrets
/// that would open the tenant another way (an escrow secret file beats a
/// password).
const STEP_REMOVED_VARS: [&str; 6] = [
    "STRONGROOM_PASSWORD",
    "STRONGROOM_PASSWORD_FILE",
    "STRONGROOM_ESCROW_SECRET_FILE",
    "STRONGROOM_NEW_PASSWORD",
    "STRONGROOM_REPO",
    "STRONGROOM_TENANT",
];
/// The most JSON a job step may print (a longer output is an error).
const STEP_JSON_MAX: usize = 16 << 20;

/// What a run of a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// The exit code of a run interrupted at shutdown (as of a command
/// interrupted by Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The record of one run (logged, appended to `runs.jsonl` in the state
/// directory, printed by `agent run --json`, sent to webhooks and hooks).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(default)]
    pub snapshots: Vec<String>,
    /// What failed, if anything.
    #[serde(default)]
    pub error: Option<String>,
}

impl RunRecord {
    /// When the run started; `None` if the record's time does not parse.
    pub fn start_time(&self) -> Option<jiff::Timestamp> {
        self.start.parse().ok()
    }

    /// True for a run interrupted at shutdown: neither a success nor a
    /// failure of its task (notifications and health skip it).
    pub fn interrupted(&self) -> bool {
        self.exit_code == EXIT_INTERRUPTED
    }
}

/// The run records of a state directory, oldest first: `runs.jsonl.1`
/// then `runs.jsonl`. Lines that do not parse are skipped (a torn last
/// line after a crash, a record of a later version).
pub fn read_runs(state_dir: &Path) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for name in [format!("{RUNS_FILE}.1"), RUNS_FILE.to_string()] {
        let Ok(text) = std::fs::read_to_string(state_dir.join(name)) else { continue };
        runs.extend(text.lines().filter_map(|l| serde_json::from_str::<RunRecord>(l).ok()));
    }
    runs
}

/// Process ids of running children (job steps and hooks), so shutdown can
/// signal them.
#[derive(Default)]
struct Children(Mutex<HashSet<u32>>);

/// Removes its child from [`Children`] when dropped.
struct Tracked<'a>(&'a Children, Option<u32>);

impl Children {
    fn track(&self, pid: Option<u32>) -> Tracked<'_> {
        if let (Some(pid), Ok(mut c)) = (pid, self.0.lock()) {
            c.insert(pid);
        }
        Tracked(self, pid)
    }

    fn pids(&self) -> Vec<u32> {
        self.0.lock().map(|c| c.iter().copied().collect()).unwrap_or_default()
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if let (Some(pid), Ok(mut c)) = (self.1, self.0 .0.lock()) {
            c.remove(&pid);
        }
    }
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
    /// The password variables of every job (`password_env`): removed
    /// from every step, so one job's child (and the command it runs for a
    /// stream source) never sees another job's password.
    pub secret_vars: Vec<String>,
    /// Running children (for shutdown).
    children: Children,
    /// Set once shutdown has signalled the children: a run that fails
    /// from then on was interrupted.
    interrupted: AtomicBool,
    /// Whether the last run of each (job, task) succeeded, for
    /// notifications on state changes; filled from the run records.
    last_ok: Mutex<HashMap<(String, Task), bool>>,
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
            secret_vars: Vec::new(),
            children: Children::default(),
            interrupted: AtomicBool::new(false),
            last_ok: Mutex::new(HashMap::new()),
        }
    }

    /// Runs one task of a job to its end (with its hooks), records it,
    /// and notifies if the task's state changed.
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
        let hooked = job.hooks.tasks.contains(&task);
        let result = match hooked {
            true => self.before_hook(job, &rec).await,
            false => Ok(()),
        };
        let result = match result {
            Ok(()) => self.task(job, task, &mut rec).await,
            Err(e) => Err((1, e)),
        };
        match result {
            Ok(code) => {
                rec.ok = true;
                rec.exit_code = code;
            }
            Err((code, e)) if self.interrupted.load(Ordering::SeqCst) => {
                tracing::debug!(job = %job.name, "interrupted run ended with exit code {code}");
                rec.exit_code = EXIT_INTERRUPTED;
                rec.error = Some(format!("interrupted at shutdown: {e}"));
            }
            Err((code, e)) => {
                rec.exit_code = code;
                rec.error = Some(e);
            }
        }
        rec.duration_seconds = t0.elapsed().as_secs_f64();
        if hooked {
            self.after_hook(job, &rec).await;
        }
        log_end(&rec);
        self.save(&rec);
        self.notify(job, &rec).await;
        rec
    }

    async fn task(&self, job: &Job, task: Task, rec: &mut RunRecord) -> Result<u8, (u8, String)> {
        // Dropped (zeroized) when the run ends.
        let handoff = open_tenant(job).await;
        let key = handoff.as_ref();
        match task {
            Task::Backup => self.backup(job, key, rec).await,
            Task::Prune => self.simple(job, key, vec!["prune".into()]).await.map(|_| 0),
            Task::Check => self.check(job, key).await,
            Task::Drill => self.drill(job, key).await,
        }
    }

    /// Sends `signal` to the process group of every running child: the
    /// child and what it started (a stream command such as pg_dump).
    /// Runs that fail from then on are recorded as interrupted (exit 130).
    pub fn signal_children(&self, signal: rustix::process::Signal) {
        self.interrupted.store(true, Ordering::SeqCst);
        for pid in self.children.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process_group(pid, signal);
                }
            }
        }
    }

    /// The run records of the state directory, oldest first (none without
    /// a state directory).
    pub fn runs(&self) -> Vec<RunRecord> {
        self.state_dir.as_deref().map(read_runs).unwrap_or_default()
    }

    /// Restores what must survive a restart of the agent from the run
    /// records, for the jobs of `config`: the last-success timestamps and
    /// whether each task's last run succeeded (for notifications).
    pub fn load_state(&self, config: &Config) {
        let mut last_ok = HashMap::new();
        for rec in self.runs() {
            let Some(job) = config.jobs.iter().find(|j| j.name == rec.job) else { continue };
            if !rec.interrupted() {
                last_ok.insert((rec.job.clone(), rec.task), rec.ok);
            }
            let Some(start) = rec.start_time().filter(|_| rec.ok) else { continue };
            let end = start.as_millisecond() as f64 / 1000.0 + rec.duration_seconds;
            let name = match rec.task {
                Task::Backup => "last_success_timestamp_seconds",
                Task::Check => "last_check_success_timestamp_seconds",
                Task::Drill => "last_drill_success_timestamp_seconds",
                Task::Prune => continue,
            };
            self.metrics.set_gauge(name, &Labels::new(job.tenant.as_str(), &job.name), end);
        }
        if let Ok(mut m) = self.last_ok.lock() {
            *m = last_ok;
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
                tracing::warn!("cannot append to {}: {e}", path.display());
            }
        }
        if let Some(path) = &self.metrics_textfile {
            if let Err(e) = self.metrics.write_textfile(path) {
                tracing::warn!("cannot write metrics to {}: {e}", path.display());
            }
        }
    }

    async fn backup(&self, job: &Job, key: Option<&Handoff>, rec: &mut RunRecord) -> Result<u8, (u8, String)> {
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
            let v = match self.simple(job, key, args).await {
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
            self.simple(job, key, forget.into_iter().map(OsString::from).collect()).await?;
        }
        match self.simple(job, key, vec!["stats".into()]).await {
            Ok((v, _)) => self.metrics.repository(
                &labels,
                v["stored_bytes"].as_u64().unwrap_or(0),
                v["dedup_ratio"].as_f64().unwrap_or(0.0),
            ),
            Err((_, e)) => tracing::warn!(job = %job.name, "stats after backup failed: {e}"),
        }
        Ok(if partial { 3 } else { 0 })
    }

    async fn check(&self, job: &Job, key: Option<&Handoff>) -> Result<u8, (u8, String)> {
        let labels = Labels::new(job.tenant.as_str(), &job.name);
        let mut args: Vec<OsString> = vec!["check".into()];
        if job.check_subset > 0.0 {
            args.push("--read-data-subset".into());
            args.push(format!("{}%", job.check_subset).into());
        }
        let r = self.simple(job, key, args).await;
        self.metrics.check(&labels, r.is_ok());
        r.map(|_| 0)
    }

    async fn drill(&self, job: &Job, key: Option<&Handoff>) -> Result<u8, (u8, String)> {
        let labels = Labels::new(job.tenant.as_str(), &job.name);
        // The job's own latest snapshot of each of its sources (a job
        // with paths and a command makes two groups). Its `--path` set is
        // exactly the source's current paths, which picks that group when
        // the job's older snapshots list more paths (see
        // `snapshot::resolve`).
        let mut sources: Vec<Vec<OsString>> = Vec::new();
        if !job.paths.is_empty() {
            sources.push(job.paths.iter().flat_map(|p| ["--path".into(), p.as_os_str().to_owned()]).collect());
        }
        if !job.command.is_empty() {
            sources.push(vec!["--path".into(), format!("/{}", job.stdin_name).into()]);
        }
        let mut duration = 0.0;
        let mut r = Ok(());
        for filter in sources {
            let mut args: Vec<OsString> =
                vec!["verify-restore".into(), "latest".into(), format!("--job={}", job.name).into()];
            args.extend(filter);
            let t0 = Instant::now();
            match self.simple(job, key, args).await {
                // verify-restore reports the restore's own time; the step's
                // wall time (restore and comparison) when it does not.
                Ok((v, _)) => duration += v["restore_seconds"].as_f64().unwrap_or(t0.elapsed().as_secs_f64()),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        self.metrics.drill(&labels, r.is_ok(), Some(duration).filter(|_| r.is_ok()));
        r.map(|()| 0)
    }

    /// Runs one step; Ok((json, partial)) on exit 0 or 3 (a backup saved
    /// with unreadable entries), else the exit code and an error message.
    async fn simple(
        &self,
        job: &Job,
        key: Option<&Handoff>,
        args: Vec<OsString>,
    ) -> Result<(Value, bool), (u8, String)> {
        let what = args.first().map(|a| a.to_string_lossy().to_string()).unwrap_or_default();
        let step = self.step(job, key, args).await.map_err(|e| (1, format!("{what}: {e}")))?;
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

    async fn step(&self, job: &Job, key: Option<&Handoff>, args: Vec<OsString>) -> Result<Step, String> {
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
        // The job's repository, tenant and secret only: not the agent's,
        // and not an escrow secret or new password from its environment.
        for v in STEP_REMOVED_VARS.iter().copied().chain(self.secret_vars.iter().map(String::as_str)) {
            cmd.env_remove(v);
        }
        match (key, &job.password) {
            // The opened key on the child's standard input, a pipe no
            // other process holds (see `open_tenant`).
            (Some(_), _) => {
                cmd.arg("--key-fd").arg("0");
            }
            (None, PasswordSource::File(f)) => {
                cmd.arg("--password-file").arg(f);
            }
            (None, PasswordSource::Env(var)) => {
                let p = std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
                // Passed on under the name the child reads, once.
                cmd.env_remove(var).env("STRONGROOM_PASSWORD", p);
            }
        }
        let stdin = match key {
            Some(_) => std::process::Stdio::piped(),
            None => std::process::Stdio::null(),
        };
        cmd.args(args)
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        let tracked = self.children.track(child.id());
        if let (Some(key), Some(mut pipe)) = (key, child.stdin.take()) {
            use tokio::io::AsyncWriteExt as _;
            // Far below a pipe's buffer: written whole before the child
            // reads, then closed so that the child sees its end. A child
            // that died first makes this fail; its exit code tells why.
            if let Err(e) = pipe.write_all(key.bytes()).await {
                tracing::debug!(job = %job.name, "cannot hand the key to the step: {e}");
            }
            drop(pipe);
        }
        let out = hooks::wait_bounded(&mut child, STEP_JSON_MAX, false).await;
        drop(tracked);
        let out = out.map_err(|e| format!("waiting for {}: {e}", self.exe.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        for line in stderr.lines() {
            tracing::debug!(job = %job.name, "child: {line}");
        }
        if out.stdout_cut {
            return Err(format!("its JSON output is longer than {} MiB: result unknown", STEP_JSON_MAX >> 20));
        }
        Ok(Step { code: out.status.code(), json: serde_json::from_slice(&out.stdout).ok(), stderr })
    }
}

/// Unwraps the job's tenant key once for all the steps of a run (one key
/// derivation instead of one per step), from the job's password. `None`
/// when that fails (no password, unreachable store, wrong password): the
/// steps then open the tenant themselves and report the error as before.
async fn open_tenant(job: &Job) -> Option<Handoff> {
    let secret = match job.password.secret() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(job = %job.name, "each step opens the tenant itself: {e}");
            return None;
        }
    };
    let opts = crate::store::OpenOptions { s3_endpoint: job.s3_endpoint.clone(), ..Default::default() };
    let opened = match Store::open(&job.repository, &opts, false) {
        Ok(store) => Handoff::unlock(&store, &job.tenant, &secret).await,
        Err(e) => Err(e.into()),
    };
    match opened {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::debug!(job = %job.name, "each step opens the tenant itself: {e}");
            None
        }
    }
}

/// Logs the end of a run.
fn log_end(rec: &RunRecord) {
    if rec.ok {
        tracing::info!(job = %rec.job, task = rec.task.as_str(), seconds = rec.duration_seconds, "run succeeded");
    } else {
        tracing::warn!(
            job = %rec.job,
            task = rec.task.as_str(),
            seconds = rec.duration_seconds,
            exit_code = rec.exit_code,
            "run failed: {}",
            rec.error.as_deref().unwrap_or("")
        );
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
        r.load_state(&config);
        let text = r.metrics.encode();
        assert!(text.contains(r#"last_success_timestamp_seconds{tenant="t",job="j"} 1767225602.5"#), "{text}");
        assert!(!text.contains("last_check_success_timestamp_seconds{"), "{text}");
        assert!(!text.contains("gone"), "{text}");
    }
}
