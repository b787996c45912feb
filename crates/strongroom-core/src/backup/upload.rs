//! The upload phase, on the tokio runtime: finished packs are stored with
//! at most `io_concurrency` puts at once, each stored pack's catalog rows
//! are staged at once, and an index delta is written every
//! [`INDEX_EVERY`] packs or [`INDEX_EVERY_SECS`] (and one for the rest at
//! the end, after a failure too, so a rerun dedups against what was
//! stored). A quota is checked before a pack is stored.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};

use super::Quota;
use crate::catalog::Staged;
use crate::codec::index::PackEntry;
use crate::error::{Error, Result};
use crate::pack::FinishedPack;
use crate::repo::Repo;

/// Packs per index delta at most; an interrupted backup loses at most this
/// many packs' worth of dedup for the rerun (or [`INDEX_EVERY_SECS`]' worth).
const INDEX_EVERY: usize = 16;
/// Longest time between index deltas while packs are being stored.
const INDEX_EVERY_SECS: u64 = 15;

/// What the uploader stored.
pub(super) struct Uploaded {
    /// Bytes of packs and index deltas.
    pub(super) bytes: u64,
}

/// Stores the packs that come through `rx` until it closes, `concurrency`
/// at a time. On a failure (a put, the quota) it stops taking packs (the
/// processor sees a closed channel), indexes what was stored and returns
/// the failure.
pub(super) async fn upload(
    repo: &Repo,
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    quota: Option<Quota>,
) -> Result<Uploaded> {
    let generation = repo.data_key()?.generation;
    let mut running = FuturesUnordered::new();
    let mut ledger =
        Ledger { repo, quota, staged: repo.catalog().stage(), bytes: 0, reserved: 0, last_index: Instant::now() };
    let mut open = true;
    let mut failure: Option<Error> = None;
    while open || !running.is_empty() {
        tokio::select! {
            p = rx.recv(), if open && running.len() < concurrency && failure.is_none() => match p {
                Some(p) => match ledger.reserve(p.bytes.len() as u64) {
                    Ok(()) => running.push(repo.save_pack(p, generation)),
                    Err(e) => {
                        failure = Some(e);
                        rx.close();
                        open = false;
                    }
                },
                None => open = false,
            },
            Some(r) = running.next(), if !running.is_empty() => match r {
                Ok(entry) => ledger.stored(entry).await?,
                Err(e) => {
                    failure.get_or_insert(e);
                    rx.close();
                    open = false;
                }
            },
            else => break,
        }
    }
    let bytes = ledger.finish().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Uploaded { bytes }),
    }
}

/// The uploader's account: what it stored, what it reserved against the
/// quota, and the stored packs still to index.
struct Ledger<'a> {
    repo: &'a Repo,
    quota: Option<Quota>,
    /// Stored packs not yet in an index delta; their catalog rows go in
    /// as they are stored.
    staged: Staged<'a>,
    /// Bytes stored: packs and index deltas.
    bytes: u64,
    /// Bytes uploaded or being uploaded (packs) plus index deltas written.
    reserved: u64,
    last_index: Instant,
}

impl Ledger<'_> {
    /// Reserves `len` bytes for a pack about to be stored, unless they
    /// would take the tenant over its quota.
    fn reserve(&mut self, len: u64) -> Result<()> {
        if let Some(q) = self.quota {
            if q.stored + self.reserved + len > q.limit {
                return Err(Error::QuotaExceeded {
                    tenant: self.repo.tenant().to_string(),
                    limit: q.limit,
                    stored: q.stored,
                    adding: self.reserved + len,
                });
            }
        }
        self.reserved += len;
        Ok(())
    }

    /// Records a stored pack, and writes an index delta when enough packs
    /// or time have gone by since the last.
    async fn stored(&mut self, entry: PackEntry) -> Result<()> {
        self.bytes += entry.length;
        self.staged.add(entry);
        if self.staged.packs().len() >= INDEX_EVERY || self.last_index.elapsed().as_secs() >= INDEX_EVERY_SECS {
            let staged = std::mem::replace(&mut self.staged, self.repo.catalog().stage());
            let (_, n) = self.repo.save_staged_index(staged).await?;
            self.bytes += n;
            self.reserved += n;
            self.last_index = Instant::now();
        }
        Ok(())
    }

    /// Indexes the packs stored since the last index delta; returns the
    /// bytes stored in all.
    async fn finish(self) -> Result<u64> {
        let mut bytes = self.bytes;
        if !self.staged.packs().is_empty() {
            let (_, n) = self.repo.save_staged_index(self.staged).await?;
            bytes += n;
        }
        Ok(bytes)
    }
}
