#!/usr/bin/env bash
# Benchmarks zerofs's NBD server on an object store as far away as a real
# one: versitygw behind internal/s3proxy, which adds a time to first byte
# to every request and caps each request's body rate. Prints a table of
# each workload next to its baseline from the same run (see
# BenchmarkNBDRemoteStore in nbd/remote_bench_test.go):
#   1 MiB sequential write QD8 + final FLUSH   vs the same on a file:// store
#   cold 1 MiB sequential read QD8             vs its warm re-read
#   cold full-device read by 4 readers         vs its warm re-read
#   cold 4 KiB random read QD32                vs 32 / latency
#   4 KiB write + FLUSH QD1 (median)           vs a bare 4 KiB PUT
# and the requests per GiB the proxy counted.
#
#   ZEROFS_BENCH_SIZE        export size in MiB (default 256)
#   ZEROFS_BENCH_LATENCY_MS  time to first byte added per request (default 20)
#   ZEROFS_BENCH_RATE_MBPS   body rate per request, MB/s (default 100)
#   ZEROFS_BENCH_RUNTIME     seconds of the timed workloads (default 10)
#   ZEROFS_BENCH_READ_AHEAD_MB  [cache] read_ahead_mb (default 128, as zerofs run)
#
# Needs fio and versitygw (scripts/install-test-deps.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test -run '^$' -bench '^BenchmarkNBDRemoteStore$' -benchtime 1x -timeout 60m ./nbd/
