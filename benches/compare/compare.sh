#!/usr/bin/env bash
# Side-by-side backup comparison: strongroom against the peer tools installed
# on this machine (restic, borg; rustic and bupstash when on PATH), on
# dataset series laid out as $SRBENCH_ROOT/data/<series>/v1..vN (the series
# of docs/BENCHMARKS.md are described there, under Datasets).
#
# Usage:
#   SRBENCH_ROOT=$HOME/srbench benches/compare/compare.sh [options] SERIES...
#     SERIES          a directory series name under $SRBENCH_ROOT/data (e.g.
#                     src-versions, shifted-binary), or NAME:stdin for a series
#                     whose vN directories each hold one file that is streamed
#                     through standard input (e.g. pg-dumps:stdin)
#   --tools LIST      comma-separated (default: strongroom plus every peer found)
#   --again N         back up the unchanged last version N times (default 5)
#   --restores N      restore the last version N times (default 3), each cold
#                     into a fresh target as below; the report shows the
#                     median of each (on a shared machine, steps this short
#                     move by more than their difference between tools from
#                     one timing to the next)
#   --repeat N        run strongroom and the fastest peer N times (default 2);
#                     other peers run once. "Fastest" = lowest total backup wall
#                     time in the first round. The run with the lower total
#                     backup wall time is reported; every run stays in the raw log.
#   --out FILE        raw log (default $SRBENCH_ROOT/compare/results-<date>.tsv)
#   --no-build        skip the build; use $SRBENCH_ROOT/compare/strongroom-<rev>
#                     (or the binary in SR_BIN)
#   --restore-on FS   tmpfs (default as root): every restore goes into a fresh
#                     8 GiB tmpfs mounted for it; dir: into a directory of
#                     $SRBENCH_ROOT's file system. On ext4 the inode
#                     allocator's state after the thousands of deletions of
#                     the steps before can decide the restore time of many
#                     small files (most of it in openat), for every tool.
#   --restore-cache C cold (default as root): the page cache is dropped
#                     (sync; echo 3 > /proc/sys/vm/drop_caches) before every
#                     restore, so each tool reads its repository from disk,
#                     as a restore after a loss does; warm: whatever the
#                     backups left cached (strongroom writes packs with
#                     O_DIRECT, so its packs are never cached there, while
#                     the peers' are: a warm restore compares disk reads
#                     against page-cache reads).
#   --backend B       local (default): each repository is a directory under
#                     $SRBENCH_ROOT/compare/work; s3: each repository is a
#                     prefix of the S3 server that scripts/test-servers.sh
#                     starts (SeaweedFS; source it first), reached through
#                     benches/compare/s3_proxy.py, which counts requests and
#                     bytes as the server sees them and adds DELAY_MS (env,
#                     default 0) each way. Only tools with an S3 backend run
#                     (strongroom, restic, rustic). Each restore then starts from an
#                     empty cache (a new host: strongroom rebuilds its
#                     catalog from the store), and the repository column is
#                     the bytes uploaded since init.
# Env: SR_REV (commit to build, default HEAD), SR_BIN (use this binary instead).
#
# How each version is backed up: the version's content is copied with
# `rsync -a --delete --checksum` into one fixed "live" directory, which is then
# backed up, so each tool sees one directory upgraded in place (unchanged files
# keep their inode and ctime; --checksum because npm tarballs give every file
# the same 1985 mtime). Per version it records wall seconds, CPU seconds
# (user+sys) and peak RSS from /usr/bin/time, and repository bytes (du -sb).
# After the last version: re-backups of the unchanged last version (--again),
# and restores of the last version into an empty directory (--restores; each
# then checked with `diff -r`/`cmp`, not timed). Wall time is taken with
# bash's EPOCHREALTIME around /usr/bin/time (millisecond resolution; time's
# own %e has 10 ms), so it includes starting time(1), the same for every tool.
# Before each timed step an untimed `sync` writes back what the steps before
# wrote (a tool's first fsync would otherwise wait for the harness's copy). Every tool gets a fresh repository, cache
# directory and config directory under $SRBENCH_ROOT/compare/work, removed
# before each run (so the script is idempotent) and after it.
#
# Settings, all with encryption on:
#   strongroom  init (default: zstd 3, chunks 64K/128K/512K, 16 MiB packs);
#               fresh STRONGROOM_CACHE_DIR per run; opened with a 64-byte key
#               file slot like bupstash's key (SR_AUTH=password: with the
#               password, one Argon2id derivation more per command;
#               SR_AUTH=password-cache: the password and --key-cache 8h)
#   restic      init (repository v2); backup --compression auto (klauspost zstd
#               SpeedDefault, "roughly zstd level 3"); fresh --cache-dir per run
#   borg        init --encryption repokey-blake2; create --compression zstd,3;
#               fresh BORG_BASE_DIR (cache + config) per run
#   rustic      init; backup (zstd level 3 is rustic's default); fresh cache
#   bupstash    init; put (zstd by default); fresh BUPSTASH_SEND_LOG dir
#
# Output: one table per series on stdout, raw per-step lines in the log.
set -euo pipefail

