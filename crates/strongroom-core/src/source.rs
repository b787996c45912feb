//! What gets backed up: directory entries with their metadata, exclude
//! patterns, standard input and a child process's standard output.
//!
//! Owns: reading directories (sorted by name) through directory
//! descriptors, opening what was walked and nothing else ([`Dir`]),
//! classifying entries into node kinds, excludes, spawning stream
//! commands. Must not: know about repositories, blobs or snapshots.
//!
//! **Invariant:** below a directory the walk opened, nothing is opened,
//! stat'ed or read by path: every entry is reached relative to its
//! directory's descriptor with `O_NOFOLLOW`, and what is opened is
//! checked against what the walk saw (device, inode, type).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::tree::{Node, NodeKind, Xattr};

/// Compiled exclude patterns. A pattern with a `/` matches against the
/// whole absolute path; one without matches any path component's name
/// (as restic does). `*` does not cross `/`; `**` does.
///
/// Marker files (`--exclude-if-present`) exclude the directory that
/// holds them.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
    empty: bool,
    markers: Vec<Marker>,
}

/// A marker file: a directory holding an entry of this name (a regular
/// file starting with `content`, when given) is excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    name: OsString,
    content: Option<Vec<u8>>,
}

/// The marker of `--exclude-caches`: the Cache Directory Tagging
/// Specification's tag file and its signature.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55";

impl Marker {
    /// Parses `NAME[:CONTENT]` (restic's `--exclude-if-present`): NAME a
    /// plain file name, CONTENT what the file must start with.
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, content) = match spec.split_once(':') {
            Some((n, c)) => (n, Some(c.as_bytes().to_vec())),
            None => (spec, None),
        };
        let n = name.as_bytes();
        if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
            return Err(Error::invalid_input("--exclude-if-present", spec, "the marker must be a plain file name"));
        }
        Ok(Marker { name: OsString::from(name), content: content.filter(|c| !c.is_empty()) })
    }

    /// Whether the listed directory `dir` (its `entries` sorted by name)
    /// holds this marker. Its content is read through the directory's
    /// descriptor, from the file the listing saw.
    fn in_dir(&self, dir: &Dir, entries: &[DirEntry]) -> bool {
        let Ok(i) = entries.binary_search_by(|e| e.name.as_bytes().cmp(self.name.as_bytes())) else {
            return false;
        };
        let Some(content) = &self.content else { return true };
        let e = &entries[i];
        if !e.metadata.is_file() || e.metadata.size < content.len() as u64 {
            return false;
        }
        let Ok(file) = dir.open_file(&e.name, Identity::of(&e.metadata)) else { return false };
        let mut head = Vec::with_capacity(content.len());
        match std::io::Read::read_to_end(&mut std::io::Read::take(&file, content.len() as u64), &mut head) {
            Ok(_) => head == *content,
            Err(_) => false,
        }
    }
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
                .map_err(|e| Error::invalid_input("invalid pattern", p, e.to_string()))?;
            if p.contains('/') {
                by_path.add(glob);
                // A directory pattern also excludes everything below it.
                let below = format!("{}/**", p.trim_end_matches('/'));
                by_path.add(Glob::new(&below).map_err(|e| Error::invalid_input("invalid pattern", p, e.to_string()))?);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| Error::invalid_input("invalid patterns", patterns.join(" "), e.to_string()))
        };
        Ok(Self { by_path: build(by_path)?, by_name: build(by_name)?, empty: patterns.is_empty(), markers: Vec::new() })
    }

    /// These excludes, and the directories holding one of `markers`.
    pub fn with_markers(self, markers: Vec<Marker>) -> Self {
        Excludes { markers, ..self }
    }

    /// Whether the listed directory `dir` (its `entries` sorted by name)
    /// holds a marker file, and is excluded.
    pub fn marked(&self, dir: &Dir, entries: &[DirEntry]) -> bool {
        self.markers.iter().any(|m| m.in_dir(dir, entries))
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

/// What the walk saw of an entry: `fstatat` relative to its directory,
/// not following symlinks. The fields a tree node records, and the
/// device number of device files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Change time, seconds.
    pub ctime: i64,
    /// Change time, nanoseconds.
    pub ctime_nsec: u32,
    /// Inode number.
    pub ino: u64,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Hard links.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
    /// Device number (device files).
    pub rdev: u64,
}

