//! Key cache entries: a tenant's unwrapped master key, kept on one host
//! for a while so that password-opened commands skip the Argon2id
//! derivation (`--key-cache`). Never stored in a repository: a 0600 file
//! in the user's runtime or cache directory.
//!
//! Layout (little-endian):
//! `"SRKC" | version u8 | created i64 | expires i64 | slot name length u8 |
//! slot name | salt (32) | sealed lp`
//! where `sealed` is a key handoff (the master key and the slot name, as
//! [`super::keyslot::encode_handoff`] writes it) sealed with AES-256-GCM-SIV
//! under `BLAKE3 derive_key("strongroom key cache v1", salt | host lp |
//! secret)`, with the store location, the tenant and every byte before
//! `sealed` as associated data. So an entry opens only with the same
//! password on the same host, for the same store and tenant, and no
//! header field (the expiry above all) can be altered unnoticed.

use zeroize::Zeroizing;

use super::keyslot::{decode_handoff, encode_handoff, MAX_HANDOFF_LEN, MAX_HANDOFF_SLOT};
use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::crypto::{self, Key, KEY_LEN, NONCE_LEN, SEAL_OVERHEAD};

const MAGIC: &[u8; 4] = b"SRKC";
const VERSION: u8 = 1;
const WHAT: &str = "key cache entry";
/// BLAKE3 `derive_key` context of an entry's sealing key.
const KEY_CONTEXT: &str = "strongroom key cache v1";
/// Bytes of an entry's random salt.
pub const SALT_LEN: usize = 32;
/// Longest sealed part of an entry: a sealed handoff.
pub const MAX_SEALED_LEN: usize = MAX_HANDOFF_LEN + SEAL_OVERHEAD;
/// Longest entry: a reader reads one byte more to see extra bytes.
pub const MAX_LEN: usize = 4 + 1 + 8 + 8 + 1 + MAX_HANDOFF_SLOT + SALT_LEN + 4 + MAX_SEALED_LEN;

/// A decoded entry. Its header (times, slot name) can be read without the
/// secret (`key-cache list`); the key needs [`open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the entry was written, Unix seconds.
    pub created: i64,
    /// When it stops opening, Unix seconds.
    pub expires: i64,
    /// The key slot whose secret the entry stands for.
    pub slot: String,
    /// Random salt of the sealing key.
    pub salt: [u8; SALT_LEN],
    /// The sealed handoff: nonce, ciphertext, tag.
    pub sealed: Vec<u8>,
}

/// Where an entry belongs: what its associated data binds besides its
/// own header.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The host: machine id and host name, as the caller reads them.
    pub host: &'a [u8],
    /// The store's location.
    pub location: &'a str,
    /// The tenant's name.
    pub tenant: &'a str,
}

/// Seals `master` (opened through slot `slot` with `secret`) into a new
/// entry valid from `created` until `expires`, with a fresh salt and nonce.
pub fn seal(
    master: &Key,
    slot: &str,
    created: i64,
    expires: i64,
    secret: &[u8],
    at: Binding<'_>,
) -> Result<Vec<u8>, Error> {
    seal_with(master, slot, (created, expires), secret, at, crypto::random_bytes(), &crypto::random_bytes())
}

