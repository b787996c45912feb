//! The restore's target directory, reached only through descriptors.
//!
//! The target is opened once, by the path the user named; everything below
//! it is reached from that descriptor, never by a full path. A path is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the
//! kernel has it (Linux 5.6), else by an `openat(O_NOFOLLOW)` walk, one
//! component at a time (chosen at run time, on `ENOSYS`). Entries are
//! created, replaced (made under a temporary name, then `renameat` over the
//! old one), linked and removed relative to their parent's descriptor;
//! metadata goes on through the entry's own descriptor, or with
//! `AT_SYMLINK_NOFOLLOW` for a symlink. A symlink planted in the target, or
//! a directory swapped for one while the restore runs, makes the operation
//! fail (`ELOOP`) instead of leading outside.
//!
//! **Invariant:** no path handed to the kernel here is absolute or
//! relative to the working directory, except `/proc/self/fd/N`, the magic
//! link to a descriptor already held (how the mode and times of a fifo or
//! device are set without opening it).
//! **Invariant:** a symlink is never followed below the target root.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::tree::{Node, NodeKind};

/// Set once `openat2` has answered `ENOSYS`: the kernel lacks it, every
/// later resolution walks.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Prefix of the temporary names under which replacements are made.
pub(super) const TEMP_PREFIX: &str = ".strongroom-restore-";

/// The target directory of a restore.
pub(super) struct Target {
    /// Its descriptor; `None` for a dry run into a target that does not
    /// exist (every lookup then finds nothing).
    root: Option<OwnedFd>,
    path: PathBuf,
    /// Resolve with `openat2` (else walk).
    openat2: bool,
}

/// A directory's descriptor: the target root's (borrowed) or one opened.
pub(super) enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(fd) => *fd,
            DirFd::Opened(fd) => fd.as_fd(),
        }
    }
}

