#!/usr/bin/env bash
# The app-trees dataset series: consecutive releases of a Python package
# that ships compiled extension modules beside many small source files,
# each release's wheel unpacked into $SRBENCH_ROOT/data/app-trees/vN.
#
# The default is pandas 2.2.0 .. 2.2.3 for CPython 3.12 on x86_64 Linux:
# about 1,650 files and 43 MB per version, three quarters of the files
# under 16 KiB, 44 shared libraries holding half of the bytes. This is an
# application directory upgraded in place, the kind of tree where small
# files dominate the file count and binaries the byte count.
#
# Usage: SRBENCH_ROOT=DIR benches/datasets/app-trees.sh [PACKAGE VERSION...]
# Needs pip and unzip, and access to PyPI (or a pip index configured for
# pip). Idempotent: a version already unpacked is kept. Every file gets the
# same mtime (a wheel's zip times are its build's), so tools that skip by
# mtime must compare content; compare.sh copies with rsync --checksum.
set -euo pipefail

: "${SRBENCH_ROOT:?set SRBENCH_ROOT to a scratch directory}"
PACKAGE="${1:-pandas}"
if [ $# -gt 1 ]; then
    shift
    VERSIONS=("$@")
else
    VERSIONS=(2.2.0 2.2.1 2.2.2 2.2.3)
fi
OUT="$SRBENCH_ROOT/data/app-trees"
WHEELS="$SRBENCH_ROOT/wheels"
mkdir -p "$OUT" "$WHEELS"

n=0
for v in "${VERSIONS[@]}"; do
    n=$((n + 1))
    dest="$OUT/v$n"
    if [ -f "$OUT/.v$n.complete" ]; then
        continue
    fi
    pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        "$PACKAGE==$v" -d "$WHEELS"
    wheel=$(ls "$WHEELS"/"$PACKAGE"-"$v"-*.whl | head -n 1)
    rm -rf "$dest"
    mkdir -p "$dest"
    unzip -q "$wheel" -d "$dest"
    find "$dest" -exec touch -h -d '2024-01-01 00:00:00 UTC' {} +
    touch "$OUT/.v$n.complete"
    echo "v$n: $PACKAGE $v: $(find "$dest" -type f | wc -l) files, $(du -sb "$dest" | cut -f1) bytes"
done
