"""The ICE servers every new peer connection gets: asked of a provider, cached, never waited
for long.

Theory of operation
-------------------
A *provider* is an async callable returning :class:`~hailing.rtc.ice.IceServers` (the
daemon's: its DHT node's STUN servers and a volunteer relay's credentials,
:func:`node_provider`). :class:`IceServerSource` sits between it and the
:class:`~hailing.session.connections.ConnectionManager`:

- a value younger than :data:`FRESH` seconds is used as it is;
- an older one is used at once too, and a refresh starts in the background;
- one with no relay is refreshed (in the background) after :data:`FRESH_NO_RELAY`
  seconds already (a volunteer may have announced itself since);
- a value with no STUN server older than :data:`FRESH_EMPTY` counts as none (a node
  that has just started learns its STUN servers from its first probe, a moment after
  its bootstrap: its first calls must not go without them for :data:`FRESH`);
- with no value yet, a call waits for the provider at most :data:`WAIT` seconds (then
  goes on with no server at all: host candidates only, as before there were servers);
  the provider's answer, when it comes, serves the next call.

So a call is never delayed more than :data:`WAIT` by the servers, and at most one
provider call runs at a time. A provider that raises is counted (``ice_provider_errors``)
and read as "no server"; :meth:`IceServerSource.warm` asks ahead (a daemon does at
start, so the first call does not wait at all).

**STUN servers are read live.** A provider may also say which STUN servers it has right
now, cheaply (``provider.live_stun()``: :func:`node_provider`'s reads the node's list,
no IO): a cached value's STUN servers are replaced by those at every :meth:`get`. The
node forgets a STUN server at its first unanswered request (nat/stun.py), and a vanished
server still listed would cost ICE its STUN timeout (5 s) on every call until the next
refresh; the relay's credentials stay cached as above.

**Privacy.** Asking the provider reveals nothing about calls: STUN servers are DHT nodes
the node already talks to, and a relay's credentials are asked for by the node's DHT
address (public anyway), at start and then at most every :data:`FRESH` seconds, whether
anyone calls or not. The relay allocation itself (where the relay learns this host's
public address) happens only when a peer connection gathers: for a caller when it
calls, for a callee only once its policy accepted the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from ..rtc.ice import NO_SERVERS, IceServers

__all__ = ["FRESH", "FRESH_EMPTY", "FRESH_NO_RELAY", "WAIT", "IceProvider", "IceServerSource", "node_provider",
           "peer_provider"]

log = logging.getLogger("hailing.session")

#: Seconds a provider's answer is used without asking again.
FRESH = 30.0
#: Seconds an answer with no STUN server is used without asking again (see above).
FRESH_EMPTY = 1.0
#: Seconds an answer with no relay is used without asking again (in the background).
FRESH_NO_RELAY = 10.0
#: Longest a new peer connection waits for a provider that has not answered yet.
WAIT = 0.5

IceProvider = Callable[[], Awaitable[IceServers]]


class IceServerSource:
    """A provider's answers, cached (see the module docstring). ``stats`` gets
    ``ice_provider_errors`` and ``ice_provider_slow`` (a call that went on without
    waiting longer)."""

    def __init__(self, provider: IceProvider | None, *, stats: Counter[str] | None = None,
                 fresh: float = FRESH, wait: float = WAIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._provider = provider
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.fresh = fresh
        self.wait = wait
        self._clock = clock
        self._value: IceServers | None = None
        self._at = 0.0
        self._task: asyncio.Task[IceServers] | None = None

    @property
    def cached(self) -> IceServers | None:
        """The last answer (None before the first)."""
        return self._value

    def warm(self) -> None:
        """Ask the provider now, in the background (nothing if one is asking already)."""
        if self._provider is not None:
            self._refresh()

    async def get(self) -> IceServers:
        """The ICE servers for a new peer connection (see the module docstring)."""
        if self._provider is None:
            return NO_SERVERS
        value = self._value
        live = getattr(self._provider, "live_stun", None)
        if value is not None and live is not None:
            try:
                stun = live()
            except Exception as exc:  # the cached list stands
                log.debug("ICE servers: no live STUN servers: %r", exc)
            else:
                if stun is not None and stun != value.stun:
                    value = self._value = dataclasses.replace(value, stun=stun)
        age = self._clock() - self._at
        if value is not None and (value.stun or age < FRESH_EMPTY):
            if age >= (self.fresh if value.turn is not None else min(self.fresh, FRESH_NO_RELAY)):
                self._refresh()
            return value
        task = self._refresh()
        done, _ = await asyncio.wait([task], timeout=self.wait)
        if not done:
            self.stats["ice_provider_slow"] += 1
            return value or NO_SERVERS
        return self._value or NO_SERVERS

    def _refresh(self) -> asyncio.Task[IceServers]:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._ask())
        return self._task

    async def _ask(self) -> IceServers:
        assert self._provider is not None
        try:
            value = await self._provider()
            if not isinstance(value, IceServers):
                raise TypeError(f"an ICE provider returned {type(value).__name__}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # read as "no server", said once per failure
            self.stats["ice_provider_errors"] += 1
            log.debug("ICE servers: the provider failed: %r", exc)
            value = NO_SERVERS
        self._value, self._at = value, self._clock()
        return value

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


Stun = tuple[tuple[str, int], ...]


def _node_stun(node: Any) -> Stun | None:
    """``node.stun_servers()`` as a tuple; None when the node has none to tell."""
    servers = getattr(node, "stun_servers", None)
    if servers is None:
        return None
    return tuple((str(ip), int(port)) for ip, port in servers())


class _NodeProvider:
    """:func:`node_provider`'s provider (a class: it has :meth:`live_stun` too)."""

    def __init__(self, node: Any, relays: Any) -> None:
        self.node = node
        self.relays = relays

    def live_stun(self) -> Stun | None:
        return _node_stun(self.node)

    async def __call__(self) -> IceServers:
        stun: Stun = ()
        try:
            stun = _node_stun(self.node) or ()
        except Exception as exc:
            log.debug("ICE servers: no STUN servers: %r", exc)
        turn = None
        if self.relays is not None:
            try:
                turn = await self.relays.credentials()
            except Exception as exc:
                log.debug("ICE servers: no relay: %r", exc)
        return IceServers(stun, turn)


