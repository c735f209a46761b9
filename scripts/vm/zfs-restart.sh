#!/usr/bin/env bash
# Restarts under a ZFS mirror (not part of make test; ../shared/vmharness
# VM): three zerofs "regions", each device attached in the VM with
# `zerofs nbd attach`, a 3-way mirror, PostgreSQL and pgbench. While pgbench
# runs: (a) SIGTERM and start of one zerofs: the pool must stay ONLINE with
# no errors and pgbench must not fail a transaction; (b) kill -9 and start:
# that member must fault (its export is interrupted), and after
# `zerofs nbd clear`, `zpool clear` and the resilver a scrub must find no
# errors. Results: docs/e2e.md.
#
#   scripts/vm/zfs-restart.sh [SCALE [SECONDS]]     pgbench -i scale (5), run length (90)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${VMH_DIR:-/var/tmp/vmharness}/zerofs-zfs-restart
. scripts/vm/lib.sh
build
setup 3 2G
vm guest-zfs-restart.sh "${1:-5}" "${2:-90}"
