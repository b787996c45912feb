#!/usr/bin/env bash
# Dedup lookups and peak RSS in a small and a 10^7-blob catalog, alternating.
#
# Usage: benches/compare/catalog_lookups.sh [RUNS] [DATASET]
#   Runs in the two repositories that benches/compare/catalog_scale.sh left
#   in $WORK/small and $WORK/big (WORK as there: default $SRBENCH_ROOT/catalog;
#   building the big one is 10^7 random inserts into its catalog).
#   RUNS     new-data backups per repository (default 4)
#   DATASET  a directory backed up first as new data, then again with
#            --force, every chunk a dedup hit (default
#            $SRBENCH_ROOT/data/src-versions/v2)
# For each backup: wall, CPU and peak RSS (/usr/bin/time) and the backup's
# "dedup checks" line (how many chunks the id filter ruled out, how many
# were known from recently hit packs, how many went to the blob table, and
# the time in blob-table lookups). Then `bench lookups` in a synthetic
# catalog of each one's size (benchmarks never open an existing repository).
# New data: 256 MiB, half random and half text, a new seed per backup.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${STRONGROOM_BIN:-target/release/strongroom}
RUNS=${1:-4}
need_root() { : "${SRBENCH_ROOT:?set SRBENCH_ROOT to the scratch directory holding data/<series> (or give DATASET and WORK)}"; }
if [ $# -gt 1 ]; then DATA=$2; else need_root; DATA=$SRBENCH_ROOT/data/src-versions/v2; fi
if [ -z "${WORK:-}" ]; then need_root; WORK=$SRBENCH_ROOT/catalog; fi
export STRONGROOM_PASSWORD=bench STRONGROOM_LOG=strongroom=debug
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) load=$(cut -d' ' -f1-3 /proc/loadavg)"
one() { # kind label args...
  local kind=$1 label=$2; shift 2
  export STRONGROOM_REPO="$WORK/$kind/repo" STRONGROOM_CACHE_DIR="$WORK/$kind/cache"
  /usr/bin/time -f "TIME %e %U %S %M" "$BIN" backup "$@" >/dev/null 2>"$TMP/err"
  read -r _ w u s m < <(grep '^TIME' "$TMP/err")
  printf "%-6s %-22s wall %5.2f s cpu %5.2f s rss %4d MiB | %s\n" "$kind" "$label" "$w" "$(echo "$u + $s" | bc)" \
    $((m / 1024)) "$(grep -o 'dedup checks: .*' "$TMP/err" | sed 's/dedup checks: //')"
}
for r in $(seq "$RUNS"); do
  for kind in small big; do
    python3 -c 'import os, sys
text = (b"strongroom half-compressible filler line\n" * 800)[:32768]
with open(sys.argv[1], "wb") as f:
    for _ in range(4096):
        f.write(os.urandom(32768)); f.write(text)' "$TMP/new.bin"
    one "$kind" "new data, run $r" "$TMP/new.bin"
  done
done
for mode in first force; do
  for kind in small big; do
    extra=(); [ "$mode" = force ] && extra=(--force)
    one "$kind" "$mode $(basename "$(dirname "$DATA")")/$(basename "$DATA")" "${extra[@]}" "$DATA"
  done
done
for kind in small big; do
  export STRONGROOM_REPO="$WORK/$kind/repo" STRONGROOM_CACHE_DIR="$WORK/$kind/cache"
  # As many synthetic blobs as catalog_scale.sh's lookups had in this catalog.
  blobs=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["catalog_blobs"])' "$WORK/$kind-lookups.json")
  echo "$kind lookups: $(STRONGROOM_LOG=off "$BIN" bench lookups --count 200000 --blobs "$blobs")"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
