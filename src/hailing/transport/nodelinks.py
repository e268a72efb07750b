"""The DHT node's side of the data-channel driver (:class:`~.datachannel.LinkHost`).

What arrives on a link is fed to the core with the link's
:class:`~hailing.transport.linkaddr.LinkAddr`; a new link's peer is pinged (its answer
puts it in the routing table, like any answer). A peer that a *pinned* link reaches (a
friend link's DHT channel, say) and that the tables hold at a UDP address is taken out
of them first (``link_readdressed``), so that the ping's answer puts it back at the
link: the table keeps the first address that works (anti-hijack), and without this a
node on UDP too would keep querying a friend's node over UDP, never over the friend
link. A closed link's peer leaves the routing
table at once, and the queries in flight on it fail at once (the core's pending requests
to that address, answered by an error 201 in the peer's place), unless the link was
evicted (by us or by the peer, which says so) and a coupler can open a new one when a
query needs it. A datagram the driver could not deliver (no link and no way to open one)
fails now: a query is answered in the core's place by a KRPC error 201 from that
address, so the lookup that sent it moves on instead of waiting for the timeout, and the
entries at that address count a failure (``link_failed_fast``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .. import bencode
from ..dht import DhtProtocol
from ..krpc import Error, encode_message
from .linkaddr import LinkAddr

if TYPE_CHECKING:
    from ..node import DhtNode
    from .links import Link

__all__ = ["NodeLinks"]


class NodeLinks:
    """Glue between a started :class:`~hailing.node.DhtNode` and its LinkDriver."""

    def __init__(self, node: DhtNode, core: DhtProtocol) -> None:
        self._node = node
        self._core = core

    @property
    def node_id(self) -> bytes:
        return self._core.node_id

    def link_datagram(self, data: bytes, addr: LinkAddr) -> None:
        node = self._node
        if not node.running:
            return
        self._core.receive_datagram(data, addr, node._loop.time())
        node._pump()

    def link_opened(self, link: Link) -> None:
        node = self._node
        if not node.running or link.addr is None:
            return
        core = self._core
        if link.pins and link.peer_id is not None:  # reached through this link from now on
            moved = False
            for table in (core.table, core.sub.table):
                entry = table.get(link.peer_id)
                if entry is not None and type(entry.addr) is not LinkAddr:
                    table.remove(link.peer_id)
                    moved = True
            if moved:
                core.stats["link_readdressed"] += 1
        core.ping(link.addr, node._loop.time())  # its answer enters the table
        node._pump()

    def link_closed(self, link: Link) -> None:
        if link.peer_id is None:
            return
        links = self._node.links
        if link.farewell and links is not None and links.couplers:
            return  # evicted, not dead: a coupler opens a link again when it is asked
        core = self._core
        for table in (core.table, core.sub.table):
            entry = table.get(link.peer_id)
            if entry is not None and entry.addr == link.addr:
                table.remove(link.peer_id)
        core.stats["link_removed_from_table"] += 1
        if not link.farewell and self._node.running:
            # the queries in flight on it get no answer now: they fail at once
            waiting = [p.tid for p in list(core._pending.values())
                       if p.addr == link.addr and not p.done]
            for tid in waiting:
                self._node._loop.call_soon(self._fail, tid, link.addr, "the link closed")

    def link_unreachable(self, data: bytes, addr: Hashable) -> None:
        node = self._node
        if node.running:
            node._loop.call_soon(self._fail_fast, data, addr)

    def _fail_fast(self, data: bytes, addr: Hashable) -> None:
        node, core = self._node, self._core
        if not node.running:
            return
        try:
            msg: Any = bencode.decode(data)
            tid = msg[b"t"]
            is_query = msg[b"y"] == b"q"
        except Exception:
            return
        if not is_query or type(tid) is not bytes:
            return
        for entry in [e for e in core.table if e.addr == addr]:
            core.table.failed(entry.id, addr)
        self._fail(tid, addr, "no link to that peer")

    def _fail(self, tid: bytes, addr: Hashable, why: str) -> None:
        """Answer our query ``tid`` to ``addr`` in its place: a KRPC error 201."""
        node, core = self._node, self._core
        if not node.running:
            return
        core.stats["link_failed_fast"] += 1
        core.receive_datagram(encode_message(Error(tid, 201, why)), addr, node._loop.time())
        node._pump()

    def known_ids(self) -> list[bytes]:
        return [e.id for e in self._core.table if isinstance(e.addr, LinkAddr)]

    def known_id(self, addr: LinkAddr) -> bytes | None:
        for entry in self._core.table:
            if entry.addr == addr:
                return entry.id
        return None
