"""Links to friends from boot: the daemon keeps one open to each online friend.

Theory of operation
-------------------
Seed 000: data channels to friends are set up once, at start, however slow the signaling
(a contract takes minutes); later calls and sends go over them (a media call's own
renegotiations then travel over that call's channel: web/call.js).
:class:`FriendLinks` does that for a daemon. Every :data:`POLL` seconds it reads the
friends (``friends()``: contacts marked with ``hailing contact friend``, allowed) and, for
each one with no open link, no call under way and whose backoff has passed, calls it
through :meth:`Links.get <hailing.daemon.links.Links.get>` (the Peer's ladder: over the
overlay, the DHT inbox, the contract ...). A call that fails (the friend is offline)
is tried again after a backoff that doubles from :data:`BACKOFF_MIN` to
:data:`BACKOFF_MAX` (with jitter, so two daemons drift apart); a link that was open
resets it. A friend that comes online calls us itself (its own daemon boots and calls
its friends), so a long backoff here delays nothing.

**One link, not two.** Both friends' daemons try at once at boot and when a link is
lost, so two calls cross. :class:`~hailing.daemon.links.Links` keeps, on both ends, the
one whose caller has the larger public key and closes the other as *replaced*. To make
crossing calls rare in the first place, the friend with the smaller key waits
:data:`YIELD_WAIT` seconds before its first call (at boot, and after a lost link) for the
other's call to arrive.

**Pinned.** A friend's link is never hung up as idle (``Links.pinned``); it ends when
either side stops (and comes back when it restarts), when the friend is unmarked,
blocked or removed (then it is simply no longer re-opened; an idle one is hung up as
usual), or when the path dies (the connection's keepalive notices).

**The node's DHT channel.** When the daemon's DHT node has a data-channel driver
(the overlay, docs/overlay.md: ``hailing up`` by default, not with ``--links 0``), a
friend link also carries the node's DHT traffic: its caller opens a second data channel, labelled ``hailing-dht``
(:data:`~hailing.transport.datachannel.LABEL`), on the same peer connection
(:meth:`FriendLinks.link_adopted`), the other side takes it (:meth:`take_channel`: only
from a friend), and both adopt it into their driver, pinned (``friend``), so the two
nodes are overlay neighbours for as long as the friends are linked, and the friend's
node is reachable for forwarding (the ``network`` coupler) with no coupling of its own;
each routing table then reaches the other node through the channel (a pinned link's
peer is re-addressed to it: :mod:`hailing.transport.nodelinks`), so the DHT queries
each node sends the other from its routing table travel over the friend link.
The driver learns the peer's node id from the channel's hello. The driver does not own
the peer connection (``owns_pc=False``): when it drops the channel (its keepalive, say)
the friend link itself stays, and its caller opens another one (at most every
:data:`DHT_RETRY` seconds). A DHT channel that closed (the friend link went, or the
driver dropped it) is unpinned at the next look (:data:`POLL`), for every reason (the
driver's own ``closest`` too: a friend's node is often among our closest links), before
the driver's first try to reconnect a pinned peer (1 s): the friend link brings the
channel back, and the driver opening a connection of its own to the friend's node
meanwhile would leave two pinned links to it once the friend link is back. A friend unmarked is unpinned too (its
channel may then be evicted like any link).

:meth:`FriendLinks.status` is what ``hailing status`` / ``GET /api/status`` show under
``friends``; a failed call emits ``{"event": "friend-link", "contact": ID, "error":
LINE, "retry_s": S}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import HailingError
from ..identity import format_contact_id
from .events import EventBus
from .links import Link, Links

#: The label of the DHT's data channel (``hailing.transport.datachannel.LABEL``; not
#: imported: aiortc stays out of the daemon's import until a driver exists).
DHT_LABEL = "hailing-dht"
#: The driver's pin reason of a friend link's DHT channel.
PIN = "friend"

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "CALL_TIMEOUT", "CONTRACT_CALL_TIMEOUT", "POLL",
           "YIELD_WAIT", "FriendLinks"]

log = logging.getLogger(__name__)

#: How often the friends and their links are looked at (seconds).
POLL = 0.5
#: How long one call to a friend may take (seconds); through the contract (a block or
#: two each way on a real chain, seed 000: 20 to 60 s), longer.
CALL_TIMEOUT = 20.0
CONTRACT_CALL_TIMEOUT = 120.0
#: The first retry after a failed call, and the longest wait between two (seconds).
BACKOFF_MIN = 2.0
BACKOFF_MAX = 300.0
#: How long the friend with the smaller public key waits for the other's call first.
YIELD_WAIT = 3.0
#: Least time between two DHT channels opened on one friend link (its driver dropped one).
DHT_RETRY = 10.0


@dataclass
class _Friend:
    failures: int = 0
    next_try: float = 0.0
    calling: asyncio.Task[None] | None = None
    linked: bool = False
    last_error: str | None = None
    dht_retry: float = 0.0


class FriendLinks:
    """Keeps a link open to each friend (see the module docstring). ``own_key()`` is our
    public key (who yields at a crossing); ``friends()`` the friends' public keys now;
    ``driver`` the node's data-channel driver, if any (the DHT channel)."""

    def __init__(self, links: Links, friends: Callable[[], list[bytes]],
                 own_key: Callable[[], bytes],
                 events: EventBus, *, timeout: float = CALL_TIMEOUT,
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX,
                 yield_wait: float = YIELD_WAIT, poll: float = POLL,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random, driver: Any = None) -> None:
        self.links = links
        self._friends = friends
        self.own_key = own_key
        self._events = events
        self.timeout = timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.yield_wait = yield_wait
        self.poll = poll
        self._clock = clock
        self._jitter = jitter
        self._state: dict[bytes, _Friend] = {}
        self._task: asyncio.Task[None] | None = None
        self._current: set[bytes] = set()
        self._started = False
        self.driver = driver
        #: Each friend's DHT channel in the driver (a driver link), by public key.
        self._dht: dict[bytes, Any] = {}
        #: DHT channels adopted into the driver (``dht_channels``), refused, failed.
        self.stats: Counter[str] = Counter()
        links.pinned = self.is_friend
        links.on_adopt = self.link_adopted

    def is_friend(self, peer: bytes) -> bool:
        if not self._started:  # before the first look (a call while the daemon starts)
            try:
                return peer in self._friends()
            except HailingError:
                return False
        return peer in self._current

    def start(self) -> None:
        self._started = True
        self._task = asyncio.ensure_future(self._run())

    # -- the node's DHT channel ----------------------------------------------------------

    def link_adopted(self, link: Link) -> None:
        """A link was adopted: on a friend link we called, open the DHT channel."""
        pc = getattr(link.conn, "pc", None)
        if self.driver is None or not link.outgoing or pc is None:
            return
        if not self.is_friend(link.peer):
            return
        try:
            self._adopt(link.peer, pc, pc.createDataChannel(DHT_LABEL))
        except Exception as exc:  # a connection closing under us: the next link tries again
            self.stats["dht_channel_errors"] += 1
            log.debug("friend link: no DHT channel: %r", exc)

    def _keep_dht_channel(self, link: Link, f: _Friend, now: float) -> None:
        """A friend link we called whose DHT channel the driver dropped (its keepalive,
        say) while the link stayed: open another, at most every :data:`DHT_RETRY` s."""
        pc = getattr(link.conn, "pc", None)
        if self.driver is None or not link.outgoing or pc is None or now < f.dht_retry:
            return
        if any(x.pc is pc for x in self.driver.links()):
            return
        f.dht_retry = now + DHT_RETRY
        self.stats["dht_channels_reopened"] += 1
        self.link_adopted(link)

    def take_channel(self, conn: Any, channel: Any) -> bool:
        """A further data channel the caller of a link opened (``Peer.on_channel``):
        a friend's DHT channel is adopted into the driver; anything else is not ours."""
        if self.driver is None or getattr(channel, "label", None) != DHT_LABEL:
            return False
        if not self.is_friend(conn.peer):
            self.stats["dht_channels_refused"] += 1
            return False
        self._adopt(conn.peer, conn.pc, channel)
        return True

    def _adopt(self, peer: bytes, pc: Any, channel: Any) -> None:
        link = self.driver.adopt(pc, channel, owns_pc=False)  # the session's connection
        self.driver.pin(link, PIN)
        old = self._dht.get(peer)
        self._dht[peer] = link
        if old is not None and old is not link:
            self.driver.unpin(old, PIN)
        self.stats["dht_channels"] += 1

    def _release_dht(self) -> None:
        """Unpin the DHT channels that closed (every reason: the driver's ``closest``
        too, which a friend's node often is) and those of friends no longer marked."""
        for peer, link in list(self._dht.items()):
            if link.closed or peer not in self._current:
                del self._dht[peer]
                for why in sorted(link.pins) if link.closed else [PIN]:
                    self.driver.unpin(link, why)
                self.stats["dht_channels_released"] += 1

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *(f.calling for f in self._state.values()))
                 if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def status(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for peer in sorted(self._current):
            f = self._state.get(peer, _Friend())
            out.append({"contact": format_contact_id(peer),
                        "linked": self.links.open_link(peer) is not None,
                        "calling": f.calling is not None, "failures": f.failures,
                        "retry_s": round(max(0.0, f.next_try - now), 1),
                        "last_error": f.last_error})
        return out

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self.step()
            except HailingError as exc:  # the book locked by another process: next time
                log.debug("friend links: %s", exc)
            await asyncio.sleep(self.poll)

    def step(self) -> None:
        """One look at every friend: call those that need a link now."""
        self._current = set(self._friends())
        now = self._clock()
        if self._dht:
            self._release_dht()
        for peer in list(self._state):
            if peer not in self._current and self._state[peer].calling is None:
                del self._state[peer]
        for peer in self._current:
            f = self._state.get(peer)
            if f is None:  # new (at boot, or just marked): the smaller key yields first
                f = self._state[peer] = _Friend(next_try=now + self._yield(peer))
            link = self.links.open_link(peer)
            if link is not None:
                f.linked, f.failures, f.last_error = True, 0, None
                self._keep_dht_channel(link, f, now)
                continue
            if f.linked:  # the link was lost: try again soon, the smaller key yielding
                f.linked = False
                f.next_try = now + self._yield(peer)
            if f.calling is None and now >= f.next_try:
                f.calling = asyncio.ensure_future(self._call(peer, f))

    def _yield(self, peer: bytes) -> float:
        return self.yield_wait if self.own_key() < peer else 0.0

    async def _call(self, peer: bytes, f: _Friend) -> None:
        try:
            await self.links.get(peer, self.timeout)
        except asyncio.CancelledError:
            raise
        except (HailingError, TimeoutError, OSError) as exc:
            f.failures += 1
            wait = min(self.backoff_max, self.backoff_min * 2 ** (f.failures - 1))
            wait *= 0.75 + 0.5 * self._jitter()
            f.next_try = self._clock() + wait
            f.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._events.emit({"event": "friend-link", "contact": format_contact_id(peer),
                               "error": f.last_error, "retry_s": round(wait, 1)})
        else:
            f.failures, f.last_error, f.linked = 0, None, True
        finally:
            f.calling = None
