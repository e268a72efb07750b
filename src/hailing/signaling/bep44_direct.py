"""Cheap repeated BEP44 gets of one mutable item: ask the nodes that answered last time.

The BEP44 fallback (:mod:`hailing.signaling.mainline_rdv`) reads the same few items
again and again. A full get is a lookup (about 20 queries on a network of any size);
the item lives on the nodes closest to its target, which barely change from one poll to
the next. So :class:`DirectGets` remembers, per target, the :data:`DIRECT_NODES`
closest nodes that answered the last full get (``DhtNode.get_mutable_nodes``) and asks
only those the next times: one BEP44 ``get`` each (``DhtNode.query``), carrying ``seq``
= the last seq handed on, so that a node whose item is not newer answers without the
value (BEP44). Every :data:`FULL_EVERY` polls of a target, and at once when fewer than
half of :data:`DIRECT_NODES` are left giving usable answers, the poll is a full get
again (the closest nodes change with churn; a writer that found other closest nodes
stored its item there).

An answer is checked as a lookup's is: ``k``, ``sig``, ``seq`` of the right types, the
target they make is the one asked for, the signature verifies. Anything else (a
malformed answer, an item that does not verify: a lying or broken node) is counted
(``mainline_direct_garbage``; ``mainline_bad_signatures`` for a bad signature) and that
node forgotten; a node that does not answer (``mainline_direct_errors``) is forgotten
too. Counters: ``mainline_full_gets``, ``mainline_direct_gets`` (polls answered by the
remembered nodes), ``mainline_direct_queries``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import bencode
from ..dht.bep44 import MutableItem
from ..dht.ids import NodeInfo
from ..errors import HailingError

__all__ = ["DIRECT_NODES", "FULL_EVERY", "DirectGets"]

#: How many of the closest nodes that answered a full get are asked directly after it.
DIRECT_NODES = 3
#: Every this many-th poll of a target is a full get, whatever the direct answers.
FULL_EVERY = 8
#: Targets remembered at most (all forgotten when full; the next polls look them up).
MAX_TARGETS = 4096

Addr = tuple[str, int]


class _Node(Protocol):
    async def get_mutable_nodes(self, pubkey: bytes, salt: bytes = b""
                                ) -> tuple[MutableItem | None, tuple[NodeInfo, ...]]: ...

    async def query(self, addr: Addr, method: bytes, args: dict[bytes, Any]
                    ) -> dict[bytes, Any]: ...


@dataclass(slots=True)
class _Near:
    nodes: list[Addr] = field(default_factory=list)
    polls: int = 0  # direct polls since the last full get


class _Garbage(Exception):
    def __init__(self, counter: str) -> None:
        self.counter = counter


class DirectGets:
    """Gets of mutable items that ask the last closest nodes directly (see the module
    docstring). ``stats`` is the fallback's counter."""

    def __init__(self, node: _Node, stats: Counter[str]) -> None:
        self.node = node
        self.stats = stats
        self.direct_nodes = DIRECT_NODES
        self.full_every = FULL_EVERY
        self._near: dict[bytes, _Near] = {}

    def nodes(self, target: bytes) -> list[Addr]:
        """The nodes the next direct poll of ``target`` asks (none: a full get)."""
        near = self._near.get(target)
        return [] if near is None else list(near.nodes)

    def nodes_known(self) -> list[bytes]:
        """The targets with remembered nodes."""
        return list(self._near)

    def keep_only(self, targets: set[bytes]) -> None:
        """Forget the targets not in ``targets`` (days gone, peers no longer polled)."""
        self._near = {t: n for t, n in self._near.items() if t in targets}

    async def get(self, pubkey: bytes, salt: bytes, target: bytes, seen: int | None
                  ) -> MutableItem | None:
        """The newest item of ``target`` (newer than ``seen`` when asked directly: a
        node with nothing newer answers without the value, and None is returned). Raises
        HailingError when a full get fails."""
        near = self._near.get(target)
        if near is not None and near.nodes and near.polls < self.full_every - 1:
            near.polls += 1
            found = await self._direct(near, target, salt, seen)
            if found is not None:
                self.stats["mainline_direct_gets"] += 1
                return found[0]
        item, closest = await self.node.get_mutable_nodes(pubkey, salt)
        self.stats["mainline_full_gets"] += 1
        if len(self._near) >= MAX_TARGETS:
            self._near.clear()
        self._near[target] = _Near(_addrs(closest)[: self.direct_nodes])
        return item

    async def _direct(self, near: _Near, target: bytes, salt: bytes, seen: int | None
                      ) -> tuple[MutableItem | None] | None:
        """Ask the remembered nodes; None when fewer than half of DIRECT_NODES are left
        (the others gave no usable answer, now or before)."""
        args: dict[bytes, Any] = {b"target": target}
        if seen is not None and seen >= 0:
            args[b"seq"] = seen
        asked = list(near.nodes)
        self.stats["mainline_direct_queries"] += len(asked)
        answers = await asyncio.gather(*(self.node.query(a, b"get", args) for a in asked),
                                       return_exceptions=True)
        best: MutableItem | None = None
        good: list[Addr] = []
        for addr, answer in zip(asked, answers, strict=True):
            if isinstance(answer, (HailingError, TimeoutError)):
                self.stats["mainline_direct_errors"] += 1
                continue
            if isinstance(answer, BaseException):
                raise answer  # a bug (or our cancellation), not the network's doing
            try:
                item = _item_of(answer, target, salt)
            except _Garbage as exc:
                self.stats[exc.counter] += 1
                continue
            good.append(addr)
            if item is not None and (best is None or item.seq > best.seq):
                best = item
        near.nodes = good
        if len(good) * 2 < self.direct_nodes:  # too few left to trust: look it up again
            return None
        return (best,)


def _addrs(nodes: Sequence[NodeInfo]) -> list[Addr]:
    out: list[Addr] = []
    for n in nodes:
        a: Hashable = n.addr
        if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], int):
            out.append((a[0], a[1]))
    return out


def _item_of(answer: object, target: bytes, salt: bytes) -> MutableItem | None:
    """The item in a ``get`` answer (None: the node has nothing newer); _Garbage for an
    answer that is not one."""
    if not isinstance(answer, dict):
        raise _Garbage("mainline_direct_garbage")
    if b"v" not in answer:
        return None
    k, sig, seq = answer.get(b"k"), answer.get(b"sig"), answer.get(b"seq")
    if type(k) is not bytes or type(sig) is not bytes or type(seq) is not int or seq < 0:
        raise _Garbage("mainline_direct_garbage")
    try:
        v = bencode.encode(answer[b"v"])
    except HailingError:
        raise _Garbage("mainline_direct_garbage") from None
    try:
        item = MutableItem(k, salt, seq, v, sig)
        ok = item.target == target and item.is_valid()
    except (HailingError, ValueError, TypeError):
        ok = False
    if not ok:
        raise _Garbage("mainline_bad_signatures")
    return item
