#!/usr/bin/env python3
"""Table for a prune.sh raw log: per step wall s, CPU s, peak RSS and repository
bytes, tools side by side, every strongroom round in its own column, and the
ratios strongroom/peer. A ratio uses the strongroom round with the lower wall
time for that step (rounds differ only by machine load)."""
import sys
from collections import defaultdict

MB = 1e6


def load(path):
    rec = defaultdict(dict)  # (tool, round) -> (phase, step) -> dict | None
    header = []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("#"):
            header.append(line)
            continue
        f = line.split("\t")
        tool, rnd, phase, step = f[:4]
        if f[4] == "FAILED":
            rec[(tool, rnd)][(phase, step)] = None
            continue
        rec[(tool, rnd)][(phase, step)] = dict(
            wall=float(f[4]), cpu=float(f[5]), rss=int(f[6]) / 1024, before=int(f[7]),
            after=int(f[8]), load=f[9].split()[0])
    return header, rec


ROWS = [
    ("a", "forget", "(a) forget all but last 2"),
    ("a", "prune", "(a) prune after forget 12 of 14"),
    ("a", "noop", "(a) prune, nothing to do"),
    ("a", "check", "(a) check --read-data"),
    ("b", "forget", "(b) forget oldest only"),
    ("b", "prune", "(b) prune after forget 1 of 14"),
    ("s", "forget", "(s) small: forget oldest"),
    ("s", "prune", "(s) small: prune after 1 of 8"),
    ("r", "forget", "(r) forget all but last 2"),
    ("r", "prune", "(r) prune --max-unused 0, 12 of 14"),
    ("r", "check", "(r) check --read-data"),
    ("q", "forget", "(q) forget oldest only"),
    ("q", "prune", "(q) prune --max-unused 0, 1 of 14"),
]


