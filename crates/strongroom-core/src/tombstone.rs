//! Deletion with a quarantine: tombstones, their final deletion, and
//! `undelete`.
//!
//! `forget` and `prune` delete nothing at once. What they would delete
//! (snapshot records; packs and index deltas) is named by a tombstone,
//! `tenants/<t>/tombstones/<hash>` (sealed with the metadata key, see
//! [`crate::codec::tombstone`]), and deleted by a later prune once the
//! quarantine has passed *by the store's clock*: a tombstone's age is the
//! store's current time (the modification time the store gives an object
//! we just wrote) minus the modification time the store gave the
//! tombstone. No host clock enters the decision.
//!
//! Readers ([`State`]): a snapshot named by a forget tombstone is
//! forgotten (the catalog does not list it, so `snapshots`, `latest`,
//! `restore` and retention do not see it); an index delta named by a prune
//! tombstone is not read into the catalog (its replacement, written
//! before the tombstone, lists the packs still in use); a pack named by a
//! prune tombstone stays readable but is indexed by no live delta. An
//! undelete record voids the tombstones it names (for the snapshots it
//! names; a prune tombstone as a whole), so a tombstone replayed by the
//! store (the same bytes under the same name) stays void.
//!
//! **Invariant:** a tombstone that cannot be read or opened hides nothing
//! and lets nothing be deleted: while one exists, prune deletes no
//! quarantined object ("when in doubt, keep").
//!
//! Final deletion ([`finalize`]) rechecks at deletion time, under the
//! exclusive lock, instead of trusting the tombstone's list: a snapshot
//! record is deleted only while it is still forgotten; a pack only when no
//! live index delta lists it (so no live snapshot reaches it); nothing at
//! all while a held snapshot is forgotten. Order: snapshot records, index
//! deltas, packs, then the tombstones; a crash leaves a tombstone whose
//! objects are partly gone, which the next prune finishes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;

use crate::codec::sealed::{self, TOMBSTONE_MAGIC};
use crate::codec::tombstone::{self as ftomb, Action, Tombstone};
use crate::crypto;
use crate::error::{Damage, Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repo;
use crate::scope::TenantScope;
use crate::store::Kind;

/// The quarantine when neither the tenant's settings nor a flag set one.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(7 * 86_400);

/// One tombstone as listed and read.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name (the hash of its bytes, hex).
    pub name: String,
    /// When the store wrote it, Unix ms by the store's clock.
    pub modified_ms: i64,
    /// Its content, or why it cannot be read.
    pub content: std::result::Result<Tombstone, String>,
}

/// Every tombstone of a tenant, and what they hide.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The tombstones, by name.
    pub entries: Vec<Entry>,
    /// (tombstone, snapshot) pairs voided by undelete records.
    voided_for: HashSet<(String, String)>,
    /// Tombstones voided by an undelete record (a prune tombstone named
    /// there is void as a whole).
    voided: HashSet<String>,
}

/// A forgotten snapshot, still in quarantine or past it but not yet deleted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Forgotten {
    /// The snapshot id (hex).
    pub snapshot: String,
    /// The oldest forget tombstone naming it.
    pub tombstone: String,
    /// When it was forgotten, Unix ms by the store's clock.
    pub forgotten_ms: i64,
}

impl State {
    /// Lists and reads the tenant's tombstones.
    pub async fn load(scope: &TenantScope) -> Result<State> {
        let listed = scope.store().list(scope.tenant(), Kind::Tombstones).await?;
        let mut entries = Vec::with_capacity(listed.len());
        for l in listed {
            let path = scope.path(Kind::Tombstones, &l.name);
            let Some(bytes) = scope.store().get_opt(&path).await? else { continue };
            entries.push(Entry { content: open(scope, &l.name, &bytes), name: l.name, modified_ms: l.modified_ms });
        }
        Ok(State::from_entries(entries))
    }

    /// The state the tombstones `entries` make.
    pub fn from_entries(mut entries: Vec<Entry>) -> State {
        entries.sort_by(|a, b| a.modified_ms.cmp(&b.modified_ms).then(a.name.cmp(&b.name)));
        let mut s = State { entries, ..Default::default() };
        for e in &s.entries {
            let Ok(t) = &e.content else { continue };
            if t.action != Action::Undelete {
                continue;
            }
            for v in &t.voids {
                s.voided.insert(v.clone());
                for snap in &t.snapshots {
                    s.voided_for.insert((v.clone(), snap.clone()));
                }
            }
        }
        s
    }

