//! `bench chunking`: how chunker parameters trade dedup against chunk count
//! on a real dataset series, without a repository.
//!
//! The catalog benchmarks (`synthetic_index`, `lookups`) run in a
//! [`ScratchRepo`]: a repository of their own, made for the run in a new
//! private directory, with its own catalog and host memory there. They
//! never open a repository they did not create: a synthetic index in a
//! user's tenant is an index of packs that do not exist.
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

/// A repository a benchmark made for itself: a local store, a tenant
/// `default`, and its catalog. A temporary one lives, with its catalog
/// and host memory, in a new private directory removed on drop.
pub struct ScratchRepo {
    /// The open tenant.
    pub repo: crate::repo::Repo,
    location: PathBuf,
    remove_on_drop: Option<PathBuf>,
}

impl ScratchRepo {
    /// A scratch repository in a new private directory under the system's
    /// temporary directory, opened with a random password; removed on
    /// drop.
    pub async fn temporary() -> Result<Self> {
        let base = std::env::temp_dir().join(format!(
            "strongroom-bench-{}-{}",
            std::process::id(),
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        crate::private::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
        let secret = crate::repo::Secret::new(hex::encode(crate::crypto::random_bytes::<32>()).into_bytes());
        match Self::create(&base.join("repo"), &base.join("cache"), &secret).await {
            Ok(mut s) => {
                s.remove_on_drop = Some(base);
                Ok(s)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base);
                Err(e)
            }
        }
    }

    /// A new repository at `dir`, which must not exist (so that no
    /// existing repository is ever written to), opened with `secret`;
    /// catalogs under `cache_dir`. Kept after drop.
    pub async fn create(dir: &Path, cache_dir: &Path, secret: &crate::repo::Secret) -> Result<Self> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::private::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::create_dir(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::invalid_input(
                "benchmark repository",
                dir.display().to_string(),
                "exists: a benchmark writes only into a repository it creates",
            ),
            _ => Error::io(dir, e),
        })?;
        let store = crate::store::Store::open(&dir.to_string_lossy(), &Default::default(), true)?;
        let tenant = crate::id::TenantName::new("default")?;
        let kdf = crate::crypto::KdfParams {
            memory_kib: crate::crypto::MIN_KDF_MEMORY_KIB,
            iterations: 2,
            ..Default::default()
        };
        let init = crate::repo::InitOptions { kdf, ..Default::default() };
        crate::repo::init(&store, &tenant, secret, &init).await?;
        let opts = crate::repo::OpenOptions {
            cache_dir: cache_dir.to_path_buf(),
            lock_wait: std::time::Duration::ZERO,
            memory_dir: None,
        };
        let repo = crate::repo::Repo::open(store, tenant, secret, &opts).await?;
        Ok(Self { repo, location: dir.to_path_buf(), remove_on_drop: None })
    }

    /// Where the repository lives.
    pub fn location(&self) -> &Path {
        &self.location
    }
}

