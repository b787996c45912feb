//! `strongroom repair`

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use strongroom_core::lock::LockKind;
use strongroom_core::repair::{self, RepairOptions, RepairSummary};

/// Arguments of `repair`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RepairArgs {
    /// Report what would be repaired; change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(subcommand)]
    part: Option<RepairPart>,
}

/// One part of a repair.
#[derive(Subcommand, Debug)]
pub enum RepairPart {
    /// Index again packs that no readable index delta lists, drop entries of missing packs, and remove damaged index deltas
    Index {
        /// Report what would be repaired; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Rewrite snapshots that reference missing data; with --forget-damaged, remove damaged snapshot records instead
    Snapshots {
        /// Remove the snapshot records that fail verification (each is read and verified again first)
        #[arg(long)]
        forget_damaged: bool,
        /// Report what would be repaired; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Object lock: bring back every object of the repository hidden by a delete since TIME (removes the S3 delete markers placed since then; needs no password, as the config and key slots may be hidden too)
    Undelete {
        /// Delete markers placed at or after this time are removed (RFC 3339, or YYYY-MM-DD[ HH:MM[:SS]] local time)
        #[arg(long, value_name = "TIME")]
        since: String,
        /// Report what would be brought back; change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(ctx: &Ctx, a: RepairArgs) -> Result<ExitCode> {
    let (command, dry_run) = match &a.part {
        Some(RepairPart::Undelete { since, dry_run }) => return undelete(ctx, since, *dry_run),
        None => ("repair", a.dry_run),
        Some(RepairPart::Index { dry_run }) => ("repair index", *dry_run),
        Some(RepairPart::Snapshots { dry_run, .. }) => ("repair snapshots", *dry_run),
    };
    let opts = RepairOptions { dry_run };
    let repo = ctx.open_to_lock()?;
    let guard =
        if dry_run { ctx.lock(&repo, LockKind::Exclusive, command)? } else { ctx.lock_to_delete(&repo, command)? };
    let result = match &a.part {
        // (`undelete` returned above.)
        None | Some(RepairPart::Undelete { .. }) => repair::run(&repo, opts),
        Some(RepairPart::Index { .. }) => repair::run_index(&repo, opts),
        Some(RepairPart::Snapshots { forget_damaged: true, .. }) => repair::forget_damaged_snapshots(&repo, opts),
        Some(RepairPart::Snapshots { forget_damaged: false, .. }) => repair::run_snapshots(&repo, opts),
    };
    if let Ok(s) = &result {
        let removed: Vec<String> = s
            .damaged_removed
            .iter()
            .filter(|d| !s.dry_run && d.object.contains("/snapshots/"))
            .filter_map(|d| d.object.rsplit('/').next().map(str::to_string))
            .collect();
        ctx.note_audit(removed, 0);
    }
    let s = ctx.unlock(&repo, guard, result.map_err(anyhow::Error::from))?;
    if ctx.global.json {
        return ctx.print_json(&s).map(|()| ExitCode::SUCCESS);
    }
    print(ctx, &a, &s)?;
    Ok(ExitCode::SUCCESS)
}

/// `repair undelete`: store-level, without opening the repository.
fn undelete(ctx: &Ctx, since: &str, dry_run: bool) -> Result<ExitCode> {
    let store = ctx.store(false)?;
    let since_s = strongroom_core::snapshot::parse_time(since)? / 1_000_000_000;
    let client = store.object_lock_client().ok_or_else(|| {
        anyhow::anyhow!("repair undelete: {} is not an S3 store with static credentials", store.url())
    })?;
    let u = ctx.rt.block_on(strongroom_core::object_lock::undelete(&client, "", since_s, dry_run))?;
    if ctx.global.json {
        ctx.print_json(
            &serde_json::json!({ "dry_run": dry_run, "markers_removed": u.markers_removed, "lost": u.lost }),
        )?;
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        ctx.say(format_args!("{verb} {} delete markers placed since {since}", u.markers_removed))?;
        for k in &u.lost {
            ctx.say(format_args!("lost: {k} (every version deleted)"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(ctx: &Ctx, a: &RepairArgs, s: &RepairSummary) -> Result<()> {
    let verb = if s.dry_run { "would " } else { "" };
    let index_step = matches!(a.part, None | Some(RepairPart::Index { .. }));
    if index_step {
        ctx.say(format_args!("{verb}index {} unindexed packs ({} chunks)", s.packs_indexed, s.chunks_indexed))?;
        for p in &s.packs_unreadable {
            eprintln!("strongroom: pack {p}: not in any index and damaged; left in place (prune removes it)");
        }
        for p in &s.packs_missing {
            eprintln!("strongroom: pack {p}: missing from the store");
        }
        ctx.say(format_args!("{verb}rewrite {} index deltas without missing packs", s.index_rewritten))?;
    }
    for d in &s.damaged_removed {
        ctx.say(format_args!("{verb}remove damaged {}: {}", d.object, d.why))?;
    }
    for o in &s.damaged_intact {
        eprintln!("strongroom: {o}: reads intact now; kept");
    }
    if matches!(a.part, Some(RepairPart::Snapshots { forget_damaged: true, .. })) && s.damaged_removed.is_empty() {
        ctx.say("no damaged snapshot record")?;
    }
    for r in &s.snapshots {
        for strongroom_core::FileError { path, error: why } in &r.removed {
            eprintln!("strongroom: snapshot {}: {path}: {why}", &r.old_id[..8]);
        }
        match &r.new_id {
            Some(n) => ctx.say(format_args!(
                "snapshot {} replaced by {} (tag repaired) without {} damaged entries",
                &r.old_id[..8],
                &n[..8],
                r.removed.len()
            ))?,
            None => {
                ctx.say(format_args!("would rewrite snapshot {} without {} entries", &r.old_id[..8], r.removed.len()))?
            }
        }
    }
    Ok(())
}