def main():
    header, rec = load(sys.argv[1])
    print("\n".join(h for h in header if h.startswith("# prune") or h.startswith("# version")))
    order = {"strongroom": 0, "sr-kdf8": 1}
    tools = sorted({t for t, r in rec if r != "0"}, key=lambda t: (order.get(t, 2), t))
    cols = [(t, r) for t in tools for r in sorted({r for tt, r in rec if tt == t and r != "0"})]
    peers = [t for t in tools if t not in order]
    names = [f"sr r{r}" if t == "strongroom" else f"{t} r{r}" if t in order else t for t, r in cols] + [f"sr/{p}" for p in peers]
    w = 12
    out = []
    line = lambda label, vals: out.append(f"{label:<42}" + "".join(f"{v:>{w}}" for v in vals))
    line("", names)

    def best_sr(key):
        runs = [rec[c].get(key) for c in cols if c[0] == "strongroom"]
        runs = [x for x in runs if x]
        return min(runs, key=lambda x: x["wall"]) if runs else None

    def peer(t, key):
        rs = [rec[c].get(key) for c in cols if c[0] == t]
        rs = [x for x in rs if x]
        return min(rs, key=lambda x: x["wall"]) if rs else None

    def row(label, key, metric, fmt, ratio=True):
        vals = []
        for c in cols:
            x = rec[c].get(key, "missing")
            vals.append("FAILED" if x is None else "-" if x == "missing" else fmt(metric(x)))
        sr = best_sr(key)
        for p in peers:
            if not ratio:
                vals.append("")
                continue
            px = peer(p, key)
            if sr and px and metric(px):
                vals.append(f"{metric(sr) / metric(px):.2f}")
            else:
                vals.append("-")
        line(label, vals)

    for phase, step, label in ROWS:
        key = (phase, step)
        if not any(key in rec[c] for c in cols):
            continue
        row(f"{label}: wall s", key, lambda x: x["wall"], lambda v: f"{v:.2f}")
        if step in ("prune", "noop", "check"):
            row(f"{'':4}CPU s (user+sys)", key, lambda x: x["cpu"], lambda v: f"{v:.2f}")
            row(f"{'':4}peak RSS MiB", key, lambda x: x["rss"], lambda v: f"{v:.0f}")
        if step == "prune":
            row(f"{'':4}repo MB before", key, lambda x: x["before"], lambda v: f"{v / MB:.1f}")
            row(f"{'':4}repo MB after", key, lambda x: x["after"], lambda v: f"{v / MB:.1f}")
        row(f"{'':4}load (1 min)", key, lambda x: float(x["load"]), lambda v: f"{v:.2f}", ratio=False)

    # within each tool: does prune time follow the data it touches?
    out.append("")
    out.append("Within each tool (same round):")
    line("", [n for n in names[:len(cols)]])
    for label, num, den in [("(b) prune / (a) prune, wall", ("b", "prune"), ("a", "prune")),
                            ("noop prune / (a) prune, wall", ("a", "noop"), ("a", "prune")),
                            ("(q) prune / (r) prune, wall", ("q", "prune"), ("r", "prune")),
                            ("(q) prune / (r) prune, peak RSS", ("q", "prune"), ("r", "prune")),
                            ("(s) small / (b) large prune, wall", ("s", "prune"), ("b", "prune")),
                            ("(s) small / (b) large prune, peak RSS", ("s", "prune"), ("b", "prune"))]:
        vals = []
        m = (lambda x: x["rss"]) if "RSS" in label else (lambda x: x["wall"])
        for c in cols:
            a, b = rec[c].get(num), rec[c].get(den)
            vals.append(f"{m(a) / m(b):.2f}" if a and b and m(b) else "-")
        line(label, vals)
    loads = [float(x["load"]) for c in cols for x in rec[c].values() if x]
    out.append(f"load average (1 min) over all prune steps: {min(loads):.2f}-{max(loads):.2f}")
    out.append("sr-kdf8: strongroom with an 8 MiB Argon2 slot instead of 64 MiB (peak RSS without the KDF).")
    out.append("Ratios sr/peer: best strongroom round / peer; below 1 favours strongroom. borg's 'prune' row is `borg compact`")
    out.append("(its 'forget' is `borg prune`); borg compacts segments above 10% unused, the others")
    out.append("repack packs until at most 5% of the repository is unused.")
    failed = [f"{c[0]} r{c[1]} {k[0]} {k[1]}" for c in rec for k, x in rec[c].items() if x is None]
    if failed:
        out.append("FAILED: " + ", ".join(failed))
    print("\n".join(out))
    if len(sys.argv) > 2:
        summaries(sys.argv[2])


def summaries(logdir):
    """What each prune did, in the tools' own words."""
    import glob
    import json
    import os
    import re
    print()
    print("Prune summaries (strongroom --json; restic's and borg's own report lines):")
    for f in sorted(glob.glob(os.path.join(logdir, "*.prune.log")) + glob.glob(os.path.join(logdir, "*.noop.log"))):
        b = os.path.basename(f)[:-4]
        text = open(f, errors="replace").read()
        if b.startswith("strongroom.") or b.startswith("sr-kdf8."):
            try:
                d = json.loads(text)
                p = d["plan"]
                print(f"{b}: packs {p['packs']}, blobs used {p['blobs_used']}, packs deleted {p['packs_unused']}"
                      f" + unindexed {p['packs_unindexed']}, repacked {p['packs_repack']} ({p['bytes_repack']} B,"
                      f" {p['bytes_repack_used']} B used), freed {d['bytes_freed']} B, written {d['bytes_repacked']} B"
                      f" in {d['packs_written']} packs, index deltas rewritten {d['index_rewritten']},"
                      f" unused kept {p['bytes_unused_kept']} B, {d['duration_seconds']:.2f} s")
            except (ValueError, KeyError):
                print(f"{b}: (no JSON) {text[:200]!r}")
        elif b.startswith("restic."):
            lines = [re.sub(r"\s+", " ", l.strip()) for l in text.splitlines()
                     if re.match(r"(to repack|this removes|to delete|total prune|remaining|unused size after)", l)]
            print(f"{b}: " + "; ".join(lines))
        elif b.startswith("borg."):
            lines = [l.strip() for l in text.splitlines() if "compaction freed" in l]
            print(f"{b}: " + "; ".join(lines))


if __name__ == "__main__":
    main()
