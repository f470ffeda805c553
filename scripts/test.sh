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

results=$(mktemp -t kpt-results.XXXXXX.json)
trap 'rm -f "$results"' EXIT
status=0
vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@" || status=$?
node scripts/test-summary.ts "$results" || status=$?
exit $status
