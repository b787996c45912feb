//! `mount`: a read-only FUSE view of one tenant's snapshots.
//!
//! Layout below the mountpoint:
//!
//! ```text
//! snapshots/<YYYY-MM-DDTHH:MM:SS>_<shortid>/…   each snapshot's tree (time in UTC)
//! latest -> snapshots/<newest that is not a safety snapshot>
//! tags/<tag>/<name> -> ../../snapshots/<name>
//! hosts/<host>/<name> -> ../../snapshots/<name>
//! ```
//!
//! Owns: the inode table, a byte-bounded cache of verified chunks, a small
//! cache of decoded trees (both quick_cache), read-ahead for sequential reads, and the catalog
//! re-sync that makes new snapshots appear. It is the only module that
//! imports `fuser`. Must not: write anything to the store.
//!
//! The FUSE callbacks are synchronous; they block on the tokio runtime for
//! store reads. A blob that cannot be found (its pack was repacked by a
//! concurrent prune) triggers one catalog re-sync and a retry; after that
//! the read fails with EIO. Nothing here panics on store data.
//!
//! **Invariant:** only bytes returned by `Repo::read_blob` (authenticated
//! and hashed to their id) are ever served.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repo;
use crate::tree::{self, Node, NodeKind, Tree};

/// How long the kernel may cache attributes of snapshot content (immutable).
const CONTENT_TTL: Duration = Duration::from_secs(3600);
/// How long the kernel may cache the virtual directories' attributes.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// Decoded trees kept in memory.
const TREE_CACHE_ENTRIES: usize = 4096;
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 4;

const ROOT: u64 = 1;
const SNAPSHOTS: u64 = 2;
const TAGS: u64 = 3;
const HOSTS: u64 = 4;
const LATEST: u64 = 5;

/// Inputs of a mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users see the filesystem (`allow_other`; permissions are
    /// then checked by the kernel against the snapshot's modes).
    pub allow_other: bool,
    /// Bytes of decrypted chunks kept in memory.
    pub cache_bytes: u64,
    /// A listing of `snapshots/` older than this re-syncs the catalog.
    pub refresh: Duration,
    /// Worker threads serving FUSE requests.
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self { allow_other: false, cache_bytes: 256 << 20, refresh: Duration::from_secs(5), threads: 4 }
    }
}

/// A mounted filesystem; [`Mounted::unmount`] (or drop) unmounts it.
pub struct Mounted {
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
}

impl Mounted {
    /// True when the filesystem was unmounted from outside (`fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (if still mounted) and waits for the request loop to end.
    /// A mountpoint still in use (an open file, a shell inside it) is
    /// detached lazily, so no mount is left behind; returns whether that
    /// was needed.
    pub fn unmount(self) -> Result<bool> {
        let mp = self.mountpoint.clone();
        if self.session.guard.is_finished() {
            return self.session.join().map(|()| false).map_err(|e| Error::io(&mp, e));
        }
        match self.session.umount_and_join() {
            Ok(()) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                detach_lazily(&mp).map_err(|why| Error::io(&mp, std::io::Error::other(format!("busy, and {why}"))))?;
                Ok(true)
            }
            Err(e) => Err(Error::io(&mp, e)),
        }
    }
}

/// `fusermount3 -u -z` (the user's way), else `umount -l` (root's).
fn detach_lazily(mp: &Path) -> std::result::Result<(), String> {
    for (cmd, args) in [("fusermount3", ["-u", "-z"]), ("fusermount", ["-u", "-z"]), ("umount", ["-l", "--"])] {
        let ok = std::process::Command::new(cmd)
            .args(args)
            .arg(mp)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok && !is_mounted(mp) {
            return Ok(());
        }
    }
    Err("a lazy unmount (fusermount3 -u -z, umount -l) failed too".into())
}

