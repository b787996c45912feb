//! The command line: the only module that knows clap, anyhow, stdout and
//! exit codes.
//!
//! Each command has its own file with its clap `*Args` and a `run` that
//! resolves the arguments into library options, calls one operation and
//! prints its summary (a table for people, `--json` for machines).
//!
//! Exit codes (as restic's): 0 ok, 1 error, 2 malformed command line,
//! 3 snapshot saved but some source files could not be read, 10 repository
//! or tenant does not exist, 11 could not lock, 12 wrong password or key,
//! 130 interrupted.

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`strongroom ls … | head`); `main` exits 0 on a broken pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

mod agent;
mod audit;
mod backup;
mod bench;
mod catalog;
mod check;
mod completions;
mod copy;
mod diff;
mod dump;
mod escrow;
mod filter;
mod find;
mod forget;
mod health;
mod hold;
mod init;
mod key_cache;
mod ls;
mod mount;
mod progress;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod tag;
mod tenant;
mod undelete;
mod unlock;
mod verify_restore;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use strongroom_core::id::TenantName;
use strongroom_core::key_cache::KeyCache;
use strongroom_core::repo::{self, Repo, Secret};
use strongroom_core::store::{self, Store};
use strongroom_core::units::parse_duration;
use strongroom_core::ErrorKind;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: malformed arguments (clap).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: snapshot saved, some source files unreadable.
pub const EXIT_PARTIAL: u8 = 3;
/// Exit code: repository or tenant does not exist.
pub const EXIT_NO_REPO: u8 = 10;
/// Exit code: could not lock.
pub const EXIT_LOCKED: u8 = 11;
/// Exit code: wrong password or key.
pub const EXIT_BAD_KEY: u8 = 12;
/// Exit code: interrupted.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: the store refused a request for want of a right (a backup
/// host, which may not delete, running forget or prune).
pub const EXIT_PERMISSION: u8 = 13;

/// strongroom: encrypted, deduplicating, multi-tenant backups
#[derive(Parser, Debug)]
#[command(name = "strongroom", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    cmd: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository: a path, file://PATH, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX or gs://BUCKET/PREFIX
    #[arg(short, long, env = "STRONGROOM_REPO", global = true)]
    repo: Option<String>,
    /// Directory for local catalogs [default: the user's cache directory]
    #[arg(long, env = "STRONGROOM_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Tenant to act as
    #[arg(long, env = "STRONGROOM_TENANT", default_value = "default", global = true)]
    tenant: String,
    /// Read the password from this file (or set STRONGROOM_PASSWORD; never on the command line)
    #[arg(long, env = "STRONGROOM_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Open the tenant with the operator's escrow secret key file instead of a password
    #[arg(long, env = "STRONGROOM_ESCROW_SECRET_FILE", global = true)]
    escrow_secret: Option<PathBuf>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More log output (-v info, -vv debug, -vvv trace: every store request)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Wait this long for a lock held by another process (e.g. 30s, 5m)
    #[arg(long, default_value = "0s", value_parser = parse_duration, global = true)]
    lock_wait: Duration,
    /// Concurrent object-store requests
    #[arg(long, default_value_t = 4, global = true)]
    io_concurrency: usize,
    /// Endpoint of an S3-compatible server (path-style; http:// allowed only if given here)
    #[arg(long, env = "STRONGROOM_S3_ENDPOINT", global = true)]
    s3_endpoint: Option<String>,
    /// Write Prometheus metrics of this command to FILE (replaced atomically; for node_exporter)
    #[arg(long, value_name = "FILE", global = true)]
    metrics_textfile: Option<PathBuf>,
    /// How long to retry a failing object-store request (backoff with jitter; 0 disables retries)
    #[arg(long, env = "STRONGROOM_IO_RETRY_TIMEOUT", default_value = "2m", value_parser = parse_duration, global = true)]
    io_retry_timeout: Duration,
    /// Limit uploads to the repository to this many KiB/s (0: unlimited)
    #[arg(long, value_name = "KIB_PER_S", default_value_t = 0, global = true)]
    limit_upload: u64,
    /// Limit downloads from the repository to this many KiB/s (0: unlimited)
    #[arg(long, value_name = "KIB_PER_S", default_value_t = 0, global = true)]
    limit_download: u64,
    /// Keep the key a password unwrapped on this host this long, and open from it meanwhile
    /// (e.g. 15m, 8h; 0 or off: no key cache). See `strongroom key-cache`
    #[arg(long, value_name = "DURATION", env = "STRONGROOM_KEY_CACHE", value_parser = parse_key_cache, global = true)]
    key_cache: Option<Duration>,
    /// Internal (the agent's steps): read the tenant's already unwrapped
    /// key from this inherited file descriptor instead of a password
    #[arg(long, value_name = "FD", hide = true, global = true)]
    key_fd: Option<i32>,
    /// Which secret options were given on the command line rather than
    /// taken from the environment (set after parsing).
    #[arg(skip)]
    secrets_on_command_line: SecretFlags,
}

