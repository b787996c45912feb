//! `strongroom init`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use strongroom_core::chunk::ChunkSizes;
use strongroom_core::codec::config::{LockMode, ObjectLock};
use strongroom_core::repo::{self, InitOptions};

/// Arguments of `init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Chunk sizes in bytes, MIN,AVG,MAX (AVG a power of two); fixed for the repository's life
    #[arg(long, value_parser = parse_sizes)]
    chunk_sizes: Option<ChunkSizes>,
    /// Target pack size in MiB
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    /// Default zstd level (0 stores chunks uncompressed)
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    compression: i32,
    /// Operator escrow public key file (from `escrow keygen`): every tenant gets a slot sealed to it
    #[arg(long)]
    escrow_key: Option<std::path::PathBuf>,
    /// Argon2id memory in KiB for the password slot (default 65536, at least 19456)
    #[arg(long, hide = true, value_parser = super::tenant::parse_kdf_memory)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes for the password slot (default 3, at least 2)
    #[arg(long, hide = true, value_parser = super::tenant::parse_kdf_passes)]
    kdf_passes: Option<u32>,
    /// Share the tenant's keys (and passwords, chunker and pack settings) with this repository, so `copy` between the two moves packs as they are
    #[arg(long, value_name = "URL", conflicts_with_all = ["chunk_sizes", "compression"])]
    copy_keys_from: Option<String>,
    /// Store-enforced retention on an S3 bucket with Object Lock enabled: every pack, index delta, snapshot record, key slot and audit entry is kept by the server for the tenant plan's keep period plus a margin (compliance: irreversible, nobody can shorten it)
    #[arg(long, value_name = "MODE", value_parser = ["governance", "compliance"], conflicts_with = "copy_keys_from")]
    object_lock: Option<String>,
    /// Object lock: days added to the plan's keep period
    #[arg(long, default_value_t = 7, requires = "object_lock")]
    lock_margin_days: u32,
    /// Object lock: keep period in days of a tenant without a plan
    #[arg(long, default_value_t = 30, requires = "object_lock")]
    lock_default_days: u32,
}

/// Parses `MIN,AVG,MAX`, each a size as [`strongroom_core::units::parse_size`]
/// reads it (`64K`, `1M`, `131072`).
pub fn parse_sizes(s: &str) -> std::result::Result<ChunkSizes, String> {
    let parts: Vec<&str> = s.split(',').collect();
    let [min, avg, max] = parts.as_slice() else {
        return Err(format!("expected MIN,AVG,MAX, got {s:?}"));
    };
    let num = |t: &str| -> std::result::Result<u32, String> {
        let bytes = strongroom_core::units::parse_size(t).map_err(|e| e.to_string())?;
        u32::try_from(bytes).map_err(|_| format!("invalid size {:?}: at most 4G", t.trim()))
    };
    let sizes = ChunkSizes { min: num(min)?, avg: num(avg)?, max: num(max)? };
    sizes.validate().map_err(|e| e.to_string())?;
    Ok(sizes)
}

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let store = ctx.store(true)?;
    let tenant = ctx.tenant()?;
    if let Some(from) = &a.copy_keys_from {
        let from_store = ctx.store_at(from, false)?;
        let secret = ctx.password(false)?;
        let cfg = ctx.rt.block_on(repo::init_with_keys_of(&store, &from_store, &tenant, &secret))?;
        if ctx.global.json {
            let v = serde_json::json!({ "repository_id": cfg.id, "tenant": tenant.as_str(), "url": store.url(), "keys_from": from });
            ctx.print_json(&v)?;
        } else {
            ctx.say(format!(
                "created repository {} at {} with tenant {} sharing its keys with {from}",
                &cfg.id[..8],
                store.url(),
                tenant
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let secret = ctx.password(true)?;
    let kdf = super::tenant::kdf(a.kdf_memory_kib, a.kdf_passes);
    let opts = InitOptions {
        kdf,
        chunk_sizes: a.chunk_sizes.unwrap_or_default(),
        pack_target_bytes: a.pack_size_mib.clamp(1, 1024) * 1024 * 1024,
        compression_level: a.compression,
        escrow: a.escrow_key.as_deref().map(super::escrow::read_public).transpose()?,
        object_lock: a.object_lock.as_deref().map(|m| ObjectLock {
            mode: if m == "compliance" { LockMode::Compliance } else { LockMode::Governance },
            margin_days: a.lock_margin_days,
            default_days: a.lock_default_days,
        }),
    };
    let cfg = ctx.rt.block_on(repo::init(&store, &tenant, &secret, &opts))?;
    // The operator's explicit escrow key for this repository, on this host.
    if let Some(public) = &opts.escrow {
        strongroom_core::keyslots::set_host_escrow_key(&ctx.cache_dir()?, &store.location(), public)?;
    }
    // The first entry of the tenant's audit log.
    let repo_opts = ctx.open_options()?;
    let opened = ctx.rt.block_on(repo::Repo::open(store.clone(), tenant.clone(), &secret, &repo_opts))?;
    ctx.audit(&opened, "init", &Ok(()))?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({ "repository_id": cfg.id, "tenant": tenant.as_str(), "url": store.url() }))?;
    } else {
        ctx.say(format!("created repository {} at {} with tenant {}", &cfg.id[..8], store.url(), tenant))?;
    }
    Ok(ExitCode::SUCCESS)
}
