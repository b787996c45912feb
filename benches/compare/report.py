#!/usr/bin/env python3
"""Tables for a compare.sh raw log: one table per series, tools side by side,
ratios strongroom/peer. For each tool the run with the lowest total backup wall
time is shown (runs of the same tool differ only by machine load). Within a
run, the unchanged re-backup and the restore show the median of their timings
(steps again, again2, ... and restore, restore2, ...)."""
import re
import statistics
import sys
from collections import defaultdict

MB = 1e6
MIB = 1024 * 1024


def load(path):
    rows = defaultdict(lambda: defaultdict(dict))  # (series) -> (tool, run) -> step -> rec
    header = []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("#"):
            header.append(line)
            continue
        f = line.split("\t")
        series, tool, run, step = f[:4]
        if f[4] == "FAILED":
            rows[series][(tool, run)][step] = None
            continue
        rows[series][(tool, run)][step] = dict(
            wall=float(f[4]), cpu=float(f[5]), rss_kib=int(f[6]), repo=int(f[7]),
            cache=int(f[8] or 0), logical=int(f[9]), load=f[10],
            # requests, bytes up, bytes down: counted by the S3 proxy (--backend s3)
            requests=int(f[11]) if len(f) > 13 and f[11] else None,
            up=int(f[12]) if len(f) > 13 and f[12] else None,
            down=int(f[13]) if len(f) > 13 and f[13] else None)
    return header, rows


def vkey(step):
    return int(step[1:])


def timings(steps, name):
    """The records of a repeated step (`again`, `again2`, ...), in order."""
    pat = re.compile(rf"{name}(\d*)$")
    found = [(int(m.group(1) or 1), rec) for s, rec in steps.items() if (m := pat.match(s))]
    return [rec for _, rec in sorted(found, key=lambda x: x[0])]


def median_wall(recs):
    return statistics.median(r["wall"] for r in recs)


def summarize(steps):
    vs = sorted((s for s in steps if s.startswith("v") and s[1:].isdigit()), key=vkey)
    if any(steps[s] is None for s in steps):
        return None
    b = [steps[s] for s in vs]
    first = b[0]
    later = b[1:]
    again, rest = timings(steps, "again"), timings(steps, "restore")
    if not b or not again or not rest:
        return None  # run incomplete (interrupted or still running)
    last = b[-1]
    logical_total = sum(x["logical"] for x in b)
    loads = [x["load"].split()[0] for x in b + again + rest]
    return {
        "versions": vs,
        "per_version_wall": [x["wall"] for x in b],
        "per_version_repo": [x["repo"] for x in b],
        "first_mbs": first["logical"] / MB / max(first["wall"], 1e-3),
        "later_mbs": statistics.median(x["logical"] / MB / max(x["wall"], 1e-3) for x in later) if later else float("nan"),
        "backup_wall": sum(x["wall"] for x in b),
        "backup_cpu": sum(x["cpu"] for x in b),
        "again_s": median_wall(again),
        "again_n": len(again),
        "restore_s": median_wall(rest),
        "restore_n": len(rest),
        "restore_mbs": last["logical"] / MB / max(median_wall(rest), 1e-3),
        "peak_rss_mib": max(x["rss_kib"] for x in b + again + rest) / 1024,
        "backup_rss_mib": max(x["rss_kib"] for x in b + again) / 1024,
        "restore_rss_mib": max(x["rss_kib"] for x in rest) / 1024,
        "repo_final": last["repo"],
        "cache_final": last["cache"],
        "ratio": logical_total / last["repo"],
        "logical_v1": first["logical"],
        "logical_total": logical_total,
        "load": f"{min(loads)}-{max(loads)}",
        "counted": first["requests"] is not None,
        "backup_requests": sum(x["requests"] or 0 for x in b),
        "requests_per_gb": sum(x["requests"] or 0 for x in b) / (logical_total / 1e9),
        "again_requests": statistics.median(x["requests"] or 0 for x in again),
        "again_down_kb": statistics.median((x["down"] or 0) / 1e3 for x in again),
        "restore_requests": statistics.median(x["requests"] or 0 for x in rest),
        "restore_down_mb": statistics.median((x["down"] or 0) / 1e6 for x in rest),
    }


