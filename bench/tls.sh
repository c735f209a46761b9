#!/usr/bin/env bash
# What TLS costs on NBD: one zerofs server with tls = "on", read (and
# written) by fio's nbd engine in plaintext and over TLS 1.3, alternately,
# three runs each, beside nbdkit's memory plugin doing the same with the
# same certificates; prints median MiB/s and the TLS/plaintext ratio for
# 1 MiB sequential read and write (QD8) and 4 KiB random read (QD32).
# Reads are served from the memory cache, so the comparison isolates the
# protocol path, where TLS's cost shows most.
#
#   ZEROFS_BENCH_RUNTIME  seconds per run (default 5)
#   ZEROFS_BENCH_SIZE     export size in MiB (default 512)
#   ZEROFS_BENCH_ONLY     a regular expression: run only the workloads it matches
#
# The machine is shared and noisy: compare the ratio within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test -run '^$' -bench '^BenchmarkNBDTLS$' -benchtime 1x -timeout 60m ./nbd/
