//! The catalog's id filter: a blocked Bloom filter over every blob id in
//! the catalog, so that a backup's check of a new chunk (the common case
//! in a large repository) is answered by one 64-byte read instead of a
//! B-tree descent to a leaf page.
//!
//! Owns: the filter file (`catalog.filter` beside the catalog), its format
//! and its consistency stamp. Must not: ever answer "absent" for an id the
//! catalog holds. It may answer "maybe" for an absent id (about 1-3% of
//! them); the caller then asks the catalog.
//!
//! **The bits stay in the file.** A check reads the id's 64-byte block
//! with `pread` (from the page cache), an insert rewrites the 64 KiB
//! windows that hold new ids, a build streams the file once. So the
//! filter costs the process no memory however large the catalog (12 MB of
//! file for 10^7 blobs), like the catalog itself, whose pages also live in
//! the page cache.
//!
//! Blob ids are keyed BLAKE3 outputs, uniform and not choosable without
//! the tenant's key, so the filter takes its bit positions straight from
//! the id's bytes: bytes 0..8, read most significant first, choose the
//! block (so blocks follow the catalog's key order, and a scan of the blob
//! table or a sorted batch of ids writes the file front to back); bytes
//! 8..16 give [`PROBES`] 9-bit positions inside the block.
//!
//! Consistency: the header records the catalog's `blob_epoch` the bits
//! cover (bumped by every transaction that adds blob rows). Before an
//! update the header is marked [`DIRTY`]; after it, the new epoch is
//! written. A file whose epoch is not the catalog's (stale, dirty after a
//! crash, or from an older format) is not used, and the filter is built
//! again from the blob table. Updates are not synced to disk, like the
//! catalog itself (a sync per commit would be a visible part of an unchanged
//! backup, more while the disk flushes other writes): a killed process loses nothing, and only a
//! power cut can leave a header that claims bits which never reached the
//! disk, whose ids then look new to a backup and are stored once more
//! (space, never data). A built file is synced before it is renamed into
//! place.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of filter per id of capacity. With the capacity 1.25x the ids at
/// build time, a new filter has 10 bits per id (about 1% false
/// positives), 8 when full (about 2.5%).
const BITS_PER_ID: u64 = 8;
/// Positions set per id, all in one block.
const PROBES: u32 = 6;
/// Smallest capacity, so that small catalogs do not rebuild often.
pub const MIN_CAPACITY: u64 = 1 << 16;
const MAGIC: &[u8; 8] = b"SRIDFLT2";
/// magic, epoch, ids, capacity, blocks.
pub const HEADER_LEN: usize = 8 + 8 * 4;
/// The epoch of a file being updated: never a catalog's.
pub const DIRTY: u64 = u64::MAX;
/// Bytes per block: one cache line.
const BLOCK: usize = 64;
/// Bytes per window: the unit of inserts and of the build.
const WINDOW: usize = 64 * 1024;
const BLOCKS_PER_WINDOW: u64 = (WINDOW / BLOCK) as u64;

/// A filter file up to this size is checked from a copy of its bits in
/// memory (a 64-byte `pread` per check was 2% of a small backup's CPU,
/// in the kernel); larger ones (above about 3.3 million ids) from the
/// file, so a large catalog's filter costs no memory.
pub const IN_MEMORY_BYTES: u64 = 4 << 20;

/// Why a filter file was not used, or could not be written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter or longer than its header says.
    #[error("{0} bytes long, the header says {1}")]
    Length(u64, u64),
    /// Not a filter file (or one of another format version).
    #[error("bad magic")]
    Magic,
    /// Header fields that cannot belong together.
    #[error("inconsistent header")]
    Header,
    /// The file could not be read or written.
    #[error("{0}")]
    Io(String),
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn blocks_for(capacity: u64) -> u64 {
    (capacity.saturating_mul(BITS_PER_ID) / (BLOCK as u64 * 8)).max(1)
}

