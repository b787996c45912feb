//! Micro-benchmarks of the pure layers and the catalog, on seeded inputs.
//!
//! Every input is generated from a fixed seed: no files (except the catalog's
//! tempdir), no network, the same bytes on every run. Each benchmark reports
//! throughput, so numbers read as "MiB/s of plaintext" (or lookups/s for the
//! catalog and header reads, where bytes mean nothing).
//!
//! `pipeline_per_core` is the number the real backup is compared against:
//! chunk + keyed hash + zstd(3) + seal of one buffer on ONE thread, i.e. the
//! most a single core can push through the CPU-bound part of the pipeline.
//!
//! Run: `cargo bench --bench micro` (full, a few minutes) or
//! `cargo bench --bench micro -- --test` (each benchmark once, for CI).
//! Results with their machine and command live in docs/bench-micro-results.txt.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use strongroom_core::blob::{self, Compression};
use strongroom_core::catalog::{Batch, Catalog};
use strongroom_core::chunk::{ChunkSizes, Chunker};
use strongroom_core::codec::index::PackEntry;
use strongroom_core::codec::pack::{BlobKind, PackedBlob};
use strongroom_core::crypto::{self, DataKey, Key, TenantKeys};
use strongroom_core::id::{BlobId, PackId};
use strongroom_core::pack::{self, PackWriter};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Input of the chunker benchmarks.
const CHUNK_INPUT_BYTES: usize = 64 * MIB;
/// One "typical" chunk: the default average chunk size.
const BLOB_BYTES: usize = MIB;
/// Input of the single-thread pipeline benchmark.
const PIPELINE_INPUT_BYTES: usize = 16 * MIB;
/// Blobs per pack in the pack benchmarks (16 x 1 MiB, a typical pack).
const N_PACK_BLOBS: usize = 16;

/// Catalog sizes (number of blob rows). For a 10^7-row catalog add
/// `10_000_000` here (its build takes roughly ten times the 10^6 one;
/// see docs/bench-micro-results.txt).
const CATALOG_N_BLOBS: &[u64] = &[10_000, 1_000_000];
/// Under `--test` (criterion's quick mode, used by CI) only catalogs up to
/// this size are built, so the smoke run stays fast.
const CATALOG_N_BLOBS_QUICK_MAX: u64 = 100_000;
/// Blob rows per pack entry, and per `Catalog::apply` transaction.
const CATALOG_BLOBS_PER_PACK: u64 = 10_000;
/// Distinct ids cycled through by the lookup benchmarks.
const N_LOOKUP_PROBES: usize = 4096;

/// Master key of the benchmark tenant; any fixed value will do.
const MASTER_KEY_BYTES: [u8; 32] = [1; 32];
/// Data key (generation 1) used to seal blobs, packs and buffers.
const DATA_KEY_BYTES: [u8; 32] = [2; 32];

/// Text repeated in the compressible half of each 4 KiB block.
const FILLER_TEXT: &[u8] = b"strongroom benchmark filler: the quick brown fox jumps over the lazy dog 0123456789\n";
/// Block whose first half is random and second half is `FILLER_TEXT`.
const HALF_BLOCK_BYTES: usize = 4 * KIB;

fn keys() -> TenantKeys {
    let mut keys = TenantKeys::from_master(&Key::from_bytes(MASTER_KEY_BYTES));
    keys.add_data_key(DataKey { generation: 1, key: Key::from_bytes(DATA_KEY_BYTES) });
    keys
}

fn data_key() -> Key {
    Key::from_bytes(DATA_KEY_BYTES)
}

/// `len` pseudo-random bytes from `seed`: incompressible, and with no
/// structure for the chunker to latch onto.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// `len` bytes where each 4 KiB block is half random, half repeated text:
/// zstd gets it to a little over half its size, like typical mixed data.
fn half_compressible_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    for block in out.chunks_mut(HALF_BLOCK_BYTES) {
        let half = block.len() / 2;
        rng.fill_bytes(&mut block[..half]);
        for (b, t) in block[half..].iter_mut().zip(FILLER_TEXT.iter().cycle()) {
            *b = *t;
        }
    }
    out
}

