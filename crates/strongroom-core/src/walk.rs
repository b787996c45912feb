//! Directory listings read ahead of the backup's reader.
//!
//! The reader walks the tree depth first, in name order, and for each
//! directory needs its entries with their metadata (`getdents` and one
//! `fstatat` per entry) and the parent snapshot's tree of it. Done on the
//! reader alone, that walk was the whole time of backing up an unchanged
//! tree. A [`Lister`] has helper threads walk ahead of the reader in the
//! same order: each directory listed (by a helper, or by the reader when
//! no helper had started it) queues its subdirectories on top of a stack
//! the helpers take from, so they list depth first, as the reader goes.
//! When the reader reaches a directory its listing is ready, or it waits
//! for the helper reading it, or lists it itself. What the helpers hold
//! is bounded by [`READY_ENTRIES`] and [`READY_DIRS`]; the reader's order
//! and results are the same as without them.
//!
//! Every directory is opened relative to its parent's descriptor, with
//! `O_NOFOLLOW`, and must be the directory its parent's listing saw
//! (`source::Dir::open_dir`); a listing holds its directory open, for the
//! reader to open its entries relative to it. A queued directory refers
//! to its parent weakly: a job whose parent is closed is one the reader
//! has passed. Open descriptors are thus the reader's path from the
//! root, the listings ready, and one or two per helper.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::id::BlobId;
use crate::source::{Dir, DirEntry, EntryError, Identity};
use crate::tree::{self, NodeKind, Tree};
use std::os::unix::ffi::OsStrExt;

/// Entries of listings that are done and not yet taken, at most (after
/// that the helpers wait): about 4 MiB of metadata and names.
const READY_ENTRIES: usize = 16 * 1024;
/// Listings done and not yet taken, at most: each holds its directory
/// open, and the process's descriptors are limited.
const READY_DIRS: usize = 64;
/// A helper gives up a directory of more entries than this (about 4 MiB
/// of them) and leaves it to the reader, which would hold it anyway: a
/// tree of several huge directories is not held by every helper at once.
const HELPER_ENTRIES: usize = 16 * 1024;

/// A directory's entries (sorted by name) and those that could not be
/// stat'ed, or why it could not be opened or read.
pub type Entries = std::io::Result<Listed>;

/// A directory read: open, with its entries.
pub struct Listed {
    /// The directory, open: its entries are opened relative to it.
    pub dir: Arc<Dir>,
    /// Its entries, sorted by name.
    pub entries: Vec<DirEntry>,
    /// Entries that could not be stat'ed.
    pub unreadable: Vec<EntryError>,
    /// The device of the filesystem holding it.
    pub dev: u64,
}

/// A directory as the reader needs it: its entries, and the parent
/// snapshot's tree of it (when it had one and it could be read).
pub struct Listing {
    /// The directory's entries.
    pub entries: Entries,
    /// The parent snapshot's tree of it.
    pub parent: Option<Tree>,
    /// It holds a marker file (`--exclude-if-present`): it is left out,
    /// and nothing below it is listed.
    pub marked: bool,
}

/// A subdirectory to list: where it is, and what its parent's listing saw.
pub struct Child<'d> {
    /// Its parent, open.
    pub parent: &'d Arc<Dir>,
    /// Its name in the parent.
    pub name: &'d OsString,
    /// Its full path.
    pub path: &'d Path,
    /// What the parent's listing saw of it.
    pub walked: Identity,
}

enum Slot {
    /// Waiting for a helper.
    Queued,
    /// A helper is reading it.
    Running,
    Done(Listing),
}

/// A queued directory.
struct Job {
    path: PathBuf,
    subtree: Option<BlobId>,
    /// Its parent: closed once the reader is done with it, and then so is
    /// this job (the reader took every subdirectory on its way).
    parent: Weak<Dir>,
    name: OsString,
    walked: Identity,
}

struct Jobs {
    slots: HashMap<PathBuf, Slot>,
    /// Directories to list, the next on top.
    stack: Vec<Job>,
    /// Entries in `Done` slots.
    ready: usize,
    /// `Done` slots.
    ready_dirs: usize,
    /// Helpers waiting for work or for room under [`READY_ENTRIES`].
    idle: usize,
    /// The reader waits for a helper's listing.
    reader_waits: bool,
    closed: bool,
}

