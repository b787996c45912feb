//! Key slots and escrow: what unlocks a tenant, and what may unlock it.
//!
//! Owns: the objects under `tenants/<t>/keys` (listing, trying, adding and
//! removing slots), reading the keyring objects an unlock needs, the
//! repository's `escrow` object (informational only) with the escrow
//! key-file formats, the escrow key an operator gave this host
//! (`<cache dir>/escrow-keys/`) and the hint of which slot opened last
//! (`<cache dir>/slot-hints/`), and the key handoff by which the agent
//! gives its steps an unwrapped key. Both `repo` (opening, `init`) and `tenant`
//! (passwords, escrow) build on it. Must not: import `repo` or `tenant`.
//!
//! **Invariant:** the tenant's last password or key-file slot is never
//! removed ([`remove_slot`]); escrow slots do not count, they are the
//! operator's.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::codec::keyslot::{self, SlotKind};
use crate::codec::put_only;
use crate::codec::sealed::{self, KEYRING_MAGIC};
use crate::crypto::{self, DataKey, EscrowSecret, KdfParams, TenantKeys, KEY_LEN};
use crate::error::{Error, Result};
use crate::id::TenantName;
use crate::key_cache::KeyCache;
use crate::scope::TenantScope;
use crate::store::{Kind, Store};

/// First word of an escrow public-key file.
pub const ESCROW_PUBLIC_PREFIX: &str = "strongroom-escrow-public-v1:";
/// First word of an escrow secret-key file.
pub const ESCROW_SECRET_PREFIX: &str = "strongroom-escrow-secret-v1:";

/// A password, key-file content, escrow secret or key handoff, zeroized
/// on drop.
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    kind: SecretKind,
    /// Where a password may find, and leaves, the key it opened.
    cache: Option<KeyCache>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SecretKind {
    Password,
    Escrow,
    Handoff,
}

impl Secret {
    /// Wraps a password or key-file bytes (tried on password and key-file slots).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes: Zeroizing::new(bytes), kind: SecretKind::Password, cache: None }
    }
    /// Wraps an escrow secret (tried on escrow slots only).
    pub fn escrow(secret: &EscrowSecret) -> Self {
        Self { bytes: Zeroizing::new(secret.to_bytes().to_vec()), kind: SecretKind::Escrow, cache: None }
    }
    /// Wraps the bytes of a key handoff ([`Handoff::bytes`]) another
    /// process read from a slot: it opens the tenant without a key
    /// derivation, and only while the slot it names still exists.
    pub fn handoff(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self { bytes, kind: SecretKind::Handoff, cache: None }
    }
    /// A password that opens from `cache` when an entry there opens with
    /// it, and leaves an entry there after a key derivation
    /// (`--key-cache`). Other secrets ignore the cache.
    pub fn with_key_cache(mut self, cache: KeyCache) -> Self {
        self.cache = (self.kind == SecretKind::Password).then_some(cache);
        self
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Whether this is an escrow secret.
    pub fn is_escrow(&self) -> bool {
        self.kind == SecretKind::Escrow
    }
}

/// A tenant's unwrapped master key and the slot that gave it, ready to
/// hand to a child process ([`Secret::handoff`] on the other side), so
/// that the child skips the slot's key derivation. Zeroized on drop.
pub struct Handoff {
    bytes: Zeroizing<Vec<u8>>,
}

impl Handoff {
    /// Unwraps the tenant's master key with `secret` (one key derivation)
    /// for handing to children. Escrow secrets are refused: an escrow
    /// opening must stay the child's own, audited before any read.
    pub async fn unlock(store: &Store, tenant: &TenantName, secret: &Secret) -> Result<Self> {
        if secret.kind != SecretKind::Password {
            return Err(Error::Internal("only a password or key file is handed to a child".into()));
        }
        let u = unlock(store, tenant, secret).await?;
        let bytes = keyslot::encode_handoff(u.keys.master(), &u.slot).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Self { bytes })
    }
    /// The encoded handoff: the master key in plain, for a pipe into a
    /// child process only.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff(..)")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads a password or key file without its trailing line breaks, so a
/// file written by `echo` or `openssl rand -base64 32 >` opens the same
/// slot however it is read (`--password-file`, `tenant key add
/// --key-file`, an agent job's `password_file`).
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut b = Zeroizing::new(std::fs::read(path)?);
    while matches!(b.last(), Some(b'\n' | b'\r')) {
        b.pop();
    }
    Ok(b)
}

