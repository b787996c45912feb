//! Deciding: which planned file carries a hard-linked inode's content,
//! what [`Overwrite`] makes of each entry the target already has, and,
//! for `--dry-run`, the list of it all. Reads the target; changes nothing.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;
use rustix::fs::{FileType, Stat};

use super::plan::FilePlan;
use super::target::{Dirs, Target};
use super::{Action, Overwrite, RestoreRun, RestoreSummary};
use crate::repo::Repo;
use crate::tree::{Node, NodeKind};

/// Per-file decision for an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Write(&'static str),
    /// Keep; `true` when the content is the snapshot's, so its metadata is set.
    Keep(&'static str, bool),
}

impl RestoreRun<'_> {
    /// Picks the primaries (the first file of each hard-linked inode
    /// carries the content; the others become links), decides each, and
    /// lists the deletions.
    pub(super) fn decide(&mut self) {
        let mut first_of: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, f) in self.plan.files.iter().enumerate() {
            if f.node.links > 1 && f.node.inode != 0 {
                if let Some(&p) = first_of.get(&(f.node.device, f.node.inode)) {
                    self.plan.links.push((f.path.clone(), p));
                    continue;
                }
                first_of.insert((f.node.device, f.node.inode), i);
            }
            self.primaries.push(i);
        }
        // In runs of files, in plan order: mostly of one directory, each
        // looked up once.
        let (plan, target, fresh) = (&self.plan, &self.target, self.fresh);
        let (repo, overwrite) = (self.repo, self.opts.overwrite);
        self.decisions = self
            .primaries
            .par_chunks(64)
            .flat_map_iter(|run| {
                let mut dirs = target.dirs();
                let decided: Vec<(usize, Decision)> = run
                    .iter()
                    .map(|&i| {
                        let f = &plan.files[i];
                        (i, if fresh { Decision::Write("new") } else { decide_file(repo, &mut dirs, f, overwrite) })
                    })
                    .collect();
                decided
            })
            .collect();
        if self.opts.delete {
            self.deletions = self.plan_deletions();
        }
    }

    /// The status of `path` in the target, if something is there.
    pub(super) fn existing(&self, path: &Path) -> Option<Stat> {
        self.target.rel(path).and_then(|rel| self.target.lstat(rel)).ok()
    }

    /// Why an existing link or special entry is kept (`never`, or newer
    /// with `if-newer`), or `None` when it is to be written.
    pub(super) fn keep_existing(&self, path: &Path, node: &Node) -> Option<&'static str> {
        let st = self.existing(path)?;
        match self.opts.overwrite {
            Overwrite::Never => Some("exists"),
            Overwrite::IfNewer if newer(&st, node) => Some("newer in target"),
            _ => None,
        }
    }

    /// The summary of `--dry-run`: every planned write, keep and delete,
    /// sorted by path.
    pub(super) fn dry_run(&self) -> RestoreSummary {
        let mut summary = RestoreSummary::default();
        let mut act = |path: &Path, action, reason| {
            summary.actions.push(Action { path: path.display().to_string(), action, reason });
        };
        for &i in &self.primaries {
            let (action, reason) = match self.decisions[&i] {
                Decision::Write(r) => ("write", r),
                Decision::Keep(r, _) => ("keep", r),
            };
            act(&self.plan.files[i].path, action, reason);
        }
        let new_or_changed = |path: &Path| if self.existing(path).is_some() { "changed" } else { "new" };
        for (path, p) in &self.plan.links {
            match self.keep_existing(path, &self.plan.files[*p].node) {
                Some(r) => act(path, "keep", r),
                None => act(path, "write", new_or_changed(path)),
            }
        }
        for (path, node) in &self.plan.others {
            match self.keep_existing(path, node) {
                Some(r) => act(path, "keep", r),
                None if same_special(&self.target, path, node) => act(path, "keep", "unchanged"),
                None => act(path, "write", new_or_changed(path)),
            }
        }
        for path in &self.deletions {
            act(path, "delete", "not in snapshot");
        }
        for a in &summary.actions {
            match a.action {
                "keep" => summary.kept += 1,
                "delete" => summary.deleted += 1,
                _ => {}
            }
        }
        summary.files = summary.actions.iter().filter(|a| a.action == "write").count() as u64;
        summary.actions.sort_by(|a, b| a.path.cmp(&b.path));
        summary
    }
}

