//! The reader phase: the walk, driven from the paths to back up (or a
//! stream), turned into batches of [`Item`]s for the processor. It stats
//! every entry, takes unchanged files from the parent snapshot, leaves new
//! and changed small files to the workers, and reads and chunks the others.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use bytes::Bytes;

use super::{BackupOptions, StreamSource};
use crate::blob;
use crate::chunk::Chunker;
use crate::error::{Error, FileErrors, Result};
use crate::id::BlobId;
use crate::source::{self, Dir, Identity, Meta};
use crate::tree::{self, Node, NodeKind, Tree, Xattr};
use crate::walk::{self, Child, Lister, Listing};

/// Files up to this size are read whole (`Reader::small_file`), into a
/// buffer their chunks then point into; larger ones are streamed. Reading
/// whole costs no zeroed read window and no copies; the buffers stay
/// bounded by the pipeline's queue (a file's buffer lives until its last
/// chunk is sealed), at most about 2 files more than streaming would hold.
pub(super) const SMALL_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// New and changed files up to this size (at stat time) are read,
/// chunked, hashed and sealed whole by one worker of the pool; the reader
/// thread only walks and stats them. Most files of a source tree are a few
/// KiB, and opening and reading them on the reader thread made it the
/// bottleneck of such a backup (one core, a fresh buffer per file and its
/// page faults). A worker reads into a buffer it keeps, and seals the
/// chunks while they are still in its cache.
pub(super) const WORKER_FILE_BYTES: u64 = 1024 * 1024;
/// Chunk bytes per batch handed from the reader to the processor. Small
/// batches in a deep queue keep both cores busy with less memory than
/// large ones (measured: docs/BENCHMARKS.md, Why the defaults).
const BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Items per batch at most (many small files).
const BATCH_ITEMS: usize = 4096;
/// Directories whose files one batch holds open, at most: a queued file
/// keeps its directory open (the worker opens the file relative to it),
/// and descriptors are limited. With [`BATCH_QUEUE`] and
/// [`BATCHES_IN_FLIGHT`](super::processor::BATCHES_IN_FLIGHT), about 500 directories stay open for queued files.
const BATCH_DIRS: usize = 32;
/// Batches queued between reader and processor.
pub(super) const BATCH_QUEUE: usize = 8;
/// Whether a file read is new or changed since the parent snapshot.
pub(super) enum FileStatus {
    New,
    Changed,
}

/// What the reader hands the processor, in walk order.
pub(super) enum Item {
    /// A directory begins; its node's kind is filled at `Leave`.
    Enter(Node),
    /// A directory ends. With the parent snapshot's tree of it when every
    /// entry pushed since `Enter` equals that tree's entry, in number and
    /// content: the tree it would build is that one, stored already.
    Leave(Option<BlobId>),
    /// A complete node (special file, or a file taken from the parent).
    Node(Node),
    /// A file read by the reader begins; its chunks follow.
    FileStart(Node, FileStatus),
    /// A new or changed file of at most [`WORKER_FILE_BYTES`] at stat
    /// time, to be read and sealed by a worker: its node (as walked), its
    /// path, and its directory (it is opened relative to that).
    File(Node, FileStatus, PathBuf, Arc<Dir>),
    /// A chunk, with what its file's chunks showed about compression.
    Chunk(Bytes, Arc<blob::Adaptive>),
    /// The file begun by `FileStart` ends: bytes read, and why it could
    /// not be read to its end (then it is left out of its directory).
    FileEnd { read_bytes: u64, error: Option<String> },
}

/// Gathers items into batches and sends them to the processor.
struct Batcher {
    items: Vec<Item>,
    bytes: usize,
    /// Directories of the batch's files (see [`BATCH_DIRS`]), and the last.
    dirs: usize,
    last_dir: Option<Arc<Dir>>,
    /// Chunk bytes that close the current batch: [`FIRST_BATCH_BYTES`],
    /// doubling up to [`BATCH_BYTES`], so the workers start as soon as
    /// the first files are read.
    limit: usize,
    tx: SyncSender<Vec<Item>>,
}

