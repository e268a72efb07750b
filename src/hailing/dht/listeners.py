"""The listeners a storing node keeps for inbox keys (``hailing_listen``), bounded so
that nobody can lock a key or the node.

Theory of operation
-------------------
A listener is ``(key, addr)``: the address pushes for ``key`` go to, until its expiry,
with the push token the listener gave us (sent back with every ``hailing_push``). Each
listener is charged to a *source* (:func:`~hailing.dht.quota.source_of`: the sender's
IPv4 address or IPv6 /64, or a loopback socket while loopback is exempt). A listen with
ttl > 0 registers or renews; ttl 0 removes the sender's own entry, and removing an entry
that does not exist does nothing.

The table is a :class:`~hailing.dht.quota.SourceTable`; its bounds, and what happens at
each:

- a source holds at most ``per_source`` listeners in all: past that its new listens are
  refused (the caller answers error 242); nobody else is affected;
- a source holds at most ``source_per_key`` listeners of one key: a further one
  displaces that source's own oldest entry of the key;
- a key holds at most ``per_key`` listeners: a newcomer displaces the oldest entry of
  the source holding most entries of that key (among single-entry sources: the entry
  renewed longest ago). So a full key never refuses a legitimate newcomer, and a
  listener that left without a word (a one-shot client that exited) is the first to
  go, since live listeners renew at half their ttl;
- the node holds at most ``total`` listeners: a newcomer displaces the oldest entry of
  the heaviest source in the whole table.

Every insertion and displacement is O(1), expiry O(log n) per entry, and a refused
listen leaves nothing behind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from .quota import SourceTable

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


class ListenerTable(SourceTable[bytes]):
    """The listeners of one storing node (entry values: their push tokens). See the
    module docstring."""

    def __init__(
        self,
        per_key: int = MAX_LISTENERS_PER_KEY,
        source_per_key: int = MAX_SOURCE_PER_KEY,
        per_source: int = MAX_LISTENS_PER_SOURCE,
        total: int = MAX_LISTENERS,
        max_ttl: float = MAX_LISTEN_TTL,
        stats: Counter[str] | None = None,
    ) -> None:
        super().__init__(
            per_key=per_key, source_per_key=source_per_key, per_source=per_source,
            total=total, refuse_over_quota=True, name="listeners", stats=stats,
        )
        self.max_ttl = max_ttl

    def listen(
        self, key: bytes, addr: Hashable, source: bytes, ttl: float, now: float,
        ptoken: bytes = b"",
    ) -> float:
        """Register, renew (ttl > 0) or remove (ttl 0) ``addr``'s listen on ``key``.
        Returns the granted ttl: 0 when removed, or refused (source over its quota)."""
        ttl = max(0.0, min(ttl, self.max_ttl))
        if ttl == 0.0:
            self.remove(key, addr)
            return 0.0
        if self.put(key, addr, source, ptoken, now + ttl, now) is None:
            return 0.0
        return ttl

    def holds(self, key: bytes, addr: Hashable, now: float) -> bool:
        """Is ``addr`` listening on ``key`` now (so a listen from it is a renewal)?"""
        return self.get(key, addr, now) is not None

    def listeners(self, key: bytes, now: float) -> list[Hashable]:
        return [e.sub for e in self.live(key, now)]

    def push_targets(self, key: bytes, now: float) -> list[tuple[Hashable, bytes]]:
        """Where pushes for ``key`` go: (listener address, its push token)."""
        return [(e.sub, e.value) for e in self.live(key, now)]


__all__ = [
    "MAX_LISTENERS",
    "MAX_LISTENERS_PER_KEY",
    "MAX_LISTENS_PER_SOURCE",
    "MAX_LISTEN_TTL",
    "MAX_SOURCE_PER_KEY",
    "ListenerTable",
]
