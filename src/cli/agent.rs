//! `strongroom agent`: the scheduler, `agent run` and `agent check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::{Ctx, EXIT_ERROR, EXIT_USAGE};
use strongroom_core::agent::{self, Config, Runner, ServeOptions, Task};

/// Arguments of `agent`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    cmd: Option<AgentCommand>,
    /// The configuration file (TOML; see the user guide)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// After SIGTERM or Ctrl-C, let running jobs finish this long, then interrupt them [default: [agent] grace or 60s]
    #[arg(long, value_parser = strongroom_core::units::parse_duration)]
    grace: Option<Duration>,
    /// Serve Prometheus metrics on ADDR:PORT (e.g. 127.0.0.1:9184) [default: [agent] metrics_listen]
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
    /// Directory for run records (runs.jsonl) [default: [agent] state_dir or the user's state directory]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Run one job now and exit with its status
    Run(RunArgs),
    /// Validate a configuration file; errors name line and column
    CheckConfig {
        /// The configuration file
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The configuration file
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The job's name
    job: String,
    /// What to run: backup (with retention), prune, check or drill
    #[arg(long, default_value = "backup", value_parser = task_parser())]
    task: Task,
}

/// `--task`: one of the agent's tasks, by the name the configuration uses.
fn task_parser() -> impl clap::builder::TypedValueParser<Value = Task> {
    use clap::builder::TypedValueParser;
    const ALL: [Task; 4] = [Task::Backup, Task::Prune, Task::Check, Task::Drill];
    clap::builder::PossibleValuesParser::new(ALL.map(|t| t.as_str()))
        .map(|name| ALL.into_iter().find(|t| t.as_str() == name).unwrap_or(Task::Backup))
}

pub fn run(ctx: &Ctx, a: AgentArgs) -> Result<ExitCode> {
    match a.cmd {
        Some(AgentCommand::CheckConfig { file }) => check_config(ctx, &file),
        Some(AgentCommand::Run(r)) => run_one(ctx, r),
        None => {
            let file = a.config.clone().context("give --config FILE (or a subcommand: run, check-config)")?;
            serve(ctx, &file, a)
        }
    }
}

/// Reads and validates a configuration; errors as `FILE:LINE:COL: message`.
fn load(file: &Path) -> Result<std::result::Result<Config, Vec<String>>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(agent::config::parse(&text).map_err(|errs| errs.iter().map(|e| format!("{}:{e}", file.display())).collect()))
}

fn load_or_fail(file: &Path) -> Result<Config> {
    match load(file)? {
        Ok(c) => Ok(c),
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            anyhow::bail!("{}: {} error(s) in the configuration", file.display(), errs.len())
        }
    }
}

fn check_config(ctx: &Ctx, file: &Path) -> Result<ExitCode> {
    match load(file)? {
        Ok(c) => {
            if ctx.global.json {
                let jobs: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
                ctx.print_json(&serde_json::json!({ "ok": true, "jobs": jobs, "errors": [] }))?;
            } else {
                ctx.say(format_args!("{}: ok, {} job(s)", file.display(), c.jobs.len()))?;
                // Not errors: the secrets may exist only where the agent runs.
                for j in &c.jobs {
                    match &j.password {
                        agent::PasswordSource::File(f) if !f.exists() => {
                            eprintln!("warning: job {}: password file {} does not exist here", j.name, f.display())
                        }
                        agent::PasswordSource::Env(v) if std::env::var_os(v).is_none() => {
                            eprintln!("warning: job {}: environment variable {v} is not set here", j.name)
                        }
                        _ => {}
                    }
                }
                for j in &c.jobs {
                    let next = j
                        .schedule
                        .next_after(jiff::Timestamp::now())
                        .map(|z| z.strftime("%Y-%m-%d %H:%M:%S %Z").to_string())
                        .unwrap_or_else(|| "never".into());
                    ctx.say(format_args!("  {} (tenant {}): next backup {next}", j.name, j.tenant.as_str()))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errs) => {
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "ok": false, "jobs": [], "errors": errs }))?;
            } else {
                for e in &errs {
                    eprintln!("{e}");
                }
            }
            Ok(ExitCode::from(EXIT_USAGE))
        }
    }
}

