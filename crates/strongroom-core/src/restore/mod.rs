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

mod target;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use target::Target;

use crate::catalog::{self, BlobLocation};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::Excludes;
use crate::store::{Kind, Store};
use crate::tree::{self, Node, NodeKind};

/// Largest gap between two needed blobs of a pack that is read through
/// rather than split into two ranged reads.
const COALESCE_GAP: u64 = 256 * 1024;

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
    /// (path, what differs) for every mismatch.
    pub failures: Vec<(String, String)>,
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
    /// Entries that could not be restored: (path, error).
    pub errors: Vec<(String, String)>,
    /// Wall time.
    pub duration_seconds: f64,
}

struct FilePlan {
    path: PathBuf,
    node: Node,
    content: Vec<BlobId>,
}

#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, Node, usize)>,
    files: Vec<FilePlan>,
    links: Vec<(PathBuf, usize)>,
    others: Vec<(PathBuf, Node)>,
    /// With `--delete`: every restored directory with the names the
    /// snapshot has in it.
    listings: Vec<Listing>,
}

impl Plan {
    /// No directory, file or other entry to restore.
    fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty() && self.others.is_empty()
    }

    /// The parts joined in order, each entry moved once.
    fn concat(parts: Vec<Plan>) -> Plan {
        let mut plan = Plan {
            dirs: Vec::with_capacity(parts.iter().map(|p| p.dirs.len()).sum()),
            files: Vec::with_capacity(parts.iter().map(|p| p.files.len()).sum()),
            links: Vec::with_capacity(parts.iter().map(|p| p.links.len()).sum()),
            others: Vec::with_capacity(parts.iter().map(|p| p.others.len()).sum()),
            listings: Vec::with_capacity(parts.iter().map(|p| p.listings.len()).sum()),
        };
        for p in parts {
            plan.dirs.extend(p.dirs);
            plan.files.extend(p.files);
            plan.links.extend(p.links);
            plan.others.extend(p.others);
            plan.listings.extend(p.listings);
        }
        plan
    }
}

struct Listing {
    path: PathBuf,
    snap_path: String,
    names: std::collections::HashSet<Vec<u8>>,
    /// No `--include` filter applies below (the whole directory is restored).
    whole: bool,
}

/// Per-file decision for an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Write(&'static str),
    /// Keep; `true` when the content is the snapshot's, so its metadata is set.
    Keep(&'static str, bool),
}

