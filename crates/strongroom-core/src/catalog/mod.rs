//! The local catalog: the only module that imports `redb`.
//!
//! Owns: table definitions, blob and snapshot lookups, the record of which
//! store objects have been read in (`synced`), and clearing for a rebuild.
//! Must not: hold anything the store lacks. The catalog is a cache of the
//! store: `repo` deletes and rebuilds it whenever it is missing, damaged or
//! out of step.
//!
//! **Invariant:** memory use is bounded by redb's page cache
//! ([`CACHE_BYTES`]) and a [`Dedup`] reader's [`RECENT_IDS`], not by the
//! number of blobs: the id filter is read from its file a block at a time.

pub mod filter;

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::codec::index::PackEntry;
use crate::codec::pack::{BlobKind, PackedBlob};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::problems::Damage;
use filter::Filter;

/// redb page cache; the catalog's whole memory budget. A lookup in a
/// 10^7-blob catalog reads a leaf page whatever the cache (the file is
/// about 1.9 GB), and 8 MiB answers as fast as 16 did (blob-table hits
/// 224 vs 188 thousand per second) while a backup's peak RSS stays
/// within 4% of a small catalog's, against 9% with 16 MiB under redb 4
/// (docs/BENCHMARKS.md, Catalog scale).
pub const CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Bumped when the table layout changes; an older catalog is rebuilt,
/// except versions 1 and 2, which only lack tables (`pack_blobs` in 1,
/// `damaged` in both) and gain them empty.
const SCHEMA_VERSION: u64 = 3;
/// A catalog file up to this size is read ahead whole when opened (about
/// 650,000 chunks); a larger one is read page by page, as redb asks.
const READ_AHEAD_BYTES: u64 = 64 * 1024 * 1024;

const BLOBS: TableDefinition<&[u8; 32], &[u8; 49]> = TableDefinition::new("blobs");
const PACKS: TableDefinition<&[u8; 32], &[u8; 13]> = TableDefinition::new("packs");
const SNAPSHOTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("snapshots");
const BY_TIME: TableDefinition<(i64, &[u8; 32]), ()> = TableDefinition::new("snapshots_by_time");
const SYNCED: TableDefinition<&str, u64> = TableDefinition::new("synced");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Each pack's blob ids, concatenated (32 bytes each), for the dedup
/// reader's locality cache. A hint: a pack without a row (catalogs of
/// schema 1) only means no prefetch.
const PACK_BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pack_blobs");
/// Index deltas and snapshot records of the store that failed
/// verification at the last sync (`index/<id>`, `snapshots/<id>`), each
/// with the reason. Replaced whole by every sync (a damaged object is
/// never `synced`, so every sync reads it again): an object put back
/// intact, or deleted, leaves the table at the next sync.
const DAMAGED: TableDefinition<&str, &str> = TableDefinition::new("damaged");
/// META key counting the transactions that added blob rows; the id
/// filter records the value it covers. It starts at a random value when
/// the catalog is created or cleared ([`fresh_epoch`]), so a filter file
/// left by an earlier catalog at the same path never matches a new one.
const BLOB_EPOCH: &str = "blob_epoch";

/// The `blob_epoch` in a meta table, read or write side (0 in a catalog
/// that has never recorded one).
fn read_epoch(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, redb::StorageError> {
    Ok(meta.get(BLOB_EPOCH)?.map_or(0, |v| v.value()))
}

/// A random starting epoch, far below [`filter::DIRTY`].
fn fresh_epoch() -> u64 {
    u64::from_le_bytes(crate::crypto::random_bytes()) >> 2
}
/// Ids of recently hit packs a [`Dedup`] reader keeps (about 3 MiB).
pub const RECENT_IDS: usize = 1 << 16;
/// Blob rows per catalog write transaction at most (see [`Catalog::apply`]).
const APPLY_ROWS: usize = 2048;
/// A blob table of at most this many rows (with the batch) is updated in
/// one transaction: it has about 2,900 leaf pages (45 rows of 81 bytes to
/// a 4 KiB page), 12 MB if a batch dirtied them all. A first backup of a
/// source tree then commits once, not once per 2,048 rows (1.2-1.8 ms per
/// commit, with nothing else left to do).
const SMALL_TABLE_ROWS: u64 = 64 * APPLY_ROWS as u64;

/// Blob rows one write transaction may hold, for a blob table that will
/// have `table_rows` rows: all of them in a small table, else
/// [`APPLY_ROWS`] (see [`Catalog::apply`]).
fn rows_per_tx(table_rows: u64) -> usize {
    if table_rows <= SMALL_TABLE_ROWS {
        usize::MAX
    } else {
        APPLY_ROWS
    }
}
/// Scratch table of prune's mark phase: blob ids reachable from snapshots.
const USED: TableDefinition<&[u8; 32], ()> = TableDefinition::new("prune_used");

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// redb failed (I/O, corruption, or another process holds the file).
    #[error("catalog {path}: {message}")]
    Db {
        /// Catalog file.
        path: String,
        /// redb's message.
        message: String,
    },
    /// Another process has the catalog open.
    #[error("catalog {path} is in use by another strongroom process")]
    InUse {
        /// Catalog file.
        path: String,
    },
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack.
    pub pack: PackId,
    /// Kind, offsets and lengths.
    pub blob: PackedBlob,
    /// Data-key generation of the pack.
    pub key_generation: u32,
}

/// A catalogued pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Stored length.
    pub length: u64,
    /// Kind of its blobs.
    pub kind: BlobKind,
    /// Number of blobs.
    pub n_blobs: u32,
}

/// A catalogued snapshot: id, time and the decoded record's JSON.
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    /// Id.
    pub id: SnapshotId,
    /// Unix nanoseconds.
    pub time_ns: i64,
    /// The record as JSON (`codec::snapshot`).
    pub record: Vec<u8>,
}

/// Totals over the blob table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobTotals {
    /// Data blobs.
    pub data_blobs: u64,
    /// Their plaintext bytes.
    pub data_raw_bytes: u64,
    /// Their stored bytes.
    pub data_stored_bytes: u64,
    /// Tree blobs.
    pub tree_blobs: u64,
    /// Their stored bytes.
    pub tree_stored_bytes: u64,
}

/// The id filter file that belongs to the catalog file at `catalog`.
pub fn filter_path_of(catalog: &Path) -> PathBuf {
    catalog.with_extension("filter")
}

/// Deletes a catalog file and the files beside it that belong to it (its
/// id filter, and a filter left half-built); missing ones are fine.
pub fn remove_files(catalog: &Path) {
    let filter = filter_path_of(catalog);
    for p in [catalog.to_path_buf(), filter.with_extension("filter.tmp"), filter] {
        let _ = std::fs::remove_file(p);
    }
}

/// The catalog of one tenant in one repository.
pub struct Catalog {
    db: Database,
    path: PathBuf,
    /// The id filter once a [`Dedup`] reader or an apply loaded it.
    filter: Mutex<Option<Arc<Filter>>>,
}

