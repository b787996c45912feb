//! Tenant locks: shared (backup, check, restore) and exclusive (forget,
//! prune), built on the store's conditional create alone: a holder never
//! overwrites or deletes, so a host with create and read rights only (a
//! backup host without `s3:DeleteObject`) takes and releases locks.
//!
//! A lock is a group of objects under `tenants/<t>/locks/`:
//!
//! - `<k>-<c>`, the lock's record: `<k>` is `s` (shared) or `x`
//!   (exclusive), `<c>` the commitment, 32 hex digits of BLAKE3 of a
//!   32-byte secret the holder keeps in memory; the body is the sealed
//!   record (exclusive flag, host, pid, command, and what places the
//!   process on its machine: boot id, PID namespace, start time).
//! - `<k>-<c>.<n>`, refresh `n` (1, 2, …): a new object every third of
//!   the TTL, holding the record again; the lock's time is the newest store modification time among
//!   its record and refreshes.
//! - `<k>-<c>.end`, the release: its body is the secret. A reader accepts
//!   it only if BLAKE3 of the body matches the commitment, so a host
//!   cannot end another host's lock; a forged object only makes others
//!   wait, the safe side.
//!
//! Exclusive holders that may delete (forget, prune, …) release by deleting
//! their own objects, and sweep (delete) the ended and stale locks of
//! others ([`LockGuard::sweep`], [`unlock`]); shared holders leave theirs
//! for that sweep. A group without its record is not a lock (a release in
//! progress, or debris).
//!
//! The kind is read from the name, so that a reader that need not (or
//! cannot) open a record still judges it: a shared acquirer reads no `s-`
//! lock at all. A record that opens and says exclusive under an `s-` name
//! counts as exclusive; an `x-` lock is exclusive whatever its record says.
//! An older writer's lock (a name of 32 hex digits, refreshed by
//! overwriting it, deleted on release) is judged as it always was: by its
//! record, exclusive when that does not open.
//!
//! Acquiring: create our record, read its modification time *as the store
//! reports it* (from the listing that follows), then list the other locks;
//! a conflict (any live lock for an exclusive request, a live exclusive
//! lock for a shared one) makes us end ours, wait until a listing shows a
//! conflict gone, and retry until `--lock-wait` runs out. Because each
//! side creates before it lists, two racing requests can both back off but
//! never both proceed.
//!
//! Liveness is judged only by the store's clock: a lock is stale when the
//! store's time of our own fresh object is more than [`lock_ttl`] past the
//! lock's newest modification time. No host's wall clock enters the
//! decision, so a client whose clock is hours off cannot make a live lock
//! look stale (a failure borg users have met with lock timestamps from
//! skewed clocks).
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
use crate::store::{Kind, Listed, Store};

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

/// Hex digits of a lock name's commitment.
const COMMITMENT_HEX: usize = 32;
/// Name prefix of the objects [`probe_delete`] writes.
const PROBE_PREFIX: &str = "probe-";
/// Name suffix of a lock's release object.
const END_SUFFIX: &str = "end";

/// What the name of an object under `locks/` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockName<'a> {
    /// `<s|x>-<commitment>`: a lock's record.
    Record {
        /// The kind the name says.
        kind: LockKind,
    },
    /// `<s|x>-<commitment>.<n>`: refresh `n` of the lock `id`.
    Refresh {
        /// The lock's record name.
        id: &'a str,
        /// Sequence number.
        seq: u64,
    },
    /// `<s|x>-<commitment>.end`: the release of the lock `id`.
    End {
        /// The lock's record name.
        id: &'a str,
    },
    /// 32 lowercase hex digits: the record of an older writer's lock.
    Legacy,
    /// `probe-<32 hex digits>`: a delete-right and store-time probe.
    Probe,
    /// Anything else: no lock.
    Other,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The kind a record name (`s-…`, `x-…`) says, if it is one.
