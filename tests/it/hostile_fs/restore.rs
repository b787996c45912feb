//! A local user racing a restore, or one who planted links in its target:
//! nothing is written, chmodded, listed or deleted outside the target, and
//! nothing of the snapshot is more open while it is restored than it is in
//! the snapshot. Races are fixed with the restore's pause points
//! (`restore-before-write`, `restore-after-write`, whose detail is the
//! file's path relative to the target).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A restore (or another command) stopped at a pause point.
struct Paused {
    child: Child,
    dir: PathBuf,
}

impl Paused {
    /// Starts `args`, to stop at `point` for `detail`, and waits until it has.
    fn start(r: &TestRepo, args: &[&str], point: &str, detail: &str, env: &[(&str, &str)]) -> Paused {
        let dir = r.path(&format!("pause-{point}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = r.command(args);
        cmd.env("STRONGROOM_TEST_PAUSE", format!("{point}:{detail}"))
            .env("STRONGROOM_TEST_PAUSE_DIR", &dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.join("reached").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!("exited ({status}) before {point}:{detail}\n{}", stderr(&out));
            }
            assert!(Instant::now() < deadline, "{point}:{detail} not reached");
            std::thread::sleep(Duration::from_millis(5));
        }
        Paused { child, dir }
    }

    /// Lets it go on and waits for it to end.
    fn finish(self) -> Output {
        std::fs::write(self.dir.join("go"), b"").unwrap();
        self.child.wait_with_output().unwrap()
    }

    /// Kills it where it stands.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Everything below `dir` (not following symlinks): relative path → (mode,
/// the start of a regular file's content), and `dir`'s own mode.
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, (u32, String)> {
    let mut out = BTreeMap::new();
    let md = std::fs::symlink_metadata(dir).unwrap();
    out.insert(PathBuf::new(), (md.mode(), String::new()));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let content = if md.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                format!("{} bytes: {}", bytes.len(), String::from_utf8_lossy(&bytes[..bytes.len().min(24)]))
            } else {
                String::new()
            };
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), (md.mode(), content));
        }
    }
    out
}

/// A directory outside every target, with a file in it.
fn outside_dir(r: &TestRepo) -> PathBuf {
    let outside = r.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious.txt"), b"outside the target\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o750)).unwrap();
    outside
}

/// `src`'s path relative to a target it is restored into (a pause detail).
fn rel(src: &Path, below: &str) -> String {
    src.strip_prefix("/").unwrap().join(below).to_string_lossy().to_string()
}

/// The directory `d` of the restored tree is swapped for a symlink to a
/// directory outside while the restore is stopped before writing its
/// first file: nothing lands outside, the outside directory's mode is
/// unchanged, and the restore reports the files it could not write.
fn swapped_directory_leads_nowhere(env: &[(&str, &str)]) {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..30u64 {
        std::fs::write(src.join(format!("d/f{i:02}")), random_bytes(i, 3000)).unwrap();
    }
    r.backup(&[&src], &[]);
    let outside = outside_dir(&r);
    let before = snapshot_of(&outside);
    let target = r.path("t");
    let at = restored_at(&target, &src);

    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let paused = Paused::start(&r, &args, "restore-before-write", &rel(&src, "d/f00"), env);
    std::fs::rename(at.join("d"), at.join("d.moved")).unwrap();
    std::os::unix::fs::symlink(&outside, at.join("d")).unwrap();
    let out = paused.finish();

    assert_eq!(snapshot_of(&outside), before, "the restore wrote or changed modes outside its target");
    assert_code(&out, 1, "restore through a swapped directory");
    let err = stderr(&out);
    assert!(err.contains("d/f00") && err.contains("symlink"), "{err}");
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_restore_leads_nowhere_outside() {
    swapped_directory_leads_nowhere(&[]);
}

#[test]
fn a_directory_swapped_for_a_symlink_leads_nowhere_without_openat2_either() {
    swapped_directory_leads_nowhere(&[("STRONGROOM_TEST_NO_OPENAT2", "1")]);
}

/// Group and other bits of every entry below `at` not in the snapshot's
/// (the source's) mode of that entry.
fn wider_than_snapshot(src: &Path, at: &Path) -> Vec<String> {
    let mut wider = Vec::new();
    for (p, (mode, _)) in snapshot_of(at) {
        let Ok(want) = std::fs::symlink_metadata(src.join(&p)) else { continue };
        if want.file_type().is_symlink() {
            continue;
        }
        let extra = mode & 0o077 & !want.mode();
        if extra != 0 {
            wider.push(format!(
                "{}: {:o} where the snapshot has {:o}",
                p.display(),
                mode & 0o7777,
                want.mode() & 0o7777
            ));
        }
    }
    wider
}

#[test]
fn a_private_directory_is_never_more_open_while_restored_nor_after_a_kill() {
    let r = TestRepo::small();
    let src = r.path("src");
    build_all_kinds(&src);
    r.backup(&[&src], &[]);
    let target = r.path("t");
    let at = restored_at(&target, &src);

    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let paused = Paused::start(&r, &args, "restore-after-write", &rel(&src, "private-dir/inner"), &[]);
    let mode = std::fs::symlink_metadata(at.join("private-dir")).unwrap().mode() & 0o7777;
    assert_eq!(mode & 0o077, 0, "private-dir is {mode:o} while its file is restored (0700 in the snapshot)");
    assert_eq!(wider_than_snapshot(&src, &at), Vec::<String>::new(), "more open than the snapshot mid-restore");
    paused.kill();
    assert_eq!(wider_than_snapshot(&src, &at), Vec::<String>::new(), "more open than the snapshot after a kill");
}

#[test]
fn a_hard_link_planted_in_the_target_keeps_its_content() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"the snapshot's content of a\n").unwrap();
    std::fs::write(src.join("b.txt"), b"the snapshot's content of b\n").unwrap();
    r.backup(&[&src], &[]);
    let outside = outside_dir(&r);
    let victim = outside.join("precious.txt");

    // Planted before the restore, for each overwrite mode that writes.
    for mode in ["if-changed", "always"] {
        let target = r.path(&format!("t-{mode}"));
        let at = restored_at(&target, &src);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::hard_link(&victim, at.join("a.txt")).unwrap();
        r.json(&["restore", "latest", "--target", target.to_str().unwrap(), "--overwrite", mode]);
        let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
        assert_eq!(read(&victim), "outside the target\n", "{mode}: written through the link");
        assert_eq!(read(&at.join("a.txt")), "the snapshot's content of a\n", "{mode}");
    }

    // Planted into an empty target while the restore is about to make the file.
    let target = r.path("t-race");
    let at = restored_at(&target, &src);
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let paused = Paused::start(&r, &args, "restore-before-write", &rel(&src, "b.txt"), &[]);
    std::fs::hard_link(&victim, at.join("b.txt")).unwrap();
    let out = paused.finish();
    assert_code(&out, 0, "restore with a hard link planted mid-restore");
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
    assert_eq!(read(&victim), "outside the target\n", "written through the planted link");
    assert_eq!(read(&at.join("b.txt")), "the snapshot's content of b\n");
}

