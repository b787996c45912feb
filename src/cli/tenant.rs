//! `strongroom tenant …`: add, list, passwd, key, set, erase, rotate-key.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{bytes, Ctx};
use strongroom_core::codec::keyslot::SlotKind;
use strongroom_core::crypto::KdfParams;
use strongroom_core::erase::EraseOptions;
use strongroom_core::id::TenantName;
use strongroom_core::keyslots::{self, NewSlot};
use strongroom_core::lock::LockKind;
use strongroom_core::tenant::{self, Settings};

/// `tenant` subcommands.
#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant with its own master key and password
    Add(AddArgs),
    /// List tenants (names need no key; details need the tenant's key or the escrow secret)
    List,
    /// Change the password that opened the tenant (re-wraps the master key only)
    Passwd(PasswdArgs),
    /// Manage key slots: extra passwords or key files
    #[command(subcommand)]
    Key(KeyCommand),
    /// Set a tenant's defaults: retention plan, compression, quota
    Set(SetArgs),
    /// Delete every object and key slot of a tenant, irrevocably
    Erase(EraseArgs),
    /// New data key for new writes; with --rewrite re-seal everything and retire old keys
    RotateKey(RotateArgs),
}

/// Arguments of `tenant add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Tenant name: lowercase letters, digits, '-' and '_'
    name: String,
    /// Read the new tenant's password from this file (or set STRONGROOM_NEW_PASSWORD)
    #[arg(long)]
    new_password_file: Option<PathBuf>,
    /// Argon2id memory in KiB for the password slot (default 65536, at least 19456)
    #[arg(long, hide = true, value_parser = parse_kdf_memory)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes for the password slot (default 3, at least 2)
    #[arg(long, hide = true, value_parser = parse_kdf_passes)]
    kdf_passes: Option<u32>,
}

/// Arguments of `tenant passwd`.
#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// Read the new password from this file (or set STRONGROOM_NEW_PASSWORD)
    #[arg(long)]
    new_password_file: Option<PathBuf>,
    /// Argon2id memory in KiB for the password slot (default 65536, at least 19456)
    #[arg(long, hide = true, value_parser = parse_kdf_memory)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes for the password slot (default 3, at least 2)
    #[arg(long, hide = true, value_parser = parse_kdf_passes)]
    kdf_passes: Option<u32>,
}

/// `tenant key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password slot (new password from STRONGROOM_NEW_PASSWORD, --new-password-file or a prompt) or a key-file slot
    Add(KeyAddArgs),
    /// List key slots
    List,
    /// Remove a key slot (the last password or key-file slot cannot be removed)
    Remove(KeyRemoveArgs),
}

/// Arguments of `tenant key add`.
#[derive(Args, Debug)]
pub struct KeyAddArgs {
    /// Label of the slot (stored in plaintext beside the wrapped key: no secrets)
    #[arg(long, default_value = "")]
    label: String,
    /// Add a key-file slot opened by this file's bytes (at least 32) instead of a password
    #[arg(long, conflicts_with = "new_password_file")]
    key_file: Option<PathBuf>,
    /// Read the new password from this file
    #[arg(long)]
    new_password_file: Option<PathBuf>,
    /// Add a put-only key: it opens only what a backup needs (a host given
    /// it can add backups, but not read, list or delete any)
    #[arg(long)]
    put_only: bool,
    /// Argon2id memory in KiB for the password slot (default 65536, at least 19456)
    #[arg(long, hide = true, value_parser = parse_kdf_memory)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes for the password slot (default 3, at least 2)
    #[arg(long, hide = true, value_parser = parse_kdf_passes)]
    kdf_passes: Option<u32>,
}

/// Arguments of `tenant key remove`.
#[derive(Args, Debug)]
pub struct KeyRemoveArgs {
    /// Slot id or a unique prefix (see `tenant key list`)
    id: String,
}

/// Arguments of `tenant set`.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// Tenant (opened with its password or the escrow secret)
    name: String,
    /// Retention plan that `forget` applies when given no policy (basic, pro, enterprise, or none)
    #[arg(long)]
    plan: Option<String>,
    /// zstd level for new data, 0 for none, or `default`
    #[arg(long)]
    compression: Option<String>,
    /// Stored-bytes quota (e.g. 500G, 2T, 1048576) or `none`
    #[arg(long)]
    quota: Option<String>,
    /// How long forget and prune keep what they remove before a prune deletes it for good (e.g. 7d, 36h; 0 for at once), or `default` (7d)
    #[arg(long, value_name = "DURATION")]
    quarantine: Option<String>,
}