def fmt(v, kind):
    if v is None or v != v:
        return "-"
    return {"s": f"{v:.2f}", "s3": f"{v:.3f}", "ms": f"{v * 1000:.0f}", "mbs": f"{v:.1f}", "mib": f"{v:.0f}", "mb": f"{v / MB:.1f}",
            "x": f"{v:.2f}", "int": f"{v:.0f}", "str": str(v)}[kind]


def table(series, runs):
    best = {}
    runs_of = defaultdict(list)
    for (tool, run), steps in runs.items():
        s = summarize(steps)
        runs_of[tool].append((run, s))
        if s and (tool not in best or s["backup_wall"] < best[tool][1]["backup_wall"]):
            best[tool] = (run, s)
    if not best:
        return f"## {series}: no complete run"
    tools = sorted(best, key=lambda t: (t != "strongroom", t))
    peers = [t for t in tools if t != "strongroom"]
    sr = best.get("strongroom", (None, None))[1]
    any_s = next(iter(best.values()))[1]
    out = [f"## {series}: {len(any_s['versions'])} versions, v1 {any_s['logical_v1'] / MB:.1f} MB, "
           f"all versions {any_s['logical_total'] / MB:.1f} MB logical"]
    cols = tools + [f"sr/{p}" for p in peers if sr]
    w = max(10, *(len(c) + 1 for c in cols))
    line = lambda label, vals: out.append(f"{label:<34}" + "".join(f"{v:>{w}}" for v in vals))
    line("", cols)
    line("run shown (of runs)", [f"{best[t][0]} of {len(runs_of[t])}" for t in tools] + [""] * (len(cols) - len(tools)))

    def row(label, key, kind, idx=None):
        vals = []
        for t in tools:
            v = best[t][1][key]
            vals.append(v[idx] if idx is not None else v)
        ratios = []
        if sr:
            for i, p in enumerate(peers):
                a, b = vals[0], vals[tools.index(p)]
                ratios.append(f"{a / b:.2f}" if isinstance(a, (int, float)) and b else "-")
        line(label, [fmt(v, kind) for v in vals] + ratios)

    for i, v in enumerate(any_s["versions"]):
        row(f"{v} backup s", "per_version_wall", "s", i)
    for i, v in enumerate(any_s["versions"]):
        row(f"{v} repo MB", "per_version_repo", "mb", i)
    row("first backup MB/s", "first_mbs", "mbs")
    row("later versions MB/s (median)", "later_mbs", "mbs")
    row("all backups wall s", "backup_wall", "s")
    row("all backups CPU s (user+sys)", "backup_cpu", "s")
    n_again, n_rest = any_s["again_n"], any_s["restore_n"]
    row(f"unchanged re-backup ms (med of {n_again})", "again_s", "ms")
    row(f"restore last version s (med of {n_rest})", "restore_s", "s3")
    row("restore MB/s", "restore_mbs", "mbs")
    row("peak RSS backup MiB", "backup_rss_mib", "mib")
    row("peak RSS restore MiB", "restore_rss_mib", "mib")
    row("repository MB (after last)", "repo_final", "mb")
    row("logical/stored", "ratio", "x")
    row("cache/catalog MB (local)", "cache_final", "mb")
    if any_s["counted"]:
        row("S3 requests, all backups", "backup_requests", "int")
        row("S3 requests per GB backed up", "requests_per_gb", "int")
        row("S3 requests, unchanged re-backup", "again_requests", "int")
        row("KB downloaded, unchanged re-backup", "again_down_kb", "mbs")
        row("S3 requests, restore (empty cache)", "restore_requests", "int")
        row("MB downloaded, restore", "restore_down_mb", "mbs")
    line("load average (1 min) range", [best[t][1]["load"] for t in tools] + [""] * (len(cols) - len(tools)))
    failed = [f"{t} run {r}" for t, rs in runs_of.items() for r, s in rs if s is None]
    if failed:
        out.append("FAILED runs (not shown): " + ", ".join(failed))
    out.append("Ratios are strongroom/peer of the value in the row: for s, MiB and MB below 1 favours")
    out.append("strongroom; for MB/s and logical/stored above 1 favours strongroom.")
    return "\n".join(out)


def main():
    header, rows = load(sys.argv[1])
    print("\n".join(h for h in header if h.startswith("# compare") or h.startswith("# version")))
    for series, runs in rows.items():
        print()
        print(table(series, runs))


if __name__ == "__main__":
    main()
