//! `strongroom bench …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::Ctx;
use crate::chunk::ChunkSizes;

/// Benchmark subcommands.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Compare chunker parameters on a dataset series (files or directories, in order)
    Chunking {
        /// Inputs, oldest first (e.g. v1 v2 v3)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Parameter sets MIN,AVG,MAX (repeatable) [default: a sweep around 512K,1M,8M]
        #[arg(long = "sizes", value_parser = super::init::parse_sizes)]
        sizes: Vec<ChunkSizes>,
    },
}

pub fn run(ctx: &Ctx, c: BenchCommand) -> Result<ExitCode> {
    match c {
        BenchCommand::Chunking { paths, mut sizes } => {
            if sizes.is_empty() {
                let k = 1024;
                sizes = [(64, 256, 1024), (128, 512, 2048), (256, 512, 4096), (512, 1024, 8192), (1024, 2048, 16384)]
                    .iter()
                    .map(|&(min, avg, max)| ChunkSizes { min: min * k, avg: avg * k, max: max * k })
                    .collect();
            }
            let results = crate::bench::chunking(&paths, &sizes)?;
            if ctx.global.json {
                return ctx.print_json(&results).map(|()| ExitCode::SUCCESS);
            }
            out!(
                "{:<18} {:>9} {:>9} {:>10} {:>7} {:>7} {:>9}",
                "min,avg,max KiB",
                "chunks",
                "unique",
                "mean KiB",
                "dedup",
                "total",
                "MB/s"
            );
            for r in results {
                out!(
                    "{:<18} {:>9} {:>9} {:>10.1} {:>7.3} {:>7.3} {:>9.0}",
                    format!("{},{},{}", r.sizes.min / 1024, r.sizes.avg / 1024, r.sizes.max / 1024),
                    r.chunks,
                    r.unique_chunks,
                    r.mean_chunk_bytes / 1024.0,
                    r.dedup_ratio,
                    r.total_ratio,
                    r.chunking_mb_per_s
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
