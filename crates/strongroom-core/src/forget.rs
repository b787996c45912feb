//! `forget`: apply a retention policy to a tenant's snapshots, and prune
//! after it when asked, as one protocol under one exclusive lock.
//!
//! Owns: the order of the steps. The holds are read under the same
//! exclusive lock that `hold add` and `hold remove` take, so they cannot
//! change between planning and deleting; snapshot records are deleted
//! only after the plan; prune runs under the same lock guard, checking it
//! before each deletion. Must not: print, or decide the policy (the
//! caller resolves flags and the tenant's plan into a `Policy`).

use std::collections::HashMap;

use jiff::tz::TimeZone;

use crate::error::Result;
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::prune::{self, PruneOptions, PruneSummary};
use crate::repo::{DamagedRecord, Repo};
use crate::retention::{self, ForgetPlan, Policy};
use crate::snapshot::Snapshot;

/// What `forget` needs besides the repository.
pub struct ForgetOptions {
    /// The retention policy.
    pub policy: Policy,
    /// "Now", in nanoseconds since the epoch (`keep-within` counts back
    /// from it).
    pub now_ns: i64,
    /// The time zone that days, weeks, months and years are counted in.
    pub tz: TimeZone,
}

/// The plan, and what it was made from.
pub struct Planned {
    /// The readable snapshots the policy was applied to.
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
    if !removed.is_empty() {
        repo.block_on(repo.forget(&removed))?;
    }
    let prune = match prune_opts {
        Some(mut p) => {
            p.before_delete = Box::new(guard.checker());
            Some(prune::run(repo, &p)?)
        }
        None => None,
    };
    Ok(Forgotten { removed, prune })
}

/// Reads the snapshots, the damaged records and the holds, and applies the
/// policy.
fn plan(repo: &Repo, opts: &ForgetOptions) -> Result<Planned> {
    let snapshots = repo.snapshots()?;
    let damaged = repo.damaged_snapshot_records()?;
    let holds: HashMap<SnapshotId, String> = repo.block_on(crate::hold::held(repo.scope()))?;
    let plan = retention::plan_forget(&snapshots, &opts.policy, &holds, opts.now_ns, &opts.tz)?;
    Ok(Planned { snapshots, damaged, plan })
}
