//! Golden test vectors of docs/FORMAT.md: they freeze the repository format.
//!
//! Each test rebuilds one family of objects from fixed keys, nonces and
//! inputs and compares the result with `tests/vectors/<name>.json`; the
//! spec quotes the same hex. A difference means the bytes written to stores
//! changed: that needs a new format version, not a new vector.
//!
//! Where a writer draws a random nonce, the vector is built with
//! `crypto::seal_with_nonce` from the documented layout, and the test
//! checks both that the real reader opens it and that the real writer
//! produces the same unsealed bytes.
//!
//! The same code writes the fuzz seeds in `fuzz/seeds/<target>/` (see
//! [`fuzz_seeds`]); `fuzz_seeds_are_current` checks them.
//!
//! To rewrite the vector files and seeds after an intended change, run
//! `STRONGROOM_BLESS=1 cargo test --test it vectors`, review the diff, and
//! update the hex quoted in docs/FORMAT.md.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use strongroom_core::blob::{self, Compression};
use strongroom_core::chunk::{ChunkSizes, Chunker};
use strongroom_core::codec::binding::{self as fbinding, Binding};
use strongroom_core::codec::config::{self, Config};
use strongroom_core::codec::index::{self, PackEntry};
use strongroom_core::codec::keyslot::{self, SlotKind};
use strongroom_core::codec::pack::{self as fpack, BlobKind, PackedBlob, Trailer};
use strongroom_core::codec::sealed;
use strongroom_core::codec::snapshot::{self as fsnap, SnapshotRecord, SnapshotSummary};
use strongroom_core::codec::tombstone::{self as ftomb, Action, Tombstone};
use strongroom_core::codec::tree::{self, Node, NodeKind, Xattr};
use strongroom_core::crypto::{self, DataKey, KdfParams, Key, TenantKeys};
use strongroom_core::fuzzing;
use strongroom_core::id::{BlobId, PackId};

/// The master key of every vector: 32 bytes of 0x01.
const MASTER: [u8; 32] = [0x01; 32];
/// The data key (generation 1) of every vector: 32 bytes of 0x03.
const DATA_KEY: [u8; 32] = [0x03; 32];
/// The tenant bound into sealed vectors.
const TENANT: &str = "acme";
/// The plaintext whose blob id is vectored.
const PLAINTEXT: &[u8] = b"strongroom test vector";

fn keys() -> TenantKeys {
    let mut k = TenantKeys::from_master(&Key::from_bytes(MASTER));
    k.add_data_key(DataKey { generation: 1, key: Key::from_bytes(DATA_KEY) });
    k
}

/// Nonce `n, n+1, …, n+11`: distinct, readable nonces for vectors.
fn nonce(n: u8) -> [u8; 12] {
    std::array::from_fn(|i| n.wrapping_add(i as u8))
}

fn bless() -> bool {
    std::env::var_os("STRONGROOM_BLESS").is_some_and(|v| v == "1")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `actual` with `tests/vectors/<name>.json`, or writes it there
/// when blessing.
fn check_vector(name: &str, actual: Value) {
    let path = root().join("tests/vectors").join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&actual).expect("JSON values serialize") + "\n";
    if bless() {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create tests/vectors");
        std::fs::write(&path, text).expect("write vector");
        return;
    }
    let stored = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with STRONGROOM_BLESS=1 to create it", path.display()));
    let stored: Value = serde_json::from_str(&stored).expect("vector file is JSON");
    assert!(
        stored == actual,
        "vector {name} drifted from {}: the format changed.\nstored:   {stored}\ncomputed: {actual}\n\
         If intended, bump the format version (docs/FORMAT.md) and rerun with STRONGROOM_BLESS=1",
        path.display()
    );
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

// Layout helpers: each rebuilds one documented layout by hand, so the
// vectors check the writers against the spec rather than against themselves.

/// The sealed plaintext of a blob stored raw: `flag 0 | len u32 | data |
/// zero padding` to the Padmé length.
fn raw_framing(data: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(data.len() as u32).to_le_bytes());
    f.extend_from_slice(data);
    f.resize(blob::padme(f.len() as u64) as usize, 0);
    f
}

/// Blob associated data: `kind u8 | blob id (32)`.
fn blob_aad(kind: BlobKind, id: &BlobId) -> Vec<u8> {
    let mut a = vec![kind.to_byte()];
    a.extend_from_slice(&id.0);
    a
}

/// Envelope header: `magic (4) | version 1 | key generation u32`.
fn envelope_header(magic: &[u8; 4], generation: u32) -> Vec<u8> {
    let mut hdr = magic.to_vec();
    hdr.push(1);
    hdr.extend_from_slice(&generation.to_le_bytes());
    hdr
}

/// A sealed object: header, then the payload sealed with the header and
/// the tenant name as associated data.
fn envelope(magic: &[u8; 4], generation: u32, key: &Key, tenant: &str, n: u8, payload: &[u8]) -> Vec<u8> {
    let mut obj = envelope_header(magic, generation);
    let mut aad = obj.clone();
    aad.extend_from_slice(tenant.as_bytes());
    obj.extend_from_slice(&crypto::seal_with_nonce(key, &nonce(n), &aad, payload));
    obj
}

/// Key-slot header: `"SRKS" | 1 | kind u8 | created i64 | label lp | params lp`.
fn keyslot_header(kind: &SlotKind, created: i64, label: &str) -> Vec<u8> {
    let mut hdr = b"SRKS".to_vec();
    hdr.push(1);
    let params = match kind {
        SlotKind::Password { params, salt } => {
            hdr.push(1);
            let mut p = Vec::new();
            p.extend_from_slice(&params.memory_kib.to_le_bytes());
            p.extend_from_slice(&params.iterations.to_le_bytes());
            p.extend_from_slice(&params.parallelism.to_le_bytes());
            p.extend_from_slice(salt);
            p
        }
        SlotKind::KeyFile => {
            hdr.push(2);
            Vec::new()
        }
        SlotKind::Escrow { ephemeral, recipient } => {
            hdr.push(3);
            [&ephemeral[..], &recipient[..]].concat()
        }
        SlotKind::PutOnly { password } => {
            hdr.push(4);
            match password {
                Some((params, salt)) => {
                    let mut p = vec![1u8];
                    p.extend_from_slice(&params.memory_kib.to_le_bytes());
                    p.extend_from_slice(&params.iterations.to_le_bytes());
                    p.extend_from_slice(&params.parallelism.to_le_bytes());
                    p.extend_from_slice(salt);
                    p
                }
                None => vec![2u8],
            }
        }
    };
    hdr.extend_from_slice(&created.to_le_bytes());
    hdr.extend_from_slice(&(label.len() as u32).to_le_bytes());
    hdr.extend_from_slice(label.as_bytes());
    hdr.extend_from_slice(&(params.len() as u32).to_le_bytes());
    hdr.extend_from_slice(&params);
    hdr
}

/// A key slot wrapping `master` (raw bytes) with a fixed nonce.
fn keyslot_bytes(master: &[u8; 32], kind: &SlotKind, created: i64, label: &str, secret: &[u8], n: u8) -> Vec<u8> {
    let kek = keyslot::kek(kind, secret).expect("cheap KDF parameters are valid");
    let mut slot = keyslot_header(kind, created, label);
    let sealed = crypto::seal_with_nonce(&kek, &nonce(n), &slot, master);
    slot.extend_from_slice(&sealed);
    slot
}

