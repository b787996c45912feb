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

use crate::codec::pack::BlobKind;
use crate::crypto::{self, Key, TenantKeys};
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
    /// The blob opened (so a holder of the data key wrote it) but its
    /// framing flag is one this build does not know: a later version
    /// of strongroom wrote it with a layout added since.
    #[error("blob {id}: stored with layout {flag}, written by a newer version of strongroom (this one reads layouts 0 and 1)")]
    NewerLayout {
        /// The blob.
        id: BlobId,
        /// The flag found.
        flag: u8,
    },
}

const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;
const HEADER: usize = 5;
/// Largest plaintext blob read back (bounds allocations driven by an index).
pub const MAX_BLOB_BYTES: u32 = 128 * 1024 * 1024;
/// Bytes of the sample compressed to decide whether a chunk compresses
/// (and, with [`Adaptive`], at which level): a sixteenth of the chunk,
/// between half of this and this. Larger samples cost a noticeable part
/// of a first backup's CPU on many small files and decide no better.
const PROBE_BYTES: usize = 16 * 1024;
/// Slices the probe sample is taken in.
const PROBE_SLICES: usize = 4;
/// Chunks up to this size are compressed without a probe (the probe would
/// cost a good part of the compression it might save), at the level their
/// file's larger chunks chose. A chunk of a file cut into chunks is larger
/// unless it is the file's last.
const PROBE_ABOVE: usize = 64 * 1024;

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

/// zstd level of the adaptive alternative: `ZSTD_fast` with a minimum
/// match of 7 bytes. On text full of short repeats (a `pg_dump` of
/// pgbench tables) it stores 256 KiB chunks about 18% smaller than level
/// 3, whose 5-byte minimum match pays for many matches that save less
/// than they cost, and is faster; on source code and binaries level 3 is
/// a little smaller (docs/BENCHMARKS.md, Why the defaults).
pub const FAST_LEVEL: i32 = 1;
/// Chunks of a file whose samples are compressed at both levels first.
const TRIAL_CHUNKS: u32 = 2;
/// After the first trials, one chunk in this many is a trial again.
const TRIAL_EVERY: u32 = 16;

/// What one file's (or stream's) chunks have shown about its content:
/// sample sizes at [`FAST_LEVEL`] and at the configured level. Shared by
/// the workers that seal the file's chunks.
#[derive(Debug, Default)]
pub struct Adaptive {
    chunks: std::sync::atomic::AtomicU32,
    fast_bytes: std::sync::atomic::AtomicU64,
    level_bytes: std::sync::atomic::AtomicU64,
}

impl Adaptive {
    /// A new file: nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The level to use for a chunk whose sample compressed to
    /// `fast_sample` bytes at [`FAST_LEVEL`]; `sample` and `level` let a
    /// trial compress the sample at the configured level too.
    fn choose(&self, sample: &[u8], fast_sample: usize, level: i32) -> i32 {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.chunks.fetch_add(1, Relaxed);
        if n < TRIAL_CHUNKS || n.is_multiple_of(TRIAL_EVERY) {
            if let Some(at_level) = compressed_size(sample, level) {
                self.fast_bytes.fetch_add(fast_sample as u64, Relaxed);
                self.level_bytes.fetch_add(at_level as u64, Relaxed);
            }
        }
        self.verdict(level)
    }

    /// The level the file's trials so far point to: [`FAST_LEVEL`] only
    /// when it stored clearly less (3%), `level` before any trial (there
    /// are none when `level` is not above [`FAST_LEVEL`]).
    fn verdict(&self, level: i32) -> i32 {
        use std::sync::atomic::Ordering::Relaxed;
        let (fast, slow) = (self.fast_bytes.load(Relaxed), self.level_bytes.load(Relaxed));
        if slow > 0 && fast * 100 < slow * 97 {
            FAST_LEVEL
        } else {
            level
        }
    }
}

/// The size of `sample` compressed at `level` (into this thread's probe
/// buffer), or None if compression failed.
fn compressed_size(sample: &[u8], level: i32) -> Option<usize> {
    PROBE_OUT.with(|cell| {
        let mut out = cell.borrow_mut();
        out.clear();
        compress_into(sample, level, &mut out).then_some(out.len())
    })
}

