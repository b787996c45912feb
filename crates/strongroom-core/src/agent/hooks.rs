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
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::{Children, Job, RunRecord, Runner};

/// The agent's variables a command of the configuration inherits; every
/// other one is left out. The agent's environment holds every job's
/// password variable, cloud credentials and escrow secret paths, none of
/// which a hook or sendmail needs.
const INHERITED_VARS: [&str; 7] = ["PATH", "HOME", "LANG", "TZ", "USER", "LOGNAME", "TMPDIR"];

/// Bytes of a command's stdout and of its stderr kept (the last ones):
/// a command that prints without end must not fill the agent's memory.
pub(super) const OUTPUT_KEEP: usize = 64 << 10;

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
/// logged line by line (the last [`OUTPUT_KEEP`] bytes of each stream);
/// `Err` names the exit status or the timeout and ends with the last
/// lines of its output.
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
    let out = tokio::time::timeout(timeout, wait_bounded(&mut child, OUTPUT_KEEP, true)).await;
    drop(tracked);
    let out = match out {
        Ok(r) => r.map_err(|e| format!("waiting for {program}: {e}"))?,
        Err(_) => {
            kill_group(pid);
            return Err(format!("{program} did not finish within {}s: killed", timeout.as_secs_f64()));
        }
    };
    if out.stdout_cut || out.stderr_cut {
        tracing::info!(job, "{what}: output longer than {OUTPUT_KEEP} bytes: only its end is kept");
    }
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

/// What a command printed, bounded, and how it exited.
pub(super) struct Bounded {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    /// True if stdout was longer than what was kept.
    pub stdout_cut: bool,
    /// The last [`OUTPUT_KEEP`] bytes of stderr.
    pub stderr: Vec<u8>,
    pub stderr_cut: bool,
}

/// Waits for `child` (its stdout and stderr piped) while reading both
/// streams to their end, keeping `stdout_limit` bytes of stdout (the
/// first, or with `stdout_tail` the last) and the last [`OUTPUT_KEEP`]
/// bytes of stderr.
pub(super) async fn wait_bounded(
    child: &mut tokio::process::Child,
    stdout_limit: usize,
    stdout_tail: bool,
) -> std::io::Result<Bounded> {
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (status, out, err) = tokio::try_join!(
        child.wait(),
        read_bounded(out, stdout_limit, stdout_tail),
        read_bounded(err, OUTPUT_KEEP, true)
    )?;
    Ok(Bounded { status, stdout: out.0, stdout_cut: out.1, stderr: err.0, stderr_cut: err.1 })
}

/// Reads `r` (if any) to its end and keeps `limit` bytes of it: the first,
/// or with `tail` the last; true when there was more.
async fn read_bounded<R: AsyncRead + Unpin>(
    r: Option<R>,
    limit: usize,
    tail: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    let (mut kept, mut cut) = (Vec::new(), false);
    let Some(mut r) = r else { return Ok((kept, cut)) };
    let mut buf = vec![0; 16 << 10];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if tail {
            kept.extend_from_slice(&buf[..n]);
            // Trimmed in batches, so each byte is moved a few times at most.
            if kept.len() > limit.saturating_mul(2).max(buf.len()) {
                kept.drain(..kept.len() - limit);
                cut = true;
            }
        } else {
            let room = limit.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
            cut |= n > room;
        }
    }
    if kept.len() > limit {
        kept.drain(..kept.len() - limit);
        cut = true;
    }
    Ok((kept, cut))
}

/// SIGKILL to the process group a command leads (what it started too).
fn kill_group(pid: Option<u32>) {
    let pid = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_kept_within_its_bound() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (head, cut) = read_bounded(Some(&data[..]), 1000, false).await.unwrap();
        assert_eq!((&head[..], cut), (&data[..1000], true));
        let (tail, cut) = read_bounded(Some(&data[..]), 1000, true).await.unwrap();
        assert_eq!((&tail[..], cut), (&data[data.len() - 1000..], true));
        let (all, cut) = read_bounded(Some(&data[..10]), 1000, true).await.unwrap();
        assert_eq!((&all[..], cut), (&data[..10], false));
        let (none, cut) = read_bounded(None::<&[u8]>, 1000, false).await.unwrap();
        assert!(none.is_empty() && !cut);
    }
}
