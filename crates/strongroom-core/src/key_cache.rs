//! The key cache (`--key-cache`): a tenant's unwrapped master key kept on
//! this host for a while after a password opened it, so that the next
//! commands skip the Argon2id derivation. Opt-in; without it nothing here
//! is read or written.
//!
//! Owns: the entries' directory (`$XDG_RUNTIME_DIR/strongroom/keys` when
//! that runtime directory is the user's own and private, else `<cache
//! dir>/keys`), their files (one per store and tenant, named by a keyed
//! hash of both, mode 0600, written atomically), expiry, listing and
//! clearing. The layout is [`crate::codec::key_cache`]. Must not: decide
//! that a key opens a tenant: an entry gives [`crate::keyslots`] a master
//! key and a slot name, which it then checks as it checks a key handoff.
//!
//! An entry opens only with the same secret on the same host, for the
//! same store and tenant, until its expiry (fixed when written, and cut
//! short by a smaller `--key-cache`). An entry that does not decode or
//! has expired is deleted, those of every other store and tenant too (on
//! each load); one that does not open is left for the right password to
//! replace (a wrong password must not erase it).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::key_cache::{self as layout, Binding, MAX_LEN};
use crate::crypto::Key;
use crate::error::{Error, Result};
use crate::id::TenantName;

/// Context of the keyed hash that names entry files.
const NAME_CONTEXT: &str = "strongroom key cache file name v1";

/// An undecodable file younger than this may be a temporary file another
/// process is writing: the sweep leaves it.
const WRITE_GRACE: Duration = Duration::from_secs(60);

/// Where a user's entries live, and how long a new one lasts.
#[derive(Debug, Clone)]
pub struct KeyCache {
    dir: PathBuf,
    /// Every directory this user's entries may be in ([`dirs`]): swept
    /// of expired entries on each load.
    swept: Vec<PathBuf>,
    ttl: Duration,
    /// What binds entries to this host ([`host_binding`]), read once.
    host: Vec<u8>,
}

/// One entry file, as `key-cache list` shows it (no secret needed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryInfo {
    /// The file.
    pub file: PathBuf,
    /// When it was written, Unix seconds (`None`: it does not decode).
    pub created: Option<i64>,
    /// When it stops opening, Unix seconds.
    pub expires: Option<i64>,
}

impl KeyCache {
    /// The user's key cache, entries lasting `ttl` (more than zero).
    pub fn new(cache_dir: &Path, ttl: Duration) -> Self {
        let swept = dirs(cache_dir);
        let dir = swept.first().cloned().unwrap_or_else(|| cache_dir.join("keys"));
        Self { dir, swept, ttl, host: host_binding() }
    }

