"""Peer: an identity on the DHT that connects to contacts with no server.

::

    async with Peer("alice", bootstrap=[("127.0.0.1", 6881)]) as alice:
        conn = await alice.connect(bob_contact_id)    # an authenticated data channel
        await conn.send_text("hello")

    async with Peer("bob", bootstrap=[...]) as bob:
        async for conn in bob.incoming():
            print(await conn.recv())

Theory of operation
-------------------
The caller makes an aiortc offer, packs it (compact SDP), seals it in an envelope bound
to its DTLS fingerprint and posts it to the callee's inbox for the pair (see
:mod:`hailing.signaling.rendezvous`). The callee's node gets it pushed by the storing
nodes. **The callee decides first**: its policy (blocked, busy, do-not-disturb, unknown
and not accept-any) runs before anything is answered; a refused caller gets nothing at
all, exactly what an offline callee looks like. An accepted offer is answered the same
way; only then does the caller learn the callee's candidates. When the channel opens
both sides prove their identity over it (signed transcript of both fingerprints).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dht import DhtConfig
from ..errors import HailingError, LocalProtocolError, QueryTimeout
from ..identity import (
    ContactBook,
    Identity,
    load_or_create_identity,
    parse_contact_id,
)
from ..node import Addr, DhtNode
from ..signaling import envelope
from ..signaling.contract_rdv import ContractRendezvous
from ..signaling.endpoint import (
    KIND_ENDPOINT,
    EndpointError,
    EndpointRecord,
    decode_record,
    encode_record,
)
from ..signaling.envelope import (
    KIND_ANSWER,
    KIND_OFFER,
    EnvelopeError,
    ReplayCache,
    ReplayedEnvelope,
)
from ..signaling.rendezvous import DhtRendezvous
from ..signaling.sdp import SdpError, decode_sdp, encode_sdp, fingerprint_of
from ..signaling.store import SignalStore
from ..signaling.ws_rdv import WsRendezvous
from .connection import Connection
from .ice import rtc_configuration

log = logging.getLogger(__name__)

#: How often the listened keys are recomputed (new day, new contacts, blocks).
REFRESH_INTERVAL = 60.0
#: Digests of recently opened envelopes kept to recognise a second delivery of one.
OPENED_MEMORY = 1024
#: How long an answering callee waits for the caller's data channel once the answer left.
CHANNEL_TIMEOUT = 30.0
#: Lifetime of a sealed endpoint record (the longest an envelope can live, ~18 h).
ENDPOINT_TTL = envelope.MAX_TTL
BACKENDS = ("dht", "ws", "contract")
Rendezvous = DhtRendezvous | WsRendezvous | ContractRendezvous


@dataclass(frozen=True)
class CallEvent:
    """An offer arrived: accepted or refused (and why); or an accepted call whose
    connection then failed (``failed``, with the reason). For logs and UIs."""

    peer: bytes
    accepted: bool
    reason: str
    at: float = field(default_factory=time.time)
    failed: bool = False


class Peer:
    """An identity (kept in ``data_dir``) with a DHT node, contacts and a call policy."""

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
        dht_config: DhtConfig | None = None,
        clock: Any = time.time,
    ) -> None:
        if backend not in BACKENDS:
            raise LocalProtocolError(f"unknown rendezvous backend {backend!r} (dht, ws or contract)")
        if backend == "ws" and not relay_url:
            raise LocalProtocolError("the ws backend needs relay_url")
        if backend == "contract" and not rpc_url:
            raise LocalProtocolError("the contract backend needs rpc_url (a URL or 'embedded')")
        self.backend = backend
        self.relay_url = relay_url
        self.rpc_url = rpc_url
        self._contract_args: dict[str, Any] = {
            "contract_address": contract_address, "gas_key": gas_key,
            **(contract_options or {})}
        self.data_dir = Path(data_dir)
        self.bootstrap = list(bootstrap)
        self.bind = bind
        self.dht_config = dht_config  # e.g. DhtConfig(read_only=True): BEP43
        self._passphrase = passphrase
        self._accept_any_override = accept_any
        self.downloads = Path(downloads) if downloads else self.data_dir / "downloads"
        self._clock = clock
        self.identity: Identity | None = None
        self.contacts: ContactBook | None = None
        self.node: DhtNode | None = None
        self.rendezvous: Rendezvous | None = None
        self.store: SignalStore | None = None
        self._origins: OrderedDict[bytes, Connection] = OrderedDict()  # blobs from channels
        self._blobs: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1024)
        self.replay = ReplayCache()
        self.stats: Counter[str] = Counter()
        self.calls: asyncio.Queue[CallEvent] = asyncio.Queue(maxsize=1000)
        self._incoming: asyncio.Queue[Connection] = asyncio.Queue()
        self._answers: dict[bytes, asyncio.Future[envelope.Opened]] = {}
        self._answer_refs: dict[bytes, bytes] = {}
        self._opened: OrderedDict[bytes, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: set[Connection] = set()
        self._calling: dict[bytes, asyncio.Lock] = {}

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def contact_id(self) -> str:
        return self._identity().contact_id

    async def start(self) -> Peer:
        self.identity = load_or_create_identity(self.data_dir, self._passphrase)
        self.contacts = ContactBook(self.data_dir)
        self.store = SignalStore(self.data_dir)
        try:
            if self.backend == "contract":
                assert self.rpc_url is not None
                self.rendezvous = await ContractRendezvous.open(
                    self.data_dir, self.identity, self.store, rpc_url=self.rpc_url,
                    clock=self._clock, **self._contract_args)
                await self.rendezvous.start(self._blobs)
            elif self.backend == "ws":
                assert self.relay_url is not None
                ws = WsRendezvous(self.relay_url, self.identity)
                await ws.start(self._blobs)
                self.rendezvous = ws
            else:
                self.node = DhtNode(self.bind, data_dir=self.data_dir / "dht",
                                    bootstrap=self.bootstrap, config=self.dht_config)
                await self.node.start()
                if self.bootstrap or len(self.node.core.table):
                    await self.node.bootstrap()
                self.rendezvous = DhtRendezvous(
                    self.node, self.identity, self._allowed, self._accept_any, self._clock
                )
                await self.rendezvous.refresh()
                self._spawn(self._inbox_pump(self.node))
                self._spawn(self._refresh_loop())
        except BaseException:
            await self.stop()
            raise
        self._spawn(self._receive_loop())
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for conn in list(self._connections):
            await conn.close()
        if self.rendezvous is not None:
            await self.rendezvous.aclose()
        if self.node is not None:
            await self.node.stop()
        if self.contacts is not None:
            self.contacts.close()
            self.contacts = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def __aenter__(self) -> Peer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- calling -------------------------------------------------------------------------

    async def connect(self, contact: str | bytes, timeout: float = 30.0, *,
                      via: Connection | None = None) -> Connection:
        """Open an authenticated data channel to ``contact`` (contact id or public key).

        With ``via`` (an open connection to the same contact) the offer and the answer
        travel over that data channel: no DHT, no chain, no relay.
        Raises :class:`QueryTimeout` with one clear line when nobody answered: the callee
        is offline, refused, or blocked us (on purpose, these look the same)."""

        peer = parse_contact_id(contact) if isinstance(contact, str) else contact
        ident = self._identity()
        if peer == ident.public_key:
            raise LocalProtocolError("cannot call yourself")
        if via is not None and (via.peer != peer or not via.is_open):
            raise LocalProtocolError("via must be an open connection to the same contact")
        # An answer does not name the offer it answers: one call per peer at a time.
        lock = self._calling.setdefault(peer, asyncio.Lock())
        async with lock:
            return await self._connect(peer, ident, timeout, via)

    async def _connect(self, peer: bytes, ident: Identity, timeout: float,
                       via: Connection | None) -> Connection:
        from aiortc import RTCPeerConnection

        t0 = time.perf_counter()
        if via is None:
            await self._rendezvous().expect_from(peer)
        pc = RTCPeerConnection(configuration=rtc_configuration())
        try:
            channel = pc.createDataChannel("hailing")
            await pc.setLocalDescription(await pc.createOffer())
            compact = encode_sdp(pc.localDescription)
            local_fp = fingerprint_of(compact)
            # The compact SDP carries the DTLS fingerprint inside the authenticated envelope:
            # that binds it to our identity without a second copy in the envelope header.
            blob = envelope.seal(ident, peer, KIND_OFFER, compact, now=self._clock(),
                                 ttl=timeout + 30)
            fut: asyncio.Future[envelope.Opened] = asyncio.get_running_loop().create_future()
            self._answers[peer] = fut
            # The answer names this offer (the first bytes of its ephemeral key), so an
            # answer to an earlier call is never taken for this one.
            self._answer_refs[peer] = _offer_ref(blob)
            try:
                if via is not None:
                    via.send_signal(blob)
                else:
                    await self._rendezvous().send(peer, blob, public=True, kind="offer")
                answer = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise QueryTimeout(
                    f"nobody answered within {timeout:.0f} s (offline, busy, or not accepting calls)"
                ) from None
            finally:
                self._answers.pop(peer, None)
                self._answer_refs.pop(peer, None)
            sdp = answer.body[ANSWER_REF:]
            remote_fp = fingerprint_of(sdp)
            # The Connection (its message handler) exists before the transport can start:
            # nothing the callee sends first can be emitted to nobody.
            conn = Connection(pc, channel, ident, peer, initiator=True, local_fp=local_fp,
                              remote_fp=remote_fp, downloads=self.downloads)
            await pc.setRemoteDescription(decode_sdp(sdp))
            await conn.authenticate()
        except BaseException:
            await pc.close()
            raise
        conn.connect_ms = (time.perf_counter() - t0) * 1000
        self._track(conn)
        return conn

    async def incoming(self) -> AsyncIterator[Connection]:
        """Accepted, authenticated incoming connections, as they come."""
        while True:
            yield await self._incoming.get()

    async def accept(self, timeout: float | None = None) -> Connection:
        """The next accepted incoming connection."""
        return await asyncio.wait_for(self._incoming.get(), timeout)

    # -- receiving -----------------------------------------------------------------------

    async def _inbox_pump(self, node: DhtNode) -> None:
        while True:
            msg = await node.inbox()
            if self._blobs.full():
                self.stats["dropped_blobs"] += 1
                continue
            self._blobs.put_nowait(msg.value)

    async def _receive_loop(self) -> None:
        while True:
            blob = await self._blobs.get()
            try:
                await self._receive(blob)
            except Exception:  # a bug: keep receiving, but say so
                self.stats["receive_errors"] += 1
                log.exception("handling a signaling envelope failed")
            finally:
                self._blobs.task_done()  # the contract watcher saves its cursor after this

    async def _receive(self, blob: bytes) -> None:
        """Open, check and act on one signaling envelope (any backend or a channel)."""
        digest = hashlib.sha256(blob).digest()
        origin = self._origins.pop(digest, None)
        try:
            opened = envelope.open_envelope(self._identity(), blob, now=self._clock(),
                                            replay=self.replay)
        except ReplayedEnvelope:
            # The same bytes again: an offer posted to both our pair and public inbox
            # (we listen on both with accept_any), or a replay. Dropped either way.
            self.stats["duplicates" if digest in self._opened else "bad_envelopes"] += 1
            return
        except EnvelopeError:
            self.stats["bad_envelopes"] += 1
            return
        self._opened[digest] = None
        if len(self._opened) > OPENED_MEMORY:
            self._opened.popitem(last=False)
        if origin is not None and origin.peer != opened.sender:
            self.stats["misrouted_signals"] += 1  # someone else's envelope on a channel
            return
        rdv = self.rendezvous
        if origin is None and isinstance(rdv, ContractRendezvous) and rdv.require_wallet:
            # The seed's authentication by wallet: the transaction must have been paid by
            # the sender's own wallet of the day, which only its friends can compute.
            if not await rdv.paid_by(opened.sender, blob):
                self.stats["refused_wallet"] += 1
                return
            self.stats["wallet_verified"] += 1
        if not self._store().first_handling(opened.nonce, opened.expires, self._clock()):
            self.stats["already_handled"] += 1  # handled before a restart: never twice
            return
        if opened.kind == KIND_ENDPOINT:
            self._endpoint_received(opened, "channel" if origin else self.backend)
        elif opened.kind == KIND_ANSWER:
            fut = self._answers.get(opened.sender)
            ref = self._answer_refs.get(opened.sender)
            if (fut is not None and not fut.done() and opened.body[:ANSWER_REF] == ref
                    and _bound(opened, ANSWER_REF)):
                fut.set_result(opened)
            else:
                self.stats["unexpected_answers"] += 1
        elif opened.kind == KIND_OFFER:
            if not _bound(opened):  # garbage inside a good envelope: no call at all
                self.stats["unbound_offers"] += 1
                return
            verdict = self._admit(opened.sender)
            self._emit(CallEvent(opened.sender, verdict == "accepted", verdict))
            if verdict == "accepted":
                self._spawn(self._answer(opened, origin))
            else:
                self.stats["refused_" + verdict] += 1
        else:
            self.stats["unknown_kind"] += 1

    def _admit(self, caller: bytes) -> str:
        """The callee's policy, first. Returns 'accepted' or the reason of the refusal."""
        book = self._contacts()
        state = book.state(caller)
        if state == "blocked":
            return "blocked"
        status = book.status()
        if status == "dnd":
            return "do-not-disturb"
        if status == "busy":
            return "busy"
        if state == "allowed" or self._accept_any():
            return "accepted"
        return "unknown caller"

    async def _answer(self, offer: envelope.Opened, via: Connection | None = None) -> None:
        from aiortc import RTCPeerConnection

        if not _bound(offer):
            self.stats["unbound_offers"] += 1
            return
        ident = self._identity()
        pc = RTCPeerConnection(configuration=rtc_configuration())
        opened: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        try:
            remote_fp = fingerprint_of(offer.body)
            await pc.setRemoteDescription(decode_sdp(offer.body))
            await pc.setLocalDescription(await pc.createAnswer())
            compact = encode_sdp(pc.localDescription)
            local_fp = fingerprint_of(compact)

            def on_channel(channel: Any) -> None:
                # The Connection (and its message handler) must exist before this callback
                # returns: the caller's hello may be in the very next SCTP chunk, and a
                # message emitted with no listener is gone. Only the first channel counts.
                if opened.done():
                    self.stats["extra_channels"] += 1
                    return
                opened.set_result(Connection(
                    pc, channel, ident, offer.sender, initiator=False, local_fp=local_fp,
                    remote_fp=remote_fp, downloads=self.downloads))

            pc.on("datachannel", on_channel)
            blob = envelope.seal(ident, offer.sender, KIND_ANSWER, offer.nonce[:ANSWER_REF] + compact,
                                 now=self._clock())
            if via is not None:
                via.send_signal(blob)
            else:
                await self._rendezvous().send(offer.sender, blob, kind="answer")
            conn = await asyncio.wait_for(asyncio.shield(opened), CHANNEL_TIMEOUT)
            await conn.authenticate()
        except (HailingError, SdpError, TimeoutError, ValueError, ConnectionError) as exc:
            self.stats["failed_answers"] += 1
            self.stats["failed_answers_" + type(exc).__name__] += 1
            self._emit(CallEvent(offer.sender, True, _why(exc, "the caller's channel did not open"),
                                 failed=True))
            await pc.close()
            return
        self._track(conn)
        self._incoming.put_nowait(conn)

    # -- connection info (SIP, VPN) ------------------------------------------------------

    async def publish_endpoint(self, contact: str | bytes, record: EndpointRecord, *,
                               via: Connection | None = None) -> int:
        """Send a sealed endpoint record to ``contact`` through the rendezvous backend (or
        over ``via``, an open connection to it)."""
        peer = parse_contact_id(contact) if isinstance(contact, str) else contact
        blob = envelope.seal(self._identity(), peer, KIND_ENDPOINT, encode_record(record),
                             now=self._clock(), ttl=ENDPOINT_TTL)
        if via is not None:
            via.send_signal(blob)
            return 1
        return await self._rendezvous().send(peer, blob, kind="endpoint")

    def _endpoint_received(self, opened: envelope.Opened, via: str) -> None:
        if self._contacts().state(opened.sender) != "allowed":
            self.stats["refused_endpoints"] += 1  # only contacts' records are kept
            return
        try:
            rec = decode_record(opened.body)
        except EndpointError:
            self.stats["bad_endpoints"] += 1
            return
        if self._store().put_endpoint(opened.sender, rec.kind, rec.endpoint, rec.extra,
                                      opened.timestamp, via):
            self.stats["endpoints"] += 1

    def set_rotation(self, contact: str | bytes, prefix: str, user_id: str) -> None:
        """Record ``contact``'s rotation secret (what the contract backend addresses by)."""
        self._store().set_rotation(contact, prefix, user_id)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            with contextlib.suppress(HailingError):
                await self._rendezvous().refresh()

    # -- helpers -------------------------------------------------------------------------

    def _allowed(self) -> list[bytes]:
        return [c.pubkey for c in self._contacts().list() if not c.blocked]

    def _accept_any(self) -> bool:
        if self._accept_any_override is not None:
            return self._accept_any_override
        return self._contacts().accept_any()

    def _emit(self, ev: CallEvent) -> None:
        if self.calls.full():
            self.calls.get_nowait()
        self.calls.put_nowait(ev)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1

    def _track(self, conn: Connection) -> None:
        self._connections.add(conn)
        conn.on_signal = self._channel_blob
        conn.channel.on("close", lambda: self._connections.discard(conn))

    def _channel_blob(self, conn: Connection, blob: bytes) -> None:
        """A signaling envelope that arrived over an open data channel."""
        if self._blobs.full():
            self.stats["dropped_blobs"] += 1
            return
        self._origins[hashlib.sha256(blob).digest()] = conn
        while len(self._origins) > OPENED_MEMORY:
            self._origins.popitem(last=False)
        self._blobs.put_nowait(blob)

    def _store(self) -> SignalStore:
        if self.store is None:
            raise LocalProtocolError("the peer is not started")
        return self.store

    def _identity(self) -> Identity:
        if self.identity is None:
            raise LocalProtocolError("the peer is not started")
        return self.identity

    def _contacts(self) -> ContactBook:
        if self.contacts is None:
            raise LocalProtocolError("the peer is not started")
        return self.contacts

    def _node(self) -> DhtNode:
        if self.node is None:
            raise LocalProtocolError("the peer is not started")
        return self.node

    def _rendezvous(self) -> Rendezvous:
        if self.rendezvous is None:
            raise LocalProtocolError("the peer is not started")
        return self.rendezvous


#: An answer's body starts with this many bytes of the offer's ephemeral key.
ANSWER_REF = 8


def _why(exc: BaseException, timeout_text: str) -> str:
    if isinstance(exc, TimeoutError):
        return timeout_text
    return str(exc) or type(exc).__name__


def _offer_ref(sealed_offer: bytes) -> bytes:
    """The reference an answer carries: the offer envelope's ephemeral key (its nonce,
    right after the version byte), first ANSWER_REF bytes."""
    return sealed_offer[1 : 1 + ANSWER_REF]


def _bound(opened: envelope.Opened, skip: int = 0) -> bool:
    """The body (after ``skip`` bytes) is a compact SDP with a DTLS fingerprint (bound to
    the sender by the envelope); a fingerprint in the envelope header, if any, matches."""
    try:
        fp = fingerprint_of(opened.body[skip:])
    except (SdpError, LocalProtocolError):
        return False
    return opened.fingerprint is None or opened.fingerprint == fp
