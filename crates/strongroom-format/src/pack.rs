//! Packs: many sealed blobs in one immutable object.
//!
//! Owns: [`PackWriter`] (collect sealed blobs, shuffle, seal the header,
//! produce the bytes and index entries) and the read side (trailer, header).
//! Must not: upload or download; it hands bytes to `repo`.

use rand::seq::SliceRandom;

use crate::codec::pack::{self as fpack, BlobKind, PackedBlob, Trailer, TRAILER_LEN};
use crate::crypto::{self, Key, TenantKeys};
use crate::id::{BlobId, PackId};

/// Errors reading a pack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Structurally wrong.
    #[error("pack {pack}: {source}")]
    Format {
        /// The pack.
        pack: String,
        /// What is wrong.
        source: crate::codec::Error,
    },
    /// The header does not authenticate.
    #[error("pack {pack}: {source}")]
    Crypto {
        /// The pack.
        pack: String,
        /// The failure.
        source: crypto::Error,
    },
    /// The keyring lacks the generation the pack was sealed with.
    #[error("pack {pack}: sealed with data key generation {generation}, which this key does not hold")]
    UnknownKey {
        /// The pack.
        pack: String,
        /// Generation.
        generation: u32,
    },
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The whole object; it starts on a 4 KiB boundary in memory, so the
    /// local backend can hand it to the disk without a copy
    /// (the direct-I/O writer of strongroom-core).
    pub bytes: bytes::Bytes,
    /// Where each blob landed.
    pub blobs: Vec<PackedBlob>,
    /// Blob kind of the pack (packs hold one kind).
    pub kind: BlobKind,
}

/// Collects sealed blobs of one kind until the pack is full.
pub struct PackWriter {
    kind: BlobKind,
    blobs: Vec<(BlobId, u32, Vec<u8>)>,
    bytes: usize,
}

impl PackWriter {
    /// An empty pack for blobs of `kind`.
    pub fn new(kind: BlobKind) -> Self {
        Self { kind, blobs: Vec::new(), bytes: 0 }
    }
    /// Adds a sealed blob with its plaintext length.
    pub fn add(&mut self, id: BlobId, raw_len: u32, sealed: Vec<u8>) {
        self.bytes += sealed.len();
        self.blobs.push((id, raw_len, sealed));
    }
    /// Stored bytes added so far.
    pub fn size(&self) -> usize {
        self.bytes
    }
    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }
    /// The kind of blobs it holds.
    pub fn kind(&self) -> BlobKind {
        self.kind
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
    /// Moves the blobs of `other` (of the same kind) into this pack.
    pub fn append(&mut self, other: PackWriter) {
        debug_assert!(other.kind == self.kind, "packs hold blobs of one kind");
        self.bytes += other.bytes;
        self.blobs.extend(other.blobs);
    }
    /// Shuffles the blobs (so their order does not reveal file order), seals
    /// the header and returns the pack.
    pub fn finish(self, key_generation: u32, key: &Key) -> FinishedPack {
        self.build(key_generation, key, None)
    }

    /// [`finish`](Self::finish), with random bytes between the last blob
    /// and the sealed header (FORMAT.md section 10) so that the pack's
    /// length is a Padmé length (`blob::padme`) of at least `min_len`. Its
    /// length then reveals its blobs' total only up to a Padmé bucket,
    /// and nothing below `min_len`: a pack that holds the one small file
    /// a backup added does not give its size.
    pub fn finish_padded(self, key_generation: u32, key: &Key, min_len: usize) -> FinishedPack {
        self.build(key_generation, key, Some(min_len))
    }

    fn build(mut self, key_generation: u32, key: &Key, min_len: Option<usize>) -> FinishedPack {
        self.blobs.shuffle(&mut rand::thread_rng());
        let header_len = 9 + self.blobs.len() * fpack::ENTRY_LEN + crypto::SEAL_OVERHEAD + TRAILER_LEN;
        let unpadded = self.bytes + header_len;
        let padded = match min_len {
            None => unpadded,
            Some(min) => (crate::blob::padme(unpadded as u64) as usize).max(min),
        };
        // Built at a 4 KiB boundary of the allocation: room for the shift.
        let mut buf = pack_buffer(PACK_ALIGN + padded);
        let start = buf.as_ptr().align_offset(PACK_ALIGN).min(PACK_ALIGN);
        buf.resize(start, 0);
        let mut entries = Vec::with_capacity(self.blobs.len());
        for (id, raw_len, sealed) in self.blobs {
            entries.push(PackedBlob {
                kind: self.kind,
                id,
                offset: (buf.len() - start) as u32,
                length: sealed.len() as u32,
                raw_len,
            });
            buf.extend_from_slice(&sealed);
        }
        let header = fpack::encode_header(&entries);
        let mut trailer = Trailer { header_len: 0, key_generation };
        let sealed = crypto::seal(key, &trailer.aad(), &header);
        trailer.header_len = sealed.len() as u32;
        let written = buf.len() - start + sealed.len() + TRAILER_LEN;
        debug_assert!(written == unpadded, "the header's length is {header_len} bytes");
        if padded > written {
            // Random, as the sealed bytes around them look: zeros would
            // show where the blobs end.
            let from = buf.len();
            buf.resize(from + padded - written, 0);
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut buf[from..]);
        }
        buf.extend_from_slice(&sealed);
        buf.extend_from_slice(&fpack::encode_trailer(&trailer));
        let bytes = bytes::Bytes::from_owner(PooledPack { buf, start });
        FinishedPack { id: PackId(crypto::object_hash(&bytes)), bytes, blobs: entries, kind: self.kind }
    }
}

