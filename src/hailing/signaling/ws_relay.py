"""The centralized baseline: a minimal WebSocket signaling relay, PeerJS-style (aiohttp).

Theory of operation
-------------------
A client opens ``ws://HOST:PORT/ws?id=ID`` where ID is 1-128 characters of
``[A-Za-z0-9_-]`` (a contact id fits). A second connection with the same id replaces the
first, which is closed with code 4001. The relay forwards opaque bytes between ids and
never looks inside a payload (payloads are sealed envelopes). Every frame is binary::

    client -> relay   to_len (1 byte, 1-128) | to_id (ASCII) | payload (0-65536 bytes)
    relay -> client   from_len (1-128) | from_id | payload          a delivery
    relay -> client   0x00 | status (1 byte) [| id_len | id]        a status

Ids are never empty, so a first byte of 0x00 marks a status. The relay answers every
well-formed frame with exactly one status, in order: 0x00 delivered (queued on the
recipient's connection; not an end-to-end acknowledgement), 0x01 + id recipient offline,
0x02 rate limited (dropped), 0x03 + id recipient congested (its queue is full; dropped).
:meth:`RelayClient.send` waits for that status (one round trip to the relay, pipelined
across concurrent senders) so a sender learns at once that its recipient is offline.

Bounds: payload <= 64 KiB (close 1009), a token bucket per connection (default 200
messages/s; a client that sends another burst's worth while refused is closed with 1008),
at most ``max_clients`` connections (HTTP 503), a bounded queue per recipient. A bad frame
(empty, id length out of range or past the frame's end, id characters outside the set) is
counted in :attr:`RelayServer.stats` and closes the connection with 1008 and a reason;
text frames close it with 1003. A bad ``id`` in the URL is refused with HTTP 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Self

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import LocalProtocolError, RecipientOffline, RelayError

__all__ = [
    "MAX_ID_LEN", "MAX_PAYLOAD", "RecipientOffline", "RelayClient", "RelayError",
    "RelayServer", "RelayStats", "serve_relay",
]  # fmt: skip

MAX_ID_LEN = 128
MAX_PAYLOAD = 64 * 1024
MAX_FRAME = 1 + MAX_ID_LEN + MAX_PAYLOAD
STATUS_DELIVERED, STATUS_OFFLINE, STATUS_RATE_LIMITED, STATUS_CONGESTED = 0, 1, 2, 3
REASON_HEADER = "X-Relay-Refused"  # why a handshake was refused (HTTP 400 or 503)
CLOSE_TIMEOUT = 2.0  # seconds a close handshake may take before the connection is dropped
CLOSE_REPLACED = 4001  # private-use close code (RFC 6455 section 7.4.2)
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_ID_BYTES_RE = re.compile(rb"[A-Za-z0-9_-]{1,128}")


def _valid_id(text: object) -> bool:
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def _status(code: int, who: bytes = b"") -> bytes:
    return bytes((0, code, len(who))) + who if who else bytes((0, code))


@dataclass(slots=True)
class RelayStats:
    """Counters of a :class:`RelayServer` (never reset)."""

    connections: int = 0  # accepted WebSocket connections
    replaced: int = 0  # connections closed because the same id connected again
    forwarded: int = 0  # messages queued for a connected recipient
    offline: int = 0  # messages whose recipient was not connected
    congested: int = 0  # messages dropped: the recipient's queue was full
    rate_limited: int = 0  # messages refused by the token bucket
    bad_frames: int = 0  # malformed frames (each closed its connection with 1008)
    oversized: int = 0  # frames over the size limit (closed with 1009)
    text_frames: int = 0  # text frames (closed with 1003)
    bad_handshakes: int = 0  # bad or missing id, not a WebSocket upgrade (HTTP 400)
    refused_full: int = 0  # connections refused at max_clients (HTTP 503)


class _Peer:
    """One connection: a writer task owns sending, the request handler reads, and a
    closer task (started by :meth:`close_soon`, from any task, once) closes it. Closing
    runs in its own task because cancelling a writer stuck on a peer that reads nothing
    cancels aiohttp's shared drain future, so the close that follows raises
    CancelledError (aiohttp then drops the connection, which is right for such a peer)."""

    def __init__(self, cid: str, ws: web.WebSocketResponse, outbox: int, burst: float) -> None:
        self.header, self.ws = bytes((len(cid),)) + cid.encode("ascii"), ws
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(outbox)
        self.writer: asyncio.Task[None] | None = None
        self.tokens, self.stamp, self.strikes = burst, time.monotonic(), 0
        self.closing = False
        self.close_args = (int(WSCloseCode.OK), "")
        self.closer: asyncio.Task[None] | None = None

    async def write_loop(self) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while True:
                await self.ws.send_bytes(await self.outbox.get())

    def close_soon(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing, self.close_args = True, (code, reason)
            if self.ws.prepared:  # else the handler calls again right after the handshake
                self.closer = asyncio.create_task(self._close())

    async def closed(self) -> None:
        if self.closer is not None:
            await asyncio.wait([self.closer])
            if not self.closer.cancelled():
                self.closer.result()  # a bug surfaces here rather than vanishing

    async def _close(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
        while not self.outbox.empty():  # wakes a handler blocked on a full outbox
            self.outbox.get_nowait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self.writer is not None:
                    await asyncio.wait([self.writer])
                await self.ws.close(code=self.close_args[0], message=self.close_args[1].encode())


class RelayServer:
    """The relay. ``async with RelayServer() as server: ... server.url``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, max_clients: int = 10_000,
        rate: float = 200.0, burst: float = 200.0, outbox_frames: int = 64,
        heartbeat: float | None = 30.0,
    ) -> None:  # fmt: skip
        if max_clients < 1 or rate <= 0 or burst < 1 or outbox_frames < 1:
            raise LocalProtocolError("max_clients, rate, burst and outbox_frames must be positive")
        self.host, self.port = host, port
        self.max_clients, self.rate, self.burst = max_clients, rate, burst
        self.outbox_frames, self.heartbeat = outbox_frames, heartbeat
        self.stats = RelayStats()
        self._peers: dict[str, _Peer] = {}
        self._active, self._closing = 0, False
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/ws`` with the port actually bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/ws"

    @property
    def clients(self) -> int:
        """Ids with a connection."""
        return len(self._peers)

    @property
    def open_connections(self) -> int:
        """Connections whose handler still runs (handshaking, open or closing)."""
        return self._active

    async def start(self) -> None:
        if self._runner is not None:
            raise LocalProtocolError("relay already started")
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise RelayError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = int(runner.addresses[0][1])
        self._runner, self._closing = runner, False

    async def stop(self) -> None:
        """Close every client (1001 going away), then the listening socket. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        peers = list(self._peers.values())
        for p in peers:
            p.close_soon(WSCloseCode.GOING_AWAY, "relay shutting down")
        await asyncio.gather(*(p.closed() for p in peers))
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _refuse(self, status: int, reason: str) -> web.Response:
        return web.Response(status=status, text=reason + "\n", headers={REASON_HEADER: reason})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ids = request.query.getall("id", [])
        ws: web.WebSocketResponse = web.WebSocketResponse(
            max_msg_size=MAX_FRAME, compress=False, heartbeat=self.heartbeat, timeout=CLOSE_TIMEOUT
        )
        if len(ids) != 1 or not _valid_id(ids[0]) or not ws.can_prepare(request).ok:
            self.stats.bad_handshakes += 1
            return self._refuse(400, "invalid id (1-128 of A-Z a-z 0-9 _ -) or not a WebSocket")
        cid = ids[0]
        if self._closing:
            return self._refuse(503, "relay shutting down")
        if self._active >= self.max_clients and cid not in self._peers:
            self.stats.refused_full += 1
            return self._refuse(503, "relay full")
        # Registered before the handshake completes, so a message sent to this id as soon
        # as the client sees the 101 answer is queued rather than reported offline.
        peer = _Peer(cid, ws, self.outbox_frames, self.burst)
        old = self._peers.get(cid)
        self._peers[cid] = peer
        self._active += 1
        try:
            await ws.prepare(request)
            self.stats.connections += 1
            if peer.closing:  # stop() or a newer connection came during the handshake
                peer.closing = False
                peer.close_soon(*peer.close_args)
                return ws
            peer.writer = asyncio.create_task(peer.write_loop())
            if old is not None:
                self.stats.replaced += 1
                old.close_soon(CLOSE_REPLACED, "replaced by a newer connection with this id")
            await self._read_loop(peer)
        finally:
            if self._peers.get(cid) is peer:
                del self._peers[cid]
            try:
                if ws.prepared:
                    peer.close_soon(WSCloseCode.OK, "")
                    await peer.closed()
            finally:
                self._active -= 1
        return ws

    async def _read_loop(self, peer: _Peer) -> None:
        ws = peer.ws
        while not peer.closing:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                await self._on_frame(peer, msg.data)
            elif msg.type is WSMsgType.TEXT:
                self.stats.text_frames += 1
                peer.close_soon(WSCloseCode.UNSUPPORTED_DATA, "text frames are not supported")
            else:  # CLOSE, CLOSING, CLOSED; or ERROR, and aiohttp has closed it (1009: too big)
                if msg.type is WSMsgType.ERROR:
                    too_big = getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                    self.stats.oversized += too_big
                    self.stats.bad_frames += not too_big
                return

    def _bad(self, peer: _Peer, reason: str) -> None:
        self.stats.bad_frames += 1
        peer.close_soon(WSCloseCode.POLICY_VIOLATION, f"bad frame: {reason}")

    async def _on_frame(self, peer: _Peer, frame: bytes) -> None:
        if not frame:
            return self._bad(peer, "empty")
        n = frame[0]
        if not 1 <= n <= MAX_ID_LEN:
            return self._bad(peer, f"recipient id length {n} is not 1-{MAX_ID_LEN}")
        if len(frame) < 1 + n:
            return self._bad(peer, "recipient id runs past the end of the frame")
        to = frame[1 : 1 + n]
        if _ID_BYTES_RE.fullmatch(to) is None:
            return self._bad(peer, "recipient id has characters outside A-Z a-z 0-9 _ -")
        size = len(frame) - 1 - n
        if size > MAX_PAYLOAD:
            self.stats.oversized += 1
            reason = f"payload of {size} bytes exceeds {MAX_PAYLOAD}"
            return peer.close_soon(WSCloseCode.MESSAGE_TOO_BIG, reason)
        now = time.monotonic()
        peer.tokens = min(self.burst, peer.tokens + (now - peer.stamp) * self.rate)
        peer.stamp = now
        if peer.tokens < 1:
            self.stats.rate_limited += 1
            peer.strikes += 1
            if peer.strikes > self.burst:
                return peer.close_soon(WSCloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return await peer.outbox.put(_status(STATUS_RATE_LIMITED))
        peer.tokens -= 1
        peer.strikes = 0
        target = self._peers.get(to.decode("ascii"))
        if target is None or target.closing:
            self.stats.offline += 1
            return await peer.outbox.put(_status(STATUS_OFFLINE, to))
        try:
            target.outbox.put_nowait(peer.header + frame[1 + n :])
        except asyncio.QueueFull:
            self.stats.congested += 1
            return await peer.outbox.put(_status(STATUS_CONGESTED, to))
        self.stats.forwarded += 1
        await peer.outbox.put(_status(STATUS_DELIVERED))


async def serve_relay(bind: tuple[str, int]) -> None:
    """Run a relay on ``bind`` until cancelled. First line on stdout:
    ``relay listening on ws://HOST:PORT/ws``."""
    async with RelayServer(bind[0], bind[1]) as server:
        print(f"relay listening on {server.url}", flush=True)
        await asyncio.get_running_loop().create_future()


