//! The crate-level error, and its classification into kinds that the CLI
//! maps to exit codes.

pub use crate::problems::{Damage, FileError, FileErrors};

/// Broad classes of failure; `cli` maps each to one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Repository or tenant does not exist (exit 10).
    RepoNotFound,
    /// A lock could not be had (exit 11).
    Locked,
    /// Wrong password or key (exit 12).
    BadKey,
    /// The store refused a request for want of a right: a backup host
    /// running a command that deletes (exit 13).
    PermissionDenied,
    /// The user interrupted (exit 130).
    Interrupted,
    /// Stored data is damaged (exit 1).
    Corrupt,
    /// Something the user gave cannot be used (exit 1, as every error
    /// found after the command line parsed: exit 2 is clap's).
    InvalidInput,
    /// A bug in strongroom (exit 1).
    Internal,
    /// Anything else (exit 1).
    Other,
}

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::Error),
    /// Stored bytes are malformed.
    #[error(transparent)]
    Format(#[from] crate::codec::Error),
    /// Authentication failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::Error),
    /// A blob is damaged.
    #[error(transparent)]
    Blob(#[from] crate::blob::Error),
    /// A pack is damaged.
    #[error(transparent)]
    Pack(#[from] crate::pack::Error),
    /// The chunker failed.
    #[error(transparent)]
    Chunk(#[from] crate::chunk::Error),
    /// A bad id or name.
    #[error(transparent)]
    Id(#[from] crate::id::Error),
    /// No repository at the URL.
    #[error("repository {url} does not exist (run `strongroom init` first)")]
    RepoNotFound {
        /// URL.
        url: String,
    },
    /// `init` found a repository.
    #[error("repository {url} already exists")]
    RepoExists {
        /// URL.
        url: String,
    },
    /// `undelete` of a snapshot that is not forgotten, or whose record a
    /// prune has deleted for good.
    #[error(
        "snapshot {snapshot}: not among the forgotten snapshots still in the store (too late if it was forgotten \
         longer ago than the quarantine: a prune has deleted it for good)"
    )]
    NotInQuarantine {
        /// The id or prefix given.
        snapshot: String,
    },
    /// A key rotation's rewrite would end quarantines early: it deletes
    /// everything sealed with the old keys, quarantined objects included.
    #[error(
        "{count} tombstone(s) still in quarantine (forgotten snapshots `undelete` can bring back); a rewrite would \
         delete them for good: run it after the quarantine, or pass --end-quarantine"
    )]
    QuarantinePending {
        /// Tombstones in force.
        count: usize,
    },
    /// A held snapshot is named by a forget tombstone in force.
    #[error(
        "snapshot {snapshot} is held but a tombstone forgets it: prune stopped before changing anything \
         (run `strongroom undelete {snapshot}`)"
    )]
    HeldForgotten {
        /// Short id.
        snapshot: String,
    },
    /// The tenant has no key slots.
    #[error("tenant {tenant} does not exist in repository {url}")]
    TenantNotFound {
        /// Tenant.
        tenant: String,
        /// URL.
        url: String,
    },
    /// No key slot opened with the given secret.
    #[error("wrong password or key: no key slot of tenant {tenant} opens with it")]
    BadKey {
        /// Tenant.
        tenant: String,
    },
    /// The key opened a put-only slot, and the command needs more than a
    /// backup (exit 12, as a wrong password).
    #[error("tenant {tenant}: this key is put-only: it can add backups but not read or delete them")]
    PutOnly {
        /// Tenant.
        tenant: String,
    },
    /// A key handed over by the agent (`--key-fd`) is unreadable or does
    /// not open the tenant (exit 12, as a wrong password).
    #[error("key given with --key-fd: {why}")]
    BadHandoff {
        /// What is wrong.
        why: String,
    },
    /// An object is damaged.
    #[error("{object}: damaged: {why}")]
    Damaged {
        /// The object key.
        object: String,
        /// What is wrong.
        why: String,
    },
    /// Damaged index deltas or snapshot records stop an operation that
    /// would otherwise have to take them for absent (resolving `latest`,
    /// deleting packs or index deltas).
    #[error("{what}: {}; {advice}", list_damaged(.objects))]
    DamagedRecords {
        /// What stopped, and why the damage matters to it.
        what: String,
        /// The damaged objects (store keys), each with what is wrong.
        objects: Vec<Damage>,
        /// How to proceed.
        advice: String,
    },
    /// The repository config differs from what the tenant's binding record
    /// (sealed with the tenant's key) says.
    #[error(
        "repository config does not match tenant {tenant}'s binding record: {field} differs (config {config}, \
         binding {bound}); the config was changed in the store after the tenant was bound to it"
    )]
    ConfigMismatch {
        /// Tenant.
        tenant: String,
        /// The config field.
        field: &'static str,
        /// Its value in the config.
        config: String,
        /// Its value in the binding record.
        bound: String,
    },
    /// The tenant's binding record is missing where it must exist, or
    /// older than one this host saw.
    #[error("{object}: {why}")]
    Binding {
        /// The object key.
        object: String,
        /// What is wrong.
        why: String,
    },
    /// More key slots than one open tries, and none of those tried opened.
    #[error(
        "tenant {tenant}: none of the {tried} key slots tried opens with this key, and {untried} more were not \
         tried (at most {tried} per open; slots nobody added may have been written to the store: remove them)"
    )]
    TooManyKeySlots {
        /// Tenant.
        tenant: String,
        /// Slots tried.
        tried: usize,
        /// Slots left untried.
        untried: usize,
    },
    /// A blob the snapshot needs is not in any index.
    #[error("blob {id} is not in the index (missing or pruned data)")]
    BlobNotFound {
        /// Blob id.
        id: String,
    },
    /// A snapshot reference matched nothing or was ambiguous.
    #[error("{0}")]
    SnapshotRef(String),
    /// A path is not in the snapshot.
    #[error("{path}: not found in snapshot {snapshot}")]
    PathNotFound {
        /// Path.
        path: String,
        /// Snapshot.
        snapshot: String,
    },
    /// Local I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A lock is held by someone else.
    #[error("{0}")]
    Locked(String),
    /// The operation was cancelled.
    #[error("interrupted")]
    Interrupted,
    /// A source command failed.
    #[error("{0}")]
    Source(String),
    /// Something a user gave (an argument, an option, a configuration
    /// value, a path) cannot be used: `WHAT "VALUE": WHY`, or `WHAT: WHY`
    /// when the value is empty or must not be shown (a key file's bytes).
    #[error("{what}{}: {why}", quoted(.value))]
    InvalidInput {
        /// What the value is, as the message names it ("mountpoint",
        /// "invalid time", "unknown plan").
        what: String,
        /// The value as given; empty to leave it out of the message.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A bug in strongroom: an invariant of its own did not hold (a worker
    /// thread panicked, a channel closed early). Never caused by input.
    #[error("internal error (a bug in strongroom, please report it): {0}")]
    Internal(String),
    /// `tenant add` of a tenant that has key slots.
    #[error("tenant {tenant} already exists")]
    TenantExists {
        /// Tenant.
        tenant: String,
    },
    /// `tenant add` of a tenant whose erase did not finish.
    #[error(
        "tenant {tenant} has objects left by an erase that did not finish: run `strongroom tenant erase {tenant} \
         --yes` first"
    )]
    TenantErasing {
        /// Tenant.
        tenant: String,
    },
    /// `tenant erase` of a tenant with snapshots under hold, holds not
    /// included.
    #[error(
        "tenant {tenant} has {held} snapshot(s) under hold: release them (`strongroom hold remove`) or pass \
         --including-held to erase them too"
    )]
    TenantHeld {
        /// Tenant.
        tenant: String,
        /// Holds found.
        held: usize,
    },
    /// A key rotation left objects sealed with the old keys, which it
    /// therefore kept.
    #[error(
        "rewrite incomplete, old keys kept: {left} object(s) still sealed with them (first: {first}); run the \
         command again"
    )]
    RotationIncomplete {
        /// Objects still sealed with an old key.
        left: usize,
        /// The first of them (kind and short name).
        first: String,
    },
    /// A tree a snapshot reaches cannot be read, which stops an operation
    /// that must see every reachable blob (prune's mark).
    #[error("snapshot {snapshot}: cannot read tree {tree}: {source}; run `strongroom check`")]
    TreeUnreadable {
        /// Snapshot (short id).
        snapshot: String,
        /// Tree (short id).
        tree: String,
        /// Why it cannot be read.
        source: Box<Error>,
    },
    /// A restore's safety snapshot (the backup of its target) failed, so
    /// the restore did not start.
    #[error("safety snapshot failed; the target was not changed: {cause}")]
    SafetySnapshot {
        /// Why the backup of the target failed. Not the error's `source`:
        /// the message already says it, once.
        cause: Box<Error>,
    },
    /// A restore's safety snapshot could not read every entry of the
    /// target, so it could not bring the target back and the restore did
    /// not start. The snapshot itself was written.
    #[error(
        "safety snapshot failed; the target was not changed: safety snapshot {snapshot} is incomplete ({} entries \
         unreadable)",
        .unreadable.len()
    )]
    SafetySnapshotIncomplete {
        /// The safety snapshot (short id).
        snapshot: String,
        /// The entries of the target it could not read.
        unreadable: FileErrors,
    },
    /// The FUSE mount could not be set up.
    #[error("cannot mount at {mountpoint}: {source}")]
    Mount {
        /// The mountpoint.
        mountpoint: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A backup would take the tenant over its stored-bytes quota.
    #[error(
        "backup would take tenant {tenant} over its quota of {limit} bytes: it stores {stored} and this backup \
         needs at least {adding} more; no snapshot was written (raise it with `strongroom tenant set {tenant} --quota BYTES`, or \
         forget and prune)"
    )]
    QuotaExceeded {
        /// Tenant.
        tenant: String,
        /// The quota.
        limit: u64,
        /// Bytes stored before the backup.
        stored: u64,
        /// Bytes the backup had uploaded or was about to.
        adding: u64,
    },
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::RepoNotFound { .. } | Error::TenantNotFound { .. } => ErrorKind::RepoNotFound,
            Error::BadKey { .. } | Error::BadHandoff { .. } | Error::PutOnly { .. } => ErrorKind::BadKey,
            Error::Locked(_) | Error::Catalog(crate::catalog::Error::InUse { .. }) => ErrorKind::Locked,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Store(crate::store::Error::PermissionDenied { .. }) => ErrorKind::PermissionDenied,
            Error::Damaged { .. }
            | Error::DamagedRecords { .. }
            | Error::ConfigMismatch { .. }
            | Error::Binding { .. }
            | Error::Format(_)
            | Error::Blob(_)
            | Error::Pack(_)
            | Error::Crypto(_) => ErrorKind::Corrupt,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Internal(_) => ErrorKind::Internal,
            Error::SafetySnapshot { cause } => cause.kind(),
            _ => ErrorKind::Other,
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }

    /// [`Error::InvalidInput`]: `value`, given for `what`, cannot be used
    /// because of `why`.
    pub fn invalid_input(what: impl Into<String>, value: impl Into<String>, why: impl Into<String>) -> Self {
        Error::InvalidInput { what: what.into(), value: value.into(), why: why.into() }
    }
}

/// ` "VALUE"` of [`Error::InvalidInput`], nothing for an empty value.
fn quoted(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" {value:?}")
    }
}

/// `KEY (why), KEY (why)`: the objects of [`Error::DamagedRecords`].
fn list_damaged(objects: &[Damage]) -> String {
    let named: Vec<String> = objects.iter().map(|d| format!("{} ({})", d.object, d.why)).collect();
    named.join(", ")
}

/// Result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
