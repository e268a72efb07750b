#!/usr/bin/env bash
# Make sure the NAT lab (tests/natlab/) has what it needs: the Debian packages iproute2
# (ip netns), iptables, tcpdump and coturn (the TURN server the relay tests supervise),
# installed with apt-get when one is missing and we run as root (as CI does, on a fresh
# Debian-like machine). Quiet and idempotent: nothing happens when all are there.
# Exits 1 with one clear line when something is missing and cannot be installed.
#
# Usage: scripts/install-natlab.sh
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
{ command -v iptables-nft-restore >/dev/null 2>&1 || command -v iptables-legacy-restore >/dev/null 2>&1 \
  || command -v iptables-restore >/dev/null 2>&1; } || missing+=(iptables)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
if [ "${#missing[@]}" -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the NAT lab needs the Debian packages ${missing[*]}: install them (as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing the Debian packages ${missing[*]} (apt-get, for the NAT lab)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
for tool in ip tcpdump turnserver; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: apt-get ran but $tool is still missing" >&2; exit 1; }
done
