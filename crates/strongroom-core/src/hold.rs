//! Holds: snapshots that `forget` must keep (legal hold, pre-deploy copy),
//! and whose data `prune` therefore keeps too.
//!
//! A hold is one object `tenants/<t>/holds/<snapshot id hex>` holding a
//! sealed record (magic [`HOLD_MAGIC`], current data key, the tenant name
//! in the associated data) whose payload is the JSON of [`HoldRecord`]. The
//! reason never reaches the store in plaintext. Like lock records, hold
//! objects are mutable: adding a hold again overwrites the record with the
//! new reason.
//!
//! `add` and `remove` run under the tenant's exclusive lock (the caller
//! takes it), so a hold cannot appear or vanish while `forget` plans.
//! The retention planner ([`crate::retention::plan_forget`]) takes the map
//! [`held`] returns and keeps every snapshot in it; prune marks from the
//! snapshots that remain, so a held snapshot's data is never deleted.
//!
//! A hold object that cannot be read (damaged, or sealed with a key this
//! tenant lacks) still holds its snapshot: when in doubt, keep.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::sealed::{self, HOLD_MAGIC};
use crate::error::{Error, Result};
use crate::id::{hex_prefix_matches, SnapshotId};
use crate::scope::TenantScope;
use crate::snapshot::Snapshot;
use crate::store::Kind;

/// The sealed content of a hold object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// The held snapshot (hex); must equal the object's name.
    pub snapshot: String,
    /// Why the snapshot is held.
    pub reason: String,
    /// When the hold was (last) set, RFC 3339.
    pub created: String,
    /// Host that set it.
    pub hostname: String,
    /// User that set it.
    pub username: String,
}

/// A hold found in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// The held snapshot.
    #[serde(serialize_with = "hex_id")]
    pub snapshot: SnapshotId,
    /// Why it is held (for an unreadable record, a note saying so).
    pub reason: String,
    /// When the hold was set, RFC 3339 (empty if unreadable).
    pub created: String,
    /// Host that set it (empty if unreadable).
    pub hostname: String,
    /// User that set it (empty if unreadable).
    pub username: String,
    /// False when the record could not be opened; the hold still applies.
    pub readable: bool,
}

fn hex_id<S: serde::Serializer>(id: &SnapshotId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

fn path(scope: &TenantScope, id: &SnapshotId) -> crate::store::Key {
    scope.path(Kind::Holds, &id.to_hex())
}

/// Holds the snapshot `reference` (`latest`, an id or a unique prefix) for
/// `reason`; a hold already there gets the new reason. `resolve` turns the
/// reference into a snapshot (the caller's catalog knows them: say
/// `|r| repo.resolve(r, None)`). Caller holds the exclusive tenant lock,
/// with the catalog synced.
pub async fn add(
    scope: &TenantScope,
    reference: &str,
    reason: &str,
    resolve: impl FnOnce(&str) -> Result<Snapshot>,
) -> Result<Hold> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::invalid_input("hold reason", reason, "a hold needs one: use --reason TEXT"));
    }
    let snap = resolve(reference)?;
    let record = HoldRecord {
        snapshot: snap.id.to_hex(),
        reason: reason.to_string(),
        created: crate::snapshot::format_time(jiff::Timestamp::now().as_nanosecond() as i64),
        hostname: crate::source::hostname(),
        username: crate::source::username(),
    };
    let dk = scope.data_key()?;
    let payload = serde_json::to_vec(&record).map_err(|e| Error::Internal(format!("hold record: {e}")))?;
    let obj = sealed::seal(HOLD_MAGIC, dk.generation, &dk.key, scope.tenant().as_str(), &payload);
    scope.store().overwrite(&path(scope, &snap.id), Bytes::from(obj)).await?;
    Ok(Hold {
        snapshot: snap.id,
        reason: record.reason,
        created: record.created,
        hostname: record.hostname,
        username: record.username,
        readable: true,
    })
}