fn chunk(c: &mut Criterion) {
    let keys = keys();
    let data = random_bytes(1, CHUNK_INPUT_BYTES);
    let configs = [
        ("512k_1m_8m", ChunkSizes::default()),
        ("64k_256k_1m", ChunkSizes { min: 64 * KIB as u32, avg: 256 * KIB as u32, max: MIB as u32 }),
        ("16k_64k_256k", ChunkSizes { min: 16 * KIB as u32, avg: 64 * KIB as u32, max: 256 * KIB as u32 }),
    ];
    let mut g = c.benchmark_group("chunk");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (name, sizes) in configs {
        let chunker = Chunker::new(sizes, keys.gear()).expect("benchmark chunk sizes are valid");
        let n_chunks = chunker.chunks_of(&data).len();
        eprintln!("chunk/{name}: {n_chunks} chunks, mean {} KiB", data.len() / n_chunks / KIB);
        g.bench_function(name, |b| b.iter(|| chunker.chunks_of(black_box(&data))));
    }
    g.finish();
}

fn hash(c: &mut Criterion) {
    let keys = keys();
    let data = random_bytes(2, BLOB_BYTES);
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blob_id_1m", |b| b.iter(|| keys.blob_id(black_box(&data))));
    g.finish();
}

fn compress(c: &mut Criterion) {
    let keys = keys();
    let key = data_key();
    let inputs = [("half", half_compressible_bytes(3, BLOB_BYTES)), ("random", random_bytes(4, BLOB_BYTES))];
    let mut g = c.benchmark_group("compress");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(BLOB_BYTES as u64));
    for (input, data) in &inputs {
        for level in [1, 3, 6] {
            let ratio =
                zstd::bulk::compress(data, level).expect("zstd compresses in memory").len() as f64 / data.len() as f64;
            eprintln!("compress/zstd{level}/{input}: ratio {ratio:.3}");
            g.bench_with_input(BenchmarkId::new(format!("zstd{level}"), input), data, |b, data| {
                b.iter(|| zstd::bulk::compress(black_box(data), level).expect("zstd compresses in memory"))
            });
        }
    }
    for (input, data) in &inputs {
        let id = keys.blob_id(data);
        for (name, compression) in [("blob_seal_zstd3", Compression::Zstd(3)), ("blob_seal_off", Compression::Off)] {
            let stored = blob::seal(&key, BlobKind::Data, &id, data, compression).len();
            eprintln!("compress/{name}/{input}: stored {stored} of {} bytes", data.len());
            g.bench_with_input(BenchmarkId::new(name, input), data, |b, data| {
                b.iter(|| blob::seal(&key, BlobKind::Data, &id, black_box(data), compression))
            });
        }
    }
    g.finish();
}

fn seal_open(c: &mut Criterion) {
    let key = data_key();
    let aad = b"benchmark aad";
    let data = random_bytes(5, BLOB_BYTES);
    let sealed = crypto::seal(&key, aad, &data);
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("seal_1m", |b| b.iter(|| crypto::seal(&key, aad, black_box(&data))));
    g.bench_function("open_1m", |b| {
        b.iter(|| crypto::open(&key, aad, black_box(&sealed), || "benchmark buffer".to_string()).expect("opens"))
    });
    g.finish();
}

/// The CPU-bound part of a backup, on one thread: returns the stored bytes.
fn pipeline_once(chunker: &Chunker, keys: &TenantKeys, key: &Key, data: &[u8]) -> usize {
    let mut stored = 0;
    for (off, len) in chunker.chunks_of(data) {
        let plaintext = &data[off..off + len];
        let id = keys.blob_id(plaintext);
        stored += blob::seal(key, BlobKind::Data, &id, plaintext, Compression::Zstd(3)).len();
    }
    stored
}

fn pipeline(c: &mut Criterion) {
    let keys = keys();
    let key = data_key();
    let chunker = Chunker::new(ChunkSizes::default(), keys.gear()).expect("default chunk sizes are valid");
    let data = half_compressible_bytes(6, PIPELINE_INPUT_BYTES);
    let stored = pipeline_once(&chunker, &keys, &key, &data);
    eprintln!(
        "pipeline_per_core: {} chunks, stored {:.3} of the input",
        chunker.chunks_of(&data).len(),
        stored as f64 / data.len() as f64
    );
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("per_core_chunk_hash_zstd3_seal_16m", |b| {
        b.iter(|| pipeline_once(&chunker, &keys, &key, black_box(&data)))
    });
    g.finish();
}