fn encode_loc(pack: &PackId, key_generation: u32, b: &PackedBlob) -> [u8; 49] {
    let mut v = [0u8; 49];
    v[45..49].copy_from_slice(&key_generation.to_le_bytes());
    v[..32].copy_from_slice(&pack.0);
    v[32] = b.kind.to_byte();
    v[33..37].copy_from_slice(&b.offset.to_le_bytes());
    v[37..41].copy_from_slice(&b.length.to_le_bytes());
    v[41..45].copy_from_slice(&b.raw_len.to_le_bytes());
    v
}

fn u32_at(v: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&v[at..at + 4]);
    u32::from_le_bytes(b)
}

fn decode_loc(id: &BlobId, v: &[u8; 49]) -> Option<BlobLocation> {
    let mut pack = [0u8; 32];
    pack.copy_from_slice(&v[..32]);
    let kind = BlobKind::from_byte(v[32], "catalog").ok()?;
    Some(BlobLocation {
        pack: PackId(pack),
        blob: PackedBlob { kind, id: *id, offset: u32_at(v, 33), length: u32_at(v, 37), raw_len: u32_at(v, 41) },
        key_generation: u32_at(v, 45),
    })
}

fn encode_pack(p: &PackInfo) -> [u8; 13] {
    let mut v = [0u8; 13];
    v[..8].copy_from_slice(&p.length.to_le_bytes());
    v[8] = p.kind.to_byte();
    v[9..13].copy_from_slice(&p.n_blobs.to_le_bytes());
    v
}

fn decode_pack(v: &[u8; 13]) -> Option<PackInfo> {
    let mut l = [0u8; 8];
    l.copy_from_slice(&v[..8]);
    Some(PackInfo {
        length: u64::from_le_bytes(l),
        kind: BlobKind::from_byte(v[8], "catalog").ok()?,
        n_blobs: u32_at(v, 9),
    })
}

/// What one sync step adds.
#[derive(Debug, Default)]
pub struct Batch {
    /// Store objects read in, with their sizes (`index/<id>`, `snapshots/<id>`).
    pub synced: Vec<(String, u64)>,
    /// Packs from index deltas.
    pub packs: Vec<PackEntry>,
    /// Snapshots.
    pub snapshots: Vec<SnapshotRow>,
}

/// Runs `f`; None if it panicked. The panic message is not printed: a
/// caller that recovers (rebuilds the catalog) logs what happened.
fn quietly_catching_panics<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.ok()
}

/// redb's file backend without its disk syncs.
///
/// The catalog is a cache of the store: every row comes from an object
/// that was stored before the row was written, and [`crate::repo::Repo::open`]
/// rebuilds a catalog that fails to open. redb syncs the disk to open and
/// close a database and once or twice per commit (with redb 2.6 about
/// 4-5 ms of an 18 ms unchanged re-backup here). Without the syncs, a
/// process that crashes or is killed loses at most its commits since the
/// last durable one (the kernel still writes the pages it was given);
/// only a power cut or kernel crash can leave the file torn, which redb's
/// checksums detect at the next open, and the catalog is rebuilt from the
/// store, or left stale, which the sync at every open corrects.
#[derive(Debug)]
struct Unsynced(redb::backends::FileBackend);

