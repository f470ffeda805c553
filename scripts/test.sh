#!/usr/bin/env bash
# The test command (README, CI): sets up what is missing, runs every test (unit and e2e), prints a closing
# "N passed, N failed" line, and fails when a test failed — or, in CI, when any test was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
export PATH="$PWD/node_modules/.bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "the end-to-end tests build network namespaces and need root: run 'sudo npm test' (or 'npm run test:unit' for the unit tests alone)" >&2
  exit 1
fi

# The end-to-end tests spawn bin/kube-proxy-ts.js, which runs dist/ when it is newer than src/: build it, so
# that `npm test` tests the compiled code a node runs. (A plain `vitest run` after an edit runs src/: bin/ sees
# the edit and never runs a stale dist/.) The unit tests import src/ either way.
node scripts/build.js

results=$(mktemp -t kpt-results.XXXXXX.json)
trap 'rm -f "$results"' EXIT
status=0
vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@" || status=$?
node scripts/test-summary.ts "$results" || status=$?
exit $status
