"""Adversaries for the simulator: colluding liars and a Sybil attacker (issue 9).

Theory of operation
-------------------
An adversary is a set of real cores whose answers are rewritten: their responders'
handlers are replaced (:class:`Liar`), so they stay ordinary nodes in every other way
(they join, answer pings, look nodes up, are asked like anyone else).

- **Liars** (``mode`` ``"route"``): every answer to ``find_node``, ``get_peers`` and
  ``get`` names only fellow liars, the ones closest to the target (they know each
  other: :class:`Collusion`), and never carries a value or a peer; ``put`` and
  ``announce_peer`` are answered as accepted and dropped. With ``mode`` ``"drop"`` the
  routing answers are honest and only the stored values are dropped.
- **Sybil**: ``ids`` endpoints on ``ips`` addresses (many ports each) whose ids share
  their first :data:`SYBIL_PREFIX_BITS` bits with one target key. They lie as the
  liars do (to each other's benefit) and, to get into the honest tables, each of them
  joins through an honest node and pings the honest nodes closest to the target and a
  few random ones, as a real attacker that crawled the network would.

Nothing here reads a clock or the global random generator: the simulator's seeded
generator chooses everything, so an adversarial run is as reproducible as any other.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

from ..dht import DhtProtocol
from ..dht.ids import id_to_int
from ..krpc import Query, encode_nodes
from .engine import SimNode, Simulator, host_address

#: Bits the Sybil ids share with the attacked key (a 10,000-node network's closest
#: honest nodes share about 13).
SYBIL_PREFIX_BITS = 32
#: Honest nodes nearest the target, and random ones, that each Sybil endpoint pings.
SYBIL_PING_NEAR = 40
SYBIL_PING_RANDOM = 10


class Collusion:
    """The members of one adversary, sorted by id, to answer "who is closest"."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._members: list[tuple[bytes, Hashable]] = []

    def join(self, node_id: bytes, addr: Hashable) -> None:
        i = bisect.bisect_left(self._ids, id_to_int(node_id))
        self._ids.insert(i, id_to_int(node_id))
        self._members.insert(i, (node_id, addr))

    def __len__(self) -> int:
        return len(self._ids)

    def closest(self, target: bytes, k: int, exclude: bytes) -> list[tuple[bytes, Hashable]]:
        """The ``k`` members closest to ``target`` (XOR), ``exclude`` left out. The XOR-
        closest members sit around the target's place in id order: a window of 4k on
        each side holds them."""
        t = id_to_int(target)
        i = bisect.bisect_left(self._ids, t)
        lo, hi = max(0, i - 4 * k), i + 4 * k
        window = [m for m in self._members[lo:hi] if m[0] != exclude]
        window.sort(key=lambda m: id_to_int(m[0]) ^ t)
        return window[:k]


class Liar:
    """The rewritten answers of one adversarial core (module docstring)."""

    def __init__(self, proto: DhtProtocol, collusion: Collusion, mode: str) -> None:
        self.proto = proto
        self.collusion = collusion
        r = proto.responder
        self._honest = dict(r.handlers)
        if mode == "route":
            r.handlers[b"find_node"] = self.find_node
            r.handlers[b"get_peers"] = self.lookup
            r.handlers[b"get"] = self.lookup
        elif mode != "drop":
            raise ValueError(f"unknown liar mode {mode!r}")
        r.handlers[b"put"] = self.dropped_store
        r.handlers[b"announce_peer"] = self.dropped_store

    def _nodes(self, q: Query, key: bytes) -> dict[bytes, Any]:
        target = q.args.get(key)
        if type(target) is not bytes or len(target) != 20:
            target = self.proto.node_id
        members = self.collusion.closest(target, self.proto.config.k, self.proto.node_id)
        v4, _ = encode_nodes(members, self.proto.codec)
        return {b"id": self.proto.node_id, b"nodes": v4}

    def find_node(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        return self._nodes(q, b"target")

    def lookup(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        r = self._nodes(q, b"info_hash" if q.method == b"get_peers" else b"target")
        r[b"token"] = self.proto.tokens.issue(self.proto.codec.ip_key(addr))
        return r

    def dropped_store(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        # Checked as an honest node checks it (a bad token still gets its error), then
        # dropped: the writer believes the value stored.
        self._honest[q.method](q, addr, now)
        self.proto.items.expire(float("inf"))
        self.proto.peers.expire(float("inf"))
        return {b"id": self.proto.node_id}


def make_liars(sim: Simulator, fraction: float, mode: str, eligible: list[SimNode]) -> list[SimNode]:
    """Turn ``fraction`` of all live nodes (chosen among ``eligible``) into colluding
    liars; returns them."""
    count = round(fraction * len(sim.live))
    pool = list(eligible)
    sim.rng.shuffle(pool)
    liars = pool[:count]
    collusion = Collusion()
    for n in liars:
        collusion.join(n.proto.node_id, n.addr)
    for n in liars:
        Liar(n.proto, collusion, mode)
    return liars


def sybil_attack(
    sim: Simulator,
    target: bytes,
    ids: int,
    ips: int,
    honest: list[SimNode],
    bootstrap: Callable[[SimNode, SimNode], None],
) -> list[SimNode]:
    """Add ``ids`` Sybil endpoints on ``ips`` addresses near ``target`` (module
    docstring); ``bootstrap(node, seed)`` joins a node through an honest seed.
    Returns the Sybil nodes (their pings and joins are under way)."""
    collusion = Collusion()
    sybils: list[SimNode] = []
    config = replace(sim.config, enforce_node_id=False)
    t = id_to_int(target)
    keep = (1 << 160) - (1 << (160 - SYBIL_PREFIX_BITS))
    for i in range(ids):
        ip = host_address(1_000_000 + i % ips)[0]  # far above any honest host index
        nid_int = (t & keep) | sim.rng.getrandbits(160 - SYBIL_PREFIX_BITS)
        nid = nid_int.to_bytes(20, "big")
        # The attacker runs its own code: it keeps its ids whatever its peers say.
        node = sim.add_node(config, addr=(ip, 20000 + i // ips), node_id=nid)
        collusion.join(nid, node.addr)
        Liar(node.proto, collusion, "route")
        sybils.append(node)
    near = sorted(honest, key=lambda n: id_to_int(n.proto.node_id) ^ t)[:SYBIL_PING_NEAR]
    for s in sybils:
        bootstrap(s, honest[sim.rng.randrange(len(honest))])
        victims = near + [honest[sim.rng.randrange(len(honest))] for _ in range(SYBIL_PING_RANDOM)]
        for v in victims:
            sim.command(s, _pinger(v.addr), _ignore)
    return sybils


def _pinger(addr: Hashable) -> Callable[[DhtProtocol, float], int]:
    def start(core: DhtProtocol, now: float) -> int:
        return core.ping(addr, now)

    return start


def _ignore(ev: object) -> None:
    return None