    /// The master key and slot name of the entry for `tenant` of the store
    /// at `location`, if there is one that opens with `secret` and has not
    /// expired.
    pub(crate) fn load(&self, location: &str, tenant: &TenantName, secret: &[u8]) -> Option<(Key, String)> {
        self.sweep();
        let path = self.path(location, tenant);
        let bytes = match read_entry(&self.dir, &path) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(why) => {
                tracing::warn!("key cache {}: {why}; not used", path.display());
                return None;
            }
        };
        let entry = match layout::decode(&bytes) {
            Ok(e) => e,
            Err(e) => return self.discard(&path, &e.to_string()),
        };
        let now = now();
        let cut = entry.created.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        if entry.created > now || now >= entry.expires || now >= cut {
            return self.discard(&path, "expired (or written in the future)");
        }
        let at = Binding { host: &self.host, location, tenant: tenant.as_str() };
        match layout::open(&entry, secret, at) {
            Ok(opened) => Some(opened),
            Err(_) => {
                // Another password, host, store or tenant, or altered bytes:
                // kept until the right password replaces it.
                tracing::debug!("key cache {}: does not open with this password; deriving the key", path.display());
                None
            }
        }
    }

    /// Writes the entry for `tenant` of the store at `location`: `master`,
    /// opened through `slot` with `secret`, for [`KeyCache::new`]'s time.
    pub(crate) fn save(&self, location: &str, tenant: &TenantName, secret: &[u8], master: &Key, slot: &str) {
        let path = self.path(location, tenant);
        let created = now();
        let expires = created.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let at = Binding { host: &self.host, location, tenant: tenant.as_str() };
        let written = layout::seal(master, slot, created, expires, secret, at)
            .map_err(|e| e.to_string())
            .and_then(|bytes| write_entry(&self.dir, &path, &bytes));
        match written {
            Ok(()) => tracing::debug!("tenant {tenant}: key cached in {} until {expires}", path.display()),
            Err(why) => tracing::warn!("cannot write the key cache entry {}: {why}", path.display()),
        }
    }

    /// Deletes the entry for `tenant` of the store at `location` (its slot
    /// is gone, or its key no longer opens the tenant).
    pub(crate) fn remove(&self, location: &str, tenant: &TenantName, why: &str) {
        let path = self.path(location, tenant);
        self.discard::<()>(&path, why);
    }

    /// Deletes the entries of every store and tenant that have expired
    /// (or were written in the future), in both directories, and files
    /// that do not decode once older than [`WRITE_GRACE`] (a writer killed
    /// before its rename). An expired entry still opens with the password
    /// for whoever copies the file: it must not outlive its expiry on disk
    /// because no later command opened its store and tenant.
    fn sweep(&self) {
        let now_unix = now();
        for dir in &self.swept {
            let Ok(files) = entry_files(dir) else { continue };
            for file in files {
                let Ok(Some(bytes)) = read_entry(dir, &file) else { continue };
                let stale = match layout::decode(&bytes) {
                    Ok(e) => e.created > now_unix || now_unix >= e.expires,
                    Err(_) => std::fs::symlink_metadata(&file)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= WRITE_GRACE)),
                };
                if stale {
                    self.discard::<()>(&file, "expired or left over");
                }
            }
        }
    }

    fn discard<T>(&self, path: &Path, why: &str) -> Option<T> {
        tracing::debug!("key cache {}: {why}; deleted", path.display());
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot delete the key cache entry {}: {e}", path.display());
            }
        }
        None
    }

    /// The entry file of a store and tenant: a hash keyed by this host,
    /// naming neither.
    fn path(&self, location: &str, tenant: &TenantName) -> PathBuf {
        let key = blake3::derive_key(NAME_CONTEXT, &self.host);
        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(location.as_bytes()).update(&[0]).update(tenant.as_str().as_bytes());
        self.dir.join(hex::encode(&h.finalize().as_bytes()[..16]))
    }
}

/// Every directory entries of this user may be in: the runtime one (when
/// usable) and the cache directory's.
pub fn dirs(cache_dir: &Path) -> Vec<PathBuf> {
    runtime_dir().into_iter().chain([cache_dir.join("keys")]).collect()
}

/// The entries in [`dirs`], oldest first.
pub fn list(cache_dir: &Path) -> Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    for dir in dirs(cache_dir) {
        for file in entry_files(&dir)? {
            let decoded = read_entry(&dir, &file).ok().flatten().and_then(|b| layout::decode(&b).ok());
            out.push(EntryInfo {
                created: decoded.as_ref().map(|e| e.created),
                expires: decoded.as_ref().map(|e| e.expires),
                file,
            });
        }
    }
    out.sort_by_key(|e| (e.created, e.file.clone()));
    Ok(out)
}

/// Deletes every entry in [`dirs`]; returns how many.
pub fn clear(cache_dir: &Path) -> Result<usize> {
    let mut n = 0;
    for dir in dirs(cache_dir) {
        for file in entry_files(&dir)? {
            match std::fs::remove_file(&file) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&file, e)),
            }
        }
    }
    Ok(n)
}

/// The files of `dir` (entries and left-over temporary files), none if
/// it does not exist.
fn entry_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut files = Vec::new();
    for e in read {
        let e = e.map_err(|e| io_error(dir, e))?;
        if e.file_type().map_err(|err| io_error(&e.path(), err))?.is_file() {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::invalid_input("key cache", path.display().to_string(), e.to_string())
}

/// `$XDG_RUNTIME_DIR/strongroom/keys`, when the runtime directory is set,
/// a directory, the user's own and mode 0700 (a tmpfs removed at logout
/// on systemd hosts: the key never reaches a disk).
fn runtime_dir() -> Option<PathBuf> {
    let base = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
    let meta = std::fs::metadata(&base).ok()?;
    let private = meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o777 == 0o700;
    private.then(|| base.join("strongroom").join("keys"))
}

/// Checks that `dir` is a directory of this user that no one else can
/// enter: entries are never read from or written to a shared one.
fn check_dir(dir: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(format!("{} is not a private directory of this user (mode 0700)", dir.display()));
    }
    Ok(())
}

