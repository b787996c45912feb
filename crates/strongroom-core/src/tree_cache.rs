//! The disk cache of tree packs: whole tree packs kept as stored (sealed)
//! under a tenant's cache directory, `tree-packs/<first 2 hex>/<pack id>`,
//! so that a command walking snapshot trees (a backup reading its parent,
//! restore, check, diff) does not download them again in every process.
//! A host writes the tree packs it uploads there too: the trees of its
//! own backups never need downloading. Data packs are not kept (they are
//! the bulk of a repository).
//!
//! Nothing read from here is trusted. A pack's id is the BLAKE3 hash of
//! its bytes, so a cached file is used only when it hashes to its name;
//! anything else (cut short by a crash, damaged, replaced by another
//! pack's bytes) is deleted and the pack read from the store again. The
//! blobs of a pack that passed are then opened and verified like blobs
//! read from the store (AEAD, then the blob id). Writes go to a temporary
//! file renamed into place, mode 0600; a failed write (a full disk) costs
//! only a download next time.
//!
//! The cache is bounded: [`TreePackDisk::trim`] removes packs the catalog
//! no longer lists, then the least recently used (reads refresh a file's
//! modification time) until the total is under the cap.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::crypto;
use crate::id::PackId;

/// Default bound of one tenant's tree-pack cache.
pub const DEFAULT_CAP_BYTES: u64 = 512 * 1024 * 1024;

/// Name of the cache's directory under a tenant's cache directory.
pub const DIR_NAME: &str = "tree-packs";

/// A file the catalog does not list (or a leftover temporary file) is
/// kept this long after its last use: another process may have just
/// written it, for a pack whose index delta is not written yet.
const UNLISTED_GRACE: Duration = Duration::from_secs(3600);

/// Prefix of temporary files being written.
const TMP_PREFIX: &str = ".tmp-";

/// One tenant's tree packs on disk.
#[derive(Debug, Clone)]
pub struct TreePackDisk {
    dir: PathBuf,
    cap_bytes: u64,
}

/// What [`TreePackDisk::trim`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Packs (and stray files) removed because the catalog no longer
    /// lists them.
    pub unlisted: u64,
    /// Packs removed, least recently used first, to get under the cap.
    pub evicted: u64,
    /// Bytes of the packs kept.
    pub bytes_kept: u64,
}

/// A file found in the cache.
struct Entry {
    path: PathBuf,
    /// The pack it holds, by its name; `None` for anything else.
    pack: Option<PackId>,
    len: u64,
    used: SystemTime,
}

impl TreePackDisk {
    /// The cache in `dir` (created when first written), bounded to
    /// `cap_bytes`.
    pub fn new(dir: PathBuf, cap_bytes: u64) -> Self {
        Self { dir, cap_bytes }
    }

    /// Where pack `id` is kept.
    pub fn path(&self, id: &PackId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether a file is kept for pack `id` (unverified: [`Self::load`]
    /// decides whether it can be used).
    pub fn holds(&self, id: &PackId) -> bool {
        self.path(id).is_file()
    }

    /// The bytes of pack `id`, `len` bytes long, when the cache holds them
    /// intact, and marks it used. A file of another length, or that does
    /// not hash to the pack's id, is deleted (and never read whole when
    /// longer than `len`).
    pub fn load(&self, id: &PackId, len: u64) -> Option<Bytes> {
        let path = self.path(id);
        let file = std::fs::File::open(&path).and_then(|f| f.metadata().map(|m| (f, m.len())));
        let mut file = match file {
            Ok((_, have)) if have != len => {
                tracing::debug!(
                    "tree-pack cache: {}: {have} bytes, the pack has {len}; deleted, reading the pack from the store",
                    path.display()
                );
                remove_quietly(&path);
                return None;
            }
            Ok((f, _)) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::debug!("tree-pack cache: {}: {e}; reading the pack from the store", path.display());
                return None;
            }
        };
        let mut bytes = Vec::with_capacity(len as usize);
        if let Err(e) = (&mut file).take(len).read_to_end(&mut bytes) {
            tracing::debug!("tree-pack cache: {}: {e}; reading the pack from the store", path.display());
            return None;
        }
        if crypto::object_hash(&bytes) != id.0 {
            tracing::debug!(
                "tree-pack cache: {}: content ({} bytes) does not match its name; deleted, reading the pack from the store",
                path.display(),
                bytes.len()
            );
            remove_quietly(&path);
            return None;
        }
        // The modification time orders eviction; a file that refuses it
        // is only evicted sooner.
        let _ = file.set_modified(SystemTime::now());
        Some(Bytes::from(bytes))
    }

    /// Keeps `bytes` as pack `id` when they are that pack (they hash to
    /// its id); returns whether they were written. A failed write is
    /// logged at debug level and otherwise ignored.
    pub fn save(&self, id: &PackId, bytes: &[u8]) -> bool {
        if crypto::object_hash(bytes) != id.0 {
            tracing::debug!(
                "tree-pack cache: pack {} read from the store does not match its name; not kept",
                id.short()
            );
            return false;
        }
        match self.write(id, bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("tree-pack cache: keeping pack {} failed: {e}", id.short());
                false
            }
        }
    }

