"""Shared pieces of the reliability campaigns (kill.py, corrupt.py).

- `binary()`: the strongroom binary under test: $SR_BIN, or a release
  build of this checkout (`cargo build --release`, honouring
  $CARGO_TARGET_DIR).
- `Repo`: runs the binary against one repository with a cleared
  environment (PATH, HOME, repository, cache, tenant, password).
- `Source`: a directory of varied, changing test data (small text files,
  compressible and random medium files, one large file changed in place,
  symlinks, files appearing and disappearing), driven by a seeded RNG.
- `manifest()` / `compare_restore()`: what a tree holds (type, size,
  SHA-256 of file contents, symlink targets) and the comparison of a
  restored tree against the manifest of the source it came from.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Small chunks and 1 MiB packs (as the integration tests), the cheapest KDF.
SMALL_INIT = ["--chunk-sizes", "16K,64K,256K", "--pack-size-mib", "1", "--kdf-memory-kib", "19456", "--kdf-passes", "2"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def binary():
    """The binary under test: $SR_BIN, else a release build of this tree."""
    b = os.environ.get("SR_BIN")
    if b:
        if not os.access(b, os.X_OK):
            sys.exit(f"SR_BIN={b} is not an executable")
        return os.path.abspath(b)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    log(f"building release binary in {target}")
    subprocess.run(["cargo", "build", "--release", "--bin", "strongroom"], cwd=ROOT, check=True)
    return os.path.join(target, "release", "strongroom")


def version(bin_path):
    out = subprocess.run([bin_path, "--version"], capture_output=True, text=True)
    return out.stdout.strip()


class Result:
    def __init__(self, args, code, stdout, stderr, seconds, killed=False):
        self.args = args
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.killed = killed

    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None

    def panicked(self):
        return "panicked" in self.stderr

    def describe(self):
        return (f"strongroom {' '.join(self.args)}: exit {self.code}"
                f"{' (killed)' if self.killed else ''}\n--- stdout\n{self.stdout[-2000:]}"
                f"\n--- stderr\n{self.stderr[-2000:]}")


class Repo:
    """One repository driven through the binary with a cleared environment."""

    def __init__(self, bin_path, url, home, cache, passwords):
        self.bin = bin_path
        self.url = url
        self.home = home
        self.cache = cache
        self.passwords = passwords  # tenant -> password
        # Called with (repo, tenant, result, attempt) when a command exits
        # 11 (a lock it could not have); returns True to retry the command.
        self.on_locked = None
        os.makedirs(home, exist_ok=True)

    def env(self, tenant):
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "STRONGROOM_REPO": self.url,
            "STRONGROOM_CACHE_DIR": self.cache,
            "STRONGROOM_TENANT": tenant,
            "STRONGROOM_PASSWORD": self.passwords[tenant],
            "STRONGROOM_NEW_PASSWORD": self.passwords[tenant],
        }

    def start(self, tenant, args, stdout=subprocess.PIPE):
        return subprocess.Popen([self.bin] + args, env=self.env(tenant), stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=subprocess.PIPE, text=True)

    def run(self, tenant, args, timeout=600, stdout=subprocess.PIPE, retry=True):
        r = self._run(tenant, args, timeout, stdout)
        attempt = 0
        while r.code == 11 and retry and self.on_locked and self.on_locked(self, tenant, r, attempt):
            r = self._run(tenant, args, timeout, stdout)
            attempt += 1
        return r

    def _run(self, tenant, args, timeout, stdout):
        t0 = time.monotonic()
        p = self.start(tenant, args, stdout=stdout)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            return Result(args, None, out or "", (err or "") + "\n[campaign: timed out]",
                          time.monotonic() - t0)
        return Result(args, p.returncode, out or "", err or "", time.monotonic() - t0)

    def run_killed_after(self, tenant, args, delay):
        """Starts a command and SIGKILLs it after `delay` seconds unless it
        has finished by then. Returns the Result (killed=True if it was)."""
        t0 = time.monotonic()
        p = self.start(tenant, args)
        try:
            out, err = p.communicate(timeout=delay)
            return Result(args, p.returncode, out or "", err or "", time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            p.kill()  # SIGKILL
            out, err = p.communicate()
            return Result(args, p.returncode, out or "", err or "", time.monotonic() - t0, killed=True)

    def snapshots(self, tenant):
        r = self.run(tenant, ["snapshots", "--json"])
        if r.code != 0:
            return None, r
        return r.json(), r


def manifest(root):
    """{relative path: entry} for everything below `root` (root itself
    excluded). Entries: ("dir",), ("file", size, sha256), ("symlink", target)."""
    out = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("symlink", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            elif os.path.isfile(p):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[rel] = ("file", os.path.getsize(p), h.hexdigest())
            else:
                out[rel] = ("other",)
    return out


def compare_restore(restored_root, expected, complete):
    """Compares a restored tree with the manifest of its source.

    Returns (wrong, missing): `wrong` lists entries whose bytes or kind
    differ from the source, or that the source never had (a wrong byte
    restored); `missing` lists source entries not restored. With
    `complete` (the restore exited 0), a missing entry is also wrong."""
    got = manifest(restored_root)
    wrong = []
    for rel, entry in got.items():
        want = expected.get(rel)
        if want is None:
            wrong.append(f"{rel}: not in the source")
        elif entry[0] == "file" and want[0] == "file":
            if entry != want:
                wrong.append(f"{rel}: size/sha256 {entry[1]}/{entry[2][:16]} != {want[1]}/{want[2][:16]}")
        elif entry != want:
            wrong.append(f"{rel}: {entry} != {want}")
    missing = [rel for rel in expected if rel not in got]
    if complete and missing:
        wrong.extend(f"{rel}: missing after a restore that exited 0" for rel in missing)
    return wrong, missing


class Source:
    """Changing test data for one tenant under `root`."""

    def __init__(self, root, rng):
        self.root = root
        self.rng = rng
        self.serial = 0
        os.makedirs(root, exist_ok=True)
        for d in ("docs", "docs/deep/er", "media", "logs", "empty"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for i in range(30):
            self._write_text(f"docs/note-{i:02}.txt", rng.randint(0, 8000))
        for i in range(6):
            self._write_text(f"docs/deep/er/page-{i}.md", rng.randint(100, 3000))
        for i in range(3):
            self._write_random(f"media/blob-{i}.bin", rng.randint(64 << 10, 512 << 10))
        self._write_text("logs/app.log", 200 << 10)
        self._write_random("media/large.img", 3 << 20)
        os.symlink("docs/note-00.txt", os.path.join(root, "link-to-note"))
        os.symlink("/nonexistent/target", os.path.join(root, "dangling"))

    def _path(self, rel):
        return os.path.join(self.root, rel)

    def _text(self, n):
        words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
                 "india", "juliet", "kilo", "lima", "mike", f"v{self.serial}"]
        out = []
        size = 0
        while size < n:
            w = self.rng.choice(words)
            out.append(w)
            size += len(w) + 1
        return (" ".join(out)[:n]).encode()

    def _write_text(self, rel, n):
        with open(self._path(rel), "wb") as f:
            f.write(self._text(n))

    def _write_random(self, rel, n):
        with open(self._path(rel), "wb") as f:
            f.write(self.rng.randbytes(n))

    def mutate(self):
        """A few changes of the kinds a real tree sees between backups."""
        self.serial += 1
        rng = self.rng
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(7)
            if kind == 0:  # rewrite a small file
                self._write_text(f"docs/note-{rng.randrange(30):02}.txt", rng.randint(0, 8000))
            elif kind == 1:  # append to the log
                with open(self._path("logs/app.log"), "ab") as f:
                    f.write(self._text(rng.randint(100, 20000)))
            elif kind == 2:  # change a range of the large file in place
                p = self._path("media/large.img")
                size = os.path.getsize(p)
                off = rng.randrange(size)
                with open(p, "r+b") as f:
                    f.seek(off)
                    f.write(rng.randbytes(min(rng.randint(1, 100 << 10), size - off)))
            elif kind == 3:  # a new file
                self._write_random(f"media/new-{self.serial}-{rng.randrange(1000)}.bin",
                                   rng.randint(0, 300 << 10))
            elif kind == 4:  # delete a new file, if any
                news = [n for n in os.listdir(self._path("media")) if n.startswith("new-")]
                if news:
                    os.unlink(self._path("media/" + rng.choice(news)))
            elif kind == 5:  # truncate or extend the log
                p = self._path("logs/app.log")
                with open(p, "r+b") as f:
                    f.truncate(rng.randint(0, 300 << 10))
            else:  # replace a medium file
                self._write_random(f"media/blob-{rng.randrange(3)}.bin", rng.randint(0, 512 << 10))


def restore_and_compare(repo, tenant, snapshot_id, source_root, expected, scratch):
    """Restores `snapshot_id` into a fresh `scratch` dir and compares it
    with `expected` (the manifest of `source_root` at backup time).
    Returns (result, wrong, missing)."""
    if os.path.exists(scratch):
        shutil.rmtree(scratch)
    r = repo.run(tenant, ["restore", snapshot_id, "--target", scratch, "--json"])
    restored_root = os.path.join(scratch, source_root.lstrip("/"))
    wrong, missing = compare_restore(restored_root, expected, complete=(r.code == 0))
    shutil.rmtree(scratch, ignore_errors=True)
    return r, wrong, missing
