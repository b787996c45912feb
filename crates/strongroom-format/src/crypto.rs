//! The key hierarchy and every cryptographic primitive strongroom uses.
//!
//! Owns: the tenant master key and the keys derived from it (BLAKE3
//! `derive_key`), keyed-BLAKE3 blob ids, the keyed FastCDC gear table,
//! AES-256-GCM-SIV `seal`/`open`, Argon2id password wrapping.
//! Must not: do I/O, log, or hand key bytes to anything outside this module.
//!
//! **Invariant:** key types are neither `Clone` nor `Copy` nor printable; their
//! bytes are zeroized on drop.

use aes_gcm_siv::aead::inout::InOutBuf;
use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::id::BlobId;

/// Key-derivation context for the chunk-id key (BLAKE3 `derive_key` format:
/// application, date, purpose). Never change it: ids would change.
const CHUNK_ID_CONTEXT: &str = "strongroom 2026-11-25 chunk-id key v1";
/// Context for the FastCDC gear table (256 u64 words from the XOF).
const GEAR_CONTEXT: &str = "strongroom 2026-11-25 fastcdc gear table v1";
/// Context for the key that seals the tenant's keyring objects.
const KEYRING_CONTEXT: &str = "strongroom 2026-11-25 keyring key v1";
/// Context for the key that seals tenant metadata: audit entries, settings,
/// the key-rotation marker, the binding record.
const META_CONTEXT: &str = "strongroom 2026-11-25 tenant metadata key v1";
/// Context for the key that names a host's memory of a tenant (audit head,
/// binding revision) in its cache directory: a name nobody can choose or
/// move without the master key, unlike the repository id in `config`.
const HOST_MEMORY_CONTEXT: &str = "strongroom 2026-12-07 host memory name v1";
/// Context for the dedup key: it opens the blob-id section of index deltas
/// (what a put-only host needs to deduplicate), nothing else.
const DEDUP_CONTEXT: &str = "strongroom 2026-12-08 dedup key v1";
/// Context for the tenant's drop secret (X25519): put-only backups seal
/// their data keys to its public half; only a full key derives the secret.
const DROP_SECRET_CONTEXT: &str = "strongroom 2026-12-08 drop secret v1";
/// Context for the key-encryption key of a drop keyring (ECIES, as escrow
/// slots): BLAKE3 `derive_key` over `shared || ephemeral || recipient`.
const DROP_KEK_CONTEXT: &str = "strongroom 2026-12-08 drop keyring kek v1";
/// Context for the name of a put-only host's memory of a tenant (derived
/// from the dedup key: a put-only host has no master key).
const PUT_ONLY_MEMORY_CONTEXT: &str = "strongroom 2026-12-08 put-only host memory name v1";

/// The bit set in every drop generation: the data-key generations that
/// put-only backups make for themselves ([`is_drop_generation`]). The
/// tenant's own generations count up from 1 and never reach it.
pub const DROP_GENERATION_BIT: u32 = 0x8000_0000;

/// Whether an object sealed with `generation` is older than the tenant's
/// own generation `target` for key rotation: below it, or a drop
/// generation (drop generations are re-sealed by every rewrite, which
/// retires them).
pub fn sealed_before(generation: u32, target: u32) -> bool {
    generation < target || is_drop_generation(generation)
}

/// Whether `generation` is a drop generation: a data key a put-only host
/// made and sealed to the tenant's drop public key. Full-key holders open
/// objects sealed with one, and never seal with one.
pub fn is_drop_generation(generation: u32) -> bool {
    generation & DROP_GENERATION_BIT != 0
}

/// Bytes of an AES-GCM-SIV nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM-SIV tag.
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of every symmetric key.
pub const KEY_LEN: usize = 32;
/// Bytes of an Argon2id salt.
pub const SALT_LEN: usize = 16;

