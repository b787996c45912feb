//! Repair: fix what `check` reports, where that is possible without
//! guessing.
//!
//! - Packs that no index lists (an interrupted backup) are verified and
//!   indexed again, so their blobs count for dedup and for snapshots.
//! - Index entries of packs that are gone are dropped (their deltas are
//!   rewritten without them).
//! - Snapshots that reference blobs no index knows (or trees that cannot
//!   be read) are rewritten without the affected files and directories; the
//!   new snapshot gets the tag `repaired` and the old record is removed.
//! - The catalog is rebuilt from the store.
//!
//! Damaged index deltas and snapshot records are removed only when the
//! user asks for it by name ([`run_index`], [`forget_damaged_snapshots`]),
//! each read and verified again right before it is deleted. The whole
//! repair ([`run`]) and the snapshot rewrite stop, naming them, while any
//! is left: a damaged index delta hides which packs hold blobs (snapshots
//! would be rewritten without files that still exist), a damaged snapshot
//! record what is still in use.
//!
//! Runs under the exclusive lock. Each step writes its new objects before
//! it deletes old ones, so an interruption leaves a repository at least as
//! sound as before.

use std::collections::{HashMap, HashSet};

use crate::codec::index::PackEntry;
use crate::codec::pack::BlobKind;
use crate::codec::snapshot::SnapshotRecord;
use crate::error::{Damage, Error, FileErrors, Result};
use crate::id::{BlobId, PackId};
use crate::pack::PackWriter;
use crate::repo::{Repo, Reverified};
use crate::store::{Kind, Store};
use crate::tree::{self, Node, NodeKind};

/// Tag given to snapshots rewritten by repair.
pub const REPAIRED_TAG: &str = "repaired";

/// Inputs of a repair.
#[derive(Debug, Clone, Copy)]
pub struct RepairOptions {
    /// Report only.
    pub dry_run: bool,
}

/// One rewritten snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepairedSnapshot {
    /// The damaged snapshot.
    pub old_id: String,
    /// Its replacement (absent in a dry run).
    pub new_id: Option<String>,
    /// Paths left out, with the reason.
    pub removed: FileErrors,
}

/// What repair did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSummary {
    /// Whether it only reported.
    pub dry_run: bool,
    /// Unindexed packs verified and indexed again.
    pub packs_indexed: u64,
    /// Data blobs (chunks) in those packs: a later backup reuses them.
    pub chunks_indexed: u64,
    /// Unindexed packs that failed verification (left in place).
    pub packs_unreadable: Vec<String>,
    /// Packs listed by an index but missing from the store.
    pub packs_missing: Vec<String>,
    /// Index deltas rewritten without missing packs.
    pub index_rewritten: u64,
    /// Snapshots rewritten.
    pub snapshots: Vec<RepairedSnapshot>,
    /// Damaged index deltas or snapshot records removed (with `dry_run`:
    /// that would be), each verified again just before.
    pub damaged_removed: Vec<Damage>,
    /// Records the last sync found damaged that read fine when read again
    /// (put back intact): left in place.
    pub damaged_intact: Vec<String>,
}

/// Runs a whole repair: packs against indexes, then snapshots. Stops
/// before changing anything while an index delta or snapshot record is
/// damaged ([`run_index`] and [`forget_damaged_snapshots`] remove them).
/// Blocking; see `backup::run` for the runtime contract.
pub fn run(repo: &Repo, opts: RepairOptions) -> Result<RepairSummary> {
    let mut s = RepairSummary { dry_run: opts.dry_run, ..Default::default() };
    repo.block_on(repo.rebuild_catalog())?;
    repo.refuse_damaged_records("repair")?;
    let missing = repair_index(repo, opts, &mut s, &HashSet::new())?;
    repair_snapshots(repo, opts, &mut s, &missing)?;
    Ok(s)
}

