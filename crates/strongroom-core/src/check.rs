//! Check: is the repository sound, and if not, what is damaged and which
//! snapshots and files does it affect?
//!
//! Structure (always): every index delta and snapshot record decodes;
//! the tenant's key slots decode and its holds, settings and rotation
//! marker open; every indexed pack exists with the indexed size; every tree of every
//! snapshot loads and every chunk it names is indexed. Data (with
//! `--read-data` or a subset): every pack is downloaded, its bytes hash to
//! its name, its header opens, and every blob opens and hashes to its id.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use rand::seq::SliceRandom;

use crate::catalog::PackInfo;
use crate::codec::keyslot::SlotKind;
use crate::error::{Damage, Error, FileErrors, Result};
use crate::id::{BlobId, PackId};
use crate::repo::Repo;
use crate::store::{Kind, Store};
use crate::tree::NodeKind;

/// How much pack data to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// A random share of packs, in percent.
    Subset(f64),
}

/// Receives progress from a running check.
pub trait Progress: Send + Sync {
    /// Total packs to read.
    fn packs_total(&self, _n: u64) {}
    /// One pack read.
    fn pack_done(&self) {}
}

/// Progress that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Inputs of a check.
pub struct CheckOptions {
    /// Data to read.
    pub read_data: ReadData,
    /// Set to stop early.
    pub cancel: crate::Cancel,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

/// A snapshot with damage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedSnapshot {
    /// Snapshot id.
    pub id: String,
    /// Affected paths, each with what is wrong.
    pub files: FileErrors,
}

/// What a check found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckSummary {
    /// True when nothing is damaged.
    pub ok: bool,
    /// Damage found.
    pub errors: Vec<String>,
    /// Harmless findings (e.g. unindexed packs left by an interrupted backup).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Distinct trees checked.
    pub trees: u64,
    /// Packs in the index.
    pub packs: u64,
    /// Packs downloaded and verified.
    pub packs_read: u64,
    /// Blobs opened and verified.
    pub blobs_read: u64,
    /// Snapshots affected by damage.
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    /// Objects named by a tombstone: forgotten snapshots, quarantined
    /// packs and index deltas (not garbage: `undelete` may need them).
    pub quarantined: Vec<String>,
}

/// Key slots of a local repository that other local users may read: a
/// password-wrapped key can be guessed at offline. New repositories make
/// them 0600 (see [`crate::private`]); older ones are reported here, not
/// changed behind the owner's back.
async fn exposed_key_slots(repo: &Repo) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for l in repo.store().list(repo.tenant(), Kind::Keys).await? {
        let path = Store::path(repo.tenant(), Kind::Keys, &l.name);
        let Some(file) = repo.store().local_file(&path) else { break };
        let Ok(md) = std::fs::metadata(&file) else { continue };
        let mode = md.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!(
                "key slot {path}: mode {mode:04o} lets other local users read it and guess the password offline \
                 (`chmod -R go= REPOSITORY` makes the repository private)"
            ));
        }
    }
    Ok(out)
}

/// Runs a check. Blocking; see `backup::run` for the runtime contract.
pub fn run(repo: &Repo, opts: &CheckOptions) -> Result<CheckSummary> {
    repo.set_tree_pack_cache(true);
    // The store is judged, not this host's cached copy of its trees.
    repo.read_trees_from_store();
    let mut s = CheckSummary::default();
    repo.block_on(repo.sync())?;
    check_metadata(repo, &mut s)?;
    let Packs { indexed, missing: missing_packs } = check_packs(repo, &mut s)?;
    let to_read = packs_to_read(&indexed, &missing_packs, opts.read_data);
    let mut damaged = read_packs(repo, opts, &to_read, &mut s)?;
    if !missing_packs.is_empty() {
        repo.catalog().for_each_blob(|loc| {
            if missing_packs.contains(&loc.pack) {
                damaged.insert(loc.blob.id, format!("in missing pack {}", loc.pack.short()));
            }
        })?;
    }
    check_snapshots(repo, opts, &damaged, &mut s)?;
    s.ok = s.errors.is_empty();
    Ok(s)
}