/// Arguments of `tenant erase`.
#[derive(Args, Debug)]
pub struct EraseArgs {
    /// Tenant to erase
    name: String,
    /// Confirm: every snapshot, key slot and audit entry of the tenant is deleted for good
    #[arg(long)]
    yes: bool,
    /// Erase even snapshots under a legal hold
    #[arg(long)]
    including_held: bool,
}

/// Arguments of `tenant rotate-key`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Re-seal every pack, index and snapshot under the new key and delete the old keys (resumable)
    #[arg(long)]
    rewrite: bool,
    /// With --rewrite: delete at once what forget and prune put in quarantine (a rewrite must, to retire the old keys)
    #[arg(long, requires = "rewrite")]
    end_quarantine: bool,
}

/// Argon2id parameters for a new password slot: the defaults, or the
/// (hidden) flags' values.
pub(super) fn kdf(memory_kib: Option<u32>, passes: Option<u32>) -> KdfParams {
    let mut k = KdfParams::default();
    if let Some(m) = memory_kib {
        k.memory_kib = m;
    }
    if let Some(p) = passes {
        k.iterations = p;
    }
    k
}

/// Fewest Argon2id passes a new password slot gets (OWASP's minimum with
/// 19 MiB).
const MIN_KDF_PASSES: u32 = 2;

/// `--kdf-memory-kib`: from OWASP's minimum for Argon2id (19 MiB) up to
/// what a reader accepts.
pub(super) fn parse_kdf_memory(s: &str) -> std::result::Result<u32, String> {
    let (min, max) = (strongroom_core::crypto::MIN_KDF_MEMORY_KIB, strongroom_core::crypto::MAX_KDF_MEMORY_KIB);
    match s.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a memory size from {min} to {max} KiB (19 MiB to 1 GiB)")),
    }
}

/// `--kdf-passes`: from 2 up to what a reader accepts.
pub(super) fn parse_kdf_passes(s: &str) -> std::result::Result<u32, String> {
    let max = strongroom_core::crypto::MAX_KDF_PASSES;
    match s.parse::<u32>() {
        Ok(v) if (MIN_KDF_PASSES..=max).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of passes from {MIN_KDF_PASSES} to {max}")),
    }
}

#[derive(Serialize, Default)]
struct TenantRow {
    name: String,
    /// False when no key given opens this tenant: only the name is shown.
    readable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logical_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_slots: Option<Vec<keyslots::SlotInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_costs: Option<Vec<strongroom_core::stats::SnapshotCost>>,
}

fn time_text(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map(|t| t.to_string()).unwrap_or_default()
}