impl Drop for ScratchRepo {
    fn drop(&mut self) {
        if let Some(dir) = &self.remove_on_drop {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What [`synthetic_index`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyntheticIndex {
    /// Blobs indexed.
    pub blobs: u64,
    /// Index deltas written.
    pub index_deltas: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Blobs per synthetic pack (a 16 MiB pack of 256 KiB chunks).
const SYNTH_BLOBS_PER_PACK: u64 = 64;
/// Blobs per synthetic index delta.
const SYNTH_BLOBS_PER_DELTA: u64 = 16_384;

/// Writes index deltas for `blobs` synthetic data blobs in packs that do
/// not exist, so that the tenant's catalog holds as many entries as a
/// large repository would. For benchmarks of catalog size only, in a
/// [`ScratchRepo`]: `check` reports the packs missing.
pub fn synthetic_index(scratch: &ScratchRepo, blobs: u64, cancel: &crate::Cancel) -> Result<SyntheticIndex> {
    let repo = &scratch.repo;
    use crate::codec::index::PackEntry;
    use crate::codec::pack::{BlobKind, PackedBlob};
    let started = Instant::now();
    let generation = repo.data_key()?.generation;
    let mut written = 0u64;
    let mut deltas = 0u64;
    while written < blobs {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let n = SYNTH_BLOBS_PER_DELTA.min(blobs - written);
        let mut packs = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = SYNTH_BLOBS_PER_PACK.min(left);
            let blobs: Vec<PackedBlob> = (0..k)
                .map(|i| PackedBlob {
                    kind: BlobKind::Data,
                    id: crate::id::BlobId(crate::crypto::random_bytes()),
                    offset: (i * 180_000) as u32,
                    length: 180_000,
                    raw_len: 262_144,
                })
                .collect();
            packs.push(PackEntry {
                id: crate::id::PackId(crate::crypto::random_bytes()),
                length: k * 180_000 + 4096,
                key_generation: generation,
                blobs,
            });
            left -= k;
        }
        repo.block_on(repo.save_index(packs))?;
        written += n;
        deltas += 1;
    }
    Ok(SyntheticIndex { blobs: written, index_deltas: deltas, seconds: started.elapsed().as_secs_f64() })
}

/// Catalog lookup timings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lookups {
    /// Entries in the catalog.
    pub catalog_blobs: u64,
    /// Lookups of ids present, per second.
    pub hits_per_second: f64,
    /// Lookups of random absent ids, per second.
    pub misses_per_second: f64,
    /// Lookups timed of each kind.
    pub count: u64,
    /// Backup's dedup check of random absent ids (id filter first), per second.
    pub dedup_misses_per_second: f64,
    /// The filter's false positives among those (each cost a table lookup).
    pub dedup_false_positives: u64,
    /// Backup's dedup check of the random present ids, per second.
    pub dedup_random_hits_per_second: f64,
    /// Backup's dedup check of every id of whole packs, pack after pack
    /// (the order in which a file backed up before comes again), per second.
    pub dedup_pack_order_hits_per_second: f64,
    /// Ids in that pack-order run (packs with a `pack_blobs` row; up to `count`).
    pub pack_order_count: u64,
    /// Bytes of the id filter file.
    pub filter_bytes: u64,
}

/// Runs `check` on every id, one thread; returns how many it found and
/// the checks per second.
fn timed(ids: &[crate::id::BlobId], mut check: impl FnMut(&crate::id::BlobId) -> Result<bool>) -> Result<(usize, f64)> {
    let t = Instant::now();
    let mut found = 0;
    for id in ids {
        found += usize::from(check(id)?);
    }
    Ok((found, ids.len() as f64 / t.elapsed().as_secs_f64().max(1e-9)))
}

/// Times lookups in the tenant's catalog, one thread: `count` present ids
/// (a uniform sample of the catalog) and `count` random absent ids, first
/// straight in the blob table, then through the backup's dedup reader
/// (id filter, then recently hit packs, then the table); and the ids of
/// whole packs in pack order through a fresh dedup reader.
pub fn lookups(scratch: &ScratchRepo, count: u64) -> Result<Lookups> {
    use rand::Rng;
    let repo = &scratch.repo;
    let cat = repo.catalog();
    let total = cat.n_blobs()?;
    let mut sample: Vec<crate::id::BlobId> = Vec::with_capacity(count as usize);
    let mut seen = 0u64;
    let mut rng = rand::thread_rng();
    cat.for_each_blob(|loc| {
        seen += 1;
        if (sample.len() as u64) < count {
            sample.push(loc.blob.id);
        } else {
            let j = rng.gen_range(0..seen);
            if j < count {
                sample[j as usize] = loc.blob.id;
            }
        }
    })?;
    let mut in_packs = Vec::new();
    cat.for_each_pack_blobs(|ids| {
        in_packs.extend_from_slice(ids);
        (in_packs.len() as u64) < count
    })?;
    let misses: Vec<crate::id::BlobId> = (0..count).map(|_| crate::id::BlobId(crate::crypto::random_bytes())).collect();
    // Built (or loaded) before any timing.
    let filter_bytes = cat.dedup()?.filter_bytes();

    let reader = cat.reader()?;
    let (hits, hits_per_second) = timed(&sample, |id| Ok(reader.lookup(id)?.is_some()))?;
    let (false_hits, misses_per_second) = timed(&misses, |id| Ok(reader.lookup(id)?.is_some()))?;

    let dedup = cat.dedup()?;
    let (dedup_false, dedup_misses_per_second) = timed(&misses, |id| Ok(dedup.contains(id)?))?;
    let dedup_false_positives = dedup.stats().table_misses;
    let (dedup_hits, dedup_random_hits_per_second) = timed(&sample, |id| Ok(dedup.contains(id)?))?;

    let dedup = cat.dedup()?;
    let (pack_hits, dedup_pack_order_hits_per_second) = timed(&in_packs, |id| Ok(dedup.contains(id)?))?;
    let found = hits + false_hits + dedup_false + dedup_hits + pack_hits;
    if found != 2 * sample.len() + in_packs.len() {
        return Err(Error::Internal("catalog changed while timing lookups".into()));
    }
    Ok(Lookups {
        catalog_blobs: total,
        hits_per_second,
        misses_per_second,
        count,
        dedup_misses_per_second,
        dedup_false_positives,
        dedup_random_hits_per_second,
        dedup_pack_order_hits_per_second,
        pack_order_count: in_packs.len() as u64,
        filter_bytes,
    })
}

/// What [`pipeline`] measured: the machine's limit for the CPU-bound part
/// of a backup (chunk + keyed hash + compress + seal) on a dataset held in
/// memory, with no reading, no packing and no storage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineLimit {
    /// Bytes of the inputs.
    pub bytes: u64,
    /// Chunks cut (in the one-thread run).
    pub chunks: u64,
    /// Sealed bytes (what a repository would store before packing).
    pub sealed_bytes: u64,
    /// One thread, MB/s (best of the runs).
    pub one_thread_mb_per_s: f64,
    /// Threads of the parallel run.
    pub threads: usize,
    /// All threads, each on its own share of the input, MB/s (best of the runs).
    pub all_threads_mb_per_s: f64,
}

/// Chunks, hashes, compresses and seals `data` on the calling thread;
/// returns (chunks, sealed bytes).
fn pipeline_pass(
    chunker: &Chunker,
    keys: &TenantKeys,
    key: &Key,
    data: &[&[u8]],
    compression: crate::blob::Compression,
) -> (u64, u64) {
    let (mut chunks, mut sealed) = (0u64, 0u64);
    for buf in data {
        // As a backup does: one adaptive compression choice per file.
        let adaptive = crate::blob::Adaptive::new();
        for (start, len) in chunker.chunks_of(buf) {
            let c = &buf[start..start + len];
            let id = keys.blob_id(c);
            let s = crate::blob::seal_adaptive(
                key,
                crate::codec::pack::BlobKind::Data,
                &id,
                c,
                compression,
                Some(&adaptive),
            );
            chunks += 1;
            sealed += s.len() as u64;
            std::hint::black_box(s);
        }
    }
    (chunks, sealed)
}

/// Measures the pipeline limit on `inputs` (files or directories, read
/// into memory first). The parallel run splits the bytes into `threads`
/// equal shares, each chunked and sealed by its own thread: no hand-offs,
/// no shared state, so it is the most the machine can do.
pub fn pipeline(
    inputs: &[PathBuf],
    sizes: ChunkSizes,
    compression: crate::blob::Compression,
    threads: usize,
    runs: usize,
) -> Result<PipelineLimit> {
    let keys = TenantKeys::from_master(&Key::from_bytes([0x5a; 32]));
    let key = Key::from_bytes([0xa5; 32]);
    let chunker = Chunker::new(sizes, keys.gear())?;
    let mut files = Vec::new();
    for i in inputs {
        files_of(i, &mut files)?;
    }
    let mut data = Vec::with_capacity(files.len());
    for f in &files {
        data.push(std::fs::read(f).map_err(|e| Error::io(f, e))?);
    }
    let bytes: u64 = data.iter().map(|d| d.len() as u64).sum();
    let all: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    let threads = threads.max(1);
    // Shares of about bytes/threads each: whole files, and a file larger
    // than a share is cut into pieces (chunked independently, as another
    // host's backup of that piece would be).
    let share = (bytes as usize).div_ceil(threads).max(1);
    let mut shares: Vec<Vec<&[u8]>> = vec![Vec::new()];
    let mut filled = 0usize;
    for mut buf in all.iter().copied() {
        while !buf.is_empty() {
            if filled >= share && shares.len() < threads {
                shares.push(Vec::new());
                filled = 0;
            }
            // `filled < share` here unless every share is open already.
            let take = if filled < share { buf.len().min(share - filled) } else { buf.len() };
            let (head, tail) = buf.split_at(take);
            if let Some(last) = shares.last_mut() {
                last.push(head);
            }
            filled += take;
            buf = tail;
        }
    }
    let (mut best_one, mut best_all) = (f64::MAX, f64::MAX);
    let (mut chunks, mut sealed) = (0, 0);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        (chunks, sealed) = pipeline_pass(&chunker, &keys, &key, &all, compression);
        best_one = best_one.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::thread::scope(|s| {
            for part in &shares {
                let (chunker, keys, key) = (&chunker, &keys, &key);
                s.spawn(move || pipeline_pass(chunker, keys, key, part, compression));
            }
        });
        best_all = best_all.min(t.elapsed().as_secs_f64());
    }
    let mbps = |secs: f64| bytes as f64 / 1e6 / secs.max(1e-9);
    Ok(PipelineLimit {
        bytes,
        chunks,
        sealed_bytes: sealed,
        one_thread_mb_per_s: mbps(best_one),
        threads: shares.len(),
        all_threads_mb_per_s: mbps(best_all),
    })
}