/// Restores `snapshot` (or `subpath` of it) into `opts.target`.
pub fn run(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    snapshot: &Snapshot,
    subpath: Option<&str>,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    repo.set_tree_pack_cache(true);
    let started = Instant::now();
    let mut summary = RestoreSummary { snapshot_id: snapshot.id.to_hex(), ..Default::default() };
    let root = snapshot.record.tree;
    let start = match subpath {
        Some(p) if !tree::components(p).is_empty() => rt.block_on(repo.find(&root, p, &snapshot.id))?,
        _ => None,
    };
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
    let snap_prefix = match subpath {
        Some(p) => format!("/{}", tree::components(p).join("/")),
        None => String::new(),
    };
    // One catalog read view for the whole plan and every chunk lookup.
    let reader = repo.catalog().reader()?;
    let mut plan = match start {
        None => Plan::concat(plan_dir(repo, &reader, rt, &root, &opts.target, &snap_prefix, 0, opts)?),
        Some(node) => match node.kind {
            NodeKind::Dir { subtree } => {
                Plan::concat(plan_dir(repo, &reader, rt, &subtree, &opts.target, &snap_prefix, 0, opts)?)
            }
            _ => {
                let mut plan = Plan::default();
                let name = std::ffi::OsStr::from_bytes(&node.name).to_owned();
                let parent = snap_prefix.rsplit_once('/').map(|(a, _)| a.to_string()).unwrap_or_default();
                plan_node(node, &opts.target.join(name), &parent, 0, opts, true, &mut plan);
                plan
            }
        },
    };
    if opts.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }

    tracing::debug!(
        files = plan.files.len(),
        dirs = plan.dirs.len(),
        ms = started.elapsed().as_millis() as u64,
        "restore: planned"
    );
    // Hard links: the first file of each (device, inode) carries the content.
    let mut first_of: HashMap<(u64, u64), usize> = HashMap::new();
    let mut primaries = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        if f.node.links > 1 && f.node.inode != 0 {
            if let Some(&p) = first_of.get(&(f.node.device, f.node.inode)) {
                plan.links.push((f.path.clone(), p));
                continue;
            }
            first_of.insert((f.node.device, f.node.inode), i);
        }
        primaries.push(i);
    }

    // What to do with each file that exists already.
    // (In runs of files, in plan order: mostly of one directory, each
    // looked up once.)
    let decisions: HashMap<usize, Decision> = primaries
        .par_chunks(64)
        .flat_map_iter(|run| {
            let mut dirs = target.dirs();
            let decided: Vec<(usize, Decision)> = run
                .iter()
                .map(|&i| {
                    let f = &plan.files[i];
                    (i, if fresh { Decision::Write("new") } else { decide_file(repo, &mut dirs, f, opts.overwrite) })
                })
                .collect();
            decided
        })
        .collect();
    let existing = |path: &Path| target.rel(path).and_then(|rel| target.lstat(rel)).ok();
    let keep_existing = |path: &Path, node: &Node| -> Option<&'static str> {
        let st = existing(path)?;
        match opts.overwrite {
            Overwrite::Never => Some("exists"),
            Overwrite::IfNewer if newer(&st, node) => Some("newer in target"),
            _ => None,
        }
    };
    let deletions = if opts.delete { plan_deletions(&plan, opts, &target) } else { Vec::new() };

    if opts.dry_run {
        for &i in &primaries {
            let (action, reason) = match decisions[&i] {
                Decision::Write(r) => ("write", r),
                Decision::Keep(r, _) => ("keep", r),
            };
            summary.actions.push(Action { path: plan.files[i].path.display().to_string(), action, reason });
        }
        for (path, p) in &plan.links {
            let (action, reason) = match keep_existing(path, &plan.files[*p].node) {
                Some(r) => ("keep", r),
                None => ("write", if existing(path).is_some() { "changed" } else { "new" }),
            };
            summary.actions.push(Action { path: path.display().to_string(), action, reason });
        }
        for (path, node) in &plan.others {
            let (action, reason) = match keep_existing(path, node) {
                Some(r) => ("keep", r),
                None if same_special(&target, path, node) => ("keep", "unchanged"),
                None => ("write", if existing(path).is_some() { "changed" } else { "new" }),
            };
            summary.actions.push(Action { path: path.display().to_string(), action, reason });
        }
        for path in &deletions {
            summary.actions.push(Action {
                path: path.display().to_string(),
                action: "delete",
                reason: "not in snapshot",
            });
        }
        for a in &summary.actions {
            match a.action {
                "keep" => summary.kept += 1,
                "delete" => summary.deleted += 1,
                _ => {}
            }
        }
        summary.files = summary.actions.iter().filter(|a| a.action == "write").count() as u64;
        summary.actions.sort_by(|a, b| a.path.cmp(&b.path));
        summary.duration_seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    let errors = Failures::default();
    let writing: Vec<usize> =
        primaries.iter().copied().filter(|i| matches!(decisions[i], Decision::Write(_))).collect();
    // Where each needed blob goes, grouped by pack.
    let mut wanted: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
    let mut by_pack: BTreeMap<PackId, Vec<BlobLocation>> = BTreeMap::new();
    // What the writers know of each file they write, by its index. A file
    // with content is made by its first chunk's write (and given its
    // length by its last): no separate create, no look before it. Empty
    // files are made below, with the directories.
    let creation = Creation::of(&target, fresh);
    let mut state: Vec<Option<Writing>> = Vec::new();
    state.resize_with(plan.files.len(), || None);
    for &i in &writing {
        let f = &plan.files[i];
        state[i] = Some(Writing::new(f, matches!(decisions[&i], Decision::Write("new")), &creation));
    }
    let files = Files { target: &target, plan: &plan, state: &state, open: OpenBudget::new() };
    // The directories are made (on one thread, outermost first), then the
    // empty files, while the pool looks up where the chunks are.
    let (made, located) = std::thread::scope(|s| {
        let made = s.spawn(|| {
            let made = make_dirs(&target, &plan.dirs);
            writing.par_iter().filter(|&&i| plan.files[i].content.is_empty()).for_each(|&i| {
                if let Err(e) = files.write(i, &[], 0) {
                    errors.note(i, e.to_string());
                }
            });
            made
        });
        let located: Vec<(usize, std::result::Result<Vec<BlobLocation>, String>)> = writing
            .par_iter()
            .map(|&i| {
                let locs = plan.files[i]
                    .content
                    .iter()
                    .map(|id| match reader.lookup(id) {
                        Ok(Some(l)) => Ok(l),
                        Ok(None) => Err(Error::BlobNotFound { id: id.to_hex() }.to_string()),
                        Err(e) => Err(e.to_string()),
                    })
                    .collect();
                (i, locs)
            })
            .collect();
        let made = made.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (made, located)
    });
    let DirsMade { existed, failed: dir_errors } = made;
    for (i, locs) in located {
        if errors.has(i) {
            continue;
        }
        let locs = match locs {
            Ok(l) => l,
            Err(e) => {
                errors.note(i, e);
                continue;
            }
        };
        let mut offset = 0u64;
        for (id, loc) in plan.files[i].content.iter().zip(locs) {
            let targets = wanted.entry(*id).or_default();
            if targets.is_empty() {
                by_pack.entry(loc.pack).or_default().push(loc);
            }
            targets.push((i, offset));
            offset += loc.blob.raw_len as u64;
        }
    }
    summary.packs_read = by_pack.len() as u64;
    tracing::debug!(
        packs = by_pack.len(),
        blobs = wanted.len(),
        ms = started.elapsed().as_millis() as u64,
        "restore: directories made and chunks located"
    );

    // Packs in memory at once (being read, waiting, or being written out):
    // enough for the workers to have some while the next ones are read. A
    // pack's blobs are opened in parallel, so more workers do not need more
    // packs: past 4 the count stays, and so does the memory.
    let concurrency = opts.io_concurrency.max(1);
    let room = Arc::new(tokio::sync::Semaphore::new(concurrency + rayon::current_num_threads().min(4) + 1));
    let (tx, rx) = crossbeam_channel::unbounded::<Fetched>();
    let write_blob = |loc: &BlobLocation, plain: &[u8], targets: &[(usize, u64)]| {
        for &(fi, off) in targets {
            if let Err(e) = files.write(fi, plain, off) {
                errors.note(fi, e.to_string());
            }
        }
        opts.progress.bytes(loc.blob.raw_len as u64 * targets.len() as u64);
    };
    let write_pack = |(locs, data, ranges, _room): Fetched| {
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                for l in &locs {
                    for (fi, _) in wanted.get(&l.blob.id).into_iter().flatten() {
                        errors.note(*fi, e.to_string());
                    }
                }
                return;
            }
        };
        locs.par_iter().for_each(|loc| {
            if opts.cancel.is_cancelled() {
                return;
            }
            let Some(targets) = wanted.get(&loc.blob.id) else { return };
            OPEN_BUFFERS.with(|bufs| {
                let mut bufs = bufs.borrow_mut();
                let plain = slice_blob(loc, &ranges, &data)
                    .ok_or_else(|| Error::Damaged {
                        object: format!("pack {}", loc.pack),
                        why: "short range read".into(),
                    })
                    .and_then(|stored| repo.open_blob_with(loc, stored, &mut bufs));
                match plain {
                    Ok(p) => write_blob(loc, p, targets),
                    Err(e) => {
                        for (fi, _) in targets {
                            errors.note(*fi, e.to_string());
                        }
                    }
                }
            });
        });
    };
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(fetch_packs(repo, by_pack, concurrency, &room, tx, &opts.cancel)));
        // Each pack is written out by the pool as it arrives, its blobs in
        // parallel, with no wait for the pack before it: a worker that is
        // done with one pack's blobs takes another pack's.
        rayon::in_place_scope(|scope| {
            let write_pack = &write_pack;
            for fetched in rx {
                if opts.cancel.is_cancelled() {
                    // Whatever waits for room now finds none.
                    room.close();
                    break;
                }
                scope.spawn(move |_| write_pack(fetched));
            }
        });
    });
    let errors = errors.into_inner();
    if opts.cancel.is_cancelled() {
        // Keep what is complete (with its metadata, so a rerun skips it at
        // once); leave no incomplete file that could pass for a restored one.
        for &i in &writing {
            if files.done(i) && !errors.contains_key(&i) {
                if !files.meta_set(i) {
                    let _ = target.rel(&plan.files[i].path).and_then(|rel| target.set_meta(rel, &plan.files[i].node));
                }
            } else {
                files.discard(i);
            }
        }
        return Err(Error::Interrupted);
    }
    // Never leave a file with content we could not verify (an existing
    // file it was to replace stays as it was).
    for (i, e) in &errors {
        files.discard(*i);
        summary.errors.push((plan.files[*i].path.display().to_string(), e.clone()));
    }
    for (path, p) in &plan.links {
        if errors.contains_key(p) {
            continue;
        }
        if keep_existing(path, &plan.files[*p].node).is_some() {
            summary.kept += 1;
            continue;
        }
        let linked = target.rel(path).and_then(|rel| {
            let primary = target.rel(&plan.files[*p].path)?;
            if same_inode(&target, rel, primary) {
                return Ok(());
            }
            target.hard_link(primary, rel)
        });
        match linked {
            Ok(()) => summary.hardlinks += 1,
            Err(e) => summary.errors.push((path.display().to_string(), e.to_string())),
        }
    }
    for (path, node) in &plan.others {
        if keep_existing(path, node).is_some() {
            summary.kept += 1;
            continue;
        }
        let result = target.rel(path).and_then(|rel| {
            if same_special(&target, path, node) {
                target.set_meta(rel, node)
            } else {
                target.make_special(rel, node)
            }
        });
        match result {
            Ok(()) => summary.others += 1,
            Err(e) => summary.errors.push((path.display().to_string(), e.to_string())),
        }
    }
    let mut dirs = target.dirs();
    for &i in &primaries {
        if errors.contains_key(&i) {
            continue;
        }
        let f = &plan.files[i];
        match decisions[&i] {
            Decision::Keep(_, false) => {
                summary.kept += 1;
                continue;
            }
            Decision::Keep(_, true) => {
                summary.kept += 1;
                if metadata_matches(&mut dirs, &f.path, &f.node) {
                    continue;
                }
            }
            Decision::Write(_) => {
                summary.files += 1;
                summary.bytes += f.node.size;
                if files.meta_set(i) {
                    continue;
                }
            }
        }
        if let Err(e) = target.rel(&f.path).and_then(|rel| target.set_meta(rel, &f.node)) {
            summary.errors.push((f.path.display().to_string(), e.to_string()));
        }
    }
    for path in &deletions {
        let r = target.rel(path).and_then(|rel| target.remove(rel));
        match r {
            Ok(()) => summary.deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => summary.deleted += 1,
            Err(e) => summary.errors.push((path.display().to_string(), format!("cannot delete: {e}"))),
        }
    }
    // Directory modes last, deepest first: each opens up only when all
    // below it is done.
    let mut dirs: Vec<(usize, &(PathBuf, Node, usize))> = plan.dirs.iter().enumerate().collect();
    dirs.sort_by_key(|(_, d)| std::cmp::Reverse(d.2));
    for (i, (path, node, _)) in dirs {
        if let Some(e) = dir_errors.get(&i) {
            summary.errors.push((path.display().to_string(), e.clone()));
            continue;
        }
        summary.dirs += 1;
        if opts.overwrite == Overwrite::Never && existed.contains(&i) {
            continue;
        }
        if let Err(e) = target.rel(path).and_then(|rel| target.set_meta(rel, node)) {
            summary.errors.push((path.display().to_string(), e.to_string()));
        }
    }
    if opts.verify {
        let failures: Vec<(String, String)> = primaries
            .par_iter()
            .filter(|i| !errors.contains_key(i) && !matches!(decisions[i], Decision::Keep(_, false)))
            .filter_map(|&i| {
                verify_file(repo, &target, &plan.files[i]).err().map(|e| (plan.files[i].path.display().to_string(), e))
            })
            .collect();
        summary.files_verified = primaries
            .iter()
            .filter(|i| !errors.contains_key(i) && !matches!(decisions[i], Decision::Keep(_, false)))
            .count() as u64;
        summary.errors.extend(failures);
    }
    summary.duration_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// True when the target's mtime is later than the snapshot's.
