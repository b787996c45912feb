#!/usr/bin/env bash
# Restore benchmark: strongroom against restic and borg on the same data.
# Each tool backs up each DIR once into a fresh repository, then restores it
# into an empty directory N times; the fastest restore is reported with its
# peak RSS. strongroom also restores once more into the complete target
# (`--overwrite if-changed`: every file is kept after a size+mtime check, the
# cost of a resumed restore with nothing left to do) and runs
# `verify-restore`. Every restore is checked with `diff -r` (untimed).
#
# Usage:
#   SRBENCH_ROOT=$HOME/srbench benches/compare/restore.sh [options] DIR...
#     DIR             a directory to back up and restore, e.g.
#                     $SRBENCH_ROOT/data/src-versions/v8
#   --tools LIST      comma-separated (default: strongroom plus restic, borg if found)
#   --repeat N        restores per tool and DIR (default 3)
#   --out FILE        raw log (default $SRBENCH_ROOT/restore/results-<date>.tsv)
# Env: SR_BIN (the strongroom binary; default: a release build of this
#      checkout in $CARGO_TARGET_DIR or target/).
#
# Peers are installed with `apt-get install -y restic borgbackup` when missing
# (as root). Settings, all encrypted, as in compare.sh: strongroom `init`
# defaults; restic `init` + `backup --compression auto`; borg `init
# --encryption repokey-blake2` + `create --compression zstd,3`. Restores:
# `strongroom restore latest --target T`, `restic restore latest --target T`,
# `borg extract` run in T. Caches are kept between the backup and the restores
# (each tool's normal use), and page caches are not dropped.
#
# Output: a table on stdout (restore MB/s = logical bytes / best wall time),
# raw per-step lines (wall s, CPU s, peak RSS KiB) in the log.
set -euo pipefail

: "${SRBENCH_ROOT:?set SRBENCH_ROOT to a scratch directory}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$SRBENCH_ROOT/restore/work"
REPEAT=3
TOOLS=""
OUT=""
DIRS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tools) TOOLS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) DIRS+=("$1"); shift ;;
  esac
done
[[ ${#DIRS[@]} -gt 0 ]] || { echo "usage: $0 [options] DIR..." >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time missing (apt-get install -y time)" >&2; exit 1; }

if [[ -z "${SR_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q)
  SR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/strongroom"
fi
SR="$SR_BIN"
[[ -x "$SR" ]] || { echo "$SR missing" >&2; exit 1; }

if [[ -z "$TOOLS" ]]; then
  if [[ $(id -u) -eq 0 ]] && ! { command -v restic && command -v borg; } >/dev/null; then
    apt-get install -y -q restic borgbackup >/dev/null || echo "could not install restic/borg; benchmarking what is there" >&2
  fi
  TOOLS=strongroom
  for t in restic borg; do command -v "$t" >/dev/null && TOOLS+=",$t"; done
fi
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"

mkdir -p "$SRBENCH_ROOT/restore"
OUT="${OUT:-$SRBENCH_ROOT/restore/results-$(date +%Y%m%d-%H%M%S).tsv}"
: > "$OUT"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

export STRONGROOM_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

tool_init() {
  case "$1" in
    strongroom) STRONGROOM_CACHE_DIR="$C" "$SR" -q init -r "$R" ;;
    restic)     restic -q init --repo "$R" --cache-dir "$C" ;;
    borg)       BORG_BASE_DIR="$C" borg init --encryption repokey-blake2 "$R" ;;
  esac
}
tool_backup() {
  case "$1" in
    strongroom) STRONGROOM_CACHE_DIR="$C" "$SR" -q backup -r "$R" "$D" ;;
    restic)     restic backup -q --repo "$R" --cache-dir "$C" --compression auto --host bench "$D" ;;
    borg)       BORG_BASE_DIR="$C" borg create --compression zstd,3 "$R::snap" "$D" ;;
  esac
}
tool_restore() {
  case "$1" in
    strongroom) STRONGROOM_CACHE_DIR="$C" "$SR" -q restore -r "$R" latest --target "$T" ;;
    restic)     restic -q restore --repo "$R" --cache-dir "$C" latest --target "$T" ;;
    borg)       (cd "$T" && BORG_BASE_DIR="$C" borg extract "$R::snap") ;;
  esac
}
sr_restore_again() { STRONGROOM_CACHE_DIR="$C" "$SR" -q restore -r "$R" latest --target "$T"; }
sr_verify_restore() { STRONGROOM_CACHE_DIR="$C" "$SR" -q verify-restore -r "$R" latest --tmp-dir "$WORK"; }
tool_version() {
  case "$1" in
    strongroom) echo "strongroom $("$SR" --version | cut -d' ' -f2) ($SR, commit $(git -C "$ROOT" rev-parse --short HEAD))" ;;
    restic)     restic version | head -n1 ;;
    borg)       borg --version ;;
  esac
}
export SR R C D T WORK
export -f tool_init tool_backup tool_restore sr_restore_again sr_verify_restore

