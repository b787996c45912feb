//! The agent's loop: when each task of each job is due, which jobs are
//! busy, the concurrency limit, and the shutdown sequence.
//!
//! No due task is dropped. A task that comes due while its job is busy
//! (another of its tasks, or itself, still running) becomes *pending* and
//! runs as soon as the job is free; pending is a flag, not a queue, so a
//! task due several times while the job is busy runs once (the extra
//! firings are counted as coalesced). A task whose schedule fired while
//! the agent was down (a fire time after the start of its last run that
//! was not interrupted at shutdown, and before now) is pending from
//! start-up, like anacron and systemd's `Persistent=true`, and so is a
//! task whose last run was interrupted at shutdown (exit code 130: it did
//! not do its work); a task with no recorded run is not (a new agent does
//! not run every task at once). Pending tasks still wait for a slot under
//! `max_concurrent`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Config, Job, RunRecord, Runner, Schedule, Task};
use crate::metrics::Labels;

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
    /// Firings merged into a run already pending (the task was due again
    /// before its job was free).
    pub skipped: u64,
    /// Firings that came while the job was busy and ran once it was free.
    pub delayed: u64,
    /// Tasks missed while the agent was down, run at start-up.
    pub caught_up: u64,
    /// Runs that had to be interrupted at shutdown.
    pub interrupted: u64,
    /// Pending tasks that had not started when the agent stopped.
    pub not_started: u64,
}

/// Runs every job on its schedules until `shutdown` turns true, then
/// lets running jobs finish (see the module docs).
pub async fn serve(
    runner: Arc<Runner>,
    config: &Config,
    opts: &ServeOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> ServeSummary {
    let mut scheduler = Scheduler::new(runner.clone(), config, opts);
    scheduler.catch_up(&runner.runs(), jiff::Timestamp::now());
    tracing::info!(jobs = config.jobs.len(), "agent started");
    // Until the sender goes away (then only the other branches wake us).
    let mut watching = true;
    loop {
        if *shutdown.borrow() {
            break;
        }
        scheduler.start_due(jiff::Timestamp::now());
        let wait = scheduler.until_next();
        let ended = tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            r = shutdown.changed(), if watching => {
                watching = r.is_ok();
                None
            }
            // A run ended: its job may have a pending task to start.
            Some(r) = scheduler.tasks.join_next(), if !scheduler.tasks.is_empty() => Some(r),
        };
        if let Some(r) = ended {
            scheduler.count(r);
        }
    }
    scheduler.stop(opts).await
}

/// When a job's task last started a run that was not interrupted at
/// shutdown, and whether its newest run was (interrupted runs did not do
/// their work: the firing they answered is still owed).
fn last_run(runs: &[RunRecord], job: &str, task: Task) -> (Option<jiff::Timestamp>, bool) {
    let mine =
        runs.iter().filter(|r| r.job == job && r.task == task).filter_map(|r| Some((r.start_time()?, r.interrupted())));
    let newest_interrupted = mine.clone().max_by_key(|(t, _)| *t).is_some_and(|(_, i)| i);
    (mine.filter(|(_, i)| !i).map(|(t, _)| t).max(), newest_interrupted)
}

