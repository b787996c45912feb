//! The object store: the only module that imports `object_store`.
//!
//! Owns: opening a repository URL, the object key layout
//! (`tenants/<tenant>/packs/…`, every [`Key`] is built here), typed
//! put/get/list/delete, conditional
//! create, and fault injection for tests. Must not: parse or decrypt.
//!
//! **Invariant:** every object except `config`, `locks/` and `holds/`
//! entries is immutable once written: it is created with `PutMode::Create` and only
//! ever deleted, never overwritten.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::id::TenantName;

/// Errors talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// Object key.
        path: String,
    },
    /// A create found the object already there.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// Object key.
        path: String,
    },
    /// The repository URL cannot be used.
    #[error("repository {url}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// Any other failure of the backend (after object_store's retries).
    #[error("{path}: {why}")]
    Backend {
        /// Object key.
        path: String,
        /// What failed, in one line: the backend's message and its root
        /// cause (object_store repeats each cause in its parent's message).
        why: String,
    },
    /// The store refused the request: the credentials lack the right
    /// (S3 403 AccessDenied, Azure AuthorizationPermissionMismatch, a
    /// local EACCES).
    #[error("{}the store refused to {action} {path}: permission denied{}", tenant_of(.path), needs(.action))]
    PermissionDenied {
        /// What was refused: "read", "list", "create", "overwrite", "delete".
        action: &'static str,
        /// Object key.
        path: String,
    },
    /// An injected fault (tests only).
    #[error("{path}: injected fault")]
    Injected {
        /// Object key.
        path: String,
    },
}

impl Error {
    fn from_os(path: &Path, e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { path: path.to_string() },
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                Error::AlreadyExists { path: path.to_string() }
            }
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                Error::PermissionDenied { action: "read", path: path.to_string() }
            }
            other if io_permission_denied(&other) => Error::PermissionDenied { action: "read", path: path.to_string() },
            other => Error::Backend { path: path.to_string(), why: one_line(&other) },
        }
    }

    /// Names the action of a [`Error::PermissionDenied`].
    fn refused(self, what: &'static str) -> Self {
        match self {
            Error::PermissionDenied { path, .. } => Error::PermissionDenied { action: what, path },
            other => other,
        }
    }
}

/// Whether an error is, at its root, a local `EACCES`/`EPERM`, or an
/// HTTP 401/403 that object_store did not classify (an Azure batch
/// delete's refusal comes back as a generic error quoting the status).
fn io_permission_denied(e: &object_store::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied) {
            return true;
        }
        let text = c.to_string();
        if text.contains("status code: 403") || text.contains("status code: 401") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `tenant T: ` for a key under `tenants/T/`.
fn tenant_of(path: &str) -> String {
    match path.strip_prefix("tenants/").and_then(|r| r.split_once('/')) {
        Some((t, _)) => format!("tenant {t}: "),
        None => String::new(),
    }
}

/// What right a refused action needs, in the store's terms.
fn needs(action: &str) -> &'static str {
    match action {
        "delete" => " (prune and forget need delete rights: s3:DeleteObject, or an Azure SAS with d)",
        "overwrite" => {
            " (this command replaces an object: s3:PutObject without an if-none-match condition, or an Azure SAS \
             with w)"
        }
        "create" => " (backups need create rights: s3:PutObject, or an Azure SAS with c)",
        "list" => " (s3:ListBucket, or an Azure SAS with l)",
        _ => " (s3:GetObject, or an Azure SAS with r)",
    }
}

/// An object_store error as one line without repetition: the top message
/// up to where it starts quoting its cause, then the root cause.
fn one_line(e: &object_store::Error) -> String {
    let top = e.to_string();
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let root = root.to_string();
    let mut head = top.split(" - ").next().unwrap_or(&top).trim().trim_end_matches(':').to_string();
    // "Generic LocalFileSystem error: X" says nothing X does not.
    if let Some(rest) = head.strip_prefix("Generic ").and_then(|h| h.split_once(" error: ")).map(|(_, r)| r) {
        head = rest.to_string();
    }
    if root == top || head.contains(&root) {
        head
    } else {
        format!("{head}: {root}")
    }
}

/// The key of an object in the store. Keys are built only here
/// ([`Store::path`], [`Store::config_path`], [`Store::escrow_path`],
/// [`Store::erasure_path`], listings), so the layout lives in one place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Path);

impl Key {
    /// The key as text (`tenants/acme/snapshots/…`).
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Kinds of tenant objects, each under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Wrapped master keys.
    Keys,
    /// Sealed data-key rings.
    Keyring,
    /// Packs (sharded by the first two hex digits).
    Packs,
    /// Index deltas.
    Index,
    /// Snapshot records.
    Snapshots,
    /// Lock records.
    Locks,
    /// Hold records, one per held snapshot (mutable: `hold add` overwrites).
    Holds,
    /// Audit log entries, one object per entry, named by sequence number.
    Audit,
    /// Sealed tenant metadata: `settings` (mutable), `rotation` marker.
    Meta,
    /// Tombstones: what forget and prune quarantined, and undelete records.
    Tombstones,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Keys => "keys",
            Kind::Keyring => "keyring",
            Kind::Packs => "packs",
            Kind::Index => "index",
            Kind::Snapshots => "snapshots",
            Kind::Locks => "locks",
            Kind::Holds => "holds",
            Kind::Audit => "audit",
            Kind::Meta => "meta",
            Kind::Tombstones => "tombstones",
        }
    }
}

/// An object found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Final name component (an id in hex for most kinds).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, Unix ms, by the store's clock.
    pub modified_ms: i64,
}

/// Fault injection, set from `STRONGROOM_FAULT` (test builds only, see
/// [`crate::testhook`]):
/// `fail-put:N` fails the N-th write with an error; `abort-put:N` aborts the
/// process (like `kill -9`) just before the N-th write.
#[derive(Debug, Default)]
struct Faults {
    fail_put: Option<u64>,
    abort_put: Option<u64>,
    puts: AtomicU64,
}

