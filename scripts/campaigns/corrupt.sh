#!/usr/bin/env bash
# Corruption campaign; see corrupt.py for what it does, the counting rule
# and its options (--count N, --seed S, --out FILE, --workdir DIR, --keep).
# SR_BIN=path/to/strongroom uses that binary instead of a release build.
exec python3 "$(dirname "$0")/corrupt.py" "$@"
