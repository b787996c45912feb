//! Content-defined chunking: FastCDC (2020) with a keyed gear table.
//!
//! Owns: cut-point search over a buffer or a reader. Must not: hash,
//! compress, or know about packs.
//!
//! The `fastcdc` crate's own seed only XORs one 64-bit word into its fixed
//! gear table, which leaves boundaries largely predictable. We instead fill
//! the whole 256-entry table from the tenant key (see `crypto`) and call the
//! crate's `cut_gear` with it, so cut points depend on the key.

use std::io::Read;

use bytes::Bytes;
use fastcdc::v2020;

/// Errors of the chunker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Sizes outside what FastCDC supports, or not ordered min <= avg <= max.
    #[error("invalid chunk sizes min {min} / avg {avg} / max {max}: need {lo} <= min <= avg <= max <= {hi}, avg a power of two")]
    BadSizes {
        /// Minimum.
        min: u32,
        /// Average.
        avg: u32,
        /// Maximum.
        max: u32,
        /// Lowest allowed.
        lo: u32,
        /// Highest allowed.
        hi: u32,
    },
    /// Reading the source failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// Chunk size parameters, stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkSizes {
    /// Smallest chunk, bytes.
    pub min: u32,
    /// Target average, bytes (a power of two).
    pub avg: u32,
    /// Largest chunk, bytes.
    pub max: u32,
}

impl Default for ChunkSizes {
    /// 64 KiB / 128 KiB / 512 KiB: the smallest repositories on the
    /// benchmark series (docs/BENCHMARKS.md, Why the defaults).
    fn default() -> Self {
        Self { min: 64 * 1024, avg: 128 * 1024, max: 512 * 1024 }
    }
}

impl ChunkSizes {
    /// Checks the sizes against FastCDC's limits (it asserts on them).
    pub fn validate(&self) -> Result<(), Error> {
        // u32 to usize is lossless on every target strongroom builds for.
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && self.min <= self.avg
            && self.avg <= self.max
            && self.avg.is_power_of_two();
        if ok {
            Ok(())
        } else {
            Err(Error::BadSizes {
                min: self.min,
                avg: self.avg,
                max: self.max,
                lo: CHUNK_MIN_BYTES_LIMIT,
                hi: CHUNK_MAX_BYTES_LIMIT,
            })
        }
    }
}

/// A keyed FastCDC chunker.
pub struct Chunker {
    sizes: ChunkSizes,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

/// FastCDC's smallest minimum and largest maximum chunk size
/// (`v2020::MINIMUM_MIN`, `v2020::MAXIMUM_MAX`), as the sizes' type.
const CHUNK_MIN_BYTES_LIMIT: u32 = 64;
const CHUNK_MAX_BYTES_LIMIT: u32 = 16_777_216;
const _: () = assert!(
    CHUNK_MIN_BYTES_LIMIT as usize == v2020::MINIMUM_MIN && CHUNK_MAX_BYTES_LIMIT as usize == v2020::MAXIMUM_MAX
);

/// Normalization level 1, the crate's default: fewer chunks far from `avg`.
const NORMALIZATION_BITS: u32 = 1;

impl Chunker {
    /// Builds a chunker over a 256-word keyed gear table.
    pub fn new(sizes: ChunkSizes, gear: &[u64; 256]) -> Result<Self, Error> {
        sizes.validate()?;
        // `avg` is a power of two (validated): its log2 is exact, the
        // value fastcdc's own constructor computes by rounding.
        let bits = sizes.avg.trailing_zeros();
        let mask_s = v2020::MASKS[(bits + NORMALIZATION_BITS) as usize];
        let mask_l = v2020::MASKS[(bits - NORMALIZATION_BITS) as usize];
        let gear = Box::new(*gear);
        let mut gear_ls = Box::new([0u64; 256]);
        for (o, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *o = g << 1;
        }
        Ok(Self { sizes, gear, gear_ls, mask_s, mask_l })
    }

    /// The sizes in use.
    pub fn sizes(&self) -> ChunkSizes {
        self.sizes
    }

    /// Length of the next chunk at the start of `buf`. When `buf` is shorter
    /// than `max` it must hold the rest of the input (end of stream).
    pub fn cut(&self, buf: &[u8]) -> usize {
        let (_, n) = v2020::cut_gear(
            buf,
            self.sizes.min as usize,
            self.sizes.avg as usize,
            self.sizes.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        // cut_gear can return 0 only for an empty buffer; never loop on it.
        n.max(1).min(buf.len())
    }

    /// All chunk boundaries of an in-memory buffer, as (offset, len).
    pub fn chunks_of(&self, data: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let n = self.cut(&data[off..]);
            out.push((off, n));
            off += n;
        }
        out
    }

    /// Streams chunks out of a reader.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        ChunkStream { chunker: self, reader, buf: Bytes::new(), eof: false }
    }
}

/// Iterator of chunks read from a `Read`; each chunk is an owned `Bytes`
/// split off the read buffer without copying.
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    buf: Bytes,
    eof: bool,
}

/// The read window of a [`ChunkStream`]: reads fill windows of this size,
/// and a new window starts with what was left of the last one (less than
/// one chunk's maximum) copied to its front. Windows had grown from 64 KiB
/// by the size of what was left, so about every byte of a large file was
/// copied once more, and the new part zeroed before each read, per pipe
/// read of 64 KiB as well.
const WINDOW_BYTES: usize = 8 * 1024 * 1024;