impl Faults {
    fn from_env() -> Self {
        let mut f = Faults::default();
        if let Some(v) = crate::testhook::var("STRONGROOM_FAULT") {
            for part in v.split(',') {
                if let Some((k, n)) = part.split_once(':') {
                    let n = n.parse().ok();
                    match k {
                        "fail-put" => f.fail_put = n,
                        "abort-put" => f.abort_put = n,
                        _ => {}
                    }
                }
            }
        }
        f
    }
}

/// A bandwidth limit: a token bucket of `bytes_per_s`, holding at most
/// one second's worth. A request takes its bytes from the bucket, which
/// may go into debt; whoever finds it in debt waits until it is paid. So
/// concurrent requests share the limit, and the average rate over any
/// stretch longer than a request stays at or below it (a single request
/// is not slowed down in the middle: pacing is per request, like
/// restic's limiter on whole pack uploads).
#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_s: f64,
    state: std::sync::Mutex<BucketState>,
    /// Bytes taken so far: what the limit covered, for the logs.
    paced: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct BucketState {
    /// Bytes available; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: std::time::Instant,
}

impl TokenBucket {
    /// A full bucket of `bytes_per_s` (at least 1) as of `now`.
    pub fn new(bytes_per_s: u64, now: std::time::Instant) -> Self {
        let rate = bytes_per_s.max(1) as f64;
        Self {
            bytes_per_s: rate,
            state: std::sync::Mutex::new(BucketState { tokens: rate, at: now }),
            paced: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Bytes taken so far.
    pub fn paced(&self) -> u64 {
        self.paced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `n` bytes at `now`; returns how long the caller must wait
    /// before sending (or after receiving) them. Pure arithmetic on the
    /// given clock, so tests can drive it.
    pub fn take(&self, n: u64, now: std::time::Instant) -> Duration {
        self.paced.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.bytes_per_s).min(self.bytes_per_s);
        s.at = s.at.max(now);
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.bytes_per_s)
        }
    }

    /// [`TokenBucket::take`] now, then waits as long as it says.
    async fn pace(&self, n: u64) {
        let wait = self.take(n, std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// How many requests a store (and its clones) made, by kind: what a
/// command costs on object storage, where each request is billed and is
/// a round trip. A local store's reads and listings served from its
/// directory count as the request they stand for.
#[derive(Debug, Default)]
pub struct Requests {
    get: AtomicU64,
    get_range: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    /// Object bytes read (gets and range reads).
    bytes_in: AtomicU64,
    /// Object bytes written (puts).
    bytes_out: AtomicU64,
}

/// A snapshot of [`Requests`], by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestCounts {
    /// Whole-object reads.
    pub get: u64,
    /// Byte-range reads.
    pub get_range: u64,
    /// Size (metadata) requests.
    pub head: u64,
    /// Writes, conditional or not.
    pub put: u64,
    /// Listings (one per listing call; a backend may page a long one).
    pub list: u64,
    /// Deletions.
    pub delete: u64,
    /// Object bytes read by gets and range reads.
    pub bytes_in: u64,
    /// Object bytes written by puts.
    pub bytes_out: u64,
}

impl std::fmt::Display for RequestCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "get {}, range {}, head {}, put {}, list {}, delete {}, downloaded {}, uploaded {}",
            self.get, self.get_range, self.head, self.put, self.list, self.delete, self.bytes_in, self.bytes_out
        )
    }
}

impl Requests {
    /// Counts one request of `kind` on `path` (logged at trace level).
    fn one(counter: &AtomicU64, kind: &'static str, path: &dyn std::fmt::Display) {
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::trace!("store request: {kind} {path}");
    }

    /// Counts `n` object bytes moved in one direction.
    fn bytes(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn counts(&self) -> RequestCounts {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            get: n(&self.get),
            get_range: n(&self.get_range),
            head: n(&self.head),
            put: n(&self.put),
            list: n(&self.list),
            delete: n(&self.delete),
            bytes_in: n(&self.bytes_in),
            bytes_out: n(&self.bytes_out),
        }
    }
}

/// Upload and download limits of a store (`--limit-upload`,
/// `--limit-download`); `None`: unlimited.
#[derive(Debug, Default)]
struct Limits {
    upload: Option<TokenBucket>,
    download: Option<TokenBucket>,
}

/// A repository's store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    faults: Arc<Faults>,
    /// Bandwidth limits, shared by every clone of the store.
    limits: Arc<Limits>,
    /// A local store's own puts and reads (see [`crate::direct`]); its
    /// directory, which [`Store::list_names`] and small reads use directly.
    local: Option<Arc<crate::direct::Local>>,
    /// Requests made, shared by every clone of the store.
    requests: Arc<Requests>,
    /// A successful put means the store holds exactly the bytes sent (see
    /// [`Store::verifies_puts`]).
    verified_puts: bool,
    /// An S3 store's client for the object-lock requests (see
    /// [`crate::object_lock`]).
    object_lock: Option<Arc<crate::object_lock::S3Lock>>,
    /// Retention given to each retained object this store (and its
    /// clones) creates, once the repository set it.
    retain: Arc<std::sync::Mutex<Option<crate::object_lock::Retain>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

/// Settings for opening remote stores.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Endpoint of an S3-compatible server (path-style requests).
    pub s3_endpoint: Option<String>,
    /// How long one request may be retried (with exponential backoff and
    /// jitter) on transient errors: connection failures, timeouts, 5xx and
    /// throttling (429, S3 `SlowDown`). Zero disables retries.
    pub retry_timeout: Duration,
    /// Backend settings as object_store config keys and values (e.g.
    /// `aws_access_key_id`, `azure_storage_use_emulator`), applied over
    /// what the environment says.
    pub config: Vec<(String, String)>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { s3_endpoint: None, retry_timeout: DEFAULT_RETRY_TIMEOUT, config: Vec::new() }
    }
}

/// Default of [`OpenOptions::retry_timeout`]: below the 5 minutes after
/// which signed requests expire.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time to set up a connection before the attempt counts as failed.
const CONNECT_TIMEOUT: &str = "10s";
/// Time one request may take, a whole pack upload included (16 MiB at
/// 1 MiB/s fits).
const REQUEST_TIMEOUT: &str = "300s";

