//! What gets backed up: directory entries with their metadata, exclude
//! patterns, standard input and a child process's standard output.
//!
//! Owns: reading directories (sorted by name), classifying entries into
//! node kinds, excludes, spawning stream commands. Must not: know about
//! repositories, blobs or snapshots.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::tree::NodeKind;

/// Compiled exclude patterns. A pattern with a `/` matches against the
/// whole absolute path; one without matches any path component's name
/// (as restic does). `*` does not cross `/`; `**` does.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
    empty: bool,
}

impl Excludes {
    /// Compiles patterns; a malformed one is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Invalid(format!("invalid pattern {p:?}: {e}")))?;
            if p.contains('/') {
                by_path.add(glob);
                // A directory pattern also excludes everything below it.
                let below = format!("{}/**", p.trim_end_matches('/'));
                by_path.add(Glob::new(&below).map_err(|e| Error::Invalid(format!("invalid pattern {p:?}: {e}")))?);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::Invalid(format!("invalid patterns: {e}")));
        Ok(Self { by_path: build(by_path)?, by_name: build(by_name)?, empty: patterns.is_empty() })
    }

    /// False when no pattern was given (nothing is ever excluded).
    pub fn matches_anything(&self) -> bool {
        !self.empty
    }

    /// True when `path` (absolute) is excluded.
    pub fn matches(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        if self.by_path.is_match(path) {
            return true;
        }
        path.file_name().is_some_and(|n| self.by_name.is_match(Path::new(n)))
    }
}

/// One directory entry: name and metadata (not following symlinks).
#[derive(Debug)]
pub struct DirEntry {
    /// File name.
    pub name: OsString,
    /// Full path.
    pub path: PathBuf,
    /// `lstat` result.
    pub metadata: std::fs::Metadata,
}

/// An entry that could not be read, with the error.
pub type EntryError = (PathBuf, std::io::Error);

/// Reads a directory, sorted by name. Entries that vanish or cannot be
/// stat'ed are returned as errors beside the good ones.
pub fn read_dir_sorted(dir: &Path) -> std::io::Result<(Vec<DirEntry>, Vec<EntryError>)> {
    read_dir_sorted_up_to(dir, usize::MAX).map(|listed| listed.unwrap_or_default())
}

/// [`read_dir_sorted`], or `None` as soon as the directory turns out to
/// hold more than `max` entries.
pub fn read_dir_sorted_up_to(dir: &Path, max: usize) -> std::io::Result<Option<(Vec<DirEntry>, Vec<EntryError>)>> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (n, e) in std::fs::read_dir(dir)?.enumerate() {
        if n >= max {
            return Ok(None);
        }
        match e {
            Ok(e) => {
                let path = e.path();
                // Stats relative to the directory's descriptor (fstatat),
                // not by walking the full path again; symlinks not followed.
                match e.metadata() {
                    Ok(metadata) => ok.push(DirEntry { name: e.file_name(), path, metadata }),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => bad.push((path, err)),
                }
            }
            Err(err) => bad.push((dir.to_path_buf(), err)),
        }
    }
    ok.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(Some((ok, bad)))
}

/// The node kind of a non-directory, non-file entry (symlink target,
/// device number), or `None` for regular files and directories.
pub fn special_kind(path: &Path, md: &std::fs::Metadata) -> std::io::Result<Option<NodeKind>> {
    let ft = md.file_type();
    Ok(Some(if ft.is_symlink() {
        NodeKind::Symlink { target: std::fs::read_link(path)?.as_os_str().as_bytes().to_vec() }
    } else if ft.is_char_device() {
        NodeKind::CharDevice { rdev: md.rdev() }
    } else if ft.is_block_device() {
        NodeKind::BlockDevice { rdev: md.rdev() }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        return Ok(None);
    }))
}

/// Checks a stream name: one path component, not `.` or `..`.
pub fn check_stream_name(name: &str) -> Result<()> {
    let n = OsStr::new(name).as_bytes();
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
        return Err(Error::Invalid(format!("invalid stream name {name:?}: use a plain file name")));
    }
    Ok(())
}

/// Spawns a command whose standard output is the stream to back up.
pub fn spawn_command(argv: &[String]) -> Result<Child> {
    let (prog, args) = argv.split_first().ok_or_else(|| Error::Invalid("no command given".into()))?;
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Source(format!("cannot run {prog:?}: {e}")))
}

/// This machine's host name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().to_string()
}

/// The operating-system user running us: `$USER`, `$LOGNAME`, the
/// password database's name for our uid, or the uid. Looked up once per
/// process (the password database is read from disk).
pub fn username() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
            return u;
        }
        let uid = nix::unistd::getuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) => u.name,
            _ => uid.to_string(),
        }
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_by_name_and_path() {
        let e = Excludes::new(&["*.tmp".into(), "/srv/cache".into(), "node_modules".into()]).unwrap();
        assert!(e.matches(Path::new("/a/b/x.tmp")));
        assert!(!e.matches(Path::new("/a/b/x.tmpl")));
        assert!(e.matches(Path::new("/srv/cache")));
        assert!(e.matches(Path::new("/srv/cache/deep/file")));
        assert!(!e.matches(Path::new("/srv/cached")));
        assert!(e.matches(Path::new("/x/node_modules")));
        assert!(Excludes::new(&["[".into()]).is_err());
        assert!(!Excludes::new(&[]).unwrap().matches(Path::new("/x")));
    }

    #[test]
    fn stream_names() {
        assert!(check_stream_name("db.sql").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(check_stream_name(bad).is_err());
        }
    }
}
