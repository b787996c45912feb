//! A tenant's scope in a store: the store, the tenant's name and its keys,
//! without the catalog, config or host state of an open `Repo`.
//!
//! Owns: nothing stored; it is what the modules below `repo` need to read
//! and write one tenant's sealed objects (locks, audit entries, holds,
//! settings, the rotation marker, key slots). `Repo` holds one and hands
//! it out with `Repo::scope`. Must not: import `repo` or `tenant`.
//!
//! **Invariant:** the keys are the tenant's own, unwrapped from one of its
//! key slots: a scope is only built by opening the tenant.

use crate::codec::sealed::{self, Envelope};
use crate::crypto::{self, is_drop_generation, DataKey, TenantKeys};
use crate::error::{Error, Result};
use crate::id::TenantName;
use crate::store::{Kind, Store};

/// A store, one of its tenants and that tenant's keys.
pub struct TenantScope {
    store: Store,
    tenant: TenantName,
    keys: TenantKeys,
}

impl TenantScope {
    /// The scope of `tenant` in `store`, with the keys its slot unwrapped.
    pub fn new(store: Store, tenant: TenantName, keys: TenantKeys) -> Self {
        Self { store, tenant, keys }
    }
    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// The tenant.
    pub fn tenant(&self) -> &TenantName {
        &self.tenant
    }
    /// The tenant's keys.
    pub fn keys(&self) -> &TenantKeys {
        &self.keys
    }
    /// Replaces the keys (a keyring reloaded after a key rotation).
    pub(crate) fn set_keys(&mut self, keys: TenantKeys) {
        self.keys = keys;
    }
    /// The store key of the tenant's object `name` of `kind`.
    pub fn path(&self, kind: Kind, name: &str) -> crate::store::Key {
        Store::path(&self.tenant, kind, name)
    }
    /// The current data key.
    pub fn data_key(&self) -> Result<&DataKey> {
        self.keys.current_data_key().ok_or_else(|| Error::Damaged {
            object: format!("tenants/{}/keyring", self.tenant),
            why: "no data key".into(),
        })
    }
}

impl TenantScope {
    /// Seals a metadata object (audit entry, lock record): with the
    /// metadata key (generation 0) for a full key, with the host's drop
    /// generation for a put-only key (it has no metadata key, and what it
    /// writes must open for the tenant's full key).
    pub fn seal_meta(&self, magic: &[u8; 4], payload: &[u8]) -> Result<Vec<u8>> {
        let tenant = self.tenant.as_str();
        if self.keys.is_put_only() {
            let dk = self.data_key()?;
            return Ok(sealed::seal(magic, dk.generation, &dk.key, tenant, payload));
        }
        Ok(sealed::seal(magic, 0, self.keys.meta_key(), tenant, payload))
    }

    /// Opens what [`TenantScope::seal_meta`] sealed: generation 0 with the
    /// metadata key, a drop generation with its data key (full keys hold
    /// every drop generation's key; a put-only host only its own). Any
    /// other generation does not open.
    pub fn open_meta(
        &self,
        env: &Envelope<'_>,
        what: impl Fn() -> String,
    ) -> std::result::Result<Vec<u8>, crypto::Error> {
        let tenant = self.tenant.as_str();
        match env.key_generation {
            0 => env.open(self.keys.meta_key(), tenant, what),
            g if is_drop_generation(g) => match self.keys.data_key(g) {
                Some(dk) => env.open(&dk.key, tenant, what),
                None => Err(crypto::Error::Open { what: what() }),
            },
            _ => Err(crypto::Error::Open { what: what() }),
        }
    }
}

impl std::fmt::Debug for TenantScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantScope({}, tenant {})", self.store.url(), self.tenant)
    }
}