impl redb::StorageBackend for Unsynced {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
    // The file locks, which keep a second process out, are the file's.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

impl Catalog {
    /// Opens or creates the catalog file. A file of another schema version
    /// is reported as `Db`, and the caller rebuilds.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent() {
            // The catalog holds decrypted metadata (paths, tags): only its
            // owner may read it.
            crate::private::create_dir_all(dir).map_err(|e| Error::Db { path: p.clone(), message: e.to_string() })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let file = crate::private::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::Db { path: p.clone(), message: e.to_string() })?;
        // A cold catalog is read page by page, each page a random read of
        // the disk (a restore's chunk lookups waited 20-40 ms for them on
        // a 5 MB catalog): one that is not large is read ahead whole, by
        // the kernel, in the background.
        if let Ok(md) = file.metadata() {
            if md.len() <= READ_AHEAD_BYTES {
                let len = std::num::NonZeroU64::new(md.len());
                let _ = rustix::fs::fadvise(&file, 0, len, rustix::fs::Advice::WillNeed);
            }
        }
        let db_err = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse { path: p.clone() },
            // A catalog of an earlier build (redb 2's file format): rebuilt from the store.
            redb::DatabaseError::UpgradeRequired(v) => {
                Error::Db { path: p.clone(), message: format!("written in an older file format ({v})") }
            }
            e => Error::Db { path: p.clone(), message: e.to_string() },
        };
        let backend = redb::backends::FileBackend::new(file).map_err(db_err)?;
        // redb 2.6 asserts, instead of returning an error, on some damaged
        // files (one cut short, for instance): such a panic means the file
        // is unusable, and the caller rebuilds the catalog from the store.
        let opened = quietly_catching_panics(|| {
            Database::builder().set_cache_size(CACHE_BYTES).create_with_backend(Unsynced(backend))
        });
        let db = match opened {
            Some(r) => r.map_err(db_err)?,
            None => return Err(Error::Db { path: p.clone(), message: "damaged (redb could not read it)".into() }),
        };
        let cat = Self { db, path: path.to_path_buf(), filter: Mutex::new(None) };
        cat.init_tables()?;
        Ok(cat)
    }

    fn write_tx(&self) -> Result<redb::WriteTransaction, Error> {
        self.db.begin_write().map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Db { path: self.path.display().to_string(), message: e.to_string() }
    }

    fn init_tables(&self) -> Result<(), Error> {
        // An existing catalog of this schema needs no write (and no wait
        // for the disk) at every open.
        if let Ok(rtx) = self.db.begin_read() {
            if let Ok(meta) = rtx.open_table(META) {
                if let Ok(Some(v)) = meta.get("schema") {
                    if v.value() == SCHEMA_VERSION
                        && rtx.open_table(PACK_BLOBS).is_ok()
                        && rtx.open_table(DAMAGED).is_ok()
                    {
                        return Ok(());
                    }
                }
            }
        }
        self.create_tables()
    }

    /// Creates missing tables and records the schema version; refuses a
    /// catalog of another schema.
    fn create_tables(&self) -> Result<(), Error> {
        let tx = self.write_tx()?;
        {
            tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            tx.open_table(PACKS).map_err(|e| self.err(e))?;
            tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
            tx.open_table(SYNCED).map_err(|e| self.err(e))?;
            tx.open_table(PACK_BLOBS).map_err(|e| self.err(e))?;
            tx.open_table(DAMAGED).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let version = meta.get("schema").map_err(|e| self.err(e))?.map(|v| v.value());
            match version {
                // Version 1 lacked `pack_blobs`, a hint, and `damaged`: it
                // gains them, empty, instead of a rebuild.
                None | Some(1) => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(|e| self.err(e))?;
                    meta.insert(BLOB_EPOCH, fresh_epoch()).map_err(|e| self.err(e))?;
                }
                // Version 2 lacked only `damaged`, which the next sync
                // fills (damaged objects were never marked synced).
                Some(2) => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(|e| self.err(e))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => return Err(self.err(format!("schema version {v}, this build uses {SCHEMA_VERSION}"))),
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The catalog file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes every row (before a rebuild).
    pub fn clear(&self) -> Result<(), Error> {
        let tx = self.write_tx()?;
        tx.delete_table(BLOBS).map_err(|e| self.err(e))?;
        tx.delete_table(PACKS).map_err(|e| self.err(e))?;
        tx.delete_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        tx.delete_table(BY_TIME).map_err(|e| self.err(e))?;
        tx.delete_table(SYNCED).map_err(|e| self.err(e))?;
        tx.delete_table(PACK_BLOBS).map_err(|e| self.err(e))?;
        tx.delete_table(DAMAGED).map_err(|e| self.err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(BLOB_EPOCH, fresh_epoch()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.forget_filter();
        self.create_tables()
    }

    /// Applies a batch. Blob rows go in transactions of at most
    /// [`APPLY_ROWS`] rows: a write transaction keeps every page it dirties
    /// in memory until it commits, and random ids dirty about one page per
    /// row, so an unbounded transaction's memory would grow with the batch
    /// in a large catalog. A small table has too few pages for that, and
    /// takes the batch in one transaction ([`SMALL_TABLE_ROWS`]). Only the last transaction waits for the disk and records
    /// the batch's `synced` names: after a crash the batch is applied again
    /// (every insert is idempotent).
    pub fn apply(&self, batch: &Batch) -> Result<(), Error> {
        self.apply_with(None, batch)
    }

    /// [`Catalog::apply`], after a transaction that already holds rows
    /// (of a [`Staged`] write) and the ids of those rows: it commits first.
    fn apply_with(&self, staged: Option<(redb::WriteTransaction, Vec<[u8; 32]>)>, batch: &Batch) -> Result<(), Error> {
        if staged.is_none() && batch.packs.is_empty() && batch.snapshots.is_empty() && batch.synced.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let adding: usize = batch.packs.iter().map(|p| p.blobs.len()).sum();
        let staged_rows = staged.as_ref().map_or(0, |(_, ids)| ids.len());
        let mut filter = if adding + staged_rows == 0 { None } else { self.filter_for_update()? };
        if let Some(f) = &filter {
            if let Err(e) = f.begin_update() {
                self.drop_filter(&e);
                filter = None;
            }
        }
        let mut epoch = None;
        let mut committed_last = false;
        if let Some((tx, mut ids)) = staged {
            let last = batch.packs.is_empty().then_some(batch);
            committed_last = last.is_some();
            epoch = self.finish_tx(tx, &mut ids, last, &mut filter)?;
        }
        if !committed_last {
            let per_tx =
                if batch.packs.is_empty() { APPLY_ROWS } else { rows_per_tx(self.blob_rows()? + adding as u64) };
            let mut start = 0;
            let mut rows = 0usize;
            for (i, p) in batch.packs.iter().enumerate() {
                rows += p.blobs.len();
                if rows >= per_tx && i + 1 < batch.packs.len() {
                    epoch = self.apply_tx(&batch.packs[start..=i], None, &mut filter)?.or(epoch);
                    start = i + 1;
                    rows = 0;
                }
            }
            epoch = self.apply_tx(&batch.packs[start..], Some(batch), &mut filter)?.or(epoch);
        }
        if let (Some(f), Some(epoch)) = (filter, epoch) {
            if f.is_full() {
                // Rebuilt larger by the next dedup reader.
                self.forget_filter();
            } else if let Err(e) = f.finish_update(epoch) {
                self.drop_filter(&e);
            }
        }
        tracing::debug!(
            "catalog: {} packs, {adding} blobs (and {staged_rows} staged), {} snapshots applied in {:.1} ms",
            batch.packs.len(),
            batch.snapshots.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// Starts a [`Staged`] write.
    pub fn stage(&self) -> Staged<'_> {
        Staged { catalog: self, tx: None, packs: Vec::new(), inserted: 0, closed: false }
    }

    /// Rows in the blob table.
    fn blob_rows(&self) -> Result<u64, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        blobs.len().map_err(|e| self.err(e))
    }

    /// One write transaction of [`Catalog::apply`]: `packs`' rows, and
    /// when `last` is given, its snapshots and synced names (see
    /// [`Catalog::finish_tx`]).
    fn apply_tx(
        &self,
        packs: &[PackEntry],
        last: Option<&Batch>,
        filter: &mut Option<Arc<Filter>>,
    ) -> Result<Option<u64>, Error> {
        let tx = self.write_tx()?;
        let mut ids = Vec::new();
        self.insert_packs(&tx, packs, &mut ids)?;
        self.finish_tx(tx, &mut ids, last, filter)
    }

    /// Inserts `packs`' rows into `tx` and appends their blob ids to `ids`.
    fn insert_packs(
        &self,
        tx: &redb::WriteTransaction,
        packs: &[PackEntry],
        ids: &mut Vec<[u8; 32]>,
    ) -> Result<(), Error> {
        if packs.is_empty() {
            return Ok(());
        }
        let mut blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        let mut packs_t = tx.open_table(PACKS).map_err(|e| self.err(e))?;
        let mut pack_blobs = tx.open_table(PACK_BLOBS).map_err(|e| self.err(e))?;
        let mut pack_ids = Vec::new();
        let mut rows = Vec::new();
        for p in packs {
            let kind = p.blobs.first().map(|b| b.kind).unwrap_or(BlobKind::Data);
            let info = PackInfo { length: p.length, kind, n_blobs: p.blobs.len() as u32 };
            packs_t.insert(&p.id.0, &encode_pack(&info)).map_err(|e| self.err(e))?;
            pack_ids.clear();
            for b in &p.blobs {
                rows.push((b.id.0, encode_loc(&p.id, p.key_generation, b)));
                pack_ids.extend_from_slice(&b.id.0);
            }
            pack_blobs.insert(&p.id.0, pack_ids.as_slice()).map_err(|e| self.err(e))?;
        }
        // In key order, each B-tree page is visited once per run of
        // neighbouring ids instead of once per row.
        rows.sort_unstable_by_key(|r| r.0);
        for (id, loc) in &rows {
            blobs.insert(id, loc).map_err(|e| self.err(e))?;
        }
        ids.extend(rows.iter().map(|r| r.0));
        Ok(())
    }

    /// Commits a write transaction of an apply that holds the rows of
    /// `ids`: the ids go into `filter` first (sorted), so that it never
    /// lacks a committed id, and the `blob_epoch` is bumped; when `last`
    /// is given, its snapshots and synced names go in too, and only that
    /// last transaction waits for the disk. Returns the new `blob_epoch`
    /// when there were ids. A filter that fails to take the ids is dropped
    /// (and rebuilt by the next dedup reader).
    fn finish_tx(
        &self,
        mut tx: redb::WriteTransaction,
        ids: &mut [[u8; 32]],
        last: Option<&Batch>,
        filter: &mut Option<Arc<Filter>>,
    ) -> Result<Option<u64>, Error> {
        if last.is_none() {
            tx.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        }
        let mut epoch = None;
        if !ids.is_empty() {
            if let Some(f) = filter.as_ref() {
                ids.sort_unstable();
                if let Err(e) = f.insert_sorted(ids) {
                    self.drop_filter(&e);
                    *filter = None;
                }
            }
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let next = read_epoch(&meta).map_err(|e| self.err(e))? + 1;
            meta.insert(BLOB_EPOCH, next).map_err(|e| self.err(e))?;
            epoch = Some(next);
        }
        if let Some(batch) = last {
            let mut snaps = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let mut by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
            for s in &batch.snapshots {
                snaps.insert(&s.id.0, s.record.as_slice()).map_err(|e| self.err(e))?;
                by_time.insert((s.time_ns, &s.id.0), ()).map_err(|e| self.err(e))?;
            }
            let mut synced = tx.open_table(SYNCED).map_err(|e| self.err(e))?;
            for (name, size) in &batch.synced {
                synced.insert(name.as_str(), *size).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(epoch)
    }

    /// The id filter's file, beside the catalog.
    fn filter_path(&self) -> PathBuf {
        filter_path_of(&self.path)
    }

    fn held_filter(&self) -> std::sync::MutexGuard<'_, Option<Arc<Filter>>> {
        // The mutex guards a cache: a panic elsewhere leaves it usable.
        self.filter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_filter(&self, f: Option<Arc<Filter>>) {
        *self.held_filter() = f;
    }

    fn blob_epoch(&self, tx: &redb::ReadTransaction) -> Result<u64, Error> {
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        read_epoch(&meta).map_err(|e| self.err(e))
    }

    /// The filter covering `epoch`, held or opened from its file; None
    /// when there is none (or it is stale, dirty or unreadable).
    fn current_filter(&self, epoch: u64) -> Option<Arc<Filter>> {
        let mut held = self.held_filter();
        if let Some(f) = held.as_ref().filter(|f| f.epoch() == epoch) {
            return Some(f.clone());
        }
        match Filter::open(&self.filter_path()) {
            Ok(f) if f.epoch() == epoch => {
                let f = Arc::new(f);
                *held = Some(f.clone());
                Some(f)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("{}: not used: {e}", self.filter_path().display());
                None
            }
        }
    }

    /// The filter to update in an apply: the current one. None when there
    /// is none: the next dedup reader builds it from the blob table.
    fn filter_for_update(&self) -> Result<Option<Arc<Filter>>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let epoch = self.blob_epoch(&tx)?;
        Ok(self.current_filter(epoch))
    }

    /// Forgets a filter that failed to read or write: its file may be
    /// dirty, and the next dedup reader builds it again.
    fn drop_filter(&self, e: &filter::Error) {
        tracing::warn!("{}: {e}; the id filter is rebuilt at the next backup", self.filter_path().display());
        self.forget_filter();
    }

    /// Lets go of the filter and deletes its file; the next dedup reader
    /// builds it again.
    fn forget_filter(&self) {
        self.set_filter(None);
        let _ = std::fs::remove_file(self.filter_path());
    }

    /// Removes snapshots and their `synced` rows.
    pub fn remove_snapshots(&self, ids: &[SnapshotId]) -> Result<(), Error> {
        let tx = self.write_tx()?;
        {
            let mut snaps = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let mut by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
            let mut synced = tx.open_table(SYNCED).map_err(|e| self.err(e))?;
            for id in ids {
                snaps.remove(&id.0).map_err(|e| self.err(e))?;
                synced.remove(format!("snapshots/{}", id.to_hex()).as_str()).map_err(|e| self.err(e))?;
            }
            let doomed: Vec<(i64, [u8; 32])> = by_time
                .iter()
                .map_err(|e| self.err(e))?
                .filter_map(|r| r.ok())
                .map(|(k, _)| {
                    let (t, id) = k.value();
                    (t, *id)
                })
                .filter(|(_, id)| ids.iter().any(|x| &x.0 == id))
                .collect();
            for (t, id) in doomed {
                by_time.remove((t, &id)).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records the damaged index deltas and snapshot records a sync found
    /// (`index/<id>` or `snapshots/<id>`, with the reason), replacing what
    /// an earlier sync recorded.
    pub fn set_damaged(&self, damaged: &[Damage]) -> Result<(), Error> {
        let tx = self.write_tx()?;
        tx.delete_table(DAMAGED).map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(DAMAGED).map_err(|e| self.err(e))?;
            for d in damaged {
                t.insert(d.object.as_str(), d.why.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets damaged objects that were deleted from the store.
    pub fn remove_damaged(&self, names: &[String]) -> Result<(), Error> {
        let tx = self.write_tx()?;
        {
            let mut t = tx.open_table(DAMAGED).map_err(|e| self.err(e))?;
            for name in names {
                t.remove(name.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The damaged objects the last sync found, by name (`index/<id>`,
    /// `snapshots/<id>`), with the reason.
    pub fn damaged(&self) -> Result<Vec<Damage>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(DAMAGED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = r.map_err(|e| self.err(e))?;
            out.push(Damage::new(k.value(), v.value()));
        }
        Ok(out)
    }

    /// Empties the mark table of prune.
    pub fn used_clear(&self) -> Result<(), Error> {
        let tx = self.write_tx()?;
        tx.delete_table(USED).map_err(|e| self.err(e))?;
        tx.open_table(USED).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Marks blobs as reachable (one transaction).
    pub fn used_insert(&self, ids: &[BlobId]) -> Result<(), Error> {
        let mut tx = self.write_tx()?;
        // Scratch data: no fsync; a crash only means marking again.
        tx.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(USED).map_err(|e| self.err(e))?;
            for id in ids {
                t.insert(&id.0, ()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// A read view of the mark table.
    /// Call [`Catalog::used_clear`] first (it creates the table).
    pub fn used_reader(&self) -> Result<UsedReader, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let used = tx.open_table(USED).map_err(|e| self.err(e))?;
        Ok(UsedReader { used, path: self.path.display().to_string() })
    }

    /// Names of the store objects already read in, with sizes.
    pub fn synced(&self) -> Result<Vec<(String, u64)>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SYNCED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = r.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// A read view for many lookups.
    pub fn reader(&self) -> Result<Reader, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        Ok(Reader { blobs, path: self.path.display().to_string() })
    }

    /// Looks up one blob.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>, Error> {
        self.reader()?.lookup(id)
    }

    /// A read view for a backup's dedup checks: the id filter first (built
    /// from the blob table when it is missing or stale), then the ids of
    /// recently hit packs, then the blob table.
    pub fn dedup(&self) -> Result<Dedup, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let epoch = self.blob_epoch(&tx)?;
        let blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        let pack_blobs = tx.open_table(PACK_BLOBS).map_err(|e| self.err(e))?;
        let filter = match self.current_filter(epoch) {
            Some(f) => Some(f),
            None => {
                let n = blobs.len().map_err(|e| self.err(e))?;
                if n >= 1_000_000 {
                    tracing::info!("building the catalog's id filter ({n} blobs)");
                } else {
                    tracing::debug!("building the catalog's id filter ({n} blobs)");
                }
                let ids = blobs.iter().map_err(|e| self.err(e))?.map(|r| {
                    r.map(|(k, _)| *k.value()).map_err(|e| filter::Error::Io(format!("reading the blob table: {e}")))
                });
                match Filter::build(&self.filter_path(), n, epoch, ids) {
                    Ok(f) => {
                        let f = Arc::new(f);
                        self.set_filter(Some(f.clone()));
                        Some(f)
                    }
                    Err(e) => {
                        // Dedup checks still work, through the blob table.
                        self.drop_filter(&e);
                        None
                    }
                }
            }
        };
        // A small filter is checked from memory; the copy covers `epoch`,
        // as the table snapshot does (this process is the filter's only
        // writer, and no apply runs while a dedup reader is made).
        let bits = filter
            .as_ref()
            .filter(|f| f.file_bytes() <= filter::IN_MEMORY_BYTES)
            .and_then(|f| f.load().ok().filter(|_| f.epoch() == epoch));
        Ok(Dedup {
            blobs,
            pack_blobs,
            filter,
            bits,
            recent: Mutex::new(Recent::default()),
            path: self.path.display().to_string(),
            stats: Default::default(),
        })
    }

    /// A pack's catalog entry.
    pub fn pack(&self, id: &PackId) -> Result<Option<PackInfo>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PACKS).map_err(|e| self.err(e))?;
        let v = t.get(&id.0).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_pack(v.value())))
    }

    /// Calls `f` for every pack, in id order, streaming.
    pub fn for_each_pack(&self, mut f: impl FnMut(PackId, PackInfo)) -> Result<(), Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PACKS).map_err(|e| self.err(e))?;
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = r.map_err(|e| self.err(e))?;
            if let Some(info) = decode_pack(v.value()) {
                f(PackId(*k.value()), info);
            }
        }
        Ok(())
    }

    /// Calls `f` for every blob, in id order, streaming.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobLocation)) -> Result<(), Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = r.map_err(|e| self.err(e))?;
            if let Some(loc) = decode_loc(&BlobId(*k.value()), v.value()) {
                f(loc);
            }
        }
        Ok(())
    }

    /// Calls `f` with the blob ids of each pack that has a `pack_blobs`
    /// row, in pack id order, until `f` returns false.
    pub fn for_each_pack_blobs(&self, mut f: impl FnMut(&[BlobId]) -> bool) -> Result<(), Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PACK_BLOBS).map_err(|e| self.err(e))?;
        let mut ids = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = r.map_err(|e| self.err(e))?;
            ids.clear();
            ids.extend(v.value().chunks_exact(32).map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                BlobId(id)
            }));
            if !f(&ids) {
                break;
            }
        }
        Ok(())
    }

    /// Totals over all blobs.
    pub fn blob_totals(&self) -> Result<BlobTotals, Error> {
        let mut t = BlobTotals::default();
        self.for_each_blob(|loc| match loc.blob.kind {
            BlobKind::Data => {
                t.data_blobs += 1;
                t.data_raw_bytes += loc.blob.raw_len as u64;
                t.data_stored_bytes += loc.blob.length as u64;
            }
            BlobKind::Tree => {
                t.tree_blobs += 1;
                t.tree_stored_bytes += loc.blob.length as u64;
            }
        })?;
        Ok(t)
    }

    /// Number of blobs.
    pub fn n_blobs(&self) -> Result<u64, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>, Error> {
        let mut out = Vec::new();
        self.scan_snapshots(false, |row| {
            out.push(row);
            None::<()>
        })?;
        Ok(out)
    }

    /// The first of `pick`'s answers, asking it about the snapshots newest
    /// first and stopping at the first it accepts (a backup's parent is
    /// usually the newest snapshot).
    pub fn find_newest_snapshot<T>(&self, pick: impl FnMut(SnapshotRow) -> Option<T>) -> Result<Option<T>, Error> {
        self.scan_snapshots(true, pick)
    }

    /// Hands `visit` the snapshot rows in time order (newest first when
    /// `newest_first`) until it returns something.
    fn scan_snapshots<T>(
        &self,
        newest_first: bool,
        mut visit: impl FnMut(SnapshotRow) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
        let snaps = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let mut rows = by_time.iter().map_err(|e| self.err(e))?;
        while let Some(r) = if newest_first { rows.next_back() } else { rows.next() } {
            let (k, _) = r.map_err(|e| self.err(e))?;
            let (time_ns, id) = k.value();
            if let Some(rec) = snaps.get(id).map_err(|e| self.err(e))? {
                let row = SnapshotRow { id: SnapshotId(*id), time_ns, record: rec.value().to_vec() };
                if let Some(found) = visit(row) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The newest snapshot at or before `time_ns` (a range scan).
    pub fn snapshot_at(&self, time_ns: i64) -> Result<Option<SnapshotId>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
        let hi = [0xffu8; 32];
        let mut range = by_time.range(..=(time_ns, &hi)).map_err(|e| self.err(e))?;
        match range.next_back() {
            Some(r) => {
                let (k, _) = r.map_err(|e| self.err(e))?;
                Ok(Some(SnapshotId(*k.value().1)))
            }
            None => Ok(None),
        }
    }
}

/// A read view of prune's mark table.
pub struct UsedReader {
    used: redb::ReadOnlyTable<&'static [u8; 32], ()>,
    path: String,
}

impl UsedReader {
    /// True when the blob was marked reachable.
    pub fn contains(&self, id: &BlobId) -> Result<bool, Error> {
        self.used
            .get(&id.0)
            .map(|v| v.is_some())
            .map_err(|e| Error::Db { path: self.path.clone(), message: e.to_string() })
    }
}

/// A read transaction over the blob table, shareable across threads.
pub struct Reader {
    blobs: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8; 49]>,
    path: String,
}

impl Reader {
    /// Looks up one blob.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>, Error> {
        let v = self.blobs.get(&id.0).map_err(|e| Error::Db { path: self.path.clone(), message: e.to_string() })?;
        Ok(v.and_then(|v| decode_loc(id, v.value())))
    }
}