/// Repairs the index: packs that no readable index delta lists are
/// verified and indexed again (the packs of a damaged delta among them),
/// entries of missing packs dropped; then the damaged index deltas, read
/// and verified again one by one, are deleted. Blocking.
pub fn run_index(repo: &Repo, opts: RepairOptions) -> Result<RepairSummary> {
    let mut s = RepairSummary { dry_run: opts.dry_run, ..Default::default() };
    repo.block_on(repo.rebuild_catalog())?;
    let damaged: Vec<_> = repo.damaged_records()?.into_iter().filter(|d| !d.is_snapshot()).collect();
    let skip: HashSet<String> = damaged.iter().map(|d| d.id_hex().to_string()).collect();
    // The packs they listed are indexed again first: deleting the deltas
    // then loses nothing the packs themselves can tell.
    repair_index(repo, opts, &mut s, &skip)?;
    remove_damaged(repo, opts, &mut s, damaged)?;
    Ok(s)
}

/// Deletes the damaged snapshot records, each read and verified again
/// right before (one put back intact is kept and read in). Blocking.
pub fn forget_damaged_snapshots(repo: &Repo, opts: RepairOptions) -> Result<RepairSummary> {
    let mut s = RepairSummary { dry_run: opts.dry_run, ..Default::default() };
    repo.block_on(repo.sync())?;
    let damaged: Vec<_> = repo.damaged_records()?.into_iter().filter(|d| d.is_snapshot()).collect();
    remove_damaged(repo, opts, &mut s, damaged)?;
    Ok(s)
}

/// Rewrites the snapshots that reference blobs no index knows (or trees
/// that cannot be read), as [`run`] does, without its index step. Stops
/// while an index delta or snapshot record is damaged. Blocking.
pub fn run_snapshots(repo: &Repo, opts: RepairOptions) -> Result<RepairSummary> {
    let mut s = RepairSummary { dry_run: opts.dry_run, ..Default::default() };
    repo.block_on(repo.rebuild_catalog())?;
    repo.refuse_damaged_records("repair snapshots")?;
    let stored = stored_packs(repo)?;
    let mut missing = HashSet::new();
    repo.catalog().for_each_pack(|id, _| {
        if !stored.contains_key(&id.to_hex()) {
            missing.insert(id);
        }
    })?;
    repair_snapshots(repo, opts, &mut s, &missing)?;
    Ok(s)
}

/// Deletes `damaged` records that are still damaged when read again.
fn remove_damaged(
    repo: &Repo,
    opts: RepairOptions,
    s: &mut RepairSummary,
    damaged: Vec<crate::repo::DamagedRecord>,
) -> Result<()> {
    for d in damaged {
        crate::testhook::pause("repair-reverify", &d.name);
        match repo.block_on(repo.reverify(&d.name))? {
            Reverified::Damaged(why) => {
                if !opts.dry_run {
                    repo.block_on(repo.delete_damaged(std::slice::from_ref(&d.name)))?;
                }
                s.damaged_removed.push(Damage { object: d.object, why });
            }
            Reverified::Intact => s.damaged_intact.push(d.object),
            Reverified::Gone => {}
        }
    }
    if !opts.dry_run {
        // The catalog reads the intact ones in and forgets the rest.
        repo.block_on(repo.sync())?;
    }
    Ok(())
}

/// The stored packs, by name, with their sizes.
fn stored_packs(repo: &Repo) -> Result<HashMap<String, u64>> {
    Ok(repo.block_on(repo.store().list(repo.tenant(), Kind::Packs))?.into_iter().map(|l| (l.name, l.size)).collect())
}