/// Key slots one open tries at most: a store writer can add slots, and
/// each password slot costs an Argon2id derivation.
pub const MAX_SLOTS_TRIED: usize = 16;

/// Now, in Unix seconds: the creation time of a new slot.
pub(crate) fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A fresh random key-slot name.
pub fn new_slot_name() -> String {
    hex::encode(crypto::random_bytes::<16>())
}

/// What [`unlock`] found: the keys, the slot that opened, and the kind of
/// every readable slot (by name), so callers need not read them again.
/// A put-only slot gives put-only keys (no keyring loaded: they open none
/// of it) and what its bundle says of the repository.
pub struct Unlocked {
    /// What a put-only slot's bundle binds (`None`: a full key).
    pub put_only: Option<PutOnlyBinding>,
    /// The tenant's keys.
    pub keys: TenantKeys,
    /// Name of the slot that opened.
    pub slot: String,
    /// The slots read to open, by name, oldest name first: every readable
    /// slot of the tenant when `all_slots`, else only the one that opened
    /// (read by name, without listing the others).
    pub slots: Vec<(String, SlotKind)>,
    /// Whether `slots` is every readable slot of the tenant.
    pub all_slots: bool,
}

/// What a put-only slot's bundle binds: the repository and tenant it was
/// made for and the parameters that shape what the tenant writes.
#[derive(Debug, Clone)]
pub struct PutOnlyBinding {
    /// The repository id.
    pub repository_id: String,
    /// The tenant name.
    pub tenant: String,
    /// Chunker sizes.
    pub chunk_sizes: crate::chunk::ChunkSizes,
    /// Target pack size.
    pub pack_target_bytes: u32,
    /// zstd level.
    pub compression_level: i32,
}

/// What a slot gave: a master key, or a put-only bundle.
enum Opened {
    Master(crypto::Key),
    PutOnly(Box<put_only::Bundle>),
}

/// Unwraps the tenant's master key with the first slot that opens, then
/// loads every keyring object. An escrow secret is tried on escrow slots
/// only, a password or key file on the other slots.
/// A put-only key is refused ([`Error::PutOnly`]): only
/// [`unlock_preferring`] returns one, for a backup's open.
pub async fn unlock(store: &Store, tenant: &TenantName, secret: &Secret) -> Result<Unlocked> {
    let u = unlock_preferring(store, tenant, secret, None).await?;
    if u.put_only.is_some() {
        return Err(Error::PutOnly { tenant: tenant.to_string() });
    }
    Ok(u)
}

/// [`unlock`], trying the slot named `preferred` first (the one that opened
/// last time on this host): slots a store writer added cannot then delay
/// or prevent an open that worked before. That slot (or the one a handoff
/// or key cache entry names) is read by name, without listing the others;
/// they are listed and read only when it is gone or does not open.
///
/// At most [`MAX_SLOTS_TRIED`] slots are tried: key-file slots first (one
/// BLAKE3 call), then password slots from the cheapest Argon2id
/// parameters up. Slots whose parameters exceed the caps are never tried
/// (the decoder refuses them; a warning names each).
pub async fn unlock_preferring(
    store: &Store,
    tenant: &TenantName,
    secret: &Secret,
    preferred: Option<&str>,
) -> Result<Unlocked> {
    let mut known = KnownSlots::default();
    if secret.kind == SecretKind::Handoff {
        let (master, slot) =
            keyslot::decode_handoff(secret.bytes()).map_err(|e| Error::BadHandoff { why: e.to_string() })?;
        known.read_named(store, tenant, &slot).await?;
        return open_with_master(store, tenant, master, slot, &known, "a handed-over key").await;
    }
    if let Some(cache) = &secret.cache {
        let location = store.location();
        if let Some((master, slot)) = cache.load(&location, tenant, secret.bytes()) {
            known.read_named(store, tenant, &slot).await?;
            match open_with_master(store, tenant, master, slot, &known, "the key cache").await {
                Err(Error::BadHandoff { why }) => cache.remove(&location, tenant, &why),
                other => return other,
            }
        }
    }
    match preferred {
        Some(name) if known.slots.is_empty() => known.read_named(store, tenant, name).await?,
        _ => {}
    }
    let (opened, slot) = match derive(tenant, secret, preferred, &known.slots, None).await {
        // Only the hinted slot was read, and it does not open: try the rest.
        Err(Error::BadKey { .. }) if !known.all => {
            let tried: Vec<String> = known.slots.iter().map(|(name, _)| name.clone()).collect();
            known.read_all(store, tenant).await?;
            derive(tenant, secret, preferred, &known.slots, Some(&tried)).await?
        }
        other => other?,
    };
    let master = match opened {
        Opened::Master(k) => k,
        Opened::PutOnly(bundle) => {
            if bundle.tenant != tenant.as_str() {
                return Err(Error::BadKey { tenant: tenant.to_string() });
            }
            let keys = TenantKeys::from_put_only(&bundle.keys);
            let binding = PutOnlyBinding {
                repository_id: bundle.repository_id.clone(),
                tenant: bundle.tenant.clone(),
                chunk_sizes: bundle.chunk_sizes,
                pack_target_bytes: bundle.pack_target_bytes,
                compression_level: bundle.compression_level,
            };
            return Ok(Unlocked { put_only: Some(binding), keys, slot, slots: known.kinds(), all_slots: known.all });
        }
    };
    // Only what an Argon2id derivation opened is worth caching: a key
    // file opens with one BLAKE3 call, and its key stays out of the file.
    let derived = matches!(known.kind(&slot), Some(SlotKind::Password { .. }));
    if let (Some(cache), true) = (&secret.cache, derived) {
        cache.save(&store.location(), tenant, secret.bytes(), &master, &slot);
    }
    let keys = load_keyring(store, tenant, TenantKeys::from_master(&master)).await?;
    Ok(Unlocked { put_only: None, keys, slot, slots: known.kinds(), all_slots: known.all })
}

