"""Storage for hailing's extension methods: multi-writer inboxes and their listeners.

An inbox is a key (20 bytes, like a BEP44 target) under which anyone holding a write
token may post small opaque values (sealed envelopes); many writers, one reader. A node
that stores an inbox pushes each new value at once to the nodes listening on that key,
so a listener never polls. Everything is bounded, and every limit is per storing node:

- a value is at most :data:`MAX_VALUE` bytes and lives :data:`VALUE_TTL` seconds;
- the values are a :class:`~hailing.dht.quota.SourceTable`, each value charged to the
  source that posted it: an inbox holds :data:`MAX_VALUES_PER_KEY` values, of which
  :data:`MAX_SOURCE_VALUES_PER_KEY` from one source; a source holds
  :data:`MAX_VALUES_PER_SOURCE` values in all, the node :data:`MAX_VALUES`. At each
  bound the heaviest source's oldest value makes room, so a flood of posts to a key
  pushes out the flooder's own values first, not a real message;
- one source may post :data:`POSTS_PER_MINUTE` values a minute (a token bucket of
  :data:`POST_BURST`, keyed by IPv4 address or IPv6 /64; loopback sockets are exempt
  while ``DhtConfig.exempt_loopback`` holds): every post costs a push per listener;
- a listen reply carries the waiting values that fit in :data:`LISTEN_VALUES_BUDGET`
  bytes (:func:`fit_values`) and says how many more wait (``more``); those are pushed
  to a new listener right after, so a reply never exceeds the datagram limit;
- listeners live in a :class:`~hailing.dht.listeners.ListenerTable`: a key has at most
  :data:`MAX_LISTENERS_PER_KEY`, each for at most :data:`MAX_LISTEN_TTL` seconds,
  renewed by listening again and removed by a listen with ttl 0. A full key never
  refuses a new listener: the newcomer displaces another, so listeners that left without
  a word (a one-shot client that exited) cannot lock a key.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Hashable

from ..krpc._codec import MAX_DATAGRAM
from .listeners import (
    MAX_LISTEN_TTL,
    MAX_LISTENERS,
    MAX_LISTENERS_PER_KEY,
    MAX_LISTENS_PER_SOURCE,
    MAX_SOURCE_PER_KEY,
    ListenerTable,
)
from .quota import SourceBudget, SourceTable

MAX_VALUE = 1000
MAX_VALUES_PER_KEY = 16
MAX_SOURCE_VALUES_PER_KEY = 8
VALUE_TTL = 300.0
#: Values one storing node holds (at most MAX_VALUE bytes each: 20 MB).
MAX_VALUES = 20_000
#: Values one source holds on a storing node (a tenth).
MAX_VALUES_PER_SOURCE = 2_000
POSTS_PER_MINUTE = 60.0
POST_BURST = 20.0
MAX_SOURCES = 10_000
#: Bytes of bencoded values a listen reply carries at most. The rest of the datagram
#: (the KRPC envelope with a 16-byte ``t``, an 18-byte ``ip``, ``v``, ``id``, ``ttl`` and
#: ``more``) takes under 200 bytes; the margin covers a ``v`` of up to 300 bytes.
LISTEN_VALUES_BUDGET = MAX_DATAGRAM - 512


def fit_values(values: list[bytes], budget: int = LISTEN_VALUES_BUDGET) -> tuple[list[bytes], int]:
    """The first ``values`` whose bencoded list fits in ``budget`` bytes, and how many
    did not fit."""
    size = 2  # "l" ... "e"
    for i, v in enumerate(values):
        size += len(v) + len(str(len(v))) + 1
        if size > budget:
            return values[:i], len(values) - i
    return values, 0


class InboxStore:
    """key -> values (with expiry), the per-source post budget, and the listeners."""

    def __init__(self, stats: Counter[str] | None = None) -> None:
        self.values_table: SourceTable[bytes] = SourceTable(
            per_key=MAX_VALUES_PER_KEY,
            source_per_key=MAX_SOURCE_VALUES_PER_KEY,
            per_source=MAX_VALUES_PER_SOURCE,
            total=MAX_VALUES,
            name="inbox_values",
            stats=stats,
        )
        self.post_budget = SourceBudget(POSTS_PER_MINUTE / 60.0, POST_BURST, MAX_SOURCES)
        self.listener_table = ListenerTable(stats=stats)

    # -- values ------------------------------------------------------------------------

    def allow_post(self, source: bytes, now: float) -> bool:
        """Token bucket per source: POST_BURST posts, refilled at POSTS_PER_MINUTE."""
        return self.post_budget.allow(source, now)

    def post(self, key: bytes, value: bytes, source: bytes, now: float) -> bool:
        """Store ``value`` for ``source``; False if it was already there (nothing to push)."""
        if self.values_table.get(key, value, now) is not None:
            return False
        self.values_table.put(key, value, source, value, now + VALUE_TTL, now)
        return True

    def values(self, key: bytes, now: float) -> list[bytes]:
        """The key's live values, oldest first."""
        return [e.value for e in self.values_table.live(key, now)]

    # -- listeners ---------------------------------------------------------------------

    def listen(
        self, key: bytes, addr: Hashable, source: bytes, ttl: float, now: float,
        ptoken: bytes = b"",
    ) -> float:
        """Register (ttl > 0) or remove (ttl 0) ``addr`` on ``key``; see ListenerTable."""
        return self.listener_table.listen(key, addr, source, ttl, now, ptoken)

    def listeners(self, key: bytes, now: float) -> list[Hashable]:
        return self.listener_table.listeners(key, now)

    def push_targets(self, key: bytes, now: float) -> list[tuple[Hashable, bytes]]:
        return self.listener_table.push_targets(key, now)

    def expire(self, now: float) -> None:
        self.values_table.expire(now)
        self.listener_table.expire(now)


class SeenValues:
    """What a listener already delivered: pushes come from several storing nodes."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    def first_time(self, key: bytes, value: bytes) -> bool:
        digest = hashlib.sha1(key + value).digest()
        if digest in self._seen:
            return False
        self._seen[digest] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


__all__ = [
    "MAX_LISTENERS",
    "MAX_LISTENERS_PER_KEY",
    "MAX_LISTENS_PER_SOURCE",
    "MAX_LISTEN_TTL",
    "MAX_SOURCE_PER_KEY",
    "InboxStore",
    "SeenValues",
    "fit_values",
]
