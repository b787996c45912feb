//! What put-only keys need in the store: the bundle a put-only key slot
//! seals, drop keyrings, and the blob-id (dedup) section of index deltas.
//!
//! - Bundle (the plaintext of a put-only key slot, never stored in clear):
//!   `"SRPO" | version u8 | chunk-id key (32) | gear table (256 × u64) |
//!   dedup key (32) | drop public key (32) | repository id lp | tenant lp |
//!   chunk min u32 | avg u32 | max u32 | pack target u32 | zstd level i32`.
//! - Drop keyring (`tenants/<t>/keyring/<generation as 8 hex digits>`):
//!   `"SRDK" | version u8 | generation u32 | ephemeral public key (32) |
//!   nonce (12) | sealed data key (32) | tag (16)`, the key sealed under the
//!   ECIES key-encryption key ([`crate::crypto::drop_wrap_kek`]) with the
//!   41 header bytes and the tenant name as associated data.
//! - Dedup section (the tail of a version 2 index delta's payload, see
//!   [`super::index`]): `nonce | sealed(blob count u32 | blob id (32)*) |
//!   tag` under the dedup key, with the index delta's magic, version and
//!   the tenant name as associated data.

use zeroize::Zeroizing;

use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::chunk::ChunkSizes;
use crate::crypto::{self, is_drop_generation, Key, PutOnlyKeys, KEY_LEN, SEAL_OVERHEAD};
use crate::id::BlobId;

const BUNDLE_MAGIC: &[u8; 4] = b"SRPO";
const BUNDLE_VERSION: u8 = 1;
const BUNDLE_WHAT: &str = "put-only key bundle";
/// Longest repository id or tenant name a bundle carries.
const MAX_NAME: usize = 256;
/// Longest bundle plaintext.
pub const MAX_BUNDLE_LEN: usize = 5 + 32 + 256 * 8 + 32 + 32 + 2 * (4 + MAX_NAME) + 20;

/// Magic of drop keyrings.
pub const DROP_MAGIC: &[u8; 4] = b"SRDK";
const DROP_VERSION: u8 = 1;
const DROP_WHAT: &str = "drop keyring";
/// Bytes of a drop keyring's header (magic, version, generation, ephemeral key).
pub const DROP_HEADER_LEN: usize = 4 + 1 + 4 + KEY_LEN;
/// Bytes of a drop keyring object.
pub const DROP_LEN: usize = DROP_HEADER_LEN + KEY_LEN + SEAL_OVERHEAD;

const DEDUP_WHAT: &str = "index delta dedup section";

/// The plaintext of a put-only key slot.
#[derive(Debug)]
pub struct Bundle {
    /// The keys.
    pub keys: PutOnlyKeys,
    /// The repository id (64 hex digits) the tenant is bound to.
    pub repository_id: String,
    /// The tenant's name.
    pub tenant: String,
    /// Chunker sizes, from the tenant's binding record.
    pub chunk_sizes: ChunkSizes,
    /// Target pack size, from the binding record.
    pub pack_target_bytes: u32,
    /// zstd level, from the binding record.
    pub compression_level: i32,
}

/// Encodes a bundle (zeroized on drop: it holds keys).
pub fn encode_bundle(b: &Bundle) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::with_capacity(MAX_BUNDLE_LEN);
    w.bytes(BUNDLE_MAGIC).u8(BUNDLE_VERSION).bytes(b.keys.chunk_id_key.expose());
    for word in b.keys.gear.iter() {
        w.u64(*word);
    }
    w.bytes(b.keys.dedup_key.expose()).bytes(&b.keys.drop_public);
    w.lp(b.repository_id.as_bytes()).lp(b.tenant.as_bytes());
    w.u32(b.chunk_sizes.min).u32(b.chunk_sizes.avg).u32(b.chunk_sizes.max);
    w.u32(b.pack_target_bytes).i64(i64::from(b.compression_level));
    Zeroizing::new(w.finish())
}

