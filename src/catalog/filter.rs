//! The catalog's id filter: a blocked Bloom filter over every blob id in
//! the catalog, so that a backup's lookup of a new chunk (the common case
//! in a large repository) is answered in memory instead of by a B-tree
//! leaf read.
//!
//! Owns: the filter's bits, its file format (`catalog.filter` beside the
//! catalog) and its consistency stamp. Must not: ever answer "absent" for
//! an id the catalog holds. It may answer "maybe" for an absent id (about
//! 1-3% of them); the caller then asks the catalog.
//!
//! Blob ids are keyed BLAKE3 outputs, uniform and not choosable without
//! the tenant's key, so the filter takes its bit positions straight from
//! the id's bytes: bytes 0..8 choose a 64-byte block (one cache line),
//! bytes 8..16 give [`PROBES`] 9-bit positions inside it.
//!
//! The file is a cache of a cache. It records the catalog's `blob_epoch`
//! (bumped by every transaction that adds blob rows) and a BLAKE3 of its
//! bits; a file whose epoch or hash does not match is ignored and the
//! filter is built again from the catalog's blob table.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of filter per id of capacity. With the capacity 1.25x the ids at
/// build time, a new filter has 10 bits per id (about 1% false
/// positives), 8 when full (about 2.5%).
const BITS_PER_ID: u64 = 8;
/// Positions set per id, all in one block.
const PROBES: u32 = 6;
/// Smallest capacity, so that small catalogs do not rebuild often.
pub const MIN_CAPACITY: u64 = 1 << 16;
const MAGIC: &[u8; 8] = b"SRIDFLT1";
/// magic, epoch, ids, capacity, blocks, BLAKE3 of the blocks.
const HEADER_LEN: usize = 8 + 8 * 4 + 32;

/// Words per block: one cache line.
const BLOCK_WORDS: usize = 8;
/// Bytes per block.
const BLOCK: usize = BLOCK_WORDS * 8;
/// Bytes converted per step when the bits are read or written.
const IO_STEP: usize = 64 * 1024;

/// A blocked Bloom filter of blob ids. Its bits are atomic words, so the
/// catalog can add the ids of a backup's own index deltas while that
/// backup's workers query the same filter (no copy of it).
#[derive(Debug)]
pub struct Filter {
    /// The blocks, `BLOCK_WORDS` words each.
    words: Vec<AtomicU64>,
    /// Ids inserted.
    ids: AtomicU64,
    /// Ids it was sized for; beyond that it is rebuilt larger.
    capacity: u64,
    /// The catalog's `blob_epoch` this filter covers.
    epoch: AtomicU64,
}

/// Why a filter file was not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its header, or than the blocks it announces.
    #[error("truncated")]
    Truncated,
    /// Bytes after the blocks it announces.
    #[error("trailing bytes")]
    Trailing,
    /// Not a filter file.
    #[error("bad magic")]
    Magic,
    /// The bits do not hash to the recorded hash (a torn or altered file).
    #[error("bits do not match their hash")]
    Hash,
    /// Header fields that cannot belong together.
    #[error("inconsistent header")]
    Header,
    /// The file could not be read.
    #[error("{0}")]
    Io(String),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn blocks_for(capacity: u64) -> u64 {
    (capacity.saturating_mul(BITS_PER_ID) / (BLOCK as u64 * 8)).max(1)
}

/// A parsed header: what the bits that follow must be.
struct Header {
    epoch: u64,
    ids: u64,
    capacity: u64,
    words: usize,
    hash: [u8; 32],
}

fn parse_header(b: &[u8]) -> Result<Header, DecodeError> {
    if b.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if &b[..8] != MAGIC {
        return Err(DecodeError::Magic);
    }
    let (epoch, ids, capacity, n_blocks) = (u64_at(b, 8), u64_at(b, 16), u64_at(b, 24), u64_at(b, 32));
    if n_blocks == 0 || capacity < MIN_CAPACITY || blocks_for(capacity) != n_blocks {
        return Err(DecodeError::Header);
    }
    let words =
        n_blocks.checked_mul(BLOCK_WORDS as u64).and_then(|n| usize::try_from(n).ok()).ok_or(DecodeError::Header)?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&b[40..72]);
    Ok(Header { epoch, ids, capacity, words, hash })
}

fn io(e: std::io::Error) -> DecodeError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => DecodeError::Truncated,
        _ => DecodeError::Io(e.to_string()),
    }
}