    fn readable(&self) -> impl Iterator<Item = (&Entry, &Tombstone)> {
        self.entries.iter().filter_map(|e| e.content.as_ref().ok().map(|t| (e, t)))
    }

    /// Whether prune tombstone `name` is in force (not voided).
    fn prune_in_force(&self, name: &str) -> bool {
        !self.voided.contains(name)
    }

    /// The forgotten snapshots, each with its oldest forget tombstone in
    /// force.
    pub fn forgotten(&self) -> Vec<Forgotten> {
        let mut out: HashMap<&str, Forgotten> = HashMap::new();
        for (e, t) in self.readable().filter(|(_, t)| t.action == Action::Forget) {
            for s in &t.snapshots {
                if self.voided_for.contains(&(e.name.clone(), s.clone())) {
                    continue;
                }
                // Entries are oldest first: the first one wins.
                out.entry(s.as_str()).or_insert_with(|| Forgotten {
                    snapshot: s.clone(),
                    tombstone: e.name.clone(),
                    forgotten_ms: e.modified_ms,
                });
            }
        }
        let mut v: Vec<Forgotten> = out.into_values().collect();
        v.sort_by(|a, b| a.forgotten_ms.cmp(&b.forgotten_ms).then(a.snapshot.cmp(&b.snapshot)));
        v
    }

    /// Snapshot ids (hex) that are forgotten.
    pub fn hidden_snapshots(&self) -> HashSet<String> {
        self.forgotten().into_iter().map(|f| f.snapshot).collect()
    }

    /// Every object the tombstones in force name: forgotten snapshot
    /// records, and the packs and index deltas of prune tombstones.
    pub fn named_objects(&self, scope: &TenantScope) -> Vec<crate::store::Key> {
        let mut out: Vec<crate::store::Key> =
            self.hidden_snapshots().iter().map(|s| scope.path(Kind::Snapshots, s)).collect();
        for (_, t) in self.in_force_prunes() {
            out.extend(t.packs.iter().map(|p| scope.path(Kind::Packs, p)));
            out.extend(t.index.iter().map(|d| scope.path(Kind::Index, d)));
        }
        out
    }

    /// How many forget and prune tombstones are in force: what a final
    /// deletion would still delete.
    pub fn in_quarantine(&self) -> usize {
        let forgets: HashSet<&str> = self.forgotten_tombstones();
        forgets.len() + self.in_force_prunes().count()
    }

    fn forgotten_tombstones(&self) -> HashSet<&str> {
        self.readable()
            .filter(|(e, t)| {
                t.action == Action::Forget
                    && t.snapshots.iter().any(|s| !self.voided_for.contains(&(e.name.clone(), s.clone())))
            })
            .map(|(e, _)| e.name.as_str())
            .collect()
    }

    /// Index deltas (hex) named by prune tombstones in force.
    pub fn hidden_deltas(&self) -> HashSet<String> {
        self.in_force_prunes().flat_map(|(_, t)| t.index.iter().cloned()).collect()
    }

    /// Packs (hex) named by prune tombstones in force.
    pub fn quarantined_packs(&self) -> HashSet<String> {
        self.in_force_prunes().flat_map(|(_, t)| t.packs.iter().cloned()).collect()
    }

    fn in_force_prunes(&self) -> impl Iterator<Item = (&Entry, &Tombstone)> {
        self.readable().filter(|(e, t)| t.action == Action::Prune && self.prune_in_force(&e.name))
    }

    /// The tombstones that cannot be read (store keys, with the reason).
    pub fn damaged(&self, scope: &TenantScope) -> Vec<Damage> {
        self.entries
            .iter()
            .filter_map(|e| {
                let why = e.content.as_ref().err()?;
                Some(Damage::new(scope.path(Kind::Tombstones, &e.name).to_string(), why.clone()))
            })
            .collect()
    }
}