/// Cryptographic failures. A wrong key and tampered bytes are the same error
/// on purpose: the caller cannot (and must not) tell them apart.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed: wrong key, or the bytes were altered.
    #[error("{what}: authentication failed (wrong key or damaged data)")]
    Open {
        /// What was being opened.
        what: String,
    },
    /// The sealed bytes are too short to hold a nonce and tag.
    #[error("{what}: sealed data truncated ({len} bytes)")]
    Truncated {
        /// What was being opened.
        what: String,
        /// Its length.
        len: usize,
    },
    /// Argon2 parameters are out of range.
    #[error("invalid key-derivation parameters: {0}")]
    Kdf(String),
}

/// Most Argon2id memory a reader accepts from a key slot (1 GiB, in KiB):
/// a hostile slot must not make opening a tenant exhaust a small machine.
pub const MAX_KDF_MEMORY_KIB: u32 = 1024 * 1024;
/// Most Argon2id passes a reader accepts from a key slot.
pub const MAX_KDF_PASSES: u32 = 10;
/// Most Argon2id lanes a reader accepts from a key slot (strongroom
/// writes 1; more only multiplies the threads a hostile slot asks for).
pub const MAX_KDF_LANES: u32 = 16;
/// Least Argon2id memory a writer uses for a new password slot: OWASP's
/// minimum for Argon2id, 19 MiB (with 2 passes).
pub const MIN_KDF_MEMORY_KIB: u32 = 19 * 1024;

/// A 256-bit symmetric key, zeroized on drop, printed as `Key(..)`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A fresh random key from the OS generator.
    pub fn random() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }
    /// Builds a key from bytes (decoded key slots, test vectors).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
    /// Exposes the bytes to the format layer, which wraps them for storage.
    /// Kept crate-private: nothing outside this crate sees key bytes.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    /// Whether the key is these bytes, compared in constant time (for test
    /// vectors and fuzz checks, which must not see the key itself).
    pub fn is(&self, bytes: &[u8; KEY_LEN]) -> bool {
        self.0.iter().zip(bytes).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
    /// An explicit duplicate, for the few places that must own a copy.
    pub fn duplicate(&self) -> Self {
        Self(self.0)
    }
}

/// A data key with its generation number. Generations grow by one on each
/// rotation; sealed objects name the generation they were sealed with.
#[derive(Debug)]
pub struct DataKey {
    /// Generation (1 for the first key of a tenant).
    pub generation: u32,
    /// The key.
    pub key: Key,
}

/// All keys of one tenant, derived from (or unlocked by) its master key,
/// or the few a put-only key slot holds ([`TenantKeys::from_put_only`]).
pub struct TenantKeys {
    master: Key,
    meta_key: Key,
    chunk_id_key: Key,
    gear: Box<[u64; 256]>,
    keyring_key: Key,
    dedup_key: Key,
    drop_public: [u8; KEY_LEN],
    put_only: bool,
    data_keys: Vec<DataKey>,
}

/// What a put-only key slot holds: enough to cut, name and deduplicate
/// chunks and to seal new data keys to the tenant, nothing that opens a
/// stored pack, tree, snapshot record, index entry or audit entry.
pub struct PutOnlyKeys {
    /// The chunk-id key (blob ids equal the tenant's own).
    pub chunk_id_key: Key,
    /// The FastCDC gear table (chunk boundaries equal the tenant's own).
    pub gear: Box<[u64; 256]>,
    /// The dedup key: opens the blob-id section of index deltas.
    pub dedup_key: Key,
    /// The tenant's drop public key (X25519).
    pub drop_public: [u8; KEY_LEN],
}

impl std::fmt::Debug for PutOnlyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PutOnlyKeys(..)")
    }
}

impl Drop for PutOnlyKeys {
    fn drop(&mut self) {
        self.gear.zeroize();
    }
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantKeys(..)")
    }
}

impl Drop for TenantKeys {
    fn drop(&mut self) {
        self.gear.zeroize();
    }
}

