#!/usr/bin/env bash
# scripts/demo.sh — README's first command. On a fresh Debian 12 machine as
# root: installs the Debian packages (scripts/deps.sh), builds into build/
# (incremental: nothing to do when up to date), then runs a demo scenario
# from scripts/demo/ and prints what happened. Exit 0 on success.
#
#   SEAM_BUILD_DIR=DIR     build tree (default: build/)
#   SEAM_DEMO_NO_BUILD=1   skip deps.sh and the build (tests use this)
#   SEAM_DEMO=tunnel|mesh  which scenario (default: the richest one this machine can run)
#   SEAM_DEMO_KEEP=1       keep the work dir (PKI, logs) for a look afterwards
#
# Scenarios: mesh (scripts/demo/mesh.sh) — the control plane and three pods in
# network namespaces with seam-init's rules, sidecars as uid 1337, mTLS on the
# wire, a refused caller, a certificate rotation; chosen when running as root
# (it falls back to the tunnel demo, saying why, if namespaces or a tool are
# missing). tunnel (scripts/demo/tunnel.sh) — outbound + inbound tunnels and
# an echo app on loopback, no root needed; without root it runs and says why.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export SEAM_BUILD_DIR=${SEAM_BUILD_DIR:-$root/build}

if [[ "${SEAM_DEMO_NO_BUILD:-0}" != 1 ]]; then
    echo "== dependencies (scripts/deps.sh)"
    bash scripts/deps.sh
    echo "== build ($SEAM_BUILD_DIR)"
    if [[ ! -f "$SEAM_BUILD_DIR/CMakeCache.txt" ]]; then
        cmake -S . -B "$SEAM_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    cmake --build "$SEAM_BUILD_DIR" -j"$(nproc)" >"$SEAM_BUILD_DIR/demo-build.log" 2>&1 || {
        tail -n 40 "$SEAM_BUILD_DIR/demo-build.log" >&2
        echo "demo: FAILED: the build failed (full log: $SEAM_BUILD_DIR/demo-build.log)" >&2
        exit 1
    }
fi

scenario=${SEAM_DEMO:-auto}
if [[ "$scenario" == auto ]]; then
    if [[ -x scripts/demo/mesh.sh && $(id -u) -eq 0 ]]; then
        scenario=mesh
    else
        scenario=tunnel
        if [[ -x scripts/demo/mesh.sh ]]; then
            echo "== not root: running the tunnel demo (the mesh demo needs network namespaces)"
        fi
    fi
fi
[[ -f "scripts/demo/$scenario.sh" ]] || { echo "demo: FAILED: no scenario '$scenario' in scripts/demo/" >&2; exit 2; }
echo "== demo: $scenario"
exec bash "scripts/demo/$scenario.sh"
