//! Tenant lifecycle: passwords, escrow binding, settings (plan,
//! compression, quota), key rotation and erasure.
//!
//! Owns: keyring generations after the first (`rotate_key`,
//! `retire_keys`) and `tenants/<t>/meta` (the binding record's format and checks are [`crate::binding`]'s; key
//! slots, the repository's `escrow` object and the host's escrow key are
//! [`crate::keyslots`]'). Must not: read or write packs itself
//! (rewriting after a rotation is prune's repack, see [`crate::prune`]).
//! It may import `repo`; `repo` must not import it.
//!
//! **Invariants:** a tenant's master key is sealed only to the escrow key
//! its binding record names (never to a key read from the store alone); a
//! data key generation is deleted from the keyring only after no object
//! sealed with it remains; an erase deletes key slots first, so an
//! interrupted erase has already made the tenant unreadable.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::keyslot::{self, SlotKind};
use crate::codec::sealed::{self, KEYRING_MAGIC, ROTATION_MAGIC, SETTINGS_MAGIC};
use crate::crypto::{KdfParams, Key, KEY_LEN};
use crate::error::{Error, Result};
use crate::id::TenantName;
use crate::keyslots::{self, NewSlot, Secret};
use crate::repo::Repo;
use crate::retention::Plan;
use crate::scope::TenantScope;
use crate::store::{Kind, Store};

/// Name of the settings object under `meta/`.
const SETTINGS: &str = "settings";
/// Name of the rotation marker under `meta/`.
const ROTATION: &str = "rotation";

/// What happened to the tenant's escrow slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscrowSync {
    /// The tenant's binding record names no escrow key.
    None,
    /// The tenant already has a slot for the key its binding names.
    Present,
    /// A slot was added for the key the binding names (and slots for other
    /// escrow keys removed).
    Added,
}

