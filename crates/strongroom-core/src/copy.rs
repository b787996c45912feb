//! `copy`: replicate snapshots of one tenant into another repository.
//!
//! Owns: choosing what the target lacks, moving it, and writing the
//! target's snapshot records. Must not: chunk files again.
//!
//! Blob ids are keyed per tenant. When both tenants share the master key
//! (`init --copy-keys-from`), ids are the same on both sides: a data blob
//! the target has is skipped unread, and a source pack whose blobs are all
//! needed moves byte for byte (its hash is checked first). Otherwise each
//! needed blob is read (and so verified), its plaintext hashed under the
//! target's id key, sealed with the target's data key and packed anew;
//! trees are rewritten with the new ids, bottom up.
//!
//! Commit order on the target is a backup's: packs → index delta → snapshot
//! record (with `copied_from`). An interrupted copy leaves only packs and
//! index deltas, which a rerun reuses (their blobs are in the target's
//! catalog), so copy is resumable; a snapshot whose id is already some
//! target record's `copied_from` is skipped, so it is idempotent.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::blob::{self, Compression};
use crate::codec::index::PackEntry;
use crate::codec::pack::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::pack::PackWriter;
use crate::repo::Repo;
use crate::snapshot::{Rewritten, Snapshot};
use crate::store::{Kind, Store};

/// Packs stored between two index deltas (as backup).
const INDEX_EVERY: usize = 16;

/// What a copy did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CopySummary {
    /// Source snapshots considered.
    pub snapshots_considered: u64,
    /// Snapshots written to the target, each with its source and target id.
    pub copied: Vec<Rewritten>,
    /// Source snapshots the target already had.
    pub skipped: Vec<String>,
    /// Both tenants share the master key (packs can move as they are).
    pub shared_keys: bool,
    /// Source packs copied byte for byte.
    pub packs_copied: u64,
    /// Blobs read, verified and sealed anew for the target.
    pub blobs_resealed: u64,
    /// Blob references the target could already serve.
    pub blobs_present: u64,
    /// Bytes written to the target store (packs, index deltas, snapshots).
    pub bytes_written: u64,
}

/// Copies `snapshots` of `src` into `dst` (same tenant name or not),
/// skipping those already there. Callers hold locks on both.
pub async fn run(src: &Repo, dst: &Repo, snapshots: &[Snapshot]) -> Result<CopySummary> {
    let shared_keys = same_keys(src, dst);
    let mut summary = CopySummary { shared_keys, ..Default::default() };
    let present: HashSet<String> = dst.snapshots()?.into_iter().filter_map(|s| s.record.copied_from).collect();
    let mut present_same: HashSet<(String, String, Vec<String>, String)> = HashSet::new();
    if shared_keys {
        for s in dst.snapshots()? {
            present_same.insert((s.record.tree.to_hex(), s.record.time.clone(), s.record.paths, s.record.hostname));
        }
    }
    for snap in snapshots {
        summary.snapshots_considered += 1;
        let id = snap.id.to_hex();
        let r = &snap.record;
        let same = (r.tree.to_hex(), r.time.clone(), r.paths.clone(), r.hostname.clone());
        if present.contains(&id) || (shared_keys && present_same.contains(&same)) {
            summary.skipped.push(id);
            continue;
        }
        let mut c = Copier::new(src, dst, shared_keys);
        let root = c.tree(r.tree).await?;
        c.finish().await?;
        let mut record = r.clone();
        record.tree = root;
        record.copied_from = Some(id.clone());
        let new_id = dst.save_snapshot(&record).await?;
        summary.packs_copied += c.packs_copied;
        summary.blobs_resealed += c.blobs_resealed;
        summary.blobs_present += c.blobs_present;
        summary.bytes_written += c.bytes_written + record_size(dst, &new_id).await;
        summary.copied.push(Rewritten { from: id, to: new_id.to_hex() });
    }
    Ok(summary)
}