/// The bytes of the entry at `path`: `None` when there is none. An entry
/// is a regular file of this user's (never followed through a symbolic
/// link), no larger than an entry can be, in a private directory.
fn read_entry(dir: &Path, path: &Path) -> std::result::Result<Option<Vec<u8>>, String> {
    // The directory before anything in it is opened: in one others can
    // write, a FIFO at an entry's name would hold the open forever.
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => check_dir(dir)?,
    }
    // Without blocking: a FIFO of this user's is refused below, not waited on.
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err("not a private file of this user (mode 0600)".into());
    }
    let mut bytes = Vec::with_capacity(MAX_LEN + 1);
    file.take(MAX_LEN as u64 + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// Writes an entry atomically (a temporary file renamed over it), its
/// directory created 0700 when missing. The temporary file has a random
/// name and is created exclusively, so it is never a file or symbolic
/// link someone placed there: nothing but a new file receives the key.
fn write_entry(dir: &Path, path: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    crate::private::create_dir_all(dir).map_err(|e| e.to_string())?;
    check_dir(dir)?;
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(crate::crypto::random_bytes::<8>())));
    let written = create_private(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}

/// Creates `path` (it must not exist, not even as a symbolic link), mode
/// 0600, holding `bytes`.
fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = crate::private::file_options().write(true).create_new(true).open(path)?;
    crate::private::restrict(&f)?;
    f.write_all(bytes)
}

/// What binds an entry to this host: the machine id (when readable) and
/// the host name.
fn host_binding() -> Vec<u8> {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let mut b = machine.trim().as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(crate::source::hostname().as_bytes());
    b
}