: "${SRBENCH_ROOT:?set SRBENCH_ROOT to the scratch directory holding data/<series>}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${SRBENCH_DATA:-$SRBENCH_ROOT/data}"
WORK="$SRBENCH_ROOT/compare/work"
REPEAT=2
AGAIN=5
RESTORES=3
BUILD=1
RESTORE_ON=dir
RESTORE_CACHE=warm
BACKEND=local
[[ $EUID -eq 0 ]] && RESTORE_ON=tmpfs && RESTORE_CACHE=cold
TOOLS=""
OUT=""
SERIES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tools) TOOLS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --again) AGAIN="$2"; shift 2 ;;
    --restores) RESTORES="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --restore-on) RESTORE_ON="$2"; shift 2 ;;
    --restore-cache) RESTORE_CACHE="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
    *) SERIES+=("$1"); shift ;;
  esac
done
[[ ${#SERIES[@]} -gt 0 ]] || { echo "usage: $0 [options] SERIES..." >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time missing (apt-get install -y time)" >&2; exit 1; }
command -v rsync >/dev/null || { echo "rsync missing" >&2; exit 1; }

# strongroom is built from a clean export of a commit (default HEAD), not from
# the working tree, which may hold uncommitted changes.
SR_REV="$(git -C "$ROOT" rev-parse --short "${SR_REV:-HEAD}")"
SR_SRC="$SRBENCH_ROOT/compare/build-$SR_REV"
export CARGO_TARGET_DIR="$SRBENCH_ROOT/compare/target"
if [[ $BUILD -eq 1 ]]; then
  if [[ ! -f "$SR_SRC/Cargo.toml" ]]; then
    rm -rf "$SR_SRC"; mkdir -p "$SR_SRC"
    git -C "$ROOT" archive "$SR_REV" | tar -x -C "$SR_SRC"
  fi
  (cd "$SR_SRC" && cargo build --release -q)
  cp "$CARGO_TARGET_DIR/release/strongroom" "$SRBENCH_ROOT/compare/strongroom-$SR_REV"
fi
SR="${SR_BIN:-$SRBENCH_ROOT/compare/strongroom-$SR_REV}"
[[ -x "$SR" ]] || { echo "$SR missing (run without --no-build, or set SR_BIN)" >&2; exit 1; }

if [[ -z "$TOOLS" ]]; then
  TOOLS=strongroom
  peers="restic borg rustic bupstash"; [[ $BACKEND == s3 ]] && peers="restic rustic"
  for t in $peers; do command -v "$t" >/dev/null && TOOLS+=",$t"; done
fi
# S3: every request goes through the counting (and delaying) proxy.
PROXY_LOG=""
if [[ $BACKEND == s3 ]]; then
  : "${STRONGROOM_TEST_S3_ENDPOINT:?start the S3 server first: . scripts/test-servers.sh}"
  PROXY_PORT="${PROXY_PORT:-18434}"
  PROXY_LOG="$SRBENCH_ROOT/compare/s3-requests.log"
  mkdir -p "$SRBENCH_ROOT/compare"; : >"$PROXY_LOG"
  python3 "$HERE/s3_proxy.py" "$PROXY_PORT" "${STRONGROOM_TEST_S3_ENDPOINT##*:}" "${DELAY_MS:-0}" "$PROXY_LOG" &
  PROXY_PID=$!
  sleep 1
  S3_ENDPOINT="http://127.0.0.1:$PROXY_PORT"
  S3_BUCKET="${STRONGROOM_TEST_S3_URL#s3://}"
  export AWS_ACCESS_KEY_ID="$STRONGROOM_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$STRONGROOM_TEST_S3_SECRET_KEY"
  export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 STRONGROOM_S3_ENDPOINT="$S3_ENDPOINT"
elif [[ $BACKEND != local ]]; then
  echo "--backend: local or s3" >&2; exit 2
fi
# Requests, bytes up and bytes down the proxy logged since line $1.
proxy_since() { tail -n +"$(( $1 + 1 ))" "$PROXY_LOG" | awk '{n++; u+=$4; d+=$5} END {printf "%d\t%d\t%d", n, u, d}'; }
proxy_lines() { if [[ -n $PROXY_LOG ]]; then wc -l <"$PROXY_LOG"; else echo 0; fi; }
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"

mkdir -p "$SRBENCH_ROOT/compare"
OUT="${OUT:-$SRBENCH_ROOT/compare/results-$(date +%Y%m%d-%H%M%S).tsv}"
: > "$OUT"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

export STRONGROOM_PASSWORD=bench-password RESTIC_PASSWORD=bench-password \
  RUSTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no

# ---- per-tool commands; $R repo, $C cache/config dir, $L live dir, $F stdin file,
# ---- $T restore target, $V version label
tool_init() {
  case "$1" in
    strongroom) STRONGROOM_CACHE_DIR="$C" "$SR" -q init -r "$R"
                if [[ ${SR_AUTH:-keyfile} == keyfile ]]; then
                  head -c 64 /dev/urandom >"$C/key"
                  STRONGROOM_CACHE_DIR="$C" "$SR" -q tenant key add -r "$R" --key-file "$C/key" --label bench
                fi ;;
    restic)     restic -q init --repo "$R" --cache-dir "$C" ;;
    borg)       BORG_BASE_DIR="$C" borg init --encryption repokey-blake2 "$R" ;;
    rustic)     rustic ${R:+-r "$R"} --cache-dir "$C" init ;;
    bupstash)   BUPSTASH_REPOSITORY="$R" bupstash init && bupstash new-key -o "$C/key" ;;
  esac
}
# backup of the live directory (mode dir) or of $F via stdin (mode stdin)
tool_backup() {
  local tool="$1" mode="$2"
  case "$tool:$mode" in
    strongroom:dir)   sr backup -r "$R" --json "$L" ;;
    strongroom:stdin) sr backup -r "$R" --json --stdin --stdin-name "$STDIN_NAME" <"$F" ;;
    restic:dir)       restic backup -q --repo "$R" --cache-dir "$C" --compression auto --host bench "$L" ;;
    restic:stdin)     restic backup -q --repo "$R" --cache-dir "$C" --compression auto --host bench --stdin --stdin-filename "$STDIN_NAME" <"$F" ;;
    borg:dir)         BORG_BASE_DIR="$C" borg create --compression zstd,3 "$R::$V" "$L" ;;
    borg:stdin)       BORG_BASE_DIR="$C" borg create --compression zstd,3 --stdin-name "$STDIN_NAME" "$R::$V" - <"$F" ;;
    rustic:dir)       rustic ${R:+-r "$R"} --cache-dir "$C" backup --host bench "$L" ;;
    # rustic 0.11 takes an unchanged parent's stdin file as unchanged (the
    # second version stores 0 bytes) and `--force` fails on stdin ("not a
    # terminal"); a label per version keeps it from finding a parent.
    rustic:stdin)     rustic ${R:+-r "$R"} --cache-dir "$C" backup --host bench --label "$V" --stdin-filename "$STDIN_NAME" - <"$F" ;;
    bupstash:dir)     BUPSTASH_REPOSITORY="$R" BUPSTASH_KEY="$C/key" BUPSTASH_SEND_LOG="$C/send.log" bupstash put -q "$L" ;;
    bupstash:stdin)   BUPSTASH_REPOSITORY="$R" BUPSTASH_KEY="$C/key" BUPSTASH_SEND_LOG="$C/send.log" bupstash put -q - <"$F" ;;
  esac
}
# strongroom opened with the key file (SR_AUTH=keyfile, the default, as
# bupstash's key), with the password (SR_AUTH=password: one Argon2id
# derivation per command), or with the password and the opt-in key cache
# (SR_AUTH=password-cache: `--key-cache 8h`).
sr() {
  if [[ ${SR_AUTH:-keyfile} == keyfile ]]; then
    # (a subshell, not env(1): no second program to start, cold, per step)
    ( unset STRONGROOM_PASSWORD; STRONGROOM_CACHE_DIR="$C" exec "$SR" --password-file "$C/key" "$@" )
  elif [[ $SR_AUTH == password-cache ]]; then
    # The opt-in key cache: the first command derives, later ones open
    # from the entry it left under the run's cache directory.
    ( unset XDG_RUNTIME_DIR; STRONGROOM_CACHE_DIR="$C" STRONGROOM_KEY_CACHE=8h exec "$SR" "$@" )
  else
    STRONGROOM_CACHE_DIR="$C" "$SR" "$@"
  fi
}
tool_restore() {
  case "$1" in
    strongroom) sr -q restore -r "$R" latest --target "$T" ;;
    restic)     restic -q restore --repo "$R" --cache-dir "$C" latest --target "$T" ;;
    borg)       (cd "$T" && BORG_BASE_DIR="$C" borg extract "$R::$V") ;;
    rustic)     rustic ${R:+-r "$R"} --cache-dir "$C" restore latest "$T" ;;
    bupstash)   local id; id="$(BUPSTASH_REPOSITORY="$R" BUPSTASH_KEY="$C/key" bupstash list --format=jsonl1 | tail -n1 | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/')"
                # A directory put is a tarball; a stdin put is the stream itself.
                if [[ ${2:-dir} == stdin ]]; then
                  BUPSTASH_REPOSITORY="$R" BUPSTASH_KEY="$C/key" bupstash get id="$id" >"$T/$STDIN_NAME"
                else
                  BUPSTASH_REPOSITORY="$R" BUPSTASH_KEY="$C/key" bupstash get --pick . id="$id" | tar -x -C "$T"
                fi ;;
  esac
}
tool_version() {
  case "$1" in
    strongroom) echo "strongroom $("$SR" --version | cut -d' ' -f2) ($SR, ${SR_BIN:+given binary, }commit $SR_REV)" ;;
    restic)     restic version | head -n1 ;;
    borg)       borg --version ;;
    rustic)     rustic --version ;;
    bupstash)   bupstash version ;;
  esac
}

