//! The tenant's audit log: one sealed, hash-chained object per
//! state-changing command, per read of file contents (restore, dump,
//! mount, …) and per opening with the operator's escrow secret.
//!
//! Owns: `tenants/<t>/audit/<seq, 20 digits>`. Each entry is sealed with
//! the tenant's metadata key (hostnames, paths and errors never reach the
//! store in plaintext) and names the BLAKE3 hash of the previous entry's
//! stored bytes, so removing, reordering or altering an entry breaks the
//! chain at a point [`verify`] names. Entries are created with a
//! conditional create: two processes appending at once cannot both take
//! the same sequence number; the loser re-reads the head and retries.
//!
//! The chain cannot by itself reveal that the newest entries were cut off
//! the end; each host remembers the newest entry it saw (`audit-head` in
//! its [`crate::host_memory::HostMemory`], named by the tenant's key and
//! the store's location, so nothing in the store can point it elsewhere)
//! and `verify` reports a log shorter than that.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::sealed::{self, AUDIT_MAGIC};
use crate::crypto;
use crate::error::{Error, Result};
use crate::host_memory::HostMemory;
use crate::scope::TenantScope;
use crate::store::{self, Kind};

/// Attempts at appending before giving up under contention.
const APPEND_ATTEMPTS: usize = 16;
/// Entries fetched at once when reading the whole log.
const FETCH_CONCURRENCY: usize = 16;
/// Largest entry accepted when reading.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// One audit entry (the sealed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Sequence number, from 1; equals the object's name.
    pub seq: u64,
    /// BLAKE3 (hex) of the previous entry's stored bytes; zeros for the first.
    pub prev: String,
    /// When, RFC 3339.
    pub time: String,
    /// Host name.
    pub host: String,
    /// Operating-system user.
    pub user: String,
    /// The command (`backup`, `forget`, `tenant passwd`, …).
    pub command: String,
    /// Its arguments as given (never a password: those are not accepted on
    /// the command line).
    pub args: Vec<String>,
    /// Snapshots created or removed.
    pub snapshots: Vec<String>,
    /// Bytes added (backup) or freed (prune); 0 when not applicable.
    pub bytes: u64,
    /// `ok` or `error`.
    pub result: String,
    /// The error, when `result` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Paths inside the snapshots that a read named (`dump`'s file,
    /// `restore`'s subtree); absent when it read whole snapshots. Added
    /// after the first release: older entries lack it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Which kind of key slot opened the tenant: one of [`OPENED_WITH`].
    /// Absent in entries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_with: Option<String>,
}

/// The values of [`Entry::opened_with`].
pub const OPENED_WITH: [&str; 4] = ["password", "key-file", "escrow", "put-only"];

/// What a command reports for its entry.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Command name.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Snapshots created or removed (hex).
    pub snapshots: Vec<String>,
    /// Bytes added or freed.
    pub bytes: u64,
    /// The error, if the command failed.
    pub error: Option<String>,
    /// Paths inside the snapshots that a read named.
    pub paths: Vec<String>,
    /// Which kind of key slot opened the tenant (one of [`OPENED_WITH`]).
    pub opened_with: Option<String>,
}

fn object_name(seq: u64) -> String {
    format!("{seq:020}")
}

/// Encodes and seals an entry.
pub fn seal(scope: &TenantScope, e: &Entry) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(e).map_err(|err| Error::Internal(format!("audit entry: {err}")))?;
    scope.seal_meta(AUDIT_MAGIC, &payload)
}

/// Decodes a sealed entry's payload (the fuzzed decoder).
pub fn decode_payload(plain: &[u8]) -> std::result::Result<Entry, String> {
    let e: Entry = serde_json::from_slice(plain).map_err(|err| format!("not an audit entry: {err}"))?;
    if e.seq == 0 {
        return Err("sequence number 0".into());
    }
    if e.prev.len() != 64 || !e.prev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("previous-entry hash is not 64 hex digits".into());
    }
    if !matches!(e.result.as_str(), "ok" | "error") {
        return Err(format!("unknown result {:?}", e.result));
    }
    if let Some(o) = &e.opened_with {
        if !OPENED_WITH.contains(&o.as_str()) {
            return Err(format!("unknown opened_with {o:?}"));
        }
    }
    Ok(e)
}

