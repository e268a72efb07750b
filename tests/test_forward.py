"""hailing_fwd: greedy next-hop forwarding, the reverse path, and every refusal.

The forwarding logic does not care what a link is: here the "links" are fixed pairs of
real DhtNodes on loopback UDP (a stand-in driver that lists them), so these tests run
the real KRPC path without WebRTC. The same Forwarder over data-channel links is in
tests/test_overlay*.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest

from hailing.dht import DhtConfig
from hailing.errors import HailingError, KrpcError, LocalProtocolError, QueryTimeout
from hailing.node import DhtNode
from hailing.transport import forward
from hailing.transport.forward import (
    ERR_HOP_LIMIT,
    ERR_LOOP,
    ERR_NO_HANDLER,
    ERR_NO_ROUTE,
    ERR_RATE_LIMITED,
    ERR_UNKNOWN_MESSAGE,
    METHOD,
    Forwarder,
)


@dataclass
class _Link:
    peer_id: bytes | None
    addr: Hashable | None
    is_open: bool = True
    #: The peer's other links, as its link list told them (lookahead).
    peer_links: frozenset[bytes] = frozenset()


@dataclass
class _Links:
    """A stand-in for the data-channel driver: the links it lists."""

    items: list[_Link] = field(default_factory=list)

    def links(self) -> list[_Link]:
        return list(self.items)


def _id(first: int) -> bytes:
    return bytes([first]) + bytes(range(1, 20))


# Node ids whose distance to D (0xE0...) falls along the chain A - B - C - D.
IDS = {"a": _id(0x00), "b": _id(0x80), "c": _id(0xC0), "d": _id(0xE0)}
CHAIN = [("a", "b"), ("b", "c"), ("c", "d")]
#: One loopback address per node: each is its own source for the per-source limits.
HOSTS = {"a": "127.0.0.1", "b": "127.0.0.3", "c": "127.0.0.4", "d": "127.0.0.5"}


@dataclass
class World:
    nodes: dict[str, DhtNode]
    links: dict[str, _Links]
    fwd: dict[str, Forwarder]


def _config() -> DhtConfig:
    # Limits on (loopback is one host otherwise exempt), the UDP driver's own off.
    return DhtConfig(exempt_loopback=False, source_datagram_rate=0)


async def _world(hosts: dict[str, str] | None = None, max_hops: int = forward.MAX_HOPS
                 ) -> World:
    nodes: dict[str, DhtNode] = {}
    for name, nid in IDS.items():
        host = (hosts or {}).get(name, "127.0.0.1")
        nodes[name] = await DhtNode((host, 0), node_id=nid, config=_config()).start()
    links = {name: _Links() for name in IDS}
    for x, y in CHAIN:
        links[x].items.append(_Link(IDS[y], nodes[y].address))
        links[y].items.append(_Link(IDS[x], nodes[x].address))
    fwd = {name: Forwarder(nodes[name], links[name], max_hops=max_hops, udp=False)
           for name in IDS}
    return World(nodes, links, fwd)


async def _close(w: World) -> None:
    for f in w.fwd.values():
        await f.aclose()
    for n in w.nodes.values():
        await n.stop()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await _world()
    yield w
    await _close(w)


def _echo(w: World, name: str) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []

    async def echo(payload: bytes, origin: bytes) -> bytes:
        got.append((payload, origin))
        return b"re:" + payload

    w.fwd[name].handle(b"echo", echo)
    return got


async def test_a_message_goes_hop_by_hop_and_the_reply_comes_back(world: World) -> None:
    got = _echo(world, "d")
    reply = await world.fwd["a"].send_toward(IDS["d"], b"echo", b"hello", timeout=10)
    assert reply == b"re:hello"
    assert got == [(b"hello", IDS["a"])]
    assert world.fwd["b"].stats["forwarded"] == 1
    assert world.fwd["c"].stats["forwarded"] == 1
    assert world.fwd["d"].stats["delivered"] == 1
    assert world.fwd["b"].stats["replies_forwarded"] == 1
    # the counters show in the node's stats
    assert world.nodes["c"].stats["fwd_forwarded"] == 1
    # a 5-byte prefix (a link address's handle) reaches the same node
    assert await world.fwd["a"].send_toward(IDS["d"][:5], b"echo", b"x", 10) == b"re:x"
    # and the way back: D reaches A
    _echo(world, "a")
    assert await world.fwd["d"].send_toward(IDS["a"], b"echo", b"y", 10) == b"re:y"


async def test_a_handler_returning_none_is_an_empty_reply_and_errors_travel_back(
        world: World) -> None:
    async def nothing(payload: bytes, origin: bytes) -> None:
        return None

    async def refuse(payload: bytes, origin: bytes) -> bytes:
        raise forward.RemoteProtocolError("not you", 299)

    async def broken(payload: bytes, origin: bytes) -> bytes:
        raise ValueError("a bug")

    world.fwd["d"].handle(b"none", nothing)
    world.fwd["d"].handle(b"refuse", refuse)
    world.fwd["d"].handle(b"broken", broken)
    a = world.fwd["a"]
    assert await a.send_toward(IDS["d"], b"none", b"", 10) == b""
    with pytest.raises(KrpcError) as e:
        await a.send_toward(IDS["d"], b"refuse", b"", 10)
    assert e.value.code == 299
    with pytest.raises(KrpcError) as e:
        await a.send_toward(IDS["d"], b"broken", b"", 10)
    assert e.value.code == 202
    assert world.fwd["d"].stats["handler_failed"] == 1
    with pytest.raises(KrpcError) as e:
        await a.send_toward(IDS["d"], b"unknown", b"", 10)
    assert e.value.code == ERR_NO_HANDLER
    assert world.fwd["d"].stats["no_handler"] == 1


async def test_no_route_to_an_absent_target_comes_back_as_253(world: World) -> None:
    # 0xF0...: D is the closest node and has no neighbour closer: 253 travels back.
    with pytest.raises(KrpcError) as e:
        await world.fwd["a"].send_toward(_id(0xF0), b"echo", b"x", 10)
    assert e.value.code == ERR_NO_ROUTE
    assert world.fwd["d"].stats["no_route"] == 1
    assert world.fwd["c"].stats["gave_up"] == 1


async def test_the_next_closest_neighbour_is_tried_when_one_refuses() -> None:
    w = await _world()
    try:
        _echo(w, "d")
        # B also links to a node (X) closer to D than C is, that knows no way on.
        x = await DhtNode(("127.0.0.1", 0), node_id=_id(0xE8), config=_config()).start()
        fx = Forwarder(x, _Links([_Link(IDS["b"], w.nodes["b"].address)]), udp=False)
        w.links["b"].items.append(_Link(_id(0xE8), x.address))
        try:
            assert await w.fwd["a"].send_toward(IDS["d"], b"echo", b"x", 10) == b"re:x"
            assert fx.stats["no_route"] == 1
            assert w.fwd["b"].stats["next_refused"] == 1
        finally:
            await fx.aclose()
            await x.stop()
    finally:
        await _close(w)


async def test_a_message_leaves_a_local_minimum_through_a_farther_neighbour() -> None:
    # Y (0x40) is linked to A only. From D: C is closer to Y than D, but no neighbour of
    # C is closer than C (B is farther): C escapes to B, whose neighbour A leads on.
    w = await _world()
    y = await DhtNode(("127.0.0.1", 0), node_id=_id(0x40), config=_config()).start()
    fy = Forwarder(y, _Links([_Link(IDS["a"], w.nodes["a"].address)]), udp=False)
    w.links["a"].items.append(_Link(_id(0x40), y.address))
    try:
        got: list[bytes] = []

        async def echo(payload: bytes, origin: bytes) -> bytes:
            got.append(origin)
            return b"found"

        fy.handle(b"echo", echo)
        assert await w.fwd["d"].send_toward(_id(0x40), b"echo", b"", 10) == b"found"
        assert got == [IDS["d"]]
        assert w.fwd["c"].stats["escapes"] == 1
        assert w.fwd["b"].stats["escapes"] == 0
    finally:
        await fy.aclose()
        await y.stop()
        await _close(w)


async def test_the_hop_limit_holds() -> None:
    w = await _world(max_hops=2)
    try:
        _echo(w, "d")
        with pytest.raises(KrpcError) as e:  # A->B is hop 1, B->C 2, C->D 3: refused
            await w.fwd["a"].send_toward(IDS["d"], b"echo", b"x", 10)
        assert e.value.code == ERR_HOP_LIMIT
        assert w.fwd["d"].stats["hop_limit"] == 1
    finally:
        await _close(w)


def _args(**kw: Any) -> dict[bytes, Any]:
    args: dict[bytes, Any] = {b"mid": os.urandom(8), b"tgt": IDS["d"], b"hops": 1,
                              b"kind": b"echo", b"o": IDS["a"], b"p": b"x"}
    for k, v in kw.items():
        if v is None:
            args.pop(k.encode(), None)
        else:
            args[k.encode()] = v
    return args


@pytest.mark.parametrize(("args", "code", "counter"), [
    (_args(tgt=b"\x01\x02"), 203, "bad_args"),
    (_args(tgt=b"x" * 21), 203, "bad_args"),
    (_args(tgt=7), 203, "bad_args"),
    (_args(mid=b"short"), 203, "bad_args"),
    (_args(mid=None), 203, "bad_args"),
    (_args(hops=0), 203, "bad_args"),
    (_args(hops=b"1"), 203, "bad_args"),
    (_args(kind=b""), 203, "bad_args"),
    (_args(kind=b"k" * 17), 203, "bad_args"),
    (_args(o=b"short"), 203, "bad_args"),
    (_args(p=b"x" * (forward.MAX_PAYLOAD + 1)), 203, "bad_args"),
    (_args(p=[b"x"]), 203, "bad_args"),
    (_args(hops=forward.MAX_HOPS + 1), ERR_HOP_LIMIT, "hop_limit"),
    (_args(esc=forward.MAX_ESCAPES + 1), 203, "bad_args"),
    (_args(esc=-1), 203, "bad_args"),
    # no neighbour of C is closer, and the message may not escape any more
    (_args(tgt=_id(0x40), esc=forward.MAX_ESCAPES), ERR_NO_ROUTE, "no_route"),
    ({b"back": 1, b"mid": b"12345678", b"p": b"forged reply"}, ERR_UNKNOWN_MESSAGE,
     "unknown_message"),
    ({b"back": 1, b"p": b"no mid"}, ERR_UNKNOWN_MESSAGE, "unknown_message"),
])
async def test_garbage_queries_get_krpc_errors_and_are_counted(
        world: World, args: dict[bytes, Any], code: int, counter: str) -> None:
    c = world.nodes["c"]
    with pytest.raises(KrpcError) as e:
        await world.nodes["a"].query(c.address, METHOD, args)
    assert e.value.code == code
    assert world.fwd["c"].stats[counter] == 1
    assert c.stats["errors_sent"] == 1
    # ... and nothing is left behind: C still forwards for others
    _echo(world, "d")
    assert await world.fwd["b"].send_toward(IDS["d"], b"echo", b"ok", 10) == b"re:ok"


async def test_a_message_seen_twice_is_a_loop(world: World) -> None:
    _echo(world, "d")
    args = _args()
    d = world.nodes["d"]
    assert await world.nodes["c"].query(d.address, METHOD, dict(args)) == {
        b"id": IDS["d"]}
    with pytest.raises(KrpcError) as e:
        await world.nodes["c"].query(d.address, METHOD, dict(args))
    assert e.value.code == ERR_LOOP
    assert world.fwd["d"].stats["loops"] == 1


async def test_a_reply_is_taken_only_from_the_hop_the_message_went_to(world: World) -> None:
    got: list[bytes] = []
    hold = asyncio.Event()

    async def slow(payload: bytes, origin: bytes) -> bytes:
        got.append(payload)
        await hold.wait()
        return b"real"

    world.fwd["d"].handle(b"slow", slow)
    task = asyncio.ensure_future(world.fwd["a"].send_toward(IDS["d"], b"slow", b"q", 10))
    while not got:
        await asyncio.sleep(0.01)
    # A reply forged by a node that is not on the path (D to B directly) is refused.
    mids = list(world.fwd["b"]._routes)
    assert len(mids) == 1
    with pytest.raises(KrpcError) as e:
        await world.nodes["d"].query(world.nodes["b"].address, METHOD,
                                     {b"mid": mids[0], b"back": 1, b"p": b"forged"})
    assert e.value.code == ERR_UNKNOWN_MESSAGE
    hold.set()
    assert await task == b"real"


async def test_send_toward_checks_its_arguments_and_times_out(world: World) -> None:
    a = world.fwd["a"]
    for target, kind, payload in [(b"abc", b"k", b""), (IDS["d"], b"", b""),
                                  (IDS["d"], b"k", b"x" * (forward.MAX_PAYLOAD + 1)),
                                  (IDS["a"], b"k", b"")]:
        with pytest.raises(LocalProtocolError):
            await a.send_toward(target, kind, payload, 1)
    never = asyncio.Event()

    async def stuck(payload: bytes, origin: bytes) -> bytes:
        await never.wait()
        return b""

    world.fwd["d"].handle(b"stuck", stuck)
    with pytest.raises(QueryTimeout):
        await a.send_toward(IDS["d"], b"stuck", b"", 0.5)
    assert a.stats["timeouts"] == 1
    assert not a._routes  # nothing left behind at the origin


async def test_a_flood_from_one_source_is_limited_and_others_still_get_through() -> None:
    # F (its own source, 127.0.0.2) floods C with messages toward D; A sends through
    # B and C to D and is served: C keeps a budget per source, and relays at most a
    # quarter of D's budget for C for any one source.
    w = await _world(hosts=HOSTS)
    f = await DhtNode(("127.0.0.2", 0), node_id=_id(0x01), config=_config()).start()
    try:
        _echo(w, "d")
        c = w.nodes["c"]

        async def one() -> int:
            try:
                await f.query(c.address, METHOD, _args())
                return 0
            except KrpcError as exc:
                return exc.code

        codes = await asyncio.gather(*(one() for _ in range(300)))
        limited = codes.count(ERR_RATE_LIMITED)
        assert limited == w.fwd["c"].stats["rate_limited"] > 0
        assert set(codes) <= {0, ERR_RATE_LIMITED}
        # C relayed only its per-pair share of F's messages to D ...
        relayed = w.fwd["c"].stats["forwarded"]
        assert 0 < relayed <= forward.PAIR_BURST + 10
        # ... and A's message through B and C still arrives.
        assert await w.fwd["a"].send_toward(IDS["d"], b"echo", b"ok", 10) == b"re:ok"
        assert w.fwd["b"].stats["rate_limited"] == 0
        assert w.fwd["c"].stats["forwarded"] == relayed + 1
    finally:
        await f.stop()
        await _close(w)


async def test_aclose_removes_the_method_and_fails_pending_sends(world: World) -> None:
    never = asyncio.Event()

    async def stuck(payload: bytes, origin: bytes) -> bytes:
        await never.wait()
        return b""

    world.fwd["d"].handle(b"stuck", stuck)
    task = asyncio.ensure_future(world.fwd["a"].send_toward(IDS["d"], b"stuck", b"", 10))
    while not world.fwd["d"].stats["delivered"]:
        await asyncio.sleep(0.01)
    await world.fwd["d"].aclose()  # the stuck handler is cancelled and awaited
    assert not world.fwd["d"]._tasks
    await world.fwd["a"].aclose()  # the origin's send fails at once
    with pytest.raises(HailingError, match="closed"):
        await task
    with pytest.raises(KrpcError) as e:  # 204 again
        await world.nodes["c"].query(world.nodes["d"].address, METHOD, _args())
    assert e.value.code == 204


async def test_reverse_paths_and_seen_ids_are_bounded(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "MAX_ROUTES", 4)
    never = asyncio.Event()

    async def stuck(payload: bytes, origin: bytes) -> bytes:
        await never.wait()
        return b""

    world.fwd["d"].handle(b"stuck", stuck)
    b = world.nodes["b"]
    for _ in range(10):
        await world.nodes["a"].query(b.address, METHOD, _args(kind=b"stuck"))
    fb = world.fwd["b"]
    assert len(fb._routes) <= 4 and len(fb._seen) <= 4
    assert fb.stats["routes_dropped"] == 6
    _echo(world, "d")
    assert await world.fwd["a"].send_toward(IDS["d"], b"echo", b"still", 10) == b"re:still"


async def test_a_node_with_udp_forwards_through_routing_table_nodes_too() -> None:
    # A has no link at all, only B in its routing table (UDP); B is linked to C.
    cfg = _config()
    a = await DhtNode(("127.0.0.1", 0), node_id=_id(0x00), config=cfg).start()
    b = await DhtNode(("127.0.0.1", 0), node_id=_id(0x80), config=cfg).start()
    c = await DhtNode(("127.0.0.1", 0), node_id=_id(0xC0), config=cfg).start()
    fa = Forwarder(a, _Links())  # udp: a has a socket
    fb = Forwarder(b, _Links([_Link(_id(0xC0), c.address)]), udp=False)
    fc = Forwarder(c, _Links([_Link(_id(0x80), b.address)]), udp=False)
    try:
        assert fa.udp and not fb.udp
        await a.bootstrap([b.address])
        assert (_id(0x80), b.address) in fa.neighbours()

        async def echo(payload: bytes, origin: bytes) -> bytes:
            return payload

        fc.handle(b"echo", echo)
        assert await fa.send_toward(_id(0xC0), b"echo", b"via udp", 10) == b"via udp"
        assert fb.stats["forwarded"] == 1
        # and without UDP neighbours A has no way at all
        fa.udp = False
        with pytest.raises(HailingError, match="no link"):
            await fa.send_toward(_id(0xC0), b"echo", b"x", 10)
    finally:
        for f in (fa, fb, fc):
            await f.aclose()
        for n in (a, b, c):
            await n.stop()