fn pack(c: &mut Criterion) {
    let keys = keys();
    let key = data_key();
    let blobs: Vec<(BlobId, Vec<u8>)> = (0..N_PACK_BLOBS as u64)
        .map(|i| {
            let plaintext = random_bytes(100 + i, BLOB_BYTES);
            let id = keys.blob_id(&plaintext);
            (id, blob::seal(&key, BlobKind::Data, &id, &plaintext, Compression::Off))
        })
        .collect();
    let stored_bytes: usize = blobs.iter().map(|(_, s)| s.len()).sum();
    let write = |blobs: Vec<(BlobId, Vec<u8>)>| {
        let mut w = PackWriter::new(BlobKind::Data);
        for (id, sealed) in blobs {
            w.add(id, BLOB_BYTES as u32, sealed);
        }
        w.finish(1, &key)
    };
    let finished = write(blobs.clone());

    let mut g = c.benchmark_group("pack");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(stored_bytes as u64));
    g.bench_function("write_16x1m_finish", |b| b.iter_batched(|| blobs.clone(), &write, BatchSize::LargeInput));
    // Reading a header costs the same whatever the blob sizes: count blobs.
    g.throughput(Throughput::Elements(N_PACK_BLOBS as u64));
    g.bench_function("read_header_16", |b| {
        b.iter(|| {
            pack::read_header(&keys, &finished.id, black_box(&finished.bytes), finished.bytes.len() as u64)
                .expect("the pack just written reads back")
        })
    });
    g.finish();
}

/// Blob id of row `i`: a keyed-hash-like, uniformly spread 32-byte value.
fn catalog_blob_id(i: u64) -> BlobId {
    BlobId(crypto::object_hash(&i.to_le_bytes()))
}

fn build_catalog(path: &std::path::Path, n_blobs: u64) -> Catalog {
    let catalog = Catalog::open(path).expect("opening a fresh catalog in a tempdir");
    let mut next = 0u64;
    let mut pack_idx = 0u64;
    while next < n_blobs {
        let end = (next + CATALOG_BLOBS_PER_PACK).min(n_blobs);
        let blobs: Vec<PackedBlob> = (next..end)
            .enumerate()
            .map(|(j, i)| PackedBlob {
                kind: BlobKind::Data,
                id: catalog_blob_id(i),
                offset: (j * BLOB_BYTES) as u32,
                length: BLOB_BYTES as u32,
                raw_len: BLOB_BYTES as u32,
            })
            .collect();
        let entry = PackEntry {
            id: PackId(crypto::object_hash(format!("pack {pack_idx}").as_bytes())),
            length: (blobs.len() * BLOB_BYTES) as u64,
            key_generation: 1,
            blobs,
        };
        catalog.apply(&Batch { packs: vec![entry], ..Batch::default() }).expect("applying a batch");
        next = end;
        pack_idx += 1;
    }
    catalog
}

fn catalog(c: &mut Criterion) {
    let quick = std::env::args().any(|a| a == "--test");
    let mut g = c.benchmark_group("catalog");
    g.throughput(Throughput::Elements(1));
    for &n_blobs in CATALOG_N_BLOBS {
        if quick && n_blobs > CATALOG_N_BLOBS_QUICK_MAX {
            eprintln!("catalog: skipping {n_blobs} rows under --test");
            continue;
        }
        let dir = tempfile::tempdir().expect("creating a tempdir");
        let path = dir.path().join("catalog.redb");
        let started = Instant::now();
        let catalog = build_catalog(&path, n_blobs);
        let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "catalog: built {n_blobs} rows in {:.1} s ({} MiB file)",
            started.elapsed().as_secs_f64(),
            file_bytes / MIB as u64
        );
        let mut rng = StdRng::seed_from_u64(7);
        let hits: Vec<BlobId> = (0..N_LOOKUP_PROBES).map(|_| catalog_blob_id(rng.gen_range(0..n_blobs))).collect();
        // Indices past the end were never inserted.
        let misses: Vec<BlobId> = (0..N_LOOKUP_PROBES as u64).map(|i| catalog_blob_id(n_blobs + i)).collect();
        let reader = catalog.reader().expect("opening a read transaction");
        for (probes, want_hit) in [(&hits, true), (&misses, false)] {
            for id in probes {
                assert_eq!(reader.lookup(id).expect("lookup").is_some(), want_hit, "catalog probe {id:?}");
            }
        }
        for (name, probes) in [("lookup_hit", &hits), ("lookup_miss", &misses)] {
            g.bench_function(BenchmarkId::new(name, n_blobs), |b| {
                let mut probe_idx = 0;
                b.iter(|| {
                    probe_idx = (probe_idx + 1) % probes.len();
                    reader.lookup(black_box(&probes[probe_idx])).expect("lookup")
                })
            });
        }
        // The backup's dedup check: id filter, recently hit packs, table.
        let dedup = catalog.dedup().expect("opening a dedup reader");
        for (name, probes, want) in [("dedup_hit", &hits, true), ("dedup_miss", &misses, false)] {
            g.bench_function(BenchmarkId::new(name, n_blobs), |b| {
                let mut probe_idx = 0;
                b.iter(|| {
                    probe_idx = (probe_idx + 1) % probes.len();
                    let found = dedup.contains(black_box(&probes[probe_idx])).expect("dedup check");
                    assert_eq!(found, want);
                })
            });
        }
    }
    g.finish();
}

