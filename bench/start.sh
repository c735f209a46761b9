#!/usr/bin/env bash
# Start time of `zerofs run` with a full disk cache, against the same start
# with the cache files removed (the same metadata), and after kill -9 (the
# cache's index is rebuilt in the background). Then re-reads the device to
# show the cache came back warm: no store GET.
#
#   ZEROFS_BENCH_CACHE_GB  device size in GiB (default 4); the disk cache is half a GiB more
#
# Needs fio (scripts/install-test-deps.sh installs it). Prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
GB=${ZEROFS_BENCH_CACHE_GB:-4}
make -s build
BIN=$PWD/bin/zerofs
WORK=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; [ -n "${ZEROFS_BENCH_KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NBD=127.0.0.1:$(port); NFS=127.0.0.1:$(port); ADM=127.0.0.1:$(port)
sed -e "s/\"127.0.0.1:10809\"/\"$NBD\"/" -e "s/\"127.0.0.1:2049\"/\"$NFS\"/" -e "s/\"127.0.0.1:7311\"/\"$ADM\"/" \
    -e "s/^disk_size_gb = .*/disk_size_gb = $GB.5/" -e 's/^level = .*/level = "info"/' \
    "$OLDPWD/config.example.toml" > zerofs.toml

start() { # starts zerofs, waits until it serves; sets PID and SERVING (its start_to_serving)
  "$BIN" run -c zerofs.toml > "log.$1" 2>&1 &
  PID=$!
  for _ in $(seq 600); do
    if grep -q 'msg=serving' "log.$1"; then
      SERVING=$(grep -o 'start_to_serving=[^ ]*' "log.$1" | cut -d= -f2)
      return
    fi
    sleep 0.1
  done
  echo "zerofs did not start:" >&2; cat "log.$1" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }
gets() { "$BIN" status --json --admin "$ADM" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("requests",{}).get("main",{}).get("get",0))'; }
fio_nbd() { fio --name=b --ioengine=nbd --uri="nbd://$NBD/dev" --bs=1M --iodepth=8 --size=${GB}G "$@" --output=/dev/null; }

start fill
"$BIN" nbd create dev --size "${GB}G" --admin "$ADM" > /dev/null
fio_nbd --rw=write --end_fsync=1
used=$("$BIN" status --json --admin "$ADM" | python3 -c 'import json,sys; d=json.load(sys.stdin)["disk_cache"]; print("%d of %d slots" % (d["SlotsUsed"], d["SlotsTotal"]))')
stop

start full; full=$SERVING
before=$(gets); fio_nbd --rw=read; after=$(gets)
stop
rm -rf data/cache/frames
start empty; empty=$SERVING
stop
# Fill the cache again, then crash.
start refill; fio_nbd --rw=read; stop
start crash; kill -9 "$PID"; wait "$PID" || true
start crashed; crashed=$SERVING
sleep 1
until grep -q 'index rebuilt' log.crashed; do sleep 0.2; done
scan=$(grep -o 'scan_time=[^ ]*' log.crashed | cut -d= -f2)
stop

echo
echo "zerofs start, ${GB} GiB device, disk cache ${GB}.5 GiB ($used after writing the device)"
echo
echo "| start | start to serving |"
echo "|---|---|"
echo "| full disk cache, clean stop before (index loaded) | $full |"
echo "| cache files removed (same metadata) | $empty |"
echo "| full disk cache after kill -9 (index rebuilt in the background, in $scan) | $crashed |"
echo
echo "re-read of the whole device after the warm start: $((after - before)) store GETs"
# Metadata recovery: open the local metadata and replay what the WAL has
# past it; it must not grow with the data written.
ready() { grep 'msg="filesystem ready"' "log.$1" | grep -o ' elapsed=[^ ]*' | cut -d= -f2; }
echo
echo "metadata ready (\"filesystem ready\" elapsed): empty filesystem $(ready fill); ${GB} GiB written, clean stop $(ready full); after kill -9 $(ready crashed) ($(grep -o 'records=[0-9]*' log.crashed | head -1) replayed)"