fn cheap_password_slot() -> SlotKind {
    SlotKind::Password { params: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, salt: [0x05; 16] }
}

/// 1 MiB of chunker input: the BLAKE3 XOF of a fixed string.
fn chunker_input() -> Vec<u8> {
    let mut data = vec![0u8; 1 << 20];
    blake3::Hasher::new().update(b"strongroom test vector: chunker input").finalize_xof().fill(&mut data);
    data
}

/// A version 1 config: the frozen vector every later reader must accept
/// (repositories made before binding records exist).
fn test_config() -> Config {
    Config {
        format: config::CONFIG_FORMAT.to_string(),
        version: 1,
        id: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
        created: "2026-11-25T12:00:00Z".into(),
        // The vector's sizes (the default of the first repositories), not whatever
        // the default is now.
        chunk_sizes: ChunkSizes { min: 128 * 1024, avg: 256 * 1024, max: 1024 * 1024 },
        pack_target_bytes: 16 * 1024 * 1024,
        compression_level: 3,
        object_lock: None,
    }
}

fn node(name: &str, kind: NodeKind, mode: u32, size: u64) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        uid: 1000,
        gid: 1000,
        mtime: 1_764_072_000,
        mtime_nsec: 123_456_789,
        ctime: 1_764_072_001,
        ctime_nsec: 0,
        inode: 42,
        device: 2049,
        links: 1,
        size,
        xattrs: None,
    }
}

/// A directory with one node of every kind, sorted by name.
fn test_tree(keys: &TenantKeys) -> Vec<Node> {
    vec![
        node("block", NodeKind::BlockDevice { rdev: 0x0801 }, 0o060660, 0),
        node("char", NodeKind::CharDevice { rdev: 0x0103 }, 0o020666, 0),
        node("dir", NodeKind::Dir { subtree: keys.blob_id(b"subtree") }, 0o040755, 0),
        node("fifo", NodeKind::Fifo, 0o010644, 0),
        node(
            "file.txt",
            NodeKind::File { content: vec![keys.blob_id(b"chunk 1"), keys.blob_id(b"chunk 2")] },
            0o100644,
            14,
        ),
        node("link", NodeKind::Symlink { target: b"file.txt".to_vec() }, 0o120777, 8),
        node("sock", NodeKind::Socket, 0o140755, 0),
    ]
}

fn test_index(keys: &TenantKeys) -> Vec<PackEntry> {
    vec![PackEntry {
        id: PackId([0xaa; 32]),
        length: 4096,
        key_generation: 1,
        blobs: vec![
            PackedBlob { kind: BlobKind::Data, id: keys.blob_id(b"chunk 1"), offset: 0, length: 100, raw_len: 7 },
            PackedBlob { kind: BlobKind::Data, id: keys.blob_id(b"chunk 2"), offset: 100, length: 200, raw_len: 7 },
        ],
    }]
}

fn test_snapshot(keys: &TenantKeys) -> SnapshotRecord {
    SnapshotRecord {
        version: fsnap::SNAPSHOT_VERSION,
        time: "2026-11-25T12:00:00Z".into(),
        tree: keys.blob_id(&tree_v1_bytes()),
        paths: vec!["/home/alice".into()],
        hostname: "host-a".into(),
        username: "alice".into(),
        tags: vec!["daily".into()],
        parent: None,
        program_version: "0.1.0".into(),
        summary: SnapshotSummary {
            files_new: 3,
            files_changed: 1,
            files_unmodified: 2,
            dirs: 1,
            logical_bytes: 14,
            read_bytes: 14,
            added_bytes: 1000,
            blobs_new: 2,
            duration_seconds: 1.5,
        },
        copied_from: None,
        job: None,
    }
}

/// Master key → blob ids and the gear table.
#[test]
fn key_hierarchy() {
    let keys = keys();
    let gear: Vec<String> = keys.gear()[..8].iter().map(|w| format!("{w:016x}")).collect();
    // Same master, same ids; another master, other ids.
    assert_eq!(TenantKeys::from_master(&Key::from_bytes(MASTER)).blob_id(PLAINTEXT), keys.blob_id(PLAINTEXT));
    assert_ne!(TenantKeys::from_master(&Key::from_bytes([2; 32])).blob_id(PLAINTEXT), keys.blob_id(PLAINTEXT));
    check_vector(
        "keys",
        json!({
            "master_key": h(&MASTER),
            "plaintext_utf8": std::str::from_utf8(PLAINTEXT).expect("ASCII"),
            "blob_id": keys.blob_id(PLAINTEXT).to_hex(),
            "blob_id_of_empty": keys.blob_id(b"").to_hex(),
            "gear_words_0_to_7": gear,
        }),
    );
}

