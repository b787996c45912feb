//! A job's `before`, `after` and `on_failure` commands, and the one way
//! the agent runs a command of the configuration (hooks and sendmail):
//! argv (no shell), its own process group, input on stdin, output to the
//! log, killed when it overruns its timeout.
//!
//! A failing `before` hook fails the run and the task does not run (as
//! borgmatic does): a hook that was to stop a database or take a
//! filesystem snapshot did not, so backing up would save the wrong thing.
//! `after` runs when the task succeeded, `on_failure` when it failed (a
//! failed `before` hook included); their own failures are logged and do
//! not change the run's result.

use std::ffi::OsStr;
use std::time::Duration;

use serde::Serialize;

use super::{Children, Job, RunRecord, Runner};

/// The agent's variables a command of the configuration inherits; every
/// other one is left out. The agent's environment holds every job's
/// password variable, cloud credentials and escrow secret paths, none of
/// which a hook or sendmail needs.
const INHERITED_VARS: [&str; 7] = ["PATH", "HOME", "LANG", "TZ", "USER", "LOGNAME", "TMPDIR"];

/// Lines of a command's output kept in an error message.
const TAIL_LINES: usize = 3;

/// What a `before` hook reads on stdin: the run about to start.
#[derive(Serialize)]
struct Before<'a> {
    job: &'a str,
    tenant: &'a str,
    task: &'a str,
    start: &'a str,
}

impl Runner {
    /// Runs the job's `before` hook, if any; `Err` says why the run must
    /// not go on.
    pub(super) async fn before_hook(&self, job: &Job, rec: &RunRecord) -> Result<(), String> {
        let argv = &job.hooks.before;
        if argv.is_empty() {
            return Ok(());
        }
        let input = Before { job: &rec.job, tenant: &rec.tenant, task: rec.task.as_str(), start: &rec.start };
        let stdin = serde_json::to_vec(&input).unwrap_or_default();
        let env = hook_env(job, rec, false);
        run_command("before hook", &job.name, argv, &env, stdin, job.hooks.timeout, &self.children)
            .await
            .map(|_| ())
            .map_err(|e| format!("before hook failed, task not run: {e}"))
    }

    /// Runs `after` (the run succeeded) or `on_failure` (it failed), if
    /// given, with the run record on stdin. Its failure is only logged.
    pub(super) async fn after_hook(&self, job: &Job, rec: &RunRecord) {
        let (what, argv) = match rec.ok {
            true => ("after hook", &job.hooks.after),
            false => ("on_failure hook", &job.hooks.on_failure),
        };
        if argv.is_empty() {
            return;
        }
        let stdin = serde_json::to_vec(rec).unwrap_or_default();
        let env = hook_env(job, rec, true);
        let r = run_command(what, &job.name, argv, &env, stdin, job.hooks.timeout, &self.children).await;
        if let Err(e) = r {
            tracing::warn!(job = %job.name, task = rec.task.as_str(), "{what} failed: {e}");
        }
    }
}

/// The variables a hook gets: job, tenant, task, and after the task its
/// snapshots (space-separated) and exit code.
fn hook_env(job: &Job, rec: &RunRecord, after: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STRONGROOM_JOB", job.name.clone()),
        ("STRONGROOM_TENANT", job.tenant.as_str().to_string()),
        ("STRONGROOM_TASK", rec.task.as_str().to_string()),
    ];
    if after {
        env.push(("STRONGROOM_SNAPSHOT_ID", rec.snapshots.join(" ")));
        env.push(("STRONGROOM_EXIT_CODE", rec.exit_code.to_string()));
    }
    env
}

/// Whether a command of the configuration inherits the agent's variable
/// `name` (see [`INHERITED_VARS`]; `LC_*` too).
fn inherited(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| INHERITED_VARS.contains(&n) || n.starts_with("LC_"))
}

/// Runs `argv` with an environment of its own (the [`INHERITED_VARS`] of
/// the agent's, and `env`), `stdin` written to it, until it exits or
/// `timeout` passes (then its process group is killed). Its output is
/// logged line by line; `Err` names the exit status or the timeout and
/// ends with the last lines of its output.
pub(super) async fn run_command(
    what: &str,
    job: &str,
    argv: &[String],
    env: &[(&str, String)],
    stdin: Vec<u8>,
    timeout: Duration,
    children: &Children,
) -> Result<String, String> {
    use tokio::io::AsyncWriteExt as _;
    let (program, args) = argv.split_first().ok_or_else(|| format!("{what}: no command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear().envs(std::env::vars_os().filter(|(k, _)| inherited(k)));
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let tracked = children.track(child.id());
    let pid = child.id();
    if let Some(mut input) = child.stdin.take() {
        // A command that does not read its input must not block the run.
        tokio::spawn(async move {
            let _ = input.write_all(&stdin).await;
        });
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output()).await;
    drop(tracked);
    let out = match out {
        Ok(r) => r.map_err(|e| format!("waiting for {program}: {e}"))?,
        Err(_) => {
            kill_group(pid);
            return Err(format!("{program} did not finish within {}s: killed", timeout.as_secs_f64()));
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for line in text.lines() {
        tracing::info!(job, "{what}: {line}");
    }
    if out.status.success() {
        return Ok(text);
    }
    let tail: Vec<&str> = text.lines().rev().take(TAIL_LINES).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{program}: {}: {}", out.status, tail.join(" | ")))
}

/// SIGKILL to the process group a command leads (what it started too).
fn kill_group(pid: Option<u32>) {
    let pid = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
