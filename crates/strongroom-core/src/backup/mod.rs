//! The backup pipeline, one module per phase.
//!
//! ```text
//! reader thread (reader.rs): walk → stat → compare with parent → read → FastCDC
//!     │ batches of items (≈ BATCH_BYTES), bounded channel: chunks of large
//!     │ files, and small new or changed files still to be read
//! processor (processor.rs): rayon (small files: open, read, FastCDC; keyed
//!     │ hash, dedup lookup, zstd, seal) → build trees → packer.rs
//!     │ finished packs, bounded channel
//! uploader (upload.rs, tokio): ≤ io_concurrency puts → index delta every INDEX_EVERY packs
//! ```
//! After the last pack and index delta are stored, the snapshot record is
//! written (the commit point) and the catalog updated. Memory is bounded by
//! the channels: batches in flight plus packs in flight.
//!
//! Unchanged files (same size, mtime, ctime and inode as in the parent
//! snapshot) are not read: their chunk lists are taken from the parent.

mod packer;
mod processor;
mod reader;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::blob::Compression;
use crate::chunk::Chunker;
use crate::codec::snapshot::{SnapshotRecord, SnapshotSummary, SNAPSHOT_VERSION};
use crate::error::{Error, FileErrors, Result};
use crate::id::{BlobId, SnapshotId};
use crate::pack::FinishedPack;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::{self, Excludes};
use crate::tree::Tree;
use crate::walk::{self, Lister};
use processor::{Built, Counts};
use reader::{Item, Reader};
use upload::Uploaded;

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
    /// Exclude patterns and marker files.
    pub excludes: Excludes,
    /// Targets given with a trailing slash: a symlink to a directory
    /// there is followed, once, and the directory backed up under the
    /// target's path (as restic and rsync do).
    pub follow: Vec<PathBuf>,
    /// Do not cross filesystem boundaries below the targets: a mount
    /// point is recorded as an empty directory.
    pub one_file_system: bool,
    /// Record extended attributes (POSIX ACLs among them).
    pub xattrs: bool,
    /// Write no snapshot when the tree equals the parent's.
    pub skip_if_unchanged: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// The agent job making the snapshot, recorded in it (`--job`).
    pub job: Option<String>,
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

impl Quota {
    /// The quota a backup of the tenant runs under: none when its settings
    /// set no limit, else that limit and the bytes it stores now.
    pub fn of_tenant(repo: &Repo, settings: &crate::tenant::Settings) -> Result<Option<Quota>> {
        match settings.quota_bytes {
            Some(limit) => Ok(Some(Quota { limit, stored: repo.block_on(repo.stored_bytes())? })),
            None => Ok(None),
        }
    }
}

/// The compression of a backup: `level` when given, else the tenant's
/// setting, else the repository's default; level 0 is none.
pub fn compression(repo: &Repo, settings: &crate::tenant::Settings, level: Option<i32>) -> Compression {
    match level.or(settings.compression).unwrap_or(repo.config().compression_level) {
        0 => Compression::Off,
        l => Compression::Zstd(l),
    }
}

/// What a backup did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    /// The new snapshot; none when it was skipped.
    pub snapshot_id: Option<String>,
    /// Its short id.
    pub short_id: Option<String>,
    /// No snapshot was written: with `skip_if_unchanged`, nothing
    /// changed since the parent.
    pub skipped: bool,
    /// The parent used for change detection.
    pub parent: Option<String>,
    /// The counters stored in the snapshot record (flattened in JSON:
    /// `files_new`, `files_changed`, `files_unmodified`, `dirs`,
    /// `logical_bytes`, `read_bytes`, `added_bytes`, `blobs_new`,
    /// `duration_seconds`).
    #[serde(flatten)]
    pub counts: SnapshotSummary,
    /// Entries that could not be read, in the order met (in JSON: an
    /// array of `[path, error]` pairs).
    pub errors: FileErrors,
}