    fn write(&self, id: &PackId, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(id);
        let dir = path.parent().ok_or_else(|| io::Error::other("cache path without a directory"))?;
        crate::private::create_dir_all(dir)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{}", std::process::id(), hex::encode(crypto::random_bytes::<6>())));
        let r = crate::private::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if r.is_err() {
            remove_quietly(&tmp);
        }
        r
    }

    /// Removes pack `id` from the cache, if there.
    pub fn remove(&self, id: &PackId) {
        remove_quietly(&self.path(id));
    }

    /// Removes the packs `listed` rejects (the catalog no longer names
    /// them: pruned or repacked) and any other file, once unused for an
    /// hour; then the least recently used packs until the rest fits the
    /// cap.
    pub fn trim(&self, listed: &dyn Fn(&PackId) -> bool) -> Trimmed {
        self.trim_at(listed, SystemTime::now())
    }

    fn trim_at(&self, listed: &dyn Fn(&PackId) -> bool, now: SystemTime) -> Trimmed {
        let mut out = Trimmed::default();
        let mut kept = Vec::new();
        for e in self.entries() {
            let stale = now.duration_since(e.used).is_ok_and(|age| age >= UNLISTED_GRACE);
            match e.pack {
                Some(id) if !stale || listed(&id) => kept.push(e),
                None if !stale => {}
                _ => {
                    remove_quietly(&e.path);
                    out.unlisted += 1;
                }
            }
        }
        // Least recently used first.
        kept.sort_by_key(|e| e.used);
        let mut total: u64 = kept.iter().map(|e| e.len).sum();
        for e in &kept {
            if total <= self.cap_bytes {
                break;
            }
            remove_quietly(&e.path);
            total -= e.len;
            out.evicted += 1;
        }
        out.bytes_kept = total;
        if out.unlisted + out.evicted > 0 {
            tracing::debug!(
                "tree-pack cache: removed {} unlisted and {} least recently used files; {} bytes kept",
                out.unlisted,
                out.evicted,
                out.bytes_kept
            );
        }
        out
    }

    /// Every file two levels down (unreadable directories are skipped).
    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let Ok(top) = std::fs::read_dir(&self.dir) else { return out };
        for sub in top.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else { continue };
            for f in files.flatten() {
                let Ok(meta) = f.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let name = f.file_name().to_string_lossy().into_owned();
                let pack = PackId::from_hex(&name).ok().filter(|id| id.to_hex() == name);
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(Entry { path: f.path(), pack, len: meta.len(), used });
            }
        }
        out
    }
}