/// Now, in Unix seconds; a test build can set the clock
/// (`STRONGROOM_TEST_NOW`) to make entries expire.
fn now() -> i64 {
    crate::testhook::var("STRONGROOM_TEST_NOW").and_then(|v| v.parse().ok()).unwrap_or_else(crate::keyslots::now_unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, ttl: u64) -> KeyCache {
        KeyCache {
            dir: dir.join("keys"),
            swept: vec![dir.join("keys")],
            ttl: Duration::from_secs(ttl),
            host: host_binding(),
        }
    }

    #[test]
    fn an_entry_opens_with_its_password_only_and_a_damaged_one_is_deleted() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let c = cache(t.path(), 600);
        let tenant = TenantName::new("default").unwrap();
        let m = Key::from_bytes([7; 32]);
        let slot = "0123456789abcdef0123456789abcdef";
        assert!(c.load("file:///r", &tenant, b"pw").is_none());
        c.save("file:///r", &tenant, b"pw", &m, slot);
        let path = c.path("file:///r", &tenant);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&c.dir).unwrap().permissions().mode() & 0o777, 0o700);
        let (k, s) = c.load("file:///r", &tenant, b"pw").unwrap();
        assert!(k.is(&[7; 32]));
        assert_eq!(s, slot);
        assert!(c.load("file:///r", &tenant, b"other").is_none());
        assert!(path.exists(), "a wrong password deleted the entry");
        assert!(c.load("file:///s", &tenant, b"pw").is_none(), "another store");
        // A smaller --key-cache cuts an older, longer entry short.
        assert!(cache(t.path(), 0).load("file:///r", &tenant, b"pw").is_none());
        assert!(!path.exists());
        c.save("file:///r", &tenant, b"pw", &m, slot);
        std::fs::write(&path, b"SRKC").unwrap();
        assert!(c.load("file:///r", &tenant, b"pw").is_none());
        assert!(!path.exists(), "an entry that does not decode is deleted");
    }

    const SLOT: &str = "0123456789abcdef0123456789abcdef";

    /// Writes into `dir` the entry of tenant `default` of the store at
    /// `location`, password `pw`, valid over `(created, expires)`.
    fn plant(c: &KeyCache, dir: &Path, location: &str, (created, expires): (i64, i64)) -> PathBuf {
        let tenant = TenantName::new("default").unwrap();
        let at = Binding { host: &c.host, location, tenant: "default" };
        let bytes = layout::seal(&Key::from_bytes([7; 32]), SLOT, created, expires, b"pw", at).unwrap();
        let path = dir.join(c.path(location, &tenant).file_name().unwrap());
        write_entry(dir, &path, &bytes).unwrap();
        path
    }

    #[test]
    fn expired_entries_of_every_store_and_left_overs_are_swept_from_both_directories() {
        let t = tempfile::tempdir().unwrap();
        let (runtime, disk) = (t.path().join("run").join("keys"), t.path().join("keys"));
        let c = KeyCache {
            dir: runtime.clone(),
            swept: vec![runtime.clone(), disk.clone()],
            ttl: Duration::from_secs(600),
            host: host_binding(),
        };
        let now = now();
        let expired = plant(&c, &runtime, "file:///gone", (now - 1000, now - 1));
        let future = plant(&c, &runtime, "file:///future", (now + 100, now + 700));
        // Written where a command without a private runtime directory writes.
        let on_disk = plant(&c, &disk, "file:///cron", (now - 1000, now - 400));
        let live = plant(&c, &disk, "file:///live", (now - 10, now + 590));
        // A writer killed before its rename, and one writing now.
        let (crashed, writing) = (runtime.join("0123.tmp-00"), runtime.join("4567.tmp-11"));
        for f in [&crashed, &writing] {
            create_private(f, b"SRKC").unwrap();
        }
        let old = std::time::SystemTime::now() - WRITE_GRACE - Duration::from_secs(1);
        std::fs::File::options().write(true).open(&crashed).unwrap().set_modified(old).unwrap();

        let tenant = TenantName::new("default").unwrap();
        assert!(c.load("file:///other", &tenant, b"pw").is_none());
        for gone in [&expired, &future, &on_disk, &crashed] {
            assert!(!gone.exists(), "{} is still there", gone.display());
        }
        for kept in [&live, &writing] {
            assert!(kept.exists(), "{} was deleted", kept.display());
        }
        let c = KeyCache { dir: disk, ..c };
        assert!(c.load("file:///live", &tenant, b"pw").is_some(), "an entry in its time still opens");
    }

    #[test]
    fn nothing_is_opened_in_a_directory_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let t = tempfile::tempdir().unwrap();
        let c = cache(t.path(), 600);
        let tenant = TenantName::new("default").unwrap();
        crate::private::create_dir_all(&c.dir).unwrap();
        std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fifo = c.path("file:///r", &tenant);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let returned = std::sync::Arc::new(AtomicBool::new(false));
        // Opening a FIFO for writing waits for a reader: whether the load
        // had returned by then tells whether it opened the FIFO.
        let writer = std::thread::spawn({
            let (fifo, returned) = (fifo.clone(), returned.clone());
            move || {
                let _w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                returned.load(Ordering::SeqCst)
            }
        });
        assert!(c.load("file:///r", &tenant, b"pw").is_none());
        returned.store(true, Ordering::SeqCst);
        // The reader that lets the writer go when the load opened nothing.
        let _r = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        assert!(writer.join().unwrap(), "the load opened a FIFO in a directory others can write");
    }

    #[test]
    fn an_entry_is_never_written_through_a_planted_link() {
        let t = tempfile::tempdir().unwrap();
        let c = cache(t.path(), 600);
        let tenant = TenantName::new("default").unwrap();
        let path = c.path("file:///r", &tenant);
        crate::private::create_dir_all(&c.dir).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // At the temporary name a writer used to derive from its pid.
        std::os::unix::fs::symlink(&victim, path.with_extension(format!("tmp{}", std::process::id()))).unwrap();
        c.save("file:///r", &tenant, b"pw", &Key::from_bytes([7; 32]), SLOT);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "written through the link");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file(), "the entry is not a file of its own");
        assert!(c.load("file:///r", &tenant, b"pw").is_some());
    }
}
