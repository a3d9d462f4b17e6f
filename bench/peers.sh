# =============================================================================
# bench/peers.sh - the bench's PKI and the proxies it compares, shared by
# bench/run.sh (the two-hop pair on loopback) and bench/mesh.py (the same job
# behind seam-init's iptables interception, pods in network namespaces).
#
#   make_pki               $WORK/pki: CA, {client,server}.{key,crt,pem}
#   backend_conf DIR LISTEN BODY BIG   the backend nginx's config
#   peer_seam|peer_haproxy_l4|peer_haproxy_l7|peer_nginx|peer_stunnel
#                          write a config in $WORKDIR and exec the proxy in the
#                          foreground; they read ROLE=outbound|inbound
#                          LISTEN_ADDR LISTEN_PORT UPSTREAM_ADDR UPSTREAM_PORT
#                          CERT KEY CERT_KEY_PEM CA PEER_ID PEER_DNS ALLOW_ID
#                          TLS_RESUME=0|1 TLS_CIPHERSUITE SEAM_BIN WORKDIR
#   accel_wrap PEER_FN     the same proxy with seam-accel on its plain side
#   busypoll_wrap PEER_FN  the same proxy polling instead of sleeping: seam
#                          with --busy-poll-us $BUSY_POLL_US, haproxy with
#                          busy-polling (the like-for-like reference)
# Sourced, never run: it only defines functions.
# =============================================================================
# ------------------------------------------------------------------ PKI
# The CA and the leaf keys come from tests/certs/gen.sh (ECDSA P-256, SPIFFE
# IDs spiffe://cluster.local/ns/default/sa/{server,client}). gen.sh's leaves
# carry only the URI SAN; nginx and haproxy can only check a DNS name, so the
# same keys are re-certified by the same CA with URI SAN + DNS SAN
# ({server,client}.default.svc). Every peer, seam included, uses these.
make_pki() {
  local d=$WORK/pki who; rm -rf "$d"; mkdir -p "$d"
  bash "$REPO/tests/certs/gen.sh" "$d/gen" >/dev/null || { echo "tests/certs/gen.sh failed" >&2; exit 1; }
  cp "$d/gen/ca.pem" "$d/ca.crt"
  for who in client server; do
    cp "$d/gen/$who.key" "$d/$who.key"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth,clientAuth" \
      "subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/$who,DNS:$who.default.svc" > "$d/$who.ext"
    openssl req -new -key "$d/$who.key" -subj "/O=seam test" -out "$d/$who.csr" 2>/dev/null &&
    openssl x509 -req -in "$d/$who.csr" -CA "$d/gen/ca.pem" -CAkey "$d/gen/ca.key" -CAcreateserial \
      -days 2 -sha256 -extfile "$d/$who.ext" -out "$d/$who.crt" 2>/dev/null ||
      { echo "PKI: cannot certify $who" >&2; exit 1; }
    cat "$d/$who.crt" "$d/$who.key" > "$d/$who.pem"
    chmod 600 "$d/$who.key" "$d/$who.pem"
  done
  openssl verify -CAfile "$d/ca.crt" "$d/client.crt" "$d/server.crt" >/dev/null || { echo "PKI verify failed" >&2; exit 1; }
}

# backend_conf DIR LISTEN BODY BIG: the backend's nginx config in DIR/nginx.conf
# (HTTP/1.1 keep-alive; /100b answers BODY, /big sends the file BIG).
backend_conf() {
  local d=$1 listen=$2 body=$3 big=$4
  mkdir -p "$d/tmp"
  { nginx_main "$d" 16384; cat <<EOC
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  server {
    listen $listen backlog=4096;
    location = /100b { default_type text/plain; return 200 "$body"; }
    location = /big  { default_type application/octet-stream; alias $big; }
  }
}
EOC
  } > "$d/nginx.conf"
}

# nginx_main DIR CONNS: the main context both nginx configs share (one worker,
# in the foreground, pid and error log in DIR; as root, workers stay root).
nginx_main() {
  [ "$(id -u)" = 0 ] && echo "user root;"
  cat <<EOC
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections $2; }
EOC
}