/// The secret options given as flags: a flag beats every environment
/// variable, so that `--password-file F` is what opens the tenant even
/// when STRONGROOM_PASSWORD is set.
#[derive(Debug, Clone, Copy, Default)]
struct SecretFlags {
    password_file: bool,
    escrow_secret: bool,
}

impl SecretFlags {
    fn of(matches: &clap::ArgMatches) -> Self {
        let on_command_line = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        Self { password_file: on_command_line("password_file"), escrow_secret: on_command_line("escrow_secret") }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository and its first tenant
    Init(init::InitArgs),
    /// Back up files, directories, standard input or a command's output
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// List files in a snapshot
    Ls(ls::LsArgs),
    /// Restore a snapshot (or part of it) into a directory
    Restore(restore::RestoreArgs),
    /// Restore a snapshot into a temporary directory, compare it with the snapshot, clean up
    VerifyRestore(verify_restore::VerifyRestoreArgs),
    /// Show what changed between two snapshots
    Diff(diff::DiffArgs),
    /// Find which snapshots contain paths matching a pattern
    Find(find::FindArgs),
    /// Write one file of a snapshot to standard output
    Dump(dump::DumpArgs),
    /// Browse snapshots as a read-only filesystem (FUSE)
    Mount(mount::MountArgs),
    /// Check the repository for damage
    Check(check::CheckArgs),
    /// Copy snapshots of the tenant to another repository (any backend)
    Copy(copy::CopyArgs),
    /// Remove snapshots by a retention policy
    Forget(forget::ForgetArgs),
    /// Add, remove or set the tags of snapshots
    Tag(tag::TagArgs),
    /// Show sizes and dedup/compression ratios
    Stats(stats::StatsArgs),
    /// Manage the local catalog (a cache of the repository)
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Delete data no snapshot references; repack mostly unused packs
    Prune(prune::PruneArgs),
    /// Bring back snapshots forgotten within the quarantine
    Undelete(undelete::UndeleteArgs),
    /// Fix what check reports: index orphaned packs, drop missing ones, rewrite damaged snapshots
    Repair(repair::RepairArgs),
    /// Remove stale locks (or all locks with --remove-all)
    Unlock(unlock::UnlockArgs),
    /// Protect snapshots from forget and prune (legal hold)
    #[command(subcommand)]
    Hold(hold::HoldCommand),
    /// Manage tenants: add, list, passwords and key slots, plans and quotas, key rotation, erasure
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// The operator's escrow (recovery) key
    #[command(subcommand)]
    Escrow(escrow::EscrowCommand),
    /// Show, export or verify the tenant's audit log
    Audit(audit::AuditArgs),
    /// Benchmarks that need no repository
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run scheduled jobs (backup, retention, prune, check, drills) and serve metrics
    Agent(agent::AgentArgs),
    /// Exit non-zero if the newest snapshot is too old or the last check failed
    Health(health::HealthArgs),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Write man pages into a directory
    Man(completions::ManArgs),
    /// List or clear the keys `--key-cache` keeps on this host
    #[command(subcommand)]
    KeyCache(key_cache::KeyCacheCommand),
}

/// What the running command reports for its audit entry.
#[derive(Debug, Default)]
struct AuditDetails {
    /// Snapshots created, removed or read (hex ids).
    snapshots: Vec<String>,
    /// Paths inside the snapshots that a read named.
    paths: Vec<String>,
    /// Bytes added, freed or read.
    bytes: u64,
    /// The command holds a lock but reads no file contents (`check`
    /// without `--read-data`): [`Ctx::unlock`] writes no entry.
    skip: bool,
}

/// What every command gets: the global arguments, the runtime and the
/// cancellation flag set by Ctrl-C.
pub struct Ctx {
    global: GlobalArgs,
    rt: tokio::runtime::Runtime,
    cancel: strongroom_core::Cancel,
    /// What the running command reports for its audit entry.
    audit_details: std::cell::RefCell<AuditDetails>,
    /// What this command measured, for `--metrics-textfile`.
    metrics: Arc<strongroom_core::metrics::Metrics>,
    /// The stores this command opened, whose requests (and, under a
    /// bandwidth limit, paced bytes) are logged at the end (`-vv`).
    opened: std::cell::RefCell<Vec<Store>>,
    /// The key handoff read from `--key-fd` at start, or why it could
    /// not be read.
    handoff: Option<std::result::Result<zeroize::Zeroizing<Vec<u8>>, String>>,
    /// Whether opening a tenant reads the repository's root `escrow`
    /// object to warn when it differs from the tenant's binding: for the
    /// commands that manage tenants and escrow, and `check`; the others
    /// save the request.
    check_root_escrow: bool,
}

impl Ctx {
    fn repo_url(&self) -> Result<&str> {
        self.global.repo.as_deref().context("no repository given: use -r/--repo or set STRONGROOM_REPO")
    }

