#!/usr/bin/env bash
# Install anvil (Foundry's local Ethereum node) from the npm registry into .tools/, once.
# Prints the path of the anvil binary on stdout (progress goes to stderr).
#
# The npm package @foundry-rs/anvil ships the binary in a per-platform package listed as
# an optional dependency (@foundry-rs/anvil-linux-amd64, -linux-arm64, -darwin-amd64,
# -darwin-arm64), which npm installs from the registry like any package. Install scripts
# are disabled (--ignore-scripts): the package's postinstall would only fetch the same
# binary again. Nothing is downloaded from anywhere but the npm registry.
#
# Usage: scripts/install-anvil.sh          (ANVIL_VERSION=1.7.1 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${ANVIL_VERSION:-1.7.1}"
prefix=".tools"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) platform="linux-amd64" ;;
  Linux-aarch64 | Linux-arm64) platform="linux-arm64" ;;
  Darwin-x86_64) platform="darwin-amd64" ;;
  Darwin-arm64) platform="darwin-arm64" ;;
  *) echo "error: @foundry-rs/anvil has no binary for $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
binary="$PWD/$prefix/node_modules/@foundry-rs/anvil-$platform/bin/anvil"

installed_version() {
  [ -x "$binary" ] && "$binary" --version 2>/dev/null | sed -n 's/^anvil Version: \([^ ]*\).*/\1/p'
}

if [ "$(installed_version || true)" != "$version" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: installing anvil needs npm (Node.js); install it, e.g. apt-get install npm" >&2
    exit 1
  fi
  echo "installing @foundry-rs/anvil@$version into $prefix/ (npm registry)" >&2
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --ignore-scripts --no-audit --no-fund --loglevel=error \
    "@foundry-rs/anvil@$version" >&2
  if [ "$(installed_version || true)" != "$version" ]; then
    echo "error: npm installed @foundry-rs/anvil@$version but $binary does not run" >&2
    exit 1
  fi
fi
echo "$binary"
