//! A local repository's own writes and large reads: what `object_store`'s
//! `LocalFileSystem` cannot do for it. Everything else (small reads,
//! lists, deletes) goes through `LocalFileSystem` unchanged, from
//! [`crate::store`].
//!
//! Three things keep every put of a local store here rather than in
//! `LocalFileSystem::put_opts`, whose `with_fsync` would give the durable
//! order below on its own:
//!
//! **Private.** Every file a put creates is mode 0600 and every directory
//! 0700, whatever the umask (see [`crate::private`]): key slots are
//! password-wrapped keys that another local user could guess at offline.
//! `LocalFileSystem` creates its staging files and directories with the
//! default modes, and a `chmod` after its put would leave a window (and a
//! mode a power cut can undo).
//!
//! **Volatile puts.** `with_fsync` is set once per store; here each put
//! says whether it must survive a power cut. One that need not (a lock:
//! one lost with the machine belonged to a process that died with it)
//! skips the syncs.
//!
//! **Direct I/O.** A backup writes every new byte once and does not read
//! it back soon. Through the page cache, each pack costs a copy into
//! freshly allocated cache pages (a sizeable part of a first backup's CPU:
//! docs/BENCHMARKS.md, Why the defaults) and evicts the user's
//! cached files. With `O_DIRECT` the disk reads the bytes straight from
//! the pack's block-aligned buffer (or a reused aligned bounce buffer),
//! and the cache keeps what it had (borg drops written segments from the
//! cache with `posix_fadvise` for the same reason). Large range reads (a
//! restore's packs) are direct too, into pooled page-aligned buffers: no
//! copy out of the page cache, no fresh pages. Where the file system
//! refuses `O_DIRECT`, writes and reads go through the page cache.
//!
//! **Durable puts.** Every durable put writes a staging file `NAME#DIGITS`
//! (which listings skip), syncs it (`fdatasync`), makes it appear whole
//! under its name (a hard link for `PutMode::Create`, which fails if the
//! name exists; a rename for `PutMode::Overwrite`) and syncs the directory
//! (and those it had to create): when a put returns, its object survives
//! a power cut, so the order of puts is the order objects become durable
//! in (packs before the index delta that lists them, that before the
//! snapshot). This is the order `LocalFileSystem::with_fsync` keeps too,
//! and restic's local backend; tests/it/durability.rs checks it.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::PutMode;

/// Objects at least this large are written and read directly.
pub const DIRECT_MIN_BYTES: usize = 1024 * 1024;
/// Alignment of direct I/O buffers, offsets and lengths (the largest
/// logical block size in common use).
const ALIGN: usize = 4096;
const STORE: &str = "LocalFileSystem";

/// A local repository: its `LocalFileSystem` (for everything this module
/// does not do) and the state of its direct I/O.
#[derive(Debug)]
pub struct Local {
    fs: LocalFileSystem,
    root: PathBuf,
    /// Cleared when the file system refused an `O_DIRECT` write once.
    direct_writes: AtomicBool,
    /// Cleared when the file system refused an `O_DIRECT` read once.
    direct_reads: AtomicBool,
    read_buffers: ReadBuffers,
}

impl Local {
    /// The repository in directory `root` (which exists); direct writes
    /// and reads are each tried until the file system refuses one, unless
    /// `STRONGROOM_DIRECT_IO=0` turns them off.
    pub fn open(root: PathBuf) -> object_store::Result<Self> {
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        let on = std::env::var("STRONGROOM_DIRECT_IO").map_or(true, |v| v != "0");
        Ok(Self {
            fs,
            root,
            direct_writes: AtomicBool::new(on),
            direct_reads: AtomicBool::new(on),
            read_buffers: ReadBuffers::default(),
        })
    }

    /// The `LocalFileSystem` for reads, lists and deletes.
    pub fn object_store(&self) -> LocalFileSystem {
        self.fs.clone()
    }