/// Alignment of a finished pack's first byte in memory.
const PACK_ALIGN: usize = 4096;

/// Buffers of uploaded packs, for the next packs to reuse: a fresh 16 MiB
/// buffer per pack meant a page fault per 4 KiB (a first backup of 1 GiB
/// faulted in about 700 MB of new pages for its packs alone).
static PACK_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Buffers kept: about the uploads a backup has in flight (at most 4 x 40
/// MiB stay allocated after the last pack).
const PACK_BUFFERS_KEPT: usize = 4;
/// Larger buffers (a pack of huge blobs) are not kept.
const PACK_BUFFER_MAX: usize = 40 * 1024 * 1024;

/// An empty buffer with room for `capacity` bytes, reused when one is free.
fn pack_buffer(capacity: usize) -> Vec<u8> {
    let reused = PACK_BUFFERS.lock().ok().and_then(|mut v| v.pop());
    match reused {
        Some(mut b) => {
            b.clear();
            b.reserve(capacity);
            b
        }
        None => Vec::with_capacity(capacity),
    }
}

/// A finished pack's bytes (from `start`); the buffer goes back to
/// [`PACK_BUFFERS`] when the last reference is dropped.
struct PooledPack {
    buf: Vec<u8>,
    start: usize,
}

impl AsRef<[u8]> for PooledPack {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for PooledPack {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() > PACK_BUFFER_MAX {
            return;
        }
        if let Ok(mut v) = PACK_BUFFERS.lock() {
            if v.len() < PACK_BUFFERS_KEPT {
                v.push(buf);
            }
        }
    }
}

/// The byte range (from the end) that holds the sealed header and trailer.
pub fn tail_len(trailer: &Trailer) -> u64 {
    trailer.header_len as u64 + TRAILER_LEN as u64
}

/// Opens a pack header. `tail` must end with the pack's last byte and hold
/// at least [`tail_len`] bytes; `pack_len` is the whole object's length.
pub fn read_header(keys: &TenantKeys, pack: &PackId, tail: &[u8], pack_len: u64) -> Result<Vec<PackedBlob>, Error> {
    let name = || pack.to_hex();
    let fmt = |source| Error::Format { pack: name(), source };
    let trailer = fpack::decode_trailer(tail).map_err(fmt)?;
    let need = tail_len(&trailer);
    if need > pack_len || (tail.len() as u64) < need {
        return Err(fmt(crate::codec::Error::Truncated {
            what: "pack",
            need: need as usize,
            have: tail.len().min(pack_len as usize),
        }));
    }
    let start = tail.len() - need as usize;
    let sealed = &tail[start..tail.len() - TRAILER_LEN];
    let dk = keys
        .data_key(trailer.key_generation)
        .ok_or(Error::UnknownKey { pack: name(), generation: trailer.key_generation })?;
    let header = crypto::open(&dk.key, &trailer.aad(), sealed, || format!("pack {} header", pack.short()))
        .map_err(|source| Error::Crypto { pack: name(), source })?;
    fpack::decode_header(&header, pack_len - need).map_err(fmt)
}

/// The data-key generation named in a pack's trailer.
pub fn key_generation(pack: &PackId, tail: &[u8]) -> Result<u32, Error> {
    fpack::decode_trailer(tail)
        .map(|t| t.key_generation)
        .map_err(|source| Error::Format { pack: pack.to_hex(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{self, Compression};
    use crate::crypto::DataKey;
    use proptest::prelude::*;

    fn keys() -> TenantKeys {
        let mut k = TenantKeys::from_master(&Key::from_bytes([5; 32]));
        k.add_data_key(DataKey { generation: 1, key: Key::from_bytes([6; 32]) });
        k
    }

    /// A pack of blobs of the given lengths of random bytes, padded to `min_len`.
    fn padded_pack(lens: &[usize], min_len: usize) -> (TenantKeys, FinishedPack) {
        let keys = keys();
        let dk = keys.current_data_key().unwrap();
        let mut w = PackWriter::new(BlobKind::Data);
        for (i, &len) in lens.iter().enumerate() {
            let b: Vec<u8> = (0..len).map(|j| (j * 7 + i * 13) as u8 ^ (j >> 8) as u8).collect();
            let id = keys.blob_id(&b);
            w.add(id, b.len() as u32, blob::seal(&dk.key, BlobKind::Data, &id, &b, Compression::Off));
        }
        let p = w.finish_padded(1, &dk.key, min_len);
        (keys, p)
    }

    #[test]
    fn a_padded_pack_reads_back_and_its_length_hides_small_contents() {
        for lens in [&[10usize][..], &[5000], &[20_000, 3000]] {
            let (keys, p) = padded_pack(lens, 64 * 1024);
            assert_eq!(p.bytes.len(), 64 * 1024, "{lens:?}");
            let entries = read_header(&keys, &p.id, &p.bytes, p.bytes.len() as u64).unwrap();
            assert_eq!(entries, p.blobs);
            let dk = keys.current_data_key().unwrap();
            for e in &entries {
                let s = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
                blob::open(&keys, &dk.key, e.kind, &e.id, s, e.raw_len).unwrap();
            }
        }
        // Above the minimum: a Padmé length.
        let (_, p) = padded_pack(&[100_000, 90_000], 64 * 1024);
        let len = p.bytes.len() as u64;
        assert!(len > 190_000 && crate::blob::padme(len) == len, "{len}");
        // No minimum: a Padmé length only.
        let (_, p) = padded_pack(&[3000], 0);
        let len = p.bytes.len() as u64;
        assert!(len > 3000 && len < 3500 && crate::blob::padme(len) == len, "{len}");
    }

    proptest! {
        #[test]
        fn pack_roundtrip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..20)) {
            let keys = keys();
            let dk = keys.current_data_key().unwrap();
            let mut w = PackWriter::new(BlobKind::Data);
            for b in &blobs {
                let id = keys.blob_id(b);
                w.add(id, b.len() as u32, blob::seal(&dk.key, BlobKind::Data, &id, b, Compression::Zstd(3)));
            }
            let p = w.finish(1, &dk.key);
            prop_assert_eq!(PackId(crypto::object_hash(&p.bytes)), p.id);
            let entries = read_header(&keys, &p.id, &p.bytes, p.bytes.len() as u64).unwrap();
            prop_assert_eq!(&entries, &p.blobs);
            for e in &entries {
                let s = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
                let plain = blob::open(&keys, &dk.key, e.kind, &e.id, s, e.raw_len).unwrap();
                prop_assert_eq!(keys.blob_id(&plain), e.id);
            }
            // Any truncation of the tail fails cleanly.
            for cut in [1usize, 5, 13, 20] {
                if cut < p.bytes.len() {
                    prop_assert!(read_header(&keys, &p.id, &p.bytes[..p.bytes.len() - cut], (p.bytes.len() - cut) as u64).is_err());
                }
            }
        }
    }
}
