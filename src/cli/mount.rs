//! `strongroom mount`

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;
use strongroom_core::mount::{self, MountOptions};
use strongroom_core::repo::{self, Repo};

/// Arguments of `mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to mount the snapshots on (nothing may be mounted there)
    mountpoint: PathBuf,
    /// Let other users access the mount (needs `user_allow_other` in /etc/fuse.conf unless root)
    #[arg(long)]
    allow_other: bool,
    /// Memory for decrypted chunks, in MiB
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    cache_mib: u64,
    /// Re-read the snapshot list when a listing is older than this
    #[arg(long, default_value = "5s", value_parser = strongroom_core::units::parse_duration)]
    refresh: Duration,
}

pub fn run(ctx: &Ctx, a: MountArgs) -> Result<ExitCode> {
    // Check before the (possibly slow) repository open.
    let mountpoint = mount::check_mountpoint(&a.mountpoint)?;
    let (repo, private_cache) = open_private(ctx)?;
    let repo = Arc::new(repo);
    let opts = MountOptions {
        allow_other: a.allow_other,
        cache_bytes: a.cache_mib.saturating_mul(1 << 20),
        refresh: a.refresh,
        ..Default::default()
    };
    let result = serve(ctx, repo.clone(), &mountpoint, &opts);
    drop(repo);
    let _ = std::fs::remove_dir_all(&private_cache);
    result
}

fn serve(ctx: &Ctx, repo: Arc<Repo>, mountpoint: &std::path::Path, opts: &MountOptions) -> Result<ExitCode> {
    let n_snaps = repo.snapshots()?.len();
    // The read's audit entry comes before anything is served: without
    // it, nothing is mounted. A mount that then fails is closed by an
    // `unmount` entry carrying its error.
    ctx.audit(&repo, "mount", &Ok(()))?;
    let mounted = match mount::mount(repo.clone(), mountpoint, opts) {
        Ok(m) => m,
        Err(e) => {
            let failed = Err(anyhow::Error::from(e).context(format!("mounting {}", mountpoint.display())));
            ctx.audit(&repo, "unmount", &failed)?;
            return failed;
        }
    };
    strongroom_core::testhook::pause("mount-served", "");
    ctx.say(format!(
        "mounted {n_snaps} snapshots of tenant {} at {} (read-only); Ctrl-C or SIGTERM unmounts",
        ctx.global.tenant,
        mountpoint.display()
    ))?;
    let outside = ctx.rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok::<bool, anyhow::Error>(false),
                _ = hup.recv() => return Ok(false),
                _ = tick.tick() => {
                    if ctx.cancel.is_cancelled() {
                        return Ok(false);
                    }
                    if mounted.is_finished() {
                        return Ok(true);
                    }
                }
            }
        }
    })?;
    let unmounted = mounted.unmount().with_context(|| format!("unmounting {}", mountpoint.display()));
    ctx.audit(&repo, "unmount", &unmounted)?;
    let lazily = unmounted?;
    ctx.say(if outside {
        format!("{} was unmounted", mountpoint.display())
    } else if lazily {
        format!("detached {} (it was in use; open files there now fail)", mountpoint.display())
    } else {
        format!("unmounted {}", mountpoint.display())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the repository on a private copy of the tenant's catalog, so
/// that backups and other commands keep the shared catalog while the
/// filesystem stays mounted (redb admits one process per file). Returns
/// the repository and the directory to remove afterwards.
fn open_private(ctx: &Ctx) -> Result<(Repo, PathBuf)> {
    let store = ctx.store(false)?;
    let secret = ctx.secret()?;
    let tenant = ctx.tenant()?;
    let config = ctx.rt.block_on(repo::load_config(&store))?;
    let cache = ctx.cache_dir()?;
    let private = cache.join(format!("mount-{}", std::process::id()));
    let dir = private.join(&config.id).join(tenant.as_str());
    strongroom_core::private::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let shared = cache.join(&config.id).join(tenant.as_str()).join("catalog.redb");
    // A copy torn by a concurrent writer is detected on open and rebuilt.
    if shared.exists() {
        if let Err(e) = std::fs::copy(&shared, dir.join("catalog.redb")) {
            tracing::info!("cannot copy the catalog ({e}); building one from the store");
        }
    }
    // The host's memory stays where every other command keeps it.
    let opts =
        repo::OpenOptions { cache_dir: private.clone(), lock_wait: ctx.global.lock_wait, memory_dir: Some(cache) };
    let opened = (|| {
        let repo = ctx.rt.block_on(Repo::open_unsynced(store, tenant, &secret, &opts))?;
        if secret.is_escrow() {
            ctx.audit_escrow_open(&repo)?;
        }
        ctx.rt.block_on(repo.sync_logged())?;
        anyhow::Ok(repo)
    })();
    match opened {
        Ok(r) => Ok((r, private)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&private);
            Err(e)
        }
    }
}
