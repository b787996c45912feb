//! Key rotation: a new data key for new writes, and (with rewrite) every
//! object re-sealed under it and the old keys retired.
//!
//! Rewrite order, each step safe to interrupt and resumed by running the
//! command again (a marker under `meta/rotation` names the target
//! generation, so a rerun does not rotate again):
//! 1. new keyring generation G (skipped when resuming), marker written;
//! 2. prune with `rewrite_below = G`: packs sealed with older keys are
//!    repacked (blobs verified, re-sealed), index deltas of older keys
//!    rewritten; unreferenced data goes as in any prune;
//! 3. snapshot records of older keys re-sealed (they get new ids; holds
//!    follow), then the old records deleted; holds re-sealed;
//! 4. a scan proves nothing of an older generation remains, then the old
//!    keyring objects are deleted and the marker cleared.
//!
//! Runs under the exclusive tenant lock.

use std::collections::HashSet;

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::prune::{self, PruneOptions};
use crate::repo::Repo;
use crate::snapshot::Rewritten;
use crate::store::Kind;

/// What a rotation did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RotateSummary {
    /// The data key generation now used for writes.
    pub generation: u32,
    /// Whether a rewrite interrupted earlier was resumed.
    pub resumed: bool,
    /// Packs re-sealed under the new key.
    pub packs_rewritten: u64,
    /// Index deltas rewritten.
    pub index_rewritten: u64,
    /// Snapshot records re-sealed, each with its old and new id.
    pub snapshots_resealed: Vec<Rewritten>,
    /// Hold records re-sealed.
    pub holds_resealed: u64,
    /// Key generations retired (deleted from the keyring).
    pub retired_generations: Vec<u32>,
}

/// Adds a new data key; with `rewrite`, re-seals everything and retires the
/// old keys. `before_delete` fails when the lock is lost.
pub fn run(
    repo: &mut Repo,
    rewrite: bool,
    end_quarantine: bool,
    cancel: crate::Cancel,
    before_delete: Box<dyn Fn() -> Result<()> + Send + Sync>,
) -> Result<RotateSummary> {
    let mut s = RotateSummary::default();
    if rewrite && !end_quarantine {
        // The rewrite deletes at once what tombstones name (old keys
        // retire only when nothing sealed with them is left): it would end
        // the quarantine the tenant was promised.
        let state = repo.block_on(crate::tombstone::State::load(repo.scope()))?;
        let count = state.in_quarantine();
        if count > 0 {
            return Err(Error::QuarantinePending { count });
        }
    }
    if rewrite {
        // The rewrite deletes packs and index deltas (a prune) and, at
        // the end, the old keys: a damaged record sealed with one would
        // be lost for good, even if its intact copy were put back.
        repo.refuse_damaged_records("key rotation's rewrite")?;
    }
    // 1. The new generation (or the one an interrupted rewrite was heading
    // to).
    let target = new_generation(repo, &mut s)?;
    if !rewrite {
        return Ok(s);
    }
    repo.block_on(crate::tenant::set_pending_rotation(repo.scope(), target))?;

    // 2. Packs and index deltas.
    let opts = PruneOptions {
        max_unused_percent: 100.0,
        dry_run: false,
        cancel,
        before_delete,
        rewrite_below: Some(target),
        progress: Arc::new(prune::NoProgress),
        // Old keys retire only when nothing sealed with them is left.
        quarantine: std::time::Duration::ZERO,
    };
    let p = prune::run(repo, &opts)?;
    s.packs_rewritten = p.plan.packs_repack;
    s.index_rewritten = p.index_rewritten;

    // 3. Snapshot records, then holds.
    (opts.before_delete)()?;
    reseal_snapshots(repo, target, &mut s)?;
    s.holds_resealed += repo.block_on(crate::hold::reseal_all(repo.scope()))?;

    // 4. Prove nothing old remains, then retire.
    repo.block_on(repo.rebuild_catalog())?;
    let leftovers = leftovers(repo, target)?;
    if !leftovers.is_empty() {
        return Err(Error::RotationIncomplete { left: leftovers.len(), first: leftovers[0].clone() });
    }
    s.retired_generations = repo.block_on(crate::tenant::retire_keys(repo, target))?;
    repo.runtime().clone().block_on(repo.reload_keys())?;
    repo.block_on(crate::tenant::clear_pending_rotation(repo.scope()))?;
    Ok(s)
}

/// Step 1: the generation new writes use from now on. A rotation marker
/// naming the current generation is a rewrite to resume; otherwise a new
/// keyring generation is made.
fn new_generation(repo: &mut Repo, s: &mut RotateSummary) -> Result<u32> {
    let pending = repo.block_on(crate::tenant::pending_rotation(repo.scope()))?;
    let current = repo.data_key()?.generation;
    let target = match pending {
        Some(g) if g == current => {
            s.resumed = true;
            g
        }
        _ => {
            let g = repo.block_on(crate::tenant::rotate_key(repo))?;
            repo.runtime().clone().block_on(repo.reload_keys())?;
            g
        }
    };
    s.generation = target;
    Ok(target)
}

/// Step 3: re-seals each snapshot record sealed below `target` (a new id;
/// its hold follows), then deletes the old record.
fn reseal_snapshots(repo: &Repo, target: u32, s: &mut RotateSummary) -> Result<()> {
    let mut resealed_payloads: HashSet<Vec<u8>> = HashSet::new();
    let mut old = Vec::new();
    for row in repo.catalog().snapshots()? {
        let g = repo.block_on(repo.sealed_generation(Kind::Snapshots, &row.id.to_hex()))?;
        if crate::crypto::sealed_before(g, target) {
            old.push(row);
        } else {
            resealed_payloads.insert(row.record);
        }
    }
    for row in old {
        let record = crate::codec::snapshot::decode(&row.record)?;
        // A rerun after a crash between writing the new record and deleting
        // the old one finds the copy already there.
        let new_id = if resealed_payloads.contains(&row.record) {
            None
        } else {
            Some(repo.block_on(repo.save_snapshot(&record))?)
        };
        if let Some(new_id) = new_id {
            // A hold that moves is re-sealed under the new key as it
            // moves: it counts here, as `reseal_all` then skips it.
            if repo.block_on(crate::hold::move_hold(repo.scope(), &row.id, &new_id))? {
                s.holds_resealed += 1;
            }
            s.snapshots_resealed.push(Rewritten { from: row.id.to_hex(), to: new_id.to_hex() });
        }
        repo.block_on(repo.forget(&[row.id]))?;
    }
    Ok(())
}

/// Step 4's scan: the packs (from the rebuilt catalog), index deltas and
/// snapshot records still sealed below `target`, named for the error.
fn leftovers(repo: &Repo, target: u32) -> Result<Vec<String>> {
    let mut leftovers = Vec::new();
    let mut old_packs = HashSet::new();
    repo.catalog().for_each_blob(|loc| {
        if crate::crypto::sealed_before(loc.key_generation, target) && old_packs.insert(loc.pack) {
            leftovers.push(format!("pack {}", loc.pack.short()));
        }
    })?;
    for kind in [Kind::Index, Kind::Snapshots] {
        for l in repo.block_on(repo.store().list(repo.tenant(), kind))? {
            if crate::crypto::sealed_before(repo.block_on(repo.sealed_generation(kind, &l.name))?, target) {
                leftovers.push(format!("{kind:?} {}", l.name.get(..8).unwrap_or(&l.name)));
            }
        }
    }
    Ok(leftovers)
}
