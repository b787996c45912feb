//! The tenant's binding record in the store: read and checked against the
//! config on every open, written when a tenant is created, upgraded from
//! version 1, or given a new escrow key.
//!
//! Owns: `tenants/<t>/meta/binding` (payload in
//! [`crate::codec::binding`], sealed envelope `SRBD` with the metadata
//! key). Must not: trust anything in `config` or `escrow` that a binding
//! record has not confirmed.
//!
//! **Invariants:** a tenant opened by this build uses config values equal
//! to its binding record's, or fails with [`Error::ConfigMismatch`]. A
//! host that saw a tenant's binding record at revision `n` refuses a
//! missing record, and one older than `n` ([`HostMemory`]), whatever the
//! config's version says.

use bytes::Bytes;

use crate::codec::binding::{self as fbinding, Binding};
use crate::codec::config::Config;
use crate::codec::sealed::{self, BINDING_MAGIC};
use crate::crypto::TenantKeys;
use crate::error::{Error, Result};
use crate::host_memory::HostMemory;
use crate::id::TenantName;
use crate::store::{self, Kind, Store};

/// Name of the binding record under `meta/`.
const BINDING: &str = "binding";

/// The config version from which every tenant must have a binding record.
const BOUND_FROM_VERSION: u32 = 2;

/// The object key of the tenant's binding record.
pub fn path(tenant: &TenantName) -> crate::store::Key {
    Store::path(tenant, Kind::Meta, BINDING)
}

/// Reads and opens the tenant's binding record; `None` when it has none.
pub async fn load(store: &Store, tenant: &TenantName, keys: &TenantKeys) -> Result<Option<Binding>> {
    let path = path(tenant);
    let Some(bytes) = store.get_opt(&path).await? else { return Ok(None) };
    let damaged = |why: String| Error::Damaged { object: path.to_string(), why };
    let env = sealed::decode(&bytes, BINDING_MAGIC, "binding record").map_err(|e| damaged(e.to_string()))?;
    if env.key_generation != 0 {
        return Err(damaged(format!("sealed with key generation {}, not the metadata key", env.key_generation)));
    }
    let plain = env.open(keys.meta_key(), tenant.as_str(), || path.to_string()).map_err(|e| damaged(e.to_string()))?;
    Ok(Some(fbinding::decode(&plain).map_err(|e| damaged(e.to_string()))?))
}

/// Seals and stores `b`: created (`create`, failing if one exists) or
/// overwritten.
pub async fn save(store: &Store, tenant: &TenantName, keys: &TenantKeys, b: &Binding, create: bool) -> Result<()> {
    let payload = fbinding::encode(b);
    fbinding::decode(&payload)?;
    let obj = Bytes::from(sealed::seal(BINDING_MAGIC, 0, keys.meta_key(), tenant.as_str(), &payload));
    if create {
        store.create(&path(tenant), obj).await?;
    } else {
        store.overwrite(&path(tenant), obj).await?;
    }
    Ok(())
}

/// `config`, checked against the binding record `b` of `tenant`.
pub fn check(tenant: &TenantName, b: &Binding, config: &Config) -> Result<()> {
    b.check(config).map_err(|m| Error::ConfigMismatch {
        tenant: tenant.to_string(),
        field: m.field,
        config: m.config,
        bound: m.bound,
    })
}

/// The tenant's binding record, checked against `config` and this host's
/// memory; a tenant of a version 1 repository without one gets one now,
/// recording the config as it is (its values were trusted as they were
/// until this moment; from now on they cannot change unnoticed).
pub async fn establish(
    store: &Store,
    tenant: &TenantName,
    keys: &TenantKeys,
    config: &Config,
    memory: &HostMemory,
) -> Result<Binding> {
    let object = || path(tenant).to_string();
    // Twice at most: a record another process created while we upgraded.
    for _ in 0..2 {
        let seen = memory.binding_revision();
        if let Some(b) = load(store, tenant, keys).await? {
            if let Some(seen) = seen.filter(|s| b.revision < *s) {
                return Err(Error::Binding {
                    object: object(),
                    why: format!(
                        "revision {} is older than revision {seen} this host saw (an earlier record put back in \
                         the store)",
                        b.revision
                    ),
                });
            }
            check(tenant, &b, config)?;
            memory.note_binding(b.revision);
            return Ok(b);
        }
        if config.version >= BOUND_FROM_VERSION {
            return Err(Error::Binding {
                object: object(),
                why: format!(
                    "missing: every tenant of a version {} repository has one (deleted from the store?)",
                    config.version
                ),
            });
        }
        if seen.is_some() {
            return Err(Error::Binding {
                object: object(),
                why: "missing, but this host saw it (deleted from the store, and the config set back to version 1?)"
                    .into(),
            });
        }
        let b = Binding::new(config, None, 1);
        match save(store, tenant, keys, &b, true).await {
            Ok(()) => {
                tracing::info!(
                    "tenant {tenant}: recorded the repository config in its binding record (upgrade of a version 1 \
                     repository)"
                );
                memory.note_binding(b.revision);
                return Ok(b);
            }
            Err(Error::Store(store::Error::AlreadyExists { .. })) => continue,
            Err(e) => {
                // A read-only store: the tenant stays as version 1 left it,
                // trusting the config, until someone who can write opens it.
                tracing::warn!("tenant {tenant}: cannot write its binding record ({e}); the config stays unchecked");
                return Ok(b);
            }
        }
    }
    Err(Error::Binding { object: object(), why: "created and gone again while it was being read".into() })
}
