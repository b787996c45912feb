//! Find: which snapshots contain paths matching a pattern.
//!
//! The pattern follows the exclude rules of `source::Excludes`: without a
//! `/` it matches entry names, with one it matches whole paths (and what is
//! below them). Within one snapshot each subtree is walked once.

use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::Excludes;
use crate::tree::NodeKind;

/// One match.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// Snapshot id.
    pub snapshot: String,
    /// Snapshot time.
    pub time: String,
    /// Path of the entry.
    pub path: String,
    /// Kind, as `ls --json` names it (`crate::tree::kind_name`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size (files).
    pub size: u64,
    /// Modification time, RFC 3339.
    pub mtime: String,
}

/// Searches `snapshots` for entries matching `pattern`.
pub fn run(repo: &Repo, snapshots: &[Snapshot], pattern: &Excludes) -> Result<Vec<Found>> {
    repo.set_tree_pack_cache(true);
    let mut out = Vec::new();
    for snap in snapshots {
        let mut stack: Vec<(BlobId, String)> = vec![(snap.record.tree, String::new())];
        while let Some((id, prefix)) = stack.pop() {
            for n in repo.block_on(repo.load_tree(&id))? {
                let path = format!("{prefix}/{}", String::from_utf8_lossy(&n.name));
                if pattern.matches(std::path::Path::new(&path)) {
                    out.push(Found {
                        snapshot: snap.id.to_hex(),
                        time: snap.record.time.clone(),
                        path: path.clone(),
                        kind: crate::tree::kind_name(&n),
                        size: n.size,
                        mtime: jiff::Timestamp::new(n.mtime, n.mtime_nsec as i32)
                            .map(|t| t.to_string())
                            .unwrap_or_default(),
                    });
                }
                if let NodeKind::Dir { subtree } = n.kind {
                    stack.push((subtree, path));
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.time.cmp(&b.time)));
    Ok(out)
}
