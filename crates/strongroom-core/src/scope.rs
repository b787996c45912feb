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

use crate::crypto::{DataKey, TenantKeys};
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

impl std::fmt::Debug for TenantScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantScope({}, tenant {})", self.store.url(), self.tenant)
    }
}