# timed STEP TOOL RUN SERIES LABEL CMD... : run CMD under /usr/bin/time, append a log line
timed() {
  local series="$1" tool="$2" run="$3" step="$4"; shift 4
  local tf="$WORK/time.out" lf="$WORK/$tool.$step.log"
  local la; la="$(loadavg)"
  # What the steps before wrote (the version just copied in, the last
  # step's repository) is written back first, untimed: a tool that syncs
  # its files (strongroom, restic and bupstash do) would otherwise wait for
  # the harness's copy, as much or as little as the kernel's writeback
  # timing left it.
  sync
  local p0; p0="$(proxy_lines)"
  local t0="$EPOCHREALTIME" ok=1
  /usr/bin/time -f '%e %U %S %M' -o "$tf" bash -c '"$@"' _ "$@" >"$lf" 2>&1 || ok=0
  local t1="$EPOCHREALTIME"
  if [[ $ok -eq 0 ]]; then
    log "FAILED: $series $tool run $run $step"; tail -n5 "$lf" >&2
    printf '%s\t%s\t%s\t%s\tFAILED\n' "$series" "$tool" "$run" "$step" >>"$OUT"
    return 0
  fi
  local wall user sys rss; read -r wall user sys rss <"$tf"
  wall="$(echo "scale=3; ($t1 - $t0) / 1" | bc)"
  local repo_bytes cache_bytes requests=""
  cache_bytes="$(du -sb "$C" 2>/dev/null | cut -f1)"
  if [[ -n $PROXY_LOG ]]; then
    sleep 0.2   # the proxy logs a request when its answer has passed
    requests="$(proxy_since "$p0")"
    repo_bytes="$(proxy_since "$REPO_P0" | cut -f2)"
  else
    repo_bytes="$(du -sb "$R" | cut -f1)"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$series" "$tool" "$run" "$step" \
    "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$repo_bytes" "$cache_bytes" "$STEP_BYTES" "$la" "$requests" >>"$OUT"
  printf '  %-10s run %s %-9s %7.3f s  cpu %7.2f s  rss %6d KiB  repo %12d B  load %s\n' \
    "$tool" "$run" "$step" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$repo_bytes" "$la" >&2
}

