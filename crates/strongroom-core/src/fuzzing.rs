//! Entry points for the fuzz targets in `fuzz/` and their seeded smoke test
//! on stable (`tests/it/fuzz_smoke.rs`).
//!
//! Each function feeds arbitrary bytes to one decoder and checks more than
//! "no panic": whatever decodes must re-encode to the same bytes (binary
//! formats), or decode again to the same value (JSON formats). A failed
//! check panics, which is what the fuzzer looks for.
//!
//! Objects that are sealed can only be reached through a key, so the
//! functions that open things use the fixed, public test keys below. The
//! seeds in `fuzz/seeds/` (written by `tests/it/vectors.rs`) are sealed
//! under them, so a fuzzer starting from those seeds also exercises the
//! paths after authentication.
//!
//! Must not: be used by anything but fuzz targets and tests. The keys here
//! are public and protect nothing.

use std::sync::OnceLock;

use crate::blob;
use crate::codec::pack::{self as fpack, BlobKind};
use crate::codec::{binding, config, index, keyslot, put_only, sealed, snapshot, tombstone, tree};
use crate::crypto::{self, Key, TenantKeys, KEY_LEN};
use crate::id::BlobId;

/// The master key of the fuzz tenant (public; protects nothing).
pub const FUZZ_MASTER_KEY: [u8; KEY_LEN] = [0x42; KEY_LEN];
/// The data key of generation [`FUZZ_DATA_KEY_GENERATION`] of the fuzz
/// tenant (public; protects nothing).
pub const FUZZ_DATA_KEY: [u8; KEY_LEN] = [0x43; KEY_LEN];
/// The generation of [`FUZZ_DATA_KEY`].
pub const FUZZ_DATA_KEY_GENERATION: u32 = 1;
/// The tenant name bound into sealed objects by [`decode_sealed`].
pub const FUZZ_TENANT: &str = "fuzz";
/// The key-file bytes that unwrap key-file slots in [`decode_keyslot`].
pub const FUZZ_KEY_FILE: &[u8] = b"strongroom fuzz key file";
/// The only plaintext whose blob id [`decode_blob`] asks for.
pub const FUZZ_BLOB_PLAINTEXT: &[u8] = b"strongroom fuzz blob plaintext, repeated: abcabcabcabcabcabcabcabcabcabc";

/// The fuzz tenant's keys: [`FUZZ_MASTER_KEY`] plus [`FUZZ_DATA_KEY`].
/// Built once; deriving the gear table for every input would be waste.
pub fn fuzz_keys() -> &'static TenantKeys {
    static KEYS: OnceLock<TenantKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = TenantKeys::from_master(&Key::from_bytes(FUZZ_MASTER_KEY));
        keys.add_data_key(crypto::DataKey {
            generation: FUZZ_DATA_KEY_GENERATION,
            key: Key::from_bytes(FUZZ_DATA_KEY),
        });
        keys
    })
}

/// The blob id [`decode_blob`] opens blobs under: the fuzz tenant's id of
/// [`FUZZ_BLOB_PLAINTEXT`].
pub fn fuzz_blob_id() -> BlobId {
    fuzz_keys().blob_id(FUZZ_BLOB_PLAINTEXT)
}

/// The repository config (JSON): whatever decodes must encode to JSON that
/// decodes to the same config.
pub fn decode_config(data: &[u8]) {
    if let Ok(c) = config::decode(data) {
        let again = config::encode(&c);
        assert_eq!(config::decode(&again), Ok(c), "config: decode(encode(x)) != x");
    }
}

/// A key slot: whatever decodes must re-encode to the same bytes. A
/// key-file slot is also unwrapped with [`FUZZ_KEY_FILE`] (cheap); if that
/// authenticates, it must yield [`FUZZ_MASTER_KEY`], the only key the seeds
/// wrap. Password slots are not unwrapped: Argon2id is slow by design.
pub fn decode_keyslot(data: &[u8]) {
    if let Ok(slot) = keyslot::decode(data) {
        assert_eq!(keyslot::encode(&slot), data, "key slot: encode(decode(b)) != b");
        if slot.kind == keyslot::SlotKind::KeyFile {
            if let Ok(master) = keyslot::unwrap(&slot, FUZZ_KEY_FILE) {
                assert!(master.is(&FUZZ_MASTER_KEY), "key slot: unwrapped an unexpected key");
            }
        }
        if slot.kind == (keyslot::SlotKind::PutOnly { password: None }) {
            if let Ok(b) = keyslot::unwrap_put_only(&slot, FUZZ_KEY_FILE) {
                assert_eq!(b.keys.drop_public, *fuzz_keys().drop_public(), "key slot: unwrapped an unexpected bundle");
            }
        }
    }
}

