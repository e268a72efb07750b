"""The NAT behaviours: the exact iptables rules a home router of each kind loads.

A router has two interfaces: ``wan`` (its public address on the lab's internet segment) and
``lan`` (198.19.N.1/24, the one host behind it at 198.19.N.2). The rules are
``iptables-restore`` input (the same text works with the nft and the legacy backend).

Filtering is common to every kind except what each adds:

* the router's own INPUT from ``wan`` takes only ESTABLISHED/RELATED traffic. An unsolicited
  packet is DROPPED, not refused: a dropped packet's conntrack entry is never confirmed, so
  it cannot take the tuple a later outgoing packet needs (otherwise a hole-punching packet
  arriving before the host's own would make Linux pick another source port);
* FORWARD lan -> wan is open, wan -> lan takes ESTABLISHED/RELATED (conntrack: the exact
  remote address and port the host sent to), plus what the kind adds.

Mapping: ``SNAT --to-source <wan address>`` and plain ``MASQUERADE`` both keep the host's
source port when it is free (Linux's default), so the mapping is endpoint-independent;
``MASQUERADE --random-fully`` picks a random port for every new conntrack entry
(endpoint-dependent: a symmetric NAT).

==================== ============================ ==========================================
kind                 mapping                      inbound to the host
==================== ============================ ==========================================
full-cone            SNAT (port kept)             anything (DNAT of all inbound to the host)
address-restricted   SNAT (port kept)             from IP addresses the host has sent to
                                                  (``recent`` list ``hl-sent``, 300 s)
port-restricted      MASQUERADE (port kept)       conntrack only (address and port)
symmetric            MASQUERADE --random-fully    conntrack only
==================== ============================ ==========================================

The ``recent`` list keeps at most 100 addresses (xt_recent's ``ip_list_tot`` default): an
address-restricted host that has sent to more than 100 distinct addresses forgets the oldest.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["NAT_KINDS", "NatKind", "router_rules"]

NatKind = Literal["public", "full-cone", "address-restricted", "port-restricted", "symmetric"]
#: Every kind, in the order of the docs (most open first).
NAT_KINDS: tuple[NatKind, ...] = get_args(NatKind)

_FILTER_HEAD = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -i wan -j DROP
-A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
"""
_NAT_HEAD = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
"""


def router_rules(kind: NatKind, *, wan: str, lan: str, host: str) -> str:
    """The ``iptables-restore`` text of a ``kind`` router: ``wan`` is its public address,
    ``lan`` the LAN prefix (``198.19.N.0/24``), ``host`` the address of the host behind it."""
    if kind == "full-cone":
        nat = (f"-A PREROUTING -i wan -d {wan} -j DNAT --to-destination {host}\n"
               f"-A POSTROUTING -o wan -s {lan} -j SNAT --to-source {wan}\n")
        fwd = ("-A FORWARD -i lan -o wan -j ACCEPT\n"
               "-A FORWARD -i wan -o lan -j ACCEPT\n")
    elif kind == "address-restricted":
        nat = (f"-A PREROUTING -i wan -d {wan} -j DNAT --to-destination {host}\n"
               f"-A POSTROUTING -o wan -s {lan} -j SNAT --to-source {wan}\n")
        fwd = ("-A FORWARD -i lan -o wan -m recent --name hl-sent --rdest --set -j ACCEPT\n"
               "-A FORWARD -i wan -o lan -m recent --name hl-sent --rsource --rcheck "
               "--seconds 300 -j ACCEPT\n")
    elif kind == "port-restricted":
        nat = f"-A POSTROUTING -o wan -s {lan} -j MASQUERADE\n"
        fwd = "-A FORWARD -i lan -o wan -j ACCEPT\n"
    elif kind == "symmetric":
        nat = f"-A POSTROUTING -o wan -s {lan} -j MASQUERADE --random-fully\n"
        fwd = "-A FORWARD -i lan -o wan -j ACCEPT\n"
    else:
        raise ValueError(f"no router for NAT kind {kind!r} (one of {', '.join(NAT_KINDS)})")
    return _NAT_HEAD + nat + "COMMIT\n" + _FILTER_HEAD + fwd + "COMMIT\n"
