//! The repository config object: plaintext JSON at `config`.
//!
//! It holds nothing secret: format version, repository id, chunker sizes,
//! pack size and compression defaults. Chunk sizes are fixed at `init`:
//! changing them would stop new chunks from deduplicating against old ones.
//!
//! Nothing here is authenticated: anyone who can write the store can
//! rewrite it. Each tenant's binding record ([`super::binding`]) holds the
//! same values sealed with the tenant's key, and a reader uses the config
//! only once it matches that record.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::chunk::ChunkSizes;

/// The format version this build writes: 3, where tenants may have
/// put-only key slots and drop keyrings, and index deltas carry a dedup
/// section (version 2: every tenant has a binding record; a version 2
/// repository is read and written as it is, and may gain those objects).
pub const CONFIG_VERSION: u32 = 3;
/// The oldest format version this build reads (1: tenants may lack a
/// binding record, and get one when they are next opened).
pub const MIN_CONFIG_VERSION: u32 = 1;
/// The `format` field's fixed value.
pub const CONFIG_FORMAT: &str = "strongroom-repository";
/// Largest config object accepted.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Repository-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Always [`CONFIG_FORMAT`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Random repository id (64 hex digits); names the local catalog
    /// directory once a tenant's binding record has confirmed it.
    pub id: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Chunker sizes for tenants created in this repository.
    pub chunk_sizes: ChunkSizes,
    /// Target pack size in bytes.
    pub pack_target_bytes: u32,
    /// Default zstd level for new tenants.
    pub compression_level: i32,
    /// Store-enforced retention (S3 Object Lock); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// Which S3 Object Lock retention mode new objects get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can shorten or remove it.
    Governance,
    /// Nobody, the account root included, can shorten or remove it.
    Compliance,
}

impl LockMode {
    /// `governance` or `compliance`.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

/// The `object_lock` rule of a config: each retained object is kept for
/// as long as the tenant's plan can keep a snapshot (`default_days`
/// without a plan), plus `margin_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// Retention mode of every retained object.
    pub mode: LockMode,
    /// Days added to the plan's keep period.
    pub margin_days: u32,
    /// Keep period, in days, of a tenant without a plan.
    pub default_days: u32,
}

/// Longest keep period or margin accepted, in days (100 years).
pub const MAX_LOCK_DAYS: u32 = 36_600;

/// Encodes the config as pretty JSON.
pub fn encode(c: &Config) -> Vec<u8> {
    // Serializing a plain struct of strings and integers cannot fail.
    serde_json::to_vec_pretty(c).unwrap_or_default()
}

/// Decodes and validates a config object.
pub fn decode(bytes: &[u8]) -> Result<Config, Error> {
    const WHAT: &str = "config";
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(Error::Invalid { what: WHAT, why: format!("{} bytes is larger than any config", bytes.len()) });
    }
    let c: Config =
        serde_json::from_slice(bytes).map_err(|e| Error::Invalid { what: WHAT, why: format!("not a config: {e}") })?;
    if c.format != CONFIG_FORMAT {
        return Err(Error::BadMagic { what: WHAT });
    }
    if !(MIN_CONFIG_VERSION..=CONFIG_VERSION).contains(&c.version) {
        return Err(Error::UnsupportedVersion { what: WHAT, version: c.version.min(u16::MAX.into()) as u16 });
    }
    if c.id.len() != 64 || !c.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid { what: WHAT, why: "id is not 64 hex digits".into() });
    }
    c.chunk_sizes.validate().map_err(|e| Error::Invalid { what: WHAT, why: e.to_string() })?;
    if !(1024 * 1024..=1024 * 1024 * 1024).contains(&c.pack_target_bytes) {
        return Err(Error::Invalid {
            what: WHAT,
            why: format!("pack target {} bytes out of range", c.pack_target_bytes),
        });
    }
    if !(-7..=22).contains(&c.compression_level) {
        return Err(Error::Invalid {
            what: WHAT,
            why: format!("compression level {} out of range", c.compression_level),
        });
    }
    if let Some(l) = &c.object_lock {
        if l.margin_days > MAX_LOCK_DAYS || !(1..=MAX_LOCK_DAYS).contains(&l.default_days) {
            return Err(Error::Invalid {
                what: WHAT,
                why: format!(
                    "object lock days out of range (margin {}, default {}; at most {MAX_LOCK_DAYS}, default at least 1)",
                    l.margin_days, l.default_days
                ),
            });
        }
    }
    Ok(c)
}
