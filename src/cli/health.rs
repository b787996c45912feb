//! `strongroom health`: exit non-zero naming each tenant whose newest
//! snapshot is too old or whose last check failed, and (with `--config`)
//! each agent job whose last run of a task failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::{Ctx, EXIT_ERROR};
use strongroom_core::health::{self, JobHealth, TenantHealth};
use strongroom_core::repo::{self, Repo};

/// Arguments of `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Oldest acceptable age of the newest snapshot (e.g. 26h, 7d)
    #[arg(long, value_parser = strongroom_core::units::parse_duration)]
    max_age: Duration,
    /// Check every tenant of an agent configuration (its repositories and passwords) instead of --tenant
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With --config: the agent's run records (runs.jsonl) [default: [agent] state_dir or the user's state directory]
    #[arg(long, value_name = "DIR", requires = "config")]
    state_dir: Option<PathBuf>,
}

/// The verdict on a tenant that could not be opened: unhealthy.
fn unopened(tenant: &str, repository: &str, e: &anyhow::Error) -> TenantHealth {
    TenantHealth {
        tenant: tenant.to_string(),
        repository: repository.to_string(),
        ok: false,
        snapshots: 0,
        newest_snapshot: None,
        newest_time: None,
        age_seconds: None,
        last_check: None,
        problems: vec![format!("cannot open: {e:#}")],
    }
}

pub fn run(ctx: &Ctx, a: HealthArgs) -> Result<ExitCode> {
    let now_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    let mut results = Vec::new();
    let mut jobs = Vec::new();
    match &a.config {
        // With the operator's escrow secret: every tenant of the repository.
        None if ctx.global.escrow_secret.is_some() => {
            let store = ctx.store(false)?;
            ctx.rt.block_on(strongroom_core::repo::load_config(&store))?;
            for name in ctx.rt.block_on(store.list_tenants())? {
                let tenant = strongroom_core::id::TenantName::new(&name)?;
                let opened = ctx.open_as(tenant);
                let h = match opened.and_then(|r| judge(&r, ctx.repo_url()?, &ctx.cache_dir()?, a.max_age, now_ns)) {
                    Ok(h) => h,
                    Err(e) => unopened(&name, ctx.repo_url()?, &e),
                };
                results.push(h);
            }
        }
        None => {
            let repo = ctx.open()?;
            results.push(judge(&repo, ctx.repo_url()?, &ctx.cache_dir()?, a.max_age, now_ns)?);
        }
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            let config = strongroom_core::agent::config::parse(&text).map_err(|errs| {
                let lines: Vec<String> = errs.iter().map(|e| format!("{}:{e}", file.display())).collect();
                anyhow::anyhow!("invalid configuration:\n{}", lines.join("\n"))
            })?;
            let cache_dir = match &config.agent.cache_dir {
                Some(d) => d.clone(),
                None => ctx.cache_dir()?,
            };
            let mut seen = std::collections::HashSet::new();
            for job in &config.jobs {
                if !seen.insert((job.repository.clone(), job.tenant.as_str().to_string())) {
                    continue;
                }
                let opened = open_job(ctx, job, &cache_dir);
                let h = match opened.and_then(|r| judge(&r, &job.repository, &cache_dir, a.max_age, now_ns)) {
                    Ok(h) => h,
                    Err(e) => unopened(job.tenant.as_str(), &job.repository, &e),
                };
                results.push(h);
            }
            let state_dir =
                a.state_dir.clone().or(config.agent.state_dir.clone()).or_else(super::agent::default_state_dir);
            let runs = state_dir.as_deref().map(strongroom_core::agent::read_runs).unwrap_or_default();
            for job in &config.jobs {
                let (tenant, repo) = (job.tenant.as_str(), &job.repository);
                jobs.push(health::evaluate_job(&job.name, tenant, repo, &runs, a.max_age, now_ns));
            }
        }
    }
    let ok = results.iter().all(|h| h.ok) && jobs.iter().all(|j| j.ok);
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({ "ok": ok, "tenants": results, "jobs": jobs }))?;
    } else {
        for h in &results {
            if h.ok {
                let age = h.age_seconds.map(|s| format!("{s:.0}s")).unwrap_or_default();
                ctx.say(format_args!("ok: tenant {} ({}): newest snapshot {age} old", h.tenant, h.repository))?;
            } else {
                for p in &h.problems {
                    eprintln!("unhealthy: tenant {} ({}): {p}", h.tenant, h.repository);
                }
            }
        }
        say_jobs(ctx, &jobs)?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
}

/// One line per job: `ok` with its last successful backup, or each problem.
fn say_jobs(ctx: &Ctx, jobs: &[JobHealth]) -> Result<()> {
    for j in jobs {
        if j.ok {
            let last = j.tasks.get("backup").and_then(|t| t.last_success.as_deref()).unwrap_or("none recorded");
            ctx.say(format_args!("ok: job {} (tenant {}): last successful backup {last}", j.job, j.tenant))?;
        }
        for p in &j.problems {
            eprintln!("unhealthy: job {} (tenant {}): {p}", j.job, j.tenant);
        }
    }
    Ok(())
}

fn judge(repo: &Repo, url: &str, cache_dir: &std::path::Path, max_age: Duration, now_ns: i64) -> Result<TenantHealth> {
    let snaps = repo.snapshots()?;
    let path = health::check_record_path(cache_dir, &repo.config().id, repo.tenant());
    let last_check = health::load_check_record(&path);
    Ok(health::evaluate(repo.tenant().as_str(), url, &snaps, last_check, max_age, now_ns))
}

fn open_job(ctx: &Ctx, job: &strongroom_core::agent::Job, cache_dir: &std::path::Path) -> Result<Repo> {
    let secret = job.password.secret().map_err(|e| anyhow::anyhow!("job {}: {e}", job.name))?;
    let s3_endpoint = job.s3_endpoint.clone().or_else(|| ctx.global.s3_endpoint.clone());
    let store = strongroom_core::store::Store::open(
        &job.repository,
        &strongroom_core::store::OpenOptions {
            s3_endpoint,
            retry_timeout: ctx.global.io_retry_timeout,
            ..Default::default()
        },
        false,
    )?;
    let opts =
        repo::OpenOptions { cache_dir: cache_dir.to_path_buf(), lock_wait: ctx.global.lock_wait, memory_dir: None };
    Ok(ctx.rt.block_on(Repo::open(store, job.tenant.clone(), &secret, &opts))?)
}