fn open(scope: &TenantScope, name: &str, bytes: &[u8]) -> std::result::Result<Entry, String> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(format!("{} bytes is larger than any entry", bytes.len()));
    }
    let env = sealed::decode(bytes, AUDIT_MAGIC, "audit entry").map_err(|e| e.to_string())?;
    let plain = scope.open_meta(&env, || format!("audit entry {name}")).map_err(|e| e.to_string())?;
    decode_payload(&plain)
}

fn refuse_put_only(scope: &TenantScope) -> Result<()> {
    if scope.keys().is_put_only() {
        return Err(Error::PutOnly { tenant: scope.tenant().to_string() });
    }
    Ok(())
}

fn zero_hash() -> String {
    "0".repeat(64)
}

/// The newest entry this host saw: (seq, hash).
fn read_head(memory: &HostMemory) -> Option<(u64, String)> {
    let t = std::fs::read_to_string(memory.audit_head()).ok()?;
    let (seq, hash) = t.trim().split_once(' ')?;
    Some((seq.parse().ok()?, hash.to_string()))
}

fn write_head(memory: &HostMemory, seq: u64, hash: &str) {
    if read_head(memory).is_some_and(|(s, _)| s > seq) {
        return;
    }
    let p = memory.audit_head();
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    if crate::private::write(&tmp, format!("{seq} {hash}\n").as_bytes()).is_ok() {
        let _ = std::fs::rename(&tmp, &p);
    }
}

/// Names of all entries, ascending.
async fn names(scope: &TenantScope, after: Option<u64>) -> Result<Vec<String>> {
    let mut n = match after {
        Some(seq) => scope.store().list_names_after(scope.tenant(), Kind::Audit, &object_name(seq)).await?,
        None => scope.store().list_names(scope.tenant(), Kind::Audit).await?,
    };
    n.sort();
    Ok(n)
}

/// The newest entry: (seq, hash of its bytes), or (0, zeros).
async fn tail(scope: &TenantScope, memory: &HostMemory) -> Result<(u64, String)> {
    // Start listing near the remembered head: the log only grows.
    let head = read_head(memory);
    let hint = head.as_ref().map(|(s, _)| s.saturating_sub(1)).filter(|s| *s > 0);
    let mut list = names(scope, hint).await?;
    if list.is_empty() && hint.is_some() {
        list = names(scope, None).await?;
    }
    let Some(last) = list.last() else {
        return Ok((0, zero_hash()));
    };
    let seq: u64 = last.parse().map_err(|_| Error::Damaged {
        object: format!("tenants/{}/audit/{last}", scope.tenant()),
        why: "bad name".into(),
    })?;
    // The newest entry is the one this host wrote or verified last: its
    // hash is known. (Were it replaced since, the next entry chains to the
    // original and `verify` reports the break.)
    if let Some((seen, hash)) = head {
        if seen == seq {
            return Ok((seq, hash));
        }
    }
    let bytes = scope.store().get(&scope.path(Kind::Audit, last)).await?;
    Ok((seq, hex::encode(crypto::object_hash(&bytes))))
}

