#!/usr/bin/env bash
# Benchmarks zerofs's NBD server against nbdkit's memory plugin with fio's
# nbd engine, in one run, and prints a table of IOPS, bandwidth and the
# zerofs/nbdkit IOPS ratio:
#   4 KiB random read and write at queue depth 1 and 32,
#   1 MiB sequential read and write,
#   4 KiB random write with a FLUSH after every write (--fsync=1).
# zerofs runs in process on a file:// store in a temp dir (default settings,
# but a memory cache that holds the whole export: reads measure cached reads).
#
#   ZEROFS_BENCH_RUNTIME  seconds per workload (default 5)
#   ZEROFS_BENCH_SIZE     export size in MiB (default 512)
#   ZEROFS_BENCH_ONLY     a regular expression: run only the workloads it matches
#                         (e.g. "seq read", "randwrite QD32|seq read")
#
# Needs fio and nbdkit (scripts/install-test-deps.sh installs them). The
# machine is shared and noisy: compare ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test -run '^$' -bench '^BenchmarkNBDFio$' -benchtime 1x -timeout 60m ./nbd/
