#!/usr/bin/env bash
# NBD over TLS with the kernel's nbd driver (not part of make test;
# ../shared/vmharness VM). One zerofs on the host with
#   tls = "require", tls_verify_peer = true, tls_min_version = "1.2",
#   [[servers.nbd.access]] client = "vm-client", exports = ["disk*"]
# serving disk1 and disk2, and in the VM (scripts/vm/guest-nbd-tls.sh):
#   1. Debian 12's nbd-client 3.24 with -certfile/-keyfile/-cacertfile attaches
#      disk1; ext4, 200 MB written, sha256 checked after a re-attach.
#   2. zerofs nbd attach disk2 --tls DIR; the same, plus a SIGTERM restart of
#      zerofs while dd writes to the mounted filesystem.
#   3. refusals: plaintext nbd-client, nbd-client with a certificate no rule
#      allows (CN=intruder), zerofs nbd attach with either; the zerofs log
#      must name each refusal. Also: nbd-client 3.24 speaks only TLS 1.2, so
#      a second zerofs with the default tls_min_version = "1.3" refuses it.
# Prints a PASS/FAIL summary; exits non-zero if any check failed.
#   scripts/vm/nbd-tls.sh            (MB=200 sets the MB written per part)
# GUEST_ZEROFS=path: run that (static) zerofs binary in the VM instead of
# the one built from the tree (to try a candidate fix of attach).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${VMH_DIR:-/var/tmp/vmharness}/zerofs-nbd-tls
. scripts/vm/lib.sh
# Ports of their own: lib.sh's 20809... are used by other tests on this
# machine, whose clients would show up in these logs.
PORTS=(28809 28810 28811)
ADMIN=(38311 38312 38313)
MB=${MB:-200}
GUEST_HOST=10.0.2.100 # $VMH_HOST in the VM: guestfwd's address of the host

