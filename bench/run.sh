#!/usr/bin/env bash
# =============================================================================
# bench/run.sh - seam side by side with haproxy and nginx (issue 9)
#
#   client --plain--> OUTBOUND proxy --mTLS (client cert)--> INBOUND proxy
#          --plain--> backend (nginx: 100 B response / big file, or iperf3)
#
# The same two-hop sidecar job for every peer: TLS 1.3 only, ECDSA P-256
# certificates with SPIFFE URI SANs (CA and keys from tests/certs/gen.sh),
# client certificate required and verified on the inbound side. Both proxies
# of a pair are pinned to one core (taskset), the load generator (wrk,
# tools/ratebench.c, curl, iperf3) and the backend to the other core.
#
# Peers (default: seam,haproxy,nginx; optional: haproxy-l7, stunnel):
#   seam         seam-sidecar tunnel outbound|inbound --workers 1 --log-level warn
#   haproxy      haproxy 2.6, mode tcp, nbthread 1
#   nginx        nginx 1.22 stream module, worker_processes 1 (+ idle master)
#   haproxy-l7   haproxy 2.6, mode http, upstream mTLS pooled (not the same job)
#   stunnel      stunnel4, thread per connection (apt-get install stunnel4)
#
# Usage:
#   bash bench/run.sh                     # full run -> bench/RESULTS.md + table
#   bash bench/run.sh --smoke             # seconds; seam only; exit 0 iff every
#                                         # path moved the right bytes (CI); as root
#                                         # also mesh.py --smoke and rtt.py --smoke
#   bash bench/run.sh --quick             # DUR=3 REPS=1, small holds (development)
#   bash bench/run.sh --only seam,haproxy # subset of peers
#   bash bench/run.sh --peer NAME 'OUT_CMD' 'IN_CMD' [l4|l7]  # extra proxy
#   bash bench/run.sh --peers-file F      # file calling add_peer NAME KIND OUT IN NOTE
#   bash bench/run.sh --no-speed --no-baseline
#   (as root with seam-accel built: + seam-accel and haproxy-accel, docs/ACCEL.md)
#   (a full run adds seam-mux: seam with --mux, docs/MUX.md, all sections)
#   (a full run adds seam-busypoll and haproxy-busypoll, as root with seam-accel
#   also seam-accel-busypoll (both opt-ins), to sections 1-2 only:
#   seam with --busy-poll-us $BUSY_POLL_US, haproxy with busy-polling)
#   bash bench/run.sh --no-mesh           # skip section 7, the same job in mesh
#                                         # mode (bench/mesh.py: root only; pods in
#                                         # network namespaces behind seam-init's
#                                         # iptables rules; --smoke runs its smoke)
#   bash bench/run.sh --profile --only seam   # perf profiles of the pair under
#                                         # keep-alive, new-conn and bulk load
#                                         # -> bench/raw/profile/ (see NOTES.md);
#                                         # PROFILE_CALLGRAPH=dwarf adds inclusive costs
#
# seam binary: $SEAM_BIN (SEAM_REV: free text naming its revision, shown in
# the report), else the build dir $SEAM_BUILD_DIR, else
# build-bench/ (a Release build the full run (re)builds itself) / build/
# (--smoke looks in build/ first: CI's scripts/test.sh builds it).
#
# Knobs (env): DUR=10 REPS=3 CONNS=50 RATE=1000 RATE_CONNS=16 HOLD_CONNS=1000
#   HOLD_BIG=10000 (capped by the open-file limit: each held connection costs
#   the outbound proxy 2 fds) BULK_SECS=8 LOADGEN_CPUS=0 PROXY_CPUS=1
#   TLS_CIPHERSUITE=TLS_AES_128_GCM_SHA256 WAIT_IDLE=90 FOREIGN_MAX=1.0
#   RETRIES=2 SPEED_SECS=3 PEERS=seam,haproxy,nginx BUSY_POLL_US=500
#   (REPS rounds: in each round every peer runs every test once, DUR (bulk:
#   BULK_SECS) seconds each, peers in turn, so the shared machine's noise hits
#   all peers alike; per-metric medians over the rounds, min-max in brackets.
#   The idle-connection holds run in round 1 only.
#   WAIT_IDLE: before each section wait up to that many s for other processes
#   to go quiet; a measurement during which other processes used more than
#   FOREIGN_MAX CPU-s is redone up to RETRIES times - 'foreign CPU s' columns.)
#
# Each proxy command runs under `bash -c` in its own work dir, pinned with
# taskset to $PROXY_CPUS, in the foreground (exec). CPU comes from
# /proc/PID/stat (utime+stime of the proxy's process tree), memory from
# /proc/PID/status. Environment given to each command:
#   ROLE=outbound|inbound LISTEN_ADDR LISTEN_PORT UPSTREAM_ADDR UPSTREAM_PORT
#   CERT KEY CERT_KEY_PEM CA SELF_ID PEER_ID PEER_DNS TLS_RESUME=0|1
#   TLS_CIPHERSUITE WORKDIR
# Only loopback (127.0.0.1) is used (section 7, mesh.py: also addresses in the
# network namespaces it creates and removes); ports are picked at run time. Every
# process started is tracked by PID and stopped by PID (no pkill/killall).
# Output: bench/RESULTS.md (full runs only; regenerated, never hand-edited),
# raw outputs in bench/raw/, configs and logs in bench/work/ (both gitignored).
# =============================================================================
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK=$HERE/work
RAW=$HERE/raw
RESULTS=$HERE/RESULTS.md
BIN=$WORK/bin
RATEBENCH=$BIN/ratebench
CMDLINE="bash bench/run.sh${*:+ $*}"

DUR=${DUR:-10}
CONNS=${CONNS:-50}
RATE=${RATE:-1000}
RATE_CONNS=${RATE_CONNS:-16}
HOLD_CONNS=${HOLD_CONNS:-1000}
HOLD_BIG=${HOLD_BIG:-10000}
BULK_SECS=${BULK_SECS:-8}
FOREIGN_MAX=${FOREIGN_MAX:-1.0}
RETRIES=${RETRIES:-2}
WAIT_IDLE=${WAIT_IDLE:-90}
REPS=${REPS:-3}
SPEED_SECS=${SPEED_SECS:-3}
HOLD_SECS=4              # how long the held connections stay open once all are up (RSS is read after 0.5 s)
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
  LOADGEN_CPUS=${LOADGEN_CPUS:-0}; PROXY_CPUS=${PROXY_CPUS:-1}
else
  LOADGEN_CPUS=${LOADGEN_CPUS:-0}; PROXY_CPUS=${PROXY_CPUS:-0}
fi
export TLS_CIPHERSUITE=${TLS_CIPHERSUITE:-TLS_AES_128_GCM_SHA256}
export BUSY_POLL_US=${BUSY_POLL_US:-500}
LOOP=127.0.0.1
DO_SPEED=1
DO_BASELINE=1
DO_MESH=1
SMOKE=0
PROFILE=0
ROUNDS=1
ROUND=1
ONLY=${PEERS:-}
PEERS_FILES=()
ALLOW_ID='spiffe://cluster.local/ns/default/*'

declare -a PEER_ORDER=()
declare -A PEER_KIND=() PEER_OUT=() PEER_IN=() PEER_NOTE=()
declare -A R=()          # results: R[peer.metric]
declare -A LIVE=()       # PIDs we started and have not stopped yet (for cleanup)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

add_peer() { # NAME l4|l7 OUT_CMD IN_CMD [NOTE]
  local n=$1
  [ -n "${PEER_KIND[$n]+x}" ] || PEER_ORDER+=("$n")
  PEER_KIND[$n]=$2; PEER_OUT[$n]=$3; PEER_IN[$n]=$4; PEER_NOTE[$n]=${5:-user-supplied}
}

usage() { sed -n '2,/^# =====/p' "$0"; exit 0; }