/// A key handoff (`--key-fd`): whatever decodes must re-encode to the
/// same bytes.
pub fn decode_handoff(data: &[u8]) {
    if let Ok((key, slot)) = keyslot::decode_handoff(data) {
        let again = keyslot::encode_handoff(&key, &slot).expect("a decoded handoff encodes");
        assert_eq!(&again[..], data, "key handoff: encode(decode(b)) != b");
    }
}

/// The host binding [`decode_key_cache`] opens entries with.
pub const FUZZ_HOST: &[u8] = b"fuzz machine\0fuzz host";
/// The store location [`decode_key_cache`] opens entries with.
pub const FUZZ_LOCATION: &str = "file:///fuzz";

/// A key cache entry (`--key-cache`): whatever decodes must re-encode to
/// the same bytes; then it is opened with [`FUZZ_KEY_FILE`] as the secret,
/// and whatever opens must name the entry's slot.
pub fn decode_key_cache(data: &[u8]) {
    use crate::codec::key_cache::{decode, encode, open, Binding};
    if let Ok(entry) = decode(data) {
        assert_eq!(encode(&entry), data, "key cache entry: encode(decode(b)) != b");
        let at = Binding { host: FUZZ_HOST, location: FUZZ_LOCATION, tenant: FUZZ_TENANT };
        if let Ok((_, slot)) = open(&entry, FUZZ_KEY_FILE, at) {
            assert_eq!(slot, entry.slot, "key cache entry: opened another slot than it names");
        }
    }
}

/// A keyring payload (the plaintext inside a sealed keyring object):
/// whatever decodes must re-encode to the same bytes.
pub fn decode_keyring(data: &[u8]) {
    if let Ok(ring) = sealed::decode_keyring(data) {
        let refs: Vec<(u32, &Key)> = ring.iter().map(|(g, k)| (*g, k)).collect();
        let again = sealed::encode_keyring(&refs);
        assert_eq!(&again[..], data, "keyring: encode(decode(b)) != b");
    }
}

/// An audit entry: the bytes as a payload, and as a sealed object opened
/// with the fuzz tenant's metadata key. Whatever decodes must encode to
/// JSON that decodes to the same entry.
pub fn decode_audit(data: &[u8]) {
    fn check(payload: &[u8]) {
        if let Ok(e) = crate::audit::decode_payload(payload) {
            let again = serde_json::to_vec(&e).unwrap_or_default();
            assert_eq!(crate::audit::decode_payload(&again).ok(), Some(e), "audit: decode(encode(e)) != e");
        }
    }
    check(data);
    if let Ok(env) = sealed::decode(data, sealed::AUDIT_MAGIC, "audit entry") {
        if let Ok(plain) = env.open(fuzz_keys().meta_key(), FUZZ_TENANT, String::new) {
            check(&plain);
        }
    }
}

/// A tenant's binding record: the bytes as a payload, and as a sealed
/// object (`SRBD`) opened with the fuzz tenant's metadata key. Whatever
/// decodes must re-encode to the same bytes (the writer's compact JSON)
/// or, for other spellings of the same JSON, decode again to the same
/// record; and it must match the config built from it.
pub fn decode_binding(data: &[u8]) {
    fn check(payload: &[u8]) {
        if let Ok(b) = binding::decode(payload) {
            let again = binding::encode(&b);
            assert_eq!(binding::decode(&again).as_ref(), Ok(&b), "binding: decode(encode(b)) != b");
            let c = config::Config {
                format: config::CONFIG_FORMAT.into(),
                version: config::CONFIG_VERSION,
                id: b.repository_id.clone(),
                created: String::new(),
                chunk_sizes: b.chunk_sizes,
                pack_target_bytes: b.pack_target_bytes,
                compression_level: b.compression_level,
                object_lock: None,
            };
            assert_eq!(b.check(&c), Ok(()), "binding: does not match the config it describes");
            assert_eq!(b.escrow().is_some(), b.escrow_public.is_some(), "binding: escrow key does not decode");
        }
    }
    check(data);
    if let Ok(env) = sealed::decode(data, sealed::BINDING_MAGIC, "binding record") {
        if let Ok(plain) = env.open(fuzz_keys().meta_key(), FUZZ_TENANT, String::new) {
            check(&plain);
        }
    }
}