/// Decodes a bundle.
pub fn decode_bundle(bytes: &[u8]) -> Result<Bundle, Error> {
    let invalid = |why: &str| Error::Invalid { what: BUNDLE_WHAT, why: why.into() };
    let mut r = Reader::new(bytes, BUNDLE_WHAT);
    let v = r.magic(BUNDLE_MAGIC)?;
    expect_version(BUNDLE_WHAT, v, BUNDLE_VERSION)?;
    let chunk_id_key = Key::from_bytes(r.array()?);
    let mut gear = Box::new([0u64; 256]);
    for word in gear.iter_mut() {
        *word = r.u64()?;
    }
    let dedup_key = Key::from_bytes(r.array()?);
    let drop_public = r.array::<KEY_LEN>()?;
    let name = |b: &[u8], what: &str| -> Result<String, Error> {
        if b.is_empty() || b.len() > MAX_NAME {
            return Err(invalid(&format!("{what} empty or too long")));
        }
        std::str::from_utf8(b).map(str::to_string).map_err(|_| invalid(&format!("{what} is not UTF-8")))
    };
    let repository_id = name(r.lp()?, "repository id")?;
    let tenant = name(r.lp()?, "tenant name")?;
    let chunk_sizes = ChunkSizes { min: r.u32()?, avg: r.u32()?, max: r.u32()? };
    let pack_target_bytes = r.u32()?;
    let compression_level = i32::try_from(r.i64()?).map_err(|_| invalid("compression level out of range"))?;
    r.end()?;
    Ok(Bundle {
        keys: PutOnlyKeys { chunk_id_key, gear, dedup_key, drop_public },
        repository_id,
        tenant,
        chunk_sizes,
        pack_target_bytes,
        compression_level,
    })
}

/// A decoded (still sealed) drop keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropKeyring {
    /// Its generation (always a drop generation).
    pub generation: u32,
    /// The ephemeral X25519 public key.
    pub ephemeral: [u8; KEY_LEN],
    /// Nonce, sealed data key, tag.
    pub sealed: Vec<u8>,
}

fn drop_header(generation: u32, ephemeral: &[u8; KEY_LEN]) -> Vec<u8> {
    let mut w = Writer::with_capacity(DROP_HEADER_LEN);
    w.bytes(DROP_MAGIC).u8(DROP_VERSION).u32(generation).bytes(ephemeral);
    w.finish()
}

fn drop_aad(generation: u32, ephemeral: &[u8; KEY_LEN], tenant: &str) -> Vec<u8> {
    let mut a = drop_header(generation, ephemeral);
    a.extend_from_slice(tenant.as_bytes());
    a
}

/// Seals `key` (a fresh data key) to the tenant's drop public key as the
/// drop keyring of `generation`.
pub fn seal_drop_keyring(
    generation: u32,
    key: &Key,
    drop_public: &[u8; KEY_LEN],
    tenant: &str,
) -> Result<Vec<u8>, crypto::Error> {
    if !is_drop_generation(generation) {
        return Err(crypto::Error::Kdf(format!("generation {generation} is not a drop generation")));
    }
    let (kek, ephemeral) = crypto::drop_wrap_kek(drop_public)?;
    let mut out = drop_header(generation, &ephemeral);
    out.extend_from_slice(&crypto::seal(&kek, &drop_aad(generation, &ephemeral, tenant), key.expose()));
    Ok(out)
}

/// Decodes a drop keyring without opening it.
pub fn decode_drop_keyring(bytes: &[u8]) -> Result<DropKeyring, Error> {
    let mut r = Reader::new(bytes, DROP_WHAT);
    let v = r.magic(DROP_MAGIC)?;
    expect_version(DROP_WHAT, v, DROP_VERSION)?;
    let generation = r.u32()?;
    if !is_drop_generation(generation) {
        return Err(Error::Invalid {
            what: DROP_WHAT,
            why: format!("generation {generation} is not a drop generation"),
        });
    }
    let ephemeral = r.array()?;
    let sealed = r.take(KEY_LEN + SEAL_OVERHEAD)?.to_vec();
    r.end()?;
    Ok(DropKeyring { generation, ephemeral, sealed })
}

/// Re-encodes a decoded drop keyring.
pub fn encode_drop_keyring(d: &DropKeyring) -> Vec<u8> {
    let mut out = drop_header(d.generation, &d.ephemeral);
    out.extend_from_slice(&d.sealed);
    out
}