    fn tenant(&self) -> Result<TenantName> {
        Ok(TenantName::new(&self.global.tenant)?)
    }

    fn store(&self, create: bool) -> Result<Store> {
        self.store_at(self.repo_url()?, create)
    }

    /// Opens the store of any repository URL with the global settings.
    fn store_at(&self, url: &str, create: bool) -> Result<Store> {
        let opts = store::OpenOptions {
            s3_endpoint: self.global.s3_endpoint.clone(),
            retry_timeout: self.global.io_retry_timeout,
            config: Vec::new(),
        };
        let kib = |n: u64| n.saturating_mul(1024);
        match Store::open(url, &opts, create) {
            Err(store::Error::NotFound { .. }) => {
                Err(strongroom_core::Error::RepoNotFound { url: url.to_string() }.into())
            }
            other => {
                let store = other?.with_limits(kib(self.global.limit_upload), kib(self.global.limit_download));
                self.opened.borrow_mut().push(store.clone());
                Ok(store)
            }
        }
    }

    /// Logs the requests each opened store made, and how many bytes each
    /// limited store paced in each direction.
    fn log_requests(&self) {
        for store in self.opened.borrow().iter() {
            tracing::debug!("store requests: {}", store.requests());
            let (up, down) = store.paced();
            if up.is_none() && down.is_none() {
                continue;
            }
            let shown = |n: Option<u64>| n.map_or("unlimited".to_string(), |n| format!("{n} bytes"));
            tracing::debug!("bandwidth limits paced {} up, {} down", shown(up), shown(down));
        }
    }

    fn cache_dir(&self) -> Result<PathBuf> {
        match &self.global.cache_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(dirs::cache_dir()
                .context("no cache directory known for this user: use --cache-dir or set STRONGROOM_CACHE_DIR")?
                .join("strongroom")),
        }
    }

    /// The secret that opens the tenant: the escrow secret when
    /// --escrow-secret is given, else the password. A flag beats the
    /// environment: `--password-file` on the command line wins over
    /// STRONGROOM_ESCROW_SECRET_FILE, and giving both flags is an error.
    fn secret(&self) -> Result<Secret> {
        let flags = self.global.secrets_on_command_line;
        if let Some(handoff) = &self.handoff {
            anyhow::ensure!(
                !(flags.password_file || flags.escrow_secret),
                "give --key-fd alone, without --password-file or --escrow-secret"
            );
            return match handoff {
                Ok(bytes) => Ok(Secret::handoff(bytes.clone())),
                Err(why) => Err(strongroom_core::Error::BadHandoff { why: why.clone() }.into()),
            };
        }
        anyhow::ensure!(
            !(flags.password_file && flags.escrow_secret),
            "give either --password-file or --escrow-secret, not both"
        );
        let escrow_file = self.global.escrow_secret.as_ref().filter(|_| !flags.password_file);
        if let Some(f) = escrow_file {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading escrow secret {}", f.display()))?;
            let secret =
                strongroom_core::keyslots::parse_escrow_secret(&text).with_context(|| f.display().to_string())?;
            return Ok(Secret::escrow(&secret));
        }
        let secret = self.password(false)?;
        match self.global.key_cache.filter(|ttl| !ttl.is_zero()) {
            Some(ttl) => Ok(secret.with_key_cache(KeyCache::new(&self.cache_dir()?, ttl))),
            None => Ok(secret),
        }
    }

