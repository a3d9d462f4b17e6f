#!/usr/bin/env bash
# scripts/demo/mesh.sh — the mesh demo (root): a control plane and three
# "pods" in network namespaces joined by a bridge (tests/e2e/mesh/meshlab.py,
# the same harness as the e2e test), each pod with seam-init's iptables
# rules, a seam sidecar as uid 1337 and an app as uid 1000:
#
#   frontend app --plain--> [frontend sidecar] ==mTLS 1.3==> [backend sidecar] --plain--> backend app
#                           spiffe://cluster.local/ns/default/sa/frontend   .../sa/backend
#   (the app's connections travel as streams of one seam-mux session per destination)
#   rogue app (spiffe://cluster.local/ns/evil/sa/mallory) --> backend: refused (not allowed)
#
# The apps only dial pod IPs in plain TCP. Certificates live 10 s, so one
# rotates while traffic flows. Prints a summary, ends what it started by PID
# and deletes the namespaces (and with them the bridge and the rules).
# Not root, or a tool missing: runs the tunnel demo instead and says why.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export SEAM_BUILD_DIR=${SEAM_BUILD_DIR:-$root/build}

fallback() {
    echo "== the mesh demo cannot run here: $1"
    echo "== running the tunnel demo instead"
    exec bash "$here/tunnel.sh"
}
[[ $(id -u) -eq 0 ]] || fallback "it needs root (network namespaces, iptables)"
for tool in ip iptables ip6tables setpriv curl python3; do
    command -v "$tool" >/dev/null || fallback "$tool is missing (bash scripts/deps.sh installs it)"
done
ip netns add "seam-probe-$$" 2>/dev/null || fallback "cannot create network namespaces here"
ip netns del "seam-probe-$$"
for b in seam-sidecar seam-control-plane seam-init; do
    [[ -x "$SEAM_BUILD_DIR/sidecar/$b" || -x "$SEAM_BUILD_DIR/control-plane/$b" ]] || {
        echo "demo: FAILED: $b is not built under $SEAM_BUILD_DIR" >&2
        exit 1
    }
done

why=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import meshlab; print(meshlab.run_built(sys.argv[2]) or "")' "$root/tests/e2e/mesh" "$SEAM_BUILD_DIR")
[[ -z "$why" ]] || fallback "$why"

exec /usr/bin/python3 - "$root" <<'PYEOF'
import os
import re
import sys
import time

root = sys.argv[1]
sys.path.insert(0, os.path.join(root, "tests", "e2e", "mesh"))
import meshlab  # noqa: E402

FRONT = meshlab.spiffe("default", "frontend")
BACK = meshlab.spiffe("default", "backend")
ROGUE = meshlab.spiffe("evil", "mallory")
MESH = f"""trust_domain: cluster.local
cert_ttl: 10s
outbound_policy: ALLOW_ANY
default_inbound_mode: STRICT
services:
  - name: backend.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 10.244.0.20
        port: 8080
        spiffe_id: {BACK}
      - address: "fd00:10:244::20"
        port: 8080
        spiffe_id: {BACK}
inbound:
  - port: 8080
    mode: STRICT
    allow:
      - {FRONT}
"""


def step(msg):
    print(f"\n-- {msg}", flush=True)


def fail(msg, *procs):
    print(f"\ndemo: FAILED: {msg}", file=sys.stderr)
    for p in procs:
        print(f"--- last lines of {os.path.basename(p.log_path)}:", file=sys.stderr)
        print("\n".join(p.log().splitlines()[-20:]), file=sys.stderr)
    sys.exit(1)


