#!/usr/bin/env bash
# rootfs.sh: the root filesystem of seam's image, shared by build.sh (buildah) and the
# Containerfile (docker build), so both images hold the same files.
#
# usage: rootfs.sh BUILD_DIR DEST_DIR     (DEST_DIR must not exist or be empty)
#   BUILD_DIR/sidecar/seam-sidecar, BUILD_DIR/sidecar/seam-init and
#   BUILD_DIR/control-plane/seam-control-plane go to DEST/usr/local/bin; with them
#   exactly the shared libraries ldd resolves (incl. BoringSSL's libssl/libcrypto
#   through the binaries' RUNPATH, libstdc++, the loader); for seam-init, iptables
#   (xtables-nft-multi + xtables-legacy-multi, their iptables*/ip6tables* names, the
#   extension modules they dlopen() and those modules' libraries); /etc/passwd and
#   /etc/group (root, seam 1337, nobody), /etc/nsswitch.conf, /etc/protocols, /tmp.
#   SEAM_IMAGE_PARTIAL=1 allows seam-init / seam-control-plane to be missing;
#   SEAM_IMAGE_STRIP=0 keeps the binaries' debug info (default: strip --strip-debug).
# Prints the binaries it placed on stdout (one line).
set -euo pipefail

die() { echo "rootfs.sh: $*" >&2; exit 1; }
(($# == 2)) || die "usage: rootfs.sh BUILD_DIR DEST_DIR"
build=$1 rootfs=$2
[[ -d "$build" ]] || die "build directory $build not found"
if [[ -e "$rootfs" && -n "$(ls -A "$rootfs")" ]]; then die "$rootfs is not empty"; fi

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
    echo "rootfs.sh: warning: ${bins[$name]} not built; the image will not contain $name" >&2
  fi
done

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
  # Debug info stays in the build tree (RelWithDebInfo); symbols stay for backtraces.
  if [[ "${SEAM_IMAGE_STRIP:-1}" == 1 ]]; then strip --strip-debug "$rootfs/usr/local/bin/$name"; fi
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
echo "${present[*]}"
