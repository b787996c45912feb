//! `strongroom verify-restore`

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::{bytes, Ctx, EXIT_ERROR};
use strongroom_core::restore::{self, Overwrite, RestoreOptions, Subset, VerifySummary};
use strongroom_core::source::Excludes;

/// Arguments of `verify-restore`.
#[derive(Args, Debug)]
pub struct VerifyRestoreArgs {
    /// Snapshot to check (`latest`, an id or a prefix)
    snapshot: String,
    /// Restore and compare only a random sample of this share of the files (e.g. 10%)
    #[arg(long, value_name = "PERCENT", value_parser = strongroom_core::units::parse_percent)]
    subset: Option<f64>,
    /// Directory for the temporary restore [default: the system's temp dir]
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
}

/// The JSON report.
#[derive(serde::Serialize)]
struct Report {
    snapshot_id: String,
    passed: bool,
    subset_percent: Option<f64>,
    files: u64,
    bytes: u64,
    dirs: u64,
    others: u64,
    restore_seconds: f64,
    compare_seconds: f64,
    failures: Vec<Failure>,
}

#[derive(serde::Serialize)]
struct Failure {
    path: String,
    problem: String,
}

pub fn run(ctx: &Ctx, a: VerifyRestoreArgs) -> Result<ExitCode> {
    let base = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let repo = ctx.open()?;
    let snap = repo.resolve(&a.snapshot, None)?;
    let dir = base.join(format!(
        "strongroom-verify-{}-{}-{}",
        snap.id.short(),
        std::process::id(),
        hex::encode(strongroom_core::crypto::random_bytes::<4>())
    ));
    // Private (0700) from the start: the restore puts the snapshot's files
    // in it, whatever their modes, and other users share the temp dir.
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating the temporary directory {}", dir.display()))?;
    let subset = a.subset.filter(|p| *p < 100.0).map(Subset::new);
    let bar = super::progress::Bar::bytes(ctx.show_progress(), None, "verify-restore");
    let opts = RestoreOptions {
        target: dir.clone(),
        includes: None,
        excludes: Excludes::new(&[])?,
        verify: false,
        overwrite: Overwrite::Always,
        delete: false,
        dry_run: false,
        subset: subset.clone(),
        io_concurrency: ctx.global.io_concurrency,
        cancel: ctx.cancel.clone(),
        progress: bar.clone(),
    };
    let guard = ctx.lock(&repo, strongroom_core::lock::LockKind::Shared, "verify-restore")?;
    let started = Instant::now();
    let result = (|| -> Result<(restore::RestoreSummary, VerifySummary, f64)> {
        // A snapshot that cannot be read at all (a damaged tree) is a
        // failed verification, not an error of the command.
        let unreadable = |e: strongroom_core::Error| -> Result<restore::RestoreSummary> {
            match e.kind() {
                strongroom_core::ErrorKind::Interrupted | strongroom_core::ErrorKind::Locked => Err(e.into()),
                _ => {
                    let mut errors = strongroom_core::FileErrors::new();
                    errors.push("/", e);
                    Ok(restore::RestoreSummary { errors, ..Default::default() })
                }
            }
        };
        let restored = restore::run(&repo, ctx.rt.handle(), &snap, None, &opts).or_else(unreadable)?;
        let restore_seconds = started.elapsed().as_secs_f64();
        let mut v = VerifySummary::default();
        let tree = &snap.record.tree;
        if let Err(e) =
            restore::verify_tree(&repo, ctx.rt.handle(), tree, &dir, "", subset.as_ref(), &ctx.cancel, &mut v)
        {
            if e.kind() == strongroom_core::ErrorKind::Interrupted {
                return Err(e.into());
            }
            v.failures.push("/", format!("compare: {e}"));
        }
        Ok((restored, v, restore_seconds))
    })();
    bar.finish();
    let cleaned = std::fs::remove_dir_all(&dir);
    let (restored, v, restore_seconds) = ctx.unlock(&repo, guard, result)?;
    if let Err(e) = cleaned {
        eprintln!("strongroom: could not remove the temporary restore at {}: {e}", dir.display());
    }
    let compare_seconds = started.elapsed().as_secs_f64() - restore_seconds;
    let mut failures: Vec<Failure> = restored
        .errors
        .into_iter()
        .map(|f| Failure { path: f.path, problem: format!("restore: {}", f.error) })
        .collect();
    failures.extend(v.failures.into_iter().map(|f| Failure { path: f.path, problem: f.error }));
    let report = Report {
        snapshot_id: snap.id.to_hex(),
        passed: failures.is_empty(),
        subset_percent: a.subset,
        files: v.files,
        bytes: v.bytes,
        dirs: v.dirs,
        others: v.others,
        restore_seconds,
        compare_seconds,
        failures,
    };
    if ctx.global.json {
        ctx.print_json(&report)?;
    } else {
        for f in &report.failures {
            eprintln!("strongroom: {}: {}", f.path, f.problem);
        }
        ctx.say(format!(
            "verify-restore of snapshot {}{}: {} — {} files ({}), {} directories, {} other entries compared; {} failures \
             (restore {:.2}s, compare {:.2}s)",
            snap.id.short(),
            a.subset.map(|p| format!(" ({p}% sample)")).unwrap_or_default(),
            if report.passed { "PASS" } else { "FAIL" },
            report.files,
            bytes(report.bytes),
            report.dirs,
            report.others,
            report.failures.len(),
            report.restore_seconds,
            report.compare_seconds
        ))?;
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
}