def node_provider(node: Any, relays: Any = None) -> IceProvider:
    """The provider of a peer with a DHT node: STUN servers from ``node.stun_servers()``
    (hailing nodes that answered its Binding requests, best first; also read live, see
    the module docstring) and TURN credentials from ``relays.credentials()`` (a
    :class:`~hailing.nat.relay.RelayFinder`, which caches them, and "nobody volunteers"
    for a while; None: no relay). Either part that fails is left out; the other is
    still given."""
    return _NodeProvider(node, relays)


class _PeerProvider:
    def __init__(self, get_node: Callable[[], Any]) -> None:
        self.get_node = get_node
        self.finders: dict[int, tuple[Any, Any]] = {}

    def live_stun(self) -> Stun | None:
        node = self.get_node()
        return None if node is None else _node_stun(node)

    async def __call__(self) -> IceServers:
        node = self.get_node()
        if node is None:
            return NO_SERVERS
        held = self.finders.get(id(node))
        if held is None or held[0] is not node:
            held = self.finders[id(node)] = (node, _relay_finder(node))
        return await node_provider(node, held[1])()


def peer_provider(get_node: Callable[[], Any]) -> IceProvider:
    """The provider of a Peer: :func:`node_provider` on the node ``get_node()`` returns
    when asked (None: a Peer signaling through a relay or the contract only, no server),
    with a :class:`~hailing.nat.relay.RelayFinder` on it (made once per node)."""
    return _PeerProvider(get_node)


def _relay_finder(node: Any) -> Any:
    try:
        from ..nat.relay import RelayFinder
    except ImportError:  # no relay support in this build
        return None
    return RelayFinder(node)
