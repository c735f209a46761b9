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
W=${VMH_DIR:-/var/tmp/vmharness}/zerofs-zfs
FAULT=${FAULT:-0}
. scripts/vm/lib.sh
build
setup 3 2G

waitfile() { while [ ! -e "$W/share/$1" ]; do sleep 1; done; }
if [ "$FAULT" = 1 ]; then
  (
    waitfile pgbench-running; sleep 10
    echo "host: kill -9 zerofs region 1 (pid $(cat "$W/region1.pid")) at $(date +%T)"
    kill -9 "$(cat "$W/region1.pid")"; touch "$W/share/server-killed"
    waitfile pool-degraded; sleep 5
    start 1
    # kill -9 left disk1 interrupted (docs/operations.md, "An interrupted
    # device"): the operator clears it before ZFS resilvers.
    "$BIN" nbd clear disk1 --admin "127.0.0.1:${ADMIN[1]}"
    echo "host: restarted zerofs region 1 (pid $(cat "$W/region1.pid")) at $(date +%T)"
    touch "$W/share/server-restarted"
  ) &
  agent_pid=$!   # lib.sh's cleanup stops it
fi

VM_PORTS="${PORTS[*]}" VM_SHARE=$W/share "$VMH/vm-run.sh" \
  "$VMH/examples/guest-nbd-zfs-pgbench.sh" "$FAULT" "${SCALE:-10}" "${PORTS[@]}"
