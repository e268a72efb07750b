"""Peer: an identity that connects to contacts with no server (the composition root).

::

    async with Peer("alice", bootstrap=[("127.0.0.1", 6881)]) as alice:
        conn = await alice.connect(bob_contact_id)    # an authenticated data channel
        await conn.send_text("hello")
        conn.coupler                                   # 'dht': what carried the call

    async with Peer("bob", bootstrap=[...]) as bob:
        async for conn in bob.incoming():
            print(await conn.recv())

Theory of operation
-------------------
This class only wires parts together (see ``docs/session.md``):

- services: the contact book (:class:`~hailing.services.contacts.ContactBook`) and the
  call policy over it (:class:`~hailing.services.policy.CallPolicy`);
- session: the couplers of the ladder (:mod:`hailing.session.coupler`), the
  :class:`~hailing.session.dialer.Dialer` that tries them in order, the
  :class:`~hailing.session.router.SignalRouter` every incoming envelope goes through,
  the :class:`~hailing.session.callee.Callee` that decides on each offer it opened, the
  :class:`~hailing.session.connections.ConnectionManager` that owns the aiortc
  connections and both state machines, the endpoint records, and the
  :class:`~hailing.session.supervisor.Supervisor` owning every background task.

The caller's offer is sealed to the callee and posted through the first coupler of the
ladder; **the callee decides first** (:mod:`hailing.session.callee`): its policy
(blocked, busy, do-not-disturb, unknown and not accept-any) runs before anything is
answered, and a refused caller gets nothing at all, exactly what an offline callee looks
like. An accepted offer is answered the way it came; only then does the caller learn the
callee's candidates. When the channel opens both sides prove their identity over it.

The contact book is watched (:data:`CONTACTS_POLL`): a contact added by another process
on the same data directory (``hailing contact add`` while ``hailing listen`` runs) can
call at once; :meth:`Peer.refresh` does the same on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from .dht import DhtConfig
from .errors import HailingError, LocalProtocolError, QueryTimeout, StorageError
from .identity import Identity, load_or_create_identity, parse_contact_id
from .node import Addr, DhtNode
from .rtc.connection import Connection
from .rtc.files import clean_partials
from .rtc.ice import current_host_addresses
from .services.contacts import ContactBook
from .services.friends import FriendBook
from .services.policy import CallPolicy
from .session.callee import Callee
from .session.connections import ConnectionManager, PeerConnectionFactory, TracksFor
from .session.coupler import (
    ContractCoupler,
    Coupler,
    DhtCoupler,
    InboxHealth,
    MainlineCoupler,
    WsCoupler,
)
from .session.dialer import Dialer, Rung, parse_ladder, sender
from .session.endpoints import EndpointRecords
from .session.events import CallEvent
from .session.external import ExternalCall, IncomingCall, dial_external, pack_external_sdp
from .session.iceservers import IceProvider, peer_provider
from .session.link_coupler import LinkCoupler, open_link_among
from .session.network_coupler import ForwarderLike, NetworkCoupler
from .session.node_ids import KIND_NODE, NodeIds
from .session.router import SignalRouter
from .session.supervisor import Supervisor
from .signaling import envelope
from .signaling.endpoint import KIND_ENDPOINT, EndpointRecord
from .signaling.envelope import ReplayCache
from .signaling.store import SignalStore

__all__ = ["BACKENDS", "CONTACTS_POLL", "REFRESH_INTERVAL", "CallEvent", "Peer"]

#: The built-in couplers a ladder can name (``backend=`` is a one-rung ladder).
BACKENDS = ("dht", "ws", "contract", "mainline", "link", "network")
#: How often the listened keys are recomputed anyway (a new day, listen renewals).
REFRESH_INTERVAL = 60.0
#: How often the contact book is checked for changes made by anyone (seconds).
CONTACTS_POLL = 0.5
#: Seconds a CANCEL being sent may delay :meth:`Peer.stop` (the callee stops ringing).
CANCEL_GRACE = 1.0
#: Most CallEvents kept for a reader that does not keep up (the oldest go first).
MAX_CALL_EVENTS = 1000


class Peer:
    """An identity (kept in ``data_dir``) with its couplers, contacts and call policy.

    ``backend`` is shorthand for a one-rung ladder; ``ladder`` (coupler names, or
    ``(name, timeout)`` pairs) sets the fallback order; ``couplers`` adds ready-made
    :class:`~hailing.session.coupler.Coupler` objects (by default the ladder is theirs).
    ``rtc_configuration`` or ``pc_factory`` replace the default peer connection (no ICE
    server); ``answer_tracks(caller)`` gives media tracks to add when answering a call
    that has media (fresh ones each time: they are stopped when that call ends).
    ``node`` shares a running :class:`DhtNode` (then the Peer neither starts nor stops
    it); else ``dht_config`` configures the node it starts (a short-lived client, such as
    a one-shot ``hailing send``, should pass ``DhtConfig(read_only=True)``: a BEP43
    read-only node never enters others' routing tables, where it would stall lookups
    once it has exited). ``ice_servers``: where the STUN/TURN servers of its peer
    connections come from: ``"node"`` (its DHT node's STUN servers and a volunteer
    relay found on the DHT; none without a node), a provider, or None (none). ``text``:
    also run the text coupler (copy/paste offers and answers), dialed only by name."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        bootstrap: Iterable[Addr] = (),
        bind: Addr = ("127.0.0.1", 0),
        passphrase: str | None = None,
        accept_any: bool | None = None,
        downloads: str | os.PathLike[str] | None = None,
        backend: str = "dht",
        relay_url: str | None = None,
        rpc_url: str | None = None,
        contract_address: str | None = None,
        gas_key: str | bytes | None = None,
        contract_options: dict[str, Any] | None = None,
        rtc_configuration: Any = None,
        clock: Callable[[], float] = time.time,
        ladder: Iterable[str | tuple[str, float | None] | Rung] | None = None,
        couplers: Sequence[Coupler] = (),
        pc_factory: PeerConnectionFactory | None = None,
        answer_tracks: TracksFor | None = None,
        node: DhtNode | None = None,
        dht_config: DhtConfig | None = None,
        on_media_offer: Callable[[IncomingCall], None] | None = None,
        ice_servers: IceProvider | Literal["node"] | None = "node",
        forwarder: ForwarderLike | None = None,
        text: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise LocalProtocolError(f"unknown rendezvous backend {backend!r} ({', '.join(BACKENDS)})")
        custom = {c.name: c for c in couplers}
        if ladder is not None:
            self.ladder = parse_ladder(ladder)
        elif couplers:
            self.ladder = [Rung(c.name) for c in couplers]
        else:
            self.ladder = [Rung(backend)]
        for rung in self.ladder:
            if rung.name in custom:
                continue
            if rung.name not in BACKENDS:
                raise LocalProtocolError(f"no coupler named {rung.name!r} (built in: "
                                         f"{', '.join(BACKENDS)}; or pass it in couplers=)")
            if rung.name == "ws" and not relay_url:
                raise LocalProtocolError("the ws backend needs relay_url")
            if rung.name == "contract" and not rpc_url:
                raise LocalProtocolError("the contract backend needs rpc_url (a URL or 'embedded')")
        if rtc_configuration is not None and pc_factory is not None:
            raise LocalProtocolError("give rtc_configuration or pc_factory, not both")
        # the rendezvous: the first rung that is not over links already open
        self.backend = next((r.name for r in self.ladder if r.name not in ("link", "network")),
                            self.ladder[0].name)
        self.relay_url = relay_url
        self.rpc_url = rpc_url
        self._contract_args: dict[str, Any] = {
            "contract_address": contract_address, "gas_key": gas_key,
            **(contract_options or {})}
        self.data_dir = Path(data_dir)
        self.bootstrap = list(bootstrap)
        self.bind = bind
        self._dht_config = dht_config
        self._passphrase = passphrase
        self._accept_any = accept_any
        self.downloads = Path(downloads) if downloads else self.data_dir / "downloads"
        self._clock = clock
        self._rtc_configuration = rtc_configuration
        self._pc_factory = pc_factory
        self._answer_tracks = answer_tracks
        self._custom = custom
        self._text = text
        self._shared_node = node
        self._ice_servers = (peer_provider(lambda: self._shared_node or self.node)
                             if ice_servers == "node" else ice_servers)
        #: Where accepted offers with audio or video go, as ringing IncomingCalls for a
        #: page to answer (None: answered here with aiortc, ``answer_tracks``).
        self.on_media_offer = on_media_offer
        #: The node's overlay forwarder (the ``network`` coupler's; None: no overlay).
        self.forwarder = forwarder
        #: Offered each further data channel a caller opens on a connection we answered
        #: (the daemon takes a friend link's ``hailing-dht`` channel); True: taken.
        self.on_channel: Callable[[Connection, Any], bool] | None = None
        self.friends: FriendBook | None = None
        self.node_ids: NodeIds | None = None
        self.identity: Identity | None = None
        self.contacts: ContactBook | None = None
        self.policy: CallPolicy | None = None
        self.store: SignalStore | None = None
        self.node: DhtNode | None = None
        self.stats: Counter[str] = Counter()
        self.replay = ReplayCache(is_contact=self._is_contact)
        self.calls: asyncio.Queue[CallEvent] = asyncio.Queue(maxsize=MAX_CALL_EVENTS)
        self.supervisor = Supervisor(self.stats)
        self.router: SignalRouter | None = None
        self.manager: ConnectionManager | None = None
        self.callee: Callee | None = None
        self.endpoints: EndpointRecords | None = None
        self.dialer: Dialer | None = None
        self._couplers: list[Coupler] = []
        self._calling: dict[bytes, asyncio.Lock] = {}
        self._refreshing = asyncio.Lock()
        self._contacts_seen = 0

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def contact_id(self) -> str:
        return self._identity().contact_id

    @property
    def public_key(self) -> bytes:
        return self._identity().public_key

    async def start(self) -> Peer:
        """Load (or create) the identity, open the contact book and the signaling store,
        start every coupler of the ladder. Raises a one-line HailingError if one cannot
        start (a bootstrap address where no DHT node answers, an unreachable relay or
        chain endpoint); then nothing is left running."""
        self.identity = load_or_create_identity(self.data_dir, self._passphrase)
        try:
            await self._start(self.identity)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self, identity: Identity) -> None:
        # a crashed or killed receiver's half-written files: nobody writes them any more
        if removed := clean_partials(self.downloads):
            self.stats["stale_partials_removed"] += len(removed)
        self.contacts = ContactBook(self.data_dir)
        self.policy = CallPolicy(self.contacts, self._accept_any)
        self.store = SignalStore(self.data_dir)
        # what the couplers' first refresh (in their start) sees: any later change, even
        # one made before the watcher's first turn, is noticed
        self._contacts_seen = self.contacts.version()
        self.supervisor.reopen()
        self.router = SignalRouter(identity, self.store, supervisor=self.supervisor,
                                   stats=self.stats, clock=self._clock, replay=self.replay,
                                   is_contact=self._is_contact)
        self.manager = ConnectionManager(
            identity, downloads=self.downloads, supervisor=self.supervisor,
            stats=self.stats, emit=self._emit, clock=self._clock,
            rtc_configuration=self._rtc_configuration, pc_factory=self._pc_factory,
            answer_tracks=self._answer_tracks, ice_servers=self._ice_servers)
        self.manager.on_signal = self.router.from_channel
        self.friends = FriendBook(self.data_dir)
        self.node_ids = NodeIds(identity, stats=self.stats, own=self._own_node_id,
                                is_contact=self._is_contact, load=self.friends.node_id,
                                save=self.friends.set_node_id, clock=self._clock)
        self.manager.on_open = self.node_ids.announce
        self.manager.on_channel = lambda conn, ch: bool(self.on_channel and self.on_channel(conn, ch))
        self.router.on(KIND_NODE, self.node_ids.received, name="node", once_ever=False)
        self.endpoints = EndpointRecords(identity, self.store, stats=self.stats,
                                         is_contact=self.policy.may_send_endpoint,
                                         clock=self._clock)
        self.callee = Callee(self.manager, admit=self.policy.admit,
                             is_contact=self._is_contact, emit=self._emit,
                             on_media=lambda: self.on_media_offer, stats=self.stats)
        self.callee.attach(self.router)
        self.router.on(KIND_ENDPOINT, self.endpoints.received, name="endpoint")
        for rung in self.ladder:
            coupler = await self._build(rung.name)
            self._couplers.append(coupler)
            await coupler.start(self.router.attach(coupler))
        if self._text and "text" not in self._custom:  # beside the ladder, never a rung
            from .session.text_coupler import start_text_coupler

            self._couplers.append(await start_text_coupler(self.manager, self.router))
        self.dialer = Dialer(self._couplers, self.ladder)
        self.manager.ice.warm()  # the first call does not wait for its ICE servers
        self.supervisor.loop(self._refresh_loop, name="refresh loop")
        self.supervisor.loop(self._watch_contacts, name="contacts watch")

    async def _build(self, name: str) -> Coupler:
        if name in self._custom:
            return self._custom[name]
        ident, policy = self._identity(), self._policy()
        if name == "link":
            return LinkCoupler(lambda peer: open_link_among(self._manager().connections, peer))
        if name == "network":
            node_ids = self.node_ids
            assert node_ids is not None
            return NetworkCoupler(lambda: self.forwarder, node_ids.of, self._own_node_id,
                                  stats=self.stats)
        if name == "ws":
            assert self.relay_url is not None
            return WsCoupler(self.relay_url, ident)
        if name == "contract":
            assert self.rpc_url is not None
            return await ContractCoupler.open(self.data_dir, ident, self._store(),
                                              rpc_url=self.rpc_url, clock=self._clock,
                                              **self._contract_args)
        if name == "mainline":
            # the inbox coupler beside it, found by name (capabilities are data, not classes)
            inbox = cast("InboxHealth | None", next((c for c in self._couplers if c.name == "dht"), None))
            return MainlineCoupler(await self._open_node(), ident, policy.allowed, self._clock,
                                   inbox=inbox)
        return DhtCoupler(await self._open_node(), ident, policy.allowed, policy.accept_any,
                          self._clock, fallback=any(r.name == "mainline" for r in self.ladder))

    async def _open_node(self) -> DhtNode:
        if self._shared_node is not None:
            return self._shared_node
        if self.node is not None:  # the dht and mainline couplers share one node
            return self.node
        node = self.node = DhtNode(self.bind, data_dir=self.data_dir / "dht",
                                   bootstrap=self.bootstrap, config=self._dht_config)
        await node.start()
        if self.bootstrap or len(node.core.table):
            try:
                size = await node.bootstrap()
            except QueryTimeout:
                size = 0
            if size == 0 and self.bootstrap:
                where = ", ".join(_hostport(a) for a in self.bootstrap)
                raise QueryTimeout(f"no DHT node answered at {where}")
        return node

    async def stop(self) -> None:
        """Stop every task, close every connection and coupler; idempotent. A CANCEL on
        its way out (a call given up just before, e.g. Ctrl-C on a one-shot ``hailing
        call``) gets up to :data:`CANCEL_GRACE` seconds to leave first."""
        await self.supervisor.settle("cancel", CANCEL_GRACE)
        await self.supervisor.aclose()
        if self.manager is not None:
            await self.manager.aclose()
        for coupler in reversed(self._couplers):
            with contextlib.suppress(Exception):
                await coupler.aclose()
        self._couplers.clear()
        if self.node is not None:
            await self.node.stop()
            self.node = None
        if self.contacts is not None:
            self.contacts.close()
            self.contacts = None
        if self.friends is not None:
            self.friends.close()
            self.friends = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def __aenter__(self) -> Peer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def couplers(self) -> list[Coupler]:
        """The running couplers, in ladder order (then the text coupler, if any)."""
        return list(self._couplers)

    def coupler(self, name: str) -> Coupler:
        """The running coupler called ``name``."""
        for c in self._couplers:
            if c.name == name:
                return c
        raise LocalProtocolError(f"no running coupler named {name!r}")

    # -- calling -------------------------------------------------------------------------

    async def connect(self, contact: str | bytes, timeout: float = 30.0, *,
                      via: Connection | None = None, coupler: str | None = None,
                      tracks: Sequence[Any] = ()) -> Connection:
        """Open an authenticated data channel to ``contact`` (contact id or public key).

        The ladder's couplers are tried in order within ``timeout`` (only ``coupler``,
        if named); ``conn.coupler`` says which one carried the call. With ``via`` (an
        open connection to the same contact) the offer and the answer travel over that
        data channel: no DHT, no chain, no relay. ``tracks`` are media tracks added
        before the offer (or a kind, ``"audio"`` / ``"video"``, to receive that media
        without sending any); the peer's tracks are in ``conn.tracks.received``. Raises :class:`QueryTimeout` with one clear line when nobody
        answered: the callee is offline, refused, or blocked us (on purpose, these look
        the same)."""
        peer = parse_contact_id(contact) if isinstance(contact, str) else contact
        if peer == self._identity().public_key:
            raise LocalProtocolError("cannot call yourself")
        if via is not None and (via.peer != peer or not via.is_open):
            raise LocalProtocolError("via must be an open connection to the same contact")
        manager = self._manager()
        # An answer names the offer it answers, but one call per peer at a time keeps
        # the bookkeeping (and the callee's view) simple.
        lock = self._calling.setdefault(peer, asyncio.Lock())
        async with lock:
            t0 = time.perf_counter()
            if via is not None:
                channel = via

                async def over_channel(blob: bytes) -> None:
                    channel.send_signal(blob)

                conn = await manager.offer(peer, wait=timeout, send=over_channel,
                                           tracks=tracks, cancel=over_channel)
                conn.coupler = "channel"
            else:
                async def attempt(c: Coupler, wait: float) -> Connection:
                    await c.expect_from(peer)
                    return await manager.offer(peer, wait=wait, tracks=tracks,
                                               send=sender(c, peer, "offer"),
                                               cancel=sender(c, peer, "cancel"),
                                               reply_hint=c.reply_hint(peer))

                conn, used = await self._dialer().dial(timeout, attempt, only=coupler)
                conn.coupler = used.name
            conn.connect_ms = (time.perf_counter() - t0) * 1000
            return conn

    async def call_external(self, contact: str | bytes, sdp: str, timeout: float = 30.0,
                            coupler: str | None = None) -> ExternalCall:
        """Call ``contact`` for a page that owns the media: ``sdp`` is its offer (host
        candidates filtered to the configured ICE hosts, then packed, format 2), dialed
        through the ladder (only ``coupler``, if named). Returns the answer as an
        :class:`~hailing.session.external.ExternalCall` (the callee's SDP, our hello
        proof, ``verify`` for the callee's). LocalProtocolError for an SDP that is not
        one; QueryTimeout, as :meth:`connect`, when nobody answered. A call cancelled or
        timed out before the answer sends the callee a sealed CANCEL."""
        peer = parse_contact_id(contact) if isinstance(contact, str) else contact
        if peer == self._identity().public_key:
            raise LocalProtocolError("cannot call yourself")
        manager, identity = self._manager(), self._identity()

        async def exchange(c: Coupler, wait: float) -> envelope.Opened:
            await c.expect_from(peer)
            return await manager.exchange(peer, body, wait=wait,
                                          send=sender(c, peer, "offer"),
                                          cancel=sender(c, peer, "cancel"),
                                          reply_hint=c.reply_hint(peer))

        body, local_fp = pack_external_sdp(sdp, current_host_addresses())
        return await dial_external(self._dialer(), identity, peer, local_fp, exchange,
                                   timeout, coupler)

    async def incoming(self) -> AsyncIterator[Connection]:
        """Accepted, authenticated incoming connections, as they come."""
        queue = self._manager().incoming
        while True:
            yield await queue.get()

    async def accept(self, timeout: float | None = None) -> Connection:
        """The next accepted incoming connection."""
        async with asyncio.timeout(timeout):  # not wait_for: it can drop a cancellation
            return await self._manager().incoming.get()

    async def refresh(self) -> int:
        """Re-read contacts and the day now, on every coupler (a contact just added can
        call at once); returns how many keys/addresses are listened to in all."""
        async with self._refreshing:
            self._contacts_seen = self._contacts().version()
            return sum(await asyncio.gather(*(c.refresh() for c in self._couplers)))

    # -- events ------------------------------------------------------------------------

    def _emit(self, ev: CallEvent) -> None:
        if self.calls.full():
            self.calls.get_nowait()
            self.stats["dropped_call_events"] += 1
        self.calls.put_nowait(ev)

    # -- connection info (SIP, VPN) ------------------------------------------------------

    async def publish_endpoint(self, contact: str | bytes, record: EndpointRecord, *,
                               via: Connection | None = None) -> int:
        """Send a sealed endpoint record to ``contact`` over ``via`` (an open connection
        to it), else through the first coupler of the ladder that takes it. Returns how
        many carriers took it."""
        peer = parse_contact_id(contact) if isinstance(contact, str) else contact
        rungs = {r.name for r in self.ladder}  # not the text coupler
        return await self._endpoints().publish(
            peer, record, via=via, couplers=[c for c in self._couplers if c.name in rungs])

    def set_rotation(self, contact: str | bytes, prefix: str, user_id: str) -> None:
        """Record ``contact``'s rotation secret (what the contract coupler addresses by)."""
        self._store().set_rotation(contact, prefix, user_id)

    # -- background loops ----------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            await self._refresh_quietly()

    async def _watch_contacts(self) -> None:
        """Refresh as soon as anyone (this process or another) changed the contact book
        since the last refresh: one ``PRAGMA data_version`` read per
        :data:`CONTACTS_POLL`."""
        book = self._contacts()
        while True:
            await asyncio.sleep(CONTACTS_POLL)
            if book.version() != self._contacts_seen:
                self.stats["contact_refreshes"] += 1
                await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except HailingError as exc:
            self.stats["refresh_errors"] += 1
            self.stats["refresh_errors_" + type(exc).__name__] += 1

    # -- helpers -------------------------------------------------------------------------

    def _is_contact(self, sender: bytes) -> bool:
        """In the contact book and not blocked: whose replay state and calls never yield
        to strangers'."""
        if self.contacts is None:
            return False
        try:
            return self.contacts.state(sender) == "allowed"
        except StorageError:  # the book locked by another process: a stranger, this once
            self.stats["contact_lookup_errors"] += 1
            return False

    def _own_node_id(self) -> bytes | None:
        node = self._shared_node or self.node
        return node.node_id if node is not None else None

    def _identity(self) -> Identity:
        if self.identity is None:
            raise LocalProtocolError("the peer is not started")
        return self.identity

    def _contacts(self) -> ContactBook:
        if self.contacts is None:
            raise LocalProtocolError("the peer is not started")
        return self.contacts

    def _policy(self) -> CallPolicy:
        if self.policy is None:
            raise LocalProtocolError("the peer is not started")
        return self.policy

    def _store(self) -> SignalStore:
        if self.store is None:
            raise LocalProtocolError("the peer is not started")
        return self.store

    def _manager(self) -> ConnectionManager:
        if self.manager is None:
            raise LocalProtocolError("the peer is not started")
        return self.manager

    def _endpoints(self) -> EndpointRecords:
        if self.endpoints is None:
            raise LocalProtocolError("the peer is not started")
        return self.endpoints

    def _dialer(self) -> Dialer:
        if self.dialer is None:
            raise LocalProtocolError("the peer is not started")
        return self.dialer


def _hostport(addr: Addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