/// Opens a tombstone's bytes: the name must be their hash, the envelope
/// must open with the metadata key (generation 0), the payload decode.
fn open(scope: &TenantScope, name: &str, bytes: &[u8]) -> std::result::Result<Tombstone, String> {
    if hex::encode(crypto::object_hash(bytes)) != name {
        return Err("content does not match its name".into());
    }
    let env = sealed::decode(bytes, TOMBSTONE_MAGIC, "tombstone").map_err(|e| e.to_string())?;
    if env.key_generation != 0 {
        return Err(format!("sealed with key generation {}, not the metadata key", env.key_generation));
    }
    let plain = env
        .open(scope.keys().meta_key(), scope.tenant().as_str(), || format!("tombstone {name}"))
        .map_err(|e| e.to_string())?;
    ftomb::decode(&plain).map_err(|e| e.to_string())
}

/// Seals and creates tombstone `t`; returns its name and the store's time
/// of it (Unix ms).
pub async fn write(scope: &TenantScope, t: Tombstone) -> Result<(String, i64)> {
    let t = t.normalize();
    let payload = ftomb::encode(&t);
    ftomb::decode(&payload)?;
    let obj = sealed::seal(TOMBSTONE_MAGIC, 0, scope.keys().meta_key(), scope.tenant().as_str(), &payload);
    let name = hex::encode(crypto::object_hash(&obj));
    let path = scope.path(Kind::Tombstones, &name);
    scope.store().create(&path, Bytes::from(obj)).await?;
    crate::testhook::pause("tombstone-written", &name);
    let (_, ms) = scope.store().head(&path).await?;
    Ok((name, ms))
}

/// A new tombstone of `action` by `command`.
pub fn new(action: Action, command: &str) -> Tombstone {
    Tombstone::new(action, command, crypto::random_bytes::<16>())
}

/// The store's current time (Unix ms): the modification time the store
/// gives a probe object written now (hidden from listings, then deleted).
pub async fn store_now(scope: &TenantScope) -> Result<i64> {
    let probe = scope.path(Kind::Tombstones, &format!(".probe-{}", hex::encode(crypto::random_bytes::<8>())));
    scope.store().overwrite_volatile(&probe, Bytes::from_static(b"probe")).await?;
    let now = scope.store().head(&probe).await;
    scope.store().delete(&probe).await?;
    Ok(now?.1)
}

/// Forgets snapshots `ids`: writes a forget tombstone naming them, then
/// drops them from the catalog. Returns the tombstone's name and store time.
pub async fn forget(repo: &Repo, ids: &[SnapshotId], command: &str) -> Result<(String, i64)> {
    let mut t = new(Action::Forget, command);
    t.snapshots = ids.iter().map(SnapshotId::to_hex).collect();
    let written = write(repo.scope(), t).await?;
    repo.catalog().remove_snapshots(ids)?;
    Ok(written)
}

/// Fails when a held snapshot is forgotten (a tombstone the store
/// replayed, or an undelete record deleted): its data would look unused.
/// Prune then deletes and quarantines nothing until it is undeleted.
pub fn refuse_held_forgotten(repo: &Repo, state: &State) -> Result<()> {
    let hidden = state.hidden_snapshots();
    if hidden.is_empty() {
        return Ok(());
    }
    let holds = repo.block_on(crate::hold::held(repo.scope()))?;
    match holds.keys().find(|id| hidden.contains(&id.to_hex())) {
        Some(id) => Err(Error::HeldForgotten { snapshot: id.short() }),
        None => Ok(()),
    }
}

/// What a prune did with tombstones.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Quarantine {
    /// The quarantine applied, seconds.
    pub quarantine_seconds: u64,
    /// The tombstone this prune wrote, if any.
    pub tombstone: Option<String>,
    /// Packs it quarantined.
    pub packs_quarantined: u64,
    /// Index deltas it quarantined (their replacements are written).
    pub index_quarantined: u64,
    /// When what it quarantined may be deleted, Unix ms (store clock).
    pub deletable_after_ms: Option<i64>,
    /// What the final deletion of earlier tombstones did.
    pub finalized: Finalized,
}