    /// Whether a password is given without a prompt (STRONGROOM_PASSWORD
    /// or --password-file): commands that can do without one check first.
    fn has_password(&self) -> bool {
        self.handoff.is_some()
            || self.global.password_file.is_some()
            || std::env::var_os("STRONGROOM_PASSWORD").is_some()
    }

    /// Whether a key for the current tenant is given without a prompt: a
    /// password ([`Ctx::has_password`]) or the escrow secret.
    fn has_key(&self) -> bool {
        self.has_password() || self.global.escrow_secret.is_some()
    }

    /// Reads a new password: `file` (the command's --new-password-file),
    /// STRONGROOM_NEW_PASSWORD, or a prompt (twice). The flag beats the
    /// environment.
    fn new_password(&self, file: Option<&std::path::Path>) -> Result<Secret> {
        if let Some(f) = file {
            let b = read_secret_file(f)?;
            anyhow::ensure!(!b.is_empty(), "password file {} is empty", f.display());
            return Ok(Secret::new(b.to_vec()));
        }
        if let Ok(p) = std::env::var("STRONGROOM_NEW_PASSWORD") {
            anyhow::ensure!(!p.is_empty(), "STRONGROOM_NEW_PASSWORD is empty");
            return Ok(Secret::new(p.into_bytes()));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("new password: ").context("reading password")?;
            let again = rpassword::prompt_password("again: ").context("reading password")?;
            anyhow::ensure!(p == again, "the passwords differ");
            anyhow::ensure!(!p.is_empty(), "empty password");
            return Ok(Secret::new(p.into_bytes()));
        }
        anyhow::bail!(
            "no new password given: set STRONGROOM_NEW_PASSWORD, use --new-password-file, or run on a terminal"
        )
    }

    /// Reads the password: --password-file given on the command line,
    /// STRONGROOM_PASSWORD, STRONGROOM_PASSWORD_FILE, or a prompt (a flag
    /// beats the environment).
    fn password(&self, confirm: bool) -> Result<Secret> {
        let file = self.global.password_file.as_ref();
        if let Some(f) = file.filter(|_| self.global.secrets_on_command_line.password_file) {
            return Ok(Secret::new(read_secret_file(f)?.to_vec()));
        }
        if let Ok(p) = std::env::var("STRONGROOM_PASSWORD") {
            return Ok(Secret::new(p.into_bytes()));
        }
        if let Some(f) = file {
            return Ok(Secret::new(read_secret_file(f)?.to_vec()));
        }
        if std::io::stdin().is_terminal() {
            let prompt = format!("password for tenant {}: ", self.global.tenant);
            let p = rpassword::prompt_password(prompt).context("reading password")?;
            if confirm {
                let again = rpassword::prompt_password("again: ").context("reading password")?;
                anyhow::ensure!(p == again, "the passwords differ");
            }
            return Ok(Secret::new(p.into_bytes()));
        }
        anyhow::bail!("no password given: set STRONGROOM_PASSWORD, use --password-file, or run on a terminal")
    }

    /// Opens the repository as the configured tenant.
    fn open(&self) -> Result<Repo> {
        let tenant = self.tenant()?;
        self.open_as(tenant)
    }

    /// Opens the repository as the configured tenant for a command that
    /// reads snapshot records and nothing else (no tree, no blob): the
    /// catalog syncs them alone, without the index deltas.
    fn open_for_snapshots(&self) -> Result<Repo> {
        let repo = self.open_with(self.tenant()?, false)?;
        self.rt.block_on(repo.sync_snapshots_logged())?;
        Ok(repo)
    }

    /// Opens the repository as the configured tenant for a command that
    /// takes the lock ([`Ctx::lock`]) before it reads the catalog: the
    /// lock brings the catalog up to date, once.
    fn open_to_lock(&self) -> Result<Repo> {
        self.open_with(self.tenant()?, false)
    }

