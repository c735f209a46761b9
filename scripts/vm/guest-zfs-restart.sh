#!/bin/bash
# Guest side of scripts/vm/zfs-restart.sh: a 3-way ZFS mirror over three
# zerofs (attached with `zerofs nbd attach`), PostgreSQL and pgbench on it;
# (a) SIGTERM + start of region 1 while pgbench runs, (b) kill -9 of
# region 1 while pgbench runs, then clear, resilver and scrub.
set -uo pipefail
. /mnt/share/guest-lib.sh
SCALE=${1:-5}; SECS=${2:-90}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
pg() { runuser -u postgres -- "$@"; }
health() { zpool list -H -o health tank; }
errors() { zpool status -p tank | awk '$1 ~ /^(tank|mirror-0|nbd[0-9])$/ {r+=$3; w+=$4; c+=$5} END {print r+0, w+0, c+0}'; }
fail() { echo "FAIL: $*"; zpool status tank; exit 1; }
cd /tmp

step "attach three zerofs devices"
for i in 0 1 2; do attach $i /dev/nbd$i || exit 1; done
zpool create -f -o ashift=12 -O atime=off -O compression=lz4 tank mirror /dev/nbd0 /dev/nbd1 /dev/nbd2 || exit 1
zfs create -o recordsize=8k -o logbias=latency -o mountpoint=/tank/pg tank/pg
chown postgres:postgres /tank/pg
pg "$PGBIN/initdb" -D /tank/pg/data >/tmp/initdb.log || { cat /tmp/initdb.log; exit 1; }
pg "$PGBIN/pg_ctl" -D /tank/pg/data -l /tmp/pg.log -w -t 300 \
  -o "-c shared_buffers=128MB -c max_connections=40 -c unix_socket_directories=/run/postgresql" start >/dev/null
pg "$PGBIN/createdb" bench
step "pgbench -i -s $SCALE"
pg "$PGBIN/pgbench" -i -s "$SCALE" -q bench 2>&1 | tail -1

# run_with PHASE ACTION: pgbench for SECS with ACTION on region 1 after 20 s.
run_with() {
  pg "$PGBIN/pgbench" -c 8 -j 2 -T "$SECS" -P 5 bench >"/tmp/pgbench-$1.out" 2>&1 &
  bp=$!
  sleep 20
  step "$1: host does '$2 1' while pgbench runs"
  ask $2 1
}
pgresult() { # PHASE: tps, failed transactions, slowest 5 s interval
  local f=/tmp/pgbench-$1.out
  grep '^progress' "$f"
  echo "RESULT: $1: $(grep -E '^tps' $f | head -1); $(grep -E 'failed transactions' $f);" \
    "slowest 5 s interval: $(awk '/^progress:/ {print $4}' $f | sort -n | head -1) tps;" \
    "highest 5 s mean latency: $(awk '/^progress:/ {print $7}' $f | sort -n | tail -1) ms"
}

step "(a) planned restart: SIGTERM + start of region 1"
zpool clear tank
run_with a term
wait $bp || { cat /tmp/pgbench-a.out; fail "pgbench failed in (a)"; }
zpool status tank
grep -h "reconnected\|lost its" /tmp/attach1.log | tail -2
pgresult a
echo "RESULT: a: pool $(health), read/write/checksum errors $(errors)"
[ "$(health)" = ONLINE ] && [ "$(errors)" = "0 0 0" ] || fail "(a) pool not clean"

step "(b) crash: kill -9 + start of region 1"
run_with b kill
for n in $(seq 120); do [ "$(health)" != ONLINE ] || [ "$(errors)" != "0 0 0" ] && break; sleep 1; done
step "(b) region 1 after kill -9: pool $(health), errors $(errors) after ${n}s"
zpool status tank
echo "RESULT: b: after kill -9: pool $(health), errors (r w c) $(errors), nbd1 $(zpool status tank | awk '$1=="nbd1" {print $2}')"
[ "$(health)" != ONLINE ] || [ "$(errors)" != "0 0 0" ] || fail "(b) the crashed member did not fault"
echo "   host: $(ask list 1)"
ask clear 1
zpool clear tank nbd1 || fail "zpool clear"
zpool online tank nbd1 2>/dev/null
t=$(date +%s); zpool wait -t resilver tank
step "(b) resilver done in $(( $(date +%s) - t ))s"
wait $bp; echo "pgbench exit $?"
pgresult b
zpool status tank | grep -E "scan|resilver"
step "(b) scrub"
zpool scrub -w tank
zpool status tank
echo "RESULT: b: after clear+resilver+scrub: pool $(health), errors $(errors), $(zpool status tank | grep -E '^ *scan:' | sed 's/^ *//'); $(zpool status tank | grep -E '^errors:')"
pg "$PGBIN/pg_ctl" -D /tank/pg/data -m fast -w stop >/dev/null
zpool export tank
for i in 0 1 2; do detach $i; done
grep -h "" /tmp/attach1.log | sed 's/^/   attach1: /'
