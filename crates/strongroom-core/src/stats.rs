//! Stats: sizes and ratios of one tenant's part of the repository.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::pack::BlobKind;
use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};

/// What deleting one snapshot (and pruning) would free.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotCost {
    /// Snapshot id (hex).
    pub id: String,
    /// Snapshot time, RFC 3339.
    pub time: String,
    /// Its file bytes.
    pub logical_bytes: u64,
    /// Stored bytes of the blobs no other snapshot references: what
    /// `forget` of this snapshot alone followed by `prune` would free.
    pub freed_bytes: u64,
}

/// Repository statistics for one tenant.
///
/// Chunk counts, unique and stored blob bytes, and the dedup and
/// compression ratios count only data that some snapshot references: the
/// packs of a backup that stopped before its snapshot (Ctrl-C, a quota, a
/// failed upload) are indexed, so that the next backup reuses them, but
/// they are no snapshot's data. They are in `stored_bytes` (what the store
/// holds) and in `unreferenced_blob_bytes` until `prune` removes them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsSummary {
    /// Tenant.
    pub tenant: String,
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of the file bytes of every snapshot.
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct data chunks snapshots reference.
    pub unique_bytes: u64,
    /// Bytes of every object of the tenant in the store: packs (also those
    /// holding only unreferenced data), index deltas, snapshot records,
    /// keys, audit entries and the tenant's other records.
    pub stored_bytes: u64,
    /// Stored (compressed, sealed, padded) bytes of the referenced data
    /// chunks.
    pub stored_blob_bytes: u64,
    /// Stored bytes of indexed data chunks no snapshot references (left by
    /// a backup that stopped, or by `forget`): what `prune` can free.
    pub unreferenced_blob_bytes: u64,
    /// Distinct data chunks snapshots reference.
    pub chunks: u64,
    /// Distinct tree blobs.
    pub trees: u64,
    /// Packs.
    pub packs: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / stored blob bytes.
    pub compression_ratio: f64,
    /// logical / stored.
    pub total_ratio: f64,
    /// Per snapshot, what deleting it would free (dedup-aware), oldest first.
    pub snapshot_costs: Vec<SnapshotCost>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Computes statistics (streams the catalog; lists the tenant's objects;
/// walks every snapshot's trees).
pub async fn run(repo: &Repo) -> Result<StatsSummary> {
    repo.set_tree_pack_cache(true);
    let snaps = repo.snapshots()?;
    let logical_bytes = snaps.iter().map(|s| s.record.summary.logical_bytes).sum();
    let totals = repo.catalog().blob_totals()?;
    let mut packs = 0u64;
    repo.catalog().for_each_pack(|_, _| packs += 1)?;
    let stored_bytes = repo.stored_bytes().await?;
    let refs = references(repo, &snaps).await?;
    let referenced = referenced_data(repo, &refs)?;
    Ok(StatsSummary {
        tenant: repo.tenant().to_string(),
        snapshots: snaps.len() as u64,
        logical_bytes,
        unique_bytes: referenced.raw_bytes,
        stored_bytes,
        stored_blob_bytes: referenced.stored_bytes,
        unreferenced_blob_bytes: totals.data_stored_bytes.saturating_sub(referenced.stored_bytes),
        chunks: referenced.chunks,
        trees: totals.tree_blobs,
        packs,
        dedup_ratio: ratio(logical_bytes, referenced.raw_bytes),
        compression_ratio: ratio(referenced.raw_bytes, referenced.stored_bytes),
        total_ratio: ratio(logical_bytes, stored_bytes),
        snapshot_costs: costs(repo, &snaps, &refs)?,
    })
}

/// For each snapshot, the stored bytes of the blobs only it references.
pub async fn snapshot_costs(repo: &Repo) -> Result<Vec<SnapshotCost>> {
    repo.set_tree_pack_cache(true);
    let snaps = repo.snapshots()?;
    let refs = references(repo, &snaps).await?;
    costs(repo, &snaps, &refs)
}

/// Blob -> (snapshots referencing it, index of the last one that did).
type References = HashMap<BlobId, (u32, u32)>;

/// Walks every snapshot's trees; a blob counts once per snapshot. Trees
/// are decoded once and kept while walking (tree blobs are a small share
/// of a repository), and the map holds one entry per distinct blob.
async fn references(repo: &Repo, snaps: &[Snapshot]) -> Result<References> {
    let mut refs = References::new();
    let mut trees: HashMap<BlobId, Arc<Tree>> = HashMap::new();
    for (i, snap) in snaps.iter().enumerate() {
        let i = i as u32;
        let mut stack = vec![snap.record.tree];
        let mark = |id: BlobId, refs: &mut References| -> bool {
            let e = refs.entry(id).or_insert((0, u32::MAX));
            if e.1 == i {
                return false;
            }
            e.0 += 1;
            e.1 = i;
            true
        };
        while let Some(tid) = stack.pop() {
            if !mark(tid, &mut refs) {
                continue;
            }
            let tree = match trees.get(&tid) {
                Some(t) => t.clone(),
                None => {
                    let t = Arc::new(repo.load_tree(&tid).await?);
                    trees.insert(tid, t.clone());
                    t
                }
            };
            for node in tree.iter() {
                match &node.kind {
                    NodeKind::Dir { subtree } => stack.push(*subtree),
                    NodeKind::File { content } => {
                        for c in content {
                            mark(*c, &mut refs);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(refs)
}

/// Distinct data chunks the snapshots reference, with their plaintext and
/// stored bytes.
#[derive(Default)]
struct ReferencedData {
    chunks: u64,
    raw_bytes: u64,
    stored_bytes: u64,
}

fn referenced_data(repo: &Repo, refs: &References) -> Result<ReferencedData> {
    let mut r = ReferencedData::default();
    for id in refs.keys() {
        if let Some(loc) = repo.catalog().lookup(id)? {
            if loc.blob.kind == BlobKind::Data {
                r.chunks += 1;
                r.raw_bytes += u64::from(loc.blob.raw_len);
                r.stored_bytes += u64::from(loc.blob.length);
            }
        }
    }
    Ok(r)
}

fn costs(repo: &Repo, snaps: &[Snapshot], refs: &References) -> Result<Vec<SnapshotCost>> {
    let mut freed = vec![0u64; snaps.len()];
    for (id, (count, owner)) in refs {
        if *count == 1 {
            if let Some(loc) = repo.catalog().lookup(id)? {
                freed[*owner as usize] += loc.blob.length as u64;
            }
        }
    }
    Ok(snaps
        .iter()
        .zip(freed)
        .map(|(s, f)| SnapshotCost {
            id: s.id.to_hex(),
            time: s.record.time.clone(),
            logical_bytes: s.record.summary.logical_bytes,
            freed_bytes: f,
        })
        .collect())
}
