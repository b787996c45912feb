#!/usr/bin/env bash
# Two strongroom binaries side by side, alternated: the first backup of
# src-versions v1, the unchanged re-backup (median of 5), the repository
# size after backing up v1..v8 upgraded in place, and after 20 backups
# that each add one small file.
#
# Usage: walk_and_padding.sh BEFORE_BIN AFTER_BIN [ROUNDS]
# Env: SRBENCH_ROOT, holding data/src-versions/v1..v8 (docs/BENCHMARKS.md,
# Datasets), SCRATCH (default: a temp dir).
set -euo pipefail
BEFORE="$1"
AFTER="$2"
ROUNDS="${3:-3}"
DATA="${SRBENCH_ROOT:?set SRBENCH_ROOT to the scratch directory holding data/src-versions}/data/src-versions"
SCRATCH="${SCRATCH:-$(mktemp -d)}"
export STRONGROOM_PASSWORD=bench

ms() { python3 -c 'import sys,time; print(int(time.time()*1000))'; }

run_one() { # label bin
  local label="$1" bin="$2" w="$SCRATCH/$1"
  rm -rf "$w"
  mkdir -p "$w/app"
  export STRONGROOM_REPO="$w/repo" STRONGROOM_CACHE_DIR="$w/cache"
  "$bin" init --kdf-memory-kib 1024 >/dev/null
  cp -a "$DATA/v1/." "$w/app/"
  sync
  local t0 t1 first
  t0=$(ms); "$bin" backup "$w/app" >/dev/null; t1=$(ms); first=$((t1 - t0))
  local again=()
  for _ in 1 2 3 4 5; do
    t0=$(ms); "$bin" backup "$w/app" >/dev/null; t1=$(ms); again+=($((t1 - t0)))
  done
  local med
  med=$(printf '%s\n' "${again[@]}" | sort -n | sed -n 3p)
  for v in 2 3 4 5 6 7 8; do
    rm -rf "$w/app"
    mkdir -p "$w/app"
    cp -a "$DATA/v$v/." "$w/app/"
    "$bin" backup "$w/app" >/dev/null
  done
  local series
  series=$(du -sb "$w/repo" | cut -f1)
  for i in $(seq 1 20); do
    head -c $((100 + i * 997)) /dev/urandom >"$w/app/note-$i.txt"
    "$bin" backup "$w/app" >/dev/null
  done
  local small
  small=$(du -sb "$w/repo" | cut -f1)
  echo "$label first_ms=$first unchanged_median_ms=$med unchanged_all=${again[*]} repo_after_v1_v8=$series repo_after_20_small=$small load=$(cut -d' ' -f1 /proc/loadavg)"
}

for r in $(seq 1 "$ROUNDS"); do
  run_one before "$BEFORE"
  run_one after "$AFTER"
done
rm -rf "$SCRATCH"
