#!/usr/bin/env bash
# Prune comparison: strongroom vs restic (and borg prune+compact) on the same data.
#
# Usage: SRBENCH_ROOT=$HOME/srbench benches/compare/prune.sh [--tools strongroom,restic,borg]
#            [--rounds N] [--sr-rounds N] [--out FILE] [--no-build]
#
# Build phase (once per tool, not timed for the comparison):
#   One live directory $WORK/live is filled, with `rsync -a --delete --checksum`,
#   with src-versions v1..v8 and then shifted-binary v1..v6 (14 versions). After
#   each copy every tool backs it up into its own repository (one snapshot per
#   version; same host and path, so all 14 snapshots form one forget group). The
#   repository and its cache after src-versions v8 are kept as "small" (8
#   snapshots), after shifted-binary v6 as "base" (14 snapshots).
# Prune phases, per round, each from a fresh copy (cp -a of repository + cache):
#   (a) base: forget all but the last 2 snapshots, then prune; repository bytes
#       before/after; then a prune with nothing to do ("noop"); then
#       check --read-data (borg: check --verify-data).
#   (b) base: forget only the oldest snapshot (keep-last 13), then prune.
#   (s) small: forget only the oldest snapshot (keep-last 7), then prune -- the
#       same kind of prune on a repository 17x smaller, for RSS vs repo size.
#   (r) base: as (a) but prune --max-unused 0 (borg: compact --threshold 0), so
#       every partly used pack is repacked; then check --read-data.
#   (q) base: as (b) but prune --max-unused 0: a repack of the little one
#       snapshot frees, against the large repack of (r).
# Tool "sr-kdf8" is strongroom with an 8 MiB Argon2 password slot (hidden
# `init --kdf-memory-kib 8192`; default 64 MiB). The KDF runs at the start of
# every command and its 64 MiB dominate peak RSS; with 8 MiB the peak RSS shows
# prune's own working set. It is a diagnostic, not a setting to compare with.
# Commands: strongroom forget --keep-last N; strongroom prune --json
#           restic forget --keep-last N; restic prune   (= forget --prune: same default --max-unused 5%)
#           borg prune --keep-last N; borg compact       (compact's default threshold is 10%)
# Every forget/prune/check runs under /usr/bin/time -f '%e %U %S %M' (wall, CPU
# user+sys, peak RSS). Raw TSV goes to --out; prune_report.py prints the table.
# Rounds: --rounds (default 1) for all tools, --sr-rounds (default 2) for strongroom.
set -euo pipefail

: "${SRBENCH_ROOT:?set SRBENCH_ROOT to the scratch directory holding data/<series>}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${SRBENCH_DATA:-$SRBENCH_ROOT/data}"
BASE="$SRBENCH_ROOT/prune"
WORK="$BASE/work"
ROUNDS=1
SR_ROUNDS=2
BUILD=1
TOOLS=""
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tools) TOOLS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --sr-rounds) SR_ROUNDS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time missing (apt-get install -y time)" >&2; exit 1; }
command -v rsync >/dev/null || { echo "rsync missing" >&2; exit 1; }

# strongroom from a clean export of a commit (default HEAD), as in compare.sh
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
  TOOLS=strongroom,sr-kdf8
  for t in restic borg; do command -v "$t" >/dev/null && TOOLS+=",$t"; done
fi
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"

mkdir -p "$BASE"
OUT="${OUT:-$BASE/results-$(date +%Y%m%d-%H%M%S).tsv}"
: > "$OUT"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

export STRONGROOM_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no