/// The first batch's bytes (see `Batcher::limit`).
const FIRST_BATCH_BYTES: usize = 128 * 1024;

impl Batcher {
    /// Queues an item; false when the processor has gone away.
    fn push(&mut self, item: Item) -> bool {
        match &item {
            Item::Chunk(b, _) => self.bytes += b.len(),
            Item::File(node, _, _, dir) => {
                self.bytes += node.size as usize;
                if !self.last_dir.as_ref().is_some_and(|last| Arc::ptr_eq(last, dir)) {
                    self.dirs += 1;
                    self.last_dir = Some(dir.clone());
                }
            }
            _ => {}
        }
        self.items.push(item);
        if self.bytes >= self.limit || self.items.len() >= BATCH_ITEMS || self.dirs >= BATCH_DIRS {
            self.limit = (self.limit * 2).min(BATCH_BYTES);
            return self.flush();
        }
        true
    }
    fn flush(&mut self) -> bool {
        if self.items.is_empty() {
            return true;
        }
        self.bytes = 0;
        self.dirs = 0;
        self.last_dir = None;
        self.tx.send(std::mem::take(&mut self.items)).is_ok()
    }
}

/// The tree id of a directory node of the parent snapshot.
fn subtree_of(old: Option<&Node>) -> Option<BlobId> {
    match old.map(|n| &n.kind) {
        Some(NodeKind::Dir { subtree }) => Some(*subtree),
        _ => None,
    }
}

/// The test pause `point` for `path`, named by its path below the backup
/// target that holds it (`""` for a target itself); compiled to nothing
/// without the test hooks.
pub(super) fn pause_at(point: &str, path: &Path, targets: &[PathBuf]) {
    if !crate::testhook::ENABLED {
        return;
    }
    let below = targets.iter().filter_map(|t| path.strip_prefix(t).ok()).min_by_key(|rel| rel.as_os_str().len());
    crate::testhook::pause(point, &below.unwrap_or(path).to_string_lossy());
}

/// Opens the regular file `node` (as the walk saw it) of the directory
/// `at`: it must still be that file (see `source::Dir::open_file`).
pub(super) fn open_walked(at: &Dir, path: &Path, node: &Node, targets: &[PathBuf]) -> std::io::Result<std::fs::File> {
    pause_at("backup-before-open", path, targets);
    let file = at.open_file(std::ffi::OsStr::from_bytes(&node.name), Identity::of_node(node))?;
    pause_at("backup-before-read", path, targets);
    Ok(file)
}

/// A tree of the paths to back up: intermediate directories and targets.
#[derive(Default)]
struct PathTrie {
    target: bool,
    /// A target given with a trailing slash: a symlink there is followed.
    follow: bool,
    children: BTreeMap<Vec<u8>, PathTrie>,
}

/// The reader thread's state: its walk, its errors and the batch being
/// filled.
pub(super) struct Reader<'a> {
    chunker: &'a Chunker,
    opts: &'a BackupOptions,
    errors: FileErrors,
    batch: Batcher,
    /// Lists directories ahead of the walk.
    lister: &'a Lister<'a>,
}

/// The reader stops when the processor is gone or the user cancelled.
struct Stop;

impl<'a> Reader<'a> {
    pub(super) fn new(
        chunker: &'a Chunker,
        opts: &'a BackupOptions,
        lister: &'a Lister<'a>,
        tx: SyncSender<Vec<Item>>,
    ) -> Self {
        let batch = Batcher { items: Vec::new(), bytes: 0, dirs: 0, last_dir: None, limit: FIRST_BATCH_BYTES, tx };
        Reader { chunker, opts, errors: FileErrors::new(), batch, lister }
    }

