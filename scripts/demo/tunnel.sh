#!/usr/bin/env bash
# scripts/demo/tunnel.sh — the tunnel-mode demo (no control plane, no root):
#
#   demo app --plain--> outbound tunnel ==mTLS 1.3 (SPIFFE)==> inbound tunnel --plain--> echo app
#            (as spiffe://cluster.local/ns/default/sa/client)  (as .../sa/server)
#
# A throw-away PKI (tests/certs/gen.sh), free loopback ports, a few messages
# through, then a caller with a not-allowed identity is refused. Prints a
# summary from the sidecars' log lines (conn.close, tls.handshake_failed).
# Expects built binaries in $SEAM_BUILD_DIR (scripts/demo.sh builds them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/demo/lib.sh
source "$here/lib.sh"
export SEAM_BUILD_DIR=${SEAM_BUILD_DIR:-$root/build}

for tool in openssl socat python3; do
    command -v "$tool" >/dev/null || demo_die "$tool is missing (bash scripts/deps.sh installs it)"
done
SIDECAR=$(demo_binary seam-sidecar)
demo_init tunnel
W=$DEMO_WORK
TD=spiffe://cluster.local
CLIENT_ID=$TD/ns/default/sa/client
SERVER_ID=$TD/ns/default/sa/server
DENIED_ID=$TD/ns/evil/sa/mallory
N_MSG=3

demo_step "throw-away PKI (tests/certs/gen.sh)"
bash "$root/tests/certs/gen.sh" "$W/pki" >/dev/null || demo_die "PKI generation failed"
P=$W/pki
demo_say "CA: $P/ca.pem; client SVID $CLIENT_ID; server SVID $SERVER_ID"

ECHO_PORT=$(demo_free_port)
IN_PORT=$(demo_free_port)
OUT_PORT=$(demo_free_port)

demo_step "echo app on 127.0.0.1:$ECHO_PORT (plain TCP)"
socat "TCP-LISTEN:$ECHO_PORT,bind=127.0.0.1,reuseaddr,fork" EXEC:cat 2>"$W/echo.log" &
demo_track $!
demo_wait 10 "the echo app" demo_port_open 127.0.0.1 "$ECHO_PORT" || demo_die "echo app did not start" "$W/echo.log"

demo_step "inbound tunnel 127.0.0.1:$IN_PORT -> echo app (allows $TD/ns/default/*)"
"$SIDECAR" tunnel inbound --listen "127.0.0.1:$IN_PORT" --target "127.0.0.1:$ECHO_PORT" \
    --cert "$P/server.pem" --key "$P/server.key" --trust "$P/ca.pem" \
    --allow "$TD/ns/default/*" --workers 2 2>"$W/inbound.log" &
IN_PID=$!
demo_track $IN_PID
demo_wait 15 "inbound sidecar.ready" demo_has_n "$W/inbound.log" sidecar.ready 1 ||
    demo_die "the inbound tunnel did not become ready" "$W/inbound.log"
demo_say "$(grep -m1 sidecar.ready "$W/inbound.log")"

demo_step "outbound tunnel 127.0.0.1:$OUT_PORT -> inbound (expects $SERVER_ID)"
"$SIDECAR" tunnel outbound --listen "127.0.0.1:$OUT_PORT" --target "127.0.0.1:$IN_PORT" \
    --cert "$P/client.pem" --key "$P/client.key" --trust "$P/ca.pem" \
    --peer-id "$SERVER_ID" --workers 2 2>"$W/outbound.log" &
OUT_PID=$!
demo_track $OUT_PID
demo_wait 15 "outbound sidecar.ready" demo_has_n "$W/outbound.log" sidecar.ready 1 ||
    demo_die "the outbound tunnel did not become ready" "$W/outbound.log"
demo_say "$(grep -m1 sidecar.ready "$W/outbound.log")"

demo_step "the demo app sends $N_MSG messages to the outbound tunnel (plain TCP)"
ok=0
for i in $(seq "$N_MSG"); do
    msg="message $i from the demo app"
    # socat half-closes after stdin; the FIN crosses both tunnels, the echo
    # app answers and closes, and the FIN comes back.
    reply=$(printf '%s\n' "$msg" | timeout 15 socat -t 5 - "TCP:127.0.0.1:$OUT_PORT" 2>>"$W/client.log" || true)
    if [[ "$reply" == "$msg" ]]; then
        ok=$((ok + 1))
        demo_say "sent: $msg | echoed: $reply"
    else
        demo_say "sent: $msg | echoed: ${reply:-<nothing>}  (MISMATCH)"
    fi