fn newer(st: &Stat, node: &Node) -> bool {
    mtime_of(st) > (node.mtime, node.mtime_nsec as i64)
}

/// A status's mtime (seconds, nanoseconds).
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn mtime_of(st: &Stat) -> (i64, i64) {
    (st.st_mtime as i64, st.st_mtime_nsec as i64)
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Decides whether a planned file must be written.
fn decide_file(repo: &Repo, dirs: &mut target::Dirs<'_>, f: &FilePlan, mode: Overwrite) -> Decision {
    let target = dirs.target();
    let Ok(rel) = target.rel(&f.path) else { return Decision::Write("new") };
    let Ok(st) = dirs.lstat(rel) else { return Decision::Write("new") };
    match mode {
        Overwrite::Always => return Decision::Write("always"),
        Overwrite::Never => return Decision::Keep("exists", false),
        Overwrite::IfNewer if newer(&st, &f.node) => return Decision::Keep("newer in target", false),
        _ => {}
    }
    if file_type(&st) != FileType::RegularFile || st.st_size as u64 != f.node.size {
        return Decision::Write("changed");
    }
    // Fast path: restore sets the mtime only once a file is complete.
    if mtime_of(&st) == (f.node.mtime, f.node.mtime_nsec as i64) {
        return Decision::Keep("unchanged", true);
    }
    match target.open_read(rel).and_then(|file| same_content(repo, &file, f)) {
        Ok(true) => Decision::Keep("unchanged", true),
        _ => Decision::Write("changed"),
    }
}

/// Reads `file` chunk by chunk and compares each with its id; stops at the
/// first difference.
fn same_content(repo: &Repo, file: &std::fs::File, f: &FilePlan) -> std::io::Result<bool> {
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &f.content {
        let Ok(loc) = repo.locate(id) else { return Ok(false) };
        buf.resize(loc.blob.raw_len as usize, 0);
        if file.read_exact_at(&mut buf, offset).is_err() || repo.keys().blob_id(&buf) != *id {
            return Ok(false);
        }
        offset += loc.blob.raw_len as u64;
    }
    Ok(offset == f.node.size)
}

/// True when an existing file already has the node's mode, owner (when
/// root) and mtime, so setting them would only change its ctime.
fn metadata_matches(dirs: &mut target::Dirs<'_>, path: &Path, node: &Node) -> bool {
    let Ok(st) = dirs.target().rel(path).and_then(|rel| dirs.lstat(rel)) else { return false };
    let owner_ok = !nix::unistd::geteuid().is_root() || (st.st_uid == node.uid && st.st_gid == node.gid);
    owner_ok && st.st_mode & 0o7777 == node.mode & 0o7777 && mtime_of(&st) == (node.mtime, node.mtime_nsec as i64)
}

/// True when `path` is already the snapshot's symlink (same target).
fn same_special(target: &Target, path: &Path, node: &Node) -> bool {
    match &node.kind {
        NodeKind::Symlink { target: want } => {
            target.rel(path).and_then(|rel| target.read_link(rel)).is_ok_and(|t| t.as_bytes() == want)
        }
        _ => false,
    }
}

fn same_inode(target: &Target, a: &Path, b: &Path) -> bool {
    match (target.lstat(a), target.lstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Entries of restored directories that the snapshot does not have, and
/// that the filters select. A directory is listed through the target's
/// descriptors: one reached through a symlink lists nothing.
fn plan_deletions(plan: &Plan, opts: &RestoreOptions, target: &Target) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for l in &plan.listings {
        let Ok(names) = target.rel(&l.path).and_then(|rel| target.list(rel)) else { continue };
        for name in names {
            if l.names.contains(name.as_bytes()) {
                continue;
            }
            let sp = format!("{}/{}", l.snap_path, name.to_string_lossy());
            let p = Path::new(&sp);
            if opts.excludes.matches(p) {
                continue;
            }
            if !l.whole && !opts.includes.as_ref().is_some_and(|inc| inc.matches(p)) {
                continue;
            }
            out.push(l.path.join(name));
        }
    }
    out.sort();
    out
}

/// Whether any option selects entries by their path in the snapshot
/// ([`selected`], and the subset): without one, paths need not be formed.
fn filtered(opts: &RestoreOptions) -> bool {
    opts.includes.is_some() || opts.subset.is_some() || opts.excludes.matches_anything()
}

fn selected(snap_path: &str, opts: &RestoreOptions, is_dir: bool) -> (bool, bool) {
    // Returns (restore this entry, descend into it).
    let p = Path::new(snap_path);
    if opts.excludes.matches(p) {
        return (false, false);
    }
    match &opts.includes {
        None => (true, true),
        Some(inc) => {
            let hit = inc.matches(p);
            (hit, hit || is_dir)
        }
    }
}

/// Plans the restore of tree `tree_id` into `at`, as parts to be joined
/// in order ([`Plan::concat`]: each entry is moved once, not once per
/// level). Its subdirectories are planned in parallel (each loads its own
/// trees), and their parts put among these in the tree's order: the plan
/// is the one a walk in order would make.
#[allow(clippy::too_many_arguments)]
fn plan_dir(
    repo: &Repo,
    reader: &catalog::Reader,
    rt: &tokio::runtime::Handle,
    tree_id: &BlobId,
    at: &Path,
    snap_path: &str,
    depth: usize,
    opts: &RestoreOptions,
) -> Result<Vec<Plan>> {
    let t = rt.block_on(repo.load_tree_in(reader, tree_id))?;
    let mut parts = Vec::new();
    let mut plan = Plan::default();
    if opts.delete {
        plan.listings.push(Listing {
            path: at.to_path_buf(),
            snap_path: snap_path.to_string(),
            names: t.iter().map(|n| n.name.clone()).collect(),
            whole: opts.includes.is_none(),
        });
    }
    let entry_path = |node: &Node| at.join(std::ffi::OsStr::from_bytes(&node.name));
    let snap_path_of = |node: &Node| format!("{snap_path}/{}", String::from_utf8_lossy(&node.name));
    // Each selected subdirectory's parts, and whether it was itself selected.
    type Below = Option<Result<(Vec<Plan>, bool)>>;
    let below: Vec<Below> = t
        .par_iter()
        .map(|node| {
            let NodeKind::Dir { subtree } = node.kind else { return None };
            if opts.cancel.is_cancelled() {
                return None;
            }
            let sp = snap_path_of(node);
            let (take, descend) = selected(&sp, opts, true);
            if !descend {
                return None;
            }
            let path = entry_path(node);
            // With an include filter, everything below a matching directory
            // is taken: descend without the filter.
            let sub = if take && opts.includes.is_some() {
                let unfiltered = RestoreOptions {
                    target: opts.target.clone(),
                    includes: None,
                    excludes: opts.excludes.clone(),
                    verify: opts.verify,
                    overwrite: opts.overwrite,
                    delete: opts.delete,
                    dry_run: opts.dry_run,
                    subset: opts.subset.clone(),
                    io_concurrency: opts.io_concurrency,
                    cancel: opts.cancel.clone(),
                    progress: opts.progress.clone(),
                };
                plan_dir(repo, reader, rt, &subtree, &path, &sp, depth + 1, &unfiltered)
            } else {
                plan_dir(repo, reader, rt, &subtree, &path, &sp, depth + 1, opts)
            };
            Some(sub.map(|p| (p, take)))
        })
        .collect();
    for (node, sub) in t.into_iter().zip(below) {
        if opts.cancel.is_cancelled() {
            break;
        }
        let path = entry_path(&node);
        if let NodeKind::Dir { .. } = node.kind {
            let Some(sub) = sub else { continue };
            let (sub, take) = sub?;
            // Nothing below was selected: the directory is not created.
            if take || sub.iter().any(|p| !p.is_empty()) {
                plan.dirs.push((path, node, depth + 1));
            }
            parts.push(std::mem::take(&mut plan));
            parts.extend(sub);
        } else {
            plan_node(node, &path, snap_path, depth, opts, false, &mut plan);
        }
    }
    parts.push(plan);
    Ok(parts)
}

fn plan_node(
    node: Node,
    path: &Path,
    parent_snap_path: &str,
    _depth: usize,
    opts: &RestoreOptions,
    forced: bool,
    plan: &mut Plan,
) {
    let mut node = node;
    // Its path in the snapshot, needed only by filters (most restores have none).
    if filtered(opts) {
        let sp = format!("{parent_snap_path}/{}", String::from_utf8_lossy(&node.name));
        if !forced && !selected(&sp, opts, false).0 {
            return;
        }
        if matches!(node.kind, NodeKind::File { .. }) && opts.subset.as_ref().is_some_and(|s| !s.selects(&sp)) {
            return;
        }
    }
    match &mut node.kind {
        NodeKind::File { content } => {
            // The plan keeps the chunk list; the node, the metadata.
            let content = std::mem::take(content);
            plan.files.push(FilePlan { path: path.to_path_buf(), node, content });
        }
        NodeKind::Socket => {}
        _ => plan.others.push((path.to_path_buf(), node)),
    }
}

/// What making the planned directories found: which existed (never
/// touched with --overwrite never) and which could not be made.
struct DirsMade {
    existed: std::collections::HashSet<usize>,
    failed: HashMap<usize, String>,
}

/// Makes the planned directories, outermost first, each 0700 until its
/// mode is set at the end. A directory that cannot be made is reported
/// (and so, in turn, is what was to go in it).
fn make_dirs(target: &Target, dirs: &[(PathBuf, Node, usize)]) -> DirsMade {
    let mut made = DirsMade { existed: Default::default(), failed: HashMap::new() };
    for (i, (path, _, _)) in dirs.iter().enumerate() {
        match make_dir(target, path) {
            Ok(true) => {
                made.existed.insert(i);
            }
            Ok(false) => {}
            Err(e) => {
                made.failed.insert(i, e.to_string());
            }
        }
    }
    made
}

/// Makes the directory `path`, without a look first; true when one was
/// there already (kept as it is: its mode is set at the end). Anything
/// else in its place is removed, a symlink as itself.
fn make_dir(target: &Target, path: &Path) -> std::io::Result<bool> {
    let rel = target.rel(path)?;
    let (parent, name) = target.parent(rel)?;
    match rfs::mkdirat(&parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => return Ok(false),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let st = rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if file_type(&st) == FileType::Directory {
        return Ok(true);
    }
    target::remove_entry(parent.as_fd(), name)?;
    rfs::mkdirat(&parent, name, Mode::from_bits_truncate(0o700))?;
    Ok(false)
}

/// Block size for hole detection: runs of zeros covering whole blocks of
/// this size are skipped, so they stay holes in the file made by `set_len`.
const HOLE_BLOCK: u64 = 4096;

/// What a file this restore creates has before any chown or chmod: the
/// process's owner and group (unless a setgid directory gives another
/// group), and the mode it is created with less the umask.
struct Creation {
    uid: u32,
    gid: u32,
    root: bool,
    /// The target was empty and is not setgid: every directory below it is
    /// made here, so a new file's group is the process's.
    own_group: bool,
    /// None when it cannot be read (then modes are always set).
    umask: Option<u32>,
}

impl Creation {
    fn of(target: &Target, fresh: bool) -> Self {
        let setgid = target.root_stat().map(|st| st.st_mode & libc::S_ISGID != 0).unwrap_or(true);
        Creation {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            root: nix::unistd::geteuid().is_root(),
            own_group: fresh && !setgid,
            umask: process_umask(),
        }
    }
}

/// The process's umask, read without changing it (`umask(2)` can only be
/// read by setting it, which would race with other threads creating files).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// What the writers know of a file they write.
struct Writing {
    /// Chunk placements still to write: the file is complete at 0.
    remaining: AtomicUsize,
    /// Absent when decided: made at its name (`O_EXCL`). Otherwise, or if
    /// something appeared there since, it is made under a temporary name
    /// and renamed over what is there once complete.
    new: bool,
    /// The mode it is made with: the snapshot's owner read and write bits
    /// only (write too if it may be reopened), so it is never more open
    /// than the snapshot's while written.
    create_mode: u32,
    /// Its last chunk's write reached its last byte: its length is right.
    ends: AtomicBool,
    /// Its owner and its mode still need setting.
    chown: bool,
    chmod: bool,
    /// Its metadata was set through the descriptor it was written by.
    meta_done: AtomicBool,
    slot: Mutex<Slot>,
}

/// Where a file being written is.
enum Slot {
    /// Not made yet.
    NotMade,
    /// Made and open: every chunk is written through this descriptor.
    Open(Arc<OpenFile>),
    /// Made, its descriptor closed to stay within the open-file budget;
    /// reopened (without following a symlink) only if it is still the
    /// same inode.
    Parked { temp: Option<OsString>, id: (u64, u64) },
    /// It could not be made.
    Failed,
    /// Complete, in place, closed.
    Done,
}

struct OpenFile {
    file: std::fs::File,
    /// The directory it is in and the temporary name it is written under,
    /// if it is to replace an entry.
    temp: Option<(OwnedFd, OsString)>,
}

impl OpenFile {
    fn temp_name(&self) -> Option<OsString> {
        self.temp.as_ref().map(|(_, name)| name.clone())
    }
}

impl Writing {
    fn new(f: &FilePlan, new: bool, c: &Creation) -> Self {
        let mode = f.node.mode & 0o7777;
        // A file of several chunks may be parked and reopened for writing:
        // its owner must be able to write it.
        let create_mode = if f.content.len() > 1 { (mode | 0o200) & 0o600 } else { mode & 0o600 };
        // A file whose mode is all owner read/write bits (0600, 0400) is
        // made with it, unless the umask takes some away.
        let final_mode = mode == create_mode && c.umask.is_some_and(|u| mode & u == 0);
        let owned = c.own_group && f.node.uid == c.uid && f.node.gid == c.gid;
        Writing {
            remaining: AtomicUsize::new(f.content.len()),
            new,
            create_mode,
            ends: AtomicBool::new(false),
            chown: c.root && !owned,
            chmod: !final_mode,
            meta_done: AtomicBool::new(false),
            slot: Mutex::new(Slot::NotMade),
        }
    }

    fn slot(&self) -> std::io::Result<std::sync::MutexGuard<'_, Slot>> {
        self.slot.lock().map_err(|_| std::io::Error::other("a writer of this file panicked"))
    }

    /// The open file, made by the first call; `None` once it failed or is
    /// done.
    fn file(&self, target: &Target, rel: &Path, budget: &OpenBudget) -> std::io::Result<Option<Arc<OpenFile>>> {
        let mut slot = self.slot()?;
        let opened = match &*slot {
            Slot::Open(f) => return Ok(Some(f.clone())),
            Slot::Failed | Slot::Done => return Ok(None),
            Slot::NotMade => {
                crate::testhook::pause("restore-before-write", &rel.to_string_lossy());
                self.make(target, rel).inspect_err(|_| *slot = Slot::Failed)?
            }
            Slot::Parked { temp, id } => reopen(target, rel, temp.clone(), *id)?,
        };
        let f = Arc::new(opened);
        *slot = Slot::Open(f.clone());
        budget.open.fetch_add(1, Ordering::Relaxed);
        Ok(Some(f))
    }

    fn make(&self, target: &Target, rel: &Path) -> std::io::Result<OpenFile> {
        if self.new {
            match target.create_new(rel, self.create_mode) {
                Ok(file) => return Ok(OpenFile { file, temp: None }),
                // Something appeared there since it was looked at: replace it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        let dir = target.open_dir(rel.parent().unwrap_or(Path::new("")))?;
        let temp = target::temp_name();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&dir, &temp, flags, Mode::from_bits_truncate(self.create_mode))?;
        Ok(OpenFile { file: std::fs::File::from(fd), temp: Some((dir, temp)) })
    }

    /// Closes the descriptor if more files are open than the budget allows.
    fn park_if_over(&self, budget: &OpenBudget) {
        if budget.open.load(Ordering::Relaxed) <= budget.limit {
            return;
        }
        let Ok(mut slot) = self.slot() else { return };
        if let Slot::Open(f) = &*slot {
            let Ok(st) = rfs::fstat(&f.file) else { return };
            *slot = Slot::Parked { temp: f.temp_name(), id: (st.st_dev, st.st_ino) };
            budget.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Gives a complete file its length, metadata and (if it was written
    /// under a temporary name) its place.
    fn finish(&self, f: &FilePlan, rel: &Path, open: &OpenFile) -> std::io::Result<()> {
        // Its length covers a trailing hole.
        if f.node.size > 0 && !self.ends.load(Ordering::Acquire) {
            open.file.set_len(f.node.size)?;
        }
        // A failure here is retried after the writes.
        if target::set_fd_meta(open.file.as_fd(), &f.node, self.chown, self.chmod).is_ok() {
            self.meta_done.store(true, Ordering::Release);
        }
        if let Some((dir, temp)) = &open.temp {
            let name = rel.file_name().ok_or_else(|| std::io::Error::other("a file without a name"))?;
            target::rename_over(dir.as_fd(), temp, name)?;
        }
        Ok(())
    }

    /// Marks it done, closing its descriptor.
    fn close(&self, budget: &OpenBudget) {
        if let Ok(mut slot) = self.slot() {
            if matches!(*slot, Slot::Open(_)) {
                budget.open.fetch_sub(1, Ordering::Relaxed);
            }
            *slot = Slot::Done;
        }
    }

    /// Removes what was made of an incomplete file (its temporary name, or
    /// the new file), if it is still the inode made.
    fn discard(&self, target: &Target, rel: &Path) {
        let Ok(mut slot) = self.slot() else { return };
        let (temp, id) = match &*slot {
            Slot::Open(f) => match rfs::fstat(&f.file) {
                Ok(st) => (f.temp_name(), (st.st_dev, st.st_ino)),
                Err(_) => return,
            },
            Slot::Parked { temp, id } => (temp.clone(), *id),
            _ => return,
        };
        *slot = Slot::Failed;
        let path = match &temp {
            Some(t) => sibling(rel, t),
            None => rel.to_path_buf(),
        };
        if target.lstat(&path).is_ok_and(|st| (st.st_dev, st.st_ino) == id) {
            let _ = target.remove(&path);
        }
    }
}

/// `name` in the directory of `rel`.
fn sibling(rel: &Path, name: &OsStr) -> PathBuf {
    rel.parent().unwrap_or(Path::new("")).join(name)
}

/// Reopens a parked file for writing, if it is still the inode it was.
fn reopen(target: &Target, rel: &Path, temp: Option<OsString>, id: (u64, u64)) -> std::io::Result<OpenFile> {
    let (fd, temp) = match temp {
        Some(name) => {
            let dir = target.open_dir(rel.parent().unwrap_or(Path::new("")))?;
            let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            (rfs::openat(&dir, &name, flags, Mode::empty())?, Some((dir, name)))
        }
        None => (target.open_at(rel, OFlags::WRONLY, Mode::empty())?, None),
    };
    let st = rfs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != id {
        return Err(std::io::Error::other("replaced by another file during the restore"));
    }
    Ok(OpenFile { file: std::fs::File::from(fd), temp })
}

/// How many files may be open for writing at once: the rest are parked.
/// Files of many chunks stay open from their first chunk to their last,
/// and packs come in any order, so without a bound a restore of many
/// large files would run out of descriptors.
struct OpenBudget {
    open: AtomicUsize,
    limit: usize,
}

impl OpenBudget {
    fn new() -> Self {
        // A test can make it small, to have files parked and reopened.
        let limit =
            crate::testhook::var("STRONGROOM_TEST_OPEN_FILES").and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 16);
                // Leave room for the store, the catalog and the pool's
                // lookups; an open file may hold its directory's too.
                (soft.saturating_sub(256) as usize / 2).clamp(16, 1 << 15)
            });
        OpenBudget { open: AtomicUsize::new(0), limit }
    }
}

/// The files being written, by their index in the plan.
struct Files<'a> {
    target: &'a Target,
    plan: &'a Plan,
    state: &'a [Option<Writing>],
    open: OpenBudget,
}

impl Files<'_> {
    /// Writes `data` at `offset` of file `i` (skipping whole zero blocks),
    /// making the file at its first write and finishing it at its last.
    fn write(&self, i: usize, data: &[u8], offset: u64) -> std::io::Result<()> {
        let f = &self.plan.files[i];
        let Some(w) = &self.state[i] else { return Ok(()) };
        let rel = self.target.rel(&f.path)?;
        let Some(open) = w.file(self.target, rel, &self.open)? else { return Ok(()) };
        let runs = nonzero_runs(data, offset);
        for &(start, end) in &runs {
            open.file.write_all_at(&data[start..end], offset + start as u64)?;
        }
        if runs.last().is_some_and(|&(_, end)| end == data.len()) && offset + data.len() as u64 == f.node.size {
            w.ends.store(true, Ordering::Release);
        }
        let last = f.content.is_empty() || w.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last {
            drop(open);
            w.park_if_over(&self.open);
            return Ok(());
        }
        w.finish(f, rel, &open)?;
        w.close(&self.open);
        crate::testhook::pause("restore-after-write", &rel.to_string_lossy());
        Ok(())
    }

    /// File `i` is complete and in place.
    fn done(&self, i: usize) -> bool {
        self.state[i].as_ref().is_some_and(|w| w.slot().is_ok_and(|s| matches!(*s, Slot::Done)))
    }

    /// File `i`'s metadata was set through its descriptor.
    fn meta_set(&self, i: usize) -> bool {
        self.state[i].as_ref().is_some_and(|w| w.meta_done.load(Ordering::Acquire))
    }

    /// Removes what was made of file `i`, which is incomplete.
    fn discard(&self, i: usize) {
        let f = &self.plan.files[i];
        if let (Some(w), Ok(rel)) = (&self.state[i], self.target.rel(&f.path)) {
            w.discard(self.target, rel);
        }
    }
}

/// The first error of each file, by its index.
#[derive(Default)]
struct Failures(Mutex<BTreeMap<usize, String>>);

impl Failures {
    fn note(&self, i: usize, e: String) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(i).or_insert(e);
        }
    }

    fn has(&self, i: usize) -> bool {
        self.0.lock().is_ok_and(|m| m.contains_key(&i))
    }

    fn into_inner(self) -> BTreeMap<usize, String> {
        self.0.into_inner().unwrap_or_default()
    }
}

