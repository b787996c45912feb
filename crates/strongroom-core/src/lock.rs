//! Tenant locks: shared (backup, check, restore) and exclusive (forget,
//! prune), built on the store's conditional create.
//!
//! A lock is an object `tenants/<t>/locks/<random id>` holding a sealed
//! record (exclusive flag, host, pid, command, and what places the
//! process on its machine: boot id, PID namespace, start time). Acquiring: create our lock
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
//! (a failure borg users have met with lock timestamps from skewed clocks).
//!
//! A lock is also stale at once when its process is *proven* dead on this
//! very machine: the record names our host, our boot id
//! (`/proc/sys/kernel/random/boot_id`) and our PID namespace (the inode of
//! `/proc/self/ns/pid`), and its pid is gone, or runs with another start
//! time (`/proc/<pid>/stat` field 22: the pid was reused). A host name
//! alone proves nothing: containers, pods and cloned machines share one,
//! and a pid not found in *our* namespace may run in another (a prune in
//! one container once deleted the packs of a backup running in the next).
//! A record without those fields (an older writer) is judged by the
//! store's clock only. See [`owner_proven_dead`].
//!
//! A holder checks, before it commits (backup) or deletes (prune), that its
//! last successful refresh is recent (half the TTL, by its own monotonic
//! clock); otherwise it stops, since others may have judged it stale.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::sealed;
use crate::crypto;
use crate::error::{Error, Result};
use crate::id::TenantName;
use crate::scope::TenantScope;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Exclusive lock.
    pub exclusive: bool,
    /// Host name of the holder.
    pub hostname: String,
    /// Process id of the holder, in its PID namespace.
    pub pid: u32,
    /// Command that took it.
    pub command: String,
    /// Boot id of the holder's machine (absent from older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Inode of the holder's PID namespace (absent from older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// Start time of the holder process, in clock ticks after boot
    /// (`/proc/<pid>/stat` field 22; absent from older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
}

/// Where this process runs: what a lock record must match before its
/// process can be proven dead here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Here {
    /// Host name.
    pub hostname: String,
    /// Boot id of this machine, if readable.
    pub boot_id: Option<String>,
    /// Inode of our PID namespace, if readable.
    pub pid_ns: Option<u64>,
}

impl Here {
    /// This process's machine and PID namespace, read from `/proc`.
    pub fn current() -> Self {
        Self { hostname: crate::source::hostname(), boot_id: boot_id(), pid_ns: pid_namespace() }
    }
}

/// What this machine says of a pid in our PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// No such process.
    Gone,
    /// A process runs with that pid, started at this time (`None`: not
    /// readable, so a reused pid cannot be told apart).
    Running {
        /// Start time in clock ticks after boot.
        start_time: Option<u64>,
    },
}

/// Whether the process of a lock is proven dead on this machine: the
/// record names this host, boot and PID namespace, and `probe` finds its
/// pid gone or started at another time than recorded. Anything less (a
/// record from an older writer, another boot or namespace, an unreadable
/// `/proc`) proves nothing, and the lock is judged by the store's clock.
pub fn owner_proven_dead(r: &LockRecord, here: &Here, probe: impl Fn(u32) -> Process) -> bool {
    let (Some(boot), Some(ns)) = (r.boot_id.as_deref(), r.pid_ns) else { return false };
    if r.hostname != here.hostname || here.boot_id.as_deref() != Some(boot) || here.pid_ns != Some(ns) {
        return false;
    }
    match probe(r.pid) {
        Process::Gone => true,
        Process::Running { start_time: Some(now) } => r.start_time.is_some_and(|then| then != now),
        Process::Running { start_time: None } => false,
    }
}

/// Whether a lock is stale: not refreshed for more than `ttl_ms` by the
/// store's clock (`age_ms`), or its process proven dead here.
pub fn is_stale(
    record: Option<&LockRecord>,
    age_ms: i64,
    ttl_ms: i64,
    here: &Here,
    probe: impl Fn(u32) -> Process,
) -> bool {
    age_ms > ttl_ms || record.is_some_and(|r| owner_proven_dead(r, here, probe))
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
    /// Stale: not refreshed within the TTL, or its process proven gone on
    /// this machine.
    pub stale: bool,
}

