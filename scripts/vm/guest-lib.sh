# Guest side shared by the scripts in scripts/vm/ (sourced inside the VM):
# asks the host's agent (scripts/vm/lib.sh) to restart or kill a zerofs.
S=/mnt/share
H=${VMH_HOST:-10.0.2.100}
PORTS=(20809 20810 20811)
ZEROFS=$S/zerofs
step() { echo "=== [$(date +%T)] $*"; }
# ask ACTION REGION [PAUSE]: wait for the host to carry it out; prints its answer.
ask() {
  local id=$RANDOM$RANDOM
  echo "$*" >"$S/tmp.req.$id"; mv "$S/tmp.req.$id" "$S/req.$id"
  while [ ! -e "$S/done.$id" ]; do sleep 0.2; done
  cat "$S/done.$id"; rm -f "$S/done.$id"
}
# attach R DEV [extra attach flags]: zerofs nbd attach in the background; waits until attached.
attach() {
  local r=$1 dev=$2; shift 2
  [ -e "/tmp/attach$r.log" ] && cat "/tmp/attach$r.log" >>"/tmp/attach$r.old.log"
  "$ZEROFS" nbd attach "disk$r" --server "$H:${PORTS[$r]}" --device "$dev" "$@" >"/tmp/attach$r.log" 2>&1 &
  echo $! >"/tmp/attach$r.pid"
  for _ in $(seq 150); do grep -q 'msg=attached' "/tmp/attach$r.log" && return 0; sleep 0.2; done
  echo "attach of disk$r failed:"; cat "/tmp/attach$r.log"; return 1
}
detach() { # R: stop the attach process (it detaches the device)
  kill "$(cat "/tmp/attach$1.pid")"; while kill -0 "$(cat "/tmp/attach$1.pid")" 2>/dev/null; do sleep 0.1; done
}
