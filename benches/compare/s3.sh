#!/usr/bin/env bash
# Backup and restore throughput against the S3 emulator (SeaweedFS) on
# loopback, strongroom with --io-concurrency $IO next to restic with
# s3.connections=$IO on the same server. Start the server first:
#   . scripts/test-servers.sh     (exports STRONGROOM_TEST_S3_*)
# Usage: benches/compare/s3.sh [MiB]   (default 256; data in a temp dir)
# DELAY_MS=N puts benches/compare/s3_proxy.py in front of the server
# (N ms each way, so a round trip of 2N ms) for a WAN-like latency.
set -euo pipefail
cd "$(dirname "$0")/../.."
MIB="${1:-256}"
IO="${IO:-16}"   # --io-concurrency and restic s3.connections
: "${STRONGROOM_TEST_S3_ENDPOINT:?start the emulator: . scripts/test-servers.sh}"
BIN="${CARGO_TARGET_DIR:-target}/release/strongroom"
[ -x "$BIN" ] || cargo build --release
export AWS_ACCESS_KEY_ID="$STRONGROOM_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$STRONGROOM_TEST_S3_SECRET_KEY"
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export STRONGROOM_S3_ENDPOINT="$STRONGROOM_TEST_S3_ENDPOINT" STRONGROOM_PASSWORD=bench RESTIC_PASSWORD=bench
W="$(mktemp -d -t sr-s3-bench.XXXXXX)"; proxy=""
trap '[ -n "$proxy" ] && kill "$proxy"; rm -rf "$W"' EXIT
ENDPOINT="$STRONGROOM_TEST_S3_ENDPOINT"
if [ -n "${DELAY_MS:-}" ]; then
  python3 benches/compare/s3_proxy.py 18433 "${ENDPOINT##*:}" "$DELAY_MS" "$W/requests.log" & proxy=$!
  sleep 1; ENDPOINT="http://127.0.0.1:18433"
fi
export STRONGROOM_S3_ENDPOINT="$ENDPOINT"
export STRONGROOM_CACHE_DIR="$W/cache" RESTIC_CACHE_DIR="$W/restic-cache"
# Data: 16 files of random bytes (incompressible, no dedup inside).
mkdir -p "$W/data"
for i in $(seq 1 16); do head -c $((MIB * 1024 * 1024 / 16)) /dev/urandom >"$W/data/f$i.bin"; done
tag="$(date +%s)"
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v s="$s" -v e="$e" -v m="$MIB" '{}END{printf "%6.2f s  %7.1f MiB/s\n", e-s, m/(e-s)}' </dev/null; }
SR="s3://strongroom-test/bench-$tag"
echo "data: $MIB MiB in 16 files; server: SeaweedFS $(weed version 2>/dev/null | awk '{print $3}') at $ENDPOINT, added delay each way: ${DELAY_MS:-0} ms"
"$BIN" -r "$SR" init --kdf-memory-kib 19456 >/dev/null
printf "strongroom backup  (--io-concurrency $IO): "; t "$BIN" -r "$SR" --io-concurrency $IO backup -q "$W/data"
printf "strongroom restore (--io-concurrency $IO): "; t "$BIN" -r "$SR" --io-concurrency $IO restore -q latest --target "$W/r1"
cmp -s "$W/data/f1.bin" "$W/r1$W/data/f1.bin" || { echo "strongroom restore differs"; exit 1; }
if command -v restic >/dev/null; then
  RR="s3:$ENDPOINT/strongroom-test/restic-$tag"
  restic -r "$RR" init >/dev/null
  printf "restic backup  (s3.connections=$IO):     "; t restic -r "$RR" -o s3.connections=$IO backup -q "$W/data"
  printf "restic restore (s3.connections=$IO):     "; t restic -r "$RR" -o s3.connections=$IO restore latest --target "$W/r2"
  cmp -s "$W/data/f1.bin" "$W/r2$W/data/f1.bin" || { echo "restic restore differs"; exit 1; }
  echo "restic: $(restic version)"
fi