    /// Reads the stream or walks the paths (`parent`: the parent
    /// snapshot's root tree), then stops the listers and sends the last
    /// batch. Returns the entries that could not be read.
    pub(super) fn read(mut self, parent: Option<&Tree>) -> Result<FileErrors> {
        let opts = self.opts;
        let res = match &opts.stream {
            Some(src) => self.stream(src),
            None => self.paths(&opts.paths, parent),
        };
        self.lister.close();
        self.batch.flush();
        res.map(|()| self.errors)
    }

    fn stopped(&self) -> bool {
        self.opts.cancel.is_cancelled()
    }

    fn push(&mut self, item: Item) -> std::result::Result<(), Stop> {
        if self.stopped() || !self.batch.push(item) {
            return Err(Stop);
        }
        Ok(())
    }

    /// An entry that could not be read: into the summary's `errors`, which
    /// the caller reports (logged here at debug level only, so that each
    /// is reported once).
    fn error(&mut self, path: &Path, e: impl std::fmt::Display) {
        tracing::debug!(path = %path.display(), "{e}");
        self.errors.push(path.display().to_string(), e);
    }

    fn paths(&mut self, paths: &[PathBuf], parent: Option<&Tree>) -> Result<()> {
        let mut trie = PathTrie::default();
        for p in paths {
            let mut node = &mut trie;
            for c in p.components() {
                if let std::path::Component::Normal(name) = c {
                    node = node.children.entry(name.as_bytes().to_vec()).or_default();
                }
            }
            node.target = true;
            node.follow = self.opts.follow.contains(p);
        }
        // From `/` down, every directory is opened relative to its parent,
        // as the walk below the targets is.
        let root = Path::new("/");
        if trie.target {
            // Backing up `/` itself: the root's entries are the targets.
            let entries = match Dir::open(root) {
                Ok(dir) => self.lister.list_opened(dir, root, None).entries,
                Err(e) => Err(e),
            };
            let _ = self.dir_contents(root, entries, parent);
            return Ok(());
        }
        match Dir::open_path(root) {
            Ok(dir) => {
                let _ = self.trie(&trie, &Arc::new(dir), root, parent);
            }
            Err(e) => self.error(root, e),
        }
        Ok(())
    }

    fn trie(
        &mut self,
        trie: &PathTrie,
        at_dir: &Arc<Dir>,
        at: &Path,
        parent: Option<&Tree>,
    ) -> std::result::Result<(), Stop> {
        for (name, child) in &trie.children {
            let name = OsString::from(std::ffi::OsStr::from_bytes(name));
            let path = at.join(&name);
            let md = match at_dir.stat_at(&name) {
                Ok(md) => md,
                Err(e) => {
                    self.error(&path, e);
                    continue;
                }
            };
            let old = parent.and_then(|t| tree::find(t, name.as_bytes()));
            if child.target && child.follow && md.file_type() == rustix::fs::FileType::Symlink {
                self.followed(at_dir, &path, &name, old)?;
            } else if child.target {
                self.entry(at_dir, &path, &name, &md, old, None)?;
            } else if md.is_dir() {
                let found = Child { parent: at_dir, name: &name, path: &path, walked: Identity::of(&md) };
                let dir = match self.lister.open(&found, true) {
                    Ok(dir) => Arc::new(dir),
                    Err(e) => {
                        self.error(&path, e);
                        continue;
                    }
                };
                let node = md.node(&name, NodeKind::Dir { subtree: BlobId::default() });
                let sub = self.parent_subtree(old);
                self.push(Item::Enter(node))?;
                self.trie(child, &dir, &path, sub.as_ref())?;
                self.push(Item::Leave(None))?;
            } else {
                self.error(&path, "not a directory");
            }
        }
        Ok(())
    }

    fn parent_subtree(&mut self, old: Option<&Node>) -> Option<Tree> {
        self.lister.parent_tree(&subtree_of(old)?)
    }

