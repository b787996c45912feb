//! `forget`: apply a retention policy to a tenant's snapshots group by
//! group (or remove snapshots named by id), and prune after it when asked,
//! as one protocol under one exclusive lock.
//!
//! Owns: the order of the steps. The holds are read under the same
//! exclusive lock that `hold add` and `hold remove` take, so they cannot
//! change between planning and deleting; snapshot records are deleted
//! only after the plan; prune runs under the same lock guard, checking it
//! before each deletion. Must not: print, or decide the policy (the
//! caller resolves flags and the tenant's plan into a `Policy`).

use std::collections::HashMap;

use jiff::tz::TimeZone;

use crate::error::{Damage, Result};
use crate::group::{GroupBy, SnapshotFilter};
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::prune::{self, PruneOptions, PruneSummary};
use crate::repo::{DamagedRecord, Repo};
use crate::retention::{self, ForgetPlan, Policy};
use crate::snapshot::{Pick, Snapshot};

/// What `forget` removes.
#[derive(Debug, Clone)]
pub enum ForgetWhat {
    /// What a retention policy does not keep, group by group.
    Policy(Policy),
    /// These snapshots (ids or unique prefixes of 4+ hex digits); a held
    /// one stops the whole run.
    Ids(Vec<String>),
}

/// What `forget` needs besides the repository.
pub struct ForgetOptions {
    /// The policy, or the snapshots to remove.
    pub what: ForgetWhat,
    /// The snapshots a policy looks at; the others are left alone.
    pub filter: SnapshotFilter,
    /// How a policy groups snapshots (each group is counted on its own).
    pub group_by: GroupBy,
    /// "Now", in nanoseconds since the epoch (`keep-within` counts back
    /// from it).
    pub now_ns: i64,
    /// The time zone that days, weeks, months and years are counted in.
    pub tz: TimeZone,
    /// How long the removed snapshot records stay in the store, named by
    /// a tombstone, before a prune deletes them for good (zero: deleted
    /// at once).
    pub quarantine: std::time::Duration,
}

/// The plan, and what it was made from.
pub struct Planned {
    /// The readable snapshots the policy was applied to (those the filter
    /// accepts), or the ones named by id.
    pub snapshots: Vec<Snapshot>,
    /// Damaged snapshot records: always kept, never counted by the policy.
    pub damaged: Vec<DamagedRecord>,
    /// Keep or remove for each readable snapshot, with the reasons.
    pub plan: ForgetPlan,
}

/// What `forget` did.
pub struct Forgotten {
    /// The snapshots removed.
    pub removed: Vec<SnapshotId>,
    /// The tombstone that names them (none with no quarantine, or when
    /// nothing was removed).
    pub tombstone: Option<String>,
    /// When a prune may delete them for good, Unix ms by the store's clock.
    pub deletable_after_ms: Option<i64>,
    /// What prune did, when it ran.
    pub prune: Option<PruneSummary>,
}

/// Plans without changing anything (`--dry-run`): no lock is needed, and
/// the holds may change before anything acts on the plan.
pub fn dry_run(repo: &Repo, opts: &ForgetOptions) -> Result<Planned> {
    plan(repo, opts)
}

/// Plans under the exclusive lock `guard`, hands the plan to `on_plan`
/// (to show it before anything changes), deletes the snapshot records it
/// removes, then prunes with `prune_opts` when given. Damaged snapshot
/// records are never deleted here.
pub fn run(
    repo: &Repo,
    guard: &LockGuard,
    opts: &ForgetOptions,
    prune_opts: Option<PruneOptions>,
    on_plan: impl FnOnce(&Planned) -> Result<()>,
) -> Result<Forgotten> {
    guard.require_exclusive(repo.tenant(), "forget")?;
    let planned = plan(repo, opts)?;
    on_plan(&planned)?;
    let removed = planned.plan.remove_ids();
    let (mut tombstone, mut deletable_after_ms) = (None, None);
    if !removed.is_empty() && opts.quarantine.is_zero() {
        repo.block_on(repo.forget(&removed))?;
    } else if !removed.is_empty() {
        let (name, at_ms) = repo.block_on(crate::tombstone::forget(repo, &removed, "forget"))?;
        let q_ms = i64::try_from(opts.quarantine.as_millis()).unwrap_or(i64::MAX);
        tombstone = Some(name);
        deletable_after_ms = Some(at_ms.saturating_add(q_ms));
    }
    let prune = match prune_opts {
        Some(mut p) => {
            p.before_delete = Box::new(guard.checker());
            Some(prune::run(repo, &p)?)
        }
        None => None,
    };
    Ok(Forgotten { removed, tombstone, deletable_after_ms, prune })
}

/// Reads the snapshots, the damaged records and the holds, and applies the
/// policy to the snapshots the filter accepts (or resolves the ids).
fn plan(repo: &Repo, opts: &ForgetOptions) -> Result<Planned> {
    let all = repo.snapshots()?;
    let damaged = repo.damaged_snapshot_records()?;
    let holds: HashMap<SnapshotId, String> = repo.block_on(crate::hold::held(repo.scope()))?;
    match &opts.what {
        ForgetWhat::Policy(policy) => {
            let snapshots: Vec<Snapshot> = all.into_iter().filter(|s| opts.filter.matches(&s.record)).collect();
            let plan = retention::plan_forget(&snapshots, policy, opts.group_by, &holds, opts.now_ns, &opts.tz)?;
            Ok(Planned { snapshots, damaged, plan })
        }
        ForgetWhat::Ids(refs) => {
            let damage: Vec<Damage> = damaged.iter().cloned().map(DamagedRecord::into_damage).collect();
            let pick = Pick { filter: &opts.filter, named: None };
            let named = refs
                .iter()
                .map(|r| crate::snapshot::resolve(&all, &damage, r, None, &pick))
                .collect::<Result<Vec<&Snapshot>>>()?;
            let plan = retention::plan_remove(&named, opts.group_by, &holds)?;
            let snapshots = named.into_iter().cloned().collect();
            Ok(Planned { snapshots, damaged, plan })
        }
    }
}
