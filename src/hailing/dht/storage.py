"""What a node stores for others: announced peers (BEP5) and BEP44 items, bounded.

Every entry carries its own expiry time, set from ``now`` by the caller, and is charged
to the source that stored it (:func:`~hailing.dht.quota.source_of`). Both stores are
:class:`~hailing.dht.quota.SourceTable` s, so a full store makes room by evicting the
heaviest source's oldest entry, and an insert or an eviction costs O(1) however full
the store is (expiry O(log n) per entry). The bounds come from :class:`DhtConfig`:

- peers: ``max_peers_per_torrent`` per info-hash (of which ``max_peers_per_source_torrent``
  from one source), ``max_peer_entries`` in all, ``max_peers_per_source`` per source,
  ``max_torrents`` info-hashes (a new one drops the oldest info-hash of the source that
  created most);
- items: ``max_items`` in all, ``max_items_per_source`` per source.

A source over its own quota makes room with its own oldest entry: a flood from one
source only churns that source's entries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from .bep44 import ImmutableItem, MutableItem
from .config import DhtConfig
from .quota import SourceTable

Item = ImmutableItem | MutableItem


class PeerStore:
    """info-hash -> announced peer addresses (compact), with expiry."""

    def __init__(
        self, config: DhtConfig | None = None, stats: Counter[str] | None = None
    ) -> None:
        cfg = config or DhtConfig()
        self._ttl = cfg.peer_ttl
        self.table: SourceTable[None] = SourceTable(
            per_key=cfg.max_peers_per_torrent,
            source_per_key=cfg.max_peers_per_source_torrent,
            per_source=cfg.max_peers_per_source,
            total=cfg.max_peer_entries,
            max_keys=cfg.max_torrents,
            name="peers",
            stats=stats,
        )

    def __len__(self) -> int:
        """Info-hashes held."""
        return self.table.keys_held

    def add(self, info_hash: bytes, peer: Hashable, source: bytes, now: float) -> None:
        self.table.put(info_hash, peer, source, None, now + self._ttl, now)

    def get(self, info_hash: bytes, now: float, limit: int = 50) -> list[Hashable]:
        """Up to ``limit`` live peers, the most recently announced first."""
        return [e.sub for e in self.table.newest(info_hash, now, limit)]

    def expire(self, now: float) -> None:
        self.table.expire(now)


class ItemStore:
    """target -> BEP44 item, with expiry. A put of a stored target renews it (it stays
    charged to the source that stored it first)."""

    def __init__(
        self, config: DhtConfig | None = None, stats: Counter[str] | None = None
    ) -> None:
        cfg = config or DhtConfig()
        self._ttl = cfg.item_ttl
        self.table: SourceTable[Item] = SourceTable(
            per_key=1,
            source_per_key=1,
            per_source=cfg.max_items_per_source,
            total=cfg.max_items,
            name="items",
            stats=stats,
        )

    def __len__(self) -> int:
        return len(self.table)

    def get(self, target: bytes, now: float) -> Item | None:
        entry = self.table.get(target, None, now)
        return entry.value if entry is not None else None

    def put(self, target: bytes, item: Item, source: bytes, now: float) -> None:
        self.table.put(target, None, source, item, now + self._ttl, now)

    def expire(self, now: float) -> None:
        self.table.expire(now)