impl TenantKeys {
    /// Derives the stable keys from the master key. Data keys come from the
    /// keyring and are added with [`TenantKeys::add_data_key`].
    pub fn from_master(master: &Key) -> Self {
        let chunk_id_key = Key(blake3::derive_key(CHUNK_ID_CONTEXT, master.expose()));
        let keyring_key = Key(blake3::derive_key(KEYRING_CONTEXT, master.expose()));
        let mut hasher = blake3::Hasher::new_derive_key(GEAR_CONTEXT);
        hasher.update(master.expose());
        let mut xof = hasher.finalize_xof();
        let mut raw = Zeroizing::new([0u8; 256 * 8]);
        xof.fill(&mut raw[..]);
        let mut gear = Box::new([0u64; 256]);
        for (i, w) in raw.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            gear[i] = u64::from_le_bytes(b);
        }
        let drop_public = *x25519_dalek::PublicKey::from(&drop_secret(master)).as_bytes();
        Self {
            master: master.duplicate(),
            meta_key: derive(META_CONTEXT, master),
            chunk_id_key,
            gear,
            keyring_key,
            dedup_key: derive(DEDUP_CONTEXT, master),
            drop_public,
            put_only: false,
            data_keys: Vec::new(),
        }
    }

    /// The keys of a put-only host. It has no master, metadata or keyring
    /// key: those fields hold fresh random keys that nobody knows, so that
    /// nothing stored opens under them and nothing sealed with them opens
    /// for anyone (put-only writers seal with their drop generation, see
    /// [`TenantKeys::is_put_only`]).
    pub fn from_put_only(bundle: &PutOnlyKeys) -> Self {
        Self {
            master: Key::random(),
            meta_key: Key::random(),
            chunk_id_key: bundle.chunk_id_key.duplicate(),
            gear: bundle.gear.clone(),
            keyring_key: Key::random(),
            dedup_key: bundle.dedup_key.duplicate(),
            drop_public: bundle.drop_public,
            put_only: true,
            data_keys: Vec::new(),
        }
    }

    /// What a put-only key slot of this tenant holds (full keys only).
    pub fn put_only_keys(&self) -> Option<PutOnlyKeys> {
        if self.put_only {
            return None;
        }
        Some(PutOnlyKeys {
            chunk_id_key: self.chunk_id_key.duplicate(),
            gear: self.gear.clone(),
            dedup_key: self.dedup_key.duplicate(),
            drop_public: self.drop_public,
        })
    }

    /// Whether these are a put-only host's keys.
    pub fn is_put_only(&self) -> bool {
        self.put_only
    }

    /// The dedup key (opens the blob-id section of index deltas).
    pub fn dedup_key(&self) -> &Key {
        &self.dedup_key
    }

    /// The tenant's drop public key.
    pub fn drop_public(&self) -> &[u8; KEY_LEN] {
        &self.drop_public
    }

    /// The key-encryption key of a drop keyring with ephemeral public key
    /// `ephemeral`: full keys only (the drop secret derives from the
    /// master key). `None` for a put-only host.
    pub fn drop_unwrap_kek(&self, ephemeral: &[u8; KEY_LEN]) -> Option<Key> {
        if self.put_only {
            return None;
        }
        let secret = drop_secret(&self.master);
        Some(ecies_unwrap_kek(DROP_KEK_CONTEXT, &secret, ephemeral, &self.drop_public))
    }

    /// Adds a data key (from the decrypted keyring, or a drop keyring).
    pub fn add_data_key(&mut self, dk: DataKey) {
        self.data_keys.retain(|k| k.generation != dk.generation);
        self.data_keys.push(dk);
        self.data_keys.sort_by_key(|k| k.generation);
    }

    /// The data key every new write seals with: for full keys the newest
    /// of the tenant's own generations, never a drop generation (anyone
    /// who can write to the store can plant a drop keyring whose key it
    /// knows); for a put-only host its own drop generation.
    pub fn current_data_key(&self) -> Option<&DataKey> {
        if self.put_only {
            return self.data_keys.iter().rev().find(|k| is_drop_generation(k.generation));
        }
        self.data_keys.iter().rev().find(|k| !is_drop_generation(k.generation))
    }

    /// The data key of a generation, if the keyring holds it.
    pub fn data_key(&self, generation: u32) -> Option<&DataKey> {
        self.data_keys.iter().find(|k| k.generation == generation)
    }

    /// All data keys, oldest first.
    pub fn data_keys(&self) -> &[DataKey] {
        &self.data_keys
    }

    /// The master key, for wrapping it into new key slots and escrow
    /// records; its bytes stay inside this crate's wrapping functions.
    pub fn master(&self) -> &Key {
        &self.master
    }

    /// The key that seals tenant metadata (audit log, settings, binding).
    pub fn meta_key(&self) -> &Key {
        &self.meta_key
    }

    /// The name of this host's memory of the tenant in the repository at
    /// `location` (32 hex digits): keyed BLAKE3 of the location under a
    /// key derived from the master key. Nothing in the store can change
    /// it, and it reveals nothing of the key.
    pub fn host_memory_name(&self, location: &str) -> String {
        let k = if self.put_only {
            Zeroizing::new(blake3::derive_key(PUT_ONLY_MEMORY_CONTEXT, self.dedup_key.expose()))
        } else {
            Zeroizing::new(blake3::derive_key(HOST_MEMORY_CONTEXT, self.master.expose()))
        };
        hex::encode(&blake3::keyed_hash(&k, location.as_bytes()).as_bytes()[..16])
    }

    /// Removes data keys older than `generation` (after a rewrite retired
    /// them); drop generations count as older than every own generation.
    pub fn retain_from(&mut self, generation: u32) {
        self.data_keys.retain(|k| k.generation >= generation && !is_drop_generation(k.generation));
    }

    /// The key that seals keyring objects.
    pub fn keyring_key(&self) -> &Key {
        &self.keyring_key
    }

    /// The keyed gear table for FastCDC.
    pub fn gear(&self) -> &[u64; 256] {
        &self.gear
    }

    /// Keyed BLAKE3 id of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(self.chunk_id_key.expose(), plaintext).as_bytes())
    }
}

