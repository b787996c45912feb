//! Shared helpers for the integration tests: a fresh repository per test
//! ([`TestRepo`]) driving the real binary, a tree builder with every file
//! kind ([`build_all_kinds`]), and a recursive tree comparison
//! ([`assert_trees_equal`]).
//!
//! Every command runs with a cleared environment: only `PATH`, `HOME` (the
//! test's temp dir) and the repository, cache and password variables are
//! set, so a developer's own `STRONGROOM_*` settings never leak in.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rand::{RngCore, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;

pub mod proxy;
pub mod refusing_proxy;
pub mod remote;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");

/// Password of every test repository.
pub const PASSWORD: &str = "correct horse battery staple";

/// The cheapest Argon2id cost `init` and `tenant add` accept (19 MiB, 2
/// passes): fast tests that still run the real key derivation.
pub const KDF: [&str; 4] = ["--kdf-memory-kib", "19456", "--kdf-passes", "2"];

/// Small chunks and 1 MiB packs: multi-pack repositories from little data.
pub const SMALL: &[&str] = &["--chunk-sizes", "16K,64K,256K", "--pack-size-mib", "1"];

/// A fresh repository in its own temp dir, with its own cache dir.
pub struct TestRepo {
    /// Holds everything; removed on drop.
    pub dir: TempDir,
    /// The repository directory (`STRONGROOM_REPO`).
    pub repo: PathBuf,
    /// The catalog cache directory (`STRONGROOM_CACHE_DIR`).
    pub cache: PathBuf,
    /// The password (`STRONGROOM_PASSWORD`); `None` leaves it unset.
    pub password: Option<String>,
    /// More environment for every command (remote backends' settings).
    pub env: Vec<(String, String)>,
}

impl TestRepo {
    /// Opens the default tenant in this process through the library (the
    /// library-level tests), with a catalog of its own in `lib-cache`.
    pub fn open_library(&self, rt: &tokio::runtime::Runtime) -> strongroom_core::repo::Repo {
        use strongroom_core::repo::{OpenOptions, Repo, Secret};
        let store =
            strongroom_core::store::Store::open(self.repo.to_str().unwrap(), &Default::default(), false).unwrap();
        let tenant = strongroom_core::id::TenantName::new("default").unwrap();
        let opts =
            OpenOptions { cache_dir: self.path("lib-cache"), lock_wait: std::time::Duration::ZERO, memory_dir: None };
        rt.block_on(Repo::open(store, tenant, &Secret::new(PASSWORD.into()), &opts)).unwrap()
    }

    /// A new, initialized repository with default chunk and pack sizes.
    pub fn new() -> Self {
        Self::with_init(&[])
    }

    /// A new repository with small chunks and 1 MiB packs.
    pub fn small() -> Self {
        Self::with_init(SMALL)
    }

    /// A new repository initialized with extra `init` arguments.
    pub fn with_init(extra: &[&str]) -> Self {
        let r = Self::uninitialized();
        let mut args = vec!["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"];
        args.extend_from_slice(extra);
        r.ok(&args);
        r
    }

    /// Paths and password set, but no `init` run.
    pub fn uninitialized() -> Self {
        let dir = tempfile::Builder::new().prefix("strongroom-it-").tempdir().expect("create temp dir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Self { repo, cache, password: Some(PASSWORD.to_string()), env: Vec::new(), dir }
    }

    /// A scratch path inside this test's temp dir (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command for the binary with this repository's environment, stdin
    /// closed (never a terminal).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("HOME", self.dir.path())
            .env("STRONGROOM_REPO", &self.repo)
            .env("STRONGROOM_CACHE_DIR", &self.cache)
            .stdin(Stdio::null())
            .args(args);
        if let Some(p) = &self.password {
            c.env("STRONGROOM_PASSWORD", p);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs the binary and returns its output, whatever the exit code.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args).output().expect("run strongroom")
    }

    /// Runs the binary, asserts the exit code, returns the output.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S], code: i32) -> Output {
        let out = self.cmd(args);
        assert_code(&out, code, &describe(args));
        out
    }

    /// Runs the binary, asserts exit 0, returns stdout as text.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        String::from_utf8(self.run(args, 0).stdout).expect("stdout is UTF-8")
    }

    /// Runs the binary with `--json`, asserts exit 0, parses stdout.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut all: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.push(OsStr::new("--json"));
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}):\n{text}", describe(args)))
    }

    /// Backs up `paths` with extra arguments, expecting success; returns
    /// the `backup --json` summary.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut args: Vec<&OsStr> = vec![OsStr::new("backup")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend(paths.iter().map(|p| p.as_os_str()));
        self.json(&args)
    }

    /// `snapshots --json`.
    pub fn snapshots(&self) -> Vec<Value> {
        match self.json(&["snapshots"]) {
            Value::Array(v) => v,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    /// A copy of the repository (not of the cache) in a new temp dir, with
    /// a fresh, empty cache dir.
    pub fn copy(&self) -> TestRepo {
        let r = Self::uninitialized();
        copy_dir(&self.repo, &r.repo);
        TestRepo { password: self.password.clone(), ..r }
    }

    /// Every object key (relative path) of the repository with its full path.
    pub fn objects(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        walk_files(&self.repo, &mut |p| {
            let rel = p.strip_prefix(&self.repo).expect("below repo").to_string_lossy().to_string();
            out.push((rel, p.to_path_buf()));
        });
        out.sort();
        out
    }

    /// Objects whose key starts with `prefix`.
    pub fn objects_under(&self, prefix: &str) -> Vec<(String, PathBuf)> {
        self.objects().into_iter().filter(|(k, _)| k.starts_with(prefix)).collect()
    }
}

/// Where `restore latest --target t` puts the absolute source path `src`.
pub fn restored_at(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source path"))
}

fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    let parts: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().to_string()).collect();
    format!("strongroom {}", parts.join(" "))
}

