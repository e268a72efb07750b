"""NAT traversal from the DHT itself: STUN answered on every node's DHT port
(:mod:`hailing.nat.stun`), so that nobody configures a STUN server.

The names are imported lazily (as ``hailing``'s own are): ``hailing.node`` imports
``hailing.nat.stun``, and a module of this package that imports the node must not
make that a cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stun import NatInfo, NatMapping, StunEndpoint

__all__ = ["NatInfo", "NatMapping", "StunEndpoint"]

#: Public name -> the module (relative to this package) that defines it.
_WHERE: dict[str, str] = {
    "NatInfo": ".stun",
    "NatMapping": ".stun",
    "StunEndpoint": ".stun",
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