/// Time to sleep until `next` (now if it has passed), a minute at most.
fn wait_for(next: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Duration {
    const MAX: Duration = Duration::from_secs(60);
    match next {
        // Negative when `next` has passed: then no wait at all.
        Some(n) => Duration::try_from(n.duration_since(now)).unwrap_or(Duration::ZERO).min(MAX),
        None => MAX,
    }
}

/// How a scheduled run ended.
enum Outcome {
    Ok,
    Failed,
    /// Shutdown came while it waited for a slot.
    NotStarted,
}

/// One schedule of one job.
struct Entry {
    job: Arc<Job>,
    task: Task,
    schedule: Schedule,
    next: Option<jiff::Timestamp>,
    /// Due, and waiting for its job to be free.
    pending: bool,
    /// When it last started, as a count of starts (for fairness).
    last_start: Option<u64>,
}

/// The state of [`serve`]: the schedules, which jobs run, the running
/// tasks, and the counts so far.
struct Scheduler {
    runner: Arc<Runner>,
    entries: Vec<Entry>,
    busy: HashMap<String, Arc<AtomicBool>>,
    permits: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<Outcome>,
    /// Runs that hold a slot and are running their job.
    running: Arc<AtomicUsize>,
    summary: ServeSummary,
}

/// Clears a job's busy flag, however the run ends.
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Counts a run as running while it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
                    entries.push(Entry {
                        job: job.clone(),
                        task,
                        schedule: s.clone(),
                        next,
                        pending: false,
                        last_start: None,
                    });
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
            running: Arc::new(AtomicUsize::new(0)),
            summary: ServeSummary::default(),
        }
    }

    /// Marks pending each task whose schedule fired between its last
    /// completed run and `now`, and each task whose last run was
    /// interrupted at shutdown.
    fn catch_up(&mut self, runs: &[RunRecord], now: jiff::Timestamp) {
        for e in self.entries.iter_mut() {
            let (last, interrupted) = last_run(runs, &e.job.name, e.task);
            let missed = last.and_then(|l| e.schedule.next_after(l)).map(|z| z.timestamp()).filter(|t| *t <= now);
            let why = match (missed, interrupted) {
                (_, true) => "interrupted at the last shutdown: runs now",
                (Some(_), false) => "missed while the agent was down: runs now",
                (None, false) => continue,
            };
            tracing::info!(job = %e.job.name, task = e.task.as_str(), last_run = ?last, missed = ?missed, "{why}");
            e.pending = true;
            self.summary.caught_up += 1;
            self.runner.metrics.task_caught_up(&Labels::new(e.job.tenant.as_str(), &e.job.name), e.task.as_str());
        }
    }

    /// Starts each task that is due or pending and whose job is free; a
    /// due task whose job is busy becomes pending. Pending tasks go first,
    /// the one that started longest ago (or never) first, so a task that
    /// keeps coming due (a backup every minute) cannot starve the others
    /// of its job.
    fn start_due(&mut self, now: jiff::Timestamp) {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        order.sort_by_key(|&i| (!self.entries[i].pending, self.entries[i].last_start));
        for i in order {
            let e = &mut self.entries[i];
            let due = e.next.is_some_and(|n| n <= now);
            if due {
                e.next = e.schedule.next_after(now).map(|z| z.timestamp());
            }
            if !due && !e.pending {
                continue;
            }
            let flag = self.busy.get(&e.job.name).cloned().unwrap_or_default();
            if flag.swap(true, Ordering::SeqCst) {
                let labels = Labels::new(e.job.tenant.as_str(), &e.job.name);
                if e.pending && due {
                    tracing::debug!(job = %e.job.name, task = e.task.as_str(), "due again while pending: runs once");
                    self.summary.skipped += 1;
                } else if due {
                    tracing::info!(job = %e.job.name, task = e.task.as_str(), "due while the job is busy: runs when it is free");
                    e.pending = true;
                    self.summary.delayed += 1;
                    self.runner.metrics.task_delayed(&labels, e.task.as_str());
                }
                continue;
            }
            e.pending = false;
            e.last_start = Some(self.summary.runs);
            let (job, task) = (e.job.clone(), e.task);
            self.spawn(job, task, flag);
        }
    }

    /// Runs one task once a slot is free; the job is already marked busy.
    fn spawn(&mut self, job: Arc<Job>, task: Task, flag: Arc<AtomicBool>) {
        self.summary.runs += 1;
        let (runner, permits, running) = (self.runner.clone(), self.permits.clone(), self.running.clone());
        self.tasks.spawn(async move {
            let _busy = Busy(flag);
            // Closed at shutdown: a run still waiting for a slot never starts.
            let Ok(_permit) = permits.acquire_owned().await else { return Outcome::NotStarted };
            let _running = Running::new(running);
            match runner.run(&job, task).await.ok {
                true => Outcome::Ok,
                false => Outcome::Failed,
            }
        });
    }

    /// Counts a run that ended.
    fn count(&mut self, r: Result<Outcome, tokio::task::JoinError>) {
        match r {
            Ok(Outcome::Ok) => {}
            Ok(Outcome::NotStarted) => {
                self.summary.runs = self.summary.runs.saturating_sub(1);
                self.summary.not_started += 1;
            }
            Ok(Outcome::Failed) | Err(_) => self.summary.failed += 1,
        }
    }

    /// Time until the next schedule is due, a minute at most.
    fn until_next(&self) -> Duration {
        wait_for(self.entries.iter().filter_map(|e| e.next).min(), jiff::Timestamp::now())
    }

    /// Waits up to `limit` for the runs; false if some still run.
    async fn finish(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(r)) => self.count(r),
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        true
    }

    /// Lets running jobs finish within the grace period, then interrupts
    /// them, then kills them. Pending tasks and runs still waiting for a
    /// slot do not start.
    async fn stop(mut self, opts: &ServeOptions) -> ServeSummary {
        self.permits.close();
        let pending = self.entries.iter().filter(|e| e.pending).count() as u64;
        self.summary.not_started += pending;
        // Runs that ended, and those that now will not start, are counted
        // before the log says how many still run.
        self.finish(Duration::ZERO).await;
        let running = self.running.load(Ordering::SeqCst);
        tracing::info!(running, grace_seconds = opts.grace.as_secs_f64(), "stopping: waiting for running jobs");
        if !self.finish(opts.grace).await {
            let running = self.running.load(Ordering::SeqCst);
            tracing::warn!(running, "grace period over: interrupting running jobs");
            self.summary.interrupted = running as u64;
            self.runner.signal_children(rustix::process::Signal::INT);
            if !self.finish(opts.kill_after).await {
                tracing::warn!("jobs did not stop after SIGINT: killing them");
                self.runner.signal_children(rustix::process::Signal::KILL);
                self.finish(Duration::from_secs(10)).await;
            }
        }
        let s = &self.summary;
        tracing::info!(
            runs = s.runs,
            failed = s.failed,
            delayed = s.delayed,
            caught_up = s.caught_up,
            not_started = s.not_started,
            "agent stopped"
        );
        self.summary
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::agent::EXIT_INTERRUPTED;
    use crate::metrics::Metrics;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_schedule_already_passed_means_no_wait() {
        let now = ts("2026-01-01T00:00:00Z");
        assert_eq!(wait_for(Some(ts("2025-12-31T23:59:00Z")), now), Duration::ZERO);
        assert_eq!(wait_for(Some(ts("2026-01-01T00:00:10Z")), now), Duration::from_secs(10));
        assert_eq!(wait_for(Some(ts("2026-01-01T02:00:00Z")), now), Duration::from_secs(60));
        assert_eq!(wait_for(None, now), Duration::from_secs(60));
    }

    /// Which tasks are pending after start-up at `now`, given the run
    /// records `(start, exit_code)` of job `j`'s backup (daily at 02:00).
    fn pending_after(records: &[(&str, u8)], now: &str) -> bool {
        let config = super::super::config::parse(
            "[[job]]\nname = \"j\"\ntenant = \"t\"\nrepository = \"/r\"\npassword_env = \"P\"\n\
             schedule = \"0 2 * * *\"\ntimezone = \"UTC\"\npaths = [\"/srv\"]\n",
        )
        .unwrap();
        let runner = Arc::new(Runner::new("strongroom".into(), Arc::new(Metrics::new()), None, Duration::ZERO));
        let opts = ServeOptions { max_concurrent: 1, grace: Duration::ZERO, kill_after: Duration::ZERO };
        let mut s = Scheduler::new(runner, &config, &opts);
        let runs: Vec<RunRecord> = records
            .iter()
            .map(|(start, code)| RunRecord {
                job: "j".into(),
                tenant: "t".into(),
                task: Task::Backup,
                start: start.to_string(),
                duration_seconds: 1.0,
                ok: *code == 0,
                exit_code: *code,
                snapshots: vec![],
                error: None,
            })
            .collect();
        s.catch_up(&runs, ts(now));
        s.entries[0].pending
    }

    #[test]
    fn a_run_interrupted_at_shutdown_is_caught_up() {
        let done = ("2026-01-01T02:00:00Z", 0);
        let interrupted = ("2026-01-02T02:00:00Z", EXIT_INTERRUPTED);
        let failed = ("2026-01-02T02:00:00Z", 1);
        // Restarted at 02:30 after the 02:00 run was interrupted.
        assert!(pending_after(&[done, interrupted], "2026-01-02T02:30:00Z"));
        assert!(pending_after(&[interrupted], "2026-01-02T02:30:00Z"));
        // A run that ended (failed or not) is not run again before its time.
        assert!(!pending_after(&[done, failed], "2026-01-02T02:30:00Z"));
        assert!(!pending_after(&[done, ("2026-01-02T02:00:00Z", 0)], "2026-01-02T02:30:00Z"));
        // An interrupted run followed by a completed one owes nothing.
        assert!(!pending_after(&[interrupted, ("2026-01-02T02:40:00Z", 0)], "2026-01-02T03:00:00Z"));
        // Missed while down, as before.
        assert!(pending_after(&[done], "2026-01-02T02:30:00Z"));
        assert!(!pending_after(&[], "2026-01-02T02:30:00Z"));
    }
}
