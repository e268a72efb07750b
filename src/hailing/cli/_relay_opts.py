"""``hailing up --serve-relay``: volunteer a TURN relay (coturn) beside the DHT node.

The options and their checks; the daemon runs :class:`~hailing.nat.relay.RelayService`
with the :class:`~hailing.nat.turnserver.TurnConfig` built here (docs/nat.md, "Relays").
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from ..nat.turnserver import TurnConfig
    from ..node import Addr

#: Networks a node behind a NAT (or on one machine only) binds to: such an address
#: cannot be relayed to from the internet, so --serve-relay refuses it without --relay-ip.
NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "::/128", "::1/128", "fc00::/7", "fe80::/10"))

_FLAGS = ("relay_ip", "relay_port", "relay_ports", "relay_max_bps", "relay_capacity",
          "relay_lifetime")


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address, got {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number (0 or more), got {text!r}")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {text!r}")
    return value


def _range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        low, high = int(lo), int(hi)
    except ValueError:
        sep = ""
    if not sep or not 1024 <= low <= high <= 65535:
        raise argparse.ArgumentTypeError(f"expected LO-HI within 1024-65535, got {text!r}")
    return low, high


def add_relay_options(p: Any) -> None:
    from ..nat.turnserver import (
        DEFAULT_CAPACITY_BPS,
        DEFAULT_MAX_BPS,
        DEFAULT_MAX_LIFETIME,
        DEFAULT_PORT,
        DEFAULT_PORTS,
    )

    p.add_argument("--serve-relay", action="store_true",
                   help="volunteer a TURN relay for nodes behind NATs (runs coturn's "
                   "turnserver; a public address only; see docs/nat.md)")
    p.add_argument("--relay-ip", type=_ip, default=None, metavar="IP",
                   help="(--serve-relay) the public IP the relay is reached at (default: the "
                   "DHT node's bound address, which must then be public)")
    p.add_argument("--relay-port", type=_port, default=None, metavar="N",
                   help=f"(--serve-relay) its UDP port (default {DEFAULT_PORT})")
    p.add_argument("--relay-ports", type=_range, default=None, metavar="LO-HI",
                   help="(--serve-relay) the UDP ports of relayed allocations (default "
                   f"{DEFAULT_PORTS[0]}-{DEFAULT_PORTS[1]})")
    p.add_argument("--relay-max-bps", type=_count, default=None, metavar="N",
                   help="(--serve-relay) bytes per second one allocation may relay "
                   f"(default {DEFAULT_MAX_BPS}: 8 Mbit/s; 0: no cap)")
    p.add_argument("--relay-capacity", type=_count, default=None, metavar="N",
                   help="(--serve-relay) bytes per second all allocations together may "
                   f"take (default {DEFAULT_CAPACITY_BPS}; 0: no cap)")
    p.add_argument("--relay-lifetime", type=_count, default=None, metavar="S",
                   help="(--serve-relay) the longest lifetime an allocation may ask for "
                   f"before it must refresh (default {DEFAULT_MAX_LIFETIME} s)")


def relay_config(args: argparse.Namespace, bind: Addr | None) -> TurnConfig | None:
    """The TurnConfig ``--serve-relay`` asks for on a DHT node bound to ``bind`` (None
    when the daemon has no DHT node), or None without ``--serve-relay``; UsageError on
    a combination that cannot work."""
    from ..nat.turnserver import DEFAULT_PORT, DEFAULT_PORTS, TurnConfig

    if not getattr(args, "serve_relay", False):
        given = [f for f in _FLAGS if getattr(args, f, None) is not None]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --serve-relay")
        return None
    if bind is None:
        raise UsageError("--serve-relay needs the daemon's DHT node (not --relay or "
                         "--via contract): the relay is found through it")
    if getattr(args, "read_only", False):
        raise UsageError("--serve-relay and --read-only do not go together: a read-only "
                         "node answers no queries, so nobody could ask it for a relay")
    host = ipaddress.ip_address(bind[0])
    if args.relay_ip is None:
        if host.is_unspecified or any(host in n for n in NOT_PUBLIC):
            raise UsageError(f"--serve-relay needs a public address, and the DHT node is "
                             f"bound to {bind[0]}: bind it to the public IP (--bind IP:PORT) "
                             "or give --relay-ip IP (a node behind a NAT cannot relay for "
                             "others)")
        address, external = str(host), None
    else:
        address = args.relay_ip if host.is_unspecified else str(host)
        external = None if args.relay_ip == address else args.relay_ip
    low, high = args.relay_ports or DEFAULT_PORTS
    kw: dict[str, Any] = {"port": args.relay_port or DEFAULT_PORT, "external_ip": external,
                          "min_port": low, "max_port": high}
    for flag, field in (("relay_max_bps", "max_bps"), ("relay_capacity", "capacity_bps"),
                        ("relay_lifetime", "max_lifetime")):
        if getattr(args, flag) is not None:
            kw[field] = getattr(args, flag)
    if address.startswith("127."):  # an explicit --relay-ip 127.0.0.1: a loopback test
        kw["allow_loopback_peers"] = True
    config = TurnConfig(address, **kw)
    config.check()
    return config


__all__ = ["add_relay_options", "relay_config"]