# $R repo, $C cache/config dir, $L live dir, $V version label
tool_init() {
  case "$1" in
    strongroom) STRONGROOM_CACHE_DIR="$C" "$SR" -q init -r "$R" ;;
    sr-kdf8)    STRONGROOM_CACHE_DIR="$C" "$SR" -q init -r "$R" --kdf-memory-kib 8192 ;;
    restic)     restic -q init --repo "$R" --cache-dir "$C" ;;
    borg)       BORG_BASE_DIR="$C" borg init --encryption repokey-blake2 "$R" ;;
  esac
}
tool_backup() {
  case "$1" in
    strongroom|sr-kdf8) STRONGROOM_CACHE_DIR="$C" "$SR" backup -r "$R" --json "$L" ;;
    restic)     restic backup -q --repo "$R" --cache-dir "$C" --compression auto --host bench "$L" ;;
    borg)       BORG_BASE_DIR="$C" borg create --compression zstd,3 "$R::$V" "$L" ;;
  esac
}
# prune [MAX_UNUSED_PERCENT]: the tool's default threshold unless given
# forget: keep the newest $1 snapshots; no data is deleted yet
tool_forget() {
  case "$1" in
    strongroom|sr-kdf8) STRONGROOM_CACHE_DIR="$C" "$SR" forget -r "$R" --keep-last "$2" ;;
    restic)     restic forget --repo "$R" --cache-dir "$C" --keep-last "$2" ;;
    borg)       BORG_BASE_DIR="$C" borg prune --list --keep-last "$2" "$R" ;;
  esac
}
tool_prune() {
  case "$1" in
    strongroom|sr-kdf8) STRONGROOM_CACHE_DIR="$C" "$SR" prune -r "$R" --json ${2:+--max-unused "$2"} ;;
    restic)     restic prune --repo "$R" --cache-dir "$C" ${2:+--max-unused "$2"} ;;
    borg)       BORG_BASE_DIR="$C" borg compact --verbose ${2:+--threshold "$2"} "$R" ;;
  esac
}
tool_check() {
  case "$1" in
    strongroom|sr-kdf8) STRONGROOM_CACHE_DIR="$C" "$SR" check -r "$R" --read-data ;;
    restic)     restic check --repo "$R" --cache-dir "$C" --read-data ;;
    borg)       BORG_BASE_DIR="$C" borg check --verify-data "$R" ;;
  esac
}
tool_version() {
  case "$1" in
    strongroom|sr-kdf8) echo "$1 $("$SR" --version | cut -d' ' -f2) ($SR, ${SR_BIN:+given binary, }commit $SR_REV)" ;;
    restic)     restic version | head -n1 ;;
    borg)       borg --version ;;
  esac
}
export SR R C L V
export -f tool_init tool_backup tool_forget tool_prune tool_check

# timed TOOL ROUND PHASE STEP CMD... : run CMD under /usr/bin/time, append a TSV line.
# The command's output is kept in $LOGS/<tool>.<round>.<phase>.<step>.log.
timed() {
  local tool="$1" round="$2" phase="$3" step="$4"; shift 4
  local tf="$WORK/time.out" lf="$LOGS/$tool.$round.$phase.$step.log"
  local la; la="$(loadavg)"
  local before=0; [[ -e "$R" ]] && before="$(du -sb "$R" | cut -f1)"
  if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" bash -c '"$@"' _ "$@" >"$lf" 2>&1; then
    log "FAILED: $tool round $round $phase $step"; tail -n5 "$lf" >&2
    printf '%s\t%s\t%s\t%s\tFAILED\n' "$tool" "$round" "$phase" "$step" >>"$OUT"
    return 0
  fi
  local wall user sys rss; read -r wall user sys rss <"$tf"
  local after; after="$(du -sb "$R" | cut -f1)"
  local cpu; cpu="$(echo "$user + $sys" | bc)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$round" "$phase" "$step" \
    "$wall" "$cpu" "$rss" "$before" "$after" "$la" >>"$OUT"
  printf '  %-10s r%s %-5s %-8s %7.2f s  cpu %7.2f s  rss %7d KiB  repo %11d -> %11d B  load %s\n' \
    "$tool" "$round" "$phase" "$step" "$wall" "$cpu" "$rss" "$before" "$after" "$la" >&2
}

# fresh copy of a saved repository + cache into $WORK/<tool>/<name>; sets R and C
fresh_copy() {
  local tool="$1" from="$2" name="$3"
  local d="$WORK/$tool/$name"
  rm -rf "$d"; mkdir -p "$d"
  cp -a "$BASE/saved/$tool/$from/repo" "$d/repo"
  cp -a "$BASE/saved/$tool/$from/cache" "$d/cache"
  sync -f "$d/repo" 2>/dev/null || true
  R="$d/repo"; C="$d/cache"
}

