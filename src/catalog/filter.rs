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

/// Bytes per block: one cache line.
const BLOCK: usize = 64;

/// A blocked Bloom filter of blob ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The blocks, `BLOCK` bytes each.
    bits: Vec<u8>,
    /// Ids inserted.
    ids: u64,
    /// Ids it was sized for; beyond that it is rebuilt larger.
    capacity: u64,
    /// The catalog's `blob_epoch` this filter covers.
    pub epoch: u64,
}

/// Why a filter file was not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its header, or than the blocks it announces.
    #[error("truncated")]
    Truncated,
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
    body_len: usize,
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
    let body_len =
        n_blocks.checked_mul(BLOCK as u64).and_then(|n| usize::try_from(n).ok()).ok_or(DecodeError::Header)?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&b[40..72]);
    Ok(Header { epoch, ids, capacity, body_len, hash })
}

impl Filter {
    /// An empty filter for `capacity` ids (at least [`MIN_CAPACITY`]).
    pub fn with_capacity(capacity: u64, epoch: u64) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        Self { bits: vec![0; blocks_for(capacity) as usize * BLOCK], ids: 0, capacity, epoch }
    }

    /// The capacity for a catalog of `ids` blobs: room to grow by a quarter.
    pub fn capacity_for(ids: u64) -> u64 {
        ids.saturating_add(ids / 4)
    }

    /// The block's first byte and the probe bits of `id`.
    fn place(&self, id: &[u8; 32]) -> (usize, u64) {
        let blocks = (self.bits.len() / BLOCK) as u128;
        let block = ((u64_at(id, 0) as u128 * blocks) >> 64) as usize;
        (block * BLOCK, u64_at(id, 8))
    }

    /// Adds an id.
    pub fn insert(&mut self, id: &[u8; 32]) {
        let (at, probes) = self.place(id);
        let block = &mut self.bits[at..at + BLOCK];
        for i in 0..PROBES {
            let bit = (probes >> (9 * i)) as usize & 511;
            block[bit >> 3] |= 1 << (bit & 7);
        }
        self.ids += 1;
    }

    /// False only when the id was never inserted.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let (at, probes) = self.place(id);
        let block = &self.bits[at..at + BLOCK];
        (0..PROBES).all(|i| {
            let bit = (probes >> (9 * i)) as usize & 511;
            block[bit >> 3] & (1 << (bit & 7)) != 0
        })
    }

    /// True once more ids went in than it was sized for.
    pub fn is_full(&self) -> bool {
        self.ids > self.capacity
    }

    /// Bytes of bits held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.bits.len()
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        let n_blocks = (self.bits.len() / BLOCK) as u64;
        for (i, v) in [self.epoch, self.ids, self.capacity, n_blocks].into_iter().enumerate() {
            h[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        h[40..72].copy_from_slice(blake3::hash(&self.bits).as_bytes());
        h
    }

    /// Writes the file form (header, then the bits) without copying the bits.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.header())?;
        w.write_all(&self.bits)
    }

    /// The file form in one buffer (tests, fuzzing).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.bits.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.bits);
        out
    }

    fn from_parts(h: Header, bits: Vec<u8>) -> Result<Self, DecodeError> {
        if blake3::hash(&bits).as_bytes() != &h.hash {
            return Err(DecodeError::Hash);
        }
        Ok(Self { bits, ids: h.ids, capacity: h.capacity, epoch: h.epoch })
    }

    /// Reads the file form; checks the hash of the bits.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let h = parse_header(b)?;
        let body = &b[HEADER_LEN..];
        if body.len() != h.body_len {
            return Err(DecodeError::Truncated);
        }
        Self::from_parts(h, body.to_vec())
    }

    /// Reads the file form from a file straight into the filter's memory
    /// (no second copy of the bits); checks the hash.
    pub fn read_from(file: &mut std::fs::File) -> Result<Self, DecodeError> {
        use std::io::Read;
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => DecodeError::Truncated,
            _ => DecodeError::Io(e.to_string()),
        };
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).map_err(io)?;
        let h = parse_header(&head)?;
        let len = file.metadata().map_err(io)?.len();
        if len != (HEADER_LEN + h.body_len) as u64 {
            return Err(DecodeError::Truncated);
        }
        let mut bits = vec![0u8; h.body_len];
        file.read_exact(&mut bits).map_err(io)?;
        Self::from_parts(h, bits)
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
        let mut f = Filter::with_capacity(Filter::capacity_for(n), 7);
        for i in 0..n {
            f.insert(&id(i, 0));
        }
        assert!((0..n).all(|i| f.may_contain(&id(i, 0))));
        let fp = (0..n).filter(|&i| f.may_contain(&id(i, 1))).count() as f64 / n as f64;
        // 10 bits per id at this fill.
        assert!(fp < 0.02, "false-positive rate {fp}");
        assert!(!f.is_full());
        assert_eq!(f.ids, n);
    }

    #[test]
    fn file_form_round_trips_and_damage_is_refused() {
        let mut f = Filter::with_capacity(1000, 3);
        for i in 0..1000 {
            f.insert(&id(i, 0));
        }
        let bytes = f.encode();
        assert_eq!(Filter::decode(&bytes), Ok(f.clone()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        f.write_to(&mut std::fs::File::create(&path).unwrap()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(Filter::read_from(&mut std::fs::File::open(&path).unwrap()), Ok(f.clone()));
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
