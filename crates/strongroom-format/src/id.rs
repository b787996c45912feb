//! Identifier newtypes: blob, pack, snapshot and index ids, and tenant names.
//!
//! This module only represents ids (hex, short forms, prefix matching). It
//! never computes one: blob ids are keyed BLAKE3 (`crypto`), object ids are
//! plain BLAKE3 of the stored bytes (`repo`).

use std::fmt;
use std::str::FromStr;

/// Length in bytes of every id.
pub const ID_LEN: usize = 32;

/// Errors from parsing ids and names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The text is not 64 hex digits.
    #[error("invalid id {text:?}: expected 64 hex digits")]
    BadHex {
        /// The offending text.
        text: String,
    },
    /// The tenant name breaks the naming rules.
    #[error(
        "invalid tenant name {name:?}: use 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    BadTenant {
        /// The offending name.
        name: String,
    },
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// Full lowercase hex form (64 digits).
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Parses exactly 64 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, Error> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(text, &mut out).map_err(|_| Error::BadHex { text: text.to_string() })?;
                Ok(Self(out))
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_hex(s)
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext; names a chunk or a tree.
    BlobId
);
id_type!(
    /// BLAKE3 of a pack's stored bytes; names the pack object.
    PackId
);
id_type!(
    /// BLAKE3 of a snapshot record's stored bytes.
    SnapshotId
);
id_type!(
    /// BLAKE3 of an index delta's stored bytes.
    IndexId
);

/// Returns true when `prefix` (lowercase hex) starts the hex form of `id`.
pub fn hex_prefix_matches(id: &[u8; ID_LEN], prefix: &str) -> bool {
    let full = hex::encode(id);
    full.starts_with(&prefix.to_ascii_lowercase())
}

/// A validated tenant name: it becomes part of object keys, so it is
/// restricted to characters that are safe in every backend's paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TenantName(String);

impl TenantName {
    /// Validates a tenant name.
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(Error::BadTenant { name: name.to_string() })
        }
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_prefix() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Ok(id));
        assert_eq!(id.short(), "abababab");
        assert!(hex_prefix_matches(&id.0, "ABAB"));
        assert!(!hex_prefix_matches(&id.0, "abac"));
        assert!(BlobId::from_hex("zz").is_err());
        assert!(BlobId::from_hex(&"a".repeat(63)).is_err());
    }

    #[test]
    fn tenant_names() {
        assert!(TenantName::new("acme-01_x").is_ok());
        for bad in ["", "-x", "A", "a/b", "a b", "..", &"a".repeat(65)] {
            assert!(TenantName::new(bad).is_err(), "{bad:?}");
        }
    }
}