/// Index deltas and snapshot records decode, key slots are private, and
/// the tenant's other objects open.
fn check_metadata(repo: &Repo, s: &mut CheckSummary) -> Result<()> {
    for Damage { object: obj, why } in repo.block_on(repo.verify_metadata())? {
        let fix = if obj.contains("/snapshots/") { "repair snapshots --forget-damaged" } else { "repair index" };
        s.errors.push(format!(
            "{obj}: damaged: {why} (it stops `latest` and prune: put the intact object back, or run `strongroom {fix}`)"
        ));
    }
    s.warnings.extend(repo.block_on(exposed_key_slots(repo))?);
    s.errors.extend(repo.block_on(verify_tenant_objects(repo, &mut s.warnings))?);
    Ok(())
}

/// The packs the index lists.
struct Packs {
    /// Every indexed pack.
    indexed: Vec<(PackId, PackInfo)>,
    /// Those missing from the store or of the wrong size.
    missing: HashSet<PackId>,
}

/// Packs, indexed against stored: every indexed pack exists with its
/// indexed size; stored packs no index lists are a warning.
fn check_packs(repo: &Repo, s: &mut CheckSummary) -> Result<Packs> {
    let stored: HashMap<String, u64> =
        repo.block_on(repo.store().list(repo.tenant(), Kind::Packs))?.into_iter().map(|l| (l.name, l.size)).collect();
    let mut indexed: Vec<(PackId, PackInfo)> = Vec::new();
    repo.catalog().for_each_pack(|id, info| indexed.push((id, info)))?;
    s.packs = indexed.len() as u64;
    let mut missing_packs: HashSet<PackId> = HashSet::new();
    let indexed_names: HashSet<String> = indexed.iter().map(|(id, _)| id.to_hex()).collect();
    for (id, info) in &indexed {
        match stored.get(&id.to_hex()) {
            None => {
                s.errors.push(format!("pack {id}: missing from the store"));
                missing_packs.insert(*id);
            }
            Some(&size) if size != info.length => {
                s.errors.push(format!("pack {id}: size {size}, the index says {}", info.length));
                missing_packs.insert(*id);
            }
            Some(_) => {}
        }
    }
    let tombstones = repo.block_on(crate::tombstone::State::load(repo.scope()))?;
    let quarantined = tombstones.quarantined_packs();
    for d in tombstones.damaged(repo.scope()) {
        s.errors.push(format!(
            "{}: damaged tombstone: {} (it hides nothing, and stops prune from deleting anything quarantined)",
            d.object, d.why
        ));
    }
    for f in tombstones.forgotten() {
        s.quarantined.push(format!("snapshot {}: forgotten (tombstone {})", f.snapshot, short(&f.tombstone)));
    }
    for d in tombstones.hidden_deltas() {
        s.quarantined.push(format!("index delta {d}: quarantined by prune"));
    }
    for name in stored.keys() {
        if quarantined.contains(name) && !indexed_names.contains(name) {
            s.quarantined.push(format!("pack {name}: quarantined by prune"));
        } else if !indexed_names.contains(name) {
            s.warnings.push(format!("pack {name}: not in any index (left by an interrupted backup; prune removes it)"));
        }
    }
    Ok(Packs { indexed, missing: missing_packs })
}

