#!/usr/bin/env bash
# Quick start: build strongroom in release mode and run a real backup cycle
# into a fresh local repository (init, backup twice, snapshots, restore with
# verification, check --read-data, stats). Needs nothing but cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
bin="$target_dir/release/strongroom"

work="$(mktemp -d "${TMPDIR:-/tmp}/strongroom-quickstart.XXXXXX")"
export STRONGROOM_REPO="$work/repo"
export STRONGROOM_CACHE_DIR="$work/cache"
export STRONGROOM_PASSWORD="quickstart-$RANDOM-$RANDOM"
src="$PWD"

step() { printf '\n\033[1m$ strongroom %s\033[0m\n' "$*"; "$bin" "$@"; }

step init
step backup "$src/src" "$src/docs" "$src/Cargo.toml" --tag quickstart
step backup "$src/src" "$src/docs" "$src/Cargo.toml" --tag quickstart
step snapshots
step restore latest --target "$work/restored" --verify
diff -r "$src/src" "$work/restored$src/src"
echo "restored tree is identical to the source"
step check --read-data
step stats
printf '\nrepository: %s (password in this shell only; remove the directory when done)\n' "$work"
