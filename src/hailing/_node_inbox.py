"""DhtNode's hailing inbox API (post, listen, push...): a part of ``node.py``.

The methods drive the core's inbox client (``dht/inbox_client.py``) through the node's
command machinery; ``node.DhtNode`` inherits them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._addrs import Addr
from .dht import Event, InboxMessage, Listening, StoreDone
from .dht.transactions import Pending
from .krpc import Response

if TYPE_CHECKING:
    from .dht import DhtProtocol

__all__ = ["InboxApi"]


class InboxApi:
    """The inbox methods of :class:`~hailing.node.DhtNode`."""

    _listen_keys: set[bytes]
    _listen_watchers: list[Callable[[bytes, bool], object]]
    _inbox: asyncio.Queue[InboxMessage]
    _loop: asyncio.AbstractEventLoop
    _started: bool

    if TYPE_CHECKING:
        @property
        def core(self) -> DhtProtocol: ...

        def _now(self) -> float: ...

        async def _run(self, qid: int) -> Event: ...

        def _pump(self) -> None: ...

    async def post(self, key: bytes, value: bytes) -> int:
        """Post ``value`` to the inbox ``key``; returns how many storing nodes took it."""
        ev = await self._run(self.core.post(key, value, self._now()))
        assert isinstance(ev, StoreDone)
        return ev.stored

    async def listen(self, key: bytes, ttl: float = 300.0) -> int:
        """Listen on the inbox ``key`` (renewed until :meth:`unlisten`); values arrive
        through :meth:`inbox`. Returns how many storing nodes registered us."""
        self._listen_keys.add(key)
        ev = await self._run(self.core.listen(key, self._now(), ttl))
        assert isinstance(ev, Listening)
        return ev.nodes

    def unlisten(self, key: bytes) -> None:
        """Stop listening on ``key``; the storing nodes are told at once."""
        if not self._started:
            return
        self._listen_keys.discard(key)
        self.core.unlisten(key, self._now())
        self._pump()

    def listening(self, key: bytes) -> bool:
        """Whether a storing node holds our listen on ``key`` and still answers."""
        return self._started and self.core.inboxes.live(key, self._now())

    def watch_listens(self, callback: Callable[[bytes, bool], object]) -> None:
        """Call ``callback(key, live)`` whenever :meth:`listening` changes for a key."""
        self._listen_watchers.append(callback)

    def direct_token(self, key: bytes) -> bytes:
        """A push token for the inbox ``key`` that lets whoever holds it push to this
        node directly (docs/protocol.md, "Direct pushes"); hand it only to the one peer
        meant to (sealed)."""
        return self.core.inboxes.direct_token(key)

    def push(self, addr: Addr, key: bytes, value: bytes, ptoken: bytes
             ) -> asyncio.Future[float | None]:
        """Push ``value`` on ``key`` straight to the listener at ``addr`` with the
        direct push token it gave us: one datagram. The future (nobody need await it)
        says whether the listener took the value: the round trip in seconds on its
        answer, None on an error or no answer within the query timeout."""
        fut: asyncio.Future[float | None] = self._loop.create_future()

        def done(reply: object, p: Pending, now: float) -> None:
            if not fut.done():
                fut.set_result(p.rtt if isinstance(reply, Response) else None)

        self.core.inboxes.push(addr, key, value, ptoken, self._now(), on_reply=done)
        self._pump()
        return fut

    async def inbox(self) -> InboxMessage:
        """The next value posted to an inbox this node listens on."""
        return await self._inbox.get()
