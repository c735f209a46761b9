#!/usr/bin/env bash
# Installs MinIO, pinned, into ./.bin (go install), for `make test-minio`: the
# store conformance suite and the S3 integration tests run against it as well
# as against versitygw (see docs/stores.md).
#
# MinIO is AGPL-3.0. zerofs never links it: it is built here as a separate
# binary and only run as a test server on 127.0.0.1, like versitygw.
#
# The server repository is archived and its tags (RELEASE.*) are not semver, so
# the pin is the pseudo-version the Go module proxy serves for its last commit
# (`go list -m github.com/minio/minio@latest`).
#
# Idempotent: a second run installs nothing. The first takes ~9 minutes of CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
BIN="$PWD/.bin"
mkdir -p "$BIN"

want="$BIN/minio-$MINIO_VERSION"
if [ ! -x "$want" ]; then
  echo "install-minio: go install minio $MINIO_VERSION (takes several minutes the first time)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$MINIO_VERSION"
  mv "$tmp/minio" "$want"
  rmdir "$tmp"
fi
ln -sf "minio-$MINIO_VERSION" "$BIN/minio"