/// What the final deletion did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Finalized {
    /// Snapshot records deleted for good.
    pub snapshots_deleted: u64,
    /// Index deltas deleted for good.
    pub index_deleted: u64,
    /// Packs deleted for good.
    pub packs_deleted: u64,
    /// Bytes of packs deleted for good.
    pub bytes_deleted: u64,
    /// Packs named by a tombstone but kept: a live index delta lists them.
    pub packs_kept_live: u64,
    /// Tombstones deleted (everything they named is handled).
    pub tombstones_deleted: u64,
    /// Tombstones still in quarantine.
    pub tombstones_waiting: u64,
    /// The earliest time (Unix ms, store clock) a waiting tombstone may be
    /// finalized.
    pub next_deletable_ms: Option<i64>,
    /// Why nothing was finalized, when something stopped it.
    pub blocked: Option<String>,
}

/// Deletes for good what the tombstones of `state` older than `quarantine`
/// (at store time `now_ms`) name, after rechecking each object: see the
/// module docs. `live_packs` are the packs (hex) the live index deltas
/// list; `before_delete` is checked before each step (the lock).
pub fn finalize(
    repo: &Repo,
    state: &State,
    now_ms: i64,
    quarantine: Duration,
    live_packs: &HashSet<String>,
    before_delete: &dyn Fn() -> Result<()>,
    remove: &mut dyn FnMut(&crate::store::Key) -> Result<bool>,
) -> Result<Finalized> {
    let mut f = Finalized::default();
    let q_ms = i64::try_from(quarantine.as_millis()).unwrap_or(i64::MAX);
    let expired = |e: &Entry| now_ms.saturating_sub(e.modified_ms) >= q_ms;
    for e in state.entries.iter().filter(|e| e.content.as_ref().is_ok_and(|t| t.action != Action::Undelete)) {
        if !expired(e) {
            f.tombstones_waiting += 1;
            let at = e.modified_ms.saturating_add(q_ms);
            f.next_deletable_ms = Some(f.next_deletable_ms.map_or(at, |n| n.min(at)));
        }
    }
    let damaged = state.damaged(repo.scope());
    if let Some(d) = damaged.first() {
        f.blocked = Some(format!("tombstone {} cannot be read ({}): nothing quarantined is deleted", d.object, d.why));
        return Ok(f);
    }
    let hidden = state.hidden_snapshots();
    let holds = repo.block_on(crate::hold::held(repo.scope()))?;
    if let Some(held) = holds.keys().find(|id| hidden.contains(&id.to_hex())) {
        f.blocked = Some(format!(
            "snapshot {} is held but forgotten: nothing quarantined is deleted until it is undeleted",
            held.short()
        ));
        return Ok(f);
    }
    let due: Vec<(&Entry, &Tombstone)> =
        state.readable().filter(|(e, t)| t.action != Action::Undelete && expired(e)).collect();
    if due.is_empty() {
        return Ok(f);
    }
    let store = repo.store();
    let scope = repo.scope();
    let live_snapshots: HashSet<String> = repo.snapshots()?.iter().map(|s| s.id.to_hex()).collect();
    let prunes: Vec<&(&Entry, &Tombstone)> =
        due.iter().filter(|(e, t)| t.action == Action::Prune && state.prune_in_force(&e.name)).collect();
    // Recheck against the mark, not the tombstone's list: a quarantined
    // pack that holds a blob a live snapshot reaches, and that no live
    // pack holds, stays, with the deltas that list it.
    let needed = match needed_packs(repo, &prunes)? {
        Ok(needed) => needed,
        Err(why) => {
            f.blocked = Some(why);
            return Ok(f);
        }
    };
    // Tombstones naming an object the store still retains (object lock)
    // stay until a later prune deletes it.
    let mut retained: HashSet<String> = HashSet::new();
    // 1. Snapshot records still forgotten (and not live, nor held).
    before_delete()?;
    for (e, t) in due.iter().filter(|(_, t)| t.action == Action::Forget) {
        for s in &t.snapshots {
            let still = hidden.contains(s)
                && !state.voided_for.contains(&(e.name.clone(), s.clone()))
                && !live_snapshots.contains(s)
                && !holds.keys().any(|h| h.to_hex() == *s);
            if still {
                let path = scope.path(Kind::Snapshots, s);
                if repo.block_on(store.size_opt(&path))?.is_some() {
                    crate::testhook::pause("finalize-delete", "snapshot");
                    if remove(&path)? {
                        f.snapshots_deleted += 1;
                    } else {
                        retained.insert(e.name.clone());
                    }
                }
            }
        }
    }
    // 2. Index deltas of prune tombstones in force (hidden from the
    // catalog: their replacements list what is live).
    before_delete()?;
    for (e, t) in &prunes {
        for d in &t.index {
            if needed.1.contains(d) {
                continue;
            }
            let path = scope.path(Kind::Index, d);
            if repo.block_on(store.size_opt(&path))?.is_some() {
                crate::testhook::pause("finalize-delete", "index");
                if remove(&path)? {
                    f.index_deleted += 1;
                } else {
                    retained.insert(e.name.clone());
                }
            }
        }
    }
    // 3. Packs no live index delta lists.
    before_delete()?;
    let mut gone = Vec::new();
    // Under object lock, a snapshot record or index delta the store still
    // retains may name these packs (a record kept is undeletable data
    // `undelete` may bring back; a delta kept lists them): while any
    // is retained, no quarantined pack goes.
    let keep_packs = !retained.is_empty();
    for (e, t) in &prunes {
        if keep_packs {
            retained.insert(e.name.clone());
            continue;
        }
        for p in &t.packs {
            if live_packs.contains(p) || needed.0.contains(p) {
                f.packs_kept_live += 1;
                continue;
            }
            let path = scope.path(Kind::Packs, p);
            if let Some(size) = repo.block_on(store.size_opt(&path))? {
                crate::testhook::pause("finalize-delete", "pack");
                if !remove(&path)? {
                    retained.insert(e.name.clone());
                    continue;
                }
                f.packs_deleted += 1;
                f.bytes_deleted += size;
                if let Ok(id) = crate::id::PackId::from_hex(p) {
                    gone.push(id);
                }
            }
        }
    }
    repo.forget_cached_tree_packs(&gone);
    // 4. The tombstones themselves (undelete records stay: they keep a
    // replayed tombstone void); one naming a pack kept as needed stays.
    before_delete()?;
    let keeps = |t: &Tombstone| t.packs.iter().any(|p| needed.0.contains(p));
    for (e, _) in due.iter().filter(|(e, t)| !(retained.contains(&e.name) || keeps(t) && state.prune_in_force(&e.name)))
    {
        repo.block_on(store.delete(&scope.path(Kind::Tombstones, &e.name)))?;
        f.tombstones_deleted += 1;
    }
    Ok(f)
}

