"""The daemon: the node a person keeps running (``hailing up``).

Theory of operation
-------------------
One :class:`Daemon` owns, for one data directory: the directory's lock (one daemon per
directory), its DHT node (full, or BEP43 read-only; none for a relay- or contract-only
daemon), a started ``Peer`` built on that node (listening for calls; the contract watcher
or the relay link when configured), the :class:`~hailing.daemon.links.Links` kept
open to contacts, the message :class:`~hailing.daemon.history.History`, the
:class:`~hailing.daemon.events.EventBus`, and the local control API
(:mod:`hailing.daemon.api`) whose address and token it writes to ``api.json``.

A daemon given :class:`~hailing.rtc.media.MediaOptions` (``hailing up --auto-answer``)
answers media calls itself: the Peer's ``answer_tracks`` play the file. Each accepted
connection with media is a *media call*, never a link:
:class:`~hailing.daemon.media_calls.MediaCalls` runs it (recorded or read, in the call
log, its events, the recording finalized however it ends). Every other accepted
connection is adopted as the contact's link.

Its own tasks (the Peer's call events, accepted incoming connections, chain status) are
supervised: one that fails emits an ``error`` event and sets :attr:`Daemon.failed`, and
``hailing up`` then stops with exit 1 instead of running on half broken.

The methods below are what the API handlers call: each takes plain values (contacts as
contact ids or names), returns a JSON-able dict and raises a :class:`HailingError` that
the API maps to a status code.

Call :meth:`start`, then :meth:`stop` (or ``async with``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._sqlite import data_dir as _make_data_dir
from ..errors import HailingError, LocalProtocolError, NotFoundError
from ..identity import format_contact_id, parse_contact_id
from ..node import Addr, format_hostport
from ..session.ladder import describe
from ._files import ApiInfo, DaemonLock, remove_api_info, write_api_info
from .calls import DEFAULT_RING_TIMEOUT, Calls
from .dhtnode import DhtSettings as DhtSettings  # re-exported: the settings Daemon takes
from .dhtnode import open_dht_node, overlay_status
from .events import Event, EventBus
from .friend_links import CALL_TIMEOUT, CONTRACT_CALL_TIMEOUT, FriendLinks
from .history import History
from .links import Link, Links, path_of
from .media_calls import MediaCalls
from .overlay_ice import peer_ice_source
from .webapp import clean_uploads

if TYPE_CHECKING:
    from ..nat.turnserver import TurnConfig
    from ..rtc.media import MediaOptions

log = logging.getLogger(__name__)

STATUSES = ("available", "busy", "dnd")
#: Least time between two ``file-progress`` events of one file (seconds).
PROGRESS_INTERVAL = 0.25


class Daemon:
    """The long-running node of ``data_dir``.

    ``make_peer(node)`` builds the (not yet started) Peer; ``node`` is the daemon's own
    started DHT node when ``dht`` is given (the daemon owns it: one node, shared with
    the Peer), else None (a Peer signaling through a relay or the contract only).
    ``media``: the daemon answers media calls itself (the Peer must have been given
    ``answer_tracks=media.answer_tracks``), see the module docstring."""

    def __init__(self, data_dir: str | os.PathLike[str], make_peer: Callable[[Any], Any], *,
                 dht: DhtSettings | None = None, api_bind: Addr = ("127.0.0.1", 0),
                 idle_close: float = 600.0, on_call: Sequence[str] | None = None,
                 ring_calls: bool = True, media: MediaOptions | None = None,
                 relay: TurnConfig | None = None,
                 ring_timeout: float = DEFAULT_RING_TIMEOUT) -> None:
        self.data_dir = Path(data_dir)
        #: How long a page's call rings before it gives up (``POST /api/calls`` without
        #: ``timeout``; ``hailing up --ring-timeout``).
        self.ring_timeout = ring_timeout
        self._make_peer = make_peer
        self.dht = dht
        self.api_bind = api_bind
        self.events = EventBus(self._contact_name)
        self.failed = asyncio.Event()
        self.node: Any = None
        self.peer: Any = None
        self.history: History | None = None
        #: Browser calls and the call log (:mod:`hailing.daemon.calls`), once started.
        self.calls: Calls | None = None
        self._on_call = list(on_call) if on_call else None
        #: Media offers ring for a page (False: the Peer answers them itself).
        self.ring_calls = ring_calls
        self.links = Links(self._dial, self.events, idle_close=idle_close)
        #: The links kept to friends from boot (:mod:`hailing.daemon.friend_links`).
        self.friend_links: FriendLinks | None = None
        #: The overlay's forwarder, when the DHT node has data-channel links.
        self.forwarder: Any = None
        self._node_coupler: Any = None
        self.api_info: ApiInfo | None = None
        self.started = 0.0
        self._lock = DaemonLock(self.data_dir)
        self._locked = False
        self._api: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.media = media
        #: The media calls answered here (:mod:`hailing.daemon.media_calls`).
        self.media_calls = MediaCalls(self.events, media=media, calls=lambda: self.calls,
                                      name_of=self._contact_name)
        self._relay_config = relay
        #: The TURN relay this node volunteers (``--serve-relay``), once started.
        self.relay: Any = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Daemon:
        from .api import ApiServer

        _make_data_dir(self.data_dir)
        self._lock.acquire()
        self._locked = True
        try:
            self.history = History(self.data_dir)
            self.links.history = self.history
            self.calls = Calls(self.data_dir, self.events, name_of=self._contact_name,
                               on_call=self._on_call)
            if self.dht is not None:
                self.node = await open_dht_node(self.data_dir, self.dht,  # calls' ICE
                                                ice=peer_ice_source(lambda: self.peer))
            if self._relay_config is not None and self.node is not None:
                from ..nat.relay import RelayService

                self.relay = RelayService(self.node, self.data_dir / "relay", self._relay_config)
                await self.relay.start()
            self.peer = self._make_peer(self.node)
            self.calls.peer = self.peer
            driver = getattr(self.node, "links", None)
            if driver is not None and hasattr(self.peer, "forwarder"):
                from ..transport.network_coupler import attach

                # the overlay's forwarder (the session's network coupler sends through
                # it) and the node's network coupler (the driver opens links with it)
                self.forwarder, self._node_coupler = attach(self.node)
                self.peer.forwarder = self.forwarder
            if hasattr(self.peer, "friends"):
                slow = any(r.name == "contract" for r in getattr(self.peer, "ladder", ()))
                self.friend_links = FriendLinks(self.links, self._friends,
                                                lambda: self.peer.public_key, self.events,
                                                driver=driver,
                                                timeout=CONTRACT_CALL_TIMEOUT if slow
                                                else CALL_TIMEOUT)
                self.peer.on_channel = self.friend_links.take_channel
            # A daemon that auto-answers (media) takes media calls itself: nothing rings.
            if (self.ring_calls and self.media is None
                    and getattr(self.peer, "on_media_offer", False) is None):
                self.peer.on_media_offer = self.calls.ring
            await self.peer.start()
            downloads = getattr(self.peer, "downloads", None)
            if isinstance(downloads, str | os.PathLike):
                from ..rtc.connection import clean_partials

                clean_partials(downloads)  # what a crashed or killed daemon was receiving
            self.links.start()
            if self.friend_links is not None:
                self.friend_links.start()
            self._spawn(self._pump_calls(), "calls")
            self._spawn(self._pump_incoming(), "incoming")
            for coupler in getattr(self.peer, "couplers", []):
                if hasattr(coupler, "status_events"):
                    self._spawn(self._pump_chain(coupler.status_events), "chain")
            clean_uploads(self.data_dir)  # what a killed daemon was uploading
            self._api = ApiServer(self)
            url, port, token = await self._api.start(self.api_bind)
            self.api_info = ApiInfo(pid=os.getpid(), url=url, port=port, token=token,
                                    contact_id=self.peer.contact_id)
            write_api_info(self.data_dir, self.api_info)
        except BaseException:
            await self.stop()
            raise
        self.started = time.time()
        return self

    async def stop(self) -> None:
        """Stop everything this daemon started (idempotent)."""
        if self.api_info is not None:  # first, so clients fall back to one-shot at once
            remove_api_info(self.data_dir, self.api_info)
            self.api_info = None
        if self._api is not None:
            await self._api.aclose()
            self._api = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.media_calls.aclose()  # each finalizes its recording
        if self.friend_links is not None:
            await self.friend_links.aclose()
        await self.links.aclose()
        if self.calls is not None:
            await self.calls.aclose()
        if self.peer is not None:
            with contextlib.suppress(HailingError):
                await self.peer.stop()
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
        if self._node_coupler is not None:
            await self._node_coupler.aclose()
            self._node_coupler = None
        if self.forwarder is not None:
            await self.forwarder.aclose()
            self.forwarder = None
        if self.node is not None:
            await self.node.stop()
            self.node = None
        self.calls = None
        if self.history is not None:
            self.links.history = None
            self.history.close()
            self.history = None
        if self._locked:
            self._lock.release()
            self._locked = False

    async def __aenter__(self) -> Daemon:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def dht_address(self) -> str | None:
        return format_hostport(self.node.address) if self.node is not None else None

    # -- supervised tasks ----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.error("daemon task %s failed: %r", name, exc)
                self.events.emit({"event": "error", "task": name,
                                  "error": str(exc) or type(exc).__name__})
                self.failed.set()

        task.add_done_callback(done)

    async def _pump_calls(self) -> None:
        while True:
            ev = await self.peer.calls.get()
            who = format_contact_id(ev.peer)
            if ev.failed:
                self.events.emit({"event": "failed", "from": who, "reason": ev.reason})
            else:
                media = getattr(ev, "media", ())
                if not ev.accepted and media and self.calls is not None:
                    self.calls.refused(ev.peer, ev.reason, media)
                self.events.emit({"event": "call", "from": who, "accepted": ev.accepted,
                                  "reason": ev.reason})

    async def _pump_incoming(self) -> None:
        async for conn in self.peer.incoming():
            tracks = getattr(conn, "tracks", None)
            if tracks is not None and tracks.kinds:  # never a link, even not auto-answered
                self.media_calls.take(conn)
            else:
                self.links.adopt(conn, outgoing=False)

    async def _pump_chain(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            status = await queue.get()
            self.events.emit({"event": "chain", "up": status.up, "error": status.error})

    async def _dial(self, peer: bytes, timeout: float) -> Any:
        return await self.peer.connect(peer, timeout=timeout)

    def _friends(self) -> list[bytes]:
        """The friends now: contacts marked as friends and allowed."""
        book = self._book()
        return [k for k in self.peer.friends.marked() if book.state(k) == "allowed"]

    # -- contacts ------------------------------------------------------------------------

    def _contact_name(self, contact_id: str) -> str | None:
        """The book's name for ``contact_id`` (events carry it as ``contact``)."""
        if self.peer is None:
            return None
        entry = self.peer.contacts.get(contact_id)
        return entry.name if entry is not None else None

    def _book(self) -> Any:
        book = self.peer.contacts
        if book is None:
            raise LocalProtocolError("the daemon is not started")
        return book

    def resolve(self, ref: str) -> bytes:
        """A contact id, or the name of exactly one contact, as a public key."""
        if not isinstance(ref, str) or not ref:
            raise LocalProtocolError("a contact is a contact id or a contact's name")
        if ref.startswith("hl") and len(ref) == 60:
            return parse_contact_id(ref)
        matches = [c for c in self._book().list() if c.name == ref]
        if not matches:
            matches = [c for c in self._book().list() if c.name.casefold() == ref.casefold()]
        if len(matches) > 1:
            raise LocalProtocolError(f"{len(matches)} contacts are named {ref!r}: use a "
                                     "contact id")
        if not matches:
            raise NotFoundError(f"no contact named {ref!r} (and not a contact id)")
        pubkey: bytes = matches[0].pubkey
        return pubkey

    def contacts(self) -> list[dict[str, Any]]:
        """The contact book, each with what is known of their presence: ``online`` (a
        link to them is open) and ``last_seen`` (when they last sent something, or now
        when online; None when never), and ``friend`` (a link is kept to them)."""
        seen = self._history().last_seen() if self.history is not None else {}
        now = time.time()
        out = []
        for c in self._book().list():
            online = self.links.open_link(c.pubkey) is not None
            last = now if online else seen.get(c.pubkey)
            friend = self.friend_links is not None and self.friend_links.is_friend(c.pubkey)
            out.append({**_contact_json(c), "online": online, "last_seen": last,
                        "friend": friend})
        return out

    def login_url(self) -> str:
        """A one-time sign-in link for the web app (``hailing up`` prints one)."""
        if self._api is None:
            raise LocalProtocolError("the daemon is not started")
        url: str = self._api.login_url()
        return url

    def contact(self, ref: str) -> dict[str, Any]:
        c = self._book().get(self.resolve(ref))
        if c is None:
            raise NotFoundError("no such contact")
        return _contact_json(c)

    async def add_contact(self, contact: str, name: str) -> dict[str, Any]:
        c = self._book().add(parse_contact_id(contact), name)
        await self.refresh()
        return self._changed(c)

    async def set_contact_state(self, ref: str, state: str, name: str | None) -> dict[str, Any]:
        book = self._book()
        peer = self.resolve(ref)
        c = book.block(peer, name) if state == "blocked" else book.allow(peer, name)
        if state == "blocked":
            await self.links.hang_up_peer(peer)
        await self.refresh()
        return self._changed(c)

    async def rename_contact(self, ref: str, name: str) -> dict[str, Any]:
        return self._changed(self._book().rename(self.resolve(ref), name))

    async def remove_contact(self, ref: str) -> dict[str, Any]:
        peer = self.resolve(ref)
        if not self._book().remove(peer):
            raise NotFoundError("no such contact")
        await self.refresh()
        who = format_contact_id(peer)
        self.events.emit({"event": "contact", "contact_id": who, "removed": True})
        return {"removed": who}

    def _changed(self, c: Any) -> dict[str, Any]:
        """A contact changed through the API: say so to every subscriber."""
        out = _contact_json(c)
        self.events.emit({"event": "contact", **out})
        return out

    # -- presence ------------------------------------------------------------------------

    def presence(self) -> dict[str, Any]:
        book = self._book()
        return {"status": book.status(), "accept_any": book.accept_any()}

    async def set_presence(self, status: str | None, accept_any: bool | None) -> dict[str, Any]:
        book = self._book()
        if status is not None:
            if status not in STATUSES:
                raise LocalProtocolError(f"status is one of {', '.join(STATUSES)}")
            book.set_status(status)
        if accept_any is not None:
            book.set_accept_any(accept_any)
            await self.refresh()
        now = self.presence()
        self.events.emit({"event": "presence", **now})
        return now

    async def refresh(self) -> None:
        """Listen again now: a contact just added can reach us at once."""
        try:
            await self.peer.refresh()
        except HailingError as exc:  # retried by the Peer's own refresh loop
            log.warning("refresh failed: %s", exc)

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        book = self._book()
        stats = getattr(self.peer, "stats", {})
        return {
            "contact_id": self.peer.contact_id, "name": book.name(),
            "status": book.status(), "accept_any": book.accept_any(),
            "backend": getattr(self.peer, "backend", None), "dht": self.dht_address,
            "read_only": self.dht.read_only if self.dht else None,
            "api": self.api_info.url if self.api_info else None, "pid": os.getpid(),
            "data_dir": str(self.data_dir), "version": __version__,
            "uptime_s": round(time.time() - self.started, 1) if self.started else 0.0,
            "links": [link.to_json() for link in self.links.list()],
            "contacts": len(book.list()), "subscribers": self.events.subscribers,
            "events_dropped": self.events.dropped, "stats": dict(stats),
            "calls": dict(self.calls.stats) if self.calls is not None else {},
            "media_calls": self.media_calls.status(),
            "relay": self.relay.status() if self.relay is not None else None,
            "ladder": describe(getattr(self.peer, "ladder", ())),
            "friends": self.friend_links.status() if self.friend_links is not None else [],
            "overlay": overlay_status(self.node, self.friend_links.stats if self.friend_links else None),
        }

    async def hang_up(self, ref: str) -> dict[str, Any]:
        """``DELETE /api/links/{contact}``: hang up every link to a contact."""
        peer = self.resolve(ref)
        return {"contact": format_contact_id(peer), "closed": await self.links.hang_up_peer(peer)}

    async def ice_servers(self) -> dict[str, Any]:
        """``GET /api/ice``: the daemon's own ICE servers for a page, but those on
        loopback addresses (a browser does not gather there)."""
        from ..rtc.ice import ice_servers_json

        manager = getattr(self.peer, "manager", None)
        if manager is None:
            return {"iceServers": []}
        servers = await manager.ice.get()
        return {"iceServers": ice_servers_json(servers.stun, servers.turn, loopback=False)}

    # -- sending -------------------------------------------------------------------------

    async def connect(self, ref: str, timeout: float) -> dict[str, Any]:
        peer = self.resolve(ref)
        link, ms = await self.links.get(peer, timeout)
        return _result(peer, ms, link)

    async def send_text(self, ref: str, text: str, timeout: float) -> dict[str, Any]:
        from ..rtc.connection import check_text

        check_text(text)  # before any call: nothing is dialed for a message refused anyway
        peer = self.resolve(ref)

        async def send(link: Link) -> dict[str, Any]:
            await link.conn.send_text(text)
            return {}

        result = await self._deliver(peer, timeout, send)
        entry = self._history().add_text(peer, "out", text)
        self.events.emit({"event": "sent", "to": result["to"], "text": text, "id": entry})
        return result

    async def send_file(self, ref: str, path: str, timeout: float) -> dict[str, Any]:
        from ..rtc.connection import check_file

        p = Path(path)
        if not p.is_absolute():
            raise LocalProtocolError("give the file's absolute path")
        size = check_file(p)  # before any call, as for a text
        peer = self.resolve(ref)
        who = format_contact_id(peer)

        last = [0.0]

        def progress(sent: int, total: int | None = None) -> None:
            total = total if total is not None else size
            now = time.monotonic()
            if sent < total and now - last[0] < PROGRESS_INTERVAL:
                return  # at most one event per interval, and the last one
            last[0] = now
            self.events.emit({"event": "file-progress", "to": who, "name": p.name,
                              "sent": sent, "size": total})

        async def send(link: Link) -> dict[str, Any]:
            if _takes_progress(link.conn.send_file):
                digest = await link.conn.send_file(p, progress=progress)
            else:  # a Connection without progress reports
                digest = await link.conn.send_file(p)
            return {"sha256": digest, "bytes": size}

        result = await self._deliver(peer, timeout, send)
        entry = self._history().add_file(peer, "out", name=p.name, path=str(p), size=size,
                                         sha256=result["sha256"])
        self.events.emit({"event": "file-sent", "to": who, "name": p.name, "path": str(p),
                          "size": size, "sha256": result["sha256"], "id": entry})
        return result

    async def _deliver(self, peer: bytes, timeout: float,
                       op: Callable[[Link], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run ``op(link)`` on an open link to ``peer`` (:meth:`Links.deliver`, tried
        once more on a link that went away); the result as ``connect`` gives it."""
        link, ms, extra = await self.links.deliver(peer, timeout, op)
        return {**_result(peer, ms, link), **extra, "delivered": True}

    # -- endpoint records ----------------------------------------------------------------

    async def publish_endpoint(self, ref: str, kind: str, endpoint: str,
                               extra: dict[str, str]) -> dict[str, Any]:
        from ..signaling.endpoint import EndpointRecord, encode_record

        record = EndpointRecord(kind, endpoint, dict(extra))
        encode_record(record)  # a bad record fails here, before any network
        peer = self.resolve(ref)
        stored = await self.peer.publish_endpoint(peer, record)
        return {"to": format_contact_id(peer), "kind": kind, "endpoint": endpoint,
                "via": getattr(self.peer, "backend", None), "stored": stored}

    def endpoints(self, ref: str | None) -> list[dict[str, Any]]:
        store = getattr(self.peer, "store", None)
        if store is None:
            return []
        names = {c.pubkey: c.name for c in self._book().list() if not c.blocked}
        peer = self.resolve(ref) if ref else None
        return [{"contact": r.contact_id, "name": names[r.pubkey], "kind": r.kind,
                 "endpoint": r.endpoint, "extra": r.extra, "timestamp": r.timestamp,
                 "via": r.via}
                for r in store.endpoints(peer) if r.pubkey in names]

    # -- history -------------------------------------------------------------------------

    def _history(self) -> History:
        if self.history is None:
            raise LocalProtocolError("the daemon is not started")
        return self.history

    def history_page(self, ref: str | None, limit: int, before: int | None) -> list[Event]:
        peer = self.resolve(ref) if ref else None
        return [e.to_json() for e in self._history().page(peer, limit=limit, before=before)]


def _contact_json(c: Any) -> dict[str, Any]:
    return {"contact_id": c.contact_id, "name": c.name, "state": c.state}


def _result(peer: bytes, ms: float | None, link: Link) -> dict[str, Any]:
    out: dict[str, Any] = {"to": format_contact_id(peer),
                           "connect_ms": round(ms, 1) if ms is not None else 0.0,
                           "reused": ms is None}
    coupler = getattr(link.conn, "coupler", None)
    if coupler:
        out["via"] = coupler
    out["path"] = link.path or path_of(link.conn)
    return out


def _takes_progress(method: Any) -> bool:
    try:
        return "progress" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
