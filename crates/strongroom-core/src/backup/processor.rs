//! The processor phase. The rayon pool's workers seal the reader's batches
//! ([`Sealer`]: small files opened, read and cut; every chunk hashed,
//! looked up, compressed and sealed), several batches at once, while the
//! processor thread files each batch's results in item order
//! ([`Processor`]): chunk ids into files, files into directory trees, new
//! blobs into packs.
//!
//! The two are separate structs because they run at the same time: the
//! workers share a `Sealer` (read-only but for its set of claimed ids),
//! and only the processor thread changes a `Processor`.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;

use rayon::prelude::*;

use super::packer::Packer;
use super::reader::{open_walked, FileStatus, Item, SMALL_FILE_BYTES, WORKER_FILE_BYTES};
use super::BackupOptions;
use crate::blob;
use crate::catalog::Dedup;
use crate::chunk::Chunker;
use crate::codec::pack::BlobKind;
use crate::crypto::{DataKey, TenantKeys};
use crate::error::{Error, FileErrors, Result};
use crate::id::BlobId;
use crate::pack::FinishedPack;
use crate::repo::Repo;
use crate::source::{self, Dir};
use crate::tree::{self, Node, NodeKind, Xattr};

/// Batches being hashed and sealed at once: while the processor files
/// the results of one batch into trees and packs, the workers already
/// seal the next ones, so no core waits for the sequential part.
pub(super) const BATCHES_IN_FLIGHT: usize = 6;

/// The counters of a backup, as the processor filed its items.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) files_new: u64,
    pub(super) files_changed: u64,
    pub(super) files_unmodified: u64,
    pub(super) dirs: u64,
    /// Directories whose tree was the parent's (see [`Item::Leave`]).
    pub(super) dirs_unchanged: u64,
    pub(super) logical_bytes: u64,
    pub(super) read_bytes: u64,
    pub(super) blobs_new: u64,
}

/// What the processor built: the snapshot's root tree, the counters, and
/// the files the workers could not read.
pub(super) struct Built {
    pub(super) root: BlobId,
    pub(super) counts: Counts,
    pub(super) errors: FileErrors,
}

/// Seals and files the batches that come through `rx`, sends the packs to
/// the uploader through `pack_tx`, and stores the root tree. Returns when
/// `rx` closes; on an error it drops `rx`, which stops the reader.
pub(super) fn process(
    repo: &Repo,
    chunker: &Chunker,
    rx: Receiver<Vec<Item>>,
    pack_tx: tokio::sync::mpsc::Sender<FinishedPack>,
    opts: &BackupOptions,
    read_all: &AtomicBool,
) -> Result<Built> {
    let sealer = Sealer {
        keys: repo.keys(),
        dk: repo.data_key()?,
        dedup: repo.catalog().dedup()?,
        own_trees: repo.own_trees(),
        claimed: Mutex::new(HashSet::new()),
        chunker,
        opts,
    };
    let mut processor = Processor {
        sealer: &sealer,
        packer: Packer::new(repo, pack_tx, read_all)?,
        counts: Counts::default(),
        stack: vec![Frame { node: None, children: Vec::new() }],
        file: None,
        errors: FileErrors::new(),
    };
    processor.file_batches(rx)?;
    opts.cancel.check()?;
    processor.finish()
}

/// What a worker made of one chunk.
enum Processed {
    /// A blob stored already, by an earlier backup or this one.
    Known(BlobId),
    /// A new blob: its id, plaintext length and sealed bytes.
    New(BlobId, u32, Vec<u8>),
}

/// One batch's results, in item order.
type BatchResults = Vec<Sealed>;

/// What the workers made of one item of a batch.
enum Sealed {
    /// Nothing: the item is not a chunk or file.
    Nothing,
    Chunk(Result<Processed>),
    File(Result<WholeFile>),
}

/// A file read and sealed by a worker ([`Sealer::seal_file`]).
enum WholeFile {
    /// Bytes read, its chunks in order, how it changed while it was
    /// read (it is stored as read, with this warning), and its extended
    /// attributes (none when not asked for; a warning when unreadable).
    Read(u64, Vec<Processed>, Option<String>, Option<std::result::Result<Vec<Xattr>, String>>),
    /// It could not be opened or read: why.
    Failed(String),
}