/// Quarantined packs a live snapshot still needs, and the index deltas
/// that list them (hex).
type Needed = (HashSet<String>, HashSet<String>);

/// The packs named by `prunes` that hold a blob the mark (prune's
/// `prune_used` table) holds and the catalog does not locate in a live
/// pack, with the index deltas that list them; `Err` (why) when a
/// quarantined delta cannot be read.
fn needed_packs(repo: &Repo, prunes: &[&(&Entry, &Tombstone)]) -> Result<std::result::Result<Needed, String>> {
    let used = repo.catalog().used_reader()?;
    let (mut packs, mut deltas) = (HashSet::new(), HashSet::new());
    for (_, t) in prunes {
        for d in &t.index {
            let entries = match repo.block_on(repo.load_index(d)) {
                Ok(entries) => entries,
                Err(Error::Store(crate::store::Error::NotFound { .. })) => continue,
                Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
                    return Ok(Err(format!("quarantined index delta {d} cannot be read ({e}): nothing is deleted")))
                }
                Err(e) => return Err(e),
            };
            for p in entries {
                let mut needed = false;
                for b in &p.blobs {
                    if used.contains(&b.id)? && repo.catalog().lookup(&b.id)?.is_none() {
                        needed = true;
                        break;
                    }
                }
                if needed {
                    packs.insert(p.id.to_hex());
                    deltas.insert(d.clone());
                }
            }
        }
    }
    Ok(Ok((packs, deltas)))
}

/// Which forgotten snapshots `undelete` brings back.
#[derive(Debug, Clone)]
pub enum UndeleteWhat {
    /// These (ids or unique prefixes of 4+ hex digits).
    Ids(Vec<String>),
    /// Every forgotten snapshot whose record is still in the store.
    All,
    /// Those forgotten at or after this time (Unix ms, store clock).
    Since(i64),
}

/// What `undelete` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Undeleted {
    /// The snapshots brought back.
    pub snapshots: Vec<Forgotten>,
    /// The undelete record written.
    pub record: Option<String>,
    /// Tombstones it voided (forget and prune).
    pub voided: Vec<String>,
    /// Quarantined packs indexed again.
    pub packs_restored: u64,
    /// Blobs the snapshots reach (all found in the index).
    pub blobs_checked: u64,
}

