#!/usr/bin/env bash
# scripts/test.sh — README's test command: installs dependencies, builds, and runs
# every test (unit, fuzz-corpus replay, integration, e2e as root) with ctest.
#   SEAM_BUILD_DIR   build tree (default: build, or build-asan with --asan)
#   --asan           the AddressSanitizer + UBSan build
set -euo pipefail
cd "$(dirname "$0")/.."
asan=OFF; dir=${SEAM_BUILD_DIR:-build}
if [[ "${1:-}" == "--asan" ]]; then asan=ON; dir=${SEAM_BUILD_DIR:-build-asan}; shift; fi
bash scripts/deps.sh
werror=OFF; [[ "${CI:-}" == "true" ]] && werror=ON
cmake -S . -B "$dir" -DSC_WERROR=$werror -DSC_ASAN=$asan >/dev/null
cmake --build "$dir" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Tests that use many sockets need more than the usual 1024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cd "$dir" && ctest --output-on-failure -j"$(nproc)" "$@"
