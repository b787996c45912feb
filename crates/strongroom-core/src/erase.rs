//! `erase`: delete a tenant for good, as one protocol.
//!
//! Owns: the order of the steps. The caller proves it may erase by
//! opening the tenant (its password, or the operator's escrow secret) and
//! taking its exclusive lock; holds refuse the erase unless the caller
//! includes held snapshots; the key slots go first (crypto-shredding:
//! after that nobody can open the tenant, escrow included); the lock is
//! kept while the rest is deleted ([`tenant::erase`]), then released, and
//! the erasure is recorded at the repository root
//! ([`tenant::record_erasure`]). A tenant with no key slot left is the
//! remains of an interrupted erase: nobody can open it, so finishing it
//! needs no key and takes no lock.
//!
//! Must not: print, prompt, or touch the local cache (the caller's).

use crate::error::{Error, Result};
use crate::id::TenantName;
use crate::lock::LockGuard;
use crate::store::{Kind, Store};
use crate::tenant::{self, EraseSummary};

/// What `erase` needs besides the store and the tenant.
#[derive(Debug, Clone, Copy, Default)]
pub struct EraseOptions {
    /// Erase the tenant even when snapshots of it are under hold.
    pub including_held: bool,
}

/// Erases `tenant` from `store`.
///
/// When the tenant has key slots, `open_locked` is called first: it must
/// open the repository as `tenant` (which proves the caller holds a key
/// of it) and return the exclusive lock it took on that tenant. Errors of
/// `open_locked` are returned as they are; the library's convert into
/// `E`. Returns what was deleted.
pub fn run<E: From<Error>>(
    rt: &tokio::runtime::Handle,
    store: &Store,
    tenant: &TenantName,
    opts: &EraseOptions,
    open_locked: impl FnOnce() -> std::result::Result<LockGuard, E>,
) -> std::result::Result<EraseSummary, E> {
    let has_slots = !rt.block_on(store.list(tenant, Kind::Keys)).map_err(Error::from)?.is_empty();
    let guard = if has_slots {
        let guard = open_locked()?;
        Some(shred_keys(rt, store, tenant, opts, guard)?)
    } else {
        ensure_remains(rt, store, tenant)?;
        tracing::info!("tenant {tenant} has no key slots left: finishing an interrupted erase");
        None
    };
    let erased = rt.block_on(tenant::erase(store, tenant));
    if let Some(g) = guard {
        let _ = rt.block_on(g.release());
    }
    let erased = erased?;
    rt.block_on(tenant::record_erasure(store, tenant, &erased))?;
    Ok(erased)
}

/// Under the exclusive lock `guard`: refuses when snapshots are held (and
/// holds are not included), else deletes every key slot. Returns the
/// guard, still held; releases it when refusing or failing.
fn shred_keys(
    rt: &tokio::runtime::Handle,
    store: &Store,
    tenant: &TenantName,
    opts: &EraseOptions,
    guard: LockGuard,
) -> Result<LockGuard> {
    let shredded = guard
        .require_exclusive(tenant, "tenant erase")
        .and_then(|()| refuse_held(rt, store, tenant, opts))
        .and_then(|()| delete_key_slots(rt, store, tenant));
    match shredded {
        // Keep the lock to the end: a backup waiting for it must not write
        // into the tenant while the rest is deleted (it finds its key slot
        // gone once it gets the lock).
        Ok(()) => Ok(guard),
        Err(e) => {
            let _ = rt.block_on(guard.release());
            Err(e)
        }
    }
}

/// Fails with [`Error::TenantHeld`] when snapshots of `tenant` are under
/// hold and the options do not include them.
fn refuse_held(rt: &tokio::runtime::Handle, store: &Store, tenant: &TenantName, opts: &EraseOptions) -> Result<()> {
    let held = rt.block_on(store.list(tenant, Kind::Holds))?.len();
    if held > 0 && !opts.including_held {
        return Err(Error::TenantHeld { tenant: tenant.to_string(), held });
    }
    Ok(())
}

/// Deletes every key slot of `tenant`, escrow slots included.
fn delete_key_slots(rt: &tokio::runtime::Handle, store: &Store, tenant: &TenantName) -> Result<()> {
    for s in rt.block_on(crate::keyslots::list_slots(store, tenant))? {
        rt.block_on(store.delete(&Store::path(tenant, Kind::Keys, &s.name)))?;
    }
    Ok(())
}

/// Fails with [`Error::TenantNotFound`] when nothing of `tenant` is left
/// to erase.
fn ensure_remains(rt: &tokio::runtime::Handle, store: &Store, tenant: &TenantName) -> Result<()> {
    if rt.block_on(store.list_tenant_all(tenant))?.is_empty() {
        return Err(Error::TenantNotFound { tenant: tenant.to_string(), url: store.url().to_string() });
    }
    Ok(())
}
