//! An open repository and tenant.
//!
//! Owns: `init`, opening (config; key slots and keyring through
//! [`crate::keyslots`]; the binding check), bringing the catalog up to date
//! from the store, reading blobs and trees with verification, and the
//! commit order of writes: packs → index delta → snapshot record → catalog
//! transaction. The tenant's store, name and keys are its
//! [`TenantScope`], which it lends to what needs no more. Must not:
//! contain command logic, or import `tenant` (which builds on it).
//!
//! **Invariant:** the catalog can be deleted at any time; [`Repo::open`]
//! rebuilds it from index deltas and snapshot records.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryFutureExt};

use crate::blob;
use crate::catalog::{self, BlobLocation, Catalog, SnapshotRow};
use crate::chunk::ChunkSizes;
use crate::codec::binding::Binding;
use crate::codec::config::{self, Config};
use crate::codec::index::{self, PackEntry};
use crate::codec::keyslot::{self, SlotKind};
use crate::codec::pack::{BlobKind, PackedBlob};
use crate::codec::sealed::{self, INDEX_MAGIC, KEYRING_MAGIC, SNAPSHOT_MAGIC};
use crate::codec::snapshot::{self as fsnap, SnapshotRecord};
use crate::crypto::{self, DataKey, KdfParams, Key, TenantKeys};
use crate::error::{Damage, Error, Result};
use crate::host_memory::HostMemory;
use crate::id::{BlobId, IndexId, SnapshotId, TenantName};
pub use crate::keyslots::Secret;
use crate::keyslots::{load_keyring, new_slot_name, now_unix, unlock, unlock_preferring, SlotHint, Unlocked};
use crate::pack::FinishedPack;
use crate::scope::TenantScope;
use crate::snapshot::Snapshot;
use crate::store::{Kind, Store};
use crate::tree::{self, Node, NodeKind, Tree};
use crate::tree_cache::{self, TreePackDisk};

/// Objects fetched at once while syncing the catalog.
const SYNC_CONCURRENCY: usize = 16;
/// Objects applied to the catalog per batch while syncing.
const SYNC_BATCH: usize = 256;
/// Blob rows per batch at most while syncing: index deltas of many blobs
/// (a rebuild of a 10^7-blob catalog) would otherwise hold millions of
/// decoded entries at once (265 MB measured with 16,384 per delta).
const SYNC_BATCH_BLOBS: usize = 262_144;

/// Settings for a new repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Argon2id cost of the first password slot.
    pub kdf: KdfParams,
    /// Chunker sizes (fixed for the repository's life).
    pub chunk_sizes: ChunkSizes,
    /// Target pack size.
    pub pack_target_bytes: u32,
    /// Default zstd level.
    pub compression_level: i32,
    /// Operator escrow public key: every tenant gets a slot sealed to it.
    pub escrow: Option<[u8; 32]>,
    /// Store-enforced retention (see [`crate::object_lock`]); the bucket
    /// must have S3 Object Lock enabled.
    pub object_lock: Option<config::ObjectLock>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            kdf: KdfParams::default(),
            chunk_sizes: ChunkSizes::default(),
            pack_target_bytes: 16 * 1024 * 1024,
            compression_level: 3,
            escrow: None,
            object_lock: None,
        }
    }
}

/// What opening needs besides the store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Directory for catalogs (one per repository id and tenant).
    pub cache_dir: PathBuf,
    /// How long to wait for a catalog another process holds.
    pub lock_wait: std::time::Duration,
    /// Directory of the host's memory ([`HostMemory`]) and key-slot hints,
    /// when not `cache_dir` (a command with a private catalog directory
    /// still remembers what the host saw).
    pub memory_dir: Option<PathBuf>,
}

/// What a catalog sync did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// The catalog was cleared and rebuilt.
    pub rebuilt: bool,
    /// Index deltas read in.
    pub index_read: usize,
    /// Snapshot records read in.
    pub snapshots_read: usize,
    /// Index deltas and snapshot records that failed verification
    /// (`index/<id>`, `snapshots/<id>`), with the reason; the catalog
    /// records them (see [`Repo::damaged_records`]).
    pub damaged: Vec<Damage>,
}

/// An index delta or snapshot record that failed verification at the
/// last catalog sync. It is never taken for absent: it may name the
/// newest snapshot, or the packs that hold live blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// `index/<id>` or `snapshots/<id>`.
    pub name: String,
    /// Its store key.
    pub object: String,
    /// What is wrong.
    pub why: String,
}

impl DamagedRecord {
    /// Whether it is a snapshot record (else an index delta).
    pub fn is_snapshot(&self) -> bool {
        self.name.starts_with("snapshots/")
    }
    /// The object's name in its directory: the id it claims.
    pub fn id_hex(&self) -> &str {
        self.name.split_once('/').map_or(self.name.as_str(), |(_, n)| n)
    }
    /// Its store key with what is wrong.
    pub fn into_damage(self) -> Damage {
        Damage { object: self.object, why: self.why }
    }
}

/// What re-reading a damaged record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverified {
    /// Still damaged, with the reason.
    Damaged(String),
    /// It reads and verifies now (put back intact).
    Intact,
    /// It is gone from the store.
    Gone,
}

/// An open tenant of a repository.
pub struct Repo {
    /// The store, the tenant and its keys.
    scope: TenantScope,
    /// The runtime the repository was opened on: the synchronous
    /// operations (backup, restore, check, prune, ...) run their store I/O
    /// on it through [`Repo::block_on`].
    rt: tokio::runtime::Handle,
    config: Config,
    /// Name of the key slot that opened the tenant.
    slot: String,
    /// The key slots read when the tenant was opened, by name.
    slots: Vec<(String, SlotKind)>,
    /// Whether `slots` is every slot (else only the one that opened).
    all_slots: bool,
    /// Whether an escrow secret opened the tenant.
    opened_by_escrow: bool,
    /// The tenant's binding record (the config matched it at open).
    binding: std::sync::Mutex<Binding>,
    /// What this host remembers of the tenant.
    memory: HostMemory,
    catalog: Catalog,
    /// Directory of this tenant's local cache (catalog, audit head).
    cache_dir: PathBuf,
    /// A private catalog file used because another process holds the
    /// shared one; removed on drop.
    temp_catalog: Option<PathBuf>,
    /// Whole tree packs kept for [`Repo::load_tree`], in memory and on
    /// disk (see [`Repo::set_tree_pack_cache`]).
    tree_packs: TreePackCache,
    /// Damaged objects already warned about (a command syncs at open and
    /// again under its lock).
    damaged_warned: std::sync::Mutex<HashSet<String>>,
}

/// The audit log's name for what opened a tenant: `escrow` for an escrow
/// secret (it opens escrow slots only), else the kind of the slot that
/// opened, `key-file` or `password`. The secret decides escrow, so an
/// escrow opening is never recorded as another kind, whatever the slot
/// list says.
fn opened_with(escrow: bool, slot: Option<&SlotKind>) -> &'static str {
    match (escrow, slot) {
        (true, _) => "escrow",
        (false, Some(SlotKind::KeyFile)) => "key-file",
        (false, Some(SlotKind::PutOnly { .. })) => "put-only",
        // A password or key-file secret opens only those two kinds.
        (false, _) => "password",
    }
}

