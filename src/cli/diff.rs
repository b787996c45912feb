//! `strongroom diff`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx};

/// Arguments of `diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot
    first: String,
    /// The newer snapshot
    second: String,
    /// Which snapshots `latest` looks at
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

pub fn run(ctx: &Ctx, a: DiffArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let filter = a.filter.filter();
    let pick = strongroom_core::snapshot::Pick { filter: &filter, named: None };
    let x = repo.resolve(&a.first, None, &pick)?;
    let y = repo.resolve(&a.second, None, &pick)?;
    let s = strongroom_core::diff::run(&repo, &x.record.tree, &y.record.tree)?;
    if ctx.global.json {
        return ctx.print_json(&s).map(|()| ExitCode::SUCCESS);
    }
    for e in &s.entries {
        let mark = match e.change {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        let what = if e.what.is_empty() { String::new() } else { format!("  ({})", e.what.join(", ")) };
        out!("{mark}    {}{what}", e.path);
    }
    ctx.say(format_args!(
        "{} added, {} removed, {} modified; {} added, {} removed",
        s.added,
        s.removed,
        s.modified,
        bytes(s.added_bytes),
        bytes(s.removed_bytes)
    ))?;
    Ok(ExitCode::SUCCESS)
}
