//! Snapshot groups and filters: which snapshots belong together, and which
//! ones a command looks at.
//!
//! Owns: [`SnapshotFilter`] (restic's `--host`, `--path`, `--tag`, plus
//! `--job`), [`GroupBy`] (restic's `--group-by host,paths,tags`, plus
//! `job`) and the [`GroupKey`] a snapshot has under it. Must not: read the
//! store or know about the CLI.
//!
//! A group is what `latest` is the newest of and what a retention policy
//! counts in. The default is restic's `host,paths`: a directory source is
//! its host and sorted paths, a stream source (stdin or a command) its host
//! and `/<name>`, which is the path its record lists. Safety snapshots
//! (tag [`SAFETY_TAG`]) always form groups of their own, whatever the
//! grouping: they are copies of a restore target, not of a source, so
//! they never count against a source's retention and never become its
//! `latest`.

use std::fmt;
use std::str::FromStr;

use crate::codec::snapshot::SnapshotRecord;
use crate::error::{Error, Result};

/// The tag of the snapshot `restore --safety-snapshot` takes of a target.
pub const SAFETY_TAG: &str = "safety";

/// Which snapshots a command looks at. Each list left empty accepts every
/// snapshot; a snapshot must pass every list that is not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Host names: any of them.
    pub hosts: Vec<String>,
    /// Absolute paths: the snapshot's paths must include every one.
    pub paths: Vec<String>,
    /// Comma-separated tag lists: any of the lists, all tags of a list.
    pub tags: Vec<String>,
    /// Agent job names: any of them.
    pub jobs: Vec<String>,
}

/// What snapshots are grouped by. All false groups everything together
/// (safety snapshots still apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// The host name.
    pub host: bool,
    /// The sorted paths.
    pub paths: bool,
    /// The sorted tags.
    pub tags: bool,
    /// The agent job.
    pub job: bool,
}

/// The group of a snapshot under a [`GroupBy`]: the fields grouped by are
/// set, the others `None`. Ordered by host, paths, tags, job.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct GroupKey {
    /// Host name, when grouped by host.
    pub hostname: Option<String>,
    /// Sorted paths, when grouped by paths.
    pub paths: Option<Vec<String>>,
    /// Sorted tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
    /// The job (`None` inside: no job), when grouped by job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Option<String>>,
    /// A group of safety snapshots.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub safety: bool,
}

impl SnapshotFilter {
    /// True when no list is set.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.paths.is_empty() && self.tags.is_empty() && self.jobs.is_empty()
    }

    /// Whether the snapshot passes every list that is set.
    pub fn matches(&self, r: &SnapshotRecord) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&r.hostname);
        let paths = self.paths.iter().all(|p| r.paths.iter().any(|have| same_path(have, p)));
        let tags = self.tags.is_empty() || self.tags.iter().any(|list| has_tags(r, list));
        let job = self.jobs.is_empty() || r.job.as_ref().is_some_and(|j| self.jobs.contains(j));
        host && paths && tags && job
    }

    /// Whether `paths` (a group's sorted paths) are exactly the `--path`
    /// set, compared as paths; false when the filter names no path.
    pub fn has_exactly_paths(&self, paths: Option<&[String]>) -> bool {
        let set = |v: &[String]| v.iter().map(|p| normalize(p)).collect::<std::collections::BTreeSet<String>>();
        !self.paths.is_empty() && paths.is_some_and(|p| set(p) == set(&self.paths))
    }

    /// True when a tag list asks for safety snapshots by name, the only
    /// way (besides an id) that `latest` picks one.
    pub fn asks_for_safety(&self) -> bool {
        self.tags.iter().any(|list| tag_list(list).contains(&SAFETY_TAG))
    }

    /// The filter for messages: `--host a --tag x,y` (or `no filter`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (flag, list) in
            [("--host", &self.hosts), ("--path", &self.paths), ("--tag", &self.tags), ("--job", &self.jobs)]
        {
            parts.extend(list.iter().map(|v| format!("{flag} {v}")));
        }
        if parts.is_empty() {
            "no filter".into()
        } else {
            parts.join(" ")
        }
    }
}

impl GroupBy {
    /// restic's default, `host,paths`.
    pub const DEFAULT: GroupBy = GroupBy { host: true, paths: true, tags: false, job: false };

    /// The key of a snapshot's group.
    pub fn key(self, r: &SnapshotRecord) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        GroupKey {
            hostname: self.host.then(|| r.hostname.clone()),
            paths: self.paths.then(|| sorted(&r.paths)),
            tags: self.tags.then(|| sorted(&r.tags)),
            job: self.job.then(|| r.job.clone()),
            safety: is_safety(r),
        }
    }
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy::DEFAULT
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// restic's syntax: a comma-separated subset of `host`, `paths`, `tags`
    /// (plus `job`); the empty string groups everything together.
    fn from_str(text: &str) -> Result<Self> {
        let mut by = GroupBy { host: false, paths: false, tags: false, job: false };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => by.host = true,
                "paths" => by.paths = true,
                "tags" => by.tags = true,
                "job" => by.job = true,
                _ => return Err(Error::invalid_input("invalid --group-by", text, "use host, paths, tags and job")),
            }
        }
        Ok(by)
    }
}

impl fmt::Display for GroupBy {
    /// `host,paths`, the form it parses from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [(self.host, "host"), (self.paths, "paths"), (self.tags, "tags"), (self.job, "job")];
        let on: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        write!(f, "{}", on.join(","))
    }
}

