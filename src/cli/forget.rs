//! `strongroom forget`: removes snapshots by a retention policy, group by
//! group, or by id.
//!
//! Resolves the options into a [`Policy`] before opening the repository,
//! computes the [`strongroom_core::retention::ForgetPlan`], prints it, and (unless
//! `--dry-run`) deletes the snapshots it marks for removal. Explicit
//! `--keep-*` rules replace the tenant's plan for the run (and say so)
//! unless `--plus-plan` adds them to it.
//!
//! A damaged snapshot record is never removed by a policy and does not
//! count for it: its time, host and paths are unknown. The policy is
//! applied to the readable snapshots as if the damaged ones were absent,
//! which keeps at least the readable snapshots it would keep wherever a
//! damaged record belonged (it can only have taken a slot a readable one
//! now takes). Each damaged record is listed as kept, with a warning.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use strongroom_core::forget::{self, ForgetOptions, ForgetWhat};
use strongroom_core::group::GroupBy;
use strongroom_core::id::SnapshotId;
use strongroom_core::retention::{Plan, Policy, WithinSpan};
use strongroom_core::snapshot::Snapshot;

/// Arguments of `forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots ('unlimited' for all)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours ('unlimited' for all)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days ('unlimited' for all)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks ('unlimited' for all)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months ('unlimited' for all)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years ('unlimited' for all)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_yearly: Option<u32>,
    /// Keep snapshots newer than the group's newest snapshot minus DURATION (e.g. 7d, 12h, 1y2m)
    #[arg(long, value_name = "DURATION", value_parser = parse_within)]
    keep_within: Option<WithinSpan>,
    /// Keep snapshots with these tags (repeatable: any of them; 'a,b' needs both)
    #[arg(long = "keep-tag", value_name = "TAGS")]
    keep_tags: Vec<String>,
    /// Start from a named plan; --keep-* options override its rules
    #[arg(long, value_parser = parse_plan)]
    plan: Option<Plan>,
    /// Add the --keep-* options to the tenant's plan (without it they replace the plan for this run)
    #[arg(long)]
    plus_plan: bool,
    /// Group snapshots by these (host, paths, tags, job; comma-separated); the policy counts in each group alone
    #[arg(long, value_name = "FIELDS", default_value = "host,paths", value_parser = parse_group_by)]
    group_by: GroupBy,
    /// Apply the policy only to these snapshots
    #[command(flatten)]
    filter: super::filter::FilterArgs,
    /// Remove these snapshots (ids or unique prefixes) instead of applying a policy
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Prune unreferenced data afterwards (as `strongroom prune` with its defaults)
    #[arg(long)]
    prune: bool,
    /// Keep forgotten snapshots this long (undeletable) before a prune deletes them; 0 deletes at once [default: the tenant's setting, else 7d]
    #[arg(long, value_name = "DURATION", value_parser = strongroom_core::units::parse_duration)]
    quarantine: Option<std::time::Duration>,
}

/// The JSON shape of one decision (documented in docs/GUIDE.md).
#[derive(serde::Serialize)]
struct DecisionJson {
    id: String,
    short_id: String,
    time: String,
    host: String,
    paths: Vec<String>,
    tags: Vec<String>,
    action: &'static str,
    reasons: Vec<String>,
    /// The tenant's plan, when explicit rules replaced it for this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced_plan: Option<&'static str>,
    /// A damaged record only: what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    damaged: Option<String>,
    /// A removed snapshot only: when a prune may delete it for good (until
    /// then `undelete` brings it back).
    #[serde(skip_serializing_if = "Option::is_none")]
    deletable_after: Option<String>,
}

/// The options of a run and how its policy came about, for showing it.
struct Shown<'a> {
    opts: &'a ForgetOptions,
    /// The tenant's plan that explicit rules replaced.
    replaced: Option<Plan>,
}

/// The reason given for keeping a damaged snapshot record.
const DAMAGED_KEPT: &str = "damaged record: kept, not counted by the policy";

fn parse_count(s: &str) -> std::result::Result<u32, String> {
    if s == "unlimited" {
        return Ok(u32::MAX);
    }
    s.parse().map_err(|_| format!("invalid count {s:?}: use a number (0 or more) or 'unlimited'"))
}

fn parse_within(s: &str) -> std::result::Result<WithinSpan, String> {
    s.parse().map_err(|e: strongroom_core::Error| e.to_string())
}

fn parse_plan(s: &str) -> std::result::Result<Plan, String> {
    s.parse().map_err(|e: strongroom_core::Error| e.to_string())
}

fn parse_group_by(s: &str) -> std::result::Result<GroupBy, String> {
    s.parse().map_err(|e: strongroom_core::Error| e.to_string())
}

/// The policy of a run and what it came from.
struct Chosen {
    policy: Policy,
    /// The tenant's plan that explicit rules replaced.
    replaced: Option<Plan>,
}

