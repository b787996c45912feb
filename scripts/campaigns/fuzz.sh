#!/usr/bin/env bash
# Fuzzing campaign: every target in fuzz/fuzz_targets/ for N executions.
#
# Runs the cargo-fuzz targets one after the other (single job, fixed seed),
# growing the corpus in fuzz/corpus/<target> (committed, minimized with
# `--cmin`), and prints a table: executions, time, exec/s, corpus size,
# crashes. A crash stops that target's run (libFuzzer stops on the first
# one); its input is kept in fuzz/artifacts/<target>/ and the script exits
# non-zero after the remaining targets have run.
#
# Usage: scripts/campaigns/fuzz.sh [--runs N] [--seed S] [--targets "a b"]
#                                  [--cmin] [--no-build] [--out FILE]
#   --runs N      executions per target (default 10000000)
#   --seed S      libFuzzer seed (default 1)
#   --targets     space-separated subset (default: every target)
#   --cmin        minimize each corpus after its run (libFuzzer -merge=1,
#                 as cargo fuzz cmin)
#   --no-build    run the target binaries already built (cargo fuzz build)
#   --out FILE    also write the table (markdown) to FILE
# Environment: FUZZ_TARGET_DIR (cargo target dir for the fuzz build,
# default fuzz/target), FUZZ_SANITIZER (default none: src/ has no unsafe
# code, and without ASan the runs are several times faster; set
# "address" to use it).
set -euo pipefail

runs=10000000
seed=1
targets=""
cmin=0
build=1
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --targets) targets="$2"; shift 2 ;;
        --cmin) cmin=1; shift ;;
        --no-build) build=0; shift ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root/fuzz"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$root/fuzz/target}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

if [ -z "$targets" ]; then
    targets="$(ls fuzz_targets | sed -n 's/\.rs$//p' | sort | tr '\n' ' ')"
fi

# -a: debug assertions on (integer overflow panics, as in the test builds).
# The targets are built once, then run directly, so editing src/ while a
# campaign runs does not rebuild anything between targets.
if [ "$build" = 1 ]; then
    if [ "$(echo $targets | wc -w)" = 1 ]; then
        cargo +nightly fuzz build -a -s "$sanitizer" $targets >&2
    else
        cargo +nightly fuzz build -a -s "$sanitizer" >&2
    fi
fi
bindir="$CARGO_TARGET_DIR/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

logdir="$root/fuzz/artifacts/logs"
mkdir -p "$logdir"
rows=()
failed=0
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="$logdir/$t.log"
    start=$(date +%s.%N)
    set +e
    "$bindir/$t" "corpus/$t" "seeds/$t" \
        -runs="$runs" -seed="$seed" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s.%N)
    secs=$(echo "$end - $start" | bc)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    if [ "$cmin" = 1 ] && [ "$rc" = 0 ]; then
        # What `cargo fuzz cmin` does, with the binary already built.
        rm -rf "corpus/$t.min" && mkdir "corpus/$t.min"
        if "$bindir/$t" -merge=1 "corpus/$t.min" "corpus/$t" >>"$log" 2>&1; then
            rm -rf "corpus/$t" && mv "corpus/$t.min" "corpus/$t"
        else
            rm -rf "corpus/$t.min"
        fi
    fi
    files=$(find "corpus/$t" -type f | wc -l)
    bytes=$(du -sb "corpus/$t" | cut -f1)
    crashes=$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) | wc -l)
    rate=$(echo "scale=0; $execs / $secs" | bc)
    status="ok"
    if [ "$rc" != 0 ]; then status="exit $rc"; failed=1; fi
    row=$(printf '| %s | %s | %.0f s | %s | %s files, %s bytes | %s | %s |' \
        "$t" "$execs" "$secs" "$rate" "$files" "$bytes" "$crashes" "$status")
    echo "$row" >&2
    rows+=("$row")
done

table="| target | executions | time | exec/s | corpus | crash files | status |
| --- | --- | --- | --- | --- | --- | --- |"
for r in "${rows[@]}"; do table="$table
$r"; done
echo "$table"
if [ -n "$out" ]; then
    {
        echo "fuzz campaign: runs=$runs seed=$seed sanitizer=$sanitizer $(cargo +nightly --version)"
        echo "$table"
    } >"$out"
fi
exit $failed
