//! The envelope of every sealed stand-alone object (keyring, index delta,
//! snapshot record, lock, hold, settings, rotation marker, audit entry,
//! binding record).
//!
//! Layout: `magic (4) | version u8 | key generation u32 | nonce (12) |
//! ciphertext | tag (16)`. The associated data is the 9 header bytes followed
//! by the tenant name, so an object cannot be moved to another kind, key
//! generation or tenant without failing authentication.

use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::crypto::{self, Key, SEAL_OVERHEAD};

const VERSION: u8 = 1;
/// Envelope version of index deltas with a dedup section: after the
/// 9 header bytes, `main length u32 | main sealed | dedup sealed`.
pub const INDEX_VERSION_DEDUP: u8 = 2;
/// Bytes before the sealed part.
pub const HEADER_LEN: usize = 9;

/// Magic of keyring objects.
pub const KEYRING_MAGIC: &[u8; 4] = b"SRKR";
/// Magic of index deltas.
pub const INDEX_MAGIC: &[u8; 4] = b"SRIX";
/// Magic of snapshot records.
pub const SNAPSHOT_MAGIC: &[u8; 4] = b"SRSN";
/// Magic of hold records (`tenants/<t>/holds/<snapshot id>`).
pub const HOLD_MAGIC: &[u8; 4] = b"SRHD";
/// Magic of tenant settings (`tenants/<t>/meta/settings`, metadata key).
pub const SETTINGS_MAGIC: &[u8; 4] = b"SRST";
/// Magic of the key-rotation marker (`tenants/<t>/meta/rotation`, metadata key).
pub const ROTATION_MAGIC: &[u8; 4] = b"SRRT";
/// Magic of audit entries (`tenants/<t>/audit/<seq>`, metadata key).
pub const AUDIT_MAGIC: &[u8; 4] = b"SRAU";
/// Magic of the binding record (`tenants/<t>/meta/binding`, metadata key).
pub const BINDING_MAGIC: &[u8; 4] = b"SRBD";
/// Magic of tombstones (`tenants/<t>/tombstones/<hash>`, metadata key).
pub const TOMBSTONE_MAGIC: &[u8; 4] = b"SRTB";

/// The parsed envelope header of a sealed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Key generation that sealed it (0: the keyring key).
    pub key_generation: u32,
    /// The nonce, ciphertext and tag.
    pub sealed: &'a [u8],
    /// An index delta's dedup section (nonce, ciphertext, tag under the
    /// dedup key), when it has one (envelope version 2).
    pub dedup: Option<&'a [u8]>,
    header: [u8; HEADER_LEN],
}

fn header(magic: &[u8; 4], key_generation: u32) -> [u8; HEADER_LEN] {
    header_v(magic, VERSION, key_generation)
}

fn header_v(magic: &[u8; 4], version: u8, key_generation: u32) -> [u8; HEADER_LEN] {
    let mut w = Writer::with_capacity(HEADER_LEN);
    w.bytes(magic).u8(version).u32(key_generation);
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&w.finish());
    h
}

fn aad(header: &[u8; HEADER_LEN], tenant: &str) -> Vec<u8> {
    let mut a = header.to_vec();
    a.extend_from_slice(tenant.as_bytes());
    a
}

/// Seals `payload` into a stored object.
pub fn seal(magic: &[u8; 4], key_generation: u32, key: &Key, tenant: &str, payload: &[u8]) -> Vec<u8> {
    let h = header(magic, key_generation);
    let s = crypto::seal(key, &aad(&h, tenant), payload);
    let mut out = Vec::with_capacity(HEADER_LEN + s.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&s);
    out
}

/// Seals an index delta with its dedup section (envelope version 2): the
/// payload under the data key as [`seal`] does, then the blob ids it
/// lists under the dedup key ([`super::put_only::seal_dedup`]). Both
/// parts bind the 9 header bytes and the tenant name.
pub fn seal_index(
    key_generation: u32,
    key: &Key,
    dedup_key: &Key,
    tenant: &str,
    payload: &[u8],
    ids: &[crate::id::BlobId],
) -> Vec<u8> {
    let h = header_v(INDEX_MAGIC, INDEX_VERSION_DEDUP, key_generation);
    let a = aad(&h, tenant);
    let main = crypto::seal(key, &a, payload);
    let dedup = super::put_only::seal_dedup(dedup_key, &a, ids);
    let mut w = Writer::with_capacity(HEADER_LEN + 4 + main.len() + dedup.len());
    w.bytes(&h).u32(main.len() as u32).bytes(&main).bytes(&dedup);
    w.finish()
}

