#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: the kernel tools (Debian packages) and node_modules
# (which include Node 22 itself). Idempotent and quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in iptables-restore:iptables iptables-legacy-restore:iptables nft:nftables ip:iproute2 conntrack:conntrack; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: $pkgs— install them (apt-get install $pkgs) or run this as root" >&2
    exit 1
  fi
  echo "installing system packages: $pkgs" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >&2
fi

# promtool lints the metrics exposition as Prometheus reads it (a unit test; CI fails a skipped test). Debian ships
# it only inside the prometheus package, whose installation would also install and start a Prometheus server:
# the one binary is taken out of the package instead. The two places looked at are the ones the test looks at
# (test/unit/daemon-parts.test.ts): a promtool elsewhere on PATH would leave the test skipped.
if [ ! -x /usr/bin/promtool ] && [ ! -x /usr/local/bin/promtool ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "promtool is missing: the metrics lint test will be skipped (run as root to install it)" >&2
  else
    echo "installing promtool (out of Debian's prometheus package)" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    chown _apt "$tmp" 2>/dev/null || true # apt downloads as its own user
    apt-get update -qq >&2
    (cd "$tmp" && apt-get download -qq prometheus >&2)
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    install -m 0755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
  fi
fi

if [ ! -x node_modules/.bin/node ] || [ ! -x node_modules/.bin/vitest ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing node modules (npm ci)" >&2
  npm ci --no-audit --no-fund >&2
fi