    /// [`Ctx::open_to_lock`] for a backup: a put-only key opens too (see
    /// `Repo::open_unsynced_for_backup`).
    fn open_for_backup(&self) -> Result<Repo> {
        let store = self.store(false)?;
        let secret = self.secret()?;
        let opts = self.open_options()?;
        let repo = self.rt.block_on(Repo::open_unsynced_for_backup(store, self.tenant()?, &secret, &opts))?;
        if !repo.is_put_only() {
            if secret.is_escrow() {
                self.audit_escrow_open(&repo)?;
            }
            self.sync_escrow(&repo);
        }
        Ok(repo)
    }

    /// Opens the repository as `tenant`, and gives the tenant an escrow
    /// slot if the repository has an escrow key it lacks.
    fn open_as(&self, tenant: TenantName) -> Result<Repo> {
        self.open_with(tenant, true)
    }

    /// [`Ctx::open_as`]; `sync`: bring the catalog up to date now.
    ///
    /// A tenant opened with the escrow secret gets its audit entry before
    /// anything of it is read ([`Ctx::audit_escrow_open`]).
    fn open_with(&self, tenant: TenantName, sync: bool) -> Result<Repo> {
        let store = self.store(false)?;
        let secret = self.secret()?;
        let opts = self.open_options()?;
        let started = std::time::Instant::now();
        let repo = self.rt.block_on(Repo::open_unsynced(store, tenant, &secret, &opts))?;
        if secret.is_escrow() {
            self.audit_escrow_open(&repo)?;
        }
        if sync {
            self.rt.block_on(repo.sync_logged())?;
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "repository opened");
        self.sync_escrow(&repo);
        Ok(repo)
    }

    /// The fail-safe of escrow openings: the operator's secret opened the
    /// tenant, so an entry (`escrow open`, with the command line) is
    /// written before the catalog is synced or any snapshot, tree or file
    /// is read, and the command stops if it cannot be written.
    fn audit_escrow_open(&self, repo: &Repo) -> Result<()> {
        let record = strongroom_core::audit::Record {
            command: "escrow open".into(),
            args: std::env::args().skip(1).collect(),
            opened_with: Some(repo.opened_with().into()),
            ..Default::default()
        };
        self.rt.block_on(strongroom_core::audit::append(repo.scope(), repo.host_memory(), &record)).with_context(
            || {
                format!(
                    "tenant {} was opened with the escrow secret, but the audit entry that must come before \
                     any read could not be written; nothing was read",
                    repo.tenant()
                )
            },
        )?;
        Ok(())
    }

    /// How to open a tenant: this command's cache directory and lock wait.
    fn open_options(&self) -> Result<repo::OpenOptions> {
        Ok(repo::OpenOptions { cache_dir: self.cache_dir()?, lock_wait: self.global.lock_wait, memory_dir: None })
    }

    /// The escrow key the operator gave this host for the repository.
    fn host_escrow_key(&self, store: &Store) -> Result<Option<[u8; 32]>> {
        Ok(strongroom_core::keyslots::host_escrow_key(&self.cache_dir()?, &store.location())?)
    }

    /// Gives the open tenant an escrow slot for the key its binding record
    /// names (after binding it to this host's escrow key, if the operator
    /// gave one); a failure is a warning, the command goes on.
    fn sync_escrow(&self, repo: &Repo) {
        let synced = self.host_escrow_key(repo.store()).and_then(|key| {
            let sync = strongroom_core::tenant::escrow_sync(repo, key.as_ref(), self.check_root_escrow);
            Ok(self.rt.block_on(sync)?)
        });
        if let Err(e) = synced {
            tracing::warn!("could not update the escrow slot of tenant {}: {e:#}", repo.tenant());
        }
    }

    /// Records the snapshots and bytes of the running command for its
    /// audit entry.
    fn note_audit(&self, snapshots: Vec<String>, bytes: u64) {
        let mut d = self.audit_details.borrow_mut();
        d.snapshots = snapshots;
        d.bytes = bytes;
    }

    /// Records the bytes (added, freed or read) of the running command.
    fn note_audit_bytes(&self, bytes: u64) {
        self.audit_details.borrow_mut().bytes = bytes;
    }

