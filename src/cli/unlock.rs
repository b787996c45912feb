//! `strongroom unlock`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;

/// Arguments of `unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no strongroom process runs)
    #[arg(long)]
    remove_all: bool,
}

pub fn run(ctx: &Ctx, a: UnlockArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let result =
        ctx.rt.block_on(strongroom_core::lock::unlock(repo.scope(), a.remove_all)).map_err(anyhow::Error::from);
    ctx.audit(&repo, "unlock", &result)?;
    let removed = result?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({ "removed": removed }))?;
    } else {
        ctx.say(format_args!("removed {} lock(s)", removed.len()))?;
    }
    Ok(ExitCode::SUCCESS)
}
