//! `strongroom find`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use strongroom_core::source::Excludes;

/// Arguments of `find`.
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob: without '/' it matches names, with '/' whole paths
    pattern: String,
    /// Search only these snapshots (repeatable) [default: all]
    #[arg(long = "snapshot", value_name = "SNAP")]
    snapshots: Vec<String>,
    /// Which snapshots are searched (without --snapshot) and which one `latest` is
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

pub fn run(ctx: &Ctx, a: FindArgs) -> Result<ExitCode> {
    let pattern = Excludes::new(std::slice::from_ref(&a.pattern))?;
    let repo = ctx.open()?;
    let filter = a.filter.filter();
    let snaps = if a.snapshots.is_empty() {
        repo.snapshots()?.into_iter().filter(|s| filter.matches(&s.record)).collect()
    } else {
        let pick = strongroom_core::snapshot::Pick { filter: &filter, named: None };
        a.snapshots.iter().map(|r| repo.resolve(r, None, &pick)).collect::<strongroom_core::Result<Vec<_>>>()?
    };
    let found = strongroom_core::find::run(&repo, &snaps, &pattern)?;
    if ctx.global.json {
        return ctx.print_json(&found).map(|()| ExitCode::SUCCESS);
    }
    for f in &found {
        out!("{}  {}  {:>12}  {}  {}", &f.snapshot[..8], f.time, f.size, f.mtime, f.path);
    }
    ctx.say(format_args!("{} matches in {} snapshots searched", found.len(), snaps.len()))?;
    Ok(ExitCode::SUCCESS)
}
