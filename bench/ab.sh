#!/usr/bin/env bash
# =============================================================================
# bench/ab.sh - A/B of seam binaries on the bench's two-hop pair, with the
# proxies' user and kernel CPU apart (bench/NOTES.md quotes it).
#
#   bash bench/ab.sh BIN_A BIN_B [BIN_C ...]
#
# The same job as bench/run.sh: client --plain--> outbound seam --mTLS-->
# inbound seam --plain--> backend (nginx 100 B response, or iperf3), both
# proxies pinned to CPU $PROXY_CPUS (1), load generator and backend to
# $LOADGEN_CPUS (0); --workers 1 each; TLS resumption on (seam's default).
# Binaries run in turn, REPS rounds (A B A B ...), so machine noise hits all.
# Per binary and round:
#   ka     wrk -t1 -c50 -dDUR keep-alive: req/s, pair user/kernel us per request
#   cc     wrk -t1 -c50 -dDUR 'Connection: close': conn/s, pair CPU ms per conn
#   up/dn  iperf3 -tDUR client->server / -R: Gbit/s, pair user/kernel s per GB
# Then the median of each column per binary. Knobs: DUR=5 REPS=2.
# Loopback only; ports below the ephemeral range; every process started is
# stopped by its PID.
# =============================================================================
set -uo pipefail
export LC_ALL=C
[ $# -ge 1 ] || { sed -n '2,/^# =====/p' "$0"; exit 2; }
for b in "$@"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
DUR=${DUR:-5}
REPS=${REPS:-2}
PROXY_CPUS=${PROXY_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
for t in wrk iperf3 nginx taskset python3; do
  command -v $t > /dev/null || { echo "ab.sh needs $t (bash scripts/deps.sh)" >&2; exit 2; }
done
W=$(mktemp -d /tmp/seam-ab.XXXXXX)
declare -a PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
  wait 2> /dev/null
  rm -rf "$W"
}
trap cleanup EXIT

# Ports in 20000-30999 (below Linux's ephemeral range: no clash with the
# thousands of client ports the new-connection test uses up).
port() { python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 30999); s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: s.close()'; }
BACK=$(port); IPERF=$(port); IN=$(port); OUT=$(port)

bash "$REPO/tests/certs/gen.sh" "$W/pki" > /dev/null 2>&1 || { echo "gen.sh failed" >&2; exit 1; }
mkdir -p "$W/ng"
cat > "$W/ng/nginx.conf" << EOF
worker_processes 1;
daemon off;
pid $W/ng/nginx.pid;
error_log $W/ng/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; tcp_nodelay on; keepalive_requests 100000000;
  client_body_temp_path $W/ng; proxy_temp_path $W/ng; fastcgi_temp_path $W/ng;
  uwsgi_temp_path $W/ng; scgi_temp_path $W/ng;
  server {
    listen 127.0.0.1:$BACK backlog=4096;
    location = /100b { default_type text/plain; return 200 "$(printf 'x%.0s' $(seq 100))"; }
  }
}
EOF
taskset -c "$LOADGEN_CPUS" nginx -c "$W/ng/nginx.conf" > "$W/ng/out.log" 2>&1 & PIDS+=($!)
taskset -c "$LOADGEN_CPUS" iperf3 -s -p "$IPERF" > "$W/iperf.log" 2>&1 & PIDS+=($!)

wait_port() { # PORT: up to 10 s
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2> /dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}
ticks() { awk -v f="$1" '{s += $f} END {print s}' /proc/"$2"/stat /proc/"$3"/stat; }

PAIR=()
start_pair() { # BIN TARGET_PORT
  local bin=$1 target=$2 P=$W/pki
  taskset -c "$PROXY_CPUS" "$bin" tunnel inbound --listen 127.0.0.1:$IN --target 127.0.0.1:$target \
    --cert $P/server.pem --key $P/server.key --trust $P/ca.pem \
    --allow 'spiffe://cluster.local/ns/default/*' --workers 1 --log-level warn > "$W/in.log" 2>&1 &
  PAIR=($!)
  taskset -c "$PROXY_CPUS" "$bin" tunnel outbound --listen 127.0.0.1:$OUT --target 127.0.0.1:$IN \
    --cert $P/client.pem --key $P/client.key --trust $P/ca.pem \
    --peer-id spiffe://cluster.local/ns/default/sa/server --workers 1 --log-level warn > "$W/out.log" 2>&1 &
  PAIR+=($!)
  PIDS+=("${PAIR[@]}")
  wait_port $IN && wait_port $OUT
}
stop_pair() { kill "${PAIR[@]}" 2> /dev/null; wait "${PAIR[@]}" 2> /dev/null; PAIR=(); sleep 0.5; }