impl Store {
    /// Wraps any object store (unit tests use `InMemory`).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, url: &str) -> Self {
        Self {
            inner,
            url: url.to_string(),
            faults: Arc::new(Faults::from_env()),
            limits: Arc::new(Limits::default()),
            local: None,
            requests: Arc::new(Requests::default()),
            verified_puts: false,
            object_lock: None,
            retain: Arc::default(),
        }
    }

    /// This store with bandwidth limits in bytes per second for what it
    /// writes (`upload`) and reads (`download`); 0 is unlimited. The
    /// limits cover object bytes (puts, gets, range reads), not listings
    /// or other small requests.
    pub fn with_limits(self, upload_bytes_per_s: u64, download_bytes_per_s: u64) -> Self {
        let now = std::time::Instant::now();
        let bucket = |rate: u64| (rate > 0).then(|| TokenBucket::new(rate, now));
        Self {
            limits: Arc::new(Limits { upload: bucket(upload_bytes_per_s), download: bucket(download_bytes_per_s) }),
            ..self
        }
    }

    /// Opens a repository URL: a path, `file://`, `s3://`, `az://` or `gs://`.
    /// With `create`, a missing local directory is created.
    pub fn open(url: &str, opts: &OpenOptions, create: bool) -> Result<Self> {
        let bad = |why: String| Error::BadUrl { url: url.to_string(), why };
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s, r),
            None => ("file", url),
        };
        let mut local: Option<Arc<crate::direct::Local>> = None;
        let mut object_lock = None;
        let inner: Arc<dyn ObjectStore> = match scheme {
            "file" => {
                let l = Arc::new(open_local(url, rest, create)?);
                local = Some(l.clone());
                Arc::new(l.object_store())
            }
            "s3" => {
                let (s3, lock) = open_s3(url, rest, opts)?;
                object_lock = lock;
                s3
            }
            "az" | "azure" => {
                // `AZURE_STORAGE_USE_EMULATOR=true` (read by `from_env`)
                // selects Azurite's well-known account over plain HTTP.
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry_config(opts))
                    .with_config(
                        object_store::azure::AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        CONNECT_TIMEOUT,
                    )
                    .with_config(
                        object_store::azure::AzureConfigKey::Client(ClientConfigKey::Timeout),
                        REQUEST_TIMEOUT,
                    );
                for (k, v) in &opts.config {
                    b = b.with_config(k.parse().map_err(|e: object_store::Error| bad(e.to_string()))?, v);
                }
                let az = b.build().map_err(|e| bad(e.to_string()))?;
                with_prefix(Arc::new(az), rest)
            }
            "gs" => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry_config(opts))
                    .with_config(
                        object_store::gcp::GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        CONNECT_TIMEOUT,
                    )
                    .with_config(object_store::gcp::GoogleConfigKey::Client(ClientConfigKey::Timeout), REQUEST_TIMEOUT);
                for (k, v) in &opts.config {
                    b = b.with_config(k.parse().map_err(|e: object_store::Error| bad(e.to_string()))?, v);
                }
                let gs = b.build().map_err(|e| bad(e.to_string()))?;
                with_prefix(Arc::new(gs), rest)
            }
            other => {
                return Err(bad(format!("unsupported scheme {other:?} (use a path, file://, s3://, az:// or gs://)")))
            }
        };
        // A local store writes each object in full and durably, or
        // fails (see [`crate::direct`]); an S3 store sends a checksum the
        // server verifies (see [`open_s3`]). Azure and GCS get no such
        // check here: their uploads are followed by a size check.
        let verified_puts = local.is_some() || scheme == "s3";
        Ok(Self { local, verified_puts, object_lock, ..Self::from_object_store(inner, url) })
    }

    /// The object-lock client of an S3 store with static credentials.
    pub fn object_lock_client(&self) -> Option<Arc<crate::object_lock::S3Lock>> {
        self.object_lock.clone()
    }

    /// From now on, every retained object ([`crate::object_lock::retained`])
    /// this store or a clone creates gets `retain` right after its put.
    pub fn set_retention(&self, retain: crate::object_lock::Retain) {
        *self.retain.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(retain);
    }

    /// The retention new objects get, if any.
    pub fn retention(&self) -> Option<crate::object_lock::Retain> {
        self.retain.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where an object lives on disk, for a local store (`None` for others).
    pub fn local_file(&self, path: &Key) -> Option<std::path::PathBuf> {
        self.local_root().map(|root| root.join(path.as_str()))
    }

    /// Where this store is, the same however it was named: `file://` and
    /// the absolute path for a local store, else the URL without a trailing
    /// `/`. Names what a host remembers of a repository (escrow key, audit
    /// head), which must not follow anything written in the store.
    pub fn location(&self) -> String {
        match self.local_root() {
            Some(root) => format!("file://{}", root.display()),
            None => self.url.trim_end_matches('/').to_string(),
        }
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.local.as_deref().map(crate::direct::Local::root)
    }

    /// Key of the repository config.
    pub fn config_path() -> Key {
        Key(Path::from("config"))
    }

    /// Key of the repository's escrow public key (plaintext, mutable).
    pub fn escrow_path() -> Key {
        Key(Path::from("escrow"))
    }

    /// Key of the record that `tenant` was erased at `unix_s` (plaintext,
    /// at the repository root: the tenant's own objects are gone).
    pub fn erasure_path(tenant: &TenantName, unix_s: i64) -> Key {
        Key(Path::from(format!("erasures/{}-{unix_s}", tenant.as_str())))
    }

    /// Key of a tenant object.
    pub fn path(tenant: &TenantName, kind: Kind, name: &str) -> Key {
        Key(match kind {
            Kind::Packs => {
                Path::from(format!("tenants/{}/packs/{}/{}", tenant.as_str(), name.get(..2).unwrap_or("00"), name))
            }
            _ => Path::from(format!("tenants/{}/{}/{}", tenant.as_str(), kind.dir(), name)),
        })
    }

    fn prefix(tenant: &TenantName, kind: Kind) -> Path {
        Path::from(format!("tenants/{}/{}", tenant.as_str(), kind.dir()))
    }

    fn before_put(&self, path: &Key) -> Result<()> {
        let n = self.faults.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.abort_put == Some(n) {
            // Simulates `kill -9` at this instant: no destructors, no flush.
            std::process::abort();
        }
        if self.faults.fail_put == Some(n) {
            return Err(Error::Injected { path: path.to_string() });
        }
        Ok(())
    }

    /// Creates an object; fails with `AlreadyExists` if it is there. On a
    /// local store it is on disk when this returns (see [`crate::direct`]).
    pub async fn create(&self, path: &Key, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, PutMode::Create, false).await
    }

    /// Bytes paced so far under the upload and the download limit (by
    /// this store and its clones); `None` for a direction without a limit.
    pub fn paced(&self) -> (Option<u64>, Option<u64>) {
        (self.limits.upload.as_ref().map(TokenBucket::paced), self.limits.download.as_ref().map(TokenBucket::paced))
    }

    /// Whether a successful put means the store holds exactly the bytes
    /// sent: true for a local store (each object written in full, synced,
    /// then linked into place) and for S3 (every PUT carries a SHA-256
    /// checksum the server verifies before storing). A caller that must
    /// know an object arrived whole checks its size elsewhere.
    pub fn verifies_puts(&self) -> bool {
        self.verified_puts
    }

    /// Requests made so far by this store and its clones, by kind.
    pub fn requests(&self) -> RequestCounts {
        self.requests.counts()
    }

    /// [`Store::create`] of an object that need not survive a power cut
    /// (a lock: one lost with the machine belonged to a process that died
    /// with it), so a local store does not wait for the disk.
    pub async fn create_volatile(&self, path: &Key, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, PutMode::Create, true).await
    }

    /// [`Store::overwrite`] of an object that need not survive a power
    /// cut (see [`Store::create_volatile`]).
    pub async fn overwrite_volatile(&self, path: &Key, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, PutMode::Overwrite, true).await
    }

    async fn put_with(&self, key: &Key, bytes: Bytes, mode: PutMode, volatile: bool) -> Result<()> {
        let action = if matches!(mode, PutMode::Overwrite) { "overwrite" } else { "create" };
        self.before_put(key)?;
        Requests::one(&self.requests.put, "put", key);
        Requests::bytes(&self.requests.bytes_out, bytes.len());
        if let Some(limit) = &self.limits.upload {
            limit.pace(bytes.len() as u64).await;
        }
        let path = &key.0;
        let r = match &self.local {
            Some(local) => local.put(path, bytes, mode, !volatile).await,
            None => {
                let opts = PutOptions { mode, ..Default::default() };
                self.inner.put_opts(path, PutPayload::from(bytes), opts).await.map(drop)
            }
        };
        r.map_err(|e| Error::from_os(path, e).refused(action))?;
        // Object lock: retention right after the put (object_store sends
        // no lock headers); see docs/FORMAT.md section 15.
        if let Some(retain) = self.retention().filter(|_| crate::object_lock::retained(key.as_str())) {
            retain.apply(key).await?;
        }
        Ok(())
    }

    /// Creates an object whose name is the hash of its bytes: an existing
    /// object of that name already holds the same bytes, so it counts as done.
    pub async fn create_content_addressed(&self, path: &Key, bytes: Bytes) -> Result<()> {
        match self.create(path, bytes).await {
            Err(Error::AlreadyExists { .. }) => Ok(()),
            other => other,
        }
    }

    /// [`Store::create_content_addressed`], then the size the store holds
    /// under that name, for the caller to compare with what it sent (a
    /// truncated upload must not be named by an index delta). Without a
    /// request when this put wrote the object and the store verifies its
    /// writes ([`Store::verifies_puts`]); with a HEAD request otherwise,
    /// and always for an object already there (put by someone else, and
    /// maybe damaged since).
    pub async fn create_stored_size(&self, path: &Key, bytes: Bytes) -> Result<u64> {
        let len = bytes.len() as u64;
        match self.create(path, bytes).await {
            Ok(()) if self.verified_puts => Ok(len),
            Ok(()) | Err(Error::AlreadyExists { .. }) => self.size(path).await,
            Err(e) => Err(e),
        }
    }

    /// Writes an object, replacing any previous one (durably, as
    /// [`Store::create`]).
    pub async fn overwrite(&self, path: &Key, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, PutMode::Overwrite, false).await
    }

    /// Reads a whole object (paced after the read under a download limit:
    /// its size is known only then).
    pub async fn get(&self, key: &Key) -> Result<Bytes> {
        let b = self.get_unpaced(key).await?;
        Requests::bytes(&self.requests.bytes_in, b.len());
        if let Some(limit) = &self.limits.download {
            limit.pace(b.len() as u64).await;
        }
        Ok(b)
    }

    async fn get_unpaced(&self, key: &Key) -> Result<Bytes> {
        let path = &key.0;
        Requests::one(&self.requests.get, "get", path);
        if let Some(root) = self.local_root() {
            if let Some(b) = read_small_file(&root.join(path.as_ref())).map_err(|e| local_error(path, e))? {
                return Ok(b);
            }
        }
        let r = self.inner.get(path).await.map_err(|e| Error::from_os(path, e))?;
        r.bytes().await.map_err(|e| Error::from_os(path, e))
    }

    /// Reads a whole object; `None` when there is none.
    pub async fn get_opt(&self, path: &Key) -> Result<Option<Bytes>> {
        match self.get(path).await {
            Ok(b) => Ok(Some(b)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a byte range.
    pub async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
        let path = &key.0;
        let want = range.end.saturating_sub(range.start);
        Requests::one(&self.requests.get_range, "range", path);
        if let Some(limit) = &self.limits.download {
            limit.pace(want).await;
        }
        // A small range (a tree, a chunk) is read here, as a small object
        // is (see [`read_small_file`]); a large one (a pack) directly.
        let here = match &self.local {
            Some(local) if want <= INLINE_READ_BYTES => {
                let file = local.root().join(path.as_ref());
                read_range(&file, range.start, want as usize).map_err(|e| local_error(path, e))?
            }
            Some(local) => local.get_range(path, range.clone()).await,
            None => None,
        };
        let b = match here {
            Some(b) => b,
            None => self.inner.get_range(path, range).await.map_err(|e| Error::from_os(path, e))?,
        };
        if b.len() as u64 != want {
            return Err(Error::Backend {
                path: path.to_string(),
                why: format!("short read: {} of {want} bytes", b.len()),
            });
        }
        Requests::bytes(&self.requests.bytes_in, b.len());
        Ok(b)
    }

    /// Size of an object.
    pub async fn size(&self, key: &Key) -> Result<u64> {
        let path = &key.0;
        Requests::one(&self.requests.head, "head", path);
        self.inner.head(path).await.map(|m| m.size).map_err(|e| Error::from_os(path, e))
    }

    /// Size of an object; `None` when there is none.
    pub async fn size_opt(&self, path: &Key) -> Result<Option<u64>> {
        match self.size(path).await {
            Ok(n) => Ok(Some(n)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size and last modification (Unix ms, by the store's clock).
    pub async fn head(&self, key: &Key) -> Result<(u64, i64)> {
        let path = &key.0;
        Requests::one(&self.requests.head, "head", path);
        self.inner
            .head(path)
            .await
            .map(|m| (m.size, m.last_modified.timestamp_millis()))
            .map_err(|e| Error::from_os(path, e))
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, key: &Key) -> Result<()> {
        let path = &key.0;
        Requests::one(&self.requests.delete, "delete", path);
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::from_os(path, e).refused("delete")),
        }
    }

    /// Lists a tenant's objects of one kind.
    pub async fn list(&self, tenant: &TenantName, kind: Kind) -> Result<Vec<Listed>> {
        let prefix = Self::prefix(tenant, kind);
        Requests::one(&self.requests.list, "list", &prefix);
        let metas: Vec<_> = self
            .inner
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::from_os(&prefix, e).refused("list"))?;
        Ok(metas.into_iter().filter_map(listed).collect())
    }

    /// Names of a tenant's objects of one kind, without their sizes. On a
    /// local store the directory is read without a `stat` of each entry
    /// (the listing of a repository of many snapshots was most of what an
    /// unchanged backup waited for at every open); elsewhere it is
    /// [`Store::list`]'s.
    pub async fn list_names(&self, tenant: &TenantName, kind: Kind) -> Result<Vec<String>> {
        match self.local_names(tenant, kind).await? {
            Some(names) => Ok(names),
            None => Ok(self.list(tenant, kind).await?.into_iter().map(|l| l.name).collect()),
        }
    }

    /// [`Store::list_names`] of the objects whose names sort after `offset`
    /// (what [`Store::list_after`] lists), in no particular order.
    pub async fn list_names_after(&self, tenant: &TenantName, kind: Kind, offset: &str) -> Result<Vec<String>> {
        match self.local_names(tenant, kind).await? {
            Some(mut names) => {
                names.retain(|n| n.as_str() > offset);
                Ok(names)
            }
            None => Ok(self.list_after(tenant, kind, offset).await?.into_iter().map(|l| l.name).collect()),
        }
    }

    /// The names in a local store's flat directory of `kind` (see
    /// [`read_flat_dir`]); None where the object_store listing must answer:
    /// a remote store, packs (sharded into directories), or a directory
    /// that holds a directory.
    async fn local_names(&self, tenant: &TenantName, kind: Kind) -> Result<Option<Vec<String>>> {
        let Some(root) = self.local_root().filter(|_| kind != Kind::Packs) else { return Ok(None) };
        let dir = root.join(Self::prefix(tenant, kind).as_ref());
        Requests::one(&self.requests.list, "list", &dir.display());
        // Read here, as a small object is (see [`read_small_file`]).
        read_flat_dir(&dir).map_err(|e| Error::Backend { path: dir.display().to_string(), why: e.to_string() })
    }

    /// Lists every object under a tenant's prefix, with its full key and size.
    pub async fn list_tenant_all(&self, tenant: &TenantName) -> Result<Vec<(Key, u64)>> {
        let prefix = Path::from(format!("tenants/{}", tenant.as_str()));
        Requests::one(&self.requests.list, "list", &prefix);
        let metas: Vec<_> =
            self.inner.list(Some(&prefix)).try_collect().await.map_err(|e| Error::from_os(&prefix, e))?;
        Ok(metas.into_iter().map(|m| (Key(m.location), m.size)).collect())
    }

    /// Names of all tenants that have a key slot (no key needed). A tenant
    /// whose erase was interrupted has none and is not listed.
    pub async fn list_tenants(&self) -> Result<Vec<String>> {
        let prefix = Path::from("tenants");
        Requests::one(&self.requests.list, "list", &prefix);
        let r = self.inner.list_with_delimiter(Some(&prefix)).await.map_err(|e| Error::from_os(&prefix, e))?;
        let mut names = Vec::new();
        for p in &r.common_prefixes {
            let Some(name) = p.filename() else { continue };
            let Ok(t) = TenantName::new(name) else { continue };
            if !self.list(&t, Kind::Keys).await?.is_empty() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Lists one kind of a tenant's objects starting after `offset` (a name).
    pub async fn list_after(&self, tenant: &TenantName, kind: Kind, offset: &str) -> Result<Vec<Listed>> {
        let prefix = Self::prefix(tenant, kind);
        let offset = Path::from(format!("{prefix}/{offset}"));
        Requests::one(&self.requests.list, "list", &prefix);
        let metas: Vec<_> = self
            .inner
            .list_with_offset(Some(&prefix), &offset)
            .try_collect()
            .await
            .map_err(|e| Error::from_os(&prefix, e))?;
        Ok(metas.into_iter().filter_map(listed).collect())
    }
}

/// False for the names of temporary files a backend may leave beside the
/// objects: hidden ones, and staging files `NAME#DIGITS` (see
/// [`crate::direct`]); readers skip them (docs/FORMAT.md, section 16).
fn is_object_name(name: &str) -> bool {
    !name.starts_with('.') && !name.contains('#')
}

/// A listing's entry for an object; None for a temporary file.
fn listed(m: object_store::ObjectMeta) -> Option<Listed> {
    let name = m.location.filename().filter(|n| is_object_name(n))?.to_string();
    Some(Listed { name, size: m.size, modified_ms: m.last_modified.timestamp_millis() })
}

/// Objects (and ranges) of a local store up to this size are read by the
/// calling thread when the page cache holds them ([`read_small_file`]).
const INLINE_READ_BYTES: u64 = 256 * 1024;

/// Reads a local object of at most [`INLINE_READ_BYTES`] on the calling
/// thread if the page cache holds it; None when it is larger (or not a
/// file) or its bytes would have to come from the disk: the caller reads
/// it through `object_store` and its blocking pool then. What is read
/// whole is small (the config, keys, snapshots, index deltas, audit
/// records, tree packs) and usually cached: such a read takes
/// microseconds, less than the hand-off to a pool thread and back, and a
/// command opening a repository makes a dozen in sequence. A read that
/// would wait for the disk stays on the pool, where several proceed at
/// once.
fn read_small_file(file: &std::path::Path) -> std::io::Result<Option<Bytes>> {
    let f = std::fs::File::open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() > INLINE_READ_BYTES {
        return Ok(None);
    }
    Ok(read_cached(&f, 0, meta.len() as usize))
}

/// [`read_small_file`] for `len` bytes at `offset` of an object: its bytes
/// (fewer where the object ends first), or None when they are not all in
/// the page cache.
fn read_range(file: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Option<Bytes>> {
    Ok(read_cached(&std::fs::File::open(file)?, offset, len))
}

/// `len` bytes at `offset` of `f` (fewer at its end), read only from the
/// page cache (`RWF_NOWAIT`); None if any would have to come from the
/// disk, or the file system cannot read without waiting.
fn read_cached(f: &std::fs::File, offset: u64, len: usize) -> Option<Bytes> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        let mut slice = [std::io::IoSliceMut::new(&mut buf[n..])];
        match preadv2(f, &mut slice, offset + n as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    Some(Bytes::from(buf))
}

/// A local read's error, as the object_store path reports it.
fn local_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: path.to_string() },
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { action: "read", path: path.to_string() },
        _ => Error::Backend { path: path.to_string(), why: e.to_string() },
    }
}

/// The object names in a local directory of objects: its files, less the
/// temporary ones ([`is_object_name`]). A missing directory
/// holds none; `None` when it holds a directory.
fn read_flat_dir(dir: &std::path::Path) -> std::io::Result<Option<Vec<String>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            return Ok(None);
        }
        if let Some(name) = entry.file_name().to_str().filter(|n| is_object_name(n)) {
            names.push(name.to_string());
        }
    }
    Ok(Some(names))
}

