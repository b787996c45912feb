//! `strongroom undelete`: brings back snapshots forgotten within the
//! quarantine; and how a command resolves the quarantine it applies.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use strongroom_core::lock::LockKind;
use strongroom_core::repo::Repo;
use strongroom_core::tombstone::{self, UndeleteWhat};

/// Arguments of `undelete`.
#[derive(Args, Debug)]
pub struct UndeleteArgs {
    /// Forgotten snapshots to bring back (ids or unique prefixes of 4+ hex digits)
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["all", "since"])]
    snapshots: Vec<String>,
    /// Bring back every forgotten snapshot still in the store
    #[arg(long, conflicts_with_all = ["snapshots", "since"])]
    all: bool,
    /// Bring back the snapshots forgotten at or after TIME (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long, value_name = "TIME", conflicts_with = "snapshots")]
    since: Option<String>,
}

/// The quarantine a command applies: `flag`, else the tenant's setting
/// (`tenant set --quarantine`), else the default of 7 days.
pub fn quarantine(ctx: &Ctx, repo: &Repo, flag: Option<Duration>) -> Result<Duration> {
    if let Some(q) = flag {
        return Ok(q);
    }
    let settings = ctx.rt.block_on(strongroom_core::tenant::load_settings(repo.scope()))?;
    Ok(settings.quarantine()?.unwrap_or(tombstone::DEFAULT_QUARANTINE))
}

/// A time given in Unix ms as an RFC 3339 UTC timestamp.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

pub fn run(ctx: &Ctx, a: UndeleteArgs) -> Result<ExitCode> {
    let what = if a.all {
        UndeleteWhat::All
    } else if let Some(t) = &a.since {
        let ns = strongroom_core::snapshot::parse_time(t)?;
        UndeleteWhat::Since(ns.div_euclid(1_000_000))
    } else {
        UndeleteWhat::Ids(a.snapshots.clone())
    };
    let repo = ctx.open_to_lock()?;
    let guard = ctx.lock(&repo, LockKind::Exclusive, "undelete")?;
    let result = tombstone::undelete(&repo, &what).map_err(Into::into);
    let done = ctx.unlock(&repo, guard, result)?;
    ctx.note_audit(done.snapshots.iter().map(|f| f.snapshot.clone()).collect(), 0);
    if ctx.global.json {
        ctx.print_json(&done)?;
        return Ok(ExitCode::SUCCESS);
    }
    if done.snapshots.is_empty() {
        ctx.say("no forgotten snapshot to bring back")?;
    }
    for f in &done.snapshots {
        ctx.say(format_args!(
            "snapshot {} brought back (forgotten at {})",
            f.snapshot.get(..8).unwrap_or(&f.snapshot),
            format_ms(f.forgotten_ms)
        ))?;
    }
    if !done.snapshots.is_empty() {
        ctx.say(format_args!(
            "{} quarantined packs indexed again; {} blobs checked, all indexed",
            done.packs_restored, done.blobs_checked
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
