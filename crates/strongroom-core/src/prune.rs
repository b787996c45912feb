//! Prune: delete what no snapshot reaches, repack packs that are mostly
//! garbage.
//!
//! 1. Mark: walk every snapshot's trees; reachable blob ids go into the
//!    catalog's scratch table (on disk: memory does not grow with the
//!    repository).
//! 2. Account: read the index deltas one at a time; per pack, count used
//!    and unused bytes. A blob counts as used only in the pack the catalog
//!    resolves it to; other copies (left by concurrent backups) are garbage.
//! 3. Plan ([`PrunePlan`], printed by `--dry-run`): delete packs with no
//!    used blob and packs that no index lists; repack the partly used packs
//!    with the most garbage until unused bytes are at most `max_unused`
//!    percent of the pack bytes.
//! 4. Execute, in an order where a crash at any instant leaves every pack
//!    that an index delta lists in place: (a) copy used blobs of repacked
//!    packs into new packs (each blob verified on the way) and index them;
//!    (b) for each index delta that lists a doomed pack, write its
//!    replacement without those packs, then delete it; (c) delete the
//!    doomed packs; (d) rebuild the catalog.
//!
//! Runs under an exclusive lock: no backup can meanwhile dedup against a
//! blob that is about to go.
//!
//! **Invariant:** prune deletes nothing while an index delta or snapshot
//! record is damaged. A damaged snapshot record hides the blobs its
//! snapshot reaches, a damaged index delta which packs hold live blobs
//! (its packs would look unindexed, hence garbage): both would turn live
//! data into garbage. The damage the catalog recorded at the sync under
//! the lock stops the plan; an index delta found damaged while planning
//! stops it too.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::blob::{self, Compression};
use crate::codec::index::PackEntry;
use crate::codec::pack::BlobKind;
use crate::error::{Damage, Error, Result};
use crate::id::{BlobId, PackId};
use crate::pack::PackWriter;
use crate::repo::Repo;
use crate::store::{Kind, Store};
use crate::tree::NodeKind;

/// Repacked packs per index delta.
const REPACK_INDEX_EVERY: usize = 16;
/// Ids buffered before a mark-table transaction.
const MARK_BATCH: usize = 16 * 1024;

/// Progress of a prune, phase by phase (mark: snapshots; repack: bytes of
/// packs read; delete: objects).
pub trait Progress: Send + Sync {
    /// A phase begins with `total` units of work.
    fn phase(&self, _name: &str, _total: u64) {}
    /// `n` units of the current phase are done.
    fn step(&self, _n: u64) {}
}

/// Progress that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Inputs of a prune.
pub struct PruneOptions {
    /// Unused bytes tolerated in kept packs, percent of all pack bytes.
    pub max_unused_percent: f64,
    /// Plan only.
    pub dry_run: bool,
    /// Set to stop early (only between steps; each step is crash-safe).
    pub cancel: crate::Cancel,
    /// Called before anything is deleted; fails when the lock is lost.
    pub before_delete: Box<dyn Fn() -> Result<()> + Send + Sync>,
    /// Key rotation: also repack every pack, and rewrite every index delta,
    /// sealed with a data key generation below this one.
    pub rewrite_below: Option<u32>,
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
    /// How long what prune finds unused stays quarantined (named by a
    /// tombstone, still in the store) before a later prune deletes it;
    /// zero deletes at once (see [`crate::tombstone`]).
    pub quarantine: std::time::Duration,
}

/// What prune will do (or did).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PrunePlan {
    /// Packs in the index.
    pub packs: u64,
    /// Blobs reachable from snapshots.
    pub blobs_used: u64,
    /// Packs with no used blob, to delete.
    pub packs_unused: u64,
    /// Packs in the store that no index lists, to delete.
    pub packs_unindexed: u64,
    /// Partly used packs to repack.
    pub packs_repack: u64,
    /// Packs kept as they are.
    pub packs_keep: u64,
    /// Bytes of packs deleted outright.
    pub bytes_delete: u64,
    /// Bytes of packs repacked.
    pub bytes_repack: u64,
    /// Used bytes moved into new packs.
    pub bytes_repack_used: u64,
    /// Unused bytes left in kept packs.
    pub bytes_unused_kept: u64,
    /// All pack bytes before.
    pub bytes_total: u64,
    #[serde(skip)]
    doomed: HashSet<PackId>,
    #[serde(skip)]
    repack: Vec<PackId>,
    #[serde(skip)]
    unindexed: Vec<String>,
    #[serde(skip)]
    deltas: HashMap<String, Vec<PackId>>,
    /// Index deltas sealed with a retired key generation (rotation).
    #[serde(skip)]
    old_deltas: HashSet<String>,
    /// The tombstones when the plan was made.
    #[serde(skip)]
    tombstones: crate::tombstone::State,
    /// Packs the live index deltas list (hex).
    #[serde(skip)]
    live_packs: HashSet<String>,
}