/// The key generation in a sealed object's header (from its first
/// [`HEADER_LEN`] bytes or more; no key needed).
pub fn decode_generation(head: &[u8], magic: &[u8; 4], what: &'static str) -> Result<u32, Error> {
    let mut r = Reader::new(head, what);
    let v = r.magic(magic)?;
    if v != VERSION && !(magic == INDEX_MAGIC && v == INDEX_VERSION_DEDUP) {
        expect_version(what, v, VERSION)?;
    }
    r.u32()
}

/// Parses the envelope header (no key needed). Index deltas may be of
/// envelope version 2 ([`seal_index`]); every other object is version 1.
pub fn decode<'a>(bytes: &'a [u8], magic: &[u8; 4], what: &'static str) -> Result<Envelope<'a>, Error> {
    let mut r = Reader::new(bytes, what);
    let v = r.magic(magic)?;
    if magic == INDEX_MAGIC && v == INDEX_VERSION_DEDUP {
        let key_generation = r.u32()?;
        let main_len = r.u32()? as usize;
        if main_len < SEAL_OVERHEAD {
            return Err(Error::Invalid { what, why: format!("sealed part of {main_len} bytes") });
        }
        let sealed = r.take(main_len)?;
        if r.remaining() < SEAL_OVERHEAD + 4 {
            return Err(Error::Truncated {
                what,
                need: bytes.len() - r.remaining() + SEAL_OVERHEAD + 4,
                have: bytes.len(),
            });
        }
        let dedup = &bytes[bytes.len() - r.remaining()..];
        return Ok(Envelope { key_generation, sealed, dedup: Some(dedup), header: header_v(magic, v, key_generation) });
    }
    expect_version(what, v, VERSION)?;
    let key_generation = r.u32()?;
    if r.remaining() < SEAL_OVERHEAD {
        return Err(Error::Truncated { what, need: HEADER_LEN + SEAL_OVERHEAD, have: bytes.len() });
    }
    Ok(Envelope { key_generation, sealed: &bytes[HEADER_LEN..], dedup: None, header: header(magic, key_generation) })
}

impl Envelope<'_> {
    /// Opens the payload.
    pub fn open(&self, key: &Key, tenant: &str, what: impl Fn() -> String) -> Result<Vec<u8>, crypto::Error> {
        crypto::open(key, &aad(&self.header, tenant), self.sealed, what)
    }

    /// Opens an index delta's dedup section with the dedup key: the blob
    /// ids it lists. `None` for a delta without one (envelope version 1).
    pub fn open_dedup(&self, dedup_key: &Key, tenant: &str) -> Option<Result<Vec<crate::id::BlobId>, Error>> {
        let sealed = self.dedup?;
        Some(super::put_only::open_dedup(dedup_key, &aad(&self.header, tenant), sealed))
    }
}

/// Encodes a keyring payload: every data key of the tenant with its
/// generation. `"SRKR" | version u8 | count u32 | (generation u32, key 32)*`.
pub fn encode_keyring(keys: &[(u32, &Key)]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut w = Writer::with_capacity(9 + keys.len() * 36);
    w.bytes(KEYRING_MAGIC).u8(VERSION).u32(keys.len() as u32);
    for (generation, k) in keys {
        w.u32(*generation).bytes(k.expose());
    }
    zeroize::Zeroizing::new(w.finish())
}

/// Decodes a keyring payload.
pub fn decode_keyring(bytes: &[u8]) -> Result<Vec<(u32, Key)>, Error> {
    const WHAT: &str = "keyring";
    let mut r = Reader::new(bytes, WHAT);
    let v = r.magic(KEYRING_MAGIC)?;
    expect_version(WHAT, v, VERSION)?;
    let n = r.count(36)?;
    let mut out: Vec<(u32, Key)> = Vec::with_capacity(n);
    for _ in 0..n {
        let generation = r.u32()?;
        let k = Key::from_bytes(r.array()?);
        if generation == 0 || out.iter().any(|(g, _)| *g == generation) {
            return Err(Error::Invalid { what: WHAT, why: format!("bad or repeated key generation {generation}") });
        }
        out.push((generation, k));
    }
    r.end()?;
    if out.is_empty() {
        return Err(Error::Invalid { what: WHAT, why: "no data keys".into() });
    }
    Ok(out)
}
