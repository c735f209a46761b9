#!/bin/bash
# Guest side of scripts/vm/nbd-tls.sh: NBD over TLS from the kernel's nbd
# driver, through Debian's nbd-client 3.24 and through zerofs nbd attach
# --tls. Prints "RESULT: PASS|FAIL name: detail" per check and "FIGURE: ..."
# lines for the summary. $1 = MB written per part (default 200), $2 = port
# of the zerofs under test, $3 = port of the one with tls_min_version 1.3.
set -uo pipefail
. /mnt/share/guest-lib.sh
MB=${1:-200}
P=${2:-${PORTS[0]}}   # zerofs under test: tls = require, verify peer, TLS >= 1.2
P13=${3:-${PORTS[1]}} # the same with tls_min_version = "1.3"
cd /tmp

result() { echo "RESULT: $1 $2: ${*:3}"; }
figure() { echo "FIGURE: $*"; }
now() { date +%s.%N; }
secs() { awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $1}"; }
rate() { awk "BEGIN{printf \"%.1f\", $1 / $2}"; } # MB, seconds
sum() { sha256sum "$1" | cut -d' ' -f1; }
# limit SECS CMD...: run CMD, give up waiting after SECS (exit 124, CMD left
# running: I/O stuck on an nbd device cannot be killed).
limit() {
  local end=$((SECONDS + $1)) pid; shift
  "$@" & pid=$!
  while ((SECONDS < end)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; return; }
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null || { wait "$pid"; return; }
  echo "   (still running after $s s: $*)"
  return 124
}
connected() { [ "$(cat "/sys/block/$1/size" 2>/dev/null || echo 0)" != 0 ]; }
relays() { pgrep -x nbd-client | tr '\n' ' '; }

PKI=/tmp/pki
cp -r "$S/pki" "$PKI"
C=$PKI/client I=$PKI/intruder
certs() { echo -certfile "$1/client-cert.pem" -keyfile "$1/client-key.pem" -cacertfile "$1/ca-cert.pem"; }

step "nbd-client $(dpkg-query -W -f '${Version}' nbd-client 2>/dev/null) TLS flags (nbd-client -h):"
nbd-client -h 2>&1 | grep -i -A2 'certfile' | sed 's/^/   /'

step "random data: 2 x $MB MB in /tmp (tmpfs)"
t=$(now)
head -c "${MB}M" /dev/urandom >/tmp/rand1
head -c "${MB}M" /dev/urandom >/tmp/rand2
sum1=$(sum /tmp/rand1) sum2=$(sum /tmp/rand2)
echo "   made in $(secs "$t") s; sha256 rand1 $sum1, rand2 $sum2"

# ---------------------------------------------------------------------------
step "1: nbd-client with -certfile/-keyfile/-cacertfile attaches disk1 (TLS) on /dev/nbd0"
NC=(-N disk1 -b 4096 -t 30)
t=$(now)
# shellcheck disable=SC2046
if limit 120 nbd-client "$H" "$P" /dev/nbd0 "${NC[@]}" $(certs "$C") >/tmp/nc1.out 2>&1; then
  how="server certificate checked against $H (IP SAN; nbd-client's default -tlshostname is the host)"
else
  echo "   without -tlshostname: $(tr '\n' ' ' </tmp/nc1.out)"
  # shellcheck disable=SC2046
  limit 120 nbd-client "$H" "$P" /dev/nbd0 "${NC[@]}" $(certs "$C") -tlshostname zerofs >/tmp/nc1.out 2>&1
  how="needed -tlshostname zerofs (DNS SAN): the IP SAN check failed"
fi
sed 's/^/   nbd-client: /' /tmp/nc1.out
if ! connected nbd0; then
  result FAIL "1 nbd-client attaches disk1 over TLS" "$(tr '\n' ' ' </tmp/nc1.out)"