/// Chunk boundaries of 1 MiB of seeded input, 16 KiB / 64 KiB / 256 KiB.
#[test]
fn chunk_boundaries() {
    let keys = keys();
    let sizes = ChunkSizes { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
    let data = chunker_input();
    let cuts = Chunker::new(sizes, keys.gear()).expect("valid sizes").chunks_of(&data);
    assert_eq!(cuts.iter().map(|(_, n)| n).sum::<usize>(), data.len());
    check_vector(
        "chunks",
        json!({
            "master_key": h(&MASTER),
            "input": "1048576 bytes of BLAKE3 XOF output of \"strongroom test vector: chunker input\"",
            "input_blake3": h(&crypto::object_hash(&data)),
            "sizes": {"min": sizes.min, "avg": sizes.avg, "max": sizes.max},
            "chunks_offset_len": cuts.iter().map(|(o, n)| json!([o, n])).collect::<Vec<_>>(),
        }),
    );
}

/// AES-256-GCM-SIV with a fixed key and nonce, and a sealed blob.
#[test]
fn seal_and_blob() {
    let key = Key::from_bytes([0x02; 32]);
    let sealed = crypto::seal_with_nonce(&key, &nonce(0), b"strongroom aad", b"strongroom sealed plaintext");
    assert_eq!(
        crypto::open(&key, b"strongroom aad", &sealed, String::new).expect("opens"),
        b"strongroom sealed plaintext"
    );

    let keys = keys();
    let dk = Key::from_bytes(DATA_KEY);
    let id = keys.blob_id(PLAINTEXT);
    let framing = raw_framing(PLAINTEXT);
    let aad = blob_aad(BlobKind::Data, &id);
    let stored = crypto::seal_with_nonce(&dk, &nonce(0x10), &aad, &framing);
    // The reader opens the vector; the writer produces the same framing.
    let raw_len = PLAINTEXT.len() as u32;
    assert_eq!(blob::open(&keys, &dk, BlobKind::Data, &id, &stored, raw_len).expect("opens"), PLAINTEXT);
    let written = blob::seal(&dk, BlobKind::Data, &id, PLAINTEXT, Compression::Off);
    assert_eq!(crypto::open(&dk, &aad, &written, String::new).expect("opens"), framing);
    assert!(blob::open(&keys, &dk, BlobKind::Tree, &id, &stored, raw_len).is_err());

    let padme: Vec<Value> = [0u64, 1, 9, 27, 100, 1000, 4097, 65_536, 1_000_000, 123_456_789]
        .iter()
        .map(|&n| json!([n, blob::padme(n)]))
        .collect();
    check_vector(
        "seal",
        json!({
            "key": h(&[0x02; 32]),
            "nonce": h(&nonce(0)),
            "aad_utf8": "strongroom aad",
            "plaintext_utf8": "strongroom sealed plaintext",
            "sealed": h(&sealed),
        }),
    );
    check_vector(
        "blob",
        json!({
            "master_key": h(&MASTER),
            "data_key": h(&DATA_KEY),
            "kind": "data",
            "plaintext_utf8": std::str::from_utf8(PLAINTEXT).expect("ASCII"),
            "blob_id": id.to_hex(),
            "framing": h(&framing),
            "aad": h(&aad),
            "nonce": h(&nonce(0x10)),
            "stored": h(&stored),
            "padme_len_padded": padme,
        }),
    );
}

/// A version 2 tree: one node of every kind, with extended attributes
/// recorded (a POSIX ACL and a user attribute on the file, a default ACL
/// on the directory, none on the others).
fn test_tree_v2(keys: &TenantKeys) -> Vec<Node> {
    let x = |name: &str, value: &[u8]| Xattr { name: name.as_bytes().to_vec(), value: value.to_vec() };
    // user::rw-, group::r--, other::r-- (the POSIX ACL xattr layout:
    // version 2, then tag u16, perm u16, id u32 per entry).
    let acl = hex::decode("0200000001000600ffffffff04000400ffffffff20000400ffffffff").expect("hex");
    let mut t = test_tree(keys);
    for n in &mut t {
        n.xattrs = Some(match n.name.as_slice() {
            b"file.txt" => vec![x("system.posix_acl_access", &acl), x("user.comment", b"hello")],
            b"dir" => vec![x("system.posix_acl_default", &acl)],
            _ => Vec::new(),
        });
    }
    t
}

/// The version 1 tree vector's bytes (one node of every kind, no
/// extended attributes), as stored.
fn tree_v1_bytes() -> Vec<u8> {
    let path = root().join("tests/vectors/tree_v1.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("vector file is JSON");
    hex::decode(v["tree"].as_str().expect("a tree field")).expect("hex")
}

/// A version 2 tree with one node of every kind and extended attributes.
#[test]
fn tree_blob() {
    let keys = keys();
    assert_eq!(tree::VERSION, 2, "the writer's version moved: add its vector");
    let t = test_tree_v2(&keys);
    let bytes = tree::encode(&t);
    assert_eq!(tree::decode(&bytes), Ok(t));
    check_vector(
        "tree",
        json!({ "master_key": h(&MASTER), "tree": h(&bytes), "blob_id": keys.blob_id(&bytes).to_hex() }),
    );
}

/// A version 1 tree (no extended attributes) still decodes: its nodes
/// have none recorded, and it re-encodes as version 2.
#[test]
fn tree_blob_v1() {
    let keys = keys();
    let bytes = tree_v1_bytes();
    assert_eq!(bytes[4], 1);
    let t = tree::decode(&bytes).expect("the v1 vector decodes");
    assert_eq!(t, test_tree(&keys));
    assert!(t.iter().all(|n| n.xattrs.is_none()));
    assert_eq!(tree::decode(&tree::encode(&t)), Ok(t));
}

/// A whole pack of two data blobs, its header and trailer, and an index
/// delta payload and object.
#[test]
fn pack_and_index() {
    let keys = keys();
    let dk = Key::from_bytes(DATA_KEY);
    let mut body = Vec::new();
    let mut entries = Vec::new();
    for (i, plain) in [&b"hello, strongroom"[..], b"second blob"].into_iter().enumerate() {
        let id = keys.blob_id(plain);
        let stored =
            crypto::seal_with_nonce(&dk, &nonce(0x20 + i as u8), &blob_aad(BlobKind::Data, &id), &raw_framing(plain));
        entries.push(PackedBlob {
            kind: BlobKind::Data,
            id,
            offset: body.len() as u32,
            length: stored.len() as u32,
            raw_len: plain.len() as u32,
        });
        body.extend_from_slice(&stored);
    }
    let header = fpack::encode_header(&entries);
    let sealed_header_len = (header.len() + crypto::SEAL_OVERHEAD) as u32;
    let trailer = Trailer { header_len: sealed_header_len, key_generation: 1 };
    let sealed_header = crypto::seal_with_nonce(&dk, &nonce(0x30), &trailer.aad(), &header);
    let trailer_bytes = fpack::encode_trailer(&trailer);
    let mut pack = body.clone();
    pack.extend_from_slice(&sealed_header);
    pack.extend_from_slice(&trailer_bytes);
    let pack_id = PackId(crypto::object_hash(&pack));
    // The reader finds both blobs and opens them.
    let read = strongroom_core::pack::read_header(&keys, &pack_id, &pack, pack.len() as u64).expect("header opens");
    assert_eq!(read, entries);
    for e in &read {
        let s = &pack[e.offset as usize..(e.offset + e.length) as usize];
        blob::open(&keys, &dk, e.kind, &e.id, s, e.raw_len).expect("blob opens");
    }
    assert_eq!(fpack::decode_trailer(&pack), Ok(trailer));

    let idx = test_index(&keys);
    let payload = index::encode(&idx);
    assert_eq!(index::decode(&payload), Ok(idx));
    let obj = envelope(sealed::INDEX_MAGIC, 1, &dk, TENANT, 0x40, &payload);
    let env = sealed::decode(&obj, sealed::INDEX_MAGIC, "index delta").expect("envelope parses");
    assert_eq!(env.open(&dk, TENANT, String::new).expect("opens"), payload);
    assert!(env.open(&dk, "other-tenant", String::new).is_err());
    // The writer's envelope header is the documented one.
    assert_eq!(
        sealed::seal(sealed::INDEX_MAGIC, 1, &dk, TENANT, &payload)[..9],
        envelope_header(sealed::INDEX_MAGIC, 1)
    );

    check_vector(
        "pack",
        json!({
            "master_key": h(&MASTER),
            "data_key": h(&DATA_KEY),
            "header_plaintext": h(&header),
            "trailer": h(&trailer_bytes),
            "pack": h(&pack),
            "pack_id": pack_id.to_hex(),
        }),
    );
    check_vector(
        "index",
        json!({
            "master_key": h(&MASTER),
            "data_key": h(&DATA_KEY),
            "tenant": TENANT,
            "payload": h(&payload),
            "object": h(&obj),
            "index_id": h(&crypto::object_hash(&obj)),
        }),
    );
}

/// A password key slot (cheap Argon2id) and a key-file slot.
#[test]
fn key_slots() {
    let keys = keys();
    let kind = cheap_password_slot();
    let slot = keyslot_bytes(&MASTER, &kind, 1_764_072_000, "default", b"correct horse battery staple", 0x50);
    let decoded = keyslot::decode(&slot).expect("slot decodes");
    assert_eq!(keyslot::encode(&decoded), slot);
    let master = keyslot::unwrap(&decoded, b"correct horse battery staple").expect("unwraps");
    assert_eq!(TenantKeys::from_master(&master).blob_id(PLAINTEXT), keys.blob_id(PLAINTEXT));
    assert!(keyslot::unwrap(&decoded, b"wrong").is_err());
    // The writer's header is the documented one.
    let header_len = slot.len() - 32 - crypto::SEAL_OVERHEAD;
    let written =
        keyslot::wrap(&master, kind, 1_764_072_000, "default", b"correct horse battery staple").expect("wraps");
    assert_eq!(written[..header_len], slot[..header_len]);

    let file_slot = keyslot_bytes(&MASTER, &SlotKind::KeyFile, 1_764_072_000, "key file", b"key file bytes", 0x51);
    let decoded = keyslot::decode(&file_slot).expect("slot decodes");
    assert_eq!(keyslot::encode(&decoded), file_slot);
    let master = keyslot::unwrap(&decoded, b"key file bytes").expect("unwraps");
    assert_eq!(TenantKeys::from_master(&master).blob_id(PLAINTEXT), keys.blob_id(PLAINTEXT));

    check_vector(
        "keyslot",
        json!({
            "master_key": h(&MASTER),
            "password_utf8": "correct horse battery staple",
            "argon2id": {"memory_kib": 64, "iterations": 1, "parallelism": 1, "salt": h(&[0x05; 16])},
            "created": 1_764_072_000,
            "password_slot": h(&slot),
            "key_file_bytes_utf8": "key file bytes",
            "key_file_slot": h(&file_slot),
        }),
    );
}

/// A key cache entry (a host file, never in a repository), rebuilt from
/// the documented layout and checked against the writer and the reader.
#[test]
fn key_cache_entry() {
    use strongroom_core::codec::key_cache::{self as kc, Binding};
    let slot = "0123456789abcdef0123456789abcdef";
    let (created, expires) = (1_764_072_000_i64, 1_764_072_000_i64 + 900);
    let (salt, nonce) = ([0x06; 32], [0x07; 12]);
    let (host, location, tenant) = (b"0123456789abcdef0123456789abcdef\0vector-host", "file:///srv/repo", "default");
    let secret = b"correct horse battery staple";
    let mut header = b"SRKC\x01".to_vec();
    header.extend_from_slice(&created.to_le_bytes());
    header.extend_from_slice(&expires.to_le_bytes());
    header.push(slot.len() as u8);
    header.extend_from_slice(slot.as_bytes());
    header.extend_from_slice(&salt);
    let mut kdf_input = salt.to_vec();
    kdf_input.extend_from_slice(&(host.len() as u64).to_le_bytes());
    kdf_input.extend_from_slice(host);
    kdf_input.extend_from_slice(&(secret.len() as u64).to_le_bytes());
    kdf_input.extend_from_slice(secret);
    let key_bytes = blake3::derive_key("strongroom key cache v1", &kdf_input);
    let key = Key::from_bytes(key_bytes);
    let mut aad = b"strongroom key cache v1".to_vec();
    for part in [location.as_bytes(), tenant.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
        aad.extend_from_slice(part);
    }
    aad.extend_from_slice(&header);
    let handoff = keyslot::encode_handoff(&Key::from_bytes(MASTER), slot).expect("encodes");
    let sealed = crypto::seal_with_nonce(&key, &nonce, &aad, &handoff);
    let mut entry = header.clone();
    entry.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    entry.extend_from_slice(&sealed);

    let at = Binding { host, location, tenant };
    let written = kc::seal_with(&Key::from_bytes(MASTER), slot, (created, expires), secret, at, salt, &nonce);
    assert_eq!(written.expect("seals"), entry);
    let decoded = kc::decode(&entry).expect("decodes");
    assert_eq!(kc::encode(&decoded), entry);
    let (master, opened_slot) = kc::open(&decoded, secret, at).expect("opens");
    assert!(master.is(&MASTER));
    assert_eq!(opened_slot, slot);
    assert!(kc::open(&decoded, b"wrong", at).is_err());

    check_vector(
        "key_cache",
        json!({
            "master_key": h(&MASTER),
            "slot": slot,
            "created": created,
            "expires": expires,
            "salt": h(&salt),
            "nonce": h(&nonce),
            "host_hex": h(host),
            "location": location,
            "tenant": tenant,
            "password_utf8": "correct horse battery staple",
            "sealing_key": h(&key_bytes),
            "entry": h(&entry),
        }),
    );
}

/// A keyring payload and the sealed keyring object (generation 0).
#[test]
fn keyring() {
    let keys = keys();
    let payload = sealed::encode_keyring(&[(1, &Key::from_bytes(DATA_KEY))]);
    let ring = sealed::decode_keyring(&payload).expect("decodes");
    assert_eq!(ring.len(), 1);
    let obj = envelope(sealed::KEYRING_MAGIC, 0, keys.keyring_key(), TENANT, 0x60, &payload);
    let env = sealed::decode(&obj, sealed::KEYRING_MAGIC, "keyring").expect("envelope parses");
    assert_eq!(env.key_generation, 0);
    assert_eq!(&env.open(keys.keyring_key(), TENANT, String::new).expect("opens")[..], &payload[..]);
    check_vector(
        "keyring",
        json!({
            "master_key": h(&MASTER),
            "data_keys": [{"generation": 1, "key": h(&DATA_KEY)}],
            "tenant": TENANT,
            "payload": h(&payload),
            "object": h(&obj),
        }),
    );
}

/// The config object and a snapshot record (payload and sealed object).
#[test]
fn config_and_snapshot() {
    let keys = keys();
    let c = test_config();
    let text = config::encode(&c);
    assert_eq!(config::decode(&text), Ok(c));

    let r = test_snapshot(&keys);
    let payload = fsnap::encode(&r);
    assert_eq!(fsnap::decode(&payload), Ok(r));
    let dk = Key::from_bytes(DATA_KEY);
    let obj = envelope(sealed::SNAPSHOT_MAGIC, 1, &dk, TENANT, 0x70, &payload);
    let env = sealed::decode(&obj, sealed::SNAPSHOT_MAGIC, "snapshot").expect("envelope parses");
    assert_eq!(env.open(&dk, TENANT, String::new).expect("opens"), payload);

    check_vector("config", json!({ "config_utf8": String::from_utf8(text).expect("JSON is UTF-8") }));
    check_vector(
        "snapshot",
        json!({
            "master_key": h(&MASTER),
            "data_key": h(&DATA_KEY),
            "tenant": TENANT,
            "payload_utf8": String::from_utf8(payload).expect("JSON is UTF-8"),
            "object": h(&obj),
            "snapshot_id": h(&crypto::object_hash(&obj)),
        }),
    );
}

/// A version 2 config with object lock on (docs/FORMAT.md section 6): the
/// optional `object_lock` field, and a config without it unchanged.
#[test]
fn config_with_object_lock() {
    let c = Config { version: 2, object_lock: Some(vector_object_lock()), ..test_config() };
    let text = config::encode(&c);
    assert_eq!(config::decode(&text), Ok(c.clone()));
    // Out-of-range days and unknown modes are refused.
    for bad in [
        String::from_utf8(text.clone()).unwrap().replace("\"margin_days\": 7", "\"margin_days\": 36601").into_bytes(),
        String::from_utf8(text.clone()).unwrap().replace("\"default_days\": 30", "\"default_days\": 0").into_bytes(),
        String::from_utf8(text.clone()).unwrap().replace("compliance", "forever").into_bytes(),
    ] {
        assert!(config::decode(&bad).is_err(), "{}", String::from_utf8_lossy(&bad));
    }
    check_vector("config_object_lock", json!({ "config_utf8": String::from_utf8(text).expect("JSON is UTF-8") }));
}

fn vector_object_lock() -> config::ObjectLock {
    config::ObjectLock { mode: config::LockMode::Compliance, margin_days: 7, default_days: 30 }
}

/// The escrow public key of the binding vector: that of the secret
/// `0e0e…0e` (32 × `0x0e`).
fn vector_escrow_public() -> [u8; 32] {
    crypto::EscrowSecret::from_bytes([0x0e; 32]).public()
}

/// A version 2 config and a tenant's binding record of it (payload and
/// sealed object, metadata key, generation 0).
#[test]
fn config_v2_and_binding() {
    let keys = keys();
    let c = Config { version: 2, ..test_config() };
    const { assert!(config::CONFIG_VERSION >= 2, "the writer's version moved back") };
    let text = config::encode(&c);
    assert_eq!(config::decode(&text), Ok(c.clone()));

    let b = Binding::new(&c, Some(&vector_escrow_public()), 1);
    let payload = fbinding::encode(&b);
    assert_eq!(fbinding::decode(&payload), Ok(b.clone()));
    assert_eq!(b.check(&c), Ok(()));
    // The v1 vector's config is the same repository: the binding holds for it too.
    assert_eq!(b.check(&test_config()), Ok(()));
    let obj = envelope(sealed::BINDING_MAGIC, 0, keys.meta_key(), TENANT, 0x80, &payload);
    assert_eq!(
        &obj[..sealed::HEADER_LEN],
        &sealed::seal(sealed::BINDING_MAGIC, 0, keys.meta_key(), TENANT, &payload)[..sealed::HEADER_LEN]
    );
    let env = sealed::decode(&obj, sealed::BINDING_MAGIC, "binding record").expect("envelope parses");
    assert_eq!(env.key_generation, 0);
    assert_eq!(env.open(keys.meta_key(), TENANT, String::new).expect("opens"), payload);
    // Another tenant's name, or the data key, does not open it.
    assert!(env.open(keys.meta_key(), "globex", String::new).is_err());
    assert!(env.open(&Key::from_bytes(DATA_KEY), TENANT, String::new).is_err());

    check_vector(
        "binding",
        json!({
            "master_key": h(&MASTER),
            "tenant": TENANT,
            "config_v2_utf8": String::from_utf8(text).expect("JSON is UTF-8"),
            "escrow_public": h(&vector_escrow_public()),
            "payload_utf8": String::from_utf8(payload).expect("JSON is UTF-8"),
            "object": h(&obj),
        }),
    );
}

/// The three tombstones of the vectors: a forget, a prune and an undelete
/// record voiding the forget for its snapshot.
fn test_tombstones() -> Vec<Tombstone> {
    let mut forget = Tombstone::new(Action::Forget, "forget", [0x11; 16]);
    forget.snapshots = vec!["bb".repeat(32), "aa".repeat(32)];
    let mut prune = Tombstone::new(Action::Prune, "prune", [0x22; 16]);
    prune.packs = vec!["cc".repeat(32), "dd".repeat(32)];
    prune.index = vec!["ee".repeat(32)];
    let mut undelete = Tombstone::new(Action::Undelete, "undelete", [0x33; 16]);
    undelete.snapshots = vec!["aa".repeat(32)];
    undelete.voids = vec!["ff".repeat(32)];
    vec![forget.normalize(), prune.normalize(), undelete.normalize()]
}

/// Tombstones (payload and sealed object, metadata key, generation 0,
/// named by the hash of the object).
#[test]
fn tombstones() {
    let keys = keys();
    let mut out = Vec::new();
    for (i, t) in test_tombstones().into_iter().enumerate() {
        let payload = ftomb::encode(&t);
        assert_eq!(ftomb::decode(&payload), Ok(t.clone()));
        let obj = envelope(sealed::TOMBSTONE_MAGIC, 0, keys.meta_key(), TENANT, 0x90 + i as u8, &payload);
        assert_eq!(
            &obj[..sealed::HEADER_LEN],
            &sealed::seal(sealed::TOMBSTONE_MAGIC, 0, keys.meta_key(), TENANT, &payload)[..sealed::HEADER_LEN]
        );
        let env = sealed::decode(&obj, sealed::TOMBSTONE_MAGIC, "tombstone").expect("envelope parses");
        assert_eq!(env.open(keys.meta_key(), TENANT, String::new).expect("opens"), payload);
        assert!(env.open(keys.meta_key(), "globex", String::new).is_err());
        assert!(env.open(&Key::from_bytes(DATA_KEY), TENANT, String::new).is_err());
        out.push(json!({
            "payload_utf8": String::from_utf8(payload).expect("JSON is UTF-8"),
            "object": h(&obj),
            "name": h(&crypto::object_hash(&obj)),
        }));
    }
    check_vector("tombstone", json!({ "master_key": h(&MASTER), "tenant": TENANT, "tombstones": out }));
}

/// A zstd frame holding `data` in one raw block (RFC 8878 §3.1.1): built by
/// hand so the seed does not change with the zstd library's version.
fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 256);
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    f.push(0x20); // Single segment, 1-byte content size, no checksum, no dictionary.
    f.push(data.len() as u8);
    let block_header = 1u32 | ((data.len() as u32) << 3); // Last block, raw.
    f.extend_from_slice(&block_header.to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

/// The seed inputs of every fuzz target: `(target, file name, bytes)`.
/// Sealed seeds use the public keys of `strongroom_core::fuzzing`.
pub(crate) fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let vk = keys();
    let fk = fuzzing::fuzz_keys();
    let fdk = Key::from_bytes(fuzzing::FUZZ_DATA_KEY);
    let mut seeds = Vec::new();

    let c = test_config();
    seeds.push(("decode_config", "default", config::encode(&c)));
    let small = Config {
        chunk_sizes: ChunkSizes { min: 64, avg: 256, max: 1024 },
        compression_level: -7,
        pack_target_bytes: 1 << 20,
        ..c
    };
    seeds.push(("decode_config", "small-chunks", config::encode(&small)));
    seeds.push(("decode_config", "version-2", config::encode(&Config { version: 2, ..test_config() })));
    seeds.push((
        "decode_config",
        "object-lock",
        config::encode(&Config { version: 2, object_lock: Some(vector_object_lock()), ..test_config() }),
    ));
    seeds.push(("decode_config", "version-3", config::encode(&Config { version: 3, ..test_config() })));

    let bound = Binding::new(&test_config(), Some(&vector_escrow_public()), 1);
    let bound_payload = fbinding::encode(&bound);
    seeds.push(("decode_binding", "payload", bound_payload.clone()));
    seeds.push(("decode_binding", "no-escrow", fbinding::encode(&Binding::new(&small, None, 7))));
    seeds.push((
        "decode_binding",
        "sealed",
        envelope(sealed::BINDING_MAGIC, 0, fk.meta_key(), fuzzing::FUZZ_TENANT, 9, &bound_payload),
    ));

    let lock_secret = [0x11u8; 32];
    let lock_id = strongroom_core::lock::lock_id(strongroom_core::lock::LockKind::Shared, &lock_secret);
    let listing = format!(
        "{lock_id}\n{lock_id}.1\n{lock_id}.end\n{}\nprobe-{}\nx-{}.2\n",
        &lock_id[2..],
        &lock_id[2..],
        &lock_id[2..]
    );
    seeds.push(("decode_lock_names", "listing", listing.into_bytes()));

    let fuzz_master = fuzzing::FUZZ_MASTER_KEY;
    seeds.push((
        "decode_keyslot",
        "password",
        keyslot_bytes(&fuzz_master, &cheap_password_slot(), 1_764_072_000, "default", b"pw", 1),
    ));
    seeds.push((
        "decode_keyslot",
        "key-file",
        keyslot_bytes(&fuzz_master, &SlotKind::KeyFile, -1, "file", fuzzing::FUZZ_KEY_FILE, 2),
    ));
    let handoff = keyslot::encode_handoff(&Key::from_bytes(fuzz_master), "0123456789abcdef0123456789abcdef");
    seeds.push(("decode_handoff", "slot", handoff.expect("encodes").to_vec()));
    let at = strongroom_core::codec::key_cache::Binding {
        host: fuzzing::FUZZ_HOST,
        location: fuzzing::FUZZ_LOCATION,
        tenant: fuzzing::FUZZ_TENANT,
    };
    let entry = strongroom_core::codec::key_cache::seal_with(
        &Key::from_bytes(fuzz_master),
        "0123456789abcdef0123456789abcdef",
        (1_764_072_000, 1_764_072_900),
        fuzzing::FUZZ_KEY_FILE,
        at,
        [0x06; 32],
        &[0x07; 12],
    );
    seeds.push(("decode_key_cache", "entry", entry.expect("seals")));

    let k1 = Key::from_bytes([0x11; 32]);
    let k2 = Key::from_bytes([0x22; 32]);
    let k3 = Key::from_bytes([0x33; 32]);
    let ring1 = sealed::encode_keyring(&[(1, &fdk)]).to_vec();
    seeds.push(("decode_keyring", "one-key", ring1.clone()));
    seeds.push(("decode_keyring", "three-keys", sealed::encode_keyring(&[(1, &k1), (2, &k2), (7, &k3)]).to_vec()));

    let idx = index::encode(&test_index(&vk));
    let snap = fsnap::encode(&test_snapshot(&vk));
    seeds.push((
        "decode_sealed",
        "keyring",
        envelope(sealed::KEYRING_MAGIC, 0, fk.keyring_key(), fuzzing::FUZZ_TENANT, 3, &ring1),
    ));
    seeds.push(("decode_sealed", "index", envelope(sealed::INDEX_MAGIC, 1, &fdk, fuzzing::FUZZ_TENANT, 4, &idx)));
    seeds.push((
        "decode_sealed",
        "snapshot",
        envelope(sealed::SNAPSHOT_MAGIC, 1, &fdk, fuzzing::FUZZ_TENANT, 5, &snap),
    ));

    for (name, entries, body_len) in [("empty", vec![], 0u64), ("two-blobs", test_index(&vk).remove(0).blobs, 4096)] {
        let header = fpack::encode_header(&entries);
        let mut s = body_len.to_le_bytes().to_vec();
        s.extend_from_slice(&header);
        s.extend_from_slice(&fpack::encode_trailer(&Trailer {
            header_len: (header.len() + crypto::SEAL_OVERHEAD) as u32,
            key_generation: 1,
        }));
        seeds.push(("decode_pack", name, s));
    }

    seeds.push(("decode_index", "one-pack", idx.clone()));
    seeds.push(("decode_index", "empty", index::encode(&[])));
    let mut two = test_index(&vk);
    two.push(PackEntry { id: PackId([0xbb; 32]), length: 100, key_generation: 2, blobs: vec![] });
    seeds.push(("decode_index", "two-packs", index::encode(&two)));

    seeds.push(("decode_snapshot", "basic", snap));
    let mut with_parent = test_snapshot(&vk);
    with_parent.parent = Some("ab".repeat(32));
    with_parent.tags = vec!["a".into(), "b c".into(), "ünïcode".into()];
    seeds.push(("decode_snapshot", "with-parent", fsnap::encode(&with_parent)));

    let entry = serde_json::json!({
        "seq": 2, "prev": "ab".repeat(32), "time": "2026-11-25T12:00:00Z", "host": "h", "user": "u",
        "command": "backup", "args": ["backup", "/srv"], "snapshots": ["cd".repeat(32)], "bytes": 1234,
        "result": "error", "error": "disk full"
    });
    let entry = serde_json::to_vec(&entry).expect("JSON");
    seeds.push(("decode_audit", "payload", entry.clone()));
    seeds.push((
        "decode_audit",
        "sealed",
        envelope(sealed::AUDIT_MAGIC, 0, fk.meta_key(), fuzzing::FUZZ_TENANT, 7, &entry),
    ));
    let escrow_secret = crypto::EscrowSecret::from_bytes([0x0e; 32]);
    let ephemeral = crypto::EscrowSecret::from_bytes([0x0f; 32]).public();
    let escrow = SlotKind::Escrow { ephemeral, recipient: escrow_secret.public() };
    seeds.push((
        "decode_keyslot",
        "escrow",
        keyslot_bytes(&fuzz_master, &escrow, 0, "escrow", &escrow_secret.to_bytes()[..], 8),
    ));

    seeds.push(("decode_tree", "every-kind", tree::encode(&test_tree(&vk))));
    seeds.push(("decode_tree", "xattrs", tree::encode(&test_tree_v2(&vk))));
    seeds.push(("decode_tree", "version-1", tree_v1_bytes()));
    seeds.push(("decode_tree", "empty", tree::encode(&[])));

    // decode_blob: `mode | kind | raw_len u32 | rest` (see its docs).
    let plain = fuzzing::FUZZ_BLOB_PLAINTEXT;
    let blob_seed = |mode: u8, rest: &[u8]| {
        let mut s = vec![mode, 0];
        s.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        s.extend_from_slice(rest);
        s
    };
    let raw = raw_framing(plain);
    let stored = crypto::seal_with_nonce(&fdk, &nonce(6), &blob_aad(BlobKind::Data, &fuzzing::fuzz_blob_id()), &raw);
    seeds.push(("decode_blob", "stored", blob_seed(0, &stored)));
    seeds.push(("decode_blob", "framing-raw", blob_seed(1, &raw)));
    let frame = zstd_raw_frame(plain);
    let mut zstd_framing = vec![1u8];
    zstd_framing.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    zstd_framing.extend_from_slice(&frame);
    seeds.push(("decode_blob", "framing-zstd", blob_seed(1, &zstd_framing)));

    for (name, t) in ["forget", "prune", "undelete"].into_iter().zip(test_tombstones()) {
        let payload = ftomb::encode(&t);
        seeds.push(("decode_tombstone", name, payload.clone()));
        if name == "forget" {
            let sealed_seed = envelope(sealed::TOMBSTONE_MAGIC, 0, fk.meta_key(), fuzzing::FUZZ_TENANT, 10, &payload);
            seeds.push(("decode_tombstone", "sealed", sealed_seed));
        }
    }
    // Put-only keys: the bundle, a put-only key-file slot, a drop keyring
    // (sealing the fuzz data key) and an index delta with a dedup section.
    let fuzz_full = TenantKeys::from_master(&Key::from_bytes(fuzz_master));
    let fuzz_bundle = put_only_bundle_bytes(&fuzz_master, fuzz_full.drop_public(), fuzzing::FUZZ_TENANT);
    seeds.push(("decode_put_only_bundle", "bundle", fuzz_bundle.clone()));
    let po_kind = SlotKind::PutOnly { password: None };
    let kek = keyslot::kek(&po_kind, fuzzing::FUZZ_KEY_FILE).expect("key-file kek");
    let mut po_slot = keyslot_header(&po_kind, 0, "host");
    po_slot.extend_from_slice(&crypto::seal_with_nonce(&kek, &nonce(10), &po_slot, &fuzz_bundle));
    seeds.push(("decode_keyslot", "put-only", po_slot));
    let drop_gen = crypto::DROP_GENERATION_BIT | 0x0102_0304;
    seeds.push((
        "decode_drop_keyring",
        "keyring",
        drop_keyring_bytes(drop_gen, &fdk, fuzz_full.drop_public(), fuzzing::FUZZ_TENANT, 11),
    ));
    let ids: Vec<BlobId> = test_index(&vk).iter().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect();
    seeds.push(("decode_dedup_section", "two-ids", dedup_plain(&ids)));
    seeds.push(("decode_dedup_section", "empty", dedup_plain(&[])));
    seeds.push((
        "decode_sealed",
        "index-dedup",
        index_v2_bytes(1, &fdk, fk.dedup_key(), fuzzing::FUZZ_TENANT, &idx, &ids, 12),
    ));

    use strongroom_core::catalog::filter::{Header, MIN_CAPACITY};
    seeds.push(("decode_id_filter", "empty", Header::new(MIN_CAPACITY, 0).encode().to_vec()));
    let mut h = Header::new(10_000_000, 42);
    h.ids = 9_000_000;
    seeds.push(("decode_id_filter", "ten-million", h.encode().to_vec()));
    seeds
}

/// The fuzz seeds on disk are the ones [`fuzz_seeds`] builds, and the
/// sealed ones open under the fuzz keys (so the fuzzer starts past
/// authentication).
#[test]
fn fuzz_seeds_are_current() {
    let seeds = fuzz_seeds();
    let fk = fuzzing::fuzz_keys();
    let fdk = Key::from_bytes(fuzzing::FUZZ_DATA_KEY);
    for (target, name, bytes) in &seeds {
        match *target {
            "decode_blob" => {
                let (head, rest) = bytes.split_at(6);
                let stored = if head[0] == 0 {
                    rest.to_vec()
                } else {
                    let aad = blob_aad(BlobKind::Data, &fuzzing::fuzz_blob_id());
                    crypto::seal_with_nonce(&fdk, &[0; 12], &aad, rest)
                };
                let raw_len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
                let opened = blob::open(fk, &fdk, BlobKind::Data, &fuzzing::fuzz_blob_id(), &stored, raw_len);
                assert_eq!(opened.expect("blob seed opens"), fuzzing::FUZZ_BLOB_PLAINTEXT, "{name}");
            }
            "decode_keyslot" if *name == "key-file" => {
                let slot = keyslot::decode(bytes).expect("decodes");
                keyslot::unwrap(&slot, fuzzing::FUZZ_KEY_FILE).expect("key-file seed unwraps");
            }
            _ => {}
        }
        let path: PathBuf = root().join("fuzz/seeds").join(target).join(name);
        if bless() {
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create seed dir");
            std::fs::write(&path, bytes).expect("write seed");
        } else {
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run with STRONGROOM_BLESS=1 to create it", path.display()));
            assert!(&on_disk == bytes, "{} is stale; rerun with STRONGROOM_BLESS=1", path.display());
        }
    }
}

/// docs/FORMAT.md quotes every hex string of every vector file (it may
/// wrap long ones across lines).
#[test]
fn format_md_quotes_every_vector() {
    fn hex_strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| hex_strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| hex_strings(x, out)),
            _ => {}
        }
    }
    let doc = std::fs::read_to_string(root().join("docs/FORMAT.md")).expect("docs/FORMAT.md exists");
    let doc: String = doc.split_whitespace().collect();
    let mut missing = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("tests/vectors"))
        .expect("tests/vectors exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    paths.sort();
    for path in paths {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read vector")).expect("JSON");
        let mut hexes = Vec::new();
        hex_strings(&v, &mut hexes);
        for x in hexes {
            if !doc.contains(&x) {
                missing.push(format!("{}: {x}", path.display()));
            }
        }
    }
    assert!(missing.is_empty(), "docs/FORMAT.md does not quote:\n{}", missing.join("\n"));
}

