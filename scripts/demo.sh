#!/usr/bin/env bash
# Set everything up and run the main job: `hailing demo` on a local loopback DHT testnet.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hailing demo "$@"
