//! Blobs: plaintext ⇄ the sealed bytes stored in a pack.
//!
//! Owns: compression (zstd, skipped when it does not pay), Padmé padding,
//! sealing with the blob id as associated data, and verification on read.
//! Must not: know where blobs live.
//!
//! Sealed plaintext: `flag u8 (0 raw, 1 zstd) | payload_len u32 | payload |
//! zero padding`, padded with Padmé (Nikitin et al., "Reducing Metadata
//! Leakage from Encrypted Files and Communication with PURBs", PETS 2019) so
//! the stored length reveals at most O(log log n) bits of the chunk size.
//! Associated data: `kind u8 | blob id (32)`.
//!
//! **Invariant:** [`open`] returns bytes only after they hashed to the id.

use crate::crypto::{self, Key, TenantKeys};
use crate::format::pack::BlobKind;
use crate::id::BlobId;

/// Errors reading a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed.
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
    /// The opened bytes are malformed or do not hash to the id.
    #[error("blob {id}: corrupt ({why})")]
    Corrupt {
        /// The blob.
        id: BlobId,
        /// What is wrong.
        why: String,
    },
}

const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;
const HEADER: usize = 5;
/// Largest plaintext blob read back (bounds allocations driven by an index).
pub const MAX_BLOB_BYTES: u32 = 128 * 1024 * 1024;
/// Bytes of the sample compressed to decide whether a chunk compresses.
const PROBE_BYTES: usize = 64 * 1024;

/// Padmé: rounds `len` up so that only the top bits of its magnitude remain.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - len.leading_zeros() as u64; // floor(log2 len)
    let s = 64 - e.leading_zeros() as u64; // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    (len + mask) & !mask
}

/// Compression choice for one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Never compress.
    Off,
    /// zstd at this level, unless a probe shows it does not pay.
    Zstd(i32),
}

/// Returns true when a fast probe says `data` is worth compressing.
fn worth_compressing(data: &[u8]) -> bool {
    if data.len() <= PROBE_BYTES * 2 {
        return true;
    }
    let sample = &data[..PROBE_BYTES];
    match compress(sample, 1) {
        Some(c) => c.len() < sample.len() - sample.len() / 16,
        None => true,
    }
}

thread_local! {
    /// zstd contexts of this thread, one per level in use (the probe's and
    /// the tenant's), reused across blobs: creating a context per chunk
    /// showed in profiles.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let i = match all.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                all.push((level, zstd::bulk::Compressor::new(level).ok()?));
                all.len() - 1
            }
        };
        all[i].1.compress(data).ok()
    })
}

/// Seals a plaintext blob. Returns the stored bytes.
pub fn seal(key: &Key, kind: BlobKind, id: &BlobId, plaintext: &[u8], compression: Compression) -> Vec<u8> {
    let compressed = match compression {
        Compression::Zstd(level) if worth_compressing(plaintext) => {
            compress(plaintext, level).filter(|c| c.len() < plaintext.len() - plaintext.len() / 32)
        }
        _ => None,
    };
    let (flag, payload) = match &compressed {
        Some(c) => (FLAG_ZSTD, &c[..]),
        None => (FLAG_RAW, plaintext),
    };
    let unpadded = (HEADER + payload.len()) as u64;
    let padded = padme(unpadded) as usize;
    let mut buf = Vec::with_capacity(padded);
    buf.push(flag);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    buf.resize(padded, 0);
    crypto::seal(key, &aad(kind, id), &buf)
}

fn aad(kind: BlobKind, id: &BlobId) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = kind.to_byte();
    a[1..].copy_from_slice(&id.0);
    a
}

/// Opens a stored blob, decompresses it and verifies it against `id`.
/// `raw_len` (from the index) bounds the decompressed size.
pub fn open(
    keys: &TenantKeys,
    key: &Key,
    kind: BlobKind,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>, Error> {
    let corrupt = |why: &str| Error::Corrupt { id: *id, why: why.to_string() };
    if raw_len > MAX_BLOB_BYTES {
        return Err(corrupt("plaintext length out of range"));
    }
    let plain = crypto::open(key, &aad(kind, id), stored, || format!("blob {id}"))?;
    if plain.len() < HEADER {
        return Err(corrupt("shorter than its header"));
    }
    let flag = plain[0];
    let mut n = [0u8; 4];
    n.copy_from_slice(&plain[1..5]);
    let n = u32::from_le_bytes(n) as usize;
    let payload = plain.get(HEADER..HEADER + n).ok_or_else(|| corrupt("payload length exceeds blob"))?;
    let data = match flag {
        FLAG_RAW => payload.to_vec(),
        FLAG_ZSTD => zstd::bulk::decompress(payload, raw_len as usize).map_err(|e| corrupt(&format!("zstd: {e}")))?,
        f => return Err(corrupt(&format!("unknown flag {f}"))),
    };
    if data.len() != raw_len as usize {
        return Err(corrupt(&format!("length {} where the index says {raw_len}", data.len())));
    }
    if keys.blob_id(&data) != *id {
        return Err(corrupt("content does not match its id"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_properties() {
        assert_eq!(padme(0), 0);
        assert_eq!(padme(1), 1);
        assert_eq!(padme(1_000_000) % 16384, 0);
        for l in [3u64, 17, 100, 4097, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let p = padme(l);
            assert!(p >= l && (p - l) as f64 <= l as f64 * 0.12 + 1.0, "{l} -> {p}");
        }
    }

    #[test]
    fn seal_open_roundtrip_and_verify() {
        let keys = TenantKeys::from_master(&Key::from_bytes([3; 32]));
        let k = Key::from_bytes([4; 32]);
        for data in [vec![], vec![0u8; 300_000], (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect()] {
            let id = keys.blob_id(&data);
            let s = seal(&k, BlobKind::Data, &id, &data, Compression::Zstd(3));
            assert_eq!(open(&keys, &k, BlobKind::Data, &id, &s, data.len() as u32).unwrap(), data);
            assert!(open(&keys, &k, BlobKind::Tree, &id, &s, data.len() as u32).is_err());
            let other = keys.blob_id(b"other");
            assert!(open(&keys, &k, BlobKind::Data, &other, &s, data.len() as u32).is_err());
        }
    }
}