    /// Goes through a directory's `entries`, given the parent snapshot's
    /// tree of it. True when the directory is as that tree records it:
    /// every entry pushed equals the tree's entry of its name, and there
    /// are as many (none unreadable, none excluded that the tree has).
    fn dir_contents(
        &mut self,
        dir: &Path,
        entries: walk::Entries,
        parent: Option<&Tree>,
    ) -> std::result::Result<bool, Stop> {
        let listed = match entries {
            Ok(x) => x,
            Err(e) => {
                self.error(dir, e);
                return Ok(false);
            }
        };
        let mut same = parent.is_some_and(|t| t.len() == listed.entries.len()) && listed.unreadable.is_empty();
        for (p, e) in listed.unreadable {
            self.error(&p, e);
        }
        for e in &listed.entries {
            let old = parent.and_then(|t| tree::find(t, e.name.as_bytes()));
            same &= self.entry(&listed.dir, &e.path, &e.name, &e.metadata, old, Some(listed.dev))?;
        }
        Ok(same)
    }

    /// The extended attributes `read` returns when they are recorded (a
    /// warning when they cannot be read: the entry is kept without).
    fn xattrs(&mut self, path: &Path, read: impl FnOnce() -> std::io::Result<Vec<Xattr>>) -> Option<Vec<Xattr>> {
        if !self.opts.xattrs {
            return None;
        }
        match read() {
            Ok(x) => Some(x),
            Err(e) => {
                self.error(path, format!("cannot read extended attributes: {e}"));
                None
            }
        }
    }

    /// Pushes the directory `node` at `path`, listed as `listing`; true
    /// when it equals `old`, the parent snapshot's node of it. A
    /// directory holding a marker file is left out.
    fn dir(
        &mut self,
        path: &Path,
        mut node: Node,
        listing: Listing,
        old: Option<&Node>,
    ) -> std::result::Result<bool, Stop> {
        if listing.marked {
            return Ok(false);
        }
        if let Ok(listed) = &listing.entries {
            node.xattrs = self.xattrs(path, || listed.dir.xattrs());
        }
        let same_metadata = old.is_some_and(|old| tree::same_metadata(&node, old));
        let old_subtree = subtree_of(old);
        self.push(Item::Enter(node))?;
        let same = self.dir_contents(path, listing.entries, listing.parent.as_ref())?;
        // Its tree is the parent's only if the parent's could be read;
        // then its node is the parent's too if its metadata is.
        let reuse = old_subtree.filter(|_| same && listing.parent.is_some());
        self.push(Item::Leave(reuse))?;
        Ok(same_metadata && reuse.is_some())
    }

    /// A target given with a trailing slash that is a symlink: the
    /// directory it points to, backed up under the target's name. The link
    /// is resolved once, when the directory is opened; below it the walk
    /// goes by descriptors, as everywhere.
    fn followed(
        &mut self,
        at: &Arc<Dir>,
        path: &Path,
        name: &OsString,
        old: Option<&Node>,
    ) -> std::result::Result<bool, Stop> {
        if self.opts.excludes.matches(path) {
            return Ok(false);
        }
        let (dir, md) = match at.open_followed(name) {
            Ok(opened) => opened,
            Err(e) => {
                self.error(path, e);
                return Ok(false);
            }
        };
        let node = md.node(name, NodeKind::Dir { subtree: BlobId::default() });
        let listing = self.lister.list_opened(dir, path, subtree_of(old));
        self.dir(path, node, listing, old)
    }