/// The zstd level for `data`, or None when a fast probe says it does not
/// compress. Chunks above [`PROBE_ABOVE`] are probed: a sample taken in
/// slices spread over the chunk ([`probe_sample`]; a chunk that starts
/// incompressible may not stay so) is compressed at [`FAST_LEVEL`]; with
/// `adaptive`, that sample also picks between the fast level and `level`
/// for the file.
fn choose_level(data: &[u8], level: i32, adaptive: Option<&Adaptive>) -> Option<i32> {
    if data.len() <= PROBE_ABOVE {
        // Too small to probe; the file's larger chunks may have chosen.
        return Some(adaptive.map_or(level, |a| a.verdict(level)));
    }
    PROBE_IN.with(|cell| {
        let mut sample = cell.borrow_mut();
        probe_sample(data, &mut sample);
        // A failed probe says nothing: try the real compression.
        let Some(fast) = compressed_size(&sample, FAST_LEVEL) else { return Some(level) };
        if fast >= sample.len() - sample.len() / 16 {
            return None;
        }
        match adaptive {
            Some(a) if level > FAST_LEVEL => Some(a.choose(&sample, fast, level)),
            _ => Some(level),
        }
    })
}

/// Fills `sample` (cleared first) with the probe sample of `data`, a chunk
/// above [`PROBE_ABOVE`]: a sixteenth of it (between half of
/// [`PROBE_BYTES`] and all of it) in [`PROBE_SLICES`] slices, one at the
/// start of each quarter.
fn probe_sample(data: &[u8], sample: &mut Vec<u8>) {
    sample.clear();
    let slice = (data.len() / 16).clamp(PROBE_BYTES / 2, PROBE_BYTES) / PROBE_SLICES;
    for i in 0..PROBE_SLICES {
        let at = data.len() / PROBE_SLICES * i;
        sample.extend_from_slice(&data[at..(at + slice).min(data.len())]);
    }
}

