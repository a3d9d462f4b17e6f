# scripts/demo/lib.sh — helpers shared by the demo scenarios (sourced, not run).
# shellcheck shell=bash
# Every process a demo starts is registered with demo_track and ended by PID
# on exit; the work dir is removed. Ports are picked free at run time and
# traffic stays on loopback (or inside namespaces a scenario creates).

DEMO_PIDS=()
DEMO_WORK=${DEMO_WORK:-}

demo_say() { printf '%s\n' "$*"; }
demo_step() { printf '\n-- %s\n' "$*"; }

# demo_die MSG [LOGFILE...]: a clear message (plus the tail of each log), exit 1.
demo_die() {
    local msg=$1
    shift
    printf '\ndemo: FAILED: %s\n' "$msg" >&2
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            printf -- '--- last lines of %s:\n' "$(basename "$f")" >&2
            tail -n 20 "$f" >&2
        fi
    done
    exit 1
}

demo_track() { DEMO_PIDS+=("$1"); }

# demo_cleanup ends every tracked PID (TERM, then KILL after 5 s) and removes
# the work dir. Installed as the EXIT trap by demo_init.
demo_cleanup() {
    local rc=$? pid i
    for ((i = ${#DEMO_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${DEMO_PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    DEMO_PIDS=()
    if [[ -n "$DEMO_WORK" && -d "$DEMO_WORK" && "${SEAM_DEMO_KEEP:-0}" != 1 ]]; then
        rm -rf "$DEMO_WORK"
    fi
    return "$rc"
}

# demo_init NAME: a fresh work dir and the cleanup trap.
demo_init() {
    DEMO_WORK=$(mktemp -d "/tmp/seam-demo-$1.XXXXXX")
    trap demo_cleanup EXIT
    trap 'exit 130' INT TERM
}

# demo_binary NAME: path of a built binary under $SEAM_BUILD_DIR.
demo_binary() {
    local sub
    for sub in sidecar control-plane .; do
        if [[ -x "$SEAM_BUILD_DIR/$sub/$1" ]]; then
            printf '%s\n' "$SEAM_BUILD_DIR/$sub/$1"
            return 0
        fi
    done
    demo_die "$1 is not built under $SEAM_BUILD_DIR (run scripts/demo.sh without SEAM_DEMO_NO_BUILD)"
}

# demo_free_port: a TCP port on 127.0.0.1 that was free a moment ago.
demo_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# demo_wait SECONDS WHAT CMD...: polls CMD every 0.1 s until it succeeds;
# returns 1 after SECONDS.
demo_wait() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            printf 'demo: timed out after %ss waiting for %s\n' "$secs" "$what" >&2
            return 1
        fi
        sleep 0.1
    done
}

demo_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
demo_alive() { kill -0 "$1" 2>/dev/null; }
demo_count() { grep -c -- "$2" "$1" 2>/dev/null || true; }
demo_has_n() { (($(demo_count "$1" "$2") >= $3)); }

# demo_field LINE KEY: the value of KEY=value in a sidecar log line.
demo_field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