#[test]
fn a_symlink_planted_where_the_snapshot_has_a_directory_leads_nowhere_outside() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f.txt"), b"the snapshot's f\n").unwrap();
    set_mtime(&src.join("d/f.txt"), 1_700_000_000, 5);
    r.backup(&[&src], &[]);
    // Outside: a file of the same name, size and mtime, but other bytes.
    let outside = outside_dir(&r);
    std::fs::write(outside.join("f.txt"), b"outsider's bytes\n").unwrap();
    set_mtime(&outside.join("f.txt"), 1_700_000_000, 5);
    let before = snapshot_of(&outside);
    let target = r.path("t");
    let at = restored_at(&target, &src);
    std::fs::create_dir_all(&at).unwrap();
    std::os::unix::fs::symlink(&outside, at.join("d")).unwrap();

    r.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(snapshot_of(&outside), before, "the restore changed the directory behind the planted link");
    assert!(std::fs::symlink_metadata(at.join("d")).unwrap().is_dir(), "the planted link is still there");
    assert_eq!(std::fs::read(at.join("d/f.txt")).unwrap(), b"the snapshot's f\n");
}

#[test]
fn delete_never_lists_or_removes_through_a_symlink() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/keep.txt"), b"in the snapshot\n").unwrap();
    r.backup(&[&src], &[]);
    let outside = outside_dir(&r);
    let before = snapshot_of(&outside);
    let target = r.path("t");
    r.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let at = restored_at(&target, &src);
    // The snapshot's directory d is now a link outside; a link the
    // snapshot lacks points outside too.
    std::fs::remove_dir_all(at.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, at.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, at.join("extra-link")).unwrap();

    let plan = r.json(&["restore", "latest", "--target", target.to_str().unwrap(), "--delete", "--dry-run"]);
    let deletes: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delete")
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(deletes, vec![at.join("extra-link").to_str().unwrap()], "{plan}");

    let done = r.json(&["restore", "latest", "--target", target.to_str().unwrap(), "--delete"]);
    assert_eq!(u64_field(&done, "deleted"), 1, "{done}");
    assert_eq!(snapshot_of(&outside), before, "--delete removed or changed something outside the target");
    assert!(std::fs::symlink_metadata(at.join("extra-link")).is_err(), "the link was not removed");
    assert_eq!(std::fs::read(at.join("d/keep.txt")).unwrap(), b"in the snapshot\n");
}

#[test]
fn verify_restore_restores_into_a_private_directory() {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"checked\n").unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    r.backup(&[&src], &[]);
    let tmp = r.path("shared-tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    let args = ["verify-restore", "latest", "--tmp-dir", tmp.to_str().unwrap()];
    let paused = Paused::start(&r, &args, "restore-after-write", &rel(&src, "f"), &[]);
    let dirs: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let mode = std::fs::symlink_metadata(&dirs[0]).unwrap().mode() & 0o7777;
    let out = paused.finish();
    assert_eq!(mode, 0o700, "verify-restore's temporary directory is {mode:o}");
    assert_code(&out, 0, "verify-restore");
}
