//! strongroom's pure layer: identifiers, keys and sealing, chunking, and
//! every byte layout the store holds. No I/O, no async, no object_store or
//! redb: whatever this crate decodes comes in as a byte slice and goes out
//! as a typed value or an error.
//!
//! - [`id`]: blob, pack and snapshot identifiers.
//! - [`crypto`]: keys, key derivation, AES-256-GCM-SIV sealing.
//! - [`chunk`]: FastCDC with a keyed gear table.
//! - [`blob`]: compress and seal one blob, open and verify it.
//! - [`pack`]: gather sealed blobs into a pack and read them back.
//! - [`tree`]: directory trees of snapshots.
//! - [`codec`]: the encoders and decoders of every stored record.
//!
//! The byte layouts are specified in docs/FORMAT.md.

pub mod blob;
pub mod chunk;
pub mod codec;
pub mod crypto;
pub mod id;
pub mod pack;
pub mod tree;
