//! What a host remembers of a tenant between commands, that the store
//! must not be able to make it forget: the newest audit entry it saw
//! (`audit-head`, see [`crate::audit`]), the newest revision of the
//! tenant's binding record (`binding`, see [`crate::binding`]), and the
//! escrow key it last saw a slot for (`escrow-slot`, see
//! [`crate::tenant::escrow_sync`]).
//!
//! Owns: `<cache dir>/memory/<name>/`, where `<name>` is
//! [`crate::crypto::TenantKeys::host_memory_name`] of the store's
//! location: derived from the tenant's master key and where the store is,
//! never from anything read from the store (the repository id in `config`
//! is plaintext, and swapping it once reset this memory).
//! Must not: hold anything secret, or anything the store could not
//! already see.
//!
//! Losing this directory loses only the checks it enables; every write is
//! a temporary file renamed into place.

use std::path::{Path, PathBuf};

use crate::crypto::TenantKeys;

/// File with the newest binding revision this host saw.
const BINDING_FILE: &str = "binding";
/// File with the newest audit entry this host saw: `seq hash`.
const AUDIT_HEAD_FILE: &str = "audit-head";
/// File with the fingerprint of the escrow key the tenant had a slot for
/// when this host last listed its key slots.
const ESCROW_SLOT_FILE: &str = "escrow-slot";

/// One tenant's memory on this host.
#[derive(Debug, Clone)]
pub struct HostMemory {
    dir: PathBuf,
}

impl HostMemory {
    /// The memory of the tenant with `keys` in the store at `location`
    /// ([`crate::store::Store::location`]), under `cache_dir`.
    pub fn new(cache_dir: &Path, keys: &TenantKeys, location: &str) -> Self {
        Self { dir: cache_dir.join("memory").join(keys.host_memory_name(location)) }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the newest audit entry seen.
    pub fn audit_head(&self) -> PathBuf {
        self.dir.join(AUDIT_HEAD_FILE)
    }

    /// Takes over an audit head remembered where earlier versions kept it
    /// (the tenant's catalog directory, named by the repository id), once.
    pub fn adopt_audit_head(&self, old: &Path) {
        let new = self.audit_head();
        if new.exists() {
            return;
        }
        if let Ok(text) = std::fs::read_to_string(old) {
            self.write(AUDIT_HEAD_FILE, &text);
        }
    }

    /// The newest revision of the tenant's binding record this host saw;
    /// `None`: it never saw one.
    pub fn binding_revision(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(BINDING_FILE)).ok()?.trim().parse().ok()
    }

    /// Remembers that the binding record reached `revision` (never goes
    /// back).
    pub fn note_binding(&self, revision: u64) {
        if self.binding_revision().is_some_and(|seen| seen >= revision) {
            return;
        }
        self.write(BINDING_FILE, &format!("{revision}\n"));
    }

    /// Whether this host saw the tenant's escrow slot for the key with
    /// `fingerprint` when it last listed the key slots. Only saves that
    /// listing on later opens: `check` and the tenant and escrow commands
    /// list the slots whatever this says, and put a missing slot back.
    pub fn escrow_slot_seen(&self, fingerprint: &str) -> bool {
        std::fs::read_to_string(self.dir.join(ESCROW_SLOT_FILE)).is_ok_and(|t| t.trim() == fingerprint)
    }

    /// Remembers that the tenant has an escrow slot for `fingerprint`.
    pub fn note_escrow_slot(&self, fingerprint: &str) {
        if !self.escrow_slot_seen(fingerprint) {
            self.write(ESCROW_SLOT_FILE, &format!("{fingerprint}\n"));
        }
    }

    /// Writes `name` atomically; a failure only loses memory, so it is
    /// logged, not returned.
    pub(crate) fn write(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp{}", std::process::id()));
        let r = crate::private::write(&tmp, text.as_bytes()).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::warn!("cannot remember {} on this host: {e}", path.display());
        }
    }
}
