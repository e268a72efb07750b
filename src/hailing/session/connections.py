"""ConnectionManager: the live aiortc connections and the offer/answer state machines.

Theory of operation
-------------------
**Calling** (:meth:`ConnectionManager.offer`): a new ``RTCPeerConnection`` (from the
caller's factory or ``RTCConfiguration``, else one with the ICE servers of the
manager's :class:`~hailing.session.iceservers.IceServerSource`: none without a
provider), a data channel
``hailing``, the caller's media tracks if any, the offer with its gathered candidates.
The offer is sealed to the callee with a lifetime equal to how long this attempt waits,
so a callee never rings for a caller that has given up; the answer must name the offer
(the first :data:`ANSWER_REF` bytes of its ephemeral key), so an answer to an earlier
call is never taken for this one. The :class:`~hailing.rtc.connection.Connection` exists
before the remote description is applied: nothing the callee sends first is lost. Then
both sides prove their identity over the channel.

**Answering** (:meth:`ConnectionManager.answer`, after the call policy accepted the
offer): a supervised task applies the offer, makes the answer, replies by the way the
offer came and waits (:data:`CHANNEL_TIMEOUT`, or the coupler's own wait in
:attr:`ConnectionManager.channel_waits`: a person carries a text answer) for the caller's
channel and its proof.

**Relays.** Every peer connection gathers a relay candidate when a relay is known (the
description is sent whole, so it cannot wait to see whether one is needed); once
connected, the allocations its path does not use are given back at once
(:func:`~hailing.rtc.ice.release_unused_relays`): a relay's quotas count the
connections it carries, not every open link.

**Bounded.** Each answered call costs an ``RTCPeerConnection`` (ICE, DTLS, SCTP) from
the moment it is answered until its channel closes, so answering is refused (the caller
hears nothing, as from an offline callee; counted ``refused_<reason>``) when
:data:`MAX_CALLS_PER_CALLER` calls of that caller, or :data:`MAX_STRANGER_CALLS` calls of
callers not in the contact book, are being answered or open, or when
:data:`MAX_INCOMING` accepted connections wait to be taken. Contacts' calls never count
against the strangers' limit: a flood of accepted strangers cannot keep a contact out.

**Remote input never escapes.** Whatever the other side's description makes aiortc
raise (``InvalidStateError``, ``OperationError``, ``ValueError``, ...) is caught where
it is applied: the peer connection is closed, a caller gets one
:class:`~hailing.errors.RemoteProtocolError` line, a callee emits a ``failed``
:class:`~hailing.session.events.CallEvent` and counts ``failed_answers_<error>``.

Every open connection is tracked until its channel closes; :meth:`aclose` closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import (
    CallCancelled,
    HailingError,
    LocalProtocolError,
    QueryTimeout,
    RemoteProtocolError,
)
from ..identity import Identity
from ..rtc.connection import Connection
from ..rtc.ice import prune_redundant_candidates, release_unused_relays, tune_aioice
from ..rtc.ice import rtc_configuration as default_configuration
from ..rtc.tracks import add_answer_tracks, media_kinds
from ..signaling import envelope
from ..signaling.envelope import KIND_ANSWER, KIND_CANCEL, KIND_OFFER
from .descriptions import (
    decode_description,
    description_fingerprint,
    encode_description,
    offer_body,
)
from .dialer import nobody_answered
from .events import CallEvent
from .external import IncomingCall
from .iceservers import IceProvider, IceServerSource
from .supervisor import Supervisor

__all__ = ["ANSWER_REF", "CANCELLED_MEMORY", "CANCEL_TTL", "CHANNEL_TIMEOUT",
           "MAX_CALLS_PER_CALLER", "MAX_INCOMING", "MAX_STRANGER_CALLS", "ConnectionManager",
           "offer_ref"]

log = logging.getLogger("hailing.session")

#: An answer's body starts with this many bytes of the offer's ephemeral key.
ANSWER_REF = 8
#: How long an answering callee waits for the caller's data channel once the answer left.
CHANNEL_TIMEOUT = 30.0
#: Calls (peer connections being answered, or open) from one caller at once.
MAX_CALLS_PER_CALLER = 4
#: Calls (being answered, or open) from all callers not in the contact book together.
MAX_STRANGER_CALLS = 16
#: Accepted connections waiting to be taken (``Peer.accept`` / ``incoming``).
MAX_INCOMING = 64
#: Longest an answered call for a page holds its place in the call caps when the page
#: never ends it (seconds).
EXTERNAL_HOLD = 6 * 3600.0
#: Why an answer in progress stopped: the caller's CANCEL (a ``failed`` CallEvent).
HUNG_UP = "the caller hung up"
#: Lifetime of a sealed CANCEL (seconds): the callee acts on it while the offer rings.
CANCEL_TTL = 60
#: CANCELs for offers not (yet) seen, remembered in case the offer comes later.
CANCELLED_MEMORY = 256

Send = Callable[[bytes], Awaitable[object]]
PeerConnectionFactory = Callable[[], Any]
TracksFor = Callable[[bytes], Sequence[Any]]


def offer_ref(sealed_offer: bytes) -> bytes:
    """The reference an answer carries: the offer envelope's ephemeral key (its nonce,
    right after the version byte), first ANSWER_REF bytes."""
    return sealed_offer[1 : 1 + ANSWER_REF]


def bound(opened: envelope.Opened, skip: int = 0) -> bool:
    """The body (after ``skip`` bytes) is a description with one DTLS fingerprint (bound
    to the sender by the envelope); a fingerprint in the envelope header, if any, matches."""
    try:
        fp = description_fingerprint(opened.body[skip:])
    except (HailingError, ValueError):
        return False
    return opened.fingerprint is None or opened.fingerprint == fp


def _pruned(description: Any) -> Any:
    """A local description without redundant candidates (what gets sealed)."""
    from aiortc import RTCSessionDescription

    return RTCSessionDescription(sdp=prune_redundant_candidates(description.sdp),
                                 type=description.type)


async def _apply(pc: Any, body: bytes, kind: Literal["offer", "answer"], who: str) -> None:
    """Apply a remote description; whatever aiortc raises on it is the remote's fault."""
    try:
        await pc.setRemoteDescription(decode_description(body, kind))
    except HailingError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"WebRTC refused the {who}'s {kind}: "
                                  f"{type(exc).__name__}: {exc}") from None


