//! Key slots: a tenant master key wrapped under a password or a key file.
//!
//! Layout (little-endian):
//! `"SRKS" | version u8 | kind u8 | created i64 | label lp | params lp | sealed`
//! where `sealed` is the 32-byte master key sealed (nonce, ciphertext, tag)
//! under the slot's key-encryption key, with every byte before it as
//! associated data, so no header field can be altered unnoticed.

use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::crypto::{self, KdfParams, Key, KEY_LEN, SALT_LEN, SEAL_OVERHEAD};

const MAGIC: &[u8; 4] = b"SRKS";
const VERSION: u8 = 1;
const WHAT: &str = "key slot";
/// Longest label accepted.
pub const MAX_LABEL: usize = 256;

/// How a slot's key-encryption key is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotKind {
    /// Argon2id over a password.
    Password {
        /// Cost parameters.
        params: KdfParams,
        /// Random salt.
        salt: [u8; SALT_LEN],
    },
    /// BLAKE3 derive_key over the bytes of a key file.
    KeyFile,
    /// Sealed to an operator's X25519 escrow public key (ECIES: the
    /// key-encryption key comes from an ephemeral X25519 exchange).
    Escrow {
        /// The ephemeral public key of this slot.
        ephemeral: [u8; KEY_LEN],
        /// The escrow public key it is sealed to.
        recipient: [u8; KEY_LEN],
    },
    /// A put-only key: it seals a put-only bundle
    /// ([`super::put_only::Bundle`]), not the master key, under a password
    /// (`Some`: Argon2id parameters and salt) or a key file (`None`).
    PutOnly {
        /// Argon2id parameters and salt of a password, or `None` for a key file.
        password: Option<(KdfParams, [u8; SALT_LEN])>,
    },
}

impl SlotKind {
    /// Short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            SlotKind::Password { .. } => "password",
            SlotKind::KeyFile => "key-file",
            SlotKind::Escrow { .. } => "escrow",
            SlotKind::PutOnly { .. } => "put-only",
        }
    }
}

/// A decoded (still wrapped) key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// How to unwrap it.
    pub kind: SlotKind,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Free-form label ("default", "laptop", ...).
    pub label: String,
    /// The sealed master key.
    pub sealed: Vec<u8>,
}

const KEYFILE_CONTEXT: &str = "strongroom 2026-11-25 key-file kek v1";

fn header(kind: &SlotKind, created: i64, label: &str) -> Writer {
    let mut w = Writer::with_capacity(128);
    w.bytes(MAGIC).u8(VERSION);
    match kind {
        SlotKind::Password { params, salt } => {
            let mut p = Writer::new();
            p.u32(params.memory_kib).u32(params.iterations).u32(params.parallelism).bytes(salt);
            w.u8(1).i64(created).lp(label.as_bytes()).lp(&p.finish());
        }
        SlotKind::KeyFile => {
            w.u8(2).i64(created).lp(label.as_bytes()).lp(&[]);
        }
        SlotKind::Escrow { ephemeral, recipient } => {
            let mut p = Writer::new();
            p.bytes(ephemeral).bytes(recipient);
            w.u8(3).i64(created).lp(label.as_bytes()).lp(&p.finish());
        }
        SlotKind::PutOnly { password } => {
            let mut p = Writer::new();
            match password {
                Some((params, salt)) => {
                    p.u8(1).u32(params.memory_kib).u32(params.iterations).u32(params.parallelism).bytes(salt);
                }
                None => {
                    p.u8(2);
                }
            }
            w.u8(4).i64(created).lp(label.as_bytes()).lp(&p.finish());
        }
    }
    w
}