/// What the pool's workers share while they seal batches.
struct Sealer<'a> {
    keys: &'a TenantKeys,
    dk: &'a DataKey,
    dedup: Dedup,
    /// A put-only host's kept trees (see [`crate::put_only`]).
    own_trees: Option<crate::put_only::OwnTrees>,
    /// Blobs of this backup that are stored or being stored: the worker
    /// that inserts an id seals it, every other occurrence refers to it.
    claimed: Mutex<HashSet<BlobId>>,
    chunker: &'a Chunker,
    opts: &'a BackupOptions,
}

impl Sealer<'_> {
    /// True when the blob `id` is new to the repository and to this
    /// backup; the caller then stores it.
    fn claim(&self, id: &BlobId) -> Result<bool> {
        let claimed = || self.claimed.lock().map_err(|_| Error::Internal("a backup worker panicked".into()));
        // A chunk repeated within this backup needs no catalog lookup.
        if claimed()?.contains(id) || self.dedup.contains(id)? {
            return Ok(false);
        }
        Ok(claimed()?.insert(*id))
    }

    /// Hashes a chunk, and seals it if it is new.
    fn seal_chunk(&self, data: &[u8], adaptive: &blob::Adaptive) -> Result<Processed> {
        let id = self.keys.blob_id(data);
        Ok(match self.claim(&id)? {
            false => Processed::Known(id),
            true => Processed::New(
                id,
                data.len() as u32,
                blob::seal_adaptive(&self.dk.key, BlobKind::Data, &id, data, self.opts.compression, Some(adaptive)),
            ),
        })
    }

    /// Seals a batch's chunks and files on the pool.
    fn seal_batch(&self, batch: &[Item]) -> BatchResults {
        batch
            .par_iter()
            .map(|item| match item {
                Item::Chunk(data, adaptive) => Sealed::Chunk(self.seal_chunk(data, adaptive)),
                Item::File(node, _, path, dir) => Sealed::File(self.seal_file(dir, path, node)),
                _ => Sealed::Nothing,
            })
            .collect()
    }

    /// Reads a new or changed file `node` of the directory `dir` (at most
    /// [`WORKER_FILE_BYTES`] at stat time) into this worker's buffer, then
    /// cuts, hashes and seals its chunks. A file that has grown past
    /// [`SMALL_FILE_BYTES`] since is streamed on from there.
    fn seal_file(&self, dir: &Dir, path: &Path, node: &Node) -> Result<WholeFile> {
        let size = node.size;
        let file = match open_walked(dir, path, node, &self.opts.paths) {
            Ok(f) => f,
            Err(e) => return Ok(WholeFile::Failed(e.to_string())),
        };
        let xattrs = self.opts.xattrs.then(|| source::xattrs_of(file.as_fd()).map_err(|e| e.to_string()));
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
                for (start, len) in self.chunker.chunks_of(data) {
                    chunks.push(self.seal_chunk(&data[start..start + len], &adaptive)?);
                }
                n as u64
            } else {
                let mut read = 0u64;
                for c in self.chunker.stream(std::io::Cursor::new(&buf[..n]).chain(&file)) {
                    match c {
                        Ok(b) => {
                            read += b.len() as u64;
                            chunks.push(self.seal_chunk(&b, &adaptive)?);
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
            Ok(WholeFile::Read(read, chunks, changed, xattrs))
        })
    }
}

/// A directory being built: its node (none for the snapshot root) and
/// the nodes filed in it so far.
struct Frame {
    node: Option<Node>,
    children: Vec<Node>,
}

/// The processor thread's state: the directories being built, the file
/// being read by the reader, the open packs.
struct Processor<'a> {
    sealer: &'a Sealer<'a>,
    packer: Packer<'a>,
    counts: Counts,
    /// The directories from the snapshot root down to the one being built.
    stack: Vec<Frame>,
    /// The file between `Item::FileStart` and `Item::FileEnd`: its node,
    /// its chunk ids so far, and its status.
    file: Option<(Node, Vec<BlobId>, FileStatus)>,
    errors: FileErrors,
}