    /// Pushes one entry `name` of the directory `at` (on the device
    /// `at_dev`; none for a target); true when what it pushed equals
    /// `old`, the parent snapshot's node of it.
    fn entry(
        &mut self,
        at: &Arc<Dir>,
        path: &Path,
        name: &OsString,
        md: &Meta,
        old: Option<&Node>,
        at_dev: Option<u64>,
    ) -> std::result::Result<bool, Stop> {
        if self.opts.excludes.matches(path) {
            return Ok(false);
        }
        if md.is_dir() {
            let mut node = md.node(name, NodeKind::Dir { subtree: BlobId::default() });
            if self.opts.one_file_system && at_dev.is_some_and(|dev| dev != md.dev) {
                // A mount point: recorded as an empty directory, not entered.
                node.xattrs = self.xattrs(path, || at.xattrs_at(name, Identity::of(md)));
                self.push(Item::Enter(node))?;
                self.push(Item::Leave(None))?;
                return Ok(false);
            }
            let child = Child { parent: at, name, path, walked: Identity::of(md) };
            let listing = self.lister.take(&child, subtree_of(old));
            return self.dir(path, node, listing, old);
        }
        if md.is_file() {
            return self.file(at, path, name, md, old);
        }
        match source::special_kind(at, name, md) {
            Ok(Some(kind)) => {
                let mut node = md.node(name, kind);
                node.xattrs = self.xattrs(path, || at.xattrs_at(name, Identity::of(md)));
                let same = old == Some(&node);
                self.push(Item::Node(node))?;
                Ok(same)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.error(path, e);
                Ok(false)
            }
        }
    }

    /// Pushes a file `name` of the directory `at`; true when it is
    /// unchanged and its node equals `old`.
    fn file(
        &mut self,
        at: &Arc<Dir>,
        path: &Path,
        name: &OsString,
        md: &Meta,
        old: Option<&Node>,
    ) -> std::result::Result<bool, Stop> {
        let mut node = md.node(name, NodeKind::File { content: Vec::new() });
        self.opts.progress.file(path, node.size);
        if let Some(old) = old {
            if tree::unchanged(old, &node) {
                node.kind = old.kind.clone();
                // Unchanged since the parent (ctime included, which a
                // change of attributes moves): its attributes are the
                // parent's, when the parent recorded them.
                node.xattrs = match &old.xattrs {
                    Some(x) if self.opts.xattrs => Some(x.clone()),
                    _ => self.xattrs(path, || at.xattrs_at(name, Identity::of(md))),
                };
                self.opts.progress.bytes(node.size);
                let same = tree::same_metadata(&node, old);
                self.push(Item::Node(node))?;
                return Ok(same);
            }
        }
        let status = if old.is_some() { FileStatus::Changed } else { FileStatus::New };
        if node.size <= WORKER_FILE_BYTES {
            self.opts.progress.bytes(node.size);
            self.push(Item::File(node, status, path.to_path_buf(), at.clone()))?;
            return Ok(false);
        }
        let file = match open_walked(at, path, &node, &self.opts.paths) {
            Ok(f) => f,
            Err(e) => {
                self.error(path, e);
                return Ok(false);
            }
        };
        node.xattrs = self.xattrs(path, || source::xattrs_of(std::os::fd::AsFd::as_fd(&file)));
        let size = node.size;
        let mtime = (node.mtime, node.mtime_nsec);
        self.push(Item::FileStart(node, status))?;
        let (read_bytes, error) =
            if size <= SMALL_FILE_BYTES { self.small_file(&file, size)? } else { self.chunks(&file)? };
        match &error {
            Some(e) => self.error(path, e),
            // Kept as read, with a warning (see `source::changed_while_read`).
            None => {
                if let Some(changed) = source::changed_while_read(&file, size, mtime, read_bytes) {
                    self.error(path, changed);
                }
            }
        }
        self.push(Item::FileEnd { read_bytes, error })?;
        Ok(false)
    }

