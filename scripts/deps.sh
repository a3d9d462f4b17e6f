#!/usr/bin/env bash
# Installs every Debian package seam's build, tests, demo and bench need.
# Idempotent; safe to run as root on a fresh Debian 12 machine with no stdin.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(
  # build
  build-essential cmake pkg-config git ca-certificates
  android-libboringssl-dev libuv1-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
  libcmocka-dev libyaml-dev
  # seam-accel: the BPF object (clang -target bpf), its loader and skeleton generator
  libbpf-dev bpftool
  # fuzzing and sanitizers (clang + libFuzzer runtime)
  clang libclang-rt-14-dev llvm
  # style: scripts/format.sh and its ctest (style.clang_format)
  clang-format
  # real peers and test tools
  openssl socat curl python3 python3-pytest python3-grpcio python3-protobuf protobuf-compiler
  iproute2 iptables tshark procps psmisc jq python3-cryptography
  # deploy/: OCI image without a Docker engine, manifest lint
  buildah umoci skopeo runc podman yamllint
  prometheus
  # bench peers
  haproxy nginx libnginx-mod-stream stunnel4 wrk iperf3 util-linux linux-perf valgrind
)
# deploy/validate needs node + npm: this machine image ships them (nodesource);
# elsewhere Debian's own packages serve.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
need=()
for p in "${PKGS[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "deps.sh: missing packages (${need[*]}); run as root" >&2; exit 1; fi
  echo "deps.sh: installing ${need[*]}"
  # tshark asks whether non-root users may capture; answer no, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The packaged daemons must not keep running: tests start their own on loopback.
for svc in nginx haproxy prometheus iperf3; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; systemctl disable "$svc" >/dev/null 2>&1 || true; fi
done
