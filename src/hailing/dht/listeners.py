"""The listeners a storing node keeps for inbox keys (``hailing_listen``), bounded so
that nobody can lock a key or the node.

Theory of operation
-------------------
A listener is ``(key, addr)``: the address pushes for ``key`` go to, until its expiry.
Each listener belongs to a *source*, the party accounted for it (the responder passes the
sender's IPv4 address, its IPv6 /64, or on loopback its full address: every process on
one host shares 127.0.0.1). A listen with ttl > 0 registers or renews; ttl 0 removes the
sender's own entry, and removing an entry that does not exist does nothing.

Bounds, and what happens at each:

- a source holds at most ``per_source`` listeners in all: past that its new listens are
  refused (the caller answers error 242); nobody else is affected;
- a source holds at most ``source_per_key`` listeners of one key: a further one
  displaces that source's own entry closest to expiry;
- a key holds at most ``per_key`` listeners: a newcomer displaces an entry of the source
  holding most entries of that key, the one closest to expiry (among single-entry
  sources: the entry closest to expiry, i.e. the one renewed longest ago). So a full
  key never refuses a legitimate newcomer, and a listener that left without a word (a
  one-shot client that exited) is the first to go, since live listeners renew at half
  their ttl;
- the node holds at most ``total`` listeners: a newcomer displaces the oldest entry of
  the heaviest source in the whole table.

Every operation is O(1) amortised apart from expiry (a heap: O(log n) per entry), and a
refused listen leaves nothing behind.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable

#: Listeners one key holds at once.
MAX_LISTENERS_PER_KEY = 8
#: Listeners of one key one source holds at once (several devices behind one NAT).
MAX_SOURCE_PER_KEY = 4
#: Longest ttl granted (seconds); listeners renew by listening again.
MAX_LISTEN_TTL = 600.0
#: Listeners one storing node holds in all.
MAX_LISTENERS = 10_000
#: Listeners one source holds in all (a tenth of the node's).
MAX_LISTENS_PER_SOURCE = 1000


class _Entry:
    __slots__ = ("addr", "expires", "key", "source")

    def __init__(self, key: bytes, addr: Hashable, source: bytes, expires: float) -> None:
        self.key = key
        self.addr = addr
        self.source = source
        self.expires = expires


class _CountIndex:
    """Sources by how many listeners each holds, with the heaviest found in O(1)."""

    def __init__(self) -> None:
        self._by_count: dict[int, dict[bytes, None]] = {}
        self._max = 0

    def change(self, source: bytes, old: int, new: int) -> None:
        by = self._by_count
        if old:
            group = by[old]
            del group[source]
            if not group:
                del by[old]
        if new:
            by.setdefault(new, {})[source] = None
            self._max = max(self._max, new)
        while self._max and self._max not in by:  # counts move by one: one step at most
            self._max -= 1

    def heaviest(self) -> bytes | None:
        return next(iter(self._by_count[self._max])) if self._max else None


class ListenerTable:
    """The listeners of one storing node. See the module docstring."""

    def __init__(
        self,
        per_key: int = MAX_LISTENERS_PER_KEY,
        source_per_key: int = MAX_SOURCE_PER_KEY,
        per_source: int = MAX_LISTENS_PER_SOURCE,
        total: int = MAX_LISTENERS,
        max_ttl: float = MAX_LISTEN_TTL,
    ) -> None:
        self.per_key = per_key
        self.source_per_key = source_per_key
        self.per_source = per_source
        self.total = total
        self.max_ttl = max_ttl
        self._keys: dict[bytes, dict[Hashable, _Entry]] = {}
        #: source -> its entries, least recently registered or renewed first.
        self._sources: dict[bytes, OrderedDict[tuple[bytes, Hashable], _Entry]] = {}
        self._heavy = _CountIndex()
        self._expiry: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self.count = 0
        #: Entries pushed out by newcomers, and listens refused (source over its quota).
        self.displaced = 0
        self.refused = 0

    def __len__(self) -> int:
        return self.count

    @property
    def keys_held(self) -> int:
        """Keys with at least one listener entry (expired ones included until expiry)."""
        return len(self._keys)

    def listen(self, key: bytes, addr: Hashable, source: bytes, ttl: float, now: float) -> float:
        """Register, renew (ttl > 0) or remove (ttl 0) ``addr``'s listen on ``key``.
        Returns the granted ttl: 0 when removed, or refused (source over its quota)."""
        ttl = max(0.0, min(ttl, self.max_ttl))
        entries = self._keys.get(key)
        entry = entries.get(addr) if entries is not None else None
        if entry is not None and entry.expires <= now:
            self._remove(entry)
            entry = None
        if ttl == 0.0:
            if entry is not None:
                self._remove(entry)
            return 0.0
        if entry is not None:  # a renewal
            entry.expires = now + ttl
            self._sources[entry.source].move_to_end((key, addr))
            self._push_expiry(entry)
            return ttl
        held = self._sources.get(source)
        if held is not None and len(held) >= self.per_source:
            self.refused += 1
            return 0.0
        if entries is not None:
            self._make_room(entries, source, now)
        if self.count >= self.total:
            self._evict_heaviest()
        entry = _Entry(key, addr, source, now + ttl)
        self._keys.setdefault(key, {})[addr] = entry
        mine = self._sources.setdefault(source, OrderedDict())
        mine[(key, addr)] = entry
        self._heavy.change(source, len(mine) - 1, len(mine))
        self.count += 1
        self._push_expiry(entry)
        return ttl

    def listeners(self, key: bytes, now: float) -> list[Hashable]:
        return [a for a, e in self._keys.get(key, {}).items() if e.expires > now]

    def expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, _, entry = heapq.heappop(heap)
            if entry.expires == expires and self._live(entry):
                self._remove(entry)

    # -- internals ---------------------------------------------------------------------

    def _make_room(self, entries: dict[Hashable, _Entry], source: bytes, now: float) -> None:
        """Before a newcomer from ``source`` joins ``entries`` (one key's listeners)."""
        for e in [e for e in entries.values() if e.expires <= now]:
            self._remove(e)
        mine = [e for e in entries.values() if e.source == source]
        if len(mine) >= self.source_per_key:
            self._displace(min(mine, key=_expires))
        elif len(entries) >= self.per_key:
            per_source: dict[bytes, int] = {}
            for e in entries.values():
                per_source[e.source] = per_source.get(e.source, 0) + 1
            self._displace(max(entries.values(), key=lambda e: (per_source[e.source], -e.expires)))

    def _evict_heaviest(self) -> None:
        source = self._heavy.heaviest()
        if source is not None:
            self._displace(next(iter(self._sources[source].values())))

    def _displace(self, entry: _Entry) -> None:
        self.displaced += 1
        self._remove(entry)

    def _live(self, entry: _Entry) -> bool:
        return self._keys.get(entry.key, {}).get(entry.addr) is entry

    def _remove(self, entry: _Entry) -> None:
        entries = self._keys[entry.key]
        del entries[entry.addr]
        if not entries:
            del self._keys[entry.key]
        mine = self._sources[entry.source]
        del mine[(entry.key, entry.addr)]
        self._heavy.change(entry.source, len(mine) + 1, len(mine))
        if not mine:
            del self._sources[entry.source]
        self.count -= 1

    def _push_expiry(self, entry: _Entry) -> None:
        self._seq += 1
        heapq.heappush(self._expiry, (entry.expires, self._seq, entry))
        if len(self._expiry) > 2 * self.count + 64:  # renewals leave stale heap items
            items = []
            for e in self._all():
                self._seq += 1
                items.append((e.expires, self._seq, e))
            heapq.heapify(items)
            self._expiry = items

    def _all(self) -> list[_Entry]:
        return [e for entries in self._keys.values() for e in entries.values()]


def _expires(e: _Entry) -> float:
    return e.expires


__all__ = [
    "MAX_LISTENERS",
    "MAX_LISTENERS_PER_KEY",
    "MAX_LISTENS_PER_SOURCE",
    "MAX_LISTEN_TTL",
    "MAX_SOURCE_PER_KEY",
    "ListenerTable",
]