impl Meta {
    // The stat fields' integer types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rfs::Stat) -> Self {
        Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            mtime: st.st_mtime as i64,
            mtime_nsec: (st.st_mtime_nsec as u64).min(999_999_999) as u32,
            ctime: st.st_ctime as i64,
            ctime_nsec: (st.st_ctime_nsec as u64).min(999_999_999) as u32,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev as u64,
        }
    }

    /// The file type.
    pub fn file_type(&self) -> rfs::FileType {
        rfs::FileType::from_raw_mode(self.mode)
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == rfs::FileType::Directory
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == rfs::FileType::RegularFile
    }

    /// The tree node of an entry named `name` with this metadata.
    pub fn node(&self, name: &OsStr, kind: NodeKind) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            ctime: self.ctime,
            ctime_nsec: self.ctime_nsec,
            inode: self.ino,
            device: self.dev,
            links: self.nlink,
            size: if self.is_file() { self.size } else { 0 },
            xattrs: None,
        }
    }
}

/// Which file an entry was when the walk saw it: what an opened file
/// must still be (device, inode), so that a file or directory swapped in
/// after the walk (a symlink to `/etc/shadow`, another file renamed over
/// it) is never read in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl Identity {
    /// The identity of a walked entry.
    pub fn of(md: &Meta) -> Self {
        Identity { dev: md.dev, ino: md.ino }
    }

    /// The identity a node recorded from the walk.
    pub fn of_node(node: &Node) -> Self {
        Identity { dev: node.device, ino: node.inode }
    }
}

/// Why an entry the walk saw was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// A symlink is there now.
    #[error("replaced by a symbolic link since it was listed; left out")]
    NowSymlink,
    /// Another file or directory is there now.
    #[error("replaced by another {now} since it was listed; left out")]
    Replaced {
        /// What is there now.
        now: &'static str,
    },
}

impl From<WalkError> for std::io::Error {
    fn from(e: WalkError) -> Self {
        std::io::Error::other(e)
    }
}

/// One directory entry: name and metadata (not following symlinks).
#[derive(Debug)]
pub struct DirEntry {
    /// File name.
    pub name: OsString,
    /// Full path.
    pub path: PathBuf,
    /// `fstatat` result, relative to the directory, not following symlinks.
    pub metadata: Meta,
}

/// An entry that could not be read, with the error.
pub type EntryError = (PathBuf, std::io::Error);

/// Bytes of directory entries read per `getdents` call (as glibc's
/// `readdir`).
const LIST_BUF_BYTES: usize = 32 * 1024;

