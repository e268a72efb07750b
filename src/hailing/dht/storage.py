"""What a node stores for others: announced peers (BEP5) and BEP44 items, bounded.

Every entry carries its own expiry time, set from ``now`` by the caller; ``expire(now)``
removes what is due. Bounds (items, info-hashes, peers per info-hash) keep a flood from
growing memory: when full, the entry closest to expiry is evicted first.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable

from .bep44 import ImmutableItem, MutableItem

Item = ImmutableItem | MutableItem


class PeerStore:
    """info-hash -> {peer address: expiry}."""

    def __init__(self, max_torrents: int, max_peers: int, ttl: float) -> None:
        self._max_torrents = max_torrents
        self._max_peers = max_peers
        self._ttl = ttl
        self._swarms: dict[bytes, dict[Hashable, float]] = {}

    def __len__(self) -> int:
        return len(self._swarms)

    def add(self, info_hash: bytes, peer: Hashable, now: float) -> None:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self._max_torrents:
                self.expire(now)
                if len(self._swarms) >= self._max_torrents:
                    oldest = min(self._swarms, key=lambda h: max(self._swarms[h].values()))
                    del self._swarms[oldest]
            swarm = self._swarms[info_hash] = {}
        if peer not in swarm and len(swarm) >= self._max_peers:
            del swarm[min(swarm, key=swarm.__getitem__)]
        swarm[peer] = now + self._ttl

    def get(self, info_hash: bytes, now: float, limit: int = 50) -> list[Hashable]:
        swarm = self._swarms.get(info_hash)
        if not swarm:
            return []
        return [p for p, exp in swarm.items() if exp > now][:limit]

    def expire(self, now: float) -> None:
        for h in list(self._swarms):
            swarm = self._swarms[h]
            for p in [p for p, exp in swarm.items() if exp <= now]:
                del swarm[p]
            if not swarm:
                del self._swarms[h]


class ItemStore:
    """target -> BEP44 item with its expiry."""

    def __init__(self, max_items: int, ttl: float) -> None:
        self._max = max_items
        self._ttl = ttl
        self._items: dict[bytes, tuple[Item, float]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, target: bytes, now: float) -> Item | None:
        entry = self._items.get(target)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def put(self, target: bytes, item: Item, now: float) -> None:
        if target not in self._items and len(self._items) >= self._max:
            self.expire(now)
            if len(self._items) >= self._max:
                (victim,) = heapq.nsmallest(1, self._items, key=lambda t: self._items[t][1])
                del self._items[victim]
        self._items[target] = (item, now + self._ttl)

    def expire(self, now: float) -> None:
        for t in [t for t, (_, exp) in self._items.items() if exp <= now]:
            del self._items[t]