else
  result PASS "1 nbd-client attaches disk1 over TLS" "in $(secs "$t") s; $how"
  sleep 1
  r=$(relays)
  echo "   nbd-client processes after attach: ${r:-none}"
  ps -o pid,ppid,stat,args -C nbd-client | sed 's/^/   /'
  for p in $r; do echo "   pid $p fds: $(ls -l /proc/$p/fd 2>/dev/null | grep -c socket) sockets"; done
  figure "nbd-client TLS relay: $(wc -w <<<"$r") nbd-client process(es) stay running after attach (the command itself returned; the forked daemon relays TLS <-> a socketpair for the kernel)"
  ok=1
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/nbd0 || ok=0
  mkdir -p /mnt/a && mount /dev/nbd0 /mnt/a || ok=0
  t=$(now)
  limit 900 dd if=/tmp/rand1 of=/mnt/a/data bs=1M conv=fsync status=none || ok=0
  w=$(secs "$t")
  s=$(sum /mnt/a/data)
  [ "$s" = "$sum1" ] || ok=0
  umount /mnt/a || ok=0
  nbd-client -d /dev/nbd0 >/dev/null 2>&1 || ok=0
  sleep 2
  r2=$(relays)
  figure "1 nbd-client: wrote $MB MB in $w s ($(rate "$MB" "$w") MB/s, ext4, conv=fsync); nbd-client processes after -d: $(wc -w <<<"$r2")"
  [ $ok = 1 ] && result PASS "1 mkfs, mount, write $MB MB, sha256, umount, detach" "$w s" ||
    result FAIL "1 mkfs, mount, write $MB MB, sha256, umount, detach" "sha $s"
  [ -z "$r2" ] && result PASS "1 the TLS relay ends with nbd-client -d" "no nbd-client left" ||
    result FAIL "1 the TLS relay ends with nbd-client -d" "still running: $r2"

  step "1: re-attach disk1 with nbd-client (now with -tlshostname zerofs: DNS SAN), check the data"
  # shellcheck disable=SC2046
  limit 120 nbd-client "$H" "$P" /dev/nbd0 "${NC[@]}" $(certs "$C") -tlshostname zerofs >/tmp/nc2.out 2>&1
  sed 's/^/   nbd-client: /' /tmp/nc2.out
  ok=1
  connected nbd0 || ok=0
  mount /dev/nbd0 /mnt/a || ok=0
  t=$(now)
  s=$(sum /mnt/a/data)
  rd=$(secs "$t")
  [ "$s" = "$sum1" ] || ok=0
  umount /mnt/a || ok=0
  nbd-client -d /dev/nbd0 >/dev/null 2>&1 || ok=0
  sleep 2
  figure "1 nbd-client: re-attached, read back $MB MB in $rd s ($(rate "$MB" "$rd") MB/s), sha256 $( [ "$s" = "$sum1" ] && echo matches || echo DIFFERS)"
  [ $ok = 1 ] && result PASS "1 re-attach, mount, sha256 matches, umount, detach" "read $rd s" ||
    result FAIL "1 re-attach, mount, sha256 matches, umount, detach" "sha $s (want $sum1)"
fi
for p in $(relays); do kill "$p"; done # none should be left; the refusals below count them

# ---------------------------------------------------------------------------
step "3: refusals"
refused() { # NAME DEV LOG CMD...: PASS if CMD fails and DEV stays unattached
  local name=$1 dev=$2 log=$3 rc; shift 3
  limit 90 "$@" >"$log" 2>&1; rc=$?
  sleep 1
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && ! connected "$dev"; then
    result PASS "$name" "exit $rc: $(tr '\n' ' ' <"$log" | tr -cd '[:print:]' | cut -c1-300)"
  else
    result FAIL "$name" "exit $rc, $dev connected: $(connected "$dev" && echo yes || echo no): $(tr '\n' ' ' <"$log" | tr -cd '[:print:]' | cut -c1-300)"
    nbd-client -d "/dev/$dev" >/dev/null 2>&1
  fi
}
refused "3a plaintext nbd-client (no certificate options) is refused" nbd2 /tmp/r1.out \
  nbd-client "$H" "$P" /dev/nbd2 -N disk1 -b 4096 -t 30
# shellcheck disable=SC2046
refused "3b nbd-client with the CN=intruder certificate is refused disk1" nbd2 /tmp/r2.out \
  nbd-client "$H" "$P" /dev/nbd2 -N disk1 -b 4096 -t 30 $(certs "$I")
refused "3c zerofs nbd attach --tls with the CN=intruder certificate is refused disk1" nbd3 /tmp/r3.out \
  "$ZEROFS" nbd attach disk1 --server "$H:$P" --device /dev/nbd3 --tls "$I"
