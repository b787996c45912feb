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
    let s = ctx.rt.block_on(crate::stats::run(&repo))?;
    if ctx.global.json {
        return ctx.print_json(&s).map(|()| ExitCode::SUCCESS);
    }
    println!("tenant:            {}", s.tenant);
    println!("snapshots:         {}", s.snapshots);
    println!("logical size:      {}", bytes(s.logical_bytes));
    println!("unique chunk data: {} in {} chunks", bytes(s.unique_bytes), s.chunks);
    println!("stored:            {} in {} packs", bytes(s.stored_bytes), s.packs);
    println!("dedup ratio:       {:.2}", s.dedup_ratio);
    println!("compression ratio: {:.2}", s.compression_ratio);
    println!("total ratio:       {:.2}", s.total_ratio);
    Ok(ExitCode::SUCCESS)
}
