//! `strongroom backup`

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{bytes, Ctx, EXIT_PARTIAL};
use strongroom_core::backup::{self, BackupOptions, ParentChoice, StreamSource};
use strongroom_core::source::{Excludes, Marker};

/// Arguments of `backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up (stored under their absolute paths; a symlink to a directory given with a trailing slash is followed)
    #[arg(required_unless_present_any = ["stdin", "stdin_from_command", "files_from", "files_from_verbatim", "files_from_raw"])]
    paths: Vec<PathBuf>,
    /// Back up the paths listed in FILE too, one a line ('#' comments and empty lines ignored; '-' reads standard input; repeatable)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdin", "stdin_from_command"])]
    files_from: Vec<PathBuf>,
    /// As --files-from, every line a path as written (no comments)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdin", "stdin_from_command"])]
    files_from_verbatim: Vec<PathBuf>,
    /// As --files-from, paths separated by NUL bytes (as `find -print0` writes)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdin", "stdin_from_command"])]
    files_from_raw: Vec<PathBuf>,
    /// Skip a directory holding a file NAME (starting with CONTENT, when given) (repeatable)
    #[arg(long, value_name = "NAME[:CONTENT]")]
    exclude_if_present: Vec<String>,
    /// Skip directories holding a CACHEDIR.TAG file (the Cache Directory Tagging Specification)
    #[arg(long)]
    exclude_caches: bool,
    /// Do not cross filesystem boundaries below the paths (a mount point is stored as an empty directory)
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Store no snapshot when nothing changed since the parent snapshot
    #[arg(long)]
    skip_if_unchanged: bool,
    /// Back up extended attributes and POSIX ACLs [default]
    #[arg(long, overrides_with = "no_xattrs")]
    xattrs: bool,
    /// Do not back up extended attributes and POSIX ACLs
    #[arg(long, overrides_with = "xattrs")]
    no_xattrs: bool,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Record the agent job that makes this snapshot (a filter and group key: `--job`, `--group-by job`)
    #[arg(long, value_name = "NAME", value_parser = parse_job)]
    job: Option<String>,
    /// Skip paths matching GLOB (repeatable; without '/' it matches names, with '/' absolute paths)
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long)]
    host: Option<String>,
    /// Snapshot time (RFC 3339 or YYYY-MM-DD[ HH:MM[:SS]] local) [default: now]
    #[arg(long)]
    time: Option<String>,
    /// Snapshot to compare against for unchanged files [default: the latest of this host and paths]
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, ignoring any parent snapshot
    #[arg(long)]
    force: bool,
    /// Back up standard input as the file --stdin-name
    #[arg(long, conflicts_with_all = ["paths", "stdin_from_command"])]
    stdin: bool,
    /// Back up the standard output of the command after `--`; no snapshot if it fails
    #[arg(long, conflicts_with = "paths")]
    stdin_from_command: bool,
    /// File name for --stdin / --stdin-from-command
    #[arg(long, default_value = "stdin")]
    stdin_name: String,
    /// zstd level for this backup (0: no compression) [default: the repository's]
    #[arg(long, allow_negative_numbers = true)]
    compression: Option<i32>,
    /// The command for --stdin-from-command
    #[arg(last = true)]
    command: Vec<String>,
}

/// Absolute path without resolving the last component (a symlink given on
/// the command line is backed up as a symlink) and without `.`/`..`.
fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("{}: cannot make absolute", p.display()))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// How a `--files-from*` file separates and comments its paths.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListKind {
    /// One a line, `#` comments and empty lines ignored.
    Lines,
    /// One a line, as written (empty lines ignored).
    Verbatim,
    /// NUL-separated.
    Raw,
}

/// The paths listed in `file` (`-`: standard input).
fn read_list(file: &Path, kind: ListKind) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = if file == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b).context("reading standard input")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("{}: cannot read the list of paths", file.display()))?
    };
    let sep = if kind == ListKind::Raw { 0 } else { b'\n' };
    let mut out = Vec::new();
    for item in bytes.split(|&b| b == sep) {
        let item = if kind == ListKind::Raw { item } else { item.strip_suffix(b"\r").unwrap_or(item) };
        if item.is_empty() || (kind == ListKind::Lines && item.starts_with(b"#")) {
            continue;
        }
        out.push(PathBuf::from(std::ffi::OsStr::from_bytes(item)));
    }
    Ok(out)
}

