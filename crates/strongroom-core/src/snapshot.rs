//! Snapshot references and times: `latest`, id prefixes, `--at`.
//!
//! Owns: parsing references and times, and choosing a snapshot from a
//! list. Must not: read the store (callers pass the catalog's list).

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::snapshot::SnapshotRecord;
use crate::error::{Damage, Error, Result};
use crate::group::{self, GroupBy, GroupKey, SnapshotFilter};
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
/// `latest` is the newest of one group (see [`crate::group`]): among the
/// snapshots `filter` accepts (safety snapshots only when it asks for the
/// tag `safety`), those whose paths cover `named` (the path the command
/// reads, when it names one and some snapshot covers it), else all of
/// them; when these are all in one `host,paths` group, its newest; when
/// exactly one of their groups has exactly the filter's `--path` set, the
/// newest of that group; else it fails listing the groups (so a path that
/// two hosts back up needs `--host`). An id or prefix ignores the filter:
/// it names one snapshot.
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
    pick: &Pick<'_>,
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
        return resolve_latest(snaps, at, pick);
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

/// What chooses the group `latest` is taken from: a filter, and the path
/// the command reads (`dump latest /acme.sql`, `restore latest:/srv/app`).
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The snapshots to look at.
    pub filter: &'a SnapshotFilter,
    /// The path the command reads, if it names one.
    pub named: Option<&'a str>,
}

impl Pick<'static> {
    /// No filter and no path: `latest` is the newest snapshot when all
    /// are in one group.
    pub const ANY: Pick<'static> = Pick { filter: &NO_FILTER, named: None };
}

static NO_FILTER: SnapshotFilter =
    SnapshotFilter { hosts: Vec::new(), paths: Vec::new(), tags: Vec::new(), jobs: Vec::new() };

/// `latest` (at or before `at`) within the group `pick` chooses.
fn resolve_latest<'a>(snaps: &'a [Snapshot], at: Option<i64>, pick: &Pick<'_>) -> Result<&'a Snapshot> {
    let with_safety = pick.filter.asks_for_safety();
    let candidates: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| pick.filter.matches(&s.record) && (with_safety || !group::is_safety(&s.record)))
        .collect();
    if candidates.is_empty() {
        return Err(Error::SnapshotRef(match (snaps.is_empty(), pick.filter.is_empty()) {
            (true, _) => "no snapshots in the repository".into(),
            (false, true) => {
                "no snapshots in the repository but safety snapshots (pick one by id or with --tag safety)".into()
            }
            (false, false) => format!("no snapshot matches {}", pick.filter.describe()),
        }));
    }
    let covering: Vec<&Snapshot> = match pick.named {
        Some(p) => candidates.iter().copied().filter(|s| group::covers(&s.record, p)).collect(),
        None => Vec::new(),
    };
    let pool = match (covering.is_empty(), pick.named) {
        (false, Some(p)) => one_group(covering, pick.filter, &format!("the snapshots holding {p}"))?,
        (_, Some(p)) => {
            one_group(candidates, pick.filter, &format!("no snapshot's paths hold {p}, and the snapshots"))?
        }
        (_, None) => one_group(candidates, pick.filter, "the snapshots")?,
    };
    let found = pool.iter().rev().find(|s| at.is_none_or(|t| s.time_ns <= t));
    found.copied().ok_or_else(|| match at {
        Some(t) => Error::SnapshotRef(format!("no snapshot at or before {}", format_time(t))),
        None => Error::Internal("latest: an empty group".into()),
    })
}

/// The snapshots of `pool` (oldest first) when they are all in one
/// `host,paths` group. Over several groups, the one whose paths are
/// exactly the filter's `--path` set when there is one such group (a
/// source whose paths grew or shrank leaves a group behind that `--path`
/// alone also accepts); else it fails listing the groups, `what` naming
/// the pool in the message.
fn one_group<'a>(pool: Vec<&'a Snapshot>, filter: &SnapshotFilter, what: &str) -> Result<Vec<&'a Snapshot>> {
    let mut groups: BTreeMap<GroupKey, BTreeSet<&str>> = BTreeMap::new();
    for s in &pool {
        let jobs = groups.entry(GroupBy::DEFAULT.key(&s.record)).or_default();
        jobs.extend(s.record.job.as_deref());
    }
    if groups.len() <= 1 {
        return Ok(pool);
    }
    let exact: Vec<&GroupKey> = groups.keys().filter(|k| filter.has_exactly_paths(k.paths.as_deref())).collect();
    if let [key] = exact.as_slice() {
        return Ok(pool.into_iter().filter(|s| GroupBy::DEFAULT.key(&s.record) == **key).collect());
    }
    Err(ambiguous(&groups, what))
}

