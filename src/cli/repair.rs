//! `strongroom repair`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use crate::lock::LockKind;
use crate::repair::{self, RepairOptions};

/// Arguments of `repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Report what would be repaired; change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Ctx, a: RepairArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let guard = ctx.lock(&repo, LockKind::Exclusive, "repair")?;
    let result = repair::run(&repo, ctx.rt.handle(), RepairOptions { dry_run: a.dry_run });
    let s = ctx.unlock(&repo, guard, result.map_err(anyhow::Error::from))?;
    if ctx.global.json {
        return ctx.print_json(&s).map(|()| ExitCode::SUCCESS);
    }
    let verb = if s.dry_run { "would " } else { "" };
    ctx.say(format_args!("{verb}index {} unindexed packs ({} chunks)", s.packs_indexed, s.chunks_indexed))?;
    for p in &s.packs_unreadable {
        eprintln!("strongroom: pack {p}: not in any index and damaged; left in place (prune removes it)");
    }
    for p in &s.packs_missing {
        eprintln!("strongroom: pack {p}: missing from the store");
    }
    ctx.say(format_args!("{verb}rewrite {} index deltas without missing packs", s.index_rewritten))?;
    for r in &s.snapshots {
        for (path, why) in &r.removed {
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
    Ok(ExitCode::SUCCESS)
}