/// Lock names (docs/FORMAT.md, "Lock records"): the commitment of a
/// fixed secret, rebuilt by hand from the spec, and how a reader parses
/// the names a listing of `locks/` may hold.
#[test]
fn lock_names() {
    use strongroom_core::lock::{self, LockKind};
    let secret = [0x11u8; 32];
    let commitment = h(&blake3::hash(&secret).as_bytes()[..16]);
    let (shared, exclusive) = (lock::lock_id(LockKind::Shared, &secret), lock::lock_id(LockKind::Exclusive, &secret));
    assert_eq!(shared, format!("s-{commitment}"));
    assert_eq!(exclusive, format!("x-{commitment}"));
    assert!(lock::end_releases(&shared, &secret) && lock::end_releases(&exclusive, &secret));
    assert!(!lock::end_releases(&shared, &[0x12; 32]));
    let names = [
        shared.clone(),
        format!("{shared}.1"),
        format!("{shared}.17"),
        format!("{exclusive}.end"),
        commitment.clone(),
        format!("probe-{commitment}"),
        format!("{shared}.01"),
        format!("{shared}.0"),
        format!("S-{commitment}"),
        format!("x-{}", &commitment[1..]),
        ".probe-0123".into(),
    ];
    let parsed: Vec<Value> =
        names.iter().map(|n| json!({ "name": n, "parses_as": format!("{:?}", lock::parse_name(n)) })).collect();
    check_vector(
        "lock_names",
        json!({ "secret": h(&secret), "commitment": commitment, "shared": shared, "exclusive": exclusive,
                "names": parsed }),
    );
}

