//! Finishing: what goes in place once the content is written. Files that
//! failed are removed (an existing file they were to replace stays), then
//! hard links, symlinks, devices and fifos are made, metadata the writers
//! did not set is set, `--delete` removes what the snapshot lacks, and
//! directory modes go on last, deepest first. Interrupted, it keeps the
//! complete files and removes the rest.

use std::collections::BTreeMap;

use super::decide::{metadata_matches, same_inode, same_special, Decision};
use super::write::{DirsMade, Files, Written};
use super::{Overwrite, RestoreRun, RestoreSummary};
use crate::error::Result;

impl RestoreRun<'_> {
    /// Puts everything else in place after the writes, and sums it up.
    pub(super) fn finish(&self, written: Written<'_>) -> Result<RestoreSummary> {
        let Written { files, writing, errors, dirs, packs_read, stopped } = written;
        if let Err(e) = stopped.and_then(|()| self.opts.cancel.check()) {
            self.abandon(&files, &writing, &errors);
            return Err(e);
        }
        let mut summary = RestoreSummary { packs_read, ..Default::default() };
        // Never leave a file with content we could not verify (an existing
        // file it was to replace stays as it was).
        for (i, e) in &errors {
            files.discard(*i);
            summary.errors.push(self.plan.files[*i].path.display().to_string(), e);
        }
        self.link_hard_links(&errors, &mut summary);
        self.make_others(&mut summary);
        self.set_file_meta(&files, &errors, &mut summary);
        self.delete_extra(&mut summary);
        self.set_dir_modes(&dirs, &mut summary);
        if self.opts.verify {
            self.verify_written(&errors, &mut summary);
        }
        Ok(summary)
    }

    /// After an interruption: keeps what is complete (with its metadata, so
    /// a rerun skips it at once); leaves no incomplete file that could pass
    /// for a restored one.
    fn abandon(&self, files: &Files<'_>, writing: &[usize], errors: &BTreeMap<usize, String>) {
        for &i in writing {
            if files.done(i) && !errors.contains_key(&i) {
                if !files.meta_set(i) {
                    let f = &self.plan.files[i];
                    let _ = self.target.rel(&f.path).and_then(|rel| self.target.set_meta(rel, &f.node));
                }
            } else {
                files.discard(i);
            }
        }
    }

    /// Second and later names of hard-linked files, linked to the first.
    fn link_hard_links(&self, errors: &BTreeMap<usize, String>, summary: &mut RestoreSummary) {
        let target = &self.target;
        for (path, p) in &self.plan.links {
            if errors.contains_key(p) {
                continue;
            }
            if self.keep_existing(path, &self.plan.files[*p].node).is_some() {
                summary.kept += 1;
                continue;
            }
            let linked = target.rel(path).and_then(|rel| {
                let primary = target.rel(&self.plan.files[*p].path)?;
                if same_inode(target, rel, primary) {
                    return Ok(());
                }
                target.hard_link(primary, rel)
            });
            match linked {
                Ok(()) => summary.hardlinks += 1,
                Err(e) => summary.errors.push(path.display().to_string(), e),
            }
        }
    }

    /// Symlinks, devices and fifos: made, or given their metadata when the
    /// same symlink is there already.
    fn make_others(&self, summary: &mut RestoreSummary) {
        let target = &self.target;
        for (path, node) in &self.plan.others {
            if self.keep_existing(path, node).is_some() {
                summary.kept += 1;
                continue;
            }
            let result = target.rel(path).and_then(|rel| {
                if same_special(target, path, node) {
                    target.set_meta(rel, node)
                } else {
                    target.make_special(rel, node)
                }
            });
            match result {
                Ok(()) => summary.others += 1,
                Err(e) => summary.errors.push(path.display().to_string(), e),
            }
        }
    }

    /// Counts the files written and kept, and sets the metadata of those
    /// whose writer did not set it and of kept files that differ in it.
    fn set_file_meta(&self, files: &Files<'_>, errors: &BTreeMap<usize, String>, summary: &mut RestoreSummary) {
        let mut dirs = self.target.dirs();
        for &i in &self.primaries {
            if errors.contains_key(&i) {
                continue;
            }
            let f = &self.plan.files[i];
            match self.decisions[&i] {
                Decision::Keep(_, false) => {
                    summary.kept += 1;
                    continue;
                }
                Decision::Keep(_, true) => {
                    summary.kept += 1;
                    if metadata_matches(&mut dirs, &f.path, &f.node) {
                        continue;
                    }
                }
                Decision::Write(_) => {
                    summary.files += 1;
                    summary.bytes += f.node.size;
                    if files.meta_set(i) {
                        continue;
                    }
                }
            }
            if let Err(e) = self.target.rel(&f.path).and_then(|rel| self.target.set_meta(rel, &f.node)) {
                summary.errors.push(f.path.display().to_string(), e);
            }
        }
    }

    /// With `--delete`: removes the planned deletions (one already gone
    /// counts as deleted).
    fn delete_extra(&self, summary: &mut RestoreSummary) {
        for path in &self.deletions {
            match self.target.rel(path).and_then(|rel| self.target.remove(rel)) {
                Ok(()) => summary.deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => summary.deleted += 1,
                Err(e) => summary.errors.push(path.display().to_string(), format!("cannot delete: {e}")),
            }
        }
    }

    /// Directory modes last, deepest first: each opens up only when all
    /// below it is done. A directory that could not be made is reported
    /// here.
    fn set_dir_modes(&self, made: &DirsMade, summary: &mut RestoreSummary) {
        let mut dirs: Vec<(usize, &_)> = self.plan.dirs.iter().enumerate().collect();
        dirs.sort_by_key(|(_, d)| std::cmp::Reverse(d.depth));
        for (i, d) in dirs {
            if let Some(e) = made.failed.get(&i) {
                summary.errors.push(d.path.display().to_string(), e);
                continue;
            }
            summary.dirs += 1;
            if self.opts.overwrite == Overwrite::Never && made.existed.contains(&i) {
                continue;
            }
            if let Err(e) = self.target.rel(&d.path).and_then(|rel| self.target.set_meta(rel, &d.node)) {
                summary.errors.push(d.path.display().to_string(), e);
            }
        }
    }
}
