"""The data-channel driver: the DHT core's datagrams over WebRTC data channels.

Theory of operation
-------------------
A :class:`LinkDriver` holds the node's *links*: aiortc peer connections, each with one
data channel labelled :data:`LABEL` (``"hailing-dht"``) that carries KRPC messages, one
message a datagram. A link is named by :class:`~hailing.transport.linkaddr.LinkAddr`, the
first 5 bytes of the peer's node id, learned when the link is adopted (``peer_id=``) or
from the peer's first frame: a *hello* (:data:`CTRL` ``H`` + its 20-byte id), sent by
each side as soon as the channel opens. The DHT core sees a link's address like any
other: what arrives on it is fed to the core with the link's LinkAddr (the node's
:class:`LinkHost` side), what the core sends to a LinkAddr goes out on that link.

Frames the core never sees, each dropped and counted in :attr:`LinkDriver.stats`: a text
message, a frame over :data:`MAX_FRAME` bytes, a frame that is neither bencode (``d...``)
nor a control frame (``link_garbage``; a link list that is not one, ``linklists.py``),
a frame beyond the link's budget of
:data:`FRAME_RATE` a second (``link_rate_limited``). None of them closes a link; the
others never notice.

A datagram for a LinkAddr without an open link waits (at most :data:`MAX_QUEUE` per peer)
while the driver's couplers (:attr:`LinkDriver.couplers`, tried fastest first by their
median coupling time) open one; without couplers, or when they all fail, it is dropped
and counted, and the node is told at once (:meth:`LinkHost.link_unreachable`) so that a
query to a peer we have no way to reach fails now, not after the core's timeout.

The link manager (cap, pins, LRU eviction, keepalives, reconnection) is
:class:`~hailing.transport.links.LinkManager`, which this driver is.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import bencode
from ..errors import LocalProtocolError
from .linkaddr import HANDLE_LEN, LinkAddr
from .linklists import LINKS, LinkLists
from .links import Link, LinkManager

__all__ = [
    "CTRL",
    "LABEL",
    "MAX_FRAME",
    "Link",
    "LinkCoupler",
    "LinkDriver",
    "LinkHost",
    "couple_direct",
]

#: The data channel that carries DHT traffic (a friend link's connection may carry it
#: beside the session's ``"hailing"`` channel).
LABEL = "hailing-dht"
#: Largest frame accepted (KRPC messages are well under this; BEP44 values <= 1000 bytes).
MAX_FRAME = 16384
#: First byte of a control frame (a KRPC message starts with ``d``).
CTRL = b"\x00"
HELLO = CTRL + b"H"
PING = CTRL + b"P"
PONG = CTRL + b"O"
BYE = CTRL + b"B"
KEEP = CTRL + b"K"
FREE = CTRL + b"F"
#: Datagrams waiting for a link to one peer; beyond this they are dropped.
MAX_QUEUE = 16
#: Couplings under way at once; a datagram to one more unlinked peer is dropped.
MAX_COUPLINGS = 32
#: How long one coupler may take to open a link.
COUPLE_TIMEOUT = 20.0
#: Bytes buffered on a channel (unsent) beyond which datagrams are dropped.
MAX_BUFFERED = 1 << 20


class LinkHost(Protocol):
    """What the driver needs of the node it carries datagrams for (DhtNode)."""

    @property
    def node_id(self) -> bytes: ...

    def link_datagram(self, data: bytes, addr: LinkAddr) -> None:
        """A KRPC message arrived on the link ``addr``."""

    def link_opened(self, link: Link) -> None:
        """A link with a known peer id is open."""

    def link_closed(self, link: Link) -> None:
        """A link with a known peer id is gone."""

    def link_unreachable(self, data: bytes, addr: LinkAddr) -> None:
        """``data`` for ``addr`` was dropped: no link, and none could be opened."""

    def known_id(self, addr: LinkAddr) -> bytes | None:
        """The full node id behind ``addr`` if the node knows it (coupling target)."""

    def known_ids(self) -> list[bytes]:
        """The node ids the node knows at link addresses (its routing table): peers the
        link manager may couple a pin to."""


class LinkCoupler(Protocol):
    """Something that opens a link to a node (forwarded signaling, a friend link...)."""

    name: str

    async def couple(self, driver: LinkDriver, target: bytes) -> Link:
        """Open a link to ``target`` (a 20-byte node id or a 5-byte handle) and return it,
        adopted by ``driver``; raise on failure."""


class LinkDriver(LinkManager):
    """One per node; attach it with ``DhtNode(links=driver)``. See the module docstring."""

    def __init__(
        self,
        *,
        cap: int = 16,
        keepalive: float = 15.0,
        configuration: Callable[[], Any | Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        closest: int | None = None,
        levels: int | None = None,
    ) -> None:
        super().__init__(cap=cap, keepalive=keepalive, clock=clock, closest=closest,
                         levels=levels)
        self._configuration = configuration
        self._host: LinkHost | None = None
        self._own_id: bytes | None = None
        #: Datagrams waiting for a link, by handle.
        self._queues: dict[bytes, list[bytes]] = {}
        self._coupling: dict[bytes, asyncio.Task[None]] = {}
        #: Our link list told to each peer, and theirs kept (lookahead, linklists.py).
        self.lists = LinkLists(self)

    # -- the node -------------------------------------------------------------------

    @property
    def node_id(self) -> bytes | None:
        """Our node id: the attached node's (or one set before attaching)."""
        if self._host is not None:
            return self._host.node_id
        return self._own_id

    @node_id.setter
    def node_id(self, value: bytes | None) -> None:
        self._own_id = value

    def attach(self, host: LinkHost) -> None:
        """Carry ``host``'s datagrams (DhtNode.start calls this)."""
        if self._host is not None and self._host is not host:
            raise RuntimeError("the link driver already serves a node")
        self._host = host
        self._own_id = host.node_id
        self._start_keepalive()
        for link in self.links():
            self._send_hello(link)
            if link.peer_id is not None:
                host.link_opened(link)

    def detach(self, host: LinkHost) -> None:
        if self._host is host:
            self._host = None

    # -- peer connections -----------------------------------------------------------

    async def new_peer_connection(self, *, answering: bool = False) -> Any:
        """An RTCPeerConnection with the driver's configuration: what
        :meth:`configuration_for` gives (an ``RTCConfiguration``; the daemon's gives the
        node's STUN and TURN servers, docs/nat.md); default and None: no ICE server at
        all, so no STUN request ever leaves for a public server. ``answering``: the
        connection answers an offer someone else made (a coupler's answering side)."""
        from aiortc import RTCConfiguration, RTCPeerConnection

        config = await self.configuration_for(answering=answering)
        if config is None:
            config = RTCConfiguration(iceServers=[])
        return RTCPeerConnection(configuration=config)

    async def configuration_for(self, *, answering: bool) -> Any:
        """What ``configuration()`` returns, or awaits to (the same either way here; a
        driver may give an answering connection less, as the daemon's gives it no relay)."""
        config = self._configuration() if self._configuration is not None else None
        if inspect.isawaitable(config):
            config = await config
        return config

    def adopt(self, pc: Any, channel: Any, *, peer_id: bytes | None = None,
              pinned: bool = False, owns_pc: bool = True) -> Link:
        """Take the data channel ``channel`` of ``pc`` as a link (its DHT traffic now
        flows through this driver). The link closes ``pc`` when it goes, unless
        ``owns_pc=False`` (a friend link's connection: only the channel is closed)."""
        if self._closing:
            if owns_pc:
                self._spawn(pc.close())
            raise LocalProtocolError("the link driver is closed")
        link = Link(self, pc, channel, self.clock())
        link.owns_pc = owns_pc
        self._add(link)
        channel.on("message", lambda msg: self._on_frame(link, msg))
        channel.on("close", lambda: self._lost(link, "channel closed"))

        def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._lost(link, f"connection {pc.connectionState}")

        pc.on("connectionstatechange", _state)

        if channel.readyState == "open":
            self._send_hello(link)
        else:
            channel.on("open", lambda: self._opened(link))
        if peer_id is not None:
            self._bind(link, peer_id)
        if pinned:
            self.pin(link, "adopted")
        self._enforce_cap(link)
        return link

    # -- sending --------------------------------------------------------------------

    def send(self, data: bytes, addr: LinkAddr) -> None:
        """Send ``data`` on the link to ``addr``; with none open, couple one (the data
        waits, bounded) or drop and count it and tell the node."""
        link = self._by_handle.get(addr.handle)
        if link is None or link.closed:
            draining = self._draining.get(addr.handle)
            if draining is not None and draining.is_open:  # an answer, say: no new link
                if self._transmit(draining, data, used=False):
                    self.stats["link_sent"] += 1
                return
        if link is not None and not link.closed:
            if link.is_open:
                self._transmit(link, data, used=True)
                return
            if link.channel.readyState == "connecting":  # sent when it opens
                queue = self._queues.setdefault(addr.handle, [])
                if len(queue) < MAX_QUEUE:
                    queue.append(data)
                    return
                self.stats["link_queue_full"] += 1
                self._unreachable(data, addr)
                return
        self._enqueue(data, addr)

    def _transmit(self, link: Link, data: bytes, *, used: bool) -> bool:
        channel = link.channel
        try:
            if channel.bufferedAmount > MAX_BUFFERED:
                self.stats["link_send_dropped"] += 1
                return False
            channel.send(data)
        except Exception:  # closed under us (aiortc raises InvalidStateError)
            self.stats["link_send_errors"] += 1
            self._lost(link, "send failed")
            return False
        now = self.clock()
        link.last_sent = now
        if used:
            link.last_used = now
            self.stats["link_sent"] += 1
        return True

    def _enqueue(self, data: bytes, addr: LinkAddr) -> None:
        handle = addr.handle
        if not self.couplers or self._closing or self._host is None:
            self._unreachable(data, addr)
            return
        queue = self._queues.get(handle)
        if queue is None:
            if len(self._coupling) >= MAX_COUPLINGS:
                self.stats["link_couplings_full"] += 1
                self._unreachable(data, addr)
                return
            queue = self._queues[handle] = []
            target = self._host.known_id(addr) or handle
            self._coupling[handle] = self._spawn(self._couple_for_queue(handle, target))
        if len(queue) >= MAX_QUEUE:
            self.stats["link_queue_full"] += 1
            self._unreachable(data, addr)
            return
        queue.append(data)

    def _unreachable(self, data: bytes, addr: LinkAddr) -> None:
        self.stats["link_unreachable"] += 1
        if self._host is not None:
            self._host.link_unreachable(data, addr)

    async def _couple_for_queue(self, handle: bytes, target: bytes) -> None:
        try:
            link = await self.couple(target)
        finally:
            self._coupling.pop(handle, None)
        queue = self._queues.pop(handle, [])
        if link is not None and not link.closed and link.handle == handle:
            if link.is_open:
                for data in queue:
                    self._transmit(link, data, used=True)
            else:  # still opening: sent when it opens
                self._queues[handle] = queue
            return
        for data in queue:
            self._unreachable(data, LinkAddr(handle))

    async def _couple_pin(self, peer: bytes) -> Link | None:
        """A pin's coupling is the one datagrams to that peer wait for (one coupling
        per peer, never two side by side)."""
        handle = bytes(peer[:HANDLE_LEN])
        task = self._coupling.get(handle)
        if task is None:
            if len(self._coupling) >= MAX_COUPLINGS or self._host is None:
                return None
            self._queues.setdefault(handle, [])
            task = self._coupling[handle] = self._spawn(self._couple_for_queue(handle, peer))
        await asyncio.wait([task])
        return self.link_for(peer)

    async def couple(self, target: bytes) -> Link | None:
        """Open a link to ``target`` (node id or handle) by the couplers, fastest first;
        the link, or None when every coupler failed (counted)."""
        handle = bytes(target[:HANDLE_LEN])
        for coupler in self.ordered_couplers():
            started = self.clock()
            try:
                async with asyncio.timeout(COUPLE_TIMEOUT):
                    link = await coupler.couple(self, target)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["link_couple_failures"] += 1
                self._couple_time(coupler.name, COUPLE_TIMEOUT)
                continue
            self._couple_time(coupler.name, self.clock() - started)
            if link.handle != handle:
                self.stats["link_couple_wrong_peer"] += 1
                continue
            self.stats["link_coupled"] += 1
            return link
        self.stats["link_couple_failed"] += 1
        return None

    # -- receiving ------------------------------------------------------------------

    def _on_frame(self, link: Link, msg: object) -> None:
        if link.closed:
            return
        now = self.clock()
        link.last_received = now
        if type(msg) is not bytes:
            self.stats["link_garbage"] += 1
            self.stats["link_garbage_text"] += 1
            return
        if not link.allow(now):
            self.stats["link_rate_limited"] += 1
            return
        if len(msg) > MAX_FRAME:
            self.stats["link_garbage"] += 1
            self.stats["link_garbage_oversized"] += 1
            return
        head = msg[:1]
        if head == b"d":
            if link.peer_id is None and not self._learn_id(link, msg):
                self.stats["link_garbage"] += 1
                return
            link.last_used = now
            self.stats["link_received"] += 1
            host, addr = self._host, link.addr
            if host is not None and addr is not None:
                host.link_datagram(msg, addr)
            return
        if head == CTRL:
            self._on_control(link, msg)
            return
        self.stats["link_garbage"] += 1

    def _on_control(self, link: Link, msg: bytes) -> None:
        kind = msg[:2]
        if kind == PING and len(msg) == 2:
            self._transmit(link, PONG, used=False)
        elif kind == PONG and len(msg) == 2:
            pass
        elif kind in (KEEP, FREE) and len(msg) == 2:
            link.peer_pinned = kind == KEEP
        elif kind == LINKS:
            self.lists.receive(link, msg, self.clock())
        elif kind == BYE and len(msg) == 2:
            self._retire(link)  # evicted by the peer: it drains, its closing is no death
        elif kind == HELLO and len(msg) == 22:
            peer_id = msg[2:]
            if link.peer_id is None:
                self._bind(link, peer_id)
            elif link.peer_id != peer_id:
                self.stats["link_id_mismatch"] += 1
                self._spawn(link.close())
        else:
            self.stats["link_garbage"] += 1

    def _learn_id(self, link: Link, msg: bytes) -> bool:
        """The peer id from a first KRPC frame (``a.id`` or ``r.id``) of a peer that
        sent no hello; False when the frame has none."""
        try:
            decoded = bencode.decode(msg)
            body = decoded.get(b"a") or decoded.get(b"r")
            peer_id = body[b"id"]
        except Exception:
            return False
        if type(peer_id) is not bytes or len(peer_id) != 20:
            return False
        self._bind(link, peer_id)
        return link.peer_id == peer_id and not link.closed

    def _opened(self, link: Link) -> None:
        self._send_hello(link)
        handle = link.handle
        if handle is not None and self._by_handle.get(handle) is link and handle not in self._coupling:
            for data in self._queues.pop(handle, []):
                self._transmit(link, data, used=True)

    def _send_hello(self, link: Link) -> None:
        own = self.node_id
        if own is not None and not link.hello_sent and link.is_open:
            link.hello_sent = self._transmit(link, HELLO + own, used=False)
            self._sync_pin(link)
            if link.hello_sent:
                self._links_changed()

    # -- the manager's hooks ----------------------------------------------------------

    def _links_changed(self) -> None:
        if not self._closing:
            self.lists.changed()

    def _bound(self, link: Link) -> None:
        self._links_changed()
        if self._host is not None:
            self._host.link_opened(link)
        if link.is_open and link.handle not in self._coupling:
            for data in self._queues.pop(link.handle or b"", []):
                self._transmit(link, data, used=True)

    def _gone(self, link: Link) -> None:
        self._links_changed()
        if self._host is not None and link.peer_id is not None:
            self._host.link_closed(link)

    def _known_peers(self) -> list[bytes]:
        if self._host is None:
            return []
        return [i for i in self._host.known_ids() if i[:HANDLE_LEN] not in self._coupling]

    def _ping(self, link: Link) -> None:
        self._transmit(link, PING, used=False)

    def _say_farewell(self, link: Link) -> None:
        self._transmit(link, BYE, used=False)

    def _tell_pinned(self, link: Link) -> None:
        pinned = bool(link.pins)
        if self._transmit(link, KEEP if pinned else FREE, used=False):
            link.told_pinned = pinned

    async def aclose(self) -> None:
        """Close every link and stop the driver's tasks."""
        for task in list(self._coupling.values()):
            task.cancel()
        self._coupling.clear()
        self._queues.clear()
        await super().aclose()


async def couple_direct(a: LinkDriver, b: LinkDriver, *, pinned: bool = False,
                        timeout: float = 30.0, tell_ids: bool = True) -> tuple[Link, Link]:
    """A link between two drivers of this process, SDP exchanged in memory (no coupler):
    for tests and benchmarks that build a topology. Returns (a's link, b's link). With
    ``tell_ids=False`` each side learns the other's id from its hello only."""
    from .linksdp import LinkAnswer, LinkOffer

    offer = await LinkOffer.create(a)
    try:
        answer = await LinkAnswer.create(b, offer.sdp, pinned=pinned, timeout=timeout,
                                         peer_id=a.node_id if tell_ids else None)
    except BaseException:
        await offer.cancel()
        raise
    try:
        link_a = await offer.finish(answer.sdp, pinned=pinned, timeout=timeout,
                                    peer_id=b.node_id if tell_ids else None)
        link_b = await answer.link()
    except BaseException:
        await answer.cancel()
        await offer.cancel()
        raise
    return link_a, link_b