/// [`seal`] with a caller-chosen salt and nonce: for test vectors only.
pub fn seal_with(
    master: &Key,
    slot: &str,
    (created, expires): (i64, i64),
    secret: &[u8],
    at: Binding<'_>,
    salt: [u8; SALT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
    let handoff = encode_handoff(master, slot)?;
    let mut entry = Entry { created, expires, slot: slot.to_string(), salt, sealed: Vec::new() };
    let key = sealing_key(&salt, secret, at.host);
    entry.sealed = crypto::seal_with_nonce(&key, nonce, &aad(&entry, at), &handoff);
    Ok(encode(&entry))
}

/// Opens `entry` with `secret` where it belongs: the master key and the
/// slot name. A wrong secret, another host, store or tenant, or any
/// altered byte gives `crypto::Error::Open`.
pub fn open(entry: &Entry, secret: &[u8], at: Binding<'_>) -> Result<(Key, String), crypto::Error> {
    let key = sealing_key(&entry.salt, secret, at.host);
    let fail = || crypto::Error::Open { what: WHAT.into() };
    let plain = Zeroizing::new(crypto::open(&key, &aad(entry, at), &entry.sealed, || WHAT.into())?);
    let (master, slot) = decode_handoff(&plain).map_err(|_| fail())?;
    if slot != entry.slot {
        return Err(fail());
    }
    Ok((master, slot))
}

/// Encodes an entry.
pub fn encode(e: &Entry) -> Vec<u8> {
    let mut w = header(e);
    w.lp(&e.sealed);
    w.finish()
}

/// Decodes an entry, exactly: truncated input, extra bytes, another magic
/// or version, an empty, long or non-ASCII slot name, or a sealed part of
/// the wrong size are errors.
pub fn decode(bytes: &[u8]) -> Result<Entry, Error> {
    let invalid = |why: &str| Error::Invalid { what: WHAT, why: why.into() };
    let mut r = Reader::new(bytes, WHAT);
    let v = r.magic(MAGIC)?;
    expect_version(WHAT, v, VERSION)?;
    let created = r.i64()?;
    let expires = r.i64()?;
    let n = usize::from(r.u8()?);
    let name = r.take(n)?;
    if n == 0 || n > MAX_HANDOFF_SLOT || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("bad slot name"));
    }
    let salt = r.array()?;
    let sealed = r.lp()?;
    r.end()?;
    if sealed.len() < SEAL_OVERHEAD + 4 + 1 + KEY_LEN + 1 + n || sealed.len() > MAX_SEALED_LEN {
        return Err(invalid("sealed key of the wrong size"));
    }
    let slot = String::from_utf8_lossy(name).into_owned();
    Ok(Entry { created, expires, slot, salt, sealed: sealed.to_vec() })
}

/// Everything before the sealed part.
fn header(e: &Entry) -> Writer {
    let mut w = Writer::with_capacity(MAX_LEN);
    w.bytes(MAGIC).u8(VERSION).i64(e.created).i64(e.expires);
    // The slot name is checked by the handoff encoder and the decoder.
    w.u8(u8::try_from(e.slot.len()).unwrap_or(u8::MAX)).bytes(e.slot.as_bytes());
    w.bytes(&e.salt);
    w
}

/// Associated data: the context, where the entry belongs, its header.
fn aad(e: &Entry, at: Binding<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(KEY_CONTEXT.as_bytes()).lp(at.location.as_bytes()).lp(at.tenant.as_bytes());
    w.bytes(&header(e).finish());
    w.finish()
}

/// The sealing key: one BLAKE3 call over the salt, the host and the
/// secret (length-prefixed, so no two inputs run together).
fn sealing_key(salt: &[u8; SALT_LEN], secret: &[u8], host: &[u8]) -> Key {
    let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    h.update(salt);
    h.update(&(host.len() as u64).to_le_bytes()).update(host);
    h.update(&(secret.len() as u64).to_le_bytes()).update(secret);
    Key::from_bytes(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Binding<'static> = Binding { host: b"machine\0host", location: "file:///r", tenant: "default" };

    #[test]
    fn entry_round_trips_and_opens_only_where_it_belongs() {
        let m = Key::from_bytes([9; 32]);
        let slot = "0123456789abcdef0123456789abcdef";
        let b = seal(&m, slot, 100, 200, b"pw", AT).unwrap();
        assert!(b.len() <= MAX_LEN);
        let e = decode(&b).unwrap();
        assert_eq!(encode(&e), b);
        assert_eq!((e.created, e.expires, e.slot.as_str()), (100, 200, slot));
        let (k, s) = open(&e, b"pw", AT).unwrap();
        assert_eq!((k.expose(), s.as_str()), (m.expose(), slot));
        assert!(open(&e, b"pw2", AT).is_err(), "password");
        assert!(open(&e, b"pw", Binding { host: b"other", ..AT }).is_err(), "host");
        assert!(open(&e, b"pw", Binding { location: "file:///s", ..AT }).is_err(), "store");
        assert!(open(&e, b"pw", Binding { tenant: "other", ..AT }).is_err(), "tenant");
        let later = Entry { expires: 300, ..e.clone() };
        assert!(open(&later, b"pw", AT).is_err(), "expiry is authenticated");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            if let Ok(d) = decode(&bad) {
                assert!(open(&d, b"pw", AT).is_err(), "byte {i} flipped still opens");
            }
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
        assert!(decode(&[b.as_slice(), &[0]].concat()).is_err());
        assert!(decode(&[]).is_err());
    }
}