/// What prune did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneSummary {
    /// The plan.
    pub plan: PrunePlan,
    /// Whether it only planned.
    pub dry_run: bool,
    /// Stored bytes freed (deleted minus written).
    pub bytes_freed: u64,
    /// Bytes written into new packs.
    pub bytes_repacked: u64,
    /// New packs written.
    pub packs_written: u64,
    /// Index deltas rewritten.
    pub index_rewritten: u64,
    /// Under object lock: what the store still retains, left for a later
    /// prune (see [`crate::object_lock::Sweeper`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::object_lock::Deferred>,
    /// Wall time.
    pub duration_seconds: f64,
    /// What was quarantined, and what earlier quarantines ended in.
    pub quarantine: crate::tombstone::Quarantine,
}

#[derive(Default, Clone, Copy)]
struct PackUse {
    used: u64,
    unused: u64,
    length: u64,
    kind: Option<BlobKind>,
}

/// Marks every blob reachable from a snapshot in the catalog's scratch
/// table; returns how many there are.
fn mark(repo: &Repo, cancel: &crate::Cancel, progress: &dyn Progress) -> Result<u64> {
    let cat = repo.catalog();
    cat.used_clear()?;
    let mut buffer: HashSet<BlobId> = HashSet::new();
    let mut n = 0u64;
    let mut reader = cat.used_reader()?;
    let flush = |buffer: &mut HashSet<BlobId>, n: &mut u64| -> Result<crate::catalog::UsedReader> {
        let ids: Vec<BlobId> = buffer.drain().collect();
        *n += ids.len() as u64;
        cat.used_insert(&ids)?;
        Ok(cat.used_reader()?)
    };
    let snapshots = repo.snapshots()?;
    progress.phase("mark", snapshots.len() as u64);
    for snap in snapshots {
        progress.step(1);
        let mut stack = vec![snap.record.tree];
        while let Some(tree_id) = stack.pop() {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            if buffer.contains(&tree_id) || reader.contains(&tree_id)? {
                continue;
            }
            buffer.insert(tree_id);
            // A tree that cannot be read stops prune: deleting on an
            // incomplete mark could destroy data still referenced.
            let t = repo.block_on(repo.load_tree(&tree_id)).map_err(|e| Error::TreeUnreadable {
                snapshot: snap.id.short(),
                tree: tree_id.short(),
                source: Box::new(e),
            })?;
            for node in t {
                match node.kind {
                    NodeKind::Dir { subtree } => stack.push(subtree),
                    NodeKind::File { content } => buffer.extend(content),
                    _ => {}
                }
            }
            if buffer.len() >= MARK_BATCH {
                reader = flush(&mut buffer, &mut n)?;
            }
        }
    }
    flush(&mut buffer, &mut n)?;
    Ok(n)
}

/// Computes the plan (no deletion).
pub fn plan(repo: &Repo, opts: &PruneOptions) -> Result<PrunePlan> {
    repo.refuse_damaged_records("prune")?;
    repo.set_tree_pack_cache(true);
    let mut plan = PrunePlan { blobs_used: mark(repo, &opts.cancel, &*opts.progress)?, ..Default::default() };
    plan.tombstones = repo.block_on(crate::tombstone::State::load(repo.scope()))?;
    crate::tombstone::refuse_held_forgotten(repo, &plan.tombstones)?;
    let (packs, old_packs) = account(repo, opts, &mut plan)?;
    plan.live_packs = packs.keys().map(|p| p.to_hex()).collect();
    plan.packs = packs.len() as u64;
    plan.bytes_total = packs.values().map(|u| u.length).sum();
    choose_packs(&mut plan, &packs, &old_packs, opts.max_unused_percent);
    // Packs already quarantined are a tombstone's business.
    let quarantined = plan.tombstones.quarantined_packs();
    for l in repo.block_on(repo.store().list(repo.tenant(), Kind::Packs))? {
        if !plan.live_packs.contains(&l.name) && !quarantined.contains(&l.name) {
            plan.packs_unindexed += 1;
            plan.bytes_delete += l.size;
            plan.unindexed.push(l.name);
        }
    }
    Ok(plan)
}