// Put-only keys (FORMAT.md section 7, put-only slots; section 8, drop
// keyrings and the dedup section of index deltas).

/// `BLAKE3 derive_key(context, key)`.
fn derive(context: &str, key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(context, key)
}

/// The bundle a put-only slot of the tenant with master `master` seals,
/// built from the documented contexts and layout.
fn put_only_bundle_bytes(master: &[u8; 32], drop_public: &[u8; 32], tenant: &str) -> Vec<u8> {
    let c = test_config();
    let mut b = b"SRPO".to_vec();
    b.push(1);
    b.extend_from_slice(&derive("strongroom 2026-11-25 chunk-id key v1", master));
    let mut gear = vec![0u8; 256 * 8];
    let mut hasher = blake3::Hasher::new_derive_key("strongroom 2026-11-25 fastcdc gear table v1");
    hasher.update(master);
    hasher.finalize_xof().fill(&mut gear);
    b.extend_from_slice(&gear);
    b.extend_from_slice(&derive("strongroom 2026-12-08 dedup key v1", master));
    b.extend_from_slice(drop_public);
    for text in [c.id.as_str(), tenant] {
        b.extend_from_slice(&(text.len() as u32).to_le_bytes());
        b.extend_from_slice(text.as_bytes());
    }
    for v in [c.chunk_sizes.min, c.chunk_sizes.avg, c.chunk_sizes.max, c.pack_target_bytes] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&i64::from(c.compression_level).to_le_bytes());
    b
}