impl Target {
    /// Opens the target directory at `path` (which must exist).
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let root = rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self::with_root(Some(root), path))
    }

    /// A target that does not exist (a dry run's): nothing is found in it.
    pub(super) fn absent(path: &Path) -> Self {
        Self::with_root(None, path)
    }

    fn with_root(root: Option<OwnedFd>, path: &Path) -> Self {
        // A test can make the walk the only resolver, as on an old kernel.
        let openat2 = crate::testhook::var("STRONGROOM_TEST_NO_OPENAT2").is_none();
        Target { root, path: path.to_path_buf(), openat2 }
    }

    /// `abs` (the target path joined with names from the snapshot) relative
    /// to the target.
    pub(super) fn rel<'a>(&self, abs: &'a Path) -> io::Result<&'a Path> {
        let rel = abs.strip_prefix(&self.path).map_err(|_| outside())?;
        if rel.components().all(|c| matches!(c, Component::Normal(_))) {
            Ok(rel)
        } else {
            Err(outside())
        }
    }

    fn root(&self) -> io::Result<BorrowedFd<'_>> {
        self.root.as_ref().map(|r| r.as_fd()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// The root's status.
    pub(super) fn root_stat(&self) -> io::Result<Stat> {
        Ok(rfs::fstat(self.root()?)?)
    }

    /// True when the target has no entries (or does not exist).
    pub(super) fn is_empty(&self) -> bool {
        let Ok(root) = self.root() else { return true };
        let Ok(dir) = rfs::Dir::read_from(root) else { return false };
        !dir.flatten().any(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
    }

    /// Opens `rel` with `flags` (`O_NOFOLLOW` and `O_CLOEXEC` are added),
    /// never following a symlink on the way or at its end.
    pub(super) fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let root = self.root()?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        if self.openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a rename elsewhere raced the lookup; try again.
            for _ in 0..4 {
                match rfs::openat2(root, path, flags, mode, how) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    r => return r.map_err(refused),
                }
            }
        }
        walk(root, rel, flags, mode).map_err(refused)
    }

    /// An `O_PATH` descriptor of the directory `rel` (the root if empty).
    pub(super) fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// The descriptor of `rel`'s parent directory, and `rel`'s last name.
    pub(super) fn parent<'a>(&self, rel: &'a Path) -> io::Result<(DirFd<'_>, &'a OsStr)> {
        let name = rel.file_name().ok_or_else(outside)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            return Ok((DirFd::Root(self.root()?), name));
        }
        Ok((DirFd::Opened(self.open_dir(parent)?), name))
    }

    /// A lookup helper that keeps the last directory it looked in open.
    pub(super) fn dirs(&self) -> Dirs<'_> {
        Dirs { target: self, last: None }
    }

    /// The status of `rel` itself (a symlink's own).
    pub(super) fn lstat(&self, rel: &Path) -> io::Result<Stat> {
        Ok(rfs::fstat(self.open_at(rel, OFlags::PATH, Mode::empty())?)?)
    }

    /// Opens the regular file `rel` for reading (anything else fails,
    /// without blocking on a fifo).
    pub(super) fn open_read(&self, rel: &Path) -> io::Result<File> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        if FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Creates the regular file `rel`, which must not exist, for writing.
    pub(super) fn create_new(&self, rel: &Path, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        Ok(File::from(self.open_at(rel, flags, Mode::from_bits_truncate(mode))?))
    }

    /// The target of the symlink `rel`.
    pub(super) fn read_link(&self, rel: &Path) -> io::Result<OsString> {
        let (parent, name) = self.parent(rel)?;
        let target = rfs::readlinkat(&parent, name, Vec::new())?;
        Ok(OsString::from(std::ffi::OsStr::from_bytes(target.as_bytes())))
    }

    /// The names in directory `rel` (none if it is not a directory).
    pub(super) fn list(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut names = Vec::new();
        for entry in rfs::Dir::new(fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// Removes `rel`: a directory with everything in it, anything else (a
    /// symlink too) as itself. Nothing is followed.
    pub(super) fn remove(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        remove_entry(parent.as_fd(), name)
    }

    /// Makes `to` another name of the file `from` (itself, never a symlink's
    /// target), replacing what is at `to`.
    pub(super) fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        make_replacing(to_dir.as_fd(), to_name, |dir, name| {
            Ok(rfs::linkat(&from_dir, from_name, dir, name, AtFlags::empty())?)
        })
    }

    /// Makes the symlink, fifo or device `node` at `rel`, replacing what is
    /// there, and gives it the node's metadata.
    pub(super) fn make_special(&self, rel: &Path, node: &Node) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        // Made with owner bits only; the mode is set once it is in place.
        let mode = Mode::from_bits_truncate(node.mode & 0o600);
        make_replacing(parent.as_fd(), name, |dir, name| {
            match &node.kind {
                NodeKind::Symlink { target } => rfs::symlinkat(OsStr::from_bytes(target), dir, name)?,
                NodeKind::Fifo => rfs::mkfifoat(dir, name, mode)?,
                NodeKind::CharDevice { rdev } => rfs::mknodat(dir, name, FileType::CharacterDevice, mode, *rdev)?,
                NodeKind::BlockDevice { rdev } => rfs::mknodat(dir, name, FileType::BlockDevice, mode, *rdev)?,
                _ => {}
            }
            Ok(())
        })?;
        set_meta_at(parent.as_fd(), name, node)
    }

    /// Gives `rel` the owner (when root), mode (not to a symlink) and times
    /// of `node`, through its own descriptor; fails if it is not of the
    /// node's type.
    pub(super) fn set_meta(&self, rel: &Path, node: &Node) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        set_meta_at(parent.as_fd(), name, node)
    }
}

/// Looks up entries of the target from their directory's descriptor,
/// kept open for the next entry of the same directory: one resolution per
/// directory, not per file, when entries come grouped by directory.
pub(super) struct Dirs<'t> {
    target: &'t Target,
    last: Option<(PathBuf, OwnedFd)>,
}

impl<'t> Dirs<'t> {
    pub(super) fn target(&self) -> &'t Target {
        self.target
    }

    /// The status of `rel` itself (a symlink's own).
    pub(super) fn lstat(&mut self, rel: &Path) -> io::Result<Stat> {
        let (dir, name) = self.parent(rel)?;
        Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// An `O_PATH` descriptor of `rel` itself (never followed).
    pub(super) fn open_path(&mut self, rel: &Path) -> io::Result<OwnedFd> {
        let (dir, name) = self.parent(rel)?;
        rfs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(refused)
    }

    /// `rel`'s directory, kept open, and its last name.
    fn parent<'a>(&mut self, rel: &'a Path) -> io::Result<(BorrowedFd<'_>, &'a OsStr)> {
        let name = rel.file_name().ok_or_else(outside)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.last.as_ref().is_none_or(|(p, _)| p != parent) {
            self.last = None;
            let fd = self.target.open_dir(parent)?;
            self.last = Some((parent.to_path_buf(), fd));
        }
        let dir = self.last.as_ref().map(|(_, fd)| fd.as_fd()).ok_or_else(outside)?;
        Ok((dir, name))
    }
}

