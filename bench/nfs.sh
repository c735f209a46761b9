#!/usr/bin/env bash
# NFS benchmark: zerofs against nfs-ganesha (Debian, FSAL VFS) as a
# baseline, in one run, on this machine. Prints the results; writes nothing
# outside a temporary directory.
#
#   1 GiB sequential write and read in 1 MiB requests (8 in flight; UNSTABLE
#   writes then one COMMIT), 4 KiB random read and write (32 in flight) over
#   that file, and create/stat/remove of 10,000 small files one at a time,
#   by the Go client in nfs/bench_test.go; then nfs-cp (libnfs) of a 1 GiB
#   file in and out.
#
# zerofs runs in its own process (the nfs test binary in server mode) on a
# file:// store with production defaults: encryption, 64 KiB chunks, the WAL
# in the store, COMMIT = fsync of a WAL record. ganesha exports a directory
# on the same disk. Both listen on loopback ports in 30000-39999.
#
# Environment: NFS_BENCH_NO_GANESHA=1 skips the baseline; NFS_BENCH_QUICK=1
# runs a tenth of the I/O (a smoke test of the script).
set -euo pipefail
cd "$(dirname "$0")/.."

TMP=$(mktemp -d /tmp/zerofs-nfs-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { echo "nfs.sh: $1 missing: run scripts/install-test-deps.sh" >&2; exit 1; }; }
need nfs-cp