/// Runs a backup. Blocks; must be called outside the async runtime's
/// worker threads (or inside `block_in_place`), with `rt` its handle.
pub fn run(repo: &Repo, opts: BackupOptions) -> Result<BackupSummary> {
    repo.set_tree_pack_cache(true);
    let started = Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as i64);
    let paths = snapshot_paths(&opts)?;
    let parent = choose_parent(repo, &opts, &paths)?;
    tracing::trace!("backup: parent snapshot chosen");
    let parent_root = match &parent {
        Some(p) => Some(repo.block_on(repo.load_tree(&p.record.tree))?),
        None => None,
    };
    tracing::trace!("backup: parent tree loaded");
    let (built, uploaded, errors) = pipeline(repo, &opts, parent_root.as_ref())?;
    tracing::trace!("backup: packs and index deltas stored");

    let summary = snapshot_summary(&built.counts, uploaded.bytes, started);
    if let Some(p) =
        parent.as_ref().filter(|p| opts.skip_if_unchanged && unchanged_since(p, &opts, &paths, &built.root))
    {
        tracing::info!("nothing changed since snapshot {}: no snapshot written", p.id.short());
        return Ok(BackupSummary {
            snapshot_id: None,
            short_id: None,
            skipped: true,
            parent: Some(p.id.to_hex()),
            counts: SnapshotSummary { duration_seconds: started.elapsed().as_secs_f64(), ..summary },
            errors,
        });
    }
    let record = SnapshotRecord {
        version: SNAPSHOT_VERSION,
        time: crate::snapshot::format_time(time_ns),
        tree: built.root,
        paths,
        hostname: opts.host.clone(),
        username: crate::source::username(),
        tags: opts.tags.clone(),
        parent: parent.as_ref().map(|p| p.id.to_hex()),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        summary: summary.clone(),
        copied_from: None,
        job: opts.job.clone(),
    };
    let id = commit(repo, &opts, &record)?;
    Ok(BackupSummary {
        snapshot_id: Some(id.to_hex()),
        short_id: Some(id.short()),
        skipped: false,
        parent: record.parent,
        counts: SnapshotSummary { duration_seconds: started.elapsed().as_secs_f64(), ..summary },
        errors,
    })
}

/// Whether a backup that built the tree `root` would record what the
/// snapshot `parent` records: the same tree, paths, host and tags (as
/// restic's `--skip-if-unchanged`), and the same job: another job's
/// snapshot of the same data leaves this job's group without one. Packs
/// stored meanwhile (none, when the tree is the same) are indexed already
/// and left to prune.
fn unchanged_since(parent: &Snapshot, opts: &BackupOptions, paths: &[String], root: &BlobId) -> bool {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let r = &parent.record;
    r.tree == *root
        && sorted(&r.paths) == sorted(paths)
        && r.hostname == opts.host
        && sorted(&r.tags) == sorted(&opts.tags)
        && r.job == opts.job
}

/// The counters of the snapshot record.
fn snapshot_summary(counts: &Counts, added_bytes: u64, started: Instant) -> SnapshotSummary {
    SnapshotSummary {
        files_new: counts.files_new,
        files_changed: counts.files_changed,
        files_unmodified: counts.files_unmodified,
        dirs: counts.dirs,
        logical_bytes: counts.logical_bytes,
        read_bytes: counts.read_bytes,
        added_bytes,
        blobs_new: counts.blobs_new,
        duration_seconds: started.elapsed().as_secs_f64(),
    }
}

/// Writes the snapshot record, the commit point, once `before_commit`
/// allows it.
fn commit(repo: &Repo, opts: &BackupOptions, record: &SnapshotRecord) -> Result<SnapshotId> {
    // Packs and index deltas are stored, the snapshot is not: a test
    // plays a prune from elsewhere here.
    crate::testhook::pause("backup-before-commit", "");
    (opts.before_commit)()?;
    let id = repo.block_on(repo.save_snapshot(record))?;
    tracing::trace!("backup: snapshot stored");
    Ok(id)
}

/// The paths the snapshot record lists: the targets, or `/<name>` of a
/// stream.
fn snapshot_paths(opts: &BackupOptions) -> Result<Vec<String>> {
    Ok(match &opts.stream {
        Some(StreamSource::Stdin { name } | StreamSource::Command { name, .. }) => {
            source::check_stream_name(name)?;
            vec![format!("/{name}")]
        }
        None => opts.paths.iter().map(|p| p.display().to_string()).collect(),
    })
}