done
((ok == N_MSG)) || demo_die "$((N_MSG - ok)) of $N_MSG messages were not echoed intact" \
    "$W/outbound.log" "$W/inbound.log" "$W/client.log"
demo_wait 10 "conn.close on both sidecars" \
    bash -c "(( \$(grep -c conn.close '$W/outbound.log') >= $N_MSG && \$(grep -c conn.close '$W/inbound.log') >= $N_MSG ))" ||
    demo_die "the sidecars did not log conn.close for every connection" "$W/outbound.log" "$W/inbound.log"

demo_step "a caller with a not-allowed identity ($DENIED_ID) tries the inbound tunnel (openssl s_client)"
timeout 15 openssl s_client -connect "127.0.0.1:$IN_PORT" -tls1_3 \
    -cert "$P/denied.pem" -key "$P/denied.key" -CAfile "$P/ca.pem" </dev/null >"$W/denied.out" 2>&1 || true
demo_wait 10 "the refusal log line" demo_has_n "$W/inbound.log" tls.handshake_failed 1 ||
    demo_die "the inbound tunnel did not log a refused handshake" "$W/inbound.log" "$W/denied.out"
refusal=$(grep -m1 tls.handshake_failed "$W/inbound.log")
demo_say "$refusal"

# Summary, from the sidecars' own log lines.
sum_field() { # LOG KEY: sum of KEY over conn.close lines
    local total=0 line v
    while IFS= read -r line; do
        v=$(demo_field "$line" "$2")
        total=$((total + ${v:-0}))
    done < <(grep conn.close "$1")
    printf '%s\n' "$total"
}
uniq_field() { # LOG KEY: distinct values of KEY over conn.close lines
    local line
    while IFS= read -r line; do demo_field "$line" "$2"; done < <(grep conn.close "$1") | sort -u | paste -sd, -
}
out_ids=$(uniq_field "$W/outbound.log" peer_id)
in_ids=$(uniq_field "$W/inbound.log" peer_id)
tls_versions=$( (uniq_field "$W/outbound.log" tls; uniq_field "$W/inbound.log" tls) | sort -u | paste -sd, -)
out_in=$(sum_field "$W/outbound.log" bytes_in)
out_out=$(sum_field "$W/outbound.log" bytes_out)
in_in=$(sum_field "$W/inbound.log" bytes_in)
in_out=$(sum_field "$W/inbound.log" bytes_out)
ref_reason=$(demo_field "$refusal" reason)
ref_id=$(demo_field "$refusal" peer_id)
ref_peer=$(demo_field "$refusal" peer)

cat <<SUMMARY

== seam tunnel demo: what happened
path: app -> outbound 127.0.0.1:$OUT_PORT ==mTLS==> inbound 127.0.0.1:$IN_PORT -> echo 127.0.0.1:$ECHO_PORT
messages: $N_MSG sent, $ok echoed intact
outbound tunnel saw peer: $out_ids
inbound tunnel saw peer: $in_ids
TLS version: $tls_versions
outbound bytes: app->tunnel $out_in, tunnel->app $out_out
inbound bytes: tunnel->echo $in_in, echo->tunnel $in_out
refused: $ref_id from $ref_peer reason=$ref_reason
SUMMARY

fail=()
[[ "$out_ids" == "$SERVER_ID" ]] || fail+=("outbound saw '$out_ids', expected $SERVER_ID")
[[ "$in_ids" == "$CLIENT_ID" ]] || fail+=("inbound saw '$in_ids', expected $CLIENT_ID")
[[ "$tls_versions" == "TLSv1.3" ]] || fail+=("TLS version '$tls_versions', expected TLSv1.3")
[[ "$ref_reason" == "not_allowed" ]] || fail+=("refusal reason '$ref_reason', expected not_allowed")
if ((${#fail[@]})); then
    demo_die "$(printf '%s; ' "${fail[@]}")" "$W/outbound.log" "$W/inbound.log"
fi
echo "DEMO OK (tunnel mode)"
