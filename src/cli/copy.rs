//! `strongroom copy`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{bytes, Ctx};
use strongroom_core::group::SnapshotFilter;
use strongroom_core::lock::LockKind;
use strongroom_core::repo::{Repo, Secret};
use strongroom_core::snapshot::{Rewritten, Snapshot};

/// Arguments of `copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Target repository URL; the tenant must exist there (see `init --copy-keys-from`)
    #[arg(long, value_name = "URL")]
    to: String,
    /// Read the target tenant's password from this file [default: the source's password]
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Only snapshots taken at or after this time (RFC 3339 or YYYY-MM-DD[ HH:MM[:SS]])
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Snapshots to copy (ids, prefixes or `latest`) [default: all]
    snapshots: Vec<String>,
    /// Which snapshots are copied (and which one `latest` is)
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

pub fn run(ctx: &Ctx, a: CopyArgs) -> Result<ExitCode> {
    let since = a.since.as_deref().map(strongroom_core::snapshot::parse_time).transpose()?;
    let src = ctx.open()?;
    let dst_store = ctx.store_at(&a.to, false)?;
    let secret = match &a.to_password_file {
        Some(f) => Secret::new(super::read_secret_file(f)?.to_vec()),
        None => ctx.password(false)?,
    };
    let opts = ctx.open_options()?;
    let dst = ctx
        .rt
        .block_on(Repo::open(dst_store, ctx.tenant()?, &secret, &opts))
        .with_context(|| format!("opening the target {}", a.to))?;

    let src_guard = ctx.lock(&src, LockKind::Shared, "copy (source)")?;
    let dst_guard = match ctx.lock(&dst, LockKind::Shared, "copy") {
        Ok(g) => g,
        Err(e) => return ctx.unlock(&src, src_guard, Err(e.context(format!("locking the target {}", a.to)))),
    };
    let result = (|| -> Result<_> {
        let chosen = select(&src, &a.snapshots, &a.filter.filter(), since)?;
        Ok(ctx.rt.block_on(strongroom_core::copy::run(&src, &dst, &chosen))?)
    })();
    if let Ok(s) = &result {
        ctx.note_audit(s.copied.iter().map(|c| c.to.clone()).collect(), s.bytes_written);
    }
    // The target's audit log records the copy, the source's what was
    // read: the source snapshots and the bytes written from them.
    let result = ctx.unlock(&dst, dst_guard, result);
    if let Ok(s) = &result {
        ctx.note_audit(s.copied.iter().map(|c| c.from.clone()).collect(), s.bytes_written);
    }
    let s = ctx.unlock(&src, src_guard, result)?;

    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        for Rewritten { from, to } in &s.copied {
            ctx.say(format!("copied snapshot {} to {}", &from[..8.min(from.len())], &to[..8.min(to.len())]))?;
        }
        ctx.say(format!(
            "{} snapshots copied, {} already there; {} packs moved as they are, {} blobs re-sealed, {} blobs present; {} written",
            s.copied.len(),
            s.skipped.len(),
            s.packs_copied,
            s.blobs_resealed,
            s.blobs_present,
            bytes(s.bytes_written)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshots named (all when none), filtered by the filter and time, oldest first.
fn select(repo: &Repo, refs: &[String], filter: &SnapshotFilter, since: Option<i64>) -> Result<Vec<Snapshot>> {
    let mut chosen: Vec<Snapshot> = if refs.is_empty() {
        repo.snapshots()?
    } else {
        let pick = strongroom_core::snapshot::Pick { filter, named: None };
        refs.iter().map(|r| repo.resolve(r, None, &pick)).collect::<strongroom_core::Result<_>>()?
    };
    chosen.retain(|s| filter.matches(&s.record));
    chosen.retain(|s| since.is_none_or(|t| s.time_ns >= t));
    chosen.sort_by_key(|s| s.time_ns);
    chosen.dedup_by_key(|s| s.id);
    Ok(chosen)
}
