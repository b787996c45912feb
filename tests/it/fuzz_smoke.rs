//! Seeded runs of every fuzz entry point (see fuzz/), on stable.
//!
//! Risk covered: a decoder that panics on malformed input, or whose output
//! does not re-encode to its input, without anyone running the nightly
//! fuzzer. Each `strongroom_core::fuzzing` function gets its seeds (built by
//! `vectors::fuzz_seeds`, plus any other file in `fuzz/seeds/<target>/`,
//! where regression inputs go), every input of the committed corpus
//! `fuzz/corpus/<target>/`, then pseudo-random inputs and mutations of
//! the seeds. Everything is derived from fixed seeds, so a failure
//! reproduces; the failing input is printed in hex.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use strongroom_core::fuzzing;

/// Random inputs per target.
const N_RANDOM: usize = 2000;
/// Mutated seeds per target.
const N_MUTATED: usize = 5000;

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 20] = [
    ("decode_config", fuzzing::decode_config),
    ("decode_keyslot", fuzzing::decode_keyslot),
    ("decode_keyring", fuzzing::decode_keyring),
    ("decode_sealed", fuzzing::decode_sealed),
    ("decode_pack", fuzzing::decode_pack),
    ("decode_index", fuzzing::decode_index),
    ("decode_snapshot", fuzzing::decode_snapshot),
    ("decode_tree", fuzzing::decode_tree),
    ("decode_blob", fuzzing::decode_blob),
    ("decode_audit", fuzzing::decode_audit),
    ("decode_binding", fuzzing::decode_binding),
    ("decode_id_filter", fuzzing::decode_id_filter),
    ("decode_handoff", fuzzing::decode_handoff),
    ("decode_key_cache", fuzzing::decode_key_cache),
    ("decode_lock_names", fuzzing::decode_lock_names),
    ("decode_tombstone", fuzzing::decode_tombstone),
    ("parse_s3_versions", fuzzing::parse_s3_versions),
    ("decode_put_only_bundle", fuzzing::decode_put_only_bundle),
    ("decode_drop_keyring", fuzzing::decode_drop_keyring),
    ("decode_dedup_section", fuzzing::decode_dedup_section),
];

/// SplitMix64: tiny, fixed forever, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Values that sit on the edges of length and count fields.
const INTERESTING_U32: [u32; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_fffe, 0xffff_ffff];

/// One to four mutations of `seed`: bit flips, byte sets, edge values
/// written over 4 bytes, insertions, deletions, truncation, duplication of
/// a span, and splicing in another seed's bytes.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let ins = rng.bytes(n);
                d.splice(i..i, ins);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                d.drain(i..i + n);
            }
            5 => d.truncate(rng.below(len + 1)),
            6 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let span = d[i..i + n].to_vec();
                let j = rng.below(len + 1);
                d.splice(j..j, span);
            }
            7 if !other.is_empty() => {
                let i = rng.below(len + 1);
                let j = rng.below(other.len());
                let n = 1 + rng.below((other.len() - j).min(64));
                d.splice(i..i, other[j..j + n].iter().copied());
            }
            _ if len > 0 => {
                // A printable byte: keeps JSON inputs mostly JSON.
                let i = rng.below(len);
                d[i] = b" \"{}[],:0123456789.-eE\\tfnu"[rng.below(27)];
            }
            _ => d.push(rng.next() as u8),
        }
    }
    d
}

/// The seeds of `target`: the generated ones plus any file on disk.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> =
        crate::vectors::fuzz_seeds().into_iter().filter(|(t, _, _)| *t == target).map(|(_, _, b)| b).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let b = std::fs::read(&p).expect("read seed");
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

/// The committed fuzzing corpus of `target` (`fuzz/corpus/<target>/`,
/// minimized with `cargo fuzz cmin` after each campaign): inputs that
/// reached new code under the fuzzer, crash regressions included.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).expect("read corpus file")).collect()
}

/// Runs `f` on `input`, turning a panic into a failure that shows the input.
fn check_one(target: &str, f: fn(&[u8]), input: &[u8]) {
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(input))) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{target} failed on input {}: {msg}", hex::encode(input));
    }
}

/// Feeds one target its seeds, random inputs and mutated seeds.
fn check_target(target: &str, f: fn(&[u8])) {
    let seeds = seeds(target);
    // One stream per target, so adding a target leaves the others' inputs alone.
    let mut rng = Rng(u64::from_le_bytes(*blake3::hash(target.as_bytes()).as_bytes().first_chunk().expect("32 bytes")));
    for s in &seeds {
        check_one(target, f, s);
        // Every truncation of every seed.
        for n in 0..s.len() {
            check_one(target, f, &s[..n]);
        }
    }
    for input in corpus(target) {
        check_one(target, f, &input);
    }
    for _ in 0..N_RANDOM {
        let n = rng.below(300);
        let mut input = rng.bytes(n);
        // Often keep a seed's first bytes, so the input gets past the magic.
        if rng.below(2) == 0 {
            let s = &seeds[rng.below(seeds.len())];
            let keep = rng.below(s.len().min(16) + 1);
            input.splice(0..0, s[..keep].iter().copied());
        }
        check_one(target, f, &input);
    }
    for _ in 0..N_MUTATED {
        let s = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, s, other);
        check_one(target, f, &input);
    }
}

#[test]
fn decode_config() {
    check_target(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn decode_keyslot() {
    check_target(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn decode_keyring() {
    check_target(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn decode_sealed() {
    check_target(TARGETS[3].0, TARGETS[3].1);
}

#[test]
fn decode_pack() {
    check_target(TARGETS[4].0, TARGETS[4].1);
}

#[test]
fn decode_index() {
    check_target(TARGETS[5].0, TARGETS[5].1);
}

#[test]
fn decode_snapshot() {
    check_target(TARGETS[6].0, TARGETS[6].1);
}

#[test]
fn decode_tree() {
    check_target(TARGETS[7].0, TARGETS[7].1);
}

#[test]
fn decode_blob() {
    check_target(TARGETS[8].0, TARGETS[8].1);
}

#[test]
fn decode_audit() {
    check_target(TARGETS[9].0, TARGETS[9].1);
}

#[test]
fn decode_id_filter() {
    check_target(TARGETS[11].0, TARGETS[11].1);
}

/// Every fuzz target in fuzz/ has a smoke test here, and the reverse.
#[test]
fn every_fuzz_target_is_smoked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".rs")).map(str::to_string))
        .collect();
    on_disk.sort();
    let mut here: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    here.sort();
    assert_eq!(on_disk, here);
}

#[test]
fn decode_handoff() {
    check_target(TARGETS[12].0, TARGETS[12].1);
}

#[test]
fn decode_key_cache() {
    check_target(TARGETS[13].0, TARGETS[13].1);
}

#[test]
fn decode_lock_names() {
    check_target(TARGETS[14].0, TARGETS[14].1);
}

#[test]
fn decode_tombstone() {
    check_target(TARGETS[15].0, TARGETS[15].1);
}

#[test]
fn parse_s3_versions() {
    check_target(TARGETS[16].0, TARGETS[16].1);
}

#[test]
fn decode_put_only_bundle() {
    check_target(TARGETS[17].0, TARGETS[17].1);
}

#[test]
fn decode_drop_keyring() {
    check_target(TARGETS[18].0, TARGETS[18].1);
}

#[test]
fn decode_dedup_section() {
    check_target(TARGETS[19].0, TARGETS[19].1);
}
