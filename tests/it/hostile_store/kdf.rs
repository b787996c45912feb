//! Key slots a store writer forges to make opening a tenant expensive:
//! Argon2id parameters that ask for gigabytes or minutes, and floods of
//! slots. Over-cap slots are refused before any Argon2id work (a warning
//! names each), at most 16 slots are tried per open, and the slot that
//! opened last time on a host is tried first there, so forged slots do not
//! lock out a host that opened the tenant before. Also: new password slots
//! get at least OWASP's 19 MiB.

use crate::support::{assert_code, stderr, TestRepo};

/// A password slot (kind 1) as FORMAT.md section 7 lays it out, with the
/// given Argon2id parameters and a sealed part of random bytes: it decodes,
/// and opens under no password.
fn forged_password_slot(memory_kib: u32, passes: u32, lanes: u32, seed: u8) -> Vec<u8> {
    let mut b = b"SRKS".to_vec();
    b.push(1); // version
    b.push(1); // kind: password
    b.extend_from_slice(&1_764_072_000i64.to_le_bytes());
    let label = b"default";
    b.extend_from_slice(&(label.len() as u32).to_le_bytes());
    b.extend_from_slice(label);
    b.extend_from_slice(&28u32.to_le_bytes());
    for v in [memory_kib, passes, lanes] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[seed; 16]); // salt
    b.extend_from_slice(&crate::support::random_bytes(u64::from(seed), 60));
    b
}

/// Writes `slot` as a new key slot of `default`; returns its object key.
fn plant_slot(r: &TestRepo, name: &str, slot: &[u8]) -> String {
    let key = format!("tenants/default/keys/{name}");
    std::fs::write(r.repo.join(&key), slot).unwrap();
    key
}

#[test]
fn forged_slots_with_argon2_parameters_over_the_caps_are_skipped_unrun() {
    let r = TestRepo::new();
    // Each over exactly one cap, each cheap enough that a reader without
    // the caps would simply run it (and the first would take 1 GiB).
    let forged = [
        ("00000000000000000000000000000001", forged_password_slot(1024 * 1024 + 1, 1, 1, 1)),
        ("00000000000000000000000000000002", forged_password_slot(1024, 11, 1, 2)),
        ("00000000000000000000000000000003", forged_password_slot(17 * 8, 1, 17, 3)),
    ];
    let keys: Vec<String> = forged.iter().map(|(name, slot)| plant_slot(&r, name, slot)).collect();
    // A host that never opened the tenant reads every slot (one that did
    // reads the slot that opened last time by name, and no other).
    let fresh = TestRepo { repo: r.repo.clone(), ..TestRepo::uninitialized() };
    let out = fresh.run(&["snapshots"], 0);
    let err = stderr(&out);
    for key in &keys {
        let line =
            err.lines().find(|l| l.contains(key.as_str())).unwrap_or_else(|| panic!("no warning names {key}:\n{err}"));
        assert!(line.contains("exceeds the limit"), "{line}");
    }
    // Listing shows the real slot only.
    let list = r.json(&["tenant", "key", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // At the caps, a slot is still read (and tried: it opens nothing).
    plant_slot(&r, "00000000000000000000000000000004", &forged_password_slot(8, 10, 1, 4));
    let out = r.run(&["tenant", "key", "list", "--json"], 0);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len(), 2);
}

#[test]
fn at_most_16_slots_are_tried_and_a_host_that_opened_before_still_opens() {
    let r = TestRepo::new();
    r.run(&["snapshots"], 0);
    // 17 cheap forged slots: tried before the real one (19 MiB) by a host
    // that has no reason to prefer any.
    for i in 0..17u8 {
        plant_slot(&r, &format!("{:032x}", u32::from(i) + 0x100), &forged_password_slot(8, 1, 1, i + 10));
    }
    let fresh = TestRepo { repo: r.repo.clone(), ..TestRepo::uninitialized() };
    let out = fresh.run(&["snapshots"], 1);
    let err = stderr(&out);
    assert!(err.contains("none of the 16 key slots tried") && err.contains("2 more were not tried"), "{err}");
    // The host that opened the tenant before tries that slot first.
    r.run(&["snapshots"], 0);
    // A wrong password tries 16 of the 18 and says so (not exit 12: the
    // two left might have opened).
    let out = r.command(&["snapshots"]).env("STRONGROOM_PASSWORD", "wrong").output().unwrap();
    assert_code(&out, 1, "a wrong password among 18 slots");
    assert!(stderr(&out).contains("none of the 16 key slots tried"), "{}", stderr(&out));
}

#[test]
fn kdf_memory_below_19_mib_is_refused() {
    let r = TestRepo::uninitialized();
    let out = r.run(&["init", "--kdf-memory-kib", "1000"], 2);
    assert!(stderr(&out).contains("19456"), "{}", stderr(&out));
    assert!(!r.repo.join("config").exists(), "init wrote a config");
    r.run(&["init", "--kdf-memory-kib", "19456", "--kdf-passes", "1"], 2);
    r.ok(&["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"]);
    for args in [
        &["tenant", "add", "b", "--kdf-memory-kib", "19455"][..],
        &["tenant", "passwd", "--kdf-memory-kib", "1024"],
        &["tenant", "key", "add", "--kdf-memory-kib", "1"],
        &["tenant", "key", "add", "--kdf-memory-kib", "2000000"],
    ] {
        let out = r.command(args).env("STRONGROOM_NEW_PASSWORD", "x").output().unwrap();
        assert_code(&out, 2, &args.join(" "));
    }
    assert!(r.objects_under("tenants/b/").is_empty());
    assert_eq!(r.objects_under("tenants/default/keys/").len(), 1);
}