/// True when both tenants derive the same id key (and so share the master
/// key): probed with a fixed plaintext, no key bytes leave `crypto`.
pub fn same_keys(a: &Repo, b: &Repo) -> bool {
    const PROBE: &[u8] = b"strongroom copy: same tenant keys?";
    a.keys().blob_id(PROBE) == b.keys().blob_id(PROBE)
}

async fn record_size(dst: &Repo, id: &crate::id::SnapshotId) -> u64 {
    dst.store().size(&Store::path(dst.tenant(), Kind::Snapshots, &id.to_hex())).await.unwrap_or(0)
}

/// Moves what one snapshot needs.
struct Copier<'a> {
    src: &'a Repo,
    dst: &'a Repo,
    shared_keys: bool,
    compression: Compression,
    /// Source id → target id of trees (and, with own keys, data blobs)
    /// handled in this run: with own keys this grows with the snapshot's
    /// number of distinct blobs (64 bytes each plus map overhead).
    done: HashMap<BlobId, BlobId>,
    /// Shared keys only: data blobs the target lacks, by source pack.
    wanted: HashMap<PackId, HashSet<BlobId>>,
    data: PackWriter,
    trees: PackWriter,
    stored: Vec<PackEntry>,
    packs_copied: u64,
    blobs_resealed: u64,
    blobs_present: u64,
    bytes_written: u64,
}

impl<'a> Copier<'a> {
    fn new(src: &'a Repo, dst: &'a Repo, shared_keys: bool) -> Self {
        let level = dst.config().compression_level;
        Self {
            src,
            dst,
            shared_keys,
            compression: if level == 0 { Compression::Off } else { Compression::Zstd(level) },
            done: HashMap::new(),
            wanted: HashMap::new(),
            data: PackWriter::new(BlobKind::Data),
            trees: PackWriter::new(BlobKind::Tree),
            stored: Vec::new(),
            packs_copied: 0,
            blobs_resealed: 0,
            blobs_present: 0,
            bytes_written: 0,
        }
    }