impl Processor<'_> {
    /// Files the batches of `rx` in order. Batches are sealed by the pool
    /// while this thread files the results of earlier ones. Until a batch
    /// holds something to seal (an unchanged tree may never have one),
    /// batches are filed here and the pool's threads are not started.
    fn file_batches(&mut self, rx: Receiver<Vec<Item>>) -> Result<()> {
        let mut batches = rx.into_iter();
        for batch in batches.by_ref() {
            self.sealer.opts.cancel.check()?;
            if batch.iter().any(|item| matches!(item, Item::Chunk(..) | Item::File(..))) {
                return self.file_sealed(std::iter::once(batch).chain(batches));
            }
            let nothing = batch.iter().map(|_| Sealed::Nothing).collect();
            self.file_batch(batch, nothing)?;
        }
        Ok(())
    }

    /// Has the pool seal `batches`, up to [`BATCHES_IN_FLIGHT`] at once,
    /// and files their results in order.
    fn file_sealed(&mut self, mut batches: impl Iterator<Item = Vec<Item>>) -> Result<()> {
        type Done = Receiver<(Vec<Item>, BatchResults)>;
        let sealer = self.sealer;
        rayon::in_place_scope(|scope| -> Result<()> {
            let mut pending: VecDeque<Done> = VecDeque::new();
            let mut failed: Result<()> = Ok(());
            for batch in batches.by_ref() {
                if let Err(e) = sealer.opts.cancel.check() {
                    failed = Err(e);
                    break;
                }
                let (tx, done) = mpsc::sync_channel(1);
                scope.spawn(move |_| {
                    let results = sealer.seal_batch(&batch);
                    let _ = tx.send((batch, results));
                });
                pending.push_back(done);
                if pending.len() >= BATCHES_IN_FLIGHT {
                    if let Some(done) = pending.pop_front() {
                        if let Err(e) = self.file_done(&done) {
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
                self.file_done(&done)?;
            }
            Ok(())
        })
    }

    /// Files the results of a batch the pool has sealed, once it has.
    fn file_done(&mut self, done: &Receiver<(Vec<Item>, BatchResults)>) -> Result<()> {
        let (batch, results) = done.recv().map_err(|_| Error::Internal("a backup worker panicked".into()))?;
        self.file_batch(batch, results)
    }

    /// Files one batch's results: chunk ids into files, files into trees,
    /// new blobs into packs.
    fn file_batch(&mut self, batch: Vec<Item>, results: BatchResults) -> Result<()> {
        for (item, sealed) in batch.into_iter().zip(results) {
            match (item, sealed) {
                (Item::Chunk(..), Sealed::Chunk(p)) => {
                    let id = self.take(p?)?;
                    if let Some((_, content, _)) = &mut self.file {
                        content.push(id);
                    }
                }
                (Item::File(node, status, path, _), Sealed::File(sealed)) => {
                    self.whole_file(node, status, &path, sealed?)?;
                }
                (Item::FileStart(node, status), _) => self.file = Some((node, Vec::new(), status)),
                (Item::FileEnd { read_bytes, error }, _) => {
                    if let Some((node, content, status)) = self.file.take() {
                        self.counts.read_bytes += read_bytes;
                        if error.is_none() {
                            self.add_file(node, content, read_bytes, status);
                        }
                    }
                }
                (Item::Node(node), _) => {
                    if let NodeKind::File { .. } = node.kind {
                        self.counts.files_unmodified += 1;
                        self.counts.logical_bytes += node.size;
                    }
                    if let Some(top) = self.stack.last_mut() {
                        top.children.push(node);
                    }
                }
                (Item::Enter(node), _) => self.stack.push(Frame { node: Some(node), children: Vec::new() }),
                (Item::Leave(reuse), _) => self.leave(reuse)?,
                (Item::Chunk(..) | Item::File(..), _) => {
                    return Err(Error::Internal("a backup worker lost a result".into()));
                }
            }
        }
        Ok(())
    }

    /// The id of a worker's result; a new blob goes into a pack.
    fn take(&mut self, p: Processed) -> Result<BlobId> {
        match p {
            Processed::Known(id) => Ok(id),
            Processed::New(id, raw_len, sealed) => {
                self.counts.blobs_new += 1;
                self.packer.add(BlobKind::Data, id, raw_len, sealed)?;
                Ok(id)
            }
        }
    }

    /// Files a file a worker read and sealed, or its error.
    fn whole_file(&mut self, mut node: Node, status: FileStatus, path: &Path, sealed: WholeFile) -> Result<()> {
        match sealed {
            WholeFile::Read(read_bytes, chunks, changed, xattrs) => {
                let content = chunks.into_iter().map(|p| self.take(p)).collect::<Result<Vec<_>>>()?;
                self.counts.read_bytes += read_bytes;
                let xattrs_failed = match xattrs {
                    Some(Ok(x)) => {
                        node.xattrs = Some(x);
                        None
                    }
                    Some(Err(e)) => Some(format!("cannot read extended attributes: {e}")),
                    None => None,
                };
                // Unreadable or changed files are the caller's to report,
                // from the summary's `errors`: logged here only at debug
                // level, so each is reported once.
                for warning in changed.into_iter().chain(xattrs_failed) {
                    tracing::debug!(path = %path.display(), "{warning}");
                    self.errors.push(path.display().to_string(), warning);
                }
                self.add_file(node, content, read_bytes, status);
            }
            WholeFile::Failed(e) => {
                tracing::debug!(path = %path.display(), "{e}");
                self.errors.push(path.display().to_string(), e);
            }
        }
        Ok(())
    }

    /// Files a new or changed file's node, with its content, in the
    /// directory being built.
    fn add_file(&mut self, mut node: Node, content: Vec<BlobId>, size: u64, status: FileStatus) {
        node.size = size;
        node.kind = NodeKind::File { content };
        match status {
            FileStatus::New => self.counts.files_new += 1,
            FileStatus::Changed => self.counts.files_changed += 1,
        }
        self.counts.logical_bytes += size;
        if let Some(top) = self.stack.last_mut() {
            top.children.push(node);
        }
    }

    /// Ends the directory being built: its tree is `reuse` (the parent
    /// snapshot's, unchanged) or stored now; its node goes into the
    /// directory above.
    fn leave(&mut self, reuse: Option<BlobId>) -> Result<()> {
        let Some(frame) = self.stack.pop() else { return Ok(()) };
        let id = match reuse {
            // Unchanged: the parent's tree, read from the repository by
            // the walk, is a tree of exactly these nodes, and stored.
            Some(id) => {
                self.counts.dirs_unchanged += 1;
                id
            }
            None => self.store_tree(frame.children, frame.node.as_ref())?,
        };
        self.counts.dirs += 1;
        if let (Some(mut node), Some(top)) = (frame.node, self.stack.last_mut()) {
            node.kind = NodeKind::Dir { subtree: id };
            top.children.push(node);
        }
        Ok(())
    }

    /// Stores the tree of a directory's `children` unless it is stored
    /// already; `dir` is the directory's node (none: the snapshot root),
    /// below the directories on the stack.
    fn store_tree(&mut self, mut children: Vec<Node>, dir: Option<&Node>) -> Result<BlobId> {
        tree::sort(&mut children);
        let bytes = crate::codec::tree::encode(&children);
        if bytes.len() > blob::MAX_BLOB_BYTES as usize {
            return Err(Error::InvalidInput {
                what: "directory".into(),
                value: self.dir_path(dir),
                why: format!("{} entries are too many for one tree blob", children.len()),
            });
        }
        let id = self.sealer.keys.blob_id(&bytes);
        if let Some(trees) = &self.sealer.own_trees {
            trees.save(&id, &bytes);
        }
        if self.sealer.claim(&id)? {
            let sealed = blob::seal(&self.sealer.dk.key, BlobKind::Tree, &id, &bytes, self.sealer.opts.compression);
            self.packer.add(BlobKind::Tree, id, bytes.len() as u32, sealed)?;
        }
        Ok(id)
    }

    /// The snapshot path of the directory `dir` below those on the stack.
    fn dir_path(&self, dir: Option<&Node>) -> String {
        let mut path = String::new();
        for node in self.stack.iter().filter_map(|f| f.node.as_ref()).chain(dir) {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(&node.name));
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }

    /// Stores the root tree and the last packs.
    fn finish(mut self) -> Result<Built> {
        let root = self.stack.pop().map(|f| f.children).unwrap_or_default();
        let root_id = self.store_tree(root, None)?;
        let Processor { sealer, packer, counts, errors, .. } = self;
        packer.flush()?;
        let dedup = &sealer.dedup;
        let d = dedup.stats();
        tracing::debug!(
            "{} of {} directories unchanged (their trees reused); dedup checks: {} ruled out by the id filter \
             ({} KiB), {} known from recent packs, {} catalog lookups found, {} not found, {:.1} ms in catalog \
             lookups",
            counts.dirs_unchanged,
            counts.dirs,
            d.filtered,
            dedup.filter_bytes() / 1024,
            d.recent,
            d.table_hits,
            d.table_misses,
            d.table_ns as f64 / 1e6
        );
        Ok(Built { root: root_id, counts, errors })
    }
}

thread_local! {
    /// A worker's read buffer for [`Sealer::seal_file`], kept between
    /// files: only its first bytes are the current file's; it stays
    /// initialized, so reusing it needs no zeroing and no page faults.
    static FILE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
