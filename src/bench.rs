//! `bench chunking`: how chunker parameters trade dedup against chunk count
//! on a real dataset series, without a repository.
//!
//! Every input (a file, or a directory walked in name order) is chunked
//! with each parameter set under a fixed benchmark key; distinct chunks are
//! counted by keyed hash and compressed once with zstd to estimate what the
//! repository would store.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use crate::chunk::{ChunkSizes, Chunker};
use crate::crypto::{Key, TenantKeys};
use crate::error::{Error, Result};

/// One parameter set's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChunkingResult {
    /// Sizes used.
    pub sizes: ChunkSizes,
    /// Chunks in all inputs.
    pub chunks: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// Mean chunk size over all chunks.
    pub mean_chunk_bytes: f64,
    /// Bytes of all inputs.
    pub logical_bytes: u64,
    /// Bytes of distinct chunks.
    pub unique_bytes: u64,
    /// Bytes of distinct chunks after zstd level 3 (raw where it does not pay).
    pub compressed_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// logical / compressed.
    pub total_ratio: f64,
    /// Chunking speed alone (one thread), MB/s.
    pub chunking_mb_per_s: f64,
}

fn files_of(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if md.is_file() {
        out.push(path.to_path_buf());
    } else if md.is_dir() {
        let (entries, _) = crate::source::read_dir_sorted(path).map_err(|e| Error::io(path, e))?;
        for e in entries {
            files_of(&e.path, out)?;
        }
    }
    Ok(())
}

/// Runs the chunking benchmark over `inputs` (in order) for each size set.
pub fn chunking(inputs: &[PathBuf], sets: &[ChunkSizes]) -> Result<Vec<ChunkingResult>> {
    let keys = TenantKeys::from_master(&Key::from_bytes([0x5a; 32]));
    let mut files = Vec::new();
    for i in inputs {
        files_of(i, &mut files)?;
    }
    let mut out = Vec::new();
    for sizes in sets {
        let chunker = Chunker::new(*sizes, keys.gear())?;
        let mut seen = HashSet::new();
        let (mut chunks, mut logical, mut unique, mut compressed) = (0u64, 0u64, 0u64, 0u64);
        let mut chunk_secs = 0.0;
        for f in &files {
            let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
            let mut stream = chunker.stream(file);
            loop {
                // Up to 64 chunks at a time keeps memory bounded on huge files.
                let t = Instant::now();
                let batch: Vec<bytes::Bytes> = stream.by_ref().take(64).collect::<std::result::Result<_, _>>()?;
                chunk_secs += t.elapsed().as_secs_f64();
                if batch.is_empty() {
                    break;
                }
                let ids: Vec<_> = batch.par_iter().map(|c| keys.blob_id(c)).collect();
                let fresh: Vec<&bytes::Bytes> =
                    batch.iter().zip(ids).filter(|(_, id)| seen.insert(*id)).map(|(c, _)| c).collect();
                let sizes: Vec<(u64, u64)> = fresh
                    .par_iter()
                    .map(|c| {
                        let z = zstd::bulk::compress(c, 3).map(|z| z.len()).unwrap_or(c.len()).min(c.len());
                        (c.len() as u64, z as u64)
                    })
                    .collect();
                chunks += batch.len() as u64;
                logical += batch.iter().map(|c| c.len() as u64).sum::<u64>();
                for (raw, z) in sizes {
                    unique += raw;
                    compressed += z;
                }
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        out.push(ChunkingResult {
            sizes: *sizes,
            chunks,
            unique_chunks: seen.len() as u64,
            mean_chunk_bytes: ratio(logical, chunks),
            logical_bytes: logical,
            unique_bytes: unique,
            compressed_bytes: compressed,
            dedup_ratio: ratio(logical, unique),
            total_ratio: ratio(logical, compressed),
            chunking_mb_per_s: if chunk_secs > 0.0 { logical as f64 / 1e6 / chunk_secs } else { 0.0 },
        });
    }
    Ok(out)
}
