#!/usr/bin/env bash
# Snapshot and clone of a large device (BenchmarkSnapshotClone in
# cmd/zerofs/snapshot_bench_test.go): a real zerofs on versitygw behind
# internal/s3proxy; a device of ZEROFS_BENCH_DEVICE_GB (100) with
# ZEROFS_BENCH_WRITTEN_GB (10) of random data; then, with
# ZEROFS_BENCH_LATENCY_MS (50) added to every request, the time, bytes and
# requests of `zerofs snapshot create`, `zerofs nbd clone DEV NEW` and
# `zerofs nbd clone DEV@SNAP NEW`, next to the copy a clone replaces
# (nbdcopy into a new device; ZEROFS_BENCH_NO_COPY=1 skips it) and the
# writing of the data. Prints a table.
#
# Needs nbdcopy, nbdkit and versitygw (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.bin:$PATH
exec go test -run '^$' -bench '^BenchmarkSnapshotClone$' -benchtime 1x -timeout 120m ./cmd/zerofs/
