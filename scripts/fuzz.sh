#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer targets and run one or all of them.
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [-B BUILD_DIR] [-n] [TARGET...]
#
#   TARGET      name without "fuzz_" (spiffe_id, allowlist, duration, ...);
#               default: every tests/fuzz/fuzz_*.c, one after the other.
#   -t SECONDS  run time per target (default 60).
#   -B DIR      build dir (default build-fuzz; configured with clang,
#               -DSC_FUZZ=ON -DSC_ASAN=ON when it doesn't exist yet).
#   -n          don't (re)build; use the binaries already in DIR/tests/.
#   -j JOBS     build parallelism (default 2).
#
# Each run starts from tests/fuzz/corpus/<name>/ (read) and writes new inputs
# to a scratch dir; at the end, `-merge=1` copies into the checked-in corpus
# only the inputs that add coverage. Crashes land in DIR/fuzz-artifacts/ and
# make the script exit 1. The last line per target is a summary:
#   fuzz_<name>: execs=N cov=N ft=N corpus=N new=N secs=N result=ok|CRASH
# Runs are niced (nice -n 19): the machine is shared.
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"
secs=60
jobs=2
build=""
nobuild=0
while getopts "t:j:B:nh" opt; do
    case "$opt" in
    t) secs="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    B) build="$OPTARG" ;;
    n) nobuild=1 ;;
    h | *)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        [ "$opt" = h ] && exit 0 || exit 2
        ;;
    esac
done
shift $((OPTIND - 1))
case "$secs" in
'' | *[!0-9]*) echo "fuzz.sh: -t needs a number of seconds, got '$secs'" >&2; exit 2 ;;
esac
build="${build:-$src/build-fuzz}"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in "$src"/tests/fuzz/fuzz_*.c; do
        n="$(basename "$f" .c)"
        targets+=("${n#fuzz_}")
    done
fi
for t in "${targets[@]}"; do
    if [ ! -f "$src/tests/fuzz/fuzz_$t.c" ]; then
        echo "fuzz.sh: no such target '$t' (tests/fuzz/fuzz_$t.c)" >&2
        exit 2
    fi
done

if [ "$nobuild" = 0 ]; then
    if [ ! -f "$build/CMakeCache.txt" ]; then
        cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DSC_FUZZ=ON -DSC_ASAN=ON \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    names=()
    for t in "${targets[@]}"; do names+=("fuzz_$t"); done
    nice -n 19 cmake --build "$build" -j "$jobs" --target "${names[@]}"
fi

mkdir -p "$build/fuzz-artifacts"
status=0
for t in "${targets[@]}"; do
    bin="$build/tests/fuzz_$t"
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: $bin not built" >&2
        exit 1
    fi
    corpus="$src/tests/fuzz/corpus/$t"
    mkdir -p "$corpus"
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/seam-fuzz-$t.XXXXXX")"
    log="$build/fuzz-artifacts/fuzz_$t.log"
    before="$(find "$corpus" -type f | wc -l)"
    result=ok
    if ! nice -n 19 "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=1024 -artifact_prefix="$build/fuzz-artifacts/fuzz_$t-" \
        "$scratch" "$corpus" >"$log" 2>&1; then
        result=CRASH
        status=1
    fi
    # Keep only inputs that add coverage to the checked-in corpus.
    nice -n 19 "$bin" -merge=1 "$corpus" "$scratch" >>"$log" 2>&1 || true
    rm -rf "$scratch"
    after="$(find "$corpus" -type f | wc -l)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    ft="$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    echo "fuzz_$t: execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=$after new=$((after - before)) secs=$secs result=$result"
    if [ "$result" != ok ]; then
        echo "  log: $log" >&2
        grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5 >&2 || true
    fi
done
exit $status