/// Ranges of `data` (written at file `offset`) that must be written: all
/// but the file-aligned blocks that are entirely zero.
fn nonzero_runs(data: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let block_end = ((abs / HOLE_BLOCK + 1) * HOLE_BLOCK - offset) as usize;
        let end = block_end.min(data.len());
        let whole_block = abs.is_multiple_of(HOLE_BLOCK) && end - pos == HOLE_BLOCK as usize;
        if !(whole_block && data[pos..end].iter().all(|&b| b == 0)) {
            match runs.last_mut() {
                Some((_, e)) if *e == pos => *e = end,
                _ => runs.push((pos, end)),
            }
        }
        pos = end;
    }
    runs
}

fn slice_blob<'a>(loc: &BlobLocation, ranges: &[(u64, u64)], data: &'a [bytes::Bytes]) -> Option<&'a [u8]> {
    let start = loc.blob.offset as u64;
    let end = start + loc.blob.length as u64;
    let (i, (rs, _)) = ranges.iter().enumerate().find(|(_, (rs, re))| *rs <= start && end <= *re)?;
    data.get(i)?.get((start - rs) as usize..(end - rs) as usize)
}

/// A pack's blob locations, the ranges read from it (or why not), and
/// its room in memory, given back when the pack has been written out.
type Fetched = (Vec<BlobLocation>, Result<Vec<bytes::Bytes>>, Vec<(u64, u64)>, tokio::sync::OwnedSemaphorePermit);