# pki DIR: a CA; a server certificate for the guest's address of the host (IP
# SAN) and "zerofs" (DNS SAN); client certificates CN=vm-client and
# CN=intruder. EC P-256. GnuTLS (nbd-client) wants the CA's basicConstraints
# critical and keyUsage keyCertSign,cRLSign.
pki() {
  local d=$1
  mkdir -p "$d/ca" "$d/server" "$d/client" "$d/intruder"
  cat >"$d/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:$GUEST_HOST, DNS:zerofs, IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  local o=(-config "$d/openssl.cnf")
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "${o[@]}" \
    -subj "/CN=zerofs vm test CA" -extensions ca -days 30 \
    -keyout "$d/ca/ca-key.pem" -out "$d/ca/ca-cert.pem" 2>/dev/null
  leaf() { # NAME DIR FILE-PREFIX EXTENSIONS
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "${o[@]}" \
      -subj "/CN=$1" -keyout "$d/$2/$3-key.pem" -out "$d/$2/$3.csr" 2>/dev/null
    openssl x509 -req -in "$d/$2/$3.csr" -CA "$d/ca/ca-cert.pem" -CAkey "$d/ca/ca-key.pem" \
      -CAcreateserial -days 30 -extfile "$d/openssl.cnf" -extensions "$4" \
      -out "$d/$2/$3-cert.pem" 2>/dev/null
    rm -f "$d/$2/$3.csr"
    cp "$d/ca/ca-cert.pem" "$d/$2/"
  }
  leaf zerofs server server server
  leaf vm-client client client client
  leaf intruder intruder client client
  chmod 600 "$d"/*/*-key.pem
  for c in server client intruder; do
    openssl verify -CAfile "$d/ca/ca-cert.pem" "$d/$c/"*-cert.pem >/dev/null
  done
}

tls_conf() { # $1 = tls_min_version
  cat <<EOF
tls = "require"
tls_certificates = "$W/pki/server"
tls_verify_peer = true
tls_min_version = "$1"
[[servers.nbd.access]]
client = "vm-client"
exports = ["disk*"]
EOF
}

t_start=$(date +%s)
build
[ -n "${GUEST_ZEROFS:-}" ] && cp "$GUEST_ZEROFS" "$W/share/zerofs" && echo "guest zerofs: $GUEST_ZEROFS"
mkdir -p "$W/pki"
pki "$W/pki"
# The guest gets the client sides only (never the CA key).
mkdir -p "$W/share/pki"
cp -r "$W/pki/client" "$W/pki/intruder" "$W/share/pki/"
echo "PKI: $(openssl x509 -in "$W/pki/server/server-cert.pem" -noout -ext subjectAltName | tail -1 | sed 's/^ *//')"

# region 0: the zerofs under test (TLS 1.2 allowed, for nbd-client 3.24);
# region 1: the same with the default tls_min_version = "1.3".
mkdir -p "$W/region0" "$W/region1"
NBD_EXTRA=$(tls_conf 1.2) config 0 >"$W/region0.toml"
NBD_EXTRA=$(tls_conf 1.3) config 1 >"$W/region1.toml"
start 0
start 1
trap cleanup EXIT
for d in disk1 disk2; do "$BIN" nbd create "$d" --size 1G --admin "127.0.0.1:${ADMIN[0]}" >/dev/null; done
"$BIN" nbd create disk1 --size 1G --admin "127.0.0.1:${ADMIN[1]}" >/dev/null
grep -h "serving NBD" "$W/region0.log" "$W/region1.log" | sed 's/^/host: /'

set +e
# Not a pipe: vm starts the agent in this shell (agent_pid), and the agent
# must not keep tee's input open.
VM_TIMEOUT=${VM_TIMEOUT:-3000} vm guest-nbd-tls.sh "$MB" "${PORTS[0]}" "${PORTS[1]}" > >(tee "$W/vm.out") 2>&1
vm_rc=$?
set -e
kill "$agent_pid" 2>/dev/null || true
sleep 1 # tee ends once the agent is gone

# Host side of 3: the zerofs logs name each refusal, with the peer and why.
L0=$W/region0.log L1=$W/region1.log
host_check() { # NAME N FILE PATTERN...: PASS if N lines of FILE match every PATTERN
  local name=$1 want=$2 f=$3 lines p n; shift 3
  lines=$(cat "$f")
  for p in "$@"; do lines=$(grep -F -- "$p" <<<"$lines" || true); done
  n=$(grep -c . <<<"$lines" || true)
  if [ "$n" -ge "$want" ]; then
    echo "RESULT: PASS $name: $n lines, the last: $(tail -1 <<<"$lines")" | tee -a "$W/vm.out"
  else
    echo "RESULT: FAIL $name: $n lines (want $want) with: $*" | tee -a "$W/vm.out"
  fi
}
host_check "3 zerofs log names the plaintext refusals (3a, 3d)" 2 "$L0" "level=WARN" "did not start TLS" "remote=127.0.0.1:" "option=NBD_OPT_GO"
host_check "3 zerofs log names the intruder refusals (3b, 3c)" 2 "$L0" "level=WARN" "no access rule allows this client" "client=\"certificate intruder\"" "export=disk1" "remote=127.0.0.1:"
host_check "3 zerofs log names the TLS-version refusal of nbd-client 3.24 (3e)" 1 "$L1" "level=WARN" "negotiation failed" "TLS handshake" "unsupported versions" "remote=127.0.0.1:"
host_check "3 zerofs log shows attach refusing the server's name (3g)" 1 "$L0" "level=WARN" "negotiation failed" "remote error: tls: bad certificate" "remote=127.0.0.1:"
for f in "$W"/share/attach-*.log; do
  [ -e "$f" ] && echo "--- $(basename "$f"): $(wc -l <"$f") lines, $(grep -c 'reconnected to' "$f") 'reconnected', $(grep -c 'lost its connection; reconnecting' "$f") 'lost its connection'"
done
echo "--- zerofs log lines with refused / negotiation failed (region 0, then region 1):"
grep -a -h -E "refused|negotiation failed" "$L0" | sed 's/^/  r0: /' | tail -25
grep -a -h -E "refused|negotiation failed" "$L1" | sed 's/^/  r1: /' | tail -10
echo "--- zerofs restarts (region 0): $(grep -c 'zerofs is ready' "$L0") starts"

echo
echo "================ SUMMARY (nbd-tls.sh, $(since "$t_start") s) ================"
grep -a '^FIGURE:' "$W/vm.out" | sed 's/^FIGURE: /  /' || true
grep -a '^RESULT:' "$W/vm.out" | sed 's/^RESULT: /  /'
pass=$(grep -a -c '^RESULT: PASS' "$W/vm.out" || true)
fail=$(grep -a -c '^RESULT: FAIL' "$W/vm.out" || true)
if [ "$vm_rc" -ne 0 ] || [ "$fail" -ne 0 ] || [ "$pass" -eq 0 ]; then
  echo "FAIL: $pass passed, $fail failed, VM exit $vm_rc (logs: $W/region0.log, $W/vm.out)"
  exit 1
fi
echo "PASS: all $pass checks passed (logs: $W/region0.log, $W/vm.out)"