/// The local store of `url`, in directory `rest` (relative to the
/// current one), created (mode 0700) with `create`.
fn open_local(url: &str, rest: &str, create: bool) -> Result<crate::direct::Local> {
    let bad = |why: String| Error::BadUrl { url: url.to_string(), why };
    let path = std::path::PathBuf::from(rest);
    let path =
        if path.is_absolute() { path } else { std::env::current_dir().map_err(|e| bad(e.to_string()))?.join(path) };
    if create {
        // Mode 0700 for what `init` creates; a directory that
        // exists keeps the mode its owner gave it.
        crate::private::create_dir_all(&path).map_err(|e| bad(format!("cannot create directory: {e}")))?;
    } else if !path.is_dir() {
        return Err(Error::NotFound { path: path.display().to_string() });
    }
    crate::direct::Local::open(path).map_err(|e| bad(e.to_string()))
}

/// An S3 store: `s3://BUCKET/PREFIX`, at AWS or at `opts.s3_endpoint`.
type S3Opened = (Arc<dyn ObjectStore>, Option<Arc<crate::object_lock::S3Lock>>);

fn open_s3(url: &str, rest: &str, opts: &OpenOptions) -> Result<S3Opened> {
    let bad = |why: String| Error::BadUrl { url: url.to_string(), why };
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_url(url)
        .with_retry(retry_config(opts))
        .with_config(object_store::aws::AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), CONNECT_TIMEOUT)
        .with_config(object_store::aws::AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), REQUEST_TIMEOUT);
    for (k, v) in &opts.config {
        b = b.with_config(k.parse().map_err(|e: object_store::Error| bad(e.to_string()))?, v);
    }
    if let Some(ep) = &opts.s3_endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(bad(format!("S3 endpoint {ep:?} must start with http:// or https://")));
        }
        // S3-compatible servers are addressed path-style
        // (`ENDPOINT/BUCKET/KEY`); plain HTTP only when asked
        // for by the endpoint itself.
        b = b.with_endpoint(ep).with_virtual_hosted_style_request(false).with_allow_http(ep.starts_with("http://"));
    }
    // `PutMode::Create` sends `If-None-Match: *`: AWS S3 and
    // SeaweedFS honour it (tests/it/backends.rs races it).
    b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
    // Every PUT carries `x-amz-checksum-sha256` of its body: the
    // server verifies the bytes it received against it and
    // rejects a mismatch (`BadDigest`), so a pack corrupted in
    // transit is never stored under its name.
    b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
    let lock = s3_lock_client(&b, rest);
    let s3 = b.build().map_err(|e| bad(e.to_string()))?;
    Ok((with_prefix(Arc::new(s3), rest), lock))
}

