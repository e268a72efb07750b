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
- a key has at most :data:`MAX_LISTENERS_PER_KEY` listeners, each for at most
  :data:`MAX_LISTEN_TTL` seconds, renewed by listening again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

MAX_VALUE = 1000
MAX_VALUES_PER_KEY = 16
VALUE_TTL = 300.0
MAX_KEYS = 10_000
POSTS_PER_MINUTE = 60.0
POST_BURST = 20.0
MAX_LISTENERS_PER_KEY = 8
MAX_LISTEN_TTL = 600.0
MAX_LISTENERS = 10_000
MAX_SOURCES = 10_000


class InboxStore:
    """key -> values (with expiry), the per-source rate limiter, and the listeners."""

    def __init__(self) -> None:
        self._values: OrderedDict[bytes, list[tuple[bytes, float]]] = OrderedDict()
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._listeners: dict[bytes, dict[Hashable, float]] = {}
        self._listener_count = 0

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

    def listen(self, key: bytes, addr: Hashable, ttl: float, now: float) -> float:
        """Register ``addr`` on ``key``; returns the granted ttl (0 when full)."""
        ttl = max(0.0, min(ttl, MAX_LISTEN_TTL))
        listeners = self._listeners.setdefault(key, {})
        for a in [a for a, exp in listeners.items() if exp <= now]:
            del listeners[a]
            self._listener_count -= 1
        if addr not in listeners:
            if len(listeners) >= MAX_LISTENERS_PER_KEY or self._listener_count >= MAX_LISTENERS:
                return 0.0
            self._listener_count += 1
        if ttl == 0.0:
            del listeners[addr]
            self._listener_count -= 1
            return 0.0
        listeners[addr] = now + ttl
        return ttl

    def listeners(self, key: bytes, now: float) -> list[Hashable]:
        return [a for a, exp in self._listeners.get(key, {}).items() if exp > now]

    def expire(self, now: float) -> None:
        for key in list(self._values):
            live = [(v, exp) for v, exp in self._values[key] if exp > now]
            if live:
                self._values[key] = live
            else:
                del self._values[key]
        for key in list(self._listeners):
            listeners = self._listeners[key]
            for a in [a for a, exp in listeners.items() if exp <= now]:
                del listeners[a]
                self._listener_count -= 1
            if not listeners:
                del self._listeners[key]


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
