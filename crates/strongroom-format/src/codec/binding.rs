//! The tenant's binding record: the payload of `tenants/<t>/meta/binding`
//! (sealed envelope `SRBD`, metadata key, generation 0).
//!
//! It names, sealed with the tenant's own key, the repository the tenant
//! belongs to (its id), every config parameter that shapes what the tenant
//! writes (chunk sizes, pack target, compression level), and the escrow
//! public key the tenant trusts (or none). The plaintext `config` can be
//! rewritten by anyone with write access to the store; this record cannot,
//! so a reader compares the two ([`Binding::check`]) and refuses a config
//! that differs.
//!
//! `revision` grows by one each time the record is rewritten (a new escrow
//! key), so that a host that saw revision `n` can refuse an older record
//! replayed by the store.

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::Error;
use crate::chunk::ChunkSizes;

/// Largest binding payload accepted.
pub const MAX_BINDING_BYTES: usize = 4096;
const WHAT: &str = "binding record";

/// What a tenant holds true of its repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The repository id (64 hex digits), as in `config`.
    pub repository_id: String,
    /// Chunker sizes, as in `config`.
    pub chunk_sizes: ChunkSizes,
    /// Target pack size in bytes, as in `config`.
    pub pack_target_bytes: u32,
    /// Default zstd level, as in `config`.
    pub compression_level: i32,
    /// The escrow public key (64 hex digits) the tenant's master key may be
    /// sealed to, or `null`: no escrow slot is added for any other key.
    pub escrow_public: Option<String>,
    /// 1 for the first record, one more for each rewrite.
    pub revision: u64,
}

/// A config field that differs from the tenant's binding record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The field's name in `config`.
    pub field: &'static str,
    /// Its value in `config`.
    pub config: String,
    /// Its value in the binding record.
    pub bound: String,
}

impl Binding {
    /// The record for `config` with `escrow` as the trusted escrow key.
    pub fn new(config: &Config, escrow: Option<&[u8; 32]>, revision: u64) -> Self {
        Self {
            repository_id: config.id.clone(),
            chunk_sizes: config.chunk_sizes,
            pack_target_bytes: config.pack_target_bytes,
            compression_level: config.compression_level,
            escrow_public: escrow.map(hex::encode),
            revision,
        }
    }

    /// The escrow public key, decoded (validated by [`decode`]).
    pub fn escrow(&self) -> Option<[u8; 32]> {
        let hex_key = self.escrow_public.as_deref()?;
        hex::decode(hex_key).ok().and_then(|b| b.try_into().ok())
    }

    /// The same record naming another escrow key, one revision later.
    pub fn with_escrow(&self, escrow: Option<&[u8; 32]>) -> Self {
        Self { escrow_public: escrow.map(hex::encode), revision: self.revision.saturating_add(1), ..self.clone() }
    }

    /// The first field of `config` that differs from this record.
    pub fn check(&self, config: &Config) -> Result<(), Mismatch> {
        let differs = |field: &'static str, config: String, bound: String| Err(Mismatch { field, config, bound });
        if config.id != self.repository_id {
            return differs("id", config.id.clone(), self.repository_id.clone());
        }
        if config.chunk_sizes != self.chunk_sizes {
            let s = |c: &ChunkSizes| format!("{},{},{}", c.min, c.avg, c.max);
            return differs("chunk_sizes", s(&config.chunk_sizes), s(&self.chunk_sizes));
        }
        if config.pack_target_bytes != self.pack_target_bytes {
            return differs(
                "pack_target_bytes",
                config.pack_target_bytes.to_string(),
                self.pack_target_bytes.to_string(),
            );
        }
        if config.compression_level != self.compression_level {
            return differs(
                "compression_level",
                config.compression_level.to_string(),
                self.compression_level.to_string(),
            );
        }
        Ok(())
    }
}

/// Encodes the payload as compact JSON.
pub fn encode(b: &Binding) -> Vec<u8> {
    // Serializing a plain struct of strings and integers cannot fail.
    serde_json::to_vec(b).unwrap_or_default()
}

/// Decodes and validates a binding payload, with the rules `config`
/// follows for the same fields.
pub fn decode(bytes: &[u8]) -> Result<Binding, Error> {
    let invalid = |why: String| Error::Invalid { what: WHAT, why };
    if bytes.len() > MAX_BINDING_BYTES {
        return Err(invalid(format!("{} bytes is larger than any binding record", bytes.len())));
    }
    let b: Binding = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a binding record: {e}")))?;
    let is_hex_key = |s: &str| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !is_hex_key(&b.repository_id) {
        return Err(invalid("repository id is not 64 hex digits".into()));
    }
    b.chunk_sizes.validate().map_err(|e| invalid(e.to_string()))?;
    if !(1024 * 1024..=1024 * 1024 * 1024).contains(&b.pack_target_bytes) {
        return Err(invalid(format!("pack target {} bytes out of range", b.pack_target_bytes)));
    }
    if !(-7..=22).contains(&b.compression_level) {
        return Err(invalid(format!("compression level {} out of range", b.compression_level)));
    }
    if b.escrow_public.as_deref().is_some_and(|k| !is_hex_key(k)) {
        return Err(invalid("escrow public key is not 64 hex digits".into()));
    }
    if b.revision == 0 {
        return Err(invalid("revision 0".into()));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::config::{CONFIG_FORMAT, CONFIG_VERSION};

    fn config() -> Config {
        Config {
            format: CONFIG_FORMAT.into(),
            version: CONFIG_VERSION,
            id: "ab".repeat(32),
            created: "2026-12-07T12:00:00Z".into(),
            chunk_sizes: ChunkSizes::default(),
            pack_target_bytes: 16 << 20,
            compression_level: 3,
            object_lock: None,
        }
    }

    #[test]
    fn a_binding_roundtrips_and_matches_its_config() {
        let c = config();
        let b = Binding::new(&c, Some(&[7; 32]), 1);
        assert_eq!(decode(&encode(&b)), Ok(b.clone()));
        assert_eq!(b.escrow(), Some([7; 32]));
        assert_eq!(b.check(&c), Ok(()));
        let b2 = b.with_escrow(None);
        assert_eq!((b2.revision, b2.escrow()), (2, None));
    }

    #[test]
    fn every_bound_field_of_the_config_is_checked() {
        let c = config();
        let b = Binding::new(&c, None, 1);
        let changed: [(&str, Config); 4] = [
            ("id", Config { id: "cd".repeat(32), ..c.clone() }),
            ("chunk_sizes", Config { chunk_sizes: ChunkSizes { min: 64, avg: 256, max: 1024 }, ..c.clone() }),
            ("pack_target_bytes", Config { pack_target_bytes: 1 << 30, ..c.clone() }),
            ("compression_level", Config { compression_level: 22, ..c.clone() }),
        ];
        for (field, other) in changed {
            assert_eq!(b.check(&other).map_err(|m| m.field), Err(field));
        }
        // `created` and `version` are not parameters: not bound.
        assert_eq!(b.check(&Config { created: "x".into(), version: 1, ..c }), Ok(()));
    }

    #[test]
    fn malformed_records_are_refused() {
        let good = encode(&Binding::new(&config(), None, 1));
        let text = String::from_utf8(good).unwrap();
        for bad in [
            text.replace("\"revision\":1", "\"revision\":0"),
            text.replace(&"ab".repeat(32), "xyz"),
            text.replace("\"compression_level\":3", "\"compression_level\":23"),
            text.replace("\"escrow_public\":null", "\"escrow_public\":\"00\""),
            text.replace('}', ",\"extra\":1}"),
            String::new(),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