/// Deletes a file, ignoring failure: a file already gone is what was
/// wanted, and one that cannot be deleted is verified before any use.
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::debug!("tree-pack cache: removing {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(seed: u8, len: usize) -> (PackId, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        (PackId(crypto::object_hash(&bytes)), bytes)
    }

    fn used_at(cache: &TreePackDisk, id: &PackId, t: SystemTime) {
        let f = std::fs::File::options().write(true).open(cache.path(id)).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn a_saved_pack_loads_back_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = TreePackDisk::new(dir.path().join(DIR_NAME), DEFAULT_CAP_BYTES);
        let (id, bytes) = pack(1, 5000);
        assert!(cache.load(&id, 5000).is_none());
        assert!(cache.save(&id, &bytes));
        assert_eq!(cache.load(&id, 5000).unwrap(), bytes);
        let path = cache.path(&id);
        assert!(path.starts_with(dir.path().join(DIR_NAME).join(&id.to_hex()[..2])));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sub = path.parent().unwrap();
        assert_eq!(std::fs::metadata(sub).unwrap().permissions().mode() & 0o777, 0o700);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(sub).unwrap().count(), 1);
    }

    #[test]
    fn bytes_that_are_not_the_pack_are_never_kept_nor_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TreePackDisk::new(dir.path().to_path_buf(), DEFAULT_CAP_BYTES);
        let (id, bytes) = pack(1, 5000);
        let (_, other) = pack(2, 5000);
        assert!(!cache.save(&id, &other), "another pack's bytes under this id");
        assert!(!cache.holds(&id));
        let mut flipped = bytes.clone();
        flipped[17] ^= 1;
        let longer = [&bytes[..], b"more"].concat();
        let damaged = [bytes[..bytes.len() / 2].to_vec(), longer, flipped, pack(2, 5000).1];
        for b in damaged {
            assert!(cache.save(&id, &bytes));
            std::fs::write(cache.path(&id), &b).unwrap();
            assert!(cache.load(&id, 5000).is_none());
            assert!(!cache.holds(&id), "a damaged file is deleted");
        }
    }

    #[test]
    fn trim_evicts_the_least_recently_used_down_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TreePackDisk::new(dir.path().to_path_buf(), 2500);
        let now = SystemTime::now();
        let packs: Vec<_> = (0..4u8).map(|i| pack(i, 1000)).collect();
        for (i, (id, bytes)) in packs.iter().enumerate() {
            assert!(cache.save(id, bytes));
            used_at(&cache, id, now - Duration::from_secs(100 - i as u64));
        }
        // Reading the oldest makes it the most recently used.
        assert!(cache.load(&packs[0].0, 1000).is_some());
        let t = cache.trim_at(&|_| true, now + Duration::from_secs(1));
        assert_eq!(t, Trimmed { unlisted: 0, evicted: 2, bytes_kept: 2000 });
        let held: Vec<bool> = packs.iter().map(|(id, _)| cache.holds(id)).collect();
        assert_eq!(held, [true, false, false, true]);
        // Under the cap, nothing more goes.
        assert_eq!(cache.trim_at(&|_| true, now).evicted, 0);
    }

    #[test]
    fn trim_removes_unlisted_packs_and_stray_files_once_unused_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TreePackDisk::new(dir.path().to_path_buf(), DEFAULT_CAP_BYTES);
        let (listed, a) = pack(1, 100);
        let (gone, b) = pack(2, 100);
        let (fresh, c) = pack(3, 100);
        for (id, bytes) in [(listed, &a), (gone, &b), (fresh, &c)] {
            assert!(cache.save(&id, bytes));
        }
        let stray = cache.path(&gone).with_file_name(format!("{TMP_PREFIX}1-00"));
        std::fs::write(&stray, b"half").unwrap();
        let now = SystemTime::now();
        let old = now - UNLISTED_GRACE - Duration::from_secs(1);
        used_at(&cache, &listed, old);
        used_at(&cache, &gone, old);
        std::fs::File::options().write(true).open(&stray).unwrap().set_modified(old).unwrap();
        let t = cache.trim_at(&|id| *id == listed, now);
        assert_eq!(t.unlisted, 2, "{t:?}");
        assert!(cache.holds(&listed));
        assert!(!cache.holds(&gone));
        assert!(cache.holds(&fresh), "just written, maybe before its index delta");
        assert!(!stray.exists());
    }

    #[test]
    fn a_cache_that_cannot_be_written_costs_only_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let cache = TreePackDisk::new(file, DEFAULT_CAP_BYTES);
        let (id, bytes) = pack(1, 100);
        assert!(!cache.save(&id, &bytes));
        assert!(cache.load(&id, 100).is_none());
        assert_eq!(cache.trim(&|_| true), Trimmed::default());
    }
}