impl fmt::Display for GroupKey {
    /// `host web1, paths /srv/www, job files` (`all snapshots` when the
    /// key has no field), with `safety snapshots` first for those.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.safety {
            parts.push("safety snapshots".to_string());
        }
        if let Some(h) = &self.hostname {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths {}", p.join(" ")));
        }
        if let Some(t) = &self.tags {
            parts.push(if t.is_empty() { "no tags".into() } else { format!("tags {}", t.join(",")) });
        }
        match &self.job {
            Some(Some(j)) => parts.push(format!("job {j}")),
            Some(None) => parts.push("no job".into()),
            None => {}
        }
        if parts.is_empty() {
            write!(f, "all snapshots")
        } else {
            write!(f, "{}", parts.join(", "))
        }
    }
}

/// Whether a snapshot is a safety snapshot (tag [`SAFETY_TAG`]).
pub fn is_safety(r: &SnapshotRecord) -> bool {
    r.tags.iter().any(|t| t == SAFETY_TAG)
}

/// Whether one of the snapshot's paths is `wanted` or a directory above
/// it: the snapshot holds `wanted` if anything does. `wanted` is taken as
/// absolute (a leading `/` is added when missing).
pub fn covers(r: &SnapshotRecord, wanted: &str) -> bool {
    let wanted = normalize(wanted);
    r.paths.iter().any(|p| {
        let p = normalize(p);
        p == "/" || wanted == p || wanted.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Whether the snapshot carries every tag of a comma-separated list (an
/// empty list is carried by none).
pub fn has_tags(r: &SnapshotRecord, list: &str) -> bool {
    let tags = tag_list(list);
    !tags.is_empty() && tags.iter().all(|t| r.tags.iter().any(|have| have == t))
}

/// The tags of a comma-separated list, blanks dropped.
pub fn tag_list(text: &str) -> Vec<&str> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty()).collect()
}

/// Equal as paths: the same after making absolute and dropping trailing
/// slashes.
fn same_path(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

/// `p` with a leading `/` and without trailing ones (`/` stays `/`).
fn normalize(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::snapshot::SnapshotSummary;
    use crate::id::BlobId;

    pub(crate) fn record(host: &str, paths: &[&str], tags: &[&str], job: Option<&str>) -> SnapshotRecord {
        SnapshotRecord {
            version: 1,
            time: "2026-11-24T00:00:00Z".into(),
            tree: BlobId([0; 32]),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            hostname: host.into(),
            username: "u".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            program_version: "x".into(),
            summary: SnapshotSummary::default(),
            copied_from: None,
            job: job.map(str::to_string),
        }
    }

    #[test]
    fn filters_follow_restic() {
        let r = record("h", &["/srv/app", "/etc"], &["prod", "eu"], Some("files"));
        let f = |hosts: &[&str], paths: &[&str], tags: &[&str], jobs: &[&str]| SnapshotFilter {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            jobs: jobs.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(&[], &[], &[], &[]).matches(&r));
        assert!(f(&["x", "h"], &[], &[], &[]).matches(&r));
        assert!(!f(&["x"], &[], &[], &[]).matches(&r));
        assert!(f(&[], &["/etc", "/srv/app/"], &[], &[]).matches(&r), "every path, trailing slash ignored");
        assert!(!f(&[], &["/etc", "/var"], &[], &[]).matches(&r));
        assert!(f(&[], &[], &["prod,eu"], &[]).matches(&r));
        assert!(!f(&[], &[], &["prod,us"], &[]).matches(&r), "a,b needs both");
        assert!(f(&[], &[], &["prod,us", "eu"], &[]).matches(&r), "repeated: any of them");
        assert!(f(&[], &[], &[], &["files"]).matches(&r));
        assert!(!f(&[], &[], &[], &["db"]).matches(&r));
        assert!(!f(&[], &[], &[], &["files"]).matches(&record("h", &["/x"], &[], None)));
        assert!(f(&[], &[], &["safety"], &[]).asks_for_safety());
        assert!(!f(&[], &[], &["prod"], &[]).asks_for_safety());
    }

    #[test]
    fn group_keys_and_their_syntax() {
        assert_eq!("host,paths".parse::<GroupBy>().unwrap(), GroupBy::DEFAULT);
        assert_eq!("".parse::<GroupBy>().unwrap().to_string(), "");
        assert_eq!(" paths , job".parse::<GroupBy>().unwrap().to_string(), "paths,job");
        assert!("hosts".parse::<GroupBy>().is_err());
        let a = record("h", &["/b", "/a"], &["x"], Some("j"));
        let b = record("h", &["/a", "/b"], &[], None);
        assert_eq!(GroupBy::DEFAULT.key(&a), GroupBy::DEFAULT.key(&b), "paths are sorted");
        assert_ne!(
            "host,paths,job".parse::<GroupBy>().unwrap().key(&a),
            "host,paths,job".parse::<GroupBy>().unwrap().key(&b)
        );
        assert_eq!(GroupBy::DEFAULT.key(&a).to_string(), "host h, paths /a /b");
        let safety = record("h", &["/a", "/b"], &[SAFETY_TAG], None);
        let everything: GroupBy = "".parse().unwrap();
        assert_ne!(everything.key(&safety), everything.key(&b), "safety snapshots are a group of their own");
        assert_eq!(everything.key(&safety).to_string(), "safety snapshots");
    }

    #[test]
    fn covers_paths_and_streams() {
        let dir = record("h", &["/srv/app"], &[], None);
        assert!(covers(&dir, "/srv/app"));
        assert!(covers(&dir, "/srv/app/x/y"));
        assert!(covers(&dir, "srv/app/x"));
        assert!(!covers(&dir, "/srv/application"));
        assert!(!covers(&dir, "/srv"));
        let stream = record("h", &["/acme.sql"], &[], None);
        assert!(covers(&stream, "/acme.sql"));
        assert!(!covers(&stream, "/acme"));
        assert!(covers(&record("h", &["/"], &[], None), "/anything"));
    }
}