class ConnectionManager:
    """Owns the live connections of one identity (see the module docstring).

    ``emit`` receives :class:`CallEvent` (here: ``failed`` ones); ``stats`` and
    ``supervisor`` are shared with the session. ``rtc_configuration`` or
    ``pc_factory`` (a callable returning a new ``RTCPeerConnection``) replace the default
    peer connection; ``answer_tracks(caller)`` gives the media tracks to add when
    answering a call with media (never called for a data-only one): each goes on a media
    section of its kind the offer has, the others are stopped, and they are stopped when
    the call's peer connection closes (:func:`~hailing.rtc.tracks.add_answer_tracks`).
    ``tracks`` given to :meth:`offer` are tracks to send, or a kind (``"audio"``,
    ``"video"``) to receive without sending. ``ice_servers`` (a provider, or a ready
    :class:`~hailing.session.iceservers.IceServerSource`) gives the STUN and TURN
    servers of every new peer connection (unless ``rtc_configuration`` or ``pc_factory``
    replace it); the callee's peer connection (and so its gathering: a relay allocation
    reveals its address to the relay) is made only once its policy accepted the call."""

    def __init__(self, identity: Identity, *, downloads: Path, supervisor: Supervisor,
                 stats: Counter[str], emit: Callable[[CallEvent], None],
                 clock: Callable[[], float] = time.time, rtc_configuration: Any = None,
                 pc_factory: PeerConnectionFactory | None = None,
                 answer_tracks: TracksFor | None = None,
                 ice_servers: IceProvider | IceServerSource | None = None) -> None:
        if rtc_configuration is not None and pc_factory is not None:
            raise LocalProtocolError("give rtc_configuration or pc_factory, not both")
        self.identity = identity
        self.downloads = downloads
        self.stats = stats
        self._supervisor = supervisor
        self._emit = emit
        self._clock = clock
        self._configuration = rtc_configuration
        self._factory = pc_factory
        self._answer_tracks = answer_tracks
        #: Where the ICE servers of new peer connections come from (cached, bounded wait).
        self.ice = (ice_servers if isinstance(ice_servers, IceServerSource)
                    else IceServerSource(ice_servers, stats=stats))
        #: Accepted, authenticated incoming connections (at most MAX_INCOMING wait).
        self.incoming: asyncio.Queue[Connection] = asyncio.Queue(maxsize=MAX_INCOMING)
        #: Open connections (both directions) until their channel closes.
        self.connections: set[Connection] = set()
        #: Called with (connection, envelope) for envelopes arriving over a channel.
        self.on_signal: Callable[[Connection, bytes], None] | None = None
        #: Called with each connection once it is authenticated and tracked (both
        #: directions): the session announces its node id over it (session/node_ids.py).
        self.on_open: Callable[[Connection], object] | None = None
        #: Offered each further data channel the caller opens on an answered
        #: connection (e.g. the node's ``hailing-dht`` channel of a friend link): True
        #: when taken, else it is counted ``extra_channels`` and left alone.
        self.on_channel: Callable[[Connection, Any], bool] | None = None
        self._waiting: dict[tuple[bytes, bytes], asyncio.Future[envelope.Opened]] = {}
        self._pcs: set[Any] = set()  # peer connections not yet handed to a Connection
        self._answering: list[tuple[bytes, bool]] = []  # (caller, stranger) being answered
        self._answered: dict[Connection, bool] = {}  # open answered calls: stranger or not
        # calls handed to a page (ringing, or answered and not ended): stranger or not
        self._external: dict[IncomingCall, bool] = {}
        self._ringing: dict[tuple[bytes, bytes], IncomingCall] = {}  # (caller, offer ref)
        self._cancel_answer: dict[tuple[bytes, bytes], asyncio.Future[None]] = {}
        self._cancelled: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        #: How long an answered call waits for the caller's channel, by the name of the
        #: coupler its offer came through (others: :data:`CHANNEL_TIMEOUT`).
        self.channel_waits: dict[str, float] = {}

    async def new_peer_connection(self) -> Any:
        """A new ``RTCPeerConnection``: the factory's, or with the configuration given,
        else with the ICE servers known now (waiting for them at most
        :data:`~hailing.session.iceservers.WAIT` seconds)."""
        tune_aioice()  # also for a caller's own configuration or factory
        if self._factory is not None:
            return self._factory()
        from aiortc import RTCPeerConnection

        configuration = self._configuration
        if configuration is None:
            servers = await self.ice.get()
            configuration = default_configuration(servers.stun, servers.turn)
        return RTCPeerConnection(configuration=configuration)

    # -- calling -----------------------------------------------------------------------

    async def offer(self, peer: bytes, *, wait: float, send: Send,
                    tracks: Sequence[Any] = (), cancel: Send | None = None,
                    reply_hint: bytes | None = None) -> Connection:
        """Call ``peer``: seal an offer living ``wait`` seconds (carrying ``reply_hint``,
        the coupler's: :meth:`~hailing.session.coupler.Coupler.reply_hint`), ``send`` it,
        wait that long for the answer, connect and authenticate. Raises :class:`QueryTimeout` when
        no answer came, :class:`RemoteProtocolError` for an answer WebRTC refuses,
        :class:`~hailing.rtc.connection.AuthenticationError` for a failed proof.
        ``cancel`` sends the sealed CANCEL when the call gives up before an answer
        (:meth:`exchange`)."""
        deadline = time.monotonic() + wait
        pc = await self.new_peer_connection()
        self._pcs.add(pc)
        try:
            channel = pc.createDataChannel("hailing")
            for track in tracks:  # a kind alone ("audio"): receive that media, send none
                if isinstance(track, str):
                    pc.addTransceiver(track, direction="recvonly")
                else:
                    pc.addTrack(track)
            await pc.setLocalDescription(await pc.createOffer())
            body = encode_description(_pruned(pc.localDescription))
            local_fp = description_fingerprint(body)
            answer = await self.exchange(peer, body, wait=deadline - time.monotonic(),
                                         send=send, cancel=cancel, total=wait,
                                         reply_hint=reply_hint)
            sdp = answer.body[ANSWER_REF:]
            conn = Connection(pc, channel, self.identity, peer, initiator=True,
                              local_fp=local_fp, remote_fp=description_fingerprint(sdp),
                              downloads=self.downloads)
            conn.on_signal = self.on_signal  # what the callee sends right after its proof
            await _apply(pc, sdp, "answer", "callee")
            await conn.authenticate()
        except BaseException:
            self._pcs.discard(pc)
            with contextlib.suppress(Exception):
                await pc.close()
            raise
        self._pcs.discard(pc)
        self.track(conn)
        self._release_relays(pc)
        return conn

    async def exchange(self, peer: bytes, body: bytes, *, wait: float, send: Send,
                       cancel: Send | None = None, total: float | None = None,
                       reply_hint: bytes | None = None) -> envelope.Opened:
        """Seal the offer ``body`` (a description) to ``peer`` with a lifetime of ``wait``
        seconds, ``send`` it and wait that long for the answer that names it; returns
        the opened answer (its body: :data:`ANSWER_REF` bytes of the offer's reference,
        then the callee's description). Raises :class:`QueryTimeout` (``total``: the
        call's whole timeout, for its message) when none came. A call that gives up
        before the answer (timeout, cancellation) has ``cancel`` send a sealed CANCEL
        naming the offer: best effort, in the background, never in the way of the
        caller's error. ``reply_hint`` (the coupler's) travels before the description
        (:func:`~hailing.session.descriptions.offer_body`)."""
        deadline = time.monotonic() + wait
        ttl = min(max(1, math.ceil(wait)), envelope.MAX_TTL)
        blob = envelope.seal(self.identity, peer, KIND_OFFER, offer_body(body, reply_hint),
                             now=self._clock(), ttl=ttl)
        ref = offer_ref(blob)
        fut: asyncio.Future[envelope.Opened] = asyncio.get_running_loop().create_future()
        self._waiting[(peer, ref)] = fut
        try:
            try:
                await send(blob)
            except Exception:
                cancel = None  # it did not go: nothing to cancel
                raise
            # asyncio.timeout, not 3.11's wait_for: that one drops a cancellation
            # (Ctrl-C) arriving in the same step as the answer (docs/connection.md)
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await fut
        except TimeoutError:
            raise QueryTimeout(nobody_answered(wait if total is None else total)) from None
        finally:
            self._waiting.pop((peer, ref), None)
            if cancel is not None and not (fut.done() and not fut.cancelled()):
                self._send_cancel(peer, ref, cancel)

    def _send_cancel(self, peer: bytes, ref: bytes, cancel: Send) -> None:
        """Seal and send a CANCEL for the offer ``ref`` in a supervised task (counted
        ``cancels_sent`` / ``cancel_errors``)."""
        blob = envelope.seal(self.identity, peer, KIND_CANCEL, ref, now=self._clock(),
                             ttl=CANCEL_TTL)

        async def go() -> None:
            try:
                await cancel(blob)
                self.stats["cancels_sent"] += 1
            except (HailingError, OSError, TimeoutError):
                self.stats["cancel_errors"] += 1

        try:
            self._supervisor.spawn(go(), name="cancel")
        except RuntimeError:  # the session is stopping: nobody will send it
            self.stats["cancel_errors"] += 1

    def answer_received(self, opened: envelope.Opened) -> None:
        """An opened answer (from the router): completes the call that waits for it."""
        fut = self._waiting.get((opened.sender, opened.body[:ANSWER_REF]))
        if fut is not None and not fut.done() and bound(opened, ANSWER_REF):
            fut.set_result(opened)
        else:
            self.stats["unexpected_answers"] += 1

    def cancel_received(self, opened: envelope.Opened) -> None:
        """An opened CANCEL (from the router): the offer it names stops ringing, or its
        answering gives up the peer connection. One for nothing we know is remembered
        (:data:`CANCELLED_MEMORY`) in case its offer comes later."""
        key = (opened.sender, opened.body)
        if len(opened.body) != ANSWER_REF:
            self.stats["bad_cancels"] += 1
            return
        call = self._ringing.get(key)
        if call is not None:
            self.stats["cancelled_calls"] += 1
            call.cancel("cancelled")
            return
        answering = self._cancel_answer.get(key)
        if answering is not None:
            self.stats["cancelled_answers"] += 1
            if not answering.done():
                answering.set_result(None)
            return
        self.stats["unmatched_cancels"] += 1
        self._cancelled[key] = None
        while len(self._cancelled) > CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)

    def was_cancelled(self, opened: envelope.Opened) -> bool:
        """Whether the offer ``opened`` was cancelled before it arrived."""
        return (opened.sender, opened.nonce[:ANSWER_REF]) in self._cancelled

    # -- answering ---------------------------------------------------------------------

    def room_for(self, caller: bytes, stranger: bool) -> str | None:
        """None if a call from ``caller`` (``stranger``: not in the contact book) may be
        answered now; else why not (see the module docstring)."""
        calls = [*self._answering, *((c.peer, s) for c, s in self._answered.items()),
                 *((c.sender, s) for c, s in self._external.items())]
        if sum(1 for peer, _ in calls if peer == caller) >= MAX_CALLS_PER_CALLER:
            return "too-many-calls"
        if stranger and sum(1 for _, s in calls if s) >= MAX_STRANGER_CALLS:
            return "too-many-strangers"
        if self.incoming.full():
            return "incoming-full"
        return None

    def answering(self, caller: bytes) -> bool:
        """Whether an accepted offer of ``caller`` is being answered now (from the
        policy's yes until its channel opened or the answer failed)."""
        return any(peer == caller for peer, _ in self._answering)

    def answer(self, offer: envelope.Opened, reply: Send, coupler: str | None = None, *,
               stranger: bool = False) -> str | None:
        """Answer an accepted offer in a supervised task; ``reply`` sends the answer back
        the way the offer came. Returns None, or why it is not answered at all
        (:meth:`room_for`; counted ``refused_<reason>``)."""
        refused = self.room_for(offer.sender, stranger)
        if refused is not None:
            self.stats["refused_" + refused] += 1
            return refused
        slot = (offer.sender, stranger)
        self._answering.append(slot)
        self._supervisor.spawn(self._answer(offer, reply, coupler, slot), name="answer")
        return None

    def ring(self, offer: envelope.Opened, reply: Send, coupler: str, sdp: str,
             media: tuple[str, ...], on_call: Callable[[IncomingCall], None], *,
             stranger: bool = False) -> str | None:
        """Hand an accepted media offer to ``on_call`` as a ringing :class:`IncomingCall`
        (a page answers it); ``reply`` sends the answer back the way the offer came.
        Returns None, or why it is not rung at all (:meth:`room_for`, counted
        ``refused_<reason>``). It counts in the call caps until it stops ringing
        without an answer, or its answered call ends."""
        refused = self.room_for(offer.sender, stranger)
        if refused is not None:
            self.stats["refused_" + refused] += 1
            return refused
        key = (offer.sender, offer.nonce[:ANSWER_REF])
        call = IncomingCall(offer.sender, sdp, media, offer.expires, coupler, key[1],
                            description_fingerprint(offer.body), self.identity, reply,
                            self._release, self._clock)
        self._external[call] = stranger
        self._ringing[key] = call
        self.stats["rung_calls"] += 1

        async def watch() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, call.expires - self._clock())):
                    await call.finished.wait()
            if call.cancel("expired"):
                self.stats["expired_calls"] += 1
                return
            # answered: its place is held until it ends, or a page that went away
            # without saying so has held it for EXTERNAL_HOLD
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXTERNAL_HOLD):
                    await call.closed.wait()
            if call.state == "answered":
                self.stats["calls_never_ended"] += 1
                call.end("not ended by its page")

        self._supervisor.spawn(watch(), name="ringing")
        on_call(call)
        return None

    def _release(self, call: IncomingCall) -> None:
        self._external.pop(call, None)
        key = (call.sender, call.offer_ref)
        if self._ringing.get(key) is call:
            del self._ringing[key]

    async def _answer(self, offer: envelope.Opened, reply: Send, coupler: str | None,
                      slot: tuple[bytes, bool]) -> None:
        conn: Connection | None = None
        try:
            conn = await self._answer_call(offer, reply, coupler)
            if conn is not None:
                self._answered[conn] = slot[1]
        finally:
            self._answering.remove(slot)
        if conn is None:
            return
        conn.coupler = coupler
        self.track(conn)
        if self.incoming.full():  # only if a burst got past room_for: never queued unbounded
            self.stats["dropped_incoming"] += 1
            await conn.close("the callee has too many calls waiting")
            return
        self.incoming.put_nowait(conn)

    async def _answer_call(self, offer: envelope.Opened, reply: Send,
                           coupler: str | None) -> Connection | None:
        pc = await self.new_peer_connection()
        self._pcs.add(pc)
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Connection] = loop.create_future()
        cancelled: asyncio.Future[None] = loop.create_future()
        key = (offer.sender, offer.nonce[:ANSWER_REF])
        self._cancel_answer[key] = cancelled
        conn: Connection | None = None
        try:
            remote_fp = description_fingerprint(offer.body)
            await _apply(pc, offer.body, "offer", "caller")
            if self._answer_tracks is not None and media_kinds(pc):  # not for data-only calls
                add_answer_tracks(pc, self._answer_tracks(offer.sender))
            await pc.setLocalDescription(await pc.createAnswer())
            body = encode_description(_pruned(pc.localDescription))
            local_fp = description_fingerprint(body)

            def on_channel(channel: Any) -> None:
                # The Connection (and its message handler) must exist before this callback
                # returns: the caller's hello may be in the very next SCTP chunk, and a
                # message emitted with no listener is gone. Only the first channel counts.
                if opened.done():
                    if self.on_channel is None or not self.on_channel(opened.result(), channel):
                        self.stats["extra_channels"] += 1
                    return
                conn = Connection(
                    pc, channel, self.identity, offer.sender, initiator=False,
                    local_fp=local_fp, remote_fp=remote_fp, downloads=self.downloads)
                # envelopes the caller sends right after its proof (its node id) must
                # find the router, though this side is not tracked yet
                conn.on_signal = self.on_signal
                opened.set_result(conn)

            pc.on("datachannel", on_channel)
            if cancelled.done():
                raise CallCancelled(HUNG_UP)
            blob = envelope.seal(self.identity, offer.sender, KIND_ANSWER,
                                 offer.nonce[:ANSWER_REF] + body, now=self._clock())
            await reply(blob)
            waiting: list[asyncio.Future[Any]] = [opened, cancelled]
            wait = self.channel_waits.get(coupler or "", CHANNEL_TIMEOUT)
            await asyncio.wait(waiting, timeout=wait,
                               return_when=asyncio.FIRST_COMPLETED)
            if not opened.done():
                if cancelled.done():
                    raise CallCancelled(HUNG_UP)
                raise QueryTimeout("the caller's channel did not open")
            conn = opened.result()
            await conn.authenticate()
        except asyncio.CancelledError:
            await self._close_pc(pc)
            raise
        except Exception as exc:  # remote input, or a transport that failed: one event
            if not isinstance(exc, HailingError | TimeoutError | ConnectionError):
                log.warning("answering %s failed: %s: %s", offer.sender.hex()[:16],
                            type(exc).__name__, exc)
            self.stats["failed_answers"] += 1
            self.stats["failed_answers_" + type(exc).__name__] += 1
            self._emit(CallEvent(offer.sender, True, str(exc) or type(exc).__name__,
                                 failed=True, coupler=coupler))
            await self._close_pc(pc)
            return None
        finally:
            self._cancel_answer.pop(key, None)
        self._pcs.discard(pc)
        self._release_relays(pc)
        return conn

    def _release_relays(self, pc: Any) -> None:
        """A connected peer connection gives back the relay allocations its path does
        not use (in a supervised task; counted ``relays_released``)."""
        async def release() -> None:
            self.stats["relays_released"] += await release_unused_relays(pc)

        with contextlib.suppress(RuntimeError):  # the session is stopping
            self._supervisor.spawn(release(), name="release relays")

    async def _close_pc(self, pc: Any) -> None:
        self._pcs.discard(pc)
        with contextlib.suppress(Exception):
            await pc.close()

    # -- bookkeeping -------------------------------------------------------------------

    def track(self, conn: Connection) -> None:
        """Keep ``conn`` until its channel closes; envelopes on it go to ``on_signal``."""
        self.connections.add(conn)
        conn.on_signal = self.on_signal

        def closed() -> None:
            self.connections.discard(conn)
            self._answered.pop(conn, None)

        conn.channel.on("close", closed)
        if self.on_open is not None:
            self.on_open(conn)

    async def aclose(self) -> None:
        """Close every connection and every peer connection still being set up."""
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.close()
        self.connections.clear()
        self._answered.clear()
        for call in list(self._external):
            call.cancel("stopped")
        self._external.clear()
        self._ringing.clear()
        for pc in list(self._pcs):
            await self._close_pc(pc)
        await self.ice.aclose()