/// A directory opened for the walk. Its entries are stat'ed, opened and
/// read (symlink targets) relative to its descriptor, never by path: a
/// directory above that is swapped for a symlink after it was opened
/// cannot redirect the walk. Each subdirectory and file is opened with
/// `O_NOFOLLOW` and checked against the [`Identity`] the walk saw.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens the directory at `path` as given (symlinks in it followed),
    /// for listing.
    pub fn open(path: &Path) -> std::io::Result<Dir> {
        Ok(Dir { fd: rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())? })
    }

    /// Opens the directory at `path` as given only to find entries in it
    /// (`O_PATH`: it needs search permission, not read permission).
    pub fn open_path(path: &Path) -> std::io::Result<Dir> {
        Ok(Dir { fd: rfs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())? })
    }

    /// Opens the directory `name`, following it if it is a symlink (a
    /// backup target given with a trailing slash), and returns it with
    /// its metadata. The link is resolved here once; the walk below goes
    /// by the descriptor, so a link changed meanwhile redirects nothing.
    pub fn open_followed(&self, name: &OsStr) -> std::io::Result<(Dir, Meta)> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = Dir { fd: rfs::openat(&self.fd, name, flags, Mode::empty())? };
        let md = dir.stat()?;
        Ok((dir, md))
    }

    /// Metadata of this directory.
    pub fn stat(&self) -> std::io::Result<Meta> {
        Ok(Meta::of(&rfs::fstat(&self.fd)?))
    }

    /// Metadata of the entry `name`, not following a symlink.
    pub fn stat_at(&self, name: &OsStr) -> std::io::Result<Meta> {
        Ok(Meta::of(&rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?))
    }

    /// Opens the subdirectory `name` (for listing, or with `path_only` only
    /// to find entries in it), which must still be the directory the walk
    /// saw.
    pub fn open_dir(&self, name: &OsStr, walked: Identity, path_only: bool) -> std::io::Result<Dir> {
        let mode = if path_only { OFlags::PATH } else { OFlags::RDONLY };
        let flags = mode | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, Mode::empty()).map_err(|e| self.swapped(name, e))?;
        check_same(&fd, walked, rfs::FileType::Directory)?;
        Ok(Dir { fd })
    }

    /// Opens the regular file `name` for reading, which must still be the
    /// file the walk saw. `O_NONBLOCK`: a fifo or device swapped in never
    /// blocks the open (and is then refused); `O_NOATIME` where the
    /// owner allows it, so a backup does not write to the inodes it reads.
    pub fn open_file(&self, name: &OsStr, walked: Identity) -> std::io::Result<std::fs::File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rfs::openat(&self.fd, name, flags | OFlags::NOATIME, Mode::empty()) {
            // Not the file's owner: O_NOATIME is not ours to ask.
            Err(Errno::PERM) => rfs::openat(&self.fd, name, flags, Mode::empty()),
            other => other,
        }
        .map_err(|e| self.swapped(name, e))?;
        check_same(&fd, walked, rfs::FileType::RegularFile)?;
        Ok(std::fs::File::from(fd))
    }

    /// The extended attributes of this directory (see [`xattrs_of`]).
    pub fn xattrs(&self) -> std::io::Result<Vec<Xattr>> {
        xattrs_of(self.fd.as_fd())
    }

    /// The extended attributes of the entry `name` (any kind, a symlink's
    /// own), which must still be the entry the walk saw: it is opened
    /// with `O_PATH | O_NOFOLLOW` and checked, and its attributes read
    /// through that descriptor.
    pub fn xattrs_at(&self, name: &OsStr, walked: Identity) -> std::io::Result<Vec<Xattr>> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, Mode::empty())?;
        if Identity::of(&Meta::of(&rfs::fstat(&fd)?)) != walked {
            return Err(WalkError::Replaced { now: "file" }.into());
        }
        xattrs_of(fd.as_fd())
    }

    /// The target of the symlink `name`.
    pub fn read_link(&self, name: &OsStr) -> std::io::Result<Vec<u8>> {
        match rfs::readlinkat(&self.fd, name, Vec::new()) {
            Ok(target) => Ok(target.into_bytes()),
            // Not a symlink (any more).
            Err(Errno::INVAL) => Err(WalkError::Replaced { now: "file" }.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// The directory's entries (its path is `path`), sorted by name, or
    /// `None` as soon as it turns out to hold more than `max`. Entries
    /// that vanish meanwhile are left out; those that cannot be stat'ed
    /// are returned beside the good ones.
    pub fn list(&self, path: &Path, max: usize) -> std::io::Result<Option<(Vec<DirEntry>, Vec<EntryError>)>> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let mut buf = Vec::with_capacity(LIST_BUF_BYTES);
        let mut listed = rfs::RawDir::new(self.fd.as_fd(), buf.spare_capacity_mut());
        let mut n = 0usize;
        while let Some(e) = listed.next() {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    bad.push((path.to_path_buf(), err.into()));
                    break;
                }
            };
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            n += 1;
            if n > max {
                return Ok(None);
            }
            let entry_path = path.join(OsStr::from_bytes(name.to_bytes()));
            match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => ok.push(DirEntry {
                    name: OsStr::from_bytes(name.to_bytes()).to_os_string(),
                    path: entry_path,
                    metadata: Meta::of(&st),
                }),
                Err(Errno::NOENT) => {}
                Err(err) => bad.push((entry_path, err.into())),
            }
        }
        ok.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(Some((ok, bad)))
    }
}