/// The key slots an open has read: one by name (the hinted slot, or the
/// one a handoff or cache entry names), or every slot after a listing.
#[derive(Default)]
struct KnownSlots {
    slots: Vec<(String, keyslot::KeySlot)>,
    all: bool,
}

impl KnownSlots {
    /// Reads the slot `name` alone; every slot if it is not a slot name,
    /// is absent (removed, or no such tenant) or does not decode.
    async fn read_named(&mut self, store: &Store, tenant: &TenantName, name: &str) -> Result<()> {
        if name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let path = Store::path(tenant, Kind::Keys, name);
            if let Some(bytes) = store.get_opt(&path).await? {
                if let Ok(slot) = keyslot::decode(&bytes) {
                    self.slots = vec![(name.to_string(), slot)];
                    self.all = false;
                    return Ok(());
                }
            }
        }
        self.read_all(store, tenant).await
    }

    async fn read_all(&mut self, store: &Store, tenant: &TenantName) -> Result<()> {
        self.slots = read_slots(store, tenant).await?;
        self.all = true;
        Ok(())
    }

    fn kind(&self, name: &str) -> Option<&SlotKind> {
        self.slots.iter().find(|(n, _)| n == name).map(|(_, slot)| &slot.kind)
    }

    fn kinds(&self) -> Vec<(String, SlotKind)> {
        self.slots.iter().map(|(name, slot)| (name.clone(), slot.kind.clone())).collect()
    }
}

/// Every readable slot's kind: `known` when it is every slot, else read
/// anew (what needs them all, [`crate::tenant::escrow_sync`], after an
/// open that read one slot by name).
pub async fn all_slot_kinds(
    store: &Store,
    tenant: &TenantName,
    known: &[(String, SlotKind)],
    all: bool,
) -> Result<Vec<(String, SlotKind)>> {
    if all {
        return Ok(known.to_vec());
    }
    let slots = read_slots(store, tenant).await?;
    Ok(slots.into_iter().map(|(name, slot)| (name, slot.kind)).collect())
}