fn runner(ctx: &Ctx, config: &Config, state_dir: Option<PathBuf>) -> Result<Runner> {
    let exe = std::env::current_exe().context("cannot find the strongroom binary to run jobs with")?;
    let cache_dir = config.agent.cache_dir.clone().or_else(|| ctx.global.cache_dir.clone());
    let mut r = Runner::new(exe, ctx.metrics.clone(), cache_dir, config.agent.lock_wait);
    r.state_dir = state_dir;
    r.metrics_textfile = ctx.global.metrics_textfile.clone();
    r.secret_vars = config
        .jobs
        .iter()
        .filter_map(|j| match &j.password {
            strongroom_core::agent::PasswordSource::Env(var) => Some(var.clone()),
            strongroom_core::agent::PasswordSource::File(_) => None,
        })
        .collect();
    Ok(r)
}

/// Where run records go when neither `--state-dir` nor `[agent] state_dir`
/// says.
pub(super) fn default_state_dir() -> Option<PathBuf> {
    dirs::state_dir().or_else(dirs::cache_dir).map(|d| d.join("strongroom").join("agent"))
}

fn run_one(ctx: &Ctx, a: RunArgs) -> Result<ExitCode> {
    let config = load_or_fail(&a.config)?;
    let job = config
        .jobs
        .iter()
        .find(|j| j.name == a.job)
        .with_context(|| format!("{}: no job named {:?}", a.config.display(), a.job))?;
    let state_dir = config.agent.state_dir.clone().or_else(default_state_dir);
    let r = runner(ctx, &config, state_dir)?;
    // Whether the task failed last time decides what is notified.
    r.load_state(&config);
    let rec = ctx.rt.block_on(r.run(job, a.task));
    if ctx.global.json {
        ctx.print_json(&rec)?;
    } else if rec.ok {
        ctx.say(format_args!("job {}: {} succeeded in {:.2}s", rec.job, rec.task.as_str(), rec.duration_seconds))?;
        for s in &rec.snapshots {
            ctx.say(format_args!("snapshot {} saved", &s[..s.len().min(8)]))?;
        }
    } else {
        eprintln!("strongroom: job {}: {} failed: {}", rec.job, rec.task.as_str(), rec.error.as_deref().unwrap_or(""));
    }
    Ok(ExitCode::from(rec.exit_code))
}

fn serve(ctx: &Ctx, file: &Path, a: AgentArgs) -> Result<ExitCode> {
    let config = load_or_fail(file)?;
    anyhow::ensure!(!config.jobs.is_empty(), "{}: no jobs", file.display());
    let state_dir = a.state_dir.clone().or_else(|| config.agent.state_dir.clone()).or_else(default_state_dir);
    let grace = a.grace.or(config.agent.grace).unwrap_or(Duration::from_secs(60));
    let listen = a.metrics_listen.clone().or_else(|| config.agent.metrics_listen.clone());
    let runner = runner(ctx, &config, state_dir.clone())?;
    runner.load_state(&config);
    let runner = Arc::new(runner);

    let _http = match &listen {
        Some(addr) => {
            let listener = ctx
                .rt
                .block_on(tokio::net::TcpListener::bind(addr.as_str()))
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            let bound = listener.local_addr()?;
            tracing::info!("metrics at http://{bound}/metrics");
            if let Some(dir) = &state_dir {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(dir.join("metrics-address"), format!("{bound}\n"))
                    .with_context(|| format!("writing {}", dir.join("metrics-address").display()))?;
            }
            Some(AbortOnDrop(ctx.rt.spawn(agent::http::serve(listener, ctx.metrics.clone()))))
        }
        None => None,
    };

    let (tx, rx) = tokio::sync::watch::channel(false);
    {
        let cancel = ctx.cancel.clone();
        ctx.rt.spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch for SIGTERM: {e}");
                    return;
                }
            };
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = tick.tick() => if cancel.is_cancelled() { break },
                }
            }
            tracing::info!("shutdown requested");
            let _ = tx.send(true);
        });
    }
    let opts = ServeOptions { max_concurrent: config.agent.max_concurrent, grace, kill_after: Duration::from_secs(30) };
    let summary = ctx.rt.block_on(agent::serve(runner, &config, &opts, rx));
    if ctx.global.json {
        ctx.print_json(&summary)?;
    } else {
        ctx.say(format_args!(
            "agent stopped: {} runs, {} failed, {} delayed while busy, {} caught up, {} interrupted",
            summary.runs, summary.failed, summary.delayed, summary.caught_up, summary.interrupted
        ))?;
    }
    Ok(if summary.interrupted > 0 { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