/// Releases the hold on `reference` (`latest`, or an id or unique prefix
/// among the held snapshots); returns the snapshot. `resolve` turns
/// `latest` into a snapshot, as for [`add`]. Caller holds the exclusive
/// tenant lock.
pub async fn remove(
    scope: &TenantScope,
    reference: &str,
    resolve: impl FnOnce(&str) -> Result<Snapshot>,
) -> Result<SnapshotId> {
    let held = held_ids(scope).await?;
    let id = if reference == "latest" {
        let snap = resolve(reference)?;
        if !held.contains(&snap.id) {
            return Err(Error::SnapshotRef(format!("snapshot {} is not held", snap.id.short())));
        }
        snap.id
    } else {
        if reference.len() < 4 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotRef(format!(
                "invalid snapshot reference {reference:?}: use latest, a full id or a prefix of 4+ hex digits"
            )));
        }
        let mut hits = held.iter().filter(|id| hex_prefix_matches(&id.0, &reference.to_ascii_lowercase()));
        match (hits.next(), hits.next()) {
            (Some(id), None) => *id,
            (None, _) => return Err(Error::SnapshotRef(format!("no held snapshot matches {reference:?}"))),
            (Some(_), Some(_)) => {
                return Err(Error::SnapshotRef(format!("held snapshot prefix {reference:?} is ambiguous")))
            }
        }
    };
    scope.store().delete(&path(scope, &id)).await?;
    Ok(id)
}

/// The snapshots with a hold object (names that are not snapshot ids are
/// skipped with a warning).
async fn held_ids(scope: &TenantScope) -> Result<Vec<SnapshotId>> {
    let mut out = Vec::new();
    for l in scope.store().list(scope.tenant(), Kind::Holds).await? {
        match SnapshotId::from_hex(&l.name) {
            Ok(id) => out.push(id),
            Err(_) => tracing::warn!(object = %l.name, "ignoring hold object whose name is not a snapshot id"),
        }
    }
    Ok(out)
}

/// Every hold of the tenant, oldest first. Needs no lock.
pub async fn list(scope: &TenantScope) -> Result<Vec<Hold>> {
    let mut out = Vec::new();
    for id in held_ids(scope).await? {
        let p = path(scope, &id);
        // None: removed since the listing.
        let Some(bytes) = scope.store().get_opt(&p).await? else { continue };
        match open(scope, &id, &bytes) {
            Ok(r) => out.push(Hold {
                snapshot: id,
                reason: r.reason,
                created: r.created,
                hostname: r.hostname,
                username: r.username,
                readable: true,
            }),
            Err(why) => {
                tracing::warn!(object = %p, "unreadable hold record (the snapshot stays held): {why}");
                out.push(Hold {
                    snapshot: id,
                    reason: format!("unreadable hold record ({why})"),
                    created: String::new(),
                    hostname: String::new(),
                    username: String::new(),
                    readable: false,
                });
            }
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.snapshot.0.cmp(&b.snapshot.0)));
    Ok(out)
}

/// Held snapshots with their reasons: the map the retention planner takes.
pub async fn held(scope: &TenantScope) -> Result<HashMap<SnapshotId, String>> {
    Ok(list(scope).await?.into_iter().map(|h| (h.snapshot, h.reason)).collect())
}

fn open(scope: &TenantScope, id: &SnapshotId, bytes: &[u8]) -> std::result::Result<HoldRecord, String> {
    let env = sealed::decode(bytes, HOLD_MAGIC, "hold").map_err(|e| e.to_string())?;
    // Holds are set with a full key only: one sealed with a drop
    // generation was written by a put-only host (or with its key), and is
    // not trusted as a record (it still counts as an unreadable hold).
    if crate::crypto::is_drop_generation(env.key_generation) {
        return Err("sealed by a put-only host, which cannot set holds".into());
    }
    let dk = scope
        .keys()
        .data_key(env.key_generation)
        .ok_or_else(|| format!("sealed with unknown key generation {}", env.key_generation))?;
    let plain =
        env.open(&dk.key, scope.tenant().as_str(), || format!("hold {}", id.short())).map_err(|e| e.to_string())?;
    let record: HoldRecord = serde_json::from_slice(&plain).map_err(|e| format!("bad record: {e}"))?;
    // The name is not authenticated; the record names its snapshot, so a
    // record copied to another name is caught here.
    if record.snapshot != id.to_hex() {
        return Err(format!("record is for snapshot {}", record.snapshot));
    }
    Ok(record)
}

/// Moves the hold of `old` (if any) to `new`, sealed under the current
/// data key: used when a snapshot record is re-sealed (key rotation) and
/// so gets a new id. An unreadable hold still moves, with a note.
pub async fn move_hold(scope: &TenantScope, old: &SnapshotId, new: &SnapshotId) -> Result<bool> {
    let old_path = path(scope, old);
    let Some(bytes) = scope.store().get_opt(&old_path).await? else { return Ok(false) };
    let mut record = open(scope, old, &bytes).unwrap_or_else(|why| HoldRecord {
        snapshot: old.to_hex(),
        reason: format!("carried over from an unreadable hold record ({why})"),
        created: crate::snapshot::format_time(jiff::Timestamp::now().as_nanosecond() as i64),
        hostname: crate::source::hostname(),
        username: crate::source::username(),
    });
    record.snapshot = new.to_hex();
    let dk = scope.data_key()?;
    let payload = serde_json::to_vec(&record).map_err(|e| Error::Internal(format!("hold record: {e}")))?;
    let obj = sealed::seal(HOLD_MAGIC, dk.generation, &dk.key, scope.tenant().as_str(), &payload);
    scope.store().overwrite(&path(scope, new), Bytes::from(obj)).await?;
    scope.store().delete(&old_path).await?;
    Ok(true)
}

