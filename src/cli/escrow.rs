//! `strongroom escrow …`: the operator's recovery key.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::Ctx;
use strongroom_core::crypto::EscrowSecret;
use strongroom_core::keyslots;

/// `escrow` subcommands.
#[derive(Subcommand, Debug)]
pub enum EscrowCommand {
    /// Generate an escrow key pair (keep the secret file offline)
    Keygen(KeygenArgs),
    /// Give this host the operator's escrow public key: tenants opened here are bound to it and get escrow slots
    Set(SetArgs),
    /// Show the fingerprints of the repository's escrow key and of the one this host was given
    Show,
}

/// Arguments of `escrow keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten)
    #[arg(long)]
    secret_out: PathBuf,
    /// Where to write the public key
    #[arg(long)]
    public_out: PathBuf,
}

/// Arguments of `escrow set`.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// The escrow public key file (from `escrow keygen`)
    file: PathBuf,
}

/// Reads an escrow public-key file.
pub fn read_public(file: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading escrow key {}", file.display()))?;
    keyslots::parse_escrow_public(&text).with_context(|| file.display().to_string())
}

fn write_new(path: &Path, text: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create (it must not exist yet)", path.display()))?;
    f.write_all(text).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", path.display()))
}

pub fn run(ctx: &Ctx, c: EscrowCommand) -> Result<ExitCode> {
    match c {
        EscrowCommand::Keygen(a) => {
            let secret = EscrowSecret::random();
            let public = secret.public();
            write_new(&a.secret_out, keyslots::format_escrow_secret(&secret).as_bytes(), 0o600)?;
            write_new(&a.public_out, keyslots::format_escrow_public(&public).as_bytes(), 0o644)?;
            let fp = keyslots::escrow_fingerprint(&public);
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "fingerprint": fp }))?;
            } else {
                ctx.say(format_args!(
                    "escrow key {fp}: secret in {}, public in {}",
                    a.secret_out.display(),
                    a.public_out.display()
                ))?;
            }
        }
        EscrowCommand::Set(a) => {
            let public = read_public(&a.file)?;
            let store = ctx.store(false)?;
            ctx.rt.block_on(strongroom_core::repo::load_config(&store))?;
            // The operator's explicit setting on this host: tenants opened
            // here are bound to this key. The root object only informs.
            keyslots::set_host_escrow_key(&ctx.cache_dir()?, &store.location(), &public)?;
            ctx.rt.block_on(keyslots::escrow_store(&store, &public))?;
            // The current tenant is bound and sealed now if its key is at hand.
            let mut sealed_for = None;
            if ctx.has_key() {
                let repo = ctx.open()?;
                anyhow::ensure!(
                    repo.binding().escrow() == Some(public),
                    "tenant {} could not be bound to escrow key {} (see the warning above)",
                    repo.tenant(),
                    keyslots::escrow_fingerprint(&public)
                );
                ctx.audit(&repo, "escrow set", &Ok(()))?;
                sealed_for = Some(repo.tenant().to_string());
            }
            let fp = keyslots::escrow_fingerprint(&public);
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "fingerprint": fp, "slot_added_for": sealed_for }))?;
            } else {
                ctx.say(format_args!(
                    "escrow key {fp} set for this host; each tenant opened here is bound to it and gets an escrow slot"
                ))?;
            }
        }
        EscrowCommand::Show => {
            let store = ctx.store(false)?;
            ctx.rt.block_on(strongroom_core::repo::load_config(&store))?;
            let public = ctx.rt.block_on(keyslots::escrow_load(&store))?;
            let host = ctx.host_escrow_key(&store)?;
            let fp = public.as_ref().map(keyslots::escrow_fingerprint);
            let host_fp = host.as_ref().map(keyslots::escrow_fingerprint);
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "fingerprint": fp, "host_fingerprint": host_fp }))?;
            } else {
                match &fp {
                    Some(fp) => ctx.say(format_args!("escrow key {fp}"))?,
                    None => ctx.say("no escrow key set")?,
                }
                match host_fp {
                    Some(h) if Some(&h) != fp.as_ref() => {
                        ctx.say(format_args!("this host binds tenants to escrow key {h}"))?
                    }
                    Some(_) => ctx.say("this host binds tenants to it")?,
                    None => ctx.say("this host was given no escrow key (`strongroom escrow set FILE`)")?,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
