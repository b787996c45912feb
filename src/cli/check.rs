//! `strongroom check`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{Ctx, EXIT_ERROR};
use strongroom_core::check::{self, CheckOptions, ReadData};

/// Arguments of `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download and verify every pack
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Download and verify a random share of packs, e.g. 10%
    #[arg(long, value_name = "N%", value_parser = strongroom_core::units::parse_percent)]
    read_data_subset: Option<f64>,
}

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<ExitCode> {
    let read_data = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(p)) => ReadData::Subset(p),
        (false, None) => ReadData::None,
    };
    let repo = ctx.open()?;
    let bar = super::progress::Bar::bytes(ctx.show_progress() && read_data != ReadData::None, Some(0), "check");
    bar.bar.set_style(
        indicatif::ProgressStyle::with_template("check {bar:30} {pos}/{len} packs ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let opts = CheckOptions { read_data, cancel: ctx.cancel.clone(), progress: bar.clone() };
    let guard = ctx.lock(&repo, strongroom_core::lock::LockKind::Shared, "check")?;
    let result = check::run(&repo, &opts);
    bar.finish();
    // Only a check that reads file contents is audited.
    if read_data == ReadData::None {
        ctx.skip_audit();
    }
    let s = ctx.unlock(&repo, guard, result.map_err(anyhow::Error::from))?;
    ctx.metrics.check(&ctx.labels(), s.ok);
    // What `health` reads: the outcome of the last check, next to the catalog.
    let record = strongroom_core::health::CheckRecord::new(&s, read_data);
    let path = strongroom_core::health::check_record_path(&ctx.cache_dir()?, &repo.config().id, repo.tenant());
    if let Err(e) = strongroom_core::health::save_check_record(&path, &record) {
        tracing::warn!("cannot record the check's result in {}: {e}", path.display());
    }
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        for w in &s.warnings {
            eprintln!("warning: {w}");
        }
        for q in &s.quarantined {
            eprintln!("quarantined: {q} (`strongroom undelete` may need it; a prune deletes it once the quarantine has passed)");
        }
        for e in &s.errors {
            eprintln!("error: {e}");
        }
        for d in &s.damaged_snapshots {
            for f in &d.files {
                eprintln!("damaged: snapshot {} file {}: {}", &d.id[..8], f.path, f.error);
            }
        }
        ctx.say(format!(
            "checked {} snapshots, {} trees, {} packs ({} read, {} blobs verified): {}",
            s.snapshots,
            s.trees,
            s.packs,
            s.packs_read,
            s.blobs_read,
            if s.ok { "no errors".to_string() } else { format!("{} errors", s.errors.len()) }
        ))?;
    }
    Ok(if s.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
}
