"""DhtNode: the DHT core on an asyncio UDP socket, with an awaitable API.

The node is a thin driver around :class:`~hailing.dht.DhtProtocol`: each datagram and
each timer expiry is fed to the core with ``loop.time()``, then the driver sends what
the core produced, re-arms one timer and resolves the futures of finished commands. It
starts no background task, so nothing is left running after :meth:`DhtNode.stop`.

With a ``data_dir`` the node keeps its id and routing table in SQLite there; a restarted
node comes back with the same id and asks the nodes it knew first. That file is a cache:
a corrupt one is set aside and rebuilt, a locked one is done without (see ``_state.py``).
An id the core re-derives from its external address (BEP42) is saved as soon as it is
taken, so a restart keeps it.

On a public DHT (docs/protocol.md, "The hailing sub-overlay"), the core schedules its
own announce rounds (``dht/suboverlay.py``); :meth:`DhtNode.bootstrap` only waits for
one when the join met foreign nodes and fewer than k hailing nodes, so that an inbox
lookup right after it runs among hailing nodes. Bootstrap names (``PUBLIC_BOOTSTRAP``,
``--bootstrap public``) are resolved there, once, without blocking the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ._addrs import PUBLIC as PUBLIC
from ._addrs import PUBLIC_BOOTSTRAP as PUBLIC_BOOTSTRAP
from ._addrs import Addr as Addr
from ._addrs import bootstrap_list as bootstrap_list
from ._addrs import format_hostport as format_hostport
from ._addrs import parse_hostport as parse_hostport
from ._addrs import resolve
from ._node_inbox import InboxApi
from ._state import NodeState, load_node_state, save_failed, save_table
from .dht import (
    Answered,
    CommandFailed,
    DhtConfig,
    DhtProtocol,
    Event,
    InboxMessage,
    ItemFound,
    ListenChanged,
    NodeInfo,
    NodesFound,
    PeersFound,
    Pong,
    StoreDone,
)
from .dht.bep44 import MutableItem
from .errors import HailingError, LocalProtocolError, StorageError
from .nat.stun import NatInfo, StunEndpoint, distinct_key, is_stun, pick_servers, route_source
from .transport import UdpEndpoint
from .transport._ingress import SourceRateLimiter
from .transport.datachannel import LinkDriver
from .transport.linkaddr import LinkAddr, OverlayCodec
from .transport.nodelinks import NodeLinks

log = logging.getLogger("hailing.node")

#: How often a node with a data directory saves its routing table.
SAVE_INTERVAL = 300.0
#: Inbox messages kept for the application before the oldest are dropped.
INBOX_QUEUE = 1024
#: Upper bound on any single command, on top of the core's own timeouts.
COMMAND_TIMEOUT = 60.0
#: The least soft timeout of a node on links alone, by default (see ``DhtNode``).
LINKS_MIN_SOFT_TIMEOUT = 1.2
#: The ``address`` of a node without a UDP socket (``bind=None``: links only).
NO_UDP: Addr = ("0.0.0.0", 0)

def _limiter(config: DhtConfig) -> SourceRateLimiter | None:
    """The per-source datagram budget of ``config`` (None when it is turned off)."""
    if config.source_datagram_rate <= 0:
        return None
    return SourceRateLimiter(config.source_datagram_rate, config.source_datagram_burst,
                             exempt_loopback=config.exempt_loopback)


class DhtNode(InboxApi):
    """A Mainline DHT node on UDP, data-channel links, or both (one routing space).
    Use ``async with DhtNode(...) as node:``.

    ``links``: a :class:`~hailing.transport.datachannel.LinkDriver` whose links carry
    DHT traffic too (docs/overlay.md); with ``bind=None`` the node opens no UDP socket at
    all and lives on its links alone (its ``address`` is then ``("0.0.0.0", 0)``). The
    node closes its driver when it stops.
    """

    def __init__(
        self,
        bind: Addr | None = ("127.0.0.1", 0),
        *,
        links: LinkDriver | None = None,
        data_dir: str | Path | None = None,
        bootstrap: Iterable[Addr] = (),
        config: DhtConfig | None = None,
        node_id: bytes | None = None,
        seed: int | None = None,
    ) -> None:
        self.bind = bind
        self.links = links
        self._link_host: NodeLinks | None = None
        self._started = False
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.bootstrap_addrs: list[Addr] = list(bootstrap)
        if config is None:
            # On links alone a request to a peer without a link waits for a coupling
            # (0.3-1.3 s): the default soft timeout (0.15 s) would count nearly every such
            # request stalled, and lookups would end on the peers already linked (a listen
            # and a post to one key then meet on different nodes). UDP nodes keep 0.15 s.
            config = (DhtConfig(min_soft_timeout=LINKS_MIN_SOFT_TIMEOUT)
                      if links is not None and bind is None else DhtConfig())
        self.config = config
        self._node_id = node_id
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._core: DhtProtocol | None = None
        self._transport: UdpEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._futures: dict[int, asyncio.Future[Event]] = {}
        self._inbox: asyncio.Queue[InboxMessage] = asyncio.Queue(maxsize=INBOX_QUEUE)
        self._state: NodeState | None = None
        self._driver_stats: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._next_save = 0.0
        self._saved_id: bytes | None = None
        self.address: Addr = bind if bind is not None else NO_UDP
        # STUN on the DHT port (nat/stun.py): the endpoint, nat_info() waiters, and the
        # keys we listen on (their storing nodes get keepalives behind a NAT).
        self._stun: StunEndpoint | None = None
        self._stun_rng = (random.Random(seed ^ 0x5354554E) if seed is not None
                          else random.SystemRandom())
        self._nat_waiters: list[asyncio.Future[NatInfo]] = []
        self._listen_keys: set[bytes] = set()
        self._listen_watchers: list[Callable[[bytes, bool], object]] = []

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def core(self) -> DhtProtocol:
        if self._core is None:
            raise LocalProtocolError("the node is not started")
        return self._core

    @property
    def node_id(self) -> bytes:
        return self.core.node_id

    @property
    def running(self) -> bool:
        return self._started

    async def start(self) -> DhtNode:
        if self._started:
            raise LocalProtocolError("the node is already started")
        self._loop = asyncio.get_running_loop()
        saved: list[tuple[bytes, Addr, float]] = []
        node_id = self._node_id
        if self.data_dir is not None:
            # A cache: corrupt is set aside and rebuilt, locked is done without (_state.py).
            self._state, stored, saved = load_node_state(self.data_dir)
            if node_id is None:
                node_id = stored
        codec = None if self.links is None else OverlayCodec(udp=self.bind is not None)
        self._core = DhtProtocol(self.config, rng=self._rng, now=self._loop.time(),
                                 node_id=node_id, codec=codec)
        if self.bind is not None:
            self._stun = StunEndpoint(self._stun_rng, self._loop.time(),
                                      exempt_loopback=self.config.exempt_loopback)
            self._core.on_unanswered = self._stun_unanswered  # a STUN server is a DHT port
        if self._state is not None:
            self._save_id(self._core.node_id)
        if self.bind is not None:
            try:
                self._transport = UdpEndpoint(self._loop, self.bind, self._on_datagram,
                                              self._pump, _limiter(self.config))
            except LocalProtocolError:
                if self._state is not None:
                    self._state.close()
                    self._state = None
                raise
            self.address = self._transport.address
        self._started = True
        if self.links is not None:
            self._link_host = NodeLinks(self, self._core)
            self.links.attach(self._link_host)
        now = self._loop.time()
        for nid, addr, _seen in saved if self._transport is not None else ():
            self._core.add_node(nid, addr, now)  # (UDP nodes: none without a socket)
        self._next_save = now + SAVE_INTERVAL
        self._pump()
        return self

    async def stop(self) -> None:
        """Unlisten everywhere (the storing nodes free our slots at once instead of
        pushing to a closed socket until the listens expire), close the socket, fail
        pending commands, save the routing table."""
        if not self._started:
            return
        if self._core is not None:
            self._core.unlisten_all(self._loop.time())
            self._pump()
        self._started = False
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self.links is not None and self._link_host is not None:
            self.links.detach(self._link_host)
            self._link_host = None
            await self.links.aclose()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = float("inf")  # else a restarted node would never re-arm its timer
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(HailingError("the node was stopped"))
                fut.exception()  # mark retrieved: nobody may be waiting any more
        self._futures.clear()
        for waiter in self._nat_waiters:
            if not waiter.done():
                waiter.set_exception(HailingError("the node was stopped"))
                waiter.exception()
        self._nat_waiters.clear()
        self._listen_keys.clear()
        if self._state is not None:
            self._save()
            self._state.close()
            self._state = None

    async def __aenter__(self) -> DhtNode:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- commands ------------------------------------------------------------------------

    async def bootstrap(self, addrs: Sequence[Addr] | None = None) -> int:
        """Join the network through ``addrs`` (default: the configured bootstrap nodes)
        and the peers of the node's open links.

        Returns the number of nodes in the routing table afterwards.
        """
        seeds = list(self.bootstrap_addrs if addrs is None else addrs)
        if seeds:  # names (PUBLIC_BOOTSTRAP) resolved once, here
            fam = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            seeds = await resolve(seeds, fam)
        joined: list[Hashable] = [a for a in seeds if a != self.address]
        if self.links is not None:  # the peers of our links are seeds too
            joined += [x.addr for x in self.links.links() if x.addr is not None and x.is_open]
        if not joined and not len(self.core.table):
            return 0
        await self._run(self.core.bootstrap(joined, self._now()))
        core = self.core
        if core.sub.wanted and len(core.sub.table) < core.config.k:
            await self.find_hailing_nodes()  # the join met foreign nodes: find hailing ones
        if self._stun is not None and self._stun.info.checked_at < self._now() - 60.0:
            self._stun_probe(self._now())  # learn our NAT now that we know (hailing) nodes
            self._pump()
        return len(self.core.table)

    async def find_hailing_nodes(self) -> list[NodeInfo]:
        """Run a round of the sub-overlay now (announce or get_peers on the well-known
        info-hash, pings, a lookup among hailing nodes, docs/protocol.md) or join the
        one under way; the hailing nodes then known closest to us."""
        ev = await self._run(self.core.find_hailing_nodes(self._now()))
        assert isinstance(ev, NodesFound)
        return list(ev.nodes)

    async def ping(self, addr: Addr) -> bytes:
        """Ping ``addr``; return its node id (raises QueryTimeout if it does not answer)."""
        ev = await self._run(self.core.ping(addr, self._now()))
        assert isinstance(ev, Pong)
        return ev.node_id

    async def find_node(self, target: bytes) -> list[NodeInfo]:
        ev = await self._run(self.core.find_node(target, self._now()))
        assert isinstance(ev, NodesFound)
        return list(ev.nodes)

    async def get_peers(self, info_hash: bytes) -> list[Addr]:
        ev = await self._run(self.core.get_peers(info_hash, self._now()))
        assert isinstance(ev, PeersFound)
        return [a for a in ev.peers]  # type: ignore[misc]

    async def announce(self, info_hash: bytes, port: int | None = None, *,
                       implied: bool = False) -> int:
        """Announce ``port`` (default: this node's UDP port; ``implied``: the source port
        the storing nodes see, BEP5 ``implied_port``) for ``info_hash``; re-announced
        every republish interval while the node runs. Returns how many nodes accepted."""
        announced = None if implied else port or self.address[1]
        ev = await self._run(self.core.announce_peer(info_hash, announced, self._now()))
        assert isinstance(ev, StoreDone)
        return ev.stored

    async def put(self, value: Any) -> bytes:
        """Store ``value`` (bencodable) as a BEP44 immutable item; return its target."""
        qid, target = self.core.put_immutable(value, self._now())
        await self._run(qid)
        return target

    async def put_report(self, value: Any) -> StoreDone:
        """Like :meth:`put`, returning the full report (nodes that stored it, errors)."""
        qid, _ = self.core.put_immutable(value, self._now())
        ev = await self._run(qid)
        assert isinstance(ev, StoreDone)
        return ev

    async def get(self, target: bytes) -> Any:
        """The value of the immutable item ``target``, or None if nobody has it."""
        ev = await self._run(self.core.get(target, self._now()))
        assert isinstance(ev, ItemFound)
        return None if ev.item is None else ev.item.value

    async def get_mutable(self, pubkey: bytes, salt: bytes = b"") -> MutableItem | None:
        """The newest mutable item of ``pubkey``/``salt`` among the closest nodes."""
        return (await self.get_mutable_nodes(pubkey, salt))[0]

    async def get_mutable_nodes(self, pubkey: bytes, salt: bytes = b""
                                ) -> tuple[MutableItem | None, tuple[NodeInfo, ...]]:
        """:meth:`get_mutable`, and the closest nodes that answered, closest first."""
        ev = await self._run(self.core.get_mutable(pubkey, self._now(), salt))
        assert isinstance(ev, ItemFound)
        return (ev.item if isinstance(ev.item, MutableItem) else None), ev.nodes

    async def put_mutable(
        self,
        signing_seed: bytes,
        value: Any,
        salt: bytes = b"",
        seq: int | None = None,
        cas: int | None = None,
    ) -> bytes:
        """Sign and store a mutable item; ``seq`` None means one more than the network's."""
        if seq is None:
            pub = MutableItem.create(signing_seed, b"", salt, 0).pubkey
            current = await self.get_mutable(pub, salt)
            # No automatic cas: storing nodes that missed the last put hold an older seq
            # and would refuse the update with 301.
            seq = 1 if current is None else current.seq + 1
        item = MutableItem.create(signing_seed, value, salt, seq)
        await self._run(self.core.put_mutable(item, self._now(), cas))
        return item.target

    async def query(self, addr: Addr, method: bytes, args: dict[bytes, Any]) -> dict[bytes, Any]:
        """Send one query of ``method`` (an extension's, say) to ``addr`` and return the
        response dictionary (``r``). Raises KrpcError (with the error reply's code) or
        QueryTimeout. Answered by the other side's ``DhtProtocol.add_method`` handler."""
        ev = await self._run(self.core.query(addr, method, args, self._now()))
        assert isinstance(ev, Answered)
        return ev.reply

    def reachable_address(self) -> Addr | None:
        """The address other nodes reach this one at unasked, as far as it knows: the
        bound address, or for a socket bound to every interface the external IP most
        answers name (BEP42), else the one STUN found, with the bound port. None when it
        cannot tell (or not started), and behind a NAT (:meth:`nat_info`: some node saw
        us at another address than we send from, or an endpoint-dependent mapping):
        whether that NAT takes an unsolicited datagram is not known."""
        if self._transport is None or self._core is None or self._stun is None:
            return None
        info = self._stun.info
        if info.behind_nat or info.mapping == "endpoint-dependent":
            return None
        host, port = self.address[0], self.address[1]
        if not ipaddress.ip_address(host).is_unspecified:
            return (host, port)
        if self._stun.probing and info.checked_at == float("-inf"):
            return None  # the first probe is under way: it tells within 1.5 s
        ext = self._core.external_ip
        if ext is not None and len(ext) in (4, 16):
            return (str(ipaddress.ip_address(ext)), port)
        if info.mapping == "public" and info.external is not None:
            return (info.external[0], port)
        return None

    # -- STUN on the DHT port (nat/stun.py) ----------------------------------------------

    def stun_servers(self) -> list[Addr]:
        """Nodes that answered our STUN Binding requests, fastest first, one per IP:
        the STUN servers this node's ICE (and its browser's) may use. Empty before the
        first probe (after :meth:`bootstrap`; :meth:`nat_info` runs one now)."""
        return [] if self._stun is None else self._stun.servers()

    async def nat_info(self, refresh: bool = False) -> NatInfo:
        """What this node knows of its NAT (see :class:`~hailing.nat.stun.NatInfo`): the
        last probe's, or a new probe's (at most 1.5 s) when ``refresh`` or none ran yet.
        Probes also run after :meth:`bootstrap` and every five minutes."""
        stun = self._stun
        if stun is None or self._transport is None:
            raise LocalProtocolError("the node is not started" if not self._started
                                     else "the node has no UDP socket")
        if not refresh and not stun.probing and stun.info.checked_at > float("-inf"):
            return stun.info
        waiter: asyncio.Future[NatInfo] = self._loop.create_future()
        self._nat_waiters.append(waiter)
        if not stun.probing:
            self._stun_probe(self._now())
        self._pump()
        async with asyncio.timeout(COMMAND_TIMEOUT):
            return await waiter

    def _stun_probe(self, now: float) -> None:
        """Start a probe: servers that answered before, else nodes of the routing
        table (libtorrent nodes do not answer STUN; a probe tries more of them)."""
        assert self._stun is not None and self._core is not None
        v6 = ":" in self.address[0]
        nodes = [(str(e.addr[0]), int(e.addr[1])) for e in self._core.table
                 if type(e.addr) is tuple and (":" in str(e.addr[0])) == v6]
        exempt = self.config.exempt_loopback
        # Nodes of the sub-table are hailing nodes, STUN servers all (dht/suboverlay.py)
        hailing = [(str(e.addr[0]), int(e.addr[1])) for e in self._core.sub.table
                   if type(e.addr) is tuple and (":" in str(e.addr[0])) == v6]
        picked = pick_servers(self._stun.known_servers(), nodes,
                              lambda a: distinct_key(a, exempt), self._stun_rng, hailing=hailing)
        pairs = [(server, local) for server in picked
                 if server != self.address
                 and (local := route_source(server, self.address)) is not None]
        self._stun.start_probe(pairs, now)

    def _stun_unanswered(self, addr: object, now: float) -> None:
        """A KRPC query of ours to ``addr`` went unanswered: no STUN server there either
        (nat/stun.py: ICE would wait 5 s for it on every call)."""
        if self._stun is not None and isinstance(addr, tuple) and len(addr) >= 2:
            self._stun.forget((str(addr[0]), int(addr[1])), now)

    def _stun_tick(self, now: float) -> None:
        """The probe and keepalive rounds that are due (from the node's timer)."""
        stun, core = self._stun, self._core
        assert stun is not None and core is not None
        if stun.probe_due(now):
            self._stun_probe(now)
        if stun.keepalive_due(now):
            holders = {a for key in self._listen_keys for a in core.inboxes.holders(key, now)}
            stun.keepalive([(str(a[0]), int(a[1])) for a in holders
                            if type(a) is tuple], now)

    @property
    def stats(self) -> dict[str, int]:
        """The core's counters plus the socket's (send/receive errors, drops,
        ``udp_rcvbuf``: the receive buffer the OS granted, in bytes, and
        ``udp_rate_limited``: datagrams dropped unread, their source over its budget)."""
        out = dict(self.core.stats)
        out.update(self._driver_stats)
        if self._stun is not None:
            out.update(self._stun.stats)
        if self._transport is not None:
            out["socket_errors"] = self._transport.errors
            out["send_dropped"] = self._transport.dropped
            out["udp_rcvbuf"] = self._transport.rcvbuf
            out["udp_rate_limited"] = self._transport.limited
        if self.links is not None:
            out.update(self.links.stats)
        return out

    def routing_table(self) -> list[NodeInfo]:
        return [e.info() for e in self.core.table]

    # -- driver --------------------------------------------------------------------------

    def _now(self) -> float:
        if not self._started:
            raise LocalProtocolError("the node is not started")
        return self._loop.time()

    async def _run(self, qid: int) -> Event:
        fut: asyncio.Future[Event] = self._loop.create_future()
        self._futures[qid] = fut
        self._pump()
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for wakes this task through a
            # second future, one more turn of the loop on every command's result.
            async with asyncio.timeout(COMMAND_TIMEOUT):
                ev = await fut
        finally:
            self._futures.pop(qid, None)
        if isinstance(ev, CommandFailed):
            raise ev.error
        return ev

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        assert self._core is not None and self._stun is not None
        if is_stun(data):  # RFC 7983: first byte 0..3; KRPC (bencode) starts with "d"
            self._stun.receive(data, addr, self._loop.time())
            return
        self._core.receive_datagram(data, addr, self._loop.time())

    def _pump(self) -> None:
        core = self._core
        transport = self._transport
        if core is None or not self._started:
            return
        now = self._loop.time()
        if core.node_id is not self._saved_id and self._state is not None:
            self._save_id(core.node_id)  # BEP42: a re-derived id survives a restart
        links = self.links
        for data, addr in core.datagrams_to_send(now):
            if type(addr) is LinkAddr:
                if links is not None:
                    links.send(data, addr)
            elif transport is not None:
                transport.sendto(data, addr)
            elif self._link_host is not None:
                self._link_host.link_unreachable(data, addr)  # no UDP: fail it now
        stun = self._stun
        if stun is not None and transport is not None:
            for data, addr in stun.datagrams_to_send():
                transport.sendto(data, addr)
            core.responder.storing = not stun.info.behind_nat  # dht/responder.py
            if self._nat_waiters and not stun.probing:
                for waiter in self._nat_waiters:
                    if not waiter.done():
                        waiter.set_result(stun.info)
                self._nat_waiters.clear()
        while (ev := core.next_event()) is not None:
            if isinstance(ev, InboxMessage):
                if self._inbox.full():
                    self._inbox.get_nowait()  # the oldest goes; counted
                    core.stats["inbox_overflow"] += 1
                self._inbox.put_nowait(ev)
                continue
            if isinstance(ev, ListenChanged):
                for watcher in list(self._listen_watchers):
                    watcher(ev.key, ev.live)
                continue
            fut = self._futures.get(ev.qid)
            if fut is not None and not fut.done():
                fut.set_result(ev)
        deadline = core.get_timer()
        if stun is not None and (stun_due := stun.get_timer()) is not None:
            deadline = stun_due if deadline is None else min(deadline, stun_due)
        if deadline is not None and deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        core = self._core
        if core is None or not self._started:
            return
        now = self._loop.time()
        core.handle_timer(now)
        if self._stun is not None:
            self._stun.handle_timer(now)
            self._stun_tick(now)
        if self._state is not None and now >= self._next_save:
            self._next_save = now + SAVE_INTERVAL
            self._save()
        self._pump()

    def _save(self) -> None:
        """Save the routing table (UDP addresses: links are not kept); never raises
        (``_state.save_table``)."""
        if self._state is None or self._core is None:
            return
        offset = time.time() - self._loop.time()
        nodes = [
            (e.id, (str(e.addr[0]), int(e.addr[1])), e.last_seen + offset)
            for e in self._core.table if type(e.addr) is tuple
        ]
        self._state = save_table(self._state, self.data_dir, self._core.node_id, nodes,
                                 self._driver_stats, self._warned)

    def _save_id(self, node_id: bytes) -> None:
        self._saved_id = node_id
        if self._state is not None:
            try:
                self._state.set_node_id(node_id)
            except StorageError as exc:
                save_failed(exc, self._driver_stats, self._warned)
