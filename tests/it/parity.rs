//! What restic and borg users rely on in backup and restore: extended
//! attributes and POSIX ACLs, `--files-from`, `--one-file-system`,
//! `--exclude-if-present`, `--skip-if-unchanged`, and a symlink to a
//! directory given with a trailing slash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// The extended attributes of `path` (not following a symlink), by name.
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
}

/// A POSIX access ACL in the kernel's layout: `user::rw-`, `user:4242:r--`,
/// `group::r--`, `mask::r--`, `other::---`.
fn acl() -> Vec<u8> {
    let mut a = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(0x01u16, 6u16, u32::MAX), (0x02, 4, 4242), (0x04, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
    {
        a.extend(tag.to_le_bytes());
        a.extend(perm.to_le_bytes());
        a.extend(id.to_le_bytes());
    }
    a
}

fn restore(r: &TestRepo, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    args.extend(extra);
    r.cmd(&args)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A filesystem of type `fstype` mounted at `at` for the test's length
/// (root only; None, with the reason printed, where it cannot be).
struct Mounted(PathBuf);

impl Mounted {
    fn new(fstype: &str, at: &Path) -> Option<Mounted> {
        if !is_root() {
            eprintln!("not root: no {fstype} mount, that part is not tested");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount").args(["-t", fstype, "none"]).arg(at).output().ok()?;
        if !out.status.success() {
            eprintln!("cannot mount {fstype}: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn extended_attributes_and_posix_acls_of_files_and_directories_round_trip() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    std::fs::write(src.join("plain"), b"no attributes").unwrap();
    set_xattr(&src.join("f"), "user.origin", b"camera 2").unwrap();
    set_xattr(&src.join("f"), "user.empty", b"").unwrap();
    set_xattr(&src.join("d"), "user.project", b"alpha").unwrap();
    let acl_set = match set_xattr(&src.join("f"), "system.posix_acl_access", &acl()) {
        Ok(()) => true,
        Err(rustix::io::Errno::NOTSUP) => {
            eprintln!("this filesystem has no POSIX ACLs: the ACL is not tested");
            false
        }
        Err(e) => panic!("setting an ACL: {e}"),
    };
    let before_f = xattrs(&src.join("f"));
    r.backup(&[&src], &[]);

    let target = r.path("target");
    assert_code(&restore(&r, &target, &[]), 0, "restore");
    let at = restored_at(&target, &src);
    assert_eq!(xattrs(&at.join("f")), before_f);
    assert_eq!(xattrs(&at.join("d")), xattrs(&src.join("d")));
    assert!(xattrs(&at.join("plain")).is_empty());
    if acl_set {
        assert_eq!(xattrs(&at.join("f"))["system.posix_acl_access"], acl());
    }

    // Restore --no-xattrs sets none.
    let bare = r.path("bare");
    assert_code(&restore(&r, &bare, &["--no-xattrs"]), 0, "restore --no-xattrs");
    let at = restored_at(&bare, &src);
    assert!(!xattrs(&at.join("f")).contains_key("user.origin"));
    assert!(xattrs(&at.join("d")).is_empty());
}

#[test]
fn a_change_of_only_an_extended_attribute_is_backed_up_and_no_xattrs_stores_none() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    set_xattr(&src.join("f"), "user.v", b"1").unwrap();
    r.backup(&[&src], &[]);
    // Only the attribute changes (and with it the ctime, not the mtime).
    set_xattr(&src.join("f"), "user.v", b"2").unwrap();
    let second = r.backup(&[&src], &[]);
    assert_eq!(u64_field(&second, "files_changed"), 1, "{second}");
    let target = r.path("target");
    assert_code(&restore(&r, &target, &[]), 0, "restore");
    assert_eq!(xattrs(&restored_at(&target, &src).join("f"))["user.v"], b"2");

    // An unchanged file keeps the attributes its parent recorded.
    let third = r.backup(&[&src], &[]);
    assert_eq!(u64_field(&third, "files_unmodified"), 1, "{third}");
    let again = r.path("again");
    assert_code(&restore(&r, &again, &[]), 0, "restore");
    assert_eq!(xattrs(&restored_at(&again, &src).join("f"))["user.v"], b"2");

    // Backed up with --no-xattrs, none is restored.
    r.backup(&[&src], &["--no-xattrs"]);
    let none = r.path("none");
    assert_code(&restore(&r, &none, &[]), 0, "restore");
    assert!(xattrs(&restored_at(&none, &src).join("f")).is_empty());
}

#[test]
fn a_restore_into_a_filesystem_without_extended_attributes_warns_and_goes_on() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    set_xattr(&src.join("f"), "user.v", b"1").unwrap();
    r.backup(&[&src], &[]);
    // ramfs keeps no extended attributes.
    let target = r.path("ramfs");
    let Some(_mounted) = Mounted::new("ramfs", &target) else { return };
    let out = restore(&r, &target, &[]);
    // Reported as an entry not restored, as a failed chown is.
    assert_code(&out, 1, "restore into ramfs");
    assert!(stderr(&out).contains("extended attribute user.v"), "{}", stderr(&out));
    assert_eq!(std::fs::read(restored_at(&target, &src).join("f")).unwrap(), b"content");
}

#[test]
fn files_from_lists_paths_with_comments_and_raw_lists_with_nul() {
    let r = TestRepo::new();
    let (a, b, c) = (r.path("a"), r.path("b"), r.path("c"));
    for p in [&a, &b, &c] {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(p.join("f"), p.to_str().unwrap()).unwrap();
    }
    let list = r.path("list");
    std::fs::write(&list, format!("# what to keep\n{}\n\n{}\r\n", a.display(), b.display())).unwrap();
    let done = r.backup(&[&c], &["--files-from", list.to_str().unwrap()]);
    let snap = &r.snapshots()[0];
    let mut want: Vec<String> = [&a, &b, &c].iter().map(|p| p.display().to_string()).collect();
    want.sort();
    assert_eq!(snap["paths"], serde_json::json!(want), "{done}");

    let raw = r.path("raw");
    std::fs::write(&raw, format!("{}\0{}\0", a.display(), b.display())).unwrap();
    r.json(&["backup", "--files-from-raw", raw.to_str().unwrap()]);
    assert_eq!(r.snapshots()[1]["paths"].as_array().unwrap().len(), 2);

    // A listed path that is missing fails the backup, as a missing argument does.
    std::fs::write(&list, format!("{}\n{}\n", a.display(), r.path("missing").display())).unwrap();
    let out = r.cmd(&["backup", "--files-from", list.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("missing: cannot back up"), "{}", stderr(&out));
}

#[test]
fn one_file_system_records_a_mount_point_as_an_empty_directory() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"here").unwrap();
    let Some(_mounted) = Mounted::new("tmpfs", &src.join("mnt")) else { return };
    std::fs::write(src.join("mnt/other"), b"another filesystem").unwrap();

    r.backup(&[&src], &["--one-file-system"]);
    let target = r.path("target");
    assert_code(&restore(&r, &target, &[]), 0, "restore");
    let at = restored_at(&target, &src);
    assert_eq!(std::fs::read(at.join("f")).unwrap(), b"here");
    assert!(at.join("mnt").is_dir());
    assert_eq!(std::fs::read_dir(at.join("mnt")).unwrap().count(), 0);

    // Without it the mount is crossed.
    r.backup(&[&src], &[]);
    let all = r.path("all");
    assert_code(&restore(&r, &all, &[]), 0, "restore");
    assert_eq!(std::fs::read(restored_at(&all, &src).join("mnt/other")).unwrap(), b"another filesystem");
}

#[test]
fn exclude_if_present_and_exclude_caches_leave_out_marked_directories() {
    let r = TestRepo::new();
    let src = r.path("src");
    for d in ["marked/sub", "cache", "not-a-cache", "kept"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(src.join(d).join("f"), d).unwrap();
    }
    std::fs::write(src.join("marked/.nobackup"), b"").unwrap();
    std::fs::write(src.join("cache/CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache").unwrap();
    std::fs::write(src.join("not-a-cache/CACHEDIR.TAG"), b"Signature: something else").unwrap();

    r.backup(&[&src], &["--exclude-if-present", ".nobackup", "--exclude-caches"]);
    let target = r.path("target");
    assert_code(&restore(&r, &target, &[]), 0, "restore");
    let at = restored_at(&target, &src);
    let mut names: Vec<String> =
        std::fs::read_dir(&at).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["kept", "not-a-cache"]);

    let out = r.cmd(&["backup", "--exclude-if-present", "a/b", src.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--exclude-if-present"), "{}", stderr(&out));
}

#[test]
fn skip_if_unchanged_writes_no_snapshot_when_nothing_changed() {
    let r = TestRepo::new();
    // Not below the shared temporary directory: the snapshot records the
    // directories above the source, and other tests change that one.
    let stable = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = stable.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"v1").unwrap();
    let first = r.backup(&[&src], &["--skip-if-unchanged"]);
    assert!(first["snapshot_id"].is_string(), "{first}");
    assert_eq!(first["skipped"], false);

    let skipped = r.backup(&[&src], &["--skip-if-unchanged"]);
    assert!(skipped["snapshot_id"].is_null(), "{skipped}");
    assert_eq!(skipped["skipped"], true);
    assert_eq!(skipped["parent"], first["snapshot_id"]);
    assert_eq!(r.snapshots().len(), 1);
    let text = r.ok(&["backup", "--skip-if-unchanged", src.to_str().unwrap()]);
    assert!(text.contains("no snapshot saved"), "{text}");

    // Other tags make another snapshot; so does a change.
    r.backup(&[&src], &["--skip-if-unchanged", "--tag", "t"]);
    assert_eq!(r.snapshots().len(), 2);
    std::fs::write(src.join("f"), b"v2").unwrap();
    let changed = r.backup(&[&src], &["--skip-if-unchanged", "--tag", "t"]);
    assert!(changed["snapshot_id"].is_string(), "{changed}");
    assert_eq!(r.snapshots().len(), 3);
    r.ok(&["check"]);
}

#[test]
fn a_symlink_to_a_directory_given_with_a_trailing_slash_is_followed() {
    let r = TestRepo::new();
    let real = r.path("real");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::fs::write(real.join("sub/f"), b"through the link").unwrap();
    let link = r.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let with_slash = format!("{}/", link.display());
    let done = r.json(&["backup", &with_slash]);
    assert!(u64_field(&done, "logical_bytes") > 0, "{done}");
    assert_eq!(r.snapshots()[0]["paths"], serde_json::json!([link.display().to_string()]));
    let target = r.path("target");
    assert_code(&restore(&r, &target, &[]), 0, "restore");
    let at = restored_at(&target, &link);
    assert!(std::fs::symlink_metadata(&at).unwrap().is_dir());
    assert_eq!(std::fs::read(at.join("sub/f")).unwrap(), b"through the link");

    // Without the slash the symlink is stored as one.
    r.backup(&[&link], &[]);
    let plain = r.path("plain");
    assert_code(&restore(&r, &plain, &[]), 0, "restore");
    assert_eq!(std::fs::read_link(restored_at(&plain, &link)).unwrap(), real);

    // A trailing slash on a symlink to a file is refused.
    let file_link = r.path("file-link");
    std::os::unix::fs::symlink(real.join("sub/f"), &file_link).unwrap();
    let out = r.cmd(&["backup", &format!("{}/", file_link.display())]);
    assert_ne!(out.status.code(), Some(0));
}

/// `acl()` as a directory's default ACL.
fn set_default_acl(dir: &Path) -> bool {
    match set_xattr(dir, "system.posix_acl_default", &acl()) {
        Ok(()) => true,
        Err(rustix::io::Errno::NOTSUP) => {
            eprintln!("this filesystem has no POSIX ACLs: default ACLs are not tested");
            false
        }
        Err(e) => panic!("setting a default ACL: {e}"),
    }
}

#[test]
fn restore_removes_extended_attributes_and_acls_the_snapshot_lacks() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    std::fs::write(src.join("d/g"), b"other").unwrap();
    set_xattr(&src.join("f"), "user.keep", b"1").unwrap();
    r.backup(&[&src], &[]);

    // Added after a restore: a rerun in the default mode keeps the files
    // (same content) but not what was added to them.
    let target = r.path("target");
    assert_code(&restore(&r, &target, &[]), 0, "restore");
    let at = restored_at(&target, &src);
    set_xattr(&at.join("f"), "user.planted", b"x").unwrap();
    set_xattr(&at.join("d/g"), "user.planted", b"x").unwrap();
    let acl_set = set_xattr(&at.join("f"), "system.posix_acl_access", &acl()).is_ok();
    let default_set = set_default_acl(&at.join("d"));
    let out = restore(&r, &target, &["--json"]);
    assert_code(&out, 0, "restore again");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["kept"].as_u64(), v["files"].as_u64()), (Some(2), Some(0)), "{v}");
    assert_eq!(xattrs(&at.join("f")).into_iter().collect::<Vec<_>>(), [("user.keep".to_string(), b"1".to_vec())]);
    assert!(xattrs(&at.join("d/g")).is_empty());
    assert!(xattrs(&at.join("d")).is_empty(), "acl set: {acl_set}, default: {default_set}");

    // Restored under a directory with a default ACL: nothing inherited stays.
    let inherit = r.path("inherit");
    std::fs::create_dir_all(&inherit).unwrap();
    if set_default_acl(&inherit) {
        assert_code(&restore(&r, &inherit, &[]), 0, "restore under a default ACL");
        let at = restored_at(&inherit, &src);
        assert!(xattrs(&at.join("d/g")).is_empty(), "{:?}", xattrs(&at.join("d/g")));
        assert!(xattrs(&at.join("d")).is_empty(), "{:?}", xattrs(&at.join("d")));
        assert_eq!(xattrs(&at.join("f")).len(), 1);
    }
}