/// Makes sure the tenant has an escrow slot for the escrow key its
/// binding record names, and for no other.
///
/// `host_key` is the escrow key the operator gave this host (`init
/// --escrow-key`, `escrow set`; see [`keyslots::host_escrow_key`]). When it differs
/// from the binding's, the binding is rewritten to name it first: the
/// operator's explicit setting on this host is what a tenant opened here
/// trusts. The root `escrow` object is never a source of trust: a key
/// there that differs from the binding's is only reported (a warning),
/// and only when `check_root` (the commands that manage tenants, escrow
/// and checks ask for it; the others save the request).
pub async fn escrow_sync(repo: &Repo, host_key: Option<&[u8; KEY_LEN]>, check_root: bool) -> Result<EscrowSync> {
    let mut bound = repo.binding().escrow();
    let mut rebound = false;
    if let Some(k) = host_key.filter(|k| bound.as_ref() != Some(*k)) {
        rebind_escrow(repo, Some(k)).await?;
        bound = Some(*k);
        rebound = true;
    }
    let root = if check_root { keyslots::escrow_load(repo.store()).await } else { Ok(None) };
    match root {
        Ok(Some(root)) if Some(root) != bound => {
            let trusted = match &bound {
                Some(k) => format!("key {}", keyslots::escrow_fingerprint(k)),
                None => "no escrow key".into(),
            };
            tracing::warn!(
                "the repository's escrow object names key {}, but tenant {} trusts {trusted}; no escrow slot is \
                 sealed to it (if it is the operator's, run `strongroom escrow set FILE` with the tenant's key)",
                keyslots::escrow_fingerprint(&root),
                repo.tenant()
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    let Some(public) = bound else {
        return Ok(EscrowSync::None);
    };
    // An open that read one slot by name would have to list them all to
    // see the escrow slot: skipped when this host saw it last time, except
    // for the commands that check the escrow set-up (`check_root`).
    let fingerprint = keyslots::escrow_fingerprint(&public);
    let seen = repo.host_memory().escrow_slot_seen(&fingerprint);
    if seen && !rebound && !check_root && !repo.has_all_key_slots() {
        return Ok(EscrowSync::Present);
    }
    // The slots unlock read a moment ago when it listed them all (no
    // second read on every open); else every slot, read now.
    let slots =
        &keyslots::all_slot_kinds(repo.store(), repo.tenant(), repo.key_slots(), repo.has_all_key_slots()).await?;
    let present = slots.iter().any(|(_, k)| matches!(k, SlotKind::Escrow { recipient, .. } if *recipient == public));
    if present && !rebound {
        repo.host_memory().note_escrow_slot(&fingerprint);
        return Ok(EscrowSync::Present);
    }
    if !present {
        let bytes = keyslot::wrap_escrow(repo.keys().master(), &public, keyslots::now_unix())?;
        let name = keyslots::new_slot_name();
        repo.store().create(&Store::path(repo.tenant(), Kind::Keys, &name), Bytes::from(bytes)).await?;
    }
    // Create first, delete after: slots for escrow keys the binding no
    // longer names (the operator rotated the key).
    for (old, kind) in slots {
        if matches!(kind, SlotKind::Escrow { recipient, .. } if *recipient != public) {
            match repo.store().delete(&Store::path(repo.tenant(), Kind::Keys, old)).await {
                Ok(()) => {}
                // A backup host may not delete: the old slot stays until a
                // command run with delete rights opens the tenant (it lists
                // the slots again: `check_root`).
                Err(e @ crate::store::Error::PermissionDenied { .. }) => {
                    tracing::warn!("escrow slot {old} of a replaced escrow key left in place for maintenance: {e}");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    repo.host_memory().note_escrow_slot(&fingerprint);
    Ok(if present { EscrowSync::Present } else { EscrowSync::Added })
}

/// Rewrites the tenant's binding record to name `escrow` as the escrow
/// key it trusts (one revision up). Adds no slot: [`escrow_sync`] does.
pub async fn rebind_escrow(repo: &Repo, escrow: Option<&[u8; KEY_LEN]>) -> Result<()> {
    let b = repo.binding().with_escrow(escrow);
    crate::binding::save(repo.store(), repo.tenant(), repo.keys(), &b, false).await?;
    repo.host_memory().note_binding(b.revision);
    repo.set_binding(b);
    Ok(())
}

/// Changes the password: wraps the master key under the new password in a
/// new slot with the old slot's label, then deletes the slot that opened
/// the tenant. Nothing else is rewritten.
pub async fn passwd(repo: &Repo, new: &Secret, kdf: KdfParams) -> Result<String> {
    let slots = keyslots::list_slots(repo.store(), repo.tenant()).await?;
    let old = slots.iter().find(|s| s.name == repo.opened_slot()).cloned();
    match old.as_ref().map(|s| &s.kind) {
        Some(SlotKind::Escrow { .. }) => {
            return Err(Error::invalid_input(
                "tenant passwd",
                "",
                "opened with the escrow secret: use `strongroom tenant key add` to give the tenant a new password",
            ))
        }
        Some(SlotKind::KeyFile) => {
            return Err(Error::invalid_input(
                "tenant passwd",
                "",
                "opened with a key file: `tenant passwd` changes a password; use `tenant key add` and \
                 `tenant key remove` to replace key-file slots",
            ))
        }
        _ => {}
    }
    let label = old.as_ref().map(|s| s.label.clone()).unwrap_or_else(|| "default".into());
    let name = keyslots::add_slot(repo.scope(), NewSlot::Password(new, kdf), &label).await?;
    if let Some(old) = old {
        repo.store().delete(&Store::path(repo.tenant(), Kind::Keys, &old.name)).await?;
    }
    Ok(name)
}

/// Per-tenant defaults, sealed with the tenant's metadata key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Retention plan `forget` applies when given no policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// zstd level for new data (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<i32>,
    /// Stored-bytes quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// How long forget and prune keep what they remove before a prune
    /// deletes it for good (`7d`, `12h`, `0` for at once); the default is
    /// [`crate::tombstone::DEFAULT_QUARANTINE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

impl Settings {
    /// The quarantine, parsed (None: not set).
    pub fn quarantine(&self) -> Result<Option<std::time::Duration>> {
        self.quarantine
            .as_deref()
            .map(|q| crate::units::parse_duration(q).map_err(|e| Error::invalid_input("quarantine", q, e.to_string())))
            .transpose()
    }

    /// The plan, parsed.
    pub fn plan(&self) -> Result<Option<Plan>> {
        self.plan.as_deref().map(str::parse::<Plan>).transpose()
    }
}

/// Reads the tenant's settings (defaults when none were set).
///
/// A put-only host cannot open them (they are sealed with the metadata
/// key): it gets the defaults, so a tenant's quota and compression
/// setting do not bind its backups.
pub async fn load_settings(scope: &TenantScope) -> Result<Settings> {
    if scope.keys().is_put_only() {
        return Ok(Settings::default());
    }
    let path = scope.path(Kind::Meta, SETTINGS);
    let Some(bytes) = scope.store().get_opt(&path).await? else { return Ok(Settings::default()) };
    let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
    let env = sealed::decode(&bytes, SETTINGS_MAGIC, "settings").map_err(|e| damaged(e.to_string()))?;
    let plain = env
        .open(scope.keys().meta_key(), scope.tenant().as_str(), || path.to_string())
        .map_err(|e| damaged(e.to_string()))?;
    let s: Settings = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
    s.plan().map_err(|e| damaged(e.to_string()))?;
    s.quarantine().map_err(|e| damaged(e.to_string()))?;
    Ok(s)
}

/// Writes the tenant's settings.
pub async fn save_settings(scope: &TenantScope, s: &Settings) -> Result<()> {
    s.plan()?;
    s.quarantine()?;
    if let Some(l) = s.compression {
        if !(0..=22).contains(&l) {
            return Err(Error::invalid_input("compression level", l.to_string(), "out of range 0..=22"));
        }
    }
    let payload = serde_json::to_vec(s).map_err(|e| Error::Internal(format!("tenant settings: {e}")))?;
    let obj = sealed::seal(SETTINGS_MAGIC, 0, scope.keys().meta_key(), scope.tenant().as_str(), &payload);
    scope.store().overwrite(&scope.path(Kind::Meta, SETTINGS), Bytes::from(obj)).await?;
    Ok(())
}

/// What an erase deleted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EraseSummary {
    /// Objects deleted.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Deletes every object of a tenant: key slots first (after which nothing
/// of it can be opened by anyone, escrow included), then keyrings, then the
/// rest. Running it again finishes an interrupted erase.
pub async fn erase(store: &Store, tenant: &TenantName) -> Result<EraseSummary> {
    let mut s = EraseSummary::default();
    let all = store.list_tenant_all(tenant).await?;
    let rank = |k: &str| {
        let dir = k.split('/').nth(2).unwrap_or("");
        match dir {
            "keys" => 0,
            "keyring" => 1,
            "meta" => 2,
            _ => 3,
        }
    };
    let mut all = all;
    all.sort_by_key(|(k, _)| rank(k.as_str()));
    for (key, size) in all {
        store.delete(&key).await?;
        s.objects += 1;
        s.bytes += size;
    }
    Ok(s)
}

/// Records at the repository root that `tenant` was erased (when, how
/// much): the tenant's own audit log is gone with it. Holds no tenant data
/// (the name was already visible in object keys) and nothing about the
/// eraser: the record is plaintext, since the tenant's keys are gone and
/// nothing could seal it to the tenant, so the host and user that older
/// versions wrote are left out.
pub async fn record_erasure(store: &Store, tenant: &TenantName, s: &EraseSummary) -> Result<()> {
    let now = jiff::Timestamp::now();
    let record = serde_json::json!({
        "tenant": tenant.as_str(),
        "time": now.to_string(),
        "objects_deleted": s.objects,
        "bytes_deleted": s.bytes,
    });
    let path = Store::erasure_path(tenant, now.as_second());
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(format!("tenant record: {e}")))?;
    store.create_content_addressed(&path, Bytes::from(bytes)).await?;
    Ok(())
}

/// The marker of a key rotation whose rewrite has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RotationMarker {
    /// Everything is being re-sealed to this generation.
    target: u32,
}

/// Generation a rewrite interrupted earlier was heading to, if any.
pub async fn pending_rotation(scope: &TenantScope) -> Result<Option<u32>> {
    let path = scope.path(Kind::Meta, ROTATION);
    let Some(bytes) = scope.store().get_opt(&path).await? else { return Ok(None) };
    let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
    let env = sealed::decode(&bytes, ROTATION_MAGIC, "rotation marker").map_err(|e| damaged(e.to_string()))?;
    let plain = env
        .open(scope.keys().meta_key(), scope.tenant().as_str(), || path.to_string())
        .map_err(|e| damaged(e.to_string()))?;
    let m: RotationMarker = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
    Ok(Some(m.target))
}

/// Records that a rewrite to `target` is under way.
pub async fn set_pending_rotation(scope: &TenantScope, target: u32) -> Result<()> {
    let payload =
        serde_json::to_vec(&RotationMarker { target }).map_err(|e| Error::Internal(format!("rotation marker: {e}")))?;
    let obj = sealed::seal(ROTATION_MAGIC, 0, scope.keys().meta_key(), scope.tenant().as_str(), &payload);
    scope.store().overwrite(&scope.path(Kind::Meta, ROTATION), Bytes::from(obj)).await?;
    Ok(())
}

/// Clears the rotation marker.
pub async fn clear_pending_rotation(scope: &TenantScope) -> Result<()> {
    scope.store().delete(&scope.path(Kind::Meta, ROTATION)).await?;
    Ok(())
}

/// Adds a new data key generation (all new writes use it; older ones stay
/// readable). Returns the new generation. The caller reloads the keys.
pub async fn rotate_key(repo: &Repo) -> Result<u32> {
    let current = repo.data_key()?.generation;
    let generation = current.checked_add(1).ok_or_else(|| Error::Internal("no key generation left".into()))?;
    let key = Key::random();
    let ring = sealed::encode_keyring(&[(generation, &key)]);
    let obj = sealed::seal(KEYRING_MAGIC, 0, repo.keys().keyring_key(), repo.tenant().as_str(), &ring);
    repo.store()
        .create(&Store::path(repo.tenant(), Kind::Keyring, &format!("{generation:08}")), Bytes::from(obj))
        .await?;
    Ok(generation)
}

/// Deletes keyring objects that hold only generations below `keep_from`.
/// Called once nothing sealed with those generations remains.
pub async fn retire_keys(repo: &Repo, keep_from: u32) -> Result<Vec<u32>> {
    let mut retired = Vec::new();
    for l in repo.store().list(repo.tenant(), Kind::Keyring).await? {
        let path = Store::path(repo.tenant(), Kind::Keyring, &l.name);
        // Drop keyrings are older than every own generation: the rewrite
        // re-sealed what they sealed. (A put-only backup that made one
        // before this rotation's lock checks at its own lock that it is
        // still there, and stops if not: see `Repo::sync`.)
        if let Some(hex_gen) = l.name.strip_prefix(crate::keyslots::DROP_KEYRING_PREFIX) {
            repo.store().delete(&path).await?;
            if let Ok(g) = u32::from_str_radix(hex_gen, 16) {
                retired.push(g);
            }
            continue;
        }
        let bytes = repo.store().get(&path).await?;
        let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
        let env = sealed::decode(&bytes, KEYRING_MAGIC, "keyring").map_err(|e| damaged(e.to_string()))?;
        let plain = zeroize::Zeroizing::new(
            env.open(repo.keys().keyring_key(), repo.tenant().as_str(), || path.to_string())
                .map_err(|e| damaged(e.to_string()))?,
        );
        let gens: Vec<u32> =
            sealed::decode_keyring(&plain).map_err(|e| damaged(e.to_string()))?.into_iter().map(|(g, _)| g).collect();
        if gens.iter().all(|g| *g < keep_from) {
            repo.store().delete(&path).await?;
            retired.extend(gens);
        }
    }
    retired.sort_unstable();
    Ok(retired)
}