/// Ids known present: those of packs that lookups recently hit twice.
#[derive(Default)]
struct Recent {
    ids: HashSet<BlobId>,
    packs: HashSet<PackId>,
    /// Packs hit once: a second hit loads the pack's ids. Random hits
    /// rarely hit one pack twice, so they pay no prefetch.
    hit_once: HashSet<PackId>,
}

/// Packs remembered as hit once, at most.
const HIT_ONCE_PACKS: usize = 4096;

/// What a [`Dedup`] reader answered, and how.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DedupStats {
    /// Ids the filter ruled out (new blobs, no table read).
    pub filtered: u64,
    /// Ids found among recently hit packs' ids (no table read).
    pub recent: u64,
    /// Blob-table lookups that found the id.
    pub table_hits: u64,
    /// Blob-table lookups that did not (the filter's false positives).
    pub table_misses: u64,
    /// Time in blob-table lookups and pack prefetches, nanoseconds summed
    /// over threads.
    pub table_ns: u64,
}

#[derive(Default)]
struct Counters {
    filtered: AtomicU64,
    recent: AtomicU64,
    table_hits: AtomicU64,
    table_misses: AtomicU64,
    table_ns: AtomicU64,
}

/// A catalog write that takes the entries of packs as they are stored,
/// before their index delta is: their rows go into an open write
/// transaction right away (a backup's rows are then inserted while it
/// still seals, about 1.6 µs a blob, instead of all at its end, when one
/// core would do them alone), which commits in [`Staged::commit`], once
/// the index delta is stored. Dropped uncommitted (a failed backup), it
/// applied nothing: the catalog never lists a pack no stored index delta
/// lists. The transaction takes rows while [`Catalog::apply`] would take
/// them in one; later packs' rows wait for the commit.
pub struct Staged<'a> {
    catalog: &'a Catalog,
    /// The open transaction and the ids of the rows in it.
    tx: Option<(redb::WriteTransaction, Vec<[u8; 32]>)>,
    packs: Vec<PackEntry>,
    /// `packs[..inserted]` have their rows in `tx`.
    inserted: usize,
    /// `tx` takes no more rows (full, or an insert failed).
    closed: bool,
}

