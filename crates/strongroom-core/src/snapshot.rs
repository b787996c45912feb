//! Snapshot references and times: `latest`, id prefixes, `--at`.
//!
//! Owns: parsing references and times, and choosing a snapshot from a
//! list. Must not: read the store (callers pass the catalog's list).

use crate::codec::snapshot::SnapshotRecord;
use crate::error::{Damage, Error, Result};
use crate::id::{hex_prefix_matches, SnapshotId};

/// A snapshot as the catalog knows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Id.
    pub id: SnapshotId,
    /// Unix nanoseconds of `record.time`.
    pub time_ns: i64,
    /// The decoded record.
    pub record: SnapshotRecord,
}

/// Parses a time: RFC 3339 (with offset), or `YYYY-MM-DD[ HH:MM[:SS]]` (or
/// with `T`) in local time. Returns Unix nanoseconds.
pub fn parse_time(text: &str) -> Result<i64> {
    let bad = || Error::invalid_input("invalid time", text, "use RFC 3339 or YYYY-MM-DD[ HH:MM[:SS]]");
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts.as_nanosecond() as i64);
    }
    let t = text.trim().replacen(' ', "T", 1);
    let civil = if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        dt
    } else if let Ok(d) = t.parse::<jiff::civil::Date>() {
        d.to_datetime(jiff::civil::Time::midnight())
    } else {
        // jiff wants seconds; accept HH:MM by appending them.
        format!("{t}:00").parse::<jiff::civil::DateTime>().map_err(|_| bad())?
    };
    let z = civil.to_zoned(jiff::tz::TimeZone::system()).map_err(|_| bad())?;
    Ok(z.timestamp().as_nanosecond() as i64)
}

/// Formats Unix nanoseconds as RFC 3339 in UTC (`2026-11-25T19:32:07.123Z`).
pub fn format_time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128).map(|t| t.to_string()).unwrap_or_else(|_| ns.to_string())
}

/// How to proceed when a damaged snapshot record stops a resolution.
const DAMAGED_ADVICE: &str = "name a readable snapshot by its id, put the intact record back, or remove the damaged \
                              one with `strongroom repair snapshots --forget-damaged`";

/// Resolves a reference (`latest`, a full id, or a unique hex prefix of at
/// least 4 digits) against snapshots sorted oldest first. With `at`,
/// `latest` means the newest snapshot at or before that instant.
///
/// `damaged` names the snapshot records that could not be read (store
/// key, reason). Such a record is never taken for absent: its time is
/// unknown, so it may be the newest, and `latest` (with or without `at`)
/// fails naming it; an id or prefix that matches it fails too, naming it
/// (or is ambiguous). An id that matches only a readable snapshot still
/// resolves.
pub fn resolve<'a>(
    snaps: &'a [Snapshot],
    damaged: &[Damage],
    reference: &str,
    at: Option<i64>,
) -> Result<&'a Snapshot> {
    if reference == "latest" {
        if !damaged.is_empty() {
            let when = at.map(|t| format!(" at {}", format_time(t))).unwrap_or_default();
            return Err(Error::DamagedRecords {
                what: format!(
                    "cannot resolve latest{when}: a damaged snapshot record may be newer than the readable ones"
                ),
                objects: damaged.to_vec(),
                advice: DAMAGED_ADVICE.into(),
            });
        }
        let found = snaps.iter().rev().find(|s| at.is_none_or(|t| s.time_ns <= t));
        return found.ok_or_else(|| match at {
            Some(t) => Error::SnapshotRef(format!("no snapshot at or before {}", format_time(t))),
            None => Error::SnapshotRef("no snapshots in the repository".into()),
        });
    }
    if reference.len() < 4 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::SnapshotRef(format!(
            "invalid snapshot reference {reference:?}: use latest, a full id or a prefix of 4+ hex digits"
        )));
    }
    let lower = reference.to_ascii_lowercase();
    let damaged_hits: Vec<&Damage> = damaged
        .iter()
        .filter(|d| d.object.rsplit('/').next().is_some_and(|name| name.to_ascii_lowercase().starts_with(&lower)))
        .collect();
    let mut hits = snaps.iter().filter(|s| hex_prefix_matches(&s.id.0, reference));
    match (hits.next(), hits.next(), damaged_hits.as_slice()) {
        (Some(s), None, []) => Ok(s),
        (None, _, []) => Err(Error::SnapshotRef(format!("no snapshot matches {reference:?}"))),
        (None, _, [one]) => Err(Error::DamagedRecords {
            what: format!("snapshot {reference} cannot be read"),
            objects: vec![(*one).clone()],
            advice: DAMAGED_ADVICE.into(),
        }),
        (_, _, []) => Err(Error::SnapshotRef(format!("snapshot prefix {reference:?} is ambiguous"))),
        _ => Err(Error::SnapshotRef(format!(
            "snapshot prefix {reference:?} is ambiguous (it matches the damaged record {}): give more digits",
            damaged_hits[0].object
        ))),
    }
}