/// Brings back forgotten snapshots whose records are still in the store:
/// writes an undelete record voiding their forget tombstones and every
/// prune tombstone whose objects are all still present (so the packs they
/// quarantined are indexed again), rebuilds the catalog, then checks that
/// every blob the snapshots reach is indexed. Runs under the exclusive lock.
pub fn undelete(repo: &Repo, what: &UndeleteWhat) -> Result<Undeleted> {
    let scope = repo.scope();
    let state = repo.block_on(State::load(scope))?;
    let present: HashSet<String> =
        repo.block_on(scope.store().list_names(scope.tenant(), Kind::Snapshots))?.into_iter().collect();
    let candidates: Vec<Forgotten> = state.forgotten().into_iter().filter(|f| present.contains(&f.snapshot)).collect();
    let chosen: Vec<Forgotten> = match what {
        UndeleteWhat::All => candidates.clone(),
        UndeleteWhat::Since(ms) => candidates.iter().filter(|f| f.forgotten_ms >= *ms).cloned().collect(),
        UndeleteWhat::Ids(refs) => {
            let mut out: Vec<Forgotten> = Vec::new();
            for r in refs {
                let r = r.to_ascii_lowercase();
                let hits: Vec<&Forgotten> = candidates.iter().filter(|f| f.snapshot.starts_with(&r)).collect();
                match hits.as_slice() {
                    _ if r.len() < 4 || !r.bytes().all(|c| c.is_ascii_hexdigit()) => {
                        return Err(Error::invalid_input(
                            "snapshot",
                            r.clone(),
                            "not an id or a prefix of 4+ hex digits",
                        ))
                    }
                    [one] => {
                        if !out.iter().any(|f| f.snapshot == one.snapshot) {
                            out.push((*one).clone());
                        }
                    }
                    [] => return Err(Error::NotInQuarantine { snapshot: r }),
                    _ => return Err(Error::invalid_input("snapshot", r.clone(), "prefix matches several snapshots")),
                }
            }
            out
        }
    };
    let mut done = Undeleted::default();
    if chosen.is_empty() {
        return Ok(done);
    }
    let chosen_ids: HashSet<&str> = chosen.iter().map(|f| f.snapshot.as_str()).collect();
    let mut voids: HashSet<String> = HashSet::new();
    for (e, t) in state.readable().filter(|(_, t)| t.action == Action::Forget) {
        if t.snapshots.iter().any(|s| chosen_ids.contains(s.as_str())) {
            voids.insert(e.name.clone());
        }
    }
    // Prune tombstones whose objects are all still there: their packs and
    // deltas come back. One with objects gone (a final deletion under
    // way) stays: bringing its deltas back would list missing packs.
    let packs: HashSet<String> =
        repo.block_on(scope.store().list(scope.tenant(), Kind::Packs))?.into_iter().map(|l| l.name).collect();
    let deltas: HashSet<String> =
        repo.block_on(scope.store().list_names(scope.tenant(), Kind::Index))?.into_iter().collect();
    for (e, t) in state.in_force_prunes() {
        if t.packs.iter().all(|p| packs.contains(p)) && t.index.iter().all(|d| deltas.contains(d)) {
            voids.insert(e.name.clone());
            done.packs_restored += t.packs.len() as u64;
        }
    }
    let mut record = new(Action::Undelete, "undelete");
    record.snapshots = chosen.iter().map(|f| f.snapshot.clone()).collect();
    record.voids = voids.iter().cloned().collect();
    let (name, _) = repo.block_on(write(scope, record))?;
    repo.block_on(repo.rebuild_catalog())?;
    // Every blob the snapshots reach must be indexed again.
    let snaps = repo.snapshots()?;
    for f in &chosen {
        let Some(snap) = snaps.iter().find(|s| s.id.to_hex() == f.snapshot) else {
            return Err(Error::Internal(format!("snapshot {}: not listed after undelete", f.snapshot)));
        };
        done.blobs_checked += reachable_indexed(repo, &snap.record.tree, &snap.id)?;
    }
    let mut voided: Vec<String> = voids.into_iter().collect();
    voided.sort();
    done.voided = voided;
    done.record = Some(name);
    done.snapshots = chosen;
    Ok(done)
}

