#!/usr/bin/env bash
# Runs every go fuzz target in the module for FUZZTIME each (default 5s): the
# seed corpus plus a short random exploration. Targets are found by name, so
# a new decoder's fuzz target is never forgotten here.
#
# FUZZTIME is a duration (60s) or an execution count (2000x). make test uses a
# count: Go before 1.27 has a race in its fuzz coordinator where the end of a
# duration budget can reach a worker that is still running an input, and the
# target then fails with a bare "context deadline exceeded" and no failing
# input. A count has no deadline to race. For duration runs (make fuzz) that
# bare failure is reported and retried once; a real finding always writes its
# input under testdata/fuzz/ and says so, and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-5s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

run() { go test "$1" -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" >"$log" 2>&1; }

# deadline_only: the run failed with the coordinator's deadline and nothing else.
deadline_only() {
  grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input written|panic:' "$log"
}

while IFS=: read -r file _ line; do
  pkg="./$(dirname "${file#./}")"
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"$line")
  echo "fuzz $pkg $name ($FUZZTIME)"
  if run "$pkg" "$name"; then continue; fi
  if deadline_only; then
    echo "  $name: the fuzz coordinator's deadline race (no failing input); running it again"
    if run "$pkg" "$name"; then continue; fi
  fi
  cat "$log"
  status=1
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '^./third_party/')
exit $status
