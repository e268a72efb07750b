#!/usr/bin/env bash
# Make sure the browser tests have a Chromium: the Debian package `chromium`, installed
# with apt-get when it is missing and we run as root (as CI does, on a fresh Debian-like
# machine). Prints the path of the chromium binary on stdout (messages go to stderr);
# exits 1 with one clear line when there is none and it cannot be installed.
#
# Nothing else is downloaded: Playwright drives this Chromium (executable_path) and is
# never allowed to fetch a browser of its own (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
#
# Usage: scripts/install-chromium.sh       (HAILING_CHROMIUM=/path overrides the search)
set -euo pipefail
if [ -n "${HAILING_CHROMIUM:-}" ]; then
  if [ -x "$HAILING_CHROMIUM" ]; then echo "$HAILING_CHROMIUM"; exit 0; fi
  echo "error: HAILING_CHROMIUM=$HAILING_CHROMIUM is not executable" >&2
  exit 1
fi
found="$(command -v chromium || true)"
if [ -z "$found" ]; then
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the browser tests need the Debian package chromium: install it (as root: apt-get install chromium), or set HAILING_CHROMIUM=/path/to/chromium" >&2
    exit 1
  fi
  echo "installing the Debian package chromium (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends chromium >&2
  found="$(command -v chromium || true)"
  if [ -z "$found" ]; then
    echo "error: apt-get installed chromium but no chromium binary is on PATH" >&2
    exit 1
  fi
fi
# Ubuntu's chromium package is a wrapper around a snap, which does not run here.
if ! "$found" --version >/dev/null 2>&1; then
  echo "error: $found does not run ('$found --version' failed); install Debian's chromium or set HAILING_CHROMIUM" >&2
  exit 1
fi
echo "$found"
