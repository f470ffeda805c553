#!/usr/bin/env bash
# Runs every benchmark; each writes its section of docs/benchmarks.md. Needs root (namespaces, netfilter).
# `npm run bench -- --quick` passes --quick to the benchmarks that have a shorter variant.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
export PATH="$PWD/node_modules/.bin:$PATH"
for b in model iptables nftables daemon; do
  if [ -f "bench/$b.ts" ]; then
    echo "== bench/$b.ts" >&2
    node --expose-gc --disable-warning=ExperimentalWarning "bench/$b.ts" "$@"
  fi
done
echo "== compare" >&2
node --disable-warning=ExperimentalWarning bin/kube-proxy-ts.js compare "$@"