# ------------------------------------------------------------------ arguments
EXTRA_PEERS=()
while [ $# -gt 0 ]; do
  case $1 in
    --only) [ $# -ge 2 ] || { echo "--only needs a comma-separated list of peers" >&2; exit 2; }
            ONLY=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --quick) DUR=3; BULK_SECS=3; HOLD_CONNS=200; HOLD_BIG=0; REPS=1; SPEED_SECS=1; WAIT_IDLE=0; RETRIES=0; shift ;;
    --no-speed) DO_SPEED=0; shift ;;
    --no-baseline) DO_BASELINE=0; shift ;;
    --no-mesh) DO_MESH=0; shift ;;
    --peer) [ $# -ge 4 ] || { echo "--peer needs NAME OUT_CMD IN_CMD [l4|l7]" >&2; exit 2; }
            if [ "${5:-}" = l4 ] || [ "${5:-}" = l7 ]; then EXTRA_PEERS+=("$2" "$3" "$4" "$5"); shift 5
            else EXTRA_PEERS+=("$2" "$3" "$4" l4); shift 4; fi ;;
    --peers-file) [ $# -ge 2 ] && [ -f "$2" ] || { echo "--peers-file needs an existing file" >&2; exit 2; }
                  PEERS_FILES+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
ONLY_DEFAULT=0; [ -n "$ONLY" ] || ONLY_DEFAULT=1
if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null || { echo "missing tool: perf (apt-get install linux-perf)" >&2; exit 1; }
  REPS=1; WAIT_IDLE=0; RETRIES=0; DO_SPEED=0; DO_BASELINE=0; ONLY=${ONLY:-seam}
fi
if [ "$SMOKE" = 1 ]; then
  DUR=1; BULK_SECS=1; REPS=1; HOLD_CONNS=50; HOLD_SECS=1; HOLD_BIG=0; WAIT_IDLE=0; RETRIES=0; FOREIGN_MAX=1000000
  DO_SPEED=0; DO_BASELINE=0; ONLY=${ONLY:-seam}
  RESULTS=$RAW/smoke.md
fi
ONLY=${ONLY:-seam,haproxy,nginx}
if [ "$ONLY_DEFAULT" = 1 ] && [ "$PROFILE" = 0 ]; then   # seam's opt-in latency mode and its like-for-like reference
  if [ "$SMOKE" = 1 ]; then ONLY="$ONLY,seam-busypoll,seam-mux"; else ONLY="$ONLY,seam-mux,seam-busypoll,haproxy-busypoll"; fi
fi
busypoll_peer() { [[ "$1" == *-busypoll ]]; }   # sections 1-2 only
for k in DUR CONNS RATE RATE_CONNS HOLD_CONNS HOLD_BIG BULK_SECS REPS RETRIES WAIT_IDLE SPEED_SECS; do
  [[ "${!k}" =~ ^[0-9]+$ ]] || { echo "$k must be a non-negative integer (got '${!k}')" >&2; exit 2; }
done
[ "$DUR" -ge 1 ] && [ "$REPS" -ge 1 ] && [ "$BULK_SECS" -ge 1 ] || { echo "DUR, REPS and BULK_SECS must be >= 1" >&2; exit 2; }
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

# ------------------------------------------------------------------ tools
need() { command -v "$1" >/dev/null 2>&1 || { echo "missing tool: $1 (apt-get install $2)" >&2; exit 1; }; }
need wrk wrk; need iperf3 iperf3; need nginx nginx; need openssl openssl; need curl curl
need taskset util-linux; need ss iproute2; need gcc gcc; need python3 python3
wants haproxy || wants haproxy-l7 || wants haproxy-accel && need haproxy haproxy
wants stunnel && need stunnel4 stunnel4
if wants nginx && [ ! -f /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  echo "nginx stream module missing (apt-get install libnginx-mod-stream)" >&2; exit 1
fi
mkdir -p "$BIN"
build_tool() { # NAME [extra gcc args...]: bench/work/bin/NAME from bench/tools/NAME.c when stale
  local n=$1; shift
  if [ ! -x "$BIN/$n" ] || [ "$HERE/tools/$n.c" -nt "$BIN/$n" ]; then
    gcc -O2 -Wall -o "$BIN/$n" "$HERE/tools/$n.c" "$@"
  fi
}
build_tool ratebench || { echo "cannot build tools/ratebench.c" >&2; exit 1; }
BSSL_FLAGS=(-I/usr/include/android -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android)
if [ "$DO_SPEED" = 1 ]; then
  build_tool hsbench -lssl -lcrypto 2>/dev/null || echo "note: hsbench (OpenSSL) not built (apt-get install libssl-dev)" >&2
  if [ ! -x "$BIN/hsbench-bssl" ] || [ "$HERE/tools/hsbench.c" -nt "$BIN/hsbench-bssl" ]; then
    gcc -O2 -Wall -o "$BIN/hsbench-bssl" "$HERE/tools/hsbench.c" "${BSSL_FLAGS[@]}" -lssl -lcrypto 2>/dev/null ||
      echo "note: hsbench (BoringSSL) not built (apt-get install android-libboringssl-dev)" >&2
  fi
  build_tool bsslspeed "${BSSL_FLAGS[@]}" -lcrypto 2>/dev/null || echo "note: bsslspeed not built" >&2
  build_tool biobench "${BSSL_FLAGS[@]}" -lssl -lcrypto 2>/dev/null || echo "note: biobench not built" >&2
fi
HZ=$(getconf CLK_TCK)
PY=/usr/bin/python3; [ -x $PY ] || PY=python3

# seam binary
build_bench() { # the Release build in build-bench/ (seam-accel too when its tools are there)
  local t=(seam-sidecar seam-control-plane seam-init)
  cmake -S "$REPO" -B "$REPO/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null || return 1
  local targets; targets=$(cmake --build "$REPO/build-bench" --target help 2>/dev/null)   # (grep -q in a pipe: SIGPIPE fails it under pipefail)
  grep -q 'seam-accel$' <<<"$targets" && t+=(seam-accel)
  cmake --build "$REPO/build-bench" --target "${t[@]}" -j2 >"$WORK/build.log" 2>&1 ||
    { echo "seam build failed: see $WORK/build.log" >&2; return 1; }
}
find_seam() {
  local d
  if [ -n "${SEAM_BIN:-}" ]; then [ -x "$SEAM_BIN" ] && return 0; echo "SEAM_BIN=$SEAM_BIN is not executable" >&2; return 1; fi
  if [ "$SMOKE" = 0 ]; then   # full runs measure a Release build, rebuilt here so it is never stale
    log "building seam-sidecar (Release) in build-bench/"
    build_bench || return 1
  fi
  local dirs=("$REPO/build-bench" "$REPO/build")
  [ "$SMOKE" = 1 ] && dirs=("$REPO/build" "$REPO/build-bench")   # CI: scripts/test.sh builds build/
  for d in ${SEAM_BUILD_DIR:-} "${dirs[@]}"; do
    [ -x "$d/sidecar/seam-sidecar" ] || continue
    # a stale build without the tunnel command is skipped
    "$d/sidecar/seam-sidecar" tunnel --help 2>&1 | grep -q -- --listen && { SEAM_BIN=$d/sidecar/seam-sidecar; return 0; }
    log "skipping $d/sidecar/seam-sidecar: no 'tunnel' command (stale build?)"
  done
  log "no seam-sidecar binary found; building build-bench/"
  build_bench || return 1
  SEAM_BIN=$REPO/build-bench/sidecar/seam-sidecar
}
if wants seam || wants seam-accel || wants haproxy-accel || wants seam-busypoll || wants seam-accel-busypoll; then
  mkdir -p "$WORK"
  find_seam || exit 1
  export SEAM_BIN
fi
# seam-accel (docs/ACCEL.md) needs root, a cgroup v2 hierarchy and a built
# seam-accel beside seam-sidecar. When it can run, a default run adds
# seam-accel (and, for a full run, haproxy-accel as the like-for-like
# reference); the whole harness then moves into a cgroup of its own so the
# proxies, load generators and backends it starts are all inside it.
ACCEL_NOTE=""
accel_available() {
  ACCEL_BIN=$(dirname "${SEAM_BIN:-/nonexistent/seam-sidecar}")/seam-accel
  [ "$(id -u)" = 0 ] || { ACCEL_NOTE="needs root"; return 1; }
  [ -x "$ACCEL_BIN" ] || { ACCEL_NOTE="seam-accel not built (needs clang, libbpf-dev, bpftool)"; return 1; }
  awk '$3=="cgroup2"{f=1} END{exit !f}' /proc/mounts || { ACCEL_NOTE="no cgroup v2 hierarchy mounted"; return 1; }
}
accel_cgroup() { # -> ACCEL_HOME (our cgroup), ACCEL_CG (a new child holding this harness)
  local mnt rel
  mnt=$(awk '$3=="cgroup2"{print $2; exit}' /proc/mounts)
  rel=$(awk -F: '$1=="0"{print $3}' /proc/self/cgroup)
  ACCEL_HOME=${mnt%/}${rel%/}; ACCEL_CG=$ACCEL_HOME/seam-bench-$$
  mkdir "$ACCEL_CG" && echo $$ > "$ACCEL_CG/cgroup.procs"
}
accel_cgroup_remove() {
  [ -n "${ACCEL_CG:-}" ] && [ -d "$ACCEL_CG" ] || return 0
  echo $$ > "$ACCEL_HOME/cgroup.procs" 2>/dev/null
  local i; for i in $(seq 1 50); do rmdir "$ACCEL_CG" 2>/dev/null && return 0; sleep 0.1; done
  log "could not remove $ACCEL_CG (processes still in it: $(tr '\n' ' ' < "$ACCEL_CG/cgroup.procs"))"
}
. "$HERE/peers.sh"   # the proxies' commands, and accel_start for the probe below
accel_probe() { # seam-accel can load and attach here (some containers forbid BPF even to root)
  local log=$WORK/accel-probe.log ok=0
  accel_start "$log" 1 0s && ok=1
  kill -TERM $ACCEL_PID 2>/dev/null; wait $ACCEL_PID 2>/dev/null
  [ $ok = 1 ] || { ACCEL_NOTE="seam-accel cannot attach here: $(grep -m1 -o 'error=.*' "$log")"; return 1; }
}
ACCEL_OK=0
if accel_available; then
  mkdir -p "$WORK"
  if accel_cgroup && accel_probe; then ACCEL_OK=1
  else [ -n "$ACCEL_NOTE" ] || ACCEL_NOTE="could not create a cgroup v2 directory"; accel_cgroup_remove; fi
fi
if [ "$ACCEL_OK" = 1 ]; then
  if [ "$ONLY_DEFAULT" = 1 ] && [ "$PROFILE" = 0 ]; then
    if [ "$SMOKE" = 1 ]; then ONLY="$ONLY,seam-accel"; else ONLY="$ONLY,seam-accel,haproxy-accel,seam-accel-busypoll"; fi
  fi
  export ACCEL_BIN ACCEL_CG
elif wants seam-accel || wants haproxy-accel || wants seam-accel-busypoll; then
  echo "seam-accel: $ACCEL_NOTE" >&2; exit 2
else
  log "seam-accel rows skipped: $ACCEL_NOTE"
fi
# ------------------------------------------------------------------ process helpers
tree_pids() { # ROOT_PID... -> the roots plus all live descendants
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v roots="$*" '
    { pid=$1; line=$0; sub(/^.*\) /, "", line); split(line, f, " "); par[pid]=f[2] }
    END { n=split(roots, r, " "); for (i=1;i<=n;i++) if (r[i] in par) keep[r[i]]=1
          ch=1; while (ch) { ch=0; for (p in par) if (!(p in keep) && (par[p] in keep)) { keep[p]=1; ch=1 } }
          for (p in keep) printf "%s ", p }'
}
cpu_ticks() { # PIDs -> utime+stime (all threads, incl. exited threads) in ticks
  local p; for p in "$@"; do cat /proc/$p/stat 2>/dev/null; done |
    awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t+0 }'
}
mem_kb() { # FIELD PIDs -> sum of FIELD (VmRSS/VmHWM) in kB
  local f=$1; shift; local p; for p in "$@"; do cat /proc/$p/status 2>/dev/null; done |
    awk -v f="$f:" '$1==f { t += $2 } END { print t+0 }'
}
nthreads() { local p; for p in "$@"; do cat /proc/$p/status 2>/dev/null; done | awk '$1=="Threads:"{t+=$2} END{print t+0}'; }