/// A drop keyring sealing `key` to `drop_public` with the ephemeral secret
/// `0x0d…0d` and nonce `n`.
fn drop_keyring_bytes(generation: u32, key: &Key, drop_public: &[u8; 32], tenant: &str, n: u8) -> Vec<u8> {
    let (kek, ephemeral) = crypto::drop_wrap_kek_with([0x0d; 32], drop_public).expect("a valid public key");
    let mut obj = b"SRDK".to_vec();
    obj.push(1);
    obj.extend_from_slice(&generation.to_le_bytes());
    obj.extend_from_slice(&ephemeral);
    let mut aad = obj.clone();
    aad.extend_from_slice(tenant.as_bytes());
    // The key's bytes are not exposed: seal it through a keyring payload's
    // known layout instead (`generation u32 | key` after a 9-byte head).
    let ring = sealed::encode_keyring(&[(1, key)]);
    obj.extend_from_slice(&crypto::seal_with_nonce(&kek, &nonce(n), &aad, &ring[13..45]));
    obj
}

/// The plaintext of a dedup section: `count u32 | blob id*`.
fn dedup_plain(ids: &[BlobId]) -> Vec<u8> {
    let mut p = (ids.len() as u32).to_le_bytes().to_vec();
    for id in ids {
        p.extend_from_slice(&id.0);
    }
    p
}

