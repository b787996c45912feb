//! Snapshot references and times: `latest`, id prefixes, `--at`.
//!
//! Owns: parsing references and times, and choosing a snapshot from a
//! list. Must not: read the store (callers pass the catalog's list).

use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotRecord;
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
    let bad = || Error::Invalid(format!("invalid time {text:?}: use RFC 3339 or YYYY-MM-DD[ HH:MM[:SS]]"));
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

/// Resolves a reference (`latest`, a full id, or a unique hex prefix of at
/// least 4 digits) against snapshots sorted oldest first. With `at`,
/// `latest` means the newest snapshot at or before that instant.
pub fn resolve<'a>(snaps: &'a [Snapshot], reference: &str, at: Option<i64>) -> Result<&'a Snapshot> {
    if reference == "latest" {
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
    let mut hits = snaps.iter().filter(|s| hex_prefix_matches(&s.id.0, reference));
    match (hits.next(), hits.next()) {
        (Some(s), None) => Ok(s),
        (None, _) => Err(Error::SnapshotRef(format!("no snapshot matches {reference:?}"))),
        (Some(_), Some(_)) => Err(Error::SnapshotRef(format!("snapshot prefix {reference:?} is ambiguous"))),
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
    use crate::format::snapshot::SnapshotSummary;
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