    /// Reads a file of (at stat time) more than [`WORKER_FILE_BYTES`] and
    /// at most [`SMALL_FILE_BYTES`] whole, into a buffer of its size, and
    /// cuts its chunks from it: they are sealed by all workers, and the
    /// buffer is not zeroed first as a read window would be. A file that
    /// grew meanwhile is streamed on.
    fn small_file(&mut self, file: &std::fs::File, size: u64) -> std::result::Result<(u64, Option<String>), Stop> {
        let mut buf = Vec::with_capacity(size as usize + 1);
        if let Err(e) = file.take(SMALL_FILE_BYTES + 1).read_to_end(&mut buf) {
            return Ok((0, Some(e.to_string())));
        }
        if buf.len() as u64 > SMALL_FILE_BYTES {
            return self.chunks(std::io::Cursor::new(buf).chain(file));
        }
        let data = Bytes::from(buf);
        let adaptive = Arc::new(blob::Adaptive::new());
        for (start, len) in self.chunker.chunks_of(&data) {
            self.opts.progress.bytes(len as u64);
            self.push(Item::Chunk(data.slice(start..start + len), adaptive.clone()))?;
        }
        Ok((data.len() as u64, None))
    }

    /// Streams a reader's chunks; returns bytes read and a read error.
    fn chunks(&mut self, r: impl Read) -> std::result::Result<(u64, Option<String>), Stop> {
        let mut n = 0u64;
        let adaptive = Arc::new(blob::Adaptive::new());
        for c in self.chunker.stream(r) {
            match c {
                Ok(b) => {
                    n += b.len() as u64;
                    self.opts.progress.bytes(b.len() as u64);
                    self.push(Item::Chunk(b, adaptive.clone()))?;
                }
                Err(e) => return Ok((n, Some(e.to_string()))),
            }
        }
        Ok((n, None))
    }

    /// Reads a stream (standard input or a command's output) as one new
    /// file at the snapshot root; a read error or a failed command fails
    /// the backup.
    fn stream(&mut self, src: &StreamSource) -> Result<()> {
        let name = match src {
            StreamSource::Stdin { name } | StreamSource::Command { name, .. } => name,
        };
        let node = stream_node(name);
        let stopped = |_: Stop| Error::Interrupted;
        match src {
            StreamSource::Stdin { .. } => {
                self.push(Item::FileStart(node, FileStatus::New)).map_err(stopped)?;
                let (n, err) = self.chunks(std::io::stdin().lock()).map_err(stopped)?;
                if let Some(e) = err {
                    return Err(Error::Source(format!("reading standard input: {e}")));
                }
                self.push(Item::FileEnd { read_bytes: n, error: None }).map_err(stopped)?;
            }
            StreamSource::Command { argv, .. } => {
                let mut child = source::spawn_command(argv)?;
                let out = child.stdout.take().ok_or_else(|| Error::Source("command has no stdout".into()))?;
                self.push(Item::FileStart(node, FileStatus::New)).map_err(stopped)?;
                let res = self.chunks(out);
                if res.is_err() {
                    let _ = child.kill();
                }
                let status = child.wait().map_err(|e| Error::Source(format!("waiting for {:?}: {e}", argv[0])))?;
                let (n, err) = res.map_err(stopped)?;
                if let Some(e) = err {
                    return Err(Error::Source(format!("reading output of {:?}: {e}", argv[0])));
                }
                if !status.success() {
                    return Err(Error::Source(format!(
                        "command {:?} failed ({status}); no snapshot was created",
                        argv.join(" ")
                    )));
                }
                self.push(Item::FileEnd { read_bytes: n, error: None }).map_err(stopped)?;
            }
        }
        Ok(())
    }
}

/// The node of a stream stored as the file `name`: this process's user and
/// group, mode 0644, times now.
fn stream_node(name: &str) -> Node {
    let now = jiff::Timestamp::now();
    let nsec = now.subsec_nanosecond().clamp(0, 999_999_999) as u32;
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File { content: Vec::new() },
        mode: 0o100644,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        mtime: now.as_second(),
        mtime_nsec: nsec,
        ctime: now.as_second(),
        ctime_nsec: nsec,
        inode: 0,
        device: 0,
        links: 1,
        size: 0,
        xattrs: None,
    }
}
