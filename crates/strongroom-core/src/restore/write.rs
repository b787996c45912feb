//! Writing: the directories and the files' content. Each needed pack is
//! read once (coalesced ranged reads, `io_concurrency` at a time, on the
//! runtime) and written out by the rayon pool as it arrives: its blobs
//! are opened, verified and written in parallel through [`Files`], which
//! makes each file at its first chunk and finishes it at its last.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::decide::{file_type, Decision};
use super::plan::{DirPlan, FilePlan, Plan};
use super::target::{self, Target};
use super::RestoreRun;
use crate::catalog::BlobLocation;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::repo::Repo;
use crate::store::{Kind, Store};

/// Largest gap between two needed blobs of a pack that is read through
/// rather than split into two ranged reads.
const COALESCE_GAP: u64 = 256 * 1024;

/// What the write phase leaves to the finish.
pub(super) struct Written<'r> {
    /// The files written, and what became of each.
    pub(super) files: Files<'r>,
    /// Plan indexes of the files decided to be written.
    pub(super) writing: Vec<usize>,
    /// The first error of each file that failed, by plan index.
    pub(super) errors: BTreeMap<usize, String>,
    /// Which directories existed and which could not be made.
    pub(super) dirs: DirsMade,
    pub(super) packs_read: u64,
    /// `Err` when the writing stopped short for a reason of its own (a
    /// worker panicked); cancellation is the finish's to see.
    pub(super) stopped: Result<()>,
}

/// Where each needed blob goes: (plan index of the file, offset in it).
type Wanted = HashMap<BlobId, Vec<(usize, u64)>>;

/// A file's chunk locations (in content order), or why one is unknown.
type Located = (usize, std::result::Result<Vec<BlobLocation>, String>);

/// A pack as read for the writers.
struct Fetched {
    /// The needed blobs of the pack, by offset.
    blobs: Vec<BlobLocation>,
    /// The byte ranges read from it, coalesced.
    ranges: Vec<(u64, u64)>,
    /// Each range's bytes, or why the pack could not be read.
    data: Result<Vec<bytes::Bytes>>,
    /// Its room in memory, given back when this is dropped: once the pack
    /// has been written out.
    _room: tokio::sync::OwnedSemaphorePermit,
}