impl ForgetArgs {
    /// The policy: explicit rules alone when given (they replace the
    /// tenant's plan), laid over `--plan` or (with `--plus-plan`) the
    /// tenant's plan; else `--plan` or the tenant's plan.
    fn policy(&self, tenant_plan: Option<Plan>) -> Result<Chosen> {
        let explicit = Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_tags: self.keep_tags.clone(),
        };
        let given = explicit != Policy::default();
        anyhow::ensure!(
            !self.plus_plan || tenant_plan.is_some() || self.plan.is_some(),
            "--plus-plan: the tenant has no plan (set one with `strongroom tenant set NAME --plan`)"
        );
        // --plan, else the tenant's plan (`tenant set --plan`), is the base;
        // explicit rules replace the tenant's plan unless --plus-plan.
        let (base, replaced) = match (self.plan, tenant_plan) {
            (Some(plan), _) => (Some(plan), None),
            (None, Some(plan)) if given && !self.plus_plan => (None, Some(plan)),
            (None, plan) => (plan, None),
        };
        let policy = match base {
            Some(plan) => plan.policy().overlay(&explicit),
            None => explicit,
        };
        anyhow::ensure!(
            !policy.is_empty(),
            "no retention policy: give --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, \
             --keep-yearly, --keep-within or --keep-tag (with a value other than 0), or --plan basic|pro|enterprise \
             (or give the tenant a plan with `strongroom tenant set NAME --plan`); refusing to remove every snapshot"
        );
        Ok(Chosen { policy, replaced })
    }

    /// What the run removes: the named snapshots, or what the policy
    /// does not keep.
    fn what(&self, ctx: &Ctx, repo: &strongroom_core::repo::Repo) -> Result<(ForgetWhat, Option<Plan>)> {
        if !self.snapshots.is_empty() {
            let rules = self.keep_last.is_some()
                || self.keep_hourly.is_some()
                || self.keep_daily.is_some()
                || self.keep_weekly.is_some()
                || self.keep_monthly.is_some()
                || self.keep_yearly.is_some()
                || self.keep_within.is_some()
                || !self.keep_tags.is_empty()
                || self.plan.is_some()
                || self.plus_plan;
            anyhow::ensure!(
                !rules,
                "forget SNAPSHOT... removes the snapshots named: give no --keep-*, --plan or --plus-plan with it"
            );
            return Ok((ForgetWhat::Ids(self.snapshots.clone()), None));
        }
        let tenant_plan = match self.plan {
            Some(_) if !self.plus_plan => None,
            _ => ctx.rt.block_on(strongroom_core::tenant::load_settings(repo.scope()))?.plan()?,
        };
        let chosen = self.policy(tenant_plan)?;
        Ok((ForgetWhat::Policy(chosen.policy), chosen.replaced))
    }
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<ExitCode> {
    // A dry run plans from the snapshot records alone; the real one syncs
    // everything (prune may follow) once it holds the lock.
    let repo = if a.dry_run { ctx.open_for_snapshots()? } else { ctx.open_to_lock()? };
    let (what, replaced) = a.what(ctx, &repo)?;
    let opts = ForgetOptions {
        what,
        filter: a.filter.filter(),
        group_by: a.group_by,
        now_ns: jiff::Timestamp::now().as_nanosecond() as i64,
        tz: jiff::tz::TimeZone::system(),
        quarantine: if a.dry_run {
            std::time::Duration::ZERO
        } else {
            super::undelete::quarantine(ctx, &repo, a.quarantine)?
        },
    };
    let shown = Shown { opts: &opts, replaced };
    if a.dry_run {
        let planned = forget::dry_run(&repo, &opts)?;
        let v = show_plan(ctx, &planned, &shown)?;
        if ctx.global.json {
            ctx.print_json(&v)?;
        } else {
            let (remove, of) = (planned.plan.remove_ids().len(), planned.snapshots.len());
            ctx.say(format_args!("would remove {remove} of {of} snapshots (dry run)"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let guard = ctx.lock_to_delete(&repo, "forget")?;
    let result = forget_locked(ctx, &repo, &guard, &a, &shown);
    ctx.unlock(&repo, guard, result)
}

/// Runs the library's forget protocol under the exclusive lock `guard`,
/// showing the plan before anything is deleted.
fn forget_locked(
    ctx: &Ctx,
    repo: &strongroom_core::repo::Repo,
    guard: &strongroom_core::lock::LockGuard,
    a: &ForgetArgs,
    shown: &Shown<'_>,
) -> Result<ExitCode> {
    let opts = shown.opts;
    let bar = a.prune.then(|| super::progress::Bar::phases(ctx.show_progress(), "prune"));
    let prune_opts = bar.as_ref().map(|bar| {
        let mut p = super::prune::options(ctx, &super::prune::AFTER_FORGET, bar.clone());
        p.quarantine = opts.quarantine;
        p
    });
    let (mut v, mut of) = (Vec::new(), 0);
    let result = forget::run(repo, guard, opts, prune_opts, |planned| {
        // A plan that could not be shown is not acted on.
        v = show_plan(ctx, planned, shown).map_err(|e| strongroom_core::Error::Io {
            path: "standard output".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        of = planned.snapshots.len();
        Ok(())
    });
    if let Some(bar) = &bar {
        bar.finish();
    }
    let done = result?;
    ctx.note_audit(done.removed.iter().map(|id| id.to_hex()).collect(), 0);
    let deletable_after = done.deletable_after_ms.map(super::undelete::format_ms);
    for d in v.iter_mut().filter(|d| d.action == "remove") {
        d.deletable_after.clone_from(&deletable_after);
    }
    if !ctx.global.json {
        ctx.say(format_args!("removed {} of {of} snapshots", done.removed.len()))?;
        if let Some(at) = &deletable_after {
            ctx.say(format_args!(
                "quarantined until {at}: `strongroom undelete` brings them back until a prune deletes them after that"
            ))?;
        }
    }
    match done.prune {
        Some(s) => {
            ctx.note_audit_bytes(s.bytes_freed);
            if ctx.global.json {
                // One document: the decisions and what prune did.
                let replaced_plan = shown.replaced.map(Plan::name);
                ctx.print_json(&serde_json::json!({ "snapshots": v, "prune": s, "replaced_plan": replaced_plan }))?;
            } else {
                super::prune::print(ctx, &s)?;
            }
        }
        None if ctx.global.json => ctx.print_json(&v)?,
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the plan for people (unless `--json` or `--quiet`) and returns
/// its JSON form; warns about each damaged snapshot record.
fn show_plan(ctx: &Ctx, planned: &forget::Planned, shown: &Shown<'_>) -> Result<Vec<DecisionJson>> {
    for d in &planned.damaged {
        tracing::warn!(object = %d.object, "{DAMAGED_KEPT} (the policy applies to the readable snapshots)");
    }
    if ctx.global.json {
        return Ok(decisions_json(planned, shown.replaced));
    }
    if !ctx.global.quiet {
        print_plan(planned, shown)?;
    }
    Ok(Vec::new())
}

/// The decisions as JSON: the readable snapshots, then the damaged records.
fn decisions_json(planned: &forget::Planned, replaced: Option<Plan>) -> Vec<DecisionJson> {
    let by_id: HashMap<SnapshotId, &Snapshot> = planned.snapshots.iter().map(|s| (s.id, s)).collect();
    let mut v = Vec::new();
    for d in planned.plan.decisions() {
        let Some(s) = by_id.get(&d.id) else { continue };
        v.push(DecisionJson {
            id: s.id.to_hex(),
            short_id: s.id.short(),
            time: s.record.time.clone(),
            host: s.record.hostname.clone(),
            paths: s.record.paths.clone(),
            tags: s.record.tags.clone(),
            action: d.action.as_str(),
            reasons: d.reasons.iter().map(|r| r.to_string()).collect(),
            replaced_plan: replaced.map(Plan::name),
            damaged: None,
            deletable_after: None,
        });
    }
    for d in &planned.damaged {
        let id = d.id_hex();
        v.push(DecisionJson {
            id: id.to_string(),
            short_id: id.get(..8).unwrap_or(id).to_string(),
            time: String::new(),
            host: String::new(),
            paths: Vec::new(),
            tags: Vec::new(),
            action: "keep",
            reasons: vec![DAMAGED_KEPT.to_string()],
            replaced_plan: replaced.map(Plan::name),
            damaged: Some(d.why.clone()),
            deletable_after: None,
        });
    }
    v
}

/// The plan as a table per group, then the damaged records.
fn print_plan(planned: &forget::Planned, shown: &Shown<'_>) -> Result<()> {
    let opts = shown.opts;
    match (&opts.what, shown.replaced) {
        (ForgetWhat::Policy(p), None) => out!("applying policy: {p}"),
        (ForgetWhat::Policy(p), Some(plan)) => out!(
            "applying policy: {p} (replacing the tenant's plan {} for this run; --plus-plan keeps its rules too)",
            plan.name()
        ),
        (ForgetWhat::Ids(_), _) => out!("removing the snapshots named"),
    }
    if !opts.filter.is_empty() {
        out!("only snapshots matching {}", opts.filter.describe());
    }
    for g in &planned.plan.groups {
        out!("");
        out!("{}:", g.key);
        out!("{:<8}  {:<19}  {:<6}  reasons", "id", "time", "action");
        for d in &g.decisions {
            let time = jiff::Timestamp::from_nanosecond(i128::from(d.time_ns))
                .map(|t| t.to_zoned(opts.tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|_| d.time_ns.to_string());
            let reasons: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
            out!("{:<8}  {:<19}  {:<6}  {}", d.id.short(), time, d.action.as_str(), reasons.join(", "));
        }
    }
    if !planned.damaged.is_empty() {
        out!("");
        out!("damaged snapshot records:");
        for d in &planned.damaged {
            let id = d.id_hex();
            out!("{:<8}  {:<19}  {:<6}  {DAMAGED_KEPT} ({})", id.get(..8).unwrap_or(id), "?", "keep", d.why);
        }
    }
    out!("");
    Ok(())
}