/// Whole tree packs by id: in memory within a byte budget, while a walk
/// wants them, and on disk across processes ([`TreePackDisk`]). The
/// memory cache reads each pack once however many threads ask for it at
/// the same time (the others wait for that read).
struct TreePackCache {
    enabled: std::sync::atomic::AtomicBool,
    packs: quick_cache::sync::Cache<crate::id::PackId, Bytes, PackWeight>,
    disk: TreePackDisk,
    /// Whether tree packs are read from `disk` (see
    /// [`Repo::read_trees_from_store`]).
    disk_reads: std::sync::atomic::AtomicBool,
}

/// A cached pack weighs its bytes.
#[derive(Clone)]
struct PackWeight;

impl quick_cache::Weighter<crate::id::PackId, Bytes> for PackWeight {
    fn weight(&self, _: &crate::id::PackId, pack: &Bytes) -> u64 {
        pack.len() as u64
    }
}

/// Bytes of tree packs kept at least (two full default packs).
const TREE_PACK_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl TreePackCache {
    /// A budget of four target-sized packs, at least
    /// [`TREE_PACK_CACHE_BYTES`]: a pack the cache refused for its weight
    /// would be read again for each of its trees. The disk cache lives
    /// in `cache_dir`, the tenant's cache directory.
    fn new(pack_target_bytes: u32, cache_dir: &Path) -> Self {
        let bytes = TREE_PACK_CACHE_BYTES.max(4 * u64::from(pack_target_bytes));
        Self {
            enabled: std::sync::atomic::AtomicBool::new(false),
            packs: quick_cache::sync::Cache::with_weighter(8, bytes, PackWeight),
            disk: TreePackDisk::new(cache_dir.join(tree_cache::DIR_NAME), tree_cache::DEFAULT_CAP_BYTES),
            disk_reads: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if let Some(p) = &self.temp_catalog {
            catalog::remove_files(p);
        }
    }
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repo({}, tenant {})", self.scope.store().url(), self.scope.tenant())
    }
}

/// Reads and decodes the config; a missing one means no repository.
pub async fn load_config(store: &Store) -> Result<Config> {
    match store.get_opt(&Store::config_path()).await? {
        Some(b) => Ok(config::decode(&b)?),
        None => Err(Error::RepoNotFound { url: store.url().to_string() }),
    }
}

