#!/bin/bash
# Guest side of scripts/vm/nbd-reconnect.sh: what each way of attaching does
# when zerofs restarts. Prints one RESULT line per check.
set -uo pipefail
. /mnt/share/guest-lib.sh
P=${PORTS[0]}
cd /tmp
dd if=/dev/urandom of=/tmp/pat1 bs=1M count=4 status=none
dd if=/dev/urandom of=/tmp/pat2 bs=1M count=4 status=none
result() { echo "RESULT: $*"; }
io() { # what: write pattern $2 at MiB offset $3 of $DEV with O_DIRECT, read it back, compare
  if dd if="$2" of="$DEV" bs=1M seek="$3" oflag=direct conv=fsync,notrunc status=none 2>/tmp/dd.err &&
    dd if="$DEV" of=/tmp/back bs=1M skip="$3" count=4 iflag=direct status=none 2>>/tmp/dd.err &&
    cmp -s /tmp/back "$2"; then
    result "$1: ok"
  else
    result "$1: FAILED ($(tr '\n' ' ' </tmp/dd.err))"
  fi
}

DEV=/dev/nbd0
step "A: Debian nbd-client, default (netlink) mode, -persist"
nbd-client "$H" "$P" /dev/nbd0 -N disk0 -b 4096 -t 20 -persist
sleep 1
result "A: nbd-client processes after attach: $(pgrep -c nbd-client)"
io "A: I/O before restart" /tmp/pat1 0
ask term 0
io "A: I/O after SIGTERM restart" /tmp/pat2 8
nbd-client -d /dev/nbd0; sleep 1

DEV=/dev/nbd1
step "B: Debian nbd-client -nonetlink -persist"
nbd-client "$H" "$P" /dev/nbd1 -N disk0 -b 4096 -t 20 -persist -nonetlink
sleep 1
result "B: nbd-client processes after attach: $(pgrep -c nbd-client)"
io "B: I/O before restart" /tmp/pat1 0
ask term 0 5 >/tmp/ask.out &
askpid=$!
sleep 1.5
io "B: I/O while zerofs is down (5 s)" /tmp/pat2 8
wait $askpid; cat /tmp/ask.out
sleep 3
result "B: size after reconnect: $(blockdev --getsize64 /dev/nbd1)"
io "B: I/O after SIGTERM restart" /tmp/pat2 16
nbd-client -d /dev/nbd1; sleep 1

DEV=/dev/nbd2
step "C: zerofs nbd attach"
attach 0 /dev/nbd2 --timeout 10s --dead-timeout 60s || exit 1
io "C: I/O before restart" /tmp/pat1 0
ask term 0 5 >/tmp/ask.out &
askpid=$!
sleep 1.5
t=$(date +%s.%N)
io "C: I/O while zerofs is down (5 s)" /tmp/pat2 8
echo "   that I/O took $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t}") s"
wait $askpid; cat /tmp/ask.out
io "C: I/O after SIGTERM restart" /tmp/pat1 16
result "C: size after restart: $(blockdev --getsize64 /dev/nbd2)"
step "C: kill -9 after an unflushed write"
dd if=/tmp/pat2 of=/dev/nbd2 bs=1M seek=24 oflag=direct conv=notrunc status=none
ask kill 0
if dd if=/dev/nbd2 of=/dev/null bs=1M count=1 iflag=direct status=none 2>/tmp/dd.err; then
  result "C: read after kill -9: succeeded (WRONG: the export must be interrupted)"
else
  result "C: read after kill -9: fails ($(tr '\n' ' ' </tmp/dd.err)) as it must"
fi
echo "   host: $(ask list 0)"
ask clear 0
io "C: I/O after zerofs nbd clear" /tmp/pat1 32
detach 0
result "C: device connected after the attach process stopped: $(cat /sys/block/nbd2/pid 2>/dev/null || echo none) size=$(blockdev --getsize64 /dev/nbd2)"
cat /tmp/attach0.log | sed 's/^/   attach: /'
dmesg | grep -i nbd | tail -20 | sed 's/^/   dmesg: /'
