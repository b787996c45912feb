//! Every byte that reaches the store: encoders and decoders.
//!
//! Owns: the repository config, tenant binding records, key slots,
//! keyrings, the sealed-object envelope, key cache entries (host files), pack headers and trailers, index
//! deltas, snapshot records and tree blobs. Each has a magic number and a version; each `decode` rejects
//! malformed input with an `Error` and never panics.
//! Must not: do I/O, or know about object_store or redb.
//! The byte layouts are specified in docs/FORMAT.md.

pub mod binding;
pub mod config;
pub mod index;
pub mod key_cache;
pub mod keyslot;
pub mod pack;
pub mod put_only;
pub mod sealed;
pub mod snapshot;
pub mod tombstone;
pub mod tree;
pub mod wire;

/// Errors decoding stored bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the layout needs.
    #[error("{what}: truncated (need {need} bytes, have {have})")]
    Truncated {
        /// Object kind.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The magic number does not match.
    #[error("{what}: bad magic number (not a strongroom object of this kind)")]
    BadMagic {
        /// Object kind.
        what: &'static str,
    },
    /// A version this build does not read.
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion {
        /// Object kind.
        what: &'static str,
        /// The version found.
        version: u16,
    },
    /// Structurally wrong content.
    #[error("{what}: {why}")]
    Invalid {
        /// Object kind.
        what: &'static str,
        /// Explanation.
        why: String,
    },
}

/// Checks a version byte against the one version this build reads.
pub(crate) fn expect_version(what: &'static str, found: u8, supported: u8) -> Result<(), Error> {
    if found == supported {
        Ok(())
    } else {
        Err(Error::UnsupportedVersion { what, version: found.into() })
    }
}
