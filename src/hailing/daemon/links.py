"""Links: the open connections a daemon keeps, one per contact, reused for every send.

Theory of operation
-------------------
A connection is a *link* whichever side opened it: an accepted incoming call
(:meth:`Links.adopt` from the Peer's ``incoming()``) or one this daemon opened to send
(:meth:`Links.get`). Each link has a reader task that turns what it yields into events
(``message``, ``file``, ...) and history entries, and emits ``closed`` when it ends. A send
to a contact uses its open link; only when there is none does it call (one call per
contact at a time: concurrent sends wait for the same call). A send that fails on a
reused link (the other side went away without a word), or on one closed under it as
replaced, is tried once more (:meth:`Links.deliver`). When both sides called at
once, both keep the link whose caller has the larger public key and close the other as
*replaced* (``closed`` says ``links``: how many stay open). A link idle for
``idle_close`` seconds is hung up (0: never), unless its contact is *pinned* (a friend:
:mod:`hailing.daemon.friend_links`); a contact's link is hung up when it is blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import HailingError, LocalProtocolError
from ..identity import format_contact_id
from ..rtc.ice import selected_path
from .events import EventBus, item_event
from .history import History

log = logging.getLogger(__name__)

#: How often idle links are looked for.
SWEEP_INTERVAL = 15.0
#: The close reason of a link closed because both ends keep another one.
REPLACED = "replaced by another connection"
#: Close reasons of a link replaced by another one to the same contact (ours, theirs).
REPLACED_REASONS = (REPLACED, "the peer kept another connection")


@dataclass(eq=False)
class Link:
    conn: Any  # hailing.rtc.connection.Connection (kept Any: no aiortc import here)
    outgoing: bool
    opened: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    reader: asyncio.Task[None] | None = None
    #: The ICE path when it was adopted (``connected``'s ``path``).
    path: dict[str, Any] | None = None

    @property
    def peer(self) -> bytes:
        peer: bytes = self.conn.peer
        return peer

    @property
    def is_open(self) -> bool:
        return bool(self.conn.is_open)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def to_json(self) -> dict[str, Any]:
        return {"contact": format_contact_id(self.peer), "outgoing": self.outgoing,
                "open_s": round(time.monotonic() - self.opened, 1),
                "idle_s": round(time.monotonic() - self.last_used, 1),
                "path": path_of(self.conn)}


def path_of(conn: Any) -> dict[str, Any]:
    """The ICE path of a connection (:func:`hailing.rtc.ice.selected_path`): ``local``
    and ``remote`` candidate types, ``relayed``."""
    return selected_path(getattr(conn, "pc", None))


class Links:
    """The daemon's connections. ``dial(peer, timeout)`` opens a new one (the Peer's
    ``connect``); what the links receive is emitted on ``events`` and kept in ``history``."""

    def __init__(self, dial: Callable[[bytes, float], Awaitable[Any]], events: EventBus,
                 history: History | None = None, *, idle_close: float = 600.0) -> None:
        self._dial = dial
        self._events = events
        self.history = history
        self.idle_close = idle_close
        #: Contacts whose links are never hung up as idle (friends).
        self.pinned: Callable[[bytes], bool] = lambda peer: False
        #: Called with each link adopted (a friend link then carries the DHT channel).
        self.on_adopt: Callable[[Link], None] | None = None
        self._links: dict[bytes, list[Link]] = {}
        self._calling: dict[bytes, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self) -> None:
        if self.idle_close > 0:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def aclose(self) -> None:
        """Hang up every link and wait for their readers."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        links = [link for group in self._links.values() for link in group]
        await asyncio.gather(*(self._hang_up(link) for link in links), *self._closers,
                             return_exceptions=True)
        readers = [link.reader for link in links if link.reader is not None]
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    # -- using links ---------------------------------------------------------------------

    def open_link(self, peer: bytes) -> Link | None:
        """The open link to ``peer`` that both ends keep (see :func:`_preferred`)."""
        best: Link | None = None
        for link in self._links.get(peer, []):
            if link.is_open:
                best = link if best is None else _preferred(best, link)
        return best

    def open_count(self, peer: bytes) -> int:
        return sum(1 for link in self._links.get(peer, []) if link.is_open)

    async def get(self, peer: bytes, timeout: float) -> tuple[Link, float | None]:
        """An open link to ``peer`` and the call's connect time in ms (None when an open
        link was reused). Raises what the call raised (e.g. QueryTimeout)."""
        link = self.open_link(peer)
        if link is not None:
            return link, None
        lock = self._calling.setdefault(peer, asyncio.Lock())
        async with lock:
            link = self.open_link(peer)  # another send's call may have opened one
            if link is not None:
                return link, None
            conn = await self._dial(peer, timeout)
            link = self.adopt(conn, outgoing=True)
            ms: float = conn.connect_ms or 0.0
            # They may have called us meanwhile: the link both keep is the one to use.
            return self.open_link(peer) or link, ms

    async def deliver(self, peer: bytes, timeout: float,
                      op: Callable[[Link], Awaitable[dict[str, Any]]]
                      ) -> tuple[Link, float | None, dict[str, Any]]:
        """Run ``op(link)`` on an open link to ``peer`` (:meth:`get`): the link, the
        call's connect time (None: reused) and what ``op`` returned. A reused link that
        fails (the other side went away without a word), or one closed under the send
        because both ends keep another, is dropped and ``op`` tried once more (on the
        link kept, or a new call); a LocalProtocolError (our own mistake) is not."""
        link, ms = await self.get(peer, timeout)
        try:
            extra = await op(link)
        except LocalProtocolError:
            raise
        except HailingError:
            reason = getattr(link.conn, "close_reason", None)
            if ms is not None and reason not in REPLACED_REASONS:
                raise
            await self.drop(link)
            link, ms = await self.get(peer, timeout)
            extra = await op(link)
        link.touch()
        return link, ms, extra

    def adopt(self, conn: Any, *, outgoing: bool) -> Link:
        """Keep ``conn`` as a link and start reading it."""
        link = Link(conn, outgoing)
        self._links.setdefault(link.peer, []).append(link)
        who = format_contact_id(link.peer)
        event: dict[str, Any] = {"event": "connected", "to" if outgoing else "from": who}
        if outgoing and conn.connect_ms is not None:
            event["connect_ms"] = round(conn.connect_ms, 1)
        if outgoing and getattr(conn, "coupler", None):
            event["via"] = conn.coupler
        event["path"] = link.path = path_of(conn)
        self._events.emit(event)
        link.reader = asyncio.ensure_future(self._read(link, who))
        # Both called at once ("glare"): both ends keep the same link and close the other
        # as replaced, so neither takes it for a hang-up (the rule of `hailing chat`).
        keep = self.open_link(link.peer)
        for other in self._links[link.peer]:
            if other is not keep and other.is_open:
                self._spawn(self._replace(other))
        if self.on_adopt is not None:
            self.on_adopt(link)
        return link

    async def drop(self, link: Link) -> None:
        """Hang up a link (e.g. one whose send failed)."""
        await self._hang_up(link)

    async def hang_up_peer(self, peer: bytes) -> int:
        """Hang up every link to ``peer`` (blocked). Returns how many."""
        links = list(self._links.get(peer, []))
        await asyncio.gather(*(self._hang_up(link) for link in links), return_exceptions=True)
        return len(links)

    def list(self) -> list[Link]:
        return [link for group in self._links.values() for link in group if link.is_open]

    # -- reading -------------------------------------------------------------------------

    async def _read(self, link: Link, who: str) -> None:
        try:
            async for item in link.conn:
                link.touch()
                entry = self._record(link.peer, item)
                event = item_event(item, who)
                if entry is not None:
                    event["id"] = entry  # the history entry (the web app's file download)
                self._events.emit(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a link's failure ends that link, never the daemon
            log.debug("link to %s failed: %r", who, exc)
        finally:
            group = self._links.get(link.peer, [])
            if link in group:
                group.remove(link)
            if not group:
                self._links.pop(link.peer, None)
                self._calling.pop(link.peer, None)
            with contextlib.suppress(Exception):
                await asyncio.shield(link.conn.close())
            closed: dict[str, Any] = {"event": "closed", "to" if link.outgoing else "from": who}
            reason = getattr(link.conn, "close_reason", None)
            if isinstance(reason, str) and reason:
                closed["reason"] = reason
            closed["links"] = self.open_count(link.peer)  # links to them still open
            self._events.emit(closed)

    def _record(self, peer: bytes, item: object) -> int | None:
        """Keep a received text or file in the history; its entry id."""
        if self.history is None:
            return None
        try:
            text = getattr(item, "text", None)
            if isinstance(text, str):
                return self.history.add_text(peer, "in", text)
            if type(item).__name__ == "FileReceived":
                item_any: Any = item
                return self.history.add_file(peer, "in", name=item_any.name,
                                              path=str(item_any.path), size=item_any.size,
                                              sha256=item_any.sha256)
        except HailingError as exc:  # a full disk must not stop the link
            log.warning("history: %s", exc)
        return None

    # -- idle links ----------------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL, self.idle_close))
            now = time.monotonic()
            for link in self.list():
                if now - link.last_used > self.idle_close and not self.pinned(link.peer):
                    await self._hang_up(link)

    async def _hang_up(self, link: Link) -> None:
        with contextlib.suppress(Exception):
            await link.conn.close()

    async def _replace(self, link: Link) -> None:
        with contextlib.suppress(Exception):
            await link.conn.close(REPLACED, replaced=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)


def _preferred(a: Link, b: Link) -> Link:
    """The link both ends keep: the one whose caller has the larger public key (the rule
    of :func:`hailing.cli._chat.preferred`); on a tie, the newer."""
    ka: bytes = getattr(a.conn, "initiator_key", b"")
    kb: bytes = getattr(b.conn, "initiator_key", b"")
    return a if ka > kb else b