/// Walks the trees from `root` and checks that the catalog locates every
/// blob; returns how many there are.
fn reachable_indexed(repo: &Repo, root: &crate::id::BlobId, snapshot: &SnapshotId) -> Result<u64> {
    let mut seen: HashSet<crate::id::BlobId> = HashSet::new();
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let tree = repo.block_on(repo.load_tree(&id)).map_err(|e| Error::TreeUnreadable {
            snapshot: snapshot.short(),
            tree: id.short(),
            source: Box::new(e),
        })?;
        for node in tree {
            match node.kind {
                crate::tree::NodeKind::Dir { subtree } => stack.push(subtree),
                crate::tree::NodeKind::File { content } => {
                    for b in content {
                        if seen.insert(b) && repo.catalog().lookup(&b)?.is_none() {
                            return Err(Error::Damaged {
                                object: format!("snapshot {}", snapshot.short()),
                                why: format!("blob {} is in no index delta after undelete", b.short()),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(seen.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ms: i64, t: Tombstone) -> Entry {
        Entry { name: name.into(), modified_ms: ms, content: Ok(t.normalize()) }
    }

    fn forget(snaps: &[&str]) -> Tombstone {
        let mut t = Tombstone::new(Action::Forget, "forget", [1; 16]);
        t.snapshots = snaps.iter().map(|s| s.to_string()).collect();
        t
    }

    fn undelete(voids: &[&str], snaps: &[&str]) -> Tombstone {
        let mut t = Tombstone::new(Action::Undelete, "undelete", [2; 16]);
        t.voids = voids.iter().map(|s| s.to_string()).collect();
        t.snapshots = snaps.iter().map(|s| s.to_string()).collect();
        t
    }

    fn prune(packs: &[&str], index: &[&str]) -> Tombstone {
        let mut t = Tombstone::new(Action::Prune, "prune", [3; 16]);
        t.packs = packs.iter().map(|s| s.to_string()).collect();
        t.index = index.iter().map(|s| s.to_string()).collect();
        t
    }

    #[test]
    fn a_forget_tombstone_hides_its_snapshots_until_undeleted() {
        let s = State::from_entries(vec![entry("t1", 10, forget(&["a", "b"]))]);
        assert_eq!(s.hidden_snapshots(), ["a", "b"].iter().map(|x| x.to_string()).collect());
        let s =
            State::from_entries(vec![entry("t1", 10, forget(&["a", "b"])), entry("u1", 20, undelete(&["t1"], &["a"]))]);
        assert_eq!(s.hidden_snapshots(), ["b".to_string()].into_iter().collect());
    }

    #[test]
    fn a_replayed_tombstone_stays_void_but_a_new_forget_counts() {
        // The replay has the same name as the voided tombstone: still void.
        let s = State::from_entries(vec![entry("u1", 20, undelete(&["t1"], &["a"])), entry("t1", 30, forget(&["a"]))]);
        assert!(s.hidden_snapshots().is_empty());
        // A later forget of the same snapshot is a new tombstone.
        let s = State::from_entries(vec![
            entry("t1", 10, forget(&["a"])),
            entry("u1", 20, undelete(&["t1"], &["a"])),
            entry("t2", 30, forget(&["a"])),
        ]);
        assert_eq!(s.forgotten()[0].tombstone, "t2");
    }

    #[test]
    fn a_voided_prune_tombstone_hides_nothing() {
        let s = State::from_entries(vec![entry("p1", 10, prune(&["p"], &["d"]))]);
        assert!(s.hidden_deltas().contains("d") && s.quarantined_packs().contains("p"));
        let s =
            State::from_entries(vec![entry("p1", 10, prune(&["p"], &["d"])), entry("u1", 20, undelete(&["p1"], &[]))]);
        assert!(s.hidden_deltas().is_empty() && s.quarantined_packs().is_empty());
    }

    #[test]
    fn a_damaged_tombstone_hides_nothing() {
        let s = State::from_entries(vec![Entry { name: "x".into(), modified_ms: 1, content: Err("bad".into()) }]);
        assert!(s.hidden_snapshots().is_empty() && s.hidden_deltas().is_empty());
        assert_eq!(s.entries.len(), 1);
    }
}
