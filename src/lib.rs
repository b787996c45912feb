//! strongroom: a content-addressed, deduplicating, encrypted, multi-tenant
//! backup repository.
//!
//! The map of modules is in docs/ARCHITECTURE.md; the bytes in the store are
//! specified in docs/FORMAT.md.

pub mod blob;
pub mod catalog;
pub mod chunk;
pub mod crypto;
pub mod format;
pub mod id;
pub mod pack;
pub mod store;
pub mod error;
pub mod repo;
pub mod snapshot;
pub mod tree;

pub use error::{Error, ErrorKind, Result};
pub mod fuzzing;
