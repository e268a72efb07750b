#!/usr/bin/env bash
# Set everything up and run the whole test suite: ruff, mypy (strict on src/), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
echo "== ruff" >&2
.venv/bin/ruff check src tests benchmarks
echo "== mypy (strict, src/)" >&2
.venv/bin/mypy
echo "== pytest" >&2
# pytest exits 5 when it collects no test: with set -e that fails the run, as it should.
.venv/bin/python -m pytest "$@"
