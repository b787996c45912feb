//! The local-directory backend: `object_store`'s `LocalFileSystem`, with
//! durable puts, and large objects (packs) written with direct I/O.
//!
//! **Durable puts.** `LocalFileSystem` never syncs, so after a power cut
//! a snapshot could name packs whose bytes never reached the disk. Here
//! every put writes a staging file `NAME#DIGITS` (which listings skip),
//! syncs it (`fdatasync`), makes it appear whole under its name (a hard
//! link for `PutMode::Create`, which fails if the name exists; a rename
//! for `PutMode::Overwrite`) and syncs the directory (and those it had to
//! create): when a put returns, its object survives a power cut, so the
//! order of puts is the order objects become durable in (packs before the
//! index delta that lists them, that before the snapshot). restic's local
//! backend syncs the same way. A put marked [`Volatile`] (locks) skips the
//! syncs.
//!
//! **Direct I/O.** A backup writes every new byte once and does not read
//! it back soon. Through the page cache, each pack costs a copy into
//! freshly allocated cache pages (on the benchmark VM about 1 CPU-s per
//! 700 MB, a sixth of a first backup's CPU: see docs/BENCHMARKS.md) and
//! evicts the user's cached files. With `O_DIRECT` the disk reads the
//! bytes straight from a reused, page-aligned buffer, and the cache keeps
//! what it had (borg drops written segments from the cache with
//! `posix_fadvise` for the same reason). Large range reads (a restore's
//! packs) are direct too, into pooled page-aligned buffers: no copy out
//! of the page cache, no fresh pages.
//!
//! Everything else (small reads, lists, deletes, and every read or write
//! where the file system refuses `O_DIRECT`) goes through the page cache,
//! reads and deletes through `LocalFileSystem` unchanged.
//!
//! **Private.** Every file a put creates is mode 0600 and every directory
//! 0700, whatever the umask (see [`crate::private`]): key slots are
//! password-wrapped keys that another local user could guess at offline.
//! What `LocalFileSystem` would create with the default mode (multipart
//! uploads, copies, renames, puts with attributes or tags) is refused with
//! `NotImplemented`; strongroom makes none of them.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

/// Marks a put (in `PutOptions::extensions`) whose object need not
/// survive a power cut: it is written without waiting for the disk.
#[derive(Debug, Clone, Copy)]
pub struct Volatile;

/// Objects at least this large are written directly.
pub const DIRECT_MIN_BYTES: usize = 1024 * 1024;
/// Alignment of direct I/O buffers, offsets and lengths (the largest
/// logical block size in common use).
const ALIGN: usize = 4096;
const STORE: &str = "LocalFileSystem";

/// `LocalFileSystem` with direct-I/O puts of large objects.
#[derive(Debug)]
pub struct DirectLocal {
    inner: LocalFileSystem,
    /// Cleared when the file system refused an `O_DIRECT` write once.
    direct: AtomicBool,
    /// Cleared when the file system refused an `O_DIRECT` read once.
    direct_reads: AtomicBool,
    read_buffers: ReadBuffers,
}

impl DirectLocal {
    /// Wraps `inner`; direct writes and reads are each tried until the file
    /// system refuses one, unless `STRONGROOM_DIRECT_IO=0` turns them off.
    pub fn new(inner: LocalFileSystem) -> Self {
        let on = std::env::var("STRONGROOM_DIRECT_IO").map_or(true, |v| v != "0");
        Self {
            inner,
            direct: AtomicBool::new(on),
            direct_reads: AtomicBool::new(on),
            read_buffers: ReadBuffers::default(),
        }
    }
}

impl std::fmt::Display for DirectLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectLocal({})", self.inner)
    }
}

thread_local! {
    /// A page-aligned window into this over-allocated buffer is reused for
    /// every direct write of the thread (tokio's blocking pool keeps its
    /// threads), so writes touch no fresh memory.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a direct put did.
enum Direct {
    Done(PutResult),
    /// The file system does not do `O_DIRECT`: use the ordinary path.
    Unsupported,
}

fn generic(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: Box::new(e) }
}

