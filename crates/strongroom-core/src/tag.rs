//! `tag`: add, remove or set the tags of existing snapshots, as restic's
//! `tag` does.
//!
//! A snapshot's id is the hash of its sealed record, so a record with other
//! tags is a new snapshot: each changed snapshot is written again under a
//! new id, its hold (if any) moved to the new id, and only then is the old
//! record deleted. Holds follow rather than refuse: a held snapshot stays
//! held at every step (the new hold is written before the old one is
//! deleted), and an operator can still label it.
//!
//! Crash safety: a kill between the steps leaves both records, the old one
//! still held if it was; `snapshots` then lists the snapshot twice, never
//! zero times. Running the same `tag` again finishes the job: a record
//! with the new tags already in the catalog is reused, not written again,
//! then the hold moves and the old record goes (or remove the duplicate
//! with `forget ID`).
//!
//! Owns: the new tag list and the order of the writes. Must not: print, or
//! take the lock (the caller holds the tenant's exclusive lock).

use crate::codec::snapshot as fsnap;
use crate::error::{Error, Result};
use crate::group::tag_list;
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::repo::Repo;
use crate::snapshot::{Rewritten, Snapshot};

/// How the tags change.
#[derive(Debug, Clone, Default)]
pub struct TagOptions {
    /// Tags to add (each may be a comma-separated list).
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
    /// When set, the tags to have instead of the current ones (empty: none).
    pub set: Option<Vec<String>>,
}

/// What `tag` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TagSummary {
    /// Each snapshot rewritten with its new tags: `[old id, new id]`.
    pub changed: Vec<Rewritten>,
    /// Snapshots whose tags were already as asked (left alone), hex ids.
    pub unchanged: Vec<String>,
}

impl TagOptions {
    /// Checks the options: something to do, `--set` alone, and tags
    /// without control characters.
    pub fn validate(&self) -> Result<()> {
        let nothing = self.add.is_empty() && self.remove.is_empty() && self.set.is_none();
        if nothing {
            return Err(Error::invalid_input("tag", "", "give --add, --remove or --set"));
        }
        if self.set.is_some() && !(self.add.is_empty() && self.remove.is_empty()) {
            return Err(Error::invalid_input("tag", "--set", "--set cannot go with --add or --remove"));
        }
        let all = self.add.iter().chain(&self.remove).chain(self.set.iter().flatten());
        for t in all.flat_map(|t| tag_list(t)) {
            if t.chars().any(char::is_control) || t.len() > 256 {
                return Err(Error::invalid_input("invalid tag", t, "use up to 256 bytes without control characters"));
            }
        }
        Ok(())
    }

    /// The tags `current` becomes: `set` if given, else `current` without
    /// `remove`, then `add` appended; in order, each once.
    pub fn apply(&self, current: &[String]) -> Vec<String> {
        let split = |v: &[String]| -> Vec<String> { v.iter().flat_map(|t| tag_list(t)).map(String::from).collect() };
        let mut out: Vec<String> = match &self.set {
            Some(set) => split(set),
            None => {
                let remove = split(&self.remove);
                let mut kept: Vec<String> = current.iter().filter(|t| !remove.contains(t)).cloned().collect();
                kept.extend(split(&self.add));
                kept
            }
        };
        let mut seen = std::collections::HashSet::new();
        out.retain(|t| seen.insert(t.clone()));
        out
    }
}

/// Rewrites each snapshot in `snaps` whose tags change under the
/// exclusive lock `guard`; see the module docs for the order and what a
/// crash leaves.
pub fn run(repo: &Repo, guard: &LockGuard, snaps: &[Snapshot], opts: &TagOptions) -> Result<TagSummary> {
    guard.require_exclusive(repo.tenant(), "tag")?;
    opts.validate()?;
    let mut summary = TagSummary::default();
    // Read once, on the first change: the records in the catalog, to find
    // an earlier run's copy without a scan per snapshot.
    let mut copies: Option<Copies> = None;
    for s in snaps {
        let tags = opts.apply(&s.record.tags);
        if tags == s.record.tags {
            summary.unchanged.push(s.id.to_hex());
            continue;
        }
        guard.checker()()?;
        let record = fsnap::SnapshotRecord { tags, ..s.record.clone() };
        let copies = match &mut copies {
            Some(c) => c,
            None => copies.insert(Copies::read(repo)?),
        };
        let payload = fsnap::encode(&record);
        let new_id = match copies.find(&payload, s.id) {
            Some(id) => id,
            None => {
                let id = repo.block_on(repo.save_snapshot(&record))?;
                copies.by_record.insert(payload, id);
                id
            }
        };
        crate::testhook::pause("tag-before-delete", &s.id.to_hex());
        repo.block_on(crate::hold::move_hold(repo.scope(), &s.id, &new_id))?;
        repo.block_on(repo.forget(&[s.id]))?;
        summary.changed.push(Rewritten { from: s.id.to_hex(), to: new_id.to_hex() });
    }
    Ok(summary)
}

/// The snapshots in the catalog by their encoded record.
struct Copies {
    by_record: std::collections::HashMap<Vec<u8>, SnapshotId>,
}

impl Copies {
    fn read(repo: &Repo) -> Result<Self> {
        Ok(Self { by_record: repo.catalog().snapshots()?.into_iter().map(|row| (row.record, row.id)).collect() })
    }

    /// A snapshot other than `old` whose record is `payload` byte for
    /// byte: the copy an earlier, interrupted run of the same `tag` wrote.
    fn find(&self, payload: &[u8], old: SnapshotId) -> Option<SnapshotId> {
        self.by_record.get(payload).copied().filter(|id| *id != old)
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn add_remove_set() {
        let add = TagOptions { add: v(&["b,c", "a"]), ..TagOptions::default() };
        assert_eq!(add.apply(&v(&["a"])), v(&["a", "b", "c"]));
        let remove = TagOptions { remove: v(&["a", "x"]), ..TagOptions::default() };
        assert_eq!(remove.apply(&v(&["a", "b"])), v(&["b"]));
        let both = TagOptions { add: v(&["c"]), remove: v(&["a"]), ..TagOptions::default() };
        assert_eq!(both.apply(&v(&["a", "b"])), v(&["b", "c"]));
        let set = TagOptions { set: Some(v(&["x,y"])), ..TagOptions::default() };
        assert_eq!(set.apply(&v(&["a"])), v(&["x", "y"]));
        let clear = TagOptions { set: Some(v(&[""])), ..TagOptions::default() };
        assert_eq!(clear.apply(&v(&["a"])), Vec::<String>::new());
        assert!(TagOptions::default().validate().is_err());
        assert!(TagOptions { set: Some(v(&["a"])), add: v(&["b"]), ..TagOptions::default() }.validate().is_err());
        assert!(TagOptions { add: v(&["a\nb"]), ..TagOptions::default() }.validate().is_err());
        assert!(add.validate().is_ok() && clear.validate().is_ok());
    }
}