# ------------------------------------------------------------------ built-in peers
# Each function reads the env described in the header, writes its config in
# $WORKDIR and execs the proxy in the foreground.
peer_seam() {
  local bin=$SEAM_BIN
  # seam reads every flag from SEAM_<FLAG> too: keep the harness's own SEAM_* out of its env
  unset $(compgen -v SEAM_) 2>/dev/null
  local common=(--listen "$LISTEN_ADDR:$LISTEN_PORT" --target "$UPSTREAM_ADDR:$UPSTREAM_PORT"
                --cert "$CERT" --key "$KEY" --trust "$CA" --workers 1 --log-level warn --drain-timeout 1s)
  # seam resumes between its own proxies by default; the full-handshake rows turn it off.
  [ "${TLS_RESUME}" = 0 ] && common+=(--no-tls-resumption)
  [ "${BUSY_POLL:-0}" = 1 ] && common+=(--busy-poll-us "${BUSY_POLL_US:-500}")
  if [ "$ROLE" = outbound ]; then
    [ "${MUX:-0}" = 1 ] && common+=(--mux)   # mux_wrap: streams of one mTLS session (docs/MUX.md)
    exec "$bin" tunnel outbound "${common[@]}" --peer-id "$PEER_ID"
  else
    exec "$bin" tunnel inbound "${common[@]}" --allow "$ALLOW_ID"
  fi
}

peer_haproxy() { # $1 = tcp|http
  local mode=$1 reuse_srv="" reuse_bind="" f=$WORKDIR/haproxy.cfg
  if [ "${TLS_RESUME}" = 0 ]; then reuse_srv="no-ssl-reuse"; reuse_bind="no-tls-tickets"; fi
  {
    echo "global"
    echo "  nbthread 1"
    echo "  maxconn 9900"
    echo "  ssl-default-bind-ciphersuites $TLS_CIPHERSUITE"
    echo "  ssl-default-bind-options ssl-min-ver TLSv1.3"
    echo "  ssl-default-server-ciphersuites $TLS_CIPHERSUITE"
    echo "  ssl-default-server-options ssl-min-ver TLSv1.3"
    [ "${TLS_RESUME}" = 0 ] && echo "  tune.ssl.cachesize 0"
    [ "${BUSY_POLL:-0}" = 1 ] && echo "  busy-polling"
    echo "defaults"
    echo "  mode $mode"
    echo "  maxconn 9900"
    echo "  timeout connect 5s"
    echo "  timeout client 300s"
    echo "  timeout server 300s"
    [ "$mode" = http ] && echo "  timeout http-keep-alive 300s"
    if [ "$ROLE" = outbound ]; then
      echo "frontend out"
      echo "  bind $LISTEN_ADDR:$LISTEN_PORT"
      echo "  default_backend up"
      echo "backend up"
      [ "$mode" = http ] && echo "  http-reuse always"
      echo "  server s1 $UPSTREAM_ADDR:$UPSTREAM_PORT ssl crt $CERT_KEY_PEM ca-file $CA verify required verifyhost $PEER_DNS sni str($PEER_DNS) $reuse_srv"
    else
      echo "frontend in"
      echo "  bind $LISTEN_ADDR:$LISTEN_PORT ssl crt $CERT_KEY_PEM ca-file $CA verify required $reuse_bind"
      echo "  default_backend app"
      echo "backend app"
      [ "$mode" = http ] && echo "  http-reuse always"
      echo "  server app $UPSTREAM_ADDR:$UPSTREAM_PORT"
    fi
  } > "$f"
  exec haproxy -db -f "$f"
}
peer_haproxy_l4() { peer_haproxy tcp; }
peer_haproxy_l7() { peer_haproxy http; }

peer_nginx() {
  local f=$WORKDIR/nginx.conf reuse body
  if [ "$ROLE" = outbound ]; then
    [ "${TLS_RESUME}" = 0 ] && reuse=off || reuse=on
    body="    listen $LISTEN_ADDR:$LISTEN_PORT backlog=4096;
    proxy_pass $UPSTREAM_ADDR:$UPSTREAM_PORT;
    proxy_ssl on;
    proxy_ssl_certificate $CERT;
    proxy_ssl_certificate_key $KEY;
    proxy_ssl_trusted_certificate $CA;
    proxy_ssl_verify on;
    proxy_ssl_verify_depth 2;
    proxy_ssl_name $PEER_DNS;
    proxy_ssl_server_name on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_conf_command Ciphersuites $TLS_CIPHERSUITE;
    proxy_ssl_session_reuse $reuse;"
  else
    if [ "${TLS_RESUME}" = 0 ]; then reuse="ssl_session_tickets off; ssl_session_cache off;"
    else reuse="ssl_session_tickets on; ssl_session_cache shared:S:10m;"; fi
    body="    listen $LISTEN_ADDR:$LISTEN_PORT ssl backlog=4096;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_client_certificate $CA;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites $TLS_CIPHERSUITE;
    $reuse
    proxy_pass $UPSTREAM_ADDR:$UPSTREAM_PORT;"
  fi
  { echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    nginx_main "$WORKDIR" 20000
    cat <<EOC
stream {
  server {
$body
  }
}
EOC
  } > "$f"
  exec nginx -p "$WORKDIR" -e "$WORKDIR/error.log" -c "$f"
}