    /// Records the paths inside the snapshots that the running read named.
    fn note_audit_paths(&self, paths: Vec<String>) {
        self.audit_details.borrow_mut().paths = paths;
    }

    /// The running command holds a lock but reads no file contents:
    /// [`Ctx::unlock`] writes no entry for it.
    fn skip_audit(&self) {
        self.audit_details.borrow_mut().skip = true;
    }

    /// Appends the audit entry of `command` with the outcome `result`.
    fn audit<T>(&self, repo: &Repo, command: &str, result: &Result<T>) -> Result<()> {
        let AuditDetails { snapshots, paths, bytes, .. } = std::mem::take(&mut *self.audit_details.borrow_mut());
        let record = strongroom_core::audit::Record {
            command: command.to_string(),
            args: std::env::args().skip(1).collect(),
            snapshots,
            bytes,
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            paths,
            opened_with: Some(repo.opened_with().into()),
        };
        let done = if result.is_ok() { "completed" } else { "failed" };
        self.rt
            .block_on(strongroom_core::audit::append(repo.scope(), repo.host_memory(), &record))
            .with_context(|| format!("{command} {done}, but its audit entry could not be written"))?;
        Ok(())
    }

    /// Takes a tenant lock (waiting up to --lock-wait), then brings the
    /// catalog up to date with what others committed before we held it.
    fn lock(
        &self,
        repo: &Repo,
        kind: strongroom_core::lock::LockKind,
        command: &str,
    ) -> Result<strongroom_core::lock::LockGuard> {
        let started = std::time::Instant::now();
        let guard =
            self.rt.block_on(strongroom_core::lock::acquire(repo.scope(), kind, self.global.lock_wait, command))?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "lock taken");
        // The tenant may have been erased while we waited for the lock.
        // That check and the sync are independent reads: one round trip,
        // not two (a sync of an erased tenant is thrown away).
        let slot =
            strongroom_core::store::Store::path(repo.tenant(), strongroom_core::store::Kind::Keys, repo.opened_slot());
        let (slot_size, synced) =
            self.rt.block_on(async { tokio::join!(repo.store().size_opt(&slot), repo.sync_logged()) });
        if let Ok(None) = slot_size {
            let _ = self.rt.block_on(guard.release());
            return Err(strongroom_core::Error::TenantNotFound {
                tenant: repo.tenant().to_string(),
                url: repo.store().url().to_string(),
            })
            .context("the key slot that opened it is gone (erased or removed meanwhile)");
        }
        if let Err(e) = synced {
            let _ = self.rt.block_on(guard.release());
            return Err(e.into());
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "lock taken and catalog synced");
        Ok(guard)
    }

    /// The exclusive lock of a command that deletes: checks first that the
    /// store lets this host delete (one create and one delete, before any
    /// change), then takes the lock and sweeps the ended and stale locks
    /// others left (backup hosts cannot delete theirs).
    fn lock_to_delete(&self, repo: &Repo, command: &str) -> Result<strongroom_core::lock::LockGuard> {
        self.rt.block_on(strongroom_core::lock::probe_delete(repo.scope()))?;
        let guard = self.lock(repo, strongroom_core::lock::LockKind::Exclusive, command)?;
        match self.rt.block_on(guard.sweep(repo.scope())) {
            Ok(removed) if !removed.is_empty() => tracing::debug!("removed {} ended or stale lock(s)", removed.len()),
            Ok(_) => {}
            Err(e) => tracing::warn!("could not remove the ended locks of tenant {}: {e}", repo.tenant()),
        }
        Ok(guard)
    }

    /// Writes the command's audit entry, then releases the lock, keeping
    /// the operation's error if there was one.
    fn unlock<T>(&self, repo: &Repo, guard: strongroom_core::lock::LockGuard, result: Result<T>) -> Result<T> {
        let command = guard.command().to_string();
        // Commands that change the repository and those that read file
        // contents are audited; a lock holder that reads only metadata
        // (`check` without --read-data) said so with `skip_audit`.
        let skip = std::mem::take(&mut self.audit_details.borrow_mut().skip);
        let audited = if skip { Ok(()) } else { self.audit(repo, &command, &result) };
        tracing::trace!("audit entry written");
        let released = self.rt.block_on(guard.release());
        tracing::trace!("lock released");
        let value = result?;
        // The work is done and committed: a lock that could not be
        // released only makes others wait until it is stale.
        if let Err(e) = released {
            tracing::warn!(
                "{command}: the lock of tenant {} was not released ({e}); others see it stale within {}s",
                repo.tenant(),
                strongroom_core::lock::lock_ttl().as_secs()
            );
        }
        audited?;
        Ok(value)
    }

    /// The metric labels of a command run by hand: this tenant, no job.
    fn labels(&self) -> strongroom_core::metrics::Labels {
        strongroom_core::metrics::Labels::new(&self.global.tenant, "")
    }

    fn show_progress(&self) -> bool {
        !self.global.quiet && !self.global.json && std::io::stderr().is_terminal()
    }

    fn print_json<T: serde::Serialize>(&self, value: &T) -> Result<()> {
        out!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    fn say(&self, text: impl std::fmt::Display) -> Result<()> {
        if !self.global.quiet {
            out!("{text}");
        }
        Ok(())
    }
}

