//! `strongroom stats`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx};

/// Arguments of `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {}

pub fn run(ctx: &Ctx, _a: StatsArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let s = ctx.rt.block_on(strongroom_core::stats::run(&repo))?;
    ctx.metrics.repository(&ctx.labels(), s.stored_bytes, s.dedup_ratio);
    if ctx.global.json {
        return ctx.print_json(&s).map(|()| ExitCode::SUCCESS);
    }
    out!("tenant:            {}", s.tenant);
    out!("snapshots:         {}", s.snapshots);
    out!("logical size:      {}", bytes(s.logical_bytes));
    out!("unique chunk data: {} in {} chunks", bytes(s.unique_bytes), s.chunks);
    out!("stored:            {} in {} packs", bytes(s.stored_bytes), s.packs);
    if s.unreferenced_blob_bytes > 0 {
        out!("unreferenced:      {} of chunks no snapshot uses (prune frees them)", bytes(s.unreferenced_blob_bytes));
    }
    out!("dedup ratio:       {:.2}", s.dedup_ratio);
    out!("compression ratio: {:.2}", s.compression_ratio);
    out!("total ratio:       {:.2}", s.total_ratio);
    Ok(ExitCode::SUCCESS)
}