/// True when the target's mtime is later than the snapshot's.
fn newer(st: &Stat, node: &Node) -> bool {
    mtime_of(st) > (node.mtime, node.mtime_nsec as i64)
}

/// A status's mtime (seconds, nanoseconds).
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn mtime_of(st: &Stat) -> (i64, i64) {
    (st.st_mtime as i64, st.st_mtime_nsec as i64)
}

pub(super) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Decides whether a planned file must be written.
fn decide_file(repo: &Repo, dirs: &mut Dirs<'_>, f: &FilePlan, mode: Overwrite) -> Decision {
    let target = dirs.target();
    let Ok(rel) = target.rel(&f.path) else { return Decision::Write("new") };
    let Ok(st) = dirs.lstat(rel) else { return Decision::Write("new") };
    match mode {
        Overwrite::Always => return Decision::Write("always"),
        Overwrite::Never => return Decision::Keep("exists", false),
        Overwrite::IfNewer if newer(&st, &f.node) => return Decision::Keep("newer in target", false),
        _ => {}
    }
    if file_type(&st) != FileType::RegularFile || st.st_size as u64 != f.node.size {
        return Decision::Write("changed");
    }
    // Fast path: restore sets the mtime only once a file is complete.
    if mtime_of(&st) == (f.node.mtime, f.node.mtime_nsec as i64) {
        return Decision::Keep("unchanged", true);
    }
    match target.open_read(rel).and_then(|file| same_content(repo, &file, f)) {
        Ok(true) => Decision::Keep("unchanged", true),
        _ => Decision::Write("changed"),
    }
}

/// Reads `file` chunk by chunk and compares each with its id; stops at the
/// first difference.
pub(super) fn same_content(repo: &Repo, file: &std::fs::File, f: &FilePlan) -> std::io::Result<bool> {
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &f.content {
        let Ok(loc) = repo.locate(id) else { return Ok(false) };
        buf.resize(loc.blob.raw_len as usize, 0);
        if file.read_exact_at(&mut buf, offset).is_err() || repo.keys().blob_id(&buf) != *id {
            return Ok(false);
        }
        offset += loc.blob.raw_len as u64;
    }
    Ok(offset == f.node.size)
}

/// True when an existing file already has the node's mode, owner (when
/// root), mtime and extended attributes (when recorded; read through the
/// file's own descriptor), so setting them would only change its ctime.
pub(super) fn metadata_matches(dirs: &mut Dirs<'_>, path: &Path, node: &Node) -> bool {
    let Ok(fd) = dirs.target().rel(path).and_then(|rel| dirs.open_path(rel)) else { return false };
    let Ok(st) = rustix::fs::fstat(&fd) else { return false };
    let owner_ok = !rustix::process::geteuid().is_root() || (st.st_uid == node.uid && st.st_gid == node.gid);
    owner_ok
        && st.st_mode & 0o7777 == node.mode & 0o7777
        && mtime_of(&st) == (node.mtime, node.mtime_nsec as i64)
        && super::target::xattrs_match(std::os::fd::AsFd::as_fd(&fd), node)
}

/// True when `path` is already the snapshot's symlink (same target).
pub(super) fn same_special(target: &Target, path: &Path, node: &Node) -> bool {
    match &node.kind {
        NodeKind::Symlink { target: want } => {
            target.rel(path).and_then(|rel| target.read_link(rel)).is_ok_and(|t| t.as_bytes() == want)
        }
        _ => false,
    }
}

/// True when `a` and `b` are the same inode.
pub(super) fn same_inode(target: &Target, a: &Path, b: &Path) -> bool {
    match (target.lstat(a), target.lstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}