impl DropKeyring {
    /// Opens the data key with the key-encryption key
    /// ([`crate::crypto::TenantKeys::drop_unwrap_kek`]).
    pub fn open(&self, kek: &Key, tenant: &str, what: impl Fn() -> String) -> Result<Key, crypto::Error> {
        let plain = Zeroizing::new(crypto::open(
            kek,
            &drop_aad(self.generation, &self.ephemeral, tenant),
            &self.sealed,
            &what,
        )?);
        let bytes: [u8; KEY_LEN] = plain.as_slice().try_into().map_err(|_| crypto::Error::Open { what: what() })?;
        Ok(Key::from_bytes(bytes))
    }
}

/// Seals the dedup section of an index delta: the blob ids it lists.
pub fn seal_dedup(dedup_key: &Key, aad: &[u8], ids: &[BlobId]) -> Vec<u8> {
    let mut w = Writer::with_capacity(4 + ids.len() * 32);
    w.u32(ids.len() as u32);
    for id in ids {
        w.bytes(&id.0);
    }
    crypto::seal(dedup_key, aad, &w.finish())
}

/// Opens a dedup section.
pub fn open_dedup(dedup_key: &Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<BlobId>, Error> {
    let plain = crypto::open(dedup_key, aad, sealed, || DEDUP_WHAT.into())
        .map_err(|e| Error::Invalid { what: DEDUP_WHAT, why: e.to_string() })?;
    decode_dedup_ids(&plain)
}

/// Decodes an opened dedup section: `count u32 | blob id (32)*`.
pub fn decode_dedup_ids(plain: &[u8]) -> Result<Vec<BlobId>, Error> {
    let mut r = Reader::new(plain, DEDUP_WHAT);
    let n = r.count(32)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(BlobId(r.array()?));
    }
    r.end()?;
    Ok(out)
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::TenantKeys;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dedup_sections_round_trip(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..40), tenant in "[a-z]{1,12}") {
            let ids: Vec<BlobId> = ids.into_iter().map(BlobId).collect();
            let k = Key::from_bytes([5; 32]);
            let sealed = seal_dedup(&k, tenant.as_bytes(), &ids);
            prop_assert_eq!(open_dedup(&k, tenant.as_bytes(), &sealed).unwrap(), ids);
        }

        #[test]
        fn drop_keyrings_round_trip(low in 0u32..0x8000_0000, key in any::<[u8; 32]>(), tenant in "[a-z]{1,12}") {
            let full = TenantKeys::from_master(&Key::from_bytes([3; 32]));
            let generation = crypto::DROP_GENERATION_BIT | low;
            let bytes = seal_drop_keyring(generation, &Key::from_bytes(key), full.drop_public(), &tenant).unwrap();
            let d = decode_drop_keyring(&bytes).unwrap();
            prop_assert_eq!(d.generation, generation);
            prop_assert_eq!(encode_drop_keyring(&d), bytes);
            let kek = full.drop_unwrap_kek(&d.ephemeral).unwrap();
            prop_assert!(d.open(&kek, &tenant, String::new).unwrap().is(&key));
        }

        #[test]
        fn drop_keyring_decoder_round_trips_what_it_accepts(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(d) = decode_drop_keyring(&bytes) {
                prop_assert_eq!(encode_drop_keyring(&d), bytes);
            }
        }

        #[test]
        fn bundles_round_trip(
            id in "[0-9a-f]{1,64}",
            tenant in "[a-z0-9-]{1,40}",
            sizes in (1u32..1 << 20, 1u32..1 << 20, 1u32..1 << 20),
            pack in any::<u32>(),
            level in -7i32..=22,
        ) {
            let full = TenantKeys::from_master(&Key::from_bytes([3; 32]));
            let b = Bundle {
                keys: full.put_only_keys().unwrap(),
                repository_id: id,
                tenant,
                chunk_sizes: ChunkSizes { min: sizes.0, avg: sizes.1, max: sizes.2 },
                pack_target_bytes: pack,
                compression_level: level,
            };
            let bytes = encode_bundle(&b);
            let d = decode_bundle(&bytes).unwrap();
            prop_assert_eq!(&d.repository_id, &b.repository_id);
            prop_assert_eq!(&d.tenant, &b.tenant);
            prop_assert_eq!(d.chunk_sizes, b.chunk_sizes);
            let again = encode_bundle(&d);
            prop_assert_eq!(again.as_slice(), bytes.as_slice());
        }
    }

    pub(crate) fn bundle(keys: &TenantKeys) -> Bundle {
        Bundle {
            keys: keys.put_only_keys().unwrap(),
            repository_id: "ab".repeat(32),
            tenant: "acme".into(),
            chunk_sizes: ChunkSizes { min: 1, avg: 2, max: 4 },
            pack_target_bytes: 1 << 20,
            compression_level: -3,
        }
    }

    #[test]
    fn bundle_round_trips_and_truncations_fail() {
        let full = TenantKeys::from_master(&Key::from_bytes([3; 32]));
        let b = bundle(&full);
        let bytes = encode_bundle(&b);
        assert!(bytes.len() <= MAX_BUNDLE_LEN);
        let d = decode_bundle(&bytes).unwrap();
        assert_eq!(encode_bundle(&d).as_slice(), bytes.as_slice());
        let put = TenantKeys::from_put_only(&d.keys);
        assert!(put.is_put_only());
        assert_eq!(put.blob_id(b"x"), full.blob_id(b"x"));
        assert_eq!(put.gear()[..], full.gear()[..]);
        assert_eq!(put.drop_public(), full.drop_public());
        assert!(put.put_only_keys().is_none());
        for n in 0..bytes.len() {
            assert!(decode_bundle(&bytes[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn drop_keyrings_open_for_full_keys_only() {
        let full = TenantKeys::from_master(&Key::from_bytes([3; 32]));
        let other = TenantKeys::from_master(&Key::from_bytes([4; 32]));
        let put = TenantKeys::from_put_only(&full.put_only_keys().unwrap());
        let g = crypto::DROP_GENERATION_BIT | 7;
        let bytes = seal_drop_keyring(g, &Key::from_bytes([9; 32]), put.drop_public(), "acme").unwrap();
        assert_eq!(bytes.len(), DROP_LEN);
        let d = decode_drop_keyring(&bytes).unwrap();
        assert_eq!(encode_drop_keyring(&d), bytes);
        let kek = full.drop_unwrap_kek(&d.ephemeral).unwrap();
        assert!(d.open(&kek, "acme", String::new).unwrap().is(&[9; 32]));
        assert!(d.open(&kek, "other", String::new).is_err(), "bound to the tenant");
        assert!(d.open(&other.drop_unwrap_kek(&d.ephemeral).unwrap(), "acme", String::new).is_err());
        assert!(put.drop_unwrap_kek(&d.ephemeral).is_none(), "a put-only host cannot open it");
        // The generation is authenticated.
        let mut moved = bytes.clone();
        moved[8] ^= 1;
        let m = decode_drop_keyring(&moved).unwrap();
        assert!(m.open(&kek, "acme", String::new).is_err());
        assert!(seal_drop_keyring(7, &Key::random(), put.drop_public(), "acme").is_err());
        for n in 0..bytes.len() {
            assert!(decode_drop_keyring(&bytes[..n]).is_err(), "{n}");
        }
        let mut own = bytes.clone();
        own[5..9].copy_from_slice(&7u32.to_le_bytes());
        assert!(decode_drop_keyring(&own).is_err(), "own generations are not drop keyrings");
    }

    #[test]
    fn dedup_section_round_trips() {
        let k = Key::from_bytes([5; 32]);
        let ids = vec![BlobId([1; 32]), BlobId([2; 32])];
        let s = seal_dedup(&k, b"aad", &ids);
        assert_eq!(open_dedup(&k, b"aad", &s).unwrap(), ids);
        assert!(open_dedup(&k, b"other", &s).is_err());
        assert!(open_dedup(&Key::random(), b"aad", &s).is_err());
        assert!(decode_dedup_ids(&[1, 0, 0, 0]).is_err());
    }
}