/// Unwraps the master key with the first of `all` that opens with
/// `secret` ([`unlock_preferring`]'s order), skipping the slots `tried`
/// before; returns it and its slot.
async fn derive(
    tenant: &TenantName,
    secret: &Secret,
    preferred: Option<&str>,
    all: &[(String, keyslot::KeySlot)],
    tried: Option<&[String]>,
) -> Result<(Opened, String)> {
    let mut decoded: Vec<&(String, keyslot::KeySlot)> = all
        .iter()
        .filter(|(_, slot)| matches!(slot.kind, SlotKind::Escrow { .. }) == secret.is_escrow())
        .filter(|(name, _)| !tried.is_some_and(|t| t.contains(name)))
        .collect();
    // Cheap slots first: a key file opens with one BLAKE3 call, a password
    // slot costs an Argon2id derivation (64 MiB, about 0.15 s) even when
    // it does not match; the slot that opened last time before all.
    decoded.sort_by_key(|(name, slot)| {
        let cost = match &slot.kind {
            SlotKind::Password { params, .. } | SlotKind::PutOnly { password: Some((params, _)) } => {
                1 + u64::from(params.memory_kib) * u64::from(params.iterations.max(1))
            }
            _ => 0,
        };
        (Some(name.as_str()) != preferred, cost)
    });
    let n_candidates = decoded.len();
    let n_before = tried.map_or(0, <[String]>::len);
    for (n, (name, slot)) in decoded.into_iter().enumerate() {
        if n_before + n >= MAX_SLOTS_TRIED {
            let (tried, untried) = (n_before + n, n_candidates - n);
            return Err(Error::TooManyKeySlots { tenant: tenant.to_string(), tried, untried });
        }
        // Argon2id is CPU-bound: keep it off the async workers.
        let (slot, secret_copy) = (slot.clone(), Zeroizing::new(secret.bytes().to_vec()));
        let kdf = slot_kdf(&slot.kind);
        let r = tokio::task::spawn_blocking(move || match slot.kind {
            SlotKind::PutOnly { .. } => {
                keyslot::unwrap_put_only(&slot, &secret_copy).map(|b| Opened::PutOnly(Box::new(b)))
            }
            _ => keyslot::unwrap(&slot, &secret_copy).map(Opened::Master),
        })
        .await
        .map_err(|e| Error::Internal(format!("key derivation task failed: {e}")))?;
        if let Ok(k) = r {
            tracing::debug!("tenant {tenant}: key slot {name} unwrapped ({kdf})");
            return Ok((k, name.clone()));
        }
    }
    Err(Error::BadKey { tenant: tenant.to_string() })
}

/// How a slot's key is derived, for the debug log: `argon2` or `blake3`.
fn slot_kdf(kind: &SlotKind) -> &'static str {
    match kind {
        SlotKind::Password { .. } | SlotKind::PutOnly { password: Some(_) } => "argon2",
        SlotKind::Escrow { .. } => "x25519",
        _ => "blake3",
    }
}

/// Every readable key slot of the tenant, by name, oldest name first;
/// no slot at all means no such tenant.
async fn read_slots(store: &Store, tenant: &TenantName) -> Result<Vec<(String, keyslot::KeySlot)>> {
    let mut slots = store.list(tenant, Kind::Keys).await?;
    if slots.is_empty() {
        return Err(Error::TenantNotFound { tenant: tenant.to_string(), url: store.url().to_string() });
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    let mut decoded = Vec::with_capacity(slots.len());
    for s in &slots {
        let path = Store::path(tenant, Kind::Keys, &s.name);
        // None: removed since the listing (a concurrent `key remove`).
        let Some(bytes) = store.get_opt(&path).await? else { continue };
        match keyslot::decode(&bytes) {
            Ok(slot) => decoded.push((s.name.clone(), slot)),
            Err(e) => tracing::warn!("skipping key slot {path}: {e}"),
        }
    }
    Ok(decoded)
}

/// Opens with a master key that was already unwrapped (a key handoff, a
/// key cache entry; `from` names which for the log): no key derivation,
/// but the slot it names must still be a password or key-file slot of
/// the tenant (a slot removed since no longer opens), and the key must
/// open the tenant's keyring. A key that does not is a wrong key, as a
/// wrong password is; [`crate::binding`] then checks the record as after
/// any unlock.
async fn open_with_master(
    store: &Store,
    tenant: &TenantName,
    master: crypto::Key,
    slot: String,
    known: &KnownSlots,
    from: &str,
) -> Result<Unlocked> {
    let bad = |why: String| Error::BadHandoff { why };
    match known.kind(&slot) {
        Some(SlotKind::Password { .. } | SlotKind::KeyFile) => {}
        _ => return Err(bad(format!("tenant {tenant} has no password or key-file slot {slot} (removed?)"))),
    }
    let keys = match load_keyring(store, tenant, TenantKeys::from_master(&master)).await {
        Ok(keys) => keys,
        // Sealed under another tenant's key (or none): not this tenant's.
        Err(Error::Damaged { .. }) => return Err(bad(format!("not the key of tenant {tenant}"))),
        Err(e) => return Err(e),
    };
    tracing::debug!("tenant {tenant}: opened with {from} of slot {slot} (no key derivation)");
    Ok(Unlocked { put_only: None, keys, slot, slots: known.kinds(), all_slots: known.all })
}

/// Reads a key handoff from inherited descriptor `fd` (`--key-fd`): a
/// pipe or regular file holding exactly one handoff, read once; the
/// descriptor is closed after (standard input, fd 0, is left at its end).
///
/// The error is the reason alone ([`Error::BadHandoff`] words it).
pub fn read_handoff_fd(fd: i32) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    if !(0..=i32::from(u16::MAX)).contains(&fd) || (1..=2).contains(&fd) {
        return Err(format!("fd {fd} cannot carry a key"));
    }
    // Opened anew through /proc (no unsafe adoption of a raw descriptor):
    // the same pipe, or the same file from its start.
    let path = format!("/proc/self/fd/{fd}");
    let file = std::fs::File::open(&path).map_err(|e| format!("fd {fd}: {e}"))?;
    let kind = file.metadata().map_err(|e| format!("fd {fd}: {e}"))?.file_type();
    if !(kind.is_fifo() || kind.is_file()) {
        return Err(format!("fd {fd} is not a pipe or a regular file"));
    }
    let max = keyslot::MAX_HANDOFF_LEN;
    let mut bytes = Zeroizing::new(Vec::with_capacity(max + 1));
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("fd {fd}: {e}"))?;
    if fd > 2 {
        if let Err(e) = nix::unistd::close(fd) {
            return Err(format!("fd {fd}: cannot close it: {e}"));
        }
    }
    Ok(bytes)
}