/// Seals `plaintext` under `key` with a fresh random nonce, binding `aad`.
/// Output: `nonce (12) || ciphertext || tag (16)`.
pub fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buf = seal_buffer(plaintext.len());
    buf.extend_from_slice(plaintext);
    seal_in_place(key, aad, &mut buf);
    buf
}

/// Seals with a caller-chosen nonce: for test vectors only. GCM-SIV is
/// misuse-resistant, so a repeated nonce leaks only equality of messages.
pub fn seal_with_nonce(key: &Key, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buf = seal_buffer(plaintext.len());
    buf.extend_from_slice(plaintext);
    seal_in_place_with_nonce(key, nonce, aad, &mut buf);
    buf
}

/// An empty buffer for [`seal_in_place`]: `NONCE_LEN` placeholder bytes,
/// with capacity for `plaintext_capacity` more bytes and the tag, so that
/// appending that much plaintext and sealing never reallocates.
pub fn seal_buffer(plaintext_capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plaintext_capacity + SEAL_OVERHEAD);
    buf.resize(NONCE_LEN, 0);
    buf
}

/// Seals in place, without copying the plaintext. On entry `buf` is
/// `placeholder (NONCE_LEN) || plaintext` (see [`seal_buffer`]); on return it
/// holds exactly what [`seal`] returns for that plaintext: a fresh random
/// nonce, the ciphertext and the tag.
///
/// # Panics
/// If `buf` is shorter than `NONCE_LEN`.
pub fn seal_in_place(key: &Key, aad: &[u8], buf: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    seal_in_place_with_nonce(key, &nonce, aad, buf);
}

