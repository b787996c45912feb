//! Restore: snapshot trees back to files.
//!
//! Plan first (walk the trees, filter, resolve every chunk to its pack),
//! then read each needed pack once (coalesced ranged reads, `io_concurrency`
//! at a time) while rayon opens, verifies and writes the blobs into place.
//! Files are created at full length first, and zero blocks are not
//! written, so sparse files stay sparse. Metadata goes on last, directories deepest
//! first, so their mtimes survive the writes below them.
//!
//! **Invariant:** nothing is written outside the target: names come from
//! decoded trees (no `/`, `.` or `..`), and every entry is reached from the
//! target's descriptor without following a symlink ([`target`]); a file's
//! data goes through the descriptor that made it, and symlinks from the
//! snapshot are created only after all file content.
//! **Invariant:** only verified bytes are written; a file whose blob cannot
//! be read is removed and reported, never left with wrong content.
//! **Invariant:** nothing is more open than in the snapshot while the
//! restore runs: directories are made 0700 and get their mode when all
//! below them is done (an interrupted restore leaves them 0700); files are
//! made with the snapshot's mode less group and other bits, and get their
//! mode once written.
//!
//! Existing targets: [`Overwrite`] decides per file whether to write it.
//! The default, `if-changed`, keeps a file whose size and mtime match the
//! snapshot, or whose content hashes to the snapshot's chunk ids (read
//! chunk by chunk, stopping at the first difference). That makes a rerun
//! after an interruption resume: complete files are kept, and partly
//! written ones (their mtime is set only once complete) are rewritten.
//! An existing file is never written in place: its replacement is made
//! under a temporary name and renamed over it when complete.
//! `--delete` removes entries of restored directories that the snapshot
//! lacks; `--dry-run` plans all of it and changes nothing.
//!
//! [`run`] is the phases in order, each a module of methods on one
//! `RestoreRun`: `plan` (trees to a `Plan`), `decide` (per existing
//! file: write or keep; `--dry-run` stops there), `write` (directories,
//! pack reads, blobs into files), `finish` (links, specials, metadata,
//! deletions, directory modes), and `verify` (`--verify`, [`verify_tree`],
//! [`dump`]).
//!
//! Two protocols are built on [`run`]: [`with_safety_snapshot`] (`safety`:
//! back up the target, then restore into it; the one place `restore`
//! calls `backup`) and [`verify_restore`] (`verify_restore`: restore into
//! a private temporary directory, compare, remove it).

mod decide;
mod finish;
mod plan;
mod safety;
mod target;
mod verify;
mod verify_restore;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use target::Target;

use crate::catalog;
use crate::error::{Error, FileErrors, Result};
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::Excludes;

pub use safety::{with_safety_snapshot, SafeRestoreSummary, SAFETY_TAG};
pub use verify::{dump, verify_tree};
pub use verify_restore::{verify_restore, VerifyRestoreOptions, VerifyRestoreSummary};

/// Receives progress from a running restore.
pub trait Progress: Send + Sync {
    /// Bytes written.
    fn bytes(&self, _n: u64) {}
}

/// Progress that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What to do with a file that already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Always write it.
    Always,
    /// Write it unless its size and mtime, or its content, already match.
    #[default]
    IfChanged,
    /// Keep it if its mtime is newer than the snapshot's (merge); else as
    /// `IfChanged`.
    IfNewer,
    /// Never touch an existing entry.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "if-changed" => Ok(Self::IfChanged),
            "if-newer" => Ok(Self::IfNewer),
            "never" => Ok(Self::Never),
            _ => Err(format!("invalid overwrite mode {s:?}: use always, if-changed, if-newer or never")),
        }
    }
}

/// A random sample of files, chosen by a hash of the snapshot path with a
/// seed fresh for each run (so repeated runs look at different files).
#[derive(Clone)]
pub struct Subset {
    threshold: u64,
    hasher: std::collections::hash_map::RandomState,
}

impl Subset {
    /// A sample of about `percent` (0–100) of the files.
    pub fn new(percent: f64) -> Self {
        let threshold = (percent.clamp(0.0, 100.0) / 100.0 * u64::MAX as f64) as u64;
        Self { threshold, hasher: std::collections::hash_map::RandomState::new() }
    }