impl RestoreRun<'_> {
    /// Makes the directories and writes every file decided to be written;
    /// per-file failures are noted in the result, not returned.
    pub(super) fn write(&self) -> Result<Written<'_>> {
        let writing: Vec<usize> =
            self.primaries.iter().copied().filter(|i| matches!(self.decisions[i], Decision::Write(_))).collect();
        // What the writers know of each file they write, by its index. A file
        // with content is made by its first chunk's write (and given its
        // length by its last): no separate create, no look before it. Empty
        // files are made with the directories.
        let files = Files::new(self, &writing);
        let errors = Failures::default();
        let (dirs, located) = self.make_dirs_and_locate(&files, &writing, &errors)?;
        let (wanted, by_pack) = group_by_pack(&self.plan, located, &errors);
        let packs_read = by_pack.len() as u64;
        tracing::debug!(
            packs = by_pack.len(),
            blobs = wanted.len(),
            ms = self.started.elapsed().as_millis() as u64,
            "restore: directories made and chunks located"
        );
        let stopped = self.fetch_and_write(&files, &wanted, by_pack, &errors);
        Ok(Written { files, writing, errors: errors.into_inner(), dirs, packs_read, stopped })
    }

    /// Makes the directories (on one thread, outermost first), then the
    /// empty files, while the pool looks up where the chunks are.
    fn make_dirs_and_locate(
        &self,
        files: &Files<'_>,
        writing: &[usize],
        errors: &Failures,
    ) -> Result<(DirsMade, Vec<Located>)> {
        std::thread::scope(|s| {
            let made = s.spawn(|| {
                let made = make_dirs(&self.target, &self.plan.dirs);
                writing.par_iter().filter(|&&i| self.plan.files[i].content.is_empty()).for_each(|&i| {
                    if let Err(e) = files.write(i, &[], 0) {
                        errors.note(i, e.to_string());
                    }
                });
                made
            });
            let located: Vec<Located> = writing.par_iter().map(|&i| (i, self.locate(&self.plan.files[i]))).collect();
            let made = made.join().map_err(|_| Error::Internal("the thread making directories panicked".into()))?;
            Ok((made, located))
        })
    }

    /// Where each chunk of `f` is, through the run's catalog read view.
    fn locate(&self, f: &FilePlan) -> std::result::Result<Vec<BlobLocation>, String> {
        f.content
            .iter()
            .map(|id| match self.reader.lookup(id) {
                Ok(Some(l)) => Ok(l),
                Ok(None) => Err(Error::BlobNotFound { id: id.to_hex() }.to_string()),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }

    /// Reads the packs on the runtime, and writes each out on the pool as
    /// it arrives, its blobs in parallel, with no wait for the pack before
    /// it: a worker that is done with one pack's blobs takes another's.
    fn fetch_and_write(
        &self,
        files: &Files<'_>,
        wanted: &Wanted,
        by_pack: BTreeMap<PackId, Vec<BlobLocation>>,
        errors: &Failures,
    ) -> Result<()> {
        let n_packs = by_pack.len();
        // Packs in memory at once (being read, waiting, or being written out):
        // enough for the workers to have some while the next ones are read. A
        // pack's blobs are opened in parallel, so more workers do not need more
        // packs: past 4 the count stays, and so does the memory.
        let concurrency = self.opts.io_concurrency.max(1);
        let room = Arc::new(tokio::sync::Semaphore::new(concurrency + rayon::current_num_threads().min(4) + 1));
        let (tx, rx) = mpsc::channel::<Fetched>();
        let cancel = &self.opts.cancel;
        let panicked = AtomicBool::new(false);
        let mut n_received = 0usize;
        std::thread::scope(|s| {
            let fetcher =
                s.spawn(|| self.repo.block_on(fetch_packs(self.repo, by_pack, concurrency, &room, tx, cancel)));
            rayon::in_place_scope(|scope| {
                let panicked = &panicked;
                for fetched in rx {
                    if cancel.is_cancelled() {
                        // Whatever waits for room now finds none.
                        room.close();
                        break;
                    }
                    n_received += 1;
                    scope.spawn(move |_| {
                        let write = AssertUnwindSafe(|| self.write_pack(files, wanted, errors, fetched));
                        if std::panic::catch_unwind(write).is_err() {
                            panicked.store(true, Ordering::Relaxed);
                        }
                    });
                }
            });
            fetcher.join().map_err(|_| Error::Internal("the thread reading packs panicked".into()))
        })?;
        if panicked.load(Ordering::Relaxed) {
            return Err(Error::Internal("a worker writing restored files panicked".into()));
        }
        if n_received < n_packs && !cancel.is_cancelled() {
            return Err(Error::Internal(format!("pack reads stopped after {n_received} of {n_packs} packs")));
        }
        Ok(())
    }

    /// Opens, verifies and writes out one pack's blobs, in parallel. A pack
    /// that could not be read fails every file that needed it.
    fn write_pack(&self, files: &Files<'_>, wanted: &Wanted, errors: &Failures, fetched: Fetched) {
        let data = match &fetched.data {
            Ok(d) => d,
            Err(e) => {
                for l in &fetched.blobs {
                    for (fi, _) in wanted.get(&l.blob.id).into_iter().flatten() {
                        errors.note(*fi, e.to_string());
                    }
                }
                return;
            }
        };
        fetched.blobs.par_iter().for_each(|loc| {
            if self.opts.cancel.is_cancelled() {
                return;
            }
            let Some(targets) = wanted.get(&loc.blob.id) else { return };
            OPEN_BUFFERS.with(|bufs| {
                let mut bufs = bufs.borrow_mut();
                let plain = slice_blob(loc, &fetched.ranges, data)
                    .ok_or_else(|| Error::Damaged {
                        object: format!("pack {}", loc.pack),
                        why: "short range read".into(),
                    })
                    .and_then(|stored| self.repo.open_blob_with(loc, stored, &mut bufs));
                match plain {
                    Ok(p) => {
                        for &(fi, off) in targets {
                            if let Err(e) = files.write(fi, p, off) {
                                errors.note(fi, e.to_string());
                            }
                        }
                        self.opts.progress.bytes(loc.blob.raw_len as u64 * targets.len() as u64);
                    }
                    Err(e) => {
                        for (fi, _) in targets {
                            errors.note(*fi, e.to_string());
                        }
                    }
                }
            });
        });
    }
}

/// Where each needed blob goes, and the blobs to read grouped by pack: a
/// blob that several files (or places in one) need is read once. A file
/// with a chunk that cannot be located fails here.
fn group_by_pack(
    plan: &Plan,
    located: Vec<Located>,
    errors: &Failures,
) -> (Wanted, BTreeMap<PackId, Vec<BlobLocation>>) {
    let mut wanted: Wanted = HashMap::new();
    let mut by_pack: BTreeMap<PackId, Vec<BlobLocation>> = BTreeMap::new();
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
    (wanted, by_pack)
}

/// What making the planned directories found: which existed (never
/// touched with --overwrite never) and which could not be made.
pub(super) struct DirsMade {
    pub(super) existed: std::collections::HashSet<usize>,
    pub(super) failed: HashMap<usize, String>,
}

/// Makes the planned directories, outermost first, each 0700 until its
/// mode is set at the end. A directory that cannot be made is reported
/// (and so, in turn, is what was to go in it).
fn make_dirs(target: &Target, dirs: &[DirPlan]) -> DirsMade {
    let mut made = DirsMade { existed: Default::default(), failed: HashMap::new() };
    for (i, d) in dirs.iter().enumerate() {
        match make_dir(target, &d.path) {
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
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            root: rustix::process::geteuid().is_root(),
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
pub(super) struct Files<'a> {
    target: &'a Target,
    plan: &'a Plan,
    /// What the writers know of each file being written; `None` for the
    /// others.
    state: Vec<Option<Writing>>,
    open: OpenBudget,
}

impl<'a> Files<'a> {
    /// The files of `writing`, none made yet.
    fn new(run: &'a RestoreRun<'_>, writing: &[usize]) -> Self {
        let creation = Creation::of(&run.target, run.fresh);
        let mut state: Vec<Option<Writing>> = Vec::new();
        state.resize_with(run.plan.files.len(), || None);
        for &i in writing {
            let new = matches!(run.decisions[&i], Decision::Write("new"));
            state[i] = Some(Writing::new(&run.plan.files[i], new, &creation));
        }
        Files { target: &run.target, plan: &run.plan, state, open: OpenBudget::new() }
    }

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
    pub(super) fn done(&self, i: usize) -> bool {
        self.state[i].as_ref().is_some_and(|w| w.slot().is_ok_and(|s| matches!(*s, Slot::Done)))
    }

    /// File `i`'s metadata was set through its descriptor.
    pub(super) fn meta_set(&self, i: usize) -> bool {
        self.state[i].as_ref().is_some_and(|w| w.meta_done.load(Ordering::Acquire))
    }

    /// Removes what was made of file `i`, which is incomplete.
    pub(super) fn discard(&self, i: usize) {
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
    /// Notes `e` for file `i` unless it has an error already. (The map stays
    /// whole even if a writer panicked holding the lock: it is read on.)
    fn note(&self, i: usize, e: String) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(i).or_insert(e);
    }

    fn has(&self, i: usize) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&i)
    }

    fn into_inner(self) -> BTreeMap<usize, String> {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
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

/// The stored bytes of blob `loc` among the ranges read of its pack.
fn slice_blob<'a>(loc: &BlobLocation, ranges: &[(u64, u64)], data: &'a [bytes::Bytes]) -> Option<&'a [u8]> {
    let start = loc.blob.offset as u64;
    let end = start + loc.blob.length as u64;
    let (i, (rs, _)) = ranges.iter().enumerate().find(|(_, (rs, re))| *rs <= start && end <= *re)?;
    data.get(i)?.get((start - rs) as usize..(end - rs) as usize)
}

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
    tx: mpsc::Sender<Fetched>,
    cancel: &crate::Cancel,
) {
    use futures::StreamExt;
    let mut stream = futures::stream::iter(by_pack.into_iter().map(|(pack, mut locs)| async move {
        let permit = room.clone().acquire_owned().await.ok()?;
        locs.sort_by_key(|l| l.blob.offset);
        let ranges = coalesce(locs.iter().map(|l| (l.blob.offset as u64, l.blob.length as u64)));
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
        Some(Fetched { blobs: locs, ranges, data: result.map(|()| data), _room: permit })
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

/// The byte ranges that cover the given (offset, length) spans (sorted
/// by offset), joining spans at most [`COALESCE_GAP`] apart.
fn coalesce(spans: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (offset, len) in spans {
        let (s, e) = (offset, offset + len);
        match ranges.last_mut() {
            Some((_, re)) if s <= *re + COALESCE_GAP => *re = (*re).max(e),
            _ => ranges.push((s, e)),
        }
    }
    ranges
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

    #[test]
    fn blobs_at_most_the_gap_apart_are_read_in_one_range() {
        let gap = COALESCE_GAP;
        assert_eq!(coalesce([(0, 10), (10, 5)].into_iter()), vec![(0, 15)]);
        assert_eq!(coalesce([(0, 10), (10 + gap, 5)].into_iter()), vec![(0, 15 + gap)]);
        assert_eq!(coalesce([(0, 10), (11 + gap, 5)].into_iter()), vec![(0, 10), (11 + gap, 16 + gap)]);
        assert!(coalesce(std::iter::empty()).is_empty());
    }
}
