#!/usr/bin/env python3
"""Unchanged re-backups of one tree by several strongroom binaries, alternated.

Usage: STRONGROOM_REPO=... STRONGROOM_PASSWORD=... [STRONGROOM_CACHE_DIR=...]
       benches/compare/unchanged_ab.py [--rounds N] [--runs M] [--peer CMD]... PATH BINARY...

Each round runs every binary M times (default 5) on `backup -q PATH`, in
turn, for N rounds (default 12), so that the host's changes of speed fall
on all binaries alike; prints each binary's median and lower quartile of
wall time (fork and exec included). The repository must exist and should
hold a backup of PATH already (the runs are re-backups). Compare binaries
that read and write the same repository format. Each --peer command (a
whole command line, for example "bupstash put -q PATH" with its
BUPSTASH_* variables in the environment, its repository holding a backup
of PATH) takes its turn in every round the same way.
"""
import argparse
import os
import shlex
import statistics
import subprocess
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peer", action="append", default=[], help="another command line to time alongside")
    ap.add_argument("path")
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    commands = {b: [b, "backup", "-q", a.path] for b in a.binaries}
    commands.update({p: shlex.split(p) for p in a.peer})
    times = {c: [] for c in commands}
    for _ in range(a.rounds):
        for c, argv in commands.items():
            for _ in range(a.runs):
                t0 = time.perf_counter()
                subprocess.run(argv, env=os.environ, check=True, stdout=subprocess.DEVNULL)
                times[c].append(time.perf_counter() - t0)
    for b, t in times.items():
        q1 = statistics.quantiles(t, n=4)[0]
        print(f"{b:50s} median {statistics.median(t) * 1e3:7.2f} ms  lower quartile {q1 * 1e3:7.2f} ms  ({len(t)} runs)")


if __name__ == "__main__":
    main()
