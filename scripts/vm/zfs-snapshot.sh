#!/usr/bin/env bash
# Snapshots under ZFS (not part of make test; ../shared/vmharness VM): one
# zerofs serving two devices, striped into one pool in the VM. The host
# takes a zerofs snapshot while the pool is imported; then the pool is
# destroyed (the mistake snapshots are for). The pool must import read-only
# from the snapshot's exports (DEVICE@SNAPSHOT) with every file intact, and
# after `zerofs nbd restore` of both devices import read-write again and
# scrub clean. Results: docs/benchmarks.md ("Snapshots under ZFS").
#
#   scripts/vm/zfs-snapshot.sh [MB]     data written before the snapshot (200)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${VMH_DIR:-/var/tmp/vmharness}/zerofs-zfs-snapshot
. scripts/vm/lib.sh
build
# One zerofs on all three forwarded ports: the harness forwards one
# connection per port at a time, and the pool needs two at once.
mkdir -p "$W/region0"
NBD_ADDRESSES='"127.0.0.1:20809", "127.0.0.1:20810", "127.0.0.1:20811"' config 0 >"$W/region0.toml"
start 0
trap cleanup EXIT
for d in disk0 disk1; do "$BIN" nbd create $d --size 1G --admin "127.0.0.1:${ADMIN[0]}" >/dev/null; done
vm guest-zfs-snapshot.sh "${1:-200}"
