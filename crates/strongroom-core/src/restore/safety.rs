//! Restore with a safety snapshot: back up the target, then restore into
//! it, as one protocol under the caller's lock.
//!
//! Owns: the order of the steps. The target is backed up first (tag
//! [`SAFETY_TAG`], with the tenant's compression and quota; the snapshot
//! record is written only while the caller's lock holds). The restore
//! starts only when that snapshot is complete, so a safety snapshot that
//! fails or misses entries leaves the target as it was. A missing or empty
//! target has nothing to save and is restored into at once; so is any
//! target in a dry run, which changes nothing.
//!
//! This is the one part of `restore` that calls another operation
//! (`backup`). Must not: print.

use std::sync::Arc;

use crate::backup::{self, BackupOptions, BackupSummary, ParentChoice, Quota};
use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::Excludes;

use super::{RestoreOptions, RestoreSummary};

/// The tag of every safety snapshot; safety snapshots form groups of
/// their own (see `group`), so they never become a source's `latest`.
pub use crate::group::SAFETY_TAG;

/// What a restore with a safety snapshot did.
#[derive(Debug, Clone)]
pub struct SafeRestoreSummary {
    /// The backup of the target as it was; `None` when there was nothing
    /// to save (a missing or empty target) or this was a dry run.
    pub safety: Option<BackupSummary>,
    /// What the restore did.
    pub restore: RestoreSummary,
}

/// Under the caller's lock `guard` (a shared one suffices, as for a
/// backup): backs up `opts.target` with the tag [`SAFETY_TAG`], hands that
/// snapshot to `on_saved` (so its id is known even if the restore then
/// fails), then restores `snapshot` (or `subpath` of it) as
/// [`super::run`] does.
///
/// A safety snapshot that fails is [`Error::SafetySnapshot`], one that
/// could not read every entry is [`Error::SafetySnapshotIncomplete`]; in
/// both cases nothing in the target was changed.
pub fn with_safety_snapshot(
    repo: &Repo,
    guard: &LockGuard,
    snapshot: &Snapshot,
    subpath: Option<&str>,
    opts: &RestoreOptions,
    on_saved: impl FnOnce(&BackupSummary),
) -> Result<SafeRestoreSummary> {
    let safety = if opts.dry_run { None } else { save_target(repo, guard, opts)? };
    if let Some(s) = &safety {
        on_saved(s);
    }
    let restore = super::run(repo, snapshot, subpath, opts)?;
    Ok(SafeRestoreSummary { safety, restore })
}

/// Backs up the target if it has entries; fails unless that backup is
/// complete.
fn save_target(repo: &Repo, guard: &LockGuard, opts: &RestoreOptions) -> Result<Option<BackupSummary>> {
    let failed = |e: Error| Error::SafetySnapshot { cause: Box::new(e) };
    if !has_entries(&opts.target).map_err(failed)? {
        return Ok(None);
    }
    let backup_opts = backup_options(repo, guard, opts).map_err(failed)?;
    let saved = backup::run(repo, backup_opts).map_err(failed)?;
    if !saved.errors.is_empty() {
        return Err(Error::SafetySnapshotIncomplete {
            snapshot: saved.short_id.unwrap_or_default(),
            unreadable: saved.errors,
        });
    }
    Ok(Some(saved))
}

/// Whether the target directory has entries; a missing one has none. A
/// target that cannot be listed is an error, not empty: its entries would
/// go unsaved.
fn has_entries(target: &std::path::Path) -> Result<bool> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(target, e)),
    }
}

/// The safety snapshot's backup: the target alone, the tenant's
/// compression and quota, the restore's concurrency and cancel flag, and
/// the record written only while `guard` holds.
fn backup_options(repo: &Repo, guard: &LockGuard, opts: &RestoreOptions) -> Result<BackupOptions> {
    let target = std::path::absolute(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let settings = repo.block_on(crate::tenant::load_settings(repo.scope()))?;
    Ok(BackupOptions {
        paths: vec![target],
        stream: None,
        excludes: Excludes::new(&[])?,
        follow: Vec::new(),
        one_file_system: false,
        xattrs: true,
        skip_if_unchanged: false,
        tags: vec![SAFETY_TAG.into()],
        job: None,
        host: crate::source::hostname(),
        time_ns: None,
        parent: ParentChoice::Auto,
        compression: backup::compression(repo, &settings, None),
        io_concurrency: opts.io_concurrency,
        cancel: opts.cancel.clone(),
        progress: Arc::new(backup::NoProgress),
        before_commit: Box::new(guard.checker()),
        quota: Quota::of_tenant(repo, &settings)?,
    })
}