# timed NAME TOOL RUN STEP CMD...: run CMD under /usr/bin/time, append a log line
timed() {
  local name="$1" tool="$2" run="$3" step="$4"; shift 4
  local tf="$WORK/time.out" lf="$WORK/$tool.$step.log"
  local la; la="$(cut -d' ' -f1 /proc/loadavg)"
  if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" bash -c '"$@"' _ "$@" >"$lf" 2>&1; then
    log "FAILED: $name $tool $step"; tail -n5 "$lf" >&2
    printf '%s\t%s\t%s\t%s\tFAILED\n' "$name" "$tool" "$run" "$step" >>"$OUT"
    return 0
  fi
  local wall user sys rss; read -r wall user sys rss <"$tf"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$tool" "$run" "$step" "$wall" \
    "$(echo "$user + $sys" | bc)" "$rss" "$BYTES" "$la" >>"$OUT"
  printf '  %-10s %-14s %7.2f s  cpu %7.2f s  rss %7d KiB  load %s\n' "$tool" "$step" "$wall" \
    "$(echo "$user + $sys" | bc)" "$rss" "$la" >&2
}

{
  echo "# restore.sh $(date -Iseconds) on $(hostname): nproc $(nproc), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r)"
  for t in "${TOOL_LIST[@]}"; do echo "# version: $(tool_version "$t")"; done
  printf '# data\ttool\trun\tstep\twall_s\tcpu_s\tpeak_rss_kib\tlogical_bytes\tload1\n'
} >>"$OUT"

for D in "${DIRS[@]}"; do
  D="$(cd "$D" && pwd)"
  name="$(basename "$(dirname "$D")")/$(basename "$D")"
  BYTES="$(find "$D" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')"
  export D BYTES
  log "data $name ($BYTES bytes)"
  for t in "${TOOL_LIST[@]}"; do
    rm -rf "$WORK"; mkdir -p "$WORK"
    R="$WORK/repo"; C="$WORK/cache"; T="$WORK/target"; mkdir -p "$C"
    timed "$name" "$t" 0 init tool_init "$t"
    timed "$name" "$t" 0 backup tool_backup "$t"
    for ((run = 1; run <= REPEAT; run++)); do
      rm -rf "$T"; mkdir -p "$T"
      timed "$name" "$t" "$run" restore tool_restore "$t"
    done
    got="$T$D"
    [[ -d "$got" ]] || got="$T/${D#/}"
    diff -r -q "$D" "$got" >/dev/null || { log "VERIFY FAILED: $t $name"; printf '%s\t%s\t-\tverify\tFAILED\n' "$name" "$t" >>"$OUT"; }
    if [[ $t == strongroom ]]; then
      timed "$name" "$t" 1 restore-again sr_restore_again
      timed "$name" "$t" 1 verify-restore sr_verify_restore
    fi
    rm -rf "$WORK"
  done
done

log "raw results: $OUT"
python3 - "$OUT" <<'EOF'
import sys
from collections import defaultdict
best = defaultdict(dict)  # data -> tool -> step -> (wall, cpu, rss, bytes)
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.rstrip())
        continue
    f = line.rstrip("\n").split("\t")
    if f[4] == "FAILED":
        print(f"FAILED: {f[0]} {f[1]} {f[3]}")
        continue
    data, tool, step = f[0], f[1], f[3]
    rec = (float(f[4]), float(f[5]), int(f[6]), int(f[7]))
    if step not in best[data].get(tool, {}) or rec[0] < best[data][tool][step][0]:
        best[data].setdefault(tool, {})[step] = rec
print()
print("| data | tool | restore MB/s | restore s | CPU s | peak RSS MiB | backup s |")
print("|---|---|---:|---:|---:|---:|---:|")
for data, tools in best.items():
    for tool, steps in tools.items():
        r = steps.get("restore")
        b = steps.get("backup")
        if not r:
            continue
        mbs = r[3] / 1e6 / max(r[0], 0.01)
        print(f"| {data} | {tool} | {mbs:.1f} | {r[0]:.2f} | {r[1]:.2f} | {r[2] / 1024:.0f} | {b[0] if b else float('nan'):.2f} |")
        for extra in ("restore-again", "verify-restore"):
            if extra in steps:
                e = steps[extra]
                print(f"| {data} | {tool} {extra} | {e[3] / 1e6 / max(e[0], 0.01):.1f} | {e[0]:.2f} | {e[1]:.2f} | {e[2] / 1024:.0f} | |")
EOF