impl Staged<'_> {
    /// Takes a stored pack's entry.
    pub fn add(&mut self, p: PackEntry) {
        if !self.closed {
            match self.insert(&p) {
                Ok(true) => self.inserted = self.packs.len() + 1,
                Ok(false) => self.closed = true,
                Err(e) => {
                    // Nothing is lost: every pack is applied at the commit.
                    tracing::debug!("catalog: rows wait for the index delta: {e}");
                    self.tx = None;
                    self.inserted = 0;
                    self.closed = true;
                }
            }
        }
        self.packs.push(p);
    }

    /// Inserts `p`'s rows, if the transaction may take them.
    fn insert(&mut self, p: &PackEntry) -> Result<bool, Error> {
        let cat = self.catalog;
        let (tx, ids) = match &mut self.tx {
            Some(open) => open,
            slot @ None => slot.insert((cat.write_tx()?, Vec::new())),
        };
        let table_rows = tx.open_table(BLOBS).map_err(|e| cat.err(e))?.len().map_err(|e| cat.err(e))?;
        if ids.len() + p.blobs.len() > rows_per_tx(table_rows + p.blobs.len() as u64) {
            return Ok(false);
        }
        cat.insert_packs(tx, std::slice::from_ref(p), ids)?;
        Ok(true)
    }

    /// Takes a pack's entry without inserting its rows before the commit
    /// (as [`Catalog::apply`] does).
    pub fn add_unstaged(&mut self, p: PackEntry) {
        self.closed = true;
        self.packs.push(p);
    }

    /// Packs taken so far.
    pub fn packs(&self) -> &[PackEntry] {
        &self.packs
    }

    /// Commits, recording `synced` (the stored index delta of
    /// [`Staged::packs`]): the transaction's rows, then the rows of the
    /// packs it did not take.
    pub fn commit(self, synced: (String, u64)) -> Result<(), Error> {
        let mut packs = self.packs;
        let rest = packs.split_off(self.inserted);
        self.catalog.apply_with(self.tx, &Batch { synced: vec![synced], packs: rest, snapshots: vec![] })
    }
}

