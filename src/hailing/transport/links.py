"""The link manager: at most ``cap`` links, pinned ones kept, the others evicted LRU.

Theory of operation
-------------------
A browser holds a few hundred peer connections at most, and each costs a DTLS session
and an SCTP association: a node keeps at most :attr:`LinkManager.cap` links (seed 004's
*p*). Adopting one more evicts the least recently used link that is not pinned
(``link_evicted``); "used" means DHT traffic sent or received on it, not keepalives. A
pinned link is never evicted: a link is pinned for one or more reasons
(:meth:`LinkManager.pin`, :meth:`LinkManager.unpin`): ``"friend"`` (the session's links to
friends), ``"closest"`` (the manager pins a link at each of the
:attr:`LinkManager.closest` deepest levels it has links at, the closest there: the
overlay's neighbourhood, which lookups for our own region need), ``"level"`` (links at
:attr:`LinkManager.levels` shallower levels, spread with a phase of our own id so that
different nodes hold different levels: :mod:`hailing.transport.pins`), or any other
reason a caller names. When every link is pinned the cap is
exceeded rather than a pinned one dropped (``link_over_cap``).

Keepalives: every ``keepalive`` seconds without anything sent a link gets a one-byte
ping (the peer answers a pong); a link that received nothing for
:data:`DEAD_AFTER` keepalive intervals is closed (``link_dead``) and the node forgets it.
:meth:`LinkManager.tick` runs that check with the manager's clock (a task calls it; tests
call it with their own clock).

Reconnection: the pins of a peer outlive its link. When a pinned link goes, the manager
couples a new one to the same peer id with its couplers, fastest first (median coupling
time), with a backoff from :data:`RECONNECT_MIN` doubling to :data:`RECONNECT_MAX`; the
new link gets the old one's pins. A peer pinned only as ``"closest"`` or ``"level"`` is
given up after :data:`RECONNECT_TRIES` failed rounds (it may have left the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .linkaddr import HANDLE_LEN, LinkAddr
from .pins import choose_pins

if TYPE_CHECKING:
    from .datachannel import LinkCoupler

__all__ = ["DEAD_AFTER", "FRAME_BURST", "FRAME_RATE", "Link", "LinkManager"]

#: A link silent for this many keepalive intervals is dead.
DEAD_AFTER = 3.0
#: Frames a link may bring per second (a token bucket), and the burst it may bring at once.
FRAME_RATE = 200.0
FRAME_BURST = 400.0
#: Reconnection backoff of a pinned link (seconds), and the rounds before a ``closest``
#: or ``level`` pin is given up.
RECONNECT_MIN = 1.0
RECONNECT_MAX = 60.0
RECONNECT_TRIES = 6
#: The pins the manager makes itself (given up when their peer cannot be reached).
OWN_PINS = frozenset({"closest", "level"})
#: A link whose peer lists at most this many other links is evicted last.
LONELY = 1
#: Seconds before a pin the manager could not couple is tried again.
FILL_RETRY = 60.0
#: Seconds after its last use during which a link is spared by eviction (soft cap).
GRACE = 2.0
#: Seconds a peer connection may take to close (aiortc's close waits on its transports).
CLOSE_TIMEOUT = 5.0
#: Seconds an evicted link drains (answers in flight still arrive) before it is closed.
DRAIN = 2.0
#: Coupling times kept per coupler (for the median that orders them).
TIMES_KEPT = 16


class Link:
    """One peer connection with its DHT data channel."""

    __slots__ = (
        "_manager",
        "_refilled",
        "_tokens",
        "channel",
        "closed",
        "farewell",
        "hello_sent",
        "last_received",
        "last_sent",
        "last_used",
        "lists_budget",
        "lists_heard",
        "lists_sent",
        "lists_told",
        "opened",
        "owns_pc",
        "pc",
        "peer_id",
        "peer_links",
        "peer_pinned",
        "pins",
        "told_pinned",
    )

    def __init__(self, manager: LinkManager, pc: Any, channel: Any, now: float) -> None:
        self._manager = manager
        self.pc = pc
        self.channel = channel
        #: The peer's node id, once known (adopt's ``peer_id`` or its hello).
        self.peer_id: bytes | None = None
        #: Why the link is pinned (empty: it may be evicted).
        self.pins: set[str] = set()
        #: The peer pinned it (it said so): evicted only when no other link can be.
        self.peer_pinned = False
        #: What we last told the peer of our pins.
        self.told_pinned = False
        self.opened = now
        self.last_used = now
        self.last_sent = now
        self.last_received = now
        self.closed = False
        #: Whether closing the link closes its peer connection (else only its channel:
        #: a friend link's connection carries the session's channel too).
        self.owns_pc = True
        #: Closed by an eviction (ours, or the peer's: it said so): the peer is alive.
        self.farewell = False
        self.hello_sent = False
        #: The ids of the peer's other links, as it last told them (linklists.py).
        self.peer_links: frozenset[bytes] = frozenset()
        #: When the peer's last list arrived, when ours last went out, and what it said.
        self.lists_heard = float("-inf")
        self.lists_sent = float("-inf")
        self.lists_told: tuple[bytes, ...] | None = None
        #: The peer's budget of lists (linklists.BURST, refilled with time).
        self.lists_budget = 0.0
        self._tokens = FRAME_BURST
        self._refilled = now

    @property
    def addr(self) -> LinkAddr | None:
        return None if self.peer_id is None else LinkAddr(self.peer_id[:HANDLE_LEN])

    @property
    def handle(self) -> bytes | None:
        return None if self.peer_id is None else self.peer_id[:HANDLE_LEN]

    @property
    def pinned(self) -> bool:
        return bool(self.pins)

    @property
    def is_open(self) -> bool:
        return not self.closed and self.channel.readyState == "open"

    def allow(self, now: float) -> bool:
        """Spend one frame of the link's budget (False: over it)."""
        self._tokens = min(FRAME_BURST, self._tokens + (now - self._refilled) * FRAME_RATE)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def close(self) -> None:
        """Close the link (its peer connection with it)."""
        self._manager._lost(self, "closed")
        await _close_pc(self)

    def __repr__(self) -> str:
        peer = "?" if self.peer_id is None else self.peer_id[:4].hex()
        state = "closed" if self.closed else self.channel.readyState
        return f"<Link {peer} {state}{' pinned' if self.pins else ''}>"


