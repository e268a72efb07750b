"""Events the protocol core emits (``DhtProtocol.next_event()``).

Every command returns a query id (``qid``); exactly one event with that ``qid`` reports
its outcome: a result event, or :class:`CommandFailed`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ..errors import HailingError
from .bep44 import ImmutableItem, MutableItem
from .ids import NodeInfo


@dataclass(frozen=True, slots=True)
class LookupStats:
    """What a lookup cost: messages sent, answers, timeouts, hops and virtual duration."""

    messages: int = 0
    responses: int = 0
    timeouts: int = 0
    hops: int = 0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class Event:
    qid: int


@dataclass(frozen=True, slots=True)
class Pong(Event):
    node_id: bytes
    rtt: float


@dataclass(frozen=True, slots=True)
class NodesFound(Event):
    """``find_node`` or ``bootstrap`` finished: the closest responsive nodes, closest first."""

    target: bytes
    nodes: tuple[NodeInfo, ...]
    stats: LookupStats = field(default_factory=LookupStats)


@dataclass(frozen=True, slots=True)
class PeersFound(Event):
    info_hash: bytes
    peers: tuple[Hashable, ...]
    nodes: tuple[NodeInfo, ...]
    stats: LookupStats = field(default_factory=LookupStats)


@dataclass(frozen=True, slots=True)
class ItemFound(Event):
    """A BEP44 ``get`` finished; ``item`` is None when nobody had it. ``nodes``: the
    closest nodes that answered, closest first (where a later get of the same target
    may ask directly)."""

    target: bytes
    item: ImmutableItem | MutableItem | None
    stats: LookupStats = field(default_factory=LookupStats)
    nodes: tuple[NodeInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreDone(Event):
    """A ``put`` or ``announce`` finished: how many nodes accepted it, and the refusals."""

    target: bytes
    stored: int
    errors: tuple[tuple[int, str], ...] = ()
    stats: LookupStats = field(default_factory=LookupStats)


@dataclass(frozen=True, slots=True)
class Listening(Event):
    """A ``listen`` reached ``nodes`` storing nodes; pushes will arrive as InboxMessage."""

    key: bytes
    nodes: int
    stats: LookupStats = field(default_factory=LookupStats)


@dataclass(frozen=True, slots=True)
class InboxMessage(Event):
    """A value posted to an inbox we listen on (qid 0: not the answer to a command)."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ListenChanged(Event):
    """A key we listen on gained its first live storing node (``live``) or lost its last
    one (qid 0: not the answer to a command; see :mod:`hailing.dht.inbox_client`)."""

    key: bytes
    live: bool


@dataclass(frozen=True, slots=True)
class Answered(Event):
    """A :meth:`~hailing.dht.DhtProtocol.query` (one request, any method) was answered:
    the response dictionary ``reply`` (``r``), the answering node's id and the round trip."""

    reply: dict[bytes, Any]
    node_id: bytes
    rtt: float


@dataclass(frozen=True, slots=True)
class CommandFailed(Event):
    error: HailingError
