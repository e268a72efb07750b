#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install hailing with the given extras.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test,bench
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
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
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing hailing${extras:+[$extras]} into .venv (first run takes a minute)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]" >&2
  else
    .venv/bin/python -m pip install -q -e . >&2
  fi
  touch "$stamp"
fi