/// Checks the mountpoint: an existing directory that nothing is mounted
/// on. Returns its canonical path.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let bad = |p: &Path, why: &str| Error::invalid_input("mountpoint", p.display().to_string(), why);
    let md = std::fs::metadata(path).map_err(|_| bad(path, "does not exist"))?;
    if !md.is_dir() {
        return Err(bad(path, "not a directory"));
    }
    let abs = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    if is_mounted(&abs) {
        return Err(bad(&abs, "busy: something is mounted there"));
    }
    Ok(abs)
}

/// True if `path` (absolute, canonical) is a mountpoint in /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    text.lines().filter_map(|l| l.split(' ').nth(4)).any(|mp| unescape_mount_path(mp) == path.as_os_str().as_bytes())
}

/// Undoes the octal escapes (`\040` for a space) of /proc mount tables.
fn unescape_mount_path(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Mounts the repository's snapshots at `mountpoint` and serves requests
/// on background threads until the returned handle is unmounted.
pub fn mount(repo: Arc<Repo>, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted> {
    let mountpoint = check_mountpoint(mountpoint)?;
    let rt = repo.runtime().clone();
    let inner = Arc::new(Inner::new(repo, rt, opts)?);
    let fs = Fs { inner };
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName("strongroom".into()),
        MountOption::Subtype("strongroom".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    let mut config = fuser::Config::default();
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
        options.push(MountOption::CUSTOM("allow_other".into()));
    }
    config.mount_options = options;
    config.n_threads = Some(opts.threads.max(1));
    let session = fuser::spawn_mount(fs, &mountpoint, &config)
        .map_err(|source| Error::Mount { mountpoint: mountpoint.display().to_string(), source })?;
    Ok(Mounted { session, mountpoint })
}

// ---------------------------------------------------------------------------
// The inode table.

#[derive(Debug, Clone)]
enum Kind {
    Root,
    Snapshots,
    Tags,
    Hosts,
    Tag(String),
    Host(String),
    /// `latest`: its target is computed from the current snapshot list.
    Latest,
    /// A symlink with a fixed target (`tags/<t>/<name>`).
    Alias(Vec<u8>),
    /// A snapshot's root directory.
    SnapRoot {
        tree: BlobId,
        time_ns: i64,
    },
    /// An entry of a snapshot's tree.
    Node(Arc<Node>),
}

struct Inode {
    kind: Kind,
    parent: u64,
    key: Key,
    /// Lookups the kernel holds (`forget` gives them back); at 0 the
    /// inode is dropped from the table.
    lookups: u64,
}

/// The `d_ino` of a listed entry that was never looked up (as libfuse's
/// `FUSE_UNKNOWN_INO`); `stat` gives the real inode number.
const UNKNOWN_INO: u64 = 0xffff_ffff;

#[derive(Hash, PartialEq, Eq, Clone)]
enum Key {
    Root,
    Child(u64, Vec<u8>),
    /// Files with several links in one snapshot share one inode.
    HardLink(SnapshotId, u64, u64),
    Snapshot(SnapshotId),
}

#[derive(Debug, Clone)]
struct SnapEntry {
    name: String,
    id: SnapshotId,
    tree: BlobId,
    time_ns: i64,
    tags: Vec<String>,
    host: String,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    by_key: HashMap<Key, u64>,
    /// Snapshot of each `SnapRoot` and `Node` inode, for hard-link keys.
    snap_of: HashMap<u64, SnapshotId>,
    snaps: Vec<SnapEntry>,
    listed_at: Option<Instant>,
}

impl State {
    fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    fn intern(&mut self, key: Key, parent: u64, kind: Kind) -> u64 {
        if let Some(&ino) = self.by_key.get(&key) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode { kind, parent, key: key.clone(), lookups: 0 });
        self.by_key.insert(key, ino);
        ino
    }

    /// Counts a lookup the kernel will hold.
    fn looked_up(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.lookups += 1;
        }
    }

    /// Gives back `n` lookups; drops the inode when none are left (the
    /// fixed top-level inodes stay).
    fn forget(&mut self, ino: u64, n: u64) {
        if ino <= LATEST {
            return;
        }
        let Some(i) = self.inodes.get_mut(&ino) else { return };
        i.lookups = i.lookups.saturating_sub(n);
        if i.lookups == 0 {
            if let Some(i) = self.inodes.remove(&ino) {
                self.by_key.remove(&i.key);
            }
            self.snap_of.remove(&ino);
        }
    }
}

