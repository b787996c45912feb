//! `strongroom hold add|remove|list`

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use strongroom_core::hold;
use strongroom_core::lock::LockKind;
use strongroom_core::snapshot::Pick;

/// Hold subcommands.
#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Hold a snapshot: forget keeps it, so prune keeps its data (again: replace the reason)
    Add(AddArgs),
    /// Release the hold on a snapshot
    Remove(RemoveArgs),
    /// List held snapshots
    List,
}

/// Arguments of `hold add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Snapshot: latest, an id or a unique prefix of 4+ hex digits
    snapshot: String,
    /// Why it is held (stored encrypted)
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Which snapshots `latest` looks at
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

/// Arguments of `hold remove`.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Held snapshot: latest, an id or a unique prefix of 4+ hex digits
    snapshot: String,
}

pub fn run(ctx: &Ctx, c: HoldCommand) -> Result<ExitCode> {
    match c {
        HoldCommand::Add(a) => {
            let repo = ctx.open_to_lock()?;
            let guard = ctx.lock(&repo, LockKind::Exclusive, "hold add")?;
            let result = ctx
                .rt
                .block_on(async {
                    let h = hold::add(repo.scope(), &a.snapshot, &a.reason, |r| {
                        repo.resolve(r, None, &Pick { filter: &a.filter.filter(), named: None })
                    })
                    .await?;
                    // Under object lock, the store holds the snapshot's objects too.
                    let legal = hold::set_legal_holds(&repo, &h.snapshot, true).await?;
                    Ok::<_, strongroom_core::Error>((h, legal))
                })
                .map_err(Into::into);
            let (h, legal) = ctx.unlock(&repo, guard, result)?;
            if ctx.global.json {
                let mut v = serde_json::to_value(&h)?;
                if let (Some(l), Some(o)) = (&legal, v.as_object_mut()) {
                    o.insert("legal_holds".into(), serde_json::to_value(l)?);
                }
                ctx.print_json(&v)?;
            } else {
                ctx.say(format_args!("snapshot {} held: {}", h.snapshot.short(), h.reason))?;
                if let Some(l) = &legal {
                    ctx.say(format_args!("S3 legal hold set on {} objects", l.objects))?;
                }
            }
        }
        HoldCommand::Remove(a) => {
            let repo = ctx.open_to_lock()?;
            let guard = ctx.lock_to_delete(&repo, "hold remove")?;
            let result = ctx
                .rt
                .block_on(async {
                    let id = hold::remove(repo.scope(), &a.snapshot, |r| repo.resolve(r, None, &Pick::ANY)).await?;
                    let legal = hold::set_legal_holds(&repo, &id, false).await?;
                    Ok::<_, strongroom_core::Error>((id, legal))
                })
                .map_err(Into::into);
            let (id, legal) = ctx.unlock(&repo, guard, result)?;
            if ctx.global.json {
                let mut v = serde_json::json!({ "removed": id.to_hex() });
                if let (Some(l), Some(o)) = (&legal, v.as_object_mut()) {
                    o.insert("legal_holds".into(), serde_json::to_value(l)?);
                }
                ctx.print_json(&v)?;
            } else {
                ctx.say(format_args!("hold on snapshot {} removed", id.short()))?;
                if let Some(l) = &legal {
                    ctx.say(format_args!(
                        "S3 legal hold cleared on {} objects ({} stay held for other held snapshots)",
                        l.objects, l.still_held
                    ))?;
                }
            }
        }
        HoldCommand::List => {
            let repo = ctx.open()?;
            let holds = ctx.rt.block_on(hold::list(repo.scope()))?;
            if ctx.global.json {
                ctx.print_json(&holds)?;
            } else if !ctx.global.quiet {
                out!("{:<8}  {:<20}  {:<16}  reason", "id", "since", "by");
                for h in &holds {
                    let since = h
                        .created
                        .parse::<jiff::Timestamp>()
                        .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|_| h.created.clone());
                    let by = if h.readable { format!("{}@{}", h.username, h.hostname) } else { String::new() };
                    out!("{:<8}  {:<20}  {:<16}  {}", h.snapshot.short(), since, by, h.reason);
                }
                out!("{} holds", holds.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
