#!/usr/bin/env bash
# Restore throughput with the file system taken out: strongroom, rustic and
# restic (the fastest restorers of the compare runs) each back up DIR once,
# then restore it N times, alternating, into a tmpfs target, so that ext4's
# inode allocator (slow after the thousands of deletions of a compare run)
# does not decide the figure.
#
# Usage: SR_BIN=target/release/strongroom benches/compare/restore_tmpfs.sh DIR [N] [TARGET]
#   N       rounds (default 3)
#   TARGET  a directory on tmpfs (default /dev/shm/sr-restore-target)
# Prints wall seconds, CPU seconds and peak RSS of every restore.
set -euo pipefail
D=$1; N=${2:-3}; T=${3:-/dev/shm/sr-restore-target}
SR=${SR_BIN:-target/release/strongroom}
W=$(mktemp -d)
trap 'rm -rf "$W" "$T"' EXIT
echo "# $(date -u +%FT%TZ) $("$SR" --version), $(rustic --version 2>&1 | head -1), $(restic version | cut -d' ' -f1-2); $D; load $(cut -d' ' -f1-3 /proc/loadavg)"
head -c 64 /dev/urandom >"$W/key"
STRONGROOM_PASSWORD=x "$SR" -q init -r "$W/sr" --cache-dir "$W/src"
STRONGROOM_PASSWORD=x "$SR" -q tenant key add -r "$W/sr" --cache-dir "$W/src" --key-file "$W/key"
"$SR" -q --password-file "$W/key" backup -r "$W/sr" --cache-dir "$W/src" "$D"
export RUSTIC_PASSWORD=x RESTIC_PASSWORD=x
rustic -r "$W/ru" --cache-dir "$W/ruc" init >/dev/null 2>&1
rustic -r "$W/ru" --cache-dir "$W/ruc" backup "$D" >/dev/null 2>&1
restic -q init --repo "$W/re" --cache-dir "$W/rec"
restic -q backup --repo "$W/re" --cache-dir "$W/rec" --compression auto "$D"
for _ in $(seq "$N"); do
  rm -rf "$T"; mkdir -p "$T"
  /usr/bin/time -o "$W/t" -f "strongroom %e s wall %U+%S cpu %M KiB" \
    "$SR" -q --password-file "$W/key" restore -r "$W/sr" --cache-dir "$W/src" latest --target "$T"; cat "$W/t"
  rm -rf "$T"; mkdir -p "$T"
  /usr/bin/time -o "$W/t" -f "rustic     %e s wall %U+%S cpu %M KiB" \
    rustic -r "$W/ru" --cache-dir "$W/ruc" restore latest "$T" >/dev/null 2>&1; cat "$W/t"
  rm -rf "$T"; mkdir -p "$T"
  /usr/bin/time -o "$W/t" -f "restic     %e s wall %U+%S cpu %M KiB" \
    restic -q restore --repo "$W/re" --cache-dir "$W/rec" latest --target "$T"; cat "$W/t"
done
