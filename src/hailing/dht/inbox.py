"""Storage for hailing's extension methods: multi-writer inboxes and their listeners.

An inbox is a key (20 bytes, like a BEP44 target) under which anyone holding a write
token may post small opaque values (sealed envelopes); many writers, one reader. A node
that stores an inbox pushes each new value at once to the nodes listening on that key,
so a listener never polls. Everything is bounded, and every limit is per storing node:

- a value is at most :data:`MAX_VALUE` bytes; an inbox holds :data:`MAX_VALUES_PER_KEY`
  values (the oldest goes first) for :data:`VALUE_TTL` seconds;
- one source IP may post :data:`POSTS_PER_MINUTE` values a minute (token bucket), so a
  flood from one host cannot push real messages out of an inbox (loopback sources are
  exempt: on a loopback testnet every node is 127.0.0.1);
- listeners live in a :class:`~hailing.dht.listeners.ListenerTable`: a key has at most
  :data:`MAX_LISTENERS_PER_KEY`, each for at most :data:`MAX_LISTEN_TTL` seconds,
  renewed by listening again and removed by a listen with ttl 0. A full key never
  refuses a new listener: the newcomer displaces another, so listeners that left without
  a word (a one-shot client that exited) cannot lock a key.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

from .listeners import (
    MAX_LISTEN_TTL,
    MAX_LISTENERS,
    MAX_LISTENERS_PER_KEY,
    MAX_LISTENS_PER_SOURCE,
    MAX_SOURCE_PER_KEY,
    ListenerTable,
)

MAX_VALUE = 1000
MAX_VALUES_PER_KEY = 16
VALUE_TTL = 300.0
MAX_KEYS = 10_000
POSTS_PER_MINUTE = 60.0
POST_BURST = 20.0
MAX_SOURCES = 10_000


class InboxStore:
    """key -> values (with expiry), the per-source rate limiter, and the listeners."""

    def __init__(self) -> None:
        self._values: OrderedDict[bytes, list[tuple[bytes, float]]] = OrderedDict()
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self.listener_table = ListenerTable()

    # -- values ------------------------------------------------------------------------

    def allow_post(self, source: bytes, now: float) -> bool:
        """Token bucket per source IP: POST_BURST posts, refilled at POSTS_PER_MINUTE."""
        tokens, last = self._buckets.pop(source, (POST_BURST, now))
        tokens = min(POST_BURST, tokens + (now - last) * POSTS_PER_MINUTE / 60.0)
        ok = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return ok

    def post(self, key: bytes, value: bytes, now: float) -> bool:
        """Store ``value``; False if it was already there (nothing to push)."""
        values = self._values.get(key)
        if values is None:
            if len(self._values) >= MAX_KEYS:
                self._values.popitem(last=False)
            values = self._values[key] = []
        else:
            self._values.move_to_end(key)
        live = [(v, exp) for v, exp in values if exp > now]
        if any(v == value for v, _ in live):
            values[:] = live
            return False
        live.append((value, now + VALUE_TTL))
        values[:] = live[-MAX_VALUES_PER_KEY:]
        return True

    def values(self, key: bytes, now: float) -> list[bytes]:
        return [v for v, exp in self._values.get(key, ()) if exp > now]

    # -- listeners ---------------------------------------------------------------------

    def listen(self, key: bytes, addr: Hashable, source: bytes, ttl: float, now: float) -> float:
        """Register (ttl > 0) or remove (ttl 0) ``addr`` on ``key``; see ListenerTable."""
        return self.listener_table.listen(key, addr, source, ttl, now)

    def listeners(self, key: bytes, now: float) -> list[Hashable]:
        return self.listener_table.listeners(key, now)

    def expire(self, now: float) -> None:
        for key in list(self._values):
            live = [(v, exp) for v, exp in self._values[key] if exp > now]
            if live:
                self._values[key] = live
            else:
                del self._values[key]
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
]
