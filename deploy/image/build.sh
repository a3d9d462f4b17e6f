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
# The file set comes from rootfs.sh (shared with the Containerfile). Nothing else: exactly
# the shared libraries `ldd` lists for these binaries (BoringSSL's
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

[[ -x "$build/sidecar/seam-sidecar" ]] || die "$build/sidecar/seam-sidecar not built (build with cmake first)"

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

present=$(bash "$(dirname "$0")/rootfs.sh" "$build" "$rootfs")

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
"${B[@]}" commit --quiet --format oci --disable-compression=false "$ctr" "oci-archive:$archive:seam:$version" >/dev/null
echo "build.sh: wrote $archive (seam:$version; $present; $(find "$rootfs" -type f | wc -l) files)"