/// The block of `id` among `blocks`: its first 8 bytes as a number, most
/// significant first (the catalog's key order), scaled to the block count.
fn block_of(id: &[u8; 32], blocks: u64) -> u64 {
    let prefix = id[..8].iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    ((u128::from(prefix) * u128::from(blocks)) >> 64) as u64
}

/// Sets `id`'s probe bits in `block` (64 bytes).
fn set_bits(block: &mut [u8], id: &[u8; 32]) {
    let probes = u64_at(id, 8);
    for i in 0..PROBES {
        let bit = (probes >> (9 * i)) as usize & 511;
        block[bit >> 3] |= 1 << (bit & 7);
    }
}

fn has_bits(block: &[u8], id: &[u8; 32]) -> bool {
    let probes = u64_at(id, 8);
    (0..PROBES).all(|i| {
        let bit = (probes >> (9 * i)) as usize & 511;
        block[bit >> 3] & (1 << (bit & 7)) != 0
    })
}

/// Writes the window of blocks starting at block `at` (cut at `blocks`),
/// clears it and moves `at` to the next window.
fn write_window(out: &mut impl Write, window: &mut [u8], at: &mut u64, blocks: u64) -> Result<(), Error> {
    let n = (blocks - *at).min(BLOCKS_PER_WINDOW) as usize * BLOCK;
    out.write_all(&window[..n]).map_err(io)?;
    window.fill(0);
    *at += BLOCKS_PER_WINDOW;
    Ok(())
}

/// A filter file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The catalog's `blob_epoch` the bits cover, or [`DIRTY`].
    pub epoch: u64,
    /// Ids inserted.
    pub ids: u64,
    /// Ids it was sized for; beyond that it is rebuilt larger.
    pub capacity: u64,
    /// 64-byte blocks after the header.
    pub blocks: u64,
}

impl Header {
    /// The header of an empty filter for `capacity` ids at `epoch`.
    pub fn new(capacity: u64, epoch: u64) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        Self { epoch, ids: 0, capacity, blocks: blocks_for(capacity) }
    }

    /// Reads a header; checks that its fields belong together.
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        if b.len() < HEADER_LEN {
            return Err(Error::Length(b.len() as u64, HEADER_LEN as u64));
        }
        if &b[..8] != MAGIC {
            return Err(Error::Magic);
        }
        let h = Self { epoch: u64_at(b, 8), ids: u64_at(b, 16), capacity: u64_at(b, 24), blocks: u64_at(b, 32) };
        if h.capacity < MIN_CAPACITY || blocks_for(h.capacity) != h.blocks {
            return Err(Error::Header);
        }
        h.file_len().ok_or(Error::Header)?;
        Ok(h)
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        for (i, v) in [self.epoch, self.ids, self.capacity, self.blocks].into_iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Header plus blocks, in bytes (None if that overflows).
    pub fn file_len(&self) -> Option<u64> {
        self.blocks.checked_mul(BLOCK as u64)?.checked_add(HEADER_LEN as u64)
    }
}

/// An open filter file. Checks and inserts may run from many threads.
#[derive(Debug)]
pub struct Filter {
    file: File,
    blocks: u64,
    capacity: u64,
    ids: AtomicU64,
    epoch: AtomicU64,
}

impl Filter {
    /// The capacity for a catalog of `ids` blobs: room to grow by a quarter.
    pub fn capacity_for(ids: u64) -> u64 {
        ids.saturating_add(ids / 4).max(MIN_CAPACITY)
    }

