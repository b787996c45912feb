#!/usr/bin/env python3
"""SIGKILL campaign: kill backup, forget, prune, rotate-key and copy at
random moments; after each kill the repository must check clean with
`check --read-data` and no snapshot reported as saved may be lost.

Setup: a source repository with three tenants (default, acme, globex),
each backing up its own changing tree; a second repository (copy target)
whose `default` tenant shares keys with the source (`init
--copy-keys-from`) and whose `acme` tenant has keys of its own.

Each round picks a tenant and an operation:
  backup      (the source tree is changed first; each backup gets a unique
               tag, so a snapshot is followed through key rotations that
               change its id)
  forget      --keep-last K with K below the tenant's snapshot count, so it
               removes something
  prune       --max-unused 0 (repacks as much as it can)
  rotate-key  tenant rotate-key --rewrite (resumes an interrupted one)
  copy        copy --to TARGET (default and acme)
starts it and SIGKILLs it after a delay drawn uniformly from [0, typical
duration of that operation] (the mean of its recent uninterrupted runs;
one run in ten is left to finish, to keep that figure current). A run
that finishes before its kill counts as completed, not as a kill. Then:
  - `check --read-data` of the tenant (and of the copy target's tenant
    after a copy) must exit 0;
  - every snapshot reported as saved (`backup --json` exited 0), or seen
    to exist after a killed backup, must still exist unless a forget's
    plan covered it (a completed forget reports what it removed; after a
    killed one, only snapshots in its dry-run plan may be gone);
  - a randomly chosen snapshot of the tenant is restored and compared
    with the source as it was at backup time (SHA-256 of every file,
    symlink targets, directory structure).
At the end every remaining snapshot of both repositories is checked and
restored.

Locks. A killed process's lock on this host is stale at once when its pid
no longer runs; but pids are reused (pid_max is 32768 on small Linux
VMs), and a lock whose pid now belongs to another program looks live
until it is stale by age (5 minutes). A command that meets such a lock
(exit 11) is handled as the GUIDE tells an operator: `unlock`, and when
the lock is still there, `unlock --remove-all` (the campaign knows that
no strongroom process runs). Each block is counted by what the pid named
in the message is now (reused by another program, not running, or a
strongroom process of this campaign: the last is a failure), and the
command is retried.

Usage: kill.py [--count N] [--seed S] [--out FILE] [--workdir DIR] [--keep]
Environment: SR_BIN (binary under test; default: release build of this
checkout).
"""

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (SMALL_INIT, Repo, Source, binary, log, manifest,  # noqa: E402
                    restore_and_compare, version)

TENANTS = ["default", "acme", "globex"]
COPY_TENANTS = ["default", "acme"]
OPS = ["backup", "forget", "prune", "rotate-key", "copy"]