fn short(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

/// The stored packs whose data `read_data` asks to read.
fn packs_to_read(
    indexed: &[(PackId, PackInfo)],
    missing_packs: &HashSet<PackId>,
    read_data: ReadData,
) -> Vec<(PackId, PackInfo)> {
    let mut to_read: Vec<(PackId, PackInfo)> =
        indexed.iter().filter(|(id, _)| !missing_packs.contains(id)).cloned().collect();
    match read_data {
        ReadData::None => to_read.clear(),
        ReadData::All => {}
        ReadData::Subset(pct) => {
            to_read.shuffle(&mut rand::thread_rng());
            let n = ((to_read.len() as f64) * pct / 100.0).ceil() as usize;
            to_read.truncate(n.min(to_read.len()));
        }
    }
    to_read
}

/// Downloads and verifies each pack of `to_read`, one after another;
/// returns the blobs found damaged, each with what is wrong.
fn read_packs(
    repo: &Repo,
    opts: &CheckOptions,
    to_read: &[(PackId, PackInfo)],
    s: &mut CheckSummary,
) -> Result<HashMap<BlobId, String>> {
    let mut damaged: HashMap<BlobId, String> = HashMap::new();
    opts.progress.packs_total(to_read.len() as u64);
    for (id, info) in to_read {
        if opts.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let (n, problems) = repo.block_on(read_pack(repo, id, info))?;
        s.packs_read += 1;
        s.blobs_read += n;
        for (blob, why) in problems {
            match blob {
                Some(b) => {
                    s.errors.push(format!("pack {id}: blob {b}: {why}"));
                    damaged.insert(b, why);
                }
                None => {
                    s.errors.push(format!("pack {id}: {why}"));
                    // Every blob the index puts in this pack is suspect.
                    repo.catalog().for_each_blob(|loc| {
                        if loc.pack == *id {
                            damaged.insert(loc.blob.id, format!("in damaged pack {}", id.short()));
                        }
                    })?;
                }
            }
        }
        opts.progress.pack_done();
    }
    Ok(damaged)
}

/// Walks every snapshot's trees (each distinct tree once), reporting the
/// snapshots that reach a missing tree or a `damaged` blob.
fn check_snapshots(
    repo: &Repo,
    opts: &CheckOptions,
    damaged: &HashMap<BlobId, String>,
    s: &mut CheckSummary,
) -> Result<()> {
    let mut walker = Walker { repo, damaged, memo: HashMap::new(), trees: 0 };
    for snap in repo.snapshots()? {
        if opts.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        s.snapshots += 1;
        let problems = walker.tree(&snap.record.tree);
        if !problems.is_empty() {
            s.errors.push(format!("snapshot {}: {} damaged or missing entries", snap.id.short(), problems.len()));
            s.damaged_snapshots.push(DamagedSnapshot { id: snap.id.to_hex(), files: problems.as_ref().clone() });
        }
    }
    s.trees = walker.trees;
    Ok(())
}

/// The tenant's objects besides index deltas, snapshots and packs: every
/// key slot decodes, every hold record opens, the settings and the
/// key-rotation marker (when present) open, the tenant has an escrow slot
/// for the escrow key its binding record names, and the repository's
/// escrow key (when set) parses and is that key. A key slot's sealed part opens only with that
/// slot's own secret, so damage there is found for the slot that opened
/// the tenant only (by opening it); the audit log has its own verifier,
/// `audit verify`.
async fn verify_tenant_objects(repo: &Repo, warnings: &mut Vec<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let store = repo.store();
    for l in store.list(repo.tenant(), Kind::Keys).await? {
        let path = Store::path(repo.tenant(), Kind::Keys, &l.name);
        // None: removed since the listing (a password change).
        if let Some(bytes) = store.get_opt(&path).await? {
            if let Err(e) = crate::codec::keyslot::decode(&bytes) {
                out.push(format!("{path}: damaged key slot: {e}"));
            }
        }
    }
    for h in crate::hold::list(repo.scope()).await? {
        if !h.readable {
            out.push(format!("hold of snapshot {}: {}", h.snapshot.short(), h.reason));
        }
    }
    let corrupt = |r: Result<()>, out: &mut Vec<String>| match r {
        Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
            out.push(e.to_string());
            Ok(())
        }
        other => other,
    };
    corrupt(crate::tenant::load_settings(repo.scope()).await.map(|_| ()), &mut out)?;
    corrupt(crate::tenant::pending_rotation(repo.scope()).await.map(|_| ()), &mut out)?;
    // The escrow key the tenant trusts is the one its binding record
    // names (sealed with the tenant's key); the root `escrow` object is
    // only what the store says.
    let bound = repo.binding().escrow();
    if let Some(bound) = bound {
        let slots = crate::keyslots::list_slots(store, repo.tenant()).await?;
        let has_slot = slots.iter().any(|s| matches!(s.kind, SlotKind::Escrow { recipient, .. } if recipient == bound));
        if !has_slot {
            out.push(format!(
                "escrow: tenant {} has no escrow slot for the escrow key {} its binding record names \
                 (deleted or damaged; opening the tenant on a host that can write adds it again)",
                repo.tenant(),
                crate::keyslots::escrow_fingerprint(&bound)
            ));
        }
    }
    match crate::keyslots::escrow_load(store).await {
        Ok(Some(public)) => match bound {
            Some(bound) if bound != public => out.push(format!(
                "escrow: the repository's escrow key {} differs from the key {} tenant {}'s binding record names \
                 (damaged or replaced; if an operator changed it, run `strongroom escrow set FILE` with the tenant open)",
                crate::keyslots::escrow_fingerprint(&public),
                crate::keyslots::escrow_fingerprint(&bound),
                repo.tenant()
            )),
            Some(_) => {}
            None => warnings.push(format!(
                "escrow: the repository has an escrow key ({}) but tenant {}'s binding record names none, so the \
                 tenant has no recovery slot (run `strongroom escrow set FILE` with the tenant open to bind it)",
                crate::keyslots::escrow_fingerprint(&public),
                repo.tenant()
            )),
        },
        Ok(None) => {}
        Err(e) => corrupt(Err(e), &mut out)?,
    }
    Ok(out)
}

