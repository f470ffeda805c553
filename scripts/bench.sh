#!/usr/bin/env bash
# Runs every benchmark; each writes its section of docs/benchmarks.md. Needs root (namespaces, netfilter).
# `npm run bench -- --quick` passes --quick to the benchmarks that have a shorter variant.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
export PATH="$PWD/node_modules/.bin:$PATH"
# What ships: bin/kube-proxy-ts.js runs the compiled dist/ (the benchmarks spawn it).
node scripts/build.js
for b in model iptables nftables daemon from scale; do
  if [ -f "bench/$b.ts" ]; then
    echo "== bench/$b.ts" >&2
    node --expose-gc --disable-warning=ExperimentalWarning "bench/$b.ts" "$@"
  fi
done
# Many nodes against one API server (about 5 minutes; --quick about 2), then the soak (30 minutes; --quick 3,
# printed only: docs/benchmarks.md keeps the figures of a full-length soak). They take --quick and nothing else.
quick=()
for a in "$@"; do
  if [ "$a" = --quick ]; then quick=(--quick); fi
done
for b in multinode soak; do
  echo "== bench/$b.ts" >&2
  node --disable-warning=ExperimentalWarning "bench/$b.ts" "${quick[@]}"
done
echo "== compare" >&2
node --disable-warning=ExperimentalWarning bin/kube-proxy-ts.js compare "$@"
# The userspace mode against reference proxies in C (built with cc): the ceiling of its bulk figure.
echo "== bench/userspace.ts" >&2
node --disable-warning=ExperimentalWarning bench/userspace.ts "${quick[@]}"