/// A read transaction for a backup's dedup checks, shareable across
/// threads. A second hit in one pack loads the ids of the whole pack
/// (`pack_blobs`): the next chunks of a file backed up before are usually
/// its neighbours there, and are then answered from memory (the locality
/// cache of Zhu et al., "Avoiding the Disk Bottleneck in the Data Domain
/// Deduplication File System", FAST 2008). Memory: the filter plus at most
/// [`RECENT_IDS`] ids.
pub struct Dedup {
    blobs: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8; 49]>,
    pack_blobs: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    filter: Option<Arc<Filter>>,
    /// The filter's bits in memory, when small (see [`filter::IN_MEMORY_BYTES`]).
    bits: Option<filter::Bits>,
    recent: Mutex<Recent>,
    path: String,
    stats: Counters,
}

impl Dedup {
    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Db { path: self.path.clone(), message: e.to_string() }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A cache of facts read from the table: usable after a panic.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the catalog holds the blob.
    pub fn contains(&self, id: &BlobId) -> Result<bool, Error> {
        let c = &self.stats;
        // An unreadable filter block means "maybe": the table decides.
        let maybe = match (&self.bits, &self.filter) {
            (Some(bits), _) => bits.may_contain(&id.0),
            (None, Some(f)) => f.may_contain(&id.0).unwrap_or(true),
            (None, None) => true,
        };
        if !maybe {
            c.filtered.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        if self.recent().ids.contains(id) {
            c.recent.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let t = std::time::Instant::now();
        let pack = self.blobs.get(&id.0).map_err(|e| self.err(e))?.map(|v| {
            let mut p = [0u8; 32];
            p.copy_from_slice(&v.value()[..32]);
            PackId(p)
        });
        let found = match pack {
            Some(pack) => {
                self.prefetch(pack)?;
                c.table_hits.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => {
                c.table_misses.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        c.table_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(found)
    }

    /// On the second hit in `pack`, remembers its ids (once per pack; all
    /// forgotten when [`RECENT_IDS`] would be passed).
    fn prefetch(&self, pack: PackId) -> Result<(), Error> {
        {
            let mut recent = self.recent();
            if recent.packs.contains(&pack) {
                return Ok(());
            }
            if !recent.hit_once.remove(&pack) {
                if recent.hit_once.len() >= HIT_ONCE_PACKS {
                    recent.hit_once.clear();
                }
                recent.hit_once.insert(pack);
                return Ok(());
            }
        }
        let Some(v) = self.pack_blobs.get(&pack.0).map_err(|e| self.err(e))? else { return Ok(()) };
        let ids = v.value();
        let n = ids.len() / 32;
        if ids.len() % 32 != 0 || n > RECENT_IDS {
            return Ok(());
        }
        let mut recent = self.recent();
        if recent.ids.len() + n > RECENT_IDS {
            recent.ids.clear();
            recent.packs.clear();
        }
        recent.packs.insert(pack);
        for c in ids.chunks_exact(32) {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            recent.ids.insert(BlobId(id));
        }
        Ok(())
    }

    /// Counts so far.
    pub fn stats(&self) -> DedupStats {
        let c = &self.stats;
        DedupStats {
            filtered: c.filtered.load(Ordering::Relaxed),
            recent: c.recent.load(Ordering::Relaxed),
            table_hits: c.table_hits.load(Ordering::Relaxed),
            table_misses: c.table_misses.load(Ordering::Relaxed),
            table_ns: c.table_ns.load(Ordering::Relaxed),
        }
    }

    /// Bytes of the id filter's file (0 without one).
    pub fn filter_bytes(&self) -> u64 {
        self.filter.as_ref().map_or(0, |f| f.file_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn blob(i: u8, kind: BlobKind) -> PackedBlob {
        PackedBlob { kind, id: BlobId([i; 32]), offset: i as u32 * 100, length: 50, raw_len: 40 + i as u32 }
    }

    #[test]
    fn catalog_matches_a_map_model() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let mut model = BTreeMap::new();
        for round in 0..5u8 {
            let pack = PackId([round; 32]);
            let blobs: Vec<_> = (round * 10..round * 10 + 10).map(|i| blob(i, BlobKind::Data)).collect();
            for b in &blobs {
                model.insert(b.id, (pack, *b));
            }
            let batch = Batch {
                synced: vec![(format!("index/{round}"), 1)],
                packs: vec![PackEntry { id: pack, length: 10_000, key_generation: 1, blobs }],
                snapshots: vec![SnapshotRow {
                    id: SnapshotId([round; 32]),
                    time_ns: round as i64 * 10,
                    record: vec![round],
                }],
            };
            cat.apply(&batch).unwrap();
        }
        for i in 0..60u8 {
            let got = cat.lookup(&BlobId([i; 32])).unwrap();
            let want = model.get(&BlobId([i; 32])).map(|(p, b)| BlobLocation { pack: *p, blob: *b, key_generation: 1 });
            assert_eq!(got, want);
        }
        assert_eq!(cat.n_blobs().unwrap(), 50);
        assert_eq!(cat.snapshot_at(25).unwrap(), Some(SnapshotId([2; 32])));
        assert_eq!(cat.snapshot_at(20).unwrap(), Some(SnapshotId([2; 32])));
        assert_eq!(cat.snapshot_at(-1).unwrap(), None);
        cat.remove_snapshots(&[SnapshotId([2; 32])]).unwrap();
        assert_eq!(cat.snapshot_at(25).unwrap(), Some(SnapshotId([1; 32])));
        assert_eq!(cat.snapshots().unwrap().len(), 4);
        // Newest first, stopping at the first accepted: the rows seen are
        // the newest down to the match, and nothing older.
        let mut seen = Vec::new();
        let found = cat
            .find_newest_snapshot(|row| {
                seen.push(row.record[0]);
                (row.record[0] % 2 == 1).then_some(row)
            })
            .unwrap();
        assert_eq!(found.map(|r| r.id), Some(SnapshotId([3; 32])));
        assert_eq!(seen, vec![4, 3]);
        assert!(cat.find_newest_snapshot(|_| None::<()>).unwrap().is_none());
        drop(cat);
        // Reopen: contents persist; clear empties everything.
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        assert_eq!(cat.synced().unwrap().len(), 5);
        cat.clear().unwrap();
        assert_eq!(cat.n_blobs().unwrap(), 0);
        assert!(cat.snapshots().unwrap().is_empty());
    }

    fn pack_of(pack: u8, ids: &[[u8; 32]]) -> PackEntry {
        let blobs = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PackedBlob {
                kind: BlobKind::Data,
                id: BlobId(*id),
                offset: i as u32 * 10,
                length: 10,
                raw_len: 10,
            })
            .collect();
        PackEntry { id: PackId([pack; 32]), length: 1000, key_generation: 1, blobs }
    }

    fn rand_id(seed: u64) -> [u8; 32] {
        *blake3::hash(&seed.to_le_bytes()).as_bytes()
    }

    #[test]
    fn a_staged_write_takes_rows_while_an_apply_would_take_them_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        // A small table: every pack's rows go in as it is added.
        let first: Vec<_> = (0..3000).map(rand_id).collect();
        let mut staged = cat.stage();
        for (j, part) in first.chunks(1000).enumerate() {
            staged.add(pack_of(j as u8, part));
        }
        assert_eq!(staged.inserted, 3);
        staged.commit(("index/a".into(), 1)).unwrap();
        // Past SMALL_TABLE_ROWS, the transaction closes after APPLY_ROWS
        // rows and the rest waits for the commit.
        let bulk: Vec<_> = (3000..3000 + SMALL_TABLE_ROWS).map(rand_id).collect();
        cat.apply(&Batch { packs: vec![pack_of(9, &bulk)], ..Default::default() }).unwrap();
        let more: Vec<_> = (1_000_000..1_004_500).map(rand_id).collect();
        let mut staged = cat.stage();
        for (j, part) in more.chunks(1500).enumerate() {
            staged.add(pack_of(20 + j as u8, part));
        }
        assert_eq!((staged.inserted, staged.closed), (1, true));
        staged.commit(("index/b".into(), 1)).unwrap();
        let d = cat.dedup().unwrap();
        for id in first.iter().chain(&more).chain(bulk.iter().step_by(97)) {
            assert!(d.contains(&BlobId(*id)).unwrap());
        }
        assert!(!d.contains(&BlobId(rand_id(u64::MAX))).unwrap());
        let synced: Vec<String> = cat.synced().unwrap().into_iter().map(|(n, _)| n).collect();
        assert!(synced.contains(&"index/a".to_string()) && synced.contains(&"index/b".to_string()));
    }

    #[test]
    fn a_second_hit_in_a_pack_loads_the_pack_and_the_rest_is_answered_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let ids: Vec<_> = (0..100).map(rand_id).collect();
        cat.apply(&Batch { packs: vec![pack_of(1, &ids)], ..Default::default() }).unwrap();
        let d = cat.dedup().unwrap();
        for id in &ids {
            assert!(d.contains(&BlobId(*id)).unwrap());
        }
        let s = d.stats();
        assert_eq!((s.table_hits, s.recent), (2, 98), "{s:?}");
        let absent = (1000..2000).filter(|&i| d.contains(&BlobId(rand_id(i))).unwrap()).count();
        assert_eq!(absent, 0);
        assert!(d.stats().filtered > 950, "{:?}", d.stats());
    }

    #[test]
    fn a_schema_1_catalog_gains_pack_blobs_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        {
            // The layout of schema 1: no pack_blobs table.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut blobs = tx.open_table(BLOBS).unwrap();
                let b = blob(7, BlobKind::Data);
                blobs.insert(&b.id.0, &encode_loc(&PackId([1; 32]), 1, &b)).unwrap();
                tx.open_table(PACKS).unwrap();
                tx.open_table(SNAPSHOTS).unwrap();
                tx.open_table(BY_TIME).unwrap();
                tx.open_table(SYNCED).unwrap();
                tx.open_table(META).unwrap().insert("schema", 1).unwrap();
            }
            tx.commit().unwrap();
        }
        let cat = Catalog::open(&path).unwrap();
        let d = cat.dedup().unwrap();
        assert!(d.contains(&BlobId([7; 32])).unwrap());
        assert!(!d.contains(&BlobId([8; 32])).unwrap());
    }

    #[test]
    fn a_schema_2_catalog_gains_the_damaged_table_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        {
            // The layout of schema 2: no damaged table.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut blobs = tx.open_table(BLOBS).unwrap();
                let b = blob(7, BlobKind::Data);
                blobs.insert(&b.id.0, &encode_loc(&PackId([1; 32]), 1, &b)).unwrap();
                tx.open_table(PACKS).unwrap();
                tx.open_table(SNAPSHOTS).unwrap();
                tx.open_table(BY_TIME).unwrap();
                tx.open_table(SYNCED).unwrap().insert("index/aa", 10).unwrap();
                tx.open_table(PACK_BLOBS).unwrap();
                let mut meta = tx.open_table(META).unwrap();
                meta.insert("schema", 2).unwrap();
                meta.insert(BLOB_EPOCH, 42).unwrap();
            }
            tx.commit().unwrap();
        }
        let cat = Catalog::open(&path).unwrap();
        assert!(cat.lookup(&BlobId([7; 32])).unwrap().is_some());
        assert_eq!(cat.synced().unwrap(), vec![("index/aa".to_string(), 10)]);
        assert!(cat.damaged().unwrap().is_empty());
        let rtx = cat.db.begin_read().unwrap();
        assert_eq!(cat.blob_epoch(&rtx).unwrap(), 42, "the id filter of a schema-2 catalog stays valid");
    }

    #[test]
    fn damaged_objects_are_replaced_by_each_sync_and_cleared_with_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let d = |n: &str| Damage::new(n, format!("{n} is bad"));
        cat.set_damaged(&[d("snapshots/aa"), d("index/bb")]).unwrap();
        let mut got = cat.damaged().unwrap();
        got.sort();
        assert_eq!(got, vec![d("index/bb"), d("snapshots/aa")]);
        cat.set_damaged(&[d("snapshots/cc")]).unwrap();
        assert_eq!(cat.damaged().unwrap(), vec![d("snapshots/cc")]);
        cat.remove_damaged(&["snapshots/cc".to_string()]).unwrap();
        assert!(cat.damaged().unwrap().is_empty());
        cat.set_damaged(&[d("index/dd")]).unwrap();
        cat.clear().unwrap();
        assert!(cat.damaged().unwrap().is_empty());
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Index a pack of this many new ids.
        Apply(u8),
        /// A staged write of that many ids in three packs, committed or
        /// dropped (a failed backup).
        Stage(u8, bool),
        /// Close and open the catalog again.
        Reopen,
        /// Damage the filter file (cut it, or flip a byte of its header).
        Damage(bool),
        /// Put back an older filter file (a crash between commit and save).
        Stale,
        /// Empty the catalog (a rebuild).
        Clear,
        /// Delete the catalog file but not the filter file beside it.
        Recreate,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u8..40).prop_map(Step::Apply),
            3 => (3u8..60, any::<bool>()).prop_map(|(k, c)| Step::Stage(k, c)),
            1 => Just(Step::Reopen),
            1 => any::<bool>().prop_map(Step::Damage),
            1 => Just(Step::Stale),
            1 => Just(Step::Clear),
            1 => Just(Step::Recreate),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Whatever happens to the catalog and its filter file, a dedup
        /// reader finds every id the catalog holds and no id it lacks.
        #[test]
        fn the_dedup_reader_agrees_with_the_catalog(steps in proptest::collection::vec(step(), 1..14)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.redb");
            let filter_file = path.with_extension("filter");
            let mut cat = Catalog::open(&path).unwrap();
            let mut held: Vec<[u8; 32]> = Vec::new();
            let mut next = 0u64;
            let mut saved: Option<Vec<u8>> = None;
            for (n, s) in steps.iter().enumerate() {
                match s {
                    Step::Apply(k) => {
                        let ids: Vec<_> = (0..*k as u64).map(|i| rand_id(next + i)).collect();
                        next += *k as u64;
                        saved = std::fs::read(&filter_file).ok();
                        // Sometimes a backup's reader shares the filter
                        // while its own index deltas are applied.
                        let reading = (k % 2 == 1).then(|| cat.dedup().unwrap());
                        cat.apply(&Batch { packs: vec![pack_of(n as u8, &ids)], ..Default::default() }).unwrap();
                        if let Some(d) = reading {
                            // Its view is the catalog before the apply.
                            for id in &held {
                                proptest::prop_assert!(d.contains(&BlobId(*id)).unwrap());
                            }
                        }
                        held.extend(ids);
                    }
                    Step::Stage(k, commit) => {
                        let ids: Vec<_> = (0..*k as u64).map(|i| rand_id(next + i)).collect();
                        next += *k as u64;
                        saved = std::fs::read(&filter_file).ok();
                        let reading = cat.dedup().unwrap();
                        let mut staged = cat.stage();
                        for (j, part) in ids.chunks(ids.len().div_ceil(3)).enumerate() {
                            staged.add(pack_of(n as u8 * 4 + j as u8, part));
                            // Rows in the open transaction are no one's yet.
                            proptest::prop_assert!(!reading.contains(&BlobId(part[0])).unwrap());
                        }
                        if *commit {
                            staged.commit((format!("index/{n}"), 1)).unwrap();
                            held.extend(ids);
                        } else {
                            drop(staged);
                            let d = cat.dedup().unwrap();
                            for id in &ids {
                                proptest::prop_assert!(!d.contains(&BlobId(*id)).unwrap());
                            }
                        }
                    }
                    Step::Reopen => {
                        drop(cat);
                        cat = Catalog::open(&path).unwrap();
                    }
                    Step::Damage(cut) => {
                        if let Ok(mut b) = std::fs::read(&filter_file) {
                            if *cut { b.truncate(b.len() / 2) } else { b[3] ^= 0x40 }
                            std::fs::write(&filter_file, b).unwrap();
                            drop(cat);
                            cat = Catalog::open(&path).unwrap();
                        }
                    }
                    Step::Stale => {
                        if let Some(b) = &saved {
                            std::fs::write(&filter_file, b).unwrap();
                            drop(cat);
                            cat = Catalog::open(&path).unwrap();
                        }
                    }
                    Step::Clear => {
                        cat.clear().unwrap();
                        held.clear();
                    }
                    Step::Recreate => {
                        drop(cat);
                        std::fs::remove_file(&path).unwrap();
                        cat = Catalog::open(&path).unwrap();
                        held.clear();
                    }
                }
                let d = cat.dedup().unwrap();
                proptest::prop_assert!(d.filter_bytes() > 0, "the filter is in use");
                for id in &held {
                    proptest::prop_assert!(d.contains(&BlobId(*id)).unwrap());
                }
                for i in next..next + 50 {
                    proptest::prop_assert!(!d.contains(&BlobId(rand_id(i))).unwrap());
                }
            }
        }
    }
}