/// Reads every keyring object of the tenant into `keys`.
pub(crate) async fn load_keyring(store: &Store, tenant: &TenantName, mut keys: TenantKeys) -> Result<TenantKeys> {
    let rings = store.list(tenant, Kind::Keyring).await?;
    let fetched: Vec<(String, Bytes)> = futures::stream::iter(rings.into_iter().map(|l| {
        let path = Store::path(tenant, Kind::Keyring, &l.name);
        async move { store.get(&path).await.map(|b| (path.to_string(), b)) }
    }))
    .buffer_unordered(8)
    .try_collect()
    .await?;
    for (path, bytes) in fetched {
        let damaged = |why: String| Error::Damaged { object: path.clone(), why };
        if bytes.starts_with(put_only::DROP_MAGIC) {
            // Anyone who can write to the store can put one here: one that
            // does not open is skipped, not an error, and what opens is a
            // key for opening only (see `TenantKeys::current_data_key`).
            match open_drop_keyring(&keys, tenant, &path, &bytes) {
                Ok(dk) => keys.add_data_key(dk),
                Err(why) => tracing::warn!(object = %path, "drop keyring skipped: {why}"),
            }
            continue;
        }
        let env = sealed::decode(&bytes, KEYRING_MAGIC, "keyring").map_err(|e| damaged(e.to_string()))?;
        let plain = Zeroizing::new(
            env.open(keys.keyring_key(), tenant.as_str(), || path.clone()).map_err(|e| damaged(e.to_string()))?,
        );
        for (generation, key) in sealed::decode_keyring(&plain).map_err(|e| damaged(e.to_string()))? {
            keys.add_data_key(DataKey { generation, key });
        }
    }
    if keys.current_data_key().is_none() {
        return Err(Error::Damaged { object: format!("tenants/{tenant}/keyring"), why: "no keyring found".into() });
    }
    Ok(keys)
}

/// Prefix of drop keyring names under `keyring/` (the tenant's own
/// keyrings are named by their generation in 8 decimal digits).
pub const DROP_KEYRING_PREFIX: &str = "drop-";

/// The name of the drop keyring of `generation` under `keyring/`.
pub fn drop_keyring_name(generation: u32) -> String {
    format!("{DROP_KEYRING_PREFIX}{generation:08x}")
}