/// The error for `latest` over several groups, listing them.
fn ambiguous(groups: &BTreeMap<GroupKey, BTreeSet<&str>>, what: &str) -> Error {
    let list: Vec<String> = groups
        .iter()
        .map(|(key, jobs)| {
            let jobs: Vec<&str> = jobs.iter().copied().collect();
            if jobs.is_empty() {
                key.to_string()
            } else {
                format!("{key}, job {}", jobs.join(" "))
            }
        })
        .collect();
    Error::SnapshotRef(format!(
        "latest is ambiguous: {what} form {} groups ({}): name a path (SNAPSHOT:PATH, or the file for dump) or \
         choose a group with --host, --path, --tag or --job",
        groups.len(),
        list.join("; ")
    ))
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
                job: None,
            },
        }
    }

    #[test]
    fn resolve_refs() {
        let resolve = |s, r, at| super::resolve(s, &[], r, at, &Pick::ANY);
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

    fn resolve<'a>(s: &'a [Snapshot], d: &[Damage], r: &str, at: Option<i64>) -> Result<&'a Snapshot> {
        super::resolve(s, d, r, at, &Pick::ANY)
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

    fn snap_of(id: u8, t: i64, host: &str, paths: &[&str]) -> Snapshot {
        let mut s = snap(id, t);
        s.record.hostname = host.into();
        s.record.paths = paths.iter().map(|p| p.to_string()).collect();
        s
    }

    #[test]
    fn latest_with_a_named_path_never_crosses_groups() {
        let s = vec![snap_of(1, 10, "web1", &["/etc"]), snap_of(2, 20, "web2", &["/etc"])];
        let none = SnapshotFilter::default();
        let named = Pick { filter: &none, named: Some("/etc/nginx") };
        let e = super::resolve(&s, &[], "latest", None, &named).unwrap_err().to_string();
        assert!(e.contains("ambiguous") && e.contains("host web1") && e.contains("host web2"), "{e}");
        let web1 = SnapshotFilter { hosts: vec!["web1".into()], ..SnapshotFilter::default() };
        let pick = Pick { filter: &web1, named: Some("/etc/nginx") };
        assert_eq!(super::resolve(&s, &[], "latest", None, &pick).unwrap().id, SnapshotId([1; 32]));
        // A newer snapshot of `/` does not beat the source that holds the path.
        let s = vec![snap_of(1, 10, "h", &["/srv/app"]), snap_of(2, 20, "h", &["/"])];
        let named = Pick { filter: &none, named: Some("/srv/app/x") };
        let e = super::resolve(&s, &[], "latest", None, &named).unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
    }

    #[test]
    fn latest_with_path_filters_prefers_the_group_of_exactly_those_paths() {
        let s = vec![snap_of(1, 10, "h", &["/srv", "/etc"]), snap_of(2, 20, "h", &["/srv"])];
        let srv = SnapshotFilter { paths: vec!["/srv/".into()], ..SnapshotFilter::default() };
        let pick = Pick { filter: &srv, named: None };
        assert_eq!(super::resolve(&s, &[], "latest", None, &pick).unwrap().id, SnapshotId([2; 32]));
        assert_eq!(super::resolve(&s, &[], "latest", Some(15), &pick).map(|s| s.id).ok(), None, "not the other group");
        let both = SnapshotFilter { paths: vec!["/etc".into(), "/srv".into()], ..SnapshotFilter::default() };
        let pick = Pick { filter: &both, named: None };
        assert_eq!(super::resolve(&s, &[], "latest", None, &pick).unwrap().id, SnapshotId([1; 32]));
        // Two hosts with exactly those paths stay ambiguous.
        let s = vec![snap_of(1, 10, "a", &["/srv"]), snap_of(2, 20, "b", &["/srv"])];
        let pick = Pick { filter: &srv, named: None };
        assert!(super::resolve(&s, &[], "latest", None, &pick).is_err());
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
