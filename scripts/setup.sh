#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install hailing with the given extras. The qr extra
# (terminal QR codes: 'hailing id show --qr', 'hailing id card --qr') is always included.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test,bench
set -euo pipefail
cd "$(dirname "$0")/.."
extras="qr${1:+,$1}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      py="$cand"; break
    fi
  done
fi
if [ -z "$py" ]; then
  echo "error: hailing needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $py" >&2
  "$py" -m venv .venv
fi
# Playwright (test extra) drives the system's Chromium (scripts/install-chromium.sh); it must
# never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
stamp=".venv/.installed-${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing hailing[$extras] into .venv (first run takes a minute)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e ".[$extras]" >&2
  touch "$stamp"
fi