/// A tombstone: the bytes as a payload, and as a sealed object (`SRTB`)
/// opened with the fuzz tenant's metadata key. Whatever decodes must
/// re-encode to bytes that decode to the same tombstone, and be in the
/// normal form the writer produces (sorted lists without duplicates).
pub fn decode_tombstone(data: &[u8]) {
    fn check(payload: &[u8]) {
        if let Ok(t) = tombstone::decode(payload) {
            let again = tombstone::encode(&t);
            assert_eq!(tombstone::decode(&again).as_ref(), Ok(&t), "tombstone: decode(encode(t)) != t");
            assert_eq!(t.clone().normalize(), t, "tombstone: a decoded tombstone is not in normal form");
        }
    }
    check(data);
    if let Ok(env) = sealed::decode(data, sealed::TOMBSTONE_MAGIC, "tombstone") {
        if let Ok(plain) = env.open(fuzz_keys().meta_key(), FUZZ_TENANT, String::new) {
            check(&plain);
        }
    }
}

/// A sealed object kind: magic, name, and the check of its payload.
type SealedKind = (&'static [u8; 4], &'static str, fn(&[u8]));

/// The sealed-object envelope, tried with each magic (keyring, index delta,
/// snapshot record). Whatever parses must be the header re-encoded followed
/// by the sealed part unchanged. The envelope is then opened with the fuzz
/// tenant's key for its generation; if it authenticates (only the seeds do),
/// the payload goes through that kind's decoder check.
pub fn decode_sealed(data: &[u8]) {
    let kinds: [SealedKind; 3] = [
        (sealed::KEYRING_MAGIC, "keyring", decode_keyring),
        (sealed::INDEX_MAGIC, "index delta", decode_index),
        (sealed::SNAPSHOT_MAGIC, "snapshot", decode_snapshot),
    ];
    for (magic, what, check_payload) in kinds {
        let Ok(env) = sealed::decode(data, magic, what) else {
            continue;
        };
        let mut again = Vec::with_capacity(data.len());
        again.extend_from_slice(magic);
        match env.dedup {
            None => {
                again.push(1);
                again.extend_from_slice(&env.key_generation.to_le_bytes());
                again.extend_from_slice(env.sealed);
            }
            Some(dedup) => {
                assert_eq!(magic, sealed::INDEX_MAGIC, "{what} envelope: a dedup section outside an index delta");
                again.push(sealed::INDEX_VERSION_DEDUP);
                again.extend_from_slice(&env.key_generation.to_le_bytes());
                again.extend_from_slice(&(env.sealed.len() as u32).to_le_bytes());
                again.extend_from_slice(env.sealed);
                again.extend_from_slice(dedup);
            }
        }
        assert_eq!(again, data, "{what} envelope: header and sealed part do not rebuild the object");
        let keys = fuzz_keys();
        if let Some(Ok(ids)) = env.open_dedup(keys.dedup_key(), FUZZ_TENANT) {
            let mut plain = (ids.len() as u32).to_le_bytes().to_vec();
            for id in &ids {
                plain.extend_from_slice(&id.0);
            }
            decode_dedup_section(&plain);
        }
        let key = if magic == sealed::KEYRING_MAGIC {
            // Keyrings are sealed as generation 0 with the keyring key.
            (env.key_generation == 0).then(|| keys.keyring_key())
        } else {
            keys.data_key(env.key_generation).map(|dk| &dk.key)
        };
        if let Some(key) = key {
            if let Ok(payload) = env.open(key, FUZZ_TENANT, || what.to_string()) {
                check_payload(&payload);
            }
        }
    }
}

/// An opened dedup section of an index delta (`count u32 | blob id*`):
/// whatever decodes must re-encode to the same bytes.
pub fn decode_dedup_section(data: &[u8]) {
    if let Ok(ids) = put_only::decode_dedup_ids(data) {
        let mut again = (ids.len() as u32).to_le_bytes().to_vec();
        for id in &ids {
            again.extend_from_slice(&id.0);
        }
        assert_eq!(again, data, "dedup section: encode(decode(b)) != b");
    }
}

/// A put-only key bundle (the plaintext of a put-only key slot): whatever
/// decodes must re-encode to the same bytes.
pub fn decode_put_only_bundle(data: &[u8]) {
    if let Ok(b) = put_only::decode_bundle(data) {
        assert_eq!(&put_only::encode_bundle(&b)[..], data, "put-only bundle: encode(decode(b)) != b");
    }
}