/// The key-encryption key for a slot, from a password, key-file bytes, or
/// (escrow slots) the 32 bytes of the escrow secret.
pub fn kek(kind: &SlotKind, secret: &[u8]) -> Result<Key, crypto::Error> {
    match kind {
        SlotKind::Password { params, salt } => crypto::password_kek(secret, salt, *params),
        SlotKind::KeyFile | SlotKind::PutOnly { password: None } => {
            Ok(Key::from_bytes(blake3::derive_key(KEYFILE_CONTEXT, secret)))
        }
        SlotKind::PutOnly { password: Some((params, salt)) } => crypto::password_kek(secret, salt, *params),
        SlotKind::Escrow { ephemeral, recipient } => {
            let bytes: [u8; KEY_LEN] =
                secret.try_into().map_err(|_| crypto::Error::Open { what: "escrow slot".into() })?;
            Ok(crypto::escrow_unwrap_kek(&crypto::EscrowSecret::from_bytes(bytes), ephemeral, recipient))
        }
    }
}

fn wrap_with(master: &Key, kind: &SlotKind, created: i64, label: &str, kek: &Key) -> Vec<u8> {
    let mut out = header(kind, created, label).finish();
    let sealed = crypto::seal(kek, &out, master.expose());
    out.extend_from_slice(&sealed);
    out
}

/// Wraps `master` into a new password or key-file slot.
pub fn wrap(master: &Key, kind: SlotKind, created: i64, label: &str, secret: &[u8]) -> Result<Vec<u8>, crypto::Error> {
    if matches!(kind, SlotKind::Escrow { .. } | SlotKind::PutOnly { .. }) {
        return Err(crypto::Error::Kdf("escrow and put-only slots are made with their own wrap".into()));
    }
    let kek = kek(&kind, secret)?;
    Ok(wrap_with(master, &kind, created, label, &kek))
}

/// Wraps `master` into a new escrow slot sealed to `recipient`.
pub fn wrap_escrow(master: &Key, recipient: &[u8; KEY_LEN], created: i64) -> Result<Vec<u8>, crypto::Error> {
    let (kek, ephemeral) = crypto::escrow_wrap_kek(recipient)?;
    let kind = SlotKind::Escrow { ephemeral, recipient: *recipient };
    Ok(wrap_with(master, &kind, created, "escrow", &kek))
}