    /// Copies a tree and everything below it; returns its target id.
    fn tree(&mut self, id: BlobId) -> Pin<Box<dyn Future<Output = Result<BlobId>> + Send + '_>> {
        Box::pin(async move {
            if let Some(d) = self.done.get(&id) {
                return Ok(*d);
            }
            let mut tree = self.src.load_tree(&id).await?;
            for node in tree.iter_mut() {
                match &mut node.kind {
                    crate::codec::tree::NodeKind::File { content } => {
                        for c in content.iter_mut() {
                            *c = self.data_blob(*c).await?;
                        }
                    }
                    crate::codec::tree::NodeKind::Dir { subtree } => *subtree = self.tree(*subtree).await?,
                    _ => {}
                }
            }
            let bytes = crate::codec::tree::encode(&tree);
            let new_id = self.dst.keys().blob_id(&bytes);
            self.put(BlobKind::Tree, new_id, &bytes).await?;
            self.done.insert(id, new_id);
            Ok(new_id)
        })
    }

    async fn data_blob(&mut self, id: BlobId) -> Result<BlobId> {
        if self.shared_keys {
            // Same ids on both sides: what the target has is not read, and
            // nothing is remembered for it (memory stays with what is
            // missing, not with the snapshot's size).
            if self.dst.catalog().lookup(&id)?.is_some() {
                self.blobs_present += 1;
            } else {
                let loc = self.src.locate(&id)?;
                self.wanted.entry(loc.pack).or_default().insert(id);
            }
            return Ok(id);
        }
        if let Some(d) = self.done.get(&id) {
            return Ok(*d);
        }
        let plain = self.src.read_blob(&id).await?;
        let new_id = self.dst.keys().blob_id(&plain);
        self.put(BlobKind::Data, new_id, &plain).await?;
        self.done.insert(id, new_id);
        Ok(new_id)
    }

    /// Seals a blob for the target unless it has it already.
    async fn put(&mut self, kind: BlobKind, id: BlobId, plain: &[u8]) -> Result<()> {
        if self.dst.catalog().lookup(&id)?.is_some() {
            self.blobs_present += 1;
            return Ok(());
        }
        let dk = self.dst.data_key()?;
        let raw_len = u32::try_from(plain.len()).map_err(|_| {
            Error::Internal(format!("blob {id}: {} bytes, more than the index can record", plain.len()))
        })?;
        let sealed = blob::seal(&dk.key, kind, &id, plain, self.compression);
        self.blobs_resealed += 1;
        let target = self.dst.config().pack_target_bytes as usize;
        let writer = if kind == BlobKind::Tree { &mut self.trees } else { &mut self.data };
        writer.add(id, raw_len, sealed);
        if writer.size() >= target {
            let full = std::mem::replace(writer, PackWriter::new(kind));
            self.save(full).await?;
        }
        Ok(())
    }

    async fn save(&mut self, w: PackWriter) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let dk = self.dst.data_key()?;
        let pack = w.finish(dk.generation, &dk.key);
        let entry = self.dst.save_pack(pack, dk.generation).await?;
        self.bytes_written += entry.length;
        self.stored.push(entry);
        if self.stored.len() >= INDEX_EVERY {
            self.index().await?;
        }
        Ok(())
    }

    async fn index(&mut self) -> Result<()> {
        if !self.stored.is_empty() {
            let (_, size) = self.dst.save_index(std::mem::take(&mut self.stored)).await?;
            self.bytes_written += size;
        }
        Ok(())
    }

    /// Moves the wanted data blobs (shared keys), flushes the open packs
    /// and writes the last index delta.
    async fn finish(&mut self) -> Result<()> {
        let wanted = std::mem::take(&mut self.wanted);
        for (pack, ids) in wanted {
            let info = self.src.catalog().pack(&pack)?;
            let whole = info.is_some_and(|i| i.n_blobs as usize == ids.len());
            if whole && self.copy_pack(&pack).await? {
                continue;
            }
            for id in ids {
                let plain = self.src.read_blob(&id).await?;
                self.put(BlobKind::Data, id, &plain).await?;
            }
        }
        let data = std::mem::replace(&mut self.data, PackWriter::new(BlobKind::Data));
        self.save(data).await?;
        let trees = std::mem::replace(&mut self.trees, PackWriter::new(BlobKind::Tree));
        self.save(trees).await?;
        self.index().await
    }

    /// Copies a source pack byte for byte when the target holds its data
    /// key; returns false (the caller re-seals) when it does not.
    async fn copy_pack(&mut self, pack: &PackId) -> Result<bool> {
        let src_path = Store::path(self.src.tenant(), Kind::Packs, &pack.to_hex());
        let bytes = self.src.store().get(&src_path).await?;
        if crate::crypto::object_hash(&bytes) != pack.0 {
            return Err(Error::Damaged { object: src_path.to_string(), why: "content does not match its name".into() });
        }
        let len = bytes.len() as u64;
        let damaged = |why: String| Error::Damaged { object: src_path.to_string(), why };
        let generation = crate::pack::key_generation(pack, &bytes).map_err(|e| damaged(e.to_string()))?;
        // The header opens with the target's keys only when the target
        // holds the very data key that sealed the pack.
        let blobs = match crate::pack::read_header(self.dst.keys(), pack, &bytes, len) {
            Ok(b) => b,
            Err(crate::pack::Error::UnknownKey { .. } | crate::pack::Error::Crypto { .. }) => return Ok(false),
            Err(e) => return Err(damaged(e.to_string())),
        };
        let dst_path = Store::path(self.dst.tenant(), Kind::Packs, &pack.to_hex());
        let stored = self.dst.store().create_stored_size(&dst_path, bytes).await?;
        if stored != len {
            return Err(Error::Damaged {
                object: dst_path.to_string(),
                why: format!("stored {stored} bytes of {len}"),
            });
        }
        self.packs_copied += 1;
        self.bytes_written += len;
        self.stored.push(PackEntry { id: *pack, length: len, key_generation: generation, blobs });
        if self.stored.len() >= INDEX_EVERY {
            self.index().await?;
        }
        Ok(true)
    }
}