/// The object-lock client for the same server, bucket, prefix and
/// credentials object_store was given; `None` without static credentials.
fn s3_lock_client(b: &object_store::aws::AmazonS3Builder, rest: &str) -> Option<Arc<crate::object_lock::S3Lock>> {
    use object_store::aws::AmazonS3ConfigKey as K;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let region = b.get_config_value(&K::Region).unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = b.get_config_value(&K::VirtualHostedStyleRequest).as_deref() == Some("true");
    let endpoint = match b.get_config_value(&K::Endpoint) {
        Some(ep) => ep,
        None => format!("https://s3.{region}.amazonaws.com"),
    };
    let target = crate::object_lock::S3Target {
        virtual_hosted: virtual_hosted || b.get_config_value(&K::Endpoint).is_none(),
        endpoint,
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        region,
        access_key: b.get_config_value(&K::AccessKeyId)?,
        secret_key: b.get_config_value(&K::SecretAccessKey)?,
        token: b.get_config_value(&K::Token),
    };
    crate::object_lock::S3Lock::new(target).ok().map(Arc::new)
}

fn retry_config(opts: &OpenOptions) -> RetryConfig {
    RetryConfig {
        // object_store draws each wait at random between the first backoff
        // and the growing bound (full jitter).
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: if opts.retry_timeout.is_zero() { 0 } else { 10 },
        retry_timeout: opts.retry_timeout,
    }
}