/// `--key-cache`: a duration, or `off` (as `0`: no key cache).
fn parse_key_cache(s: &str) -> std::result::Result<Duration, strongroom_core::units::Error> {
    match s.trim() {
        "off" => Ok(Duration::ZERO),
        other => parse_duration(other),
    }
}

/// Reads a password or key file, without its trailing line breaks (so a
/// file written by `echo` or `openssl rand -base64 32 >` works the same
/// for `--password-file` and `tenant key add --key-file`).
pub fn read_secret_file(f: &std::path::Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    strongroom_core::keyslots::read_secret_file(f).with_context(|| format!("reading {}", f.display()))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    // Before anything opens a file: the descriptor is then one this
    // process inherited, never one of its own.
    let handoff = cli.global.key_fd.map(strongroom_core::keyslots::read_handoff_fd);
    init_logging(&cli);
    tracing::trace!("arguments parsed");
    if let (Some(fd), Some(Ok(_))) = (cli.global.key_fd, &handoff) {
        tracing::debug!("tenant key read from fd {fd}");
    }
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(strongroom_core::cores()).enable_all().build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("strongroom: cannot start the async runtime: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        };
    let cancel = strongroom_core::Cancel::new();
    cancel_on_ctrl_c(&rt, cancel.clone());
    let ctx = Ctx {
        global: cli.global,
        rt,
        cancel,
        audit_details: Default::default(),
        opened: Default::default(),
        handoff,
        check_root_escrow: matches!(cli.cmd, Command::Tenant(_) | Command::Escrow(_) | Command::Check(_)),
        metrics: Arc::new(strongroom_core::metrics::Metrics::new()),
    };
    // What the metrics file held is carried over, so counters add up
    // across runs and a failure keeps the last success's timestamp.
    if let Some(previous) = ctx.global.metrics_textfile.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        ctx.metrics.carry_over(&previous);
    }
    let is_backup = matches!(cli.cmd, Command::Backup(_));
    let interrupted = interrupted_message(&cli.cmd);
    let result = dispatch(&ctx, cli.cmd);
    ctx.log_requests();
    write_metrics(&ctx, is_backup, &result);
    let code = match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            if code == EXIT_INTERRUPTED {
                eprintln!("strongroom: {interrupted}");
            } else {
                eprintln!("strongroom: {e:#}");
            }
            ExitCode::from(code)
        }
    };
    // Do not wait for abandoned background requests.
    ctx.rt.shutdown_timeout(Duration::from_millis(100));
    tracing::trace!("runtime shut down");
    code
}

/// Parses the command line, noting which secret options came from it
/// rather than from the environment.
fn parse() -> std::result::Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut matches = Cli::command().try_get_matches()?;
    let flags = SecretFlags::of(&matches);
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    cli.global.secrets_on_command_line = flags;
    Ok(cli)
}

/// The `tracing` subscriber, on stderr: errors only with --quiet, more
/// with each --verbose, or as STRONGROOM_LOG says.
fn init_logging(cli: &Cli) {
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        // The agent logs each run by default.
        (false, 0) if matches!(cli.cmd, Command::Agent(_)) => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("strongroom={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The first Ctrl-C cancels the command (it stops at its next check); a
/// second one exits at once.
fn cancel_on_ctrl_c(rt: &tokio::runtime::Runtime, cancel: strongroom_core::Cancel) {
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            // Cancelled before it says so: whoever reads the line can
            // count on the command stopping.
            cancel.cancel();
            eprintln!("strongroom: interrupted, stopping (press Ctrl-C again to abort at once)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EXIT_INTERRUPTED.into());
            }
        }
    });
}

