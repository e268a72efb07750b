"""The sans-IO DHT core. Nothing in this package performs IO or reads a clock."""

from .config import HAILING_VERSION, DhtConfig
from .events import (
    Answered,
    CommandFailed,
    Event,
    InboxMessage,
    ItemFound,
    ListenChanged,
    Listening,
    LookupStats,
    NodesFound,
    PeersFound,
    Pong,
    StoreDone,
)
from .ids import NodeInfo
from .protocol import DhtProtocol
from .suboverlay import HAILING_INFOHASH

__all__ = [
    "HAILING_INFOHASH",
    "HAILING_VERSION",
    "Answered",
    "CommandFailed",
    "DhtConfig",
    "DhtProtocol",
    "Event",
    "InboxMessage",
    "ItemFound",
    "ListenChanged",
    "Listening",
    "LookupStats",
    "NodeInfo",
    "NodesFound",
    "PeersFound",
    "Pong",
    "StoreDone",
]