/// A held lock; release it with [`LockGuard::release`].
pub struct LockGuard {
    command: String,
    kind: LockKind,
    tenant: TenantName,
    store: Store,
    path: crate::store::Key,
    refreshed: Arc<Mutex<Instant>>,
    refresher: tokio::task::JoinHandle<()>,
    ttl: Duration,
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// Whether `/proc` shows our PID namespace (a process moved into a new
/// namespace without a new `/proc` mount sees its parent's pids there).
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        .is_some_and(|pid| pid == std::process::id())
}

/// Field 22 (start time) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses, so
/// fields are counted after the last `)`.
fn stat_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn start_time_of(pid: u32) -> Option<u64> {
    stat_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Asks this machine about a pid of our PID namespace. A pid that is not
/// a valid process id is never called gone.
fn probe_process(pid: u32) -> Process {
    let p = match i32::try_from(pid) {
        Ok(p) if p > 0 => p,
        _ => return Process::Running { start_time: None },
    };
    let gone = rustix::process::Pid::from_raw(p).map(rustix::process::test_kill_process);
    if matches!(gone, Some(Err(rustix::io::Errno::SRCH))) {
        return Process::Gone;
    }
    Process::Running { start_time: if proc_is_ours() { start_time_of(pid) } else { None } }
}

/// Lists the tenant's locks, judging staleness by the store's clock
/// `store_now_ms`.
pub async fn list(scope: &TenantScope, store_now_ms: i64) -> Result<Vec<LockInfo>> {
    let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
    describe_all(scope, listed, store_now_ms, None).await
}

/// Reads and judges listed locks; `own` (a lock this process just wrote)
/// is not read back.
async fn describe_all(
    scope: &TenantScope,
    listed: Vec<crate::store::Listed>,
    store_now_ms: i64,
    own: Option<&str>,
) -> Result<Vec<LockInfo>> {
    let here = Here::current();
    let ttl_ms = lock_ttl().as_millis() as i64;
    let mut out = Vec::new();
    for l in listed {
        if own == Some(l.name.as_str()) {
            continue;
        }
        let path = scope.path(Kind::Locks, &l.name);
        let Some(bytes) = scope.store().get_opt(&path).await? else { continue };
        let record = open_record(scope, &bytes);
        let age_ms = store_now_ms - l.modified_ms;
        let stale = is_stale(record.as_ref(), age_ms, ttl_ms, &here, probe_process);
        out.push(LockInfo { name: l.name, record, age_ms, stale });
    }
    Ok(out)
}

fn open_record(scope: &TenantScope, bytes: &[u8]) -> Option<LockRecord> {
    let env = sealed::decode(bytes, LOCK_MAGIC, "lock").ok()?;
    // Locks are sealed with the metadata key (generation 0), which key
    // rotation never retires: a lock outlives the data key it was taken under.
    if env.key_generation != 0 {
        return None;
    }
    let plain = env.open(scope.keys().meta_key(), scope.tenant().as_str(), || "lock".into()).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// The JSON payload of a record. A test build lets
/// `STRONGROOM_TEST_LOCK_OWNER` (a JSON object) replace fields, to play a
/// lock left by a process of another boot, namespace or start time.
fn record_payload(record: &LockRecord) -> Result<Vec<u8>> {
    let internal = |e: serde_json::Error| Error::Internal(format!("lock record: {e}"));
    let mut value = serde_json::to_value(record).map_err(internal)?;
    if let Some(owner) = crate::testhook::var("STRONGROOM_TEST_LOCK_OWNER") {
        let owner: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&owner).map_err(|e| Error::invalid_input("test lock owner", &owner, e.to_string()))?;
        if let Some(fields) = value.as_object_mut() {
            fields.extend(owner);
        }
    }
    serde_json::to_vec(&value).map_err(internal)
}

/// The store's current time: the modification time of an object we just wrote.
async fn store_now(store: &Store, path: &crate::store::Key) -> Result<i64> {
    Ok(store.head(path).await?.1)
}

/// Takes a lock, waiting up to `wait` for conflicting holders.
pub async fn acquire(scope: &TenantScope, kind: LockKind, wait: Duration, command: &str) -> Result<LockGuard> {
    let deadline = Instant::now() + wait;
    let payload = record_payload(&own_record(kind, command))?;
    let bytes = Bytes::from(sealed::seal(LOCK_MAGIC, 0, scope.keys().meta_key(), scope.tenant().as_str(), &payload));
    loop {
        let name = hex::encode(crypto::random_bytes::<16>());
        let path = scope.path(Kind::Locks, &name);
        scope.store().create_volatile(&path, bytes.clone()).await?;
        let conflicts = match conflicts(scope, kind, &name, &path).await {
            Ok(c) => c,
            Err(e) => {
                let _ = scope.store().delete(&path).await;
                return Err(e);
            }
        };
        if conflicts.is_empty() {
            return Ok(LockGuard::hold(scope, path, bytes, kind, command));
        }
        let _ = scope.store().delete(&path).await;
        if Instant::now() >= deadline {
            let who: Vec<String> = conflicts.iter().map(describe).collect();
            return Err(Error::Locked(format!(
                "tenant {} is locked by {} (use --lock-wait to wait, `strongroom unlock` to remove stale locks)",
                scope.tenant(),
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

/// The record this process writes into its locks.
fn own_record(kind: LockKind, command: &str) -> LockRecord {
    let here = Here::current();
    LockRecord {
        exclusive: kind == LockKind::Exclusive,
        hostname: here.hostname,
        pid: std::process::id(),
        command: command.to_string(),
        boot_id: here.boot_id,
        pid_ns: here.pid_ns,
        start_time: std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_start_time(&s)),
    }
}

/// The live locks besides ours (`name` at `path`, just written) that a
/// lock of `kind` cannot share the tenant with.
async fn conflicts(scope: &TenantScope, kind: LockKind, name: &str, path: &crate::store::Key) -> Result<Vec<LockInfo>> {
    // The store's clock is our new lock's modification time, read from
    // the listing (or asked for when the listing lags behind).
    let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
    let now = match listed.iter().find(|l| l.name == name) {
        Some(l) => l.modified_ms,
        None => store_now(scope.store(), path).await?,
    };
    Ok(describe_all(scope, listed, now, Some(name))
        .await?
        .into_iter()
        .filter(|l| !l.stale)
        // A lock we cannot read is treated as exclusive: safe side.
        .filter(|l| kind == LockKind::Exclusive || l.record.as_ref().is_none_or(|r| r.exclusive))
        .collect())
}

impl LockGuard {
    /// Holds the lock at `path` (sealed `bytes`), refreshing it every
    /// third of the TTL until it is released.
    fn hold(scope: &TenantScope, path: crate::store::Key, bytes: Bytes, kind: LockKind, command: &str) -> Self {
        let (store, tenant) = (scope.store().clone(), scope.tenant().clone());
        let ttl = lock_ttl();
        let refreshed = Arc::new(Mutex::new(Instant::now()));
        let refresher = {
            let (store, path, refreshed) = (store.clone(), path.clone(), refreshed.clone());
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
        LockGuard { command: command.to_string(), kind, tenant, store, path, refreshed, refresher, ttl }
    }

    /// Whether this is a shared or an exclusive lock.
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// Refuses (as a bug of the caller's) a guard that is not the
    /// exclusive lock of `tenant`: a protocol that deletes must not run
    /// under a shared lock or another tenant's.
    pub fn require_exclusive(&self, tenant: &TenantName, what: &str) -> Result<()> {
        if self.kind != LockKind::Exclusive || &self.tenant != tenant {
            return Err(Error::Internal(format!(
                "{what} needs the exclusive lock of tenant {tenant}, and was given a {} lock of tenant {}",
                if self.kind == LockKind::Exclusive { "exclusive" } else { "shared" },
                self.tenant
            )));
        }
        Ok(())
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
pub async fn unlock(scope: &TenantScope, all: bool) -> Result<Vec<String>> {
    // A probe object gives the store's current time.
    let probe = scope.path(Kind::Locks, &format!(".probe-{}", hex::encode(crypto::random_bytes::<8>())));
    scope.store().overwrite_volatile(&probe, Bytes::from_static(b"probe")).await?;
    let now = store_now(scope.store(), &probe).await;
    scope.store().delete(&probe).await?;
    let mut removed = Vec::new();
    for l in list(scope, now?).await? {
        if all || l.stale {
            scope.store().delete(&scope.path(Kind::Locks, &l.name)).await?;
            removed.push(l.name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL_MS: i64 = 300_000;

    fn here() -> Here {
        Here { hostname: "h".into(), boot_id: Some("boot-a".into()), pid_ns: Some(4026531836) }
    }

    fn record() -> LockRecord {
        LockRecord {
            exclusive: false,
            hostname: "h".into(),
            pid: 42,
            command: "backup".into(),
            boot_id: Some("boot-a".into()),
            pid_ns: Some(4026531836),
            start_time: Some(1000),
        }
    }

    fn stale_with(r: &LockRecord, p: Process) -> bool {
        is_stale(Some(r), 1_000, TTL_MS, &here(), |pid| {
            assert_eq!(pid, r.pid);
            p
        })
    }

    #[test]
    fn a_dead_process_of_this_boot_and_namespace_makes_its_lock_stale_at_once() {
        assert!(stale_with(&record(), Process::Gone));
    }

    #[test]
    fn a_running_process_with_the_recorded_start_time_keeps_its_lock() {
        assert!(!stale_with(&record(), Process::Running { start_time: Some(1000) }));
        assert!(!stale_with(&record(), Process::Running { start_time: None }));
    }

    #[test]
    fn a_reused_pid_does_not_keep_a_dead_process_lock_alive() {
        assert!(stale_with(&record(), Process::Running { start_time: Some(2000) }));
        // Without a recorded start time, a running pid proves nothing.
        let r = LockRecord { start_time: None, ..record() };
        assert!(!stale_with(&r, Process::Running { start_time: Some(2000) }));
        assert!(stale_with(&r, Process::Gone));
    }

    #[test]
    fn a_host_name_alone_proves_nothing() {
        let other_boot = LockRecord { boot_id: Some("boot-b".into()), ..record() };
        let other_ns = LockRecord { pid_ns: Some(4026532174), ..record() };
        let other_host = LockRecord { hostname: "g".into(), ..record() };
        let older_writer = LockRecord { boot_id: None, pid_ns: None, start_time: None, ..record() };
        for r in [other_boot, other_ns, other_host, older_writer] {
            assert!(!stale_with(&r, Process::Gone), "{r:?}");
            // The store's clock still expires it.
            assert!(is_stale(Some(&r), TTL_MS + 1, TTL_MS, &here(), |_| Process::Gone), "{r:?}");
        }
        // Nor does a machine that cannot read its own identity.
        let blind = Here { boot_id: None, ..here() };
        assert!(!is_stale(Some(&record()), 1_000, TTL_MS, &blind, |_| Process::Gone));
        let blind = Here { pid_ns: None, ..here() };
        assert!(!is_stale(Some(&record()), 1_000, TTL_MS, &blind, |_| Process::Gone));
    }

    #[test]
    fn an_unreadable_lock_is_stale_only_by_the_store_clock() {
        assert!(!is_stale(None, TTL_MS, TTL_MS, &here(), |_| Process::Gone));
        assert!(is_stale(None, TTL_MS + 1, TTL_MS, &here(), |_| Process::Gone));
    }

    #[test]
    fn this_process_is_found_running_with_its_own_start_time() {
        let me = std::process::id();
        let start = start_time_of(me);
        assert!(start.is_some(), "/proc/self/stat has a start time");
        assert_eq!(probe_process(me), Process::Running { start_time: start });
        let r = LockRecord { pid: me, start_time: start, ..record() };
        let here = Here::current();
        let r = LockRecord { hostname: here.hostname.clone(), boot_id: here.boot_id.clone(), pid_ns: here.pid_ns, ..r };
        assert!(!owner_proven_dead(&r, &here, probe_process));
        // pid 0 would signal our process group: never called gone.
        assert_eq!(probe_process(0), Process::Running { start_time: None });
        assert_eq!(probe_process(u32::MAX), Process::Running { start_time: None });
    }

    #[test]
    fn start_time_is_field_22_even_when_the_command_name_has_spaces_and_parens() {
        let fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        let line = format!("77 (a) b (c)) {}\n", fields.join(" "));
        assert_eq!(stat_start_time(&line), Some(22));
        assert_eq!(stat_start_time("77 (x) S 1 2"), None);
        assert_eq!(stat_start_time("garbage"), None);
    }

    #[test]
    fn older_records_decode_and_new_fields_are_omitted_when_unknown() {
        let old: LockRecord =
            serde_json::from_str(r#"{"exclusive":true,"hostname":"backup-01","pid":4242,"command":"prune"}"#).unwrap();
        assert_eq!(old.boot_id, None);
        assert_eq!(old.pid_ns, None);
        assert_eq!(old.start_time, None);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"exclusive":true,"hostname":"backup-01","pid":4242,"command":"prune"}"#
        );
    }
}