class Campaign:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.bin = binary()
        self.work = args.workdir
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        pw = {t: f"pw-{t}-kill-campaign" for t in TENANTS}
        self.src = Repo(self.bin, os.path.join(self.work, "repo"), os.path.join(self.work, "home"),
                        os.path.join(self.work, "cache"), pw)
        self.dst = Repo(self.bin, os.path.join(self.work, "replica"), os.path.join(self.work, "home"),
                        os.path.join(self.work, "cache-replica"), pw)
        self.src.on_locked = self.on_locked
        self.dst.on_locked = self.on_locked
        self.sources = {t: Source(os.path.join(self.work, "data", t), random.Random(self.rng.random()))
                        for t in TENANTS}
        # tag -> manifest of the source at backup time
        self.versions = {t: {} for t in TENANTS}
        # tags that must exist in the source repository
        self.expected = {t: set() for t in TENANTS}
        # target snapshot id -> tag, that must exist in the replica
        self.copied = {t: {} for t in COPY_TENANTS}
        self.serial = 0
        self.durations = {op: [] for op in OPS}
        self.stats = {
            "kills": {op: 0 for op in OPS},
            "completed": {op: 0 for op in OPS},
            "checks": 0,
            "checks_clean": 0,
            "restores": 0,
            "restores_identical": 0,
            "adopted_backups": 0,
            "lock_blocks": {},
            "unlocks": 0,
            "unlocks_remove_all": 0,
            "failures": [],
        }
        self.t0 = time.monotonic()

    # ----- bookkeeping -----

    def fail(self, what, detail=""):
        n = len(self.stats["failures"])
        log(f"FAILURE {n + 1}: {what}\n{detail}")
        saved = ""
        if n < 5:
            saved = os.path.join(self.work, f"failure-{n + 1}")
            shutil.copytree(self.src.url, os.path.join(saved, "repo"), symlinks=True)
            if os.path.exists(self.dst.url):
                shutil.copytree(self.dst.url, os.path.join(saved, "replica"), symlinks=True)
        self.stats["failures"].append({"round": self.serial, "what": what, "detail": detail[-4000:],
                                       "saved": saved})

    def on_locked(self, repo, tenant, r, attempt):
        """A command met a lock. The campaign runs one command at a time,
        so the holder is a killed process: classify it by its pid (a pid
        on this host is reused quickly when pid_max is small), then do what
        the GUIDE tells an operator: `unlock` (stale locks), and when that
        leaves the lock, `unlock --remove-all`, as no strongroom process
        runs. Returns True to retry the command."""
        if attempt == 0:
            m = re.search(r"\(pid (\d+),", r.stderr)
            holder = "unnamed"
            if m:
                try:
                    exe = os.path.realpath(f"/proc/{m.group(1)}/exe")
                    with open(f"/proc/{m.group(1)}/environ", "rb") as f:
                        ours = self.work.encode() in f.read()
                    if exe == os.path.realpath(self.bin) and ours:
                        holder = "strongroom still running"
                    else:
                        holder = "pid reused by another program"
                except OSError:
                    holder = "holder not running"
            blocks = self.stats["lock_blocks"]
            blocks[holder] = blocks.get(holder, 0) + 1
            log(f"lock conflict on {' '.join(r.args)} ({holder}):\n{r.stderr.strip()}")
            if holder == "strongroom still running":
                self.fail("a strongroom process outlived its SIGKILL", r.stderr)
                return False
        repos = [self.src, self.dst] if tenant in COPY_TENANTS else [self.src]
        if attempt == 0:
            self.stats["unlocks"] += 1
            for rp in repos:
                rp.run(tenant, ["unlock"], retry=False)
            return True
        if attempt == 1:
            self.stats["unlocks_remove_all"] += 1
            for rp in repos:
                rp.run(tenant, ["unlock", "--remove-all"], retry=False)
            return True
        self.fail(f"{' '.join(r.args)} still locked after unlock --remove-all", r.stderr)
        return False

    def run(self, repo, tenant, args):
        """An uninterrupted command (lock conflicts handled by on_locked)."""
        r = repo.run(tenant, args)
        if r.panicked():
            self.fail(f"panic in {' '.join(args)}", r.describe())
        return r

    def typical(self, op):
        d = self.durations[op][-10:]
        return statistics.mean(d) if d else 1.0

    def tags_present(self, repo, tenant):
        snaps, r = repo.snapshots(tenant)
        if snaps is None:
            self.fail(f"snapshots of {tenant} failed", r.describe())
            return None
        out = {}
        for s in snaps:
            for tag in s.get("tags", []):
                if tag.startswith("k"):
                    out.setdefault(tag, []).append(s["id"])
        return out

    # ----- operations -----

    def op_args(self, op, tenant):
        if op == "backup":
            self.serial += 1
            tag = f"k{self.serial}"
            self.sources[tenant].mutate()
            self.versions[tenant][tag] = manifest(self.sources[tenant].root)
            return ["backup", "--json", "--tag", tag, self.sources[tenant].root], tag
        if op == "forget":
            present = self.tags_present(self.src, tenant) or {}
            n = len(present)
            keep = max(1, n - self.rng.randint(1, 2))
            return ["forget", "--keep-last", str(keep), "--json"], keep
        if op == "prune":
            return ["prune", "--max-unused", "0", "--json"], None
        if op == "rotate-key":
            return ["tenant", "rotate-key", "--rewrite", "--json"], None
        if op == "copy":
            return ["copy", "--to", self.dst.url, "--json"], None
        raise ValueError(op)

    def choose(self):
        tenant = self.rng.choice(TENANTS)
        op = self.rng.choice(OPS)
        if op == "copy" and tenant not in COPY_TENANTS:
            tenant = self.rng.choice(COPY_TENANTS)
        if op == "forget" and len(self.expected[tenant]) < 3:
            op = "backup"
        return tenant, op

    def one_round(self, final_uninterrupted=False):
        tenant, op = self.choose()
        args, extra = self.op_args(op, tenant)
        plan_removed = set()
        before = self.tags_present(self.src, tenant)
        if before is None:
            return
        if op == "forget":
            dry = self.run(self.src, tenant, ["forget", "--keep-last", str(extra), "--dry-run", "--json"])
            for e in dry.json() or []:
                if e.get("action") == "remove":
                    plan_removed.update(t for t in e.get("tags", []) if t.startswith("k"))
        src_before_copy = {}
        if op == "copy":
            for tag, ids in before.items():
                for i in ids:
                    src_before_copy[i] = tag
        replica_before = self.replica_ids(tenant) if op == "copy" else set()

        uninterrupted = final_uninterrupted or self.rng.random() < 0.1
        if uninterrupted:
            r = self.src.run(tenant, args)
        else:
            delay = self.rng.uniform(0, self.typical(op))
            r = self.src.run_killed_after(tenant, args, delay)
        if r.killed:
            self.stats["kills"][op] += 1
        else:
            if r.code == 11:
                attempt = 0
                while r.code == 11 and self.on_locked(self.src, tenant, r, attempt):
                    r = self.src.run(tenant, args, retry=False)
                    attempt += 1
            self.stats["completed"][op] += 1
            self.durations[op].append(r.seconds)
            if r.panicked():
                self.fail(f"panic in {op} of {tenant}", r.describe())
            elif r.code != 0:
                self.fail(f"{op} of {tenant} exited {r.code}", r.describe())

        # What the operation reported.
        if op == "backup" and not r.killed and r.code == 0:
            self.expected[tenant].add(extra)
        if op == "forget" and not r.killed and r.code == 0:
            for e in r.json() or []:
                if e.get("action") == "remove":
                    for t in e.get("tags", []):
                        self.expected[tenant].discard(t)
        if op == "copy" and not r.killed and r.code == 0:
            for pair in (r.json() or {}).get("copied", []):
                src_id, dst_id = pair
                tag = src_before_copy.get(src_id)
                if tag is None:
                    self.fail(f"copy of {tenant} reported an unknown source snapshot {src_id}")
                else:
                    self.copied[tenant][dst_id] = tag

        # The repository must be sound.
        self.check(self.src, tenant)
        if op == "copy":
            self.check(self.dst, tenant)
            self.reconcile_replica(tenant, replica_before)

        # No snapshot lost.
        present = self.tags_present(self.src, tenant)
        if present is None:
            return
        if op == "backup" and r.killed and extra in present:
            self.expected[tenant].add(extra)
            self.stats["adopted_backups"] += 1
        for tag in sorted(self.expected[tenant]):
            if tag not in present:
                if tag in plan_removed:
                    self.expected[tenant].discard(tag)  # removed by the killed forget's plan
                else:
                    self.fail(f"snapshot tagged {tag} of {tenant} lost after {op}"
                              f"{' (killed)' if r.killed else ''}")
                    self.expected[tenant].discard(tag)
        for tag in present:
            if tag not in self.expected[tenant] and tag in self.versions[tenant]:
                # e.g. a forget removed it from our expectations but it is back? never expected
                self.fail(f"snapshot tagged {tag} of {tenant} exists but was reported removed")
                self.expected[tenant].add(tag)

        # A sample restore.
        if present:
            tag = self.rng.choice(sorted(present))
            self.restore(self.src, tenant, present[tag][0], tag)
        if op == "copy" and self.copied[tenant]:
            dst_id = self.rng.choice(sorted(self.copied[tenant]))
            self.restore(self.dst, tenant, dst_id, self.copied[tenant][dst_id])

    def replica_ids(self, tenant):
        snaps, r = self.dst.snapshots(tenant)
        if snaps is None:
            self.fail(f"snapshots of replica {tenant} failed", r.describe())
            return set()
        return {s["id"] for s in snaps}

    def reconcile_replica(self, tenant, before):
        snaps, r = self.dst.snapshots(tenant)
        if snaps is None:
            self.fail(f"snapshots of replica {tenant} failed", r.describe())
            return
        ids = {s["id"]: s for s in snaps}
        for dst_id in list(self.copied[tenant]):
            if dst_id not in ids:
                self.fail(f"replica snapshot {dst_id[:8]} of {tenant} lost")
                del self.copied[tenant][dst_id]
        # Snapshots a killed copy left behind complete: adopt them by tag.
        for i, s in ids.items():
            if i not in self.copied[tenant]:
                tags = [t for t in s.get("tags", []) if t.startswith("k")]
                if len(tags) == 1:
                    self.copied[tenant][i] = tags[0]
        # Keep the replica small: forget and prune there, uninterrupted.
        if len(ids) > 12:
            r = self.run(self.dst, tenant, ["forget", "--keep-last", "6", "--prune", "--json"])
            if r.code != 0:
                self.fail(f"replica forget of {tenant} exited {r.code}", r.describe())
            else:
                for e in (r.json() or {}).get("snapshots", []):
                    if e.get("action") == "remove":
                        self.copied[tenant].pop(e["id"], None)

    def check(self, repo, tenant):
        self.stats["checks"] += 1
        r = self.run(repo, tenant, ["check", "--read-data", "--json"])
        if r.code == 0:
            self.stats["checks_clean"] += 1
            return
        self.fail(f"check --read-data of {tenant} in {os.path.basename(repo.url)} exited {r.code}"
                  f" after round {self.serial}", r.describe())
        # Bring the repository back so the campaign can go on.
        rep = self.run(repo, tenant, ["repair", "--json"])
        log(f"repair: exit {rep.code}")

    def restore(self, repo, tenant, snapshot_id, tag):
        self.stats["restores"] += 1
        expected = self.versions[tenant].get(tag)
        if expected is None:
            self.fail(f"snapshot {snapshot_id[:8]} of {tenant} has an unknown tag {tag}")
            return
        r, wrong, missing = restore_and_compare(repo, tenant, snapshot_id, self.sources[tenant].root,
                                                expected, os.path.join(self.work, "restore"))
        if r.code != 0:
            self.fail(f"restore of {snapshot_id[:8]} ({tag}) of {tenant} exited {r.code}", r.describe())
        if wrong:
            self.fail(f"restore of {snapshot_id[:8]} ({tag}) of {tenant} gave wrong bytes",
                      "\n".join(wrong[:20]))
        if r.code == 0 and not wrong:
            self.stats["restores_identical"] += 1

    # ----- driver -----

    def setup(self):
        log(f"binary: {self.bin} ({version(self.bin)})")
        r = self.src.run("default", ["init"] + SMALL_INIT)
        assert r.code == 0, r.describe()
        for t in TENANTS[1:]:
            r = self.src.run(t, ["tenant", "add", t, "--kdf-memory-kib", "19456", "--kdf-passes", "2"])
            assert r.code == 0, r.describe()
        r = self.dst.run("default", ["init", "--copy-keys-from", self.src.url])
        assert r.code == 0, r.describe()
        r = self.dst.run("acme", ["tenant", "add", "acme", "--kdf-memory-kib", "19456", "--kdf-passes", "2"])
        assert r.code == 0, r.describe()
        # Three backups per tenant, then one uninterrupted run of each
        # operation to learn its duration.
        for t in TENANTS:
            for _ in range(3):
                args, tag = self.op_args("backup", t)
                r = self.src.run(t, args)
                assert r.code == 0, r.describe()
                self.expected[t].add(tag)
                self.durations["backup"].append(r.seconds)
        for op in ["forget", "prune", "rotate-key", "copy"]:
            t = "default"
            args, _ = self.op_args(op, t)
            if op == "forget":
                args, _ = self.op_args("backup", t)
                r = self.src.run(t, args)
                self.expected[t].add(_)
                args = ["forget", "--keep-last", "3", "--json"]
            r = self.src.run(t, args)
            assert r.code == 0, r.describe()
            if op == "forget":
                for e in r.json():
                    if e["action"] == "remove":
                        for tag in e["tags"]:
                            self.expected[t].discard(tag)
            self.durations[op].append(r.seconds)
        log("setup done; typical durations: "
            + ", ".join(f"{op} {self.typical(op):.2f}s" for op in OPS))

    def final(self):
        """Every snapshot of both repositories checked and restored."""
        for t in TENANTS:
            self.check(self.src, t)
            present = self.tags_present(self.src, t) or {}
            for tag in sorted(self.expected[t]):
                if tag not in present:
                    self.fail(f"snapshot tagged {tag} of {t} lost (final)")
            for tag, ids in sorted(present.items()):
                for i in ids:
                    self.restore(self.src, t, i, tag)
        for t in COPY_TENANTS:
            self.check(self.dst, t)
            snaps, _ = self.dst.snapshots(t)
            ids = {s["id"] for s in snaps or []}
            for dst_id, tag in sorted(self.copied[t].items()):
                if dst_id not in ids:
                    self.fail(f"replica snapshot {dst_id[:8]} of {t} lost (final)")
                else:
                    self.restore(self.dst, t, dst_id, tag)

    def summary(self):
        s = self.stats
        kills = sum(s["kills"].values())
        per = ", ".join(f"{op} {s['kills'][op]}" for op in OPS)
        secs = time.monotonic() - self.t0
        return (f"kill campaign: {kills} SIGKILLs ({per}); "
                f"{sum(s['completed'].values())} runs completed; "
                f"check --read-data clean {s['checks_clean']}/{s['checks']}; "
                f"restores identical {s['restores_identical']}/{s['restores']}; "
                f"lost snapshots {sum(1 for f in s['failures'] if 'lost' in f['what'])}; "
                f"failures {len(s['failures'])}; lock blocks {sum(s['lock_blocks'].values())} "
                f"(unlock {s['unlocks']}, unlock --remove-all {s['unlocks_remove_all']}); "
                f"{secs:.0f} s; seed {self.args.seed}")

    def main(self):
        self.setup()
        rounds = 0
        while sum(self.stats["kills"].values()) < self.args.count:
            rounds += 1
            self.one_round()
            if rounds % 25 == 0:
                log(f"[{time.monotonic() - self.t0:.0f}s] round {rounds}: {self.summary()}")
        self.final()
        line = self.summary()
        print(line)
        if self.args.out:
            with open(self.args.out, "w") as f:
                json.dump({"summary": line, "binary": version(self.bin), "seed": self.args.seed,
                           "count": self.args.count, "rounds": rounds,
                           "typical_seconds": {op: self.typical(op) for op in OPS},
                           "stats": self.stats}, f, indent=2)
        if not self.args.keep and not self.stats["failures"]:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.stats["failures"] else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000, help="SIGKILLs to deliver (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write the results (JSON) here")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "strongroom-kill-campaign"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    sys.exit(Campaign(args).main())


if __name__ == "__main__":
    main()