refused "3d zerofs nbd attach without --tls is refused" nbd3 /tmp/r4.out \
  "$ZEROFS" nbd attach disk1 --server "$H:$P" --device /dev/nbd3
# shellcheck disable=SC2046
refused "3e nbd-client 3.24 (TLS 1.2 only) cannot reach a zerofs with tls_min_version 1.3" nbd2 /tmp/r5.out \
  nbd-client "$H" "$P13" /dev/nbd2 -N disk1 -b 4096 -t 30 $(certs "$C")
# shellcheck disable=SC2046
refused "3f nbd-client checks the server's name (-tlshostname wrong-name fails)" nbd2 /tmp/r6.out \
  nbd-client "$H" "$P" /dev/nbd2 -N disk1 -b 4096 -t 30 $(certs "$C") -tlshostname wrong-name
refused "3g zerofs nbd attach checks the server's name (--tls-name wrong-name fails)" nbd3 /tmp/r7.out \
  "$ZEROFS" nbd attach disk1 --server "$H:$P" --device /dev/nbd3 --tls "$C" --tls-name wrong-name
r=$(relays)
[ -z "$r" ] && result PASS "3 no nbd-client process is left after the refusals" "none" ||
  result FAIL "3 no nbd-client process is left after the refusals" "left: $r"
for p in $r; do kill "$p"; done

