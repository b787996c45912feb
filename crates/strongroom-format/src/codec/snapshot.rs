//! Snapshot records: the commit point of a backup.
//!
//! Payload (sealed in the envelope of `sealed` with magic `SRSN`): UTF-8
//! JSON of [`SnapshotRecord`]. JSON keeps the record readable to tools and
//! lets later versions add fields; unknown fields are ignored on read.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::id::BlobId;

/// Current snapshot record version.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Longest job name accepted in a record.
pub const MAX_JOB_BYTES: usize = 256;
/// Largest record accepted.
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

/// What a backup reports, stored with its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata changed since the parent.
    pub files_changed: u64,
    /// Files taken over from the parent without reading.
    pub files_unmodified: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of all files in the snapshot.
    pub logical_bytes: u64,
    /// Bytes of files that were read.
    pub read_bytes: u64,
    /// Stored bytes added to the repository (packs and index deltas).
    pub added_bytes: u64,
    /// New data blobs.
    pub blobs_new: u64,
    /// Wall time of the backup.
    pub duration_seconds: f64,
}

/// A snapshot record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Record version.
    pub version: u32,
    /// Snapshot time, RFC 3339.
    pub time: String,
    /// Root tree blob.
    pub tree: BlobId,
    /// Absolute paths that were backed up.
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// OS user that ran the backup.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Parent snapshot used for change detection.
    #[serde(default)]
    pub parent: Option<String>,
    /// strongroom version that wrote it.
    pub program_version: String,
    /// Counters.
    pub summary: SnapshotSummary,
    /// For a snapshot written by `copy`: the id of the snapshot it copies
    /// (in the source repository). Absent in records written by backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<String>,
    /// The agent job that made the snapshot (`backup --job NAME`). Absent
    /// in records of manual backups and in records written before the
    /// field existed; part of the snapshot's group (see `--group-by job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BlobId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Encodes a record as JSON.
pub fn encode(r: &SnapshotRecord) -> Vec<u8> {
    // A struct of strings, integers and finite floats always serializes.
    serde_json::to_vec(r).unwrap_or_default()
}

/// Decodes and validates a record.
pub fn decode(bytes: &[u8]) -> Result<SnapshotRecord, Error> {
    const WHAT: &str = "snapshot";
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(Error::Invalid { what: WHAT, why: "record too large".into() });
    }
    let r: SnapshotRecord = serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid { what: WHAT, why: format!("not a snapshot record: {e}") })?;
    if r.version != SNAPSHOT_VERSION {
        return Err(Error::UnsupportedVersion { what: WHAT, version: r.version.min(u16::MAX.into()) as u16 });
    }
    if r.time.parse::<jiff::Timestamp>().is_err() {
        return Err(Error::Invalid { what: WHAT, why: format!("bad time {:?}", r.time) });
    }
    if let Some(p) = &r.parent {
        if crate::id::SnapshotId::from_hex(p).is_err() {
            return Err(Error::Invalid { what: WHAT, why: "bad parent id".into() });
        }
    }
    if r.job.as_ref().is_some_and(|j| j.is_empty() || j.len() > MAX_JOB_BYTES || j.chars().any(char::is_control)) {
        return Err(Error::Invalid { what: WHAT, why: "bad job name".into() });
    }
    if !r.summary.duration_seconds.is_finite() {
        return Err(Error::Invalid { what: WHAT, why: "bad duration".into() });
    }
    Ok(r)
}