/// Runs `args` as `tenant` with `password` in the environment (`None`:
/// no password at all), asserting the exit code.
pub fn run_as<S: AsRef<OsStr>>(r: &TestRepo, tenant: &str, password: Option<&str>, args: &[S], code: i32) -> Output {
    let mut c = r.command(args);
    c.env("STRONGROOM_TENANT", tenant);
    match password {
        Some(p) => c.env("STRONGROOM_PASSWORD", p),
        None => c.env_remove("STRONGROOM_PASSWORD"),
    };
    let out = c.output().expect("run strongroom");
    assert_code(&out, code, &format!("[tenant {tenant}] {}", describe(args)));
    out
}

/// Asserts an exit code, printing the command's output when it differs.
pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_panic(out, what);
}

/// Asserts the process did not panic.
pub fn assert_no_panic(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{what}: the binary panicked:\n{err}");
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Reads a JSON field as u64, with a clear message when it is absent.
pub fn u64_field(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("field {field} missing or not an integer in {v}"))
}

/// Deterministic random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Copies a directory tree of regular files and directories.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let ft = e.file_type().expect("file type");
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dest).expect("copy file");
        }
    }
}

/// Calls `f` for every regular file below `dir`.
pub fn walk_files(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let md = std::fs::symlink_metadata(&p).expect("lstat");
        if md.is_dir() {
            walk_files(&p, f);
        } else if md.is_file() {
            f(&p);
        }
    }
}

/// Flips every bit of the byte in the middle of a file.
pub fn flip_middle_byte(path: &Path) {
    let mut b = std::fs::read(path).expect("read object");
    assert!(!b.is_empty(), "{}: empty object", path.display());
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    write_replacing(path, &b);
}

/// Cuts a file to half its length.
pub fn truncate_half(path: &Path) {
    let b = std::fs::read(path).expect("read object");
    write_replacing(path, &b[..b.len() / 2]);
}

fn write_replacing(path: &Path, bytes: &[u8]) {
    // Objects may be read-only; replace rather than write in place.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    std::fs::write(path, bytes).expect("write object");
}

/// Sets a path's mtime (and atime) without following symlinks.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// What [`build_all_kinds`] made.
pub struct BuiltTree {
    /// Regular files, counting each hard link (as backup counts them).
    pub n_files: u64,
    /// Sum of the sizes of the regular files.
    pub file_bytes: u64,
    /// Relative path of the 3 MB random file.
    pub big: &'static str,
    /// Relative path of the sparse file.
    pub sparse: &'static str,
}

/// Size of the sparse file.
pub const SPARSE_LEN: u64 = 8 * 1024 * 1024;

/// Builds a tree with every file kind below `root` (created): regular
/// files (unicode names, empty, 3 MB random, sparse), relative and
/// dangling symlinks, a hard-link pair across directories, a fifo, nested
/// and empty directories, modes 0o600/0o755/0o700, and a set mtime with
/// nanoseconds on every entry.
pub fn build_all_kinds(root: &Path) -> BuiltTree {
    use std::os::unix::fs::{symlink, FileExt};
    let mk = |rel: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
    };
    let write = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        std::fs::write(&p, data).expect("write file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    mk("");
    mk("sub/deeper/deepest");
    mk("empty-dir");
    mk("private-dir");
    mk("übersicht ☃");

    write("hello.txt", b"hello, world\n", 0o644);
    write("empty", b"", 0o644);
    write("secret.key", b"not really a key\n", 0o600);
    write("run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    write("übersicht ☃/naïve café.txt", "unicode ✓ content\n".as_bytes(), 0o644);
    write("日本語.txt", "こんにちは\n".as_bytes(), 0o640);
    write("sub/deeper/deepest/leaf.txt", b"a leaf deep down\n", 0o644);
    write("sub/notes.md", &b"# notes\n".repeat(500), 0o644);
    write("private-dir/inner", b"inner\n", 0o600);
    let big = random_bytes(3, 3 * 1000 * 1000);
    write("big.bin", &big, 0o644);

    // Sparse: 8 MiB long, 4 KiB of data in the middle.
    let sparse = root.join("sparse.img");
    {
        let f = std::fs::File::create(&sparse).expect("create sparse");
        f.set_len(SPARSE_LEN).expect("set_len");
        f.write_all_at(&[0x5a; 4096], SPARSE_LEN / 2).expect("write middle");
    }

    // Hard links: one inode, two names in different directories.
    write("hard-a", b"shared by two names\n", 0o644);
    std::fs::hard_link(root.join("hard-a"), root.join("sub/hard-b")).expect("hard link");

    symlink("hello.txt", root.join("link-rel")).expect("symlink");
    symlink("../hello.txt", root.join("sub/link-up")).expect("symlink");
    symlink("does/not/exist", root.join("dangling")).expect("symlink");

    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).expect("mkfifo");

    std::fs::set_permissions(root.join("private-dir"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(root.join("sub/deeper"), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // Distinct mtimes with nanoseconds, children before their directory.
    let mut i = 0;
    set_times_below(root, &mut i);

    let mut n_files = 0;
    let mut file_bytes = 0;
    walk_files(root, &mut |p| {
        n_files += 1;
        file_bytes += std::fs::metadata(p).expect("stat").len();
    });
    BuiltTree { n_files, file_bytes, big: "big.bin", sparse: "sparse.img" }
}

fn set_times_below(dir: &Path, i: &mut i64) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let md = std::fs::symlink_metadata(&p).expect("lstat");
        if md.is_dir() {
            set_times_below(&p, i);
        }
        *i += 1;
        set_mtime(&p, 1_700_000_000 + *i * 3600, 123_456_789 + *i);
    }
}

/// One entry of a tree, as compared.
#[derive(Debug, PartialEq, Eq)]
struct EntryInfo {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    size: u64,
    link_target: Option<PathBuf>,
}

fn kind_of(md: &std::fs::Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chardev"
    } else {
        "blockdev"
    }
}