fn with_prefix(store: Arc<dyn ObjectStore>, rest: &str) -> Arc<dyn ObjectStore> {
    // `rest` is `bucket/prefix…`; the builder took the bucket from the URL.
    let prefix = rest.split_once('/').map(|(_, p)| p.trim_matches('/')).unwrap_or("");
    if prefix.is_empty() {
        store
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stored_sizes_are_asked_only_where_a_put_is_not_verified() {
        let t = TenantName::new("acme").unwrap();
        let p = Store::path(&t, Kind::Packs, "abcd");
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path().to_str().unwrap(), &OpenOptions::default(), true).unwrap();
        assert!(local.verifies_puts());
        assert_eq!(local.create_stored_size(&p, Bytes::from_static(b"pack")).await.unwrap(), 4);
        assert_eq!(local.requests(), RequestCounts { put: 1, bytes_out: 4, ..Default::default() });
        // An object already there may be someone else's, maybe damaged:
        // its size is asked.
        assert_eq!(local.create_stored_size(&p, Bytes::from_static(b"other")).await.unwrap(), 4);
        // The bytes sent count, stored or not.
        assert_eq!(local.requests(), RequestCounts { put: 2, head: 1, bytes_out: 9, ..Default::default() });
        let memory = Store::from_object_store(Arc::new(object_store::memory::InMemory::new()), "memory:");
        assert!(!memory.verifies_puts());
        assert_eq!(memory.create_stored_size(&p, Bytes::from_static(b"pack")).await.unwrap(), 4);
        assert_eq!(memory.clone().requests(), RequestCounts { put: 1, head: 1, bytes_out: 4, ..Default::default() });
    }

    #[tokio::test]
    async fn create_is_exclusive_and_list_works() {
        let s = Store::from_object_store(Arc::new(object_store::memory::InMemory::new()), "memory:");
        let t = TenantName::new("acme").unwrap();
        let p = Store::path(&t, Kind::Snapshots, "abcd");
        s.create(&p, Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(s.create(&p, Bytes::from_static(b"y")).await, Err(Error::AlreadyExists { .. })));
        assert_eq!(s.get(&p).await.unwrap(), Bytes::from_static(b"x"));
        let l = s.list(&t, Kind::Snapshots).await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].name.as_str(), l[0].size), ("abcd", 1));
        // A tenant is listed once it has a key slot.
        assert!(s.list_tenants().await.unwrap().is_empty());
        s.create(&Store::path(&t, Kind::Keys, "k1"), Bytes::from_static(b"slot")).await.unwrap();
        assert_eq!(s.list_tenants().await.unwrap(), vec!["acme".to_string()]);
        assert_eq!(Store::path(&t, Kind::Packs, "ff00").to_string(), "tenants/acme/packs/ff/ff00");
        assert!(matches!(s.get(&Store::config_path()).await, Err(Error::NotFound { .. })));
    }

    /// A local store reads small objects and ranges on the calling thread
    /// when the page cache holds them, and through object_store otherwise:
    /// both must return the same bytes and errors.
    #[tokio::test]
    async fn local_reads_answer_as_the_object_store_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap(), &OpenOptions::default(), true).unwrap();
        let t = TenantName::new("acme").unwrap();
        let inline = INLINE_READ_BYTES as usize;
        for (i, len) in [0, 1, 4095, 70_000, inline, inline + 1, 3 << 20].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let p = Store::path(&t, Kind::Packs, &format!("{i:02x}{len:x}"));
            s.create(&p, Bytes::from(bytes.clone())).await.unwrap();
            assert_eq!(s.get(&p).await.unwrap(), bytes, "{len} bytes whole");
            assert_eq!(s.inner.get(&p.0).await.unwrap().bytes().await.unwrap(), bytes);
            for r in [0..len as u64, (len / 3) as u64..(len / 2) as u64, (len as u64).saturating_sub(10)..len as u64] {
                let (a, b) = (r.start as usize, r.end as usize);
                assert_eq!(s.get_range(&p, r.clone()).await.unwrap(), bytes[a..b], "{len} bytes, {r:?}");
            }
            // A range past the end is a short read, whichever path reads it.
            let past = len as u64..len as u64 + 100;
            assert!(
                matches!(s.get_range(&p, past).await, Err(Error::Backend { why, .. }) if why.contains("short read"))
            );
            // Out of the page cache, the same bytes come through the pool.
            let file = std::fs::File::open(dir.path().join(p.as_ref())).unwrap();
            let evict = || {
                rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            };
            evict();
            let cold = (len / 2) as u64..len as u64;
            assert_eq!(s.get_range(&p, cold.clone()).await.unwrap(), bytes[cold.start as usize..], "{len} cold");
            evict();
            assert_eq!(s.get(&p).await.unwrap(), bytes, "{len} bytes whole, cold");
        }
        let missing = Store::path(&t, Kind::Snapshots, "0000");
        assert!(matches!(s.get(&missing).await, Err(Error::NotFound { .. })));
        assert!(matches!(s.get_range(&missing, 0..10).await, Err(Error::NotFound { .. })));
    }

    /// A local store's names are read from the directory without a stat
    /// each: they must be the listing's names, temporary files left out,
    /// and none for a kind never written.
    #[tokio::test]
    async fn local_names_are_the_listings_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap(), &OpenOptions::default(), true).unwrap();
        let t = TenantName::new("acme").unwrap();
        assert!(s.list_names(&t, Kind::Snapshots).await.unwrap().is_empty());
        for n in ["aa01", "bb02", "cc03"] {
            s.create(&Store::path(&t, Kind::Snapshots, n), Bytes::from_static(b"x")).await.unwrap();
        }
        let snaps = dir.path().join("tenants/acme/snapshots");
        std::fs::write(snaps.join("dd04#1"), b"staging").unwrap();
        std::fs::write(snaps.join(".hidden"), b"x").unwrap();
        let mut names = s.list_names(&t, Kind::Snapshots).await.unwrap();
        names.sort();
        let mut listed: Vec<String> = s.list(&t, Kind::Snapshots).await.unwrap().into_iter().map(|l| l.name).collect();
        listed.sort();
        assert_eq!(names, vec!["aa01", "bb02", "cc03"]);
        assert_eq!(names, listed);
        let mut after = s.list_names_after(&t, Kind::Snapshots, "aa01").await.unwrap();
        after.sort();
        let listed_after: Vec<String> =
            s.list_after(&t, Kind::Snapshots, "aa01").await.unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(after, vec!["bb02", "cc03"]);
        assert_eq!(after, listed_after);
        // Packs are sharded into directories: the listing answers for them.
        s.create(&Store::path(&t, Kind::Packs, "ff00"), Bytes::from_static(b"p")).await.unwrap();
        assert_eq!(s.list_names(&t, Kind::Packs).await.unwrap(), vec!["ff00"]);
        // A directory where objects should be: the listing answers too.
        std::fs::create_dir(snaps.join("sub")).unwrap();
        std::fs::write(snaps.join("sub/ee05"), b"x").unwrap();
        let mut names = s.list_names(&t, Kind::Snapshots).await.unwrap();
        names.sort();
        assert_eq!(names, vec!["aa01", "bb02", "cc03", "ee05"]);
    }

    /// Opening builds the client only: no request leaves the process, so
    /// this runs without servers (GCS has no usable emulator here).
    #[test]
    fn remote_urls_open_without_requests() {
        let kv = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s3 = OpenOptions {
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            config: kv(&[("aws_access_key_id", "k"), ("aws_secret_access_key", "s"), ("aws_region", "us-east-1")]),
            ..Default::default()
        };
        Store::open("s3://bucket/some/prefix", &s3, false).expect("s3 with an http endpoint");
        let no_scheme = OpenOptions { s3_endpoint: Some("127.0.0.1:1".into()), ..s3.clone() };
        assert!(matches!(Store::open("s3://bucket/p", &no_scheme, false), Err(Error::BadUrl { .. })));
        let unknown = OpenOptions { config: kv(&[("no_such_key", "1")]), ..s3 };
        assert!(matches!(Store::open("s3://bucket/p", &unknown, false), Err(Error::BadUrl { .. })));
        let az = OpenOptions { config: kv(&[("azure_storage_use_emulator", "true")]), ..Default::default() };
        Store::open("az://container/prefix", &az, false).expect("az with the emulator");
        let gs = OpenOptions { config: kv(&[("google_bucket", "bucket")]), ..Default::default() };
        Store::open("gs://bucket/prefix", &gs, false).expect("gs");
        assert!(matches!(Store::open("ftp://x", &OpenOptions::default(), false), Err(Error::BadUrl { .. })));
    }

    /// The limiter's arithmetic on a clock the test moves: a full bucket
    /// lets one second's worth through at once, then each request waits
    /// for its bytes at the limit's rate, debts add up across concurrent
    /// callers, and idle time refills the bucket up to one second's worth.
    #[test]
    fn token_bucket_paces_bytes_at_its_rate() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let b = TokenBucket::new(1000, t0);
        assert_eq!(b.take(1000, t0), Duration::ZERO, "a full bucket: one second's worth at once");
        assert_eq!(b.take(500, t0), Duration::from_millis(500));
        // Another caller at the same instant queues behind the first.
        assert_eq!(b.take(500, t0), Duration::from_millis(1000));
        // 1.5 s later the debt of 1000 bytes is paid and 500 are back.
        assert_eq!(b.take(500, at(1500)), Duration::ZERO);
        // A long idle stretch refills only up to one second's worth.
        assert_eq!(b.take(1000, at(60_000)), Duration::ZERO);
        assert_eq!(b.take(2000, at(60_000)), Duration::from_millis(2000));
        // A clock that does not move forward (a caller that read it
        // earlier) refills nothing and is not a panic.
        assert_eq!(b.take(0, at(59_000)), Duration::from_millis(2000));
        // Over a long run, bytes / time never exceeds the rate.
        let b = TokenBucket::new(4096, t0);
        let mut now = t0;
        let mut sent = 0u64;
        for i in 0..200u64 {
            let n = 1000 + (i * 7919) % 9000;
            now += b.take(n, now);
            sent += n;
        }
        let secs = now.duration_since(t0).as_secs_f64();
        assert!(sent as f64 <= 4096.0 * (secs + 1.0) + 1.0, "{sent} bytes in {secs} s");
        assert!(sent as f64 >= 4096.0 * secs - 1.0, "paced below the rate: {sent} bytes in {secs} s");
    }

    #[tokio::test]
    async fn limited_stores_read_and_write_the_same_bytes_and_pace_each_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap(), &OpenOptions::default(), true)
            .unwrap()
            .with_limits(u64::MAX, u64::MAX);
        let t = TenantName::new("acme").unwrap();
        let p = Store::path(&t, Kind::Packs, "00aa");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        s.create(&p, Bytes::from(bytes.clone())).await.unwrap();
        assert_eq!(s.get(&p).await.unwrap(), bytes);
        assert_eq!(s.get_range(&p, 10..20).await.unwrap(), bytes[10..20]);
        // Every byte went through the limits, counted by the store and
        // its clones alike.
        assert_eq!(s.clone().paced(), (Some(300_000), Some(300_010)));
        let up_only =
            Store::open(dir.path().to_str().unwrap(), &OpenOptions::default(), false).unwrap().with_limits(1 << 30, 0);
        assert_eq!(up_only.get(&p).await.unwrap().len(), 300_000);
        assert_eq!(up_only.paced(), (Some(0), None));
    }
}
