#!/usr/bin/env bash
# README's first command: sets up what is missing, then runs the sandbox demo (`npm run demo -- --mode nftables`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
export PATH="$PWD/node_modules/.bin:$PATH"
exec node --disable-warning=ExperimentalWarning bin/kube-proxy-ts.js demo "$@"
