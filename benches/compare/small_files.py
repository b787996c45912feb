#!/usr/bin/env python3
"""Estimates what small files cost in a repository, and what a zstd
dictionary, a higher level or combined chunks would save.

Usage: SRBENCH_ROOT=DIR benches/compare/small_files.py [SERIES]
(SERIES defaults to app-trees; its versions are $SRBENCH_ROOT/data/SERIES/v1..).
Needs python3 and the `zstandard` module (pip install zstandard).

The model follows the blob layout (docs/FORMAT.md): a file under the
minimum chunk size (64 KiB) is one chunk; each distinct chunk is stored
once, as `flag | payload_len u32 | payload`, padded with Padme, sealed
(12-byte nonce, 16-byte tag), and listed by a 45-byte entry in its pack's
header and another in an index delta. A chunk is
stored compressed only when that saves more than 1/32 of it, as the
writer decides. Later versions count only the chunks no earlier version
had. Larger files are not modelled here (they are cut into chunks of
64..512 KiB, 128 KiB on average), except for one line comparing their
compression in 128 KiB pieces with the whole file.

A dictionary is trained on the first small files of v1 in walk order (as
a backup would meet them), up to 100 times the dictionary's size, and then
applied, unchanged, to every version. Frames carry no dictionary id and
no checksum (the blob id verifies the content).
"""
import hashlib
import os
import sys
import time

import zstandard as zs

SMALL = 64 * 1024
NONCE, TAG, HEADER, ENTRY = 12, 16, 5, 45


def padme(n):
    if n < 2:
        return n
    e = n.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


def walk(root):
    """(directory, bytes) of each regular file under root, in sorted order."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    out.append((os.path.relpath(d, root), fh.read()))
    return out


def payload(data, cctx):
    """The payload the writer stores for one chunk: compressed if it pays."""
    if data:
        c = cctx.compress(data)
        if len(c) < len(data) - len(data) // 32:
            return len(c)
    return len(data)


def stored(n):
    return padme(HEADER + n) + NONCE + TAG + 2 * ENTRY


def total(chunks, cctx):
    return sum(stored(payload(d, cctx)) for d in chunks)


def compressor(level, dictionary=None):
    return zs.ZstdCompressor(level=level, dict_data=dictionary, write_checksum=False,
                             write_content_size=True, write_dict_id=False)


def main():
    root = os.path.join(os.environ["SRBENCH_ROOT"], "data", sys.argv[1] if len(sys.argv) > 1 else "app-trees")
    versions = sorted(v for v in os.listdir(root) if v.startswith("v"))
    seen, new, files = set(), {}, {}
    for v in versions:
        files[v] = walk(os.path.join(root, v))
        fresh = []
        for d, data in files[v]:
            h = hashlib.sha256(data).digest()
            if len(data) < SMALL and h not in seen:
                seen.add(h)
                fresh.append((d, data))
        new[v] = fresh
    first = versions[0]
    for v in versions:
        small = [d for _, d in files[v] if len(d) < SMALL]
        print(f"{v}: {len(files[v])} files, {sum(len(d) for _, d in files[v])} B; {len(small)} under 64 KiB "
              f"({sum(map(len, small))} B); {len(new[v])} new distinct small chunks ({sum(len(d) for _, d in new[v])} B)")

    c3 = compressor(3)
    chunks = [d for _, d in new[first]]
    pays = [payload(d, c3) for d in chunks]
    padding = sum(padme(HEADER + p) - HEADER - p for p in pays)
    print(f"\nper-blob overhead, {first} small chunks at level 3: payload {sum(pays)} B, header {HEADER * len(pays)}, "
          f"padme {padding}, nonce+tag {(NONCE + TAG) * len(pays)}, pack header and index entries {2 * ENTRY * len(pays)}")

    base = {v: total([d for _, d in new[v]], c3) for v in versions}
    print("\nstored bytes of new small chunks (change against each alone at level 3)")
    print("option | " + " | ".join(versions))

    def row(name, per_version):
        cells = [f"{per_version[v]} ({100 * (per_version[v] - base[v]) / base[v]:+.1f}%)" for v in versions]
        print(f"{name} | " + " | ".join(cells))

    for level in (3, 6, 9):
        row(f"alone, level {level}", {v: total([d for _, d in new[v]], compressor(level)) for v in versions})
    for kib in (16, 32, 64, 112):
        sample, n = [], 0
        for d in chunks:
            if n >= 100 * kib * 1024:
                break
            sample.append(d)
            n += len(d)
        t0 = time.monotonic()
        dictionary = zs.train_dictionary(kib * 1024, sample, k=1024, d=8, threads=1)
        took = time.monotonic() - t0
        for level in (3, 6):
            cctx = compressor(level, dictionary)
            row(f"dictionary {kib} KiB (trained on {len(sample)} files, {n} B, in {took:.1f} s), level {level}",
                {v: total([d for _, d in new[v]], cctx) for v in versions})
    combined = {}
    for v in versions:
        groups = {}
        for d, data in new[v]:
            groups.setdefault(d, []).append(data)
        t = 0
        for parts in groups.values():
            buf = b""
            for data in parts:
                if buf and len(buf) + len(data) > 512 * 1024:
                    t += stored(payload(buf, c3))
                    buf = b""
                buf += data
            if buf:
                t += stored(payload(buf, c3))
        combined[v] = t
    row("combined per directory (up to 512 KiB), level 3", combined)
    stream = b"".join(chunks)
    print(f"\nupper bound, {first}'s small chunks as one stream in 1 MiB blocks at level 3: "
          f"{sum(len(c3.compress(stream[i:i + (1 << 20)])) for i in range(0, len(stream), 1 << 20))} B")
    big = [d for _, d in files[first] if len(d) >= SMALL]
    pieces = sum(len(c3.compress(d[i:i + (128 << 10)])) for d in big for i in range(0, len(d), 128 << 10))
    print(f"{first}'s {len(big)} files of 64 KiB or more ({sum(map(len, big))} B) at level 3: in 128 KiB pieces "
          f"{pieces} B, each file whole {sum(len(c3.compress(d)) for d in big)} B")


if __name__ == "__main__":
    main()