/// What is true after `cmd` was interrupted (Ctrl-C), for its last line.
fn interrupted_message(cmd: &Command) -> &'static str {
    match cmd {
        Command::Backup(_) => "interrupted; nothing was committed",
        Command::Restore(_) => {
            "interrupted; files completed in the target were kept, incomplete ones removed, \
             and the repository was not changed (but for a safety snapshot reported saved); \
             run the same restore again to finish: it keeps what is complete"
        }
        Command::VerifyRestore(_) | Command::Dump(_) | Command::Check(_) | Command::Mount(_) => {
            "interrupted; the repository was not changed"
        }
        _ => "interrupted",
    }
}

/// Runs the command.
fn dispatch(ctx: &Ctx, cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Init(a) => init::run(ctx, a),
        Command::Backup(a) => backup::run(ctx, a),
        Command::Snapshots(a) => snapshots::run(ctx, a),
        Command::Ls(a) => ls::run(ctx, a),
        Command::Restore(a) => restore::run(ctx, a),
        Command::Dump(a) => dump::run(ctx, a),
        Command::Mount(a) => mount::run(ctx, a),
        Command::Diff(a) => diff::run(ctx, a),
        Command::VerifyRestore(a) => verify_restore::run(ctx, a),
        Command::Find(a) => find::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::Copy(a) => copy::run(ctx, a),
        Command::Forget(a) => forget::run(ctx, a),
        Command::Tag(a) => tag::run(ctx, a),
        Command::Stats(a) => stats::run(ctx, a),
        Command::Catalog(a) => catalog::run(ctx, a),
        Command::Bench(a) => bench::run(ctx, a),
        Command::Prune(a) => prune::run(ctx, a),
        Command::Unlock(a) => unlock::run(ctx, a),
        Command::Undelete(a) => undelete::run(ctx, a),
        Command::Hold(a) => hold::run(ctx, a),
        Command::Repair(a) => repair::run(ctx, a),
        Command::Tenant(a) => tenant::run(ctx, a),
        Command::Escrow(a) => escrow::run(ctx, a),
        Command::Audit(a) => audit::run(ctx, a),
        Command::Agent(a) => agent::run(ctx, a),
        Command::Health(a) => health::run(ctx, a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(ctx, a),
        Command::KeyCache(a) => key_cache::run(ctx, a),
    }
}

/// `--metrics-textfile`: a failed backup counts in `backup_failure_total`;
/// the commands record their successes themselves.
fn write_metrics(ctx: &Ctx, is_backup: bool, result: &Result<ExitCode>) {
    let Some(path) = &ctx.global.metrics_textfile else { return };
    if is_backup && result.is_err() {
        ctx.metrics.backup_failed(&ctx.labels());
    }
    if let Err(e) = ctx.metrics.write_textfile(path) {
        eprintln!("strongroom: cannot write metrics to {}: {e}", path.display());
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Whether the first library error in the chain is of one of `kinds`.
fn error_kind_is(e: &anyhow::Error, kinds: &[ErrorKind]) -> bool {
    e.chain().find_map(|c| c.downcast_ref::<strongroom_core::Error>()).is_some_and(|err| kinds.contains(&err.kind()))
}

/// Maps an error chain to an exit code.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<strongroom_core::Error>() {
            return match err.kind() {
                ErrorKind::RepoNotFound => EXIT_NO_REPO,
                ErrorKind::Locked => EXIT_LOCKED,
                ErrorKind::BadKey => EXIT_BAD_KEY,
                ErrorKind::Interrupted => EXIT_INTERRUPTED,
                ErrorKind::PermissionDenied => EXIT_PERMISSION,
                // Bad input found after the command line parsed is exit 1,
                // as the guide documents; exit 2 is clap's alone.
                ErrorKind::Corrupt | ErrorKind::InvalidInput | ErrorKind::Internal | ErrorKind::Other => EXIT_ERROR,
            };
        }
    }
    EXIT_ERROR
}

/// Human-readable byte count (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