/// Packs against indexes: unindexed packs verified and indexed, deltas
/// that list missing packs rewritten without them (deltas named in
/// `skip`, damaged ones, are left to the caller). Returns the missing
/// packs. The catalog is rebuilt at the end unless `dry_run`.
fn repair_index(
    repo: &Repo,
    opts: RepairOptions,
    s: &mut RepairSummary,
    skip: &HashSet<String>,
) -> Result<HashSet<PackId>> {
    let stored = stored_packs(repo)?;
    let mut indexed: HashSet<String> = HashSet::new();
    repo.catalog().for_each_pack(|id, _| {
        indexed.insert(id.to_hex());
    })?;
    let missing: HashSet<PackId> =
        indexed.iter().filter(|p| !stored.contains_key(*p)).filter_map(|p| PackId::from_hex(p).ok()).collect();
    s.packs_missing = missing.iter().map(|p| p.to_hex()).collect();
    // Quarantined packs and index deltas are a tombstone's business:
    // `undelete` indexes them again when a snapshot needs them.
    let tombstones = repo.block_on(crate::tombstone::State::load(repo.scope()))?;
    let (quarantined, hidden) = (tombstones.quarantined_packs(), tombstones.hidden_deltas());
    let mut recovered = Vec::new();
    for name in stored.keys().filter(|n| !indexed.contains(*n) && !quarantined.contains(*n)) {
        let Ok(id) = PackId::from_hex(name) else { continue };
        let path = Store::path(repo.tenant(), Kind::Packs, name);
        let bytes = repo.block_on(repo.store().get(&path))?;
        let verified = (crate::crypto::object_hash(&bytes) == id.0)
            .then(|| crate::pack::read_header(repo.keys(), &id, &bytes, bytes.len() as u64).ok())
            .flatten()
            .zip(crate::pack::key_generation(&id, &bytes).ok());
        match verified {
            Some((blobs, key_generation)) => {
                recovered.push(PackEntry { id, length: bytes.len() as u64, key_generation, blobs })
            }
            None => s.packs_unreadable.push(name.clone()),
        }
    }
    s.packs_indexed = recovered.len() as u64;
    s.chunks_indexed = recovered.iter().flat_map(|p| &p.blobs).filter(|b| b.kind == BlobKind::Data).count() as u64;
    if !opts.dry_run && !recovered.is_empty() {
        repo.block_on(repo.save_index(recovered))?;
    }
    if !missing.is_empty() {
        for l in repo.block_on(repo.store().list(repo.tenant(), Kind::Index))? {
            if skip.contains(&l.name) || hidden.contains(&l.name) {
                continue;
            }
            let entries = match repo.block_on(repo.load_index(&l.name)) {
                Ok(entries) => entries,
                Err(Error::Damaged { object, why }) => {
                    return Err(Error::DamagedRecords {
                        what: "repair stopped: an index delta is damaged".into(),
                        objects: vec![Damage { object, why }],
                        advice: "put the intact object back, or run `strongroom repair index`".into(),
                    })
                }
                Err(e) => return Err(e),
            };
            if !entries.iter().any(|p| missing.contains(&p.id)) {
                continue;
            }
            s.index_rewritten += 1;
            if opts.dry_run {
                continue;
            }
            let kept: Vec<PackEntry> = entries.into_iter().filter(|p| !missing.contains(&p.id)).collect();
            if !kept.is_empty() {
                repo.block_on(repo.save_index(kept))?;
            }
            repo.block_on(repo.store().delete(&Store::path(repo.tenant(), Kind::Index, &l.name)))?;
        }
    }
    if !opts.dry_run {
        repo.block_on(repo.rebuild_catalog())?;
    }
    Ok(missing)
}

/// Snapshots whose trees name blobs that are gone (in `missing` packs, or
/// in no index) are rewritten without them.
fn repair_snapshots(repo: &Repo, opts: RepairOptions, s: &mut RepairSummary, missing: &HashSet<PackId>) -> Result<()> {
    let mut fixer =
        Fixer { repo, dry_run: opts.dry_run, missing, memo: HashMap::new(), packer: None, written: Vec::new() };
    let mut rewrites: Vec<(crate::snapshot::Snapshot, BlobId, FileErrors)> = Vec::new();
    for snap in repo.snapshots()? {
        let (root, removed) = fixer.tree(&snap.record.tree, "")?;
        if !removed.is_empty() {
            rewrites.push((snap, root.unwrap_or_default(), removed));
        }
    }
    fixer.finish()?;
    for (snap, root, removed) in rewrites {
        let new_id = if opts.dry_run {
            None
        } else {
            let mut record: SnapshotRecord = snap.record.clone();
            record.tree = root;
            if !record.tags.iter().any(|t| t == REPAIRED_TAG) {
                record.tags.push(REPAIRED_TAG.to_string());
            }
            record.parent = Some(snap.id.to_hex());
            let id = repo.block_on(repo.save_snapshot(&record))?;
            repo.block_on(repo.forget(&[snap.id]))?;
            Some(id.to_hex())
        };
        s.snapshots.push(RepairedSnapshot { old_id: snap.id.to_hex(), new_id, removed });
    }
    Ok(())
}