/// Bytes backed up by the end-to-end benchmark (8 files).
const E2E_BYTES: usize = 32 * MIB;

/// A fresh repository (local directory store) opened as tenant `default`.
fn e2e_repo(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> strongroom_core::repo::Repo {
    use strongroom_core::repo::{self, InitOptions, OpenOptions, Repo, Secret};
    let store =
        strongroom_core::store::Store::open(dir.join("repo").to_str().expect("utf-8 path"), &Default::default(), true)
            .expect("opening a local store");
    let tenant = strongroom_core::id::TenantName::new("default").expect("valid name");
    let secret = Secret::new(b"bench".to_vec());
    let mut opts = InitOptions::default();
    opts.kdf.memory_kib = 64;
    opts.kdf.iterations = 1;
    rt.block_on(repo::init(&store, &tenant, &secret, &opts)).expect("init");
    let open = OpenOptions { cache_dir: dir.join("cache"), lock_wait: Duration::from_secs(0), memory_dir: None };
    rt.block_on(Repo::open(store, tenant, &secret, &open)).expect("open")
}

fn e2e_backup(repo: &strongroom_core::repo::Repo, src: &std::path::Path) -> u64 {
    use strongroom_core::backup::{self, BackupOptions, NoProgress, ParentChoice};
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        stream: None,
        excludes: strongroom_core::source::Excludes::new(&[]).expect("no patterns"),
        follow: vec![],
        one_file_system: false,
        xattrs: true,
        skip_if_unchanged: false,
        tags: vec![],
        job: None,
        host: "bench".into(),
        time_ns: None,
        parent: ParentChoice::None,
        compression: Compression::Zstd(3),
        io_concurrency: 4,
        cancel: Default::default(),
        progress: std::sync::Arc::new(NoProgress),
        before_commit: Box::new(|| Ok(())),
        quota: None,
    };
    backup::run(repo, opts).expect("backup").counts.added_bytes
}

/// The whole backup path in-process, against a local directory store:
/// reader, chunker, rayon hashing/compression/sealing, packer, uploader,
/// index and snapshot commit. `first` backs up new data into a fresh
/// repository each time; `unchanged_force` re-reads the same files into the
/// same repository (every chunk a dedup hit). The regression benchmark CI
/// runs once per commit (`-- --test`).
fn e2e(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = src_dir.path().join("data");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..8u64 {
        std::fs::write(src.join(format!("f{i}")), half_compressible_bytes(100 + i, E2E_BYTES / 8)).expect("write");
    }
    let mut g = c.benchmark_group("e2e");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(E2E_BYTES as u64));
    g.bench_function("backup_first_32m", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let repo = e2e_repo(&rt, dir.path());
                (dir, repo)
            },
            // Returned, so criterion drops (deletes) them outside the timing.
            |(dir, repo)| (e2e_backup(&repo, &src), repo, dir),
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = e2e_repo(&rt, dir.path());
    e2e_backup(&repo, &src);
    g.bench_function("backup_unchanged_force_32m", |b| b.iter(|| e2e_backup(&repo, &src)));
    g.finish();
}

/// Runs every group with the shared configuration: short warm-up and
/// measurement, since each input is large enough to give a steady number.
fn benches() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    chunk(&mut c);
    hash(&mut c);
    compress(&mut c);
    seal_open(&mut c);
    pipeline(&mut c);
    pack(&mut c);
    catalog(&mut c);
    e2e(&mut c);
}

criterion_main!(benches);