    /// True if the file at this snapshot path is in the sample.
    pub fn selects(&self, snap_path: &str) -> bool {
        use std::hash::BuildHasher;
        self.threshold == u64::MAX || self.hasher.hash_one(snap_path) < self.threshold
    }
}

/// What `verify_tree` compared and what differed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifySummary {
    /// Regular files compared (content by chunk ids, size, mode, mtime).
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Directories compared.
    pub dirs: u64,
    /// Symlinks, devices and fifos compared.
    pub others: u64,
    /// Every mismatch: the path and what differs.
    pub failures: FileErrors,
}

/// One planned change, listed by `--dry-run`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Action {
    /// Target path.
    pub path: String,
    /// `write`, `keep` or `delete`.
    pub action: &'static str,
    /// Why: `new`, `changed`, `unchanged`, `newer in target`, `exists`,
    /// `always`, `not in snapshot`.
    pub reason: &'static str,
}

/// Inputs of a restore.
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only entries matching one of these (or below a match), if given.
    pub includes: Option<Excludes>,
    /// Entries matching these (and everything below) are skipped.
    pub excludes: Excludes,
    /// Re-read every restored file and check it against its chunk ids.
    pub verify: bool,
    /// What to do with existing target files.
    pub overwrite: Overwrite,
    /// Remove entries of restored directories that the snapshot lacks.
    pub delete: bool,
    /// Plan only: list what would be written, kept and deleted.
    pub dry_run: bool,
    /// Restore only this random sample of the regular files (others always).
    pub subset: Option<Subset>,
    /// Concurrent pack reads.
    pub io_concurrency: usize,
    /// Set the extended attributes (POSIX ACLs among them) the snapshot
    /// recorded.
    pub xattrs: bool,
    /// Set to stop early.
    pub cancel: crate::Cancel,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Snapshot restored.
    pub snapshot_id: String,
    /// Regular files restored.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks, devices, fifos.
    pub others: u64,
    /// Hard links recreated as links.
    pub hardlinks: u64,
    /// File bytes restored.
    pub bytes: u64,
    /// Packs read.
    pub packs_read: u64,
    /// Files re-read and checked with `--verify`.
    pub files_verified: u64,
    /// Existing entries left as they were (unchanged, newer, or `never`).
    pub kept: u64,
    /// Entries removed by `--delete`.
    pub deleted: u64,
    /// With `--dry-run`: every planned write, keep and delete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Extended attributes left out because they need root
    /// (`security.*`, `trusted.*`, restored by another user).
    pub xattrs_skipped: u64,
    /// Entries that could not be restored, each with why.
    pub errors: FileErrors,
    /// Wall time.
    pub duration_seconds: f64,
}

/// One restore under way: what its phases share. Planning fills `plan`,
/// deciding `primaries`, `decisions` and `deletions`; from then on the
/// phases only read it (the writers share it across threads).
struct RestoreRun<'a> {
    repo: &'a Repo,
    opts: &'a RestoreOptions,
    /// The target directory's descriptor: every path below it goes through it.
    target: Target,
    /// The target was empty: every file is new, nothing to look at.
    fresh: bool,
    /// One catalog read view for the whole plan and every chunk lookup.
    reader: catalog::Reader,
    started: Instant,
    plan: plan::Plan,
    /// Files that carry content, by plan index: all but the second and
    /// later names of a hard-linked inode (those are in `plan.links`).
    primaries: Vec<usize>,
    /// What to do with each primary file.
    decisions: HashMap<usize, decide::Decision>,
    /// With `--delete`: target entries the snapshot lacks.
    deletions: Vec<PathBuf>,
}

