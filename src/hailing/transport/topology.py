"""A Kademlia-like set of links for a known set of node ids (tests and benchmarks).

:func:`neighbourhood` picks, for each node, links to its XOR-closest peers (half of
``p``) and to one peer in each of its farthest non-empty buckets (the rest), never more
than ``p`` links at a node: the shape an overlay's own lookups give it, built at once so
that a test or benchmark can couple it with
:func:`~hailing.transport.datachannel.couple_direct`; :class:`LocalCoupler` opens the
links a node's lookups need beyond it, on demand.
"""

from __future__ import annotations

import random

from .datachannel import LinkDriver, couple_direct
from .links import Link

__all__ = ["LocalCoupler", "neighbourhood"]


def neighbourhood(ids: list[bytes], p: int, seed: int = 0) -> list[tuple[int, int]]:
    """Undirected edges (index pairs, i < j) with at most ``p`` per node."""
    rng = random.Random(seed)
    n = len(ids)
    ints = [int.from_bytes(i, "big") for i in ids]
    degree = [0] * n
    edges: set[tuple[int, int]] = set()

    def link(a: int, b: int) -> None:
        e = (min(a, b), max(a, b))
        if a != b and e not in edges and degree[a] < p and degree[b] < p:
            edges.add(e)
            degree[a] += 1
            degree[b] += 1

    close = max(1, p // 2)
    for a in range(n):
        others = sorted((b for b in range(n) if b != a), key=lambda b: ints[a] ^ ints[b])
        for b in others[:close]:
            link(a, b)
    for a in rng.sample(range(n), n):
        buckets: dict[int, list[int]] = {}
        for b in range(n):
            if b != a:
                buckets.setdefault((ints[a] ^ ints[b]).bit_length(), []).append(b)
        for bucket in sorted(buckets, reverse=True):
            if degree[a] >= p:
                break
            link(a, rng.choice(buckets[bucket]))
    return sorted(edges)


class LocalCoupler:
    """A :class:`~hailing.transport.datachannel.LinkCoupler` between the drivers of this
    process (tests and benchmarks): it opens a link to a node of ``drivers`` with
    :func:`~hailing.transport.datachannel.couple_direct`, the SDP exchanged in memory.
    The link itself is a real one (ICE, DTLS, SCTP); only the signaling is skipped,
    where the overlay's ``NetworkCoupler`` forwards it through other links."""

    name = "local"

    def __init__(self, drivers: list[LinkDriver]) -> None:
        self.drivers = drivers
        self.coupled = 0

    async def couple(self, driver: LinkDriver, target: bytes) -> Link:
        for other in self.drivers:
            peer = other.node_id
            if other is not driver and peer is not None and peer.startswith(target):
                link, _ = await couple_direct(driver, other)
                self.coupled += 1
                return link
        raise LookupError(f"no driver here for {target.hex()}")
