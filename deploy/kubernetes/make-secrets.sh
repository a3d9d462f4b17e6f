#!/usr/bin/env bash
# make-secrets.sh: the cluster-specific objects seam's manifests need, kept out of git:
#   Secret    seam-system/seam-ca       the mesh root CA (tls.crt + tls.key) the control plane signs with
#   ConfigMap seam-system/seam-jwks     the cluster's service-account issuer keys (JWKS), so the
#                                       control plane verifies projected tokens offline
#   ConfigMap <ns>/seam-ca-root         the root certificate only (ca.crt), in every meshed namespace
#
# usage: make-secrets.sh [--ca-cert FILE --ca-key FILE] [--jwks FILE]
#                        [--namespaces "seam-demo seam-classic"] [--out DIR]
#   Without --ca-cert/--ca-key a new ECDSA P-256 root is generated (openssl) into DIR
#   (default deploy/kubernetes/local/, gitignored).
#   Without --jwks the JWKS is read from the cluster: kubectl get --raw /openid/v1/jwks.
#   Without --out the objects are applied with kubectl apply; with --out they are only
#   written to DIR/secrets.yaml (mode 0600: it holds the CA key).
# Re-running with the same --ca-cert/--ca-key is idempotent. Rotating the root: see deploy/README.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ca_cert="" ca_key="" jwks="" out="" apply=1
namespaces="seam-demo seam-classic"
die() { echo "make-secrets.sh: $*" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --ca-cert) ca_cert=${2:?--ca-cert needs a file}; shift 2 ;;
    --ca-key) ca_key=${2:?--ca-key needs a file}; shift 2 ;;
    --jwks) jwks=${2:?--jwks needs a file}; shift 2 ;;
    --namespaces) namespaces=${2:?--namespaces needs a list}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; apply=0; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n "$ca_cert" && -z "$ca_key" || -z "$ca_cert" && -n "$ca_key" ]] && die "--ca-cert and --ca-key go together"
[[ -z "$jwks" && $apply -eq 0 ]] && die "--out needs --jwks FILE (get it with: kubectl get --raw /openid/v1/jwks > jwks.json)"
dir=${out:-$here/local}
mkdir -p "$dir"
chmod 700 "$dir"

if [[ -z "$ca_cert" ]]; then
  ca_cert=$dir/ca.crt ca_key=$dir/ca.key
  if [[ ! -s "$ca_cert" || ! -s "$ca_key" ]]; then
    umask 077
    openssl ecparam -name prime256v1 -genkey -noout -out "$ca_key.tmp"
    openssl pkcs8 -topk8 -nocrypt -in "$ca_key.tmp" -out "$ca_key"
    rm -f "$ca_key.tmp"
    openssl req -x509 -new -key "$ca_key" -sha256 -days 3650 -out "$ca_cert" \
      -subj "/O=seam/CN=seam root CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash"
    umask 022
    echo "make-secrets.sh: generated a new root CA in $dir (keep ca.key safe)" >&2
  fi
fi
[[ -r "$ca_cert" ]] || die "cannot read CA certificate $ca_cert"
[[ -r "$ca_key" ]] || die "cannot read CA key $ca_key"
openssl x509 -in "$ca_cert" -noout 2>/dev/null || die "$ca_cert is not a PEM certificate"
openssl pkey -in "$ca_key" -noout 2>/dev/null || die "$ca_key is not a PEM private key"
# The key must belong to the certificate (compare public keys).
[[ "$(openssl x509 -in "$ca_cert" -noout -pubkey)" == "$(openssl pkey -in "$ca_key" -pubout)" ]] \
  || die "$ca_key does not match $ca_cert"

if [[ -z "$jwks" ]]; then
  jwks=$dir/jwks.json
  kubectl get --raw /openid/v1/jwks > "$jwks" || die "could not read the cluster's JWKS (kubectl get --raw /openid/v1/jwks)"
fi
[[ -r "$jwks" ]] || die "cannot read JWKS $jwks"
grep -q '"keys"' "$jwks" || die "$jwks is not a JWKS (no \"keys\")"

b64() { base64 -w0 < "$1"; }
indent() { sed 's/^/    /' "$1"; }
yaml=$(
  for ns in seam-system $namespaces; do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns"
  done
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: seam-ca\n  namespace: seam-system\n'
  printf 'type: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n' "$(b64 "$ca_cert")" "$(b64 "$ca_key")"
  printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: seam-jwks\n  namespace: seam-system\n'
  printf 'data:\n  jwks.json: |\n%s\n' "$(indent "$jwks")"
  for ns in $namespaces; do
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: seam-ca-root\n  namespace: %s\n' "$ns"
    printf 'data:\n  ca.crt: |\n%s\n' "$(indent "$ca_cert")"
  done
)
if ((apply)); then
  printf '%s\n' "$yaml" | kubectl apply -f -
else
  (umask 077; printf '%s\n' "$yaml" > "$dir/secrets.yaml")
  echo "make-secrets.sh: wrote $dir/secrets.yaml" >&2
fi
