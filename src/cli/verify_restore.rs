//! `strongroom verify-restore`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx, EXIT_ERROR};
use strongroom_core::restore::{self, Subset, VerifyRestoreOptions};
use strongroom_core::snapshot::Snapshot;

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
    /// Which snapshots `latest` looks at
    #[command(flatten)]
    filter: super::filter::FilterArgs,
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
    let tmp_dir = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let repo = ctx.open()?;
    let filter = a.filter.filter();
    let snap = repo.resolve(&a.snapshot, None, &strongroom_core::snapshot::Pick { filter: &filter, named: None })?;
    let bar = super::progress::Bar::bytes(ctx.show_progress(), None, "verify-restore");
    let opts = VerifyRestoreOptions {
        tmp_dir,
        subset: a.subset.filter(|p| *p < 100.0).map(Subset::new),
        io_concurrency: ctx.global.io_concurrency,
        cancel: ctx.cancel.clone(),
        progress: bar.clone(),
    };
    let guard = ctx.lock(&repo, strongroom_core::lock::LockKind::Shared, "verify-restore")?;
    let result = restore::verify_restore(&repo, &guard, &snap, &opts);
    bar.finish();
    ctx.note_audit(vec![snap.id.to_hex()], result.as_ref().map_or(0, |v| v.bytes));
    let v = ctx.unlock(&repo, guard, result.map_err(anyhow::Error::from))?;
    if let Some(e) = &v.left_behind {
        eprintln!("strongroom: could not remove the temporary restore at {e}");
    }
    let report = Report {
        passed: v.passed(),
        snapshot_id: v.snapshot_id,
        subset_percent: a.subset,
        files: v.files,
        bytes: v.bytes,
        dirs: v.dirs,
        others: v.others,
        restore_seconds: v.restore_seconds,
        compare_seconds: v.compare_seconds,
        failures: v.failures.into_iter().map(|f| Failure { path: f.path, problem: f.error }).collect(),
    };
    if ctx.global.json {
        ctx.print_json(&report)?;
    } else {
        say_verdict(ctx, &snap, &report)?;
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
}

/// The human report: one line per failure on stderr, the verdict on stdout.
fn say_verdict(ctx: &Ctx, snap: &Snapshot, report: &Report) -> Result<()> {
    for f in &report.failures {
        eprintln!("strongroom: {}: {}", f.path, f.problem);
    }
    ctx.say(format!(
        "verify-restore of snapshot {}{}: {} — {} files ({}), {} directories, {} other entries compared; {} failures \
         (restore {:.2}s, compare {:.2}s)",
        snap.id.short(),
        report.subset_percent.map(|p| format!(" ({p}% sample)")).unwrap_or_default(),
        if report.passed { "PASS" } else { "FAIL" },
        report.files,
        bytes(report.bytes),
        report.dirs,
        report.others,
        report.failures.len(),
        report.restore_seconds,
        report.compare_seconds
    ))
}
