"""``hailing chat CONTACT``: an interactive chat, from either side or both at once.

Theory of operation
-------------------
A chat both calls the contact and takes the contact's calls (the :class:`Peer` answers
contacts anyway), so two people can each run ``hailing chat`` with the other, in any order,
or one can ``listen``. When both calls connect ("glare"), both ends keep the same one
without talking about it: **the connection called by the larger public key wins**
(:func:`preferred`). Each end closes the other connection with ``bye`` marked
``replaced``, so the peer does not take it for a hang-up; messages already in flight on
it still arrive (the channel is ordered and ``bye`` comes last). A message that could
not go because its connection was being replaced is sent again on the one kept.

When the last connection ends, the chat says so (``<name> left`` for a hang-up) and
exits 0. Typing ``/quit`` or end of input hangs up and exits 0; Ctrl-C hangs up, prints
one line and exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from ..errors import ConnectionClosed, HailingError
from ..rtc.connection import (
    PEER_HUNG_UP,
    PEER_REPLACED,
    Connection,
    Event,
    FileAborted,
    FileReceived,
    FileStarted,
    TextMessage,
    check_file,
)

#: How long a chat waits for the connection its peer kept, once told "replaced".
REPLACED_WAIT = 10.0
#: The close reason of a connection this end dropped for a better one.
REPLACED_HERE = "replaced by another connection"


def preferred(a: Connection, b: Connection) -> Connection:
    """The connection both ends keep: the one whose caller has the larger public key
    (on a tie, ``a``, the one already in use)."""
    return b if b.initiator_key > a.initiator_key else a


class Links:
    """The live connections with one contact and the one in use (``current``)."""

    def __init__(self) -> None:
        self.live: list[Connection] = []
        self.current: Connection | None = None
        self.changed = asyncio.Event()
        self.ever = False

    def adopt(self, conn: Connection) -> Connection | None:
        """Add ``conn``; return the connection that lost (to close), if any."""
        self.live.append(conn)
        self.ever = True
        if self.current is None:
            self._set(conn)
            return None
        keep = preferred(self.current, conn)
        loser = conn if keep is self.current else self.current
        self._set(keep)
        return loser

    def drop(self, conn: Connection) -> None:
        if conn in self.live:
            self.live.remove(conn)
        if self.current is conn:
            best: Connection | None = None
            for c in self.live:
                if c.is_open:
                    best = c if best is None else preferred(best, c)
            self._set(best)

    def _set(self, conn: Connection | None) -> None:
        self.current = conn
        self.changed.set()
        self.changed = asyncio.Event()


class Chat:
    """One chat session with ``contact`` over ``peer`` (a started Peer)."""

    def __init__(self, peer: Any, contact: bytes, name: str, timeout: float,
                 progress: Callable[[str], None], progress_done: Callable[[], None],
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.peer = peer
        self.contact = contact
        self.name = name
        self.timeout = timeout
        self.links = Links()
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._progress = progress
        self._progress_done = progress_done
        self._events: asyncio.Queue[tuple[Connection, Event | None]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dial_error: BaseException | None = None
        self._dialer: asyncio.Task[None] | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    async def run(self, lines: asyncio.Queue[str | None]) -> None:
        """Connect, then send typed lines until /quit, end of input, or the peer left.
        Raises the call's error if nobody answered and nobody called."""
        self.note(f"calling {self.name}...")
        self._dialer = self._spawn(self._dial())
        self._acceptor = self._spawn(self._accept())
        shower = self._spawn(self._show())
        try:
            if not await self._first_link():
                assert self._dial_error is not None
                raise self._dial_error
            reader = asyncio.ensure_future(lines.get())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                while True:
                    await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
                    if ended.done():
                        return
                    line = reader.result()
                    if line is None or line == "/quit":
                        return
                    await self._send_line(line)
                    reader = asyncio.ensure_future(lines.get())
            finally:
                for t in (reader, ended):
                    t.cancel()
                await asyncio.gather(reader, ended, return_exceptions=True)
        finally:
            await self.hang_up()
            shower.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def hang_up(self) -> None:
        """Stop calling and taking calls; close every connection (``bye``)."""
        for task in (self._dialer, self._acceptor):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(c.close() for c in list(self.links.live)), return_exceptions=True)

    # -- connections -------------------------------------------------------------------

    async def _linked(self) -> None:
        while self.links.current is None:
            await self.links.changed.wait()

    async def _first_link(self) -> bool:
        """Wait until a connection is up (True) or the call failed with none (False)."""
        assert self._dialer is not None
        if self.links.current is None:
            linked = asyncio.ensure_future(self._linked())
            await asyncio.wait({linked, self._dialer}, return_when=asyncio.FIRST_COMPLETED)
            if self.links.current is None:
                # The call failed; a call from the peer may be authenticating: a moment more.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(linked)
            linked.cancel()
            await asyncio.gather(linked, return_exceptions=True)
        return self.links.current is not None

    async def _dial(self) -> None:
        try:
            conn = await self.peer.connect(self.contact, timeout=self.timeout)
        except HailingError as exc:
            self._dial_error = exc
            return
        self._adopt(conn)

    async def _accept(self) -> None:
        async for conn in self.peer.incoming():
            if conn.peer != self.contact:  # someone else called: not in this chat
                self._spawn(conn.close("busy in another chat"))
                continue
            self._adopt(conn)

    def _adopt(self, conn: Connection) -> None:
        first = not self.links.ever
        loser = self.links.adopt(conn)
        self._spawn(self._read(conn))
        if loser is not None:
            self._spawn(loser.close(REPLACED_HERE, replaced=True))
        if first:
            ms = f" in {conn.connect_ms:.0f} ms" if conn.connect_ms is not None else ""
            self.note(f"connected{ms}; type messages, /file PATH, /quit")

    async def _read(self, conn: Connection) -> None:
        async for ev in conn:
            await self._events.put((conn, ev))
        await self._events.put((conn, None))

    async def _show(self) -> None:
        """Print what arrives; when the last connection ended, say why and end the chat."""
        while True:
            conn, ev = await self._events.get()
            if ev is not None:
                self._print_event(ev)
                continue
            self.links.drop(conn)
            if self.links.current is not None or conn.close_reason == REPLACED_HERE:
                continue
            if conn.closed_here:  # we are leaving
                break
            if conn.close_reason == PEER_REPLACED:  # the one it kept is on its way
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REPLACED_WAIT):
                        await self._linked()
                if self.links.current is not None:
                    continue
            if conn.close_reason == PEER_HUNG_UP:
                self.say(f"{self.name} left")
            else:
                self.say(f"lost {self.name}: {conn.close_reason}")
            break
        self._ended.set()

    def _print_event(self, ev: Event) -> None:
        if isinstance(ev, TextMessage):
            self.say(f"{self.name}: {ev.text}")
        elif isinstance(ev, FileStarted):
            self.say(f"{self.name} is sending {ev.name} ({ev.size} bytes)...")
        elif isinstance(ev, FileAborted):
            self.say(f"{self.name}'s file {ev.name} did not arrive: {ev.reason}")
        elif isinstance(ev, FileReceived):
            self.say(f"{self.name} sent {ev.name} ({ev.size} bytes) -> {ev.path}")

    # -- sending -----------------------------------------------------------------------

    async def _current(self) -> Connection | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPLACED_WAIT):
                while self.links.current is None and not self._ended.is_set():
                    await self.links.changed.wait()
        return self.links.current

    async def _send_line(self, line: str) -> None:
        if not line:
            return
        for _ in range(2):  # once more if its connection was being replaced
            conn = await self._current()
            if conn is None:
                self.note(f"(not sent: {self.name} is gone)")
                return
            try:
                if line.startswith("/file "):
                    path = line[6:].strip()
                    check_file(path)
                    digest = await conn.send_file(path, progress=self._file_progress(path))
                    self._progress_done()
                    self.note(f"(file sent, sha256 {digest[:16]}...)")
                else:
                    await conn.send_text(line)
                return
            except ConnectionClosed as exc:
                self._progress_done()
                if conn.close_reason not in (REPLACED_HERE, PEER_REPLACED):
                    self.note(f"(not sent: {exc})")
                    return
            except HailingError as exc:
                self._progress_done()
                self.note(f"(not sent: {exc})")
                return

    def _file_progress(self, path: str) -> Callable[[int, int], None]:
        last = 0.0
        base = os.path.basename(path)

        def update(sent: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= 0.1 or sent == total:
                last = now
                self._progress(f"sending {base}: {_mb(sent)} of {_mb(total)} ({100 * sent // max(total, 1)} %)")

        return update

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