    /// Builds the filter file at `path` (through a temporary file beside
    /// it) from `ids`, which must come in the catalog's key order, for a
    /// catalog of `n` ids at `epoch`. The file is written front to back
    /// through one 64 KiB window.
    pub fn build(
        path: &Path,
        n: u64,
        epoch: u64,
        ids: impl Iterator<Item = Result<[u8; 32], Error>>,
    ) -> Result<Self, Error> {
        let capacity = Self::capacity_for(n);
        let blocks = blocks_for(capacity);
        let tmp = path.with_extension("filter.tmp");
        let built = (|| {
            let file = crate::private::file_options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io)?;
            let mut out = std::io::BufWriter::with_capacity(WINDOW, file);
            let mut h = Header { epoch: DIRTY, ids: 0, capacity, blocks };
            out.write_all(&h.encode()).map_err(io)?;
            let mut window = vec![0u8; WINDOW];
            let mut at = 0u64; // first block of `window`
            for id in ids {
                let id = id?;
                let b = block_of(&id, blocks);
                if b < at {
                    return Err(Error::Io("ids out of key order".into()));
                }
                while b >= at + BLOCKS_PER_WINDOW {
                    write_window(&mut out, &mut window, &mut at, blocks)?;
                }
                let off = (b - at) as usize * BLOCK;
                set_bits(&mut window[off..off + BLOCK], &id);
                h.ids += 1;
            }
            while at < blocks {
                write_window(&mut out, &mut window, &mut at, blocks)?;
            }
            let file = out.into_inner().map_err(|e| io(e.into_error()))?;
            let f = Self { file, blocks, capacity, ids: AtomicU64::new(h.ids), epoch: AtomicU64::new(DIRTY) };
            f.file.sync_data().map_err(io)?;
            f.finish_update(epoch)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            Ok(f)
        })();
        if built.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        built
    }

    /// Opens the filter file at `path` for reading and updating.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0).map_err(io)?;
        let h = Header::decode(&head)?;
        let len = file.metadata().map_err(io)?.len();
        let want = h.file_len().ok_or(Error::Header)?;
        if len != want {
            return Err(Error::Length(len, want));
        }
        Ok(Self {
            file,
            blocks: h.blocks,
            capacity: h.capacity,
            ids: AtomicU64::new(h.ids),
            epoch: AtomicU64::new(h.epoch),
        })
    }

    /// The catalog's `blob_epoch` the bits cover ([`DIRTY`] while updating).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn write_header(&self, epoch: u64) -> Result<(), Error> {
        let h = Header { epoch, ids: self.ids.load(Ordering::Relaxed), capacity: self.capacity, blocks: self.blocks };
        self.file.write_all_at(&h.encode(), 0).map_err(io)?;
        self.epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Marks the file as being updated: until [`Filter::finish_update`],
    /// a crash leaves it unusable (rebuilt), never wrong.
    pub fn begin_update(&self) -> Result<(), Error> {
        self.write_header(DIRTY)
    }

    /// Records that the bits cover `epoch` (not synced: see the module
    /// documentation).
    pub fn finish_update(&self, epoch: u64) -> Result<(), Error> {
        self.write_header(epoch)
    }

    /// False only when the id was never inserted.
    pub fn may_contain(&self, id: &[u8; 32]) -> Result<bool, Error> {
        let mut block = [0u8; BLOCK];
        let at = HEADER_LEN as u64 + block_of(id, self.blocks) * BLOCK as u64;
        self.file.read_exact_at(&mut block, at).map_err(io)?;
        Ok(has_bits(&block, id))
    }

    /// A copy of the bits in memory, for a reader of the catalog as of
    /// this filter's epoch.
    pub fn load(&self) -> Result<Bits, Error> {
        let len = usize::try_from(self.blocks * BLOCK as u64).map_err(|_| Error::Header)?;
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, HEADER_LEN as u64).map_err(io)?;
        Ok(Bits { bytes, blocks: self.blocks })
    }

    /// Adds ids, sorted in the catalog's key order (any order works, but
    /// sorted ids touch each 64 KiB window once).
    pub fn insert_sorted(&self, ids: &[[u8; 32]]) -> Result<(), Error> {
        let mut window = vec![0u8; WINDOW];
        let window_of = |id: &[u8; 32]| block_of(id, self.blocks) / BLOCKS_PER_WINDOW;
        for group in ids.chunk_by(|a, b| window_of(a) == window_of(b)) {
            let first = window_of(&group[0]) * BLOCKS_PER_WINDOW;
            let n = (self.blocks - first).min(BLOCKS_PER_WINDOW) as usize * BLOCK;
            let pos = HEADER_LEN as u64 + first * BLOCK as u64;
            let buf = &mut window[..n];
            self.file.read_exact_at(buf, pos).map_err(io)?;
            for id in group {
                let off = (block_of(id, self.blocks) - first) as usize * BLOCK;
                set_bits(&mut buf[off..off + BLOCK], id);
            }
            self.file.write_all_at(buf, pos).map_err(io)?;
        }
        self.ids.fetch_add(ids.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// True once more ids went in than it was sized for.
    pub fn is_full(&self) -> bool {
        self.ids.load(Ordering::Relaxed) > self.capacity
    }

    /// Bytes of the file.
    pub fn file_bytes(&self) -> u64 {
        self.blocks * BLOCK as u64 + HEADER_LEN as u64
    }
}

/// A filter's bits, copied into memory by [`Filter::load`].
#[derive(Debug)]
pub struct Bits {
    bytes: Vec<u8>,
    blocks: u64,
}

impl Bits {
    /// False only when the id was not in the filter when it was loaded.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let at = block_of(id, self.blocks) as usize * BLOCK;
        self.bytes.get(at..at + BLOCK).is_none_or(|block| has_bits(block, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64, salt: u8) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&i.to_le_bytes());
        h.update(&[salt]);
        *h.finalize().as_bytes()
    }

    fn sorted(mut v: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
        v.sort_unstable();
        v
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.filter");
        let n = 200_000;
        let ids = sorted((0..n).map(|i| id(i, 0)).collect());
        let f = Filter::build(&path, n, 7, ids.iter().map(|i| Ok(*i))).unwrap();
        assert_eq!(f.epoch(), 7);
        assert!(ids.iter().all(|i| f.may_contain(i).unwrap()));
        let fp = (0..n).filter(|&i| f.may_contain(&id(i, 1)).unwrap()).count() as f64 / n as f64;
        // The copy in memory answers as the file does.
        let bits = f.load().unwrap();
        assert!(ids.iter().all(|i| bits.may_contain(i)));
        assert!((0..n).all(|i| bits.may_contain(&id(i, 1)) == f.may_contain(&id(i, 1)).unwrap()));
        // 10 bits per id at this fill.
        assert!(fp < 0.02, "false-positive rate {fp}");
        assert!(!f.is_full());
        // Inserts, then a reopen, keep everything.
        let more = sorted((0..5000).map(|i| id(i, 2)).collect());
        f.begin_update().unwrap();
        f.insert_sorted(&more).unwrap();
        f.finish_update(8).unwrap();
        drop(f);
        let f = Filter::open(&path).unwrap();
        assert_eq!(f.epoch(), 8);
        assert!(ids.iter().chain(&more).all(|i| f.may_contain(i).unwrap()));
        assert_eq!(f.ids.load(Ordering::Relaxed), n + 5000);
    }

    #[test]
    fn a_build_from_unsorted_ids_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.filter");
        // Ids spread over several 64 KiB windows, last first.
        let mut ids = sorted((0..100).map(|i| id(i, 0)).collect());
        ids.reverse();
        assert!(Filter::build(&path, 1_000_000, 1, ids.iter().map(|i| Ok(*i))).is_err());
        assert!(!path.exists() && !path.with_extension("filter.tmp").exists());
    }

    #[test]
    fn damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.filter");
        let f = Filter::build(&path, 10, 3, std::iter::empty()).unwrap();
        let len = f.file_bytes();
        drop(f);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let h = Header::decode(&bytes).unwrap();
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(Filter::open(&path).err(), Some(Error::Length(len - 1, len)));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(Header::decode(&magic), Err(Error::Magic));
        let mut cap = bytes.clone();
        cap[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Header::decode(&cap), Err(Error::Header));
        assert!(matches!(Header::decode(&bytes[..10]), Err(Error::Length(10, _))));
        // A file left dirty by a crash opens, with an epoch no catalog has.
        let f = Filter::build(&path, 10, 3, std::iter::empty()).unwrap();
        f.begin_update().unwrap();
        drop(f);
        assert_eq!(Filter::open(&path).unwrap().epoch(), DIRTY);
    }
}