pub fn run(ctx: &Ctx, c: TenantCommand) -> Result<ExitCode> {
    match c {
        TenantCommand::Add(a) => add(ctx, a),
        TenantCommand::List => list(ctx),
        TenantCommand::Passwd(a) => {
            let repo = ctx.open()?;
            let new = ctx.new_password(a.new_password_file.as_deref())?;
            let result =
                ctx.rt.block_on(tenant::passwd(&repo, &new, kdf(a.kdf_memory_kib, a.kdf_passes))).map_err(Into::into);
            ctx.audit(&repo, "tenant passwd", &result)?;
            let name = result?;
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "tenant": repo.tenant().as_str(), "slot": name }))?;
            } else {
                ctx.say(format_args!("password of tenant {} changed (slot {})", repo.tenant(), &name[..8]))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Key(k) => key(ctx, k),
        TenantCommand::Set(a) => set(ctx, a),
        TenantCommand::Erase(a) => erase(ctx, a),
        TenantCommand::RotateKey(a) => rotate(ctx, a),
    }
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<ExitCode> {
    let name = TenantName::new(&a.name)?;
    let store = ctx.store(false)?;
    let stored_config = ctx.rt.block_on(strongroom_core::repo::load_config(&store))?;
    let secret = ctx.new_password(a.new_password_file.as_deref())?;
    let host_key = ctx.host_escrow_key(&store)?;
    // The new tenant's binding record confirms the config as the current
    // tenant's binding confirms it, and names the escrow key this host was
    // given (else the one the current tenant trusts). Without the current
    // tenant's key, only the config as stored and this host's key. A
    // config the current tenant's binding refuses is refused here too.
    let (config, escrow) = match ctx.has_key().then(|| ctx.open_with(ctx.tenant()?, false)) {
        Some(Ok(current)) => (current.config().clone(), host_key.or(current.binding().escrow())),
        Some(Err(e))
            if !super::error_kind_is(
                &e,
                &[strongroom_core::ErrorKind::RepoNotFound, strongroom_core::ErrorKind::BadKey],
            ) =>
        {
            return Err(e.context(format!(
                "opening tenant {} to confirm the repository config for tenant {name}",
                ctx.global.tenant
            )))
        }
        Some(Err(e)) => {
            tracing::warn!(
                "cannot open tenant {} to confirm the repository config ({e:#}); tenant {name} is bound to the \
                 config as stored",
                ctx.global.tenant
            );
            (stored_config, host_key)
        }
        None => {
            tracing::info!("no key for tenant {}: tenant {name} is bound to the config as stored", ctx.global.tenant);
            (stored_config, host_key)
        }
    };
    let kdf = kdf(a.kdf_memory_kib, a.kdf_passes);
    ctx.rt.block_on(strongroom_core::repo::create_tenant(&store, &name, &secret, kdf, &config, escrow.as_ref()))?;
    let opts = ctx.open_options()?;
    let repo = ctx.rt.block_on(strongroom_core::repo::Repo::open(store, name.clone(), &secret, &opts))?;
    // The new tenant's first audit entry.
    ctx.audit(&repo, "tenant add", &Ok(()))?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "tenant": name.as_str(),
            "escrow": escrow.as_ref().map(keyslots::escrow_fingerprint),
        }))?;
    } else {
        let esc = match &escrow {
            Some(e) => format!(" (escrow slot sealed to key {})", keyslots::escrow_fingerprint(e)),
            None => String::new(),
        };
        ctx.say(format_args!("created tenant {name}{esc}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Ctx) -> Result<ExitCode> {
    let store = ctx.store(false)?;
    ctx.rt.block_on(strongroom_core::repo::load_config(&store))?;
    let names = ctx.rt.block_on(store.list_tenants())?;
    let mut rows = Vec::new();
    for n in names {
        rows.push(tenant_row(ctx, n)?);
    }
    if ctx.global.json {
        ctx.print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !ctx.global.quiet {
        print_tenants(&rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The row of tenant `n`: its name, and its details when the given key
/// opens it.
fn tenant_row(ctx: &Ctx, n: String) -> Result<TenantRow> {
    let mut row = TenantRow { name: n.clone(), ..Default::default() };
    // Details for the tenants the given key opens: the current tenant with
    // a password, every tenant with the escrow secret. No prompt: listing
    // names needs no key.
    let try_it = ctx.global.escrow_secret.is_some() || (ctx.has_password() && n == ctx.global.tenant);
    if !try_it {
        return Ok(row);
    }
    match ctx.open_as(TenantName::new(&n)?) {
        Ok(repo) => {
            let stats = ctx.rt.block_on(strongroom_core::stats::run(&repo))?;
            let settings = ctx.rt.block_on(tenant::load_settings(repo.scope()))?;
            let slots = ctx.rt.block_on(keyslots::list_slots(repo.store(), repo.tenant()))?;
            row.readable = true;
            row.created = slots.iter().map(|s| s.created).min().map(time_text);
            row.snapshots = Some(stats.snapshots);
            row.logical_bytes = Some(stats.logical_bytes);
            row.stored_bytes = Some(stats.stored_bytes);
            row.plan = settings.plan;
            row.compression = settings.compression;
            row.quota_bytes = settings.quota_bytes;
            row.key_slots = Some(slots);
            row.snapshot_costs = Some(stats.snapshot_costs);
        }
        Err(e) => tracing::info!("tenant {n}: {e:#}"),
    }
    Ok(row)
}

/// The human table of `tenant list`.
fn print_tenants(rows: &[TenantRow]) -> Result<()> {
    out!(
        "{:<20}  {:<20}  {:>9}  {:>12}  {:>12}  {:<10}  {:>12}  {:>5}",
        "tenant",
        "created",
        "snapshots",
        "logical",
        "stored",
        "plan",
        "quota",
        "slots"
    );
    for r in rows {
        if !r.readable {
            out!("{:<20}  (no key given opens it)", r.name);
            continue;
        }
        out!(
            "{:<20}  {:<20}  {:>9}  {:>12}  {:>12}  {:<10}  {:>12}  {:>5}",
            r.name,
            r.created.as_deref().map(|c| c.get(..19).unwrap_or(c)).unwrap_or(""),
            r.snapshots.unwrap_or(0),
            bytes(r.logical_bytes.unwrap_or(0)),
            bytes(r.stored_bytes.unwrap_or(0)),
            r.plan.as_deref().unwrap_or("-"),
            r.quota_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            r.key_slots.as_ref().map(|s| s.len()).unwrap_or(0)
        );
    }
    Ok(())
}

fn key(ctx: &Ctx, k: KeyCommand) -> Result<ExitCode> {
    let repo = ctx.open()?;
    match k {
        KeyCommand::Add(a) => {
            let file_bytes;
            let password;
            let new = match &a.key_file {
                Some(f) => {
                    file_bytes = super::read_secret_file(f)?;
                    NewSlot::KeyFile(&file_bytes)
                }
                None => {
                    password = ctx.new_password(a.new_password_file.as_deref())?;
                    NewSlot::Password(&password, kdf(a.kdf_memory_kib, a.kdf_passes))
                }
            };
            let result = if a.put_only {
                let b = repo.binding();
                let binding = keyslots::PutOnlyBinding {
                    repository_id: b.repository_id,
                    tenant: repo.tenant().to_string(),
                    chunk_sizes: b.chunk_sizes,
                    pack_target_bytes: b.pack_target_bytes,
                    compression_level: b.compression_level,
                };
                ctx.rt.block_on(keyslots::add_put_only_slot(repo.scope(), new, &a.label, binding))
            } else {
                ctx.rt.block_on(keyslots::add_slot(repo.scope(), new, &a.label))
            };
            let result = result.map_err(Into::into);
            ctx.audit(&repo, "tenant key add", &result)?;
            let name = result?;
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "slot": name }))?;
            } else {
                let what = if a.put_only { "put-only key slot" } else { "key slot" };
                ctx.say(format_args!("added {what} {} to tenant {}", &name[..8], repo.tenant()))?;
            }
        }
        KeyCommand::List => {
            let slots = ctx.rt.block_on(keyslots::list_slots(repo.store(), repo.tenant()))?;
            if ctx.global.json {
                ctx.print_json(&slots)?;
            } else if !ctx.global.quiet {
                out!("{:<10}  {:<17}  {:<20}  {:<7}  label", "id", "kind", "created", "opened");
                for s in &slots {
                    let kind = match &s.kind {
                        SlotKind::Escrow { recipient, .. } => {
                            format!("escrow {}", &keyslots::escrow_fingerprint(recipient)[..8])
                        }
                        k => k.name().to_string(),
                    };
                    let created = time_text(s.created);
                    out!(
                        "{:<10}  {:<17}  {:<20}  {:<7}  {}",
                        &s.name[..8],
                        kind,
                        created.get(..19).unwrap_or(&created),
                        if s.name == repo.opened_slot() { "*" } else { "" },
                        s.label
                    );
                }
            }
        }
        KeyCommand::Remove(a) => {
            let result = ctx.rt.block_on(keyslots::remove_slot(repo.scope(), &a.id)).map_err(Into::into);
            ctx.audit(&repo, "tenant key remove", &result)?;
            let s = result?;
            if ctx.global.json {
                ctx.print_json(&s)?;
            } else {
                ctx.say(format_args!("removed {} slot {} of tenant {}", s.kind.name(), &s.name[..8], repo.tenant()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set(ctx: &Ctx, a: SetArgs) -> Result<ExitCode> {
    let repo = ctx.open_as(TenantName::new(&a.name)?)?;
    let mut s: Settings = ctx.rt.block_on(tenant::load_settings(repo.scope()))?;
    if let Some(p) = &a.plan {
        s.plan =
            if p == "none" { None } else { Some(p.parse::<strongroom_core::retention::Plan>()?.name().to_string()) };
    }
    if let Some(c) = &a.compression {
        s.compression = if c == "default" {
            None
        } else {
            Some(c.parse::<i32>().map_err(|_| anyhow::anyhow!("invalid compression level {c:?}: 0 to 22 or default"))?)
        };
    }
    if let Some(q) = &a.quota {
        s.quota_bytes = if q == "none" { None } else { Some(strongroom_core::units::parse_size(q)?) };
    }
    if let Some(q) = &a.quarantine {
        s.quarantine = if q == "default" {
            None
        } else {
            strongroom_core::units::parse_duration(q)?;
            Some(q.clone())
        };
    }
    let result = ctx.rt.block_on(tenant::save_settings(repo.scope(), &s)).map_err(Into::into);
    ctx.audit(&repo, "tenant set", &result)?;
    result?;
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        ctx.say(format_args!(
            "tenant {}: plan {}, compression {}, quota {}, quarantine {}",
            repo.tenant(),
            s.plan.as_deref().unwrap_or("none"),
            s.compression.map(|c| c.to_string()).unwrap_or_else(|| "repository default".into()),
            s.quota_bytes.map(bytes).unwrap_or_else(|| "none".into()),
            s.quarantine.as_deref().unwrap_or("7d (default)")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn erase(ctx: &Ctx, a: EraseArgs) -> Result<ExitCode> {
    anyhow::ensure!(a.yes, "erasing tenant {} deletes all its data for good: add --yes to confirm", a.name);
    let name = TenantName::new(&a.name)?;
    let store = ctx.store(false)?;
    let config = ctx.rt.block_on(strongroom_core::repo::load_config(&store))?;
    let opts = EraseOptions { including_held: a.including_held };
    let s = strongroom_core::erase::run(ctx.rt.handle(), &store, &name, &opts, || {
        // Only someone who can open the tenant (its password, or the
        // operator's escrow secret) may erase it.
        let repo = ctx.open_as(name.clone())?;
        ctx.lock_to_delete(&repo, "tenant erase")
    })?;
    let cache = ctx.cache_dir()?.join(&config.id).join(name.as_str());
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("removing local cache {}", cache.display()))?;
    }
    if ctx.global.json {
        ctx.print_json(
            &serde_json::json!({ "tenant": name.as_str(), "objects_deleted": s.objects, "bytes_deleted": s.bytes }),
        )?;
    } else {
        ctx.say(format_args!("erased tenant {name}: {} objects ({}) deleted", s.objects, bytes(s.bytes)))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(ctx: &Ctx, a: RotateArgs) -> Result<ExitCode> {
    let mut repo = ctx.open()?;
    let guard = if a.rewrite {
        ctx.lock_to_delete(&repo, "tenant rotate-key")?
    } else {
        ctx.lock(&repo, LockKind::Exclusive, "tenant rotate-key")?
    };
    let checker = guard.checker();
    let result =
        strongroom_core::rotate::run(&mut repo, a.rewrite, a.end_quarantine, ctx.cancel.clone(), Box::new(checker))
            .map_err(anyhow::Error::from);
    if let Ok(s) = &result {
        ctx.note_audit(s.snapshots_resealed.iter().map(|r| r.to.clone()).collect(), 0);
    }
    let s = ctx.unlock(&repo, guard, result)?;
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        ctx.say(format_args!("tenant {}: new writes use key generation {}", repo.tenant(), s.generation))?;
        if a.rewrite {
            ctx.say(format_args!(
                "{}re-sealed {} packs, {} index deltas, {} snapshots, {} holds; retired key generations {:?}",
                if s.resumed { "resumed: " } else { "" },
                s.packs_rewritten,
                s.index_rewritten,
                s.snapshots_resealed.len(),
                s.holds_resealed,
                s.retired_generations
            ))?;
            for strongroom_core::snapshot::Rewritten { from: old, to: new } in &s.snapshots_resealed {
                ctx.say(format_args!("snapshot {} is now {}", &old[..8], &new[..8]))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
