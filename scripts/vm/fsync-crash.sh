#!/usr/bin/env bash
# kill -9 under a filesystem that fsyncs (not part of make test;
# ../shared/vmharness VM): ext4, xfs and btrfs on a device attached with
# `zerofs nbd attach`; each round writes files, fsyncs each one and its
# directory and logs it after fsync returns, then zerofs is killed with
# kill -9 and started again. The device is detached, cleared, reattached,
# the journal replayed, the filesystem checked (read-only fsck must be
# clean) and every logged file must read back exactly. Results: docs/e2e.md.
#
#   scripts/vm/fsync-crash.sh [ROUNDS [FS...]]      (10; ext4 xfs btrfs)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${VMH_DIR:-/var/tmp/vmharness}/zerofs-fsync-crash
. scripts/vm/lib.sh
ROUNDS=${1:-10}; shift || true
[ $# -gt 0 ] && FSES=("$@") || FSES=(ext4 xfs btrfs)
build
# The VM image has no xfsprogs or btrfs-progs: fetch them (bookworm, like
# the guest) once, and install them in the guest at each run.
DEBS=$VMH_DIR/debs
if ! ls "$DEBS"/xfsprogs_*.deb "$DEBS"/btrfs-progs_*.deb >/dev/null 2>&1; then
  mkdir -p "$DEBS"
  (cd "$DEBS" && apt-get download xfsprogs btrfs-progs libinih1 liblzo2-2 liburcu8 >/dev/null)
fi
cp -r "$DEBS" "$W/share/debs"
setup 1 2G
vm guest-fsync-crash.sh "$ROUNDS" "${FSES[@]}"
