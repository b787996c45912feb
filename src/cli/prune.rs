//! `strongroom prune`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx};
use strongroom_core::prune::{self, PruneOptions, PruneSummary};
use strongroom_core::repo::Repo;

/// Arguments of `prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Unused space tolerated in kept packs, percent of all pack bytes
    #[arg(long, default_value = "5", value_name = "PERCENT", value_parser = strongroom_core::units::parse_percent)]
    pub max_unused: f64,
    /// Show what would be deleted and repacked; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep what prune finds unused this long (named by a tombstone, undeletable) before a later prune deletes it; 0 deletes at once [default: the tenant's setting, else 7d]
    #[arg(long, value_name = "DURATION", value_parser = strongroom_core::units::parse_duration)]
    pub quarantine: Option<std::time::Duration>,
}

/// The prune `forget --prune` runs: the default tolerance, for real, with
/// the quarantine forget resolved.
pub const AFTER_FORGET: PruneArgs = PruneArgs { max_unused: 5.0, dry_run: false, quarantine: None };

/// The library's options for `a`, reporting progress to `bar`; the lock
/// check before each deletion is set by whoever holds the guard.
pub fn options(ctx: &Ctx, a: &PruneArgs, bar: std::sync::Arc<super::progress::Bar>) -> PruneOptions {
    PruneOptions {
        max_unused_percent: a.max_unused,
        dry_run: a.dry_run,
        cancel: ctx.cancel.clone(),
        before_delete: Box::new(|| Ok(())),
        rewrite_below: None,
        progress: bar,
        quarantine: a.quarantine.unwrap_or(strongroom_core::tombstone::DEFAULT_QUARANTINE),
    }
}

/// Runs prune on an open repository whose exclusive lock the caller holds.
fn execute(ctx: &Ctx, repo: &Repo, guard: &strongroom_core::lock::LockGuard, a: &PruneArgs) -> Result<PruneSummary> {
    let bar = super::progress::Bar::phases(ctx.show_progress(), "prune");
    let mut opts = options(ctx, a, bar.clone());
    opts.quarantine = super::undelete::quarantine(ctx, repo, a.quarantine)?;
    opts.before_delete = Box::new(guard.checker());
    let result = prune::run(repo, &opts);
    bar.finish();
    let s = result?;
    ctx.note_audit_bytes(s.bytes_freed);
    Ok(s)
}

/// Prints a prune summary for people.
pub fn print(ctx: &Ctx, s: &PruneSummary) -> Result<()> {
    let p = &s.plan;
    ctx.say(format_args!(
        "{} packs ({}), {} blobs in use: delete {} unused and {} unindexed packs ({}), repack {} packs ({} of which {} used), keep {} packs ({} unused left)",
        p.packs,
        bytes(p.bytes_total),
        p.blobs_used,
        p.packs_unused,
        p.packs_unindexed,
        bytes(p.bytes_delete),
        p.packs_repack,
        bytes(p.bytes_repack),
        bytes(p.bytes_repack_used),
        p.packs_keep,
        bytes(p.bytes_unused_kept)
    ))?;
    if s.dry_run {
        ctx.say("dry run: nothing changed")
    } else {
        print_quarantine(ctx, &s.quarantine)?;
        ctx.say(format_args!(
            "freed {}, wrote {} new packs ({}), rewrote {} index deltas in {:.2}s",
            bytes(s.bytes_freed),
            s.packs_written,
            bytes(s.bytes_repacked),
            s.index_rewritten,
            s.duration_seconds
        ))?;
        if let Some(d) = &s.object_lock {
            ctx.say(format_args!(
                "object lock: deferred {} objects ({}) still retained by the store{}{}; extended retention of {} kept objects; removed {} expired versions",
                d.objects,
                bytes(d.bytes),
                if d.refused > 0 { format!(", {} refused by the server", d.refused) } else { String::new() },
                d.next_date.as_deref().map(|t| format!(", earliest may go after {t}")).unwrap_or_default(),
                d.extended,
                d.purged
            ))?;
        }
        Ok(())
    }
}

/// What was quarantined, and what earlier quarantines ended in.
fn print_quarantine(ctx: &Ctx, q: &strongroom_core::tombstone::Quarantine) -> Result<()> {
    use super::undelete::format_ms;
    if let (Some(name), Some(at)) = (&q.tombstone, q.deletable_after_ms) {
        ctx.say(format_args!(
            "quarantined {} packs and {} index deltas (tombstone {}): kept until {}, then deleted by a later prune",
            q.packs_quarantined,
            q.index_quarantined,
            name.get(..8).unwrap_or(name),
            format_ms(at)
        ))?;
    }
    let f = &q.finalized;
    if f.snapshots_deleted + f.index_deleted + f.packs_deleted + f.tombstones_deleted > 0 {
        ctx.say(format_args!(
            "quarantine over: deleted for good {} snapshot records, {} index deltas, {} packs ({}){}",
            f.snapshots_deleted,
            f.index_deleted,
            f.packs_deleted,
            bytes(f.bytes_deleted),
            if f.packs_kept_live > 0 {
                format!("; kept {} packs in use again", f.packs_kept_live)
            } else {
                String::new()
            }
        ))?;
    }
    if let Some(at) = f.next_deletable_ms {
        ctx.say(format_args!(
            "{} tombstones still in quarantine; the first may be deleted after {}",
            f.tombstones_waiting,
            format_ms(at)
        ))?;
    }
    if let Some(why) = &f.blocked {
        tracing::warn!("{why}");
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<ExitCode> {
    let repo = ctx.open_to_lock()?;
    let guard = ctx.lock_to_delete(&repo, "prune")?;
    let result = execute(ctx, &repo, &guard, &a);
    let s = ctx.unlock(&repo, guard, result)?;
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        print(ctx, &s)?;
    }
    Ok(ExitCode::SUCCESS)
}
