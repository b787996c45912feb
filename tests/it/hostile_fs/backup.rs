//! A local user racing the backup: swapping a file or directory of the
//! tree for a symlink to something private, or for another file, between
//! the walk and the read, or changing a file while it is read. The backup
//! must read exactly what it walked (or leave the entry out, with a
//! warning and exit 3), never another file's bytes. And the packs a small
//! backup stores must not give away the size of the one file it added.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::*;

/// The content of the private file outside the tree.
const SECRET: &[u8] = b"SECRET";

/// A tree `src` of a few files and a directory, and `secret`, a private
/// file outside it.
fn tree(r: &TestRepo) -> (PathBuf, PathBuf) {
    let src = r.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"first file\n").unwrap();
    std::fs::write(src.join("victim.txt"), b"an ordinary file of the user\n").unwrap();
    std::fs::write(src.join("z.txt"), b"last file\n").unwrap();
    std::fs::write(src.join("sub/inner.txt"), b"inside sub\n").unwrap();
    let secret = r.path("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    (src, secret)
}

/// Runs `backup --json src` stopped at the pause point `point` for the
/// entry `rel` (relative to `src`); once there, calls `change` and lets
/// the backup go on. Returns its output.
fn backup_racing(r: &TestRepo, src: &Path, point: &str, rel: &str, change: impl FnOnce()) -> Output {
    let pause = r.path("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let child = r
        .command(&["backup", "--json", src.to_str().unwrap()])
        .env("STRONGROOM_TEST_PAUSE", format!("{point}:{rel}"))
        .env("STRONGROOM_TEST_PAUSE_DIR", &pause)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reached = pause.join("reached");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reached.exists() {
        assert!(Instant::now() < deadline, "the backup never reached {point}:{rel}");
        std::thread::sleep(Duration::from_millis(5));
    }
    change();
    std::fs::write(pause.join("go"), b"").unwrap();
    child.wait_with_output().unwrap()
}

/// Restores the latest snapshot into a fresh directory and returns where
/// `src` landed.
fn restore_latest(r: &TestRepo, src: &Path) -> PathBuf {
    let target = r.path("restored");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    restored_at(&target, src)
}

/// Asserts a backup saved its snapshot with exit 3 and a warning naming `rel`.
fn assert_warned(out: &Output, src: &Path, rel: &str, what: &str) {
    assert_code(out, 3, "backup");
    let err = stderr(out);
    let path = src.join(rel);
    assert!(
        err.lines().any(|l| l.contains(path.to_str().unwrap()) && l.contains(what)),
        "no warning naming {} ({what}):\n{err}",
        path.display()
    );
}

/// Asserts no restored file holds `needle`.
fn assert_nowhere(root: &Path, needle: &[u8]) {
    for (rel, bytes) in file_contents(root) {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds {needle:?}", rel.display());
    }
}

#[test]
fn a_file_swapped_for_a_symlink_to_a_secret_between_walk_and_open_is_left_out() {
    let r = TestRepo::new();
    let (src, secret) = tree(&r);
    let victim = src.join("victim.txt");
    let out = backup_racing(&r, &src, "backup-before-open", "victim.txt", || {
        std::fs::remove_file(&victim).unwrap();
        symlink(&secret, &victim).unwrap();
    });
    assert_warned(&out, &src, "victim.txt", "symbolic link");
    let at = restore_latest(&r, &src);
    assert_nowhere(&at, SECRET);
    assert!(std::fs::symlink_metadata(at.join("victim.txt")).is_err(), "the swapped file was stored");
    assert_eq!(std::fs::read(at.join("a.txt")).unwrap(), b"first file\n");
    assert_eq!(std::fs::read(at.join("z.txt")).unwrap(), b"last file\n");
}

#[test]
fn a_directory_swapped_for_a_symlink_between_its_listing_and_its_open_is_not_followed() {
    let r = TestRepo::new();
    let (src, _) = tree(&r);
    let elsewhere = r.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("private.txt"), SECRET).unwrap();
    let sub = src.join("sub");
    let out = backup_racing(&r, &src, "backup-before-open", "sub", || {
        std::fs::rename(&sub, r.path("sub-moved")).unwrap();
        symlink(&elsewhere, &sub).unwrap();
    });
    assert_warned(&out, &src, "sub", "symbolic link");
    let at = restore_latest(&r, &src);
    assert_nowhere(&at, SECRET);
    assert!(!at.join("sub/private.txt").exists(), "the other directory's file was stored");
    assert_eq!(std::fs::read(at.join("z.txt")).unwrap(), b"last file\n");
}