/// Opens `rel` by a walk from `root`, one component at a time, each
/// directory opened with `O_NOFOLLOW` (a symlink fails it); `EINVAL` for
/// a component that is not a plain name.
fn walk(root: BorrowedFd<'_>, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            _ => return Err(Errno::INVAL),
        }
    }
    let Some(last) = names.pop() else {
        return rfs::openat(root, ".", flags, mode);
    };
    let mut dir: Option<OwnedFd> = None;
    for name in names {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = Some(rfs::openat(at, name, flags, Mode::empty())?);
    }
    rfs::openat(dir.as_ref().map_or(root, |d| d.as_fd()), last, flags, mode)
}

fn outside() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "path is not below the target")
}

/// A clearer message for what a planted symlink makes a lookup fail with.
fn refused(e: Errno) -> io::Error {
    match e {
        // ELOOP: a symlink met with NO_SYMLINKS or O_NOFOLLOW; EXDEV: an
        // escape refused.
        Errno::LOOP | Errno::XDEV => {
            io::Error::new(io::ErrorKind::InvalidInput, "a symlink is in the way in the target (not followed)")
        }
        e => e.into(),
    }
}

/// A fresh temporary name for a replacement made in the same directory:
/// a random tag of this process and a count (one `getrandom` per process,
/// not per file). It is always made with `O_EXCL` (or `*at`, which fail
/// on an existing name), so a name taken by someone else fails, never
/// opens what they put there.
pub(super) fn temp_name() -> OsString {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tag = TAG.get_or_init(|| hex::encode(crate::crypto::random_bytes::<6>()));
    OsString::from(format!("{TEMP_PREFIX}{tag}-{}", COUNT.fetch_add(1, Ordering::Relaxed)))
}

/// Makes an entry named `name` in `parent` with `make`. If something is
/// there already, the entry is made under a temporary name and renamed
/// over it (a directory in the way is removed first), so nothing that was
/// there is written through: a hard link planted there keeps its content.
pub(super) fn make_replacing(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    make: impl Fn(BorrowedFd<'_>, &OsStr) -> io::Result<()>,
) -> io::Result<()> {
    match make(parent, name) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        r => return r,
    }
    let tmp = temp_name();
    make(parent, &tmp)?;
    let renamed = rename_over(parent, &tmp, name);
    // Gone once renamed, unless it was a hard link renamed over another
    // name of the same inode (which leaves both), or the rename failed.
    let _ = rfs::unlinkat(parent, &tmp, AtFlags::empty());
    renamed
}

/// Renames `tmp` to `name` in `parent`, replacing what is there (a
/// directory, with everything in it).
///
/// The two are exchanged (`RENAME_EXCHANGE`: atomic for a reader, as a
/// rename is) and the old entry, now under `tmp`, is removed. A plain
/// rename over a regular file makes ext4 write out the new file's data
/// at once (`auto_da_alloc`), which made restores that replace files
/// twice as slow; a file restored where nothing was gets no such
/// treatment either. Where exchange is not supported, a plain rename.
pub(super) fn rename_over(parent: BorrowedFd<'_>, tmp: &OsStr, name: &OsStr) -> io::Result<()> {
    match rfs::renameat_with(parent, tmp, parent, name, rfs::RenameFlags::EXCHANGE) {
        Ok(()) => {
            // The new entry is in place; what is left is the old one.
            if let Err(e) = remove_entry(parent, tmp) {
                tracing::warn!(name = %tmp.to_string_lossy(), error = %e, "cannot remove a replaced entry");
            }
            return Ok(());
        }
        // Nothing there any more (a plain rename will do), or no support.
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
        Err(e) => return Err(e.into()),
    }
    match rfs::renameat(parent, tmp, parent, name) {
        Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
            remove_entry(parent, name)?;
            Ok(rfs::renameat(parent, tmp, parent, name)?)
        }
        r => Ok(r?),
    }
}

