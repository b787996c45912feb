//! Tombstones: the payload of `tenants/<t>/tombstones/<hash>` (sealed
//! envelope `SRTB`, metadata key, generation 0; named by the BLAKE3 hash
//! of the sealed bytes and created, never overwritten).
//!
//! A tombstone marks what `forget` or `prune` would have deleted, so that
//! it is deleted only by a later prune once a quarantine has passed, and
//! `undelete` can bring it back meanwhile. Three actions:
//!
//! - `forget`: these snapshot records are forgotten (hidden from every
//!   reader but `undelete`);
//! - `prune`: these packs and index deltas are garbage (the deltas are
//!   hidden from the catalog; the packs stay readable);
//! - `undelete`: these tombstones are void for these snapshots (a `prune`
//!   tombstone named in `voids` is void as a whole). An undelete record is
//!   what makes a replayed copy of an old tombstone harmless: the copy has
//!   the same bytes, hence the same name, and stays void.
//!
//! Each tombstone carries a random nonce, so two tombstones never share a
//! name even when they name the same objects (a snapshot forgotten again
//! after an undelete gets a new tombstone that no undelete record voids).

use serde::{Deserialize, Serialize};

use super::Error;

/// The payload version this build writes and reads.
pub const TOMBSTONE_VERSION: u8 = 1;
/// Largest tombstone payload accepted (a prune of a million packs fits).
pub const MAX_TOMBSTONE_BYTES: usize = 128 << 20;
/// Longest command name recorded.
pub const MAX_COMMAND_LEN: usize = 64;
const WHAT: &str = "tombstone";

/// What a tombstone does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Snapshot records forgotten.
    Forget,
    /// Packs and index deltas found garbage by a prune.
    Prune,
    /// Earlier tombstones made void.
    Undelete,
}

/// The sealed content of a tombstone. Every id is 64 lowercase hex
/// digits; every list is sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstone {
    /// [`TOMBSTONE_VERSION`].
    pub version: u8,
    /// What it does.
    pub action: Action,
    /// The command that wrote it (`forget`, `prune`, `undelete`).
    pub command: String,
    /// 16 random bytes (32 hex digits): makes the name unique.
    pub nonce: String,
    /// Snapshot ids: forgotten (`forget`) or brought back (`undelete`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// Pack ids (`prune` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
    /// Index delta ids (`prune` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<String>,
    /// Tombstone names made void (`undelete` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voids: Vec<String>,
}

impl Tombstone {
    /// A tombstone of `action` by `command` with `nonce`; the lists are
    /// sorted and deduplicated here.
    pub fn new(action: Action, command: &str, nonce: [u8; 16]) -> Self {
        Tombstone {
            version: TOMBSTONE_VERSION,
            action,
            command: command.to_string(),
            nonce: hex::encode(nonce),
            snapshots: Vec::new(),
            packs: Vec::new(),
            index: Vec::new(),
            voids: Vec::new(),
        }
    }

    /// Sorts and deduplicates every list (what [`decode`] requires).
    pub fn normalize(mut self) -> Self {
        for l in [&mut self.snapshots, &mut self.packs, &mut self.index, &mut self.voids] {
            l.sort();
            l.dedup();
        }
        self
    }
}

/// Encodes the payload as compact JSON.
pub fn encode(t: &Tombstone) -> Vec<u8> {
    // Serializing a plain struct of strings and integers cannot fail.
    serde_json::to_vec(t).unwrap_or_default()
}

/// Decodes and validates a tombstone payload.
pub fn decode(bytes: &[u8]) -> Result<Tombstone, Error> {
    let invalid = |why: String| Error::Invalid { what: WHAT, why };
    if bytes.len() > MAX_TOMBSTONE_BYTES {
        return Err(invalid(format!("{} bytes is larger than any tombstone", bytes.len())));
    }
    let t: Tombstone = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a tombstone: {e}")))?;
    super::expect_version(WHAT, t.version, TOMBSTONE_VERSION)?;
    if t.command.is_empty() || t.command.len() > MAX_COMMAND_LEN || t.command.chars().any(char::is_control) {
        return Err(invalid("command name empty, too long or with control characters".into()));
    }
    if !is_hex(&t.nonce, 32) {
        return Err(invalid("nonce is not 32 lowercase hex digits".into()));
    }
    for (name, list) in [("snapshots", &t.snapshots), ("packs", &t.packs), ("index", &t.index), ("voids", &t.voids)] {
        if let Some(bad) = list.iter().find(|id| !is_hex(id, 64)) {
            return Err(invalid(format!("{name}: {bad:?} is not 64 lowercase hex digits")));
        }
        if list.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(format!("{name}: not sorted, or with duplicates")));
        }
    }
    let only = |ok: bool, why: &str| if ok { Ok(()) } else { Err(invalid(why.into())) };
    match t.action {
        Action::Forget => only(
            !t.snapshots.is_empty() && t.packs.is_empty() && t.index.is_empty() && t.voids.is_empty(),
            "a forget tombstone names snapshots and nothing else",
        )?,
        Action::Prune => only(
            t.snapshots.is_empty() && t.voids.is_empty() && !(t.packs.is_empty() && t.index.is_empty()),
            "a prune tombstone names packs or index deltas and nothing else",
        )?,
        Action::Undelete => only(
            !t.voids.is_empty() && t.packs.is_empty() && t.index.is_empty(),
            "an undelete record names the tombstones it voids, and snapshots only besides",
        )?,
    }
    Ok(t)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forget() -> Tombstone {
        let mut t = Tombstone::new(Action::Forget, "forget", [7; 16]);
        t.snapshots = vec!["bb".repeat(32), "aa".repeat(32), "aa".repeat(32)];
        t.normalize()
    }

    #[test]
    fn a_tombstone_round_trips_and_lists_are_sorted() {
        let t = forget();
        assert_eq!(t.snapshots, vec!["aa".repeat(32), "bb".repeat(32)]);
        assert_eq!(decode(&encode(&t)), Ok(t));
    }

    #[test]
    fn each_action_names_only_its_objects() {
        let mut t = forget();
        t.packs = vec!["cc".repeat(32)];
        assert!(decode(&encode(&t)).is_err());
        let mut p = Tombstone::new(Action::Prune, "prune", [1; 16]);
        assert!(decode(&encode(&p)).is_err(), "an empty prune tombstone");
        p.index = vec!["dd".repeat(32)];
        assert!(decode(&encode(&p)).is_ok());
        let mut u = Tombstone::new(Action::Undelete, "undelete", [2; 16]);
        u.snapshots = vec!["aa".repeat(32)];
        assert!(decode(&encode(&u)).is_err(), "an undelete record voids something");
        u.voids = vec!["ee".repeat(32)];
        assert!(decode(&encode(&u)).is_ok());
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let good = String::from_utf8(encode(&forget())).unwrap();
        for bad in [
            good.replace("\"version\":1", "\"version\":2"),
            good.replace(&"aa".repeat(32), &"AA".repeat(32)),
            good.replace(&"07".repeat(16), "07"),
            good.replace("\"forget\",\"nonce\"", "\"\",\"nonce\""),
            good.replace('}', ",\"extra\":1}"),
            good.replace(&"bb".repeat(32), &"aa".repeat(32)),
            "null".into(),
            String::new(),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
