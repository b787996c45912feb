//! The packer: blobs into packs. New data blobs are spread at random over
//! a few open data packs, trees go into their own pack; a pack that
//! reaches its target size is finished and sent to the uploader, and the
//! last packs of a backup are padded.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng;
use rayon::prelude::*;

use crate::codec::pack::BlobKind;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::pack::{FinishedPack, PackWriter};
use crate::repo::Repo;

/// Open data packs that blobs are spread over at random, so a pack's
/// content does not follow file order.
const OPEN_DATA_PACKS: usize = 2;

/// The open packs of a backup, and the channel to the uploader.
pub(super) struct Packer<'a> {
    repo: &'a Repo,
    tx: tokio::sync::mpsc::Sender<FinishedPack>,
    data: Vec<PackWriter>,
    tree: PackWriter,
    target: usize,
    generation: u32,
    /// Data packs sent so far (see [`FIRST_PACK_BYTES`]).
    sent: u32,
    /// The reader has read everything (see [`FIRST_PACK_BYTES`]).
    read_all: &'a AtomicBool,
}

/// The first two data packs of a backup close at this size, the next two
/// at twice that, and so on up to the repository's pack target. A small
/// backup then uploads packs while it still reads and compresses, instead
/// of finishing, hashing and writing all of them at the end, when nothing
/// else is left for the cores to do (a source tree of 86 MB ended with
/// 24 MB of packs written after the last chunk). Once the reader has
/// read everything, what is left to seal is the queued batches, and data
/// packs close at this size again: they are written while the last
/// batches are sealed, instead of after.
const FIRST_PACK_BYTES: usize = 2 * 1024 * 1024;

/// The data packs a backup finishes at its end are padded to at least
/// this size, and every pack it finishes at its end to a Padmé length
/// (`PackWriter::finish_padded`). They are the only packs below the pack
/// target, and a backup that adds one small file would otherwise store a
/// data pack whose length gives that file's compressed size (to its
/// Padmé bucket); now it looks like that of any backup that added less
/// than this. It costs at most this much for a backup that adds a little
/// (usually one last data pack), a Padmé rounding (at most 3% of a pack
/// of 1 MiB or more) for the others, and nothing for a backup that adds
/// nothing (it writes no pack). The last tree pack is not given a
/// minimum: its length tells of directories, not of file contents.
const LAST_DATA_PACK_MIN_BYTES: usize = 64 * 1024;

impl<'a> Packer<'a> {
    /// Packs for `repo` that go to the uploader through `tx`; `read_all`
    /// is set by the reader once it has read everything.
    pub(super) fn new(
        repo: &'a Repo,
        tx: tokio::sync::mpsc::Sender<FinishedPack>,
        read_all: &'a AtomicBool,
    ) -> Result<Self> {
        Ok(Packer {
            repo,
            tx,
            data: (0..OPEN_DATA_PACKS).map(|_| PackWriter::new(BlobKind::Data)).collect(),
            tree: PackWriter::new(BlobKind::Tree),
            target: repo.config().pack_target_bytes as usize,
            generation: repo.data_key()?.generation,
            sent: 0,
            read_all,
        })
    }

    /// Adds a sealed blob (`raw_len`: its plaintext length); sends the
    /// pack it fills.
    pub(super) fn add(&mut self, kind: BlobKind, id: BlobId, raw_len: u32, sealed: Vec<u8>) -> Result<()> {
        let target = match kind {
            BlobKind::Tree => self.target,
            BlobKind::Data if self.read_all.load(Ordering::Relaxed) => self.target.min(FIRST_PACK_BYTES),
            BlobKind::Data => self.target.min(FIRST_PACK_BYTES << (self.sent / 2).min(16)),
        };
        let w = match kind {
            BlobKind::Tree => &mut self.tree,
            BlobKind::Data => {
                let i = rand::thread_rng().gen_range(0..self.data.len());
                &mut self.data[i]
            }
        };
        w.add(id, raw_len, sealed);
        if w.size() >= target {
            let full = std::mem::replace(w, PackWriter::new(kind));
            if kind == BlobKind::Data {
                self.sent += 1;
            }
            self.send(full)?;
        }
        Ok(())
    }

    fn send(&mut self, w: PackWriter) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let dk = self.repo.data_key()?;
        let p = w.finish(self.generation, &dk.key);
        self.send_finished(p)
    }

    fn send_finished(&self, p: FinishedPack) -> Result<()> {
        // The uploader closes the channel only when it fails, and the
        // backup then reports its error, not this one.
        self.tx.blocking_send(p).map_err(|_| Error::Internal("the upload thread stopped taking packs".into()))
    }

    /// Finishes the open packs (at once: nothing else is left to do on
    /// the cores) and sends them. The open data packs become one where
    /// they fit in the pack target together, and these last packs, the
    /// only ones below the target, are padded to a Padmé length, data
    /// packs to at least [`LAST_DATA_PACK_MIN_BYTES`].
    pub(super) fn flush(mut self) -> Result<()> {
        let mut open: Vec<PackWriter> = Vec::new();
        for w in std::mem::take(&mut self.data) {
            match open.last_mut() {
                Some(last) if last.size() + w.size() <= self.target => last.append(w),
                _ => open.push(w),
            }
        }
        open.push(std::mem::replace(&mut self.tree, PackWriter::new(BlobKind::Tree)));
        open.retain(|w| !w.is_empty());
        let dk = self.repo.data_key()?;
        let generation = self.generation;
        let finish = |w: PackWriter| {
            let min_len = if w.kind() == BlobKind::Data { LAST_DATA_PACK_MIN_BYTES } else { 0 };
            w.finish_padded(generation, &dk.key, min_len)
        };
        // One pack (an unchanged tree's, often) needs no pool.
        let finished: Vec<FinishedPack> = match open.len() {
            0 | 1 => open.into_iter().map(finish).collect(),
            _ => open.into_par_iter().map(finish).collect(),
        };
        finished.into_iter().try_for_each(|p| self.send_finished(p))
    }
}
