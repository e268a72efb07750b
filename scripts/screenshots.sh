#!/usr/bin/env bash
# Screenshots of the web app's main screens (headless Chromium) into docs/ui/, shown in
# docs/ui.md. Needs the Debian chromium (scripts/install-chromium.sh) and root for the
# network namespace with only lo that Chromium runs in (unshare --net).
# Usage: scripts/screenshots.sh [--out DIR] [--width W --height H]
set -euo pipefail
cd "$(dirname "$0")/.."
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
py="${PYTHON:-}"
if [ -z "$py" ]; then
  bash scripts/setup.sh test
  py=.venv/bin/python
fi
if [ -z "${HAILING_CHROMIUM:-}" ]; then
  HAILING_CHROMIUM="$(bash scripts/install-chromium.sh)"
  export HAILING_CHROMIUM
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" scripts/screenshots.py "$@"