struct Fixer<'a> {
    repo: &'a Repo,
    dry_run: bool,
    /// Packs that are gone (still in the catalog during a dry run).
    missing: &'a HashSet<PackId>,
    /// Tree id → (replacement id or None if unchanged, removed paths).
    memo: HashMap<BlobId, (Option<BlobId>, FileErrors)>,
    packer: Option<PackWriter>,
    written: Vec<PackEntry>,
}

impl Fixer<'_> {
    /// Returns the tree to use instead of `id` (None: `id` is fine, or the
    /// whole tree is unreadable when `removed` says so) and what was removed.
    fn tree(&mut self, id: &BlobId, prefix: &str) -> Result<(Option<BlobId>, FileErrors)> {
        if let Some((new, removed)) = self.memo.get(id) {
            return Ok((new.or(Some(*id)), removed.prefixed(prefix)));
        }
        let t = match self.repo.block_on(self.repo.load_tree(id)) {
            Ok(t) => t,
            Err(e) => {
                let mut removed = FileErrors::new();
                removed.push("", format!("tree {} unreadable: {e}", id.short()));
                // An unreadable directory becomes an empty one.
                let empty = self.store_tree(Vec::new())?;
                let prefixed = removed.prefixed(prefix);
                self.memo.insert(*id, (Some(empty), removed));
                return Ok((Some(empty), prefixed));
            }
        };
        let mut removed_rel = FileErrors::new();
        let mut nodes: Vec<Node> = Vec::with_capacity(t.len());
        let mut changed = false;
        for mut node in t {
            let name = String::from_utf8_lossy(&node.name).to_string();
            match &node.kind {
                NodeKind::File { content } => {
                    let lost = content.iter().find(|c| match self.repo.catalog().lookup(c) {
                        Ok(Some(loc)) => self.missing.contains(&loc.pack),
                        _ => true,
                    });
                    if let Some(c) = lost {
                        removed_rel.push(format!("/{name}"), format!("blob {} is missing", c.short()));
                        changed = true;
                        continue;
                    }
                }
                NodeKind::Dir { subtree } => {
                    let sub = *subtree;
                    let (new, removed) = self.tree(&sub, "")?;
                    removed_rel.extend(removed.prefixed(&format!("/{name}")));
                    if let Some(n) = new {
                        if n != sub {
                            node.kind = NodeKind::Dir { subtree: n };
                            changed = true;
                        }
                    }
                }
                _ => {}
            }
            nodes.push(node);
        }
        let new = if changed { Some(self.store_tree(nodes)?) } else { None };
        let prefixed = removed_rel.prefixed(prefix);
        self.memo.insert(*id, (new, removed_rel));
        Ok((new.or(Some(*id)), prefixed))
    }

    fn store_tree(&mut self, mut nodes: Vec<Node>) -> Result<BlobId> {
        tree::sort(&mut nodes);
        let bytes = crate::codec::tree::encode(&nodes);
        let id = self.repo.keys().blob_id(&bytes);
        if self.dry_run || self.repo.catalog().lookup(&id)?.is_some() {
            return Ok(id);
        }
        let dk = self.repo.data_key()?;
        let sealed = crate::blob::seal(&dk.key, BlobKind::Tree, &id, &bytes, crate::blob::Compression::Zstd(3));
        let w = self.packer.get_or_insert_with(|| PackWriter::new(BlobKind::Tree));
        w.add(id, bytes.len() as u32, sealed);
        if w.size() >= self.repo.config().pack_target_bytes as usize {
            self.flush()?;
        }
        Ok(id)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.packer.take() {
            if !w.is_empty() {
                let dk = self.repo.data_key()?;
                let p = w.finish(dk.generation, &dk.key);
                self.written.push(self.repo.block_on(self.repo.save_pack(p, dk.generation))?);
            }
        }
        Ok(())
    }

    /// Stores the last tree pack and indexes every new pack before any
    /// snapshot refers to them.
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        if !self.written.is_empty() {
            let packs = std::mem::take(&mut self.written);
            self.repo.block_on(self.repo.save_index(packs))?;
        }
        Ok(())
    }
}