    /// The repository's directory, as given to [`Local::open`].
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Writes the object `key` (see the module docs): with `O_DIRECT` when
    /// it is large, synced unless `durable` is false, private always.
    /// `PutMode::Create` fails with `AlreadyExists` if the object is there.
    pub async fn put(&self, key: &Path, bytes: Bytes, mode: PutMode, durable: bool) -> object_store::Result<()> {
        let create = match mode {
            PutMode::Create => true,
            PutMode::Overwrite => false,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put with PutMode::Update".into(),
                    implementer: STORE.into(),
                })
            }
        };
        let path = self.fs.path_to_filesystem(key)?;
        let direct = bytes.len() >= DIRECT_MIN_BYTES && self.direct_writes.load(Ordering::Relaxed);
        let r = tokio::task::spawn_blocking(move || match put_file(&path, &bytes, create, direct, durable)? {
            Direct::Unsupported => {
                tracing::debug!("the repository's file system refuses O_DIRECT; writing through the page cache");
                put_file(&path, &bytes, create, false, durable).map(|d| (d, true))
            }
            done => Ok((done, false)),
        })
        .await
        .map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })?;
        let (done, refused) = r?;
        if refused {
            self.direct_writes.store(false, Ordering::Relaxed);
        }
        match done {
            Direct::Done => Ok(()),
            Direct::Unsupported => Err(generic(std::io::Error::other("O_DIRECT refused on a buffered write"))),
        }
    }

    /// Reads `range` of the object `key` with `O_DIRECT` when it is large
    /// and the file system allows it. None: read it through
    /// `LocalFileSystem` (a small range, no direct I/O here, or any error,
    /// a missing object among them, which that path then reports as it
    /// always did).
    pub async fn get_range(&self, key: &Path, range: Range<u64>) -> Option<Bytes> {
        let large = range.end.saturating_sub(range.start) >= DIRECT_MIN_BYTES as u64;
        if !large || !self.direct_reads.load(Ordering::Relaxed) {
            return None;
        }
        let path = self.fs.path_to_filesystem(key).ok()?;
        let pool = self.read_buffers.clone();
        match tokio::task::spawn_blocking(move || get_direct(&path, range, &pool)).await {
            Ok(Ok(Some(bytes))) => Some(bytes),
            Ok(Ok(None)) => {
                tracing::debug!("the repository's file system refuses O_DIRECT reads; reading through the page cache");
                self.direct_reads.store(false, Ordering::Relaxed);
                None
            }
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

thread_local! {
    /// A page-aligned window into this over-allocated buffer is reused for
    /// every direct write of the thread (tokio's blocking pool keeps its
    /// threads), so writes touch no fresh memory.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a put did.
enum Direct {
    Done,
    /// The file system does not do `O_DIRECT`: use the ordinary path.
    Unsupported,
}

fn generic(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: Box::new(e) }
}

/// Writes `bytes` at offset 0 of a file opened with `O_DIRECT`, in whole
/// blocks (the caller cuts the file back to their length). Bytes that
/// start on a block boundary (a finished pack) go to the disk straight
/// from their memory, all but the last partial block; the rest is copied
/// through the thread's bounce buffer.
fn write_aligned(file: &std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    let cut = if bytes.as_ptr().align_offset(ALIGN) == 0 { bytes.len() / ALIGN * ALIGN } else { 0 };
    let (direct, rest) = bytes.split_at(cut);
    if !direct.is_empty() {
        file.write_all_at(direct, 0)?;
    }
    if rest.is_empty() {
        return Ok(());
    }
    let padded = rest.len().div_ceil(ALIGN) * ALIGN;
    BOUNCE.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < padded + ALIGN {
            *buf = vec![0; padded + ALIGN];
        }
        let start = buf.as_ptr().align_offset(ALIGN);
        let window = &mut buf[start..start + padded];
        window[..rest.len()].copy_from_slice(rest);
        window[rest.len()..].fill(0);
        let r = file.write_all_at(window, direct.len() as u64);
        // A large bounce buffer (an unaligned large object) is not kept.
        if buf.len() > 2 * DIRECT_MIN_BYTES {
            *buf = Vec::new();
        }
        r
    })
}

/// Page-aligned read buffers given back by the `Bytes` made of them, for
/// the next large read: a restore reads hundreds of packs of 16 MiB, and
/// fresh memory for each costs a page fault and a zeroed page per 4 KiB.
/// Each store has its own, freed with it.
type ReadBuffers = Arc<Mutex<Vec<Vec<u8>>>>;
/// Buffers kept in a [`ReadBuffers`] at most (a restore holds about eight
/// packs in memory).
const KEPT_READ_BUFFERS: usize = 8;

/// A read into a pooled buffer: the bytes are `buf[start..start + len]`.
struct PooledRead {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// Where the buffer goes back to, while the store lives.
    pool: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledRead {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(self.start..self.start + self.len).unwrap_or_default()
    }
}

impl Drop for PooledRead {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else { return };
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut kept) = pool.lock() {
            if kept.len() < KEPT_READ_BUFFERS {
                kept.push(buf);
            }
        };
    }
}

/// A buffer of at least `len + ALIGN` bytes from the pool (the smallest
/// that fits) or new.
fn read_buffer(pool: &ReadBuffers, len: usize) -> Vec<u8> {
    let need = len + ALIGN;
    let taken = pool.lock().ok().and_then(|mut kept| {
        let best = (0..kept.len()).filter(|&i| kept[i].len() >= need).min_by_key(|&i| kept[i].len())?;
        Some(kept.swap_remove(best))
    });
    taken.unwrap_or_else(|| vec![0; need])
}

