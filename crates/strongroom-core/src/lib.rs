//! strongroom's engine: the store, the catalog, tenants and their keys, and
//! every operation on a repository (backup, restore, check, forget, prune,
//! copy, mount, the agent). The pure layer below it (identifiers, sealing,
//! chunking, byte layouts) is the `strongroom-format` crate, re-exported
//! here; the command line above it is the `strongroom` binary.
//!
//! The map of modules is in docs/ARCHITECTURE.md; the bytes in the store are
//! specified in docs/FORMAT.md.

pub use strongroom_format::{blob, chunk, codec, crypto, id, pack, tree};

pub mod binding;
pub mod catalog;
pub mod direct;
pub mod error;
pub mod host_memory;
pub mod key_cache;
pub mod keyslots;
pub mod repo;
pub mod scope;
pub mod snapshot;
pub mod store;

pub use cancel::Cancel;
pub use error::{Damage, Error, ErrorKind, FileError, FileErrors, Result};
pub mod agent;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod cancel;
pub mod check;
pub mod copy;
pub mod diff;
pub mod erase;
pub mod find;
pub mod forget;
pub mod fuzzing;
pub mod group;
pub mod health;
pub mod hold;
pub mod lock;
pub mod metrics;
pub mod mount;
pub mod object_lock;
pub mod private;
pub mod problems;
pub mod prune;
pub mod put_only;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod rotate;
pub mod source;
pub mod stats;
pub mod tag;
pub mod tenant;
pub mod testhook;
pub mod tombstone;
pub mod tree_cache;
pub mod units;
pub mod walk;

/// The cores this process may use, read once (the standard library reads
/// the cgroup files on every call).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