# A restore tmpfs left mounted by a failed step is unmounted at exit.
trap 'mountpoint -q "$WORK/restore" 2>/dev/null && umount "$WORK/restore"; [[ -n ${PROXY_PID:-} ]] && kill "$PROXY_PID"' EXIT
tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }

# run_series SERIES MODE TOOL RUN
run_series() {
  local series="$1" mode="$2" tool="$3" run="$4"
  local vdirs; mapfile -t vdirs < <(ls -d "$DATA/$series"/v* | sort -V)
  rm -rf "$WORK"; mkdir -p "$WORK"
  R="$WORK/repo"; C="$WORK/cache"; L="$WORK/live/$series"; T="$WORK/restore"
  if [[ $BACKEND == s3 ]]; then
    local prefix="compare-$(date +%s%N)-$tool-$run"
    case "$tool" in
      strongroom) R="s3://$S3_BUCKET/$prefix" ;;
      restic)     R="s3:$S3_ENDPOINT/$S3_BUCKET/$prefix" ;;
      # rustic reaches S3 through OpenDAL, configured in a profile file
      rustic)     R=""; RUSTIC_USE_PROFILE="$WORK/rustic-s3"
                  printf '[repository]\nrepository = "opendal:s3"\n[repository.options]\nbucket = "%s"\nroot = "/%s"\nendpoint = "%s"\nregion = "us-east-1"\naccess_key_id = "%s"\nsecret_access_key = "%s"\n' \
                    "$S3_BUCKET" "$prefix" "$S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$RUSTIC_USE_PROFILE.toml"
                  export RUSTIC_USE_PROFILE ;;
      *)          log "skip $tool: no S3 backend here"; return 0 ;;
    esac
  fi
  REPO_P0="$(proxy_lines)"
  mkdir -p "$C" "$L"
  STEP_BYTES=0
  timed "$series" "$tool" "$run" init tool_init "$tool"
  local last="" vd
  for vd in "${vdirs[@]}"; do
    V="$(basename "$vd")"
    if [[ $mode == dir ]]; then
      rsync -a --delete --checksum "$vd/" "$L/"
      STEP_BYTES="$(tree_bytes "$L")"
    else
      F="$(find "$vd/" -maxdepth 1 -type f | head -n1)"; STDIN_NAME="$(basename "$F")"
      STEP_BYTES="$(stat -c %s "$F")"
    fi
    timed "$series" "$tool" "$run" "$V" tool_backup "$tool" "$mode"
    last="$V"
  done
  local i step
  for ((i = 1; i <= AGAIN; i++)); do
    step=again; [[ $i -gt 1 ]] && step="again$i"
    V="$last-$step"   # borg's archive name; borg extracts the last of them
    timed "$series" "$tool" "$run" "$step" tool_backup "$tool" "$mode"
  done
  mkdir -p "$T"
  for ((i = 1; i <= RESTORES; i++)); do
    step=restore; [[ $i -gt 1 ]] && step="restore$i"
    if [[ $RESTORE_ON == tmpfs ]]; then mount -t tmpfs -o size=8g strongroom-bench "$T"; else rm -rf "$T"; mkdir -p "$T"; fi
    if [[ $RESTORE_CACHE == cold ]]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
    local backup_cache="$C"
    if [[ $BACKEND == s3 ]]; then C="$WORK/restore-cache-$i"; mkdir -p "$C"; [[ $tool == strongroom ]] && cp "$backup_cache/key" "$C/" 2>/dev/null; fi
    timed "$series" "$tool" "$run" "$step" tool_restore "$tool" "$mode"
    C="$backup_cache"
    # verify (untimed): the restored copy of the last version equals the source
    if [[ $mode == dir ]]; then
      local got; got="$(find "$T" -type d -path "*/live/$series" | head -n1)"
      if [[ -z "$got" ]]; then got="$T"; fi
      diff -r -q "$L" "$got" >/dev/null || { log "VERIFY FAILED: $tool $series"; echo -e "$series\t$tool\t$run\tverify\tFAILED" >>"$OUT"; }
    else
      local got; got="$(find "$T" -type f -name "$STDIN_NAME" | head -n1)"
      cmp -s "$F" "$got" || { log "VERIFY FAILED: $tool $series"; echo -e "$series\t$tool\t$run\tverify\tFAILED" >>"$OUT"; }
    fi
    if [[ $RESTORE_ON == tmpfs ]]; then umount "$T"; fi
  done
  rm -rf "$WORK"
}

