"""An authenticated data-channel connection to one peer: text messages and files.

Theory of operation
-------------------
Both sides first send ``hello`` with their :func:`~hailing.signaling.envelope.transcript_proof`
over the just-opened channel and check the other's: the DTLS fingerprints of *this*
session, signed by the identity the envelope named. Nothing else is accepted before.

Then, in text frames (JSON objects with a ``t`` field):

- ``{"t": "msg", "id": n, "text": ...}`` answered by ``{"t": "ack", "id": n}``;
- ``{"t": "ping"}`` answered by ``{"t": "pong"}``: each side pings every
  :attr:`Connection.keepalive_interval` seconds; a side that hears *nothing at all* (no
  frame of any kind) for :attr:`Connection.keepalive_timeout` seconds takes the peer for
  gone and closes (SCTP's own heartbeat would take 30-60 s);
- ``{"t": "bye"}`` hangs up; the peer answers ``bye`` (see :meth:`Connection.close`);
  a message or file that crosses our ``bye`` is dropped unacknowledged (so the sender
  knows it was not delivered);
  ``{"t": "bye", "replaced": true}`` says "I keep another connection with you instead";
- ``{"t": "sig", "blob": hex}`` carries a sealed signaling envelope (an offer, answer or
  endpoint record for a further connection with the same peer) to :attr:`Connection.on_signal`;
- ``{"t": "file", "id": n, "name": ..., "size": ..., "sha256": ...}``, then the file in
  binary frames of :data:`CHUNK` bytes, then ``{"t": "end", "id": n}``; the receiver
  streams it to disk, checks size and SHA-256, and answers
  ``{"t": "ack", "id": n, "ok": true|false}``. A sender that gives up midway sends
  ``{"t": "abort", "id": n}``; a receiver that cannot store it (disk error) answers
  ``ok: false`` at once and the sender stops.

The receiver's events, in order: :class:`FileStarted` when a file is announced, then
:class:`FileReceived` or :class:`FileAborted` (with the reason). The receiving side of
files, partial files and :func:`clean_partials` live in :mod:`hailing.rtc.files`.
Users see it all in ``docs/connection.md``.

The sender keeps at most :data:`HIGH_WATER` bytes queued in the channel (SCTP flow
control), so no file is ever held in memory. The receiver keeps at most
:data:`MAX_EVENTS` messages and file announcements waiting to be read (plus the end of
the one file being received): beyond that a message or file is refused with
``{"t": "ack", "id": n, "ok": false}`` (counted ``refused_full``), and the sender's
:meth:`Connection.send_text` or :meth:`~Connection.send_file` raises: backpressure,
nothing is acknowledged and then dropped. Anything else on the channel (bad JSON, an
unknown ``t``, a binary frame outside a file, a file larger than announced) is dropped
and counted in :attr:`Connection.stats`.

Cancellation: every wait here uses ``asyncio.timeout`` (Python 3.11's ``asyncio.wait_for``
drops a cancellation that arrives in the same loop iteration as the awaited result), so
cancelling :meth:`Connection.send_file` always raises ``CancelledError`` and tells the peer
(``abort``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    AuthenticationError,
    ConnectionClosed,
    HailingError,
    LocalProtocolError,
    QueryTimeout,
)
from ..identity import Identity, format_contact_id
from ..signaling.envelope import transcript_proof, verify_transcript
from .files import (
    CHUNK,
    MAX_FILE,
    FileAborted,
    FileReceived,
    FileReceiver,
    FileStarted,
    _Garbage,
    check_file,
    clean_partials,
    sha256_file,
)
from .ice import close_peer_connection
from .tracks import Tracks

__all__ = ["ACK_TIMEOUT", "BYE_TIMEOUT", "CHUNK", "CLOSED_HERE", "HIGH_WATER",
           "KEEPALIVE_INTERVAL", "KEEPALIVE_TIMEOUT", "LOST", "MAX_EVENTS", "MAX_FILE",
           "MAX_SIGNAL", "MAX_TEXT", "PEER_HUNG_UP", "PEER_REPLACED",
           "AuthenticationError", "Connection", "ConnectionClosed", "Event", "FileAborted",
           "FileReceived", "FileStarted", "ProgressCallback", "TextMessage", "check_file",
           "check_text", "clean_partials"]

BYE_TIMEOUT = 2.0
HIGH_WATER = 256 * 1024
ACK_TIMEOUT = 30.0
MAX_TEXT = 64 * 1024
MAX_SIGNAL = 4096  # bytes of one signaling envelope carried over the channel
#: Messages and file announcements waiting to be read; more are refused (backpressure).
MAX_EVENTS = 256
#: Seconds between two pings.
KEEPALIVE_INTERVAL = 1.0
#: Seconds of silence (no frame at all) after which the peer is taken for gone.
KEEPALIVE_TIMEOUT = 5.0

#: :attr:`Connection.close_reason` values (besides what :meth:`Connection.close` is given).
CLOSED_HERE = "closed on this side"
PEER_HUNG_UP = "the peer hung up"
PEER_REPLACED = "the peer kept another connection"
LOST = "the connection was lost"


@dataclass(frozen=True)
class TextMessage:
    text: str


Event = TextMessage | FileReceived | FileStarted | FileAborted
#: ``progress(bytes_sent, total)`` for :meth:`Connection.send_file`.
ProgressCallback = Callable[[int, int], object]


# -- local checks (before anything is sent, or even connected) ------------------------------


def check_text(text: str) -> None:
    """Raise :class:`LocalProtocolError` unless ``text`` fits in one message."""
    size = len(text.encode())
    if size > MAX_TEXT:
        raise LocalProtocolError(
            f"a message is at most {MAX_TEXT} bytes ({MAX_TEXT // 1024} KiB); this one is "
            f"{size} bytes: send it as a file")


class Connection:
    """One authenticated WebRTC data channel to ``peer`` (an ed25519 public key).

    ``pc`` and ``channel`` are the aiortc objects, for those who want them. Iterate over
    it (``async for event in conn``) for every :data:`Event`, or :meth:`recv` messages and
    files only. :attr:`close_reason` says why it closed.
    """

    def __init__(
        self,
        pc: Any,
        channel: Any,
        identity: Identity,
        peer: bytes,
        *,
        initiator: bool,
        local_fp: bytes,
        remote_fp: bytes,
        downloads: Path,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        self.pc = pc
        self.channel = channel
        self.identity = identity
        self.peer = peer
        self.initiator = initiator
        self._local_fp = local_fp
        self._remote_fp = remote_fp
        self.downloads = downloads
        #: Seconds between pings; seconds of silence before the peer is taken for gone.
        #: Either may be changed at any time.
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.stats: Counter[str] = Counter()
        self.connect_ms: float | None = None
        #: The way the call was signaled (``dht``, ``contract``, ``ws``, ``channel``), set
        #: by the session that made it.
        self.coupler: str | None = None
        #: None while open; then why it closed (:data:`PEER_HUNG_UP`, :data:`LOST`, ...).
        self.close_reason: str | None = None
        #: True once :meth:`close` hung up from this side (False: the peer or the network).
        self.closed_here = False
        #: Called with (this connection, envelope bytes) for each ``sig`` frame received.
        self.on_signal: Callable[[Connection, bytes], None] | None = None
        #: The media tracks: ``tracks.received`` (the peer's), ``tracks.sent``, ``tracks.next()``.
        self.tracks = Tracks(pc)
        loop = asyncio.get_running_loop()
        self._authenticated = loop.create_future()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 1
        self._files = FileReceiver(downloads, self._events.put_nowait, self._send_json, self.stats)
        self._send_lock = asyncio.Lock()
        self._low = asyncio.Event()
        self._bye = asyncio.Event()
        self._transport_closed = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._closed = False  # no more sending from here (close started or peer gone)
        self._ended = False  # the end was signalled to the waiters (see _on_close)
        self._last_heard = loop.time()
        channel.bufferedAmountLowThreshold = HIGH_WATER // 2
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._low.set)
        channel.on("close", self._on_transport_close)

    @property
    def contact_id(self) -> str:
        return format_contact_id(self.peer)

    @property
    def initiator_key(self) -> bytes:
        """The public key of the side that called (the same on both ends)."""
        return self.identity.public_key if self.initiator else self.peer

    # -- setup -------------------------------------------------------------------------

    async def authenticate(self, timeout: float = 15.0) -> None:
        """Wait for the channel to open, exchange identity proofs; raise if they fail.
        Starts the keepalive."""
        if self.channel.readyState != "open":
            opened = asyncio.Event()
            self.channel.on("open", opened.set)
            if self.channel.readyState != "open":
                try:
                    async with asyncio.timeout(timeout):
                        await opened.wait()
                except TimeoutError:
                    raise QueryTimeout("the data channel did not open") from None
        proof = transcript_proof(self.identity, self._local_fp, self._remote_fp, self.initiator)
        self._send_json({"t": "hello", "proof": proof.hex()})
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._authenticated)
        except TimeoutError:
            raise QueryTimeout("the peer did not prove its identity in time") from None
        self._last_heard = asyncio.get_running_loop().time()
        if self._pinger is None and not self._closed:
            self._pinger = asyncio.ensure_future(self._keepalive())

    @property
    def is_open(self) -> bool:
        """Authenticated and not closed: usable to send."""
        return (not self._closed and self.channel.readyState == "open"
                and self._authenticated.done() and self._authenticated.exception() is None)

    # -- sending -----------------------------------------------------------------------

    def send_signal(self, blob: bytes) -> None:
        """Send a sealed signaling envelope to the peer over this channel (no ack: the
        envelope's own answer is the acknowledgement)."""
        if not isinstance(blob, bytes) or not 0 < len(blob) <= MAX_SIGNAL:
            raise LocalProtocolError(f"a signaling envelope is 1 to {MAX_SIGNAL} bytes")
        if not self.is_open:
            raise self._closed_error()
        self._send_json({"t": "sig", "blob": blob.hex()})

    async def send_text(self, text: str) -> None:
        """Send a text message; returns once the peer acknowledged it."""
        check_text(text)
        self._check_open()
        fid = self._new_id()
        ack = self._expect_ack(fid)
        try:
            async with self._send_lock:
                self._send_json({"t": "msg", "id": fid, "text": text})
        except BaseException:
            self._drop_ack(fid)
            raise
        if (await self._wait_ack(fid, ack)).get("ok") is False:
            raise HailingError("the peer did not take the message: it is not reading "
                               "(too many messages waiting)")

    async def send_file(self, path: str | os.PathLike[str],
                        progress: ProgressCallback | None = None) -> str:
        """Send a file (streamed, flow-controlled); returns its SHA-256 (hex) once the
        peer verified it. ``progress(sent, total)`` is called as bytes go out.

        Cancelling it (or any failure midway) tells the peer, which drops what it got."""
        p = Path(path)
        size = check_file(p)
        self._check_open()
        try:
            digest = await asyncio.to_thread(sha256_file, p)
        except OSError as exc:
            raise LocalProtocolError(f"cannot read {p}: {exc.strerror}") from None
        fid = self._new_id()
        ack = self._expect_ack(fid)
        try:
            async with self._send_lock:
                self._send_json({"t": "file", "id": fid, "name": p.name, "size": size,
                                 "sha256": digest})
                try:
                    await self._stream(p, size, ack, progress)
                except BaseException:
                    if not ack.done():
                        with contextlib.suppress(ConnectionClosed):
                            self._send_json({"t": "abort", "id": fid})
                    raise
                if not ack.done():
                    self._send_json({"t": "end", "id": fid})
        except BaseException:
            self._drop_ack(fid)
            raise
        reply = await self._wait_ack(fid, ack, timeout=ACK_TIMEOUT + size / 1e6)
        if not reply.get("ok"):
            raise HailingError(f"the peer refused the file: {reply.get('error', 'checksum mismatch')}")
        return digest

    async def _stream(self, p: Path, size: int, ack: asyncio.Future[dict[str, Any]],
                      progress: ProgressCallback | None) -> None:
        sent = 0
        with p.open("rb") as f:
            while sent < size:
                await self._drain()
                if ack.done():  # the receiver gave up (or the connection closed)
                    return
                chunk = f.read(min(CHUNK, size - sent))
                if not chunk:
                    raise LocalProtocolError(f"{p} shrank while it was being sent")
                self._send_raw(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)

    async def recv(self) -> TextMessage | FileReceived:
        """The next message or file from the peer (other events are skipped); raises
        :class:`ConnectionClosed` (a HailingError) once closed."""
        while True:
            ev = await self.next_event()
            if isinstance(ev, TextMessage | FileReceived):
                return ev

    async def next_event(self) -> Event:
        """The next event from the peer; raises :class:`ConnectionClosed` once closed."""
        ev = await self._events.get()
        if ev is None:
            self._events.put_nowait(None)
            raise self._closed_error()
        return ev

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.next_event()
            except ConnectionClosed:
                return

    async def close(self, reason: str = CLOSED_HERE, *, replaced: bool = False) -> None:
        """Hang up cleanly: ``bye`` goes after everything sent so far; the peer answers
        ``bye`` once it has read it all, then the transport is closed. Without this,
        closing right after sending an acknowledgement would lose it in flight.
        ``reason`` becomes :attr:`close_reason` (and the reason of a file being received);
        ``replaced`` tells the peer we keep another connection with it."""
        if not self._closed:
            self._closed = True
            self.closed_here = True
            self.close_reason = reason
            # From our bye on, nothing new is taken (the peer learns it was not delivered:
            # no ack): a message is shown once or not at all, never on two connections.
            self._files.stop(f"the connection closed: {reason}")
            if self.channel.readyState == "open" and self._authenticated.done():
                with contextlib.suppress(ConnectionClosed):
                    bye: dict[str, Any] = {"t": "bye", "replaced": True} if replaced else {"t": "bye"}
                    self._send_json(bye)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(BYE_TIMEOUT):
                            await self._bye.wait()
            self._on_close()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop the keepalive, close the transport; wait for a closing task in flight."""
        me = asyncio.current_task()
        if self._pinger is not None and self._pinger is not me:
            self._pinger.cancel()
            await asyncio.gather(self._pinger, return_exceptions=True)
        if self._closer is not None and self._closer is not me:
            await asyncio.gather(self._closer, return_exceptions=True)
        await close_peer_connection(self.pc)

    async def _peer_hung_up(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self._send_json({"t": "bye"})
        self._on_close()
        # The peer closes the transport once our answering bye arrived; give it the time.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BYE_TIMEOUT):
                await self._transport_closed.wait()
        await self._shutdown()

    def _lose(self, reason: str) -> None:
        """The peer is gone without a goodbye: fail every waiter, close the transport."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        self._on_close()
        self._closer = asyncio.ensure_future(self._shutdown())

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            silent = loop.time() - self._last_heard
            if silent >= self.keepalive_timeout:
                self._lose(f"the peer stopped answering (nothing for {silent:.0f} s)")
                return
            with contextlib.suppress(ConnectionClosed):
                self._send_json({"t": "ping"})
            await asyncio.sleep(min(self.keepalive_interval,
                                    max(0.01, self.keepalive_timeout - silent)))

    # -- internals ---------------------------------------------------------------------

    def _new_id(self) -> int:
        fid = self._next_id
        self._next_id += 1
        return fid

    def _expect_ack(self, fid: int) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[fid] = fut
        return fut

    def _drop_ack(self, fid: int) -> None:
        fut = self._acks.pop(fid, None)
        if fut is not None and fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: nobody will await it
        elif fut is not None:
            fut.cancel()

    async def _wait_ack(
        self, fid: int, fut: asyncio.Future[dict[str, Any]], timeout: float = ACK_TIMEOUT
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise QueryTimeout("the peer did not acknowledge in time") from None
        finally:
            self._drop_ack(fid)

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(f"the connection is closed: {self.close_reason or LOST}")

    def _check_open(self) -> None:
        if self._closed or self.channel.readyState != "open":
            raise self._closed_error()

    def _send_raw(self, data: str | bytes) -> None:
        if self.channel.readyState != "open":
            raise self._closed_error()
        try:
            self.channel.send(data)
        except Exception:  # aiortc's InvalidStateError: the transport closed under us
            raise self._closed_error() from None

    def _send_json(self, obj: dict[str, Any]) -> None:
        self._send_raw(json.dumps(obj, separators=(",", ":")))

    async def _drain(self) -> None:
        while self.channel.bufferedAmount > HIGH_WATER:
            self._check_open()
            self._low.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._low.wait()
        self._check_open()

    def _on_transport_close(self) -> None:
        self._transport_closed.set()
        if not self._closed:
            self._closed = True
            self.close_reason = LOST
        self._on_close()

    def _on_close(self) -> None:
        """Signal the end to everyone waiting (once): the file being received is aborted,
        acks fail, the event stream ends, the drain wakes up."""
        if self._ended:
            return
        self._ended = True
        reason = self.close_reason or LOST
        self._files.abort(f"the connection closed: {reason}")
        err = self._closed_error()
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved here: a sender may never await it
        if not self._authenticated.done():
            self._authenticated.set_exception(err)
            self._authenticated.exception()
        self._low.set()
        self._events.put_nowait(None)
        self.tracks.end(reason)

    def _on_message(self, data: str | bytes) -> None:
        self._last_heard = asyncio.get_running_loop().time()
        try:
            if isinstance(data, bytes):
                self._on_chunk(data)
            else:
                self._on_control(data)
        except _Garbage as exc:
            self.stats["garbage"] += 1
            self.stats["garbage_" + exc.reason] += 1
        except ConnectionClosed:
            pass  # an answer to a frame that arrived as we closed

    def _on_chunk(self, data: bytes) -> None:
        if not self._authenticated.done():
            raise _Garbage("stray_binary")
        self._files.chunk(data)

    def _on_control(self, text: str) -> None:
        if len(text) > 2 * MAX_TEXT:
            raise _Garbage("oversized")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):  # deep nesting ("[[[[..."): found by fuzzing
            raise _Garbage("json") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
            raise _Garbage("shape")
        t = msg["t"]
        if t == "hello":
            self._on_hello(msg.get("proof"))
            return
        if not self._authenticated.done() or self._authenticated.exception() is not None:
            raise _Garbage("unauthenticated")
        if t == "ping":
            if not self._closed:
                self._send_json({"t": "pong"})
            return
        if t == "pong":
            return
        if t == "sig":
            self._on_signal(msg.get("blob"))
            return
        if t == "bye":
            self._bye.set()
            if not self._closed:
                self._closed = True
                self.close_reason = PEER_REPLACED if msg.get("replaced") is True else PEER_HUNG_UP
                self._closer = asyncio.ensure_future(self._peer_hung_up())
            return
        fid = msg.get("id")
        if not isinstance(fid, int):
            raise _Garbage("shape")
        if self.closed_here and t != "ack":  # crossed our bye: not taken, not acknowledged
            self.stats["after_bye"] += 1
            return
        if t == "ack":
            fut = self._acks.get(fid)
            if fut is None or fut.done():
                raise _Garbage("unexpected_ack")
            fut.set_result(msg)
        elif t in ("msg", "file") and self._events.qsize() >= MAX_EVENTS:
            self._files.refuse(fid, "too many messages waiting", file=t == "file")
        elif t == "msg":
            body: object = msg.get("text")
            if not isinstance(body, str):
                raise _Garbage("shape")
            self._events.put_nowait(TextMessage(body))
            self._send_json({"t": "ack", "id": fid})
        elif t == "file":
            self._files.start(fid, msg)
        elif t == "end":
            self._files.end(fid)
        elif t == "abort":
            self._files.sender_aborted(fid)
        else:
            raise _Garbage("unknown_type")

    def _on_hello(self, proof: object) -> None:
        try:
            raw = bytes.fromhex(proof) if isinstance(proof, str) else b""
        except ValueError:
            raw = b""
        ok = verify_transcript(self.peer, raw, self._local_fp, self._remote_fp, self.initiator)
        if not self._authenticated.done():
            if ok:
                self._authenticated.set_result(None)
            else:
                self._authenticated.set_exception(
                    AuthenticationError("the peer's identity proof does not verify")
                )
                self._authenticated.exception()

    def _on_signal(self, hexblob: object) -> None:
        if not isinstance(hexblob, str) or not 0 < len(hexblob) <= 2 * MAX_SIGNAL:
            raise _Garbage("signal")
        try:
            blob = bytes.fromhex(hexblob)
        except ValueError:
            raise _Garbage("signal") from None
        if self.on_signal is None:
            raise _Garbage("unexpected_signal")
        self.stats["signals"] += 1
        self.on_signal(self, blob)