lab = meshlab.MeshLab(os.environ["SEAM_BUILD_DIR"])
summary = {}
ok = False
try:
    step("network: namespaces " + ", ".join(f"{lab.tag}-{n}" for n in
                                            ("node", "frontend", "backend", "rogue"))
         + " joined by bridge br0 (10.244.0.0/24, fd00:10:244::/64)")
    pods = lab.setup_network([("frontend", 10, "default", "frontend"),
                              ("backend", 20, "default", "backend"),
                              ("rogue", 30, "evil", "mallory")])
    step("control plane on 10.244.0.1:15010 (CA + config stream), 10 s certificates")
    lab.start_control_plane(MESH, cert_ttl="10s")
    step("each pod: seam-init install, app as uid 1000, seam-sidecar run as uid 1337")
    for name in ("frontend", "backend", "rogue"):
        lab.start_pod(name, app_ports=(8080,))
        print(f"   {name}: {pods[name].ip4} {pods[name].id}")
        print("   " + pods[name].init_output.strip().splitlines()[-1])
    try:
        lab.wait_ready(30)
    except Exception as e:  # noqa: BLE001
        fail(f"the pods did not become ready: {e}", *(p.sidecar for p in pods.values()))
    fe, be, rogue = pods["frontend"], pods["backend"], pods["rogue"]

    step("frontend's app calls backend's pod IP in plain TCP (IPv4, IPv6)")
    out4 = fe.call("10.244.0.20", 8080, "hello over IPv4").strip()
    out6 = fe.call("fd00:10:244::20", 8080, "hello over IPv6").strip()
    print(f"   {out4}\n   {out6}")
    if "got hello over IPv4" not in out4 or "got hello over IPv6" not in out6:
        fail("the call through the mesh did not get an answer", fe.sidecar, be.sidecar)
    # The backend logs the call's close once both directions ended: wait for it.
    try:
        closes = meshlab.wait_for(lambda: [l for l in be.sidecar.log().splitlines()
                                           if "conn.close dir=inbound" in l
                                           and f"peer_id={FRONT}" in l], 10,
                                  what="the backend's conn.close of frontend's call")
    except TimeoutError as e:
        fail(str(e), be.sidecar)
    tls = re.search(r"tls=(\S+)", closes[-1]).group(1)
    peer_id = re.search(r"peer_id=(\S+)", closes[-1]).group(1)
    if tls == "mux":  # a stream of a seam-mux session (the default): the session's TLS
        sess = [l for l in be.sidecar.log().splitlines()
                if "mux.session_open dir=inbound" in l and f"peer_id={peer_id}" in l]
        tls = (re.search(r"tls=(\S+) proto=(\S+)", sess[-1]).expand(r"\1 (\2)") if sess
               else "? (seam-mux)")

    step("rogue's app (not allowed on backend:8080) calls backend")
    out = rogue.call("10.244.0.20", 8080, "let me in").strip()
    print(f"   answer: {out or '(none: connection closed)'}")
    refusal = meshlab.wait_for(lambda: [l for l in be.sidecar.log().splitlines()
                                        if "reason=not_allowed" in l], 10,
                               what="backend's refusal")[-1]
    print("   backend: " + refusal.split(" WARN ", 1)[-1])
    if "got let me in" in out:
        fail("the rogue call was answered", be.sidecar)

    step("steady traffic while the 10 s certificates rotate")
    serials = re.findall(r"identity\.cert_installed id=\S+ serial=(\S+)", fe.sidecar.log())
    first = serials[-1]
    calls = failed = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        calls += 1
        if f"got tick {calls}" not in fe.call("10.244.0.20", 8080, f"tick {calls}"):
            failed += 1
        now = re.findall(r"identity\.cert_installed id=\S+ serial=(\S+)", fe.sidecar.log())
        if now[-1] != first and calls >= 10:
            break
        time.sleep(0.1)
    last = re.findall(r"identity\.cert_installed id=\S+ serial=(\S+)", fe.sidecar.log())[-1]
    if last == first:
        fail("no certificate rotation within 20 s", fe.sidecar)
    if failed:
        fail(f"{failed} of {calls} calls failed during rotation", fe.sidecar, be.sidecar)

    print("\n== seam mesh demo: what happened")
    print(f"control plane: 10.244.0.1:15010 (namespace {lab.node})")
    print(f"frontend -> backend IPv4: {out4}")
    print(f"frontend -> backend IPv6: {out6}")
    print(f"backend sidecar saw peer: {peer_id} over {tls}")
    print(f"refused: {ROGUE} reason=not_allowed")
    print(f"rotation: frontend certificate {first[:16]}... -> {last[:16]}..., "
          f"{calls} calls during it, {failed} failed")
    ok = True
finally:
    codes = lab.close()
    lab.cleanup_dir()
    left = os.popen("ip netns list").read()
    if lab.tag in left:
        print(f"demo: namespaces left behind: {left}", file=sys.stderr)
        ok = False
if not ok:
    sys.exit(1)
print("DEMO OK (mesh mode)")
PYEOF
