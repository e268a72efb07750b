"""Link lists: each peer tells its linked peers which links it has (one step of lookahead).

Theory of operation
-------------------
A node forwarding toward a target sees only its own ``p`` links, and with ``p`` links for
about log2(n) levels most nodes have none into the target's bucket: greedy forwarding
stalls. If every neighbour also says which nodes *it* is linked to, a hop sees ``p^2``
nodes one step ahead and can hand a message to the neighbour that has a direct link to
the target, or one closer to it (:mod:`hailing.transport.forward`).

So each side of a link sends, over it, the ids of its *other* open links: the control
frame :data:`LINKS` (``\\x00L``) followed by up to :data:`MAX_ENTRIES` 20-byte node ids
(nothing after ``\\x00L``: no other link). It goes out once the link has sent its hello,
and again when the set of open links changes: debounced (:data:`DEBOUNCE`, so that a
burst of changes gives one frame) and never more than once per :data:`INTERVAL` seconds
on one link (a pending change waits for its turn). With more than
:data:`MAX_ENTRIES` links, the pinned ones and then the most recently used are listed.

The receiver keeps the newest list on the link (:attr:`Link.peer_links`, without its
own id); it goes with the link. A list is a claim: nothing proves the peer has those
links (a lying peer draws messages it could draw by claiming ids, docs/overlay.md).
Dropped and counted, nothing closed (``link_garbage`` and one of
``link_garbage_lists_length`` (not a whole number of ids), ``link_garbage_lists_too_many``
(over :data:`MAX_ENTRIES`), ``link_garbage_lists_too_often`` (beyond the link's budget
of :data:`BURST` lists, refilled one each :data:`MIN_GAP` seconds: an honest sender waits
:data:`INTERVAL` between two, and the budget absorbs the jitter that bunches a few),
``link_garbage_lists_unidentified`` (before the peer's id is known)).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .links import Link

__all__ = ["BURST", "DEBOUNCE", "INTERVAL", "LINKS", "MAX_ENTRIES", "MIN_GAP", "LinkLists",
           "decode", "encode"]

#: The control frame's head (datachannel.CTRL + ``L``).
LINKS = b"\x00L"
#: Ids in one list at most.
MAX_ENTRIES = 64
ID_LEN = 20
#: Seconds a change waits for more changes before the lists go out.
DEBOUNCE = 0.2
#: A list goes out on one link at most once per this many seconds.
INTERVAL = 1.0
#: A link's budget of lists: BURST at once, one more each MIN_GAP seconds (twice what
#: an honest sender may send); lists beyond it are dropped. Under load, a strict gap of
#: MIN_GAP dropped 2-4 honest lists in 3,000 (benchmarks/overlay_forwarding.py).
BURST = 4.0
MIN_GAP = 0.5


def encode(ids: list[bytes]) -> bytes:
    """The frame listing ``ids`` (20 bytes each, at most :data:`MAX_ENTRIES`)."""
    if len(ids) > MAX_ENTRIES or any(len(i) != ID_LEN for i in ids):
        raise ValueError(f"a link list holds at most {MAX_ENTRIES} ids of {ID_LEN} bytes")
    return LINKS + b"".join(ids)


def decode(frame: bytes) -> tuple[bytes, ...] | str:
    """The ids a frame lists, or why it is garbage (a counter's suffix)."""
    body = frame[len(LINKS):]
    if len(body) % ID_LEN:
        return "length"
    if len(body) > MAX_ENTRIES * ID_LEN:
        return "too_many"
    return tuple(body[i:i + ID_LEN] for i in range(0, len(body), ID_LEN))


class _Manager(Protocol):
    """What the lists need of the link driver."""

    stats: Counter[str]
    clock: Callable[[], float]

    @property
    def node_id(self) -> bytes | None: ...
    def routed(self) -> list[Link]: ...
    def _transmit(self, link: Link, data: bytes, *, used: bool) -> bool: ...
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


class LinkLists:
    """Sends our link list on every link, and takes the peers' (the module docstring).
    The driver calls :meth:`changed` when its set of open links changes and
    :meth:`receive` with each :data:`LINKS` frame."""

    def __init__(self, manager: _Manager) -> None:
        self._m = manager
        self._task: asyncio.Task[Any] | None = None

    # -- sending ---------------------------------------------------------------------

    def changed(self) -> None:
        """The set of open links changed: the lists go out after :data:`DEBOUNCE`."""
        if self._task is None or self._task.done():
            self._task = self._m._spawn(self._flush_later())

    def listing(self, link: Link) -> list[bytes]:
        """The ids we tell ``link``'s peer: our other open links (pinned first, then the
        most recently used, :data:`MAX_ENTRIES` at most), sorted."""
        others = [x for x in self._m.routed()
                  if x is not link and x.peer_id is not None and x.peer_id != link.peer_id]
        others.sort(key=lambda x: (not x.pins, -x.last_used))
        return sorted({x.peer_id for x in others[:MAX_ENTRIES] if x.peer_id is not None})

    def flush(self) -> float | None:
        """Send the list on every link whose peer has not heard the current one and may
        hear one now; the seconds until the next one may go (None: none is waiting)."""
        m = self._m
        now = m.clock()
        wait: float | None = None
        for link in m.routed():
            if not link.hello_sent:
                continue
            ids = self.listing(link)
            if tuple(ids) == link.lists_told:
                continue
            left = link.lists_sent + INTERVAL - now
            if left > 0:
                wait = left if wait is None else min(wait, left)
                continue
            if m._transmit(link, encode(ids), used=False):
                link.lists_told = tuple(ids)
                link.lists_sent = now
                m.stats["link_lists_sent"] += 1
        return wait

    async def _flush_later(self) -> None:
        delay = DEBOUNCE
        while True:
            await asyncio.sleep(delay)
            wait = self.flush()
            if wait is None:
                return
            delay = max(DEBOUNCE, min(wait, INTERVAL))

    # -- receiving -------------------------------------------------------------------

    def receive(self, link: Link, frame: bytes, now: float) -> None:
        """A :data:`LINKS` frame arrived on ``link``: keep it, or drop and count it."""
        m = self._m
        why = "unidentified" if link.peer_id is None else decode(frame)
        if not isinstance(why, str):
            tokens = min(BURST, link.lists_budget + (now - link.lists_heard) / MIN_GAP)
            link.lists_heard = now
            if tokens < 1.0:
                link.lists_budget = tokens
                why = "too_often"
            else:
                link.lists_budget = tokens - 1.0
        if isinstance(why, str):
            m.stats["link_garbage"] += 1
            m.stats["link_garbage_lists_" + why] += 1
            return
        skip = {m.node_id, link.peer_id}
        link.peer_links = frozenset(i for i in why if i not in skip)
        m.stats["link_lists_received"] += 1