/// Loads a tree of the parent snapshot.
pub type LoadTree<'a> = dyn Fn(&BlobId) -> crate::error::Result<Tree> + Sync + 'a;
/// Whether the walk leaves a path out.
pub type Skip<'a> = dyn Fn(&Path) -> bool + Sync + 'a;
/// Called with a directory's path just before it is opened (a test hook).
pub type BeforeOpen<'a> = dyn Fn(&Path) + Sync + 'a;
/// Whether a listed directory holds a marker file that excludes it.
pub type Marked<'a> = dyn Fn(&Listed) -> bool + Sync + 'a;

/// No directory is marked.
static UNMARKED: fn(&Listed) -> bool = |_| false;

/// Lists directories ahead of the reader (see the module docs).
pub struct Lister<'a> {
    load: &'a LoadTree<'a>,
    skip: &'a Skip<'a>,
    before_open: &'a BeforeOpen<'a>,
    /// Directories left out for a marker file in them.
    marked: &'a Marked<'a>,
    /// Subdirectories on another filesystem than their parent are not
    /// listed (`--one-file-system`).
    one_file_system: bool,
    /// [`READY_ENTRIES`] (less in tests).
    budget: usize,
    /// [`READY_DIRS`].
    budget_dirs: usize,
    /// [`HELPER_ENTRIES`] (less in tests).
    largest: usize,
    jobs: Mutex<Jobs>,
    /// Wakes helpers (work, or room) and the reader (a listing done).
    changed: Condvar,
}

