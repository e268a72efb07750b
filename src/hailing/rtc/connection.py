"""An authenticated data-channel connection to one peer: text messages and files.

Theory of operation
-------------------
Both sides first send ``hello`` with their :func:`~hailing.signaling.envelope.transcript_proof`
over the just-opened channel and check the other's: the DTLS fingerprints of *this*
session, signed by the identity the envelope named. Nothing else is accepted before.

Then, in text frames (JSON objects with a ``t`` field):

- ``{"t": "msg", "id": n, "text": ...}`` answered by ``{"t": "ack", "id": n}``;
- ``{"t": "bye"}`` hangs up; the peer answers ``bye`` (see :meth:`Connection.close`);
- ``{"t": "sig", "blob": hex}`` carries a sealed signaling envelope (an offer, answer or
  endpoint record for a further connection with the same peer) to :attr:`Connection.on_signal`;
- ``{"t": "file", "id": n, "name": ..., "size": ..., "sha256": ...}``, then the file in
  binary frames of :data:`CHUNK` bytes, then ``{"t": "end", "id": n}``; the receiver
  streams it to disk, checks size and SHA-256, and answers
  ``{"t": "ack", "id": n, "ok": true|false}``.

The sender keeps at most :data:`HIGH_WATER` bytes queued in the channel (SCTP flow
control), so no file is ever held in memory. Anything else on the channel (bad JSON, an
unknown ``t``, a binary frame outside a file, a file larger than announced) is dropped
and counted in :attr:`Connection.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AuthenticationError, HailingError, LocalProtocolError, QueryTimeout
from ..identity import Identity, format_contact_id
from ..signaling.envelope import transcript_proof, verify_transcript

CHUNK = 16 * 1024
BYE_TIMEOUT = 2.0
HIGH_WATER = 256 * 1024
ACK_TIMEOUT = 30.0
MAX_TEXT = 64 * 1024
MAX_FILE = 8 * 1024**3
MAX_SIGNAL = 4096  # bytes of one signaling envelope carried over the channel
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")


@dataclass(frozen=True)
class TextMessage:
    text: str


@dataclass(frozen=True)
class FileReceived:
    name: str
    path: Path
    size: int
    sha256: str


class _Incoming:
    __slots__ = ("expected", "fid", "hasher", "name", "partial", "received", "sha256", "stream")

    def __init__(self, fid: int, name: str, size: int, sha256: str, partial: Path) -> None:
        self.fid = fid
        self.name = name
        self.expected = size
        self.sha256 = sha256
        self.partial = partial
        self.stream = partial.open("wb")
        self.hasher = hashlib.sha256()
        self.received = 0


class Connection:
    """One authenticated WebRTC data channel to ``peer`` (an ed25519 public key).

    ``pc`` and ``channel`` are the aiortc objects, for those who want them.
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
    ) -> None:
        self.pc = pc
        self.channel = channel
        self.identity = identity
        self.peer = peer
        self.initiator = initiator
        self._local_fp = local_fp
        self._remote_fp = remote_fp
        self.downloads = downloads
        self.stats: Counter[str] = Counter()
        self.connect_ms: float | None = None
        #: The way the call was signaled (``dht``, ``contract``, ``ws``, ``channel``), set
        #: by the session that made it.
        self.coupler: str | None = None
        #: Called with (this connection, envelope bytes) for each ``sig`` frame received.
        self.on_signal: Callable[[Connection, bytes], None] | None = None
        self._authenticated = asyncio.get_running_loop().create_future()
        self._events: asyncio.Queue[TextMessage | FileReceived | None] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 1
        self._incoming: _Incoming | None = None
        self._send_lock = asyncio.Lock()
        self._low = asyncio.Event()
        self._bye = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None
        self._closed = False
        channel.bufferedAmountLowThreshold = HIGH_WATER // 2
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._low.set)
        channel.on("close", self._on_close)

    @property
    def contact_id(self) -> str:
        return format_contact_id(self.peer)

    # -- setup -------------------------------------------------------------------------

    async def authenticate(self, timeout: float = 15.0) -> None:
        """Wait for the channel to open, exchange identity proofs; raise if they fail."""
        if self.channel.readyState != "open":
            opened = asyncio.Event()
            self.channel.on("open", opened.set)
            if self.channel.readyState != "open":
                try:
                    await asyncio.wait_for(opened.wait(), timeout)
                except TimeoutError:
                    raise QueryTimeout("the data channel did not open") from None
        proof = transcript_proof(self.identity, self._local_fp, self._remote_fp, self.initiator)
        self.channel.send(json.dumps({"t": "hello", "proof": proof.hex()}))
        try:
            await asyncio.wait_for(asyncio.shield(self._authenticated), timeout)
        except TimeoutError:
            raise QueryTimeout("the peer did not prove its identity in time") from None

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
            raise HailingError("the connection is closed")
        self._send_json({"t": "sig", "blob": blob.hex()})

    async def send_text(self, text: str) -> None:
        """Send a text message; returns once the peer acknowledged it."""
        if len(text.encode()) > MAX_TEXT:
            raise LocalProtocolError(f"a message is at most {MAX_TEXT} bytes")
        fid = self._new_id()
        ack = self._expect_ack(fid)
        async with self._send_lock:
            self._send_json({"t": "msg", "id": fid, "text": text})
        await self._wait_ack(fid, ack)

    async def send_file(self, path: str | os.PathLike[str]) -> str:
        """Send a file (streamed, flow-controlled); returns its SHA-256 (hex) once the
        peer verified it."""
        p = Path(path)
        try:
            size = p.stat().st_size
            digest = await asyncio.to_thread(_sha256_file, p)
        except OSError as exc:
            raise LocalProtocolError(f"cannot read {p}: {exc.strerror}") from None
        fid = self._new_id()
        ack = self._expect_ack(fid)
        async with self._send_lock:
            self._send_json({"t": "file", "id": fid, "name": p.name, "size": size, "sha256": digest})
            with p.open("rb") as f:
                while chunk := f.read(CHUNK):
                    await self._drain()
                    self.channel.send(chunk)
            self._send_json({"t": "end", "id": fid})
        reply = await self._wait_ack(fid, ack, timeout=ACK_TIMEOUT + size / 1e6)
        if not reply.get("ok"):
            raise HailingError(f"the peer refused the file: {reply.get('error', 'checksum mismatch')}")
        return digest

    async def recv(self) -> TextMessage | FileReceived:
        """The next message or file from the peer; raises HailingError once closed."""
        ev = await self._events.get()
        if ev is None:
            self._events.put_nowait(None)
            raise HailingError("the connection is closed")
        return ev

    async def __aiter__(self) -> AsyncIterator[TextMessage | FileReceived]:
        while True:
            try:
                yield await self.recv()
            except HailingError:
                return

    async def close(self) -> None:
        """Hang up cleanly: ``bye`` goes after everything sent so far; the peer answers
        ``bye`` once it has read it all, then the transport is closed. Without this,
        closing right after sending an acknowledgement would lose it in flight."""
        if self._closed:
            return
        self._closed = True
        if self.channel.readyState == "open" and self._authenticated.done():
            with contextlib.suppress(Exception):
                self.channel.send('{"t":"bye"}')
                await asyncio.wait_for(self._bye.wait(), BYE_TIMEOUT)
        self._on_close()
        with contextlib.suppress(Exception):
            await self.pc.close()

    async def _peer_hung_up(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self.channel.send('{"t":"bye"}')
        self._on_close()
        # Give the reply time to leave; the caller closes the transport on receiving it.
        await asyncio.sleep(BYE_TIMEOUT)
        with contextlib.suppress(Exception):
            await self.pc.close()

    # -- internals ---------------------------------------------------------------------

    def _new_id(self) -> int:
        fid = self._next_id
        self._next_id += 1
        return fid

    def _expect_ack(self, fid: int) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[fid] = fut
        return fut

    async def _wait_ack(
        self, fid: int, fut: asyncio.Future[dict[str, Any]], timeout: float = ACK_TIMEOUT
    ) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise QueryTimeout("the peer did not acknowledge in time") from None
        finally:
            self._acks.pop(fid, None)

    def _send_json(self, obj: dict[str, Any]) -> None:
        if self.channel.readyState != "open":
            raise HailingError("the connection is closed")
        self.channel.send(json.dumps(obj, separators=(",", ":")))

    async def _drain(self) -> None:
        while self.channel.bufferedAmount > HIGH_WATER:
            if self.channel.readyState != "open":
                raise HailingError("the connection closed during the transfer")
            self._low.clear()
            try:
                await asyncio.wait_for(self._low.wait(), 1.0)
            except TimeoutError:
                continue

    def _on_close(self) -> None:
        if self._incoming is not None:
            self._abort_file("connection closed")
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(HailingError("the connection closed"))
        if not self._authenticated.done():
            self._authenticated.set_exception(HailingError("the connection closed"))
            self._authenticated.exception()
        self._events.put_nowait(None)

    def _on_message(self, data: str | bytes) -> None:
        try:
            if isinstance(data, bytes):
                self._on_chunk(data)
            else:
                self._on_control(data)
        except _Garbage as exc:
            self.stats["garbage"] += 1
            self.stats["garbage_" + exc.reason] += 1

    def _on_control(self, text: str) -> None:
        if len(text) > 2 * MAX_TEXT:
            raise _Garbage("oversized")
        try:
            msg = json.loads(text)
        except ValueError:
            raise _Garbage("json") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
            raise _Garbage("shape")
        t = msg["t"]
        if t == "hello":
            proof = msg.get("proof")
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
            return
        if not self._authenticated.done() or self._authenticated.exception() is not None:
            raise _Garbage("unauthenticated")
        if t == "sig":
            self._on_signal(msg.get("blob"))
            return
        if t == "bye":
            self._bye.set()
            if not self._closed:
                self._closer = asyncio.ensure_future(self._peer_hung_up())
            return
        fid = msg.get("id")
        if not isinstance(fid, int):
            raise _Garbage("shape")
        if t == "ack":
            fut = self._acks.get(fid)
            if fut is None or fut.done():
                raise _Garbage("unexpected_ack")
            fut.set_result(msg)
        elif t == "msg":
            body: object = msg.get("text")
            if not isinstance(body, str):
                raise _Garbage("shape")
            self._events.put_nowait(TextMessage(body))
            self._send_json({"t": "ack", "id": fid})
        elif t == "file":
            self._start_file(fid, msg)
        elif t == "end":
            self._end_file(fid)
        else:
            raise _Garbage("unknown_type")

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

    def _start_file(self, fid: int, msg: dict[str, Any]) -> None:
        name: object = msg.get("name")
        size: object = msg.get("size")
        sha: object = msg.get("sha256")
        if (
            not isinstance(name, str) or not isinstance(size, int) or not isinstance(sha, str)
            or not 0 <= size <= MAX_FILE or not re.fullmatch(r"[0-9a-f]{64}", sha)
        ):
            raise _Garbage("shape")
        if self._incoming is not None:
            self._abort_file("a new file started")
        self.downloads.mkdir(parents=True, exist_ok=True)
        partial = self.downloads / f".partial-{os.getpid()}-{fid}-{time.monotonic_ns()}"
        self._incoming = _Incoming(fid, _safe_name(name), size, sha, partial)

    def _on_chunk(self, data: bytes) -> None:
        inc = self._incoming
        if inc is None or not self._authenticated.done():
            raise _Garbage("stray_binary")
        inc.received += len(data)
        if inc.received > inc.expected:
            self._abort_file("more data than announced")
            raise _Garbage("oversized_file")
        inc.hasher.update(data)
        inc.stream.write(data)

    def _end_file(self, fid: int) -> None:
        inc = self._incoming
        if inc is None or inc.fid != fid:
            raise _Garbage("stray_end")
        self._incoming = None
        inc.stream.close()
        digest = inc.hasher.hexdigest()
        if inc.received != inc.expected or digest != inc.sha256:
            inc.partial.unlink(missing_ok=True)
            self.stats["files_rejected"] += 1
            self._send_json({"t": "ack", "id": fid, "ok": False, "error": "size or SHA-256 mismatch"})
            return
        final = _unique(self.downloads / inc.name)
        inc.partial.rename(final)
        self._events.put_nowait(FileReceived(inc.name, final, inc.received, digest))
        self._send_json({"t": "ack", "id": fid, "ok": True, "sha256": digest})

    def _abort_file(self, why: str) -> None:
        inc = self._incoming
        self._incoming = None
        if inc is not None:
            inc.stream.close()
            inc.partial.unlink(missing_ok=True)
            self.stats["files_aborted"] += 1


class _Garbage(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _safe_name(name: str) -> str:
    base = _SAFE_NAME.sub("_", os.path.basename(name.replace("\\", "/")))[:128].strip(". ")
    return base or "file"


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem} ({i}){path.suffix}")
        if not candidate.exists():
            return candidate
    raise HailingError(f"too many files named {path.name}")
