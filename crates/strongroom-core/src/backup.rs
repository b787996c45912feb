//! The backup pipeline.
//!
//! ```text
//! reader thread: walk → stat → compare with parent → read → FastCDC
//!     │ batches of items (≈ BATCH_BYTES), bounded channel: chunks of large
//!     │ files, and small new or changed files still to be read
//! processor: rayon (small files: open, read, FastCDC; keyed hash,
//!     │ dedup lookup, zstd, seal) → build trees
//!     │ finished packs, bounded channel
//! uploader (tokio): ≤ io_concurrency puts → index delta every INDEX_EVERY packs
//! ```
//! After the last pack and index delta are stored, the snapshot record is
//! written (the commit point) and the catalog updated. Memory is bounded by
//! the channels: batches in flight plus packs in flight.
//!
//! Unchanged files (same size, mtime, ctime and inode as in the parent
//! snapshot) are not read: their chunk lists are taken from the parent.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;
use rayon::prelude::*;

use crate::blob::{self, Compression};
use crate::chunk::Chunker;
use crate::codec::pack::BlobKind;
use crate::codec::snapshot::{SnapshotRecord, SnapshotSummary, SNAPSHOT_VERSION};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::pack::{FinishedPack, PackWriter};
use crate::repo::Repo;
use crate::source::{self, Dir, Excludes, Identity, Meta};
use crate::tree::{self, Node, NodeKind, Tree};
use crate::walk::{self, Child, Lister};

/// Files up to this size are read whole (`Reader::small_file`), into a
/// buffer their chunks then point into; larger ones are streamed. Reading
/// whole costs no zeroed read window and no copies; the buffers stay
/// bounded by the pipeline's queue (a file's buffer lives until its last
/// chunk is sealed), at most about 2 files more than streaming would hold.
const SMALL_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// New and changed files up to this size (at stat time) are read,
/// chunked, hashed and sealed whole by one worker of the pool; the reader
/// thread only walks and stats them. Most files of a source tree are a few
/// KiB, and opening and reading them on the reader thread made it the
/// bottleneck of such a backup (one core, a fresh buffer per file and its
/// page faults). A worker reads into a buffer it keeps, and seals the
/// chunks while they are still in its cache.
const WORKER_FILE_BYTES: u64 = 1024 * 1024;
/// Chunk bytes per batch handed from the reader to the processor. Small
/// batches in a deep queue keep both cores busy with less memory than
/// large ones (measured: docs/BENCHMARKS.md, section n).
const BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Items per batch at most (many small files).
const BATCH_ITEMS: usize = 4096;
/// Directories whose files one batch holds open, at most: a queued file
/// keeps its directory open (the worker opens the file relative to it),
/// and descriptors are limited. With [`BATCH_QUEUE`] and
/// [`BATCHES_IN_FLIGHT`], about 500 directories stay open for queued files.
const BATCH_DIRS: usize = 32;
/// Batches queued between reader and processor.
const BATCH_QUEUE: usize = 8;
/// Packs per index delta at most; an interrupted backup loses at most this
/// many packs' worth of dedup for the rerun (or [`INDEX_EVERY_SECS`]' worth).
const INDEX_EVERY: usize = 16;
/// Longest time between index deltas while packs are being stored.
const INDEX_EVERY_SECS: u64 = 15;
/// Open data packs that blobs are spread over at random, so a pack's
/// content does not follow file order.
const OPEN_DATA_PACKS: usize = 2;

/// Receives progress from a running backup.
pub trait Progress: Send + Sync {
    /// A file is being read (or taken from the parent).
    fn file(&self, _path: &Path, _size: u64) {}
    /// Bytes processed (read or taken over).
    fn bytes(&self, _n: u64) {}
}

/// Progress that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A stream to store as one file at the snapshot root.
#[derive(Debug, Clone)]
pub enum StreamSource {
    /// Standard input.
    Stdin {
        /// File name in the snapshot.
        name: String,
    },
    /// A command's standard output.
    Command {
        /// File name in the snapshot.
        name: String,
        /// Program and arguments.
        argv: Vec<String>,
    },
}

/// Which parent to compare against.
#[derive(Debug, Clone)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    Auto,
    /// This snapshot.
    Id(SnapshotId),
    /// None: read every file.
    None,
}

/// Inputs of a backup.
pub struct BackupOptions {
    /// Absolute paths to back up (empty with a stream source).
    pub paths: Vec<PathBuf>,
    /// A stream source instead of paths.
    pub stream: Option<StreamSource>,
    /// Exclude patterns.
    pub excludes: Excludes,
    /// Tags.
    pub tags: Vec<String>,
    /// Host name recorded.
    pub host: String,
    /// Snapshot time (Unix ns); now by default.
    pub time_ns: Option<i64>,
    /// Parent selection.
    pub parent: ParentChoice,
    /// Compression.
    pub compression: Compression,
    /// Concurrent uploads.
    pub io_concurrency: usize,
    /// Set to stop early (Ctrl-C); the backup then fails with `Interrupted`.
    pub cancel: crate::Cancel,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
    /// Called just before the snapshot record is written; an error (a lost
    /// lock) stops the backup without a snapshot.
    pub before_commit: Box<dyn Fn() -> Result<()> + Send + Sync>,
    /// The tenant's stored-bytes quota and what it stores now: a pack that
    /// would take the tenant over it is not uploaded and the backup fails.
    pub quota: Option<Quota>,
}