/// A drop keyring: whatever decodes must re-encode to the same bytes; it
/// is then opened with the fuzz tenant's drop secret, and what opens must
/// be [`FUZZ_DATA_KEY`] (the only key the seeds seal).
pub fn decode_drop_keyring(data: &[u8]) {
    if let Ok(d) = put_only::decode_drop_keyring(data) {
        assert_eq!(put_only::encode_drop_keyring(&d), data, "drop keyring: encode(decode(b)) != b");
        if let Some(kek) = fuzz_keys().drop_unwrap_kek(&d.ephemeral) {
            if let Ok(key) = d.open(&kek, FUZZ_TENANT, String::new) {
                assert!(key.is(&FUZZ_DATA_KEY), "drop keyring: opened an unexpected key");
            }
        }
    }
}

/// A pack trailer and a plaintext pack header. Input:
/// `body_len u64 | header | trailer (13)`. The trailer is decoded from the
/// last 13 bytes of the whole input and must re-encode to them; the header
/// (the bytes between `body_len` and the trailer) is decoded against
/// `body_len` and must re-encode to the same bytes, with every blob inside
/// the body.
pub fn decode_pack(data: &[u8]) {
    if let Ok(t) = fpack::decode_trailer(data) {
        assert_eq!(
            fpack::encode_trailer(&t),
            &data[data.len() - fpack::TRAILER_LEN..],
            "pack trailer: encode(decode(b)) != b"
        );
        assert!(t.header_len as usize >= crypto::SEAL_OVERHEAD, "pack trailer: header length below the seal overhead");
    }
    let Some((len_bytes, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let body_len = u64::from_le_bytes(*len_bytes);
    let header = &rest[..rest.len().saturating_sub(fpack::TRAILER_LEN)];
    if let Ok(entries) = fpack::decode_header(header, body_len) {
        assert_eq!(fpack::encode_header(&entries), header, "pack header: encode(decode(b)) != b");
        for e in &entries {
            assert!(u64::from(e.offset) + u64::from(e.length) <= body_len, "pack header: blob outside the body");
        }
    }
}

/// An index delta payload: whatever decodes must re-encode to the same
/// bytes, and every blob must lie inside its pack.
pub fn decode_index(data: &[u8]) {
    if let Ok(packs) = index::decode(data) {
        assert_eq!(index::encode(&packs), data, "index delta: encode(decode(b)) != b");
        for p in &packs {
            for b in &p.blobs {
                assert!(u64::from(b.offset) + u64::from(b.length) <= p.length, "index delta: blob outside its pack");
            }
        }
    }
}

/// A snapshot record (JSON): whatever decodes must encode to JSON that
/// decodes to the same record.
pub fn decode_snapshot(data: &[u8]) {
    if let Ok(r) = snapshot::decode(data) {
        let again = snapshot::encode(&r);
        assert_eq!(snapshot::decode(&again), Ok(r), "snapshot: decode(encode(x)) != x");
    }
}

/// A tree blob: whatever decodes must re-encode to the same bytes (a
/// version 1 tree re-encodes as version 2, which decodes to the same
/// nodes), and its names must be safe to join to a restore target and
/// strictly ascending, as must its extended attributes' names.
pub fn decode_tree(data: &[u8]) {
    if let Ok(t) = tree::decode(data) {
        let again = tree::encode(&t);
        if data.get(4) == Some(&tree::VERSION) {
            assert_eq!(again, data, "tree: encode(decode(b)) != b");
        } else {
            assert_eq!(tree::decode(&again).as_ref(), Ok(&t), "tree: decode(encode(x)) != x");
        }
        for n in t.iter().filter_map(|n| n.xattrs.as_ref()) {
            assert!(n.windows(2).all(|p| p[0].name < p[1].name), "tree: xattrs not strictly ascending");
        }
        for pair in t.windows(2) {
            assert!(pair[0].name < pair[1].name, "tree: names not strictly ascending");
        }
        for n in &t {
            let safe = !n.name.is_empty()
                && n.name != b"."
                && n.name != b".."
                && !n.name.contains(&b'/')
                && !n.name.contains(&0);
            assert!(safe, "tree: unsafe name {:?}", String::from_utf8_lossy(&n.name));
        }
    }
}

/// Opening a stored blob with the fuzz tenant's data key. Input:
/// `mode u8 | kind u8 | raw_len u32 | rest`; the id asked for is always
/// [`fuzz_blob_id`].
///
/// - mode even: `rest` is the stored (sealed) blob. Arbitrary bytes must
///   give `Err`; forging an AES-GCM-SIV tag is infeasible, so only a seed
///   sealed under the fuzz key opens.
/// - mode odd: `rest` is the blob's plaintext framing (`flag | payload_len |
///   payload | padding`), sealed here with the fuzz key and a fixed nonce
///   before opening, so the fuzzer reaches the code after authentication
///   (framing checks, zstd with its length bound, the id check).
///
/// Either way, `open` may only return the plaintext whose id was asked for,
/// at the length the index gives.
pub fn decode_blob(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let [mode, kind_byte, l0, l1, l2, l3] = *head;
    let kind = if kind_byte & 1 == 0 { BlobKind::Data } else { BlobKind::Tree };
    let raw_len = u32::from_le_bytes([l0, l1, l2, l3]);
    let keys = fuzz_keys();
    let Some(dk) = keys.data_key(FUZZ_DATA_KEY_GENERATION) else {
        return;
    };
    let id = fuzz_blob_id();
    let stored = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut aad = [0u8; 33];
        aad[0] = kind.to_byte();
        aad[1..].copy_from_slice(&id.0);
        crypto::seal_with_nonce(&dk.key, &[0; crypto::NONCE_LEN], &aad, rest)
    };
    if let Ok(plain) = blob::open(keys, &dk.key, kind, &id, &stored, raw_len) {
        assert_eq!(plain, FUZZ_BLOB_PLAINTEXT, "blob: open returned bytes that are not the blob asked for");
        assert_eq!(plain.len() as u64, u64::from(raw_len), "blob: open returned the wrong length");
    }
}

/// The header of the catalog's id filter file (`catalog.filter`, a local
/// cache file opened at every backup; the blocks after it are plain bits
/// that any value is valid for): whatever decodes must re-encode to the
/// same bytes, and describe a file length without overflow.
pub fn decode_id_filter(data: &[u8]) {
    use crate::catalog::filter::{Header, HEADER_LEN};
    if let Ok(h) = Header::decode(data) {
        assert_eq!(&h.encode()[..], &data[..HEADER_LEN], "id filter: encode(decode(b)) != b");
        assert!(h.file_len().is_some(), "id filter: a decoded header overflows its length");
    }
}

/// A listing of `locks/`, one name a line: checks that parsing and
/// grouping agree (each object grouped under the lock its name names, a
/// record first, probes and unknown names apart) and that judging a
/// release never panics.
pub fn decode_lock_names(data: &[u8]) {
    use crate::lock::{self, LockName};
    let text = String::from_utf8_lossy(data);
    let listed: Vec<crate::store::Listed> = text
        .lines()
        .enumerate()
        .map(|(i, n)| crate::store::Listed { name: n.to_string(), size: 0, modified_ms: i as i64 })
        .collect();
    let (groups, loose) = lock::group(&listed);
    let mut grouped = 0;
    for g in &groups {
        for n in &g.objects {
            match lock::parse_name(n) {
                LockName::Record { kind } => assert!(n == &g.id && g.named == Some(kind), "lock: {n:?} in {g:?}"),
                LockName::Legacy => assert!(n == &g.id && g.named.is_none(), "lock: {n:?} in {g:?}"),
                LockName::Refresh { id, .. } | LockName::End { id } => assert_eq!(id, g.id, "lock: {n:?}"),
                other => panic!("lock: {n:?} ({other:?}) grouped"),
            }
        }
        if g.has_record {
            assert_eq!(g.objects.first(), Some(&g.id), "lock: the record is not first");
        }
        grouped += g.objects.len();
        let _ = lock::end_releases(&g.id, data);
    }
    for l in &loose {
        assert!(matches!(lock::parse_name(&l.name), LockName::Probe | LockName::Other), "lock: {:?} loose", l.name);
    }
    assert!(grouped + loose.len() <= listed.len(), "lock: objects appeared");
}

/// An S3 `ListObjectVersions` answer (object lock maintenance reads it
/// from the server): never panics, yields only versions with a key and a
/// version id, and no more than the input can hold (each takes at least
/// `<Version><Key>k</Key><VersionId>v</VersionId></Version>`, 51 bytes;
/// a version and a delete marker may share bytes).
pub fn parse_s3_versions(data: &[u8]) {
    let page = crate::object_lock::parse_list_versions(data);
    for v in &page.versions {
        assert!(!v.key.is_empty() && !v.version_id.is_empty(), "s3 versions: empty key or version id");
    }
    assert!(page.versions.len() * 51 <= data.len() * 2, "s3 versions: more versions than the input holds");
}