/// Everything below `root`, by relative path, with its `lstat` result.
fn list_tree(root: &Path) -> BTreeMap<PathBuf, std::fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let p = e.expect("entry").path();
            let md = std::fs::symlink_metadata(&p).expect("lstat");
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(root).expect("below root").to_path_buf(), md);
        }
    }
    out
}

/// Asserts that the trees below `a` and `b` are the same: the same paths,
/// and for each the type, mode bits, mtime (seconds and nanoseconds),
/// file bytes, symlink target; the same hard-link groups; and every file
/// of at least 1 MiB that is sparse in `a` is sparse in `b`.
pub fn assert_trees_equal(a: &Path, b: &Path) {
    assert_trees_equal_with(a, b, true);
}

/// [`assert_trees_equal`], with the sparseness check optional (a FUSE
/// mount reports logical block counts).
pub fn assert_trees_equal_with(a: &Path, b: &Path, check_sparse: bool) {
    let ta = list_tree(a);
    let tb = list_tree(b);
    let names_a: BTreeSet<_> = ta.keys().collect();
    let names_b: BTreeSet<_> = tb.keys().collect();
    assert_eq!(
        names_a,
        names_b,
        "{} and {} hold different paths\nonly in a: {:?}\nonly in b: {:?}",
        a.display(),
        b.display(),
        names_a.difference(&names_b).collect::<Vec<_>>(),
        names_b.difference(&names_a).collect::<Vec<_>>()
    );
    let info = |root: &Path, rel: &Path, md: &std::fs::Metadata| EntryInfo {
        kind: kind_of(md),
        mode: if md.file_type().is_symlink() { 0 } else { md.mode() & 0o7777 },
        mtime: (md.mtime(), md.mtime_nsec()),
        size: if md.is_file() { md.len() } else { 0 },
        link_target: md.file_type().is_symlink().then(|| std::fs::read_link(root.join(rel)).expect("readlink")),
    };
    for (rel, ma) in &ta {
        let mb = &tb[rel];
        assert_eq!(info(a, rel, ma), info(b, rel, mb), "{}: metadata differs", rel.display());
        if ma.is_file() {
            let ca = std::fs::read(a.join(rel)).expect("read a");
            let cb = std::fs::read(b.join(rel)).expect("read b");
            assert!(ca == cb, "{}: content differs ({} vs {} bytes)", rel.display(), ca.len(), cb.len());
            if check_sparse && ma.len() >= 1 << 20 && ma.blocks() * 512 < ma.len() {
                assert!(
                    mb.blocks() * 512 < mb.len(),
                    "{}: sparse in the source ({} blocks) but not after restore ({} blocks)",
                    rel.display(),
                    ma.blocks(),
                    mb.blocks()
                );
            }
        }
    }
    assert_eq!(hard_link_groups(&ta), hard_link_groups(&tb), "hard-link groups differ");
}

/// Sets of paths sharing an inode (only groups of two or more).
fn hard_link_groups(t: &BTreeMap<PathBuf, std::fs::Metadata>) -> BTreeSet<BTreeSet<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    for (p, md) in t {
        if md.is_file() {
            by_inode.entry((md.dev(), md.ino())).or_default().insert(p.clone());
        }
    }
    by_inode.into_values().filter(|g| g.len() > 1).collect()
}

/// Every regular file below `root` with its bytes, by relative path.
pub fn file_contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk_files(root, &mut |p| {
        out.insert(p.strip_prefix(root).expect("below root").to_path_buf(), std::fs::read(p).expect("read"));
    });
    out
}
