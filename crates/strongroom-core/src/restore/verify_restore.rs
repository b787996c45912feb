//! Verify-restore: restore a snapshot into a private temporary directory,
//! compare what was written with the snapshot ([`verify_tree`]), and
//! remove the directory, as one protocol under the caller's lock.
//!
//! Owns: the temporary directory, private (0700) from the start because
//! the restore puts the snapshot's files in it whatever their modes and
//! other users share the temp dir, and removed whatever the outcome; and
//! the verdict. A snapshot that cannot be read at all (a damaged tree) is
//! a failed verification, not an error; an interruption or a lost lock is
//! an error, as no verdict can be given. Must not: print.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, ErrorKind, FileError, FileErrors, Result};
use crate::lock::LockGuard;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::Excludes;

use super::{verify_tree, Overwrite, Progress, RestoreOptions, Subset, VerifySummary};

/// What verify-restore needs besides the repository and the snapshot.
pub struct VerifyRestoreOptions {
    /// The directory to make the temporary restore in (made if missing).
    pub tmp_dir: PathBuf,
    /// Restore and compare only this random sample of the regular files.
    pub subset: Option<Subset>,
    /// Concurrent pack reads.
    pub io_concurrency: usize,
    /// Set to stop early; verify-restore then fails with `Interrupted`.
    pub cancel: crate::Cancel,
    /// Progress of the restore.
    pub progress: Arc<dyn Progress>,
}

/// What verify-restore compared and found.
#[derive(Debug, Default)]
pub struct VerifyRestoreSummary {
    /// The snapshot verified.
    pub snapshot_id: String,
    /// Regular files compared.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Directories compared.
    pub dirs: u64,
    /// Symlinks, devices and fifos compared.
    pub others: u64,
    /// Every failure: what the restore could not write (`restore: why`),
    /// then every difference the comparison found.
    pub failures: FileErrors,
    /// Wall time of the restore.
    pub restore_seconds: f64,
    /// Wall time of the comparison.
    pub compare_seconds: f64,
    /// Why the temporary directory could not be removed, if it could not
    /// (the error names it). The verdict stands.
    pub left_behind: Option<Error>,
}

impl VerifyRestoreSummary {
    /// Whether the snapshot restored and compared without a failure.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Under the caller's lock `guard` (a shared one suffices): restores
/// `snapshot` into a new private directory below `opts.tmp_dir`,
/// compares it with the snapshot, removes it and gives the verdict. Fails
/// only when interrupted, when the lock was lost, or when the temporary
/// directory cannot be made.
pub fn verify_restore(
    repo: &Repo,
    guard: &LockGuard,
    snapshot: &Snapshot,
    opts: &VerifyRestoreOptions,
) -> Result<VerifyRestoreSummary> {
    let dir = make_private_dir(&opts.tmp_dir, snapshot)?;
    // A verdict reached after the lock was lost is not given: a prune may
    // have removed packs under the restore.
    let result = restore_and_compare(repo, snapshot, &dir, opts).and_then(|s| guard.check().map(|()| s));
    let removed = std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e));
    match result {
        Ok(mut summary) => {
            summary.left_behind = removed.err();
            Ok(summary)
        }
        Err(e) => {
            if let Err(left) = removed {
                tracing::warn!("could not remove the temporary restore: {left}");
            }
            Err(e)
        }
    }
}

/// Makes `strongroom-verify-<snapshot>-<pid>-<random>` below `base`, mode
/// 0700 from the start.
fn make_private_dir(base: &Path, snapshot: &Snapshot) -> Result<PathBuf> {
    let dir = base.join(format!(
        "strongroom-verify-{}-{}-{}",
        snapshot.id.short(),
        std::process::id(),
        hex::encode(crate::crypto::random_bytes::<4>())
    ));
    std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Restores into `dir` and compares; the failures of both go into the
/// summary, only interruptions and lost locks are errors.
fn restore_and_compare(
    repo: &Repo,
    snapshot: &Snapshot,
    dir: &Path,
    opts: &VerifyRestoreOptions,
) -> Result<VerifyRestoreSummary> {
    let restore_opts = RestoreOptions {
        target: dir.to_path_buf(),
        includes: None,
        excludes: Excludes::new(&[])?,
        verify: false,
        overwrite: Overwrite::Always,
        delete: false,
        dry_run: false,
        subset: opts.subset.clone(),
        io_concurrency: opts.io_concurrency,
        // A drill checks content; attributes a scratch directory may
        // refuse (`security.*`) are not its business.
        xattrs: false,
        cancel: opts.cancel.clone(),
        progress: opts.progress.clone(),
    };
    let started = Instant::now();
    let mut failures = FileErrors::new();
    match super::run(repo, snapshot, None, &restore_opts) {
        Ok(restored) => failures = restored.errors.into_iter().map(restore_failure).collect(),
        Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::Locked) => return Err(e),
        Err(e) => failures.push("/", format!("restore: {e}")),
    }
    let restore_seconds = started.elapsed().as_secs_f64();
    let mut compared = VerifySummary::default();
    let tree = &snapshot.record.tree;
    if let Err(e) = verify_tree(repo, tree, dir, "", opts.subset.as_ref(), &opts.cancel, &mut compared) {
        if e.kind() == ErrorKind::Interrupted {
            return Err(e);
        }
        compared.failures.push("/", format!("compare: {e}"));
    }
    failures.extend(compared.failures);
    Ok(VerifyRestoreSummary {
        snapshot_id: snapshot.id.to_hex(),
        files: compared.files,
        bytes: compared.bytes,
        dirs: compared.dirs,
        others: compared.others,
        failures,
        restore_seconds,
        compare_seconds: started.elapsed().as_secs_f64() - restore_seconds,
        left_behind: None,
    })
}

/// A file the restore could not write, as a failure of the verification.
fn restore_failure(f: FileError) -> FileError {
    FileError { path: f.path, error: format!("restore: {}", f.error) }
}
