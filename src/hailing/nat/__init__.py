"""NAT traversal from the DHT itself: STUN answered on every node's DHT port
(:mod:`hailing.nat.stun`), so that nobody configures a STUN server, and relays
volunteered by public nodes (TURN, coturn; :mod:`hailing.nat.relay`).

The names are imported lazily (as ``hailing``'s own are): ``hailing.node`` imports
``hailing.nat.stun``, and a module of this package that imports the node must not
make that a cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .relay import RELAY_INFOHASH, RelayFinder, RelayService, TurnCredentials
    from .stun import NatInfo, NatMapping, StunEndpoint
    from .turnserver import TurnConfig, TurnServer

__all__ = ["RELAY_INFOHASH", "NatInfo", "NatMapping", "RelayFinder", "RelayService",
           "StunEndpoint", "TurnConfig", "TurnCredentials", "TurnServer"]

#: Public name -> the module (relative to this package) that defines it.
_WHERE: dict[str, str] = {
    "NatInfo": ".stun",
    "NatMapping": ".stun",
    "StunEndpoint": ".stun",
    "RELAY_INFOHASH": ".relay",
    "RelayFinder": ".relay",
    "RelayService": ".relay",
    "TurnCredentials": ".relay",
    "TurnConfig": ".turnserver",
    "TurnServer": ".turnserver",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
