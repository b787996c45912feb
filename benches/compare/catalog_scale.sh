#!/usr/bin/env bash
# Catalog scale: does a backup's memory and dedup-lookup cost stay flat as
# the repository grows? The target: with a catalog of at least 10 million
# chunks, a backup's peak RSS stays within 10% of the same backup into a
# small repository, and its lookups within 2x of the small repository's.
#
# Usage: benches/compare/catalog_scale.sh [BLOBS] [DATASET]...
#   BLOBS    synthetic blobs in the big repository (default 10000000)
#   DATASET  directories backed up, in order (default: src-versions v1 and
#            the first shifted-binary version under $SRBENCH_ROOT/data)
# Env: SRBENCH_ROOT (needed for the default DATASETs and WORK),
# STRONGROOM_BIN (default target/release/strongroom), WORK (scratch
# directory, default $SRBENCH_ROOT/catalog, deleted first; catalog_lookups.sh
# then runs in it).
#
# Both repositories get the same backups: a first backup of each dataset,
# then the same again with --force (every file re-read, every chunk a
# dedup hit). The big one is created by `strongroom bench synthetic-index
# --create-repo` with BLOBS synthetic index entries (real index deltas
# whose packs do not exist), and its catalog is synced once before
# anything is timed. Then `bench lookups` times 200,000 hits and misses in
# a synthetic catalog of the same number of blobs (benchmarks never open
# an existing repository).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${STRONGROOM_BIN:-target/release/strongroom}
N=${1:-10000000}
shift || true
need_root() { : "${SRBENCH_ROOT:?set SRBENCH_ROOT to the scratch directory holding data/<series> (or give DATASETs and WORK)}"; }
if [ $# -gt 0 ]; then DATA=("$@"); else
  need_root
  DATA=("$SRBENCH_ROOT/data/src-versions/v1" "$SRBENCH_ROOT/data/shifted-binary/v1")
fi
if [ -z "${WORK:-}" ]; then need_root; WORK=$SRBENCH_ROOT/catalog; fi
rm -rf "$WORK"
mkdir -p "$WORK"
export STRONGROOM_PASSWORD=bench
TIME=(/usr/bin/time -f "%e %U %S %M")
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) blobs=$N load=$(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-28s %9s %9s %9s\n" repo step wall_s cpu_s rss_mib
for kind in small big; do
  export STRONGROOM_REPO="$WORK/$kind/repo" STRONGROOM_CACHE_DIR="$WORK/$kind/cache"
  if [ "$kind" = small ]; then "$BIN" init -q; fi
  if [ "$kind" = big ]; then
    out=$("${TIME[@]}" "$BIN" -q bench synthetic-index --blobs "$N" --create-repo "$STRONGROOM_REPO" 2>&1 >/dev/null)
    read -r w u s m <<<"$out"
    printf "%-6s %-28s %9.2f %9.2f %9d\n" "$kind" "synthetic-index" "$w" "$(echo "$u + $s" | bc)" $((m / 1024))
    out=$("${TIME[@]}" "$BIN" -q snapshots 2>&1 >/dev/null)
    read -r w u s m <<<"$out"
    printf "%-6s %-28s %9.2f %9.2f %9d\n" "$kind" "first open (catalog warm)" "$w" "$(echo "$u + $s" | bc)" $((m / 1024))
  fi
  for d in "${DATA[@]}"; do
    for mode in first force; do
      extra=()
      [ "$mode" = force ] && extra=(--force)
      out=$("${TIME[@]}" "$BIN" -q backup "${extra[@]}" "$d" 2>&1 >/dev/null)
      read -r w u s m <<<"$out"
      printf "%-6s %-28s %9.2f %9.2f %9d\n" "$kind" "backup $mode $(basename "$(dirname "$d")")/$(basename "$d")" \
        "$w" "$(echo "$u + $s" | bc)" $((m / 1024))
    done
  done
  blobs=$("$BIN" --json stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["chunks"])')
  [ "$kind" = big ] && blobs=$((blobs + N))
  "$BIN" --json bench lookups --count 200000 --blobs "$blobs" >"$WORK/$kind-lookups.json"
  python3 - "$kind" "$WORK/$kind-lookups.json" <<'EOF'
import json, sys
v = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]:<6} lookups: catalog {v['catalog_blobs']} blobs, {v['hits_per_second']:.0f} hits/s, {v['misses_per_second']:.0f} misses/s")
EOF
  du -sm "$STRONGROOM_CACHE_DIR" | awk -v k="$kind" '{printf "%-6s catalog on disk: %d MiB\n", k, $1}'
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
