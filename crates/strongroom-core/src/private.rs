//! Files and directories only their owner can open: every object and
//! directory of a local repository, and everything in the local cache.
//!
//! A local repository's key slots are Argon2id-wrapped keys: readable by
//! another local user they can be guessed at offline. The cache holds
//! catalogs (file names in plaintext), the escrow pin and the audit
//! memory. So what strongroom creates there is mode 0600 (files) and 0700
//! (directories), set explicitly after creation: the umask can only take
//! bits away, and an odd one (0277) would otherwise leave a directory
//! that cannot be entered.
//!
//! Existing files and directories are left as they are: a directory the
//! user made (the repository root, a mount point) keeps the mode the user
//! gave it, and `check` reports a local repository whose key slots others
//! can read (docs/GUIDE.md, "Local repositories").

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file strongroom creates in a local repository or cache.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory strongroom creates there.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing ancestors, each with mode 0700, and
/// returns the directories this call created, outermost first. A
/// directory another process creates meanwhile is not counted and not
/// changed.
pub fn create_dir_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    let mut created = Vec::new();
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => {
                tolerate_no_modes(std::fs::set_permissions(d, Permissions::from_mode(DIR_MODE)))?;
                created.push(d.to_path_buf());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Options that create a file with mode 0600 (before the umask; call
/// [`restrict`] on the opened file to make it exact).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Sets a file strongroom just created to mode 0600 exactly.
pub fn restrict(file: &std::fs::File) -> io::Result<()> {
    tolerate_no_modes(file.set_permissions(Permissions::from_mode(FILE_MODE)))
}

/// A file system without Unix modes (FAT, some network mounts) refuses
/// `chmod`; there its mount options decide who can read, and the write
/// goes on.
fn tolerate_no_modes(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => Ok(()),
        other => other,
    }
}

/// Writes `bytes` to a new or truncated file at `path`, mode 0600, its
/// directory created (0700) when missing. For the cache, which is
/// strongroom's own: a file that existed is made 0600 too.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        create_dir_all(dir)?;
    }
    let mut f = file_options().write(true).create(true).truncate(true).open(path)?;
    restrict(&f)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_directories_and_files_are_private_and_existing_ones_untouched() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), Permissions::from_mode(0o755)).unwrap();
        let deep = t.path().join("a/b/c");
        let made = create_dir_all(&deep).unwrap();
        assert_eq!(made, [t.path().join("a"), t.path().join("a/b"), deep.clone()]);
        for d in &made {
            assert_eq!(mode(d), DIR_MODE, "{}", d.display());
        }
        assert_eq!(mode(t.path()), 0o755, "an existing directory was changed");
        assert!(create_dir_all(&deep).unwrap().is_empty());
        let f = t.path().join("x/y/file");
        write(&f, b"secret").unwrap();
        assert_eq!(mode(&f), FILE_MODE);
        assert_eq!(mode(&t.path().join("x")), DIR_MODE);
        assert_eq!(std::fs::read(&f).unwrap(), b"secret");
    }
}