/// Removes `name` from `parent`; a directory with all it holds, walked by
/// descriptors (a symlink in it is removed, never followed).
pub(super) fn remove_entry(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Err(Errno::ISDIR | Errno::PERM) => {}
        r => return Ok(r?),
    }
    let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(rfs::unlinkat(parent, name, AtFlags::empty())?);
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rfs::openat(parent, name, flags, Mode::empty()).map_err(refused)?;
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(&dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for n in names {
        remove_entry(dir.as_fd(), &n)?;
    }
    Ok(rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

fn timestamps(node: &Node) -> rfs::Timestamps {
    let t = rfs::Timespec { tv_sec: node.mtime, tv_nsec: node.mtime_nsec as _ };
    rfs::Timestamps { last_access: t, last_modification: t }
}

/// The owner (if `chown`), mode (if `chmod`), times and extended
/// attributes of `node`, set through the open descriptor of a regular
/// file or directory.
pub(super) fn set_fd_meta(fd: BorrowedFd<'_>, node: &Node, chown: bool, chmod: bool) -> io::Result<()> {
    if chown {
        rfs::fchown(fd, Some(rfs::Uid::from_raw(node.uid)), Some(rfs::Gid::from_raw(node.gid)))?;
    }
    if chmod {
        rfs::fchmod(fd, Mode::from_bits_truncate(node.mode & 0o7777))?;
    }
    rfs::futimens(fd, &timestamps(node))?;
    set_xattrs(fd, node)
}

/// Sets the extended attributes `node` recorded (POSIX ACLs among them)
/// on the file open as `fd` and removes the ones on it that the snapshot
/// lacks (within [`converged`]): an ACL inherited from a directory's
/// default ACL, or added since an earlier restore, does not survive. An
/// `O_PATH` descriptor, which the `f*xattr` calls refuse, is reached
/// through its magic link (exactly the inode held, a symlink's own
/// attributes for a symlink). Every attribute is tried; the first failure
/// (a filesystem without extended attributes, say) is returned, naming
/// it. Nothing is done when the snapshot did not record attributes.
fn set_xattrs(fd: BorrowedFd<'_>, node: &Node) -> io::Result<()> {
    let Some(want) = &node.xattrs else { return Ok(()) };
    let have = crate::source::xattrs_of(fd)?;
    let root = is_root();
    let mut failed = None;
    let mut fail = |what: &str, name: &std::ffi::CStr, e: Errno| {
        let e = io::Error::from(e);
        let why = format!("cannot {what} extended attribute {}: {e}", name.to_string_lossy());
        failed.get_or_insert(io::Error::new(e.kind(), why));
    };
    for x in have.iter().filter(|x| converged(&x.name, root) && !want.iter().any(|w| w.name == x.name)) {
        let Ok(name) = std::ffi::CString::new(x.name.clone()) else { continue };
        match on_fd(fd, |fd| rfs::fremovexattr(fd, &name), |p| rfs::removexattr(p, &name)) {
            Ok(()) | Err(Errno::NODATA) => {}
            Err(e) => fail("remove", &name, e),
        }
    }
    for x in want.iter().filter(|x| !have.contains(x)) {
        // The tree decoder refused names holding NUL.
        let Ok(name) = std::ffi::CString::new(x.name.clone()) else { continue };
        let flags = rfs::XattrFlags::empty();
        if let Err(e) =
            on_fd(fd, |fd| rfs::fsetxattr(fd, &name, &x.value, flags), |p| rfs::setxattr(p, &name, &x.value, flags))
        {
            fail("set", &name, e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Calls `by_fd` on `fd`, or `by_path` on its magic link when `fd` is an
/// `O_PATH` descriptor (`EBADF`).
fn on_fd<T>(
    fd: BorrowedFd<'_>,
    by_fd: impl FnOnce(BorrowedFd<'_>) -> Result<T, Errno>,
    by_path: impl FnOnce(&str) -> Result<T, Errno>,
) -> Result<T, Errno> {
    match by_fd(fd) {
        Err(Errno::BADF) => by_path(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        other => other,
    }
}

/// Whether restore makes the attribute `name` on disk what the snapshot
/// says, removing it when the snapshot lacks it: user attributes and
/// POSIX ACLs, and as root also `trusted.*` and file capabilities. Other
/// `security.*` attributes (SELinux, Smack, IMA labels) belong to the
/// host's security policy and are only set, never removed.
pub(super) fn converged(name: &[u8], root: bool) -> bool {
    name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || (root && (name.starts_with(b"trusted.") || name == b"security.capability"))
}

/// True when the file open as `fd` already has exactly the extended
/// attributes `node` recorded, as far as [`set_xattrs`] would change them
/// (always when none were recorded).
pub(super) fn xattrs_match(fd: BorrowedFd<'_>, node: &Node) -> bool {
    let Some(want) = &node.xattrs else { return true };
    let Ok(have) = crate::source::xattrs_of(fd) else { return false };
    let root = is_root();
    want.iter().all(|w| have.contains(w))
        && have.iter().filter(|h| converged(&h.name, root)).all(|h| want.iter().any(|w| w.name == h.name))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// [`Target::set_meta`] for `name` in `parent`.
pub(super) fn set_meta_at(parent: BorrowedFd<'_>, name: &OsStr, node: &Node) -> io::Result<()> {
    let root = is_root();
    let want = match &node.kind {
        NodeKind::Symlink { .. } => {
            // Never followed: the *at calls act on the link itself.
            if root {
                rfs::chownat(
                    parent,
                    name,
                    Some(rfs::Uid::from_raw(node.uid)),
                    Some(rfs::Gid::from_raw(node.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            rfs::utimensat(parent, name, &timestamps(node), AtFlags::SYMLINK_NOFOLLOW)?;
            if node.xattrs.as_ref().is_some_and(|x| !x.is_empty()) {
                // The link itself, held by an O_PATH descriptor.
                let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rfs::openat(parent, name, flags, Mode::empty()).map_err(refused)?;
                check_type(&fd, FileType::Symlink)?;
                set_xattrs(fd.as_fd(), node)?;
            }
            return Ok(());
        }
        NodeKind::Dir { .. } => FileType::Directory,
        NodeKind::File { .. } => FileType::RegularFile,
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDevice { .. } => FileType::CharacterDevice,
        NodeKind::BlockDevice { .. } => FileType::BlockDevice,
        NodeKind::Socket => return Ok(()),
    };
    // A directory or regular file is opened (never a fifo or device: that
    // could block or have effects), and set through its descriptor.
    if matches!(want, FileType::Directory | FileType::RegularFile) {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => {
                check_type(&fd, want)?;
                return set_fd_meta(fd.as_fd(), node, root, true);
            }
            // Not readable: set through an O_PATH descriptor below.
            Err(Errno::ACCESS) => {}
            Err(e) => return Err(refused(e)),
        }
    }
    let fd =
        rfs::openat(parent, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(refused)?;
    check_type(&fd, want)?;
    if root {
        rfs::chownat(
            &fd,
            "",
            Some(rfs::Uid::from_raw(node.uid)),
            Some(rfs::Gid::from_raw(node.gid)),
            AtFlags::EMPTY_PATH,
        )?;
    }
    // The magic link names exactly the inode held (no lookup by name).
    let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rfs::chmodat(rfs::CWD, magic.as_str(), Mode::from_bits_truncate(node.mode & 0o7777), AtFlags::empty())?;
    rfs::utimensat(rfs::CWD, magic.as_str(), &timestamps(node), AtFlags::empty())?;
    set_xattrs(fd.as_fd(), node)
}

fn check_type(fd: &OwnedFd, want: FileType) -> io::Result<()> {
    let got = FileType::from_raw_mode(rfs::fstat(fd)?.st_mode);
    if got == want {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "replaced by another type of entry during the restore"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target with `inside/` and a symlink `link -> <outside>`.
    fn planted() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), target.join("inside/flink")).unwrap();
        (dir, target)
    }

    fn both_resolvers(check: impl Fn(&Target)) {
        let (_dir, path) = planted();
        let mut t = Target::open(&path).unwrap();
        check(&t);
        t.openat2 = false;
        check(&t);
    }

    #[test]
    fn lookups_never_go_through_a_symlink() {
        both_resolvers(|t| {
            assert!(t.open_read(Path::new("link/f")).is_err());
            assert!(t.create_new(Path::new("link/new"), 0o600).is_err());
            assert!(t.list(Path::new("link")).is_err());
            assert!(t.open_read(Path::new("inside/flink")).is_err());
            assert!(t.create_new(Path::new("inside/flink"), 0o600).is_err());
            assert!(t.open_at(Path::new("link"), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).is_err());
            // The link itself can be looked at and removed.
            assert_eq!(FileType::from_raw_mode(t.lstat(Path::new("link")).unwrap().st_mode), FileType::Symlink);
            assert!(t.create_new(Path::new("inside/new"), 0o600).is_ok());
            t.remove(Path::new("inside/new")).unwrap();
        });
    }

    #[test]
    fn paths_that_are_not_plain_names_are_refused() {
        let (_dir, path) = planted();
        let t = Target::open(&path).unwrap();
        assert!(t.rel(&path.join("inside/../..")).is_err());
        assert!(walk(t.root().unwrap(), Path::new("inside/../../outside"), OFlags::PATH, Mode::empty()).is_err());
        assert!(t.open_read(Path::new("../outside/f")).is_err());
    }

    #[test]
    fn removing_a_tree_removes_symlinks_in_it_not_their_targets() {
        let (dir, path) = planted();
        let t = Target::open(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), path.join("inside/dlink")).unwrap();
        t.remove(Path::new("inside")).unwrap();
        t.remove(Path::new("link")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("outside/f")).unwrap(), b"outside");
        assert!(t.is_empty());
    }
}