thread_local! {
    /// Each pool thread opens blobs into the same buffers, blob after blob.
    static OPEN_BUFFERS: std::cell::RefCell<crate::blob::OpenBuffers> = std::cell::RefCell::default();
}

/// Reads the packs, `concurrency` at a time, each once it has room in
/// memory, and hands them over as they arrive. Handing over never waits:
/// the room a pack takes is what bounds the memory.
async fn fetch_packs(
    repo: &Repo,
    by_pack: BTreeMap<PackId, Vec<BlobLocation>>,
    concurrency: usize,
    room: &Arc<tokio::sync::Semaphore>,
    tx: crossbeam_channel::Sender<Fetched>,
    cancel: &crate::Cancel,
) {
    use futures::StreamExt;
    let mut stream = futures::stream::iter(by_pack.into_iter().map(|(pack, mut locs)| async move {
        let permit = room.clone().acquire_owned().await.ok()?;
        locs.sort_by_key(|l| l.blob.offset);
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for l in &locs {
            let (s, e) = (l.blob.offset as u64, l.blob.offset as u64 + l.blob.length as u64);
            match ranges.last_mut() {
                Some((_, re)) if s <= *re + COALESCE_GAP => *re = (*re).max(e),
                _ => ranges.push((s, e)),
            }
        }
        let path = Store::path(repo.tenant(), Kind::Packs, &pack.to_hex());
        tracing::debug!(pack = %pack.to_hex(), ranges = ranges.len(), blobs = locs.len(), "reading pack");
        let mut data = Vec::with_capacity(ranges.len());
        let mut result = Ok(());
        for (s, e) in &ranges {
            match repo.store().get_range(&path, *s..*e).await {
                Ok(b) => data.push(b),
                Err(err) => {
                    result = Err(err.into());
                    break;
                }
            }
        }
        Some((locs, result.map(|()| data), ranges, permit))
    }))
    .buffer_unordered(concurrency);
    while let Some(item) = stream.next().await {
        // No room: the restore stopped.
        let Some(item) = item else { return };
        if cancel.is_cancelled() || tx.send(item).is_err() {
            return;
        }
    }
}