_Item = tuple[str, bytes]
_REFUSED = {
    STATUS_RATE_LIMITED: "relay dropped the message: sending too fast (rate limit)",
    STATUS_CONGESTED: "relay dropped the message: recipient {} is not reading",
}


class RelayClient:
    """A connection to a :class:`RelayServer` under the id ``my_id``.

    ``send`` waits for the relay's status and raises :class:`RecipientOffline` or
    :class:`RelayError`; ``recv`` (or ``async for sender, payload in client``) returns the
    next message. The application must keep receiving: when ``inbox_size`` messages wait
    unread, the client stops reading the socket and the relay reports it congested.
    Iteration ends after :meth:`close`; a connection closed by the relay raises
    :class:`RelayError` with the relay's close code and reason. Frames from the relay
    that make no sense are dropped and counted in :attr:`dropped`."""

    def __init__(self, url: str, my_id: str, *, timeout: float = 10.0, inbox_size: int = 1024) -> None:
        if not _valid_id(my_id):
            raise LocalProtocolError(f"invalid relay id {my_id!r}: use 1-128 of A-Z a-z 0-9 _ -")
        self.url, self.my_id, self.timeout, self.inbox_size = url, my_id, timeout, inbox_size
        self.dropped, self.close_reason = 0, ""  # garbage frames from the relay; its close reason
        self.close_code: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[tuple[int, str]]] = deque()
        self._inbox: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._end: RelayError | None = None
        self._closed_locally = False

    async def connect(self) -> None:
        if self._session is not None:
            raise LocalProtocolError("relay client already connected")
        session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.timeout):
                ws = await session.ws_connect(self.url, params={"id": self.my_id}, max_msg_size=MAX_FRAME)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            await session.close()
            if isinstance(exc, aiohttp.WSServerHandshakeError):
                why = exc.headers.get(REASON_HEADER, exc.message) if exc.headers else exc.message
                raise RelayError(f"relay refused the connection: HTTP {exc.status} {why}") from None
            raise RelayError(f"cannot connect to relay {self.url}: {exc or type(exc).__name__}") from None
        self._session, self._ws = session, ws
        self._reader = asyncio.create_task(self._read_loop(ws))

    async def close(self) -> None:
        """Close the connection; pending sends fail and iteration ends. Idempotent."""
        self._closed_locally = True
        if self._ws is not None:
            with contextlib.suppress(TimeoutError):  # a relay that reads nothing is dropped
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._ws.close()
        self._room.set()
        if self._reader is not None:
            await self._reader
        if self._session is not None:
            await self._session.close()
        self._inbox.put_nowait(None)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, to_id: str, payload: bytes) -> None:
        """Send ``payload`` to ``to_id``; return once the relay queued it for a connected
        recipient (one round trip). Raises :class:`RecipientOffline` or :class:`RelayError`."""
        if not _valid_id(to_id):
            raise LocalProtocolError(f"invalid recipient id {to_id!r}: use 1-128 of A-Z a-z 0-9 _ -")
        if len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        ws, to = self._ws, to_id.encode("ascii")
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        async with self._send_lock:  # statuses come back in the order frames went out
            if self._end is not None:
                raise self._end
            if ws is None or self._closed_locally:
                raise RelayError("relay client is not connected")
            self._pending.append(fut)
            try:
                await ws.send_bytes(bytes((len(to),)) + to + bytes(payload))
            except (ConnectionError, aiohttp.ClientError) as exc:
                fut.cancel()
                raise RelayError(f"relay connection lost: {exc}") from None
        try:
            async with asyncio.timeout(self.timeout):
                code, who = await fut
        except TimeoutError:
            raise RelayError(f"no status from the relay within {self.timeout:g} s") from None
        if code == STATUS_OFFLINE:
            raise RecipientOffline(f"recipient {who or to_id} is not connected to the relay")
        if code != STATUS_DELIVERED:
            why = _REFUSED.get(code, f"relay answered with unknown status {code}")
            raise RelayError(why.format(to_id))

    async def recv(self) -> tuple[str, bytes]:
        """The next ``(sender id, payload)``. Raises :class:`RelayError` once closed."""
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later call sees the end too
            raise self._end or RelayError("relay client is closed")
        if self._inbox.qsize() < self.inbox_size:
            self._room.set()
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        try:
            return await self.recv()
        except RelayError:
            if self._closed_locally:
                raise StopAsyncIteration from None
            raise

    def _on_frame(self, frame: bytes) -> None:
        if len(frame) >= 2 and frame[0] == 0:
            who = frame[3 : 3 + frame[2]] if len(frame) >= 3 else b""
            if not self._pending or (who and _ID_BYTES_RE.fullmatch(who) is None):
                self.dropped += 1
                return
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_result((frame[1], who.decode("ascii")))
            return
        n = frame[0] if frame else 0
        sender = frame[1 : 1 + n]
        if n == 0 or len(sender) != n or _ID_BYTES_RE.fullmatch(sender) is None:
            self.dropped += 1
            return
        self._inbox.put_nowait((sender.decode("ascii"), frame[1 + n :]))

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while not self._closed_locally:
                if self._inbox.qsize() >= self.inbox_size:
                    self._room.clear()
                    await self._room.wait()
                    continue
                msg = await ws.receive()
                if msg.type is WSMsgType.BINARY:
                    self._on_frame(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    self.dropped += 1
                else:
                    if msg.type is WSMsgType.CLOSE:
                        self.close_reason = str(msg.extra or "")
                    break
        finally:
            self.close_code = ws.close_code
            why = f"{self.close_code} {self.close_reason}".strip() if self.close_code else "lost"
            self._end = RelayError(f"relay closed the connection ({why})")
            if self._closed_locally:
                self._end = RelayError("relay client is closed")
            while self._pending:
                fut = self._pending.popleft()
                if not fut.done():
                    fut.set_exception(self._end)
            self._inbox.put_nowait(None)