impl<'a> Lister<'a> {
    /// A lister whose parent trees come from `load`, leaving out the
    /// directories `skip` says (the reader does not descend into them),
    /// calling `before_open` before it opens a directory.
    pub fn new(load: &'a LoadTree<'a>, skip: &'a Skip<'a>, before_open: &'a BeforeOpen<'a>) -> Self {
        Lister {
            load,
            skip,
            before_open,
            marked: &UNMARKED,
            one_file_system: false,
            budget: READY_ENTRIES,
            budget_dirs: READY_DIRS,
            largest: HELPER_ENTRIES,
            jobs: Mutex::new(Jobs {
                slots: HashMap::new(),
                stack: Vec::new(),
                ready: 0,
                ready_dirs: 0,
                idle: 0,
                reader_waits: false,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// The lister, leaving out directories `marked` says, and with
    /// `one_file_system` subdirectories on another filesystem than their
    /// parent.
    pub fn with_rules(self, marked: &'a Marked<'a>, one_file_system: bool) -> Self {
        Lister { marked, one_file_system, ..self }
    }

    fn lock(&self) -> MutexGuard<'_, Jobs> {
        // The state stays consistent whatever panicked while holding it.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether helpers hold all they may.
    fn full(&self, jobs: &Jobs) -> bool {
        jobs.ready >= self.budget || jobs.ready_dirs >= self.budget_dirs
    }

    /// Opens the subdirectory `child` (it must be what its parent's
    /// listing saw) for listing, or only to find entries in it.
    pub fn open(&self, child: &Child<'_>, path_only: bool) -> std::io::Result<Dir> {
        (self.before_open)(child.path);
        child.parent.open_dir(child.name, child.walked, path_only)
    }

    /// Lists the opened directory `dir` at `path`, and loads the parent
    /// snapshot's tree `subtree` of it; its subdirectories are queued for
    /// the helpers.
    pub fn list_opened(&self, dir: Dir, path: &Path, subtree: Option<BlobId>) -> Listing {
        let entries = dir.stat().and_then(|md| list_all(dir, path, md.dev));
        let listing = self.with_parent(entries, subtree);
        let mut jobs = self.lock();
        if !jobs.closed {
            self.expand(&mut jobs, &listing);
        }
        listing
    }

    /// [`Lister::list`] of a directory of at most `max` entries, or None.
    fn list_up_to(&self, child: &Child<'_>, subtree: Option<BlobId>, max: usize) -> Option<Listing> {
        let listed = self.open(child, false).and_then(|dir| list(dir, child.path, max, child.walked.dev));
        listed.transpose().map(|entries| self.with_parent(entries, subtree))
    }

    fn with_parent(&self, entries: Entries, subtree: Option<BlobId>) -> Listing {
        let marked = entries.as_ref().is_ok_and(|listed| (self.marked)(listed));
        // A marked directory is left out: its parent tree is not needed.
        let parent = if marked { None } else { subtree.and_then(|id| self.parent_tree(&id)) };
        Listing { entries, parent, marked }
    }

    /// The parent snapshot's tree `id`, or None (with a warning: its
    /// files are read again) if it cannot be loaded.
    pub fn parent_tree(&self, id: &BlobId) -> Option<Tree> {
        match (self.load)(id) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent tree {id} unreadable, reading files again: {e}");
                None
            }
        }
    }

    /// Queues the subdirectories of a listed directory on top of the
    /// stack, the first on top: the reader wants them next, in order.
    fn expand(&self, jobs: &mut Jobs, listing: &Listing) {
        let Ok(listed) = &listing.entries else { return };
        if listing.marked {
            return;
        }
        let before = jobs.stack.len();
        let parent = Arc::downgrade(&listed.dir);
        for e in listed.entries.iter().rev() {
            if !e.metadata.is_dir() || (self.skip)(&e.path) {
                continue;
            }
            // A mount point: the reader records it without entering it.
            if self.one_file_system && e.metadata.dev != listed.dev {
                continue;
            }
            let subtree =
                listing.parent.as_ref().and_then(|t| tree::find(t, e.name.as_bytes())).and_then(|n| match n.kind {
                    NodeKind::Dir { subtree } => Some(subtree),
                    _ => None,
                });
            jobs.slots.insert(e.path.clone(), Slot::Queued);
            jobs.stack.push(Job {
                path: e.path.clone(),
                subtree,
                parent: parent.clone(),
                name: e.name.clone(),
                walked: Identity::of(&e.metadata),
            });
        }
        if jobs.stack.len() > before && jobs.idle > 0 {
            self.changed.notify_all();
        }
    }

    /// The listing of the subdirectory `child`: a helper's, or read here
    /// if none started it.
    pub fn take(&self, child: &Child<'_>, subtree: Option<BlobId>) -> Listing {
        let mut jobs = self.lock();
        loop {
            match jobs.slots.remove(child.path) {
                Some(Slot::Done(listing)) => {
                    let full = self.full(&jobs);
                    jobs.ready -= size(&listing);
                    jobs.ready_dirs -= 1;
                    if full && !self.full(&jobs) && jobs.idle > 0 {
                        self.changed.notify_all();
                    }
                    return listing;
                }
                Some(Slot::Running) => {
                    jobs.slots.insert(child.path.to_path_buf(), Slot::Running);
                    jobs.reader_waits = true;
                    jobs = self.changed.wait(jobs).unwrap_or_else(|poisoned| poisoned.into_inner());
                    jobs.reader_waits = false;
                }
                // Not started: the helpers skip it now that it has no slot.
                Some(Slot::Queued) | None => break,
            }
        }
        drop(jobs);
        let entries = self.open(child, false).and_then(|dir| list_all(dir, child.path, child.walked.dev));
        let listing = self.with_parent(entries, subtree);
        let mut jobs = self.lock();
        if !jobs.closed {
            self.expand(&mut jobs, &listing);
        }
        listing
    }

    /// A helper thread's loop: lists queued directories until [`close`](Self::close).
    pub fn help(&self) {
        loop {
            let mut jobs = self.lock();
            let (job, parent) = loop {
                if jobs.closed {
                    return;
                }
                if !self.full(&jobs) {
                    if let Some(job) = jobs.stack.pop() {
                        match (jobs.slots.get_mut(&job.path), job.parent.upgrade()) {
                            (Some(slot @ Slot::Queued), Some(parent)) => {
                                *slot = Slot::Running;
                                break (job, parent);
                            }
                            // Its parent is closed: the reader is past it.
                            (Some(Slot::Queued), None) => {
                                jobs.slots.remove(&job.path);
                                continue;
                            }
                            // Taken by the reader meanwhile.
                            _ => continue,
                        }
                    }
                }
                jobs.idle += 1;
                jobs = self.changed.wait(jobs).unwrap_or_else(|poisoned| poisoned.into_inner());
                jobs.idle -= 1;
            };
            drop(jobs);
            let child = Child { parent: &parent, name: &job.name, path: &job.path, walked: job.walked };
            // None: too large to hold here, or no descriptor left for it;
            // the reader lists it when it gets there.
            let listing = match self.list_up_to(&child, job.subtree, self.largest) {
                Some(Listing { entries: Err(e), .. }) if is_out_of_descriptors(&e) => None,
                listing => listing,
            };
            drop(parent);
            let mut jobs = self.lock();
            if jobs.closed {
                return;
            }
            match listing {
                None => {
                    jobs.slots.remove(&job.path);
                }
                Some(listing) => {
                    self.expand(&mut jobs, &listing);
                    jobs.ready += size(&listing);
                    jobs.ready_dirs += 1;
                    if let Some(slot) = jobs.slots.get_mut(&job.path) {
                        *slot = Slot::Done(listing);
                    }
                }
            }
            if jobs.reader_waits {
                self.changed.notify_all();
            }
        }
    }

    /// Stops the helpers (the reader is done, or stopped) and drops what
    /// they listed.
    pub fn close(&self) {
        let mut jobs = self.lock();
        jobs.closed = true;
        jobs.stack.clear();
        jobs.slots.clear();
        jobs.ready = 0;
        jobs.ready_dirs = 0;
        drop(jobs);
        self.changed.notify_all();
    }
}

/// Lists an opened directory on the device `dev`: [`Dir::list`], the
/// directory kept open.
fn list(dir: Dir, path: &Path, max: usize, dev: u64) -> std::io::Result<Option<Listed>> {
    Ok(dir.list(path, max)?.map(|(entries, unreadable)| Listed { dir: Arc::new(dir), entries, unreadable, dev }))
}

/// [`list`] without a limit.
fn list_all(dir: Dir, path: &Path, dev: u64) -> std::io::Result<Listed> {
    let (entries, unreadable) = dir.list(path, usize::MAX)?.unwrap_or_default();
    Ok(Listed { dir: Arc::new(dir), entries, unreadable, dev })
}

/// EMFILE or ENFILE.
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Entries a listing holds (its weight in [`READY_ENTRIES`]).
fn size(listing: &Listing) -> usize {
    listing.entries.as_ref().map_or(0, |l| l.entries.len() + l.unreadable.len())
}

/// Helper threads for a backup of paths: a few, since on a cold cache
/// they wait on the disk more than they compute.
pub fn helpers() -> usize {
    crate::cores().clamp(2, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These walks have no parent snapshot.
    static NO_PARENT: fn(&BlobId) -> crate::error::Result<Tree> = |_| unreachable!("no parent trees here");
    /// They leave out one directory in each of `tree_of`'s.
    static SKIP: fn(&Path) -> bool = |p| p.ends_with("s1");
    /// They stop nowhere.
    static GO: fn(&Path) = |_| {};

    fn tree_of(root: &Path, dirs: usize, files: usize) {
        for d in 0..dirs {
            for s in 0..3 {
                let sub = root.join(format!("d{d:02}")).join(format!("s{s}"));
                std::fs::create_dir_all(&sub).unwrap();
                for f in 0..files {
                    std::fs::write(sub.join(format!("f{f}")), [d as u8, s as u8, f as u8]).unwrap();
                }
            }
        }
    }

    /// Walks `dir` depth first as the backup reader does, with `lister`,
    /// and appends every path in visiting order.
    fn walk(lister: &Lister, dir: &Path, out: &mut Vec<PathBuf>) {
        walk_entries(lister, list_root(lister, dir), out);
    }

    /// The listing of the walk's root `dir`.
    fn list_root(lister: &Lister, dir: &Path) -> Listing {
        lister.list_opened(Dir::open(dir).unwrap(), dir, None)
    }

    /// [`walk`] from a directory's listing taken already.
    fn walk_entries(lister: &Lister, listing: Listing, out: &mut Vec<PathBuf>) {
        let listed = listing.entries.unwrap();
        assert!(listed.unreadable.is_empty());
        for e in &listed.entries {
            if e.metadata.is_dir() && SKIP(&e.path) {
                continue;
            }
            out.push(e.path.clone());
            if e.metadata.is_dir() {
                let child =
                    Child { parent: &listed.dir, name: &e.name, path: &e.path, walked: Identity::of(&e.metadata) };
                walk_entries(lister, lister.take(&child, None), out);
            }
        }
    }

    /// What a walk of `dir` without helpers visits.
    fn walk_alone(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&Lister::new(&NO_PARENT, &SKIP, &GO), dir, &mut out);
        out
    }

    /// Waits until the one helper of `lister` has nothing to do (no
    /// directory queued, or no room under the budget) and waits.
    fn until_helper_waits(lister: &Lister) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let jobs = lister.lock();
            if jobs.idle == 1 && (jobs.stack.is_empty() || lister.full(&jobs)) {
                return;
            }
            drop(jobs);
            assert!(std::time::Instant::now() < deadline, "the helper never stopped");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Closes the lister when dropped: a failed assertion in a scope
    /// stops its helpers instead of waiting for them forever.
    struct Closing<'a>(&'a Lister<'a>);

    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }

    #[test]
    fn a_walk_with_helpers_visits_what_a_walk_without_them_does() {
        let dir = tempfile::tempdir().unwrap();
        tree_of(dir.path(), 12, 5);
        let expected = walk_alone(dir.path());
        // s1 of each d, and what is in it, is left out.
        assert_eq!(expected.len(), 12 + 12 * 2 + 12 * 2 * 5);

        for helpers in [1, 2, 4] {
            let lister = Lister::new(&NO_PARENT, &SKIP, &GO);
            let mut got = Vec::new();
            std::thread::scope(|s| {
                for _ in 0..helpers {
                    s.spawn(|| lister.help());
                }
                let _closing = Closing(&lister);
                walk(&lister, dir.path(), &mut got);
            });
            assert_eq!(got, expected, "{helpers} helpers");
            let jobs = lister.lock();
            assert!(jobs.slots.is_empty() && jobs.ready == 0);
        }
    }

    /// A walk of `dir` with one helper, stopped once the reader has listed
    /// `dir` and the helper has nothing more to do, for `check` to look at
    /// what the helper holds; then walked to the end.
    fn walk_after_a_pause(lister: &Lister, dir: &Path, check: impl FnOnce(&Jobs)) -> Vec<PathBuf> {
        let mut got = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| lister.help());
            let _closing = Closing(lister);
            let root = list_root(lister, dir);
            until_helper_waits(lister);
            check(&lister.lock());
            walk_entries(lister, root, &mut got);
        });
        got
    }

    #[test]
    fn a_directory_too_large_for_a_helper_is_left_to_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        tree_of(dir.path(), 3, 5);
        let mut lister = Lister::new(&NO_PARENT, &SKIP, &GO);
        // Every d holds 3 entries, every s0/s2 5 files: more than a helper takes.
        lister.largest = 4;
        let got = walk_after_a_pause(&lister, dir.path(), |jobs| {
            // The helper listed every d, and gave up every s0/s2.
            assert_eq!(jobs.slots.len(), 3, "{:?}", jobs.slots.keys().collect::<Vec<_>>());
            assert!(jobs.slots.values().all(|s| matches!(s, Slot::Done(_))));
        });
        assert_eq!(got, walk_alone(dir.path()));
    }

    #[test]
    fn helpers_stop_at_their_budget_and_close_drops_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        tree_of(dir.path(), 12, 5);
        let mut lister = Lister::new(&NO_PARENT, &SKIP, &GO);
        lister.budget = 20;
        // The reader lists the root; the helper walks ahead until it holds
        // the budget's entries, then waits.
        let got = walk_after_a_pause(&lister, dir.path(), |jobs| {
            // The budget, overrun by one listing at most (3 entries).
            assert!(jobs.ready >= 20 && jobs.ready < 23, "{} entries ready", jobs.ready);
            assert!(jobs.stack.len() > 1, "the helper stopped with nothing to do");
        });
        // The walk went on, and ended as a walk alone does.
        assert_eq!(got, walk_alone(dir.path()));
        let jobs = lister.lock();
        assert!(jobs.slots.is_empty() && jobs.stack.is_empty() && jobs.ready == 0);
    }
}