/// Reads the index deltas one at a time and accounts each pack's used and
/// unused bytes (the first delta listing a pack counts); records in `plan`
/// the packs each delta lists and, for a rotation, the deltas sealed with
/// an old key. Returns the packs, and those sealed with an old key.
fn account(
    repo: &Repo,
    opts: &PruneOptions,
    plan: &mut PrunePlan,
) -> Result<(HashMap<PackId, PackUse>, HashSet<PackId>)> {
    let used = repo.catalog().used_reader()?;
    let mut packs: HashMap<PackId, PackUse> = HashMap::new();
    let mut old_packs: HashSet<PackId> = HashSet::new();
    // Quarantined index deltas are not live (the catalog skips them too).
    let hidden = plan.tombstones.hidden_deltas();
    for l in repo.block_on(repo.store().list(repo.tenant(), Kind::Index))? {
        if hidden.contains(&l.name) {
            continue;
        }
        if let Some(g) = opts.rewrite_below {
            if crate::crypto::sealed_before(repo.block_on(repo.sealed_generation(Kind::Index, &l.name))?, g) {
                plan.old_deltas.insert(l.name.clone());
            }
        }
        let entries = load_delta(repo, &l.name)?;
        let mut ids = Vec::with_capacity(entries.len());
        for p in entries {
            ids.push(p.id);
            if packs.contains_key(&p.id) {
                continue;
            }
            if opts.rewrite_below.is_some_and(|g| crate::crypto::sealed_before(p.key_generation, g)) {
                old_packs.insert(p.id);
            }
            packs.insert(p.id, pack_use(repo, &used, &p)?);
        }
        plan.deltas.insert(l.name, ids);
    }
    Ok((packs, old_packs))
}

/// Loads index delta `name`; one damaged since the sync stops the plan.
fn load_delta(repo: &Repo, name: &str) -> Result<Vec<PackEntry>> {
    match repo.block_on(repo.load_index(name)) {
        Ok(entries) => Ok(entries),
        // Damaged since the sync: its packs must not look unindexed.
        Err(Error::Damaged { object, why }) => Err(Error::DamagedRecords {
            what: "prune stopped before deleting anything: an index delta is damaged".into(),
            objects: vec![Damage { object, why }],
            advice: "put the intact object back, or run `strongroom repair index`".into(),
        }),
        Err(e) => Err(e),
    }
}

/// Used and unused bytes of pack `p`: a blob is used only in the pack the
/// catalog resolves it to.
fn pack_use(repo: &Repo, used: &crate::catalog::UsedReader, p: &PackEntry) -> Result<PackUse> {
    let mut u = PackUse { length: p.length, ..Default::default() };
    for b in &p.blobs {
        u.kind = Some(b.kind);
        let canonical = repo.catalog().lookup(&b.id)?.is_some_and(|loc| loc.pack == p.id);
        if canonical && used.contains(&b.id)? {
            u.used += b.length as u64;
        } else {
            u.unused += b.length as u64;
        }
    }
    Ok(u)
}

