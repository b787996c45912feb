#!/usr/bin/env bash
# First backup against the machine's limit, on the same data in one run.
#
# Usage: SR_BIN=target/release/strongroom benches/compare/limit.sh [--rounds N] INPUT...
#   INPUT  a file or directory (e.g. $SRBENCH_ROOT/data/shifted-binary/v1)
#
# For each input, N rounds (default 3) of, alternately:
#   1. `strongroom bench pipeline INPUT --runs 2`: the input read into memory,
#      then chunk + keyed hash + compress + seal on all cores, each core on
#      its own share, no reading, packing or storage (the limit, MB/s, the
#      better of 2 runs);
#   2. two first backups of INPUT (read from the page cache, warmed by step
#      1), each into a fresh local repository opened with a key file (MB/s
#      from the backup's own duration, reading to snapshot commit; the
#      better of the 2).
# Prints each round's pair and ratio, and the median ratio. Ratios of
# best-of-2 figures, because a shared machine's speed drifts from minute to
# minute.
set -euo pipefail
SR="${SR_BIN:-target/release/strongroom}"
ROUNDS=3
if [[ ${1:-} == --rounds ]]; then ROUNDS=$2; shift 2; fi
[[ $# -gt 0 ]] || { echo "usage: $0 [--rounds N] INPUT..." >&2; exit 2; }
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
echo "# $(date -u +%FT%TZ) $("$SR" --version) on $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-45s %5s %12s %12s %7s\n' input round limit_MB/s backup_MB/s ratio
for input in "$@"; do
  ratios=()
  for round in $(seq "$ROUNDS"); do
    limit="$("$SR" --json bench pipeline "$input" --runs 2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["all_threads_mb_per_s"])')"
    backup=0
    for _ in 1 2; do
      rm -rf "$W/repo" "$W/cache"
      head -c 64 /dev/urandom >"$W/key"
      STRONGROOM_PASSWORD=bench "$SR" -q init -r "$W/repo" --cache-dir "$W/cache"
      STRONGROOM_PASSWORD=bench "$SR" -q tenant key add -r "$W/repo" --cache-dir "$W/cache" --key-file "$W/key"
      out="$(env -u STRONGROOM_PASSWORD "$SR" --json --password-file "$W/key" backup -r "$W/repo" --cache-dir "$W/cache" "$input")"
      backup="$(python3 -c 'import json,sys; c=json.loads(sys.argv[1]); print(max(float(sys.argv[2]), c["logical_bytes"]/1e6/c["duration_seconds"]))' "$out" "$backup")"
    done
    ratio="$(python3 -c "print(f'{$backup/$limit:.3f}')")"
    ratios+=("$ratio")
    printf '%-45s %5s %12.1f %12.1f %7s\n' "$input" "$round" "$limit" "$backup" "$ratio"
  done
  median="$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  echo "median ratio $median for $input"
done
