//! Tenant locks: shared (backup, check, restore) and exclusive (forget,
//! prune), built on the store's conditional create.
//!
//! A lock is an object `tenants/<t>/locks/<random id>` holding a sealed
//! record (exclusive flag, host, pid, command). Acquiring: create our lock
//! object, read its modification time *as the store reports it*, then list
//! the other locks; a conflict (any live lock for an exclusive request, a
//! live exclusive lock for a shared one) makes us delete ours and retry
//! until `--lock-wait` runs out. Because each side creates before it lists,
//! two racing requests can both back off but never both proceed.
//!
//! Liveness is judged only by the store's clock: a lock is stale when the
//! store's time of our own fresh lock is more than [`lock_ttl`] past the
//! store's modification time of that lock. Holders refresh (rewrite) their
//! lock every third of the TTL. No host's wall clock enters the decision,
//! so a client whose clock is hours off cannot make a live lock look stale
//! (the failure in borg issue 10077). A lock of this host whose process is
//! gone is stale at once.
//!
//! A holder checks, before it commits (backup) or deletes (prune), that its
//! last successful refresh is recent (half the TTL, by its own monotonic
//! clock); otherwise it stops, since others may have judged it stale.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Error, Result};
use crate::format::sealed;
use crate::repo::Repo;
use crate::store::{Kind, Store};

/// Magic of lock records.
pub const LOCK_MAGIC: &[u8; 4] = b"SRLK";
/// Default time after its last refresh that a lock counts as stale.
pub const LOCK_TTL: Duration = Duration::from_secs(300);

/// The lock TTL: [`LOCK_TTL`], or `STRONGROOM_LOCK_TTL_SECS` in a test
/// build (see [`crate::testhook`]).
pub fn lock_ttl() -> Duration {
    crate::testhook::var("STRONGROOM_LOCK_TTL_SECS")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(LOCK_TTL)
}

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Many holders (backup, check, restore).
    Shared,
    /// One holder and no shared holders (forget, prune).
    Exclusive,
}

/// The sealed content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRecord {
    /// Exclusive lock.
    pub exclusive: bool,
    /// Host name of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Command that took it.
    pub command: String,
}

/// A lock found in the store.
#[derive(Debug, Clone)]
pub struct LockInfo {
    /// Object name.
    pub name: String,
    /// Decoded record (`None` if it does not open with this tenant's keys).
    pub record: Option<LockRecord>,
    /// Milliseconds since its last refresh, by the store's clock.
    pub age_ms: i64,
    /// Stale: not refreshed within the TTL, or its process is gone.
    pub stale: bool,
}

/// A held lock; release it with [`LockGuard::release`].
pub struct LockGuard {
    command: String,
    store: Store,
    path: object_store::path::Path,
    refreshed: Arc<Mutex<Instant>>,
    refresher: tokio::task::JoinHandle<()>,
    ttl: Duration,
}

fn process_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => {
            !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None), Err(nix::errno::Errno::ESRCH))
        }
        _ => false,
    }
}

/// Lists the tenant's locks, judging staleness by the store's clock
/// `store_now_ms`.
pub async fn list(repo: &Repo, store_now_ms: i64) -> Result<Vec<LockInfo>> {
    let listed = repo.store().list(repo.tenant(), Kind::Locks).await?;
    describe_all(repo, listed, store_now_ms, None).await
}

