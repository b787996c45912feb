//! Crash safety of `forget`, `prune` and `forget --prune`: each
//! runs on a fresh copy of a multi-pack repository and is stopped at many
//! points: aborted just before its N-th store write
//! (`STRONGROOM_FAULT=abort-put:N`, N = 1, 2, … until a run completes),
//! SIGKILLed as soon as its k-th deletion is seen (deletes are not store
//! writes, so the fault never lands between them), and SIGKILLed after
//! delays spread over its measured duration. After every stop, `check
//! --read-data` passes, every snapshot that still exists restores
//! byte-identically, the snapshot set is allowed (prune: unchanged; forget:
//! each planned removal done or not, never a kept snapshot gone), and a
//! rerun completes and leaves `check --read-data` clean. Each command must
//! reach [`MIN_KILL_POINTS`]; backup's kill points are in `crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{assert_code, copy_dir, file_contents, random_bytes, stderr, u64_field, TestRepo, SMALL};

/// Versions of the tree backed up, one snapshot each.
const VERSIONS: u64 = 4;

/// Kill points each command must reach across this module.
const MIN_KILL_POINTS: usize = 50;

/// The forget policy: snapshots of odd versions carry the tag `keep`.
const POLICY: &[&str] = &["--keep-tag", "keep"];

fn kept_version(v: u64) -> bool {
    v % 2 == 1
}

/// Writes version `v` of the tree: a file shared by all versions, one of
/// this version only, one carried by versions 2k and 2k+1 (so the packs of
/// a forgotten even version hold data a kept odd version still needs:
/// prune must repack them), and one that changes only at its end.
fn write_version(dir: &Path, v: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("shared.bin"), random_bytes(1, 60_000)).unwrap();
    std::fs::write(dir.join(format!("only-{v}.bin")), random_bytes(100 + v, 40_000)).unwrap();
    std::fs::write(dir.join(format!("carry-{}.bin", v / 2)), random_bytes(300 + v / 2, 40_000)).unwrap();
    let mut grow = random_bytes(2, 40_000);
    grow.extend_from_slice(&random_bytes(200 + v, 10_000));
    std::fs::write(dir.join("sub/grow.bin"), grow).unwrap();
    std::fs::write(dir.join("sub/version.txt"), format!("version {v}\n")).unwrap();
}

/// The commands under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Forget,
    Prune,
    ForgetPrune,
}

impl Cmd {
    fn args(self) -> Vec<&'static str> {
        let mut a = Vec::new();
        match self {
            // Deleting at once (`--quarantine 0`): the kill points of a
            // quarantined forget and prune are in quarantine.rs.
            Cmd::Forget => {
                a.push("forget");
                a.extend_from_slice(POLICY);
                a.extend_from_slice(&["--quarantine", "0"]);
            }
            Cmd::Prune => a.extend_from_slice(&["prune", "--max-unused", "0", "--quarantine", "0"]),
            Cmd::ForgetPrune => {
                a.push("forget");
                a.extend_from_slice(POLICY);
                a.extend_from_slice(&["--prune", "--quarantine", "0"]);
            }
        }
        a
    }

    fn name(self) -> String {
        self.args().join(" ")
    }
}

/// The repository before forget and after it, with what each snapshot holds.
struct World {
    /// All snapshots; its cache is warm.
    before: TestRepo,
    /// `before` after `forget`: the starting point of `prune`.
    after_forget: TestRepo,
    /// The path that was backed up.
    src: PathBuf,
    /// Snapshot id → version.
    version: BTreeMap<String, u64>,
    /// File contents of each version.
    expected: Vec<BTreeMap<PathBuf, Vec<u8>>>,
    /// Every snapshot.
    all: BTreeSet<String>,
    /// The snapshots the policy keeps.
    kept: BTreeSet<String>,
}

/// A copy of a repository with its warm cache, as the crashed host would have it.
fn copy_with_cache(r: &TestRepo) -> TestRepo {
    let c = r.copy();
    copy_dir(&r.cache, &c.cache);
    c
}

