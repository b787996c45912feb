//! A put-only host's memory of the trees it wrote: it cannot open a tree
//! in the store, so it keeps each tree blob it stores (plaintext, as the
//! catalog keeps names) in its cache directory, and takes the parent of
//! its next backup from there: unchanged files are then still skipped.
//!
//! Owns: `<put-only catalog dir>/trees/<blob id>`, one file per tree,
//! written atomically. Must not: be trusted for what the store holds: a
//! tree read back must hash to its id under the tenant's chunk-id key, and
//! [`crate::repo::Repo`] keeps from it only files whose chunks the dedup
//! index still lists (prune may have removed them since). A missing or
//! damaged file only costs reading the files again.

use std::path::PathBuf;

use crate::crypto::TenantKeys;
use crate::id::BlobId;

/// The directory of a put-only host's own trees.
#[derive(Debug, Clone)]
pub struct OwnTrees {
    dir: PathBuf,
}

impl OwnTrees {
    /// The trees kept in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Keeps the tree blob `id` (its plaintext `bytes`). Best effort: a
    /// failed write costs a re-read of the files below it next time.
    pub fn save(&self, id: &BlobId, bytes: &[u8]) {
        let path = self.dir.join(id.to_hex());
        if path.exists() {
            return;
        }
        let tmp = self.dir.join(format!(".{}.tmp{}", id.to_hex(), std::process::id()));
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| crate::private::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!("cannot keep tree {} in {}: {e}", id.short(), self.dir.display());
        }
    }

    /// The tree blob `id`, if kept and intact (it hashes to its id).
    pub fn load(&self, keys: &TenantKeys, id: &BlobId) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.join(id.to_hex())).ok()?;
        if keys.blob_id(&bytes) != *id {
            tracing::warn!("kept tree {} in {} is damaged; not used", id.short(), self.dir.display());
            return None;
        }
        Some(bytes)
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    #[test]
    fn kept_trees_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TenantKeys::from_master(&Key::from_bytes([1; 32]));
        let trees = OwnTrees::new(dir.path().join("trees"));
        let id = keys.blob_id(b"tree bytes");
        assert!(trees.load(&keys, &id).is_none());
        trees.save(&id, b"tree bytes");
        assert_eq!(trees.load(&keys, &id).unwrap(), b"tree bytes");
        std::fs::write(dir.path().join("trees").join(id.to_hex()), b"other bytes").unwrap();
        assert!(trees.load(&keys, &id).is_none());
    }
}