free_port() { # a TCP port on 127.0.0.1 that was free a moment ago
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_listen() { # PORT PID
  local i; for i in $(seq 1 100); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done; return 1
}
started() { LIVE[$1]=1; }
stop_pid() { # stop one process we started (and, if needed, its descendants) by PID
  local pid=$1 kids i
  [ -n "$pid" ] || return 0
  unset "LIVE[$pid]"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  # safety: only ever signal our own direct children (and their descendants)
  [ "$(awk '{sub(/^.*\) /,""); print $2}' /proc/$pid/stat 2>/dev/null)" = "$$" ] || return 0
  kids=$(tree_pids "$pid")
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL $kids 2>/dev/null; fi
  wait "$pid" 2>/dev/null
  for i in $kids; do kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null; done
  return 0
}
cleanup() {
  local p; for p in "${!LIVE[@]}"; do stop_pid "$p"; done
  accel_cgroup_remove
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lg() { taskset -c "$LOADGEN_CPUS" "$@"; }   # run a load-generator side command

# ------------------------------------------------------------------ backends
start_backend() {
  local d=$WORK/backend; mkdir -p "$d/tmp"
  [ -f "$WORK/big.bin" ] || truncate -s 4G "$WORK/big.bin"   # sparse: no disk I/O
  [ "$SMOKE" = 1 ] || dd if="$WORK/big.bin" of=/dev/null bs=1M 2>/dev/null   # pre-warm the page cache
  printf '%0100d' 0 | tr 0 x > "$WORK/100b.txt"
  BACKEND_PORT=$(free_port); IPERF_PORT=$(free_port)
  backend_conf "$d" "$LOOP:$BACKEND_PORT" "$(cat "$WORK/100b.txt")" "$WORK/big.bin"
  taskset -c "$LOADGEN_CPUS" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
  BACKEND_PID=$!; started $BACKEND_PID
  wait_listen $BACKEND_PORT $BACKEND_PID || { echo "backend nginx failed:" >&2; cat "$d/error.log" "$d/stdout.log" >&2; exit 1; }
  taskset -c "$LOADGEN_CPUS" iperf3 -s -B $LOOP -p $IPERF_PORT >"$d/iperf3.log" 2>&1 &
  IPERF_PID=$!; started $IPERF_PID
  wait_listen $IPERF_PORT $IPERF_PID || { echo "iperf3 server failed" >&2; exit 1; }
  local body; body=$(curl -s http://$LOOP:$BACKEND_PORT/100b)
  [ "$body" = "$(cat "$WORK/100b.txt")" ] || { echo "backend body is ${#body} bytes, expected 100" >&2; exit 1; }
}

seam_note() {
  local v b=${SEAM_BIN:-not built}
  v=$("$b" version 2>/dev/null | head -1)
  [[ "$b" == "$REPO/"* ]] && v="$v, tree $(git -C "$REPO" describe --always --dirty 2>/dev/null)"
  [ -n "${SEAM_REV:-}" ] && v="$v, $SEAM_REV"
  echo "${v:-seam} (${b#$REPO/}), tunnel mode, --workers 1 per proxy, libuv + BoringSSL"
}
add_peer seam       l4 peer_seam       peer_seam       "$(seam_note)"
add_peer haproxy    l4 peer_haproxy_l4 peer_haproxy_l4 "$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1,3) mode tcp, nbthread 1"
add_peer nginx      l4 peer_nginx      peer_nginx      "nginx $(nginx -v 2>&1 | cut -d/ -f2) stream, worker_processes 1 (+idle master)"
add_peer haproxy-l7 l7 peer_haproxy_l7 peer_haproxy_l7 "haproxy mode http, nbthread 1, http-reuse always (pooled upstream mTLS: not the same job)"
add_peer stunnel    l4 peer_stunnel    peer_stunnel    "stunnel4, thread per connection (not limitable), TIMEOUTclose=0"
add_peer seam-accel l4 "accel_wrap peer_seam" "accel_wrap peer_seam" "seam as above + seam-accel (sockmap) on each proxy's plain-text hop"
add_peer haproxy-accel l4 "accel_wrap peer_haproxy_l4" "accel_wrap peer_haproxy_l4" "haproxy mode tcp as above + seam-accel on each proxy's plain-text hop (like-for-like reference)"
add_peer seam-mux   l4 "mux_wrap peer_seam" "mux_wrap peer_seam" "seam as above + --mux on the outbound: every connection a stream of one long-lived mTLS session (seam-mux/1, docs/MUX.md; no handshake per connection)"
add_peer seam-mux-busypoll l4 "mux_wrap busypoll_wrap peer_seam" "mux_wrap busypoll_wrap peer_seam" "seam with --mux and --busy-poll-us $BUSY_POLL_US (two unprivileged opt-ins; sections 1-2 only; not in the default run: --only)"
add_peer seam-busypoll l4 "busypoll_wrap peer_seam" "busypoll_wrap peer_seam" "seam as above + --busy-poll-us $BUSY_POLL_US (polls while an answer is due; sections 1-2 only)"
add_peer seam-accel-busypoll l4 "accel_wrap busypoll_wrap peer_seam" "accel_wrap busypoll_wrap peer_seam" "seam with both opt-ins: seam-accel on the plain-text hops + --busy-poll-us $BUSY_POLL_US (sections 1-2 only)"
add_peer haproxy-busypoll l4 "busypoll_wrap peer_haproxy_l4" "busypoll_wrap peer_haproxy_l4" "haproxy mode tcp as above + busy-polling (polls always; like-for-like reference; sections 1-2 only)"

for f in "${PEERS_FILES[@]}"; do . "$f"; done
i=0
while [ $i -lt ${#EXTRA_PEERS[@]} ]; do
  add_peer "${EXTRA_PEERS[$i]}" "${EXTRA_PEERS[$((i+3))]}" "${EXTRA_PEERS[$((i+1))]}" "${EXTRA_PEERS[$((i+2))]}" "user-supplied (--peer)"
  ONLY="$ONLY,${EXTRA_PEERS[$i]}"
  i=$((i+4))
done

# ------------------------------------------------------------------ chain control
# start_chain PEER UPSTREAM_PORT RESUME -> sets OUT_PID IN_PID OUT_PORT IN_PORT
start_chain() {
  local peer=$1 up=$2 resume=$3
  OUT_PORT=$(free_port); IN_PORT=$(free_port)
  [ "$OUT_PORT" != "$IN_PORT" ] || IN_PORT=$(free_port)
  local d=$WORK/peers/$peer/r$resume-u$up; rm -rf "$d"; mkdir -p "$d/outbound" "$d/inbound"
  local pki=$WORK/pki
  ( cd "$d/inbound" && export ROLE=inbound LISTEN_ADDR=$LOOP LISTEN_PORT=$IN_PORT UPSTREAM_ADDR=$LOOP UPSTREAM_PORT=$up \
      CERT=$pki/server.crt KEY=$pki/server.key CERT_KEY_PEM=$pki/server.pem CA=$pki/ca.crt \
      SELF_ID=spiffe://cluster.local/ns/default/sa/server PEER_ID=spiffe://cluster.local/ns/default/sa/client \
      PEER_DNS=client.default.svc TLS_RESUME=$resume WORKDIR=$d/inbound &&
    exec taskset -c "$PROXY_CPUS" bash -c "${PEER_IN[$peer]}" ) >"$d/inbound/stdout.log" 2>&1 &
  IN_PID=$!; started $IN_PID
  ( cd "$d/outbound" && export ROLE=outbound LISTEN_ADDR=$LOOP LISTEN_PORT=$OUT_PORT UPSTREAM_ADDR=$LOOP UPSTREAM_PORT=$IN_PORT \
      CERT=$pki/client.crt KEY=$pki/client.key CERT_KEY_PEM=$pki/client.pem CA=$pki/ca.crt \
      SELF_ID=spiffe://cluster.local/ns/default/sa/client PEER_ID=spiffe://cluster.local/ns/default/sa/server \
      PEER_DNS=server.default.svc TLS_RESUME=$resume WORKDIR=$d/outbound &&
    exec taskset -c "$PROXY_CPUS" bash -c "${PEER_OUT[$peer]}" ) >"$d/outbound/stdout.log" 2>&1 &
  OUT_PID=$!; started $OUT_PID
  if ! wait_listen $IN_PORT $IN_PID || ! wait_listen $OUT_PORT $OUT_PID; then
    log "$peer: proxies did not start; logs in $d"
    tail -n 5 "$d"/*/stdout.log "$d"/*/*.log 2>/dev/null >&2
    stop_chain; return 1
  fi
  sleep 0.3
  CHAIN_DIR=$d
  return 0
}
stop_chain() {
  # seam-accel first (the *-accel peers): it then keeps the short cut until the
  # proxies have closed their connections and logs its counters as it exits.
  local p acc=() i
  for p in $(pids_out) $(pids_in); do [ "$(cat /proc/$p/comm 2>/dev/null)" = seam-accel ] && acc+=("$p"); done
  [ ${#acc[@]} -gt 0 ] && kill -TERM "${acc[@]}" 2>/dev/null
  stop_pid "$OUT_PID"; stop_pid "$IN_PID"
  for i in $(seq 1 30); do kill -0 "${acc[@]}" 2>/dev/null || break; sleep 0.1; done
  sleep 0.2
}
pids_out() { tree_pids "$OUT_PID"; }
pids_in()  { tree_pids "$IN_PID"; }

# ------------------------------------------------------------------ measurements
to_us() { # "390.12us" | "1.20ms" | "2.00s" -> microseconds
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us$/,"",v); print v+0 }
    else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /m$/) { sub(/m$/,"",v); print v*60e6 }
    else if (v ~ /s$/) { sub(/s$/,"",v); print v*1e6 } else print "nan" }'
}
# run_wrk KEY URL [extra wrk args] -> R[KEY.rps|p50|p90|p99|reqs|errs]
run_wrk() { # KEY URL [wrk args] -> medians over REPS runs; reqs/errs summed
  local key=$1 url=$2; shift 2
  local r out rps="" p50="" p90="" p99="" reqs=0 errs=0 e
  for r in $(seq 1 "$REPS"); do
    out=$RAW/$key.round${ROUND:-1}.r$r.wrk.txt
    lg timeout $((DUR + 30)) wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$@" "$url" > "$out" 2>&1
    rps="$rps $(awk '/^Requests\/sec:/{printf "%.0f", $2}' "$out")"
    local n_; n_=$(awk '/requests in/{print $1; exit}' "$out")
    [[ "${n_:-}" =~ ^[0-9]+$ ]] && reqs=$((reqs + n_))
    p50="$p50 $(to_us "$(awk '$1=="50%"{print $2}' "$out")")"
    p90="$p90 $(to_us "$(awk '$1=="90%"{print $2}' "$out")")"
    p99="$p99 $(to_us "$(awk '$1=="99%"{print $2}' "$out")")"
    e=$(awk '/Socket errors/{gsub(/,/,""); print $4+$6+$8+$10} /Non-2xx/{print $NF}' "$out" | awk '{s+=$1} END{print s+0}')
    errs=$((errs + e))
  done
  R[$key.rps]=$(echo $rps | median); R[$key.rps_range]=$(echo $rps | minmax)
  R[$key.p50]=$(echo $p50 | median); R[$key.p90]=$(echo $p90 | median); R[$key.p99]=$(echo $p99 | median)
  R[$key.reqs]=$reqs; R[$key.errs]=$errs
}
run_rate() { # KEY PORT [CPUS] -> fixed-rate latency, medians over REPS runs
  local key=$1 port=$2 cpus=${3:-$LOADGEN_CPUS} r k out
  declare -A acc=()
  for r in $(seq 1 "$REPS"); do
    out=$RAW/$key.round${ROUND:-1}.r$r.rate.txt
    taskset -c "$cpus" timeout $((DUR + 30)) "$RATEBENCH" rate $LOOP "$port" /100b "$RATE_CONNS" "$RATE" "$DUR" 1 > "$out" 2>&1
    for k in p50_us p90_us p99_us p999_us achieved_rps errors; do
      acc[$k]="${acc[$k]:-} $(tr ' ' '\n' < "$out" | awk -F= -v k=$k '$1==k{print $2}')"
    done
  done
  for k in p50_us p90_us p99_us p999_us achieved_rps; do R[$key.$k]=$(echo ${acc[$k]} | median); done
  R[$key.p50_range]=$(echo ${acc[p50_us]} | minmax); R[$key.p99_range]=$(echo ${acc[p99_us]} | minmax)
  R[$key.errors]=$(echo ${acc[errors]} | tr ' ' '\n' | awk '{s+=$1} END{print s+0}')
}
run_curl_big() { # KEY PORT -> Gbit/s downloading a big file for BULK_SECS (median of REPS; bytes summed)
  local key=$1 port=$2 r out g="" b=0
  for r in $(seq 1 "$REPS"); do
    out=$RAW/$key.round${ROUND:-1}.r$r.curl.txt
    lg curl -s -o /dev/null --max-time "$BULK_SECS" -w '%{size_download} %{time_total}\n' "http://$LOOP:$port/big" > "$out" 2>&1
    g="$g $(awk '{ if ($2>0) printf "%.2f", $1*8/$2/1e9 }' "$out")"
    local sz _t; read -r sz _t < "$out" 2>/dev/null   # integer bytes (mawk would print 6.4e+09)
    [[ "${sz:-}" =~ ^[0-9]+$ ]] && b=$((b + sz))
  done
  R[$key.gbps]=$(echo $g | median); R[$key.gbps_range]=$(echo $g | minmax); R[$key.bytes]=$b
}
run_iperf() { # KEY PORT [CPUS] [iperf3 args] -> Gbit/s (median of REPS; bytes summed); -R = server->client
  local key=$1 port=$2 cpus=${3:-$LOADGEN_CPUS} r out g="" b=0; shift 2; [ $# -gt 0 ] && shift
  for r in $(seq 1 "$REPS"); do
    out=$RAW/$key.round${ROUND:-1}.r$r.iperf.json
    taskset -c "$cpus" timeout $((BULK_SECS + 20)) iperf3 -c $LOOP -p "$port" -t "$BULK_SECS" -J "$@" > "$out" 2>&1
    g="$g $($PY -c 'import json,sys
try: print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("")' "$out")"
    local nb; nb=$($PY -c 'import json,sys
try: print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))
except Exception: print(0)' "$out")
    [[ "$nb" =~ ^[0-9]+$ ]] && b=$((b + nb))
  done
  R[$key.gbps]=$(echo $g | median); R[$key.gbps_range]=$(echo $g | minmax); R[$key.bytes]=$b
}
# cpu_begin / cpu_end PFX: CPU seconds of outbound / inbound trees during a measurement
cpu_begin() { CB_OUT=$(cpu_ticks $(pids_out)); CB_IN=$(cpu_ticks $(pids_in)); CB_T=$(date +%s.%N); CB_ST=$(steal_snap "$PROXY_CPUS"); foreign_snap > "$WORK/foreign.before"; }
cpu_end() {
  local pfx=$1 o i t
  o=$(cpu_ticks $(pids_out)); i=$(cpu_ticks $(pids_in)); t=$(date +%s.%N)
  R[$pfx.cpu_out]=$(awk -v a=$CB_OUT -v b=$o -v hz=$HZ 'BEGIN{printf "%.2f", (b-a)/hz}')
  R[$pfx.cpu_in]=$(awk -v a=$CB_IN -v b=$i -v hz=$HZ 'BEGIN{printf "%.2f", (b-a)/hz}')
  R[$pfx.wall]=$(awk -v a=$CB_T -v b=$t 'BEGIN{printf "%.2f", b-a}')
  R[$pfx.steal]=$(echo "$CB_ST $(steal_snap "$PROXY_CPUS")" | awk '{ if ($4>$2) printf "%.1f", ($3-$1)*100/($4-$2); else print "-" }')
  foreign_snap > "$WORK/foreign.after"
  R[$pfx.foreign]=$(foreign_cpu "$WORK/foreign.before" "$WORK/foreign.after")
  FOREIGN_TOTAL=$(awk -v a="${FOREIGN_TOTAL:-0}" -v b="${R[$pfx.foreign]}" 'BEGIN{printf "%.1f", a+b}')
}
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else { m=(a[NR/2]+a[NR/2+1])/2; if (m==int(m)) printf "%.0f\n", m; else printf "%.10g\n", m } }'; }   # %.0f: mawk's %d clamps at 2^31-1 (byte counts)
minmax() { tr ' ' '\n' | awk 'NF' | sort -g | awk 'NR==1{m=$1} {x=$1} END{ if (NR>1) printf "%s-%s", m, x; else print "" }'; }
steal_snap() { # -> "steal total" ticks summed over the CPUs in $1 (e.g. "1" or "0,2")
  awk -v l=",$1," '$1 ~ /^cpu[0-9]+$/ { n=substr($1,4); if (index(l, ","n",")) { s+=$9; for (i=2;i<=NF;i++) t+=$i } } END{ print s+0, t+0 }' /proc/stat
}
foreign_snap() { # -> "pid:starttime:ticks" of every process that is NOT a descendant of this harness
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v me=$$ '
    { pid=$1; line=$0; sub(/^.*\) /, "", line); split(line, f, " ")
      par[pid]=f[2]; tk[pid]=f[12]+f[13]; st[pid]=f[20] }
    END { keep[me]=1; ch=1
          while (ch) { ch=0; for (p in par) if (!(p in keep) && (par[p] in keep)) { keep[p]=1; ch=1 } }
          for (p in par) if (!(p in keep) && tk[p] > 0) printf "%s:%s:%s\n", p, st[p], tk[p] }'
}
foreign_cpu() { # BEFORE_FILE AFTER_FILE -> CPU seconds used by other processes in between
  awk -F: -v hz=$HZ 'NR==FNR { b[$1":"$2]=$3; next } { k=$1":"$2; t += (k in b) ? $3-b[k] : $3 }
    END { printf "%.1f", t/hz }' "$1" "$2"
}
wait_idle() { # wait (up to WAIT_IDLE s) until other processes use < 5% CPU over 5 s; the machine is shared
  [ "${WAIT_IDLE:-0}" -gt 0 ] || return 0
  local waited=0 f
  while [ $waited -lt "$WAIT_IDLE" ]; do
    foreign_snap > "$WORK/idle.before"; sleep 5; foreign_snap > "$WORK/idle.after"
    f=$(foreign_cpu "$WORK/idle.before" "$WORK/idle.after")
    awk -v f="$f" 'BEGIN{exit !(f < 0.25)}' && return 0
    [ $waited -eq 0 ] && log "other processes are using CPU (${f}s in 5s); waiting up to ${WAIT_IDLE}s for an idle machine"
    waited=$((waited + 5))
  done
  log "machine still busy after ${WAIT_IDLE}s; measuring anyway (see 'foreign CPU s' columns)"
}
measure() { # PFX CMD...: CPU-accounted measurement; redone (up to RETRIES times) when other
             # processes used more than FOREIGN_MAX CPU-seconds while it ran
  local pfx=$1 try=0; shift
  while :; do
    cpu_begin; "$@"; cpu_end "$pfx"
    awk -v f="${R[$pfx.foreign]:-0}" -v m="$FOREIGN_MAX" 'BEGIN{exit !(f > m)}' || break
    try=$((try + 1))
    if [ $try -gt "$RETRIES" ]; then log "$pfx: still contaminated (${R[$pfx.foreign]} foreign CPU-s); keeping it"; break; fi
    log "$pfx: other processes used ${R[$pfx.foreign]} CPU-s meanwhile; re-measuring"
    wait_idle
  done
}
per1k() { # CPU_S COUNT -> CPU seconds per 1000 events (= vCPU per 1000 events/s)
  awk -v c="${1:-0}" -v n="${2:-0}" 'BEGIN{ if (n>0) printf "%.3f", c*1000/n; else print "n/a" }'
}

resume_check() { # PORT -> 1 if the inbound listener resumed a TLS session offered by s_client, else 0
  local port=$1 sess=$WORK/sess.pem pki=$WORK/pki r
  local req='GET /100b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
  rm -f "$sess"
  printf "$req" | timeout 5 openssl s_client -connect $LOOP:$port -cert $pki/client.crt -key $pki/client.key \
      -CAfile $pki/ca.crt -servername server.default.svc -ign_eof -sess_out "$sess" >/dev/null 2>&1
  r=$(printf "$req" | timeout 5 openssl s_client -connect $LOOP:$port -cert $pki/client.crt -key $pki/client.key \
      -CAfile $pki/ca.crt -servername server.default.svc -ign_eof -sess_in "$sess" 2>/dev/null | grep -c '^Reused')
  echo "${r:-0}"
}
sanity() { # PEER: mTLS enforcement + negotiated suite on the inbound listener, body through path
  local p=$1 pki=$WORK/pki body nocert withcert
  body=$(curl -s --max-time 3 http://$LOOP:$OUT_PORT/100b)
  R[$p.path_ok]=$([ "$body" = "$(cat "$WORK/100b.txt")" ] && echo yes || echo "NO(${#body}B)")
  nocert=$(curl -sk --no-alpn --max-time 3 -o /dev/null -w '%{http_code}' https://$LOOP:$IN_PORT/100b 2>/dev/null)
  withcert=$(curl -skv --no-alpn --max-time 3 --cert $pki/client.crt --key $pki/client.key -o /dev/null -w '%{http_code}' \
              https://$LOOP:$IN_PORT/100b 2>"$RAW/$p.sanity.curl.txt")
  R[$p.mtls]=$([ "$nocert" != 200 ] && [ "$withcert" = 200 ] && echo enforced || echo "CHECK(nocert=$nocert,cert=$withcert)")
  R[$p.suite]=$(grep -m1 'SSL connection using' "$RAW/$p.sanity.curl.txt" | grep -o 'TLS_[A-Z0-9_]*' | head -1)
  R[$p.in_resumes]=$(resume_check $IN_PORT)   # server-side resumption offered? (expect 0 here)
}

# ------------------------------------------------------------------ sections
physical_limits() {
  log "physical limits: openssl speed, BoringSSL speed, in-process handshakes (pinned to CPU $PROXY_CPUS), raw loopback iperf3"
  local o=$RAW/speed s=$SPEED_SECS
  taskset -c "$PROXY_CPUS" openssl speed -mr -seconds "$s" -evp aes-128-gcm > $o.aes.txt 2>&1
  taskset -c "$PROXY_CPUS" openssl speed -mr -seconds "$s" -evp chacha20-poly1305 > $o.chacha.txt 2>&1
  taskset -c "$PROXY_CPUS" openssl speed -mr -seconds "$s" ecdsap256 > $o.ecdsa.txt 2>&1
  taskset -c "$PROXY_CPUS" openssl speed -mr -seconds "$s" ecdhx25519 > $o.x25519.txt 2>&1
  # +F:id:name:v16:v64:v256:v1024:v8192:v16384 (bytes/s)
  R[phys.aes_16k]=$(awk -F: '/^\+F:/{printf "%.2f", $(NF)/1e9}' $o.aes.txt)
  R[phys.aes_1k]=$(awk -F: '/^\+F:/{printf "%.2f", $(NF-2)/1e9}' $o.aes.txt)
  R[phys.chacha_16k]=$(awk -F: '/^\+F:/{printf "%.2f", $(NF)/1e9}' $o.chacha.txt)
  R[phys.chacha_1k]=$(awk -F: '/^\+F:/{printf "%.2f", $(NF-2)/1e9}' $o.chacha.txt)
  # OpenSSL 3.0 -mr: +F4:n:bits:sign/s:verify/s  +F5:n:bits:ops/s:s/op
  R[phys.ecdsa_sign]=$(awk -F: '/^\+F4:/{printf "%.0f", $4}' $o.ecdsa.txt)
  R[phys.ecdsa_verify]=$(awk -F: '/^\+F4:/{printf "%.0f", $5}' $o.ecdsa.txt)
  R[phys.x25519]=$(awk -F: '/^\+F5:/{printf "%.0f", $4}' $o.x25519.txt)
  if [ -x "$BIN/bsslspeed" ]; then
    taskset -c "$PROXY_CPUS" "$BIN/bsslspeed" "$s" > $o.bssl.txt 2>&1
    local k; for k in aes128gcm_16k_gbs aes128gcm_1k_gbs ecdsa_p256_sign ecdsa_p256_verify x25519; do
      R[phys.bssl.$k]=$(tr ' ' '\n' < $o.bssl.txt | awk -F= -v k=$k '$1==k{print $2}')
    done
  fi
  if [ -x "$BIN/biobench" ]; then   # pins itself: sender on CPU 1, receiver on CPU 0
    "$BIN/biobench" "$WORK/pki" 1024 3 > $o.bio.txt 2>&1
    for k in fd_gbits fd_cpu_s_gb fd_calls_mib mem_gbits mem_cpu_s_gb mem_calls_mib; do
      R[phys.bio.$k]=$(tail -1 $o.bio.txt | tr ' ' '\n' | awk -F= -v k=$k '$1==k{print $2}')
    done
  fi
  local lib m k
  for lib in hsbench hsbench-bssl; do
    [ -x "$BIN/$lib" ] || continue
    for m in full resume; do
      taskset -c "$PROXY_CPUS" "$BIN/$lib" "$WORK/pki" "$s" $m "$TLS_CIPHERSUITE" > $o.$lib.$m.txt 2>&1
      for k in client_us server_us per_core_pair_hs_s reused handshakes; do
        R[phys.$lib.$m.$k]=$(tr ' ' '\n' < $o.$lib.$m.txt | awk -F= -v k=$k '$1==k{print $2}')
      done
    done
  done
}

baseline() {
  log "direct baseline (no proxies)"
  OUT_PID=""; IN_PID=""
  measure base.fr run_rate base.fr $BACKEND_PORT
  measure base.frx run_rate base.frx $BACKEND_PORT "$PROXY_CPUS"   # client on the other core
  measure base.ka run_wrk base.ka http://$LOOP:$BACKEND_PORT/100b
  measure base.cc run_wrk base.cc http://$LOOP:$BACKEND_PORT/100b -H 'Connection: close'
  measure base.bulk run_curl_big base.bulk $BACKEND_PORT
  run_iperf phys.iperf_1core $IPERF_PORT                       # client+server on LOADGEN cpu
  run_iperf phys.iperf_2core $IPERF_PORT "$PROXY_CPUS"         # client on the other core
}

hold() { # PEER KEY N: hold N idle connections through the path; RSS growth per connection
  local p=$1 key=$2 n=$3 r_out0 r_in0 out hp i lim
  lim=$(( ($(ulimit -n) - 200) / 2 ))          # the outbound proxy needs 2 fds per held connection
  if [ "$n" -gt "$lim" ]; then log "$p: holding $lim instead of $n connections (open-file limit $(ulimit -n))"; n=$lim; fi
  R[$p.$key.asked]=$n
  log "$p: holding $n idle connections"
  r_out0=$(mem_kb VmRSS $(pids_out)); r_in0=$(mem_kb VmRSS $(pids_in))
  out=$RAW/$p.$key.txt
  local setup=$(( n / 50 + 30 ))               # >= 50 connections/s or give up (bounded)
  lg "$RATEBENCH" hold $LOOP $OUT_PORT /100b "$n" "$HOLD_SECS" "$setup" > "$out" 2>&1 &
  hp=$!; started $hp
  for i in $(seq 1 $(( (setup + 10) * 10 ))); do grep -q held= "$out" 2>/dev/null && break; kill -0 $hp 2>/dev/null || break; sleep 0.1; done
  sleep 0.5
  R[$p.$key.held]=$(awk -F= '/held=/{print $2}' "$out")
  R[$p.$key.rss_out]=$(mem_kb VmRSS $(pids_out)); R[$p.$key.rss_in]=$(mem_kb VmRSS $(pids_in))
  R[$p.$key.threads_out]=$(nthreads $(pids_out)); R[$p.$key.threads_in]=$(nthreads $(pids_in))
  wait $hp 2>/dev/null; unset "LIVE[$hp]"
  R[$p.$key.kb_out]=$(awk -v a=$r_out0 -v b=${R[$p.$key.rss_out]} -v n=${R[$p.$key.held]:-0} 'BEGIN{ if(n>0) printf "%.1f",(b-a)/n; else print "n/a"}')
  R[$p.$key.kb_in]=$(awk -v a=$r_in0 -v b=${R[$p.$key.rss_in]} -v n=${R[$p.$key.held]:-0} 'BEGIN{ if(n>0) printf "%.1f",(b-a)/n; else print "n/a"}')
  sleep 1
}
hwm_update() { # PEER: keep the highest VmHWM seen across the peer's chains
  local p=$1 h
  h=$(mem_kb VmHWM $(pids_out)); [ "$h" -gt "${R[$p.hwm_out]:-0}" ] && R[$p.hwm_out]=$h
  h=$(mem_kb VmHWM $(pids_in)); [ "$h" -gt "${R[$p.hwm_in]:-0}" ] && R[$p.hwm_in]=$h
}

bench_peer() { # PEER
  local p=$1 kind=${PEER_KIND[$1]}
  log "== $p ($kind), round ${ROUND:-1}/$ROUNDS: ${PEER_NOTE[$p]}"
  # --- chain 1: HTTP backend, no TLS resumption
  start_chain "$p" $BACKEND_PORT 0 || { R[$p.failed]=1; return; }
  sanity "$p"
  R[$p.threads_out]=$(nthreads $(pids_out)); R[$p.threads_in]=$(nthreads $(pids_in))
  R[$p.procs_out]=$(echo $(pids_out) | wc -w); R[$p.procs_in]=$(echo $(pids_in) | wc -w)
  R[$p.rss0_out]=$(mem_kb VmRSS $(pids_out)); R[$p.rss0_in]=$(mem_kb VmRSS $(pids_in))
  log "$p: path=${R[$p.path_ok]} mtls=${R[$p.mtls]} suite=${R[$p.suite]} resumptions(inbound)=${R[$p.in_resumes]}"

  log "$p: fixed rate $RATE rps / $RATE_CONNS conns, ${DUR}s x $REPS"
  measure $p.fr run_rate $p.fr $OUT_PORT

  log "$p: keep-alive saturation wrk -c$CONNS ${DUR}s x $REPS"
  measure $p.ka run_wrk $p.ka http://$LOOP:$OUT_PORT/100b
  R[$p.hwm_ka_out]=$(mem_kb VmHWM $(pids_out)); R[$p.hwm_ka_in]=$(mem_kb VmHWM $(pids_in))
  if busypoll_peer "$p"; then   # a latency mode: the other sections are the plain peer's
    stop_chain; sleep 1; derive "$p"; return
  fi

  if [ "${ROUND:-1}" = 1 ]; then   # memory: once (holding ~10k connections is slow)
    hold "$p" hold "$HOLD_CONNS"
    [ "$HOLD_BIG" -gt 0 ] && hold "$p" holdbig "$HOLD_BIG"
  fi

  log "$p: new connection per request (full handshakes) wrk -c$CONNS ${DUR}s x $REPS"
  measure $p.cc run_wrk $p.cc http://$LOOP:$OUT_PORT/100b -H 'Connection: close'

  mkdir -p "$WORK/configs/$p"
  local f; for f in "$CHAIN_DIR"/outbound/* "$CHAIN_DIR"/inbound/*; do
    case $f in *.log|*.pid) ;; *) [ -f "$f" ] && cp "$f" "$WORK/configs/$p/$(basename "$(dirname "$f")")-$(basename "$f")" ;; esac
  done
  log "$p: bulk download through the path (curl, ${BULK_SECS}s x $REPS)"
  measure $p.curl run_curl_big $p.curl $OUT_PORT
  hwm_update "$p"
  stop_chain
  sleep 1

  # --- chain 2: HTTP backend, TLS resumption allowed (L4 only: L7 peers pool upstream connections)
  if [ "$kind" = l4 ] && start_chain "$p" $BACKEND_PORT 1; then
    R[$p.in_resumes_r1]=$(resume_check $IN_PORT)
    log "$p: new connection per request, resumption allowed (inbound resumed an s_client session: ${R[$p.in_resumes_r1]})"
    measure $p.ccr run_wrk $p.ccr http://$LOOP:$OUT_PORT/100b -H 'Connection: close'
    hwm_update "$p"
    stop_chain; sleep 1
  fi

  # --- chain 3: iperf3 backend (L4 peers only), both directions
  if [ "$kind" = l4 ] && start_chain "$p" $IPERF_PORT 0; then
    log "$p: iperf3 -t $BULK_SECS through the path, client->server and server->client (-R)"
    measure $p.iperf run_iperf $p.iperf $OUT_PORT "$LOADGEN_CPUS"
    measure $p.iperfR run_iperf $p.iperfR $OUT_PORT "$LOADGEN_CPUS" -R
    hwm_update "$p"
    stop_chain; sleep 1
  fi
  derive "$p"
}

# derived per-peer numbers used by the tables and the ratios
derive() {
  local p=$1 k
  R[$p.ka.pair]=$(awk -v a=$(v $p.ka.cpu_out) -v b=$(v $p.ka.cpu_in) -v n=$(v $p.ka.reqs) 'BEGIN{ if (n>0 && a!="-") printf "%.4f", (a+b)*1000/n; else print "-" }')
  R[$p.fr.pair]=$(awk -v a=$(v $p.fr.cpu_out) -v b=$(v $p.fr.cpu_in) -v r=$(v $p.fr.achieved_rps) -v d=$DUR 'BEGIN{ if (r>0 && a!="-") printf "%.4f", (a+b)*1000/(r*(d+1)); else print "-" }')
  for k in 50 90 99; do
    R[$p.fr.add$k]=$(awk -v a=$(v $p.fr.p${k}_us) -v b=$(v base.fr.p${k}_us) 'BEGIN{ if (a=="-"||b=="-") print "-"; else printf "%.0f", a-b }')
  done
  for k in cc ccr; do
    R[$p.$k.ms_pair]=$(awk -v a=$(v $p.$k.cpu_out) -v b=$(v $p.$k.cpu_in) -v n=$(v $p.$k.reqs) 'BEGIN{ if (n>0 && a!="-") printf "%.3f", (a+b)*1000/n; else print "-" }')
  done
  for k in iperf iperfR curl; do
    R[$p.$k.sgb_pair]=$(awk -v a=$(v $p.$k.cpu_out) -v b=$(v $p.$k.cpu_in) -v n=$(v $p.$k.bytes) 'BEGIN{ if (n>0 && a!="-") printf "%.3f", (a+b)/(n/1e9); else print "-" }')
  done
  R[$p.rss0_pair]=$(awk -v a=$(v $p.rss0_out) -v b=$(v $p.rss0_in) 'BEGIN{ if (a=="-") print "-"; else printf "%.0f", a+b }')
  for k in hold holdbig; do
    R[$p.$k.kb_max]=$(awk -v a=$(v $p.$k.kb_out) -v b=$(v $p.$k.kb_in) 'BEGIN{ if (a=="-"||a=="n/a") print "-"; else printf "%.1f", (a>b?a:b) }')
  done
  # resumption really used between the proxies? (the inbound resumed a session offered by s_client)
  [ "$(v $p.in_resumes_r1)" = 1 ] || R[$p.ccr.noresume]=1
}

# ------------------------------------------------------------------ rounds
merge_rounds() { # R[peer.key] = median over rounds (errors: sum; noise columns: max); ranges
  local p k r vals x rk
  for p in "${RUN_PEERS[@]}"; do
    for k in "${!R[@]}"; do
      [[ "$k" == "$p."* ]] || continue
      vals=""
      for r in $(seq 1 "$ROUNDS"); do x=${RR["$r|$k"]:-}; [ -n "$x" ] && vals="$vals $x"; done
      [ -n "$vals" ] || continue
      if ! echo $vals | tr ' ' '\n' | awk '$0 !~ /^-?[0-9]+(\.[0-9]+)?$/ {bad=1} END{exit bad}'; then
        R[$k]=${RR["1|$k"]:-${R[$k]}}; continue        # text (path_ok, suite...): first round
      fi
      case $k in
        *.errs|*.errors) R[$k]=$(echo $vals | tr ' ' '\n' | awk '{s+=$1} END{print s+0}') ;;
        *.foreign|*.steal) R[$k]=$(echo $vals | tr ' ' '\n' | sort -g | tail -1) ;;
        *) R[$k]=$(echo $vals | median) ;;
      esac
      case $k in
        *.rps|*.gbps) rk=${k}_range ;;
        *.p50_us) rk=${k%.p50_us}.p50_range ;;
        *.p99_us) rk=${k%.p99_us}.p99_range ;;
        *) rk="" ;;
      esac
      [ -n "$rk" ] && R[$rk]=$(echo $vals | minmax)
    done
  done
}

# ------------------------------------------------------------------ profiles
# perf (software cpu-clock event: this VM has no hardware counters) on both
# proxies of the pair while one load runs; flat profile per process and symbol.
profile_peer() { # PEER
  local p=$1 d=$RAW/profile load up pids pp
  mkdir -p "$d"
  for load in ka cc bulk; do
    [ $load = bulk ] && up=$IPERF_PORT || up=$BACKEND_PORT
    start_chain "$p" "$up" 0 || return 1
    pids=$(echo $(pids_out) $(pids_in) | tr ' ' ,)
    log "$p: perf record (pids $pids) during $load load, ${DUR}s"
    local cg=(); [ -n "${PROFILE_CALLGRAPH:-}" ] && cg=(--call-graph "$PROFILE_CALLGRAPH")
    timeout $((DUR + 60)) perf record -e cpu-clock -F "${PROFILE_FREQ:-1999}" "${cg[@]}" -o "$d/$p.$load.data" -p "$pids" -- sleep "$DUR" >"$d/$p.$load.record.log" 2>&1 &
    pp=$!; started $pp
    case $load in
      ka)   run_wrk "$p.prof.ka" "http://$LOOP:$OUT_PORT/100b" ;;
      cc)   run_wrk "$p.prof.cc" "http://$LOOP:$OUT_PORT/100b" -H 'Connection: close' ;;
      bulk) run_iperf "$p.prof.bulk" "$OUT_PORT" "$LOADGEN_CPUS" ;;
    esac
    wait $pp 2>/dev/null; unset "LIVE[$pp]"
    {
      echo "# $p, load=$load, outbound pid $OUT_PID, inbound pid $IN_PID"
      perf report -i "$d/$p.$load.data" --stdio --no-children --sort pid,dso,symbol --percent-limit 0.7 2>/dev/null | grep -v '^#' | grep -v '^$'
      if [ -n "${PROFILE_CALLGRAPH:-}" ]; then
        echo "## inclusive (children), by symbol"
        perf report -i "$d/$p.$load.data" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null | grep -v '^#' | grep -v '^$'
      fi
      echo "## by shared object"
      perf report -i "$d/$p.$load.data" --stdio --no-children --sort dso --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$'
    } > "$d/$p.$load.txt"
    stop_chain
  done
  log "$p: profiles in $d/$p.{ka,cc,bulk}.txt"
}

# ------------------------------------------------------------------ smoke verdict
smoke_check() { # PEER -> prints failures; returns non-zero if any path did not move bytes correctly
  local p=$1 bad=()
  [ -z "${R[$p.failed]:-}" ] || { echo "$p: did not start"; return 1; }
  [ "$(v $p.path_ok)" = yes ] || bad+=("100-byte body through the path: $(v $p.path_ok)")
  [ "$(v $p.mtls)" = enforced ] || bad+=("inbound mTLS not enforced: $(v $p.mtls)")
  awk -v a=$(v $p.fr.achieved_rps) 'BEGIN{exit !(a+0 > 0)}' || bad+=("fixed-rate: no responses")
  [ "$(v $p.fr.errors)" = 0 ] || bad+=("fixed-rate: $(v $p.fr.errors) errors")
  local k ks=(ka cc ccr) all=1
  busypoll_peer "$p" && { ks=(ka); all=0; }   # sections 1-2 only
  for k in "${ks[@]}"; do
    [ "${PEER_KIND[$p]}" = l7 ] && [ $k = ccr ] && continue
    awk -v a=$(v $p.$k.reqs) 'BEGIN{exit !(a+0 > 0)}' || bad+=("$k: no requests completed")
    [ "$(v $p.$k.errs)" = 0 ] || bad+=("$k: $(v $p.$k.errs) wrk errors / non-2xx")
  done
  if [ $all = 1 ]; then
    [ "$(v $p.hold.held)" = "$(v $p.hold.asked)" ] || bad+=("held $(v $p.hold.held) of $(v $p.hold.asked) connections")
    awk -v a=$(v $p.curl.bytes) 'BEGIN{exit !(a+0 > 0)}' || bad+=("curl download moved no bytes")
  fi
  if [ $all = 1 ] && [ "${PEER_KIND[$p]}" = l4 ]; then
    awk -v a=$(v $p.iperf.bytes) 'BEGIN{exit !(a+0 > 0)}' || bad+=("iperf3 client->server moved no bytes")
    awk -v a=$(v $p.iperfR.bytes) 'BEGIN{exit !(a+0 > 0)}' || bad+=("iperf3 server->client moved no bytes")
  fi
  if [[ "$p" == *-accel ]]; then   # the accelerator really moved bytes on the plain hops
    awk '/accel.stopped/{for(i=1;i<=NF;i++) if($i ~ /^redirected_bytes=/){split($i,a,"="); t+=a[2]}} END{exit !(t>0)}' \
      "$WORK/peers/$p"/*/*/accel.log 2>/dev/null || bad+=("seam-accel redirected no bytes (see $WORK/peers/$p/*/*/accel.log)")
  fi
  [ ${#bad[@]} -eq 0 ] && return 0
  printf "$p: %s\n" "${bad[@]}"
  return 1
}

# ------------------------------------------------------------------ report
v() { local x=${R[$1]:-}; [ -n "$x" ] && echo "$x" || echo "-"; }
f0() { awk -v x="$1" 'BEGIN{ if (x=="-"||x=="") print "-"; else printf "%.0f", x }'; }
mb() { awk -v x="$1" 'BEGIN{ if (x=="-"||x==""||x==0) print "-"; else printf "%.1f", x/1024 }'; }
sub_us() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="-"||b=="-"||a==""||b=="") print "-"; else printf "%+.0f", a-b }'; }
cpu_per_gb() { awk -v c="$1" -v b="$2" 'BEGIN{ if (b>0 && c!="-") printf "%.2f", c/(b/1e9); else print "-" }'; }

# ------------------------------------------------------------------ ratios: seam / best peer
# best PEERS... KEY hi|lo -> "value peer" of the best non-seam L4 peer (same job) or "- -"
best_of() {
  local key=$1 dir=$2 p bv="-" bp="-" x
  for p in "${RUN_PEERS[@]}"; do
    [ "$p" = seam ] && continue; [ "$p" = seam-mux ] && continue; [ "${PEER_KIND[$p]}" = l4 ] || continue
    [[ "$p" == *-accel ]] && continue   # peers as shipped: no sockmap accelerator
    busypoll_peer "$p" && continue       # ... and in their default mode
    [ -z "${R[$p.failed]:-}" ] || continue
    x=$(v $p.$key); [[ "$x" =~ ^-?[0-9.]+$ ]] || continue
    if [ "$bv" = "-" ] || awk -v x=$x -v b=$bv -v d=$dir 'BEGIN{exit !((d=="hi" && x>b) || (d=="lo" && x<b))}'; then bv=$x; bp=$p; fi
  done
  echo "$bv $bp"
}
# ratio_row LABEL KEY hi|lo BAR GOAL [FIXED_PEER]: one row of the ratio table
ratio_row() {
  local label=$1 key=$2 dir=$3 bar=$4 goal=$5 fixed=${6:-} sv bv bp ratio verdict tgt
  sv=$(v $SUBJ.$key)
  if [ -n "$fixed" ]; then bv=$(v $fixed.$key); bp=$fixed; else read -r bv bp <<<"$(best_of "$key" "$dir")"; fi
  if [ "$key" = ccr.rps ] && [ -n "${R[$SUBJ.ccr.noresume]:-}" ]; then sv="n/a ($SUBJ did not resume)"; fi
  ratio=$(awk -v s="$sv" -v b="$bv" 'BEGIN{ if (s !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/ || b+0 <= 0 || s+0 < 0) print "-"; else printf "%.2f", s/b }')
  [ "$dir" = hi ] && tgt="≥ ${bar}× (goal ${goal}×)" || tgt="≤ ${bar}× (goal ${goal}×)"
  [ "$goal" = - ] && tgt=${tgt% (goal*}
  [ "$bar" = - ] && tgt="- (lower is better)"
  [ "$bar" = - ] && [ "$dir" = hi ] && tgt="- (higher is better)"
  verdict=$(awk -v r="$ratio" -v d=$dir -v bar=$bar -v g=$goal 'BEGIN{
      if (r == "-" || bar == "-") { print "-"; exit }
      if (d=="hi") { if (g!="-" && r>=g) print "goal"; else if (r>=bar) print "pass"; else print "FAIL" }
      else         { if (g!="-" && r<=g) print "goal"; else if (r<=bar) print "pass"; else print "FAIL" } }')
  # keep-alive: the bar is 1.3x the best peer or 90 % of the direct rate, whichever is lower
  if [ "$key" = ka.rps ] && [ "$verdict" = FAIL ] && [ "$(v base.ka.rps)" != - ]; then
    awk -v s="$sv" -v d=$(v base.ka.rps) 'BEGIN{exit !(s >= 0.9*d)}' && verdict="pass (≥ 90 % of direct)"
  fi
  echo "| $label | $sv | $bv ($bp) | $ratio | $tgt | $verdict |"
}
SUBJ=seam   # whose numbers ratio_row compares (seam, or seam-accel)
ratio_table() { # [SUBJECT]
  SUBJ=${1:-seam}
  echo "| metric | $SUBJ | best peer | $SUBJ / best | target | verdict |"
  echo "|---|---|---|---|---|---|"
  ratio_row "keep-alive req/s (wrk -c$CONNS)"            ka.rps      hi 1.3  2
  ratio_row "keep-alive CPU s per 1k req (pair)"        ka.pair     lo 0.75 0.5
  ratio_row "added p50 us at $RATE rps"                 fr.add50    lo 0.75 -
  ratio_row "added p90 us at $RATE rps"                 fr.add90    lo 0.75 -
  if [ "$SUBJ" = seam-mux ]; then   # no handshake per connection: not the issue's handshake job
  ratio_row "new conn/s, TLS resumption off (streams: no handshake)" cc.rps hi - -
  ratio_row "CPU ms per new conn (pair)"                cc.ms_pair  lo -    -
  else
  ratio_row "new mTLS conn/s, full handshake"           cc.rps      hi 1.5  2.5
  ratio_row "CPU ms per new conn, full (pair)"          cc.ms_pair  lo -    -
  ratio_row "new conn/s, resumption allowed"            ccr.rps     hi 2.5  4
  ratio_row "CPU ms per new conn, resumed (pair)"       ccr.ms_pair lo -    -
  fi
  ratio_row "iperf3 client->server Gbit/s"              iperf.gbps  hi 1.5  2
  ratio_row "iperf3 server->client Gbit/s"              iperfR.gbps hi 1.5  2
  ratio_row "curl download Gbit/s"                      curl.gbps   hi 1.5  2
  ratio_row "CPU s/GB iperf3 c->s (pair)"               iperf.sgb_pair  lo 0.6 0.5
  ratio_row "CPU s/GB iperf3 s->c (pair)"               iperfR.sgb_pair lo 0.6 0.5
  ratio_row "CPU s/GB curl download (pair)"             curl.sgb_pair   lo 0.6 0.5
  if [ -n "${PEER_KIND[haproxy]:-}" ] && [[ " ${RUN_PEERS[*]} " == *" haproxy "* ]]; then
    ratio_row "idle RSS KiB (out+in) vs haproxy"        rss0_pair   lo 0.5 - haproxy
  fi
  ratio_row "KiB per held idle conn ($(v $SUBJ.hold.held) held, worst proxy)" hold.kb_max lo - -
  [ "$HOLD_BIG" -gt 0 ] && ratio_row "KiB per held idle conn ($(v $SUBJ.holdbig.held) held, worst proxy)" holdbig.kb_max lo - -
  echo
  echo "Absolute bar for memory: ≤ 8 KiB per held idle connection per proxy ($SUBJ: $(v $SUBJ.hold.kb_out)/$(v $SUBJ.hold.kb_in) out/in at $(v $SUBJ.hold.held), $(v $SUBJ.holdbig.kb_out)/$(v $SUBJ.holdbig.kb_in) at $(v $SUBJ.holdbig.held))."
  echo "Best peer = best L4 peer of this run doing the same job, as shipped (haproxy-l7 pools upstream mTLS and is excluded; *-accel rows run under seam's accelerator and *-busypoll rows in a polling mode, seam-mux multiplexes: all excluded). 'goal' = the issue's goal reached, 'pass' = the bar reached."
  SUBJ=seam
}
# accel_table: seam-accel against haproxy under the same accelerator (like for like)
accel_table() {
  SUBJ=seam-accel
  echo "| metric | seam-accel | haproxy-accel | seam-accel / haproxy-accel | issue bar | verdict vs the bar |"
  echo "|---|---|---|---|---|---|"
  ratio_row "keep-alive req/s (wrk -c$CONNS)"      ka.rps      hi 1.3  2   haproxy-accel
  ratio_row "keep-alive CPU s per 1k req (pair)"  ka.pair     lo 0.75 0.5 haproxy-accel
  ratio_row "added p50 us at $RATE rps"           fr.add50    lo 0.75 -   haproxy-accel
  ratio_row "added p90 us at $RATE rps"           fr.add90    lo 0.75 -   haproxy-accel
  ratio_row "iperf3 client->server Gbit/s"        iperf.gbps  hi 1.5  2   haproxy-accel
  ratio_row "iperf3 server->client Gbit/s"        iperfR.gbps hi 1.5  2   haproxy-accel
  ratio_row "curl download Gbit/s"                curl.gbps   hi 1.5  2   haproxy-accel
  ratio_row "CPU s/GB curl download (pair)"       curl.sgb_pair lo 0.6 0.5 haproxy-accel
  SUBJ=seam
}

# busypoll_table [FIXED_PEER [SUBJECT]]: seam-busypoll's (or SUBJECT's) latency-mode rows
# against the best peer as shipped, or against FIXED_PEER (haproxy-busypoll: like for like)
busypoll_table() {
  local fixed=${1:-} col=${1:-best peer}
  SUBJ=${2:-seam-busypoll}
  echo "| metric | $SUBJ | $col | $SUBJ / ${1:-best} | issue bar | verdict vs the bar |"
  echo "|---|---|---|---|---|---|"
  ratio_row "added p50 us at $RATE rps"                   fr.add50 lo 0.75 -   $fixed
  ratio_row "added p90 us at $RATE rps"                   fr.add90 lo 0.75 -   $fixed
  ratio_row "CPU s per 1k req at $RATE rps (pair)"        fr.pair  lo -    -   $fixed
  ratio_row "keep-alive req/s (wrk -c$CONNS)"             ka.rps   hi 1.3  2   $fixed
  ratio_row "keep-alive CPU s per 1k req (pair)"          ka.pair  lo 0.75 0.5 $fixed
  SUBJ=seam
}

report() {
  local p peers=("$@")
  {
  if [ "$SMOKE" = 1 ]; then echo "# seam bench smoke run (not a measurement)"; else echo "# seam bench results"; fi
  echo
  echo "Generated by \`$CMDLINE\` — regenerated by that command, never edited by hand. Raw outputs: bench/raw/."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: kernel $(uname -r), nproc $(nproc), CPU $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, open-file limit $(ulimit -n), TCP congestion control default $(cat /proc/sys/net/ipv4/tcp_congestion_control 2> /dev/null || echo unknown) (the peers' sockets use it; seam's loopback sockets get reno when it is bbr: \`--loopback-cc auto\` — here all of the pair's, the proxy-to-proxy hop included, which a cluster routes over the network: NOTES §10.2)"
  echo "- versions: $(wants seam && seam_note)${SEAM_BIN:+; }$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $(openssl version | cut -d' ' -f1-2); BoringSSL: $(dpkg-query -W -f='${Package} ${Version}' android-libboringssl 2>/dev/null); wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}'); $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
  echo "- pinning: both proxies (outbound+inbound) on CPU $PROXY_CPUS; wrk/ratebench/curl/iperf3 + backend nginx on CPU $LOADGEN_CPUS"
  echo "- TLS: 1.3 only, $TLS_CIPHERSUITE for the peers (seam: BoringSSL's TLS 1.3 default order, AES-128-GCM first on AES-NI), ECDSA P-256 keys from tests/certs/gen.sh, URI SAN spiffe://cluster.local/ns/default/sa/{client,server} + DNS SAN; client cert required+verified on inbound; seam also checks the SPIFFE IDs (outbound --peer-id, inbound --allow $ALLOW_ID), the peers check chain + DNS name only"
  echo "- knobs: DUR=${DUR}s REPS=$REPS (rounds: each round runs every test once for every peer, in turn) CONNS=$CONNS RATE=$RATE RATE_CONNS=$RATE_CONNS HOLD_CONNS=$HOLD_CONNS HOLD_BIG=$HOLD_BIG BULK_SECS=${BULK_SECS}s WAIT_IDLE=${WAIT_IDLE}s FOREIGN_MAX=$FOREIGN_MAX RETRIES=$RETRIES (medians; min-max ranges in brackets); response body 100 B"
  echo "- noise: steal % = hypervisor steal on the proxy core; foreign CPU s = CPU seconds used by processes this harness did not start, during the measurement (total over the run: ${FOREIGN_TOTAL:-0} s). Rows with foreign CPU above ~1 s were measured on a busy machine: rerun them on an idle one."
  echo
  echo "## Ratios: seam / best peer (targets from issue 9)"
  echo
  ratio_table
  echo
  if [[ " ${RUN_PEERS[*]} " == *" seam-accel "* ]]; then
    echo "## Ratios: seam-accel / best peer (seam with its sockmap accelerator, docs/ACCEL.md)"
    echo
    echo "seam-accel = the same seam pair, each proxy with \`seam-accel\` moving the bytes of its plain-text hop (app -> outbound, inbound -> app) socket to socket without the TCP/IP stack; the mTLS hop between the proxies is untouched. It is seam's own optional component (root, cgroup v2); the peers below run as shipped."
    echo
    ratio_table seam-accel
    echo
    if [[ " ${RUN_PEERS[*]} " == *" haproxy-accel "* ]]; then
      echo "Like for like: the accelerator is not seam-specific, so haproxy under the same seam-accel (haproxy-accel) shows how much of the gain is the kernel short cut and how much is seam:"
      echo
      accel_table
      echo
    fi
  fi
  if [[ " ${RUN_PEERS[*]} " == *" seam-mux "* ]] && [ -z "${R[seam-mux.failed]:-}" ]; then
    echo "## Ratios: seam-mux / best peer (seam's opt-in multiplexing, \`--mux\`, docs/MUX.md)"
    echo
    echo "seam-mux = the same seam pair with \`--mux\` on the outbound: every client connection is a stream of one long-lived mTLS session between the proxies (seam-mux/1: 8-byte frames, flow control per stream), so the proxy-to-proxy writes of all connections served in one loop turn leave as one write, and no connection pays a handshake of its own (section 3 measures streams, not handshakes: those rows are not the issue's handshake job). Unprivileged, and it works across hosts. The peers below run as shipped, one mTLS connection per connection."
    echo
    ratio_table seam-mux
    echo
  fi
  if [[ " ${RUN_PEERS[*]} " == *" seam-busypoll "* ]]; then
    echo "## Ratios: seam-busypoll / best peer (seam's opt-in latency mode, \`--busy-poll-us $BUSY_POLL_US\`)"
    echo
    echo "seam-busypoll = the same seam pair with \`--busy-poll-us $BUSY_POLL_US\`: a worker that forwarded a request polls (zero-timeout epoll, yielding the core) instead of sleeping until the answer arrives, at most $BUSY_POLL_US us per request, so the answer does not have to wake a sleeping vCPU. It trades CPU for latency only while answers are due; the 'CPU s per 1k req at $RATE rps' row is that price. Sections 1-2 only (the other sections would measure plain seam again). The peers below run as shipped."
    echo
    busypoll_table
    echo
    if [[ " ${RUN_PEERS[*]} " == *" haproxy-busypoll "* ]]; then
      echo "Like for like: haproxy has a busy-polling mode too (\`busy-polling\` in global: every poll with a zero timeout, all the time):"
      echo
      busypoll_table haproxy-busypoll
      echo
    fi
  fi
  if [[ " ${RUN_PEERS[*]} " == *" seam-mux-busypoll "* ]] && [ -z "${R[seam-mux-busypoll.failed]:-}" ]; then
      echo "## Ratios: seam-mux-busypoll / best peer (two unprivileged opt-ins)"
      echo
      echo "seam-mux-busypoll: \`--mux\` on the outbound and \`--busy-poll-us $BUSY_POLL_US\` on both proxies (no root needed), against the best peer as shipped:"
      echo
      busypoll_table "" seam-mux-busypoll
      echo
  fi
  if [[ " ${RUN_PEERS[*]} " == *" seam-accel-busypoll "* ]] && [ -z "${R[seam-accel-busypoll.failed]:-}" ]; then
      echo "## Ratios: seam-accel-busypoll / best peer (both opt-ins)"
      echo
      echo "Both opt-ins together (seam-accel-busypoll: seam-accel on the plain-text hops and \`--busy-poll-us $BUSY_POLL_US\`; root and cgroup v2 for the accelerator), against the best peer as shipped:"
      echo
      busypoll_table "" seam-accel-busypoll
      echo
  fi
  echo "## Peers"
  echo
  echo "| peer | kind | setting | procs out/in | threads out/in (idle) | mTLS check | suite | path |"
  echo "|---|---|---|---|---|---|---|---|"
  for p in "${peers[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && { echo "| $p | ${PEER_KIND[$p]} | FAILED TO START (logs: bench/work/peers/$p/) | | | | | |"; continue; }
    echo "| $p | ${PEER_KIND[$p]} | ${PEER_NOTE[$p]} | $(v $p.procs_out)/$(v $p.procs_in) | $(v $p.threads_out)/$(v $p.threads_in) | $(v $p.mtls) | $(v $p.suite) | $(v $p.path_ok) |"
  done
  echo
  echo "## 1. Fixed rate: $RATE rps over $RATE_CONNS keep-alive conns (open loop, latency from the intended send time)"
  echo
  echo "| path | achieved rps | p50 us (range) | p90 us | p99 us (range) | p99.9 us | added p50/p90/p99 us vs direct | CPU s/1k req out | in | pair | errors | steal % | foreign CPU s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  if [ "$DO_BASELINE" = 1 ]; then
    echo "| direct (no proxy), client+backend same core | $(f0 $(v base.fr.achieved_rps)) | $(f0 $(v base.fr.p50_us)) ($(v base.fr.p50_range)) | $(f0 $(v base.fr.p90_us)) | $(f0 $(v base.fr.p99_us)) ($(v base.fr.p99_range)) | $(f0 $(v base.fr.p999_us)) | 0 | - | - | - | $(v base.fr.errors) | $(v base.fr.steal) | $(v base.fr.foreign) |"
    echo "| direct (no proxy), client on the proxy core | $(f0 $(v base.frx.achieved_rps)) | $(f0 $(v base.frx.p50_us)) ($(v base.frx.p50_range)) | $(f0 $(v base.frx.p90_us)) | $(f0 $(v base.frx.p99_us)) ($(v base.frx.p99_range)) | $(f0 $(v base.frx.p999_us)) | $(sub_us $(v base.frx.p50_us) $(v base.fr.p50_us))/$(sub_us $(v base.frx.p90_us) $(v base.fr.p90_us))/$(sub_us $(v base.frx.p99_us) $(v base.fr.p99_us)) | - | - | - | $(v base.frx.errors) | $(v base.frx.steal) | $(v base.frx.foreign) |"
  fi
  for p in "${peers[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && continue
    local n o i; n=$(awk -v r=$(v $p.fr.achieved_rps) -v d=$DUR 'BEGIN{print r*(d+1)}')   # CPU window of one round = 1 s warm-up + DUR
    o=$(per1k $(v $p.fr.cpu_out) $n); i=$(per1k $(v $p.fr.cpu_in) $n)
    echo "| $p | $(f0 $(v $p.fr.achieved_rps)) | $(f0 $(v $p.fr.p50_us)) ($(v $p.fr.p50_range)) | $(f0 $(v $p.fr.p90_us)) | $(f0 $(v $p.fr.p99_us)) ($(v $p.fr.p99_range)) | $(f0 $(v $p.fr.p999_us)) | $(v $p.fr.add50)/$(v $p.fr.add90)/$(v $p.fr.add99) | $o | $i | $(awk -v a=$o -v b=$i 'BEGIN{if(a=="n/a")print "-"; else printf "%.3f",a+b}') | $(v $p.fr.errors) | $(v $p.fr.steal) | $(v $p.fr.foreign) |"
  done
  echo
  echo "## 2. Keep-alive saturation: wrk -t1 -c$CONNS -d${DUR}s, 100-byte responses (closed loop; latency includes queueing)"
  echo
  echo "| path | req/s (range) | p50 us | p90 us | p99 us | errors | proxy cores busy (out+in) | CPU s/1k req out | in | pair | steal % | foreign CPU s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  if [ "$DO_BASELINE" = 1 ]; then
    echo "| direct (no proxy) | $(v base.ka.rps) ($(v base.ka.rps_range)) | $(f0 $(v base.ka.p50)) | $(f0 $(v base.ka.p90)) | $(f0 $(v base.ka.p99)) | $(v base.ka.errs) | - | - | - | - | $(v base.ka.steal) | $(v base.ka.foreign) |"
  fi
  for p in "${peers[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && continue
    local o i busy; o=$(per1k $(v $p.ka.cpu_out) $(v $p.ka.reqs)); i=$(per1k $(v $p.ka.cpu_in) $(v $p.ka.reqs))
    busy=$(awk -v a=$(v $p.ka.cpu_out) -v b=$(v $p.ka.cpu_in) -v w=$(v $p.ka.wall) 'BEGIN{ if (w>0) printf "%.2f", (a+b)/w; else print "-" }')
    echo "| $p | $(v $p.ka.rps) ($(v $p.ka.rps_range)) | $(f0 $(v $p.ka.p50)) | $(f0 $(v $p.ka.p90)) | $(f0 $(v $p.ka.p99)) | $(v $p.ka.errs) | $busy | $o | $i | $(v $p.ka.pair) | $(v $p.ka.steal) | $(v $p.ka.foreign) |"
  done
  echo
  echo "## 3. New TCP + mTLS connection per request: wrk -t1 -c$CONNS -d${DUR}s -H 'Connection: close'"
  echo
  echo "| path | TLS resumption | conn/s (range) | p50 us | p99 us | errors | proxy cores busy | CPU ms per conn out | in | pair | inbound resumed an s_client session? | foreign CPU s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  if [ "$DO_BASELINE" = 1 ]; then
    echo "| direct (no proxy, plain TCP) | - | $(v base.cc.rps) ($(v base.cc.rps_range)) | $(f0 $(v base.cc.p50)) | $(f0 $(v base.cc.p99)) | $(v base.cc.errs) | - | - | - | - | - | $(v base.cc.foreign) |"
  fi
  for p in "${peers[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && continue
    local k lab res
    for k in cc ccr; do
      [ -n "${R[$p.$k.rps]:-}" ] || continue
      [ $k = cc ] && { lab="off (full handshake)"; res=$(v $p.in_resumes); } || { lab="allowed"; res=$(v $p.in_resumes_r1); }
      [ "${PEER_KIND[$p]}" = l7 ] && lab="n/a: upstream mTLS pooled (L7)"
      [ "$p" = seam-mux ] && lab="$lab; n/a: streams of one session, no handshake per conn"
      [ $k = ccr ] && [ -n "${R[$p.ccr.noresume]:-}" ] && lab="allowed, but not supported: full handshakes (n/a)"
      local busy; busy=$(awk -v a=$(v $p.$k.cpu_out) -v b=$(v $p.$k.cpu_in) -v w=$(v $p.$k.wall) 'BEGIN{ if (w>0) printf "%.2f", (a+b)/w; else print "-" }')
      [ "$res" = 1 ] && res=yes || res=no
      echo "| $p | $lab | $(v $p.$k.rps) ($(v $p.$k.rps_range)) | $(f0 $(v $p.$k.p50)) | $(f0 $(v $p.$k.p99)) | $(v $p.$k.errs) | $busy | $(per1k $(v $p.$k.cpu_out) $(v $p.$k.reqs)) | $(per1k $(v $p.$k.cpu_in) $(v $p.$k.reqs)) | $(v $p.$k.ms_pair) | $res | $(v $p.$k.foreign) |"
    done
  done
  echo
  echo "## 4. Bulk throughput: one connection, ${BULK_SECS}s per run, median of $REPS rounds"
  echo
  echo "| path | iperf3 client->server Gbit/s (range) | CPU s/GB out | in | iperf3 server->client (-R) Gbit/s (range) | CPU s/GB out | in | curl download Gbit/s (range) | CPU s/GB out | in | foreign CPU s (c->s/s->c/curl) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  if [ "$DO_BASELINE" = 1 ]; then
    echo "| direct (no proxy) | $(v phys.iperf_1core.gbps) (1 core) / $(v phys.iperf_2core.gbps) (2 cores) | - | - | - | - | - | $(v base.bulk.gbps) ($(v base.bulk.gbps_range)) | - | - | -/-/$(v base.bulk.foreign) |"
  fi
  for p in "${peers[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && continue; busypoll_peer "$p" && continue
    echo "| $p | $(v $p.iperf.gbps) ($(v $p.iperf.gbps_range)) | $(cpu_per_gb $(v $p.iperf.cpu_out) $(v $p.iperf.bytes)) | $(cpu_per_gb $(v $p.iperf.cpu_in) $(v $p.iperf.bytes)) | $(v $p.iperfR.gbps) ($(v $p.iperfR.gbps_range)) | $(cpu_per_gb $(v $p.iperfR.cpu_out) $(v $p.iperfR.bytes)) | $(cpu_per_gb $(v $p.iperfR.cpu_in) $(v $p.iperfR.bytes)) | $(v $p.curl.gbps) ($(v $p.curl.gbps_range)) | $(cpu_per_gb $(v $p.curl.cpu_out) $(v $p.curl.bytes)) | $(cpu_per_gb $(v $p.curl.cpu_in) $(v $p.curl.bytes)) | $(v $p.iperf.foreign)/$(v $p.iperfR.foreign)/$(v $p.curl.foreign) |"
  done
  echo
  echo "## 5. Memory (sum over the proxy's processes; includes shared-library pages)"
  echo
  echo "| peer | RSS idle MiB out/in | VmHWM after keep-alive ($CONNS conns) MiB out/in | KiB per held idle conn out/in ($HOLD_CONNS asked; held) | KiB per held idle conn out/in ($HOLD_BIG asked, capped by fds; held) | threads out/in while holding | VmHWM whole run MiB out/in |"
  echo "|---|---|---|---|---|---|---|"
  for p in "${peers[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && continue; busypoll_peer "$p" && continue
    echo "| $p | $(mb $(v $p.rss0_out))/$(mb $(v $p.rss0_in)) | $(mb $(v $p.hwm_ka_out))/$(mb $(v $p.hwm_ka_in)) | $(v $p.hold.kb_out)/$(v $p.hold.kb_in) ($(v $p.hold.held)) | $(v $p.holdbig.kb_out)/$(v $p.holdbig.kb_in) ($(v $p.holdbig.held)) | $(v $p.holdbig.threads_out)/$(v $p.holdbig.threads_in) | $(mb $(v $p.hwm_out))/$(mb $(v $p.hwm_in)) |"
  done
  if [ "$DO_SPEED" = 1 ]; then
    echo
    echo "## 6. Physical limits of this machine (one core, CPU $PROXY_CPUS)"
    echo
    echo "| measure | OpenSSL $(openssl version | cut -d' ' -f2) | BoringSSL (seam's, tools/bsslspeed.c) |"
    echo "|---|---|---|"
    echo "| AES-128-GCM 16 KiB / 1 KiB blocks, GB/s | $(v phys.aes_16k) / $(v phys.aes_1k) | $(v phys.bssl.aes128gcm_16k_gbs) / $(v phys.bssl.aes128gcm_1k_gbs) |"
    echo "| ChaCha20-Poly1305 16 KiB / 1 KiB blocks, GB/s | $(v phys.chacha_16k) / $(v phys.chacha_1k) | - |"
    echo "| ECDSA P-256 sign / verify, ops/s | $(v phys.ecdsa_sign) / $(v phys.ecdsa_verify) | $(v phys.bssl.ecdsa_p256_sign) / $(v phys.bssl.ecdsa_p256_verify) |"
    echo "| X25519, ops/s | $(v phys.x25519) | $(v phys.bssl.x25519) |"
    echo "| TLS 1.3 mTLS handshake in-process (tools/hsbench.c, no sockets), full: client / server CPU us -> pair handshakes/s/core | $(v phys.hsbench.full.client_us) / $(v phys.hsbench.full.server_us) -> $(v phys.hsbench.full.per_core_pair_hs_s) | $(v phys.hsbench-bssl.full.client_us) / $(v phys.hsbench-bssl.full.server_us) -> $(v phys.hsbench-bssl.full.per_core_pair_hs_s) |"
    echo "| same, resumed (PSK+ECDHE): client / server CPU us -> pair handshakes/s/core | $(v phys.hsbench.resume.client_us) / $(v phys.hsbench.resume.server_us) -> $(v phys.hsbench.resume.per_core_pair_hs_s) | $(v phys.hsbench-bssl.resume.client_us) / $(v phys.hsbench-bssl.resume.server_us) -> $(v phys.hsbench-bssl.resume.per_core_pair_hs_s) |"
    echo "| loopback iperf3, client+server on 1 core / on 2 cores, Gbit/s | $(v phys.iperf_1core.gbps) / $(v phys.iperf_2core.gbps) | |"
    echo "| TLS record I/O of one connection, 1 GiB over loopback (tools/biobench.c; sender CPU 1, receiver CPU 0): direct fd (nginx style, SSL_set_fd) vs memory BIO (seam): Gbit/s; CPU s/GB and syscalls/MiB of both ends | - | fd $(v phys.bio.fd_gbits); $(v phys.bio.fd_cpu_s_gb); $(v phys.bio.fd_calls_mib) vs mem $(v phys.bio.mem_gbits); $(v phys.bio.mem_cpu_s_gb); $(v phys.bio.mem_calls_mib) |"
  fi
  echo
  echo "## 7. Mesh mode: the same job behind seam-init's iptables interception"
  echo
  if [ -s "$RAW/mesh.md" ]; then
    echo "Pods are network namespaces joined by a bridge; the client (wrk, ratebench, curl) in pod a calls pod b's IP in plain TCP and seam-init's rules send it through the sidecars (uid 1337): seam as \`seam-sidecar run --workers 1\` with its defaults: certificates and config from seam-control-plane, the destination from SO_ORIGINAL_DST, and one seam-mux/1 session from pod a to pod b carrying every connection (seam-1to1: the same with \`--mux=false\`, one mTLS connection per client connection: the handshake rows); haproxy and nginx with bench/peers.sh's configs on the capture ports (15001 out, 15006 in) and the job's one upstream fixed. Every peer allows TLS resumption. From \`bench/mesh.py\`:"
    echo
    cat "$RAW/mesh.md"
  else
    echo "${MESH_NOTE:-not run}"
  fi
  echo
  echo "## Reading these numbers"
  echo
  echo "- Both proxies of a pair share one pinned core, so req/s and conn/s are 'per core for a sidecar pair'; the load generator and the backend share the other core (compare with the direct rows to see when the load side is the limit; 'proxy cores busy' near 1.0 means the proxies were the bottleneck)."
  echo "- 'pair' CPU = outbound + inbound proxy CPU (utime+stime from /proc) divided by the work done; 'CPU s/1k req' is the same unit as Istio's 'vCPU per 1000 rps'."
  echo "- Section 2 is closed-loop saturation: its latencies are queueing. Section 1 (open loop, fixed rate, no coordinated omission) gives the added latency; its proxied paths cross cores four times per request, the 'client on the proxy core' row shows what cross-core wake-ups cost in this VM."
  echo "- Section 3: one upstream mTLS handshake per downstream connection (L4). 'resumption allowed' is n/a for a proxy whose inbound listener did not resume a session offered by openssl s_client: then both rows are full handshakes."
  echo "- Memory: RSS counts resident user pages incl. shared libraries; kernel socket buffers are not included. KiB per held conn = RSS growth while the idle connections (each with its upstream leg, after one request) are held open. The second hold is capped at (open-file limit - 200) / 2 connections: the outbound proxy needs two descriptors per connection."
  echo "- Compare only within one run: the machine is shared, and every number is 'on this machine, this day'."
  } > "$RESULTS"
}

# ------------------------------------------------------------------ main
rm -rf "$RAW" "$WORK/configs" "$WORK/peers"; mkdir -p "$RAW" "$WORK/configs"

log "cpus=$NCPU loadgen=$LOADGEN_CPUS proxies=$PROXY_CPUS DUR=$DUR REPS=$REPS CONNS=$CONNS RATE=$RATE peers=$ONLY${SEAM_BIN:+ seam=$SEAM_BIN}"
make_pki
start_backend
cp "$WORK/backend/nginx.conf" "$WORK/configs/backend-nginx.conf"
[ "$DO_SPEED" = 1 ] && { wait_idle; physical_limits; }
[ "$DO_BASELINE" = 1 ] && { wait_idle; baseline; }

RUN_PEERS=()
for p in "${PEER_ORDER[@]}"; do
  wants "$p" && RUN_PEERS+=("$p")
done
for p in ${ONLY//,/ }; do
  [ -n "${PEER_KIND[$p]+x}" ] || { echo "unknown peer: $p (known: ${PEER_ORDER[*]})" >&2; exit 2; }
done
if [ "$PROFILE" = 1 ]; then
  for p in "${RUN_PEERS[@]}"; do profile_peer "$p"; done
  exit 0
fi
# Rounds: every peer does one repetition of everything before any peer does the
# next, so noise from the shared machine spreads over all peers alike; the
# report shows per-metric medians over the rounds with min-max ranges.
declare -A RR=()
ROUNDS=$REPS; REPS=1
for ROUND in $(seq 1 "$ROUNDS"); do
  for p in "${RUN_PEERS[@]}"; do
    [ -n "${R[$p.failed]:-}" ] && continue
    wait_idle
    bench_peer "$p"
    for k in "${!R[@]}"; do [[ "$k" == "$p."* ]] && RR["$ROUND|$k"]=${R[$k]}; done
  done
done
merge_rounds
REPS=$ROUNDS

# Section 7: the same job in mesh mode (bench/mesh.py), as root only.
MESH_NOTE=""
rm -f "$RAW/mesh.md"
if [ "$DO_MESH" = 1 ]; then
  MESH_PEERS=""
  # Mesh mode's default is seam-mux/1 (docs/MUX.md): seam-1to1 (--mux=false) is its
  # handshake row, measured whenever seam is.
  for p in seam seam-1to1 haproxy nginx; do
    { wants "$p" || { [ "$p" = seam-1to1 ] && wants seam; }; } && MESH_PEERS="$MESH_PEERS${MESH_PEERS:+,}$p"
  done
  if [ "$(id -u)" != 0 ]; then
    MESH_NOTE="not run: needs root (network namespaces, iptables)"
  elif [ -z "$MESH_PEERS" ]; then
    MESH_NOTE="not run: none of seam, haproxy, nginx selected"
  else
    wait_idle
    mesh_args=(--only "$MESH_PEERS" --dur "$DUR" --reps "$REPS" --bulk-secs "$BULK_SECS")
    [ "$SMOKE" = 1 ] && mesh_args=(--smoke)
    log "mesh mode: python3 bench/mesh.py ${mesh_args[*]}"
    if ! SEAM_BUILD_DIR=$(dirname "$(dirname "${SEAM_BIN:-$REPO/build/sidecar/seam-sidecar}")") \
         PROXY_CPUS=$PROXY_CPUS LOADGEN_CPUS=$LOADGEN_CPUS \
         $PY "$HERE/mesh.py" "${mesh_args[@]}" --out "$RAW/mesh.md" 2> "$RAW/mesh.log"; then
      MESH_NOTE="FAILED: see bench/raw/mesh.log"
      tail -n 20 "$RAW/mesh.log" >&2
      rm -f "$RAW/mesh.md"
    fi
  fi
else
  MESH_NOTE="not run (--no-mesh)"
fi

# bench/rtt.py (a path with a round trip) is not part of the full run; its
# smoke runs here so that it never rots.
RTT_NOTE=""
if [ "$SMOKE" = 1 ] && [ "$(id -u)" = 0 ] && [ "$DO_MESH" = 1 ]; then
  log "round trip: python3 bench/rtt.py --smoke"
  if ! SEAM_BUILD_DIR=$(dirname "$(dirname "${SEAM_BIN:-$REPO/build/sidecar/seam-sidecar}")") \
       PROXY_CPUS=$PROXY_CPUS LOADGEN_CPUS=$LOADGEN_CPUS \
       $PY "$HERE/rtt.py" --smoke --proxy-cpus "$PROXY_CPUS" --loadgen-cpus "$LOADGEN_CPUS" \
       --out "$RAW/rtt.md" > /dev/null 2> "$RAW/rtt.log"; then
    RTT_NOTE="FAILED: see bench/raw/rtt.log"
    tail -n 20 "$RAW/rtt.log" >&2
  fi
fi

report "${RUN_PEERS[@]}"
if [ "$SMOKE" = 1 ]; then
  rc=0
  for p in "${RUN_PEERS[@]}"; do smoke_check "$p" || rc=1; done
  case "$MESH_NOTE" in FAILED*) log "smoke: mesh mode $MESH_NOTE"; rc=1 ;; esac
  case "$RTT_NOTE" in FAILED*) log "smoke: round trip (rtt.py) $RTT_NOTE"; rc=1 ;; esac
  [ $rc = 0 ] && log "smoke: every path moved the right bytes (${RUN_PEERS[*]}); summary in $RESULTS" ||
    log "smoke: FAILED (see above; raw outputs in $RAW, proxy logs in $WORK/peers/)"
  exit $rc
fi
cat "$RESULTS"
[ -z "${R[seam.failed]:-}" ] || { log "seam failed to start: logs in $WORK/peers/seam/"; exit 1; }
exit 0