/// Decides each pack's fate: unused packs are deleted, packs sealed with
/// an old key repacked, partly used packs repacked (most garbage first)
/// until the unused bytes left are within `max_unused_percent`.
fn choose_packs(
    plan: &mut PrunePlan,
    packs: &HashMap<PackId, PackUse>,
    old_packs: &HashSet<PackId>,
    max_unused_percent: f64,
) {
    let mut partial: Vec<(PackId, PackUse)> = Vec::new();
    for (id, u) in packs {
        if u.used == 0 {
            plan.packs_unused += 1;
            plan.bytes_delete += u.length;
            plan.doomed.insert(*id);
        } else if old_packs.contains(id) {
            plan.add_repack(*id, u);
        } else if u.unused > 0 {
            partial.push((*id, *u));
        } else {
            plan.packs_keep += 1;
        }
    }
    // Most garbage first, until what stays is within the limit.
    partial.sort_by(|a, b| (b.1.unused * a.1.length).cmp(&(a.1.unused * b.1.length)).then(b.1.unused.cmp(&a.1.unused)));
    // As restic: the limit is a share of what remains after the prune.
    let remaining = plan.bytes_total.saturating_sub(plan.bytes_delete);
    let allowed = (remaining as f64 * max_unused_percent / 100.0) as u64;
    let mut unused_left: u64 = partial.iter().map(|(_, u)| u.unused).sum();
    for (id, u) in partial {
        if unused_left > allowed {
            unused_left -= u.unused;
            plan.add_repack(id, &u);
        } else {
            plan.packs_keep += 1;
        }
    }
    plan.bytes_unused_kept = unused_left;
}

impl PrunePlan {
    /// Pack `id` (used as `u` says) is repacked, then deleted.
    fn add_repack(&mut self, id: PackId, u: &PackUse) {
        self.packs_repack += 1;
        self.bytes_repack += u.length;
        self.bytes_repack_used += u.used;
        self.repack.push(id);
        self.doomed.insert(id);
    }
}