peer_stunnel() {
  local f=$WORKDIR/stunnel.conf resume
  [ "${TLS_RESUME}" = 0 ] && resume=no || resume=yes
  {
    echo "foreground = yes"
    echo "pid ="
    echo "output = $WORKDIR/stunnel.log"
    echo "debug = warning"
    echo "[$ROLE]"
    echo "accept = $LISTEN_ADDR:$LISTEN_PORT"
    echo "connect = $UPSTREAM_ADDR:$UPSTREAM_PORT"
    echo "cert = $CERT"
    echo "key = $KEY"
    echo "CAfile = $CA"
    echo "verifyChain = yes"
    echo "sslVersionMin = TLSv1.3"
    echo "ciphersuites = $TLS_CIPHERSUITE"
    echo "sessionResume = $resume"
    echo "TIMEOUTclose = 0"
    echo "socket = l:TCP_NODELAY=1"
    echo "socket = r:TCP_NODELAY=1"
    if [ "$ROLE" = outbound ]; then
      echo "client = yes"
      echo "checkHost = $PEER_DNS"
      echo "sni = $PEER_DNS"
    else
      echo "requireCert = yes"
      [ "${TLS_RESUME}" = 0 ] && echo "options = NO_TICKET"
    fi
  } > "$f"
  exec stunnel4 "$f"
}
# accel_wrap PEER_FN...: the proxy PEER_FN starts, with seam-accel (docs/ACCEL.md)
# giving the plain-text side of this proxy the sockmap short cut: the
# outbound's listen port (app -> proxy), the inbound's upstream port (proxy ->
# app). Reads ACCEL_BIN and ACCEL_CG (a cgroup v2 dir holding the proxies, the
# load generator and the backend). seam-accel becomes a child of the proxy
# (this shell execs it), so its CPU and RSS count as the proxy's.
accel_start() { # LOG PORT DRAIN: seam-accel on $ACCEL_CG in the background; waits for
  # accel.ready (5 s); ACCEL_PID is its PID; fails (returns 1) if it never gets ready
  local log=$1 i
  "$ACCEL_BIN" --cgroup "$ACCEL_CG" --port "$2" --drain-timeout "$3" >"$log" 2>&1 &
  ACCEL_PID=$!
  for i in $(seq 1 100); do
    grep -q accel.ready "$log" && return 0
    kill -0 $ACCEL_PID 2>/dev/null || break
    sleep 0.05
  done
  grep -q accel.ready "$log"
}
accel_wrap() {
  local port=$LISTEN_PORT
  [ "$ROLE" = inbound ] && port=$UPSTREAM_PORT
  accel_start "$WORKDIR/accel.log" "$port" 1s ||
    { echo "seam-accel did not start:" >&2; cat "$WORKDIR/accel.log" >&2; exit 1; }
  "$@"
}
# busypoll_wrap PEER_FN...: the proxy PEER_FN starts, told to poll instead of
# sleeping (seam: while an answer is due, at most BUSY_POLL_US per request;
# haproxy: busy-polling, always). Both wrappers run the rest of their
# arguments, so they compose: accel_wrap busypoll_wrap peer_seam.
busypoll_wrap() { BUSY_POLL=1 "$@"; }
# mux_wrap PEER_FN...: seam's outbound carries every connection as a stream of
# one long-lived mTLS session (--mux, seam-mux/1); the inbound needs no flag.
mux_wrap() { MUX=1 "$@"; }
export -f nginx_main peer_seam peer_haproxy peer_haproxy_l4 peer_haproxy_l7 peer_nginx peer_stunnel accel_start accel_wrap busypoll_wrap mux_wrap
export ALLOW_ID