/// Restores `snapshot` (or `subpath` of it) into `opts.target`.
pub fn run(repo: &Repo, snapshot: &Snapshot, subpath: Option<&str>, opts: &RestoreOptions) -> Result<RestoreSummary> {
    repo.set_tree_pack_cache(true);
    let started = Instant::now();
    // The subpath is looked up before the target is made.
    let start = plan::start_node(repo, snapshot, subpath)?;
    let mut run = RestoreRun::open(repo, opts, started)?;
    run.plan = run.plan_snapshot(&snapshot.record.tree, start, subpath)?;
    let xattrs_skipped = limit_xattrs(&mut run.plan, opts.xattrs, rustix::process::geteuid().is_root());
    opts.cancel.check()?;
    tracing::debug!(
        files = run.plan.files.len(),
        dirs = run.plan.dirs.len(),
        ms = started.elapsed().as_millis() as u64,
        "restore: planned"
    );
    run.decide();
    let mut summary = if opts.dry_run {
        run.dry_run()
    } else {
        let written = run.write()?;
        run.finish(written)?
    };
    summary.snapshot_id = snapshot.id.to_hex();
    summary.xattrs_skipped = xattrs_skipped;
    summary.duration_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Leaves out the extended attributes that are not to be set: all of
/// them with `--no-xattrs` (none recorded: those on disk stay), and
/// without root the `security.*` and `trusted.*` ones, which need
/// `CAP_SYS_ADMIN` or `CAP_SETFCAP` (SELinux labels, file capabilities):
/// they would fail every file that has them. Returns how many were left
/// out without root.
fn limit_xattrs(plan: &mut plan::Plan, xattrs: bool, root: bool) -> u64 {
    let dirs = plan.dirs.iter_mut().map(|d| &mut d.node);
    let files = plan.files.iter_mut().map(|f| &mut f.node);
    let nodes = dirs.chain(files).chain(plan.others.iter_mut().map(|(_, n)| n));
    let mut skipped = 0;
    for n in nodes {
        if !xattrs {
            n.xattrs = None;
        } else if let (false, Some(x)) = (root, &mut n.xattrs) {
            let before = x.len();
            x.retain(|a| !a.name.starts_with(b"security.") && !a.name.starts_with(b"trusted."));
            skipped += (before - x.len()) as u64;
        }
    }
    skipped
}

impl<'a> RestoreRun<'a> {
    /// Opens the target (made if missing, unless this is a dry run) and
    /// the catalog's read view; the plan is still empty.
    fn open(repo: &'a Repo, opts: &'a RestoreOptions, started: Instant) -> Result<Self> {
        // The target is opened once, by its path; all below it is reached
        // from that descriptor.
        let target = if opts.dry_run {
            Target::open(&opts.target).unwrap_or_else(|_| Target::absent(&opts.target))
        } else {
            std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
            Target::open(&opts.target).map_err(|e| Error::io(&opts.target, e))?
        };
        // An empty target holds nothing to decide about: every file is new.
        let fresh = target.is_empty();
        let reader = repo.catalog().reader()?;
        Ok(RestoreRun {
            repo,
            opts,
            target,
            fresh,
            reader,
            started,
            plan: plan::Plan::default(),
            primaries: Vec::new(),
            decisions: HashMap::new(),
            deletions: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{NodeKind, Xattr};

    fn node(names: &[&str]) -> crate::tree::Node {
        let md = std::fs::metadata("/").unwrap();
        let mut n = crate::tree::node_from_metadata(std::ffi::OsStr::new("n"), &md, NodeKind::Fifo);
        n.xattrs = Some(names.iter().map(|s| Xattr { name: s.as_bytes().to_vec(), value: b"v".to_vec() }).collect());
        n
    }

    fn names(n: &crate::tree::Node) -> Option<Vec<String>> {
        n.xattrs.as_ref().map(|x| x.iter().map(|a| String::from_utf8_lossy(&a.name).into_owned()).collect())
    }

    #[test]
    fn without_root_security_and_trusted_attributes_are_left_out_and_counted() {
        let all = ["security.capability", "security.selinux", "system.posix_acl_access", "trusted.x", "user.a"];
        let plan = || {
            let mut p = plan::Plan::default();
            p.others.push((PathBuf::from("a"), node(&all)));
            p.others.push((PathBuf::from("b"), node(&["trusted.y"])));
            p
        };
        let mut p = plan();
        assert_eq!(limit_xattrs(&mut p, true, false), 4);
        assert_eq!(names(&p.others[0].1), Some(vec!["system.posix_acl_access".into(), "user.a".into()]));
        assert_eq!(names(&p.others[1].1), Some(vec![]), "still recorded: the others on disk converge");
        // As root all are set; with --no-xattrs none is recorded.
        let mut p = plan();
        assert_eq!(limit_xattrs(&mut p, true, true), 0);
        assert_eq!(names(&p.others[0].1).map(|v| v.len()), Some(5));
        let mut p = plan();
        assert_eq!(limit_xattrs(&mut p, false, false), 0);
        assert_eq!(names(&p.others[0].1), None);
    }
}