fn snapshot_ids(r: &TestRepo) -> BTreeSet<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// The snapshot records in the store (their names are the ids).
fn stored_snapshot_ids(r: &TestRepo) -> BTreeSet<String> {
    r.objects_under("tenants/default/snapshots/")
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// A world whose prune has packs to repack at `--max-unused 0`. Blobs go
/// to one of two open packs at random, so (rarely) no pack mixes used and
/// unused blobs: such a world is built again, up to a few times.
fn world() -> World {
    for _ in 0..5 {
        if let Some(w) = try_world() {
            return w;
        }
    }
    panic!("five worlds in a row had no pack to repack at --max-unused 0");
}

fn try_world() -> Option<World> {
    let before = TestRepo::with_init(SMALL);
    let src = before.path("src");
    let mut version = BTreeMap::new();
    let mut expected = Vec::new();
    let (mut all, mut kept) = (BTreeSet::new(), BTreeSet::new());
    for v in 0..VERSIONS {
        write_version(&src, v);
        expected.push(file_contents(&src));
        let extra: &[&str] = if kept_version(v) { &["--tag", "keep"] } else { &[] };
        let id = before.backup(&[&src], extra)["snapshot_id"].as_str().unwrap().to_string();
        version.insert(id.clone(), v);
        all.insert(id.clone());
        if kept_version(v) {
            kept.insert(id);
        }
    }
    assert_eq!(snapshot_ids(&before), all);
    let after_forget = copy_with_cache(&before);
    after_forget.ok(&Cmd::Forget.args());
    assert_eq!(snapshot_ids(&after_forget), kept, "the policy keeps the odd versions");
    // Prune has whole packs to delete, and partly used packs to repack with
    // `--max-unused 0`. Whether the default 5 % of `forget --prune` also
    // repacks depends on which of the two open packs each blob landed in
    // (random by design), so only deletion is required there.
    for threshold in ["0", "5"] {
        let plan = after_forget.json(&["prune", "--dry-run", "--max-unused", threshold]);
        assert!(u64_field(&plan["plan"], "packs_unused") > 0, "nothing to delete: {plan}");
        if threshold == "0" && u64_field(&plan["plan"], "packs_repack") == 0 {
            eprintln!("nothing to repack at {threshold} % (random pack assignment); building another world");
            return None;
        }
    }
    Some(World { before, after_forget, src, version, expected, all, kept })
}

impl World {
    fn start(&self, cmd: Cmd) -> &TestRepo {
        match cmd {
            Cmd::Prune => &self.after_forget,
            Cmd::Forget | Cmd::ForgetPrune => &self.before,
        }
    }

    fn restores(&self, r: &TestRepo, id: &str, what: &str) {
        let v = self.version[id];
        let target = r.path(&format!("restore-{}", &id[..12]));
        let _ = std::fs::remove_dir_all(&target);
        let out = r.cmd(&["restore", &format!("{id}:{}", self.src.display()), "--target", target.to_str().unwrap()]);
        assert_code(&out, 0, &format!("{what}: restore of snapshot {} (version {v})", &id[..8]));
        assert!(
            file_contents(&target) == self.expected[v as usize],
            "{what}: snapshot {} (version {v}) restores differently",
            &id[..8]
        );
        std::fs::remove_dir_all(&target).unwrap();
    }

    /// The state after a kill (or a completed run) of `cmd`: a passing
    /// check, an allowed snapshot set that restores, and a rerun that
    /// completes and leaves `check --read-data` clean.
    fn verify(&self, cmd: Cmd, r: &TestRepo, what: &str) {
        let out = r.cmd(&["check", "--read-data"]);
        assert_code(&out, 0, &format!("check --read-data after {what}"));
        let ids = snapshot_ids(r);
        assert_eq!(ids, stored_snapshot_ids(r), "{what}: `snapshots` and the store disagree");
        match cmd {
            Cmd::Prune => assert_eq!(ids, self.kept, "{what}: prune changed the snapshot set"),
            Cmd::Forget | Cmd::ForgetPrune => {
                // Each planned removal happened or not; nothing else.
                let lost: Vec<_> = self.kept.difference(&ids).collect();
                assert!(lost.is_empty(), "{what}: snapshots the policy keeps are gone: {lost:?}");
                let unknown: Vec<_> = ids.difference(&self.all).collect();
                assert!(unknown.is_empty(), "{what}: snapshots appeared: {unknown:?}");
            }
        }
        for id in &ids {
            self.restores(r, id, what);
        }
        // The next run of the same command completes.
        let out = r.cmd(&cmd.args());
        assert_code(&out, 0, &format!("rerun of {} after {what}", cmd.name()));
        assert_eq!(stored_snapshot_ids(r), self.kept, "{what}: the rerun left the wrong snapshots");
        let out = r.cmd(&["check", "--read-data"]);
        assert_code(&out, 0, &format!("check --read-data after the rerun ({what})"));
        // Clean: a completed prune removed whatever the killed one left
        // unindexed (and forget alone never leaves packs behind).
        let err = stderr(&out);
        assert!(
            !err.contains("warning") && !err.contains("error"),
            "{what}: check after the rerun is not clean:\n{err}"
        );
    }
}

/// The objects of the starting repository (not its locks) that a kill may
/// find deleted.
struct Originals(Vec<PathBuf>);

impl Originals {
    fn of(r: &TestRepo) -> Self {
        Self(r.objects().into_iter().filter(|(k, _)| !k.contains("/locks/")).map(|(_, p)| p).collect())
    }

    fn gone(&self) -> usize {
        self.0.iter().filter(|p| !p.exists()).count()
    }
}

/// Kill points reached, and where they left the repository.
#[derive(Default, Debug)]
struct Tally {
    /// Aborted just before a store write.
    by_fault: usize,
    /// Killed just after the k-th deletion of an original object.
    by_deletion: usize,
    /// Killed after a delay.
    by_time: usize,
    /// Runs that completed (past the last store write, or before the kill).
    completed: usize,
    /// Original objects (snapshot records, index deltas, packs) already
    /// deleted at the kill → number of kills.
    gone: BTreeMap<usize, usize>,
}

impl Tally {
    fn total(&self) -> usize {
        self.by_fault + self.by_deletion + self.by_time
    }
}

/// A fresh copy of the starting repository of a command, and its objects.
struct Fresh {
    r: TestRepo,
    orig: Originals,
}

impl Fresh {
    fn new(w: &World, cmd: Cmd) -> Self {
        let r = copy_with_cache(w.start(cmd));
        let orig = Originals::of(&r);
        Self { r, orig }
    }
}

/// Checks a run that was stopped by `signal` (or completed first) and
/// records it; returns whether it was stopped.
fn after_run(w: &World, cmd: Cmd, f: &Fresh, out: &Output, signal: i32, what: &str, t: &mut Tally) -> bool {
    let gone = f.orig.gone();
    assert!(!stderr(out).contains("panicked"), "{what}: {}", stderr(out));
    let killed = !out.status.success();
    if killed {
        assert_eq!(out.status.signal(), Some(signal), "{what}: {:?}\n{}", out.status, stderr(out));
        *t.gone.entry(gone).or_default() += 1;
    } else {
        t.completed += 1;
    }
    w.verify(cmd, &f.r, what);
    killed
}

/// Runs `cmd` with `abort-put:N` for N = 1, 2, … on a fresh copy until a
/// run gets past its last store write and completes.
fn kill_before_each_store_write(w: &World, cmd: Cmd, t: &mut Tally) {
    for n in 1..=500u64 {
        let what = format!("{} with STRONGROOM_FAULT=abort-put:{n}", cmd.name());
        let f = Fresh::new(w, cmd);
        let out = f.r.command(&cmd.args()).env("STRONGROOM_FAULT", format!("abort-put:{n}")).output().unwrap();
        if !after_run(w, cmd, &f, &out, libc::SIGABRT, &what, t) {
            assert!(n > 1, "{what}: the command wrote nothing (not even its lock)");
            return;
        }
        t.by_fault += 1;
    }
    panic!("{}: never got past its 500th store write", cmd.name());
}

/// Deletes are not store writes, so the fault cannot stop a command
/// between them: watch the original objects and SIGKILL the command as
/// soon as `k` of them are gone, for k = 1 … all it deletes.
fn kill_after_each_deletion(w: &World, cmd: Cmd, deleted: usize, t: &mut Tally) {
    for k in 1..=deleted {
        let what = format!("{} killed once {k} of its {deleted} deletions were seen", cmd.name());
        let f = Fresh::new(w, cmd);
        let mut child = f.r.command(&cmd.args()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if f.orig.gone() >= k {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                break;
            }
            assert!(Instant::now() < deadline, "{what}: still running after 60 s");
            std::thread::yield_now();
        }
        let out = child.wait_with_output().unwrap();
        if after_run(w, cmd, &f, &out, libc::SIGKILL, &what, t) {
            t.by_deletion += 1;
        }
    }
}

/// Starts `cmd` on `r` and SIGKILLs it `delay` after the start; returns
/// its output and, if it ended on its own first, when.
fn run_killed_after(r: &TestRepo, cmd: Cmd, delay: Duration) -> (Output, Option<Duration>) {
    let started = Instant::now();
    let mut child = r.command(&cmd.args()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let ended = loop {
        let now = started.elapsed();
        if now >= delay {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            break None;
        }
        if child.try_wait().unwrap().is_some() {
            break Some(now);
        }
        std::thread::sleep((delay - now).min(Duration::from_millis(2)));
    };
    (child.wait_with_output().unwrap(), ended)
}

/// SIGKILLs `cmd` after `per_pass` delays spread evenly over `duration`;
/// further passes shift the delays by a fraction of a step, until `want`
/// runs were killed (at most 4 passes). A run that ends before its kill
/// shows the duration was overestimated (the machine got less busy): the
/// later delays are spread over its run time instead.
fn kill_after_delays(w: &World, cmd: Cmd, mut duration: Duration, per_pass: usize, want: usize, t: &mut Tally) {
    let mut killed = 0;
    'passes: for offset in [0.5, 0.25, 0.75, 0.125] {
        for i in 0..per_pass {
            if killed >= want {
                break 'passes;
            }
            let delay = duration.mul_f64((i as f64 + offset) / per_pass as f64);
            let what = format!("{} killed after {:.1} ms (of {:.1} ms)", cmd.name(), ms(delay), ms(duration));
            let f = Fresh::new(w, cmd);
            let (out, ended) = run_killed_after(&f.r, cmd, delay);
            if after_run(w, cmd, &f, &out, libc::SIGKILL, &what, t) {
                killed += 1;
            }
            if let Some(d) = ended {
                duration = duration.min(d);
            }
        }
    }
    t.by_time += killed;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An undisturbed run, verified like a killed one: how many original
/// objects it deletes and how long it takes.
fn undisturbed(w: &World, cmd: Cmd, verify: bool) -> (usize, Duration) {
    let f = Fresh::new(w, cmd);
    let started = Instant::now();
    let out = f.r.cmd(&cmd.args());
    let duration = started.elapsed();
    assert_code(&out, 0, &cmd.name());
    let deleted = f.orig.gone();
    if verify {
        w.verify(cmd, &f.r, &format!("{} (undisturbed)", cmd.name()));
    }
    (deleted, duration)
}

fn kill_points(cmd: Cmd) {
    let started = Instant::now();
    let w = world();
    let (deleted, _) = undisturbed(&w, cmd, true);
    assert!(deleted > 0, "{}: an undisturbed run deleted nothing", cmd.name());
    let mut t = Tally::default();
    kill_before_each_store_write(&w, cmd, &mut t);
    kill_after_each_deletion(&w, cmd, deleted, &mut t);
    // Measured just before the delays are used, on a machine as busy as
    // during the kills.
    let (_, duration) = undisturbed(&w, cmd, false);
    let want = MIN_KILL_POINTS.saturating_sub(t.total()).max(20);
    kill_after_delays(&w, cmd, duration, want, want, &mut t);
    eprintln!(
        "{}: {} kill points ({} before a store write, {} after a deletion, {} by time over {:.0} ms); \
         {} runs completed; original objects deleted at the kill → kills: {:?}; {:.1} s",
        cmd.name(),
        t.total(),
        t.by_fault,
        t.by_deletion,
        t.by_time,
        ms(duration),
        t.completed,
        t.gone,
        started.elapsed().as_secs_f64()
    );
    assert!(t.total() >= MIN_KILL_POINTS, "{}: only {} kill points: {t:?}", cmd.name(), t.total());
}

#[test]
fn forget_survives_a_kill_at_every_point() {
    kill_points(Cmd::Forget);
}

#[test]
fn prune_survives_a_kill_at_every_point() {
    kill_points(Cmd::Prune);
}

#[test]
fn forget_with_prune_survives_a_kill_at_every_point() {
    kill_points(Cmd::ForgetPrune);
}
