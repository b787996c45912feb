//! The local catalog: the only module that imports `redb`.
//!
//! Owns: table definitions, blob and snapshot lookups, the record of which
//! store objects have been read in (`synced`), and clearing for a rebuild.
//! Must not: hold anything the store lacks. The catalog is a cache of the
//! store: `repo` deletes and rebuilds it whenever it is missing, damaged or
//! out of step.
//!
//! **Invariant:** memory use is bounded by redb's page cache
//! ([`CACHE_BYTES`]), not by the number of blobs.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::format::index::PackEntry;
use crate::format::pack::{BlobKind, PackedBlob};
use crate::id::{BlobId, PackId, SnapshotId};

/// redb page cache; the catalog's whole memory budget. 16 MiB holds every
/// branch page of a 10^7-blob catalog (about 8 MiB), so lookups miss only
/// at the leaves, as they would with any cache much smaller than the file.
pub const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Bumped when the table layout changes; an older catalog is rebuilt.
const SCHEMA_VERSION: u64 = 1;

const BLOBS: TableDefinition<&[u8; 32], &[u8; 49]> = TableDefinition::new("blobs");
const PACKS: TableDefinition<&[u8; 32], &[u8; 13]> = TableDefinition::new("packs");
const SNAPSHOTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("snapshots");
const BY_TIME: TableDefinition<(i64, &[u8; 32]), ()> = TableDefinition::new("snapshots_by_time");
const SYNCED: TableDefinition<&str, u64> = TableDefinition::new("synced");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Blob rows per catalog write transaction at most (see [`Catalog::apply`]).
const APPLY_ROWS: usize = 2048;
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
    /// The record as JSON (`format::snapshot`).
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

/// The catalog of one tenant in one repository.
pub struct Catalog {
    db: Database,
    path: PathBuf,
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
/// rebuilds a catalog that fails to open. redb syncs the disk three times
/// to open and close a database and once or twice per commit (about 4-5 ms
/// of an 18 ms unchanged re-backup here). Without the syncs, a process that
/// crashes or is killed loses nothing (the kernel still writes its pages);
/// only a power cut or kernel crash can leave the file torn, which redb's
/// checksums detect at the next open, and the catalog is rebuilt from the
/// store, or left stale, which the sync at every open corrects.
#[derive(Debug)]
struct Unsynced(redb::backends::FileBackend);

impl redb::StorageBackend for Unsynced {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.0.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
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
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::Db { path: p.clone(), message: e.to_string() })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::Db { path: p.clone(), message: e.to_string() })?;
        let db_err = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse { path: p.clone() },
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
        let cat = Self { db, path: path.to_path_buf() };
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
                    if v.value() == SCHEMA_VERSION {
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
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let version = meta.get("schema").map_err(|e| self.err(e))?.map(|v| v.value());
            match version {
                None => {
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
        tx.commit().map_err(|e| self.err(e))?;
        self.create_tables()
    }

    /// Applies a batch. Blob rows go in transactions of at most
    /// [`APPLY_ROWS`] rows: a write transaction keeps every page it dirties
    /// in memory until it commits, and random ids dirty about one page per
    /// row, so an unbounded transaction's memory would grow with the batch
    /// in a large catalog. Only the last transaction waits for the disk and records
    /// the batch's `synced` names: after a crash the batch is applied again
    /// (every insert is idempotent).
    pub fn apply(&self, batch: &Batch) -> Result<(), Error> {
        if batch.packs.is_empty() && batch.snapshots.is_empty() && batch.synced.is_empty() {
            return Ok(());
        }
        let mut start = 0;
        let mut rows = 0usize;
        for (i, p) in batch.packs.iter().enumerate() {
            rows += p.blobs.len();
            if rows >= APPLY_ROWS && i + 1 < batch.packs.len() {
                self.apply_packs(&batch.packs[start..=i])?;
                start = i + 1;
                rows = 0;
            }
        }
        let rest = Batch { packs: batch.packs[start..].to_vec(), snapshots: Vec::new(), synced: Vec::new() };
        self.apply_one(&rest, batch)
    }

    fn apply_packs(&self, packs: &[crate::format::index::PackEntry]) -> Result<(), Error> {
        let mut tx = self.write_tx()?;
        tx.set_durability(redb::Durability::Eventual);
        {
            let mut blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut ptable = tx.open_table(PACKS).map_err(|e| self.err(e))?;
            for p in packs {
                let kind = p.blobs.first().map(|b| b.kind).unwrap_or(BlobKind::Data);
                let info = PackInfo { length: p.length, kind, n_blobs: p.blobs.len() as u32 };
                ptable.insert(&p.id.0, &encode_pack(&info)).map_err(|e| self.err(e))?;
                for b in &p.blobs {
                    blobs.insert(&b.id.0, &encode_loc(&p.id, p.key_generation, b)).map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The last, durable transaction of [`Catalog::apply`]: `packs`' rows,
    /// and the snapshots and synced names of `batch`.
    fn apply_one(&self, packs: &Batch, batch: &Batch) -> Result<(), Error> {
        let tx = self.write_tx()?;
        {
            let mut blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut packs_t = tx.open_table(PACKS).map_err(|e| self.err(e))?;
            let packs_t = &mut packs_t;
            for p in &packs.packs {
                let kind = p.blobs.first().map(|b| b.kind).unwrap_or(BlobKind::Data);
                let info = PackInfo { length: p.length, kind, n_blobs: p.blobs.len() as u32 };
                packs_t.insert(&p.id.0, &encode_pack(&info)).map_err(|e| self.err(e))?;
                for b in &p.blobs {
                    blobs.insert(&b.id.0, &encode_loc(&p.id, p.key_generation, b)).map_err(|e| self.err(e))?;
                }
            }
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
        tx.commit().map_err(|e| self.err(e))
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
        tx.set_durability(redb::Durability::Eventual);
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
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
        let snaps = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in by_time.iter().map_err(|e| self.err(e))? {
            let (k, _) = r.map_err(|e| self.err(e))?;
            let (time_ns, id) = k.value();
            if let Some(rec) = snaps.get(id).map_err(|e| self.err(e))? {
                out.push(SnapshotRow { id: SnapshotId(*id), time_ns, record: rec.value().to_vec() });
            }
        }
        Ok(out)
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
        drop(cat);
        // Reopen: contents persist; clear empties everything.
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        assert_eq!(cat.synced().unwrap().len(), 5);
        cat.clear().unwrap();
        assert_eq!(cat.n_blobs().unwrap(), 0);
        assert!(cat.snapshots().unwrap().is_empty());
    }
}
