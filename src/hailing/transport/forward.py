"""Forwarding through the overlay: the ``hailing_fwd`` KRPC extension.

Theory of operation
-------------------
A :class:`Forwarder` carries small opaque payloads to a node it has no link to, hop by
hop over links that exist (docs/overlay.md, "Forwarding: the network coupler"). One
message is one ``hailing_fwd`` query per hop:

    {"mid": 8 bytes, "tgt": 5..20 bytes, "hops": n, "kind": 1..16 bytes,
     "o": 20 bytes, "p": payload}

``tgt`` is the target's node id or a prefix of it (a link address's 5-byte handle);
``o`` is the node id the origin claims (unauthenticated). Each hop answers the query
at once (the core's extension handlers are synchronous) with an empty acknowledgement
or a KRPC error, and then, in a task of its own, sends the message on to its **next
hop**: the neighbour (an open link, or with UDP a routing-table node) whose id is
XOR-closest to the target *and closer than itself*, so every hop makes progress and no
message can circle (greedy routing, never flooding). With **lookahead** (the default),
a neighbour counts as close as the closest of itself and the links it told us it has
(its link list, :mod:`hailing.transport.linklists`): a neighbour with a direct link to
the target comes first, and a hop sees ``p^2`` nodes instead of ``p``; a neighbour
"closer than this node" is then one that is, or has a link that is, and the progress
is made over two hops. If that neighbour refuses (no
route, a loop, no answer), the next closest is tried, at most :data:`TRIES` of them.
A hop with no neighbour closer than itself (a local minimum: links are few) sends the
message on to its closest other neighbour, farther away, at most :data:`MAX_ESCAPES`
times per message (``"esc"`` counts them); the message ids every hop remembers keep it
from visiting a node twice, and the hop limit bounds the walk.

The target's answer travels back as its own message along the **reverse path**: each
hop remembers, for a message id, the hop it came from and the hop it went to; the
reply is a ``hailing_fwd`` query ``{"mid", "back": 1, "p"}`` (or ``"e": [code,
message]`` when a hop further on gave up) that a hop accepts only from the hop it
forwarded that message to, and passes on once to the hop before. The origin resolves
:meth:`Forwarder.send_toward`'s result with it.

Every refusal is a KRPC error, counted in the node's stats as ``fwd_<reason>``:
203 malformed arguments, 241 rate limited (per source: the previous hop, charged like
every other extension method; and per claimed origin), 251 hop limit exceeded,
252 loop (a message id seen already), 253 no route (no neighbour closer to the target),
254 no handler for the kind at the target, 255 unknown message (a reply for a message
this hop never forwarded, or from another hop than the one it went to).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..dht.quota import SourceBudget, exempt, source_of
from ..errors import (
    PROTOCOL_ERROR,
    SERVER_ERROR,
    HailingError,
    KrpcError,
    LocalProtocolError,
    QueryTimeout,
    RemoteProtocolError,
)

METHOD = b"hailing_fwd"
#: Hops a message may take (the origin's first hop is hop 1).
MAX_HOPS = 16
#: Largest payload carried (a KRPC datagram is at most 4,096 bytes, docs/protocol.md).
MAX_PAYLOAD = 3072
MID_BYTES = 8
MAX_KIND = 16
MIN_TARGET = 5
#: Neighbours tried in turn by a hop before it gives up on a message.
TRIES = 4
#: Times a message may leave a local minimum (a hop with no neighbour closer to the
#: target than itself) through the closest other neighbour, farther away.
MAX_ESCAPES = 3
#: How long a hop keeps a message's reverse path (and its id, against loops).
ROUTE_TTL = 60.0
#: Reverse paths and seen ids held at most (the oldest are forgotten first).
MAX_ROUTES = 8192
#: Deliveries (handler calls) running at once at a target, in all and per source.
MAX_DELIVERIES = 128
MAX_DELIVERIES_PER_SOURCE = 32
#: How long a target's handler may take before the origin gets error 202.
HANDLER_TIMEOUT = 20.0
#: Per source (the previous hop): a token bucket of messages taken from it.
SOURCE_RATE = 100.0
SOURCE_BURST = 200.0
#: Per (previous hop, next hop) pair: what a hop relays for one source to one neighbour,
#: a quarter of the neighbour's budget for us, so that one flooding source never takes
#: more than a quarter of any budget downstream (docs/overlay.md).
PAIR_RATE = SOURCE_RATE / 4
PAIR_BURST = SOURCE_BURST / 4

ERR_RATE_LIMITED = 241
ERR_HOP_LIMIT = 251
ERR_LOOP = 252
ERR_NO_ROUTE = 253
ERR_NO_HANDLER = 254
ERR_UNKNOWN_MESSAGE = 255
#: Refusals after which a hop tries its next neighbour (the others end the message).
_RETRYABLE = {ERR_NO_ROUTE, ERR_LOOP, ERR_HOP_LIMIT, 204, ERR_RATE_LIMITED}

Handler = Callable[[bytes, bytes], Awaitable[bytes | None]]


class _LinkView(Protocol):
    """An open link as the forwarder sees it. A link may also have ``peer_links`` (the
    ids of its peer's other links, :class:`~hailing.transport.links.Link`); one without
    it has told nothing (no lookahead through it)."""

    @property
    def peer_id(self) -> bytes | None: ...
    @property
    def addr(self) -> Any: ...
    @property
    def is_open(self) -> bool: ...


class LinkSource(Protocol):
    """What the forwarder needs of the data-channel driver: its open links."""

    def links(self) -> Sequence[_LinkView]: ...


class _Node(Protocol):
    """What the forwarder needs of a started :class:`~hailing.node.DhtNode`."""

    @property
    def core(self) -> Any: ...
    async def query(self, addr: Any, method: bytes, args: dict[bytes, Any]
                    ) -> dict[bytes, Any]: ...


@dataclass(slots=True)
class _Route:
    """One message this node forwarded or sent: where it came from (None: we are the
    origin), where it went (``next``: the hop a reply is accepted from)."""

    prev: Hashable | None
    expires: float
    next: Hashable | None = None
    future: asyncio.Future[bytes] | None = None
    tried: list[Hashable] = field(default_factory=list)


def distance(node_id: bytes, target: bytes) -> int:
    """XOR distance between ``target`` (an id or a prefix) and ``node_id``'s same prefix."""
    n = len(target)
    return int.from_bytes(node_id[:n], "big") ^ int.from_bytes(target, "big")


class Forwarder:
    """Forwards ``hailing_fwd`` messages for ``node`` over ``driver``'s links.

    Create it once the node is started: it adds the method to the node's core. Register
    what this node answers with :meth:`handle`; send with :meth:`send_toward`; stop with
    :meth:`aclose` (the method is removed, tasks are cancelled and awaited)."""

    def __init__(self, node: _Node, driver: LinkSource, *, max_hops: int = MAX_HOPS,
                 udp: bool | None = None, lookahead: bool = True) -> None:
        self.node = node
        self.driver = driver
        self.max_hops = max_hops
        #: Rank neighbours by their own links too (their link lists); False: greedy on
        #: the neighbours alone (for comparison, benchmarks/overlay_forwarding.py).
        self.lookahead = lookahead
        core = node.core
        self._core = core
        self._codec = core.codec
        self._exempt_loopback: bool = core.config.exempt_loopback
        #: Counters (also added to the node's stats as ``fwd_*``).
        self.stats: Counter[str] = Counter()
        #: Whether routing-table nodes at UDP addresses are neighbours too (default: when
        #: the node has a UDP socket).
        self.udp = udp if udp is not None else getattr(node, "_transport", None) is not None
        self._handlers: dict[bytes, Handler] = {}
        self._routes: OrderedDict[bytes, _Route] = OrderedDict()
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._sources = SourceBudget(SOURCE_RATE, SOURCE_BURST)
        self._pairs = SourceBudget(PAIR_RATE, PAIR_BURST)
        self._deliveries: Counter[bytes] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        core.add_method(METHOD, self._on_query)
        self.closed = False

    # -- API -------------------------------------------------------------------------

    def handle(self, kind: bytes, handler: Handler) -> None:
        """Answer messages of ``kind`` addressed to this node: ``handler(payload,
        origin_node_id)`` returns the reply payload (None: an empty one) or raises
        RemoteProtocolError (its code goes back to the origin; anything else is 202)."""
        _check_kind(kind, LocalProtocolError)
        self._handlers[kind] = handler

    async def send_toward(self, target: bytes, kind: bytes, payload: bytes,
                          timeout: float) -> bytes:
        """Send ``payload`` to the node whose id is (or starts with) ``target`` and
        return its reply payload. Raises KrpcError (a refusal on the way or at the
        target, with its code), QueryTimeout, or HailingError when no link leads on."""
        _check_target(target, LocalProtocolError)
        _check_kind(kind, LocalProtocolError)
        if type(payload) is not bytes or len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(f"a forwarded payload is bytes, at most {MAX_PAYLOAD}")
        own = self._core.node_id
        if own.startswith(target):
            raise LocalProtocolError("the target is this node")
        hops = self._next_hops(target, None, strict=False)
        if not hops:
            self._count("no_link")
            raise HailingError("no link to forward through")
        mid = os.urandom(MID_BYTES)
        now = self._loop.time()
        fut: asyncio.Future[bytes] = self._loop.create_future()
        route = _Route(None, now + max(timeout, ROUTE_TTL), future=fut)
        self._remember(mid, route, now)
        args = {b"mid": mid, b"tgt": target, b"hops": 1, b"kind": kind, b"o": own,
                b"p": payload}
        self._count("sent")
        try:
            async with asyncio.timeout(timeout):
                await self._relay(mid, route, hops, args)
                return await fut
        except TimeoutError:
            self._count("timeouts")
            raise QueryTimeout(f"no reply toward {target.hex()} within {timeout:g} s") from None
        finally:
            self._routes.pop(mid, None)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._core.remove_method(METHOD)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for route in self._routes.values():
            if route.future is not None and not route.future.done():
                route.future.set_exception(HailingError("the forwarder was closed"))
                route.future.exception()
        self._routes.clear()

    # -- receiving (synchronous: the core's extension handler) -----------------------

    def _on_query(self, args: dict[bytes, Any], addr: Hashable, now: float) -> dict[bytes, Any]:
        if args.get(b"back") == 1:
            return self._on_back(args, addr, now)
        mid = args.get(b"mid")
        tgt = args.get(b"tgt")
        hops = args.get(b"hops")
        kind = args.get(b"kind")
        origin = args.get(b"o")
        payload = args.get(b"p")
        if type(mid) is not bytes or len(mid) != MID_BYTES:
            self._refuse("bad_args", "argument 'mid' must be 8 bytes")
        _check_target(tgt, self._bad_args)
        _check_kind(kind, self._bad_args)
        if type(hops) is not int or hops < 1:
            self._refuse("bad_args", "argument 'hops' must be a positive integer")
        if type(origin) is not bytes or len(origin) != 20:
            self._refuse("bad_args", "argument 'o' must be a 20-byte id")
        if type(payload) is not bytes or len(payload) > MAX_PAYLOAD:
            self._refuse("bad_args", f"argument 'p' must be a string of at most {MAX_PAYLOAD}")
        escapes = args.get(b"esc", 0)
        if type(escapes) is not int or not 0 <= escapes <= MAX_ESCAPES:
            self._refuse("bad_args", f"argument 'esc' must be 0..{MAX_ESCAPES}")
        assert isinstance(mid, bytes) and isinstance(tgt, bytes) and isinstance(kind, bytes)
        assert isinstance(origin, bytes) and isinstance(payload, bytes) and isinstance(hops, int)
        limited = not exempt(self._codec, addr, self._exempt_loopback)
        source = source_of(self._codec, addr, self._exempt_loopback)
        if limited and not self._sources.allow(source, now):
            self._refuse("rate_limited", "rate limited", ERR_RATE_LIMITED)
        if hops > self.max_hops:
            self._refuse("hop_limit", "hop limit exceeded", ERR_HOP_LIMIT)
        self._expire(now)
        if mid in self._seen or mid in self._routes:
            self._refuse("loops", "message seen already", ERR_LOOP)
        if self._core.node_id.startswith(tgt):
            handler = self._handlers.get(kind)
            if handler is None:
                self._refuse("no_handler", "no handler for this kind", ERR_NO_HANDLER)
            assert handler is not None
            if (sum(self._deliveries.values()) >= MAX_DELIVERIES
                    or self._deliveries[source] >= MAX_DELIVERIES_PER_SOURCE):
                self._refuse("rate_limited", "too many messages in delivery", ERR_RATE_LIMITED)
            self._seen[mid] = now + ROUTE_TTL
            self._trim()
            self._count("delivered")
            self._spawn(self._deliver(mid, handler, payload, origin, addr, source))
            return {}
        next_hops = self._next_hops(tgt, addr, strict=True)
        if not next_hops and escapes < MAX_ESCAPES:
            next_hops = self._next_hops(tgt, addr, strict=False)
            if next_hops:
                escapes += 1
                self._count("escapes")
        if not next_hops:
            self._refuse("no_route", "no route closer to the target", ERR_NO_ROUTE)
        if limited and not self._pairs.allow(source + b"\x00" + _key(next_hops[0]), now):
            self._refuse("rate_limited", "rate limited (relay share)", ERR_RATE_LIMITED)
        route = _Route(addr, now + ROUTE_TTL)
        self._remember(mid, route, now)
        fwd = {b"mid": mid, b"tgt": tgt, b"hops": hops + 1, b"kind": kind, b"o": origin,
               b"p": payload}
        if escapes:
            fwd[b"esc"] = escapes
        self._count("forwarded")
        self._spawn(self._relay_or_fail(mid, route, next_hops, fwd))
        return {}

    def _on_back(self, args: dict[bytes, Any], addr: Hashable, now: float) -> dict[bytes, Any]:
        if (not exempt(self._codec, addr, self._exempt_loopback) and not self._sources.allow(
                source_of(self._codec, addr, self._exempt_loopback), now)):
            self._refuse("rate_limited", "rate limited", ERR_RATE_LIMITED)
        mid = args.get(b"mid")
        route = self._routes.get(mid) if type(mid) is bytes else None
        if route is None or addr not in route.tried:
            self._refuse("unknown_message", "no such message forwarded to you",
                         ERR_UNKNOWN_MESSAGE)
        assert route is not None and isinstance(mid, bytes)
        payload, err = args.get(b"p"), args.get(b"e")
        if err is not None:
            if (type(err) is not list or len(err) != 2 or type(err[0]) is not int
                    or type(err[1]) is not bytes):
                self._refuse("bad_args", "argument 'e' must be [code, message]")
        elif type(payload) is not bytes or len(payload) > MAX_PAYLOAD:
            self._refuse("bad_args", f"argument 'p' must be a string of at most {MAX_PAYLOAD}")
        del self._routes[mid]
        if route.prev is None:  # ours: the reply (or a refusal further on)
            fut = route.future
            if fut is not None and not fut.done():
                if err is not None:
                    text = err[1].decode("utf-8", "replace")[:200]
                    fut.set_exception(KrpcError(f"{text} ({err[0]})", err[0]))
                else:
                    fut.set_result(payload)  # type: ignore[arg-type]
            self._count("replies")
            return {}
        back: dict[bytes, Any] = {b"mid": mid, b"back": 1}
        back[b"e" if err is not None else b"p"] = err if err is not None else payload
        self._count("replies_forwarded")
        self._spawn(self._send_back(route.prev, back))
        return {}

    # -- tasks -----------------------------------------------------------------------

    async def _relay(self, mid: bytes, route: _Route, hops: list[Hashable],
                     args: dict[bytes, Any]) -> None:
        """Hand the message to the first of ``hops`` that takes it; raise the last
        refusal (a KrpcError or QueryTimeout) when none does."""
        error: HailingError = KrpcError("no route closer to the target", ERR_NO_ROUTE)
        for addr in hops[:TRIES]:
            route.next = addr
            route.tried.append(addr)
            try:
                await self.node.query(addr, METHOD, dict(args))
                return
            except KrpcError as exc:
                error = exc
                self._count("next_refused")
                if exc.code not in _RETRYABLE:
                    break
            except QueryTimeout as exc:
                error = exc
                self._count("next_timeouts")
            except HailingError as exc:  # the link went away under us, the node stopped
                error = exc
                self._count("next_failed")
        raise error

    async def _relay_or_fail(self, mid: bytes, route: _Route, hops: list[Hashable],
                             args: dict[bytes, Any]) -> None:
        try:
            await self._relay(mid, route, hops, args)
        except HailingError as exc:
            code = exc.code if isinstance(exc, KrpcError) else ERR_NO_ROUTE
            self._routes.pop(mid, None)
            assert route.prev is not None
            self._count("gave_up")
            await self._send_back(route.prev, {b"mid": mid, b"back": 1,
                                               b"e": [code, str(exc).encode()[:200]]})

    async def _deliver(self, mid: bytes, handler: Handler, payload: bytes, origin: bytes,
                       prev: Hashable, source: bytes) -> None:
        self._deliveries[source] += 1
        back: dict[bytes, Any] = {b"mid": mid, b"back": 1}
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT):
                reply = await handler(payload, origin)
            if reply is not None and (type(reply) is not bytes or len(reply) > MAX_PAYLOAD):
                raise TypeError("a handler's reply is bytes, at most MAX_PAYLOAD")
            back[b"p"] = reply or b""
        except RemoteProtocolError as exc:
            self._count("handler_refused")
            back[b"e"] = [exc.code, str(exc).encode()[:200]]
        except Exception:  # a bug of ours or a stuck handler: the origin hears 202
            self._count("handler_failed")
            back[b"e"] = [SERVER_ERROR, b"Server Error"]
        finally:
            self._deliveries[source] -= 1
            if self._deliveries[source] <= 0:
                del self._deliveries[source]
        await self._send_back(prev, back)

    async def _send_back(self, addr: Hashable, args: dict[bytes, Any]) -> None:
        try:
            await self.node.query(addr, METHOD, args)
        except HailingError:
            self._count("back_failed")  # the origin times out

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._count("task_errors")  # never expected: every task catches its errors

    # -- routing ---------------------------------------------------------------------

    def neighbours(self) -> list[tuple[bytes, Hashable]]:
        """(node id, address) of every node reachable without coupling: the open links,
        and with UDP the routing table's hailing nodes at UDP addresses."""
        return [(pid, addr) for pid, addr, _ in self._candidates()]

    def _candidates(self) -> list[tuple[bytes, Hashable, Collection[bytes]]]:
        """The neighbours, each with the ids of its own links it told us (lookahead)."""
        out: list[tuple[bytes, Hashable, Collection[bytes]]] = []
        seen: set[bytes] = set()
        for link in self.driver.links():
            pid, addr = link.peer_id, link.addr
            if pid is not None and addr is not None and link.is_open and pid not in seen:
                seen.add(pid)
                ahead: Collection[bytes] = getattr(link, "peer_links", ()) if self.lookahead else ()
                out.append((pid, addr, ahead))
        if self.udp:
            # On a public DHT only hailing nodes (the sub-overlay's table) forward; in a
            # network of hailing nodes the whole table is (dht/suboverlay.py).
            core = self._core
            for e in (core.sub.table if core.sub.wanted else core.table):
                if isinstance(e.addr, tuple) and e.id not in seen:
                    seen.add(e.id)
                    out.append((e.id, e.addr, ()))
        return out

    def _next_hops(self, target: bytes, exclude: Hashable | None, *,
                   strict: bool) -> list[Hashable]:
        """Neighbours closest to ``target`` first, each as close as the closest of itself
        and its links (lookahead; at a tie the neighbour closer itself first); with
        ``strict`` only those closer than this node (a hop must make progress)."""
        own = self._core.node_id
        mine = distance(own, target)
        candidates = self._candidates()
        # A neighbour's link back to us, or to the hop the message came from, leads nowhere.
        useless = {own} | {pid for pid, addr, _ in candidates if addr == exclude}
        ranked: list[tuple[int, int, int, Hashable]] = []
        for i, (pid, addr, ahead) in enumerate(candidates):
            if addr == exclude:
                continue
            d = distance(pid, target)
            best = min((distance(m, target) for m in ahead if m not in useless), default=d)
            best = min(best, d)
            if strict and best >= mine:
                continue
            ranked.append((best, d, i, addr))
        ranked.sort(key=lambda r: (r[0], r[1], r[2]))
        if ranked and ranked[0][0] < ranked[0][1]:
            self._count("via_lookahead")  # the first choice is there for one of its links
        return [addr for _, _, _, addr in ranked]

    def _remember(self, mid: bytes, route: _Route, now: float) -> None:
        self._routes[mid] = route
        self._seen[mid] = now + ROUTE_TTL
        self._trim()

    def _trim(self) -> None:
        while len(self._routes) > MAX_ROUTES:
            _, old = self._routes.popitem(last=False)
            self._count("routes_dropped")
            if old.future is not None and not old.future.done():
                old.future.set_exception(HailingError("too many messages in flight"))
        while len(self._seen) > MAX_ROUTES:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen and next(iter(seen.values())) <= now:
            seen.popitem(last=False)
        routes = self._routes
        while routes:
            route = next(iter(routes.values()))
            if route.expires > now or route.prev is None:
                break
            routes.popitem(last=False)

    # -- errors and counters ---------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] += 1
        self._core.stats["fwd_" + what] += 1

    def _refuse(self, what: str, message: str, code: int = PROTOCOL_ERROR) -> None:
        self._count(what)
        raise RemoteProtocolError(message, code)

    def _bad_args(self, message: str) -> RemoteProtocolError:
        self._count("bad_args")
        return RemoteProtocolError(message, PROTOCOL_ERROR)


def _key(addr: Hashable) -> bytes:
    return repr(addr).encode()


def _check_target(tgt: object, error: Callable[[str], Exception]) -> None:
    if type(tgt) is not bytes or not MIN_TARGET <= len(tgt) <= 20:
        raise error(f"a target is a node id or its prefix, {MIN_TARGET}..20 bytes")


def _check_kind(kind: object, error: Callable[[str], Exception]) -> None:
    if type(kind) is not bytes or not 0 < len(kind) <= MAX_KIND:
        raise error(f"a kind is 1..{MAX_KIND} bytes")


__all__ = [
    "ERR_HOP_LIMIT", "ERR_LOOP", "ERR_NO_HANDLER", "ERR_NO_ROUTE", "ERR_RATE_LIMITED",
    "ERR_UNKNOWN_MESSAGE", "MAX_HOPS", "MAX_PAYLOAD", "METHOD", "Forwarder", "LinkSource",
    "distance",
]
