#!/bin/bash
# Guest side of scripts/vm/zfs-snapshot.sh.
set -uo pipefail
. /mnt/share/guest-lib.sh
MB=${1:-200}
fail() { echo "FAIL: $*"; zpool status 2>&1 | tail -20; exit 1; }
# at EXPORT PORT DEV: zerofs nbd attach EXPORT on port PORT as DEV.
at() {
  "$ZEROFS" nbd attach "$1" --server "$H:$2" --device "$3" >"/tmp/attach-${3##*/}.log" 2>&1 &
  echo $! >"/tmp/attach-${3##*/}.pid"
  for _ in $(seq 150); do grep -q 'msg=attached' "/tmp/attach-${3##*/}.log" && return 0; sleep 0.2; done
  echo "attach of $1 failed:"; cat "/tmp/attach-${3##*/}.log"; return 1
}
det() { local p; p=$(cat "/tmp/attach-${1##*/}.pid"); kill "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; }
sums() { (cd /tank && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

step "a pool striped over two zerofs devices of one server"
at disk0 20809 /dev/nbd0 && at disk1 20810 /dev/nbd1 || exit 1
zpool create -f -o ashift=12 -O atime=off tank /dev/nbd0 /dev/nbd1 || fail "zpool create"
mkdir -p /tank/data
for i in $(seq 1 $((MB / 8))); do head -c 8M /dev/urandom >/tank/data/f$i; done
echo "before the snapshot" >/tank/note
sync; zpool sync tank
sums >/tmp/before.sums
echo "RESULT: $(wc -l </tmp/before.sums) files, $(du -sh /tank | cut -f1) in the pool"

step "zerofs snapshot create s1, with the pool imported and idle"
echo "   host: $(ask cli 0 snapshot create s1)"
step "the mistake: more writes, then zpool destroy"
echo "after the snapshot" >/tank/note
head -c 16M /dev/urandom >/tank/data/late
zpool destroy tank || fail "zpool destroy"
det /dev/nbd0; det /dev/nbd1

step "import the pool read-only from the snapshot's exports"
echo "   host: $(ask cli 0 nbd list)"
at disk0@s1 20809 /dev/nbd0 && at disk1@s1 20810 /dev/nbd1 || exit 1
grep -h "msg=attached" /tmp/attach-nbd0.log | sed 's/^/   /'
[ "$(cat /sys/block/nbd0/ro)" = 1 ] || fail "nbd0 (disk0@s1) is not read-only"
zpool import -f -o readonly=on -d /dev/nbd0 -d /dev/nbd1 tank || fail "read-only import from the snapshot"
zpool status tank
sums >/tmp/snap.sums
cmp /tmp/before.sums /tmp/snap.sums || fail "files in the snapshot differ from before it"
[ "$(cat /tank/note)" = "before the snapshot" ] || fail "note: $(cat /tank/note)"
[ ! -e /tank/data/late ] || fail "a file written after the snapshot is in it"
echo "RESULT: read-only import from disk0@s1 + disk1@s1: $(wc -l </tmp/snap.sums) files, all equal to before the snapshot; pool $(zpool list -H -o health tank)"
zpool export tank
det /dev/nbd0; det /dev/nbd1

step "zerofs nbd restore disk0@s1 and disk1@s1, then import read-write"
echo "   host: $(ask cli 0 nbd restore disk0@s1)"
echo "   host: $(ask cli 0 nbd restore disk1@s1)"
at disk0 20809 /dev/nbd0 && at disk1 20810 /dev/nbd1 || exit 1
zpool import -f -d /dev/nbd0 -d /dev/nbd1 tank || fail "import after restore"
sums >/tmp/restored.sums
cmp /tmp/before.sums /tmp/restored.sums || fail "restored files differ"
echo "written after the restore" >/tank/note2; sync
zpool scrub -w tank
zpool status tank
echo "RESULT: after restore: files equal to before the snapshot; $(zpool status tank | grep -E '^ *scan:' | sed 's/^ *//'); $(zpool status tank | grep -E '^errors:')"
zpool export tank
det /dev/nbd0; det /dev/nbd1
echo "RESULT: PASS"