fn record_kind(id: &str) -> Option<LockKind> {
    let (k, c) = id.split_at_checked(2)?;
    if !is_hex(c, COMMITMENT_HEX) {
        return None;
    }
    match k {
        "s-" => Some(LockKind::Shared),
        "x-" => Some(LockKind::Exclusive),
        _ => None,
    }
}

/// Parses the name of an object under `locks/`.
pub fn parse_name(name: &str) -> LockName<'_> {
    if is_hex(name, COMMITMENT_HEX) {
        return LockName::Legacy;
    }
    if name.strip_prefix(PROBE_PREFIX).is_some_and(|r| is_hex(r, COMMITMENT_HEX)) {
        return LockName::Probe;
    }
    let (id, suffix) = match name.split_once('.') {
        Some((id, s)) => (id, Some(s)),
        None => (name, None),
    };
    let Some(kind) = record_kind(id) else { return LockName::Other };
    match suffix {
        None => LockName::Record { kind },
        Some(END_SUFFIX) => LockName::End { id },
        // Digits only, no sign, no leading zero: one name per number.
        Some(s) if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0') => {
            s.parse().map_or(LockName::Other, |seq| LockName::Refresh { id, seq })
        }
        Some(_) => LockName::Other,
    }
}

/// The commitment to `secret` in a lock's name: 32 hex digits of its BLAKE3.
fn commitment(secret: &[u8]) -> String {
    hex::encode(&crypto::object_hash(secret)[..COMMITMENT_HEX / 2])
}

/// The name of a lock of `kind` committed to `secret`.
pub fn lock_id(kind: LockKind, secret: &[u8; 32]) -> String {
    let k = if kind == LockKind::Exclusive { "x" } else { "s" };
    format!("{k}-{}", commitment(secret))
}

/// Whether `body` (of `<id>.end`) is the secret the lock `id` committed to.
pub fn end_releases(id: &str, body: &[u8]) -> bool {
    record_kind(id).is_some() && body.len() == 32 && id.get(2..) == Some(commitment(body).as_str())
}

/// One lock's objects, as a listing shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The name of its record (`s-…`, `x-…`, or an older writer's 32 hex digits).
    pub id: String,
    /// The kind its name says (`None`: an older writer's, whose name says nothing).
    pub named: Option<LockKind>,
    /// Whether the record is listed.
    pub has_record: bool,
    /// Whether a release object is listed (not yet verified).
    pub has_end: bool,
    /// Newest store modification time (Unix ms) of the record and its
    /// refreshes; `None` without either.
    pub newest_ms: Option<i64>,
    /// Every object of the lock, the record first.
    pub objects: Vec<String>,
}

/// Groups a listing of `locks/` by lock; objects that belong to no lock
/// (probes, unknown names) come back apart.
pub fn group(listed: &[Listed]) -> (Vec<Group>, Vec<Listed>) {
    let mut groups: std::collections::BTreeMap<String, Group> = Default::default();
    let mut loose = Vec::new();
    for l in listed {
        let (id, named) = match parse_name(&l.name) {
            LockName::Record { kind } => (l.name.as_str(), Some(kind)),
            LockName::Refresh { id, .. } | LockName::End { id } => (id, record_kind(id)),
            LockName::Legacy => (l.name.as_str(), None),
            LockName::Probe | LockName::Other => {
                loose.push(l.clone());
                continue;
            }
        };
        let g = groups.entry(id.to_string()).or_insert_with(|| Group {
            id: id.to_string(),
            named,
            has_record: false,
            has_end: false,
            newest_ms: None,
            objects: Vec::new(),
        });
        match parse_name(&l.name) {
            LockName::End { .. } => g.has_end = true,
            LockName::Record { .. } | LockName::Legacy => {
                g.has_record = true;
                g.objects.insert(0, l.name.clone());
            }
            _ => {}
        }
        if !matches!(parse_name(&l.name), LockName::End { .. }) {
            g.newest_ms = Some(g.newest_ms.map_or(l.modified_ms, |t| t.max(l.modified_ms)));
        }
        if !g.objects.contains(&l.name) {
            g.objects.push(l.name.clone());
        }
    }
    (groups.into_values().collect(), loose)
}

