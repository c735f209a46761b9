# Host side shared by the scripts in scripts/vm/ (sourced, not run): zerofs
# "regions" (one process, store and NBD export each) and an agent that
# carries out what the guest asks for (restart, kill -9, clear) through
# request files in the VM share. The guest side is scripts/vm/guest-lib.sh.
#
# The caller sets W (work directory) and then calls: build, setup N SIZE,
# agent & , and vm SCRIPT ARGS.
VMH=${VMH:-$PWD/../shared/vmharness}
VMH_DIR=${VMH_DIR:-/var/tmp/vmharness}
PORTS=(20809 20810 20811)
ADMIN=(37311 37312 37313)
export ZEROFS_PASSWORD=vm-test-password

build() {
  make build >/dev/null
  BIN=$PWD/bin/zerofs
  rm -rf "$W"; mkdir -p "$W/share"
  # The guest runs `zerofs nbd attach`: a static build runs whatever the
  # guest's libc.
  CGO_ENABLED=0 go build -o "$W/share/zerofs" ./cmd/zerofs
  cp scripts/vm/guest-*.sh "$W/share/"
}

# NBD_EXTRA (optional): more lines for [servers.nbd], e.g. tls keys and
# [[servers.nbd.access]] tables; set it for one call (NBD_EXTRA=... config 0).
# NBD_ADDRESSES (optional): the region's NBD addresses, instead of its port.
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
addresses = [${NBD_ADDRESSES:-"127.0.0.1:${PORTS[$1]}"}]
${NBD_EXTRA:-}
[servers.nfs]
addresses = []
[servers.admin]
address = "127.0.0.1:${ADMIN[$1]}"
CONF
}

start() { # $1 = region
  local n; n=$(grep -c "zerofs is ready" "$W/region$1.log" 2>/dev/null || true)
  "$BIN" run -c "$W/region$1.toml" >>"$W/region$1.log" 2>&1 &
  echo $! >"$W/region$1.pid"
  for _ in $(seq 300); do
    [ "$(grep -c "zerofs is ready" "$W/region$1.log")" -gt "${n:-0}" ] && return
    sleep 0.1
  done
  echo "region $1 did not start:"; tail -20 "$W/region$1.log"; exit 1
}

stop() { # $1 = region, $2 = signal
  local pid; pid=$(cat "$W/region$1.pid")
  kill "-$2" "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

setup() { # $1 = regions, $2 = export size
  for ((i = 0; i < $1; i++)); do
    mkdir -p "$W/region$i"
    config $i >"$W/region$i.toml"
    start $i
    "$BIN" nbd create "disk$i" --size "$2" --admin "127.0.0.1:${ADMIN[$i]}" >/dev/null
  done
  trap cleanup EXIT
}

cleanup() {
  set +e
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null
  for f in "$W"/region*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  wait 2>/dev/null
  return 0
}

# agent answers request files "req.ID" (one line: ACTION REGION [PAUSE]) with
# "done.ID" (one line of result). Actions:
#   term R [S]   SIGTERM, wait S seconds (default 0), start again
#   kill R [S]   kill -9, wait S seconds (default 1), start again
#   clear R      zerofs nbd clear diskR
#   list R       zerofs nbd list
#   cli R ARGS   zerofs ARGS on region R's admin endpoint
since() { awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $1}"; }
act() {
  local action=$1 r=$2 pause=${3:-} t0 out
  t0=$(date +%s.%N)
  case $action in
    term) stop "$r" TERM; sleep "${pause:-0}"; start "$r"
          out="region $r restarted after SIGTERM: down $(since "$t0") s" ;;
    kill) stop "$r" KILL; sleep "${pause:-1}"; start "$r"
          out="region $r restarted after kill -9: down $(since "$t0") s" ;;
    clear) out=$("$BIN" nbd clear "disk$r" --admin "127.0.0.1:${ADMIN[$r]}" 2>&1) ;;
    list) out=$("$BIN" nbd list --admin "127.0.0.1:${ADMIN[$r]}" 2>&1 | tr '\n' ';') ;;
    cli) out=$("$BIN" "${@:3}" --admin "127.0.0.1:${ADMIN[$r]}" 2>&1 | tr '\n' ';') ;;
    *) out="unknown action $action" ;;
  esac
  echo "host $(date +%T): $out" >&2
  echo "$out"
}
agent() {
  local f id
  while true; do
    for f in "$W"/share/req.*; do
      [ -e "$f" ] || continue
      id=${f##*.}
      # shellcheck disable=SC2046
      act $(cat "$f") >"$W/share/tmp.done.$id" && mv "$W/share/tmp.done.$id" "$W/share/done.$id"
      rm -f "$f"
    done
    sleep 0.1
  done
}

vm() { # guest script (in the share) and its arguments
  local ports="${PORTS[*]}"
  agent & agent_pid=$!
  VM_PORTS="$ports" VM_SHARE=$W/share "$VMH/vm-run.sh" "$W/share/$1" "${@:2}"
}
