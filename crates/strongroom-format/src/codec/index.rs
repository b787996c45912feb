//! Index deltas: which blobs each new pack holds, written after the packs.
//!
//! Payload (sealed in the envelope of `sealed` with magic `SRIX`):
//! `"SRIX" | version u8 | pack count u32 | per pack: pack id (32) |
//! pack length u64 | key generation u32 | entry count u32 | entries (as in
//! pack headers)`.

use super::pack::{check_layout, decode_entry, encode_entry, PackedBlob, ENTRY_LEN};
use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::id::PackId;

const MAGIC: &[u8; 4] = b"SRIX";
const VERSION: u8 = 1;
const WHAT: &str = "index delta";

/// One pack's entries in an index delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    /// The pack.
    pub id: PackId,
    /// Its stored length in bytes.
    pub length: u64,
    /// Data-key generation that sealed it.
    pub key_generation: u32,
    /// Its blobs.
    pub blobs: Vec<PackedBlob>,
}

/// Encodes an index delta payload.
pub fn encode(packs: &[PackEntry]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| p.blobs.len()).sum();
    let mut w = Writer::with_capacity(9 + packs.len() * 48 + n * ENTRY_LEN);
    w.bytes(MAGIC).u8(VERSION).u32(packs.len() as u32);
    for p in packs {
        w.bytes(&p.id.0).u64(p.length).u32(p.key_generation).u32(p.blobs.len() as u32);
        for b in &p.blobs {
            encode_entry(&mut w, b);
        }
    }
    w.finish()
}

/// Decodes an index delta payload.
pub fn decode(bytes: &[u8]) -> Result<Vec<PackEntry>, Error> {
    let mut r = Reader::new(bytes, WHAT);
    let v = r.magic(MAGIC)?;
    expect_version(WHAT, v, VERSION)?;
    let n = r.count(48)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = PackId(r.array()?);
        let length = r.u64()?;
        let key_generation = r.u32()?;
        let m = r.count(ENTRY_LEN)?;
        let mut blobs = Vec::with_capacity(m);
        for _ in 0..m {
            blobs.push(decode_entry(&mut r, WHAT)?);
        }
        check_layout(&blobs, length, WHAT)?;
        out.push(PackEntry { id, length, key_generation, blobs });
    }
    r.end()?;
    Ok(out)
}
