#!/usr/bin/env bash
# pjdfstest (POSIX syscall conformance) through the Linux kernel NFSv3 client
# (not part of make test): zerofs on the host (file:// store in a temp dir, NFS
# on a free port, root not squashed), a VM (../shared/vmharness, built with its
# build-image.sh) mounts it with mount -t nfs -o vers=3,...,nolock and runs
# `prove -rv` as root in a directory of the mount. Results: docs/nfs.md.
#
#   scripts/vm/pjdfstest.sh                  # every test (75 min under TCG here)
#   scripts/vm/pjdfstest.sh chown chmod      # only tests/chown, tests/chmod
#
# The full prove output is saved on the host ($LOG, default
# $VMH_DIR/pjdfstest-logs/pjdfstest-DATE.log); a summary (files, cases, passed,
# failed, failing files and case numbers) is printed and appended to it.
# Exit 0 when the suite ran to the end (failures or not), 1 otherwise.
#
# Environment:
#   ZEROFS_BIN=path      test this binary instead of `make build`'s bin/zerofs
#                        (ZEROFS_VERSION=... names it in the log)
#   PJDFSTEST_SRC=dir    pjdfstest checkout (default $VMH_DIR/pjdfstest-src;
#                        cloned from PJDFSTEST_REPO at PJDFSTEST_REF if missing)
#   PORT=N               NFS+MOUNT port (default: the first free one from 22149)
#   MOUNT_OPTS=...       extra mount options (e.g. actimeo=0)
#   VM_TIMEOUT=14400     seconds before the VM is killed
set -euo pipefail
cd "$(dirname "$0")/../.."
VMH=${VMH:-$PWD/../shared/vmharness}
VMH_DIR=${VMH_DIR:-/var/tmp/vmharness}
W=$VMH_DIR/zerofs-pjdfstest
PJ=${PJDFSTEST_SRC:-$VMH_DIR/pjdfstest-src}
PJDFSTEST_REPO=${PJDFSTEST_REPO:-https://github.com/pjd/pjdfstest}
PJDFSTEST_REF=${PJDFSTEST_REF:-85a8aea9e685999ef0540392fd80535f873d7ff7}
mkdir -p "$VMH_DIR/pjdfstest-logs"
LOG=${LOG:-$VMH_DIR/pjdfstest-logs/pjdfstest-$(date +%Y%m%d-%H%M%S).log}

free_port() {
  local p
  for p in $(seq 22149 22999); do
    ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  echo "no free port" >&2; exit 1
}
PORT=${PORT:-$(free_port)}

# zerofs
if [ -z "${ZEROFS_BIN:-}" ]; then
  make build >/dev/null; ZEROFS_BIN=$PWD/bin/zerofs
  ZEROFS_VERSION=${ZEROFS_VERSION:-$(git describe --always --dirty 2>/dev/null)}
fi
# pjdfstest, built statically so that it runs in the guest whatever the host's libc
if [ ! -d "$PJ" ]; then
  git clone -q "$PJDFSTEST_REPO" "$PJ"
  git -C "$PJ" checkout -q "$PJDFSTEST_REF"
fi
if [ ! -x "$PJ/pjdfstest" ] || [ "$PJ/pjdfstest.c" -nt "$PJ/pjdfstest" ]; then
  command -v autoreconf >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y \
    autoconf automake gcc make >/dev/null
  (cd "$PJ" && { [ -e Makefile ] || { autoreconf -ifs && ./configure; }; } &&
    rm -f pjdfstest && make pjdfstest LDFLAGS=-static) >"$VMH_DIR/pjdfstest-build.log" 2>&1 ||
    { echo "pjdfstest build failed:"; tail -20 "$VMH_DIR/pjdfstest-build.log"; exit 1; }
fi

rm -rf "$W"; mkdir -p "$W/share/pjdfstest"
cp -a "$PJ/pjdfstest" "$PJ/tests" "$W/share/pjdfstest/"
export ZEROFS_PASSWORD=vm-test-password
cat >"$W/zerofs.toml" <<CONF
[cache]
dir = "$W/cache"
disk_size_gb = 0.5
[storage]
url = "file://$W/store"
encryption_password = "\${ZEROFS_PASSWORD}"
[servers.nbd]
addresses = []
[servers.nfs]
addresses = ["127.0.0.1:$PORT"]
root_squash = false   # pjdfstest runs as root and chowns to many uids
[servers.admin]
address = ""
CONF
"$ZEROFS_BIN" run -c "$W/zerofs.toml" >"$W/zerofs.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q "zerofs is ready" "$W/zerofs.log" && break; sleep 0.2; done
grep -q "zerofs is ready" "$W/zerofs.log" || { echo "zerofs did not start:"; tail -20 "$W/zerofs.log"; exit 1; }

# Guest side: args = PORT MOUNT_OPTS TESTDIR...; the full output goes to /mnt/share/prove.log,
# the console shows each test file's name and result and every failure.
cat >"$W/guest.sh" <<'GUEST'
#!/bin/bash
set -uo pipefail
port=$1 extra=$2; shift 2
OPTS="vers=3,proto=tcp,port=$port,mountport=$port,mountproto=tcp,nolock,hard,timeo=600${extra:+,$extra}"
mkdir -p /mnt/nfs
echo "=== [$(date +%T)] mount -t nfs -o $OPTS $VMH_HOST:/ /mnt/nfs"
mount -t nfs -o "$OPTS" "$VMH_HOST:/" /mnt/nfs || exit 1
grep /mnt/nfs /proc/mounts
mkdir /mnt/nfs/pjdfstest && cd /mnt/nfs/pjdfstest || exit 1
T=/mnt/share/pjdfstest/tests
dirs=(); for d in "$@"; do dirs+=("$T/$d"); done; ((${#dirs[@]})) || dirs=("$T")
echo "=== [$(date +%T)] $(uname -r), umask $(umask), cwd $PWD: ${dirs[*]}"
if command -v prove >/dev/null; then
  # prove's stdout is a file: flush every line (progress on the host, nothing lost if the VM dies)
  echo 'STDOUT->autoflush(1); STDERR->autoflush(1); 1;' >/tmp/Autoflush.pm
  PERL5LIB=/tmp PERL5OPT=-MAutoflush prove -rv "${dirs[@]}"
else  # no perl: the same TAP output, without prove's final report
  find "${dirs[@]}" -name '*.t' | sort | while read -r t; do echo "$t .. "; sh "$t"; done
  echo "(prove not found: ran the .t files with sh)"
fi > /mnt/share/prove.log 2>&1
rc=$?
cd / && umount /mnt/nfs
echo "=== [$(date +%T)] done, rc=$rc"
touch /mnt/share/completed
GUEST
chmod +x "$W/guest.sh"

start=$(date +%s)
{
  echo "# scripts/vm/pjdfstest.sh $*"
  echo "# $(date -u +'%F %T UTC'); zerofs ${ZEROFS_VERSION:-?} ($ZEROFS_BIN);" \
    "pjdfstest $(git -C "$PJ" rev-parse --short HEAD 2>/dev/null || echo '?'); NFS port $PORT"
} >"$LOG"
echo "pjdfstest: zerofs on 127.0.0.1:$PORT, log $LOG"
VM_TIMEOUT=${VM_TIMEOUT:-14400} VM_PORTS="$PORT" VM_SHARE=$W/share \
  "$VMH/vm-run.sh" "$W/guest.sh" "$PORT" "${MOUNT_OPTS:-}" "$@" >"$W/vm.log" 2>&1 &
vm=$!
trap 'kill $vm $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
# progress: each test file as it starts, and every failure
touch "$W/share/prove.log"
tail -n +1 -F --pid=$vm "$W/share/prove.log" 2>/dev/null | grep --line-buffered -E '\.t \.+|^not ok' &
wait $vm || true
wait $! || true
cat "$W/share/prove.log" >>"$LOG"

# summary: from the TAP lines, per test file
summary() {
  awk '
    function ranges(s,   a, n, i, j, out, lo, hi) {
      n = split(s, a, ","); out = ""
      for (i = 1; i <= n; i = j) {
        lo = a[i]; hi = lo
        for (j = i + 1; j <= n && a[j] == hi + 1; j++) hi = a[j]
        out = out (out == "" ? "" : ",") (lo == hi ? lo : lo "-" hi)
      }
      return out
    }
    match($0, /^\/[^ ]*\/tests\/[^ ]*\.t \.+ ?/) {
      f = substr($0, 1, RLENGTH); sub(/ \.+ ?$/, "", f); sub(/.*\/tests\//, "", f)
      files++; order[files] = f
      $0 = substr($0, RLENGTH + 1)
    }
    /^1\.\.[0-9]+/ { split($1, p, "\\.\\."); planned += p[2]; plan[f] = p[2] }
    /^ok [0-9]+/ { if ($0 ~ /# (SKIP|skip)/) skip++; else pass++; ran[f]++ }
    /^not ok [0-9]+/ {
      ran[f]++
      if ($0 ~ /# TODO/) { todo++; next }
      fail++; bad[f] = bad[f] (bad[f] == "" ? "" : ",") $3
    }
    /^Files=[0-9]+, Tests=/ || /^Result: / { tail = tail "\n  prove: " $0 }
    END {
      printf "pjdfstest summary: %d files, %d cases planned; %d passed, %d failed", files, planned, pass, fail
      if (skip) printf ", %d skipped", skip
      if (todo) printf ", %d TODO", todo
      printf "%s\n", tail
      nbad = 0
      for (i = 1; i <= files; i++) {
        f = order[i]
        if (f in bad) { printf "  FAILED %-22s cases %s (of %d)\n", f, ranges(bad[f]), plan[f]; nbad++ }
        else if (ran[f] < plan[f]) { printf "  FAILED %-22s ran %d of %d planned cases\n", f, ran[f], plan[f]; nbad++ }
      }
      printf "  %d of %d files had failures\n", nbad, files
    }' "$1"
}
sum=$(summary "$W/share/prove.log")
echo "$sum" | sed 's/^/# /' >>"$LOG"
echo "$sum"
echo "pjdfstest: wall $(( $(date +%s) - start ))s; full output: $LOG"
if [ ! -e "$W/share/completed" ]; then
  echo "pjdfstest: the run did not complete; VM console:"; tail -30 "$W/vm.log"; exit 1
fi
