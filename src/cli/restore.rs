//! `strongroom restore`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx, EXIT_ERROR};
use strongroom_core::backup::BackupSummary;
use strongroom_core::restore::{self, Overwrite, RestoreOptions, RestoreSummary};
use strongroom_core::snapshot::{split_ref, Pick, Snapshot};
use strongroom_core::source::Excludes;

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
    /// Existing target files: always, if-changed (keep files whose content already matches), if-newer (also keep
    /// files newer in the target: merge) or never
    #[arg(long, default_value = "if-changed", value_name = "MODE")]
    overwrite: Overwrite,
    /// Remove entries of restored directories that the snapshot does not have
    #[arg(long)]
    delete: bool,
    /// List what would be written, kept and deleted; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Back up the target (tag `safety`) before changing it, and print that snapshot's id
    #[arg(long, conflicts_with = "dry_run")]
    safety_snapshot: bool,
    /// Set the extended attributes and POSIX ACLs the snapshot recorded [default]
    #[arg(long, overrides_with = "no_xattrs")]
    xattrs: bool,
    /// Do not set extended attributes and POSIX ACLs
    #[arg(long, overrides_with = "xattrs")]
    no_xattrs: bool,
    /// Which snapshots `latest` looks at
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    let (reference, sub) = split_ref(&a.snapshot);
    let at = a.at.as_deref().map(strongroom_core::snapshot::parse_time).transpose()?;
    let includes = if a.includes.is_empty() { None } else { Some(Excludes::new(&a.includes)?) };
    let excludes = Excludes::new(&a.excludes)?;
    let target = std::path::absolute(&a.target)?;
    // The lock first: its sync is the only one (on object storage a
    // sync before it would cost its round trips twice).
    let repo = ctx.open_to_lock()?;
    let guard = ctx.lock(&repo, strongroom_core::lock::LockKind::Shared, "restore")?;
    let filter = a.filter.filter();
    let snap = match repo.resolve(reference, at, &Pick { filter: &filter, named: sub }) {
        Ok(snap) => snap,
        Err(e) => return ctx.unlock(&repo, guard, Err(anyhow::Error::from(e))),
    };
    let bar = super::progress::Bar::bytes(ctx.show_progress(), Some(snap.record.summary.logical_bytes), "restore");
    let opts = RestoreOptions {
        target,
        includes,
        excludes,
        verify: a.verify,
        overwrite: a.overwrite,
        delete: a.delete,
        dry_run: a.dry_run,
        subset: None,
        io_concurrency: ctx.global.io_concurrency,
        xattrs: !a.no_xattrs,
        cancel: ctx.cancel.clone(),
        progress: bar.clone(),
    };
    ctx.note_audit(vec![snap.id.to_hex()], 0);
    ctx.note_audit_paths(sub.map(str::to_string).into_iter().collect());
    let result = if a.safety_snapshot {
        let saved = |s: &BackupSummary| {
            if !ctx.global.json {
                let _ = ctx.say(format!(
                    "safety snapshot {} of {} saved (tag safety)",
                    s.short_id.as_deref().unwrap_or_default(),
                    opts.target.display()
                ));
            }
        };
        restore::with_safety_snapshot(&repo, &guard, &snap, sub, &opts, saved)
            .map(|done| (done.restore, done.safety.and_then(|s| s.short_id)))
    } else {
        restore::run(&repo, &snap, sub, &opts).map(|s| (s, None))
    };
    bar.finish();
    if let Err(strongroom_core::Error::SafetySnapshotIncomplete { unreadable, .. }) = &result {
        for e in unreadable {
            eprintln!("strongroom: safety snapshot: {}: {}", e.path, e.error);
        }
    }
    if let Ok((s, _)) = &result {
        ctx.note_audit_bytes(s.bytes);
    }
    let (s, safety) = ctx.unlock(&repo, guard, result.map_err(anyhow::Error::from))?;
    ctx.metrics.restore(&ctx.labels(), s.duration_seconds);
    report(ctx, &a, &snap, &opts, &s, safety)
}

/// Prints what the restore did (and its safety snapshot's id); exit 1
/// when entries could not be restored.
fn report(
    ctx: &Ctx,
    a: &RestoreArgs,
    snap: &Snapshot,
    opts: &RestoreOptions,
    s: &RestoreSummary,
    safety: Option<String>,
) -> Result<ExitCode> {
    for f in &s.errors {
        eprintln!("strongroom: {}: {}", f.path, f.error);
    }
    if s.xattrs_skipped > 0 {
        tracing::warn!(
            "left out {} security.* and trusted.* extended attributes: setting them needs root",
            s.xattrs_skipped
        );
    }
    if ctx.global.json {
        let mut v = serde_json::to_value(s)?;
        if let (Some(id), Some(obj)) = (safety, v.as_object_mut()) {
            obj.insert("safety_snapshot".into(), id.into());
        }
        ctx.print_json(&v)?;
    } else if a.dry_run {
        for act in &s.actions {
            out!("{:<6} {} ({})", act.action, act.path, act.reason);
        }
        ctx.say(format!(
            "dry run of snapshot {} into {}: would write {}, keep {}, delete {}; nothing changed",
            snap.id.short(),
            opts.target.display(),
            s.files,
            s.kept,
            s.deleted
        ))?;
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
        if s.kept > 0 || s.deleted > 0 {
            ctx.say(format!("kept {} existing entries, deleted {}", s.kept, s.deleted))?;
        }
    }
    if !s.errors.is_empty() {
        eprintln!("strongroom: {} entries could not be restored", s.errors.len());
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}
