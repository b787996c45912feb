//! `strongroom tag`: add, remove or set the tags of existing snapshots
//! (restic's `tag`). Each changed snapshot gets a new id; see
//! `strongroom_core::tag` for the order of the writes and what a crash
//! leaves.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use strongroom_core::group::is_safety;
use strongroom_core::lock::LockKind;
use strongroom_core::snapshot::{Pick, Snapshot};
use strongroom_core::tag::{self, TagOptions};

/// Arguments of `tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Add this tag (repeatable; 'a,b' adds both)
    #[arg(long = "add", value_name = "TAGS")]
    add: Vec<String>,
    /// Remove this tag (repeatable; 'a,b' removes both)
    #[arg(long = "remove", value_name = "TAGS")]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable; --set '' removes every tag)
    #[arg(long = "set", value_name = "TAGS", conflicts_with_all = ["add", "remove"])]
    set: Vec<String>,
    /// Which snapshots to tag when no SNAPSHOT is given (and which one `latest` is)
    #[command(flatten)]
    filter: super::filter::FilterArgs,
    /// Snapshots to tag (ids, unique prefixes or `latest`) [default: all that match the filter]
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
}

pub fn run(ctx: &Ctx, a: TagArgs) -> Result<ExitCode> {
    let opts =
        TagOptions { add: a.add.clone(), remove: a.remove.clone(), set: (!a.set.is_empty()).then(|| a.set.clone()) };
    opts.validate()?;
    let repo = ctx.open_to_lock()?;
    let guard = ctx.lock(&repo, LockKind::Exclusive, "tag")?;
    let result = select(&repo, &a).and_then(|snaps| Ok(tag::run(&repo, &guard, &snaps, &opts)?));
    if let Ok(s) = &result {
        ctx.note_audit(s.changed.iter().flat_map(|r| [r.from.clone(), r.to.clone()]).collect(), 0);
    }
    let s = ctx.unlock(&repo, guard, result)?;
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        for r in &s.changed {
            ctx.say(format_args!(
                "snapshot {} is now {}",
                r.from.get(..8).unwrap_or(&r.from),
                r.to.get(..8).unwrap_or(&r.to)
            ))?;
        }
        ctx.say(format_args!("{} snapshots tagged, {} already as asked", s.changed.len(), s.unchanged.len()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshots named (read under the lock, so none is missed or
/// rewritten twice), or all that the filter accepts. Safety snapshots
/// only when named by id or asked for with `--tag safety`: a tag change
/// can move one into a source's group, where it would count in that
/// source's retention and could become its `latest`.
fn select(repo: &strongroom_core::repo::Repo, a: &TagArgs) -> Result<Vec<Snapshot>> {
    let filter = a.filter.filter();
    let with_safety = filter.asks_for_safety();
    let mut snaps: Vec<Snapshot> = if a.snapshots.is_empty() {
        let wanted = |s: &Snapshot| filter.matches(&s.record) && (with_safety || !is_safety(&s.record));
        repo.snapshots()?.into_iter().filter(wanted).collect()
    } else {
        let pick = Pick { filter: &filter, named: None };
        a.snapshots.iter().map(|r| repo.resolve(r, None, &pick)).collect::<strongroom_core::Result<_>>()?
    };
    snaps.sort_by_key(|s| s.id);
    snaps.dedup_by_key(|s| s.id);
    Ok(snaps)
}
