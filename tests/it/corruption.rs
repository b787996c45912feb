//! Damaged objects: check names every damaged object, and restore and dump never hand out bytes that differ from what was backed up.

use std::path::{Path, PathBuf};

use crate::support::{
    assert_code, assert_no_panic, file_contents, flip_middle_byte, random_bytes, restored_at, stderr, truncate_half,
    TestRepo,
};

/// A repository with one snapshot spread over several packs, and its source.
struct Fixture {
    repo: TestRepo,
    src: PathBuf,
}

fn fixture() -> Fixture {
    let repo = TestRepo::small();
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("dir/nested")).unwrap();
    std::fs::write(src.join("big1.bin"), random_bytes(21, 1_300_000)).unwrap();
    std::fs::write(src.join("big2.bin"), random_bytes(22, 900_000)).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha alpha alpha\n").unwrap();
    std::fs::write(src.join("dir/b.txt"), b"bravo\n".repeat(100)).unwrap();
    std::fs::write(src.join("dir/nested/c.txt"), random_bytes(23, 40_000)).unwrap();
    repo.backup(&[&src], &[]);
    Fixture { repo, src }
}

/// Two ways of damaging an object.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip,
    Truncate,
}

const DAMAGES: [Damage; 2] = [Damage::Flip, Damage::Truncate];

impl Damage {
    fn apply(self, path: &Path) {
        match self {
            Damage::Flip => flip_middle_byte(path),
            Damage::Truncate => truncate_half(path),
        }
    }
}

/// A fresh copy of the fixture's repository with the object at `key`
/// (relative to the repository) damaged.
fn damaged_copy(f: &Fixture, key: &str, damage: Damage) -> TestRepo {
    let copy = f.repo.copy();
    damage.apply(&copy.repo.join(key));
    copy
}

/// Packs of the repository, by object key.
fn packs(r: &TestRepo) -> Vec<String> {
    r.objects_under("tenants/default/packs/").into_iter().map(|(k, _)| k).collect()
}

/// True when the pack at `key` holds trees: damaging it breaks `ls`.
fn is_tree_pack(f: &Fixture, key: &str) -> bool {
    // Cutting a pack in half loses the blobs of its second half, whatever
    // the layout; a flipped byte might land in the (unread) header.
    let copy = damaged_copy(f, key, Damage::Truncate);
    let out = copy.cmd(&["ls", "latest", "--recursive"]);
    assert_no_panic(&out, "ls of a damaged repository");
    !out.status.success()
}

fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap()
}

