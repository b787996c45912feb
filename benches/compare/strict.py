#!/usr/bin/env python3
"""Strict pairing for a compare.sh raw log: strongroom's worst run of each
measure against each peer's best run of the same invocation (report.py shows
each tool's run with the lowest total backup time instead). The performance targets
as ratios that favour strongroom when above 1 (times: peer/strongroom; sizes:
peer/strongroom as well, so >= 1 means no larger). A repeated step (the
unchanged re-backup, the restore) counts with its median within each run:
strongroom's worst run's median against the peers' best run's median.

usage: strict.py RESULTS.tsv
"""
import statistics
import sys

from report import load, median_wall, timings, vkey


def main(path):
    _, rows = load(path)
    for series, runs in rows.items():
        by_tool = {}
        for (tool, _run), steps in runs.items():
            if any(v is None for v in steps.values()):
                continue
            by_tool.setdefault(tool, []).append(steps)
        ours = by_tool.pop("strongroom", [])
        if not ours or not by_tool:
            continue
        versions = sorted((s for s in ours[0] if s.startswith("v") and s[1:].isdigit()), key=vkey)
        print(f"## {series}")

        def wall(r, step):
            return r[step]["wall"] if step.startswith("v") else median_wall(timings(r, step))

        def worst(step):
            return max(wall(r, step) for r in ours)

        def best(step):
            return min((min(wall(r, step) for r in rs), t) for t, rs in by_tool.items())

        for label, step in (("first backup", versions[0]), ("unchanged again", "again"), ("restore", "restore")):
            o, (p, t) = worst(step), best(step)
            print(f"  {label:16} strongroom worst {o:7.3f} s  {t} best {p:7.3f} s  -> {p / max(o, 1e-9):.2f}x")

        # Later versions: the median over versions of each version's time
        # (strongroom's slowest run, each peer's fastest).
        later = versions[1:]
        o = statistics.median(max(r[v]["wall"] for r in ours) for v in later)
        p, t = min((statistics.median(min(r[v]["wall"] for r in rs) for v in later), t) for t, rs in by_tool.items())
        print(f"  {'later versions':16} strongroom worst {o:6.2f} s  {t} best {p:6.2f} s  -> {p / max(o, 1e-9):.2f}x (median per version)")

        last = versions[-1]
        o = max(r[last]["repo"] for r in ours)
        p, t = min((min(r[last]["repo"] for r in rs), t) for t, rs in by_tool.items())
        print(f"  {'repository':16} strongroom largest {o / 1e6:.1f} MB  {t} smallest {p / 1e6:.1f} MB  -> {o / p:.3f} of it")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
