//! Planning: the snapshot's trees walked into what to restore where
//! (`Plan`), filtered by `--include`, `--exclude` and the subset, and,
//! with `--delete`, what to remove. Reads trees; touches no file (the
//! deletions are listed from the target, not made).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{RestoreOptions, RestoreRun, Subset};
use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::source::Excludes;
use crate::tree::{self, Node, NodeKind};

/// A regular file to restore.
pub(super) struct FilePlan {
    pub(super) path: PathBuf,
    /// Its metadata (the content list moved out into `content`).
    pub(super) node: Node,
    pub(super) content: Vec<BlobId>,
}

/// A directory to restore.
pub(super) struct DirPlan {
    pub(super) path: PathBuf,
    pub(super) node: Node,
    /// How far below the target: directory modes are set deepest first.
    pub(super) depth: usize,
}

/// Everything to restore, in the order a walk of the trees meets it.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) dirs: Vec<DirPlan>,
    pub(super) files: Vec<FilePlan>,
    /// Second and later names of a hard-linked file: (path, plan index of
    /// the file that carries the content).
    pub(super) links: Vec<(PathBuf, usize)>,
    /// Symlinks, devices and fifos.
    pub(super) others: Vec<(PathBuf, Node)>,
    /// With `--delete`: every restored directory with the names the
    /// snapshot has in it.
    pub(super) listings: Vec<Listing>,
}

impl Plan {
    /// No directory, file or other entry to restore.
    fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty() && self.others.is_empty()
    }

    /// The parts joined in order, each entry moved once.
    fn concat(parts: Vec<Plan>) -> Plan {
        let mut plan = Plan {
            dirs: Vec::with_capacity(parts.iter().map(|p| p.dirs.len()).sum()),
            files: Vec::with_capacity(parts.iter().map(|p| p.files.len()).sum()),
            links: Vec::with_capacity(parts.iter().map(|p| p.links.len()).sum()),
            others: Vec::with_capacity(parts.iter().map(|p| p.others.len()).sum()),
            listings: Vec::with_capacity(parts.iter().map(|p| p.listings.len()).sum()),
        };
        for p in parts {
            plan.dirs.extend(p.dirs);
            plan.files.extend(p.files);
            plan.links.extend(p.links);
            plan.others.extend(p.others);
            plan.listings.extend(p.listings);
        }
        plan
    }
}

/// A restored directory and the names the snapshot has in it.
pub(super) struct Listing {
    path: PathBuf,
    snap_path: String,
    names: HashSet<Vec<u8>>,
    /// No `--include` filter applies below (the whole directory is restored).
    whole: bool,
}

/// Which entries the options select, by their path in the snapshot.
#[derive(Clone, Copy)]
struct Filter<'a> {
    includes: Option<&'a Excludes>,
    excludes: &'a Excludes,
    subset: Option<&'a Subset>,
}

impl<'a> Filter<'a> {
    fn of(opts: &'a RestoreOptions) -> Self {
        Filter { includes: opts.includes.as_ref(), excludes: &opts.excludes, subset: opts.subset.as_ref() }
    }

    /// The filter below a directory that `--include` matched: everything
    /// below it is taken, so only the excludes and the subset remain.
    fn below_match(self) -> Self {
        Filter { includes: None, ..self }
    }

    /// Whether any filter looks at paths: without one, paths need not be
    /// formed.
    fn any(&self) -> bool {
        self.includes.is_some() || self.subset.is_some() || self.excludes.matches_anything()
    }

    /// (restore this entry, descend into it).
    fn selected(&self, snap_path: &str, is_dir: bool) -> (bool, bool) {
        let p = Path::new(snap_path);
        if self.excludes.matches(p) {
            return (false, false);
        }
        match self.includes {
            None => (true, true),
            Some(inc) => {
                let hit = inc.matches(p);
                (hit, hit || is_dir)
            }
        }
    }
}

/// The node `subpath` names in the snapshot, if it names one below the root.
pub(super) fn start_node(repo: &Repo, snapshot: &Snapshot, subpath: Option<&str>) -> Result<Option<Node>> {
    match subpath {
        Some(p) if !tree::components(p).is_empty() => repo.block_on(repo.find(&snapshot.record.tree, p, &snapshot.id)),
        _ => Ok(None),
    }
}

