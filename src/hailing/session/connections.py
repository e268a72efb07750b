"""ConnectionManager: the live aiortc connections and the offer/answer state machines.

Theory of operation
-------------------
**Calling** (:meth:`ConnectionManager.offer`): a new ``RTCPeerConnection`` (from the
caller's factory or ``RTCConfiguration``, else one with no ICE server), a data channel
``hailing``, the caller's media tracks if any, the offer with its gathered candidates.
The offer is sealed to the callee with a lifetime equal to how long this attempt waits,
so a callee never rings for a caller that has given up; the answer must name the offer
(the first :data:`ANSWER_REF` bytes of its ephemeral key), so an answer to an earlier
call is never taken for this one. The :class:`~hailing.rtc.connection.Connection` exists
before the remote description is applied: nothing the callee sends first is lost. Then
both sides prove their identity over the channel.

**Answering** (:meth:`ConnectionManager.answer`, after the call policy accepted the
offer): a supervised task applies the offer, makes the answer, replies by the way the
offer came and waits (:data:`CHANNEL_TIMEOUT`) for the caller's channel and its proof.

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
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import HailingError, LocalProtocolError, QueryTimeout, RemoteProtocolError
from ..identity import Identity
from ..rtc.connection import Connection
from ..rtc.ice import rtc_configuration as default_configuration
from ..signaling import envelope
from ..signaling.envelope import KIND_ANSWER, KIND_OFFER
from .descriptions import (
    decode_description,
    description_fingerprint,
    encode_description,
    offer_body,
)
from .dialer import nobody_answered
from .events import CallEvent
from .supervisor import Supervisor

__all__ = ["ANSWER_REF", "CHANNEL_TIMEOUT", "MAX_CALLS_PER_CALLER", "MAX_INCOMING",
           "MAX_STRANGER_CALLS", "ConnectionManager", "offer_ref"]

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
    answering."""

    def __init__(self, identity: Identity, *, downloads: Path, supervisor: Supervisor,
                 stats: Counter[str], emit: Callable[[CallEvent], None],
                 clock: Callable[[], float] = time.time, rtc_configuration: Any = None,
                 pc_factory: PeerConnectionFactory | None = None,
                 answer_tracks: TracksFor | None = None) -> None:
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
        #: Accepted, authenticated incoming connections (at most MAX_INCOMING wait).
        self.incoming: asyncio.Queue[Connection] = asyncio.Queue(maxsize=MAX_INCOMING)
        #: Open connections (both directions) until their channel closes.
        self.connections: set[Connection] = set()
        #: Called with (connection, envelope) for envelopes arriving over a channel.
        self.on_signal: Callable[[Connection, bytes], None] | None = None
        self._waiting: dict[bytes, tuple[bytes, asyncio.Future[envelope.Opened]]] = {}
        self._pcs: set[Any] = set()  # peer connections not yet handed to a Connection
        self._answering: list[tuple[bytes, bool]] = []  # (caller, stranger) being answered
        self._answered: dict[Connection, bool] = {}  # open answered calls: stranger or not

    def new_peer_connection(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from aiortc import RTCPeerConnection

        return RTCPeerConnection(configuration=self._configuration or default_configuration())

    # -- calling -----------------------------------------------------------------------

    async def offer(self, peer: bytes, *, wait: float, send: Send,
                    tracks: Sequence[Any] = (), reply_hint: bytes | None = None
                    ) -> Connection:
        """Call ``peer``: seal an offer living ``wait`` seconds (carrying ``reply_hint``,
        the coupler's, see :meth:`~hailing.session.coupler.Coupler.reply_hint`), ``send``
        it, wait that long for the answer, connect and authenticate. Raises :class:`QueryTimeout` when
        no answer came, :class:`RemoteProtocolError` for an answer WebRTC refuses,
        :class:`~hailing.rtc.connection.AuthenticationError` for a failed proof."""
        deadline = time.monotonic() + wait
        pc = self.new_peer_connection()
        self._pcs.add(pc)
        try:
            channel = pc.createDataChannel("hailing")
            for track in tracks:
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createOffer())
            body = encode_description(pc.localDescription)
            local_fp = description_fingerprint(body)
            ttl = min(max(1, math.ceil(deadline - time.monotonic())), envelope.MAX_TTL)
            blob = envelope.seal(self.identity, peer, KIND_OFFER,
                                 offer_body(body, reply_hint), now=self._clock(), ttl=ttl)
            fut: asyncio.Future[envelope.Opened] = asyncio.get_running_loop().create_future()
            self._waiting[peer] = (offer_ref(blob), fut)
            try:
                await send(blob)
                # asyncio.timeout, not 3.11's wait_for: that one drops a cancellation
                # (Ctrl-C) arriving in the same step as the answer (docs/connection.md)
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    answer = await fut
            except TimeoutError:
                raise QueryTimeout(nobody_answered(wait)) from None
            finally:
                if self._waiting.get(peer, (b"", None))[1] is fut:
                    del self._waiting[peer]
            sdp = answer.body[ANSWER_REF:]
            conn = Connection(pc, channel, self.identity, peer, initiator=True,
                              local_fp=local_fp, remote_fp=description_fingerprint(sdp),
                              downloads=self.downloads)
            await _apply(pc, sdp, "answer", "callee")
            await conn.authenticate()
        except BaseException:
            self._pcs.discard(pc)
            with contextlib.suppress(Exception):
                await pc.close()
            raise
        self._pcs.discard(pc)
        self.track(conn)
        return conn

    def answer_received(self, opened: envelope.Opened) -> None:
        """An opened answer (from the router): completes the call that waits for it."""
        pending = self._waiting.get(opened.sender)
        if (pending is not None and not pending[1].done()
                and opened.body[:ANSWER_REF] == pending[0] and bound(opened, ANSWER_REF)):
            pending[1].set_result(opened)
        else:
            self.stats["unexpected_answers"] += 1

    # -- answering ---------------------------------------------------------------------

    def room_for(self, caller: bytes, stranger: bool) -> str | None:
        """None if a call from ``caller`` (``stranger``: not in the contact book) may be
        answered now; else why not (see the module docstring)."""
        calls = [*self._answering, *((c.peer, s) for c, s in self._answered.items())]
        if sum(1 for peer, _ in calls if peer == caller) >= MAX_CALLS_PER_CALLER:
            return "too-many-calls"
        if stranger and sum(1 for _, s in calls if s) >= MAX_STRANGER_CALLS:
            return "too-many-strangers"
        if self.incoming.full():
            return "incoming-full"
        return None

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
        pc = self.new_peer_connection()
        self._pcs.add(pc)
        opened: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        conn: Connection | None = None
        try:
            remote_fp = description_fingerprint(offer.body)
            await _apply(pc, offer.body, "offer", "caller")
            for track in self._answer_tracks(offer.sender) if self._answer_tracks else ():
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createAnswer())
            body = encode_description(pc.localDescription)
            local_fp = description_fingerprint(body)

            def on_channel(channel: Any) -> None:
                # The Connection (and its message handler) must exist before this callback
                # returns: the caller's hello may be in the very next SCTP chunk, and a
                # message emitted with no listener is gone. Only the first channel counts.
                if opened.done():
                    self.stats["extra_channels"] += 1
                    return
                opened.set_result(Connection(
                    pc, channel, self.identity, offer.sender, initiator=False,
                    local_fp=local_fp, remote_fp=remote_fp, downloads=self.downloads))

            pc.on("datachannel", on_channel)
            blob = envelope.seal(self.identity, offer.sender, KIND_ANSWER,
                                 offer.nonce[:ANSWER_REF] + body, now=self._clock())
            await reply(blob)
            try:
                async with asyncio.timeout(CHANNEL_TIMEOUT):
                    conn = await asyncio.shield(opened)
            except TimeoutError:
                raise QueryTimeout("the caller's channel did not open") from None
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
        self._pcs.discard(pc)
        return conn

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

    async def aclose(self) -> None:
        """Close every connection and every peer connection still being set up."""
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.close()
        self.connections.clear()
        self._answered.clear()
        for pc in list(self._pcs):
            await self._close_pc(pc)