/// Opens a drop keyring with full keys: its data key, if its name matches
/// its generation and it opens.
fn open_drop_keyring(
    keys: &TenantKeys,
    tenant: &TenantName,
    path: &str,
    bytes: &[u8],
) -> std::result::Result<DataKey, String> {
    let d = put_only::decode_drop_keyring(bytes).map_err(|e| e.to_string())?;
    if !path.ends_with(&format!("/{}", drop_keyring_name(d.generation))) {
        return Err(format!("named for another generation than {:08x}", d.generation));
    }
    let kek = keys.drop_unwrap_kek(&d.ephemeral).ok_or("a put-only key opens no drop keyring")?;
    let key = d.open(&kek, tenant.as_str(), || path.to_string()).map_err(|e| e.to_string())?;
    Ok(DataKey { generation: d.generation, key })
}

/// A put-only host's new drop generation: a fresh data key sealed to the
/// tenant's drop public key, stored create-only under a random drop
/// generation (retried on the rare collision). Added to `keys`, it seals
/// everything the host writes from now on.
pub async fn create_drop_generation(store: &Store, tenant: &TenantName, keys: &mut TenantKeys) -> Result<u32> {
    for _ in 0..8 {
        let generation = crypto::DROP_GENERATION_BIT | u32::from_le_bytes(crypto::random_bytes::<4>());
        let key = crypto::Key::random();
        let bytes = put_only::seal_drop_keyring(generation, &key, keys.drop_public(), tenant.as_str())?;
        let path = Store::path(tenant, Kind::Keyring, &drop_keyring_name(generation));
        match store.create(&path, Bytes::from(bytes)).await {
            Ok(()) => {
                keys.add_data_key(DataKey { generation, key });
                return Ok(generation);
            }
            Err(crate::store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal("no free drop generation after 8 tries".into()))
}

/// The name of the key slot that last opened a tenant of a store on this
/// host (`<cache dir>/slot-hints/<name>`), tried first next time. Only an
/// order: a wrong or stale hint costs nothing but the slot's own try.
pub(crate) struct SlotHint {
    path: PathBuf,
}

impl SlotHint {
    pub(crate) fn new(memory_dir: &Path, store: &Store, tenant: &TenantName) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(store.location().as_bytes()).update(&[0]).update(tenant.as_str().as_bytes());
        Self { path: memory_dir.join("slot-hints").join(hex::encode(&h.finalize().as_bytes()[..16])) }
    }

    pub(crate) fn read(&self) -> Option<String> {
        let name = std::fs::read_to_string(&self.path).ok()?;
        let name = name.trim();
        (name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_string())
    }

    pub(crate) fn write(&self, slot: &str) {
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        let written = crate::private::write(&tmp, slot.as_bytes()).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::debug!("cannot remember the key slot that opened: {e}");
        }
    }
}

fn parse_key_text(text: &str, prefix: &str, what: &str) -> Result<[u8; KEY_LEN]> {
    let t = text.trim();
    // The text is never quoted back: it may hold the secret key.
    let bad = |why: String| Error::invalid_input(format!("escrow {what} key"), "", why);
    let hex_part = t
        .strip_prefix(prefix)
        .ok_or_else(|| bad(format!("not an escrow {what} key file (expected it to start with {prefix})")))?;
    let bytes = hex::decode(hex_part.trim()).map_err(|_| bad("not hex".into()))?;
    bytes.try_into().map_err(|_| bad(format!("not {KEY_LEN} bytes")))
}

/// Parses an escrow public-key file.
pub fn parse_escrow_public(text: &str) -> Result<[u8; KEY_LEN]> {
    parse_key_text(text, ESCROW_PUBLIC_PREFIX, "public")
}

/// Parses an escrow secret-key file.
pub fn parse_escrow_secret(text: &str) -> Result<EscrowSecret> {
    let b = Zeroizing::new(parse_key_text(text, ESCROW_SECRET_PREFIX, "secret")?);
    Ok(EscrowSecret::from_bytes(*b))
}

/// The text of an escrow public-key file.
pub fn format_escrow_public(public: &[u8; KEY_LEN]) -> String {
    format!("{ESCROW_PUBLIC_PREFIX}{}\n", hex::encode(public))
}

/// The text of an escrow secret-key file.
pub fn format_escrow_secret(secret: &EscrowSecret) -> Zeroizing<String> {
    Zeroizing::new(format!("{ESCROW_SECRET_PREFIX}{}\n", hex::encode(&secret.to_bytes()[..])))
}

/// Short fingerprint of an escrow public key (16 hex digits of its BLAKE3).
pub fn escrow_fingerprint(public: &[u8; KEY_LEN]) -> String {
    hex::encode(&crypto::object_hash(public)[..8])
}

