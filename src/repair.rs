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
//! Runs under the exclusive lock. Each step writes its new objects before
//! it deletes old ones, so an interruption leaves a repository at least as
//! sound as before.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::format::index::PackEntry;
use crate::format::pack::BlobKind;
use crate::format::snapshot::SnapshotRecord;
use crate::id::{BlobId, PackId};
use crate::pack::PackWriter;
use crate::repo::Repo;
use crate::store::{Kind, Store};
use crate::tree::{self, Node, NodeKind};

/// Paths left out of a tree, each with the reason.
type Removed = Vec<(String, String)>;

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
    pub removed: Vec<(String, String)>,
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
}

/// Runs a repair. Blocking; see `backup::run` for the runtime contract.
pub fn run(repo: &Repo, rt: &tokio::runtime::Handle, opts: RepairOptions) -> Result<RepairSummary> {
    let mut s = RepairSummary { dry_run: opts.dry_run, ..Default::default() };
    rt.block_on(repo.rebuild_catalog())?;

    // Packs against indexes.
    let stored: HashMap<String, u64> =
        rt.block_on(repo.store().list(repo.tenant(), Kind::Packs))?.into_iter().map(|l| (l.name, l.size)).collect();
    let mut indexed: HashSet<String> = HashSet::new();
    repo.catalog().for_each_pack(|id, _| {
        indexed.insert(id.to_hex());
    })?;
    let missing: HashSet<PackId> =
        indexed.iter().filter(|p| !stored.contains_key(*p)).filter_map(|p| PackId::from_hex(p).ok()).collect();
    s.packs_missing = missing.iter().map(|p| p.to_hex()).collect();
    let mut recovered = Vec::new();
    for name in stored.keys().filter(|n| !indexed.contains(*n)) {
        let Ok(id) = PackId::from_hex(name) else { continue };
        let path = Store::path(repo.tenant(), Kind::Packs, name);
        let bytes = rt.block_on(repo.store().get(&path))?;
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
        rt.block_on(repo.save_index(recovered))?;
    }
    if !missing.is_empty() {
        for l in rt.block_on(repo.store().list(repo.tenant(), Kind::Index))? {
            let entries = rt.block_on(repo.load_index(&l.name))?;
            if !entries.iter().any(|p| missing.contains(&p.id)) {
                continue;
            }
            s.index_rewritten += 1;
            if opts.dry_run {
                continue;
            }
            let kept: Vec<PackEntry> = entries.into_iter().filter(|p| !missing.contains(&p.id)).collect();
            if !kept.is_empty() {
                rt.block_on(repo.save_index(kept))?;
            }
            rt.block_on(repo.store().delete(&Store::path(repo.tenant(), Kind::Index, &l.name)))?;
        }
    }
    if !opts.dry_run {
        rt.block_on(repo.rebuild_catalog())?;
    }

    // Snapshots whose trees name blobs that are gone.
    let mut fixer = Fixer {
        repo,
        rt,
        dry_run: opts.dry_run,
        missing: &missing,
        memo: HashMap::new(),
        packer: None,
        written: Vec::new(),
    };
    let mut rewrites: Vec<(crate::snapshot::Snapshot, BlobId, Removed)> = Vec::new();
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
            let id = rt.block_on(repo.save_snapshot(&record))?;
            rt.block_on(repo.forget(&[snap.id]))?;
            Some(id.to_hex())
        };
        s.snapshots.push(RepairedSnapshot { old_id: snap.id.to_hex(), new_id, removed });
    }
    Ok(s)
}

struct Fixer<'a> {
    repo: &'a Repo,
    rt: &'a tokio::runtime::Handle,
    dry_run: bool,
    /// Packs that are gone (still in the catalog during a dry run).
    missing: &'a HashSet<PackId>,
    /// Tree id → (replacement id or None if unchanged, removed paths).
    memo: HashMap<BlobId, (Option<BlobId>, Removed)>,
    packer: Option<PackWriter>,
    written: Vec<PackEntry>,
}

impl Fixer<'_> {
    /// Returns the tree to use instead of `id` (None: `id` is fine, or the
    /// whole tree is unreadable when `removed` says so) and what was removed.
    fn tree(&mut self, id: &BlobId, prefix: &str) -> Result<(Option<BlobId>, Removed)> {
        if let Some((new, removed)) = self.memo.get(id) {
            let removed = removed.iter().map(|(p, w)| (format!("{prefix}{p}"), w.clone())).collect();
            return Ok((new.or(Some(*id)), removed));
        }
        let t = match self.rt.block_on(self.repo.load_tree(id)) {
            Ok(t) => t,
            Err(e) => {
                let removed = vec![(String::new(), format!("tree {} unreadable: {e}", id.short()))];
                // An unreadable directory becomes an empty one.
                let empty = self.store_tree(Vec::new())?;
                self.memo.insert(*id, (Some(empty), removed.clone()));
                return Ok((Some(empty), removed.into_iter().map(|(p, w)| (format!("{prefix}{p}"), w)).collect()));
            }
        };
        let mut removed_rel: Vec<(String, String)> = Vec::new();
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
                        removed_rel.push((format!("/{name}"), format!("blob {} is missing", c.short())));
                        changed = true;
                        continue;
                    }
                }
                NodeKind::Dir { subtree } => {
                    let sub = *subtree;
                    let (new, removed) = self.tree(&sub, "")?;
                    for (p, w) in removed {
                        removed_rel.push((format!("/{name}{p}"), w));
                    }
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
        self.memo.insert(*id, (new, removed_rel.clone()));
        Ok((new.or(Some(*id)), removed_rel.into_iter().map(|(p, w)| (format!("{prefix}{p}"), w)).collect()))
    }

    fn store_tree(&mut self, mut nodes: Vec<Node>) -> Result<BlobId> {
        tree::sort(&mut nodes);
        let bytes = crate::format::tree::encode(&nodes);
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
                self.written.push(self.rt.block_on(self.repo.save_pack(p, dk.generation))?);
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
            self.rt.block_on(self.repo.save_index(packs))?;
        }
        Ok(())
    }
}