/// The parent snapshot `opts.parent` names (`Auto`: the newest of the same
/// host, paths and job, else of the same host and paths).
fn choose_parent(repo: &Repo, opts: &BackupOptions, paths: &[String]) -> Result<Option<Snapshot>> {
    Ok(match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Id(id) => Some(repo.resolve(&id.to_hex(), None, &crate::snapshot::Pick::ANY)?),
        ParentChoice::Auto => {
            let mut sorted = paths.to_vec();
            sorted.sort();
            let same_source = |s: &Snapshot| {
                let mut p = s.record.paths.clone();
                p.sort();
                s.record.hostname == opts.host && p == sorted
            };
            match repo.find_newest_snapshot(|s| same_source(s) && s.record.job == opts.job)? {
                Some(own) => Some(own),
                None => repo.find_newest_snapshot(same_source)?,
            }
        }
    })
}

/// Runs the phases on their threads: listers and the reader, the
/// processor (this thread, with the rayon pool) and the uploader (on
/// `rt`). Returns what the processor built, what the uploader stored, and
/// the entries that could not be read.
fn pipeline(repo: &Repo, opts: &BackupOptions, parent_root: Option<&Tree>) -> Result<(Built, Uploaded, FileErrors)> {
    let chunker = Chunker::new(repo.config().chunk_sizes, repo.keys().gear())?;
    let (item_tx, item_rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(reader::BATCH_QUEUE);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
    // Set by the reader when it has read everything (see `Packer::add`).
    let read_all = AtomicBool::new(false);
    // Parent trees, located through one catalog read view.
    let trees = repo.catalog().reader()?;
    let load_tree = |id: &BlobId| repo.block_on(repo.load_tree_in(&trees, id));
    let skip = |p: &Path| opts.excludes.matches(p);
    let before_open = |p: &Path| reader::pause_at("backup-before-open", p, &opts.paths);
    let marked = |l: &walk::Listed| opts.excludes.marked(&l.dir, &l.entries);
    let lister = Lister::new(&load_tree, &skip, &before_open).with_rules(&marked, opts.one_file_system);
    let (read, built, uploaded) = std::thread::scope(|s| {
        // Named threads: profiles and debuggers show which stage is busy.
        if opts.stream.is_none() {
            for _ in 0..walk::helpers() {
                // Without helpers the reader lists every directory itself.
                let _ = std::thread::Builder::new().name("sr-lister".into()).spawn_scoped(s, || lister.help());
            }
        }
        let reader = spawn(s, "reader", || {
            let read = Reader::new(&chunker, opts, &lister, item_tx).read(parent_root);
            read_all.store(true, Ordering::Relaxed);
            tracing::trace!("backup: source read");
            read
        });
        let uploader =
            spawn(s, "upload", || repo.block_on(upload::upload(repo, pack_rx, opts.io_concurrency.max(1), opts.quota)));
        let built = processor::process(repo, &chunker, item_rx, pack_tx, opts, &read_all);
        (join(reader, "reader"), built, join(uploader, "upload"))
    });
    // Order of errors: interruption first, then storage, then the source,
    // then the processor (which fails, too, when another phase stopped).
    opts.cancel.check()?;
    let uploaded = uploaded?;
    let mut errors = read?;
    let mut built = built?;
    errors.extend(std::mem::take(&mut built.errors));
    Ok((built, uploaded, errors))
}

/// A pipeline thread that started, or why it did not.
type Started<'s, T> = Result<std::thread::ScopedJoinHandle<'s, Result<T>>>;

/// Starts the pipeline thread `sr-<name>`. The system may refuse a thread
/// (out of threads or memory): that is an I/O error, not a bug.
fn spawn<'s, 'e, T: Send + 's>(
    s: &'s std::thread::Scope<'s, 'e>,
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 's,
) -> Started<'s, T> {
    std::thread::Builder::new()
        .name(format!("sr-{name}"))
        .spawn_scoped(s, f)
        .map_err(|e| Error::io(format!("cannot start the {name} thread"), e))
}

/// Waits for the pipeline thread `name` and returns its result.
fn join<T>(started: Started<'_, T>, name: &str) -> Result<T> {
    started?.join().unwrap_or_else(|_| Err(Error::Internal(format!("the {name} thread panicked"))))
}
