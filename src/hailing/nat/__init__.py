"""NAT traversal from the DHT: relays volunteered by public nodes (TURN, coturn)."""

from .relay import RELAY_INFOHASH, RelayFinder, RelayService, TurnCredentials
from .turnserver import TurnConfig, TurnServer

__all__ = [
    "RELAY_INFOHASH",
    "RelayFinder",
    "RelayService",
    "TurnConfig",
    "TurnCredentials",
    "TurnServer",
]
