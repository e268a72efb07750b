"""Per-source accounting: who a request is charged to, tables that stay bounded by
evicting the heaviest source first, and per-source work budgets (issue 9).

Theory of operation
-------------------
*Sources.* Every request that stores something or costs work is charged to its
**source** (:func:`source_of`): the sender's IPv4 address, or its IPv6 /64 (one host
gets a whole /64, so a /64 counts as one), whatever the port. Loopback senders are a
special case while :attr:`DhtConfig.exempt_loopback` holds (the default): every process
of a loopback testnet shares 127.0.0.1, so each loopback *socket* is its own source and
is never rate limited (:func:`exempt`). With the exemption off, 127.0.0.1 is one source
like any other address, so tests can exercise the real limits.

*Tables.* A :class:`SourceTable` holds entries ``(key, sub) -> value`` with an expiry,
each charged to a source, under five bounds:

- ``per_source`` entries in all per source: past it the source's own oldest entry
  makes room (or, with ``refuse_over_quota``, the newcomer is refused); nobody else is
  affected;
- ``source_per_key`` entries of one key per source: the source's own oldest entry of
  that key makes room;
- ``per_key`` entries per key: the newcomer displaces the oldest entry of the source
  holding most of that key's entries;
- ``total`` entries: the newcomer displaces the oldest entry of the heaviest source of
  the whole table;
- ``max_keys`` keys (optional): a key is charged to the source whose entry created it,
  and a new key drops (whole) the oldest key of the source that created most.

"Oldest" means least recently inserted or renewed; among equally heavy sources the one
least recently active goes first, so with single-entry sources the victim is the entry
renewed longest ago (a client that left without a word). A renewal keeps the entry's
source: adopting others' entries by renewing them shifts no weight.

Each of these steps is O(1) (:class:`SourceLedger` keeps every source's entries in
order and finds the heaviest source in O(1)); expiry is a heap with lazy deletion,
O(log n) per entry and compacted when stale items pile up (amortised O(1)). Nothing in
an insert or an eviction scans the table, so a full table costs what an empty one does.

*Budgets.* A :class:`SourceBudget` is a token bucket per source (``burst`` units,
refilled at ``rate`` per second) for work that a quota alone does not bound: a flood of
valid stores only churns the flooder's own entries, but each one still costs the node
work (and a post costs pushes to every listener). Its memory is bounded by forgetting
the least recently seen source, which loses nothing when that source has been idle for
``burst / rate`` seconds (its bucket is full again by then).
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from ..krpc import AddressCodec

E = TypeVar("E", bound=Hashable)
V = TypeVar("V")

_V4_MAPPED = bytes(10) + b"\xff\xff"
_V6_LOOPBACK = bytes(15) + b"\x01"


def is_loopback(ip: bytes) -> bool:
    """127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104 (raw address bytes)."""
    if len(ip) == 16 and ip[:12] == _V4_MAPPED:
        ip = ip[12:]
    return (len(ip) == 4 and ip[0] == 127) or ip == _V6_LOOPBACK


def source_of(codec: AddressCodec, addr: Hashable, exempt_loopback: bool = True) -> bytes:
    """The source ``addr`` is charged to: its IPv4 address (4 bytes), its IPv6 /64
    (8 bytes; an IPv4-mapped address counts as its IPv4 address), or, on loopback while
    ``exempt_loopback``, the socket's full compact address (6 or 18 bytes). Addresses
    without a wire form (a custom codec's) are charged to their codec ``ip_key``."""
    packed = codec.pack(addr)
    if packed is None:
        return b"\x00" + codec.ip_key(addr)  # a prefix keeps it apart from real IPs
    ip = packed[:-2]
    if len(ip) == 16 and ip[:12] == _V4_MAPPED:
        ip = ip[12:]
    if exempt_loopback and is_loopback(ip):
        return packed
    return ip[:8] if len(ip) == 16 else ip


def exempt(codec: AddressCodec, addr: Hashable, exempt_loopback: bool) -> bool:
    """Is ``addr`` exempt from rate limits (a loopback sender while the exemption holds)?"""
    if not exempt_loopback:
        return False
    packed = codec.pack(addr)
    return packed is not None and is_loopback(packed[:-2])


class _CountIndex:
    """Sources by weight, the heaviest found in O(1). Within a weight, a source that
    gains an entry or renews one goes to the young end, one that loses an entry to the
    old end (first in line among its new equals): with single-entry sources the first
    in line is the one renewed longest ago."""

    __slots__ = ("_by_count", "_max")

    def __init__(self) -> None:
        self._by_count: dict[int, OrderedDict[bytes, None]] = {}
        self._max = 0

    def change(self, source: bytes, old: int, new: int) -> None:
        by = self._by_count
        if old:
            group = by[old]
            del group[source]
            if not group:
                del by[old]
        if new:
            joined = by.get(new)
            if joined is None:
                joined = by[new] = OrderedDict()
            joined[source] = None
            if new < old:
                joined.move_to_end(source, last=False)
            self._max = max(self._max, new)
        while self._max and self._max not in by:  # counts move by one: one step at most
            self._max -= 1

    def touch(self, source: bytes, count: int) -> None:
        self._by_count[count].move_to_end(source)

    def heaviest(self) -> bytes | None:
        return next(iter(self._by_count[self._max])) if self._max else None


class SourceLedger(Generic[E]):
    """Items grouped by the source they are charged to, each source's least recently
    used first, with the heaviest source in O(1). Every operation is O(1)."""

    __slots__ = ("_by_source", "_heavy", "_len")

    def __init__(self) -> None:
        self._by_source: dict[bytes, OrderedDict[E, None]] = {}
        self._heavy = _CountIndex()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def count(self, source: bytes) -> int:
        items = self._by_source.get(source)
        return len(items) if items is not None else 0

    def add(self, source: bytes, item: E) -> None:
        items = self._by_source.get(source)
        if items is None:
            items = self._by_source[source] = OrderedDict()
        items[item] = None
        self._heavy.change(source, len(items) - 1, len(items))
        self._len += 1

    def touch(self, source: bytes, item: E) -> None:
        items = self._by_source[source]
        items.move_to_end(item)
        self._heavy.touch(source, len(items))

    def remove(self, source: bytes, item: E) -> None:
        items = self._by_source[source]
        del items[item]
        self._heavy.change(source, len(items) + 1, len(items))
        if not items:
            del self._by_source[source]
        self._len -= 1

    def oldest(self, source: bytes) -> E:
        return next(iter(self._by_source[source]))

    def heaviest(self) -> bytes | None:
        return self._heavy.heaviest()


class Entry(Generic[V]):
    """One entry of a :class:`SourceTable`."""

    __slots__ = ("alive", "expires", "key", "source", "sub", "value")

    def __init__(self, key: bytes, sub: Hashable, source: bytes, value: V, expires: float) -> None:
        self.key = key
        self.sub = sub
        self.source = source
        self.value = value
        self.expires = expires
        self.alive = True


class _Key(Generic[V]):
    __slots__ = ("creator", "entries", "ledger")

    def __init__(self, creator: bytes, ledger: bool) -> None:
        self.creator = creator
        #: sub -> entry, least recently inserted or renewed first.
        self.entries: OrderedDict[Hashable, Entry[V]] = OrderedDict()
        self.ledger: SourceLedger[Hashable] | None = SourceLedger() if ledger else None


class SourceTable(Generic[V]):
    """Entries ``(key, sub) -> value`` charged to sources, bounded per source, per key,
    per source and key, in total and (optionally) in keys. See the module docstring."""

    def __init__(
        self,
        *,
        per_key: int,
        source_per_key: int,
        per_source: int,
        total: int,
        max_keys: int | None = None,
        refuse_over_quota: bool = False,
        name: str = "entries",
        stats: Counter[str] | None = None,
    ) -> None:
        if min(per_key, source_per_key, per_source, total, max_keys or 1) < 1:
            raise ValueError("every bound of a SourceTable is at least 1")
        self.per_key = per_key
        self.source_per_key = source_per_key
        self.per_source = per_source
        self.total = total
        self.max_keys = max_keys
        self.refuse_over_quota = refuse_over_quota
        self.name = name
        self.stats = stats
        self._keys: dict[bytes, _Key[V]] = {}
        self._ledger: SourceLedger[Entry[V]] = SourceLedger()
        self._creators: SourceLedger[bytes] | None = SourceLedger() if max_keys else None
        self._expiry: list[tuple[float, int, Entry[V]]] = []
        self._seq = 0
        self.count = 0
        #: Entries pushed out by newcomers; newcomers refused (source over its quota).
        self.displaced = 0
        self.refused = 0

    def __len__(self) -> int:
        return self.count

    @property
    def keys_held(self) -> int:
        return len(self._keys)

    def held_by(self, source: bytes) -> int:
        """How many entries ``source`` holds (expired ones until expiry removes them)."""
        return self._ledger.count(source)

    def get(self, key: bytes, sub: Hashable, now: float) -> Entry[V] | None:
        k = self._keys.get(key)
        entry = k.entries.get(sub) if k is not None else None
        return entry if entry is not None and entry.expires > now else None

    def live(self, key: bytes, now: float) -> list[Entry[V]]:
        """The key's unexpired entries, least recently inserted or renewed first."""
        k = self._keys.get(key)
        if k is None:
            return []
        return [e for e in k.entries.values() if e.expires > now]

    def newest(self, key: bytes, now: float, limit: int) -> list[Entry[V]]:
        """Up to ``limit`` unexpired entries of ``key``, most recently renewed first."""
        k = self._keys.get(key)
        out: list[Entry[V]] = []
        if k is not None:
            for e in reversed(k.entries.values()):
                if len(out) >= limit:
                    break
                if e.expires > now:
                    out.append(e)
        return out

    def put(
        self, key: bytes, sub: Hashable, source: bytes, value: V, expires: float, now: float
    ) -> Entry[V] | None:
        """Insert ``(key, sub)`` for ``source``, or renew it (new value and expiry; it
        stays charged to the source that inserted it). Makes room as the bounds say;
        returns None only when refused (``refuse_over_quota`` and the source is full)."""
        self.expire(now)
        k = self._keys.get(key)
        entry = k.entries.get(sub) if k is not None else None
        if k is not None and entry is not None:
            entry.value = value
            entry.expires = expires
            k.entries.move_to_end(sub)
            if k.ledger is not None:
                k.ledger.touch(entry.source, sub)
            self._ledger.touch(entry.source, entry)
            self._push_expiry(entry)
            return entry
        if self._ledger.count(source) >= self.per_source:
            if self.refuse_over_quota:
                self.refused += 1
                self._bump("refused")
                return None
            self._displace(self._ledger.oldest(source))
        if self.count >= self.total:
            heavy = self._ledger.heaviest()
            if heavy is not None:
                self._displace(self._ledger.oldest(heavy))
        k = self._keys.get(key)
        if k is not None:
            self._make_room(k, source)
            k = self._keys.get(key)  # room made by removing the key's last entry
        if k is None:
            if self._creators is not None and self.max_keys is not None:
                if len(self._keys) >= self.max_keys:
                    self._drop_key_of_heaviest_creator()
                self._creators.add(source, key)
            k = self._keys[key] = _Key(source, self.per_key > 1)
        entry = Entry(key, sub, source, value, expires)
        k.entries[sub] = entry
        if k.ledger is not None:
            k.ledger.add(source, sub)
        self._ledger.add(source, entry)
        self.count += 1
        self._push_expiry(entry)
        return entry

    def remove(self, key: bytes, sub: Hashable) -> bool:
        """Remove ``(key, sub)``; False (and nothing else) if it is not there."""
        k = self._keys.get(key)
        entry = k.entries.get(sub) if k is not None else None
        if entry is None:
            return False
        self._remove(entry)
        return True

    def expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, _, entry = heapq.heappop(heap)
            if entry.alive and entry.expires == expires:
                self._remove(entry)

    # -- internals ---------------------------------------------------------------------

    def _make_room(self, k: _Key[V], source: bytes) -> None:
        """Before a newcomer from ``source`` joins the key ``k``."""
        ledger = k.ledger
        if ledger is None:  # one entry per key
            if len(k.entries) >= self.per_key:
                self._displace(next(iter(k.entries.values())))
            return
        if ledger.count(source) >= self.source_per_key:
            self._displace(k.entries[ledger.oldest(source)])
        elif len(k.entries) >= self.per_key:
            heavy = ledger.heaviest()
            assert heavy is not None
            self._displace(k.entries[ledger.oldest(heavy)])

    def _drop_key_of_heaviest_creator(self) -> None:
        creators = self._creators
        assert creators is not None
        creator = creators.heaviest()
        if creator is None:
            return
        k = self._keys[creators.oldest(creator)]
        for entry in list(k.entries.values()):
            self._displace(entry)

    def _displace(self, entry: Entry[V]) -> None:
        self.displaced += 1
        self._bump("displaced")
        self._remove(entry)

    def _bump(self, what: str) -> None:
        if self.stats is not None:
            self.stats[f"{self.name}_{what}"] += 1

    def _remove(self, entry: Entry[V]) -> None:
        entry.alive = False
        k = self._keys[entry.key]
        del k.entries[entry.sub]
        if k.ledger is not None:
            k.ledger.remove(entry.source, entry.sub)
        self._ledger.remove(entry.source, entry)
        self.count -= 1
        if not k.entries:
            del self._keys[entry.key]
            if self._creators is not None:
                self._creators.remove(k.creator, entry.key)

    def _push_expiry(self, entry: Entry[V]) -> None:
        self._seq += 1
        heapq.heappush(self._expiry, (entry.expires, self._seq, entry))
        if len(self._expiry) > 2 * self.count + 64:  # renewals leave stale heap items
            live = [t for t in self._expiry if t[2].alive and t[2].expires == t[0]]
            heapq.heapify(live)
            self._expiry = live


class SourceBudget:
    """A token bucket per source: ``burst`` units, refilled at ``rate`` a second. At most
    ``max_sources`` buckets are kept; the least recently seen source is forgotten."""

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: bytes, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` units from ``source``'s bucket; False (nothing taken) if short."""
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= cost
        self._buckets[source] = (tokens - cost if ok else tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return ok


__all__ = [
    "Entry",
    "SourceBudget",
    "SourceLedger",
    "SourceTable",
    "exempt",
    "is_loopback",
    "source_of",
]