export SR R C L T F V STDIN_NAME
export -f tool_init tool_backup tool_restore sr

{
  echo "# compare.sh $(date -Iseconds) on $(hostname): nproc $(nproc), $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r); restores on $RESTORE_ON, $RESTORE_CACHE page cache; backend $BACKEND${PROXY_LOG:+, one-way delay ${DELAY_MS:-0} ms}; strongroom opened by ${SR_AUTH:-keyfile}"
  for t in "${TOOL_LIST[@]}"; do echo "# version: $(tool_version "$t")"; done
  printf '# series\ttool\trun\tstep\twall_s\tcpu_s\tpeak_rss_kib\trepo_bytes\tcache_bytes\tlogical_bytes\tloadavg_1_5_15\trequests\tbytes_up\tbytes_down\n'
} >>"$OUT"

for spec in "${SERIES[@]}"; do
  series="${spec%%:*}"; mode=dir; [[ $spec == *:stdin ]] && mode=stdin
  [[ -d "$DATA/$series/v1" ]] || { log "skip $series: $DATA/$series/v1 missing"; continue; }
  log "series $series ($mode)"
  for t in "${TOOL_LIST[@]}"; do log " $t run 1"; run_series "$series" "$mode" "$t" 1; done
  # the fastest peer of round 1 (lowest total backup wall time) is repeated with strongroom
  fastest="$(awk -F'\t' -v s="$series" '$1==s && $3==1 && $2!="strongroom" && $4 ~ /^v[0-9]+$/ && $5 ~ /^[0-9.]+$/ {w[$2]+=$5}
            END {for (t in w) print w[t], t}' "$OUT" | sort -n | head -n1 | cut -d' ' -f2)"
  for ((run = 2; run <= REPEAT; run++)); do
    for t in strongroom $fastest; do log " $t run $run"; run_series "$series" "$mode" "$t" "$run"; done
  done
done

log "raw results: $OUT"
python3 "$HERE/report.py" "$OUT"
