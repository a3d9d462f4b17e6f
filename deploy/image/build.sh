#!/usr/bin/env bash
# build.sh: seam's OCI image, built without a Docker engine (buildah `from scratch`).
#
# usage: [SEAM_BUILD_DIR=build] [OUT=build] [VERSION=x.y.z] deploy/image/build.sh
#
# One image for the three roles (the pod spec picks the binary):
#   /usr/local/bin/seam-sidecar        entrypoint (CMD ["run"]), user 1337:1337
#   /usr/local/bin/seam-init           init container: command [seam-init], runs as root
#   /usr/local/bin/seam-control-plane  control plane: command [seam-control-plane]
#   /usr/sbin/iptables*, ip6tables*    iptables 1.8 (nft and legacy backends) for seam-init;
#                                      iptables/ip6tables(-restore/-save) name the nft backend
# Nothing else: exactly the shared libraries `ldd` lists for these binaries (BoringSSL's
# libssl/libcrypto from /usr/lib/x86_64-linux-gnu/android, found through the binaries'
# RUNPATH, libstdc++, the loader ...) plus iptables' extension modules (dlopen()ed, so
# not in ldd) with their libraries; /etc/passwd and /etc/group with root, seam (1337)
# and nobody; /etc/nsswitch.conf; an empty /tmp.
#
# Inputs : $SEAM_BUILD_DIR/sidecar/seam-sidecar, .../sidecar/seam-init,
#          .../control-plane/seam-control-plane   (SEAM_BUILD_DIR defaults to build/)
#          SEAM_IMAGE_PARTIAL=1 allows seam-init / seam-control-plane to be missing.
# Output : $OUT/seam-$VERSION.oci.tar (OCI archive, reference seam:$VERSION; OUT
#          defaults to build/). Load it with `podman load -i` or
#          `skopeo copy oci-archive:F docker-archive:G:seam:V` for `docker load` / kind.
# Storage: buildah's vfs driver with a private --root/--runroot under $OUT, removed at
#          the end, so /var/lib/containers is never touched. Needs root (or a rootless
#          buildah with subuid ranges).
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 1; }
src=$(cd "$(dirname "$0")/../.." && pwd)
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
build=$(abspath "${SEAM_BUILD_DIR:-$src/build}")
out=$(abspath "${OUT:-$src/build}")
version=${VERSION:-$(sed -n 's/^project(seam VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")}
[[ -n "$version" ]] || die "cannot read the version from CMakeLists.txt; set VERSION"
command -v buildah >/dev/null || die "buildah not found (Debian: apt-get install buildah)"
[[ -d "$build" ]] || die "build directory $build not found (set SEAM_BUILD_DIR)"
mkdir -p "$out"

# --- the binaries ----------------------------------------------------------
declare -A bins=(
  [seam-sidecar]=$build/sidecar/seam-sidecar
  [seam-init]=$build/sidecar/seam-init
  [seam-control-plane]=$build/control-plane/seam-control-plane
)
present=()
for name in seam-sidecar seam-init seam-control-plane; do
  if [[ -x "${bins[$name]}" ]]; then
    present+=("$name")
  elif [[ "$name" == seam-sidecar || "${SEAM_IMAGE_PARTIAL:-0}" != 1 ]]; then
    die "${bins[$name]} not built (build with cmake first; SEAM_IMAGE_PARTIAL=1 skips seam-init/seam-control-plane)"
  else
    echo "build.sh: warning: ${bins[$name]} not built; the image will not contain $name" >&2
  fi
done

work=$(mktemp -d "$out/.seam-image.XXXXXX")
store=$work/store
rootfs=$work/rootfs
B=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
ctr=""
cleanup() {
  if [[ -n "$ctr" ]]; then "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# usr-merged layout, as on Debian 12: /lib, /lib64, /bin, /sbin point into /usr.
mkdir -p "$rootfs"/usr/{lib,lib64,bin,sbin,local/bin} "$rootfs"/etc "$rootfs"/tmp "$rootfs"/run
ln -s usr/lib "$rootfs/lib"; ln -s usr/lib64 "$rootfs/lib64"
ln -s usr/bin "$rootfs/bin"; ln -s usr/sbin "$rootfs/sbin"
chmod 1777 "$rootfs/tmp"

# Place a host file at its path under /usr (directories resolved, so /lib/x/libc.so.6
# lands in /usr/lib/x/libc.so.6 and stays reachable through the /lib symlink).
declare -A copied=()
place() {
  local f=$1 dir dest
  dir=$(readlink -f "$(dirname "$f")")
  dest=$rootfs$dir/$(basename "$f")
  [[ -n "${copied[$dest]:-}" ]] && return 0
  mkdir -p "$(dirname "$dest")"
  cp -L --preserve=mode "$f" "$dest"
  copied[$dest]=1
}
# Every library ldd resolves for an ELF file, and the loader. A missing one is fatal.
libs_of() {
  local out
  out=$(ldd "$1") || die "ldd $1 failed"
  if grep -q 'not found' <<<"$out"; then die "$1: missing libraries: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"; fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}
elves=()
for name in "${present[@]}"; do
  install -m 0755 "${bins[$name]}" "$rootfs/usr/local/bin/$name"
  elves+=("${bins[$name]}")
done

# iptables for seam-init (both backends, and the extension modules they dlopen()).
if [[ " ${present[*]} " == *" seam-init "* ]]; then
  for m in xtables-nft-multi xtables-legacy-multi; do
    [[ -x /usr/sbin/$m ]] || die "/usr/sbin/$m missing (Debian: apt-get install iptables)"
    place "/usr/sbin/$m"; elves+=("/usr/sbin/$m")
  done
  for v in iptables ip6tables; do
    for s in "" -restore -save; do
      ln -s xtables-nft-multi "$rootfs/usr/sbin/$v-nft$s"
      ln -s xtables-legacy-multi "$rootfs/usr/sbin/$v-legacy$s"
      ln -s "$v-nft$s" "$rootfs/usr/sbin/$v$s"
    done
  done
  xt=/usr/lib/x86_64-linux-gnu/xtables
  [[ -d $xt ]] || die "$xt missing"
  for f in "$xt"/*.so; do place "$f"; elves+=("$f"); done
  [[ -r /etc/protocols ]] && cp /etc/protocols "$rootfs/etc/protocols"
fi

for e in "${elves[@]}"; do
  while read -r lib; do place "$lib"; done < <(libs_of "$e")
done

cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
seam:x:1337:1337:seam sidecar:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
seam:x:1337:
nogroup:x:65534:
EOF
echo "hosts: files dns" > "$rootfs/etc/nsswitch.conf"

# --- the image ---------------------------------------------------------------
revision=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
archive=$out/seam-$version.oci.tar
ctr=$("${B[@]}" from scratch)
"${B[@]}" copy --quiet "$ctr" "$rootfs/" / >/dev/null
"${B[@]}" config \
  --entrypoint '["/usr/local/bin/seam-sidecar"]' --cmd run \
  --user 1337:1337 --workingdir / \
  --env PATH=/usr/local/bin:/usr/sbin:/usr/bin \
  --port 15001/tcp --port 15006/tcp --port 15020/tcp \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=seam \
  --label "org.opencontainers.image.description=seam service-mesh sidecar (mTLS with SPIFFE identities), seam-init and seam-control-plane" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.created=$created" \
  --label "org.opencontainers.image.documentation=deploy/README.md" \
  --label "org.opencontainers.image.base.name=scratch" \
  "$ctr"
rm -f "$archive"
"${B[@]}" commit --quiet --format oci "$ctr" "oci-archive:$archive:seam:$version" >/dev/null
echo "build.sh: wrote $archive (seam:$version; ${present[*]}; ${#copied[@]} files from the host)"
