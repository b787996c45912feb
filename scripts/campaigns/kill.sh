#!/usr/bin/env bash
# SIGKILL campaign; see kill.py for what it does and its options
# (--count N, --seed S, --out FILE, --workdir DIR, --keep).
# SR_BIN=path/to/strongroom uses that binary instead of a release build.
exec python3 "$(dirname "$0")/kill.py" "$@"