/// The kind a lock counts as: an `x-` name is exclusive; an `s-` name is
/// shared unless its record opens and says exclusive; an older writer's
/// lock is what its record says, exclusive when that does not open.
pub fn effective_kind(named: Option<LockKind>, record: Option<&LockRecord>) -> LockKind {
    let exclusive = match named {
        Some(LockKind::Exclusive) => true,
        Some(LockKind::Shared) => record.is_some_and(|r| r.exclusive),
        None => record.is_none_or(|r| r.exclusive),
    };
    if exclusive {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    }
}

/// Where a lock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Held.
    Live,
    /// Not refreshed within the TTL by the store's clock, or its process
    /// proven gone on this machine.
    Stale,
    /// Released with its secret, or without its record.
    Ended,
}

/// Judges a lock: `end_verified` is whether its release object holds
/// the secret (`None`: not read), `now_ms` the store's time.
pub fn judge(
    g: &Group,
    end_verified: Option<bool>,
    record: Option<&LockRecord>,
    now_ms: i64,
    ttl_ms: i64,
    here: &Here,
    probe: impl Fn(u32) -> Process,
) -> State {
    if !g.has_record || end_verified == Some(true) {
        return State::Ended;
    }
    let age_ms = g.newest_ms.map_or(i64::MAX, |t| now_ms.saturating_sub(t));
    if is_stale(record, age_ms, ttl_ms, here, probe) {
        State::Stale
    } else {
        State::Live
    }
}

/// A lock found in the store.
#[derive(Debug, Clone)]
pub struct LockInfo {
    /// The name of its record.
    pub name: String,
    /// Decoded record (`None` if not read, or it does not open with this
    /// tenant's keys).
    pub record: Option<LockRecord>,
    /// The kind it counts as ([`effective_kind`]).
    pub kind: LockKind,
    /// Milliseconds since its last refresh, by the store's clock.
    pub age_ms: i64,
    /// Live, stale or ended.
    pub state: State,
    /// Its objects, the record first.
    pub objects: Vec<String>,
}

/// Which locks [`survey`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Those that may conflict with a lock of this kind (a shared request
    /// reads no `s-` lock).
    ConflictsWith(LockKind),
    /// Every lock not stale by the store's clock.
    All,
}

/// Judges the locks of a listing at the store's time `now_ms`, reading
/// records and release objects only where the judgement needs them;
/// `own` (the lock this process just wrote) is left out.
async fn survey(
    scope: &TenantScope,
    groups: Vec<Group>,
    now_ms: i64,
    own: Option<&str>,
    want: Want,
) -> Result<Vec<LockInfo>> {
    let here = Here::current();
    let ttl_ms = lock_ttl().as_millis() as i64;
    let mut out = Vec::new();
    for g in groups {
        if own == Some(g.id.as_str()) {
            continue;
        }
        if want == Want::ConflictsWith(LockKind::Shared) && g.named == Some(LockKind::Shared) {
            continue;
        }
        let age_ms = g.newest_ms.map_or(i64::MAX, |t| now_ms.saturating_sub(t));
        let by_time = judge(&g, None, None, now_ms, ttl_ms, &here, |_| Process::Running { start_time: None });
        let (mut end_verified, mut record) = (None, None);
        if by_time == State::Live {
            if g.has_end {
                let end = scope.path(Kind::Locks, &format!("{}.{END_SUFFIX}", g.id));
                end_verified = Some(scope.store().get_opt(&end).await?.is_some_and(|b| end_releases(&g.id, &b)));
            }
            if end_verified != Some(true) {
                let Some(bytes) = scope.store().get_opt(&scope.path(Kind::Locks, &g.id)).await? else {
                    // Gone since the listing: released by deletion.
                    continue;
                };
                record = open_record(scope, &bytes);
            }
        }
        let state = judge(&g, end_verified, record.as_ref(), now_ms, ttl_ms, &here, probe_process);
        let kind = effective_kind(g.named, record.as_ref());
        out.push(LockInfo { name: g.id, record, kind, age_ms, state, objects: g.objects });
    }
    Ok(out)
}