/// Re-reads a restored file and checks each chunk against its id.
fn verify_file(repo: &Repo, target: &Target, f: &FilePlan) -> std::result::Result<(), String> {
    let file = target.rel(&f.path).and_then(|rel| target.open_read(rel)).map_err(|e| format!("verify: {e}"))?;
    let md = file.metadata().map_err(|e| format!("verify: {e}"))?;
    if md.len() != f.node.size {
        return Err(format!("verify: size {} where the snapshot has {}", md.len(), f.node.size));
    }
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &f.content {
        let loc = repo.locate(id).map_err(|e| e.to_string())?;
        buf.resize(loc.blob.raw_len as usize, 0);
        file.read_exact_at(&mut buf, offset).map_err(|e| format!("verify: {e}"))?;
        if repo.keys().blob_id(&buf) != *id {
            return Err(format!("verify: content at offset {offset} differs from the snapshot"));
        }
        offset += loc.blob.raw_len as u64;
    }
    if offset != f.node.size {
        return Err(format!("verify: chunks cover {offset} bytes of {}", f.node.size));
    }
    Ok(())
}

/// Writes one file's content, verified chunk by chunk, to `out`, reading
/// a few chunks ahead. Returns the bytes written.
pub async fn dump(repo: &Repo, node: &Node, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
    use futures::StreamExt;
    let NodeKind::File { content } = &node.kind else {
        return Err(Error::Invalid(format!("{} is not a regular file", String::from_utf8_lossy(&node.name))));
    };
    let mut chunks = futures::stream::iter(content.iter().map(|id| repo.read_blob(id))).buffered(4);
    let mut n = 0u64;
    while let Some(data) = chunks.next().await {
        let data = data?;
        out.write_all(&data).map_err(|e| Error::io("standard output", e))?;
        n += data.len() as u64;
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(n)
}

/// Compares the restored tree at `dir` with the snapshot tree `tree_id`
/// (below `snap_path`): every entry's type, mode, mtime, size and symlink
/// target, and every regular file's content against its chunk ids. Files
/// outside `subset` are skipped; sockets are not restored and not compared.
#[allow(clippy::too_many_arguments)]
pub fn verify_tree(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    tree_id: &BlobId,
    dir: &Path,
    snap_path: &str,
    subset: Option<&Subset>,
    cancel: &crate::Cancel,
    summary: &mut VerifySummary,
) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let t = rt.block_on(repo.load_tree(tree_id))?;
    let mut files = Vec::new();
    for node in t {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let name = std::ffi::OsStr::from_bytes(&node.name).to_owned();
        let path = dir.join(&name);
        let sp = format!("{snap_path}/{}", String::from_utf8_lossy(&node.name));
        if matches!(node.kind, NodeKind::Socket) {
            continue;
        }
        if matches!(node.kind, NodeKind::File { .. }) && subset.is_some_and(|s| !s.selects(&sp)) {
            continue;
        }
        let md = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                summary.failures.push((sp, format!("missing after restore: {e}")));
                continue;
            }
        };
        let ft = md.file_type();
        let kind_ok = match &node.kind {
            NodeKind::File { .. } => ft.is_file(),
            NodeKind::Dir { .. } => ft.is_dir(),
            NodeKind::Symlink { .. } => ft.is_symlink(),
            NodeKind::CharDevice { .. } => ft.is_char_device(),
            NodeKind::BlockDevice { .. } => ft.is_block_device(),
            NodeKind::Fifo => ft.is_fifo(),
            NodeKind::Socket => true,
        };
        if !kind_ok {
            summary.failures.push((sp, format!("restored as another type than {}", tree::kind_name(&node))));
            continue;
        }
        let mut problems = Vec::new();
        if !ft.is_symlink() && md.mode() & 0o7777 != node.mode & 0o7777 {
            problems.push(format!("mode {:o} where the snapshot has {:o}", md.mode() & 0o7777, node.mode & 0o7777));
        }
        if (md.mtime(), md.mtime_nsec()) != (node.mtime, node.mtime_nsec as i64) {
            problems.push("mtime differs".to_string());
        }
        match &node.kind {
            NodeKind::Dir { subtree } => {
                summary.dirs += 1;
                verify_tree(repo, rt, subtree, &path, &sp, subset, cancel, summary)?;
            }
            NodeKind::Symlink { target } => {
                summary.others += 1;
                if std::fs::read_link(&path).map(|t| t.as_os_str().as_bytes() != target.as_slice()).unwrap_or(true) {
                    problems.push("symlink target differs".to_string());
                }
            }
            NodeKind::File { content } => {
                summary.files += 1;
                summary.bytes += node.size;
                if md.len() != node.size {
                    problems.push(format!("size {} where the snapshot has {}", md.len(), node.size));
                } else {
                    files.push((
                        sp.clone(),
                        FilePlan { path: path.clone(), node: node.clone(), content: content.clone() },
                    ));
                }
            }
            _ => summary.others += 1,
        }
        if !problems.is_empty() {
            summary.failures.push((sp, problems.join("; ")));
        }
    }
    let bad: Vec<(String, String)> = files
        .par_iter()
        .filter_map(|(sp, f)| match open_nofollow(&f.path).and_then(|file| same_content(repo, &file, f)) {
            Ok(true) => None,
            Ok(false) => Some((sp.clone(), "content differs from the snapshot's chunk ids".to_string())),
            Err(e) => Some((sp.clone(), format!("cannot read: {e}"))),
        })
        .collect();
    summary.failures.extend(bad);
    Ok(())
}

/// Opens a regular file for reading, without following a symlink at its
/// name or blocking on a fifo.
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_skipped_on_block_boundaries() {
        let mut d = vec![0u8; 3 * 4096];
        d[5000] = 1;
        assert_eq!(nonzero_runs(&d, 0), vec![(4096, 8192)]);
        // Unaligned start: partial blocks are written, whole zero blocks not.
        assert_eq!(nonzero_runs(&d, 100), vec![(0, 8092), (12188, 12288)]);
        assert!(nonzero_runs(&[0u8; 8192], 0).is_empty());
        assert_eq!(nonzero_runs(&[1u8; 10], 4090), vec![(0, 10)]);
    }
}
