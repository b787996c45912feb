//! `strongroom restore`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx, EXIT_ERROR};
use crate::restore::{self, RestoreOptions};
use crate::snapshot::split_ref;
use crate::source::Excludes;

/// Arguments of `restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT[:PATH]: with PATH, its contents go directly into the target
    snapshot: String,
    /// Directory to restore into
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching GLOB (and everything below them; repeatable)
    #[arg(long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Skip paths matching GLOB (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Re-read every restored file and compare it with the snapshot
    #[arg(long)]
    verify: bool,
    /// With `latest`: the newest snapshot at or before this time
    #[arg(long)]
    at: Option<String>,
}

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    let (reference, sub) = split_ref(&a.snapshot);
    let at = a.at.as_deref().map(crate::snapshot::parse_time).transpose()?;
    let includes = if a.includes.is_empty() { None } else { Some(Excludes::new(&a.includes)?) };
    let excludes = Excludes::new(&a.excludes)?;
    let target = std::path::absolute(&a.target)?;
    let repo = ctx.open()?;
    let snap = repo.resolve(reference, at)?;
    let bar = super::progress::Bar::bytes(ctx.show_progress(), Some(snap.record.summary.logical_bytes), "restore");
    let opts = RestoreOptions {
        target,
        includes,
        excludes,
        verify: a.verify,
        io_concurrency: ctx.global.io_concurrency,
        cancel: ctx.cancel.clone(),
        progress: bar.clone(),
    };
    ctx.note_audit(vec![snap.id.to_hex()], 0);
    let guard = ctx.lock(&repo, crate::lock::LockKind::Shared, "restore")?;
    let result = restore::run(&repo, ctx.rt.handle(), &snap, sub, &opts);
    bar.finish();
    let s = ctx.unlock(&repo, guard, result.map_err(anyhow::Error::from))?;
    ctx.metrics.restore(&ctx.labels(), s.duration_seconds);
    for (path, err) in &s.errors {
        eprintln!("strongroom: {path}: {err}");
    }
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        ctx.say(format!(
            "restored snapshot {} to {}: {} files ({}), {} directories, {} other entries in {:.2}s{}",
            snap.id.short(),
            opts.target.display(),
            s.files,
            bytes(s.bytes),
            s.dirs,
            s.others + s.hardlinks,
            s.duration_seconds,
            if a.verify { format!("; {} files verified", s.files_verified) } else { String::new() }
        ))?;
    }
    if !s.errors.is_empty() {
        eprintln!("strongroom: {} entries could not be restored", s.errors.len());
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}