# run_wrk EXTRA... -> "rate user_ticks sys_ticks"
run_wrk() {
  local u0 s0 r
  u0=$(ticks 14 "${PAIR[@]}"); s0=$(ticks 15 "${PAIR[@]}")
  r=$(taskset -c "$LOADGEN_CPUS" wrk -t1 -c50 -d${DUR}s "$@" http://127.0.0.1:$OUT/100b |
      awk '/Requests\/sec/ {print $2}')
  echo "${r:-0} $(( $(ticks 14 "${PAIR[@]}") - u0 )) $(( $(ticks 15 "${PAIR[@]}") - s0 ))"
}
# run_iperf EXTRA... -> "bytes user_ticks sys_ticks"
run_iperf() {
  local u0 s0 b
  u0=$(ticks 14 "${PAIR[@]}"); s0=$(ticks 15 "${PAIR[@]}")
  b=$(taskset -c "$LOADGEN_CPUS" iperf3 -c 127.0.0.1 -p $OUT -t $DUR -J "$@" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bytes"])' 2> /dev/null)
  echo "${b:-0} $(( $(ticks 14 "${PAIR[@]}") - u0 )) $(( $(ticks 15 "${PAIR[@]}") - s0 ))"
}

HZ=$(getconf CLK_TCK)
ROWS=$W/rows.txt
: > "$ROWS"
echo "A/B on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), DUR=${DUR}s REPS=$REPS" >&2
for rep in $(seq "$REPS"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    start_pair "$bin" "$BACK" || exit 1
    ka=$(run_wrk); cc=$(run_wrk -H 'Connection: close')
    stop_pair
    start_pair "$bin" "$IPERF" || exit 1
    up=$(run_iperf); dn=$(run_iperf -R)
    stop_pair
    echo "$i $rep $ka $cc $up $dn" >> "$ROWS"
    echo "[$(date +%H:%M:%S)] binary $i round $rep done" >&2
  done
done

python3 - "$ROWS" "$HZ" "$DUR" "$@" << 'EOF'
import statistics, sys
rows, hz, dur, bins = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
data = {}
for line in open(rows):
    f = line.split()
    i = int(f[0]); v = [float(x) for x in f[2:]]
    ka_r, ka_u, ka_s, cc_r, cc_u, cc_s, up_b, up_u, up_s, dn_b, dn_u, dn_s = v
    ka_n = ka_r * dur; cc_n = cc_r * dur
    row = {
        "ka req/s": ka_r,
        "ka user us/req": ka_u / hz * 1e6 / ka_n if ka_n else 0,
        "ka kernel us/req": ka_s / hz * 1e6 / ka_n if ka_n else 0,
        "cc conn/s": cc_r,
        "cc CPU ms/conn": (cc_u + cc_s) / hz * 1e3 / cc_n if cc_n else 0,
        "up Gbit/s": up_b * 8 / dur / 1e9,
        "up user s/GB": up_u / hz / (up_b / 1e9) if up_b else 0,
        "up kernel s/GB": up_s / hz / (up_b / 1e9) if up_b else 0,
        "dn Gbit/s": dn_b * 8 / dur / 1e9,
        "dn user s/GB": dn_u / hz / (dn_b / 1e9) if dn_b else 0,
        "dn kernel s/GB": dn_s / hz / (dn_b / 1e9) if dn_b else 0,
    }
    data.setdefault(i, []).append(row)
cols = list(next(iter(data.values()))[0].keys())
print("| binary | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for i, b in enumerate(bins, 1):
    rs = data.get(i, [])
    cells = []
    for c in cols:
        vals = [r[c] for r in rs]
        fmt = (lambda x: "%.0f" % x) if vals and max(vals) >= 100 else (lambda x: "%.3g" % x)
        cells.append("%s (%s-%s)" % (fmt(statistics.median(vals)), fmt(min(vals)), fmt(max(vals)))
                     if vals else "-")
    print("| %s | %s |" % (b, " | ".join(cells)))
print("\nmedian (min-max) of %d rounds; pair = outbound + inbound proxy CPU" % len(next(iter(data.values()))))
EOF
