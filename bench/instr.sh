#!/usr/bin/env bash
# =============================================================================
# bench/instr.sh - user-space instructions each proxy of the bench's pair
# executes to move a fixed number of bytes, counted by callgrind: repeatable
# whatever else the machine does (bench/NOTES.md §12 quotes it).
#
#   bash bench/instr.sh BIN MIB [outbound flags...]
#
# client --plain--> outbound BIN --mTLS--> inbound BIN --plain--> sink/source:
# one connection uploads MIB MiB (the backend counts them), a second one
# downloads MIB MiB; then both proxies stop and callgrind's totals are printed
# per proxy: all instructions (Ir) and those in libc's memcpy/memmove (one per
# byte copied: valgrind counts each step of `rep movsb`). Outbound flags, e.g.
# --mux, go after MIB. Loopback only; every process started is stopped by PID.
# =============================================================================
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,/^# =====/p' "$0"; exit 2; }
BIN=$1
MIB=$2
shift 2
[ -x "$BIN" ] || { echo "not an executable: $BIN" >&2; exit 2; }
command -v valgrind > /dev/null && command -v callgrind_annotate > /dev/null ||
  { echo "instr.sh needs valgrind (bash scripts/deps.sh)" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/seam-instr.XXXXXX)
declare -a PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
  wait 2> /dev/null
  rm -rf "$W"
}
trap cleanup EXIT
bash "$REPO/tests/certs/gen.sh" "$W/pki" > /dev/null 2>&1 || { echo "gen.sh failed" >&2; exit 1; }
P=$W/pki
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BACK=$(port); IN=$(port); OUT=$(port)

# The backend: the first connection is a sink, the second a source.
python3 - "$BACK" "$MIB" > "$W/back.log" 2>&1 << 'EOF' &
import socket, sys
port, mib = int(sys.argv[1]), int(sys.argv[2])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(4)
c, _ = l.accept()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b)
c.close()
print("sink got", n, flush=True)
c, _ = l.accept()
blk = b"x" * (1 << 20)
for _ in range(mib):
    c.sendall(blk)
c.shutdown(socket.SHUT_WR)
while c.recv(65536):
    pass
c.close()
EOF
PIDS+=($!)
VG=(valgrind --tool=callgrind --dump-instr=no)
"${VG[@]}" --callgrind-out-file="$W/cg.in" "$BIN" tunnel inbound --listen 127.0.0.1:$IN \
  --target 127.0.0.1:$BACK --cert $P/server.pem --key $P/server.key --trust $P/ca.pem \
  --allow 'spiffe://cluster.local/ns/default/*' --workers 1 --log-level warn > "$W/in.log" 2>&1 &
PIDS+=($!)
"${VG[@]}" --callgrind-out-file="$W/cg.out" "$BIN" tunnel outbound --listen 127.0.0.1:$OUT \
  --target 127.0.0.1:$IN --cert $P/client.pem --key $P/client.key --trust $P/ca.pem \
  --peer-id spiffe://cluster.local/ns/default/sa/server --workers 1 --log-level warn "$@" \
  > "$W/out.log" 2>&1 &
PIDS+=($!)
# Listening, checked without connecting (a probe would be a connection to count).
for p in $IN $OUT; do
  for _ in $(seq 300); do ss -ltnH "sport = :$p" | grep -q . && break; sleep 0.1; done
done
python3 - "$OUT" "$MIB" << 'EOF' || { echo "transfer failed" >&2; cat "$W/out.log" "$W/in.log" >&2; exit 1; }
import socket, sys
port, mib = int(sys.argv[1]), int(sys.argv[2])
c = socket.create_connection(("127.0.0.1", port), timeout=600)
blk = b"y" * (1 << 20)
for _ in range(mib):
    c.sendall(blk)
c.shutdown(socket.SHUT_WR)
while c.recv(65536):
    pass
c.close()
c = socket.create_connection(("127.0.0.1", port), timeout=600)
c.shutdown(socket.SHUT_WR)
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b)
assert n == mib << 20, f"downloaded {n} bytes of {mib << 20}"
EOF
kill "${PIDS[1]}" "${PIDS[2]}"
wait "${PIDS[1]}" "${PIDS[2]}" 2> /dev/null
grep -q "sink got $((MIB << 20))" "$W/back.log" || { echo "upload incomplete: $(cat "$W/back.log")" >&2; exit 1; }
echo "$(basename "$BIN") $* — $MIB MiB up + $MIB MiB down through the pair"
for f in out in; do
  callgrind_annotate "$W/cg.$f" 2> /dev/null | awk -v who="$f" '
    /PROGRAM TOTALS/ { gsub(",", "", $1); tot = $1 }
    /__mem(cpy|move)/ { gsub(",", "", $1); cp += $1 }
    END { printf "%-8s Ir %d  memcpy/memmove Ir %d (%.1f%%)\n", who, tot, cp, tot ? 100 * cp / tot : 0 }'
done