/// `check --read-data` exits 1, and its output names `object`.
fn assert_check_names(r: &TestRepo, object: &str, what: &str) {
    let out = r.cmd(&["check", "--read-data"]);
    assert_code(&out, 1, &format!("check --read-data with {what}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains(object), "check does not name {object} ({what}):\n{text}");
}

/// Restores the latest snapshot: every file that appears must equal the
/// source; if any is missing the exit code must be non-zero. Returns true
/// when everything came back.
fn assert_restore_never_lies(r: &TestRepo, src: &Path, what: &str) -> bool {
    let target = r.path("restore-target");
    let _ = std::fs::remove_dir_all(&target);
    let out = r.cmd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_no_panic(&out, what);
    let expected = file_contents(src);
    let base = restored_at(&target, src);
    let got = if base.is_dir() { file_contents(&base) } else { Default::default() };
    for (rel, bytes) in &got {
        let want = expected.get(rel).unwrap_or_else(|| panic!("{what}: restore made an unknown file {rel:?}"));
        assert!(bytes == want, "{what}: restored {} has wrong bytes", rel.display());
    }
    let complete = got.len() == expected.len();
    if !complete {
        assert_ne!(out.status.code(), Some(0), "{what}: files are missing but restore exited 0");
    }
    if !out.status.success() {
        assert!(!stderr(&out).trim().is_empty(), "{what}: restore failed without a message");
    }
    complete && out.status.success()
}

/// Dumps every source file: exit 0 with the exact bytes, or non-zero with
/// at most a correct prefix on stdout.
fn assert_dump_never_lies(r: &TestRepo, src: &Path, what: &str) {
    for (rel, want) in file_contents(src) {
        let out = r.cmd(&["dump", "latest", src.join(&rel).to_str().unwrap()]);
        assert_no_panic(&out, what);
        if out.status.success() {
            assert!(out.stdout == want, "{what}: dump of {} exited 0 with wrong bytes", rel.display());
        } else {
            assert!(
                want.starts_with(&out.stdout),
                "{what}: failed dump of {} wrote bytes that are not the file's",
                rel.display()
            );
        }
    }
}

#[test]
fn damaged_data_pack_is_named_by_check_and_never_restored_wrong() {
    let f = fixture();
    let data_packs: Vec<String> = packs(&f.repo).into_iter().filter(|k| !is_tree_pack(&f, k)).collect();
    assert!(data_packs.len() >= 2, "fixture should spread data over several packs: {data_packs:?}");
    // A damaged byte that no blob covers (pack header, padding) leaves
    // every file restorable; damage to blobs must make restore fail.
    let mut n_incomplete = 0;
    for key in &data_packs {
        for d in DAMAGES {
            let what = format!("{d:?} data pack {key}");
            let r = damaged_copy(&f, key, d);
            assert_check_names(&r, name_of(key), &what);
            if !assert_restore_never_lies(&r, &f.src, &what) {
                n_incomplete += 1;
            }
            assert_dump_never_lies(&r, &f.src, &what);
        }
    }
    assert!(n_incomplete > 0, "no damage to any data pack made restore fail");
}

#[test]
fn damaged_tree_pack_is_named_by_check_and_never_restored_wrong() {
    let f = fixture();
    let tree_packs: Vec<String> = packs(&f.repo).into_iter().filter(|k| is_tree_pack(&f, k)).collect();
    assert_eq!(tree_packs.len(), 1, "one snapshot's trees fit in one pack");
    let mut n_incomplete = 0;
    for d in DAMAGES {
        let key = &tree_packs[0];
        let what = format!("{d:?} tree pack {key}");
        let r = damaged_copy(&f, key, d);
        assert_check_names(&r, name_of(key), &what);
        if !assert_restore_never_lies(&r, &f.src, &what) {
            n_incomplete += 1;
        }
        assert_dump_never_lies(&r, &f.src, &what);
    }
    assert!(n_incomplete > 0, "no damage to the tree pack made restore fail");
}

#[test]
fn damaged_index_delta_is_named_by_check_and_never_restored_wrong() {
    let f = fixture();
    let index = f.repo.objects_under("tenants/default/index/");
    assert!(!index.is_empty());
    for (key, _) in &index {
        for d in DAMAGES {
            let what = format!("{d:?} index delta {key}");
            let r = damaged_copy(&f, key, d);
            assert_check_names(&r, name_of(key), &what);
            assert_restore_never_lies(&r, &f.src, &what);
            assert_dump_never_lies(&r, &f.src, &what);
        }
    }
}

#[test]
fn damaged_snapshot_record_is_named_by_check_and_not_restored() {
    let f = fixture();
    let snaps = f.repo.objects_under("tenants/default/snapshots/");
    assert_eq!(snaps.len(), 1);
    for d in DAMAGES {
        let key = &snaps[0].0;
        let what = format!("{d:?} snapshot record {key}");
        let r = damaged_copy(&f, key, d);
        assert_check_names(&r, name_of(key), &what);
        assert!(!assert_restore_never_lies(&r, &f.src, &what));
        assert_dump_never_lies(&r, &f.src, &what);
    }
}

#[test]
fn damaged_config_fails_every_command_with_a_config_message() {
    let f = fixture();
    for d in DAMAGES {
        let what = format!("{d:?} config");
        let r = damaged_copy(&f, "config", d);
        for args in [&["snapshots"][..], &["check", "--read-data"], &["ls", "latest"]] {
            let out = r.run(args, 1);
            assert!(
                stderr(&out).contains("config"),
                "{what}, {args:?}: message does not mention the config:\n{}",
                stderr(&out)
            );
        }
        assert!(!assert_restore_never_lies(&r, &f.src, &what));
        assert_dump_never_lies(&r, &f.src, &what);
    }
}

#[test]
fn damaged_key_slot_is_refused_clearly_without_a_panic() {
    let f = fixture();
    let slots = f.repo.objects_under("tenants/default/keys/");
    assert_eq!(slots.len(), 1);
    for d in DAMAGES {
        let what = format!("{d:?} key slot");
        let r = damaged_copy(&f, &slots[0].0, d);
        for args in [&["snapshots"][..], &["check", "--read-data"]] {
            let out = r.cmd(args);
            assert_no_panic(&out, &what);
            let code = out.status.code();
            assert!(code == Some(12) || code == Some(1), "{what}, {args:?}: exit {code:?}\n{}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains("key") || err.contains("password"), "{what}: unclear message:\n{err}");
        }
        assert!(!assert_restore_never_lies(&r, &f.src, &what));
        assert_dump_never_lies(&r, &f.src, &what);
    }
}

#[test]
fn damaged_keyring_is_refused_clearly_without_a_panic() {
    let f = fixture();
    let rings = f.repo.objects_under("tenants/default/keyring/");
    assert_eq!(rings.len(), 1);
    for d in DAMAGES {
        let what = format!("{d:?} keyring");
        let r = damaged_copy(&f, &rings[0].0, d);
        let out = r.run(&["snapshots"], 1);
        assert!(stderr(&out).contains(name_of(&rings[0].0)), "{what}: keyring not named:\n{}", stderr(&out));
        assert!(!assert_restore_never_lies(&r, &f.src, &what));
    }
}