thread_local! {
    /// zstd contexts of this thread, one per level in use (the probe's and
    /// the tenant's), reused across blobs: creating a context per chunk
    /// showed in profiles.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The probe's sample, gathered from its slices, reused across blobs.
    static PROBE_IN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The probe's output buffer, reused across blobs.
    static PROBE_OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// This thread's zstd decompression context (creating one per tree
    /// read showed in profiles of unchanged backups and restores).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a zstd frame of at most `capacity` bytes with this
/// thread's reused context.
/// Decompresses `payload` into `out` (cleared first), which may take at
/// most `capacity` bytes: a frame that inflates past it is an error.
fn decompress_into(payload: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    out.reserve(capacity);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(payload, out).map(|_| ()),
            None => Err(std::io::Error::other("no zstd decompressor")),
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
    seal_adaptive(key, kind, id, plaintext, compression, None)
}

/// [`seal`], with the zstd level chosen per file by `adaptive` (see
/// [`Adaptive`]). The stored format does not depend on the level.
pub fn seal_adaptive(
    key: &Key,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    compression: Compression,
    adaptive: Option<&Adaptive>,
) -> Vec<u8> {
    let raw_padded = padme((HEADER + plaintext.len()) as u64) as usize;
    let level = match compression {
        Compression::Zstd(level) => choose_level(plaintext, level, adaptive),
        Compression::Off => None,
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

/// Opens a stored blob, decompresses it and verifies it against `id`
/// (keyed BLAKE3): never returns unverified bytes. `raw_len` (from the
/// index) bounds the decompressed size.
pub fn open(
    keys: &TenantKeys,
    key: &Key,
    kind: BlobKind,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>, Error> {
    let mut bufs = OpenBuffers::default();
    open_with(keys, key, kind, id, stored, raw_len, &mut bufs)?;
    Ok(bufs.into_plain())
}

/// Buffers [`open_with`] reuses from blob to blob: a caller that opens many
/// blobs (a restore) keeps one per thread and allocates, and faults in,
/// no fresh memory per blob.
#[derive(Default)]
pub struct OpenBuffers {
    /// The decrypted frame (header + payload).
    opened: Vec<u8>,
    /// The decompressed payload.
    inflated: Vec<u8>,
    /// Where the last blob's verified plaintext is.
    plain: Plain,
}

/// Where the verified plaintext of the last [`open_with`] is.
#[derive(Default)]
enum Plain {
    /// Stored uncompressed: this range of `opened`.
    Raw(std::ops::Range<usize>),
    /// All of `inflated`.
    #[default]
    Inflated,
}

impl OpenBuffers {
    /// The last blob's plaintext, owned: moved out of its buffer.
    fn into_plain(self) -> Vec<u8> {
        match self.plain {
            Plain::Raw(range) => {
                let mut data = self.opened;
                data.truncate(range.end);
                data.drain(..range.start);
                data
            }
            Plain::Inflated => self.inflated,
        }
    }
}

/// [`open`] into reused buffers; returns the verified plaintext, which
/// lives until the next use of `bufs`.
pub fn open_with<'a>(
    keys: &TenantKeys,
    key: &Key,
    kind: BlobKind,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
    bufs: &'a mut OpenBuffers,
) -> Result<&'a [u8], Error> {
    let corrupt = |why: &str| Error::Corrupt { id: *id, why: why.to_string() };
    if raw_len > MAX_BLOB_BYTES {
        return Err(corrupt("plaintext length out of range"));
    }
    crypto::open_into(key, &aad(kind, id), stored, &mut bufs.opened, || format!("blob {id}"))?;
    let plain = &bufs.opened;
    if plain.len() < HEADER {
        return Err(corrupt("shorter than its header"));
    }
    let flag = plain[0];
    // A later layout may frame its payload differently: name it before
    // reading a length it may not have.
    if flag != FLAG_RAW && flag != FLAG_ZSTD {
        return Err(Error::NewerLayout { id: *id, flag });
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&plain[1..5]);
    let n = u32::from_le_bytes(n) as usize;
    let payload = plain.get(HEADER..HEADER + n).ok_or_else(|| corrupt("payload length exceeds blob"))?;
    let (data, at) = match flag {
        FLAG_RAW => (payload, Plain::Raw(HEADER..HEADER + n)),
        FLAG_ZSTD => {
            decompress_into(payload, raw_len as usize, &mut bufs.inflated)
                .map_err(|e| corrupt(&format!("zstd: {e}")))?;
            (bufs.inflated.as_slice(), Plain::Inflated)
        }
        _ => return Err(Error::NewerLayout { id: *id, flag }),
    };
    if data.len() != raw_len as usize {
        return Err(corrupt(&format!("length {} where the index says {raw_len}", data.len())));
    }
    if keys.blob_id(data) != *id {
        return Err(corrupt("content does not match its id"));
    }
    bufs.plain = at;
    Ok(match &bufs.plain {
        Plain::Raw(range) => &bufs.opened[range.clone()],
        Plain::Inflated => &bufs.inflated,
    })
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

    /// `len` bytes that do not compress, from a seeded xorshift.
    fn xorshift_bytes(mut x: u32, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn open_with_reused_buffers_answers_as_open_does() {
        let keys = TenantKeys::from_master(&Key::from_bytes([3; 32]));
        let k = Key::from_bytes([4; 32]);
        let random = xorshift_bytes(0x9e37_79b9, 70_000);
        let text: Vec<u8> = (0..200_000u32).map(|i| b"abcabd"[(i % 6) as usize]).collect();
        // Long then short, compressed then stored raw and back: nothing of
        // an earlier blob may show through in a later one.
        let blobs = [&text[..], &random[..], &text[..5_000], &[][..], &random[..100], &text[..]];
        let mut bufs = OpenBuffers::default();
        for data in blobs {
            let id = keys.blob_id(data);
            let s = seal(&k, BlobKind::Data, &id, data, Compression::Zstd(3));
            let got = open_with(&keys, &k, BlobKind::Data, &id, &s, data.len() as u32, &mut bufs).unwrap();
            assert_eq!(got, data);
            assert_eq!(open(&keys, &k, BlobKind::Data, &id, &s, data.len() as u32).unwrap(), data);
            // A damaged object, a wrong id or a wrong length fails and
            // leaves the buffers fit for the next blob.
            let mut bad = s.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 1;
            assert!(open_with(&keys, &k, BlobKind::Data, &id, &bad, data.len() as u32, &mut bufs).is_err());
            let other = keys.blob_id(b"other");
            assert!(open_with(&keys, &k, BlobKind::Data, &other, &s, data.len() as u32, &mut bufs).is_err());
            if !data.is_empty() {
                let short = data.len() as u32 - 1;
                assert!(open_with(&keys, &k, BlobKind::Data, &id, &s, short, &mut bufs).is_err());
            }
        }
    }

    #[test]
    fn a_layout_from_a_later_version_is_named_as_such() {
        let keys = TenantKeys::from_master(&Key::from_bytes([3; 32]));
        let k = Key::from_bytes([4; 32]);
        let data = b"a blob a later writer framed differently";
        let id = keys.blob_id(data);
        for flag in [2u8, 0xff] {
            // A length past the end: the layout is named before the length is read.
            let mut framing = vec![flag];
            framing.extend_from_slice(&(data.len() as u32 + 1000).to_le_bytes());
            framing.extend_from_slice(data);
            framing.resize(padme(framing.len() as u64) as usize, 0);
            let stored = crypto::seal(&k, &aad(BlobKind::Data, &id), &framing);
            let err = open(&keys, &k, BlobKind::Data, &id, &stored, data.len() as u32).unwrap_err();
            assert!(matches!(err, Error::NewerLayout { flag: f, .. } if f == flag), "{err}");
            assert!(err.to_string().contains("written by a newer version"), "{err}");
        }
    }

    /// The framing `seal` produced before it built the object in one buffer:
    /// compress to a separate Vec, then copy into a padded framing Vec.
    fn framing_as_before(plaintext: &[u8], compression: Compression) -> Vec<u8> {
        let worth = |d: &[u8]| {
            d.len() <= PROBE_ABOVE || {
                let mut s = Vec::new();
                probe_sample(d, &mut s);
                zstd::bulk::compress(&s, 1).map(|c| c.len() < s.len() - s.len() / 16).unwrap_or(true)
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
        let random = xorshift_bytes(0x1234_5678, 300_000);
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

    #[test]
    fn the_probe_sees_past_an_incompressible_start() {
        let k = Key::from_bytes([4; 32]);
        let keys = crate::crypto::TenantKeys::from_master(&Key::from_bytes([9; 32]));
        // 32 KiB of random bytes, then text: a prefix probe would have
        // stored the whole chunk raw.
        let mut data = xorshift_bytes(0x9e37_79b9, 32 * 1024);
        data.extend_from_slice(&dump_lines(3_000));
        assert!(data.len() > 256 * 1024);
        let id = keys.blob_id(&data);
        let sealed = seal(&k, BlobKind::Data, &id, &data, Compression::Zstd(3));
        assert!(sealed.len() < data.len() / 2, "{} of {}", sealed.len(), data.len());
        assert_eq!(open(&keys, &k, BlobKind::Data, &id, &sealed, data.len() as u32).unwrap(), data);
        // All random: still stored raw, without compressing the whole chunk.
        let random = xorshift_bytes(0x0bad_cafe, 200 * 1024);
        let id = keys.blob_id(&random);
        let sealed = seal(&k, BlobKind::Data, &id, &random, Compression::Zstd(3));
        assert_eq!(sealed.len(), padme((HEADER + random.len()) as u64) as usize + crypto::SEAL_OVERHEAD);
    }

    /// Lines shaped like a pgbench table in a `pg_dump`: short repeats
    /// everywhere, where zstd's fast level stores less than level 3.
    fn dump_lines(n: u32) -> Vec<u8> {
        let (names, domains) = (["ben", "chen", "dana", "eli", "fay"], ["mail.test", "corp.example", "shop.test"]);
        let mut out = Vec::new();
        for i in 1..n {
            let digest = blake3::hash(i.to_string().as_bytes()).to_hex();
            let line = format!(
                "{i}\t{}\t0\t{}.{}@{} {}{:35}\n",
                1 + i / 100_000,
                names[i as usize % 5],
                i * 37 % 1000,
                domains[i as usize % 3],
                &digest[..32],
                ""
            );
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    #[test]
    fn adaptive_compression_picks_the_smaller_level_per_file() {
        let k = Key::from_bytes([4; 32]);
        let keys = crate::crypto::TenantKeys::from_master(&Key::from_bytes([9; 32]));
        let data = dump_lines(20_000);
        let chunks: Vec<&[u8]> = data.chunks(256 * 1024).collect();
        assert!(chunks.len() >= 4);
        let adaptive = Adaptive::new();
        let (mut plain_total, mut adaptive_total) = (0, 0);
        for c in &chunks {
            let id = keys.blob_id(c);
            let plain = seal(&k, BlobKind::Data, &id, c, Compression::Zstd(3));
            let adapted = seal_adaptive(&k, BlobKind::Data, &id, c, Compression::Zstd(3), Some(&adaptive));
            plain_total += plain.len();
            adaptive_total += adapted.len();
            // Either level opens to the same verified bytes.
            let opened = open(&keys, &k, BlobKind::Data, &id, &adapted, c.len() as u32).unwrap();
            assert_eq!(&opened[..], *c);
        }
        assert!(adaptive_total * 100 < plain_total * 97, "adaptive {adaptive_total} vs level 3 {plain_total}");
        // A chunk too small to probe (a file's last) follows the file's
        // choice; without one it gets the configured level.
        let tail = &data[..PROBE_ABOVE / 2];
        let id = keys.blob_id(tail);
        let fast = seal(&k, BlobKind::Data, &id, tail, Compression::Zstd(FAST_LEVEL));
        let level3 = seal(&k, BlobKind::Data, &id, tail, Compression::Zstd(3));
        assert!(fast.len() < level3.len());
        let followed = seal_adaptive(&k, BlobKind::Data, &id, tail, Compression::Zstd(3), Some(&adaptive));
        assert_eq!(followed.len(), fast.len());
        let fresh = seal_adaptive(&k, BlobKind::Data, &id, tail, Compression::Zstd(3), Some(&Adaptive::new()));
        assert_eq!(fresh.len(), level3.len());
        // Compression off stays off, adaptive or not.
        let id = keys.blob_id(chunks[0]);
        let off = seal_adaptive(&k, BlobKind::Data, &id, chunks[0], Compression::Off, Some(&adaptive));
        assert_eq!(off.len(), padme((HEADER + chunks[0].len()) as u64) as usize + crypto::SEAL_OVERHEAD);
    }
}