impl RestoreRun<'_> {
    /// Plans the restore of the tree `root`, or of `start` (the node
    /// `subpath` names) when given.
    pub(super) fn plan_snapshot(&self, root: &BlobId, start: Option<Node>, subpath: Option<&str>) -> Result<Plan> {
        let opts = self.opts;
        let snap_prefix = match subpath {
            Some(p) => format!("/{}", tree::components(p).join("/")),
            None => String::new(),
        };
        let filter = Filter::of(opts);
        let tree_id = match start {
            None => *root,
            Some(Node { kind: NodeKind::Dir { subtree }, .. }) => subtree,
            Some(node) => {
                let mut plan = Plan::default();
                let path = opts.target.join(OsStr::from_bytes(&node.name));
                let parent = snap_prefix.rsplit_once('/').map(|(a, _)| a.to_string()).unwrap_or_default();
                plan_node(node, &path, &parent, filter, true, &mut plan);
                return Ok(plan);
            }
        };
        Ok(Plan::concat(self.plan_dir(&tree_id, &opts.target, &snap_prefix, 0, filter)?))
    }

    /// Plans the restore of tree `tree_id` into `at`, as parts to be joined
    /// in order ([`Plan::concat`]: each entry is moved once, not once per
    /// level). Its subdirectories are planned in parallel (each loads its own
    /// trees), and their parts put among these in the tree's order: the plan
    /// is the one a walk in order would make.
    fn plan_dir(
        &self,
        tree_id: &BlobId,
        at: &Path,
        snap_path: &str,
        depth: usize,
        filter: Filter,
    ) -> Result<Vec<Plan>> {
        let opts = self.opts;
        let t = self.repo.block_on(self.repo.load_tree_in(&self.reader, tree_id))?;
        let mut parts = Vec::new();
        let mut plan = Plan::default();
        if opts.delete {
            plan.listings.push(Listing {
                path: at.to_path_buf(),
                snap_path: snap_path.to_string(),
                names: t.iter().map(|n| n.name.clone()).collect(),
                whole: filter.includes.is_none(),
            });
        }
        let entry_path = |node: &Node| at.join(OsStr::from_bytes(&node.name));
        // Each selected subdirectory's parts, and whether it was itself selected.
        type Below = Option<Result<(Vec<Plan>, bool)>>;
        let below: Vec<Below> = t
            .par_iter()
            .map(|node| {
                let NodeKind::Dir { subtree } = node.kind else { return None };
                if opts.cancel.is_cancelled() {
                    return None;
                }
                let sp = format!("{snap_path}/{}", String::from_utf8_lossy(&node.name));
                let (take, descend) = filter.selected(&sp, true);
                if !descend {
                    return None;
                }
                // With an include filter, everything below a matching
                // directory is taken: descend without the filter.
                let sub_filter = if take { filter.below_match() } else { filter };
                let sub = self.plan_dir(&subtree, &entry_path(node), &sp, depth + 1, sub_filter);
                Some(sub.map(|p| (p, take)))
            })
            .collect();
        for (node, sub) in t.into_iter().zip(below) {
            if opts.cancel.is_cancelled() {
                break;
            }
            let path = entry_path(&node);
            if let NodeKind::Dir { .. } = node.kind {
                let Some(sub) = sub else { continue };
                let (sub, take) = sub?;
                // Nothing below was selected: the directory is not created.
                if take || sub.iter().any(|p| !p.is_empty()) {
                    plan.dirs.push(DirPlan { path, node, depth: depth + 1 });
                }
                parts.push(std::mem::take(&mut plan));
                parts.extend(sub);
            } else {
                plan_node(node, &path, snap_path, filter, false, &mut plan);
            }
        }
        parts.push(plan);
        Ok(parts)
    }

    /// Entries of restored directories that the snapshot does not have, and
    /// that the filters select. A directory is listed through the target's
    /// descriptors: one reached through a symlink lists nothing.
    pub(super) fn plan_deletions(&self) -> Vec<PathBuf> {
        let (opts, target) = (self.opts, &self.target);
        let mut out = Vec::new();
        for l in &self.plan.listings {
            let Ok(names) = target.rel(&l.path).and_then(|rel| target.list(rel)) else { continue };
            for name in names {
                if l.names.contains(name.as_bytes()) {
                    continue;
                }
                let sp = format!("{}/{}", l.snap_path, name.to_string_lossy());
                let p = Path::new(&sp);
                if opts.excludes.matches(p) {
                    continue;
                }
                if !l.whole && !opts.includes.as_ref().is_some_and(|inc| inc.matches(p)) {
                    continue;
                }
                out.push(l.path.join(name));
            }
        }
        out.sort();
        out
    }
}

/// Adds a non-directory entry to the plan if the filter selects it (or
/// it is `forced`: the entry a subpath names).
fn plan_node(mut node: Node, path: &Path, parent_snap_path: &str, filter: Filter, forced: bool, plan: &mut Plan) {
    // Its path in the snapshot, needed only by filters (most restores have none).
    if filter.any() {
        let sp = format!("{parent_snap_path}/{}", String::from_utf8_lossy(&node.name));
        if !forced && !filter.selected(&sp, false).0 {
            return;
        }
        if matches!(node.kind, NodeKind::File { .. }) && filter.subset.is_some_and(|s| !s.selects(&sp)) {
            return;
        }
    }
    match &mut node.kind {
        NodeKind::File { content } => {
            // The plan keeps the chunk list; the node, the metadata.
            let content = std::mem::take(content);
            plan.files.push(FilePlan { path: path.to_path_buf(), node, content });
        }
        NodeKind::Socket => {}
        _ => plan.others.push((path.to_path_buf(), node)),
    }
}
