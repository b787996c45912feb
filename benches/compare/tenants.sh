#!/usr/bin/env bash
# Concurrent tenants: N separate processes back up N tenants of one
# repository at once (each its own copy of the same data: tenants never
# dedup against each other). The target: total throughput should scale with
# the cores. Prints, for each N, the wall time of the batch, total MB/s,
# and total CPU seconds.
#
# Usage: benches/compare/tenants.sh [DATASET] [N...]
#   DATASET  a directory (default $SRBENCH_ROOT/data/shifted-binary/v1)
#   N        tenant counts (default: 1 2 4)
# Env: SRBENCH_ROOT (needed for the default DATASET and WORK),
# STRONGROOM_BIN (default target/release/strongroom), WORK (scratch
# directory, default $SRBENCH_ROOT/tenants, deleted first and after), PIN=1:
# N tenants run on the first N cores only (taskset; N <= nproc), so the N=1
# row is one tenant on one core and the ratio of rows shows how total
# throughput grows with the cores (on a small machine one backup alone can
# keep every core busy).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${STRONGROOM_BIN:-target/release/strongroom}
need_root() { : "${SRBENCH_ROOT:?set SRBENCH_ROOT to the scratch directory holding data/<series> (or give DATASET and WORK)}"; }
if [ $# -gt 0 ]; then DATA=$1; else need_root; DATA=$SRBENCH_ROOT/data/shifted-binary/v1; fi
shift || true
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1 2 4)
if [ -z "${WORK:-}" ]; then need_root; WORK=$SRBENCH_ROOT/tenants; fi
BYTES=$(du -sb "$DATA" | cut -f1)
export STRONGROOM_PASSWORD=bench STRONGROOM_NEW_PASSWORD=bench
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) data=$DATA ($BYTES bytes) cores=$(nproc) pin=${PIN:-0} load=$(cut -d' ' -f1-3 /proc/loadavg)"
printf "%8s %9s %12s %9s %12s\n" tenants wall_s total_MB/s cpu_s max_rss_mib
for n in "${COUNTS[@]}"; do
  pin=()
  if [[ ${PIN:-0} == 1 ]]; then pin=(taskset -c "0-$((n - 1))"); fi
  rm -rf "$WORK"; mkdir -p "$WORK"
  export STRONGROOM_REPO="$WORK/repo" STRONGROOM_CACHE_DIR="$WORK/cache"
  "$BIN" -q init --tenant t1
  for i in $(seq 2 "$n"); do "$BIN" -q tenant add "t$i"; done
  start=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    "${pin[@]}" /usr/bin/time -f "%U %S %M" -o "$WORK/time-$i" "$BIN" -q --tenant "t$i" backup "$DATA" &
  done
  wait
  end=$(date +%s.%N)
  python3 - "$n" "$start" "$end" "$BYTES" "$WORK" <<'PY'
import sys
n, start, end, nbytes, work = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cpu = 0.0; rss = 0
for i in range(1, n + 1):
    u, s, m = open(f"{work}/time-{i}").read().split()
    cpu += float(u) + float(s); rss = max(rss, int(m) // 1024)
wall = end - start
print(f"{n:8d} {wall:9.2f} {n * nbytes / wall / 1e6:12.1f} {cpu:9.2f} {rss:12d}")
PY
done
rm -rf "$WORK"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
