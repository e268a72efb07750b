"""hailing: serverless WebRTC for decentralized social networks.

This release provides the foundation: a BitTorrent-Mainline-compatible DHT (BEP5, BEP32,
BEP42, BEP43, BEP44) with a sans-IO core (:class:`DhtProtocol`) and an asyncio UDP node
(:class:`DhtNode`).
"""

from .dht import DhtConfig, DhtProtocol, NodeInfo
from .dht.bep44 import ImmutableItem, MutableItem
from .errors import (
    HailingError,
    KrpcError,
    LocalProtocolError,
    NotFoundError,
    QueryTimeout,
    RemoteProtocolError,
)

__version__ = "0.1.0"

__all__ = [
    "DhtConfig",
    "DhtProtocol",
    "HailingError",
    "ImmutableItem",
    "KrpcError",
    "LocalProtocolError",
    "MutableItem",
    "NodeInfo",
    "NotFoundError",
    "QueryTimeout",
    "RemoteProtocolError",
    "__version__",
]
