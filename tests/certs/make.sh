#!/usr/bin/env bash
# Regenerates the test PKI (valid for 100 years): a CA, a server certificate for localhost and
# 127.0.0.1, a client certificate from that CA, and a client from an unrelated CA. Test-only.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days -subj "/CN=fiscalbill test CA" -keyout ca.key -out ca.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days -subj "/CN=rogue CA" -keyout rogue-ca.key -out rogue-ca.pem
issue() { # name, ca, subject, extensions
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$3" -keyout "$1.key" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days $days -extfile <(printf '%s' "$4") -out "$1.pem"
    rm "$1.csr"
}
issue server ca "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
issue client ca "/CN=collection-svc" "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
issue rogue-client rogue-ca "/CN=intruder" "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
rm -f ./*.srl ca.key rogue-ca.key