port() { # a free loopback port in 30000-39999
  local p
  for _ in $(seq 100); do
    p=$((30000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "nfs.sh: no free port" >&2; exit 1
}

SEQ_N=1024 RAND_N=50000 FILES_N=10000 CP_MIB=1024
if [ -n "${NFS_BENCH_QUICK:-}" ]; then SEQ_N=128 RAND_N=5000 FILES_N=1000 CP_MIB=128; fi

echo "building the nfs test binary"
go test -c -o "$TMP/nfs.test" ./nfs
head -c $((CP_MIB << 20)) /dev/urandom >"$TMP/cp.src"

RESULTS="$TMP/results"
: >"$RESULTS"

# run_target NAME NFSPORT MOUNTPORT EXPORT
run_target() {
  local name=$1 nport=$2 mport=$3 export=$4
  echo "== $name"
  for spec in "SeqWrite1M $SEQ_N" "SeqRead1M $SEQ_N" "RandRead4K $RAND_N" "RandWrite4K $RAND_N" "SmallFiles $FILES_N"; do
    set -- $spec
    ZEROFS_NFS_BENCH_NFS=127.0.0.1:$nport ZEROFS_NFS_BENCH_MOUNT=127.0.0.1:$mport ZEROFS_NFS_BENCH_EXPORT=$export \
      "$TMP/nfs.test" -test.run '^$' -test.bench "^BenchmarkNFS$1\$" -test.benchtime "${2}x" |
      grep '^BenchmarkNFS' | tee -a /dev/stderr | sed "s/^/$name /" >>"$RESULTS"
  done
  local url="nfs://127.0.0.1${export%/}/cp.bin?nfsport=$nport&mountport=$mport&version=3"
  [ "$export" = "/" ] && url="nfs://127.0.0.1//cp.bin?nfsport=$nport&mountport=$mport&version=3"
  local t0 t1 t2
  t0=$(date +%s.%N)
  nfs-cp "$TMP/cp.src" "$url" >/dev/null
  t1=$(date +%s.%N)
  nfs-cp "$url" "$TMP/cp.dst" >/dev/null
  t2=$(date +%s.%N)
  cmp -s "$TMP/cp.src" "$TMP/cp.dst" || { echo "nfs.sh: $name: nfs-cp copy differs" >&2; exit 1; }
  rm -f "$TMP/cp.dst"
  awk -v n="$name" -v m="$CP_MIB" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
    printf "%s nfs-cp-in %d MiB %.2f s %.1f MB/s\n", n, m, b-a, m*1.048576/(b-a)
    printf "%s nfs-cp-out %d MiB %.2f s %.1f MB/s\n", n, m, c-b, m*1.048576/(c-b) }' | tee -a "$RESULTS"
}

# --- zerofs
ZPORT=$(port)
mkdir -p "$TMP/zerofs/store" "$TMP/zerofs/state"
ZEROFS_NFS_CHILD=1 ZEROFS_NFS_CHILD_BENCH=1 ZEROFS_NFS_CHILD_STORE="$TMP/zerofs/store" \
  ZEROFS_NFS_CHILD_STATE="$TMP/zerofs/state" ZEROFS_NFS_CHILD_ADDR=127.0.0.1:$ZPORT \
  "$TMP/nfs.test" -test.run '^TestNFSServerProcess$' >"$TMP/zerofs.log" 2>&1 &
ZPID=$!
PIDS+=("$ZPID")
for _ in $(seq 100); do grep -q '^listening' "$TMP/zerofs.log" && break; sleep 0.1; done
grep -q '^listening' "$TMP/zerofs.log" || { cat "$TMP/zerofs.log"; exit 1; }
run_target zerofs "$ZPORT" "$ZPORT" /
kill "$ZPID"; wait "$ZPID" || true

# --- nfs-ganesha baseline
if [ -z "${NFS_BENCH_NO_GANESHA:-}" ]; then
  if ! command -v ganesha.nfsd >/dev/null || ! dpkg-query -W -f='${Status}' nfs-ganesha-vfs 2>/dev/null | grep -q "ok installed"; then
    echo "installing nfs-ganesha nfs-ganesha-vfs rpcbind for the baseline"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      nfs-ganesha nfs-ganesha-vfs rpcbind >/dev/null
  fi
  # ganesha registers with rpcbind; start one if none runs (and stop it after).
  if ! pgrep -x rpcbind >/dev/null; then
    rpcbind -f -w &
    PIDS+=("$!")
    sleep 0.5
  fi
  mkdir -p "$TMP/ganesha/export" /var/lib/nfs/ganesha
  GN=$(port) GM=$(port)
  cat >"$TMP/ganesha/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    NFS_Port = $GN; MNT_Port = $GM; NLM_Port = $(port); Rquota_Port = $(port);
    Protocols = 3; Enable_NLM = false; Enable_RQUOTA = false; Bind_addr = 127.0.0.1;
}
NFSV4 { Graceless = true; }
EXPORT {
    Export_Id = 77; Path = $TMP/ganesha/export; Pseudo = /bench;
    Access_Type = RW; Squash = No_Root_Squash; Protocols = 3; Transports = TCP; SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
CONF
  ganesha.nfsd -F -L "$TMP/ganesha/ganesha.log" -f "$TMP/ganesha/ganesha.conf" -p "$TMP/ganesha/pid" &
  GPID=$!
  PIDS+=("$GPID")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$GN") 2>/dev/null && break; sleep 0.1; done
  sleep 1
  run_target ganesha "$GN" "$GM" "$TMP/ganesha/export"
  kill "$GPID"; wait "$GPID" || true
fi

echo
echo "== summary (one run; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
awk '
  /BenchmarkNFS/ {
    name = $2; sub(/-[0-9]+$/, "", name); sub(/^BenchmarkNFS/, "", name)
    v = ""
    for (i = 3; i <= NF; i++) {
      if ($i == "MB/s") v = v sprintf("%9.1f MB/s", $(i-1))
      if ($i == "IOPS") v = v sprintf("  %8.0f IOPS", $(i-1))
    }
    if (v == "") for (i = 3; i <= NF; i++) if ($i == "ns/op") v = sprintf("%9.1f us/op  %8.0f op/s", $(i-1)/1000, 1e9/$(i-1))
    printf "%-8s %-20s %s\n", $1, name, v
  }
  /nfs-cp/ { printf "%-8s %-20s %9.1f MB/s  (%s MiB in %s s)\n", $1, $2, $7, $3, $5 }
' "$RESULTS"
