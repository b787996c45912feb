//! Stats: sizes and ratios of one tenant's part of the repository.

use crate::error::Result;
use crate::repo::Repo;

/// Repository statistics for one tenant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsSummary {
    /// Tenant.
    pub tenant: String,
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of the file bytes of every snapshot.
    pub logical_bytes: u64,
    /// Plaintext bytes of distinct data chunks.
    pub unique_bytes: u64,
    /// Bytes of every object of the tenant in the store.
    pub stored_bytes: u64,
    /// Stored (compressed, sealed, padded) bytes of data blobs.
    pub stored_blob_bytes: u64,
    /// Distinct data chunks.
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
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Computes statistics (streams the catalog; lists the tenant's objects).
pub async fn run(repo: &Repo) -> Result<StatsSummary> {
    let snaps = repo.snapshots()?;
    let logical_bytes = snaps.iter().map(|s| s.record.summary.logical_bytes).sum();
    let totals = repo.catalog().blob_totals()?;
    let mut packs = 0u64;
    repo.catalog().for_each_pack(|_, _| packs += 1)?;
    let stored_bytes = repo.stored_bytes().await?;
    Ok(StatsSummary {
        tenant: repo.tenant().to_string(),
        snapshots: snaps.len() as u64,
        logical_bytes,
        unique_bytes: totals.data_raw_bytes,
        stored_bytes,
        stored_blob_bytes: totals.data_stored_bytes,
        chunks: totals.data_blobs,
        trees: totals.tree_blobs,
        packs,
        dedup_ratio: ratio(logical_bytes, totals.data_raw_bytes),
        compression_ratio: ratio(totals.data_raw_bytes, totals.data_stored_bytes),
        total_ratio: ratio(logical_bytes, stored_bytes),
    })
}