# ---------------------------------------------------------------------------
step "2: zerofs nbd attach disk2 --tls (client cert CN=vm-client) on /dev/nbd1"
zattach() { # LOG: attach disk2 on /dev/nbd1 in the background, wait until attached
  "$ZEROFS" nbd attach disk2 --server "$H:$P" --device /dev/nbd1 --tls "$C" \
    --timeout 30s --dead-timeout 60s >"$1" 2>&1 &
  echo $! >/tmp/zattach.pid
  local end=$((SECONDS + 60))
  while ((SECONDS < end)); do grep -q 'msg=attached' "$1" && return 0; sleep 0.2; done
  return 1
}
zdetach() {
  local pid end=$((SECONDS + 30)); pid=$(cat /tmp/zattach.pid)
  kill "$pid" 2>/dev/null
  while ((SECONDS < end)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  echo "   attach $pid did not exit"; return 1
}
alog() { sed 's/^/   attach: /' "$1" | tail -"${2:-20}"; }
t=$(now)
if ! zattach /tmp/att1.log; then
  result FAIL "2 zerofs nbd attach --tls attaches disk2" "$(tr '\n' ' ' </tmp/att1.log)"
else
  result PASS "2 zerofs nbd attach --tls attaches disk2" "in $(secs "$t") s: $(grep 'msg=attached' /tmp/att1.log)"
  # A first read, bounded: it shows whether the relayed TLS connection
  # carries I/O at all.
  t=$(now)
  if ! limit 60 dd if=/dev/nbd1 of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/tmp/probe.err; then
    result FAIL "2 a 4 KiB read through the TLS relay completes" "not within 60 s ($(secs "$t") s; attach logged $(grep -c 'reconnected to' /tmp/att1.log) reconnects meanwhile) $(tr '\n' ' ' </tmp/probe.err)"
    head -4 /tmp/att1.log | sed 's/^/   attach: /'
    alog /tmp/att1.log 3
    dmesg | grep nbd1 | sed 's/^\[[^]]*\] //' | sort | uniq -c | sort -rn | head -5 | sed 's/^/   dmesg (count): /'
    zdetach
    sleep 2
    cp /tmp/att1.log "$S/attach-1.log"
  else
    result PASS "2 a 4 KiB read through the TLS relay completes" "$(secs "$t") s"
    ok=1
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/nbd1 || ok=0
    mkdir -p /mnt/b && mount /dev/nbd1 /mnt/b || ok=0
    t=$(now)
    limit 900 dd if=/tmp/rand1 of=/mnt/b/data1 bs=1M conv=fsync status=none || ok=0
    w1=$(secs "$t")
    figure "2 zerofs attach --tls: wrote $MB MB in $w1 s ($(rate "$MB" "$w1") MB/s, ext4, conv=fsync), no restart"
    [ $ok = 1 ] && result PASS "2 mkfs, mount, write $MB MB" "$w1 s" || result FAIL "2 mkfs, mount, write $MB MB" "see above"

    step "2: SIGTERM restart of zerofs while dd writes $MB MB to /mnt/b/data2"
    t=$(now)
    dd if=/tmp/rand2 of=/mnt/b/data2 bs=1M conv=fsync status=none 2>/tmp/dd2.err &
    ddpid=$!
    for _ in $(seq 600); do
      [ "$(stat -c %s /mnt/b/data2 2>/dev/null || echo 0)" -ge $((MB * 1048576 / 4)) ] && break
      kill -0 $ddpid 2>/dev/null || break
      sleep 0.2
    done
    at=$(secs "$t")
    atsize=$(($(stat -c %s /mnt/b/data2 2>/dev/null || echo 0) / 1048576))
    if kill -0 $ddpid 2>/dev/null; then
      ans=$(ask term 0)
      echo "   at +$at s (dd at $atsize MB): host: $ans"
      restarted=1
    else
      ans="dd finished before the restart"; restarted=0
      echo "   $ans"
    fi
    # bounded wait for dd
    for _ in $(seq 1500); do kill -0 $ddpid 2>/dev/null || break; sleep 0.2; done
    if kill -0 $ddpid 2>/dev/null; then
      ddrc=124; echo "   dd still running after 300 s"
    else
      wait $ddpid; ddrc=$?
    fi
    w2=$(secs "$t")
    echo "   dd exit $ddrc after $w2 s $(tr '\n' ' ' </tmp/dd2.err)"
    alog /tmp/att1.log 8
    rec=$(grep -c 'reconnected' /tmp/att1.log)
    figure "2 zerofs attach --tls: wrote $MB MB in $w2 s with a SIGTERM restart at +$at s (dd at $atsize MB; $ans); attach logged $rec reconnect(s): $(grep -o 'reconnected to [^ ]* [0-9.]* s' /tmp/att1.log | tail -1)"
    [ $restarted = 1 ] && [ $ddrc = 0 ] && [ "$rec" -ge 1 ] &&
      result PASS "2 dd across a SIGTERM restart completes, device reconnects over TLS" "dd $w2 s, $ans" ||
      result FAIL "2 dd across a SIGTERM restart completes, device reconnects over TLS" "restarted=$restarted dd exit $ddrc, $rec reconnects"
    ok=1
    sync
    umount /mnt/b || ok=0
    mount /dev/nbd1 /mnt/b || ok=0
    s1=$(sum /mnt/b/data1) s2=$(sum /mnt/b/data2)
    [ "$s1" = "$sum1" ] && [ "$s2" = "$sum2" ] || ok=0
    [ $ok = 1 ] && result PASS "2 after the restart: remount, both files' sha256 match" "" ||
      result FAIL "2 after the restart: remount, both files' sha256 match" "data1 $s1 (want $sum1), data2 $s2 (want $sum2)"
    umount /mnt/b
    zdetach
    sleep 2
    connected nbd1 && result FAIL "2 stopping attach detaches /dev/nbd1" "still connected" ||
      result PASS "2 stopping attach detaches /dev/nbd1" ""

    step "2: re-attach disk2 (fresh TLS connection), check the data"
    ok=1
    zattach /tmp/att2.log || ok=0
    mount /dev/nbd1 /mnt/b || ok=0
    t=$(now)
    s1=$(sum /mnt/b/data1) s2=$(sum /mnt/b/data2)
    rd=$(secs "$t")
    [ "$s1" = "$sum1" ] && [ "$s2" = "$sum2" ] || ok=0
    umount /mnt/b || ok=0
    zdetach || ok=0
    figure "2 zerofs attach --tls: re-attached, read back $((2 * MB)) MB in $rd s ($(rate $((2 * MB)) "$rd") MB/s)"
    [ $ok = 1 ] && result PASS "2 re-attach, mount, sha256 of both files match, umount, detach" "read $rd s" ||
      result FAIL "2 re-attach, mount, sha256 of both files match, umount, detach" "data1 $s1, data2 $s2"
    alog /tmp/att2.log 5
  fi
fi
for f in /tmp/att1.log /tmp/att2.log; do [ -e "$f" ] && cp "$f" "$S/attach-${f#/tmp/att}"; done
step "kernel messages about nbd (last 20):"
dmesg | grep -i -E 'nbd|block nbd' | tail -20 | sed 's/^/   dmesg: /'
echo "=== guest done"
