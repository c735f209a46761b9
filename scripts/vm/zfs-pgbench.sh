#!/usr/bin/env bash
# End-to-end check through the real kernel clients (not part of make test):
# three zerofs processes stand for three regions, each with its own store and
# one NBD export; a VM (../shared/vmharness, built with its build-image.sh)
# attaches the three with nbd-client, builds a 3-way ZFS mirror, runs
# PostgreSQL and pgbench on it.
#
#   scripts/vm/zfs-pgbench.sh            # plain run
#   FAULT=1 scripts/vm/zfs-pgbench.sh    # kill -9 region 1's zerofs during
#                                        # pgbench, restart it: the pool must
#                                        # degrade, resilver and scrub clean
#   SCALE=10 (pgbench -i scale)
set -euo pipefail
cd "$(dirname "$0")/../.."
VMH=${VMH:-$PWD/../shared/vmharness}
VMH_DIR=${VMH_DIR:-/var/tmp/vmharness}
W=$VMH_DIR/zerofs-zfs
FAULT=${FAULT:-0}
PORTS=(20809 20810 20811)
ADMIN=(37311 37312 37313)
make build >/dev/null
BIN=$PWD/bin/zerofs
rm -rf "$W"; mkdir -p "$W/share"
export ZEROFS_PASSWORD=vm-test-password

config() { # $1 = region
  cat <<CONF
[cache]
dir = "$W/region$1/cache"
disk_size_gb = 0.5
memory_size_gb = 0.25
[storage]
url = "file://$W/region$1/store"
encryption_password = "\${ZEROFS_PASSWORD}"
[servers.nbd]
addresses = ["127.0.0.1:${PORTS[$1]}"]
[servers.nfs]
addresses = []
[servers.admin]
address = "127.0.0.1:${ADMIN[$1]}"
CONF
}
start() { # $1 = region
  "$BIN" run -c "$W/region$1.toml" >>"$W/region$1.log" 2>&1 &
  echo $! >"$W/region$1.pid"
  for _ in $(seq 100); do grep -q "zerofs is ready" "$W/region$1.log" && return; sleep 0.2; done
  echo "region $1 did not start:"; tail -20 "$W/region$1.log"; exit 1
}
cleanup() {
  set +e
  [ -n "${watcher:-}" ] && kill "$watcher" 2>/dev/null
  for i in 0 1 2; do [ -e "$W/region$i.pid" ] && kill "$(cat "$W/region$i.pid")" 2>/dev/null; done
  wait 2>/dev/null
  return 0
}
trap cleanup EXIT

for i in 0 1 2; do
  mkdir -p "$W/region$i"
  config $i >"$W/region$i.toml"
  start $i
  "$BIN" nbd create "disk$i" --size 2G --admin "127.0.0.1:${ADMIN[$i]}"
done

waitfile() { while [ ! -e "$W/share/$1" ]; do sleep 1; done; }
if [ "$FAULT" = 1 ]; then
  (
    waitfile pgbench-running; sleep 10
    echo "host: kill -9 zerofs region 1 (pid $(cat "$W/region1.pid")) at $(date +%T)"
    kill -9 "$(cat "$W/region1.pid")"; touch "$W/share/server-killed"
    waitfile pool-degraded; sleep 5
    start 1
    echo "host: restarted zerofs region 1 (pid $(cat "$W/region1.pid")) at $(date +%T)"
    touch "$W/share/server-restarted"
  ) &
  watcher=$!
fi

VM_PORTS="${PORTS[*]}" VM_SHARE=$W/share "$VMH/vm-run.sh" \
  "$VMH/examples/guest-nbd-zfs-pgbench.sh" "$FAULT" "${SCALE:-10}" "${PORTS[@]}"