/// Wraps a put-only bundle into a new put-only slot (`kind` must be
/// [`SlotKind::PutOnly`]).
pub fn wrap_put_only(
    bundle: &super::put_only::Bundle,
    kind: SlotKind,
    created: i64,
    label: &str,
    secret: &[u8],
) -> Result<Vec<u8>, crypto::Error> {
    if !matches!(kind, SlotKind::PutOnly { .. }) {
        return Err(crypto::Error::Kdf("not a put-only slot kind".into()));
    }
    let kek = kek(&kind, secret)?;
    let mut out = header(&kind, created, label).finish();
    let plain = super::put_only::encode_bundle(bundle);
    let sealed = crypto::seal(&kek, &out, &plain);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Unwraps a put-only slot's bundle with a password or key-file bytes.
pub fn unwrap_put_only(slot: &KeySlot, secret: &[u8]) -> Result<super::put_only::Bundle, crypto::Error> {
    if !matches!(slot.kind, SlotKind::PutOnly { .. }) {
        return Err(crypto::Error::Open { what: "key slot".into() });
    }
    let kek = kek(&slot.kind, secret)?;
    let head = header(&slot.kind, slot.created, &slot.label).finish();
    let plain = zeroize::Zeroizing::new(crypto::open(&kek, &head, &slot.sealed, || "key slot".to_string())?);
    // Authenticated, so a bundle that does not decode was written wrong:
    // the same error as a wrong key, never a partial bundle.
    super::put_only::decode_bundle(&plain).map_err(|_| crypto::Error::Open { what: "key slot".into() })
}

/// Decodes a slot without unwrapping it.
pub fn decode(bytes: &[u8]) -> Result<KeySlot, Error> {
    let mut r = Reader::new(bytes, WHAT);
    let v = r.magic(MAGIC)?;
    expect_version(WHAT, v, VERSION)?;
    let kind_byte = r.u8()?;
    let created = r.i64()?;
    let label = r.lp()?;
    if label.len() > MAX_LABEL {
        return Err(Error::Invalid { what: WHAT, why: "label too long".into() });
    }
    let label = std::str::from_utf8(label)
        .map_err(|_| Error::Invalid { what: WHAT, why: "label is not UTF-8".into() })?
        .to_string();
    let params = r.lp()?;
    let kind = match kind_byte {
        1 => {
            let mut p = Reader::new(params, WHAT);
            let params = KdfParams { memory_kib: p.u32()?, iterations: p.u32()?, parallelism: p.u32()? };
            let salt = p.array::<SALT_LEN>()?;
            p.end()?;
            // Refused here, before anyone can run Argon2id on them: a forged
            // slot must not cost a reader gigabytes or minutes.
            params.check_bounds().map_err(|e| Error::Invalid { what: WHAT, why: e.to_string() })?;
            SlotKind::Password { params, salt }
        }
        2 if params.is_empty() => SlotKind::KeyFile,
        3 => {
            let mut p = Reader::new(params, WHAT);
            let ephemeral = p.array::<KEY_LEN>()?;
            let recipient = p.array::<KEY_LEN>()?;
            p.end()?;
            SlotKind::Escrow { ephemeral, recipient }
        }
        4 => {
            let mut p = Reader::new(params, WHAT);
            let password = match p.u8()? {
                1 => {
                    let params = KdfParams { memory_kib: p.u32()?, iterations: p.u32()?, parallelism: p.u32()? };
                    let salt = p.array::<SALT_LEN>()?;
                    params.check_bounds().map_err(|e| Error::Invalid { what: WHAT, why: e.to_string() })?;
                    Some((params, salt))
                }
                2 => None,
                k => return Err(Error::Invalid { what: WHAT, why: format!("unknown put-only secret kind {k}") }),
            };
            p.end()?;
            SlotKind::PutOnly { password }
        }
        k => return Err(Error::Invalid { what: WHAT, why: format!("unknown slot kind {k}") }),
    };
    let sealed_len = match kind {
        SlotKind::PutOnly { .. } => {
            let n = r.remaining();
            if n > super::put_only::MAX_BUNDLE_LEN + SEAL_OVERHEAD {
                return Err(Error::Invalid { what: WHAT, why: "put-only bundle too long".into() });
            }
            n.max(SEAL_OVERHEAD + 1)
        }
        _ => KEY_LEN + SEAL_OVERHEAD,
    };
    let sealed = r.take(sealed_len)?.to_vec();
    r.end()?;
    Ok(KeySlot { kind, created, label, sealed })
}

/// Re-encodes a decoded slot (the inverse of [`decode`]).
pub fn encode(slot: &KeySlot) -> Vec<u8> {
    let mut w = header(&slot.kind, slot.created, &slot.label);
    w.bytes(&slot.sealed);
    w.finish()
}

/// Unwraps the master key with a password or key-file bytes.
pub fn unwrap(slot: &KeySlot, secret: &[u8]) -> Result<Key, crypto::Error> {
    let kek = kek(&slot.kind, secret)?;
    let head = header(&slot.kind, slot.created, &slot.label).finish();
    let plain = zeroize::Zeroizing::new(crypto::open(&kek, &head, &slot.sealed, || "key slot".to_string())?);
    let mut k = [0u8; KEY_LEN];
    if plain.len() != KEY_LEN {
        return Err(crypto::Error::Open { what: "key slot".into() });
    }
    k.copy_from_slice(&plain);
    Ok(Key::from_bytes(k))
}

/// Magic of a key handoff (never stored: it crosses a pipe from the agent
/// to one of its own children).
const HANDOFF_MAGIC: &[u8; 4] = b"SRKH";
const HANDOFF_VERSION: u8 = 1;
const HANDOFF_WHAT: &str = "key handoff";
/// Longest slot name a handoff carries.
pub const MAX_HANDOFF_SLOT: usize = 64;
/// Longest handoff: a reader reads one byte more to see extra bytes.
pub const MAX_HANDOFF_LEN: usize = 4 + 1 + KEY_LEN + 1 + MAX_HANDOFF_SLOT;

/// Encodes an unwrapped master key and the name of the slot it came from
/// for a child process: `"SRKH" | version u8 | master key (32) | slot
/// name length u8 | slot name`. Plain key bytes: the caller writes them
/// only to a pipe into its own child, and they are zeroized on drop.
pub fn encode_handoff(master: &Key, slot: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let invalid = |why: &str| Error::Invalid { what: HANDOFF_WHAT, why: why.into() };
    let name_len = u8::try_from(slot.len()).map_err(|_| invalid("slot name too long"))?;
    if slot.is_empty() || slot.len() > MAX_HANDOFF_SLOT {
        return Err(invalid("slot name empty or too long"));
    }
    // Sized up front: no reallocation leaves a copy of the key behind.
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(MAX_HANDOFF_LEN));
    out.extend_from_slice(HANDOFF_MAGIC);
    out.push(HANDOFF_VERSION);
    out.extend_from_slice(master.expose());
    out.push(name_len);
    out.extend_from_slice(slot.as_bytes());
    Ok(out)
}