/// A stored-bytes quota.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// The limit.
    pub limit: u64,
    /// What the tenant stores before this backup.
    pub stored: u64,
}

/// What a backup did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    /// The new snapshot.
    pub snapshot_id: String,
    /// Its short id.
    pub short_id: String,
    /// The parent used for change detection.
    pub parent: Option<String>,
    /// The counters stored in the snapshot record (flattened in JSON:
    /// `files_new`, `files_changed`, `files_unmodified`, `dirs`,
    /// `logical_bytes`, `read_bytes`, `added_bytes`, `blobs_new`,
    /// `duration_seconds`).
    #[serde(flatten)]
    pub counts: SnapshotSummary,
    /// Entries that could not be read: (path, error).
    pub errors: EntryErrors,
}

enum FileStatus {
    New,
    Changed,
}

enum Item {
    /// A directory begins; its node's kind is filled at `Leave`.
    Enter(Node),
    /// A directory ends. With the parent snapshot's tree of it when every
    /// entry pushed since `Enter` equals that tree's entry, in number and
    /// content: the tree it would build is that one, stored already.
    Leave(Option<BlobId>),
    /// A complete node (special file, or a file taken from the parent).
    Node(Node),
    FileStart(Node, FileStatus),
    /// A new or changed file of at most [`WORKER_FILE_BYTES`] at stat
    /// time, to be read and sealed by a worker: its node (as walked), its
    /// path, and its directory (it is opened relative to that).
    File(Node, FileStatus, PathBuf, Arc<Dir>),
    /// A chunk, with what its file's chunks showed about compression.
    Chunk(Bytes, Arc<blob::Adaptive>),
    FileEnd {
        read_bytes: u64,
        error: Option<String>,
    },
}

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
    tx: crossbeam_channel::Sender<Vec<Item>>,
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