/// Plans and (unless `dry_run`) executes a prune.
pub fn run(repo: &Repo, opts: &PruneOptions) -> Result<PruneSummary> {
    let started = Instant::now();
    let plan = plan(repo, opts)?;
    let mut s = PruneSummary { dry_run: opts.dry_run, ..Default::default() };
    s.quarantine.quarantine_seconds = opts.quarantine.as_secs();
    // Under object lock, deletions go through the sweeper: it leaves what
    // the store still retains, and extends the dates of what stays.
    let mut locked =
        if opts.dry_run { None } else { repo.block_on(crate::object_lock::Sweeper::new(repo.store(), repo.tenant()))? };
    if let Some(sweeper) = locked.as_mut() {
        // What tombstones in quarantine name waits for its final deletion:
        // its retention is not extended meanwhile.
        for key in plan.tombstones.named_objects(repo.scope()) {
            sweeper.unwanted(&key);
        }
    }
    if opts.dry_run || (plan.doomed.is_empty() && plan.unindexed.is_empty() && plan.old_deltas.is_empty()) {
        if !opts.dry_run {
            s.quarantine.finalized = finalize_quarantine(repo, opts, &plan, &mut locked)?;
            s.bytes_freed = s.quarantine.finalized.bytes_deleted;
        }
        if let Some(sweeper) = locked {
            s.object_lock = Some(repo.block_on(sweeper.finish())?);
        }
        s.plan = plan;
        s.duration_seconds = started.elapsed().as_secs_f64();
        return Ok(s);
    }
    if !opts.quarantine.is_zero() {
        return run_quarantined(repo, opts, plan, s, started, locked);
    }
    // (a) Repack used blobs.
    repack_all(repo, opts, &plan, &mut s)?;
    // With no quarantine, what earlier forgets and prunes quarantined goes
    // first (snapshot records before the data they reach).
    s.quarantine.finalized = finalize_quarantine(repo, opts, &plan, &mut locked)?;
    // (b) Index deltas without the doomed packs, then the old ones go.
    (opts.before_delete)()?;
    opts.progress.phase("delete", (plan.doomed.len() + plan.unindexed.len()) as u64);
    let (rewritten, kept_deltas) = rewrite_deltas(repo, opts, &plan, &mut locked)?;
    s.index_rewritten = rewritten;
    // (c) Packs.
    (opts.before_delete)()?;
    let freed = delete_packs(repo, opts, &plan, &kept_deltas, &mut locked)?;
    s.bytes_freed = freed.saturating_sub(s.bytes_repacked);
    if let Some(sweeper) = locked {
        s.object_lock = Some(repo.block_on(sweeper.finish())?);
    }
    // (d) The catalog follows the store, and the disk cache of tree
    // packs drops the packs deleted.
    repo.block_on(repo.rebuild_catalog())?;
    let unindexed = plan.unindexed.iter().filter_map(|name| PackId::from_hex(name).ok());
    repo.forget_cached_tree_packs(&plan.doomed.iter().copied().chain(unindexed).collect::<Vec<_>>());
    repo.catalog().used_clear()?;
    s.bytes_freed += s.quarantine.finalized.bytes_deleted;
    s.plan = plan;
    s.duration_seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

/// A prune with a quarantine: (a) repack as [`run`] does; (b) write the
/// replacement of each index delta that lists a doomed pack, keeping the
/// old one; (c) write a tombstone naming the doomed and unindexed packs
/// and the replaced deltas (from here the catalog skips those deltas: the
/// replacements came first, so every live pack stays indexed throughout);
/// (d) rebuild the catalog; (e) delete for good what earlier tombstones
/// named, once their quarantine has passed. Nothing named in (c) is
/// deleted by this run.
fn run_quarantined(
    repo: &Repo,
    opts: &PruneOptions,
    plan: PrunePlan,
    mut s: PruneSummary,
    started: Instant,
    mut locked: Option<crate::object_lock::Sweeper>,
) -> Result<PruneSummary> {
    repack_all(repo, opts, &plan, &mut s)?;
    let mut t = crate::tombstone::new(crate::codec::tombstone::Action::Prune, "prune");
    for (name, ids) in &plan.deltas {
        if !rewritten(&plan, name, ids) {
            continue;
        }
        check_cancel(opts)?;
        write_replacement(repo, &plan, name)?;
        t.index.push(name.clone());
        s.index_rewritten += 1;
    }
    t.packs = plan.doomed.iter().map(PackId::to_hex).chain(plan.unindexed.iter().cloned()).collect();
    if let Some(sweeper) = locked.as_mut() {
        for p in &t.packs {
            sweeper.unwanted(&Store::path(repo.tenant(), Kind::Packs, p));
        }
        for d in &t.index {
            sweeper.unwanted(&Store::path(repo.tenant(), Kind::Index, d));
        }
    }
    s.quarantine.packs_quarantined = t.packs.len() as u64;
    s.quarantine.index_quarantined = t.index.len() as u64;
    (opts.before_delete)()?;
    let (name, at_ms) = repo.block_on(crate::tombstone::write(repo.scope(), t))?;
    let q_ms = i64::try_from(opts.quarantine.as_millis()).unwrap_or(i64::MAX);
    s.quarantine.tombstone = Some(name);
    s.quarantine.deletable_after_ms = Some(at_ms.saturating_add(q_ms));
    repo.block_on(repo.rebuild_catalog())?;
    // The final deletion rechecks against the mark: cleared after it.
    s.quarantine.finalized = finalize_quarantine(repo, opts, &plan, &mut locked)?;
    repo.catalog().used_clear()?;
    s.bytes_freed = s.quarantine.finalized.bytes_deleted;
    if let Some(sweeper) = locked {
        s.object_lock = Some(repo.block_on(sweeper.finish())?);
    }
    s.plan = plan;
    s.duration_seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

/// Step (a) of both kinds of prune: repacks the partly used packs.
fn repack_all(repo: &Repo, opts: &PruneOptions, plan: &PrunePlan, s: &mut PruneSummary) -> Result<()> {
    let mut repacker = Repacker::new(repo, s)?;
    opts.progress.phase("repack", plan.bytes_repack);
    for pack in &plan.repack {
        check_cancel(opts)?;
        repacker.repack(pack, &*opts.progress)?;
    }
    repacker.finish()
}

/// Whether index delta `name` (listing packs `ids`) is replaced: it lists
/// a doomed pack, or is sealed with a key being retired.
fn rewritten(plan: &PrunePlan, name: &str, ids: &[PackId]) -> bool {
    ids.iter().any(|id| plan.doomed.contains(id)) || plan.old_deltas.contains(name)
}

/// Writes the replacement of index delta `name`: its entries without the
/// doomed packs (nothing, when none is left).
fn write_replacement(repo: &Repo, plan: &PrunePlan, name: &str) -> Result<()> {
    let kept: Vec<PackEntry> =
        repo.block_on(repo.load_index(name))?.into_iter().filter(|p| !plan.doomed.contains(&p.id)).collect();
    if !kept.is_empty() {
        repo.block_on(repo.save_index(kept))?;
    }
    Ok(())
}

/// Deletes for good what the tombstones found by the plan name, once
/// their quarantine has passed by the store's clock (see
/// [`crate::tombstone::finalize`]).
fn finalize_quarantine(
    repo: &Repo,
    opts: &PruneOptions,
    plan: &PrunePlan,
    locked: &mut Option<crate::object_lock::Sweeper>,
) -> Result<crate::tombstone::Finalized> {
    let now = repo.block_on(crate::tombstone::store_now(repo.scope()))?;
    let mut remove = |key: &crate::store::Key| remove(repo, key, locked);
    crate::tombstone::finalize(
        repo,
        &plan.tombstones,
        now,
        opts.quarantine,
        &plan.live_packs,
        &*opts.before_delete,
        &mut remove,
    )
}

/// Fails with [`Error::Interrupted`] once the prune is cancelled.
fn check_cancel(opts: &PruneOptions) -> Result<()> {
    if opts.cancel.is_cancelled() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Step (a): copies the used blobs of repacked packs into new packs, one
/// writer per blob kind, and indexes them. Each blob is opened and
/// verified against its id; one sealed under the current data key is then
/// copied as stored (no recompression), others are sealed again under the
/// current key.
struct Repacker<'a> {
    repo: &'a Repo,
    summary: &'a mut PruneSummary,
    dk: &'a crate::crypto::DataKey,
    used: crate::catalog::UsedReader,
    target: usize,
    compression: Compression,
    writers: HashMap<BlobKind, PackWriter>,
    new_packs: Vec<PackEntry>,
}

impl<'a> Repacker<'a> {
    fn new(repo: &'a Repo, summary: &'a mut PruneSummary) -> Result<Self> {
        let level = repo.config().compression_level;
        Ok(Repacker {
            repo,
            summary,
            dk: repo.data_key()?,
            used: repo.catalog().used_reader()?,
            target: repo.config().pack_target_bytes as usize,
            compression: if level == 0 { Compression::Off } else { Compression::Zstd(level) },
            writers: HashMap::new(),
            new_packs: Vec::new(),
        })
    }

    /// Reads `pack`, and adds its used blobs (opened, verified and sealed
    /// in parallel) to the writers.
    fn repack(&mut self, pack: &PackId, progress: &dyn Progress) -> Result<()> {
        let (repo, dk, compression) = (self.repo, self.dk, self.compression);
        let path = Store::path(repo.tenant(), Kind::Packs, &pack.to_hex());
        let bytes = self.repo.block_on(repo.store().get(&path))?;
        progress.step(bytes.len() as u64);
        let entries = crate::pack::read_header(repo.keys(), pack, &bytes, bytes.len() as u64)?;
        let generation = crate::pack::key_generation(pack, &bytes)?;
        let mut keep = Vec::new();
        for e in entries {
            let canonical = repo.catalog().lookup(&e.id)?.is_some_and(|loc| loc.pack == *pack);
            if canonical && self.used.contains(&e.id)? {
                keep.push(e);
            }
        }
        let sealed: Vec<Result<(crate::codec::pack::PackedBlob, Vec<u8>)>> = keep
            .par_iter()
            .map(|e| {
                let loc = crate::catalog::BlobLocation { pack: *pack, blob: *e, key_generation: generation };
                let stored = bytes
                    .get(e.offset as usize..(e.offset + e.length) as usize)
                    .ok_or_else(|| Error::Damaged { object: path.to_string(), why: "blob outside the pack".into() })?;
                let plain = repo.open_blob(&loc, stored)?;
                if generation == dk.generation {
                    Ok((*e, stored.to_vec()))
                } else {
                    Ok((*e, blob::seal(&dk.key, e.kind, &e.id, &plain, compression)))
                }
            })
            .collect();
        for r in sealed {
            let (e, bytes) = r?;
            let w = self.writers.entry(e.kind).or_insert_with(|| PackWriter::new(e.kind));
            w.add(e.id, e.raw_len, bytes);
            if w.size() >= self.target {
                let full = std::mem::replace(w, PackWriter::new(e.kind));
                self.flush(full)?;
            }
        }
        Ok(())
    }

    /// Uploads the pack of `w`.
    fn flush(&mut self, w: PackWriter) -> Result<()> {
        let p = w.finish(self.dk.generation, &self.dk.key);
        self.summary.bytes_repacked += p.bytes.len() as u64;
        self.summary.packs_written += 1;
        self.new_packs.push(self.repo.block_on(self.repo.save_pack(p, self.dk.generation))?);
        // Index as we go, as backup does: bounded memory, and a crash
        // leaves the copies indexed.
        if self.new_packs.len() >= REPACK_INDEX_EVERY {
            self.repo.block_on(self.repo.save_index(std::mem::take(&mut self.new_packs)))?;
        }
        Ok(())
    }

    /// Uploads the packs not yet full, and indexes what is not indexed.
    fn finish(mut self) -> Result<()> {
        let writers: Vec<PackWriter> = self.writers.drain().map(|(_, w)| w).collect();
        for w in writers {
            if !w.is_empty() {
                self.flush(w)?;
            }
        }
        if !self.new_packs.is_empty() {
            self.repo.block_on(self.repo.save_index(self.new_packs))?;
        }
        Ok(())
    }
}

/// Step (b): each index delta that lists a doomed pack (or is sealed with
/// an old key) is written again without the doomed packs, then deleted.
/// Returns how many were rewritten, and the deltas object lock keeps
/// (not rewritten: their packs stay with them).
fn rewrite_deltas(
    repo: &Repo,
    opts: &PruneOptions,
    plan: &PrunePlan,
    locked: &mut Option<crate::object_lock::Sweeper>,
) -> Result<(u64, HashSet<String>)> {
    let mut n = 0;
    let mut kept_deltas = HashSet::new();
    for (name, ids) in &plan.deltas {
        if !rewritten(plan, name, ids) {
            continue;
        }
        check_cancel(opts)?;
        let key = Store::path(repo.tenant(), Kind::Index, name);
        if let Some(sweeper) = locked.as_mut().filter(|s| s.defers(&key)) {
            sweeper.defer(&key);
            kept_deltas.insert(name.clone());
            continue;
        }
        write_replacement(repo, plan, name)?;
        // Refused by the store (its date was extended, or a legal hold):
        // it stays, with its packs, beside its replacement.
        if !remove(repo, &key, locked)? {
            kept_deltas.insert(name.clone());
        }
        n += 1;
    }
    Ok((n, kept_deltas))
}

/// Deletes an object: at once, or under object lock for good once its
/// date has passed (else it is counted as deferred). Returns whether it
/// is gone.
fn remove(repo: &Repo, key: &crate::store::Key, locked: &mut Option<crate::object_lock::Sweeper>) -> Result<bool> {
    match locked {
        Some(sweeper) => Ok(repo.block_on(sweeper.remove(key))?),
        None => repo.block_on(repo.store().delete(key)).map(|()| true).map_err(Into::into),
    }
}

/// Step (c): deletes the doomed and the unindexed packs; returns their
/// bytes.
fn delete_packs(
    repo: &Repo,
    opts: &PruneOptions,
    plan: &PrunePlan,
    kept_deltas: &HashSet<String>,
    locked: &mut Option<crate::object_lock::Sweeper>,
) -> Result<u64> {
    // A pack that a kept index delta lists stays: every pack an index
    // delta lists is in place.
    let listed: HashSet<PackId> =
        kept_deltas.iter().filter_map(|d| plan.deltas.get(d)).flat_map(|ids| ids.iter().copied()).collect();
    let doomed = plan.doomed.iter().map(|id| id.to_hex());
    let mut freed = 0u64;
    for name in doomed.chain(plan.unindexed.iter().cloned()) {
        let path = Store::path(repo.tenant(), Kind::Packs, &name);
        if let Some(sweeper) = locked.as_mut() {
            if PackId::from_hex(&name).is_ok_and(|id| listed.contains(&id)) {
                sweeper.defer(&path);
                opts.progress.step(1);
                continue;
            }
        }
        let size = repo.block_on(repo.store().size(&path)).unwrap_or(0);
        if remove(repo, &path, locked)? {
            freed += size;
        }
        opts.progress.step(1);
    }
    Ok(freed)
}
