//! `strongroom catalog …`

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::Ctx;

/// Catalog subcommands.
#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Delete the local catalog and rebuild it from the repository
    Rebuild,
}

pub fn run(ctx: &Ctx, c: CatalogCommand) -> Result<ExitCode> {
    match c {
        CatalogCommand::Rebuild => {
            let repo = ctx.open()?;
            let r = ctx.rt.block_on(repo.rebuild_catalog())?;
            for strongroom_core::Damage { object: obj, why } in &r.damaged {
                eprintln!("strongroom: tenants/{}/{obj}: damaged: {why}", repo.tenant());
            }
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({
                    "index_read": r.index_read,
                    "snapshots_read": r.snapshots_read,
                    "damaged": r.damaged.len(),
                }))?;
            } else {
                ctx.say(format!(
                    "catalog rebuilt: {} index deltas, {} snapshots{}",
                    r.index_read,
                    r.snapshots_read,
                    if r.damaged.is_empty() {
                        String::new()
                    } else {
                        format!(", {} damaged objects recorded (see `strongroom check`)", r.damaged.len())
                    }
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
