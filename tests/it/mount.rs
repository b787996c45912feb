//! Mount: the FUSE view serves every file of a snapshot exactly (content,
//! sizes, modes, mtimes, symlinks, hard links), random-offset reads are
//! right, `latest`/`tags`/`hosts` point where they should, a snapshot made
//! while mounted appears, a concurrent prune that moves blobs does not
//! break reads, and SIGTERM leaves no mount behind. These tests mount for
//! real and say they are skipped when FUSE is not available.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::*;

/// Why mounting cannot work here, if it cannot.
fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is absent".into());
    }
    if !nix::unistd::geteuid().is_root() {
        let in_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").exists()))
            .unwrap_or(false);
        if !in_path {
            return Some("not root and fusermount3 is not installed".into());
        }
    }
    None
}

macro_rules! require_fuse {
    () => {
        if let Some(why) = fuse_unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn mounted(mp: &Path) -> bool {
    let want = mp.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// A running `strongroom mount`; SIGTERM on drop.
struct Mount {
    child: Option<Child>,
    mp: PathBuf,
}

impl Mount {
    fn start(r: &TestRepo, mp: &Path) -> Mount {
        std::fs::create_dir_all(mp).unwrap();
        let child = r
            .command(&[OsStr::new("mount"), mp.as_os_str()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut m = Mount { child: Some(child), mp: mp.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !mounted(mp) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let out = m.child.take().unwrap().wait_with_output().unwrap();
                panic!("mount exited with {status} before mounting:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            assert!(Instant::now() < deadline, "mount did not appear in /proc/mounts within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// Sends `signal` and returns the exit output.
    fn stop(mut self, signal: nix::sys::signal::Signal) -> std::process::Output {
        let child = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        if mounted(&self.mp) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

use std::ffi::OsStr;

/// Polls until `f` holds (60 s at most).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn mount_serves_every_file_and_follows_new_snapshots() {
    require_fuse!();
    let r = TestRepo::small();
    let src = r.path("src");
    build_all_kinds(&src);
    let snap = r.backup(&[&src], &["--tag", "daily", "--host", "web-1"]);
    let short = snap["snapshot_id"].as_str().unwrap()[..8].to_string();
    let mp = r.path("mnt");
    let m = Mount::start(&r, &mp);

    // Layout: one snapshot, named by time and short id; latest, tags, hosts.
    assert_eq!(names(&mp), ["hosts", "latest", "snapshots", "tags"]);
    let snaps = names(&mp.join("snapshots"));
    assert_eq!(snaps.len(), 1);
    let name = &snaps[0];
    assert!(name.ends_with(&format!("_{short}")) && name.len() == 19 + 1 + 8, "snapshot dir name {name}");
    assert_eq!(std::fs::read_link(mp.join("latest")).unwrap(), Path::new("snapshots").join(name));
    assert_eq!(names(&mp.join("tags")), ["daily"]);
    assert_eq!(names(&mp.join("tags/daily")), std::slice::from_ref(name));
    assert_eq!(names(&mp.join("hosts")), ["web-1"]);
    assert_eq!(std::fs::read_link(mp.join("hosts/web-1").join(name)).unwrap(), Path::new("../../snapshots").join(name));

    // Every entry through the mount equals the source (content, sizes,
    // modes, mtimes, symlink targets, hard-link groups), via each route.
    for via in [mp.join("latest"), mp.join("tags/daily").join(name), mp.join("snapshots").join(name)] {
        assert_trees_equal_with(&src, &restored_at(&via, &src), false);
    }

    // Random-offset reads of the large file.
    let big = std::fs::read(src.join("big.bin")).unwrap();
    let f = std::fs::File::open(restored_at(&mp.join("latest"), &src).join("big.bin")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for _ in 0..200 {
        let off = rng.gen_range(0..big.len());
        let len = rng.gen_range(1..300_000).min(big.len() - off);
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == big[off..off + len], "bytes at {off}+{len} differ");
    }
    // Past the end: nothing.
    let mut buf = [0u8; 16];
    assert_eq!(f.read_at(&mut buf, big.len() as u64 + 10).unwrap(), 0);
    drop(f);

    // Read-only.
    assert!(std::fs::write(restored_at(&mp.join("latest"), &src).join("new"), b"x").is_err());

    // A second mount on the busy mountpoint: one line, exit 1.
    let out = r.run(&[OsStr::new("mount"), mp.as_os_str()], 1);
    let err = stderr(&out);
    assert!(err.contains("busy") && err.trim().lines().count() == 1, "{err}");

    // A snapshot made while mounted appears without remounting.
    std::fs::write(src.join("hello.txt"), b"changed while mounted\n").unwrap();
    r.backup(&[&src], &["--host", "web-2"]);
    eventually("second snapshot in snapshots/", || names(&mp.join("snapshots")).len() == 2);
    eventually("hosts/web-2", || names(&mp.join("hosts")).contains(&"web-2".to_string()));
    let latest = std::fs::read_link(mp.join("latest")).unwrap();
    assert_ne!(latest, Path::new("snapshots").join(name));
    assert_eq!(
        std::fs::read(restored_at(&mp.join("latest"), &src).join("hello.txt")).unwrap(),
        b"changed while mounted\n"
    );

    // A safety snapshot (newer still) shows in snapshots/ but never becomes
    // latest, as on the command line.
    std::fs::write(src.join("hello.txt"), b"the target before a restore\n").unwrap();
    r.backup(&[&src], &["--host", "web-2", "--tag", "safety"]);
    eventually("third snapshot in snapshots/", || names(&mp.join("snapshots")).len() == 3);
    eventually("tags/safety", || names(&mp.join("tags")).contains(&"safety".to_string()));
    assert_eq!(std::fs::read_link(mp.join("latest")).unwrap(), latest, "latest moved to a safety snapshot");

    // SIGTERM unmounts cleanly, even with a file open in the mount (it is
    // then detached lazily).
    let held = std::fs::File::open(restored_at(&mp.join("latest"), &src).join("big.bin")).unwrap();
    let out = m.stop(nix::sys::signal::Signal::SIGTERM);
    assert_code(&out, 0, "mount after SIGTERM");
    assert!(!mounted(&mp), "still in /proc/mounts after SIGTERM");
    drop(held);
}

#[test]
fn mount_reads_survive_a_concurrent_prune() {
    require_fuse!();
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let keep = random_bytes(61, 1_500_000);
    std::fs::write(src.join("gone"), random_bytes(60, 1_500_000)).unwrap();
    std::fs::write(src.join("keep"), &keep).unwrap();
    r.backup(&[&src], &[]);
    std::fs::remove_file(src.join("gone")).unwrap();
    r.backup(&[&src], &[]);
    let mp = r.path("mnt");
    let m = Mount::start(&r, &mp);
    assert_eq!(names(&mp.join("snapshots")).len(), 2);

    // Forget the first snapshot and repack everything: the blobs of
    // `keep` move to new packs and the old packs are deleted.
    r.json(&["forget", "--keep-last", "1"]);
    let pruned = r.json(&["prune", "--max-unused", "0"]);
    assert!(u64_field(&pruned, "packs_written") > 0, "prune repacked nothing: {pruned}");

    // Not read before the prune, so not in any cache: the mount must find
    // the blobs in their new packs.
    let through = restored_at(&mp.join("latest"), &src).join("keep");
    assert!(std::fs::read(&through).unwrap() == keep, "keep differs after prune");
    // SIGINT (Ctrl-C) unmounts cleanly too.
    let out = m.stop(nix::sys::signal::Signal::SIGINT);
    assert_code(&out, 0, "mount after SIGINT");
    assert!(!mounted(&mp));
}

#[test]
fn mount_refuses_a_missing_mountpoint() {
    let r = TestRepo::new();
    let out = r.run(&["mount", "/nonexistent/strongroom-mnt"], 1);
    let err = stderr(&out);
    assert!(err.contains("does not exist") && err.trim().lines().count() == 1, "{err}");
}

/// Waits until a paused process has reached its pause point (in `dir`),
/// or exits (then returns its exit status).
fn reached_or_exited(child: &mut Child, dir: &Path) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if dir.join("reached").exists() {
            return None;
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        assert!(Instant::now() < deadline, "neither paused nor exited within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mount_logs_its_audit_entry_before_serving_and_serves_nothing_without_it() {
    require_fuse!();
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    r.backup(&[&src], &[]);
    let mp = r.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let pause = r.path("pause");
    let spawn = |r: &TestRepo| {
        std::fs::create_dir_all(&pause).unwrap();
        r.command(&[OsStr::new("mount"), mp.as_os_str()])
            .env("STRONGROOM_TEST_PAUSE", "mount-served")
            .env("STRONGROOM_TEST_PAUSE_DIR", &pause)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Served: the entry is already in the log.
    let mut child = spawn(&r);
    let mut m = Mount { child: None, mp: mp.clone() };
    assert_eq!(reached_or_exited(&mut child, &pause), None, "mount exited before serving");
    assert!(mounted(&mp));
    let log = r.json(&["audit"]);
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["command"], "mount", "{last}");
    std::fs::write(pause.join("go"), b"").unwrap();
    // Unmounted from outside (a signal could come before its handler).
    let umount = if nix::unistd::geteuid().is_root() { vec!["umount"] } else { vec!["fusermount3", "-u"] };
    let done = std::process::Command::new(umount[0]).args(&umount[1..]).arg(&mp).status().unwrap();
    assert!(done.success(), "{umount:?} failed");
    let out = child.wait_with_output().unwrap();
    m.mp = PathBuf::new();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = r.json(&["audit"]);
    assert_eq!(log.as_array().unwrap().last().unwrap()["command"], "unmount");

    // No log, nothing mounted: the command fails before serving.
    let broken = r.copy();
    let dir = broken.repo.join("tenants/default/audit");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    std::fs::remove_dir_all(&pause).unwrap();
    let mut child = spawn(&broken);
    let status = reached_or_exited(&mut child, &pause);
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "served without its audit entry: {}", stderr(&out));
    assert!(!mounted(&mp));
}