fn seal_in_place_with_nonce(key: &Key, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut Vec<u8>) {
    assert!(buf.len() >= NONCE_LEN, "seal_in_place: buffer lacks room for the nonce");
    let cipher = Aes256GcmSiv::new(key.expose().into());
    buf[..NONCE_LEN].copy_from_slice(nonce);
    // Encryption cannot fail for in-memory buffers below 2^36 bytes; our
    // largest sealed object is a pack header far below that.
    match cipher.encrypt_inout_detached(&Nonce::from(*nonce), aad, (&mut buf[NONCE_LEN..]).into()) {
        Ok(tag) => buf.extend_from_slice(&tag),
        Err(_) => unreachable!("AES-GCM-SIV encryption of an in-memory buffer failed"),
    }
}

/// Opens what [`seal`] produced. `what` names the object for the error.
pub fn open(key: &Key, aad: &[u8], sealed: &[u8], what: impl Fn() -> String) -> Result<Vec<u8>, Error> {
    let mut plain = Vec::new();
    open_into(key, aad, sealed, &mut plain, what)?;
    Ok(plain)
}

/// [`open`] into `plain`, whose capacity is reused: a caller opening many
/// objects allocates no fresh memory for each. The ciphertext is decrypted
/// from `sealed` straight into `plain` (no copy of it first); what `plain`
/// held before is overwritten, never read. On an error `plain` is empty:
/// it holds nothing that was not authenticated.
pub fn open_into(
    key: &Key,
    aad: &[u8],
    sealed: &[u8],
    plain: &mut Vec<u8>,
    what: impl Fn() -> String,
) -> Result<(), Error> {
    if sealed.len() < SEAL_OVERHEAD {
        plain.clear();
        return Err(Error::Truncated { what: what(), len: sealed.len() });
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    // Shortens without writing; lengthens with zeros only past the old end.
    plain.resize(ct.len(), 0);
    let cipher = Aes256GcmSiv::new(key.expose().into());
    let opened = match (<&Nonce>::try_from(nonce), <&Tag>::try_from(tag), InOutBuf::new(ct, plain)) {
        (Ok(nonce), Ok(tag), Ok(buf)) => cipher.decrypt_inout_detached(nonce, aad, buf, tag).is_ok(),
        _ => false,
    };
    if !opened {
        plain.clear();
        return Err(Error::Open { what: what() });
    }
    Ok(())
}

/// Argon2id cost parameters, stored with each password slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Refuses parameters above what a reader accepts
    /// ([`MAX_KDF_MEMORY_KIB`], [`MAX_KDF_PASSES`], [`MAX_KDF_LANES`]),
    /// before any Argon2id work.
    pub fn check_bounds(&self) -> Result<(), Error> {
        if self.memory_kib > MAX_KDF_MEMORY_KIB || self.iterations > MAX_KDF_PASSES || self.parallelism > MAX_KDF_LANES
        {
            return Err(Error::Kdf(format!(
                "Argon2id memory {} KiB, {} passes, {} lanes exceeds the limit ({MAX_KDF_MEMORY_KIB} KiB, \
                 {MAX_KDF_PASSES} passes, {MAX_KDF_LANES} lanes)",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.15 s on the reference machine,
    /// above OWASP's minimum for Argon2id (19 MiB, 2 passes).
    fn default() -> Self {
        Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

/// Derives the key-encryption key for a password slot.
pub fn password_kek(password: &[u8], salt: &[u8; SALT_LEN], params: KdfParams) -> Result<Key, Error> {
    // Bounds guard against hostile slots asking for gigabytes of memory
    // (the slot decoder refuses them already; this is the last line).
    params.check_bounds()?;
    let p = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(KEY_LEN))
        .map_err(|e| Error::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; KEY_LEN];
    argon.hash_password_into(password, salt, &mut out).map_err(|e| Error::Kdf(e.to_string()))?;
    Ok(Key(out))
}

/// Context for the key-encryption key of an escrow slot: BLAKE3
/// `derive_key` over `shared secret || ephemeral public || recipient public`.
const ESCROW_CONTEXT: &str = "strongroom 2026-11-25 escrow slot kek v1";

/// An operator's escrow secret (X25519), zeroized on drop.
pub struct EscrowSecret(x25519_dalek::StaticSecret);

impl std::fmt::Debug for EscrowSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EscrowSecret(..)")
    }
}

impl EscrowSecret {
    /// A fresh random escrow secret.
    pub fn random() -> Self {
        Self(x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng))
    }
    /// From its 32 bytes (an escrow secret file).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }
    /// The bytes, for writing the secret file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }
    /// The public key slots are sealed to.
    pub fn public(&self) -> [u8; KEY_LEN] {
        *x25519_dalek::PublicKey::from(&self.0).as_bytes()
    }
}

fn ecies_kek(context: &str, shared: &x25519_dalek::SharedSecret, ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Key {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(shared.as_bytes()).update(ephemeral).update(recipient);
    Key(*h.finalize().as_bytes())
}

/// ECIES over X25519 under a key-derivation `context`: a fresh ephemeral
/// key, the key-encryption key and the ephemeral public key to store
/// beside what it wraps. Fails on a low-order recipient key.
fn ecies_wrap_kek(context: &str, recipient: &[u8; KEY_LEN], what: &str) -> Result<(Key, [u8; KEY_LEN]), Error> {
    let eph = x25519_dalek::EphemeralSecret::random_from_rng(rand::rngs::OsRng);
    let eph_pub = *x25519_dalek::PublicKey::from(&eph).as_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*recipient));
    if !shared.was_contributory() {
        return Err(Error::Kdf(format!("{what} is a low-order point")));
    }
    Ok((ecies_kek(context, &shared, &eph_pub, recipient), eph_pub))
}

fn ecies_unwrap_kek(
    context: &str,
    secret: &x25519_dalek::StaticSecret,
    ephemeral: &[u8; KEY_LEN],
    recipient: &[u8; KEY_LEN],
) -> Key {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*ephemeral));
    ecies_kek(context, &shared, ephemeral, recipient)
}