/// Writes `payload` at offset 0 of a file opened with `O_DIRECT`, in whole
/// blocks (the caller cuts the file back to `len`). A payload of one part
/// that starts on a block boundary (a finished pack) goes to the disk
/// straight from its memory, all but its last partial block; everything
/// else is copied through the thread's bounce buffer.
fn write_aligned(file: &std::fs::File, payload: &PutPayload, len: usize) -> std::io::Result<()> {
    let parts: Vec<&Bytes> = payload.iter().collect();
    let (direct, rest): (&[u8], Vec<&[u8]>) = match parts.as_slice() {
        [one] if one.as_ptr().align_offset(ALIGN) == 0 => {
            let cut = len / ALIGN * ALIGN;
            (&one[..cut], vec![&one[cut..]])
        }
        _ => (&[], parts.iter().map(|p| p.as_ref()).collect()),
    };
    if !direct.is_empty() {
        file.write_all_at(direct, 0)?;
    }
    let rest_len: usize = rest.iter().map(|p| p.len()).sum();
    if rest_len == 0 {
        return Ok(());
    }
    let padded = rest_len.div_ceil(ALIGN) * ALIGN;
    BOUNCE.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < padded + ALIGN {
            *buf = vec![0; padded + ALIGN];
        }
        let start = buf.as_ptr().align_offset(ALIGN);
        let window = &mut buf[start..start + padded];
        let mut at = 0;
        for part in rest {
            window[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        window[at..].fill(0);
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
/// through the page cache costs a copy of every byte (a tenth of a
/// restore's CPU). `Ok(None)`: the file system does not do `O_DIRECT`.
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

/// Writes `payload` to a staging file beside `path` (with `O_DIRECT` when
/// `direct`), makes it durable, then links or renames it into place and
/// makes that durable: when a put returns, the object survives a power
/// cut whole, and an object written after it never exists without it (the
/// order the repository's invariants rest on: packs before the index that
/// lists them, the index before the snapshot). restic's local backend
/// syncs each file the same way; `LocalFileSystem` syncs nothing.
fn put_file(
    path: PathBuf,
    payload: &PutPayload,
    mode: &PutMode,
    direct: bool,
    durable: bool,
) -> object_store::Result<Direct> {
    let len = payload.content_length();
    let mut created_dirs = Vec::new();
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
            Err(e) if e.kind() == ErrorKind::NotFound => match path.parent() {
                Some(dir) if created_dirs.is_empty() && !dir.exists() => {
                    created_dirs = crate::private::create_dir_all(dir).map_err(generic)?
                }
                _ => return Err(generic(e)),
            },
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => return Ok(Direct::Unsupported),
            Err(e) => return Err(generic(e)),
        }
    };
    let written = crate::private::restrict(&file);
    let written = written.and_then(|()| {
        if direct {
            write_aligned(&file, payload, len).and_then(|()| file.set_len(len as u64))
        } else {
            write_parts(&file, payload)
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
        Ok(()) => match mode {
            PutMode::Create => match std::fs::hard_link(&staging, &path) {
                Ok(()) => Ok(()),
                Err(source) if source.kind() == ErrorKind::AlreadyExists => Err(object_store::Error::AlreadyExists {
                    path: path.display().to_string(),
                    source: Box::new(source),
                }),
                Err(e) => Err(generic(e)),
            },
            _ => std::fs::rename(&staging, &path).map_err(generic),
        },
    };
    let _ = std::fs::remove_file(&staging);
    done?;
    if !durable {
        return Ok(Direct::Done(PutResult { e_tag: None, version: None }));
    }
    // The new name, and the names of directories made for it.
    let mut dirs: Vec<&std::path::Path> = path.parent().into_iter().collect();
    dirs.extend(created_dirs.iter().filter_map(|d| d.parent()));
    for d in dirs {
        sync_dir(d).map_err(generic)?;
    }
    Ok(Direct::Done(PutResult { e_tag: None, version: None }))
}

/// Writes a payload's parts at the start of a new file.
fn write_parts(mut file: &std::fs::File, payload: &PutPayload) -> std::io::Result<()> {
    use std::io::Write;
    payload.iter().try_for_each(|part| file.write_all(part))
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

#[async_trait]
impl ObjectStore for DirectLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let plain = matches!(opts.mode, PutMode::Create | PutMode::Overwrite)
            && opts.attributes.is_empty()
            && opts.tags.encoded().is_empty();
        if !plain {
            // `LocalFileSystem` would write it with the default mode.
            return Err(object_store::Error::NotImplemented);
        }
        let path = self.inner.path_to_filesystem(location)?;
        let direct = payload.content_length() >= DIRECT_MIN_BYTES && self.direct.load(Ordering::Relaxed);
        let durable = opts.extensions.get::<Volatile>().is_none();
        let r =
            tokio::task::spawn_blocking(move || match put_file(path.clone(), &payload, &opts.mode, direct, durable)? {
                Direct::Unsupported => {
                    tracing::debug!("the repository's file system refuses O_DIRECT; writing through the page cache");
                    put_file(path, &payload, &opts.mode, false, durable).map(|d| (d, true))
                }
                done => Ok((done, false)),
            })
            .await
            .map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })?;
        let (done, refused) = r?;
        if refused {
            self.direct.store(false, Ordering::Relaxed);
        }
        match done {
            Direct::Done(res) => Ok(res),
            Direct::Unsupported => Err(generic(std::io::Error::other("O_DIRECT refused on a buffered write"))),
        }
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented)
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        let large = range.end.saturating_sub(range.start) >= DIRECT_MIN_BYTES as u64;
        if large && self.direct_reads.load(Ordering::Relaxed) {
            let path = self.inner.path_to_filesystem(location)?;
            let (r, pool) = (range.clone(), self.read_buffers.clone());
            let read = tokio::task::spawn_blocking(move || get_direct(&path, r, &pool))
                .await
                .map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })?;
            match read {
                Ok(Some(bytes)) => return Ok(bytes),
                Ok(None) => {
                    tracing::debug!(
                        "the repository's file system refuses O_DIRECT reads; reading through the page cache"
                    );
                    self.direct_reads.store(false, Ordering::Relaxed);
                }
                // Errors, a missing object among them, are reported as the
                // ordinary path reports them.
                Err(_) => {}
            }
        }
        self.inner.get_range(location, range).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, _from: &Path, _to: &Path) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented)
    }

    async fn rename(&self, _from: &Path, _to: &Path) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented)
    }

    async fn copy_if_not_exists(&self, _from: &Path, _to: &Path) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented)
    }

    async fn rename_if_not_exists(&self, _from: &Path, _to: &Path) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> DirectLocal {
        DirectLocal::new(LocalFileSystem::new_with_prefix(dir).unwrap())
    }

    #[tokio::test]
    async fn direct_puts_round_trip_and_keep_create_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for len in [DIRECT_MIN_BYTES, DIRECT_MIN_BYTES + 1, 3 * DIRECT_MIN_BYTES + 4095, 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            // Two parts, cut off the block grid.
            let payload = PutPayload::from_iter([
                Bytes::copy_from_slice(&data[..len / 3]),
                Bytes::copy_from_slice(&data[len / 3..]),
            ]);
            let path = Path::from(format!("a/b/obj{len}"));
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            s.put_opts(&path, payload.clone(), opts.clone()).await.unwrap();
            let back = s.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(back.as_ref(), data.as_slice(), "length {len}");
            let again = s.put_opts(&path, payload.clone(), opts).await;
            assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
            // Overwrite replaces.
            s.put(&path, PutPayload::from(vec![1u8; DIRECT_MIN_BYTES])).await.unwrap();
            assert_eq!(s.head(&path).await.unwrap().size, DIRECT_MIN_BYTES as u64);
        }
        // A volatile put (no syncs) keeps the same semantics.
        let mut opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        opts.extensions.insert(Volatile);
        let lock = Path::from("locks/new/l");
        s.put_opts(&lock, PutPayload::from_static(b"lock"), opts.clone()).await.unwrap();
        assert_eq!(s.get(&lock).await.unwrap().bytes().await.unwrap().as_ref(), b"lock");
        let again = s.put_opts(&lock, PutPayload::from_static(b"other"), opts).await;
        assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
        // No staging file is left, and listings show exactly the objects.
        use futures::StreamExt;
        let listed: Vec<_> = s.list(None).collect().await;
        assert_eq!(listed.len(), 5);
        let names: Vec<_> = walk(dir.path());
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    }

    #[tokio::test]
    async fn large_range_reads_return_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let len = 3 * DIRECT_MIN_BYTES + 1234;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 4096) as u8).collect();
        let path = Path::from("p/pack");
        s.put(&path, PutPayload::from(data.clone())).await.unwrap();
        let ranges = [
            0..len,
            1..len,
            4096..4096 + DIRECT_MIN_BYTES,
            4095..len - 1,
            17..DIRECT_MIN_BYTES + 4113,
            len - DIRECT_MIN_BYTES..len,
            5..10,
        ];
        for _ in 0..2 {
            // The second round reads into buffers given back by the first.
            for r in ranges.clone() {
                let got = s.get_range(&path, r.start as u64..r.end as u64).await.unwrap();
                assert!(got.as_ref() == &data[r.clone()], "{r:?}");
            }
        }
        // Past the end, and a missing object: as without O_DIRECT (the
        // store layer above checks the length of what came back), and
        // later reads are still direct.
        let direct = s.direct_reads.load(Ordering::Relaxed);
        let past = s.get_range(&path, 1..len as u64 + 1).await.map(|b| b.len());
        let plain = s.inner.get_range(&path, 1..len as u64 + 1).await.map(|b| b.len());
        assert_eq!(format!("{past:?}"), format!("{plain:?}"));
        assert_eq!(s.direct_reads.load(Ordering::Relaxed), direct);
        let missing = s.get_range(&Path::from("p/none"), 0..DIRECT_MIN_BYTES as u64).await;
        assert!(matches!(missing, Err(object_store::Error::NotFound { .. })), "{missing:?}");
        // Buffers outlive the store that lent them.
        let kept = s.get_range(&path, 0..len as u64).await.unwrap();
        drop(s);
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