/// Writes a new repository's config, validated with the same rules as a
/// reader applies; an existing config means the repository exists.
async fn write_config(store: &Store, cfg: &Config) -> Result<()> {
    let bytes = config::encode(cfg);
    config::decode(&bytes)?;
    match store.create(&Store::config_path(), Bytes::from(bytes)).await {
        Ok(()) => Ok(()),
        Err(crate::store::Error::AlreadyExists { .. }) => Err(Error::RepoExists { url: store.url().to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// Creates a repository and its first tenant.
pub async fn init(store: &Store, tenant: &TenantName, secret: &Secret, opts: &InitOptions) -> Result<Config> {
    opts.chunk_sizes.validate()?;
    let cfg = Config {
        format: config::CONFIG_FORMAT.to_string(),
        version: config::CONFIG_VERSION,
        id: hex::encode(crypto::random_bytes::<32>()),
        created: jiff::Timestamp::now().to_string(),
        chunk_sizes: opts.chunk_sizes,
        pack_target_bytes: opts.pack_target_bytes,
        compression_level: opts.compression_level,
        object_lock: opts.object_lock,
    };
    if let Some(rule) = &cfg.object_lock {
        crate::object_lock::require_enabled(store, rule).await?;
    }
    write_config(store, &cfg).await?;
    if let Some(recipient) = &opts.escrow {
        crate::keyslots::escrow_store(store, recipient).await?;
    }
    create_tenant(store, tenant, secret, opts.kdf, &cfg, opts.escrow.as_ref()).await?;
    Ok(cfg)
}

/// Creates a repository whose tenant shares the master key, key slots and
/// data keys of the same tenant in `from` (for `copy`: packs then move
/// between the two as they are). The chunker and pack settings are taken
/// from `from` too, so later backups into either dedup alike. `secret`
/// must open the source tenant; the new tenant opens with the same
/// passwords.
///
/// The source config is used only as far as the source tenant's binding
/// record confirms it (a version 1 source without one is trusted as it
/// is), and the new repository's binding names the source's escrow key.
pub async fn init_with_keys_of(store: &Store, from: &Store, tenant: &TenantName, secret: &Secret) -> Result<Config> {
    let source = load_config(from).await?;
    let keys = unlock(from, tenant, secret).await?.keys;
    let escrow = match crate::binding::load(from, tenant, &keys).await? {
        Some(b) => {
            crate::binding::check(tenant, &b, &source)?;
            b.escrow()
        }
        None if source.version >= 2 => {
            return Err(Error::Binding {
                object: format!("{} of {}", crate::binding::path(tenant), from.url()),
                why: "missing: every tenant of a version 2 repository has one (deleted from the store?)".into(),
            })
        }
        None => None,
    };
    let cfg = Config {
        version: config::CONFIG_VERSION,
        id: hex::encode(crypto::random_bytes::<32>()),
        created: jiff::Timestamp::now().to_string(),
        // The source's bucket rule says nothing of this store's bucket.
        object_lock: None,
        ..source
    };
    write_config(store, &cfg).await?;
    // Keyring first, as in `create_tenant`: a tenant whose slot exists
    // must have a keyring, and a binding record. Objects are sealed, so
    // they move as they are.
    let copy = |kind: Kind| async move {
        for l in from.list(tenant, kind).await? {
            let path = Store::path(tenant, kind, &l.name);
            let b = from.get(&path).await?;
            store.create(&path, b).await?;
        }
        Ok::<(), Error>(())
    };
    copy(Kind::Keyring).await?;
    crate::binding::save(store, tenant, &keys, &Binding::new(&cfg, escrow.as_ref(), 1), true).await?;
    copy(Kind::Keys).await?;
    Ok(cfg)
}

/// Creates a tenant: a random master key in a password slot (and an escrow
/// slot when `escrow` names an escrow public key the operator gave), a
/// keyring with the first data key, and a binding record of `config`
/// (values the caller authenticated or chose) naming `escrow`.
pub async fn create_tenant(
    store: &Store,
    tenant: &TenantName,
    secret: &Secret,
    kdf: KdfParams,
    config: &Config,
    escrow: Option<&[u8; 32]>,
) -> Result<()> {
    if !store.list(tenant, Kind::Keys).await?.is_empty() {
        return Err(Error::TenantExists { tenant: tenant.to_string() });
    }
    if !store.list_tenant_all(tenant).await?.is_empty() {
        return Err(Error::TenantErasing { tenant: tenant.to_string() });
    }
    // Under object lock the new tenant's key slots and keyring are
    // retained from their first write (no plan yet: the default period).
    if store.retention().is_none() {
        crate::object_lock::arm(store, config.object_lock.as_ref(), None)?;
    }
    let master = Key::random();
    let slot = keyslot::wrap(
        &master,
        SlotKind::Password { params: kdf, salt: crypto::random_bytes() },
        now_unix(),
        "default",
        secret.bytes(),
    )?;
    let slot_name = new_slot_name();
    let keys = TenantKeys::from_master(&master);
    let data_key = Key::random();
    let ring = sealed::encode_keyring(&[(1, &data_key)]);
    let ring_obj = sealed::seal(KEYRING_MAGIC, 0, keys.keyring_key(), tenant.as_str(), &ring);
    // Keyring and binding record first: a tenant whose slot exists must
    // have both.
    store.create(&Store::path(tenant, Kind::Keyring, &format!("{:08}", 1)), Bytes::from(ring_obj)).await?;
    crate::binding::save(store, tenant, &keys, &Binding::new(config, escrow, 1), true).await?;
    if let Some(recipient) = escrow {
        let e = keyslot::wrap_escrow(&master, recipient, now_unix())?;
        store.create(&Store::path(tenant, Kind::Keys, &new_slot_name()), Bytes::from(e)).await?;
    }
    store.create(&Store::path(tenant, Kind::Keys, &slot_name), Bytes::from(slot)).await?;
    Ok(())
}

impl Repo {
    /// Opens a tenant: unwraps its master key with `secret`, loads the
    /// keyring, and brings the catalog up to date.
    pub async fn open(store: Store, tenant: TenantName, secret: &Secret, opts: &OpenOptions) -> Result<Self> {
        let repo = Self::open_unsynced(store, tenant, secret, opts).await?;
        repo.sync_logged().await?;
        Ok(repo)
    }

    /// [`Repo::sync`], with a warning for each damaged object it found
    /// (once per object and process).
    pub async fn sync_logged(&self) -> Result<SyncReport> {
        let report = self.sync().await?;
        self.warn_damaged(&report);
        Ok(report)
    }

    /// Warns of each damaged object a sync found, once per object and
    /// process.
    fn warn_damaged(&self, report: &SyncReport) {
        if let Ok(mut warned) = self.damaged_warned.lock() {
            for Damage { object: name, why } in &report.damaged {
                if warned.insert(name.clone()) {
                    let object = format!("tenants/{}/{name}", self.scope.tenant());
                    tracing::warn!(
                        object = %object,
                        "damaged: {why}; it is not read, and it stops `latest`, prune and key rotation \
                         (`strongroom check` reports it, see `strongroom repair`)"
                    );
                }
            }
        }
    }

    /// [`Repo::open`] without bringing the catalog up to date: for a caller
    /// that takes a lock next and syncs then (what others commit before it
    /// holds the lock would need a second sync anyway). Until that sync the
    /// catalog may lack snapshots and packs others added.
    ///
    /// The config is checked against the tenant's binding record (a
    /// tenant of a version 1 repository without one gets one now): the
    /// repository id, chunk sizes, pack target and compression level used
    /// from here on are ones the tenant's key authenticated.
    pub async fn open_unsynced(store: Store, tenant: TenantName, secret: &Secret, opts: &OpenOptions) -> Result<Self> {
        Self::open_inner(store, tenant, secret, opts, false).await
    }

    /// [`Repo::open_unsynced`] for a backup: a put-only key opens too
    /// (everything else refuses one with [`Error::PutOnly`]). With a
    /// put-only key the repository is the one its slot names (a config of
    /// another id or parameters is refused), a fresh drop generation is
    /// made for what this process writes, and the catalog is the host's
    /// put-only catalog (blob ids from index deltas' dedup sections, and
    /// the snapshots this host wrote).
    pub async fn open_unsynced_for_backup(
        store: Store,
        tenant: TenantName,
        secret: &Secret,
        opts: &OpenOptions,
    ) -> Result<Self> {
        Self::open_inner(store, tenant, secret, opts, true).await
    }

    async fn open_inner(
        store: Store,
        tenant: TenantName,
        secret: &Secret,
        opts: &OpenOptions,
        allow_put_only: bool,
    ) -> Result<Self> {
        let memory_dir = opts.memory_dir.as_deref().unwrap_or(&opts.cache_dir);
        let hint = SlotHint::new(memory_dir, &store, &tenant);
        let preferred = hint.read();
        // Independent reads, at once; as when they ran in turn, a missing
        // or unreadable config is reported before the key slots' errors.
        let (config, unlocked) =
            futures::join!(load_config(&store), unlock_preferring(&store, &tenant, secret, preferred.as_deref()));
        let mut config = config?;
        let Unlocked { put_only, mut keys, slot, slots, all_slots } = unlocked?;
        if put_only.is_some() && !allow_put_only {
            return Err(Error::PutOnly { tenant: tenant.to_string() });
        }
        if preferred.as_deref() != Some(slot.as_str()) {
            hint.write(&slot);
        }
        let memory = HostMemory::new(memory_dir, &keys, &store.location());
        // Object lock is armed before the first write (a binding record, a
        // drop keyring), with the longest keep period any plan could ask
        // for: the tenant's plan is not known before its settings are read
        // below, and a date shorter than the one maintenance derives would
        // leave the object deletable meanwhile.
        if let Some(rule) = config.object_lock.as_ref() {
            use crate::retention::Plan;
            let longest = crate::object_lock::keep_days(Some(Plan::Enterprise), rule.default_days);
            let early = (longest >= rule.default_days).then_some(Plan::Enterprise);
            crate::object_lock::arm(&store, Some(rule), early)?;
        }
        let binding = match &put_only {
            // The bundle is the put-only host's binding record: sealed
            // under its key, it names the repository and parameters.
            Some(p) => {
                let b = Binding {
                    repository_id: p.repository_id.clone(),
                    chunk_sizes: p.chunk_sizes,
                    pack_target_bytes: p.pack_target_bytes,
                    compression_level: p.compression_level,
                    escrow_public: None,
                    revision: 0,
                };
                crate::binding::check(&tenant, &b, &config)?;
                crate::keyslots::create_drop_generation(&store, &tenant, &mut keys).await?;
                b
            }
            None => crate::binding::establish(&store, &tenant, &keys, &config, &memory).await?,
        };
        // Equal after the check; taken from the record all the same, so
        // that nothing below reads a value only the config vouched for.
        config.id.clone_from(&binding.repository_id);
        config.chunk_sizes = binding.chunk_sizes;
        config.pack_target_bytes = binding.pack_target_bytes;
        config.compression_level = binding.compression_level;
        memory.adopt_audit_head(&memory_dir.join(&config.id).join(tenant.as_str()).join("audit-head"));
        let mut dir = opts.cache_dir.join(&config.id).join(tenant.as_str());
        if put_only.is_some() {
            // Its own catalog: placeholder locations never meet a full one.
            dir = dir.join("put-only");
        }
        let (catalog, temp_catalog) = open_catalog(&dir, opts.lock_wait).await?;
        let tree_packs = TreePackCache::new(config.pack_target_bytes, &dir);
        let lock_rule = config.object_lock;
        let repo = Self {
            scope: TenantScope::new(store, tenant, keys),
            rt: tokio::runtime::Handle::current(),
            config,
            slot,
            slots,
            all_slots,
            opened_by_escrow: secret.is_escrow(),
            binding: std::sync::Mutex::new(binding),
            memory,
            catalog,
            cache_dir: dir,
            temp_catalog,
            tree_packs,
            damaged_warned: Default::default(),
        };
        if lock_rule.is_some() {
            let plan = crate::tenant::load_settings(repo.scope()).await?.plan()?;
            crate::object_lock::arm(repo.store(), lock_rule.as_ref(), plan)?;
        }
        Ok(repo)
    }

    /// The runtime the repository was opened on; the operations' worker
    /// threads use it for their store I/O.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Runs a future of this repository's to completion from a thread
    /// outside the runtime: the one way the synchronous operations wait
    /// for the store. Panics if called from inside the runtime, as tokio's
    /// own `block_on` does.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The store, the tenant and its keys: what locks, audit entries,
    /// holds and tenant settings need.
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }
    /// The store.
    pub fn store(&self) -> &Store {
        self.scope.store()
    }
    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The tenant.
    pub fn tenant(&self) -> &TenantName {
        self.scope.tenant()
    }
    /// The tenant's keys.
    pub fn keys(&self) -> &TenantKeys {
        self.scope.keys()
    }
    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
    /// Name of the key slot that opened the tenant.
    pub fn opened_slot(&self) -> &str {
        &self.slot
    }
    /// The tenant's key slots (name and kind) as read when it was opened:
    /// every slot when [`Repo::has_all_key_slots`], else only the one that
    /// opened (an open reads the slot it expects by name, without a listing).
    pub fn key_slots(&self) -> &[(String, SlotKind)] {
        &self.slots
    }
    /// Whether [`Repo::key_slots`] is every slot of the tenant.
    pub fn has_all_key_slots(&self) -> bool {
        self.all_slots
    }
    /// Which kind of key slot opened the tenant, as the audit log names
    /// it: `password`, `key-file` or `escrow` (one of
    /// [`crate::audit::OPENED_WITH`]).
    pub fn opened_with(&self) -> &'static str {
        let kind = self.slots.iter().find(|(name, _)| *name == self.slot).map(|(_, kind)| kind);
        opened_with(self.opened_by_escrow, kind)
    }
    /// The tenant's binding record (the config matched it at open).
    pub fn binding(&self) -> Binding {
        match self.binding.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    /// Replaces the binding record held (after [`crate::binding::save`]).
    pub(crate) fn set_binding(&self, b: Binding) {
        match self.binding.lock() {
            Ok(mut held) => *held = b,
            Err(poisoned) => *poisoned.into_inner() = b,
        }
    }
    /// What this host remembers of the tenant.
    pub fn host_memory(&self) -> &HostMemory {
        &self.memory
    }
    /// This tenant's local cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }
    /// Reloads the keyring from the store (after a key rotation).
    pub async fn reload_keys(&mut self) -> Result<()> {
        self.refuse_put_only()?;
        let s = &self.scope;
        let keys = load_keyring(s.store(), s.tenant(), TenantKeys::from_master(s.keys().master())).await?;
        self.scope.set_keys(keys);
        Ok(())
    }

    /// The current data key.
    pub fn data_key(&self) -> Result<&DataKey> {
        self.scope.data_key()
    }

    /// Brings the catalog up to date with the store: reads index deltas and
    /// snapshot records it has not seen; rebuilds it when objects it had
    /// seen are gone (another host pruned). Then trims the disk cache of
    /// tree packs (see [`Repo::trim_tree_cache`]).
    pub async fn sync(&self) -> Result<SyncReport> {
        // A put-only host reads no snapshot record: its catalog's
        // snapshots are the ones it wrote.
        let kinds: &[Kind] = if self.is_put_only() { &[Kind::Index] } else { &[Kind::Index, Kind::Snapshots] };
        if self.is_put_only() {
            // A key rotation may have retired this host's drop keyring
            // between its open and its lock: what it sealed with it would
            // then open for nobody. Checked at each sync (the lock syncs).
            let g = self.data_key()?.generation;
            let path = self.scope.path(Kind::Keyring, &crate::keyslots::drop_keyring_name(g));
            if self.scope.store().size_opt(&path).await?.is_none() {
                return Err(Error::Locked(format!(
                    "{path}: this host's drop keyring was removed (a key rotation); run the backup again"
                )));
            }
        }
        let report = self.sync_kinds(kinds).await?;
        self.trim_tree_cache();
        Ok(report)
    }

    /// [`Repo::sync`] of the snapshot records alone, for a command that
    /// reads nothing but them (`snapshots`): on a host with an empty
    /// catalog it does not download every index delta. The catalog
    /// records only what it read, so a later [`Repo::sync`] reads the
    /// index deltas then.
    pub async fn sync_snapshots_logged(&self) -> Result<SyncReport> {
        let report = self.sync_kinds(&[Kind::Snapshots]).await?;
        self.warn_damaged(&report);
        Ok(report)
    }

    /// Brings the catalog up to date with the store's objects of `kinds`
    /// (index deltas, snapshot records; see [`Repo::sync`]).
    async fn sync_kinds(&self, kinds: &[Kind]) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let dir = |kind: Kind| if kind == Kind::Index { "index/" } else { "snapshots/" };
        let covered = |name: &str| kinds.iter().any(|&k| name.starts_with(dir(k)));
        // Names only: what the catalog has seen needs no size.
        // Forgotten snapshots and quarantined index deltas are not read
        // in: to the catalog they are gone (see [`crate::tombstone`]).
        let (listed, hidden) = futures::future::try_join(
            futures::future::try_join_all(
                kinds.iter().map(|&kind| self.scope.store().list_names(self.scope.tenant(), kind)),
            )
            .map_err(Error::from),
            self.tombstone_hidden(),
        )
        .await?;
        let present: Vec<String> = kinds
            .iter()
            .zip(listed)
            .flat_map(|(&kind, names)| names.into_iter().map(move |n| format!("{}{n}", dir(kind))))
            .filter(|n| !hidden.contains(n))
            .collect();
        let present_names: HashSet<&str> = present.iter().map(String::as_str).collect();
        let mut synced_names: HashSet<String> = self.catalog.synced()?.into_iter().map(|(n, _)| n).collect();
        if synced_names.iter().any(|k| covered(k) && !present_names.contains(k.as_str())) {
            tracing::info!("objects disappeared from the store; rebuilding the catalog");
            self.catalog.clear()?;
            synced_names.clear();
            report.rebuilt = true;
        }
        let todo: Vec<String> = present.into_iter().filter(|n| !synced_names.contains(n)).collect();
        let mut stream = futures::stream::iter(todo.into_iter().map(|name| async move {
            let r = self.fetch_catalog_object(&name).await;
            (name, r)
        }))
        .buffer_unordered(SYNC_CONCURRENCY);
        let mut batch = catalog::Batch::default();
        let mut n = 0;
        let mut batch_blobs = 0usize;
        while let Some((name, r)) = stream.next().await {
            let size = match r {
                Ok((Fetched::Index(packs), size)) => {
                    report.index_read += 1;
                    batch_blobs += packs.iter().map(|p| p.blobs.len()).sum::<usize>();
                    batch.packs.extend(packs);
                    size
                }
                Ok((Fetched::Snapshot(row), size)) => {
                    report.snapshots_read += 1;
                    batch.snapshots.push(row);
                    size
                }
                // Not marked synced: every sync reads it again, so an
                // object put back intact is read in then.
                Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
                    report.damaged.push(Damage::new(name, damage_reason(&e)));
                    continue;
                }
                Err(Error::Store(crate::store::Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            batch.synced.push((name, size));
            n += 1;
            if n % SYNC_BATCH == 0 || batch_blobs >= SYNC_BATCH_BLOBS {
                self.catalog.apply(&std::mem::take(&mut batch))?;
                batch_blobs = 0;
            }
        }
        self.catalog.apply(&batch)?;
        // Every damaged object of `kinds` was read again above: their
        // part of the table is replaced (written only when it changes).
        report.damaged.sort();
        let mut known = self.catalog.damaged()?;
        known.sort();
        let mut damaged = report.damaged.clone();
        damaged.extend(known.iter().filter(|d| !covered(&d.object)).cloned());
        damaged.sort();
        if known != damaged {
            self.catalog.set_damaged(&damaged)?;
        }
        Ok(report)
    }

    /// What the tombstones hide from the catalog (`snapshots/<id>`,
    /// `index/<id>`); a tombstone that cannot be read hides nothing.
    async fn tombstone_hidden(&self) -> Result<HashSet<String>> {
        let state = crate::tombstone::State::load(&self.scope).await?;
        for d in state.damaged(&self.scope) {
            tracing::warn!("{}: damaged: {}; it hides nothing and stops prune's final deletions", d.object, d.why);
        }
        let snaps = state.hidden_snapshots().into_iter().map(|s| format!("snapshots/{s}"));
        Ok(snaps.chain(state.hidden_deltas().into_iter().map(|d| format!("index/{d}"))).collect())
    }

    /// The index deltas and snapshot records the last sync found damaged,
    /// from the catalog (no store read), sorted by name.
    pub fn damaged_records(&self) -> Result<Vec<DamagedRecord>> {
        let mut out: Vec<DamagedRecord> = self
            .catalog
            .damaged()?
            .into_iter()
            .map(|Damage { object: name, why }| DamagedRecord {
                object: format!("tenants/{}/{name}", self.scope.tenant()),
                name,
                why,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// [`Repo::damaged_records`] of snapshot records only.
    pub fn damaged_snapshot_records(&self) -> Result<Vec<DamagedRecord>> {
        Ok(self.damaged_records()?.into_iter().filter(DamagedRecord::is_snapshot).collect())
    }

    /// Fails, naming them, when the last sync found damaged index deltas
    /// or snapshot records: `what` (say "prune") must not run while they
    /// hide which snapshots exist or which packs hold live blobs.
    pub fn refuse_damaged_records(&self, what: &str) -> Result<()> {
        let damaged = self.damaged_records()?;
        if damaged.is_empty() {
            return Ok(());
        }
        let mut advice = Vec::new();
        if damaged.iter().any(|d| !d.is_snapshot()) {
            advice.push(
                "`strongroom repair index` indexes their packs again from the packs themselves and removes the \
                 damaged index deltas",
            );
        }
        if damaged.iter().any(DamagedRecord::is_snapshot) {
            advice.push("`strongroom repair snapshots --forget-damaged` removes the damaged snapshot records");
        }
        Err(Error::DamagedRecords {
            what: format!("{what} stopped before deleting anything: damaged records may hide data still in use"),
            objects: damaged.into_iter().map(DamagedRecord::into_damage).collect(),
            advice: format!("put the intact objects back, or: {}", advice.join("; ")),
        })
    }

    /// Reads a damaged index delta or snapshot record (`index/<id>`,
    /// `snapshots/<id>`) again and verifies it: what a command that
    /// deletes damaged records asks right before each deletion.
    pub async fn reverify(&self, name: &str) -> Result<Reverified> {
        match self.fetch_catalog_object(name).await {
            Ok(_) => Ok(Reverified::Intact),
            Err(Error::Store(crate::store::Error::NotFound { .. })) => Ok(Reverified::Gone),
            Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => Ok(Reverified::Damaged(damage_reason(&e))),
            Err(e) => Err(e),
        }
    }

    /// Deletes damaged records (after [`Repo::reverify`]) and drops them
    /// from the catalog's record of damage.
    pub async fn delete_damaged(&self, names: &[String]) -> Result<()> {
        for name in names {
            let (dir, hex_id) = name.split_once('/').unwrap_or(("", name));
            let kind = if dir == "index" { Kind::Index } else { Kind::Snapshots };
            self.scope.store().delete(&self.scope.path(kind, hex_id)).await?;
        }
        self.catalog.remove_damaged(names)?;
        Ok(())
    }

    /// Reads every index delta and snapshot record from the store and
    /// checks that each hashes to its name, opens and decodes, whatever the
    /// catalog already holds. Returns the damaged ones (store keys) with
    /// the reason.
    pub async fn verify_metadata(&self) -> Result<Vec<Damage>> {
        let mut names = Vec::new();
        for (kind, dir) in [(Kind::Index, "index"), (Kind::Snapshots, "snapshots")] {
            for l in self.scope.store().list(self.scope.tenant(), kind).await? {
                names.push(format!("{dir}/{}", l.name));
            }
        }
        // Each decoded object is dropped as soon as it is judged: memory
        // stays at SYNC_CONCURRENCY objects, whatever the repository size.
        let mut results = futures::stream::iter(names.into_iter().map(|name| async move {
            let r = self.fetch_catalog_object(&name).await.map(|_| ());
            (name, r)
        }))
        .buffer_unordered(SYNC_CONCURRENCY);
        let mut damaged = Vec::new();
        while let Some((name, r)) = results.next().await {
            match r {
                Ok(()) | Err(Error::Store(crate::store::Error::NotFound { .. })) => {}
                Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
                    damaged.push(Damage::new(format!("tenants/{}/{name}", self.scope.tenant()), damage_reason(&e)))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(damaged)
    }

    /// Clears the catalog and reads everything in again.
    pub async fn rebuild_catalog(&self) -> Result<SyncReport> {
        self.catalog.clear()?;
        let mut r = self.sync().await?;
        r.rebuilt = true;
        Ok(r)
    }

    /// Reads, checks and decodes an index delta or snapshot record (`index/NAME`
    /// or `snapshots/NAME`); with its size in the store.
    async fn fetch_catalog_object(&self, name: &str) -> Result<(Fetched, u64)> {
        let (dir, hex_id) = name.split_once('/').unwrap_or(("", name));
        let kind = if dir == "index" { Kind::Index } else { Kind::Snapshots };
        let path = self.scope.path(kind, hex_id);
        let bytes = self.scope.store().get(&path).await?;
        let size = bytes.len() as u64;
        let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
        if hex::encode(crypto::object_hash(&bytes)) != hex_id {
            return Err(damaged("content does not match its name".into()));
        }
        if kind == Kind::Index && self.is_put_only() {
            return Ok((Fetched::Index(self.open_dedup_section(&bytes, hex_id, path.as_ref())?), size));
        }
        if kind == Kind::Index {
            let packs = self.open_sealed(&bytes, INDEX_MAGIC, "index delta", path.as_ref())?;
            let packs = index::decode(&packs).map_err(|e| damaged(e.to_string()))?;
            self.check_dedup_section(&bytes, &packs, path.as_ref())?;
            Ok((Fetched::Index(packs), size))
        } else {
            let rec = self.open_sealed(&bytes, SNAPSHOT_MAGIC, "snapshot", path.as_ref())?;
            let record = fsnap::decode(&rec).map_err(|e| damaged(e.to_string()))?;
            let time_ns = crate::snapshot::parse_time(&record.time).map_err(|e| damaged(e.to_string()))?;
            let id = SnapshotId::from_hex(hex_id)?;
            Ok((Fetched::Snapshot(SnapshotRow { id, time_ns, record: rec }), size))
        }
    }

    /// A put-only host's reading of an index delta: the blob ids of its
    /// dedup section, as one placeholder pack named by the delta's id
    /// (offsets and lengths 0: the host reads no blob). A delta without
    /// a dedup section (written before it existed) gives none.
    fn open_dedup_section(&self, bytes: &[u8], hex_id: &str, path: &str) -> Result<Vec<PackEntry>> {
        let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
        let env = sealed::decode(bytes, INDEX_MAGIC, "index delta").map_err(|e| damaged(e.to_string()))?;
        let Some(ids) = env.open_dedup(self.scope.keys().dedup_key(), self.scope.tenant().as_str()) else {
            return Ok(Vec::new());
        };
        let ids = ids.map_err(|e| damaged(e.to_string()))?;
        let id = crate::id::PackId::from_hex(hex_id).map_err(|e| damaged(e.to_string()))?;
        let blobs = ids
            .into_iter()
            .map(|id| PackedBlob { kind: BlobKind::Data, id, offset: 0, length: 0, raw_len: 0 })
            .collect();
        Ok(vec![PackEntry { id, length: 0, key_generation: 0, blobs }])
    }

    /// A full key's check of an index delta's dedup section: it must list
    /// exactly the blobs of the delta's entries. Put-only hosts trust it
    /// to skip uploads, so one that lists a blob the entries lack (only a
    /// holder of the tenant's keys can write one: a put-only host) would
    /// make their backups refer to a blob nobody stored; the delta is then
    /// damaged, which `check` reports and which stops prune and `latest`.
    fn check_dedup_section(&self, bytes: &[u8], packs: &[PackEntry], path: &str) -> Result<()> {
        let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
        let env = sealed::decode(bytes, INDEX_MAGIC, "index delta").map_err(|e| damaged(e.to_string()))?;
        let Some(listed) = env.open_dedup(self.scope.keys().dedup_key(), self.scope.tenant().as_str()) else {
            return Ok(());
        };
        let mut listed = listed.map_err(|e| damaged(e.to_string()))?;
        let mut entries: Vec<BlobId> = packs.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect();
        listed.sort_unstable();
        listed.dedup();
        entries.sort_unstable();
        entries.dedup();
        if listed != entries {
            return Err(damaged("its dedup section lists other blobs than its entries".into()));
        }
        Ok(())
    }

    /// Whether a put-only key opened the tenant.
    pub fn is_put_only(&self) -> bool {
        self.scope.keys().is_put_only()
    }

    /// Refuses a put-only host ([`Error::PutOnly`]): for what only a full
    /// key may do.
    pub fn refuse_put_only(&self) -> Result<()> {
        if self.is_put_only() {
            return Err(Error::PutOnly { tenant: self.scope.tenant().to_string() });
        }
        Ok(())
    }

    fn open_sealed(&self, bytes: &[u8], magic: &[u8; 4], what: &'static str, path: &str) -> Result<Vec<u8>> {
        let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
        let env = sealed::decode(bytes, magic, what).map_err(|e| damaged(e.to_string()))?;
        let dk = self
            .scope
            .keys()
            .data_key(env.key_generation)
            .ok_or_else(|| damaged(format!("sealed with unknown key generation {}", env.key_generation)))?;
        env.open(&dk.key, self.scope.tenant().as_str(), || path.to_string()).map_err(|e| damaged(e.to_string()))
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.catalog.snapshots()?.into_iter().filter_map(decode_row).collect())
    }

    /// The newest snapshot that `wanted` accepts, decoding no more
    /// snapshots than it must (see [`Catalog::find_newest_snapshot`]).
    pub fn find_newest_snapshot(&self, wanted: impl Fn(&Snapshot) -> bool) -> Result<Option<Snapshot>> {
        Ok(self.catalog.find_newest_snapshot(|row| decode_row(row).filter(|s| wanted(s)))?)
    }

    /// Resolves a snapshot reference, `latest` within the group `pick`
    /// chooses; see [`crate::snapshot::resolve`] (a damaged snapshot
    /// record stops `latest`).
    pub fn resolve(&self, reference: &str, at: Option<i64>, pick: &crate::snapshot::Pick<'_>) -> Result<Snapshot> {
        let snaps = self.snapshots()?;
        let damaged: Vec<Damage> =
            self.damaged_snapshot_records()?.into_iter().map(DamagedRecord::into_damage).collect();
        crate::snapshot::resolve(&snaps, &damaged, reference, at, pick).cloned()
    }

    /// Where a blob is, from the catalog.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.catalog.lookup(id)?.ok_or_else(|| Error::BlobNotFound { id: id.to_hex() })
    }

    /// Reads, opens and verifies one blob.
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_located(&self.locate(id)?).await
    }

    /// [`Repo::read_blob`] of a blob already located.
    async fn read_located(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        let path = self.scope.path(Kind::Packs, &loc.pack.to_hex());
        let start = loc.blob.offset as u64;
        let bytes = self.scope.store().get_range(&path, start..start + loc.blob.length as u64).await?;
        self.open_blob(loc, &bytes)
    }

    /// Opens and verifies a blob's stored bytes.
    pub fn open_blob(&self, loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>> {
        let dk = self.blob_key(loc)?;
        Ok(blob::open(self.scope.keys(), &dk.key, loc.blob.kind, &loc.blob.id, stored, loc.blob.raw_len)?)
    }

    /// [`Repo::open_blob`] into reused buffers (see [`blob::open_with`]).
    pub fn open_blob_with<'a>(
        &self,
        loc: &BlobLocation,
        stored: &[u8],
        bufs: &'a mut blob::OpenBuffers,
    ) -> Result<&'a [u8]> {
        let dk = self.blob_key(loc)?;
        Ok(blob::open_with(self.scope.keys(), &dk.key, loc.blob.kind, &loc.blob.id, stored, loc.blob.raw_len, bufs)?)
    }

    fn blob_key(&self, loc: &BlobLocation) -> Result<&crate::crypto::DataKey> {
        self.scope.keys().data_key(loc.key_generation).ok_or_else(|| Error::Damaged {
            object: format!("pack {}", loc.pack),
            why: format!("sealed with unknown key generation {}", loc.key_generation),
        })
    }

    /// Loads and decodes a tree blob.
    pub async fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        self.load_tree_via(None, id).await
    }

    /// [`Repo::load_tree`], located through `reader`: a walk of many trees
    /// takes one catalog read transaction, not one per tree (they were a
    /// third of planning a restore).
    pub async fn load_tree_in(&self, reader: &catalog::Reader, id: &BlobId) -> Result<Tree> {
        self.load_tree_via(Some(reader), id).await
    }

    async fn load_tree_via(&self, reader: Option<&catalog::Reader>, id: &BlobId) -> Result<Tree> {
        if self.is_put_only() {
            return self.load_own_tree(id);
        }
        let found = match reader {
            Some(r) => r.lookup(id)?,
            None => self.catalog.lookup(id)?,
        };
        let loc = found.ok_or_else(|| Error::BlobNotFound { id: id.to_hex() })?;
        let bytes = self.read_tree(&loc).await?;
        Ok(crate::codec::tree::decode(&bytes)?)
    }

    /// A put-only host's trees are never the store's ([`crate::put_only`]):
    /// where it kept them, each in its dedup index (else `BlobNotFound`),
    /// with the files whose chunks it does not list left out (they are
    /// then read again, as new).
    fn load_own_tree(&self, id: &BlobId) -> Result<Tree> {
        let missing = || Error::BlobNotFound { id: id.to_hex() };
        let trees = self.own_trees().ok_or_else(missing)?;
        let bytes = trees.load(self.scope.keys(), id).ok_or_else(missing)?;
        let reader = self.catalog.reader()?;
        if reader.lookup(id)?.is_none() {
            return Err(missing());
        }
        let mut t = crate::codec::tree::decode(&bytes)?;
        let mut kept = Vec::with_capacity(t.len());
        for node in t.drain(..) {
            if let NodeKind::File { content } = &node.kind {
                let mut all = true;
                for c in content {
                    if reader.lookup(c)?.is_none() {
                        all = false;
                        break;
                    }
                }
                if !all {
                    continue;
                }
            }
            kept.push(node);
        }
        Ok(kept)
    }

    /// Where a put-only host keeps the trees it writes (`None` for a
    /// full key, which reads them from the store).
    pub fn own_trees(&self) -> Option<crate::put_only::OwnTrees> {
        self.is_put_only().then(|| crate::put_only::OwnTrees::new(self.cache_dir.join("trees")))
    }

    /// Walking many trees (a backup's parent, prune, check, restore):
    /// read tree packs whole, once, keep them on disk for later commands,
    /// and serve tree reads from them, instead of one ranged read per
    /// directory. Off by default, as a single `ls` of a remote repository
    /// would rather read one tree than a whole pack; tree packs already
    /// on disk are used either way.
    pub fn set_tree_pack_cache(&self, on: bool) {
        self.tree_packs.enabled.store(on, std::sync::atomic::Ordering::Relaxed);
        if !on {
            self.tree_packs.packs.clear();
        }
    }

    fn tree_pack_cache_enabled(&self) -> bool {
        self.tree_packs.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Trees are read from the store, never from the disk cache of tree
    /// packs (which still keeps what is read): for `check`, which judges
    /// the store, not this host's copy of it.
    pub fn read_trees_from_store(&self) {
        self.tree_packs.disk_reads.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn tree_disk_reads(&self) -> bool {
        self.tree_packs.disk_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A tree blob, from its whole pack in memory or on disk (read whole
    /// from the store when a walk wants it), else by a ranged read.
    async fn read_tree(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        let whole = self.tree_pack_cache_enabled() || (self.tree_disk_reads() && self.tree_packs.disk.holds(&loc.pack));
        if loc.blob.kind != crate::codec::pack::BlobKind::Tree || !whole {
            return self.read_located(loc).await;
        }
        // A failed read is not cached: the next walk that wants the pack
        // tries again.
        let pack = self.tree_packs.packs.get_or_insert_async(&loc.pack, self.fetch_tree_pack(loc.pack)).await?;
        let start = loc.blob.offset as usize;
        let stored = pack.get(start..start + loc.blob.length as usize).ok_or_else(|| Error::Damaged {
            object: format!("pack {}", loc.pack),
            why: format!("{} bytes, blob {} lies outside it", pack.len(), loc.blob.id.short()),
        })?;
        self.open_blob(loc, stored)
    }

    /// A whole tree pack: from the disk cache when it holds it intact
    /// (as long as the catalog says), else from the store, then kept on
    /// disk.
    async fn fetch_tree_pack(&self, id: crate::id::PackId) -> Result<Bytes> {
        let len = match self.catalog.pack(&id) {
            Ok(Some(info)) if self.tree_disk_reads() => Some(info.length),
            _ => None,
        };
        if let Some(len) = len {
            let disk = self.tree_packs.disk.clone();
            if let Ok(Some(pack)) = tokio::task::spawn_blocking(move || disk.load(&id, len)).await {
                return Ok(pack);
            }
        }
        let pack = self.scope.store().get(&self.scope.path(Kind::Packs, &id.to_hex())).await?;
        self.keep_tree_pack(id, pack.clone()).await;
        Ok(pack)
    }

    /// Writes a tree pack to the disk cache (off the runtime's threads);
    /// a failed write only costs a download next time.
    async fn keep_tree_pack(&self, id: crate::id::PackId, pack: Bytes) {
        let disk = self.tree_packs.disk.clone();
        let _ = tokio::task::spawn_blocking(move || disk.save(&id, &pack)).await;
    }

    /// Drops tree packs the catalog no longer lists (pruned or repacked,
    /// here or by another host) from the disk cache, then the least
    /// recently used beyond its bound. A file the catalog cannot judge is
    /// kept.
    pub fn trim_tree_cache(&self) -> tree_cache::Trimmed {
        use crate::codec::pack::BlobKind;
        let listed = |id: &crate::id::PackId| match self.catalog.pack(id) {
            Ok(Some(info)) => info.kind == BlobKind::Tree,
            Ok(None) => false,
            Err(_) => true,
        };
        self.tree_packs.disk.trim(&listed)
    }

    /// Removes packs from the disk cache of tree packs (prune deleted them).
    pub fn forget_cached_tree_packs(&self, ids: &[crate::id::PackId]) {
        for id in ids {
            self.tree_packs.disk.remove(id);
        }
    }

    /// Finds the node at `path` below the tree `root`. `None` means the
    /// root itself (an empty path).
    pub async fn find(&self, root: &BlobId, path: &str, snapshot: &SnapshotId) -> Result<Option<Node>> {
        let comps = tree::components(path);
        let mut current = *root;
        let mut found = None;
        for (i, c) in comps.iter().enumerate() {
            let t = self.load_tree(&current).await?;
            let node = tree::find(&t, c.as_bytes())
                .ok_or_else(|| Error::PathNotFound { path: path.to_string(), snapshot: snapshot.short() })?
                .clone();
            if i + 1 < comps.len() {
                match node.kind {
                    NodeKind::Dir { subtree } => current = subtree,
                    _ => return Err(Error::PathNotFound { path: path.to_string(), snapshot: snapshot.short() }),
                }
            }
            found = Some(node);
        }
        Ok(found)
    }

    /// Uploads a pack and checks that the store holds all of it (see
    /// [`Store::create_stored_size`]) before an index delta names it.
    pub async fn save_pack(&self, pack: FinishedPack, key_generation: u32) -> Result<PackEntry> {
        let path = self.scope.path(Kind::Packs, &pack.id.to_hex());
        let len = pack.bytes.len() as u64;
        // A host's own trees never need downloading: its tree packs are
        // written through to the disk cache.
        let tree = (pack.kind == crate::codec::pack::BlobKind::Tree).then(|| pack.bytes.clone());
        let stored = self.scope.store().create_stored_size(&path, pack.bytes).await?;
        if stored != len {
            return Err(Error::Damaged { object: path.to_string(), why: format!("stored {stored} bytes of {len}") });
        }
        if let Some(bytes) = tree {
            self.keep_tree_pack(pack.id, bytes).await;
        }
        Ok(PackEntry { id: pack.id, length: len, key_generation, blobs: pack.blobs })
    }

    /// Writes an index delta for packs already stored, then records it in
    /// the catalog. Returns the id and the stored size.
    pub async fn save_index(&self, packs: Vec<PackEntry>) -> Result<(IndexId, u64)> {
        let mut staged = self.catalog.stage();
        for p in packs {
            staged.add_unstaged(p);
        }
        self.save_staged_index(staged).await
    }

    /// Writes the index delta of a [`catalog::Staged`] write's packs, then
    /// commits it to the catalog.
    pub async fn save_staged_index(&self, staged: catalog::Staged<'_>) -> Result<(IndexId, u64)> {
        let dk = self.data_key()?;
        let payload = index::encode(staged.packs());
        let ids: Vec<BlobId> = staged.packs().iter().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect();
        let keys = self.scope.keys();
        let obj =
            sealed::seal_index(dk.generation, &dk.key, keys.dedup_key(), self.scope.tenant().as_str(), &payload, &ids);
        let id = IndexId(crypto::object_hash(&obj));
        let size = obj.len() as u64;
        self.scope
            .store()
            .create_content_addressed(&self.scope.path(Kind::Index, &id.to_hex()), Bytes::from(obj))
            .await?;
        staged.commit((format!("index/{}", id.to_hex()), size))?;
        Ok((id, size))
    }

    /// Writes a snapshot record (the commit point), then records it in the
    /// catalog.
    pub async fn save_snapshot(&self, record: &SnapshotRecord) -> Result<SnapshotId> {
        let dk = self.data_key()?;
        let payload = fsnap::encode(record);
        fsnap::decode(&payload)?;
        let time_ns = crate::snapshot::parse_time(&record.time)?;
        let obj = sealed::seal(SNAPSHOT_MAGIC, dk.generation, &dk.key, self.scope.tenant().as_str(), &payload);
        let id = SnapshotId(crypto::object_hash(&obj));
        let size = obj.len() as u64;
        self.scope
            .store()
            .create_content_addressed(&self.scope.path(Kind::Snapshots, &id.to_hex()), Bytes::from(obj))
            .await?;
        self.catalog.apply(&catalog::Batch {
            synced: vec![(format!("snapshots/{}", id.to_hex()), size)],
            packs: vec![],
            snapshots: vec![SnapshotRow { id, time_ns, record: payload }],
        })?;
        Ok(id)
    }

    /// Reads, verifies and decodes one index delta (by its hex id).
    pub async fn load_index(&self, hex_id: &str) -> Result<Vec<PackEntry>> {
        match self.fetch_catalog_object(&format!("index/{hex_id}")).await?.0 {
            Fetched::Index(p) => Ok(p),
            Fetched::Snapshot(_) => Err(Error::Internal(format!("index/{hex_id}: decoded as a snapshot record"))),
        }
    }

    /// The data key generation a sealed index delta or snapshot record was
    /// sealed with (read from its 9-byte envelope header).
    pub async fn sealed_generation(&self, kind: Kind, name: &str) -> Result<u32> {
        let path = self.scope.path(kind, name);
        let head = self.scope.store().get_range(&path, 0..sealed::HEADER_LEN as u64).await?;
        let magic = if kind == Kind::Index { INDEX_MAGIC } else { SNAPSHOT_MAGIC };
        sealed::decode_generation(&head, magic, "sealed object")
            .map_err(|e| Error::Damaged { object: path.to_string(), why: e.to_string() })
    }

    /// Deletes snapshot records (forget), then drops them from the catalog.
    /// Data stays until `prune`.
    pub async fn forget(&self, ids: &[SnapshotId]) -> Result<()> {
        for id in ids {
            self.scope.store().delete(&self.scope.path(Kind::Snapshots, &id.to_hex())).await?;
        }
        self.catalog.remove_snapshots(ids)?;
        Ok(())
    }

    /// Total bytes of every object of this tenant in the store.
    pub async fn stored_bytes(&self) -> Result<u64> {
        Ok(self.scope.store().list_tenant_all(self.scope.tenant()).await?.iter().map(|(_, s)| s).sum())
    }
}

enum Fetched {
    Index(Vec<PackEntry>),
    Snapshot(SnapshotRow),
}

/// What is wrong with a damaged object, without its name (which
/// [`Error::Damaged`] puts first).
fn damage_reason(e: &Error) -> String {
    match e {
        Error::Damaged { why, .. } => why.clone(),
        e => e.to_string(),
    }
}

/// A catalog row's snapshot; a row that does not decode is skipped with a
/// warning (the catalog is rebuilt from the store by `catalog rebuild`).
fn decode_row(row: SnapshotRow) -> Option<Snapshot> {
    match fsnap::decode(&row.record) {
        Ok(record) => Some(Snapshot { id: row.id, time_ns: row.time_ns, record }),
        Err(e) => {
            tracing::warn!(snapshot = %row.id, "catalog row undecodable: {e}");
            None
        }
    }
}

/// Opens the catalog in `dir`, replacing a damaged or outdated file (it
/// is only a cache). When another process holds it (redb allows one
/// process per file), waits up to `lock_wait`, then uses a private
/// catalog built from the store for this process alone: slower to start,
/// never wrong. Repository-level conflicts are the job of `lock`.
async fn open_catalog(dir: &Path, lock_wait: std::time::Duration) -> Result<(Catalog, Option<PathBuf>)> {
    let path = dir.join("catalog.redb");
    let deadline = std::time::Instant::now() + lock_wait;
    loop {
        match Catalog::open(&path) {
            Ok(c) => return Ok((c, None)),
            Err(catalog::Error::InUse { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(catalog::Error::InUse { .. }) => {
                let temp = dir.join(format!(
                    "catalog-{}-{}.redb",
                    std::process::id(),
                    hex::encode(crypto::random_bytes::<4>())
                ));
                tracing::info!("catalog in use by another process; using a private one at {}", temp.display());
                return Ok((Catalog::open(&temp)?, Some(temp)));
            }
            Err(e) => {
                tracing::warn!("catalog unusable ({e}); rebuilding it from the store");
                std::fs::remove_file(&path).map_err(|io| Error::io(&path, io))?;
                return Ok((Catalog::open(&path)?, None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn opened_with_follows_the_secret_for_escrow() {
        use super::{opened_with, SlotKind};
        assert_eq!(opened_with(true, None), "escrow", "an escrow secret whose slot is not listed");
        assert_eq!(opened_with(false, Some(&SlotKind::KeyFile)), "key-file");
        assert_eq!(opened_with(false, None), "password");
    }
}