/// A held lock; release it with [`LockGuard::release`].
pub struct LockGuard {
    command: String,
    kind: LockKind,
    tenant: TenantName,
    store: Store,
    held: Arc<Held>,
    refreshed: Arc<Mutex<Instant>>,
    refresher: tokio::task::JoinHandle<()>,
    ttl: Duration,
}

/// A lock this process wrote: its name, secret and refreshes.
struct Held {
    tenant: TenantName,
    kind: LockKind,
    id: String,
    secret: zeroize::Zeroizing<[u8; 32]>,
    /// The sealed record, also the body of each refresh (an older writer
    /// that lists a refresh opens it as a lock of the same kind).
    record: Bytes,
    /// The last refresh number tried.
    refreshes: std::sync::atomic::AtomicU64,
}

impl Held {
    fn path(&self, name: &str) -> crate::store::Key {
        Store::path(&self.tenant, Kind::Locks, name)
    }

    /// Ends the lock. An exclusive holder (maintenance, which may delete)
    /// deletes its objects, the record first; anyone else, or one the
    /// store refuses the deletion, writes the release object.
    async fn end(&self, store: &Store) -> Result<()> {
        if self.kind == LockKind::Exclusive {
            match store.delete(&self.path(&self.id)).await {
                Ok(()) => {
                    let last = self.refreshes.load(std::sync::atomic::Ordering::SeqCst);
                    for seq in 1..=last {
                        if let Err(e) = store.delete(&self.path(&format!("{}.{seq}", self.id))).await {
                            tracing::debug!("lock refresh left for the next sweep: {e}");
                        }
                    }
                    return Ok(());
                }
                Err(e) => tracing::debug!("lock {} not deleted, ending it with its secret: {e}", self.id),
            }
        }
        let end = self.path(&format!("{}.{END_SUFFIX}", self.id));
        match store.create_volatile(&end, Bytes::copy_from_slice(&self.secret[..])).await {
            Ok(()) => Ok(()),
            Err(crate::store::Error::AlreadyExists { .. }) => {
                // Not ours: someone wrote it to keep the lock from ending.
                // It stays until the store's clock calls it stale.
                tracing::warn!(
                    "{end}: already exists, not written by this process; the lock counts as held until it is stale \
                     ({}s)",
                    lock_ttl().as_secs()
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The boot id of this machine.
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

/// Lists and judges the tenant's locks by the store's clock `store_now_ms`.
pub async fn list(scope: &TenantScope, store_now_ms: i64) -> Result<Vec<LockInfo>> {
    let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
    survey(scope, group(&listed).0, store_now_ms, None, Want::All).await
}

/// Seals a lock record's JSON payload: the one place lock records are sealed.
fn seal_record(scope: &TenantScope, payload: &[u8]) -> Result<Bytes> {
    // The metadata key (generation 0) for a full key; a put-only host, which
    // has no metadata key, seals with its drop generation.
    Ok(Bytes::from(scope.seal_meta(LOCK_MAGIC, payload)?))
}

/// Opens a lock record: the one place lock records are opened. `None`
/// when it does not open with this tenant's keys or does not decode.
fn open_record(scope: &TenantScope, bytes: &[u8]) -> Option<LockRecord> {
    let env = sealed::decode(bytes, LOCK_MAGIC, "lock").ok()?;
    // Locks are sealed with the metadata key (generation 0), which key
    // rotation never retires: a lock outlives the data key it was taken
    // under. A put-only host's are sealed with its drop generation.
    let plain = scope.open_meta(&env, || "lock".into()).ok()?;
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
    let bytes = seal_record(scope, &payload)?;
    loop {
        let secret = zeroize::Zeroizing::new(crypto::random_bytes::<32>());
        let id = lock_id(kind, &secret);
        let held = Held {
            tenant: scope.tenant().clone(),
            kind,
            id: id.clone(),
            secret,
            record: bytes.clone(),
            refreshes: Default::default(),
        };
        let path = scope.path(Kind::Locks, &id);
        scope.store().create_volatile(&path, bytes.clone()).await?;
        let (conflicts, now) = match conflicts(scope, kind, &id, &path).await {
            Ok(c) => c,
            Err(e) => {
                let _ = held.end(scope.store()).await;
                return Err(e);
            }
        };
        if conflicts.is_empty() {
            return Ok(LockGuard::hold(scope, held, command));
        }
        held.end(scope.store()).await?;
        if Instant::now() >= deadline {
            let who: Vec<String> = conflicts.iter().map(describe).collect();
            return Err(Error::Locked(format!(
                "tenant {} is locked by {} (use --lock-wait to wait, `strongroom unlock` to remove stale locks)",
                scope.tenant(),
                who.join("; ")
            )));
        }
        wait_for_change(scope, &conflicts, now, deadline).await?;
    }
}

/// Waits, listing the locks about once a second, until one of
/// `conflicts` (judged at the store's time `now_ms`) looks gone: no longer
/// listed, released, or past the TTL (the store's time estimated from
/// `now_ms` and our own monotonic clock; the retry judges again by the
/// store's). Returns at `deadline` too.
async fn wait_for_change(scope: &TenantScope, conflicts: &[LockInfo], now_ms: i64, deadline: Instant) -> Result<()> {
    let since = Instant::now();
    let ttl_ms = lock_ttl().as_millis() as i64;
    loop {
        let jitter = rand::random::<u64>() % 500;
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_millis(500 + jitter).min(left + Duration::from_millis(1))).await;
        if Instant::now() >= deadline {
            return Ok(());
        }
        let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
        let (groups, _) = group(&listed);
        let estimated_now = now_ms.saturating_add(since.elapsed().as_millis() as i64);
        let changed = conflicts.iter().any(|c| match groups.iter().find(|g| g.id == c.name) {
            None => true,
            Some(g) => {
                // A release seen already (and not verified) changes nothing.
                let new_end = g.has_end && !c.objects.iter().any(|n| n.ends_with(".end"));
                !g.has_record || new_end || g.newest_ms.is_none_or(|t| estimated_now.saturating_sub(t) > ttl_ms)
            }
        });
        if changed {
            return Ok(());
        }
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

/// The live locks besides ours (`id` at `path`, just written) that a
/// lock of `kind` cannot share the tenant with, and the store's time.
async fn conflicts(
    scope: &TenantScope,
    kind: LockKind,
    id: &str,
    path: &crate::store::Key,
) -> Result<(Vec<LockInfo>, i64)> {
    // The store's clock is our new lock's modification time, read from
    // the listing (or asked for when the listing lags behind).
    let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
    let now = match listed.iter().find(|l| l.name == id) {
        Some(l) => l.modified_ms,
        None => store_now(scope.store(), path).await?,
    };
    let found = survey(scope, group(&listed).0, now, Some(id), Want::ConflictsWith(kind)).await?;
    let conflicting = found
        .into_iter()
        .filter(|l| l.state == State::Live)
        .filter(|l| kind == LockKind::Exclusive || l.kind == LockKind::Exclusive)
        .collect();
    Ok((conflicting, now))
}

impl LockGuard {
    /// Holds the lock `held`, refreshing it every third of the TTL until
    /// it is released.
    fn hold(scope: &TenantScope, held: Held, command: &str) -> Self {
        let (store, tenant) = (scope.store().clone(), scope.tenant().clone());
        let ttl = lock_ttl();
        let refreshed = Arc::new(Mutex::new(Instant::now()));
        let held = Arc::new(held);
        let kind = held.kind;
        let refresher = {
            let (store, held, refreshed) = (store.clone(), held.clone(), refreshed.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    // A new object each time: a holder never overwrites. A
                    // number someone else took is skipped.
                    for _ in 0..3 {
                        let seq = held.refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        let path = held.path(&format!("{}.{seq}", held.id));
                        match store.create_volatile(&path, held.record.clone()).await {
                            Ok(()) => {
                                if let Ok(mut t) = refreshed.lock() {
                                    *t = Instant::now();
                                }
                                break;
                            }
                            Err(crate::store::Error::AlreadyExists { .. }) => continue,
                            Err(e) => {
                                tracing::warn!("refreshing lock {path}: {e}");
                                break;
                            }
                        }
                    }
                }
            })
        };
        LockGuard { command: command.to_string(), kind, tenant, store, held, refreshed, refresher, ttl }
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
    let kind = if l.kind == LockKind::Exclusive { "an exclusive" } else { "a shared" };
    match &l.record {
        Some(r) => {
            format!("{kind} lock of {} (pid {}, {}) refreshed {}s ago", r.hostname, r.pid, r.command, l.age_ms / 1000)
        }
        None => {
            format!("{kind} lock {} (unreadable) refreshed {}s ago", &l.name[..10.min(l.name.len())], l.age_ms / 1000)
        }
    }
}

impl LockGuard {
    /// The command that took the lock.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The name of the lock's record.
    pub fn name(&self) -> &str {
        &self.held.id
    }

    /// Fails when the lock may have been judged stale by others: its last
    /// successful refresh is more than half the TTL ago.
    pub fn check(&self) -> Result<()> {
        (self.checker())()
    }

    /// A check function for code that cannot hold the guard itself.
    pub fn checker(&self) -> impl Fn() -> Result<()> + Send + Sync + 'static {
        let (refreshed, ttl, path) = (self.refreshed.clone(), self.ttl, self.held.path(&self.held.id).to_string());
        move || {
            let age = refreshed.lock().map(|t| t.elapsed()).unwrap_or(Duration::MAX);
            if age > ttl / 2 {
                return Err(Error::Locked(format!("lock {path} was not refreshed for {}s; stopping", age.as_secs())));
            }
            Ok(())
        }
    }

    /// Deletes the ended and stale locks of others (and probes and
    /// unknown objects past the TTL): for an exclusive holder, which may
    /// delete. Returns the names of the locks removed.
    pub async fn sweep(&self, scope: &TenantScope) -> Result<Vec<String>> {
        self.require_exclusive(scope.tenant(), "sweeping locks")?;
        let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
        // The newest time in the listing is a time the store has passed
        // (our own record is in it): judging by it errs on the live side.
        let Some(now) = listed.iter().map(|l| l.modified_ms).max() else { return Ok(Vec::new()) };
        sweep_listed(scope, &listed, now, false, Some(&self.held.id)).await
    }

    /// Stops refreshing and ends the lock (see [`Held::end`]).
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        self.held.end(&self.store).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Deletes the locks of a listing that are stale or ended at the store's
/// time `now_ms` (every lock but `own` with `all`), with their objects,
/// and probes and unknown objects older than the TTL.
async fn sweep_listed(
    scope: &TenantScope,
    listed: &[Listed],
    now_ms: i64,
    all: bool,
    own: Option<&str>,
) -> Result<Vec<String>> {
    let (groups, loose) = group(listed);
    let ttl_ms = lock_ttl().as_millis() as i64;
    let mut removed = Vec::new();
    for l in survey(scope, groups, now_ms, own, Want::All).await? {
        if all || l.state != State::Live {
            for name in &l.objects {
                scope.store().delete(&scope.path(Kind::Locks, name)).await?;
            }
            removed.push(l.name);
        }
    }
    for l in loose {
        if now_ms.saturating_sub(l.modified_ms) > ttl_ms {
            scope.store().delete(&scope.path(Kind::Locks, &l.name)).await?;
        }
    }
    Ok(removed)
}

/// Checks that the store lets this host delete in the tenant's prefix,
/// before a command that deletes changes anything: creates a probe
/// object, reads its time and deletes it. Returns the store's time (Unix
/// ms). A refused deletion leaves the probe for a later sweep and fails
/// with [`crate::store::Error::PermissionDenied`].
pub async fn probe_delete(scope: &TenantScope) -> Result<i64> {
    let name = format!("{PROBE_PREFIX}{}", hex::encode(crypto::random_bytes::<16>()));
    let probe = scope.path(Kind::Locks, &name);
    scope.store().create_volatile(&probe, Bytes::new()).await?;
    let now = store_now(scope.store(), &probe).await;
    scope.store().delete(&probe).await?;
    now
}

/// Removes stale and ended locks (all locks with `all`); returns the
/// names removed. Needs delete rights, checked first.
pub async fn unlock(scope: &TenantScope, all: bool) -> Result<Vec<String>> {
    let now = probe_delete(scope).await?;
    let listed = scope.store().list(scope.tenant(), Kind::Locks).await?;
    sweep_listed(scope, &listed, now, all, None).await
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

    fn listed(name: &str, modified_ms: i64) -> Listed {
        Listed { name: name.into(), size: 0, modified_ms }
    }

    const C: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn lock_names_parse_by_kind_and_part() {
        let (s, x) = (format!("s-{C}"), format!("x-{C}"));
        assert_eq!(parse_name(&s), LockName::Record { kind: LockKind::Shared });
        assert_eq!(parse_name(&x), LockName::Record { kind: LockKind::Exclusive });
        assert_eq!(parse_name(&format!("{s}.1")), LockName::Refresh { id: &s, seq: 1 });
        assert_eq!(parse_name(&format!("{x}.42")), LockName::Refresh { id: &x, seq: 42 });
        assert_eq!(parse_name(&format!("{x}.end")), LockName::End { id: &x });
        assert_eq!(parse_name(C), LockName::Legacy);
        assert_eq!(parse_name(&format!("probe-{C}")), LockName::Probe);
        for bad in [
            format!("q-{C}"),
            format!("s-{}", &C[1..]),
            format!("s-{C}0"),
            format!("S-{C}"),
            format!("s-{}", C.to_uppercase()),
            format!("s-{C}.0"),
            format!("s-{C}.01"),
            format!("s-{C}.+1"),
            format!("s-{C}."),
            format!("s-{C}.1.end"),
            format!("s-{C}.99999999999999999999"),
            format!("s-{C}.End"),
            format!("probe-{}", &C[1..]),
            "".into(),
            "s-".into(),
            "é".into(),
        ] {
            assert_eq!(parse_name(&bad), LockName::Other, "{bad:?}");
        }
    }

    #[test]
    fn a_release_holds_the_committed_secret_and_nothing_else_does() {
        let secret = [7u8; 32];
        let id = lock_id(LockKind::Shared, &secret);
        assert!(id.starts_with("s-") && id.len() == 2 + COMMITMENT_HEX);
        assert!(end_releases(&id, &secret));
        assert!(!end_releases(&id, &[8u8; 32]));
        assert!(!end_releases(&id, &secret[..31]));
        let mut longer = secret.to_vec();
        longer.push(0);
        assert!(!end_releases(&id, &longer));
        // The commitment does not depend on the kind; the name does.
        let x = lock_id(LockKind::Exclusive, &secret);
        assert_eq!(&x[2..], &id[2..]);
        assert!(end_releases(&x, &secret));
        assert!(!end_releases(C, &secret), "an older writer's lock has no commitment");
    }

    #[test]
    fn a_listing_groups_into_locks_with_their_newest_time() {
        let (s, x) = (format!("s-{C}"), format!("x-{}", &C.replace('0', "f")));
        let (groups, loose) = group(&[
            listed(&format!("{s}.2"), 3_000),
            listed(&s, 1_000),
            listed(&format!("{s}.1"), 2_000),
            listed(&format!("{s}.end"), 9_000),
            listed(&format!("{x}.1"), 5_000),
            listed(C, 700),
            listed(&format!("probe-{C}"), 10),
            listed("junk", 10),
        ]);
        assert_eq!(loose.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), [format!("probe-{C}").as_str(), "junk"]);
        let by = |id: &str| groups.iter().find(|g| g.id == id).unwrap().clone();
        let gs = by(&s);
        assert_eq!(gs.named, Some(LockKind::Shared));
        assert!(gs.has_record && gs.has_end);
        // The release's time is not a refresh.
        assert_eq!(gs.newest_ms, Some(3_000));
        assert_eq!(gs.objects[0], s, "the record first");
        assert_eq!(gs.objects.len(), 4);
        let gx = by(&x);
        assert!(!gx.has_record, "a refresh without its record");
        assert_eq!(gx.named, Some(LockKind::Exclusive));
        let old = by(C);
        assert_eq!((old.named, old.has_record, old.newest_ms), (None, true, Some(700)));
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn liveness_is_the_newest_refresh_by_the_store_clock_and_a_verified_release_ends() {
        let g = |newest: i64, has_end: bool| Group {
            id: format!("s-{C}"),
            named: Some(LockKind::Shared),
            has_record: true,
            has_end,
            newest_ms: Some(newest),
            objects: vec![],
        };
        let alive = |_| Process::Running { start_time: None };
        let now = 1_000_000;
        assert_eq!(judge(&g(now - TTL_MS, false), None, None, now, TTL_MS, &here(), alive), State::Live);
        assert_eq!(judge(&g(now - TTL_MS - 1, false), None, None, now, TTL_MS, &here(), alive), State::Stale);
        // A release object that does not hold the secret changes nothing.
        assert_eq!(judge(&g(now, true), Some(false), None, now, TTL_MS, &here(), alive), State::Live);
        assert_eq!(judge(&g(now, true), Some(true), None, now, TTL_MS, &here(), alive), State::Ended);
        // Without its record, no lock.
        let orphan = Group { has_record: false, ..g(now, false) };
        assert_eq!(judge(&orphan, None, None, now, TTL_MS, &here(), alive), State::Ended);
        // A proven-dead owner ends a fresh lock at once.
        assert_eq!(judge(&g(now, false), None, Some(&record()), now, TTL_MS, &here(), |_| Process::Gone), State::Stale);
    }

    #[test]
    fn the_kind_comes_from_the_name_and_a_contradicting_record_makes_it_exclusive() {
        let shared = record();
        let exclusive = LockRecord { exclusive: true, ..record() };
        assert_eq!(effective_kind(Some(LockKind::Shared), None), LockKind::Shared);
        assert_eq!(effective_kind(Some(LockKind::Shared), Some(&shared)), LockKind::Shared);
        assert_eq!(effective_kind(Some(LockKind::Shared), Some(&exclusive)), LockKind::Exclusive);
        assert_eq!(effective_kind(Some(LockKind::Exclusive), None), LockKind::Exclusive);
        assert_eq!(effective_kind(Some(LockKind::Exclusive), Some(&shared)), LockKind::Exclusive);
        // An older writer's lock: its record, exclusive when unreadable.
        assert_eq!(effective_kind(None, None), LockKind::Exclusive);
        assert_eq!(effective_kind(None, Some(&shared)), LockKind::Shared);
        assert_eq!(effective_kind(None, Some(&exclusive)), LockKind::Exclusive);
    }
}