/// Reads `range` of the file at `path` with `O_DIRECT`, in whole blocks,
/// into a pooled buffer: the disk writes straight into it, where a read
/// through the page cache costs a copy of every byte (a visible part
/// of a restore's CPU). `Ok(None)`: the file system does not do `O_DIRECT`.
/// A range past the end of the file is an error (the caller then asks
/// `LocalFileSystem`, so it reads as it always did).
fn get_direct(path: &std::path::Path, range: Range<u64>, pool: &ReadBuffers) -> std::io::Result<Option<Bytes>> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let first = range.start / ALIGN as u64 * ALIGN as u64;
    let last = range.end.div_ceil(ALIGN as u64) * ALIGN as u64;
    let span = usize::try_from(last - first).map_err(|_| std::io::Error::other("range too large"))?;
    let mut buf = read_buffer(pool, span);
    let at = buf.as_ptr().align_offset(ALIGN);
    let window = &mut buf[at..at + span];
    let mut got = 0usize;
    let wanted = (range.end - first) as usize;
    while got < wanted {
        match file.read_at(&mut window[got..], first + got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                // Only the end of the file cuts a read off the block grid
                // (and a read from there would be refused).
                if n % ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    if got < wanted {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("range {}..{} past the end of the object ({} bytes)", range.start, range.end, first + got as u64),
        ));
    }
    let start = at + (range.start - first) as usize;
    let len = (range.end - range.start) as usize;
    Ok(Some(Bytes::from_owner(PooledRead { buf, start, len, pool: Arc::downgrade(pool) })))
}

/// Writes `bytes` to a private staging file beside `path` (with
/// `O_DIRECT` when `direct`), makes it durable, then links (`create`) or
/// renames it into place and makes that durable (see the module docs).
/// Without `durable`, the same steps without the syncs.
fn put_file(
    path: &std::path::Path,
    bytes: &[u8],
    create: bool,
    direct: bool,
    durable: bool,
) -> object_store::Result<Direct> {
    let mut created_dirs = Vec::new();
    let mut made_parent = false;
    let (file, staging) = loop {
        let mut s = path.as_os_str().to_owned();
        s.push(format!("#{}", rand::random::<u32>()));
        let staging = PathBuf::from(s);
        // Private whatever the umask (see [`crate::private`]); the link or
        // rename below keeps the mode.
        let mut open = crate::private::file_options();
        open.write(true).create_new(true);
        if direct {
            open.custom_flags(libc::O_DIRECT);
        }
        match open.open(&staging) {
            Ok(f) => break (f, staging),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            // The directory is missing: make it (a concurrent put into the
            // same new directory may make it first; either way, try again
            // once it exists).
            Err(e) if e.kind() == ErrorKind::NotFound => match path.parent() {
                Some(dir) if !made_parent => {
                    made_parent = true;
                    created_dirs = crate::private::create_dir_all(dir).map_err(generic)?;
                }
                _ => return Err(generic(e)),
            },
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => return Ok(Direct::Unsupported),
            Err(e) => return Err(generic(e)),
        }
    };
    let written = crate::private::restrict(&file).and_then(|()| {
        if direct {
            write_aligned(&file, bytes).and_then(|()| file.set_len(bytes.len() as u64))
        } else {
            file.write_all_at(bytes, 0)
        }
    });
    let written = written.and_then(|()| if durable { file.sync_data() } else { Ok(()) });
    drop(file);
    let done = match written {
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
            let _ = std::fs::remove_file(&staging);
            return Ok(Direct::Unsupported);
        }
        Err(e) => Err(generic(e)),
        Ok(()) if create => match std::fs::hard_link(&staging, path) {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == ErrorKind::AlreadyExists => {
                Err(object_store::Error::AlreadyExists { path: path.display().to_string(), source: Box::new(source) })
            }
            Err(e) => Err(generic(e)),
        },
        Ok(()) => std::fs::rename(&staging, path).map_err(generic),
    };
    let _ = std::fs::remove_file(&staging);
    done?;
    if durable {
        // The new name, and the names of directories made for it.
        let dirs = path.parent().into_iter().chain(created_dirs.iter().filter_map(|d| d.parent()));
        for d in dirs {
            sync_dir(d).map_err(generic)?;
        }
    }
    Ok(Direct::Done)
}