impl Dir {
    /// An error opening `name`, with a symlink or non-directory found
    /// where the walk saw something else named for what it is.
    fn swapped(&self, name: &OsStr, e: Errno) -> std::io::Error {
        match e {
            // O_NOFOLLOW met a symlink (O_DIRECTORY reports it as ENOTDIR).
            Errno::LOOP | Errno::NOTDIR => match self.stat_at(name) {
                Ok(now) if now.file_type() == rfs::FileType::Symlink => WalkError::NowSymlink.into(),
                _ if e == Errno::NOTDIR => WalkError::Replaced { now: "file" }.into(),
                _ => e.into(),
            },
            e => e.into(),
        }
    }
}

/// Checks that an opened file is the one the walk saw, of the type it saw.
fn check_same(fd: &OwnedFd, walked: Identity, kind: rfs::FileType) -> std::io::Result<()> {
    let now = Meta::of(&rfs::fstat(fd)?);
    if now.file_type() != kind {
        let now = match now.file_type() {
            rfs::FileType::Directory => "directory",
            rfs::FileType::RegularFile => "file",
            _ => "special file",
        };
        return Err(WalkError::Replaced { now }.into());
    }
    if Identity::of(&now) != walked {
        return Err(
            WalkError::Replaced { now: if kind == rfs::FileType::Directory { "directory" } else { "file" } }.into()
        );
    }
    Ok(())
}

/// Whether a regular file changed while it was read: its size and mtime
/// now (`fstat` of the open file, after the read) against what the walk
/// saw. Returns the warning to give. The bytes read are not held to the
/// size: files of procfs and sysfs state a size (0, 4096) that is not
/// their length, and are read to their end.
pub fn changed_while_read(
    file: &std::fs::File,
    walked_size: u64,
    walked_mtime: (i64, u32),
    read: u64,
) -> Option<String> {
    let now = match rfs::fstat(file) {
        Ok(st) => Meta::of(&st),
        Err(e) => return Some(format!("cannot stat after reading: {e}")),
    };
    if now.size == walked_size && (now.mtime, now.mtime_nsec) == walked_mtime {
        return None;
    }
    Some(format!(
        "changed while being read ({walked_size} bytes when listed, {read} read, {} now); stored as read",
        now.size
    ))
}

/// Attribute names and values read at most, in bytes: Linux's limit of
/// a name list and of one value (64 KiB each) with room to spare.
const XATTR_LIST_MAX: usize = 64 * 1024;

/// Where extended attributes are read: an open descriptor, or (for an
/// `O_PATH` descriptor, which the `f*xattr` calls refuse) its magic link
/// in `/proc/self/fd`, which names exactly the inode held (the entry
/// itself when it is a symlink), with no lookup by name.
enum XattrSource<'a> {
    Fd(BorrowedFd<'a>),
    Proc(String),
}

impl XattrSource<'_> {
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Fd(fd) if buf.is_empty() => rfs::flistxattr_query(fd),
            XattrSource::Fd(fd) => rfs::flistxattr(fd, buf),
            XattrSource::Proc(p) if buf.is_empty() => rfs::listxattr_query(p.as_str()),
            XattrSource::Proc(p) => rfs::listxattr(p.as_str(), buf),
        }
    }

    fn get(&self, name: &std::ffi::CStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Fd(fd) if buf.is_empty() => rfs::fgetxattr_query(fd, name),
            XattrSource::Fd(fd) => rfs::fgetxattr(fd, name, buf),
            XattrSource::Proc(p) if buf.is_empty() => rfs::getxattr_query(p.as_str(), name),
            XattrSource::Proc(p) => rfs::getxattr(p.as_str(), name, buf),
        }
    }
}

