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
    PROBE_OUT.with(|cell| {
        let mut out = cell.borrow_mut();
        out.clear();
        // A failed probe says nothing: try the real compression.
        !compress_into(sample, 1, &mut out) || out.len() < sample.len() - sample.len() / 16
    })
}

thread_local! {
    /// zstd contexts of this thread, one per level in use (the probe's and
    /// the tenant's), reused across blobs: creating a context per chunk
    /// showed in profiles.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The probe's output buffer, reused across blobs.
    static PROBE_OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// This thread's zstd decompression context (creating one per tree
    /// read showed in profiles of unchanged backups and restores).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a zstd frame of at most `capacity` bytes with this
/// thread's reused context.
fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(payload, capacity),
            None => zstd::bulk::decompress(payload, capacity),
        }
    })
}

/// Appends the zstd frame of `data` to `out` (reserving `compress_bound`
/// bytes, a no-op when the caller already did). Returns false, with `out`
/// truncated back to its old length, when compression fails.
fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let ok = COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let i = match all.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => match zstd::bulk::Compressor::new(level) {
                Ok(c) => {
                    all.push((level, c));
                    all.len() - 1
                }
                Err(_) => return false,
            },
        };
        // The cursor makes zstd write after the bytes already in `out`.
        let mut dst = std::io::Cursor::new(&mut *out);
        dst.set_position(start as u64);
        all[i].1.compress_to_buffer(data, &mut dst).is_ok()
    });
    if !ok {
        out.truncate(start);
    }
    ok
}

/// Seals a plaintext blob. Returns the stored bytes.
///
/// The stored object is built in one buffer: nonce placeholder, framing
/// header, payload (compressed straight into the buffer, or copied raw),
/// padding; it is then encrypted in place and the tag appended.
pub fn seal(key: &Key, kind: BlobKind, id: &BlobId, plaintext: &[u8], compression: Compression) -> Vec<u8> {
    let raw_padded = padme((HEADER + plaintext.len()) as u64) as usize;
    let level = match compression {
        Compression::Zstd(level) if worth_compressing(plaintext) => Some(level),
        _ => None,
    };
    // Room for whichever payload wins: a compressed payload is kept only
    // when shorter than the raw one, so its padded length is no larger.
    let room = match level {
        Some(_) => raw_padded.max(HEADER + zstd::zstd_safe::compress_bound(plaintext.len())),
        None => raw_padded,
    };
    let mut buf = crypto::seal_buffer(room);
    let start = buf.len();
    buf.push(FLAG_ZSTD);
    buf.extend_from_slice(&[0; 4]);
    let compressed = match level {
        Some(level) => {
            compress_into(plaintext, level, &mut buf)
                && buf.len() - start - HEADER < plaintext.len() - plaintext.len() / 32
        }
        None => false,
    };
    if !compressed {
        buf.truncate(start);
        buf.push(FLAG_RAW);
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(plaintext);
    }
    let payload_len = buf.len() - start - HEADER;
    buf[start + 1..start + HEADER].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf.resize(start + padme((HEADER + payload_len) as u64) as usize, 0);
    crypto::seal_in_place(key, &aad(kind, id), &mut buf);
    // The room reserved for the worst case stays allocated while the blob
    // waits in a pack; give it back (glibc shrinks in place, without a copy).
    if buf.capacity() - buf.len() > buf.len() / 16 {
        buf.shrink_to_fit();
    }
    buf
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
        FLAG_ZSTD => decompress(payload, raw_len as usize).map_err(|e| corrupt(&format!("zstd: {e}")))?,
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

    /// The framing `seal` produced before it built the object in one buffer:
    /// compress to a separate Vec, then copy into a padded framing Vec.
    fn framing_as_before(plaintext: &[u8], compression: Compression) -> Vec<u8> {
        let worth = |d: &[u8]| {
            d.len() <= PROBE_BYTES * 2 || {
                let s = &d[..PROBE_BYTES];
                zstd::bulk::compress(s, 1).map(|c| c.len() < s.len() - s.len() / 16).unwrap_or(true)
            }
        };
        let compressed = match compression {
            Compression::Zstd(level) if worth(plaintext) => {
                zstd::bulk::compress(plaintext, level).ok().filter(|c| c.len() < plaintext.len() - plaintext.len() / 32)
            }
            _ => None,
        };
        let (flag, payload) = match &compressed {
            Some(c) => (FLAG_ZSTD, &c[..]),
            None => (FLAG_RAW, plaintext),
        };
        let mut buf = vec![flag];
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(payload);
        buf.resize(padme(buf.len() as u64) as usize, 0);
        buf
    }

    #[test]
    fn seal_framing_is_unchanged() {
        let k = Key::from_bytes([4; 32]);
        let id = BlobId([1; 32]);
        let half: Vec<u8> = (0..300_000u32).map(|i| if i % 2 == 0 { (i * 7919 % 251) as u8 } else { 0 }).collect();
        let mut x = 0x1234_5678u32;
        let random: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        // Compresses a little, but below the 1/32 threshold.
        let marginal: Vec<u8> = random.iter().enumerate().map(|(i, b)| if i % 20 == 0 { 0 } else { *b }).collect();
        for data in [&[][..], &b"x"[..], &[0u8; 100][..], &half[..], &random[..], &marginal[..], &random[..1000]] {
            for compression in [Compression::Off, Compression::Zstd(1), Compression::Zstd(3)] {
                let s = seal(&k, BlobKind::Data, &id, data, compression);
                let framing = framing_as_before(data, compression);
                assert_eq!(s.len(), framing.len() + crypto::SEAL_OVERHEAD);
                assert_eq!(crypto::open(&k, &aad(BlobKind::Data, &id), &s, String::new).unwrap(), framing);
            }
        }
    }
}