/// Re-seals every hold under the current data key (key rotation).
pub async fn reseal_all(scope: &TenantScope) -> Result<u64> {
    let mut n = 0;
    for id in held_ids(scope).await? {
        let p = path(scope, &id);
        let Some(bytes) = scope.store().get_opt(&p).await? else { continue };
        let env = sealed::decode(&bytes, HOLD_MAGIC, "hold")
            .map_err(|e| Error::Damaged { object: p.to_string(), why: e.to_string() })?;
        let dk = scope.data_key()?;
        if env.key_generation == dk.generation {
            continue;
        }
        let record = open(scope, &id, &bytes).map_err(|why| Error::Damaged { object: p.to_string(), why })?;
        let payload = serde_json::to_vec(&record).map_err(|e| Error::Internal(format!("hold record: {e}")))?;
        let obj = sealed::seal(HOLD_MAGIC, dk.generation, &dk.key, scope.tenant().as_str(), &payload);
        scope.store().overwrite(&p, Bytes::from(obj)).await?;
        n += 1;
    }
    Ok(n)
}

/// What setting or clearing S3 legal holds did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LegalHolds {
    /// Objects whose legal hold was set (add) or cleared (remove).
    pub objects: u64,
    /// Objects left held because another held snapshot reaches them
    /// (remove only).
    pub still_held: u64,
}

/// The store objects a snapshot needs: its record, every pack its tree
/// reaches (trees and file contents) and every index delta listing one
/// of those packs.
async fn reached_objects(
    repo: &crate::repo::Repo,
    id: &SnapshotId,
) -> Result<std::collections::BTreeSet<crate::store::Key>> {
    use crate::store::Store;
    let snap = repo
        .snapshots()?
        .into_iter()
        .find(|s| &s.id == id)
        .ok_or_else(|| Error::invalid_input("snapshot", id.to_hex(), "not in the catalog"))?;
    let tenant = repo.tenant();
    let mut packs = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![snap.record.tree];
    while let Some(tree_id) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        packs.insert(repo.locate(&tree_id)?.pack);
        for node in repo.load_tree(&tree_id).await? {
            match node.kind {
                crate::tree::NodeKind::Dir { subtree } => stack.push(subtree),
                crate::tree::NodeKind::File { content } => {
                    for b in content {
                        packs.insert(repo.locate(&b)?.pack);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    out.insert(Store::path(tenant, Kind::Snapshots, &id.to_hex()));
    for name in repo.store().list_names(tenant, Kind::Index).await? {
        if repo.load_index(&name).await?.iter().any(|p| packs.contains(&p.id)) {
            out.insert(Store::path(tenant, Kind::Index, &name));
        }
    }
    out.extend(packs.iter().map(|p| Store::path(tenant, Kind::Packs, &p.to_hex())));
    Ok(out)
}

/// Under object lock, sets (`on`) or clears the S3 legal hold on the
/// objects snapshot `id` needs ([`reached_objects`]); clearing leaves
/// held what another held snapshot needs. `None` without object lock.
/// Caller holds the exclusive tenant lock, after [`add`] or [`remove`].
pub async fn set_legal_holds(repo: &crate::repo::Repo, id: &SnapshotId, on: bool) -> Result<Option<LegalHolds>> {
    let Some(retain) = repo.store().retention() else { return Ok(None) };
    let mut objects = reached_objects(repo, id).await?;
    let mut out = LegalHolds::default();
    if !on {
        for other in held_ids(repo.scope()).await? {
            if &other == id || !repo.snapshots()?.iter().any(|s| s.id == other) {
                continue;
            }
            for k in reached_objects(repo, &other).await? {
                if objects.remove(&k) {
                    out.still_held += 1;
                }
            }
        }
    }
    for k in &objects {
        retain.client().put_legal_hold(k.as_str(), None, on).await?;
        out.objects += 1;
    }
    Ok(Some(out))
}
