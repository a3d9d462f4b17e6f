#!/usr/bin/env bash
# gen.sh OUTDIR — a throw-away test PKI (ECDSA P-256, SPIFFE X509-SVIDs), made
# at test time with the openssl CLI (Envoy's test_data/certs.sh does the same).
# Good leaves and every kind of bad one the verifier must refuse:
#   ca.pem/ca.key              root, trust domain cluster.local
#   server.*, client.*         spiffe://cluster.local/ns/default/sa/{server,client}
#   client2.*, server2.*       second identities (rotation / hot-reload tests)
#   expired.*, notyet.*        validity in the past / future
#   twouri.*                   two URI SANs          nouri.*   no URI SAN (DNS only)
#   caleaf.*                   CA:TRUE leaf          kcs.*     keyCertSign on a leaf
#   othertd.*                  spiffe://other.org/... signed by our CA
#   denied.*                   spiffe://cluster.local/ns/evil/sa/mallory
#   rogue-ca.pem, rogue.*      an unrelated CA and a leaf it signed (same SPIFFE ID as client)
#   ca2.pem/ca2.key            a second root (root rotation), bundle-both.pem = ca+ca2
#   inter.pem/inter.key, chained.* (chain.pem: leaf+intermediate) signed via an intermediate
set -euo pipefail
out=${1:?usage: gen.sh OUTDIR}
mkdir -p "$out"; cd "$out"
TD=${SEAM_TEST_TD:-cluster.local}
KEYGEN=(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)

mkca() { # name subject [signer]
  "${KEYGEN[@]}" -out "$1.key" 2>/dev/null
  cat > "$1.ext" <<X
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
X
  if [[ -z "${3:-}" ]]; then
    openssl req -new -x509 -key "$1.key" -subj "/O=seam test/CN=$2" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$1.pem" 2>/dev/null
  else
    openssl req -new -key "$1.key" -subj "/O=seam test/CN=$2" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 3650 -sha256 \
      -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  fi
}

# leaf NAME SIGNER SAN [extra-ext-lines] [startdate enddate]
leaf() {
  local name=$1 signer=$2 san=$3 extra=${4:-} start=${5:-} end=${6:-}
  "${KEYGEN[@]}" -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "/O=seam test" -out "$name.csr" 2>/dev/null
  {
    [[ "$extra" == *basicConstraints* ]] || echo "basicConstraints=critical,CA:FALSE"
    [[ "$extra" == *keyUsage* ]] || echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n "$san" ]] && echo "subjectAltName=critical,$san"
    [[ -n "$extra" ]] && printf '%b\n' "$extra"
  } > "$name.ext"
  if [[ -n "$start" ]]; then
    # openssl x509 cannot set arbitrary dates; a one-shot `openssl ca` can.
    mkdir -p ca-db; : > ca-db/index.txt; [[ -f ca-db/serial ]] || echo 1000 > ca-db/serial
    cat > ca-db/ca.cnf <<C
[ca]
default_ca=d
[d]
database=ca-db/index.txt
serial=ca-db/serial
new_certs_dir=ca-db
default_md=sha256
policy=p
unique_subject=no
copy_extensions=none
[p]
organizationName=optional
C
    openssl ca -batch -config ca-db/ca.cnf -cert "$signer.pem" -keyfile "$signer.key" \
      -startdate "$start" -enddate "$end" -extfile "$name.ext" -notext \
      -in "$name.csr" -out "$name.pem" >/dev/null 2>&1
  else
    openssl x509 -req -in "$name.csr" -CA "$signer.pem" -CAkey "$signer.key" -CAcreateserial \
      -days 825 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  fi
  rm -f "$name.csr"
}

mkca ca "seam test root"
mkca ca2 "seam test root 2"
mkca rogue-ca "rogue root"
mkca inter "seam test intermediate" ca

U="URI:spiffe://$TD/ns/default/sa"
leaf server ca "$U/server"
leaf client ca "$U/client"
leaf server2 ca "$U/server"
leaf client2 ca "$U/client"
leaf server-ca2 ca2 "$U/server"
leaf client-ca2 ca2 "$U/client"
leaf expired ca "$U/client" "" 20200101000000Z 20200201000000Z
leaf notyet ca "$U/client" "" 20400101000000Z 20410101000000Z
leaf twouri ca "$U/client,URI:spiffe://$TD/ns/default/sa/other"
leaf nouri ca "DNS:client.default.svc"
leaf caleaf ca "$U/client" "basicConstraints=critical,CA:TRUE"
leaf kcs ca "$U/client" "keyUsage=critical,digitalSignature,keyCertSign"
leaf othertd ca "URI:spiffe://other.org/ns/default/sa/client"
leaf denied ca "URI:spiffe://$TD/ns/evil/sa/mallory"
leaf rogue rogue-ca "$U/client"
leaf chained inter "$U/client"
cat chained.pem inter.pem > chained-chain.pem
cat ca.pem ca2.pem > bundle-both.pem
rm -rf ./*.ext ./*.srl ./*.csr ca-db
chmod 600 ./*.key
echo "test PKI in $PWD"