/// A snapshot record written again under another id: copied to another
/// tenant (source id, target id) or re-sealed under a new key (old id, new
/// id), both hex. In JSON it is a `[from, to]` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The id it had.
    pub from: String,
    /// The id it has now.
    pub to: String,
}

impl serde::Serialize for Rewritten {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.from, &self.to).serialize(s)
    }
}

/// Splits `SNAP[:PATH]`.
pub fn split_ref(text: &str) -> (&str, Option<&str>) {
    match text.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::snapshot::SnapshotSummary;
    use crate::id::BlobId;

    fn snap(id: u8, t: i64) -> Snapshot {
        Snapshot {
            id: SnapshotId([id; 32]),
            time_ns: t,
            record: SnapshotRecord {
                version: 1,
                time: format_time(t),
                tree: BlobId([0; 32]),
                paths: vec![],
                hostname: "h".into(),
                username: "u".into(),
                tags: vec![],
                parent: None,
                program_version: "x".into(),
                summary: SnapshotSummary::default(),
                copied_from: None,
            },
        }
    }

    #[test]
    fn resolve_refs() {
        let resolve = |s, r, at| super::resolve(s, &[], r, at);
        let s = vec![snap(0xaa, 10), snap(0xab, 20), snap(0xcd, 30)];
        assert_eq!(resolve(&s, "latest", None).unwrap().id, SnapshotId([0xcd; 32]));
        assert_eq!(resolve(&s, "latest", Some(25)).unwrap().id, SnapshotId([0xab; 32]));
        assert_eq!(resolve(&s, "latest", Some(20)).unwrap().id, SnapshotId([0xab; 32]));
        assert!(resolve(&s, "latest", Some(5)).is_err());
        assert_eq!(resolve(&s, "cdcd", None).unwrap().id, SnapshotId([0xcd; 32]));
        assert!(resolve(&s, "abab", None).is_ok());
        assert!(resolve(&s, "aba", None).is_err());
        assert!(resolve(&s, "eeee", None).is_err());
        let t = vec![snap(0xaa, 10), snap(0xaa, 20)];
        assert!(resolve(&t, "aaaa", None).is_err());
        assert_eq!(split_ref("latest:/srv/app"), ("latest", Some("/srv/app")));
    }

    #[test]
    fn a_damaged_record_stops_latest_and_its_own_id_but_not_other_ids() {
        let s = vec![snap(0xaa, 10), snap(0xab, 20)];
        let damaged =
            vec![Damage::new(format!("tenants/t/snapshots/{}", "ef".repeat(32)), "content does not match its name")];
        for at in [None, Some(15), Some(5)] {
            let e = resolve(&s, &damaged, "latest", at).unwrap_err().to_string();
            assert!(e.contains(&damaged[0].object) && e.contains("does not match"), "{e}");
        }
        let e = resolve(&s, &damaged, "efef", None).unwrap_err().to_string();
        assert!(e.contains("cannot be read") && e.contains(&damaged[0].object), "{e}");
        assert!(resolve(&s, &damaged, "EFEF", None).is_err());
        assert_eq!(resolve(&s, &damaged, "aaaa", None).unwrap().id, SnapshotId([0xaa; 32]));
        assert_eq!(resolve(&s, &damaged, &"ab".repeat(32), None).unwrap().id, SnapshotId([0xab; 32]));
        // A prefix shared by a readable snapshot and a damaged record.
        let damaged = vec![Damage::new(format!("tenants/t/snapshots/aaaa{}", "00".repeat(30)), "truncated")];
        let e = resolve(&s, &damaged, "aaaa", None).unwrap_err().to_string();
        assert!(e.contains("ambiguous") && e.contains(&damaged[0].object), "{e}");
        assert_eq!(resolve(&s, &damaged, &"aa".repeat(32), None).unwrap().id, SnapshotId([0xaa; 32]));
    }

    #[test]
    fn parse_times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert!(parse_time("2026-11-20 14:30:00").is_ok());
        assert!(parse_time("2026-11-20 14:30").is_ok());
        assert!(parse_time("2026-11-20").is_ok());
        assert!(parse_time("yesterday").is_err());
        let a = parse_time("2026-11-20 14:30").unwrap();
        let b = parse_time("2026-11-20 14:30:00").unwrap();
        assert_eq!(a, b);
    }
}