impl Filter {
    /// An empty filter for `capacity` ids (at least [`MIN_CAPACITY`]).
    pub fn with_capacity(capacity: u64, epoch: u64) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        let words = blocks_for(capacity) as usize * BLOCK_WORDS;
        Self {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            ids: AtomicU64::new(0),
            capacity,
            epoch: AtomicU64::new(epoch),
        }
    }

    /// The capacity for a catalog of `ids` blobs: room to grow by a quarter.
    pub fn capacity_for(ids: u64) -> u64 {
        ids.saturating_add(ids / 4)
    }

    /// The catalog's `blob_epoch` this filter covers.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records that the filter now covers `epoch` (after the ids of the
    /// transactions up to it went in).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The block's first word and the probe bits of `id`.
    fn place(&self, id: &[u8; 32]) -> (usize, u64) {
        let blocks = (self.words.len() / BLOCK_WORDS) as u128;
        let block = ((u64_at(id, 0) as u128 * blocks) >> 64) as usize;
        (block * BLOCK_WORDS, u64_at(id, 8))
    }

    /// Adds an id.
    pub fn insert(&self, id: &[u8; 32]) {
        let (at, probes) = self.place(id);
        for i in 0..PROBES {
            let bit = (probes >> (9 * i)) as usize & 511;
            self.words[at + (bit >> 6)].fetch_or(1 << (bit & 63), Ordering::Relaxed);
        }
        self.ids.fetch_add(1, Ordering::Relaxed);
    }

    /// False only when the id was never inserted.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let (at, probes) = self.place(id);
        (0..PROBES).all(|i| {
            let bit = (probes >> (9 * i)) as usize & 511;
            self.words[at + (bit >> 6)].load(Ordering::Relaxed) & (1 << (bit & 63)) != 0
        })
    }

    /// True once more ids went in than it was sized for.
    pub fn is_full(&self) -> bool {
        self.ids.load(Ordering::Relaxed) > self.capacity
    }

    /// Bytes of bits held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn header(&self, epoch: u64, hash: &[u8; 32]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        let n_blocks = (self.words.len() / BLOCK_WORDS) as u64;
        for (i, v) in [epoch, self.ids.load(Ordering::Relaxed), self.capacity, n_blocks].into_iter().enumerate() {
            h[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        h[40..72].copy_from_slice(hash);
        h
    }

    /// Writes the file form: a placeholder header, the bits (hashed as they
    /// are written, in one pass, so that the hash matches what the file
    /// holds even if ids are added meanwhile), then the real header. The
    /// epoch recorded is the one before the pass: bits are only ever set,
    /// so the file covers at least that epoch's ids.
    pub fn write_to<W: std::io::Write + std::io::Seek>(&self, w: &mut W) -> std::io::Result<()> {
        let epoch = self.epoch();
        w.write_all(&[0u8; HEADER_LEN])?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = Vec::with_capacity(IO_STEP);
        for words in self.words.chunks(IO_STEP / 8) {
            buf.clear();
            for word in words {
                buf.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            hasher.update(&buf);
            w.write_all(&buf)?;
        }
        w.seek(std::io::SeekFrom::Start(0))?;
        w.write_all(&self.header(epoch, hasher.finalize().as_bytes()))
    }

    /// The file form in one buffer (tests, fuzzing).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::with_capacity(HEADER_LEN + self.memory_bytes()));
        // Writing into memory cannot fail.
        let _ = self.write_to(&mut out);
        out.into_inner()
    }

    /// Reads the bits that follow header `h`, hashing them as they come.
    fn read_body(h: Header, r: &mut impl std::io::Read) -> Result<Self, DecodeError> {
        let mut words = Vec::with_capacity(h.words);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; IO_STEP];
        while words.len() < h.words {
            let n = ((h.words - words.len()) * 8).min(IO_STEP);
            r.read_exact(&mut buf[..n]).map_err(io)?;
            hasher.update(&buf[..n]);
            words.extend(buf[..n].chunks_exact(8).map(|c| AtomicU64::new(u64_at(c, 0))));
        }
        if hasher.finalize().as_bytes() != &h.hash {
            return Err(DecodeError::Hash);
        }
        let mut probe = [0u8; 1];
        if r.read(&mut probe).map_err(io)? != 0 {
            return Err(DecodeError::Trailing);
        }
        Ok(Self { words, ids: AtomicU64::new(h.ids), capacity: h.capacity, epoch: AtomicU64::new(h.epoch) })
    }

    /// Reads the file form; checks the hash of the bits.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let h = parse_header(b)?;
        let mut body = &b[HEADER_LEN..];
        Self::read_body(h, &mut body)
    }

    /// Reads the file form from a file, a step at a time (no second copy
    /// of the bits); checks the hash.
    pub fn read_from(file: &mut std::fs::File) -> Result<Self, DecodeError> {
        use std::io::Read;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).map_err(io)?;
        let h = parse_header(&head)?;
        let mut r = std::io::BufReader::with_capacity(IO_STEP, file);
        Self::read_body(h, &mut r)
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.encode() == other.encode()
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

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let n = 200_000;
        let f = Filter::with_capacity(Filter::capacity_for(n), 7);
        for i in 0..n {
            f.insert(&id(i, 0));
        }
        assert!((0..n).all(|i| f.may_contain(&id(i, 0))));
        let fp = (0..n).filter(|&i| f.may_contain(&id(i, 1))).count() as f64 / n as f64;
        // 10 bits per id at this fill.
        assert!(fp < 0.02, "false-positive rate {fp}");
        assert!(!f.is_full());
        assert_eq!(f.ids.load(Ordering::Relaxed), n);
    }

    #[test]
    fn file_form_round_trips_and_damage_is_refused() {
        let f = Filter::with_capacity(1000, 3);
        for i in 0..1000 {
            f.insert(&id(i, 0));
        }
        let bytes = f.encode();
        assert_eq!(Filter::decode(&bytes).as_ref(), Ok(&f));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        f.write_to(&mut std::fs::File::create(&path).unwrap()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(Filter::read_from(&mut std::fs::File::open(&path).unwrap()).as_ref(), Ok(&f));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Filter::decode(&longer).err(), Some(DecodeError::Trailing));
        std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
        assert_eq!(Filter::read_from(&mut std::fs::File::open(&path).unwrap()), Err(DecodeError::Truncated));
        assert_eq!(Filter::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated));
        assert_eq!(Filter::decode(&bytes[..10]), Err(DecodeError::Truncated));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(Filter::decode(&flipped), Err(DecodeError::Hash));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(Filter::decode(&magic), Err(DecodeError::Magic));
        let mut cap = bytes;
        cap[24..32].copy_from_slice(&(u64::MAX).to_le_bytes());
        assert_eq!(Filter::decode(&cap), Err(DecodeError::Header));
    }
}