class LinkManager:
    """Cap, pins, LRU eviction, keepalives and reconnection (the module docstring).
    :class:`~hailing.transport.datachannel.LinkDriver` is one."""

    def __init__(self, *, cap: int, keepalive: float, clock: Callable[[], float],
                 closest: int | None, levels: int | None = None) -> None:
        if cap < 1:
            raise ValueError("the link cap must be at least 1")
        self.cap = cap
        self.keepalive = keepalive
        self.clock = clock
        #: The closest link at each of this many deepest levels is pinned ``"closest"``.
        self.closest = max(1, cap // 4) if closest is None else closest
        #: Links at this many shallower levels are pinned ``"level"`` (pins.py).
        self.levels = cap // 4 if levels is None else levels
        self.stats: Counter[str] = Counter()
        #: Tried fastest first (median coupling time) to open a link.
        self.couplers: list[LinkCoupler] = []
        self._links: list[Link] = []
        self._by_handle: dict[bytes, Link] = {}
        #: Evicted links still draining, by handle.
        self._draining: dict[bytes, Link] = {}
        #: Pins by peer id: they outlive a link, and make the manager reconnect it.
        self._wanted: dict[bytes, set[str]] = {}
        self._reconnecting: dict[bytes, asyncio.Task[None]] = {}
        self._times: dict[str, list[float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closing = False
        #: Coupling a pin that has no link yet (one at a time), and when each was tried.
        self._filling: asyncio.Task[None] | None = None
        #: Whether the manager couples such pins (False: it only pins open links).
        self.fill_pins = True
        self._fill_tried: dict[bytes, float] = {}

    # -- hooks of the driver ------------------------------------------------------------

    @property
    def node_id(self) -> bytes | None:
        raise NotImplementedError

    def _bound(self, link: Link) -> None:
        """``link``'s peer id is known and it is the one its handle resolves to."""

    def _gone(self, link: Link) -> None:
        """``link`` was closed."""

    def _known_peers(self) -> list[bytes]:
        """Node ids known beyond the links that a pin may be coupled to (the routing
        table's peers at link addresses), not being coupled right now."""
        return []

    def _ping(self, link: Link) -> None:
        """Send a keepalive on ``link``."""

    def _say_farewell(self, link: Link) -> None:
        """Tell the peer that ``link`` closes by eviction (it is not dead)."""

    def _tell_pinned(self, link: Link) -> None:
        """Tell the peer whether we pin ``link`` now (``link.pins``)."""

    def _sync_pin(self, link: Link) -> None:
        if bool(link.pins) != link.told_pinned and link.is_open and link.hello_sent:
            self._tell_pinned(link)

    async def couple(self, target: bytes) -> Link | None:
        raise NotImplementedError

    # -- the table of links -------------------------------------------------------------

    def links(self) -> list[Link]:
        """The links not closed (open, or opening)."""
        return [link for link in self._links if not link.closed]

    def routed(self) -> list[Link]:
        """The open links that carry traffic (one per peer; not the draining ones)."""
        return [x for x in self._by_handle.values() if x.is_open]

    def link_for(self, addr_or_id: LinkAddr | bytes) -> Link | None:
        """The open link to a LinkAddr, a 5-byte handle or a 20-byte node id."""
        if isinstance(addr_or_id, LinkAddr):
            handle = addr_or_id.handle
        else:
            handle = bytes(addr_or_id[:HANDLE_LEN])
        link = self._by_handle.get(handle)
        if link is None or link.closed:
            return None
        if len(addr_or_id) == 20 and link.peer_id != addr_or_id:  # type: ignore[arg-type]
            return None
        return link

    def _add(self, link: Link) -> None:
        self._links.append(link)
        self.stats["link_adopted"] += 1

    def _bind(self, link: Link, peer_id: bytes) -> None:
        """``link`` leads to ``peer_id``: it becomes that handle's link."""
        if type(peer_id) is not bytes or len(peer_id) != 20:
            self.stats["link_bad_id"] += 1
            self._spawn(link.close())
            return
        if peer_id == self.node_id:
            self.stats["link_to_self"] += 1
            self._spawn(link.close())
            return
        link.peer_id = peer_id
        handle = peer_id[:HANDLE_LEN]
        other = self._by_handle.get(handle)
        if other is not None and other is not link and not other.closed:
            if other.peer_id != peer_id:
                self.stats["link_handle_clash"] += 1
                self._spawn(link.close())
                link.peer_id = None
                return
            self.stats["link_duplicate"] += 1  # the newer carries traffic; LRU drops one
        self._by_handle[handle] = link
        for why in link.pins:  # pinned before its id was known
            self._wanted.setdefault(peer_id, set()).add(why)
        pins = self._wanted.get(peer_id)
        if pins:
            link.pins |= pins
            self._sync_pin(link)
        self._repin()
        self._bound(link)

    def _unroute(self, link: Link) -> None:
        """``link`` no longer carries new traffic to its peer (another open one may)."""
        with contextlib.suppress(ValueError):
            self._links.remove(link)
        handle = link.handle
        if handle is not None and self._by_handle.get(handle) is link:
            del self._by_handle[handle]
            spare = [x for x in self._links if x.peer_id == link.peer_id and x.is_open]
            if spare:
                self._by_handle[handle] = spare[-1]
            else:
                self._gone(link)

    def _retire(self, link: Link) -> None:
        """An eviction (ours, or the peer's bye): the link stops counting and carrying
        new traffic, but drains for :data:`DRAIN` seconds (answers in flight arrive on
        it, and it still carries datagrams to that peer while no other link does);
        then it is closed."""
        if link.closed or link not in self._links:
            return
        link.farewell = True
        self._unroute(link)
        if link.handle is not None:
            self._draining[link.handle] = link
        self._spawn(self._drain(link))
        if not self._closing:
            self._repin()

    async def _drain(self, link: Link) -> None:
        await asyncio.sleep(DRAIN)
        self._lost(link, "drained")

    def _lost(self, link: Link, why: str) -> None:
        if link.closed:
            return
        link.closed = True
        link.peer_links = frozenset()
        self.stats["link_closed"] += 1
        if link.handle is not None and self._draining.get(link.handle) is link:
            del self._draining[link.handle]
        self._unroute(link)
        self._spawn(_close_pc(link))
        if not self._closing:
            self._repin()
            peer = link.peer_id
            if (peer is not None and not link.farewell and self._wanted.get(peer)
                    and self.link_for(peer) is None):
                self._reconnect_later(peer)

    # -- pins and the cap --------------------------------------------------------------

    def pin(self, link: Link, why: str) -> None:
        """Keep ``link`` (and reconnect its peer when it goes) for the reason ``why``."""
        link.pins.add(why)
        if link.peer_id is not None:
            self._wanted.setdefault(link.peer_id, set()).add(why)
        self._sync_pin(link)

    def unpin(self, link: Link, why: str) -> None:
        """Drop the reason ``why``; a link with no reason left may be evicted."""
        link.pins.discard(why)
        self._sync_pin(link)
        peer = link.peer_id
        if peer is not None and peer in self._wanted:
            self._wanted[peer].discard(why)
            if not self._wanted[peer]:
                del self._wanted[peer]
                task = self._reconnecting.pop(peer, None)
                if task is not None:
                    task.cancel()

    def _repin(self) -> None:
        """Pin ``"closest"`` and ``"level"`` links by the rule of :mod:`.pins` among the
        links not closed; unpin the ones it no longer picks."""
        own = self.node_id
        if own is None:
            return
        known = {x.peer_id for x in self._links if x.peer_id is not None and not x.closed}
        chosen = choose_pins(own, known, self.closest, self.levels)
        for x in self._links:
            why = chosen.get(x.peer_id) if x.peer_id is not None else None
            for reason in sorted(OWN_PINS):
                if reason == why and reason not in x.pins:
                    self.pin(x, reason)
                elif reason != why and reason in x.pins:
                    self.unpin(x, reason)

    def _enforce_cap(self, keep: Link | None = None) -> None:
        """Evict least recently used unpinned links until at most ``cap`` are left. A
        link used in the last :data:`GRACE` seconds (a query may be in flight on it) or
        pinned by the peer is spared while that leaves one link over ``cap`` (:meth:`tick`
        evicts it later); beyond, links the peer pinned go last. Among the candidates, a
        link whose peer listed at most :data:`LONELY` other links goes last."""
        now = self.clock()
        while len(live := self.links()) > self.cap:
            candidates = [x for x in live if not x.pins and x is not keep]
            if len(live) <= self.cap + 1:
                candidates = [x for x in candidates
                              if now - x.last_used >= GRACE and not x.peer_pinned]
            else:
                candidates = [x for x in candidates if not x.peer_pinned] or candidates
            if not candidates:
                self.stats["link_over_cap"] += 1
                return
            # a peer whose link list shows it has no other link but one would be left
            # with one or none: its link goes last (the simulator's islands, lesson 9)
            lonely = [x for x in candidates if x.lists_heard > float("-inf")
                      and len(x.peer_links) <= LONELY]
            if lonely and len(lonely) < len(candidates):
                self.stats["link_spared_lonely"] += 1
                candidates = [x for x in candidates if x not in lonely]
            victim = min(candidates, key=lambda x: x.last_used)
            self.stats["link_evicted"] += 1
            self._say_farewell(victim)
            self._retire(victim)

    # -- keepalives --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Keepalive round: ping links idle for a keepalive interval, close the ones
        silent for :data:`DEAD_AFTER` of them."""
        now = self.clock() if now is None else now
        for link in self.links():
            if now - link.last_received > DEAD_AFTER * self.keepalive:
                self.stats["link_dead"] += 1
                self._lost(link, "dead")
            elif link.is_open and now - link.last_sent >= self.keepalive:
                self.stats["link_keepalives"] += 1
                self._ping(link)
        if len(self._links) > self.cap:
            self._enforce_cap()
        self._fill_pins(now)

    def _fill_pins(self, now: float) -> None:
        """Couple one peer that the pin rule picks among the links *and* the known peers
        but that has no link (closest first): pins reach levels no lookup linked to.
        One at a time; a peer tried is tried again after :data:`FILL_RETRY` seconds."""
        own = self.node_id
        if (own is None or not self.fill_pins or not self.couplers or self._closing
                or (self._filling is not None and not self._filling.done())):
            return
        tried = self._fill_tried
        for peer in [p for p, t in tried.items() if now - t >= FILL_RETRY]:
            del tried[peer]
        linked = {x.peer_id for x in self.links() if x.peer_id is not None}
        known = set(self._known_peers()) - linked - set(self._reconnecting) - set(tried)
        if not known:
            return
        mine = int.from_bytes(own, "big")
        chosen = choose_pins(own, linked | known, self.closest, self.levels, linked)
        wanted = sorted((p for p in chosen if p in known),
                        key=lambda p: int.from_bytes(p, "big") ^ mine)
        if wanted:
            tried[wanted[0]] = now
            self._filling = self._spawn(self._fill(wanted[0]))

    async def _fill(self, peer: bytes) -> None:
        link = await self._couple_pin(peer)
        self.stats["link_pin_coupled" if link is not None else "link_pin_failed"] += 1

    async def _couple_pin(self, peer: bytes) -> Link | None:
        """Open a link to ``peer`` for a pin (the driver shares it with the datagrams
        that wait for that peer)."""
        return await self.couple(peer)

    def _start_keepalive(self) -> None:
        if self._keepalive_task is None and self.keepalive > 0:
            self._keepalive_task = asyncio.get_running_loop().create_task(self._keepalive_loop())

    async def _keepalive_loop(self) -> None:
        interval = min(self.keepalive / 3.0, GRACE)
        while True:
            await asyncio.sleep(interval)
            self.tick()

    # -- couplers and reconnection ------------------------------------------------------

    def ordered_couplers(self) -> list[LinkCoupler]:
        """The couplers, fastest first by median coupling time (untried ones first, in
        list order: a failure counts as the coupling timeout)."""
        def key(item: tuple[int, LinkCoupler]) -> tuple[float, int]:
            times = self._times.get(item[1].name)
            return (statistics.median(times) if times else 0.0, item[0])
        return [c for _, c in sorted(enumerate(self.couplers), key=key)]

    def coupler_times(self) -> dict[str, float]:
        """Median coupling time of each coupler tried (seconds)."""
        return {name: statistics.median(t) for name, t in self._times.items() if t}

    def _couple_time(self, name: str, seconds: float) -> None:
        times = self._times.setdefault(name, [])
        times.append(seconds)
        del times[:-TIMES_KEPT]

    def _reconnect_later(self, peer: bytes) -> None:
        if peer not in self._reconnecting and self.couplers:
            self._reconnecting[peer] = self._spawn(self._reconnect(peer))

    async def _reconnect(self, peer: bytes) -> None:
        delay = RECONNECT_MIN
        tries = 0
        try:
            while self._wanted.get(peer) and self.link_for(peer) is None:
                await asyncio.sleep(delay)
                if not self._wanted.get(peer) or self.link_for(peer) is not None:
                    break
                if await self.couple(peer) is not None:
                    self.stats["link_reconnected"] += 1
                    break
                tries += 1
                if self._wanted.get(peer, OWN_PINS) <= OWN_PINS and tries >= RECONNECT_TRIES:
                    self.stats["link_reconnect_given_up"] += 1
                    del self._wanted[peer]
                    break
                delay = min(RECONNECT_MAX, delay * 2)
        finally:
            self._reconnecting.pop(peer, None)

    # -- tasks and shutdown --------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Close every link and stop the manager's tasks."""
        self._closing = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        for task in list(self._reconnecting.values()):
            task.cancel()
        for link in self.links() + list(self._draining.values()):
            self._lost(link, "driver closed")
        for _ in range(10):  # closing tasks may start more (a channel's close event)
            pending = [t for t in self._tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                if task.get_coro().__name__ != "_close_pc":  # type: ignore[union-attr]
                    task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _close_pc(link: Link) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            if link.owns_pc:
                await link.pc.close()
            else:
                link.channel.close()

