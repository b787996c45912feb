//! Verifying: `--verify` re-reads every written file against its chunk
//! ids; [`verify_tree`] compares a restored tree with the snapshot (for
//! `verify-restore`); [`dump`] writes one file's verified content to a
//! writer. Reads only.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rayon::prelude::*;

use super::decide::{same_content, Decision};
use super::plan::FilePlan;
use super::target::Target;
use super::{RestoreRun, RestoreSummary, Subset, VerifySummary};
use crate::error::{Error, FileError, Result};
use crate::id::BlobId;
use crate::repo::Repo;
use crate::tree::{self, Node, NodeKind};

impl RestoreRun<'_> {
    /// `--verify`: re-reads each file written or kept as the snapshot's
    /// (not those kept as they were) and reports those that differ.
    pub(super) fn verify_written(&self, errors: &BTreeMap<usize, String>, summary: &mut RestoreSummary) {
        let checked = |i: &&usize| !errors.contains_key(*i) && !matches!(self.decisions[*i], Decision::Keep(_, false));
        let failures: Vec<FileError> = self
            .primaries
            .par_iter()
            .filter(checked)
            .filter_map(|&i| {
                let f = &self.plan.files[i];
                let error = verify_file(self.repo, &self.target, f).err()?;
                Some(FileError { path: f.path.display().to_string(), error })
            })
            .collect();
        summary.files_verified = self.primaries.iter().filter(checked).count() as u64;
        summary.errors.extend(failures.into_iter().collect());
    }
}

/// Re-reads a restored file and checks each chunk against its id.
fn verify_file(repo: &Repo, target: &Target, f: &FilePlan) -> std::result::Result<(), String> {
    let file = target.rel(&f.path).and_then(|rel| target.open_read(rel)).map_err(|e| format!("verify: {e}"))?;
    let md = file.metadata().map_err(|e| format!("verify: {e}"))?;
    if md.len() != f.node.size {
        return Err(format!("verify: size {} where the snapshot has {}", md.len(), f.node.size));
    }
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &f.content {
        let loc = repo.locate(id).map_err(|e| e.to_string())?;
        buf.resize(loc.blob.raw_len as usize, 0);
        file.read_exact_at(&mut buf, offset).map_err(|e| format!("verify: {e}"))?;
        if repo.keys().blob_id(&buf) != *id {
            return Err(format!("verify: content at offset {offset} differs from the snapshot"));
        }
        offset += loc.blob.raw_len as u64;
    }
    if offset != f.node.size {
        return Err(format!("verify: chunks cover {offset} bytes of {}", f.node.size));
    }
    Ok(())
}

/// Writes one file's content, verified chunk by chunk, to `out`, reading
/// a few chunks ahead. Returns the bytes written.
pub async fn dump(repo: &Repo, node: &Node, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
    use futures::StreamExt;
    let NodeKind::File { content } = &node.kind else {
        return Err(Error::InvalidInput {
            what: "file to dump".into(),
            value: String::from_utf8_lossy(&node.name).into_owned(),
            why: "not a regular file".into(),
        });
    };
    let mut chunks = futures::stream::iter(content.iter().map(|id| repo.read_blob(id))).buffered(4);
    let mut n = 0u64;
    while let Some(data) = chunks.next().await {
        let data = data?;
        out.write_all(&data).map_err(|e| Error::io("standard output", e))?;
        n += data.len() as u64;
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(n)
}

/// Compares the restored tree at `dir` with the snapshot tree `tree_id`
/// (below `snap_path`): every entry's type, mode, mtime, size and symlink
/// target, and every regular file's content against its chunk ids. Files
/// outside `subset` are skipped; sockets are not restored and not compared.
#[allow(clippy::too_many_arguments)]
pub fn verify_tree(
    repo: &Repo,
    tree_id: &BlobId,
    dir: &Path,
    snap_path: &str,
    subset: Option<&Subset>,
    cancel: &crate::Cancel,
    summary: &mut VerifySummary,
) -> Result<()> {
    let t = repo.block_on(repo.load_tree(tree_id))?;
    let mut files = Vec::new();
    for node in t {
        cancel.check()?;
        let path = dir.join(OsStr::from_bytes(&node.name));
        let sp = format!("{snap_path}/{}", String::from_utf8_lossy(&node.name));
        if matches!(node.kind, NodeKind::Socket) {
            continue;
        }
        if matches!(node.kind, NodeKind::File { .. }) && subset.is_some_and(|s| !s.selects(&sp)) {
            continue;
        }
        let md = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                summary.failures.push(sp, format!("missing after restore: {e}"));
                continue;
            }
        };
        if !same_type(&node.kind, md.file_type()) {
            summary.failures.push(sp, format!("restored as another type than {}", tree::kind_name(&node)));
            continue;
        }
        let mut problems = metadata_problems(&node, &md);
        match &node.kind {
            NodeKind::Dir { subtree } => {
                summary.dirs += 1;
                verify_tree(repo, subtree, &path, &sp, subset, cancel, summary)?;
            }
            NodeKind::Symlink { target } => {
                summary.others += 1;
                if std::fs::read_link(&path).map(|t| t.as_os_str().as_bytes() != target.as_slice()).unwrap_or(true) {
                    problems.push("symlink target differs".to_string());
                }
            }
            NodeKind::File { content } => {
                summary.files += 1;
                summary.bytes += node.size;
                if md.len() != node.size {
                    problems.push(format!("size {} where the snapshot has {}", md.len(), node.size));
                } else {
                    let plan = FilePlan { path: path.clone(), node: node.clone(), content: content.clone() };
                    files.push((sp.clone(), plan));
                }
            }
            _ => summary.others += 1,
        }
        if !problems.is_empty() {
            summary.failures.push(sp, problems.join("; "));
        }
    }
    let bad: Vec<FileError> = files
        .par_iter()
        .filter_map(|(sp, f)| {
            let error = match open_nofollow(&f.path).and_then(|file| same_content(repo, &file, f)) {
                Ok(true) => return None,
                Ok(false) => "content differs from the snapshot's chunk ids".to_string(),
                Err(e) => format!("cannot read: {e}"),
            };
            Some(FileError { path: sp.clone(), error })
        })
        .collect();
    summary.failures.extend(bad.into_iter().collect());
    Ok(())
}

/// Whether a restored entry of type `ft` is of the node's kind.
fn same_type(kind: &NodeKind, ft: std::fs::FileType) -> bool {
    match kind {
        NodeKind::File { .. } => ft.is_file(),
        NodeKind::Dir { .. } => ft.is_dir(),
        NodeKind::Symlink { .. } => ft.is_symlink(),
        NodeKind::CharDevice { .. } => ft.is_char_device(),
        NodeKind::BlockDevice { .. } => ft.is_block_device(),
        NodeKind::Fifo => ft.is_fifo(),
        NodeKind::Socket => true,
    }
}

/// How a restored entry's mode (but a symlink's) and mtime differ from
/// the node's.
fn metadata_problems(node: &Node, md: &std::fs::Metadata) -> Vec<String> {
    let mut problems = Vec::new();
    if !md.file_type().is_symlink() && md.mode() & 0o7777 != node.mode & 0o7777 {
        problems.push(format!("mode {:o} where the snapshot has {:o}", md.mode() & 0o7777, node.mode & 0o7777));
    }
    if (md.mtime(), md.mtime_nsec()) != (node.mtime, node.mtime_nsec as i64) {
        problems.push("mtime differs".to_string());
    }
    problems
}

/// Opens a regular file for reading, without following a symlink at its
/// name or blocking on a fifo.
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}
