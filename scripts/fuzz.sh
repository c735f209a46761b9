#!/usr/bin/env bash
# Runs every go fuzz target in the module for FUZZTIME each (default 5s): the
# seed corpus plus a short random exploration. Targets are found by name, so
# a new decoder's fuzz target is never forgotten here.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-5s}
status=0
while IFS=: read -r file _ line; do
  pkg="./$(dirname "${file#./}")"
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"$line")
  echo "fuzz $pkg $name ($FUZZTIME)"
  if ! go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" >/tmp/zerofs-fuzz.log 2>&1; then
    cat /tmp/zerofs-fuzz.log
    status=1
  fi
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '^./third_party/')
exit $status