/// The tenant's drop secret, derived from the master key.
fn drop_secret(master: &Key) -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from(blake3::derive_key(DROP_SECRET_CONTEXT, master.expose()))
}

/// A key-encryption key sealed to `recipient` (ECIES over X25519): returns
/// the key and the ephemeral public key to store beside the wrapped key.
/// Fails on a low-order recipient key (no shared secret would result).
pub fn escrow_wrap_kek(recipient: &[u8; KEY_LEN]) -> Result<(Key, [u8; KEY_LEN]), Error> {
    ecies_wrap_kek(ESCROW_CONTEXT, recipient, "escrow public key")
}

/// The key-encryption key of an escrow slot, from the escrow secret.
pub fn escrow_unwrap_kek(secret: &EscrowSecret, ephemeral: &[u8; KEY_LEN], recipient: &[u8; KEY_LEN]) -> Key {
    ecies_unwrap_kek(ESCROW_CONTEXT, &secret.0, ephemeral, recipient)
}

/// A key-encryption key for a drop keyring sealed to the tenant's drop
/// public key `recipient`, and the ephemeral public key to store with it.
pub fn drop_wrap_kek(recipient: &[u8; KEY_LEN]) -> Result<(Key, [u8; KEY_LEN]), Error> {
    ecies_wrap_kek(DROP_KEK_CONTEXT, recipient, "drop public key")
}

/// [`drop_wrap_kek`] with a caller-chosen ephemeral secret: for test
/// vectors only (a repeated ephemeral key makes one key-encryption key
/// for two keyrings).
pub fn drop_wrap_kek_with(
    ephemeral_secret: [u8; KEY_LEN],
    recipient: &[u8; KEY_LEN],
) -> Result<(Key, [u8; KEY_LEN]), Error> {
    let eph = x25519_dalek::StaticSecret::from(ephemeral_secret);
    let eph_pub = *x25519_dalek::PublicKey::from(&eph).as_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*recipient));
    if !shared.was_contributory() {
        return Err(Error::Kdf("drop public key is a low-order point".into()));
    }
    Ok((ecies_kek(DROP_KEK_CONTEXT, &shared, &eph_pub, recipient), eph_pub))
}

