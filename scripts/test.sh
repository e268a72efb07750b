#!/usr/bin/env bash
# Set everything up and run the whole test suite: ruff, mypy (strict on src/), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
echo "== ruff" >&2
.venv/bin/ruff check src tests benchmarks
echo "== mypy (strict, src/)" >&2
.venv/bin/mypy
echo "== anvil (npm @foundry-rs/anvil, for the contract tests)" >&2
if command -v npm >/dev/null 2>&1; then
  HAILING_ANVIL="$(bash scripts/install-anvil.sh)"
  export HAILING_ANVIL HAILING_REQUIRE_ANVIL=1
else
  echo "npm not found: the anvil tests will be skipped (apt-get install npm)" >&2
fi
echo "== chromium (Debian package, for the browser tests in tests/browser/)" >&2
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if HAILING_CHROMIUM="$(bash scripts/install-chromium.sh)"; then
  export HAILING_CHROMIUM
else
  unset HAILING_CHROMIUM
  echo "no chromium: the browser tests will be skipped (they fail under CI=true)" >&2
fi
echo "== NAT lab (Debian iproute2, iptables, tcpdump, coturn; tests/natlab/)" >&2
bash scripts/install-natlab.sh || echo "the NAT lab tests will be skipped (they fail under CI=true)" >&2
# The test extra installs opendht (OpenDHT, the connect benchmark's second DHT) where its
# wheels exist: there its interop tests must run, not be skipped.
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  export HAILING_REQUIRE_OPENDHT=1
fi
echo "== pytest" >&2
# pytest exits 5 when it collects no test: with set -e that fails the run, as it should.
.venv/bin/python -m pytest "$@"
