//! Pack header and trailer.
//!
//! A pack is `blob_1 || ... || blob_n || sealed header || trailer`, where
//! the trailer is the last 13 bytes:
//! `header_len u32 | key generation u32 | version u8 | "SRPK"`.
//! The header (sealed with the data key of that generation; associated data:
//! the last 9 trailer bytes) lists each blob's kind, id, offset, stored length
//! and plaintext length. Blobs themselves are described in `blob`.

use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::crypto::SEAL_OVERHEAD;
use crate::id::BlobId;

const MAGIC: &[u8; 4] = b"SRPK";
const HEADER_MAGIC: &[u8; 4] = b"SRPH";
const VERSION: u8 = 1;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 13;
/// Bytes of one header entry.
pub const ENTRY_LEN: usize = 45;
/// Largest pack accepted (offsets are u32).
pub const MAX_PACK_BYTES: u64 = u32::MAX as u64;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    /// File content.
    Data,
    /// An encoded directory tree.
    Tree,
}

impl BlobKind {
    /// The byte stored for this kind.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
    /// Parses the stored byte.
    pub fn from_byte(b: u8, what: &'static str) -> Result<Self, Error> {
        match b {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            _ => Err(Error::Invalid { what, why: format!("unknown blob kind {b}") }),
        }
    }
}

/// Where one blob sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedBlob {
    /// Data or tree.
    pub kind: BlobKind,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Stored (sealed, padded) length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// The parsed trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Length of the sealed header just before the trailer.
    pub header_len: u32,
    /// Data-key generation of the header and every blob.
    pub key_generation: u32,
}

impl Trailer {
    /// Associated data for the header seal.
    pub fn aad(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(9);
        w.u32(self.key_generation).u8(VERSION).bytes(MAGIC);
        w.finish()
    }
}

/// Encodes a trailer.
pub fn encode_trailer(t: &Trailer) -> Vec<u8> {
    let mut w = Writer::with_capacity(TRAILER_LEN);
    w.u32(t.header_len).u32(t.key_generation).u8(VERSION).bytes(MAGIC);
    w.finish()
}

/// Decodes the trailer from the last bytes of a pack.
pub fn decode_trailer(tail: &[u8]) -> Result<Trailer, Error> {
    const WHAT: &str = "pack trailer";
    if tail.len() < TRAILER_LEN {
        return Err(Error::Truncated { what: WHAT, need: TRAILER_LEN, have: tail.len() });
    }
    let t = &tail[tail.len() - TRAILER_LEN..];
    let mut r = Reader::new(t, WHAT);
    let header_len = r.u32()?;
    let key_generation = r.u32()?;
    let v = r.u8()?;
    if r.take(4)? != MAGIC {
        return Err(Error::BadMagic { what: WHAT });
    }
    expect_version(WHAT, v, VERSION)?;
    if (header_len as usize) < SEAL_OVERHEAD {
        return Err(Error::Invalid { what: WHAT, why: format!("header length {header_len} too small") });
    }
    Ok(Trailer { header_len, key_generation })
}

/// Encodes the (plaintext) header.
pub fn encode_header(entries: &[PackedBlob]) -> Vec<u8> {
    let mut w = Writer::with_capacity(9 + entries.len() * ENTRY_LEN);
    w.bytes(HEADER_MAGIC).u8(VERSION).u32(entries.len() as u32);
    for e in entries {
        encode_entry(&mut w, e);
    }
    w.finish()
}

pub(crate) fn encode_entry(w: &mut Writer, e: &PackedBlob) {
    w.u8(e.kind.to_byte()).bytes(&e.id.0).u32(e.offset).u32(e.length).u32(e.raw_len);
}

pub(crate) fn decode_entry(r: &mut Reader<'_>, what: &'static str) -> Result<PackedBlob, Error> {
    let kind = BlobKind::from_byte(r.u8()?, what)?;
    let id = BlobId(r.array()?);
    let offset = r.u32()?;
    let length = r.u32()?;
    let raw_len = r.u32()?;
    if (length as usize) < SEAL_OVERHEAD {
        return Err(Error::Invalid { what, why: format!("blob {} length {length} too small", id.short()) });
    }
    Ok(PackedBlob { kind, id, offset, length, raw_len })
}

/// Checks that entries lie inside `body_len` bytes without overlapping.
pub(crate) fn check_layout(entries: &[PackedBlob], body_len: u64, what: &'static str) -> Result<(), Error> {
    let mut spans: Vec<(u64, u64)> =
        entries.iter().map(|e| (e.offset as u64, e.offset as u64 + e.length as u64)).collect();
    spans.sort_unstable();
    let mut prev_end = 0;
    for (start, end) in spans {
        if start < prev_end || end > body_len {
            return Err(Error::Invalid {
                what,
                why: format!("blob span {start}..{end} overlaps or exceeds {body_len} bytes"),
            });
        }
        prev_end = end;
    }
    Ok(())
}

/// Decodes a plaintext header; `body_len` is the pack length before the
/// header, which every entry must fit in.
pub fn decode_header(bytes: &[u8], body_len: u64) -> Result<Vec<PackedBlob>, Error> {
    const WHAT: &str = "pack header";
    let mut r = Reader::new(bytes, WHAT);
    let v = r.magic(HEADER_MAGIC)?;
    expect_version(WHAT, v, VERSION)?;
    let n = r.count(ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_entry(&mut r, WHAT)?);
    }
    r.end()?;
    check_layout(&out, body_len, WHAT)?;
    Ok(out)
}
