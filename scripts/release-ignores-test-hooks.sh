#!/usr/bin/env bash
# The test hooks (crates/strongroom-core/src/testhook.rs) exist only in builds with the
# `test-hooks` feature. This runs the release binary, which users get,
# with every test variable set to what would break it if it were read:
# a fault on the first store write, a one-second lock TTL and a pause
# at the first file opened. A release build must ignore all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
bin="$target_dir/release/strongroom"

work="$(mktemp -d "${TMPDIR:-/tmp}/strongroom-hooks.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/pause"
echo "some data" > "$work/src/file"
export STRONGROOM_REPO="$work/repo" STRONGROOM_CACHE_DIR="$work/cache" STRONGROOM_PASSWORD="hooks-$RANDOM"
export STRONGROOM_FAULT="fail-put:1,abort-put:1" STRONGROOM_LOCK_TTL_SECS=1
export STRONGROOM_TEST_PAUSE=backup-before-open STRONGROOM_TEST_PAUSE_DIR="$work/pause"
timeout 60 "$bin" -q init
timeout 60 "$bin" -q backup "$work/src"
timeout 60 "$bin" -q check --read-data
if [ -e "$work/pause/reached" ]; then
  echo "the release binary paused at a test pause point" >&2
  exit 1
fi
echo "release binary: test variables ignored (init, backup and check succeeded)"
