#!/usr/bin/env python3
"""Corruption campaign: single-byte changes and truncations of random
store objects must be detected by `check --read-data`, and no restore or
dump may ever produce a wrong byte.

Setup: a repository with an escrow key and two tenants (default, acme);
each has four snapshots of a changing tree, a rotated data key (two
keyrings), a hold, tenant settings (a retention plan), and a forget +
prune behind it; every object kind the store holds at rest is there
(config, escrow, key slots, keyrings, packs, index deltas, snapshot
records, holds, audit entries, meta/*). The repository is then copied
aside as the pristine image.

Each trial starts from a fresh copy of the pristine image (and, one trial
in two, of the warm catalog cache; otherwise with an empty cache), picks
an object kind uniformly, then an object of that kind uniformly, and
applies one change: a byte XORed with a random non-zero value at a
random offset, or a truncation to a random shorter length (half each).
Then, for each tenant the object belongs to (both for root objects):
  - `check --read-data` runs: exit 0 means not detected;
  - every snapshot of the pristine image is restored and compared with
    its source (SHA-256 of every file, symlink targets, structure): a
    restore may fail loudly (non-zero exit, files missing), but a file
    with wrong bytes, or an incomplete tree after exit 0, is a failure;
  - one file of a random snapshot is written with `dump` and compared;
  - for audit entries, `audit verify` runs as well (check does not read
    the audit log; audit verify is its verifier).

Counting rule. A trial is DETECTED when `check --read-data` (opened with
the tenant's password) exits non-zero. When it passes, the operator's
check runs: `check` opened with the escrow secret (`--escrow-secret`); a
key slot opens only with its own secret, so this is the only check that
can find a damaged escrow slot; a non-zero exit is DETECTED BY THE ESCROW
CHECK. A damaged audit entry that both checks pass is DETECTED BY AUDIT VERIFY when
`audit verify` exits non-zero (check does not read the audit log, by
design: `audit verify` is its verifier). An undetected trial is
HARMLESS when every restore and dump of the tenant still gives exactly
the pristine result, `snapshots` lists the same ids, and the object is
not named by its content (packs, index deltas and snapshot records must
always be detected: their names are the hash of their bytes). Any other
undetected trial is a MISS. The campaign passes with 0 misses and 0
wrong bytes; harmless trials are reported per kind (for example a
JSON whitespace byte of `config`, or a key slot that the password does
not use).

Usage: corrupt.py [--count N] [--seed S] [--out FILE] [--workdir DIR] [--keep]
Environment: SR_BIN (binary under test; default: release build of this
checkout).
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (SMALL_INIT, Repo, Source, binary, log, manifest,  # noqa: E402
                    restore_and_compare, version)

TENANTS = ["default", "acme"]
CONTENT_NAMED = {"packs", "index", "snapshots"}


def kind_of(rel):
    """(kind, tenant or None) of an object key."""
    parts = rel.split("/")
    if parts[0] == "tenants" and len(parts) >= 3:
        kind = parts[2]
        if kind == "meta" and len(parts) >= 4:
            kind = "meta/" + parts[3]
        return kind, parts[1]
    return re.sub(r"[0-9a-f]{16,}", "*", parts[0]), None


class Campaign:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.bin = binary()
        self.work = args.workdir
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        self.pw = {t: f"pw-{t}-corrupt-campaign" for t in TENANTS}
        self.pristine = os.path.join(self.work, "pristine")
        self.pristine_cache = os.path.join(self.work, "pristine-cache")
        self.repo = Repo(self.bin, os.path.join(self.work, "repo"), os.path.join(self.work, "home"),
                         os.path.join(self.work, "cache"), self.pw)
        self.sources = {t: Source(os.path.join(self.work, "data", t), random.Random(self.rng.random()))
                        for t in TENANTS}
        self.snapshots = {t: {} for t in TENANTS}  # id -> manifest
        self.kinds = {}
        self.t0 = time.monotonic()
        self.stats = {}
        self.failures = []

    def must(self, tenant, args):
        r = self.repo.run(tenant, args)
        if r.code != 0:
            sys.exit("setup failed: " + r.describe())
        return r

    def setup(self):
        log(f"binary: {self.bin} ({version(self.bin)})")
        pub = os.path.join(self.work, "escrow.pub")
        sec = self.escrow_secret = os.path.join(self.work, "escrow.secret")
        self.must("default", ["escrow", "keygen", "--secret-out", sec, "--public-out", pub])
        self.must("default", ["init", "--escrow-key", pub] + SMALL_INIT)
        self.must("acme", ["tenant", "add", "acme", "--kdf-memory-kib", "19456", "--kdf-passes", "2"])
        for t in TENANTS:
            src = self.sources[t]
            for i in range(5):
                if i == 2:
                    self.must(t, ["tenant", "rotate-key"])
                src.mutate()
                m = manifest(src.root)
                r = self.must(t, ["backup", "--json", "--tag", f"c{i}", src.root])
                sid = r.json()["snapshot_id"]
                self.snapshots[t][sid] = m
                # The bytes themselves, for dump's prefix comparison.
                shutil.copytree(src.root, os.path.join(self.work, "versions", t, sid), symlinks=True)
            self.must(t, ["forget", "--keep-last", "4", "--prune", "--json"])
            snaps = {s["id"] for s in json.loads(self.must(t, ["snapshots", "--json"]).stdout)}
            self.snapshots[t] = {i: m for i, m in self.snapshots[t].items() if i in snaps}
            self.must(t, ["hold", "add", "--reason", "campaign hold", sorted(self.snapshots[t])[0]])
            self.must(t, ["tenant", "set", t, "--plan", "basic"])
        for t in TENANTS:
            self.must(t, ["check", "--read-data"])
        shutil.copytree(self.repo.url, self.pristine, symlinks=True)
        shutil.copytree(self.repo.cache, self.pristine_cache, symlinks=True)
        for dirpath, _, files in os.walk(self.pristine):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), self.pristine)
                self.kinds.setdefault(kind_of(rel)[0], []).append(rel)
        for k in self.kinds:
            self.kinds[k].sort()
        log("object kinds: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(self.kinds.items())))

    def reset(self, warm):
        for d in (self.repo.url, self.repo.cache):
            if os.path.exists(d):
                shutil.rmtree(d)
        subprocess.run(["cp", "-a", self.pristine, self.repo.url], check=True)
        if warm:
            subprocess.run(["cp", "-a", self.pristine_cache, self.repo.cache], check=True)

    def corrupt(self, rel):
        path = os.path.join(self.repo.url, rel)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        if not data:
            return None
        if self.rng.random() < 0.5:
            pos = self.rng.randrange(len(data))
            x = self.rng.randrange(1, 256)
            data[pos] ^= x
            what = f"xor byte {pos} of {len(data)} with {x:#04x}"
        else:
            n = self.rng.randrange(len(data))
            what = f"truncate to {n} of {len(data)}"
            data = data[:n]
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(data)
        return what

    def fail(self, what, detail=""):
        n = len(self.failures)
        log(f"FAILURE {n + 1}: {what}\n{detail}")
        saved = ""
        if n < 5:
            saved = os.path.join(self.work, f"failure-{n + 1}")
            shutil.copytree(self.repo.url, saved, symlinks=True)
        self.failures.append({"what": what, "detail": detail[-4000:], "saved": saved})

    def trial(self, n):
        kind = self.rng.choice(sorted(self.kinds))
        rel = self.rng.choice(self.kinds[kind])
        warm = n % 2 == 1
        self.reset(warm)
        what = self.corrupt(rel)
        st = self.stats.setdefault(kind, {"trials": 0, "detected": 0, "by_escrow_check": 0,
                                          "by_audit_verify": 0, "harmless": 0,
                                          "missed": 0,
                                          "wrong_bytes": 0, "restores": 0, "restores_failed": 0,
                                          "check_exit_codes": {}})
        if what is None:
            return False
        st["trials"] += 1
        _, owner = kind_of(rel)
        tenants = [owner] if owner in TENANTS else TENANTS
        desc = f"{rel}: {what} ({'warm' if warm else 'cold'} cache)"
        detected = False
        by_audit = False
        by_escrow = False
        effect = []
        for t in tenants:
            r = self.repo.run(t, ["check", "--read-data", "--json"])
            codes = st["check_exit_codes"]
            codes[str(r.code)] = codes.get(str(r.code), 0) + 1
            if r.panicked():
                self.fail(f"panic in check: {desc}", r.describe())
            if r.code != 0:
                detected = True
            if r.code == 0:
                # The operator's check, opened with the escrow secret: the
                # only way to verify the tenant's escrow slot.
                e = self.repo.run(t, ["--escrow-secret", self.escrow_secret, "check"])
                if e.panicked():
                    self.fail(f"panic in escrow check: {desc}", e.describe())
                if e.code != 0:
                    by_escrow = True
            if kind == "audit":
                a = self.repo.run(t, ["audit", "verify", "--json"])
                if a.code != 0:
                    by_audit = True
            snaps, sr = self.repo.snapshots(t)
            listed = {s["id"] for s in snaps} if snaps is not None else None
            if listed != set(self.snapshots[t]):
                effect.append(f"{t}: snapshots lists {'nothing' if listed is None else len(listed)}")
            for sid, m in sorted(self.snapshots[t].items()):
                st["restores"] += 1
                rr, wrong, missing = restore_and_compare(self.repo, t, sid, self.sources[t].root, m,
                                                         os.path.join(self.work, "restore"))
                if rr.panicked():
                    self.fail(f"panic in restore: {desc}", rr.describe())
                if rr.code != 0:
                    st["restores_failed"] += 1
                    effect.append(f"{t}: restore {sid[:8]} exited {rr.code}")
                if wrong:
                    st["wrong_bytes"] += 1
                    self.fail(f"WRONG BYTES restored from {sid[:8]} of {t} after {desc}",
                              "\n".join(wrong[:20]) + "\n" + rr.describe())
            self.dump_one(t, desc, st, effect)
        if detected:
            st["detected"] += 1
        elif by_escrow:
            st["by_escrow_check"] += 1
        elif by_audit:
            st["by_audit_verify"] += 1
        elif kind in CONTENT_NAMED or effect:
            st["missed"] += 1
            self.fail(f"MISSED by check --read-data: {desc}", "\n".join(effect))
        else:
            st["harmless"] += 1
            log(f"undetected, no effect: {desc}")
        return True

    def dump_one(self, t, desc, st, effect):
        """`dump` of a random file of a random snapshot: with exit 0 its
        output is the file; after a failure, a prefix of it at most."""
        sid = self.rng.choice(sorted(self.snapshots[t]))
        files = sorted(rel for rel, e in self.snapshots[t][sid].items() if e[0] == "file")
        rel = self.rng.choice(files)
        with open(os.path.join(self.work, "versions", t, sid, rel), "rb") as f:
            want = f.read()
        path = os.path.join(self.sources[t].root, rel)
        p = subprocess.run([self.bin, "dump", sid, path], env=self.repo.env(t), stdin=subprocess.DEVNULL,
                           capture_output=True)
        err = p.stderr.decode(errors="replace")
        if "panicked" in err:
            self.fail(f"panic in dump: {desc}", err)
        if p.returncode == 0 and p.stdout != want:
            st["wrong_bytes"] += 1
            self.fail(f"WRONG BYTES from dump {sid[:8]} {rel} of {t} after {desc}")
        elif p.returncode != 0:
            effect.append(f"{t}: dump exited {p.returncode}")
            if not want.startswith(p.stdout):
                st["wrong_bytes"] += 1
                self.fail(f"WRONG BYTES from a failing dump {sid[:8]} {rel} of {t} after {desc}")

    def summary(self):
        tot = {k: sum(s[k] for s in self.stats.values())
               for k in ("trials", "detected", "by_escrow_check", "by_audit_verify", "harmless", "missed",
                         "wrong_bytes", "restores")}
        secs = time.monotonic() - self.t0
        return (f"corrupt campaign: {tot['trials']} corruptions; detected by check --read-data "
                f"{tot['detected']}, by the escrow check {tot['by_escrow_check']}, "
                f"by audit verify {tot['by_audit_verify']}, "
                f"undetected without effect {tot['harmless']}, missed {tot['missed']}; "
                f"{tot['restores']} restores, wrong bytes {tot['wrong_bytes']}; "
                f"failures {len(self.failures)}; {secs:.0f} s; seed {self.args.seed}")

    def table(self):
        rows = ["| object kind | trials | detected by check | by the escrow check | by audit verify "
                "| undetected, no effect | missed | wrong bytes | check exit codes |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k, s in sorted(self.stats.items()):
            codes = ", ".join(f"{c}: {n}" for c, n in sorted(s["check_exit_codes"].items()))
            rows.append(f"| {k} | {s['trials']} | {s['detected']} | {s['by_escrow_check']} "
                        f"| {s['by_audit_verify']} | {s['harmless']} "
                        f"| {s['missed']} "
                        f"| {s['wrong_bytes']} | {codes} |")
        return "\n".join(rows)

    def main(self):
        self.setup()
        n = 0
        done = 0
        while done < self.args.count:
            n += 1
            if self.trial(n):
                done += 1
            if done and done % 25 == 0:
                log(f"[{time.monotonic() - self.t0:.0f}s] {self.summary()}")
        print(self.table())
        line = self.summary()
        print(line)
        if self.args.out:
            with open(self.args.out, "w") as f:
                json.dump({"summary": line, "table": self.table(), "binary": version(self.bin),
                           "seed": self.args.seed, "count": self.args.count, "per_kind": self.stats,
                           "failures": self.failures}, f, indent=2)
        if not self.args.keep and not self.failures:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000, help="corruptions to try (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write the results (JSON) here")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "strongroom-corrupt-campaign"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    sys.exit(Campaign(args).main())


if __name__ == "__main__":
    main()