/// Calls `read` with a buffer of the size `read` with an empty buffer
/// reports, again if the data grew meanwhile (`ERANGE`).
fn read_sized(read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    for _ in 0..4 {
        let n = read(&mut [])?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; n.min(XATTR_LIST_MAX) + 256];
        match read(&mut buf) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

/// The extended attributes of the file open as `fd` (every namespace
/// this process may read, POSIX ACLs as `system.posix_acl_*`), sorted by
/// name. A filesystem without extended attributes has none; one removed
/// while read is left out.
pub fn xattrs_of(fd: BorrowedFd<'_>) -> std::io::Result<Vec<Xattr>> {
    let mut src = XattrSource::Fd(fd);
    let names = match read_sized(|b| src.list(b)) {
        // An O_PATH descriptor: read through its magic link.
        Err(Errno::BADF) => {
            src = XattrSource::Proc(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            read_sized(|b| src.list(b))
        }
        other => other,
    };
    let names = match names {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(std::io::Error::from(e)),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = std::ffi::CString::new(name) else { continue };
        match read_sized(|b| src.get(&cname, b)) {
            // Beyond what a tree records (and what Linux allows).
            Ok(value)
                if value.len() > crate::codec::tree::XATTR_VALUE_MAX
                    || name.len() > crate::codec::tree::XATTR_NAME_MAX =>
            {
                return Err(std::io::Error::other(format!(
                    "extended attribute {}: larger than {} bytes",
                    cname.to_string_lossy(),
                    crate::codec::tree::XATTR_VALUE_MAX
                )));
            }
            Ok(value) => out.push(Xattr { name: name.to_vec(), value }),
            // Removed since listed.
            Err(Errno::NODATA) => {}
            Err(e) => {
                let e = std::io::Error::from(e);
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("extended attribute {}: {e}", cname.to_string_lossy()),
                ));
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.name == b.name);
    // What a tree can hold, so a backup never writes one restore refuses.
    let total: usize = out.iter().map(|x| x.name.len() + x.value.len()).sum();
    if total > crate::codec::tree::XATTR_NODE_MAX {
        return Err(std::io::Error::other(format!(
            "extended attributes: {total} bytes, more than {} in all",
            crate::codec::tree::XATTR_NODE_MAX
        )));
    }
    Ok(out)
}

/// Reads the directory at `path` (opened as given), sorted by name.
/// Entries that vanish or cannot be stat'ed are returned as errors beside
/// the good ones.
pub fn read_dir_sorted(path: &Path) -> std::io::Result<(Vec<DirEntry>, Vec<EntryError>)> {
    Dir::open(path)?.list(path, usize::MAX).map(|listed| listed.unwrap_or_default())
}

/// The node kind of a non-directory, non-file entry `name` of `dir`
/// (symlink target, device number), or `None` for regular files and
/// directories.
pub fn special_kind(dir: &Dir, name: &OsStr, md: &Meta) -> std::io::Result<Option<NodeKind>> {
    use rfs::FileType as T;
    Ok(Some(match md.file_type() {
        T::Symlink => NodeKind::Symlink { target: dir.read_link(name)? },
        T::CharacterDevice => NodeKind::CharDevice { rdev: md.rdev },
        T::BlockDevice => NodeKind::BlockDevice { rdev: md.rdev },
        T::Fifo => NodeKind::Fifo,
        T::Socket => NodeKind::Socket,
        _ => return Ok(None),
    }))
}

/// Checks a stream name: one path component, not `.` or `..`.
pub fn check_stream_name(name: &str) -> Result<()> {
    let n = OsStr::new(name).as_bytes();
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
        return Err(Error::invalid_input("invalid stream name", name, "use a plain file name"));
    }
    Ok(())
}

/// strongroom's secret variables, removed from the environment of a
/// source command.
const SECRET_VARS: [&str; 4] =
    ["STRONGROOM_PASSWORD", "STRONGROOM_PASSWORD_FILE", "STRONGROOM_ESCROW_SECRET_FILE", "STRONGROOM_NEW_PASSWORD"];

/// Spawns a command whose standard output is the stream to back up.
pub fn spawn_command(argv: &[String]) -> Result<Child> {
    let (prog, args) =
        argv.split_first().ok_or_else(|| Error::invalid_input("source command", "", "no command given"))?;
    let mut cmd = Command::new(prog);
    // The program makes the stream; it has no use for strongroom's own
    // secrets (a pg_dump must not see the tenant's password).
    for v in SECRET_VARS {
        cmd.env_remove(v);
    }
    cmd.args(args)
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

    /// A directory `d` holding the file `f` ("walked") and what the walk saw of it.
    fn walked_file() -> (tempfile::TempDir, Dir, Meta) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"walked").unwrap();
        let dir = Dir::open(d.path()).unwrap();
        let md = dir.stat_at(OsStr::new("f")).unwrap();
        (d, dir, md)
    }

    #[test]
    fn a_walked_file_opens_and_reads_unchanged() {
        let (d, dir, md) = walked_file();
        let mut f = dir.open_file(OsStr::new("f"), Identity::of(&md)).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, b"walked");
        assert_eq!(changed_while_read(&f, md.size, (md.mtime, md.mtime_nsec), got.len() as u64), None);
        // Cut after the walk.
        std::fs::OpenOptions::new().write(true).open(d.path().join("f")).unwrap().set_len(3).unwrap();
        assert!(changed_while_read(&f, md.size, (md.mtime, md.mtime_nsec), 6).is_some());
    }

    #[test]
    fn a_file_swapped_after_the_walk_is_not_opened() {
        let (d, dir, md) = walked_file();
        let f = d.path().join("f");
        // Another file renamed over it.
        std::fs::write(d.path().join("g"), b"other").unwrap();
        std::fs::rename(d.path().join("g"), &f).unwrap();
        let e = dir.open_file(OsStr::new("f"), Identity::of(&md)).unwrap_err();
        assert!(e.to_string().contains("replaced by another file"), "{e}");
        // A symlink to it.
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(d.path().join("g-target"), &f).unwrap();
        std::fs::write(d.path().join("g-target"), b"secret").unwrap();
        let e = dir.open_file(OsStr::new("f"), Identity::of(&md)).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A directory, opened as one, is refused as well.
        let e = dir.open_dir(OsStr::new("f"), Identity::of(&md), false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_listing_holds_every_entry_sorted_with_its_metadata() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b", "a", "c"] {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("link")).unwrap();
        let (ok, bad) = read_dir_sorted(d.path()).unwrap();
        assert!(bad.is_empty());
        let names: Vec<_> = ok.iter().map(|e| e.name.to_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c", "link", "sub"]);
        assert!(ok[4].metadata.is_dir() && ok[0].metadata.is_file() && ok[0].metadata.size == 1);
        assert_eq!(ok[3].metadata.file_type(), rfs::FileType::Symlink);
        let dir = Dir::open(d.path()).unwrap();
        assert_eq!(dir.list(d.path(), 4).unwrap().map(|l| l.0.len()), None);
        assert_eq!(
            special_kind(&dir, OsStr::new("link"), &ok[3].metadata).unwrap(),
            Some(NodeKind::Symlink { target: b"a".to_vec() })
        );
    }

    #[test]
    fn stream_names() {
        assert!(check_stream_name("db.sql").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(check_stream_name(bad).is_err());
        }
    }
}
