#!/usr/bin/env python3
"""Two or more strongroom binaries side by side on the steps users meet, alternated.

Usage: benches/compare/ab.py [--rounds N] [--key-file] [--out FILE] V1 V2 BINARY...

V1 and V2 are two versions of one tree (a directory). In every round, each
binary in turn gets a fresh repository and cache (password-opened with the
default key derivation, or opened with a key file with --key-file) and runs:

  first      backup V1 into the empty repository
  second     backup V2 (a later version: only the changes are new)
  unchanged  backup V2 again, three times (the median counts)
  restore    restore the latest snapshot into an empty directory

Each step is timed as a whole command (fork, exec, key derivation, catalog
and all) and its peak RSS read from the kernel (wait4). Rounds alternate
the binaries so that the host's changes of speed fall on all of them
alike. Prints, per binary and step, the median wall time over the rounds
and the highest peak RSS, then each binary's median time as a ratio of
the first binary's (below 1.0: faster). The binaries must read and write
the same repository format as far as these steps go; each works only in
its own repositories.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

STEPS = ["first", "second", "unchanged", "restore"]


def run(argv, env):
    """Runs argv; returns (seconds, peak RSS in KiB). Fails on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {p.returncode}: {err.strip()}")
    return elapsed, usage.ru_maxrss


def one_round(binary, v1, v2, key_file, scratch):
    """The four steps for one binary in fresh directories; {step: (s, KiB)}."""
    work = tempfile.mkdtemp(dir=scratch)
    try:
        env = dict(os.environ)
        env.update({"STRONGROOM_REPO": os.path.join(work, "repo"), "STRONGROOM_CACHE_DIR": os.path.join(work, "cache")})
        env["STRONGROOM_PASSWORD"] = "bench-password"
        run([binary, "-q", "init"], env)
        auth = []
        if key_file:
            key = os.path.join(work, "key")
            with open(key, "wb") as f:
                f.write(os.urandom(64))
            run([binary, "-q", "tenant", "key", "add", "--key-file", key], env)
            env.pop("STRONGROOM_PASSWORD")
            auth = ["--password-file", key]
        binary = [binary, *auth]
        out = {}
        out["first"] = run([*binary, "-q", "backup", v1], env)
        out["second"] = run([*binary, "-q", "backup", v2], env)
        again = [run([*binary, "-q", "backup", v2], env) for _ in range(3)]
        out["unchanged"] = (statistics.median(t for t, _ in again), max(r for _, r in again))
        target = os.path.join(work, "restored")
        out["restore"] = run([*binary, "-q", "restore", "latest", "--target", target], env)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--key-file", action="store_true", help="open with a key file instead of a password")
    ap.add_argument("--scratch", default=None, help="directory for repositories (default: $TMPDIR)")
    ap.add_argument("v1")
    ap.add_argument("v2")
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    results = {b: {s: [] for s in STEPS} for b in a.binaries}
    for r in range(a.rounds):
        order = a.binaries if r % 2 == 0 else list(reversed(a.binaries))
        for b in order:
            for step, value in one_round(b, a.v1, a.v2, a.key_file, a.scratch).items():
                results[b][step].append(value)
    base = a.binaries[0]
    print(f"{'binary':40s} {'step':10s} {'median s':>9s} {'peak RSS MiB':>12s} {'vs first binary':>16s}")
    for b in a.binaries:
        for s in STEPS:
            med = statistics.median(t for t, _ in results[b][s])
            rss = max(k for _, k in results[b][s]) / 1024
            ref = statistics.median(t for t, _ in results[base][s])
            print(f"{b[-40:]:40s} {s:10s} {med:9.3f} {rss:12.1f} {med / ref:16.3f}")


if __name__ == "__main__":
    main()