#[test]
fn a_file_replaced_by_another_file_between_walk_and_open_is_left_out() {
    let r = TestRepo::new();
    let (src, _) = tree(&r);
    let victim = src.join("victim.txt");
    let out = backup_racing(&r, &src, "backup-before-open", "victim.txt", || {
        let other = r.path("other.txt");
        std::fs::write(&other, b"REPLACED").unwrap();
        std::fs::rename(&other, &victim).unwrap();
    });
    assert_warned(&out, &src, "victim.txt", "replaced");
    let at = restore_latest(&r, &src);
    assert_nowhere(&at, b"REPLACED");
    assert!(std::fs::symlink_metadata(at.join("victim.txt")).is_err(), "the replacing file was stored");
}

/// Backs up a tree whose file `name` of `len` random bytes is cut to
/// `len / 4` bytes once opened, and checks the warning, the exit code and
/// that what was read is what the snapshot holds.
fn check_truncated_while_read(name: &str, len: usize) {
    let r = TestRepo::new();
    let (src, _) = tree(&r);
    let file = src.join(name);
    let data = random_bytes(7, len);
    std::fs::write(&file, &data).unwrap();
    let out = backup_racing(&r, &src, "backup-before-read", name, || {
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len as u64 / 4).unwrap();
    });
    assert_warned(&out, &src, name, "changed while being read");
    let at = restore_latest(&r, &src);
    assert_eq!(std::fs::read(at.join(name)).unwrap(), &data[..len / 4], "not stored as read");
}

#[test]
fn a_small_file_truncated_while_being_read_is_stored_as_read_with_a_warning() {
    // Read by a worker of the pool.
    check_truncated_while_read("small.bin", 200 * 1024);
}

#[test]
fn a_large_file_truncated_while_being_read_is_stored_as_read_with_a_warning() {
    // Read on the reader thread (more than a worker's 1 MiB).
    check_truncated_while_read("large.bin", 3 * 1024 * 1024);
}

#[test]
fn ordinary_and_unchanged_backups_warn_about_nothing() {
    let r = TestRepo::new();
    let src = r.path("src");
    build_all_kinds(&src);
    for _ in 0..2 {
        let out = r.run(&["backup", src.to_str().unwrap()], 0);
        assert!(!stderr(&out).contains("strongroom:"), "a warning:\n{}", stderr(&out));
    }
}

/// Sizes of the packs that a backup adding one new file of `new_len`
/// random bytes to an unchanged tree stores.
fn new_pack_sizes(new_len: usize) -> Vec<u64> {
    let r = TestRepo::new();
    let (src, _) = tree(&r);
    r.backup(&[&src], &[]);
    let packs = |r: &TestRepo| -> Vec<(String, u64)> {
        r.objects_under("tenants/")
            .into_iter()
            .filter(|(k, _)| k.contains("/packs/"))
            .map(|(k, p)| (k, std::fs::metadata(p).unwrap().len()))
            .collect()
    };
    let before = packs(&r);
    std::fs::write(src.join("new.bin"), random_bytes(new_len as u64, new_len)).unwrap();
    r.backup(&[&src], &[]);
    let mut sizes: Vec<u64> = packs(&r).into_iter().filter(|p| !before.contains(p)).map(|(_, len)| len).collect();
    sizes.sort();
    sizes
}

/// Padmé: `len` rounded up so that only its top bits remain (FORMAT.md
/// section 9).
fn padme(len: u64) -> u64 {
    let e = 63 - len.leading_zeros() as u64;
    let s = 64 - e.leading_zeros() as u64;
    let mask = (1u64 << (e - s)) - 1;
    (len + mask) & !mask
}

#[test]
fn the_packs_of_a_backup_adding_one_small_file_do_not_reveal_its_size() {
    for len in [10, 40 * 1024] {
        // A tree pack (the changed directories), then the data pack.
        let sizes = new_pack_sizes(len);
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert_eq!(sizes[1], 64 * 1024, "a new file of {len} bytes: its data pack's size gives it away");
        assert_eq!(padme(sizes[0]), sizes[0], "the tree pack is not of a Padmé length");
    }
}