/// Reads and judges listed locks; `own` (a lock this process just wrote)
/// is not read back.
async fn describe_all(
    repo: &Repo,
    listed: Vec<crate::store::Listed>,
    store_now_ms: i64,
    own: Option<&str>,
) -> Result<Vec<LockInfo>> {
    let me = crate::source::hostname();
    let ttl_ms = lock_ttl().as_millis() as i64;
    let mut out = Vec::new();
    for l in listed {
        if own == Some(l.name.as_str()) {
            continue;
        }
        let path = Store::path(repo.tenant(), Kind::Locks, &l.name);
        let record = match repo.store().get(&path).await {
            Ok(b) => open_record(repo, &b),
            Err(crate::store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let age_ms = store_now_ms - l.modified_ms;
        let dead_here = record.as_ref().is_some_and(|r| r.hostname == me && !process_alive(r.pid));
        out.push(LockInfo { name: l.name, record, age_ms, stale: age_ms > ttl_ms || dead_here });
    }
    Ok(out)
}

fn open_record(repo: &Repo, bytes: &[u8]) -> Option<LockRecord> {
    let env = sealed::decode(bytes, LOCK_MAGIC, "lock").ok()?;
    // Locks are sealed with the metadata key (generation 0), which key
    // rotation never retires: a lock outlives the data key it was taken under.
    if env.key_generation != 0 {
        return None;
    }
    let plain = env.open(repo.keys().meta_key(), repo.tenant().as_str(), || "lock".into()).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// The store's current time: the modification time of an object we just wrote.
async fn store_now(store: &Store, path: &object_store::path::Path) -> Result<i64> {
    Ok(store.head(path).await?.1)
}

/// Takes a lock, waiting up to `wait` for conflicting holders.
pub async fn acquire(repo: &Repo, kind: LockKind, wait: Duration, command: &str) -> Result<LockGuard> {
    let deadline = Instant::now() + wait;
    let ttl = lock_ttl();
    let record = LockRecord {
        exclusive: kind == LockKind::Exclusive,
        hostname: crate::source::hostname(),
        pid: std::process::id(),
        command: command.to_string(),
    };
    let payload = serde_json::to_vec(&record).map_err(|e| Error::Invalid(e.to_string()))?;
    let bytes = Bytes::from(sealed::seal(LOCK_MAGIC, 0, repo.keys().meta_key(), repo.tenant().as_str(), &payload));
    loop {
        let name = hex::encode(crypto::random_bytes::<16>());
        let path = Store::path(repo.tenant(), Kind::Locks, &name);
        repo.store().create_volatile(&path, bytes.clone()).await?;
        // The store's clock is our new lock's modification time, read
        // from the listing (or asked for when the listing lags behind).
        let others = async {
            let listed = repo.store().list(repo.tenant(), Kind::Locks).await?;
            let now = match listed.iter().find(|l| l.name == name) {
                Some(l) => l.modified_ms,
                None => store_now(repo.store(), &path).await?,
            };
            describe_all(repo, listed, now, Some(&name)).await
        };
        let conflicts: Vec<LockInfo> = match others.await {
            Ok(locks) => locks
                .into_iter()
                .filter(|l| !l.stale)
                // A lock we cannot read is treated as exclusive: safe side.
                .filter(|l| kind == LockKind::Exclusive || l.record.as_ref().is_none_or(|r| r.exclusive))
                .collect(),
            Err(e) => {
                let _ = repo.store().delete(&path).await;
                return Err(e);
            }
        };
        if conflicts.is_empty() {
            let refreshed = Arc::new(Mutex::new(Instant::now()));
            let refresher = {
                let (store, path, bytes, refreshed) =
                    (repo.store().clone(), path.clone(), bytes.clone(), refreshed.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(ttl / 3).await;
                        match store.overwrite_volatile(&path, bytes.clone()).await {
                            Ok(()) => {
                                if let Ok(mut t) = refreshed.lock() {
                                    *t = Instant::now();
                                }
                            }
                            Err(e) => tracing::warn!("refreshing lock {path}: {e}"),
                        }
                    }
                })
            };
            return Ok(LockGuard {
                command: command.to_string(),
                store: repo.store().clone(),
                path,
                refreshed,
                refresher,
                ttl,
            });
        }
        let _ = repo.store().delete(&path).await;
        if Instant::now() >= deadline {
            let who: Vec<String> = conflicts.iter().map(describe).collect();
            return Err(Error::Locked(format!(
                "tenant {} is locked by {} (use --lock-wait to wait, `strongroom unlock` to remove stale locks)",
                repo.tenant(),
                who.join("; ")
            )));
        }
        let jitter = rand::random::<u64>() % 500;
        tokio::time::sleep(
            Duration::from_millis(500 + jitter)
                .min(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1)),
        )
        .await;
    }
}

fn describe(l: &LockInfo) -> String {
    match &l.record {
        Some(r) => format!(
            "{} lock of {} (pid {}, {}) refreshed {}s ago",
            if r.exclusive { "an exclusive" } else { "a shared" },
            r.hostname,
            r.pid,
            r.command,
            l.age_ms / 1000
        ),
        None => format!("lock {} (unreadable) refreshed {}s ago", &l.name[..8.min(l.name.len())], l.age_ms / 1000),
    }
}

impl LockGuard {
    /// The command that took the lock.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Fails when the lock may have been judged stale by others: its last
    /// successful refresh is more than half the TTL ago.
    pub fn check(&self) -> Result<()> {
        let age = self.refreshed.lock().map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        if age > self.ttl / 2 {
            return Err(Error::Locked(format!(
                "lock {} was not refreshed for {}s; stopping",
                self.path,
                age.as_secs()
            )));
        }
        Ok(())
    }

    /// A check function for code that cannot hold the guard itself.
    pub fn checker(&self) -> impl Fn() -> Result<()> + Send + Sync + 'static {
        let (refreshed, ttl, path) = (self.refreshed.clone(), self.ttl, self.path.to_string());
        move || {
            let age = refreshed.lock().map(|t| t.elapsed()).unwrap_or(Duration::MAX);
            if age > ttl / 2 {
                return Err(Error::Locked(format!("lock {path} was not refreshed for {}s; stopping", age.as_secs())));
            }
            Ok(())
        }
    }

    /// Stops refreshing and deletes the lock.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        self.store.delete(&self.path).await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Removes stale locks (all locks with `all`); returns the names removed.
pub async fn unlock(repo: &Repo, all: bool) -> Result<Vec<String>> {
    // A probe object gives the store's current time.
    let probe =
        Store::path(repo.tenant(), Kind::Locks, &format!(".probe-{}", hex::encode(crypto::random_bytes::<8>())));
    repo.store().overwrite_volatile(&probe, Bytes::from_static(b"probe")).await?;
    let now = store_now(repo.store(), &probe).await;
    repo.store().delete(&probe).await?;
    let mut removed = Vec::new();
    for l in list(repo, now?).await? {
        if all || l.stale {
            repo.store().delete(&Store::path(repo.tenant(), Kind::Locks, &l.name)).await?;
            removed.push(l.name);
        }
    }
    Ok(removed)
}