/// Downloads a pack and verifies it; returns blobs read and problems
/// (with the blob, or `None` for the pack as a whole).
async fn read_pack(repo: &Repo, id: &PackId, info: &PackInfo) -> Result<(u64, Vec<(Option<BlobId>, String)>)> {
    let path = Store::path(repo.tenant(), Kind::Packs, &id.to_hex());
    let bytes = match repo.store().get(&path).await {
        Ok(b) => b,
        Err(e) => return Ok((0, vec![(None, format!("unreadable: {e}"))])),
    };
    let mut problems = Vec::new();
    if crate::crypto::object_hash(&bytes) != id.0 {
        problems.push((None, "content does not match its name".to_string()));
    }
    if bytes.len() as u64 != info.length {
        problems.push((None, format!("{} bytes, the index says {}", bytes.len(), info.length)));
    }
    let entries = match crate::pack::read_header(repo.keys(), id, &bytes, bytes.len() as u64) {
        Ok(e) => e,
        Err(e) => {
            problems.push((None, format!("header: {e}")));
            return Ok((0, problems));
        }
    };
    let generation = match crate::pack::key_generation(id, &bytes) {
        Ok(g) => g,
        Err(err) => {
            problems.push((None, err.to_string()));
            return Ok((0, problems));
        }
    };
    let mut n = 0;
    for e in &entries {
        if let Some(indexed) = repo.catalog().lookup(&e.id)? {
            if indexed.pack == *id && indexed.blob != *e {
                problems.push((Some(e.id), "the index disagrees with the pack header".into()));
            }
        }
        let loc = crate::catalog::BlobLocation { pack: *id, blob: *e, key_generation: generation };
        let start = e.offset as usize;
        let Some(stored) = bytes.get(start..start + e.length as usize) else {
            problems.push((Some(e.id), "outside the pack".into()));
            continue;
        };
        n += 1;
        if let Err(err) = repo.open_blob(&loc, stored) {
            problems.push((Some(e.id), err.to_string()));
        }
    }
    Ok((n, problems))
}

struct Walker<'a> {
    repo: &'a Repo,
    damaged: &'a HashMap<BlobId, String>,
    memo: HashMap<BlobId, Arc<FileErrors>>,
    trees: u64,
}

impl Walker<'_> {
    /// Problems below a tree, as (path relative to it, why).
    fn tree(&mut self, id: &BlobId) -> Arc<FileErrors> {
        if let Some(m) = self.memo.get(id) {
            return m.clone();
        }
        self.trees += 1;
        let mut out = FileErrors::new();
        match self.repo.block_on(self.repo.load_tree(id)) {
            Err(e) => out.push("", format!("tree {}: {e}", id.short())),
            Ok(t) => {
                for node in t {
                    let name = String::from_utf8_lossy(&node.name).to_string();
                    match &node.kind {
                        NodeKind::File { content } => {
                            for c in content {
                                let why = match self.damaged.get(c) {
                                    Some(w) => Some(format!("blob {}: {w}", c.short())),
                                    None => match self.repo.catalog().lookup(c) {
                                        Ok(Some(_)) => None,
                                        Ok(None) => Some(format!("blob {} is not in the index", c.short())),
                                        Err(e) => Some(e.to_string()),
                                    },
                                };
                                if let Some(w) = why {
                                    out.push(format!("/{name}"), w);
                                    break;
                                }
                            }
                        }
                        NodeKind::Dir { subtree } => {
                            out.extend(self.tree(subtree).prefixed(&format!("/{name}")));
                        }
                        _ => {}
                    }
                }
            }
        }
        let out = Arc::new(out);
        self.memo.insert(*id, out.clone());
        out
    }
}
