//! `strongroom bench …`: benchmarks that never touch a user's repository.
//!
//! `--repo`, `--tenant` and the password options (and their environment
//! variables) are ignored: `chunking` and `pipeline` need no repository,
//! and `synthetic-index` and `lookups` make one of their own for the run
//! (or, with `synthetic-index --create-repo DIR`, a new one at DIR).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::Ctx;
use strongroom_core::bench::ScratchRepo;
use strongroom_core::blob::Compression;
use strongroom_core::chunk::ChunkSizes;

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
    /// Time indexing synthetic blobs (in packs that do not exist) in a repository of its own
    SyntheticIndex {
        /// Blobs to add
        #[arg(long)]
        blobs: u64,
        /// Create a new repository at DIR (which must not exist) and keep it, for catalog-scale
        /// benchmarks; its password comes from STRONGROOM_PASSWORD or --password-file
        #[arg(long, value_name = "DIR")]
        create_repo: Option<PathBuf>,
    },
    /// Measure the machine's limit for chunk + hash + compress + seal on a dataset held in memory
    ///
    /// Reads the inputs into memory, then runs the CPU-bound part of a backup
    /// on one thread and on all threads (each on its own share of the bytes,
    /// nothing shared), with no reading, packing or storage. A backup of the
    /// same inputs divided by the all-threads figure is its share of the limit.
    Pipeline {
        /// Files or directories
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Chunk sizes MIN,AVG,MAX [default: a new repository's]
        #[arg(long, value_parser = super::init::parse_sizes)]
        sizes: Option<ChunkSizes>,
        /// zstd level (0: no compression)
        #[arg(long, default_value_t = 3)]
        compression: i32,
        /// Threads of the parallel run [default: the number of CPUs]
        #[arg(long)]
        threads: Option<usize>,
        /// Runs of each; the best is reported
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time catalog lookups (hits and misses) in a catalog of synthetic blobs of its own
    Lookups {
        /// Lookups of each kind
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Synthetic blobs in the catalog looked up in
        #[arg(long, default_value_t = 1_000_000)]
        blobs: u64,
    },
}

pub fn run(ctx: &Ctx, c: BenchCommand) -> Result<ExitCode> {
    match c {
        BenchCommand::SyntheticIndex { blobs, create_repo } => synthetic_index(ctx, blobs, create_repo),
        BenchCommand::Lookups { count, blobs } => lookups(ctx, count, blobs),
        BenchCommand::Pipeline { paths, sizes, compression, threads, runs } => {
            pipeline(ctx, &paths, sizes, compression, threads, runs)
        }
        BenchCommand::Chunking { paths, sizes } => chunking(ctx, &paths, sizes),
    }
}

fn synthetic_index(ctx: &Ctx, blobs: u64, create_repo: Option<PathBuf>) -> Result<ExitCode> {
    let scratch = match &create_repo {
        Some(dir) => {
            let secret = ctx.password(true)?;
            ctx.rt.block_on(ScratchRepo::create(dir, &ctx.cache_dir()?, &secret))?
        }
        None => ctx.rt.block_on(ScratchRepo::temporary())?,
    };
    let s = strongroom_core::bench::synthetic_index(&scratch, blobs, &ctx.cancel)?;
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        ctx.say(format_args!(
            "indexed {} synthetic blobs in {} index deltas in {:.1}s (their packs do not exist: for benchmarks only)",
            s.blobs, s.index_deltas, s.seconds
        ))?;
        if create_repo.is_some() {
            ctx.say(format_args!("benchmark repository kept at {}", scratch.location().display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lookups(ctx: &Ctx, count: u64, blobs: u64) -> Result<ExitCode> {
    let scratch = ctx.rt.block_on(ScratchRepo::temporary())?;
    strongroom_core::bench::synthetic_index(&scratch, blobs, &ctx.cancel)?;
    // Lookups time a synced catalog, as a backup's would be.
    ctx.rt.block_on(scratch.repo.sync())?;
    let s = strongroom_core::bench::lookups(&scratch, count)?;
    if ctx.global.json {
        ctx.print_json(&s)?;
    } else {
        ctx.say(format_args!(
            "catalog of {} blobs: blob table {:.0} hits/s, {:.0} misses/s ({} of each); \
             dedup reader {:.0} misses/s ({} false positives, filter {} KiB), {:.0} random hits/s, \
             {:.0} hits/s in pack order ({} ids)",
            s.catalog_blobs,
            s.hits_per_second,
            s.misses_per_second,
            s.count,
            s.dedup_misses_per_second,
            s.dedup_false_positives,
            s.filter_bytes / 1024,
            s.dedup_random_hits_per_second,
            s.dedup_pack_order_hits_per_second,
            s.pack_order_count
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn pipeline(
    ctx: &Ctx,
    paths: &[PathBuf],
    sizes: Option<ChunkSizes>,
    compression: i32,
    threads: Option<usize>,
    runs: usize,
) -> Result<ExitCode> {
    let threads = threads.unwrap_or_else(strongroom_core::cores);
    let c = if compression == 0 { Compression::Off } else { Compression::Zstd(compression) };
    let r = strongroom_core::bench::pipeline(paths, sizes.unwrap_or_default(), c, threads, runs)?;
    if ctx.global.json {
        return ctx.print_json(&r).map(|()| ExitCode::SUCCESS);
    }
    out!(
        "{:.1} MB in {} chunks, sealed {:.1} MB: one thread {:.1} MB/s, {} threads {:.1} MB/s (the limit)",
        r.bytes as f64 / 1e6,
        r.chunks,
        r.sealed_bytes as f64 / 1e6,
        r.one_thread_mb_per_s,
        r.threads,
        r.all_threads_mb_per_s
    );
    Ok(ExitCode::SUCCESS)
}

fn chunking(ctx: &Ctx, paths: &[PathBuf], mut sizes: Vec<ChunkSizes>) -> Result<ExitCode> {
    if sizes.is_empty() {
        let k = 1024;
        sizes = [(64, 256, 1024), (128, 512, 2048), (256, 512, 4096), (512, 1024, 8192), (1024, 2048, 16384)]
            .iter()
            .map(|&(min, avg, max)| ChunkSizes { min: min * k, avg: avg * k, max: max * k })
            .collect();
    }
    let results = strongroom_core::bench::chunking(paths, &sizes)?;
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
