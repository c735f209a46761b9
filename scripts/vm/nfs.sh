#!/usr/bin/env bash
# End-to-end check of the NFS server through the Linux kernel client (not part
# of make test): zerofs on the host, a VM (../shared/vmharness) mounts it with
# mount -t nfs -o vers=3,...,port=N,mountport=N,nolock, writes a tree and a
# 64 MiB file, remounts, reads back and compares.
set -euo pipefail
cd "$(dirname "$0")/../.."
VMH=${VMH:-$PWD/../shared/vmharness}
VMH_DIR=${VMH_DIR:-/var/tmp/vmharness}
W=$VMH_DIR/zerofs-nfs
PORT=22049
make build >/dev/null
rm -rf "$W"; mkdir -p "$W/share"
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
[servers.admin]
address = ""
CONF
./bin/zerofs run -c "$W/zerofs.toml" >"$W/zerofs.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q "zerofs is ready" "$W/zerofs.log" && break; sleep 0.2; done
VM_PORTS="$PORT" VM_SHARE=$W/share "$VMH/vm-run.sh" "$VMH/examples/guest-nfs.sh" "$PORT" "$PORT" /