/// Appends an entry; returns its sequence number. The head kept in
/// `memory` (this host's memory of the tenant) names the entry to chain
/// to without a listing when no other host wrote since (else the log is
/// listed from near it), and records the new entry.
pub async fn append(scope: &TenantScope, memory: &HostMemory, r: &Record) -> Result<u64> {
    for attempt in 0..APPEND_ATTEMPTS {
        if attempt > 0 {
            // Another writer took the sequence number: back off a random
            // while, growing with the attempts, so that many readers
            // finishing at once do not collide again in lockstep.
            let jitter_ms = u64::from(u16::from_le_bytes(crypto::random_bytes::<2>())) % 20;
            tokio::time::sleep(std::time::Duration::from_millis(jitter_ms * attempt as u64)).await;
        }
        // First try: the entry after the one this host wrote or verified
        // last, with no listing. The create is conditional, so a head
        // that another writer moved past only costs this attempt.
        // A head at the last sequence number (a damaged or edited file)
        // names no next entry: the log is listed instead.
        let (seq, prev) = match read_head(memory) {
            Some(head) if attempt == 0 && head.0 < u64::MAX => head,
            _ => tail(scope, memory).await?,
        };
        let next = seq.checked_add(1).ok_or_else(|| Error::Damaged {
            object: format!("tenants/{}/audit/{}", scope.tenant(), object_name(seq)),
            why: "the last possible sequence number: no entry can follow it".into(),
        })?;
        let e = Entry {
            seq: next,
            prev,
            time: jiff::Timestamp::now().to_string(),
            host: crate::source::hostname(),
            user: crate::source::username(),
            command: r.command.clone(),
            args: r.args.clone(),
            snapshots: r.snapshots.clone(),
            bytes: r.bytes,
            result: if r.error.is_some() { "error".into() } else { "ok".into() },
            error: r.error.clone(),
            paths: r.paths.clone(),
            opened_with: r.opened_with.clone(),
        };
        let obj = seal(scope, &e)?;
        let hash = hex::encode(crypto::object_hash(&obj));
        match scope.store().create(&scope.path(Kind::Audit, &object_name(e.seq)), Bytes::from(obj)).await {
            Ok(()) => {
                write_head(memory, e.seq, &hash);
                return Ok(e.seq);
            }
            Err(store::Error::AlreadyExists { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Locked(format!("could not append to the audit log of tenant {}: too much contention", scope.tenant())))
}

/// Every entry object, in log order, fetched a few at a time (entries
/// deleted since the listing are left out).
async fn fetch_all(scope: &TenantScope) -> Result<Vec<(String, Bytes)>> {
    use futures::StreamExt;
    let fetched: Vec<Result<Option<(String, Bytes)>>> = futures::stream::iter(names(scope, None).await?)
        .map(|name| async move {
            let got = scope.store().get_opt(&scope.path(Kind::Audit, &name)).await?;
            Ok(got.map(|b| (name, b)))
        })
        .buffered(FETCH_CONCURRENCY)
        .collect()
        .await;
    fetched.into_iter().filter_map(|r| r.transpose()).collect()
}

/// Every readable entry, oldest first (unreadable ones are skipped with a
/// warning; `verify` names them). Not for a put-only host.
pub async fn list(scope: &TenantScope) -> Result<Vec<Entry>> {
    refuse_put_only(scope)?;
    let mut out = Vec::new();
    for (name, bytes) in fetch_all(scope).await? {
        let path = scope.path(Kind::Audit, &name);
        match open(scope, &name, &bytes) {
            Ok(e) => out.push(e),
            Err(why) => tracing::warn!(object = %path, "unreadable audit entry: {why}"),
        }
    }
    Ok(out)
}

/// The result of checking the chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// The newest sequence number.
    pub head: u64,
    /// Each break in the chain, with the entry it concerns.
    pub problems: Vec<String>,
}

/// Checks every entry and the chain between them, and that the log is not
/// shorter than the head kept in `memory` (this host's memory of the
/// tenant).
pub async fn verify(scope: &TenantScope, memory: &HostMemory) -> Result<VerifyReport> {
    refuse_put_only(scope)?;
    let mut r = VerifyReport::default();
    let mut expected_seq = 1u64;
    let mut prev_hash = zero_hash();
    for (name, bytes) in fetch_all(scope).await? {
        r.entries += 1;
        let hash = hex::encode(crypto::object_hash(&bytes));
        let Ok(named) = name.parse::<u64>() else {
            r.problems.push(format!("object audit/{name}: not an entry name"));
            continue;
        };
        match open(scope, &name, &bytes) {
            Err(why) => r.problems.push(format!("entry {named}: altered or damaged ({why})")),
            Ok(e) => {
                if e.seq != named {
                    r.problems.push(format!("entry {named}: holds entry {} (moved or reordered)", e.seq));
                }
                if named > expected_seq {
                    let what = if named == expected_seq + 1 {
                        format!("entry {expected_seq} is missing (removed)")
                    } else {
                        format!("entries {expected_seq} to {} are missing (removed)", named - 1)
                    };
                    r.problems.push(what);
                } else if e.prev != prev_hash {
                    r.problems.push(format!(
                        "entry {named}: does not follow entry {} (reordered, or an entry was altered or replaced)",
                        named.saturating_sub(1)
                    ));
                }
            }
        }
        // An entry named with the last number (only a store writer makes
        // one) ends the sequence instead of overflowing it.
        expected_seq = named.saturating_add(1);
        prev_hash = hash;
        r.head = named;
    }
    let remembered = read_head(memory);
    if r.problems.is_empty() && r.head > 0 {
        write_head(memory, r.head, &prev_hash);
    }
    if let Some((seen, seen_hash)) = remembered {
        if seen > r.head {
            r.problems.push(format!(
                "entries {} to {seen} are missing: this host saw the log reach entry {seen}",
                r.head + 1
            ));
        } else if seen == r.head && seen > 0 && seen_hash != prev_hash {
            r.problems.push(format!("entry {seen}: differs from the one this host wrote or saw (replaced)"));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREV: &str = "2b74d08267859b634fafbbbad70acc51b519412989b274f327b254f65e2f26bc";

    fn payload(extra: &str) -> String {
        format!(
            r#"{{"seq":2,"prev":"{PREV}","time":"2026-11-25T22:14:50Z","host":"vm","user":"root",
               "command":"dump","args":["dump","latest","/a"],"snapshots":[],"bytes":3,"result":"ok"{extra}}}"#
        )
    }

    #[test]
    fn entries_without_the_read_fields_still_decode() {
        let e = decode_payload(payload("").as_bytes()).unwrap();
        assert!(e.paths.is_empty());
        assert_eq!(e.opened_with, None);
        // And encode as they were: the new fields are left out.
        let again = serde_json::to_string(&e).unwrap();
        assert!(!again.contains("paths") && !again.contains("opened_with"), "{again}");
    }

    #[test]
    fn read_fields_round_trip_and_unknown_kinds_are_refused() {
        let e = decode_payload(payload(r#","paths":["/a"],"opened_with":"escrow""#).as_bytes()).unwrap();
        assert_eq!(e.paths, ["/a"]);
        assert_eq!(e.opened_with.as_deref(), Some("escrow"));
        let again = decode_payload(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(again, e);
        let err = decode_payload(payload(r#","opened_with":"guess""#).as_bytes()).unwrap_err();
        assert!(err.contains("opened_with"), "{err}");
        assert!(decode_payload(payload(r#","reader":"x""#).as_bytes()).is_err(), "unknown fields stay refused");
    }

    #[tokio::test]
    async fn a_sequence_number_at_its_limit_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let keys = crypto::TenantKeys::from_master(&crypto::Key::from_bytes([1; 32]));
        let root = t.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        let store = crate::store::Store::open(&root.to_string_lossy(), &Default::default(), true).unwrap();
        let memory = HostMemory::new(&t.path().join("cache"), &keys, &store.location());
        let scope = TenantScope::new(store, crate::id::TenantName::new("default").unwrap(), keys);
        assert_eq!(append(&scope, &memory, &Record::default()).await.unwrap(), 1);
        // A damaged or edited head file: the log is listed instead.
        crate::private::write(&memory.audit_head(), format!("{} {}\n", u64::MAX, zero_hash()).as_bytes()).unwrap();
        assert_eq!(append(&scope, &memory, &Record::default()).await.unwrap(), 2);
        // A store whose newest entry has the last number: a damaged log.
        let last = scope.path(Kind::Audit, &object_name(u64::MAX));
        scope.store().create(&last, Bytes::from_static(b"not an entry")).await.unwrap();
        let err = append(&scope, &memory, &Record::default()).await.unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        let report = verify(&scope, &memory).await.unwrap();
        assert!(report.problems.iter().any(|p| p.contains(&object_name(u64::MAX))), "{report:?}");
    }
}