impl<R: Read> ChunkStream<'_, R> {
    fn fill(&mut self) -> std::io::Result<()> {
        let want = self.chunker.sizes.max as usize;
        if self.eof || self.buf.len() >= want {
            return Ok(());
        }
        let mut next = Vec::with_capacity(WINDOW_BYTES.max(2 * want));
        next.extend_from_slice(&self.buf);
        let room = (next.capacity() - next.len()) as u64;
        // `read_to_end` reads into the spare capacity without zeroing it
        // first (for files and pipes), until the window is full or the
        // input ends; memory not read into is never touched.
        let read = (&mut self.reader).take(room).read_to_end(&mut next);
        if read.is_ok() && (next.len() as u64) < room + self.buf.len() as u64 {
            self.eof = true;
        }
        // After an error the stream ends: what was read before it is kept,
        // and chunked if the caller goes on.
        if read.is_err() {
            self.eof = true;
        }
        self.buf = Bytes::from(next);
        read.map(|_| ())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = Result<Bytes, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e.into()));
        }
        if self.buf.is_empty() {
            return None;
        }
        let n = self.chunker.cut(&self.buf);
        let chunk = self.buf.split_to(n);
        if self.eof && self.buf.is_empty() {
            // The last chunk would pin the whole read buffer (64 KiB or
            // more) while it waits in the pipeline; for many small files
            // that is most of the memory. Copy it out instead.
            return Some(Ok(Bytes::copy_from_slice(&chunk)));
        }
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkSizes {
        ChunkSizes { min: 256, avg: 1024, max: 4096 }
    }

    fn gear(seed: u8) -> [u64; 256] {
        let mut g = [0u64; 256];
        let mut x = blake3::Hasher::new();
        x.update(&[seed]);
        let mut xof = x.finalize_xof();
        for w in g.iter_mut() {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            *w = u64::from_le_bytes(b);
        }
        g
    }

    fn data(seed: u64, len: usize) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| r.gen()).collect()
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(ChunkSizes { min: 10, avg: 1024, max: 4096 }.validate().is_err());
        assert!(ChunkSizes { min: 2048, avg: 1024, max: 4096 }.validate().is_err());
        assert!(ChunkSizes { min: 256, avg: 1000, max: 4096 }.validate().is_err());
        assert!(Chunker::new(ChunkSizes { min: 256, avg: 1024, max: u32::MAX }, &gear(0)).is_err());
    }

    #[test]
    fn different_keys_cut_differently() {
        let d = data(1, 200_000);
        let a = Chunker::new(small(), &gear(1)).unwrap().chunks_of(&d);
        let b = Chunker::new(small(), &gear(2)).unwrap().chunks_of(&d);
        assert_ne!(a, b);
    }

    #[test]
    fn a_stream_longer_than_its_window_cuts_as_the_whole_buffer_does() {
        // Three windows and a part of a fourth, read 64 KiB at a time (a
        // pipe), with an interrupted read now and then.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let d: Vec<u8> = (0..(3 * WINDOW_BYTES + 1_234_567) / 8)
            .flat_map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Runs of zeros now and then, so some chunks are cut at the maximum.
                if i % 400_000 < 200_000 {
                    [0u8; 8]
                } else {
                    x.to_le_bytes()
                }
            })
            .collect();
        struct Pipe<'a>(&'a [u8], usize);
        impl Read for Pipe<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                self.1 += 1;
                if self.1.is_multiple_of(7) {
                    return Err(std::io::ErrorKind::Interrupted.into());
                }
                let n = self.0.len().min(64 * 1024).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let c = Chunker::new(ChunkSizes::default(), &gear(4)).unwrap();
        let cuts = c.chunks_of(&d);
        assert!(cuts.iter().any(|(_, n)| *n == ChunkSizes::default().max as usize));
        let streamed: Vec<Bytes> = c.stream(Pipe(&d, 0)).collect::<Result<_, _>>().unwrap();
        assert_eq!(streamed.len(), cuts.len());
        for (chunk, (off, n)) in streamed.iter().zip(&cuts) {
            assert!(chunk[..] == d[*off..off + n], "chunk at {off}");
        }
        // A read error ends the stream with that error, after the chunks
        // of what was read before it.
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk gone"));
                }
                let n = self.0.len().min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let got: Vec<Result<Bytes, Error>> = c.stream(Failing(&d[..WINDOW_BYTES + 5])).collect();
        assert!(got.iter().any(|r| r.is_err()));
        let ok: usize = got.iter().filter_map(|r| r.as_ref().ok()).map(|b| b.len()).sum();
        assert!(ok <= WINDOW_BYTES + 5);
    }

    proptest! {
        #[test]
        fn stream_matches_buffer_and_concatenates(seed in any::<u64>(), len in 0usize..40_000, step in 1usize..5000) {
            let d = data(seed, len);
            let c = Chunker::new(small(), &gear(3)).unwrap();
            let cuts = c.chunks_of(&d);
            // A reader that returns at most `step` bytes per call.
            struct Slow<'a>(&'a [u8], usize);
            impl Read for Slow<'_> {
                fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.0.len().min(self.1).min(out.len());
                    out[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let streamed: Vec<Bytes> = c.stream(Slow(&d, step)).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(streamed.len(), cuts.len());
            let mut joined = Vec::new();
            for (i, (chunk, (off, n))) in streamed.iter().zip(&cuts).enumerate() {
                prop_assert_eq!(&chunk[..], &d[*off..off + n]);
                prop_assert!(chunk.len() <= 4096);
                if i + 1 < cuts.len() { prop_assert!(chunk.len() >= 256); }
                joined.extend_from_slice(chunk);
            }
            prop_assert_eq!(joined, d);
        }
    }
}
