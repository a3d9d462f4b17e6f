#!/usr/bin/env bash
# scripts/format.sh — seam's C sources against .clang-format (STYLE.md).
#   bash scripts/format.sh          rewrite every file that differs, in place
#   bash scripts/format.sh --check  list the files that differ; exit 1 if any
#                                   (ctest runs this as style.clang_format)
# Files: every .c and .h under sidecar/, control-client/, control-plane/,
# tests/ and bench/tools/ (generated code lives in the build tree, not here).
set -euo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-clang-format}
command -v "$CF" > /dev/null || { echo "format.sh: $CF not found (bash scripts/deps.sh)" >&2; exit 2; }
mapfile -t files < <(find sidecar control-client control-plane tests bench/tools \
  -type f \( -name '*.c' -o -name '*.h' \) -not -path '*/corpus/*' | LC_ALL=C sort)
((${#files[@]})) || { echo "format.sh: no sources found" >&2; exit 2; }
if [[ "${1:-}" == "--check" ]]; then
  # One clang-format for all files; file by file only to name the ones that differ.
  if "$CF" --dry-run -Werror "${files[@]}" > /dev/null 2>&1; then
    echo "format.sh: ${#files[@]} files match .clang-format"
    exit 0
  fi
  bad=0
  for f in "${files[@]}"; do
    if ! "$CF" --dry-run -Werror "$f" > /dev/null 2>&1; then
      echo "not formatted: $f (bash scripts/format.sh fixes it)"
      bad=1
    fi
  done
  [[ $bad == 1 ]] || echo "format.sh: clang-format failed (not a formatting difference)" >&2
  exit 1
fi
"$CF" -i "${files[@]}"
