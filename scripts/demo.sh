#!/usr/bin/env bash
# Set everything up and run the main job: `hailing demo` on a local loopback DHT testnet.
# Then say how to reach the `hailing` command (the README's walkthrough starts there).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hailing demo "$@"
cat >&2 <<'EOF'

hailing is installed in .venv. For the 'hailing' command in this shell (the README's
walkthrough, "Command line", starts there):
    source .venv/bin/activate
EOF