rm -rf "$WORK" "$BASE/saved"
mkdir -p "$WORK" "$BASE/saved"
LOGS="$BASE/logs-$(basename "$OUT" .tsv)"
rm -rf "$LOGS"; mkdir -p "$LOGS"
{
  echo "# prune.sh $(date -Iseconds) on $(hostname): nproc $(nproc), $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r)"
  for t in "${TOOL_LIST[@]}"; do echo "# version: $(tool_version "$t")"; done
  printf '# tool\tround\tphase\tstep\twall_s\tcpu_s\tpeak_rss_kib\trepo_bytes_before\trepo_bytes_after\tloadavg_1_5_15\n'
} >>"$OUT"

# ---- build the repositories: every tool backs up the same live directory, version by version
L="$WORK/live"; mkdir -p "$L"
for t in "${TOOL_LIST[@]}"; do
  mkdir -p "$WORK/$t/build/cache"; R="$WORK/$t/build/repo"; C="$WORK/$t/build/cache"
  timed "$t" 0 build init tool_init "$t"
done
versions=()
for v in $(ls "$DATA/src-versions" | sort -V); do versions+=("src-versions/$v"); done
for v in $(ls "$DATA/shifted-binary" | sort -V); do versions+=("shifted-binary/$v"); done
for sv in "${versions[@]}"; do
  rsync -a --delete --checksum "$DATA/$sv/" "$L/"
  V="${sv/\//-}"
  log "backup $sv"
  for t in "${TOOL_LIST[@]}"; do
    R="$WORK/$t/build/repo"; C="$WORK/$t/build/cache"
    timed "$t" 0 build "$V" tool_backup "$t"
  done
  if [[ $sv == src-versions/v8 ]]; then
    for t in "${TOOL_LIST[@]}"; do
      mkdir -p "$BASE/saved/$t/small"; cp -a "$WORK/$t/build/repo" "$WORK/$t/build/cache" "$BASE/saved/$t/small/"
    done
  fi
done
for t in "${TOOL_LIST[@]}"; do
  mkdir -p "$BASE/saved/$t"; mv "$WORK/$t/build" "$BASE/saved/$t/base"
done
rm -rf "$L"

# ---- prune rounds
nsnap=${#versions[@]}
for ((round = 1; round <= (SR_ROUNDS > ROUNDS ? SR_ROUNDS : ROUNDS); round++)); do
  for t in "${TOOL_LIST[@]}"; do
    if [[ $t == strongroom || $t == sr-kdf8 ]]; then ((round <= SR_ROUNDS)) || continue; else ((round <= ROUNDS)) || continue; fi
    log "$t round $round"
    # (a) forget all but the last 2, prune, prune again (nothing to do), check --read-data
    fresh_copy "$t" base a
    timed "$t" "$round" a forget tool_forget "$t" 2
    timed "$t" "$round" a prune tool_prune "$t"
    timed "$t" "$round" a noop tool_prune "$t"
    timed "$t" "$round" a check tool_check "$t"
    rm -rf "$WORK/$t/a"
    # (b) forget only the oldest snapshot, prune
    fresh_copy "$t" base b
    timed "$t" "$round" b forget tool_forget "$t" $((nsnap - 1))
    timed "$t" "$round" b prune tool_prune "$t"
    rm -rf "$WORK/$t/b"
    # (s) the same on the small repository (src-versions only, 8 snapshots)
    fresh_copy "$t" small s
    timed "$t" "$round" s forget tool_forget "$t" 7
    timed "$t" "$round" s prune tool_prune "$t"
    rm -rf "$WORK/$t/s"
    # (r) as (a) with --max-unused 0: repack every partly used pack
    fresh_copy "$t" base r
    timed "$t" "$round" r forget tool_forget "$t" 2
    timed "$t" "$round" r prune tool_prune "$t" 0
    timed "$t" "$round" r check tool_check "$t"
    rm -rf "$WORK/$t/r"
    # (q) as (b) with --max-unused 0
    fresh_copy "$t" base q
    timed "$t" "$round" q forget tool_forget "$t" $((nsnap - 1))
    timed "$t" "$round" q prune tool_prune "$t" 0
    rm -rf "$WORK/$t/q"
  done
done

log "raw results: $OUT (command output: $LOGS)"
python3 "$HERE/prune_report.py" "$OUT" "$LOGS"