/// Decodes [`encode_handoff`]'s bytes, exactly: truncated input, extra
/// bytes, another magic or version, or an empty, long or non-ASCII slot
/// name are errors.
pub fn decode_handoff(bytes: &[u8]) -> Result<(Key, String), Error> {
    let invalid = |why: &str| Error::Invalid { what: HANDOFF_WHAT, why: why.into() };
    let mut r = Reader::new(bytes, HANDOFF_WHAT);
    let v = r.magic(HANDOFF_MAGIC)?;
    expect_version(HANDOFF_WHAT, v, HANDOFF_VERSION)?;
    let mut key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(r.take(KEY_LEN)?);
    let n = usize::from(r.u8()?);
    let name = r.take(n)?;
    r.end()?;
    if n == 0 || n > MAX_HANDOFF_SLOT || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("bad slot name"));
    }
    let name = String::from_utf8_lossy(name).into_owned();
    Ok((Key::from_bytes(*key), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> SlotKind {
        SlotKind::Password { params: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, salt: [7; 16] }
    }

    #[test]
    fn wrap_unwrap() {
        let m = Key::from_bytes([9; 32]);
        let b = wrap(&m, cheap(), 5, "default", b"pw").unwrap();
        let s = decode(&b).unwrap();
        assert_eq!(encode(&s), b);
        assert_eq!(unwrap(&s, b"pw").unwrap().expose(), m.expose());
        assert!(unwrap(&s, b"wrong").is_err());
        // Altering the label breaks authentication.
        let mut s2 = s.clone();
        s2.label = "other".into();
        assert!(unwrap(&s2, b"pw").is_err());
        let esc = crypto::EscrowSecret::random();
        let e = decode(&wrap_escrow(&m, &esc.public(), 5).unwrap()).unwrap();
        assert_eq!(unwrap(&e, &esc.to_bytes()[..]).unwrap().expose(), m.expose());
        assert!(unwrap(&e, &crypto::EscrowSecret::random().to_bytes()[..]).is_err());
        assert!(unwrap(&e, b"short").is_err());
        let kf = wrap(&m, SlotKind::KeyFile, 5, "file", &[1; 64]).unwrap();
        assert_eq!(unwrap(&decode(&kf).unwrap(), &[1; 64]).unwrap().expose(), m.expose());
    }

    #[test]
    fn argon2_params_above_the_caps_are_refused_at_decode() {
        let m = Key::from_bytes([9; 32]);
        let ok = SlotKind::Password {
            params: KdfParams {
                memory_kib: crypto::MAX_KDF_MEMORY_KIB,
                iterations: crypto::MAX_KDF_PASSES,
                parallelism: crypto::MAX_KDF_LANES,
            },
            salt: [1; 16],
        };
        let slot = KeySlot { kind: ok, created: 0, label: "x".into(), sealed: vec![0; KEY_LEN + SEAL_OVERHEAD] };
        assert!(decode(&encode(&slot)).is_ok());
        for params in [
            KdfParams { memory_kib: 4 * 1024 * 1024, iterations: 1, parallelism: 1 },
            KdfParams { memory_kib: 1024, iterations: 100, parallelism: 1 },
            KdfParams { memory_kib: 1024, iterations: 1, parallelism: 64 },
        ] {
            let s = KeySlot { kind: SlotKind::Password { params, salt: [1; 16] }, ..slot.clone() };
            let e = decode(&encode(&s)).unwrap_err().to_string();
            assert!(e.contains("exceeds the limit"), "{e}");
        }
        // The writer refuses them too (through the key derivation).
        let huge = SlotKind::Password {
            params: KdfParams { memory_kib: u32::MAX, iterations: 1, parallelism: 1 },
            salt: [1; 16],
        };
        assert!(wrap(&m, huge, 0, "x", b"pw").is_err());
    }

    #[test]
    fn put_only_slots_open_only_their_bundle() {
        let full = crypto::TenantKeys::from_master(&Key::from_bytes([9; 32]));
        let bundle = super::super::put_only::Bundle {
            keys: full.put_only_keys().unwrap(),
            repository_id: "cd".repeat(32),
            tenant: "acme".into(),
            chunk_sizes: crate::chunk::ChunkSizes::default(),
            pack_target_bytes: 1 << 24,
            compression_level: 3,
        };
        for kind in [
            SlotKind::PutOnly { password: None },
            SlotKind::PutOnly {
                password: Some((KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, [3; 16])),
            },
        ] {
            let b = wrap_put_only(&bundle, kind.clone(), 5, "host", &[1; 32]).unwrap();
            let s = decode(&b).unwrap();
            assert_eq!(s.kind, kind);
            assert_eq!(encode(&s), b);
            let opened = unwrap_put_only(&s, &[1; 32]).unwrap();
            assert_eq!(opened.repository_id, bundle.repository_id);
            assert!(unwrap_put_only(&s, &[2; 32]).is_err());
            // It never yields a master key.
            assert!(unwrap(&s, &[1; 32]).is_err());
            for n in 0..b.len() {
                assert!(decode(&b[..n]).map(|s| unwrap_put_only(&s, &[1; 32])).map_or(true, |r| r.is_err()), "{n}");
            }
        }
        assert!(wrap(&Key::from_bytes([1; 32]), SlotKind::PutOnly { password: None }, 0, "x", &[1; 32]).is_err());
    }

    #[test]
    fn truncations_fail() {
        let b = wrap(&Key::from_bytes([9; 32]), cheap(), 5, "default", b"pw").unwrap();
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err());
        }
    }

    #[test]
    fn handoff_round_trips_and_refuses_anything_else() {
        let m = Key::from_bytes([9; 32]);
        let b = encode_handoff(&m, "0123abcd").unwrap();
        let (k, slot) = decode_handoff(&b).unwrap();
        assert!(k.is(&[9; 32]));
        assert_eq!(slot, "0123abcd");
        assert!(decode_handoff(&b[..b.len() - 1]).is_err(), "short");
        assert!(decode_handoff(&b[..20]).is_err(), "short key");
        let mut long = b.to_vec();
        long.push(b'x');
        assert!(decode_handoff(&long).is_err(), "extra bytes");
        let mut other = b.to_vec();
        other[4] = 2;
        assert!(decode_handoff(&other).is_err(), "version");
        assert!(decode_handoff(&[]).is_err());
        assert!(encode_handoff(&m, "").is_err());
        assert!(encode_handoff(&m, &"a".repeat(MAX_HANDOFF_SLOT + 1)).is_err());
    }
}
