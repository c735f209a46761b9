#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with Go:
#   - Debian packages for the real protocol clients (apt-get, only what is missing);
#   - versitygw, a real S3 server, pinned, into ./.bin (go install).
# Idempotent: a second run installs nothing and takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSITYGW_VERSION=v1.8.0
BIN="$PWD/.bin"
mkdir -p "$BIN"

# Debian packages: the clients the protocol tests drive.
PKGS=(libnbd-bin python3-libnbd qemu-utils fio nbdkit libnfs-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "install-test-deps: apt-get install ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# versitygw: the real S3 server the store conformance suite and integration tests run against.
want="$BIN/versitygw-$VERSITYGW_VERSION"
if [ ! -x "$want" ]; then
  echo "install-test-deps: go install versitygw $VERSITYGW_VERSION (takes a few minutes the first time)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  mv "$tmp/versitygw" "$want"
  rmdir "$tmp"
fi
ln -sf "versitygw-$VERSITYGW_VERSION" "$BIN/versitygw"