/// Stores the repository's escrow public key (replacing any previous one).
pub async fn escrow_store(store: &Store, public: &[u8; KEY_LEN]) -> Result<()> {
    store.overwrite(&Store::escrow_path(), Bytes::from(format_escrow_public(public))).await?;
    Ok(())
}

/// The repository's escrow public key, if one is set.
pub async fn escrow_load(store: &Store) -> Result<Option<[u8; KEY_LEN]>> {
    let Some(b) = store.get_opt(&Store::escrow_path()).await? else { return Ok(None) };
    let text =
        std::str::from_utf8(&b).map_err(|_| Error::Damaged { object: "escrow".into(), why: "not text".into() })?;
    parse_escrow_public(text).map(Some).map_err(|e| Error::Damaged { object: "escrow".into(), why: e.to_string() })
}

/// Where this host keeps the escrow key its operator gave it for the
/// repository at `location` ([`Store::location`]): named by the location,
/// never by anything read from the store.
pub fn host_escrow_path(cache_dir: &Path, location: &str) -> PathBuf {
    cache_dir.join("escrow-keys").join(hex::encode(&crypto::object_hash(location.as_bytes())[..16]))
}

/// The escrow key the operator gave this host for the repository at
/// `location`, if any.
pub fn host_escrow_key(cache_dir: &Path, location: &str) -> Result<Option<[u8; KEY_LEN]>> {
    let path = host_escrow_path(cache_dir, location);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_escrow_public(&text)
            .map(Some)
            .map_err(|e| Error::invalid_input("escrow key file", path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Records `public` as the escrow key the operator gave this host for the
/// repository at `location`.
pub fn set_host_escrow_key(cache_dir: &Path, location: &str, public: &[u8; KEY_LEN]) -> Result<()> {
    let path = host_escrow_path(cache_dir, location);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    crate::private::write(&tmp, format_escrow_public(public).as_bytes()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// A key slot as listed (still wrapped).
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    /// Object name (32 hex digits).
    pub name: String,
    /// How it unwraps.
    #[serde(serialize_with = "kind_name")]
    pub kind: SlotKind,
    /// Label.
    pub label: String,
    /// Creation time, Unix seconds.
    pub created: i64,
}

fn kind_name<S: serde::Serializer>(k: &SlotKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// The tenant's key slots, oldest first. Damaged slots are skipped with a
/// warning.
pub async fn list_slots(store: &Store, tenant: &TenantName) -> Result<Vec<SlotInfo>> {
    let mut out = Vec::new();
    for l in store.list(tenant, Kind::Keys).await? {
        let path = Store::path(tenant, Kind::Keys, &l.name);
        let Some(bytes) = store.get_opt(&path).await? else { continue };
        match keyslot::decode(&bytes) {
            Ok(s) => out.push(SlotInfo { name: l.name, kind: s.kind, label: s.label, created: s.created }),
            Err(e) => tracing::warn!(object = %path, "skipping damaged key slot: {e}"),
        }
    }
    out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(out)
}

/// A new slot's secret.
pub enum NewSlot<'a> {
    /// A password, wrapped with Argon2id at these costs.
    Password(&'a Secret, KdfParams),
    /// The bytes of a key file.
    KeyFile(&'a [u8]),
}

/// Adds a key slot; returns its name.
pub async fn add_slot(scope: &TenantScope, new: NewSlot<'_>, label: &str) -> Result<String> {
    if scope.keys().is_put_only() {
        return Err(Error::PutOnly { tenant: scope.tenant().to_string() });
    }
    if label.len() > keyslot::MAX_LABEL {
        return Err(Error::invalid_input("key slot label", label, format!("longer than {} bytes", keyslot::MAX_LABEL)));
    }
    let master = scope.keys().master().duplicate();
    let now = now_unix();
    let label = label.to_string();
    let (kind, secret) = match new {
        NewSlot::Password(s, kdf) => {
            (SlotKind::Password { params: kdf, salt: crypto::random_bytes() }, Zeroizing::new(s.bytes().to_vec()))
        }
        NewSlot::KeyFile(b) => {
            if b.len() < 32 {
                return Err(Error::invalid_input("key file", "", "a key file must hold at least 32 bytes"));
            }
            (SlotKind::KeyFile, Zeroizing::new(b.to_vec()))
        }
    };
    // Argon2id takes a fraction of a second of CPU: off the async workers.
    let bytes = tokio::task::spawn_blocking(move || keyslot::wrap(&master, kind, now, &label, &secret))
        .await
        .map_err(|e| Error::Internal(format!("key derivation task failed: {e}")))??;
    let name = new_slot_name();
    scope.store().create(&scope.path(Kind::Keys, &name), Bytes::from(bytes)).await?;
    Ok(name)
}

/// Adds a put-only key slot for the repository and parameters `binding`
/// names (the caller's authenticated binding record); returns its name.
/// The slot holds no master key: see [`put_only::Bundle`].
pub async fn add_put_only_slot(
    scope: &TenantScope,
    new: NewSlot<'_>,
    label: &str,
    binding: PutOnlyBinding,
) -> Result<String> {
    if label.len() > keyslot::MAX_LABEL {
        return Err(Error::invalid_input("key slot label", label, format!("longer than {} bytes", keyslot::MAX_LABEL)));
    }
    let keys = scope.keys().put_only_keys().ok_or_else(|| Error::PutOnly { tenant: scope.tenant().to_string() })?;
    let bundle = put_only::Bundle {
        keys,
        repository_id: binding.repository_id,
        tenant: scope.tenant().to_string(),
        chunk_sizes: binding.chunk_sizes,
        pack_target_bytes: binding.pack_target_bytes,
        compression_level: binding.compression_level,
    };
    let (kind, secret) = match new {
        NewSlot::Password(s, kdf) => {
            (SlotKind::PutOnly { password: Some((kdf, crypto::random_bytes())) }, Zeroizing::new(s.bytes().to_vec()))
        }
        NewSlot::KeyFile(b) => {
            if b.len() < 32 {
                return Err(Error::invalid_input("key file", "", "a key file must hold at least 32 bytes"));
            }
            (SlotKind::PutOnly { password: None }, Zeroizing::new(b.to_vec()))
        }
    };
    let (now, label) = (now_unix(), label.to_string());
    let bytes = tokio::task::spawn_blocking(move || keyslot::wrap_put_only(&bundle, kind, now, &label, &secret))
        .await
        .map_err(|e| Error::Internal(format!("key derivation task failed: {e}")))??;
    let name = new_slot_name();
    scope.store().create(&scope.path(Kind::Keys, &name), Bytes::from(bytes)).await?;
    Ok(name)
}

/// Resolves a slot name or unique prefix.
pub fn find_slot<'a>(slots: &'a [SlotInfo], prefix: &str) -> Result<&'a SlotInfo> {
    let m: Vec<&SlotInfo> = slots.iter().filter(|s| s.name.starts_with(prefix)).collect();
    match m.as_slice() {
        [one] if !prefix.is_empty() => Ok(one),
        [] => Err(Error::invalid_input("no key slot", prefix, "see `strongroom tenant key list`")),
        _ => Err(Error::invalid_input("key slot prefix", prefix, "ambiguous")),
    }
}

/// Removes a key slot. The last password or key-file slot cannot go
/// (escrow slots do not count: they are the operator's, not the tenant's).
pub async fn remove_slot(scope: &TenantScope, prefix: &str) -> Result<SlotInfo> {
    let slots = list_slots(scope.store(), scope.tenant()).await?;
    let target = find_slot(&slots, prefix)?.clone();
    let own = |s: &SlotInfo| !matches!(s.kind, SlotKind::Escrow { .. } | SlotKind::PutOnly { .. });
    if own(&target) && slots.iter().filter(|s| own(s)).count() <= 1 {
        return Err(Error::invalid_input(
            "key slot",
            &target.name[..8],
            "the tenant's last password or key-file slot; add another first",
        ));
    }
    scope.store().delete(&scope.path(Kind::Keys, &target.name)).await?;
    Ok(target)
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_lose_trailing_line_breaks_only() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &[u8]); 4] =
            [(b"pw\n", b"pw"), (b"pw\r\n\n", b"pw"), (b"p\nw\n", b"p\nw"), (b" pw \t", b" pw \t")];
        for (i, (written, read)) in cases.iter().enumerate() {
            let f = dir.path().join(i.to_string());
            std::fs::write(&f, written).unwrap();
            assert_eq!(read_secret_file(&f).unwrap().as_slice(), *read, "{written:?}");
        }
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }
}