/// Runs a backup. Blocks; must be called outside the async runtime's
/// worker threads (or inside `block_in_place`), with `rt` its handle.
pub fn run(repo: &Repo, rt: &tokio::runtime::Handle, opts: BackupOptions) -> Result<BackupSummary> {
    repo.set_tree_pack_cache(true);
    let started = Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as i64);
    let paths_text: Vec<String> = match &opts.stream {
        Some(StreamSource::Stdin { name } | StreamSource::Command { name, .. }) => {
            source::check_stream_name(name)?;
            vec![format!("/{name}")]
        }
        None => opts.paths.iter().map(|p| p.display().to_string()).collect(),
    };
    let parent = match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Id(id) => Some(repo.resolve(&id.to_hex(), None)?),
        ParentChoice::Auto => {
            let mut sorted = paths_text.clone();
            sorted.sort();
            repo.find_newest_snapshot(|s| {
                let mut p = s.record.paths.clone();
                p.sort();
                s.record.hostname == opts.host && p == sorted
            })?
        }
    };
    tracing::trace!("backup: parent snapshot chosen");
    let parent_root = match &parent {
        Some(p) => Some(rt.block_on(repo.load_tree(&p.record.tree))?),
        None => None,
    };

    let dk = repo.data_key()?;
    let generation = dk.generation;
    let chunker = Chunker::new(repo.config().chunk_sizes, repo.keys().gear())?;
    let (item_tx, item_rx) = crossbeam_channel::bounded::<Vec<Item>>(BATCH_QUEUE);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
    let io_concurrency = opts.io_concurrency.max(1);
    let quota = opts.quota;
    // Set by the reader when it has read everything (see [`Packer::add`]).
    let read_all = AtomicBool::new(false);

    // Parent trees, located through one catalog read view.
    tracing::trace!("backup: parent tree loaded");
    let trees = repo.catalog().reader()?;
    let load_tree = |id: &BlobId| rt.block_on(repo.load_tree_in(&trees, id));
    let skip = |p: &Path| opts.excludes.matches(p);
    let before_open = |p: &Path| pause_at("backup-before-open", p, &opts.paths);
    let lister = Lister::new(&load_tree, &skip, &before_open);
    let (reader_result, process_result, upload_result) = std::thread::scope(|s| {
        // Named threads: profiles and debuggers show which stage is busy.
        if opts.stream.is_none() {
            for _ in 0..walk::helpers() {
                // Without helpers the reader lists every directory itself.
                let _ = std::thread::Builder::new().name("sr-lister".into()).spawn_scoped(s, || lister.help());
            }
        }
        let reader = std::thread::Builder::new().name("sr-reader".into()).spawn_scoped(s, || {
            let batch =
                Batcher { items: Vec::new(), bytes: 0, dirs: 0, last_dir: None, limit: FIRST_BATCH_BYTES, tx: item_tx };
            let mut r = Reader { chunker: &chunker, opts: &opts, errors: Vec::new(), batch, lister: &lister };
            let res = match &opts.stream {
                Some(src) => r.stream(src),
                None => r.paths(&opts.paths, parent_root.as_ref()),
            };
            lister.close();
            r.batch.flush();
            read_all.store(true, Ordering::Relaxed);
            tracing::trace!("backup: source read");
            res.map(|()| r.errors)
        });
        let uploader = std::thread::Builder::new()
            .name("sr-upload".into())
            .spawn_scoped(s, || rt.block_on(upload(repo, pack_rx, io_concurrency, quota)));
        let processed = process(repo, &chunker, item_rx, pack_tx, &opts, generation, &read_all);
        let reader_result = match reader {
            Ok(h) => h.join().unwrap_or_else(|_| Err(Error::Invalid("reader thread panicked".into()))),
            Err(e) => Err(Error::Invalid(format!("cannot start the reader thread: {e}"))),
        };
        let upload_result = match uploader {
            Ok(h) => h.join().unwrap_or_else(|_| Err(Error::Invalid("upload thread panicked".into()))),
            Err(e) => Err(Error::Invalid(format!("cannot start the upload thread: {e}"))),
        };
        (reader_result, processed, upload_result)
    });

    tracing::trace!("backup: packs and index deltas stored");
    // Order of errors: interruption first, then the source, then storage.
    if opts.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let uploaded = upload_result?;
    let errors = reader_result?;
    let (root, counts, file_errors) = process_result?;
    let errors = [errors, file_errors].concat();

    let mut summary = SnapshotSummary {
        files_new: counts.files_new,
        files_changed: counts.files_changed,
        files_unmodified: counts.files_unmodified,
        dirs: counts.dirs,
        logical_bytes: counts.logical_bytes,
        read_bytes: counts.read_bytes,
        added_bytes: uploaded.bytes,
        blobs_new: counts.blobs_new,
        duration_seconds: 0.0,
    };
    summary.duration_seconds = started.elapsed().as_secs_f64();
    let record = SnapshotRecord {
        version: SNAPSHOT_VERSION,
        time: crate::snapshot::format_time(time_ns),
        tree: root,
        paths: paths_text,
        hostname: opts.host.clone(),
        username: crate::source::username(),
        tags: opts.tags.clone(),
        parent: parent.as_ref().map(|p| p.id.to_hex()),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        summary: summary.clone(),
        copied_from: None,
    };
    // Packs and index deltas are stored, the snapshot is not: a test
    // plays a prune from elsewhere here.
    crate::testhook::pause("backup-before-commit", "");
    (opts.before_commit)()?;
    let id = rt.block_on(repo.save_snapshot(&record))?;
    tracing::trace!("backup: snapshot stored");
    Ok(BackupSummary {
        snapshot_id: id.to_hex(),
        short_id: id.short(),
        parent: record.parent,
        counts: SnapshotSummary { duration_seconds: started.elapsed().as_secs_f64(), ..summary },
        errors,
    })
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
fn pause_at(point: &str, path: &Path, targets: &[PathBuf]) {
    if !crate::testhook::ENABLED {
        return;
    }
    let below = targets.iter().filter_map(|t| path.strip_prefix(t).ok()).min_by_key(|rel| rel.as_os_str().len());
    crate::testhook::pause(point, &below.unwrap_or(path).to_string_lossy());
}

/// Opens the regular file `node` (as the walk saw it) of the directory
/// `at`: it must still be that file (see `source::Dir::open_file`).
fn open_walked(at: &Dir, path: &Path, node: &Node, targets: &[PathBuf]) -> std::io::Result<std::fs::File> {
    pause_at("backup-before-open", path, targets);
    let file = at.open_file(std::ffi::OsStr::from_bytes(&node.name), Identity::of_node(node))?;
    pause_at("backup-before-read", path, targets);
    Ok(file)
}

/// A tree of the paths to back up: intermediate directories and targets.
#[derive(Default)]
struct PathTrie {
    target: bool,
    children: BTreeMap<Vec<u8>, PathTrie>,
}

struct Reader<'a> {
    chunker: &'a Chunker,
    opts: &'a BackupOptions,
    errors: EntryErrors,
    batch: Batcher,
    /// Lists directories ahead of the walk.
    lister: &'a Lister<'a>,
}

/// The reader stops when the processor is gone or the user cancelled.
struct Stop;