/// The paths to back up, absolute, sorted and without duplicates, and
/// those of them a symlink given with a trailing slash: followed.
fn resolve_paths(a: &BackupArgs) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut given = a.paths.clone();
    let lists = [
        (&a.files_from, ListKind::Lines),
        (&a.files_from_verbatim, ListKind::Verbatim),
        (&a.files_from_raw, ListKind::Raw),
    ];
    for (files, kind) in lists {
        for f in files {
            given.extend(read_list(f, kind)?);
        }
    }
    let mut paths = Vec::new();
    let mut follow = Vec::new();
    for p in &given {
        let abs = absolute(p)?;
        let md = std::fs::symlink_metadata(&abs).with_context(|| format!("{}: cannot back up", p.display()))?;
        if md.file_type().is_symlink() && p.as_os_str().as_bytes().ends_with(b"/") {
            // Followed like rsync and restic do; the directory is stored
            // under the path as given.
            let to = std::fs::metadata(&abs).with_context(|| format!("{}: cannot back up", p.display()))?;
            anyhow::ensure!(to.is_dir(), "{}: cannot back up: not a directory", p.display());
            follow.push(abs.clone());
        }
        paths.push(abs);
    }
    paths.sort();
    paths.dedup();
    Ok((paths, follow))
}

/// The excludes: patterns and marker files.
fn excludes(a: &BackupArgs) -> Result<Excludes> {
    let mut markers =
        a.exclude_if_present.iter().map(|m| Marker::parse(m)).collect::<strongroom_core::error::Result<Vec<_>>>()?;
    if a.exclude_caches {
        markers.push(Marker::parse(strongroom_core::source::CACHEDIR_TAG)?);
    }
    Ok(Excludes::new(&a.excludes)?.with_markers(markers))
}

/// A job name as the snapshot record accepts it.
fn parse_job(s: &str) -> std::result::Result<String, String> {
    let ok =
        !s.is_empty() && s.len() <= strongroom_core::codec::snapshot::MAX_JOB_BYTES && !s.chars().any(char::is_control);
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("invalid job name {s:?}: use 1 to 256 bytes without control characters"))
    }
}

pub fn run(ctx: &Ctx, a: BackupArgs) -> Result<ExitCode> {
    // Resolve and validate everything before opening the repository.
    let stream = if a.stdin {
        Some(StreamSource::Stdin { name: a.stdin_name.clone() })
    } else if a.stdin_from_command {
        anyhow::ensure!(!a.command.is_empty(), "--stdin-from-command needs a command after `--`");
        Some(StreamSource::Command { name: a.stdin_name.clone(), argv: a.command.clone() })
    } else {
        anyhow::ensure!(a.command.is_empty(), "a command after `--` needs --stdin-from-command");
        None
    };
    let (paths, follow) = resolve_paths(&a)?;
    let excludes = excludes(&a)?;
    let time_ns = a.time.as_deref().map(strongroom_core::snapshot::parse_time).transpose()?;
    let host = a.host.clone().unwrap_or_else(strongroom_core::source::hostname);

    // Nothing below reads the catalog before the lock syncs it.
    let repo = ctx.open_for_backup()?;
    // With a quota, backups of the tenant take turns (an exclusive lock):
    // each counts what the others stored, so together they cannot pass it.
    let settings = ctx.rt.block_on(strongroom_core::tenant::load_settings(repo.scope()))?;
    let kind = if settings.quota_bytes.is_some() {
        strongroom_core::lock::LockKind::Exclusive
    } else {
        strongroom_core::lock::LockKind::Shared
    };
    let guard = ctx.lock(&repo, kind, "backup")?;
    let result = backup_locked(ctx, &repo, &guard, &settings, a, (paths, follow), stream, excludes, time_ns, host);
    let code = ctx.unlock(&repo, guard, result)?;
    Ok(code)
}