// ---------------------------------------------------------------------------
// The caches: verified chunks bounded by their bytes, decoded trees by count.

/// A cached chunk weighs its bytes.
#[derive(Clone)]
struct ChunkWeight;

impl quick_cache::Weighter<BlobId, Arc<Vec<u8>>> for ChunkWeight {
    fn weight(&self, _: &BlobId, chunk: &Arc<Vec<u8>>) -> u64 {
        chunk.len() as u64
    }
}

/// Chunks a cache of `bytes` holds, at the default average chunk size
/// (the cache sizes its tables by it; the bound is the bytes).
fn chunks_in(bytes: u64) -> usize {
    usize::try_from(bytes / (128 * 1024)).unwrap_or(usize::MAX).max(16)
}

// ---------------------------------------------------------------------------
// Open files.

struct OpenFile {
    content: Vec<BlobId>,
    /// End offset of each chunk in the file (cumulative sizes).
    ends: Vec<u64>,
    /// Where the last read ended, to detect sequential reading.
    last_end: AtomicU64,
}

impl OpenFile {
    /// Index of the chunk holding `offset` (binary search over the ends).
    fn chunk_at(&self, offset: u64) -> usize {
        self.ends.partition_point(|&e| e <= offset)
    }

    fn start_of(&self, i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// The filesystem.

struct Inner {
    repo: Arc<Repo>,
    rt: tokio::runtime::Handle,
    opts: MountOptions,
    state: Mutex<State>,
    trees: quick_cache::sync::Cache<BlobId, Arc<Tree>>,
    chunks: quick_cache::sync::Cache<BlobId, Arc<Vec<u8>>, ChunkWeight>,
    /// Chunk reads in flight (read-ahead or a reader); a second reader of
    /// the same chunk waits for the first instead of fetching it again.
    inflight: Mutex<HashMap<BlobId, ChunkFuture>>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Listings taken at `opendir`, so that a large directory is listed
    /// once per `readdir` stream, not once per reply buffer.
    listings: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    /// Serializes catalog re-syncs.
    sync_lock: tokio::sync::Mutex<()>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

struct Fs {
    inner: Arc<Inner>,
}

type ChunkFuture =
    futures::future::Shared<futures::future::BoxFuture<'static, std::result::Result<Arc<Vec<u8>>, Arc<Error>>>>;

/// One `readdir` entry: name, inode, type.
type DirEntry = (Vec<u8>, u64, FileType);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a callback panicked; the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a file-system request failed; [`errno`] maps each to what the
/// kernel is told.
#[derive(Debug, thiserror::Error)]
enum FsError {
    /// A directory request on something else.
    #[error("not a directory")]
    NotADirectory,
    /// `open` of something other than a regular file.
    #[error("not a regular file")]
    NotAFile,
    /// An inode the table no longer holds.
    #[error("stale inode")]
    StaleInode,
    /// A chunk read (shared by every request waiting for that chunk)
    /// failed.
    #[error("blob {id}: {source}")]
    Chunk {
        /// Short blob id.
        id: String,
        /// Cause.
        source: Arc<Error>,
    },
    /// Reading the repository failed.
    #[error(transparent)]
    Repo(#[from] Error),
}

fn errno(e: &FsError) -> Errno {
    match e {
        FsError::NotADirectory => Errno::ENOTDIR,
        FsError::NotAFile => Errno::EISDIR,
        FsError::StaleInode => Errno::ESTALE,
        FsError::Repo(Error::PathNotFound { .. }) => Errno::ENOENT,
        FsError::Chunk { .. } | FsError::Repo(_) => Errno::EIO,
    }
}

/// True for errors a catalog re-sync may cure: the blob moved to another
/// pack (prune repacked it) or is indexed under a delta we have not read.
fn moved(e: &Error) -> bool {
    matches!(e, Error::BlobNotFound { .. } | Error::Store(crate::store::Error::NotFound { .. }))
}

/// The inode key of a tree node below directory `parent`: files with
/// several links in one snapshot share one inode.
fn node_key(parent: u64, snap: Option<SnapshotId>, node: &Node) -> Key {
    match (&node.kind, snap) {
        (NodeKind::File { .. }, Some(s)) if node.links > 1 && node.inode != 0 => {
            Key::HardLink(s, node.device, node.inode)
        }
        _ => Key::Child(parent, node.name.clone()),
    }
}

/// The directory name of a snapshot: `YYYY-MM-DDTHH:MM:SS_<shortid>`, UTC.
pub fn snapshot_dir_name(time_ns: i64, id: &SnapshotId) -> String {
    let time = jiff::Timestamp::from_nanosecond(time_ns as i128)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_else(|_| time_ns.to_string());
    format!("{time}_{}", id.short())
}

fn system_time(sec: i64, nsec: u32) -> SystemTime {
    let nsec = nsec.min(999_999_999);
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::Latest | Kind::Alias(_) => FileType::Symlink,
        Kind::Node(n) => match n.kind {
            NodeKind::File { .. } => FileType::RegularFile,
            NodeKind::Dir { .. } => FileType::Directory,
            NodeKind::Symlink { .. } => FileType::Symlink,
            NodeKind::CharDevice { .. } => FileType::CharDevice,
            NodeKind::BlockDevice { .. } => FileType::BlockDevice,
            NodeKind::Fifo => FileType::NamedPipe,
            NodeKind::Socket => FileType::Socket,
        },
        _ => FileType::Directory,
    }
}

impl Inner {
    fn new(repo: Arc<Repo>, rt: tokio::runtime::Handle, opts: &MountOptions) -> Result<Self> {
        let mut state = State {
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            by_key: HashMap::new(),
            snap_of: HashMap::new(),
            snaps: Vec::new(),
            listed_at: None,
        };
        state.inodes.insert(ROOT, Inode { kind: Kind::Root, parent: ROOT, key: Key::Root, lookups: 1 });
        for (ino, name, kind) in [
            (SNAPSHOTS, "snapshots", Kind::Snapshots),
            (TAGS, "tags", Kind::Tags),
            (HOSTS, "hosts", Kind::Hosts),
            (LATEST, "latest", Kind::Latest),
        ] {
            let got = state.intern(Key::Child(ROOT, name.as_bytes().to_vec()), ROOT, kind);
            debug_assert_eq!(got, ino);
        }
        let inner = Self {
            repo,
            rt,
            opts: opts.clone(),
            state: Mutex::new(state),
            trees: quick_cache::sync::Cache::new(TREE_CACHE_ENTRIES),
            chunks: quick_cache::sync::Cache::with_weighter(chunks_in(opts.cache_bytes), opts.cache_bytes, ChunkWeight),
            inflight: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            sync_lock: tokio::sync::Mutex::new(()),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mounted_at: SystemTime::now(),
        };
        inner.load_snapshots()?;
        Ok(inner)
    }

    /// Reads the catalog's snapshot list into the state.
    fn load_snapshots(&self) -> Result<()> {
        let mut snaps: Vec<SnapEntry> = self
            .repo
            .snapshots()?
            .into_iter()
            .map(|s| SnapEntry {
                name: snapshot_dir_name(s.time_ns, &s.id),
                id: s.id,
                tree: s.record.tree,
                time_ns: s.time_ns,
                tags: s.record.tags.clone(),
                host: s.record.hostname.clone(),
            })
            .collect();
        snaps.sort_by(|a, b| (a.time_ns, &a.name).cmp(&(b.time_ns, &b.name)));
        let mut st = lock(&self.state);
        st.snaps = snaps;
        st.listed_at = Some(Instant::now());
        Ok(())
    }

    /// Re-syncs the catalog with the store when the snapshot list is older
    /// than the refresh interval. Failures are logged; the old list stays.
    fn refresh(&self) {
        let stale = lock(&self.state).listed_at.is_none_or(|t| t.elapsed() >= self.opts.refresh);
        if !stale {
            return;
        }
        let synced = self.rt.block_on(async {
            let _g = self.sync_lock.lock().await;
            self.repo.sync().await
        });
        match synced.and_then(|_| self.load_snapshots()) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("mount: cannot refresh the snapshot list: {e}");
                // Try again at the next listing, not at every request.
                lock(&self.state).listed_at = Some(Instant::now());
            }
        }
    }

    /// Reads a blob, re-syncing the catalog once if it moved.
    async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        match self.repo.read_blob(id).await {
            Err(e) if moved(&e) => {
                tracing::info!("mount: blob {} moved; re-syncing the catalog", id.short());
                {
                    let _g = self.sync_lock.lock().await;
                    self.repo.sync().await?;
                }
                self.repo.read_blob(id).await
            }
            other => other,
        }
    }

    fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.get(id) {
            return Ok(t);
        }
        let bytes = self.rt.block_on(self.read_blob(id))?;
        let t = Arc::new(crate::codec::tree::decode(&bytes)?);
        self.trees.insert(*id, t.clone());
        Ok(t)
    }

    fn chunk(self: &Arc<Self>, id: &BlobId) -> Result<Arc<Vec<u8>>, FsError> {
        if let Some(c) = self.chunks.get(id) {
            return Ok(c);
        }
        let fetch = self.fetch(id);
        self.rt.block_on(fetch).map_err(|source| FsError::Chunk { id: id.short(), source })
    }

    /// The read of chunk `id`, started on the runtime unless one is in
    /// flight already; the chunk goes into the cache when it arrives.
    fn fetch(self: &Arc<Self>, id: &BlobId) -> ChunkFuture {
        use futures::FutureExt;
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(id) {
            return f.clone();
        }
        let me = self.clone();
        let id = *id;
        // The task removes its entry, which it can do only after we insert
        // it below: we hold the map's lock until then.
        let task = self.rt.spawn(async move {
            let r = me.read_blob(&id).await.map(Arc::new).map_err(Arc::new);
            if let Ok(d) = &r {
                me.chunks.insert(id, d.clone());
            }
            lock(&me.inflight).remove(&id);
            r
        });
        let fut = async move {
            task.await.unwrap_or_else(|e| Err(Arc::new(Error::Internal(format!("chunk read stopped: {e}")))))
        }
        .boxed()
        .shared();
        inflight.insert(id, fut.clone());
        fut
    }

    /// Starts fetching `ids` into the chunk cache in the background.
    fn prefetch(self: &Arc<Self>, ids: &[BlobId]) {
        for id in ids {
            if !self.chunks.contains_key(id) {
                drop(self.fetch(id));
            }
        }
    }

    /// The children of a directory inode: (name, inode, type).
    fn children(&self, ino: u64) -> Result<Vec<DirEntry>, FsError> {
        let kind = match lock(&self.state).get(ino) {
            Some(i) => i.kind.clone(),
            None => return Err(FsError::StaleInode),
        };
        match kind {
            Kind::Root => Ok(["snapshots", "tags", "hosts", "latest"]
                .iter()
                .zip([SNAPSHOTS, TAGS, HOSTS, LATEST])
                .map(|(n, i)| {
                    let t = if i == LATEST { FileType::Symlink } else { FileType::Directory };
                    (n.as_bytes().to_vec(), i, t)
                })
                .collect()),
            Kind::Snapshots => {
                self.refresh();
                let mut st = lock(&self.state);
                let snaps = st.snaps.clone();
                Ok(snaps
                    .into_iter()
                    .map(|s| {
                        let ino = st.intern(
                            Key::Snapshot(s.id),
                            SNAPSHOTS,
                            Kind::SnapRoot { tree: s.tree, time_ns: s.time_ns },
                        );
                        st.snap_of.insert(ino, s.id);
                        (s.name.into_bytes(), ino, FileType::Directory)
                    })
                    .collect())
            }
            Kind::Tags | Kind::Hosts => {
                self.refresh();
                let mut st = lock(&self.state);
                let is_tags = matches!(kind, Kind::Tags);
                let names: BTreeSet<String> = if is_tags {
                    st.snaps.iter().flat_map(|s| s.tags.iter().cloned()).collect()
                } else {
                    st.snaps.iter().map(|s| s.host.clone()).collect()
                };
                Ok(names
                    .into_iter()
                    .filter(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..")
                    .map(|n| {
                        let k = if is_tags { Kind::Tag(n.clone()) } else { Kind::Host(n.clone()) };
                        let ino = st.intern(Key::Child(ino, n.as_bytes().to_vec()), ino, k);
                        (n.into_bytes(), ino, FileType::Directory)
                    })
                    .collect())
            }
            Kind::Tag(ref name) | Kind::Host(ref name) => {
                self.refresh();
                let mut st = lock(&self.state);
                let snaps: Vec<SnapEntry> = st
                    .snaps
                    .iter()
                    .filter(|s| match &kind {
                        Kind::Tag(_) => s.tags.contains(name),
                        _ => &s.host == name,
                    })
                    .cloned()
                    .collect();
                Ok(snaps
                    .into_iter()
                    .map(|s| {
                        let target = format!("../../snapshots/{}", s.name).into_bytes();
                        let i = st.intern(Key::Child(ino, s.name.as_bytes().to_vec()), ino, Kind::Alias(target));
                        (s.name.into_bytes(), i, FileType::Symlink)
                    })
                    .collect())
            }
            Kind::SnapRoot { tree, .. } => self.tree_children(ino, &tree),
            Kind::Node(n) => match &n.kind {
                NodeKind::Dir { subtree } => self.tree_children(ino, subtree),
                _ => Err(FsError::NotADirectory),
            },
            Kind::Latest | Kind::Alias(_) => Err(FsError::NotADirectory),
        }
    }

    /// A tree directory's entries. Listing does not add inodes (the kernel
    /// holds none for listed entries, so they could never be forgotten):
    /// an entry not looked up yet is listed with [`UNKNOWN_INO`].
    fn tree_children(&self, ino: u64, tree_id: &BlobId) -> Result<Vec<DirEntry>, FsError> {
        let t = self.tree(tree_id)?;
        let st = lock(&self.state);
        let snap = st.snap_of.get(&ino).copied();
        let mut out = Vec::with_capacity(t.len());
        for node in t.iter() {
            let key = node_key(ino, snap, node);
            let ft = file_type(&Kind::Node(Arc::new(node.clone())));
            let child = st.by_key.get(&key).copied().unwrap_or(UNKNOWN_INO);
            out.push((node.name.clone(), child, ft));
        }
        Ok(out)
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<u64>, FsError> {
        let kind = match lock(&self.state).get(parent) {
            Some(i) => i.kind.clone(),
            None => return Ok(None),
        };
        // Trees are sorted: find the node without listing every sibling.
        let tree_id = match &kind {
            Kind::SnapRoot { tree, .. } => Some(*tree),
            Kind::Node(n) => match n.kind {
                NodeKind::Dir { subtree } => Some(subtree),
                _ => return Ok(None),
            },
            _ => None,
        };
        if let Some(tid) = tree_id {
            let t = self.tree(&tid)?;
            let Some(node) = tree::find(&t, name) else { return Ok(None) };
            let mut st = lock(&self.state);
            let snap = st.snap_of.get(&parent).copied();
            let child = st.intern(node_key(parent, snap, node), parent, Kind::Node(Arc::new(node.clone())));
            if let Some(s) = snap {
                st.snap_of.insert(child, s);
            }
            st.looked_up(child);
            return Ok(Some(child));
        }
        let found = self.children(parent)?.into_iter().find(|(n, _, _)| n == name).map(|(_, i, _)| i);
        if let Some(child) = found {
            lock(&self.state).looked_up(child);
        }
        Ok(found)
    }

    /// Where `latest` points; `EIO` while a snapshot record is damaged
    /// (it may be the newest), `ENOENT` when there is no snapshot.
    fn latest_target(&self) -> std::result::Result<Vec<u8>, Errno> {
        self.refresh();
        match self.repo.damaged_snapshot_records() {
            Ok(d) if d.is_empty() => {}
            Ok(d) => {
                tracing::warn!(object = %d[0].object, "mount: latest unresolved: the snapshot record is damaged");
                return Err(Errno::EIO);
            }
            Err(e) => {
                tracing::warn!("mount: latest unresolved: {e}");
                return Err(Errno::EIO);
            }
        }
        // A safety snapshot (the target of a restore, saved before it was
        // overwritten) is never `latest`, as on the command line.
        let st = lock(&self.state);
        st.snaps
            .iter()
            .rev()
            .find(|s| !s.tags.iter().any(|t| t == crate::group::SAFETY_TAG))
            .map(|s| format!("snapshots/{}", s.name).into_bytes())
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Option<(FileAttr, Duration)> {
        let st = lock(&self.state);
        let inode = st.get(ino)?;
        let newest = st.snaps.last().map(|s| system_time(s.time_ns.div_euclid(1_000_000_000), 0));
        let mut a = FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: newest.unwrap_or(self.mounted_at),
            ctime: newest.unwrap_or(self.mounted_at),
            crtime: self.mounted_at,
            kind: file_type(&inode.kind),
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        let mut ttl = VIRTUAL_TTL;
        match &inode.kind {
            Kind::Latest => {
                a.perm = 0o777;
                a.nlink = 1;
                a.size = st.snaps.last().map(|s| "snapshots/".len() + s.name.len()).unwrap_or(0) as u64;
            }
            Kind::Alias(t) => {
                a.perm = 0o777;
                a.nlink = 1;
                a.size = t.len() as u64;
                ttl = CONTENT_TTL;
            }
            Kind::SnapRoot { time_ns, .. } => {
                let t = system_time(time_ns.div_euclid(1_000_000_000), time_ns.rem_euclid(1_000_000_000) as u32);
                a.mtime = t;
                a.ctime = t;
                a.atime = t;
                ttl = CONTENT_TTL;
            }
            Kind::Node(n) => {
                a.perm = (n.mode & 0o7777) as u16;
                a.uid = n.uid;
                a.gid = n.gid;
                a.mtime = system_time(n.mtime, n.mtime_nsec);
                a.atime = a.mtime;
                a.ctime = system_time(n.ctime, n.ctime_nsec);
                a.nlink = n.links.clamp(1, u32::MAX as u64) as u32;
                a.size = match &n.kind {
                    NodeKind::File { .. } => n.size,
                    NodeKind::Symlink { target } => target.len() as u64,
                    _ => 0,
                };
                if let NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } = n.kind {
                    a.rdev = rdev as u32;
                }
                a.blocks = a.size.div_ceil(512);
                ttl = CONTENT_TTL;
            }
            _ => {}
        }
        Some((a, ttl))
    }

    fn open(&self, ino: u64) -> Result<Arc<OpenFile>, FsError> {
        let node = match lock(&self.state).get(ino).map(|i| i.kind.clone()) {
            Some(Kind::Node(n)) => n,
            _ => return Err(FsError::NotAFile),
        };
        let NodeKind::File { content } = &node.kind else {
            return Err(FsError::NotAFile);
        };
        let ends = match self.chunk_ends(content) {
            Err(e) if moved(&e) => {
                self.rt.block_on(async {
                    let _g = self.sync_lock.lock().await;
                    self.repo.sync().await
                })?;
                self.chunk_ends(content)?
            }
            other => other?,
        };
        Ok(Arc::new(OpenFile { content: content.clone(), ends, last_end: AtomicU64::new(u64::MAX) }))
    }

    fn chunk_ends(&self, content: &[BlobId]) -> Result<Vec<u64>> {
        let mut end = 0u64;
        let mut ends = Vec::with_capacity(content.len());
        for id in content {
            end += self.repo.locate(id)?.blob.raw_len as u64;
            ends.push(end);
        }
        Ok(ends)
    }

    fn read(self: &Arc<Self>, f: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let end = offset.saturating_add(size as u64).min(f.len());
        if offset >= end {
            return Ok(Vec::new());
        }
        let sequential = f.last_end.swap(end, Ordering::Relaxed) == offset;
        let first = f.chunk_at(offset);
        let mut i = first;
        let mut out = Vec::with_capacity((end - offset) as usize);
        while i < f.content.len() && f.start_of(i) < end {
            if sequential && i == first {
                let ahead = &f.content[(i + 1).min(f.content.len())..(i + 1 + READ_AHEAD_CHUNKS).min(f.content.len())];
                self.prefetch(ahead);
            }
            let data = self.chunk(&f.content[i])?;
            let start = f.start_of(i);
            if data.len() as u64 != f.ends[i] - start {
                return Err(Error::Damaged {
                    object: format!("blob {}", f.content[i]),
                    why: "size differs from the index".into(),
                }
                .into());
            }
            let from = offset.max(start) - start;
            let to = end.min(f.ends[i]) - start;
            out.extend_from_slice(&data[from as usize..to as usize]);
            i += 1;
        }
        Ok(out)
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.inner.lookup(parent.0, name.as_bytes()) {
            Ok(Some(ino)) => match self.inner.attr(ino) {
                Some((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => {
                tracing::warn!("mount: lookup of {:?}: {e}", name);
                reply.error(errno(&e))
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.inner.state).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.attr(ino.0) {
            Some((a, ttl)) => reply.attr(&ttl, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let kind = lock(&self.inner.state).get(ino.0).map(|i| i.kind.clone());
        match kind {
            Some(Kind::Latest) => match self.inner.latest_target() {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(e),
            },
            Some(Kind::Alias(t)) => reply.data(&t),
            Some(Kind::Node(n)) => match &n.kind {
                NodeKind::Symlink { target } => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.inner.open(ino.0) {
            Ok(f) => {
                let fh = self.inner.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.inner.files).insert(fh, f);
                // Snapshot content never changes: the page cache may keep it.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => {
                tracing::warn!("mount: open of inode {}: {e}", ino.0);
                reply.error(errno(&e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = lock(&self.inner.files).get(&fh.0).cloned();
        let Some(f) = f else { return reply.error(Errno::EBADF) };
        match self.inner.read(&f, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => {
                tracing::warn!("mount: read of inode {} at {offset}: {e}", ino.0);
                reply.error(Errno::EIO)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        lock(&self.inner.files).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let children = match self.inner.children(ino.0) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("mount: listing inode {}: {e}", ino.0);
                return reply.error(errno(&e));
            }
        };
        let parent = lock(&self.inner.state).get(ino.0).map(|i| i.parent).unwrap_or(ROOT);
        let mut entries: Vec<DirEntry> =
            vec![(b".".to_vec(), ino.0, FileType::Directory), (b"..".to_vec(), parent, FileType::Directory)];
        entries.extend(children);
        let fh = self.inner.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.listings).insert(fh, Arc::new(entries));
        reply.opened(FileHandle(fh), FopenFlags::empty())
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(entries) = lock(&self.inner.listings).get(&fh.0).cloned() else {
            tracing::warn!("mount: readdir of inode {} without opendir", ino.0);
            return reply.error(Errno::EBADF);
        };
        for (i, (name, child, ft)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), i as u64 + 1, *ft, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: fuser::ReplyEmpty) {
        lock(&self.inner.listings).remove(&fh.0);
        reply.ok();
    }
}