/// Makes a directory's entries durable. A file system that cannot sync a
/// directory (some network and FUSE ones refuse with `EINVAL`) is left
/// to its own guarantees, as restic does.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStore, ObjectStoreExt};

    fn local(dir: &std::path::Path) -> Local {
        Local::open(dir.to_path_buf()).unwrap()
    }

    async fn read(l: &Local, key: &Path) -> Bytes {
        l.object_store().get(key).await.unwrap().bytes().await.unwrap()
    }

    /// Puts racing into one new directory: whoever makes it, every put
    /// lands (one that found the directory missing and then saw another
    /// put make it used to fail with "No such file or directory").
    #[test]
    fn concurrent_puts_into_a_new_directory_all_land() {
        const PUTS: usize = 16;
        for round in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join(format!("packs/{round:02x}"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(PUTS));
            let threads: Vec<_> = (0..PUTS)
                .map(|i| {
                    let path = target.join(format!("obj{i}"));
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        put_file(&path, b"data", true, false, false).map(|_| ())
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            assert_eq!(std::fs::read_dir(&target).unwrap().count(), PUTS);
        }
    }

    #[tokio::test]
    async fn direct_puts_round_trip_and_keep_create_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let l = local(dir.path());
        for len in [DIRECT_MIN_BYTES, DIRECT_MIN_BYTES + 1, 3 * DIRECT_MIN_BYTES + 4095, 17] {
            let data: Vec<u8> = (0..len + 1).map(|i| (i * 7 + i / 4096) as u8).collect();
            // Off the block grid (through the bounce buffer) and, where
            // the allocation happens to be aligned, on it.
            for (n, bytes) in
                [Bytes::from(data.clone()).slice(1..), Bytes::from(data[..len].to_vec())].into_iter().enumerate()
            {
                let key = Path::from(format!("a/b/obj{len}-{n}"));
                l.put(&key, bytes.clone(), PutMode::Create, true).await.unwrap();
                assert_eq!(read(&l, &key).await, bytes, "length {len}");
                let again = l.put(&key, bytes.clone(), PutMode::Create, true).await;
                assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
                // Overwrite replaces.
                l.put(&key, Bytes::from(vec![1u8; DIRECT_MIN_BYTES]), PutMode::Overwrite, true).await.unwrap();
                assert_eq!(l.object_store().head(&key).await.unwrap().size, DIRECT_MIN_BYTES as u64);
            }
        }
        // A volatile put (no syncs) keeps the same semantics.
        let lock = Path::from("locks/new/l");
        l.put(&lock, Bytes::from_static(b"lock"), PutMode::Create, false).await.unwrap();
        assert_eq!(read(&l, &lock).await.as_ref(), b"lock");
        let again = l.put(&lock, Bytes::from_static(b"other"), PutMode::Create, false).await;
        assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
        // No staging file is left, and listings show exactly the objects.
        use futures::StreamExt;
        let listed: Vec<_> = l.object_store().list(None).collect().await;
        assert_eq!(listed.len(), 9);
        let names: Vec<_> = walk(dir.path());
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    }

    #[tokio::test]
    async fn large_range_reads_return_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let l = local(dir.path());
        let len = 3 * DIRECT_MIN_BYTES + 1234;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 4096) as u8).collect();
        let key = Path::from("p/pack");
        l.put(&key, Bytes::from(data.clone()), PutMode::Create, true).await.unwrap();
        let ranges = [
            0..len,
            1..len,
            4096..4096 + DIRECT_MIN_BYTES,
            4095..len - 1,
            17..DIRECT_MIN_BYTES + 4113,
            len - DIRECT_MIN_BYTES..len,
        ];
        for _ in 0..2 {
            // The second round reads into buffers given back by the first.
            for r in ranges.clone() {
                let r64 = r.start as u64..r.end as u64;
                // Where the file system refuses O_DIRECT, the caller reads.
                let got = match l.get_range(&key, r64.clone()).await {
                    Some(b) => b,
                    None => l.object_store().get_range(&key, r64).await.unwrap(),
                };
                assert!(got.as_ref() == &data[r.clone()], "{r:?}");
            }
        }
        let direct = l.direct_reads.load(Ordering::Relaxed);
        // A small range, a range past the end and a missing object are
        // left to `LocalFileSystem`, and later reads are still direct.
        assert!(l.get_range(&key, 5..10).await.is_none());
        assert!(l.get_range(&key, 1..len as u64 + 1).await.is_none());
        assert!(l.get_range(&Path::from("p/none"), 0..DIRECT_MIN_BYTES as u64).await.is_none());
        assert_eq!(l.direct_reads.load(Ordering::Relaxed), direct);
        // Buffers outlive the store that lent them.
        let Some(kept) = l.get_range(&key, 0..len as u64).await else { return };
        drop(l);
        assert!(kept.as_ref() == data.as_slice());
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
        out
    }
}
