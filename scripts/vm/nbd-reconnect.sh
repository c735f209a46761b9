#!/usr/bin/env bash
# What the kernel NBD client sees when zerofs restarts, for each way of
# attaching (not part of make test; ../shared/vmharness VM): Debian's
# nbd-client in its default netlink mode with -persist, nbd-client
# -nonetlink -persist, and `zerofs nbd attach`. SIGTERM restarts with I/O
# during the gap, then kill -9 after an unflushed write (the export must be
# interrupted until `zerofs nbd clear`). Results: docs/nbd.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${VMH_DIR:-/var/tmp/vmharness}/zerofs-reconnect
. scripts/vm/lib.sh
build
setup 1 1G
vm guest-nbd-reconnect.sh