impl Reader<'_> {
    fn stopped(&self) -> bool {
        self.opts.cancel.is_cancelled()
    }

    fn push(&mut self, item: Item) -> std::result::Result<(), Stop> {
        if self.stopped() || !self.batch.push(item) {
            return Err(Stop);
        }
        Ok(())
    }

    fn error(&mut self, path: &Path, e: impl std::fmt::Display) {
        tracing::warn!(path = %path.display(), "{e}");
        self.errors.push((path.display().to_string(), e.to_string()));
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
            if child.target {
                self.entry(at_dir, &path, &name, &md, old)?;
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
            same &= self.entry(&listed.dir, &e.path, &e.name, &e.metadata, old)?;
        }
        Ok(same)
    }

    /// Pushes one entry `name` of the directory `at`; true when what it
    /// pushed equals `old`, the parent snapshot's node of it.
    fn entry(
        &mut self,
        at: &Arc<Dir>,
        path: &Path,
        name: &OsString,
        md: &Meta,
        old: Option<&Node>,
    ) -> std::result::Result<bool, Stop> {
        if self.opts.excludes.matches(path) {
            return Ok(false);
        }
        if md.is_dir() {
            let node = md.node(name, NodeKind::Dir { subtree: BlobId::default() });
            let same_metadata = old.is_some_and(|old| tree::same_metadata(&node, old));
            let old_subtree = subtree_of(old);
            let child = Child { parent: at, name, path, walked: Identity::of(md) };
            let listing = self.lister.take(&child, old_subtree);
            self.push(Item::Enter(node))?;
            let same = self.dir_contents(path, listing.entries, listing.parent.as_ref())?;
            // Its tree is the parent's only if the parent's could be read;
            // then its node is the parent's too if its metadata is.
            let reuse = old_subtree.filter(|_| same && listing.parent.is_some());
            self.push(Item::Leave(reuse))?;
            return Ok(same_metadata && reuse.is_some());
        }
        if md.is_file() {
            return self.file(at, path, name, md, old);
        }
        match source::special_kind(at, name, md) {
            Ok(Some(kind)) => {
                let node = md.node(name, kind);
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

    fn stream(&mut self, src: &StreamSource) -> Result<()> {
        let now = jiff::Timestamp::now();
        let name = match src {
            StreamSource::Stdin { name } | StreamSource::Command { name, .. } => name.clone(),
        };
        let node = Node {
            name: name.clone().into_bytes(),
            kind: NodeKind::File { content: Vec::new() },
            mode: 0o100644,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mtime: now.as_second(),
            mtime_nsec: now.subsec_nanosecond().clamp(0, 999_999_999) as u32,
            ctime: now.as_second(),
            ctime_nsec: now.subsec_nanosecond().clamp(0, 999_999_999) as u32,
            inode: 0,
            device: 0,
            links: 1,
            size: 0,
        };
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

#[derive(Default)]
struct Counts {
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    dirs: u64,
    /// Directories whose tree was the parent's (see [`Item::Leave`]).
    dirs_unchanged: u64,
    logical_bytes: u64,
    read_bytes: u64,
    blobs_new: u64,
}

enum Processed {
    Known(BlobId),
    New(BlobId, u32, Vec<u8>),
}

struct Packer<'a> {
    repo: &'a Repo,
    tx: tokio::sync::mpsc::Sender<FinishedPack>,
    data: Vec<PackWriter>,
    tree: PackWriter,
    target: usize,
    generation: u32,
    /// Data packs sent so far (see [`FIRST_PACK_BYTES`]).
    sent: u32,
    /// The reader has read everything (see [`FIRST_PACK_BYTES`]).
    read_all: &'a AtomicBool,
}

/// The first two data packs of a backup close at this size, the next two
/// at twice that, and so on up to the repository's pack target. A small
/// backup then uploads packs while it still reads and compresses, instead
/// of finishing, hashing and writing all of them at the end, when nothing
/// else is left for the cores to do (a source tree of 86 MB ended with
/// 24 MB of packs written after the last chunk). Once the reader has
/// read everything, what is left to seal is the queued batches, and data
/// packs close at this size again: they are written while the last
/// batches are sealed, instead of after.
const FIRST_PACK_BYTES: usize = 2 * 1024 * 1024;

/// The data packs a backup finishes at its end are padded to at least
/// this size, and every pack it finishes at its end to a Padmé length
/// (`PackWriter::finish_padded`). They are the only packs below the pack
/// target, and a backup that adds one small file would otherwise store a
/// data pack whose length gives that file's compressed size (to its
/// Padmé bucket); now it looks like that of any backup that added less
/// than this. It costs at most this much for a backup that adds a little
/// (usually one last data pack), a Padmé rounding (at most 3% of a pack
/// of 1 MiB or more) for the others, and nothing for a backup that adds
/// nothing (it writes no pack). The last tree pack is not given a
/// minimum: its length tells of directories, not of file contents.
const LAST_DATA_PACK_MIN_BYTES: usize = 64 * 1024;

impl Packer<'_> {
    /// The id of a worker's result; a new blob goes into a pack.
    fn take(&mut self, p: Processed, counts: &mut Counts) -> Result<BlobId> {
        match p {
            Processed::Known(id) => Ok(id),
            Processed::New(id, raw_len, sealed) => {
                counts.blobs_new += 1;
                self.add(BlobKind::Data, id, raw_len, sealed)?;
                Ok(id)
            }
        }
    }

    fn add(&mut self, kind: BlobKind, id: BlobId, raw_len: u32, sealed: Vec<u8>) -> Result<()> {
        let target = match kind {
            BlobKind::Tree => self.target,
            BlobKind::Data if self.read_all.load(Ordering::Relaxed) => self.target.min(FIRST_PACK_BYTES),
            BlobKind::Data => self.target.min(FIRST_PACK_BYTES << (self.sent / 2).min(16)),
        };
        let w = match kind {
            BlobKind::Tree => &mut self.tree,
            BlobKind::Data => {
                let i = rand::thread_rng().gen_range(0..self.data.len());
                &mut self.data[i]
            }
        };
        w.add(id, raw_len, sealed);
        if w.size() >= target {
            let full = std::mem::replace(w, PackWriter::new(kind));
            if kind == BlobKind::Data {
                self.sent += 1;
            }
            self.send(full)?;
        }
        Ok(())
    }

    fn send(&mut self, w: PackWriter) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let dk = self.repo.data_key()?;
        let p = w.finish(self.generation, &dk.key);
        self.send_finished(p)
    }

    fn send_finished(&self, p: FinishedPack) -> Result<()> {
        // A closed channel means the uploader failed; its error is reported.
        self.tx.blocking_send(p).map_err(|_| Error::Invalid("upload stopped".into()))
    }

    /// Finishes the open packs (at once: nothing else is left to do on
    /// the cores) and sends them. The open data packs become one where
    /// they fit in the pack target together, and these last packs, the
    /// only ones below the target, are padded to a Padmé length, data
    /// packs to at least [`LAST_DATA_PACK_MIN_BYTES`].
    fn flush(mut self) -> Result<()> {
        let mut open: Vec<PackWriter> = Vec::new();
        for w in std::mem::take(&mut self.data) {
            match open.last_mut() {
                Some(last) if last.size() + w.size() <= self.target => last.append(w),
                _ => open.push(w),
            }
        }
        open.push(std::mem::replace(&mut self.tree, PackWriter::new(BlobKind::Tree)));
        open.retain(|w| !w.is_empty());
        let dk = self.repo.data_key()?;
        let generation = self.generation;
        let finish = |w: PackWriter| {
            let min_len = if w.kind() == BlobKind::Data { LAST_DATA_PACK_MIN_BYTES } else { 0 };
            w.finish_padded(generation, &dk.key, min_len)
        };
        // One pack (an unchanged tree's, often) needs no pool.
        let finished: Vec<FinishedPack> = match open.len() {
            0 | 1 => open.into_iter().map(finish).collect(),
            _ => open.into_par_iter().map(finish).collect(),
        };
        finished.into_iter().try_for_each(|p| self.send_finished(p))
    }
}

struct Frame {
    node: Option<Node>,
    children: Vec<Node>,
}

/// Batches being hashed and sealed at once: while the processor files
/// the results of one batch into trees and packs, the workers already
/// seal the next ones, so no core waits for the sequential part.
const BATCHES_IN_FLIGHT: usize = 6;

/// One batch's results, in item order (None for items that are not chunks).
type BatchResults = Vec<Sealed>;

/// Entries that could not be read: (path, error).
pub type EntryErrors = Vec<(String, String)>;

/// What the workers made of one item of a batch.
enum Sealed {
    /// Nothing: the item is not a chunk or file.
    Nothing,
    Chunk(Result<Processed>),
    File(Result<WholeFile>),
}

/// A file read and sealed by a worker ([`seal_file`]).
enum WholeFile {
    /// Bytes read, its chunks in order, and how it changed while it was
    /// read (it is stored as read, with this warning).
    Read(u64, Vec<Processed>, Option<String>),
    /// It could not be opened or read: why.
    Failed(String),
}

/// Files a new or changed file's node, with its content, in the directory
/// being built.
fn add_file(
    stack: &mut [Frame],
    counts: &mut Counts,
    mut node: Node,
    content: Vec<BlobId>,
    size: u64,
    status: FileStatus,
) {
    node.size = size;
    node.kind = NodeKind::File { content };
    match status {
        FileStatus::New => counts.files_new += 1,
        FileStatus::Changed => counts.files_changed += 1,
    }
    counts.logical_bytes += size;
    if let Some(top) = stack.last_mut() {
        top.children.push(node);
    }
}

thread_local! {
    /// A worker's read buffer for [`seal_file`], kept between files: only
    /// its first bytes are the current file's; it stays initialized, so
    /// reusing it needs no zeroing and no page faults.
    static FILE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads a new or changed file `node` of the directory `dir` (at most
/// [`WORKER_FILE_BYTES`] at stat time) into this worker's buffer, then
/// cuts, hashes and seals its chunks with `seal`. A file that has grown
/// past [`SMALL_FILE_BYTES`] since is streamed on from there.
fn seal_file(
    dir: &Dir,
    path: &Path,
    node: &Node,
    chunker: &Chunker,
    seal: &(dyn Fn(&[u8], &blob::Adaptive) -> Result<Processed> + Sync),
    targets: &[PathBuf],
) -> Result<WholeFile> {
    let size = node.size;
    let file = match open_walked(dir, path, node, targets) {
        Ok(f) => f,
        Err(e) => return Ok(WholeFile::Failed(e.to_string())),
    };
    let adaptive = blob::Adaptive::new();
    FILE_BUF.with(|cell| {
        let mut own = Vec::new();
        let mut held = cell.try_borrow_mut();
        let buf = match held.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut own,
        };
        let limit = SMALL_FILE_BYTES as usize;
        let n = match read_up_to(&file, size, limit, buf) {
            Ok(n) => n,
            Err(e) => return Ok(WholeFile::Failed(e.to_string())),
        };
        let mut chunks = Vec::new();
        let read = if n <= limit {
            let data = &buf[..n];
            for (start, len) in chunker.chunks_of(data) {
                chunks.push(seal(&data[start..start + len], &adaptive)?);
            }
            n as u64
        } else {
            let mut read = 0u64;
            for c in chunker.stream(std::io::Cursor::new(&buf[..n]).chain(&file)) {
                match c {
                    Ok(b) => {
                        read += b.len() as u64;
                        chunks.push(seal(&b, &adaptive)?);
                    }
                    Err(e) => return Ok(WholeFile::Failed(e.to_string())),
                }
            }
            read
        };
        // A buffer a growing file made large is not kept.
        if buf.len() > 2 * WORKER_FILE_BYTES as usize {
            *buf = Vec::new();
        }
        let changed = source::changed_while_read(&file, size, (node.mtime, node.mtime_nsec), read);
        Ok(WholeFile::Read(read, chunks, changed))
    })
}

/// Reads `file`, `size` bytes long at stat time, into `buf[..n]` until its
/// end or past `limit` bytes; returns n (more than `limit`: there is more
/// to read). `buf` keeps its length as scratch space, so that its reuse
/// needs no zeroing. One `read` in the common case: it asks for one byte
/// more than `size`, and a regular file returns fewer bytes than asked
/// only at its end.
fn read_up_to(mut file: &std::fs::File, size: u64, limit: usize, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut n = 0usize;
    let mut ask = usize::try_from(size).unwrap_or(limit).min(limit) + 1;
    loop {
        if buf.len() < n + ask {
            buf.resize(n + ask, 0);
        }
        let got = match file.read(&mut buf[n..n + ask]) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        n += got;
        if got == 0 || (got < ask && n as u64 == size) || n > limit {
            return Ok(n);
        }
        ask = (limit + 1 - n).min(n.max(64 * 1024));
    }
}

fn process(
    repo: &Repo,
    chunker: &Chunker,
    rx: crossbeam_channel::Receiver<Vec<Item>>,
    pack_tx: tokio::sync::mpsc::Sender<FinishedPack>,
    opts: &BackupOptions,
    generation: u32,
    read_all: &AtomicBool,
) -> Result<(BlobId, Counts, EntryErrors)> {
    let dk = repo.data_key()?;
    let keys = repo.keys();
    let dedup = repo.catalog().dedup()?;
    // Blobs of this backup that are stored or being stored: the worker that
    // inserts an id seals it, every other occurrence refers to it.
    let claimed: std::sync::Mutex<HashSet<BlobId>> = std::sync::Mutex::new(HashSet::new());
    let lock = || claimed.lock().map_err(|_| Error::Invalid("a backup worker panicked".into()));
    let claim = |id: &BlobId| -> Result<bool> {
        // A chunk repeated within this backup needs no catalog lookup.
        if lock()?.contains(id) || dedup.contains(id)? {
            return Ok(false);
        }
        Ok(lock()?.insert(*id))
    };
    let mut counts = Counts::default();
    let mut packer = Packer {
        repo,
        tx: pack_tx,
        data: (0..OPEN_DATA_PACKS).map(|_| PackWriter::new(BlobKind::Data)).collect(),
        tree: PackWriter::new(BlobKind::Tree),
        target: repo.config().pack_target_bytes as usize,
        sent: 0,
        generation,
        read_all,
    };
    let mut stack = vec![Frame { node: None, children: Vec::new() }];
    let mut file: Option<(Node, Vec<BlobId>, FileStatus)> = None;

    let mut errors = EntryErrors::new();

    let seal_chunk = |data: &[u8], adaptive: &blob::Adaptive| -> Result<Processed> {
        let id = keys.blob_id(data);
        Ok(match claim(&id)? {
            false => Processed::Known(id),
            true => Processed::New(
                id,
                data.len() as u32,
                blob::seal_adaptive(&dk.key, BlobKind::Data, &id, data, opts.compression, Some(adaptive)),
            ),
        })
    };
    let seal_batch = |batch: &[Item]| -> BatchResults {
        batch
            .par_iter()
            .map(|item| match item {
                Item::Chunk(data, adaptive) => Sealed::Chunk(seal_chunk(data, adaptive)),
                Item::File(node, _, path, dir) => {
                    Sealed::File(seal_file(dir, path, node, chunker, &seal_chunk, &opts.paths))
                }
                _ => Sealed::Nothing,
            })
            .collect()
    };

    // Files one batch's results: chunk ids into files, files into trees,
    // new blobs into packs.
    let mut file_batch = |batch: Vec<Item>, results: BatchResults| -> Result<()> {
        for (item, res) in batch.into_iter().zip(results) {
            match (item, res) {
                (Item::Chunk(..), Sealed::Chunk(p)) => {
                    let id = packer.take(p?, &mut counts)?;
                    if let Some((_, content, _)) = &mut file {
                        content.push(id);
                    }
                }
                (Item::File(node, status, path, _), Sealed::File(sealed)) => match sealed? {
                    WholeFile::Read(read_bytes, chunks, changed) => {
                        let content =
                            chunks.into_iter().map(|p| packer.take(p, &mut counts)).collect::<Result<Vec<_>>>()?;
                        counts.read_bytes += read_bytes;
                        if let Some(changed) = changed {
                            tracing::warn!(path = %path.display(), "{changed}");
                            errors.push((path.display().to_string(), changed));
                        }
                        add_file(&mut stack, &mut counts, node, content, read_bytes, status);
                    }
                    WholeFile::Failed(e) => {
                        tracing::warn!(path = %path.display(), "{e}");
                        errors.push((path.display().to_string(), e));
                    }
                },
                (Item::FileStart(node, status), _) => file = Some((node, Vec::new(), status)),
                (Item::FileEnd { read_bytes, error }, _) => {
                    let Some((node, content, status)) = file.take() else { continue };
                    counts.read_bytes += read_bytes;
                    if error.is_none() {
                        add_file(&mut stack, &mut counts, node, content, read_bytes, status);
                    }
                }
                (Item::Node(node), _) => {
                    if let NodeKind::File { .. } = node.kind {
                        counts.files_unmodified += 1;
                        counts.logical_bytes += node.size;
                    }
                    if let Some(top) = stack.last_mut() {
                        top.children.push(node);
                    }
                }
                (Item::Enter(node), _) => stack.push(Frame { node: Some(node), children: Vec::new() }),
                (Item::Leave(reuse), _) => {
                    let Some(frame) = stack.pop() else { continue };
                    let id = match reuse {
                        // Unchanged: the parent's tree, read from the
                        // repository by the walk, is a tree of exactly
                        // these nodes, and stored.
                        Some(id) => {
                            counts.dirs_unchanged += 1;
                            id
                        }
                        None => store_tree(repo, &mut packer, &claim, frame.children, opts)?,
                    };
                    counts.dirs += 1;
                    if let (Some(mut node), Some(top)) = (frame.node, stack.last_mut()) {
                        node.kind = NodeKind::Dir { subtree: id };
                        top.children.push(node);
                    }
                }
                (Item::Chunk(..) | Item::File(..), _) => {
                    return Err(Error::Invalid("a backup worker lost a result".into()));
                }
            }
        }
        Ok(())
    };

    // Batches are sealed by the pool while this thread files the results
    // of earlier ones, in order. Until a batch holds something to seal
    // (an unchanged tree may never have one), batches are filed here and
    // the pool's threads are not started.
    let mut batches = rx.into_iter();
    let mut first = None;
    for batch in batches.by_ref() {
        if opts.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        if batch.iter().any(|item| matches!(item, Item::Chunk(..) | Item::File(..))) {
            first = Some(batch);
            break;
        }
        let nothing = batch.iter().map(|_| Sealed::Nothing).collect();
        file_batch(batch, nothing)?;
    }
    type Done = crossbeam_channel::Receiver<(Vec<Item>, BatchResults)>;
    let outcome = match first {
        None => Ok(()),
        Some(first) => rayon::in_place_scope(|scope| -> Result<()> {
            let mut pending: std::collections::VecDeque<Done> = std::collections::VecDeque::new();
            let mut next = |done: Done| -> Result<()> {
                let (batch, results) = done.recv().map_err(|_| Error::Invalid("a backup worker panicked".into()))?;
                file_batch(batch, results)
            };
            let mut failed: Result<()> = Ok(());
            let mut batches = std::iter::once(first).chain(batches);
            for batch in batches.by_ref() {
                if opts.cancel.is_cancelled() {
                    failed = Err(Error::Interrupted);
                    break;
                }
                let (tx, done) = crossbeam_channel::bounded(1);
                let seal_batch = &seal_batch;
                scope.spawn(move |_| {
                    let results = seal_batch(&batch);
                    let _ = tx.send((batch, results));
                });
                pending.push_back(done);
                if pending.len() >= BATCHES_IN_FLIGHT {
                    if let Some(done) = pending.pop_front() {
                        if let Err(e) = next(done) {
                            failed = Err(e);
                            break;
                        }
                    }
                }
            }
            // On failure, dropping the receiver stops the reader; the
            // batches still in the pool finish (their results are dropped).
            drop(batches);
            failed?;
            while let Some(done) = pending.pop_front() {
                next(done)?;
            }
            Ok(())
        }),
    };
    outcome?;
    if opts.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let root = stack.pop().map(|f| f.children).unwrap_or_default();
    let root_id = store_tree(repo, &mut packer, &claim, root, opts)?;
    packer.flush()?;
    let d = dedup.stats();
    tracing::debug!(
        "{} of {} directories unchanged (their trees reused); dedup checks: {} ruled out by the id filter \
         ({} KiB), {} known from recent packs, {} catalog lookups found, {} not found, {:.1} ms in catalog lookups",
        counts.dirs_unchanged,
        counts.dirs,
        d.filtered,
        dedup.filter_bytes() / 1024,
        d.recent,
        d.table_hits,
        d.table_misses,
        d.table_ns as f64 / 1e6
    );
    Ok((root_id, counts, errors))
}

fn store_tree(
    repo: &Repo,
    packer: &mut Packer<'_>,
    claim: &dyn Fn(&BlobId) -> Result<bool>,
    mut children: Vec<Node>,
    opts: &BackupOptions,
) -> Result<BlobId> {
    tree::sort(&mut children);
    let bytes = crate::codec::tree::encode(&children);
    if bytes.len() > blob::MAX_BLOB_BYTES as usize {
        return Err(Error::Invalid(format!(
            "a directory with {} entries is too large for one tree blob",
            children.len()
        )));
    }
    let id = repo.keys().blob_id(&bytes);
    if claim(&id)? {
        let dk = repo.data_key()?;
        let sealed = blob::seal(&dk.key, BlobKind::Tree, &id, &bytes, opts.compression);
        packer.add(BlobKind::Tree, id, bytes.len() as u32, sealed)?;
    }
    Ok(id)
}

/// What the uploader stored.
struct Uploaded {
    bytes: u64,
}

async fn upload(
    repo: &Repo,
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    quota: Option<Quota>,
) -> Result<Uploaded> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let generation = repo.data_key()?.generation;
    let mut running = FuturesUnordered::new();
    // Stored packs not yet in an index delta; their catalog rows go in
    // as they are stored.
    let mut staged = repo.catalog().stage();
    let mut bytes = 0u64;
    let mut open = true;
    let mut failure: Option<Error> = None;
    let mut last_index = Instant::now();
    // Bytes uploaded or being uploaded (packs) plus index deltas written.
    let mut reserved = 0u64;
    while open || !running.is_empty() {
        tokio::select! {
            p = rx.recv(), if open && running.len() < concurrency && failure.is_none() => match p {
                Some(p) => {
                    let len = p.bytes.len() as u64;
                    if let Some(q) = quota {
                        if q.stored + reserved + len > q.limit {
                            failure = Some(Error::QuotaExceeded {
                                tenant: repo.tenant().to_string(),
                                limit: q.limit,
                                stored: q.stored,
                                adding: reserved + len,
                            });
                            rx.close();
                            open = false;
                            continue;
                        }
                    }
                    reserved += len;
                    running.push(repo.save_pack(p, generation))
                }
                None => open = false,
            },
            Some(r) = running.next(), if !running.is_empty() => match r {
                Ok(entry) => {
                    bytes += entry.length;
                    staged.add(entry);
                    if staged.packs().len() >= INDEX_EVERY || last_index.elapsed().as_secs() >= INDEX_EVERY_SECS {
                        let (_, n) = repo.save_staged_index(std::mem::replace(&mut staged, repo.catalog().stage())).await?;
                        bytes += n;
                        reserved += n;
                        last_index = Instant::now();
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    // Stop taking packs; the processor sees a closed channel.
                    rx.close();
                    open = false;
                }
            },
            else => break,
        }
    }
    // Index what was stored, even after a failure, so a rerun dedups.
    if !staged.packs().is_empty() {
        let (_, n) = repo.save_staged_index(staged).await?;
        bytes += n;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Uploaded { bytes }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        (dir, f)
    }

    #[test]
    fn read_up_to_reads_to_the_end_whatever_the_stated_size() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // A buffer left longer by an earlier file: only buf[..n] counts.
        let mut buf = vec![7u8; 400_000];
        for stated in [300_000u64, 0, 1000, 299_999, 300_001, 1 << 30] {
            let (_d, f) = file_with(&data);
            let n = read_up_to(&f, stated, 1 << 20, &mut buf).unwrap();
            assert_eq!(&buf[..n], &data[..], "stated size {stated}");
        }
        // Past the limit it stops, and the rest can be read on from the file.
        let (_d, mut f) = file_with(&data);
        let n = read_up_to(&f, 300_000, 100_000, &mut buf).unwrap();
        assert!(n > 100_000 && n <= 100_001 + 64 * 1024);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        assert_eq!([&buf[..n], &rest[..]].concat(), data);
        // An empty file, stated empty or not.
        for stated in [0, 10] {
            let (_d, f) = file_with(b"");
            assert_eq!(read_up_to(&f, stated, 1 << 20, &mut buf).unwrap(), 0);
        }
    }
}