/// The paths the snapshot record will list: the targets, or `/<name>` of
/// a stream.
fn opts_paths(paths: &[PathBuf], stream: Option<&StreamSource>) -> Vec<String> {
    match stream {
        Some(StreamSource::Stdin { name } | StreamSource::Command { name, .. }) => vec![format!("/{name}")],
        None => paths.iter().map(|p| p.display().to_string()).collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn backup_locked(
    ctx: &Ctx,
    repo: &strongroom_core::repo::Repo,
    guard: &strongroom_core::lock::LockGuard,
    settings: &strongroom_core::tenant::Settings,
    a: BackupArgs,
    (paths, follow): (Vec<PathBuf>, Vec<PathBuf>),
    stream: Option<StreamSource>,
    excludes: Excludes,
    time_ns: Option<i64>,
    host: String,
) -> Result<ExitCode> {
    let parent = parent_choice(repo, &a, &paths, stream.as_ref(), &host)?;
    let compression = backup::compression(repo, settings, a.compression);
    let quota = backup::Quota::of_tenant(repo, settings)?;
    let bar = super::progress::Bar::bytes(ctx.show_progress(), None, "backup");
    let opts = BackupOptions {
        paths,
        stream,
        excludes,
        follow,
        one_file_system: a.one_file_system,
        xattrs: !a.no_xattrs,
        skip_if_unchanged: a.skip_if_unchanged,
        tags: a.tags,
        job: a.job,
        host,
        time_ns,
        parent,
        compression,
        io_concurrency: ctx.global.io_concurrency,
        cancel: ctx.cancel.clone(),
        progress: bar.clone(),
        before_commit: Box::new(guard.checker()),
        quota,
    };
    let result = backup::run(repo, opts);
    bar.finish();
    let s = result?;
    ctx.note_audit(s.snapshot_id.iter().cloned().collect(), s.counts.added_bytes);
    ctx.metrics.backup_ok(&ctx.labels(), s.counts.duration_seconds, s.counts.logical_bytes, s.counts.added_bytes);
    report(ctx, &s)
}

/// The parent `--force`, `--parent` or neither asks for. `latest` in
/// `--parent` is the newest of this backup's own host and exactly its
/// paths.
fn parent_choice(
    repo: &strongroom_core::repo::Repo,
    a: &BackupArgs,
    paths: &[PathBuf],
    stream: Option<&StreamSource>,
    host: &str,
) -> Result<ParentChoice> {
    Ok(if a.force {
        ParentChoice::None
    } else if let Some(p) = &a.parent {
        let mut own = opts_paths(paths, stream);
        own.sort();
        let filter =
            strongroom_core::group::SnapshotFilter { hosts: vec![host.to_string()], paths: own, ..Default::default() };
        let pick = strongroom_core::snapshot::Pick { filter: &filter, named: None };
        ParentChoice::Id(repo.resolve(p, None, &pick)?.id)
    } else {
        ParentChoice::Auto
    })
}

/// Prints what the backup did and returns its exit code (partial when
/// entries could not be read).
fn report(ctx: &Ctx, s: &backup::BackupSummary) -> Result<ExitCode> {
    for e in &s.errors {
        eprintln!("strongroom: {}: {}", e.path, e.error);
    }
    if ctx.global.json {
        ctx.print_json(s)?;
    } else if ctx.global.quiet {
    } else {
        out!(
            "files: {} new, {} changed, {} unmodified; {} directories",
            s.counts.files_new,
            s.counts.files_changed,
            s.counts.files_unmodified,
            s.counts.dirs
        );
        out!(
            "processed {} in {:.2}s, added {} to the repository",
            bytes(s.counts.logical_bytes),
            s.counts.duration_seconds,
            bytes(s.counts.added_bytes)
        );
        match (&s.short_id, &s.parent) {
            (Some(id), _) => out!("snapshot {id} saved"),
            (None, Some(parent)) => {
                out!("nothing changed since snapshot {}: no snapshot saved", parent.get(..8).unwrap_or(parent))
            }
            (None, None) => out!("no snapshot saved"),
        }
    }
    if !s.errors.is_empty() {
        let saved = match &s.short_id {
            Some(id) => format!("snapshot {id} saved"),
            None => "no snapshot saved".to_string(),
        };
        eprintln!("strongroom: {saved}, but {} entries could not be read", s.errors.len());
        return Ok(ExitCode::from(EXIT_PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}
