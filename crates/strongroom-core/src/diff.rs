//! Diff: what changed between two snapshots.
//!
//! Walks both trees together, merging entries by name; identical subtree
//! ids are skipped without loading them, so the cost follows what changed.

use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repo;
use crate::tree::{Node, NodeKind};

/// One changed path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiffEntry {
    /// Path in the snapshots.
    pub path: String,
    /// `added`, `removed` or `modified`.
    pub change: &'static str,
    /// For `modified`: any of `content`, `metadata`, `type`.
    pub what: Vec<&'static str>,
    /// Size in the first snapshot (files).
    pub size_before: Option<u64>,
    /// Size in the second snapshot (files).
    pub size_after: Option<u64>,
}

/// The difference between two snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffSummary {
    /// Changed paths, in path order.
    pub entries: Vec<DiffEntry>,
    /// Entries added.
    pub added: u64,
    /// Entries removed.
    pub removed: u64,
    /// Entries modified.
    pub modified: u64,
    /// File bytes only in the second snapshot (added files, and growth).
    pub added_bytes: u64,
    /// File bytes only in the first snapshot (removed files, and shrinkage).
    pub removed_bytes: u64,
}

fn file_size(n: &Node) -> Option<u64> {
    matches!(n.kind, NodeKind::File { .. }).then_some(n.size)
}

/// Compares the trees `a` and `b` (roots of two snapshots).
pub fn run(repo: &Repo, a: &BlobId, b: &BlobId) -> Result<DiffSummary> {
    repo.set_tree_pack_cache(true);
    let mut s = DiffSummary::default();
    walk(repo, Some(a), Some(b), "", &mut s)?;
    Ok(s)
}

fn walk(repo: &Repo, a: Option<&BlobId>, b: Option<&BlobId>, prefix: &str, s: &mut DiffSummary) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(id) => repo.block_on(repo.load_tree(id))?,
        None => Vec::new(),
    };
    let tb = match b {
        Some(id) => repo.block_on(repo.load_tree(id))?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        let order = match (ta.get(i), tb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                one_side(repo, &ta[i], prefix, false, s)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                one_side(repo, &tb[j], prefix, true, s)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                both(repo, &ta[i], &tb[j], prefix, s)?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn path_of(prefix: &str, n: &Node) -> String {
    format!("{prefix}/{}", String::from_utf8_lossy(&n.name))
}

/// An entry (and everything below it) present on one side only.
fn one_side(repo: &Repo, n: &Node, prefix: &str, added: bool, s: &mut DiffSummary) -> Result<()> {
    let path = path_of(prefix, n);
    let size = file_size(n);
    if added {
        s.added += 1;
        s.added_bytes += size.unwrap_or(0);
    } else {
        s.removed += 1;
        s.removed_bytes += size.unwrap_or(0);
    }
    s.entries.push(DiffEntry {
        path: path.clone(),
        change: if added { "added" } else { "removed" },
        what: Vec::new(),
        size_before: if added { None } else { size },
        size_after: if added { size } else { None },
    });
    if let NodeKind::Dir { subtree } = &n.kind {
        let (a, b) = if added { (None, Some(subtree)) } else { (Some(subtree), None) };
        walk(repo, a, b, &path, s)?;
    }
    Ok(())
}

fn both(repo: &Repo, x: &Node, y: &Node, prefix: &str, s: &mut DiffSummary) -> Result<()> {
    let path = path_of(prefix, x);
    let mut what = Vec::new();
    if std::mem::discriminant(&x.kind) != std::mem::discriminant(&y.kind) {
        what.push("type");
    } else {
        let content = match (&x.kind, &y.kind) {
            (NodeKind::File { content: a }, NodeKind::File { content: b }) => a != b,
            (NodeKind::Symlink { target: a }, NodeKind::Symlink { target: b }) => a != b,
            (NodeKind::CharDevice { rdev: a }, NodeKind::CharDevice { rdev: b })
            | (NodeKind::BlockDevice { rdev: a }, NodeKind::BlockDevice { rdev: b }) => a != b,
            _ => false,
        };
        if content {
            what.push("content");
        }
        let is_dir = matches!(x.kind, NodeKind::Dir { .. });
        // A directory's mtime changes with every entry added or removed;
        // only its own permissions and owner count as its metadata.
        let meta = x.mode != y.mode
            || x.uid != y.uid
            || x.gid != y.gid
            || (!is_dir && (x.mtime != y.mtime || x.mtime_nsec != y.mtime_nsec));
        if meta {
            what.push("metadata");
        }
    }
    if !what.is_empty() {
        s.modified += 1;
        let (a, b) = (file_size(x), file_size(y));
        if let (Some(a), Some(b)) = (a, b) {
            s.added_bytes += b.saturating_sub(a);
            s.removed_bytes += a.saturating_sub(b);
        }
        s.entries.push(DiffEntry { path: path.clone(), change: "modified", what, size_before: a, size_after: b });
    }
    match (&x.kind, &y.kind) {
        (NodeKind::Dir { subtree: a }, NodeKind::Dir { subtree: b }) => walk(repo, Some(a), Some(b), &path, s),
        (NodeKind::Dir { subtree }, _) => walk(repo, Some(subtree), None, &path, s),
        (_, NodeKind::Dir { subtree }) => walk(repo, None, Some(subtree), &path, s),
        _ => Ok(()),
    }
}