/// Derives a named per-tenant key from the master (audit log, settings).
fn derive(context: &str, master: &Key) -> Key {
    Key(blake3::derive_key(context, master.expose()))
}

/// Random bytes from the OS generator (salts, ids of random objects).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Plain (unkeyed) BLAKE3, used to name stored objects by their bytes.
pub fn object_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let k = Key::random();
        let s = seal(&k, b"aad", b"hello");
        assert_eq!(open(&k, b"aad", &s, || "x".into()).unwrap(), b"hello");
        assert!(open(&k, b"aad2", &s, || "x".into()).is_err());
        let mut t = s.clone();
        t[15] ^= 1;
        assert!(open(&k, b"aad", &t, || "x".into()).is_err());
        assert!(open(&Key::random(), b"aad", &s, || "x".into()).is_err());
        assert!(matches!(open(&k, b"aad", &s[..10], || "x".into()), Err(Error::Truncated { .. })));
    }

    #[test]
    fn open_into_reuses_its_buffer_and_keeps_nothing_on_failure() {
        let k = Key::from_bytes([5; 32]);
        let mut plain = vec![0xee; 100_000];
        for len in [70_000usize, 10, 0, 5_000, 120_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = seal(&k, b"x", &data);
            open_into(&k, b"x", &sealed, &mut plain, String::new).unwrap();
            assert!(plain == data, "length {len}");
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            assert!(matches!(open_into(&k, b"x", &bad, &mut plain, String::new), Err(Error::Open { .. })));
            assert!(plain.is_empty());
            assert!(open_into(&k, b"y", &sealed, &mut plain, String::new).is_err());
            assert!(plain.is_empty());
            assert!(matches!(
                open_into(&k, b"x", &sealed[..10], &mut plain, String::new),
                Err(Error::Truncated { .. })
            ));
        }
    }

    #[test]
    fn seal_in_place_matches_one_shot_aead() {
        let k = Key::from_bytes([9; 32]);
        let nonce = [7u8; NONCE_LEN];
        for len in [0usize, 1, 15, 16, 17, 1000, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            // The allocating AEAD API, as `seal_with_nonce` was written before.
            let mut want = nonce.to_vec();
            let cipher = Aes256GcmSiv::new(k.expose().into());
            want.extend_from_slice(
                &aes_gcm_siv::aead::Aead::encrypt(
                    &cipher,
                    &Nonce::from(nonce),
                    aes_gcm_siv::aead::Payload { msg: &plain, aad: b"a" },
                )
                .unwrap(),
            );
            assert_eq!(seal_with_nonce(&k, &nonce, b"a", &plain), want);
            let mut buf = seal_buffer(len);
            let cap = buf.capacity();
            buf.extend_from_slice(&plain);
            seal_in_place(&k, b"a", &mut buf);
            assert_eq!(buf.capacity(), cap, "no reallocation");
            assert_eq!(buf.len(), len + SEAL_OVERHEAD);
            assert_eq!(open(&k, b"a", &buf, || "x".into()).unwrap(), plain);
        }
    }

    #[test]
    fn tenant_keys_differ_per_master() {
        let a = TenantKeys::from_master(&Key::from_bytes([1; 32]));
        let b = TenantKeys::from_master(&Key::from_bytes([2; 32]));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.gear()[..], b.gear()[..]);
        assert_eq!(a.blob_id(b"x"), TenantKeys::from_master(&Key::from_bytes([1; 32])).blob_id(b"x"));
    }

    #[test]
    fn kdf_rejects_hostile_params() {
        for p in [
            KdfParams { memory_kib: u32::MAX, iterations: 1, parallelism: 1 },
            KdfParams { memory_kib: MAX_KDF_MEMORY_KIB + 1, iterations: 1, parallelism: 1 },
            KdfParams { memory_kib: 64, iterations: MAX_KDF_PASSES + 1, parallelism: 1 },
            KdfParams { memory_kib: 1024, iterations: 1, parallelism: MAX_KDF_LANES + 1 },
        ] {
            assert!(p.check_bounds().is_err(), "{p:?}");
            assert!(password_kek(b"pw", &[0; 16], p).is_err(), "{p:?}");
        }
        let at_caps =
            KdfParams { memory_kib: MAX_KDF_MEMORY_KIB, iterations: MAX_KDF_PASSES, parallelism: MAX_KDF_LANES };
        assert!(at_caps.check_bounds().is_ok());
    }

    #[test]
    fn full_keys_never_seal_with_a_drop_generation() {
        let mut k = TenantKeys::from_master(&Key::from_bytes([1; 32]));
        k.add_data_key(DataKey { generation: 1, key: Key::from_bytes([2; 32]) });
        k.add_data_key(DataKey { generation: 2, key: Key::from_bytes([3; 32]) });
        // A drop keyring planted by a store writer: its key is known to it.
        k.add_data_key(DataKey { generation: DROP_GENERATION_BIT | 5, key: Key::from_bytes([4; 32]) });
        assert_eq!(k.current_data_key().unwrap().generation, 2);
        assert!(k.data_key(DROP_GENERATION_BIT | 5).is_some(), "drop generations still open");
        k.retain_from(2);
        assert!(k.data_key(DROP_GENERATION_BIT | 5).is_none(), "a rewrite retires drop generations");
        assert!(sealed_before(DROP_GENERATION_BIT | 5, 2) && sealed_before(1, 2) && !sealed_before(2, 2));

        let mut p =
            TenantKeys::from_put_only(&TenantKeys::from_master(&Key::from_bytes([1; 32])).put_only_keys().unwrap());
        assert!(p.current_data_key().is_none());
        p.add_data_key(DataKey { generation: 1, key: Key::from_bytes([2; 32]) });
        assert!(p.current_data_key().is_none(), "a put-only host seals only with its drop generation");
        p.add_data_key(DataKey { generation: DROP_GENERATION_BIT | 9, key: Key::random() });
        assert_eq!(p.current_data_key().unwrap().generation, DROP_GENERATION_BIT | 9);
    }

    #[test]
    fn put_only_keys_hold_nothing_of_the_master() {
        let full = TenantKeys::from_master(&Key::from_bytes([1; 32]));
        let put = TenantKeys::from_put_only(&full.put_only_keys().unwrap());
        assert!(!put.master().is(full.master().expose()));
        assert!(!put.meta_key().is(full.meta_key().expose()));
        assert!(!put.keyring_key().is(full.keyring_key().expose()));
        assert!(put.dedup_key().is(full.dedup_key().expose()));
        assert_ne!(put.host_memory_name("file:///r"), full.host_memory_name("file:///r"));
        let (kek, eph) = drop_wrap_kek(full.drop_public()).unwrap();
        assert!(full.drop_unwrap_kek(&eph).unwrap().is(kek.expose()));
        assert!(put.drop_unwrap_kek(&eph).is_none());
        let (kek2, eph2) = drop_wrap_kek_with([7; 32], full.drop_public()).unwrap();
        assert!(full.drop_unwrap_kek(&eph2).unwrap().is(kek2.expose()));
    }

    #[test]
    fn host_memory_names_depend_on_master_and_location() {
        let a = TenantKeys::from_master(&Key::from_bytes([1; 32]));
        let b = TenantKeys::from_master(&Key::from_bytes([2; 32]));
        assert_eq!(a.host_memory_name("file:///r").len(), 32);
        assert_eq!(a.host_memory_name("file:///r"), a.host_memory_name("file:///r"));
        assert_ne!(a.host_memory_name("file:///r"), a.host_memory_name("file:///s"));
        assert_ne!(a.host_memory_name("file:///r"), b.host_memory_name("file:///r"));
    }
}