/// An index delta of envelope version 2: `"SRIX" | 2 | generation u32 |
/// main length u32 | main | dedup`, nonces `n` and `n + 0x20`.
fn index_v2_bytes(
    generation: u32,
    dk: &Key,
    dedup_key: &Key,
    tenant: &str,
    payload: &[u8],
    ids: &[BlobId],
    n: u8,
) -> Vec<u8> {
    let mut head = b"SRIX".to_vec();
    head.push(2);
    head.extend_from_slice(&generation.to_le_bytes());
    let mut aad = head.clone();
    aad.extend_from_slice(tenant.as_bytes());
    let main = crypto::seal_with_nonce(dk, &nonce(n), &aad, payload);
    let dedup = crypto::seal_with_nonce(dedup_key, &nonce(n.wrapping_add(0x20)), &aad, &dedup_plain(ids));
    let mut obj = head;
    obj.extend_from_slice(&(main.len() as u32).to_le_bytes());
    obj.extend_from_slice(&main);
    obj.extend_from_slice(&dedup);
    obj
}

/// A put-only key-file slot, a drop keyring and an index delta with its
/// dedup section: built by hand from the spec, opened by the real readers,
/// and the real writers' headers are the documented ones.
#[test]
fn put_only_slot_drop_keyring_and_dedup_section() {
    use strongroom_core::codec::put_only;
    let keys = keys();
    let dk = Key::from_bytes(DATA_KEY);
    let drop_public = *keys.drop_public();

    // The bundle and its slot.
    let bundle = put_only_bundle_bytes(&MASTER, &drop_public, TENANT);
    let decoded = put_only::decode_bundle(&bundle).expect("bundle decodes");
    assert_eq!(&put_only::encode_bundle(&decoded)[..], &bundle[..]);
    let put = TenantKeys::from_put_only(&decoded.keys);
    assert_eq!(put.blob_id(PLAINTEXT), keys.blob_id(PLAINTEXT), "same blob ids");
    assert_eq!(put.gear()[..], keys.gear()[..], "same chunk boundaries");
    assert!(put.dedup_key().is(&derive("strongroom 2026-12-08 dedup key v1", &MASTER)));
    let kind = SlotKind::PutOnly { password: None };
    let kek = keyslot::kek(&kind, b"key file bytes").expect("key-file kek");
    let mut slot = keyslot_header(&kind, 1_764_072_000, "backup host");
    slot.extend_from_slice(&crypto::seal_with_nonce(&kek, &nonce(0x90), &slot, &bundle));
    let s = keyslot::decode(&slot).expect("slot decodes");
    assert_eq!(s.kind, kind);
    let opened = keyslot::unwrap_put_only(&s, b"key file bytes").expect("slot opens");
    assert_eq!(opened.tenant, TENANT);
    assert!(keyslot::unwrap(&s, b"key file bytes").is_err(), "a put-only slot holds no master key");
    let written = keyslot::wrap_put_only(&decoded, kind, 1_764_072_000, "backup host", b"key file bytes")
        .expect("the writer wraps");
    assert_eq!(written.len(), slot.len());
    assert_eq!(
        written[..slot.len() - bundle.len() - crypto::SEAL_OVERHEAD],
        slot[..slot.len() - bundle.len() - crypto::SEAL_OVERHEAD]
    );

    // The drop keyring (generation 0x80000001).
    let generation = crypto::DROP_GENERATION_BIT | 1;
    let ring = drop_keyring_bytes(generation, &dk, &drop_public, TENANT, 0x91);
    assert_eq!(ring.len(), put_only::DROP_LEN);
    let d = put_only::decode_drop_keyring(&ring).expect("drop keyring decodes");
    assert_eq!(put_only::encode_drop_keyring(&d), ring);
    let kek = keys.drop_unwrap_kek(&d.ephemeral).expect("full keys derive the drop secret");
    assert!(d.open(&kek, TENANT, String::new).expect("opens").is(&DATA_KEY));
    assert!(d.open(&kek, "other-tenant", String::new).is_err());
    assert!(put.drop_unwrap_kek(&d.ephemeral).is_none());
    let real = put_only::seal_drop_keyring(generation, &dk, &drop_public, TENANT).expect("seals");
    assert_eq!(real[..9], ring[..9], "the writer's header is the documented one");

    // The index delta with its dedup section.
    let idx = test_index(&keys);
    let payload = index::encode(&idx);
    let ids: Vec<BlobId> = idx.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect();
    let obj = index_v2_bytes(1, &dk, keys.dedup_key(), TENANT, &payload, &ids, 0x92);
    let env = sealed::decode(&obj, sealed::INDEX_MAGIC, "index delta").expect("envelope parses");
    assert_eq!(env.key_generation, 1);
    assert_eq!(env.open(&dk, TENANT, String::new).expect("opens"), payload);
    assert_eq!(env.open_dedup(put.dedup_key(), TENANT).expect("has one").expect("opens"), ids);
    assert!(env.open_dedup(put.dedup_key(), "other-tenant").expect("has one").is_err());
    let real = sealed::seal_index(1, &dk, keys.dedup_key(), TENANT, &payload, &ids);
    assert_eq!(real.len(), obj.len());
    assert_eq!(real[..13], obj[..13], "the writer's header is the documented one");
    assert_eq!(sealed::decode_generation(&obj[..9], sealed::INDEX_MAGIC, "index delta"), Ok(1));

    check_vector(
        "put_only",
        json!({
            "master_key": h(&MASTER),
            "data_key": h(&DATA_KEY),
            "tenant": TENANT,
            "drop_public_key": h(&drop_public),
            // The bundle and slot are long (a 2 KiB gear table): frozen by
            // their BLAKE3 hashes; the slot's header is quoted whole.
            "bundle_len": bundle.len(),
            "bundle_blake3": h(&crypto::object_hash(&bundle)),
            "key_file": h(b"key file bytes"),
            "put_only_slot_header": h(&slot[..slot.len() - bundle.len() - crypto::SEAL_OVERHEAD]),
            "put_only_slot_blake3": h(&crypto::object_hash(&slot)),
            "drop_generation": generation,
            "drop_ephemeral_secret": h(&[0x0d; 32]),
            "drop_keyring": h(&ring),
            "index_payload": h(&payload),
            "index_blob_ids": ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "index_delta_v2": h(&obj),
        }),
    );
}
