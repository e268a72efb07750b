"""hailing_fwd with one step of lookahead: a hop ranks each neighbour by the closest of
itself and the links it told (its link list), so a neighbour with a direct link to the
target comes first, greedy's dead ends are skipped, and paths get shorter.

As in tests/test_forward.py the "links" are stand-ins over real DhtNodes on loopback UDP
(their ``peer_links`` set by hand, as link lists would); the last test runs the real
driver, whose link lists feed the forwarder over real data channels."""

from __future__ import annotations

import asyncio

import pytest
from pytest_helpers import loopback_ice
from test_forward import World, _close, _config, _id, _Link, _Links

from hailing.errors import KrpcError
from hailing.node import DhtNode
from hailing.transport import LinkDriver, couple_direct
from hailing.transport.forward import ERR_HOP_LIMIT, ERR_NO_ROUTE, MAX_HOPS, Forwarder
from hailing.transport.linklists import LINKS, MAX_ENTRIES

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

T = _id(0xF0)  # the target in every topology here


async def _net(ids: dict[str, bytes], edges: list[tuple[str, str]], *, told: bool = True,
               lookahead: bool = True, max_hops: int = MAX_HOPS) -> World:
    """Nodes linked along ``edges``; with ``told`` each link carries its peer's other
    links (what the peer's link list says)."""
    nodes = {name: await DhtNode(("127.0.0.1", 0), node_id=nid, config=_config()).start()
             for name, nid in ids.items()}
    adj: dict[str, list[str]] = {name: [] for name in ids}
    for x, y in edges:
        adj[x].append(y)
        adj[y].append(x)
    links = {
        name: _Links([_Link(ids[peer], nodes[peer].address,
                            peer_links=frozenset(ids[m] for m in adj[peer] if m != name)
                            if told else frozenset())
                      for peer in adj[name]])
        for name in ids}
    fwd = {name: Forwarder(nodes[name], links[name], max_hops=max_hops, udp=False,
                           lookahead=lookahead) for name in ids}
    return World(nodes, links, fwd)


def _echo_at(w: World, name: str) -> None:
    async def echo(payload: bytes, origin: bytes) -> bytes:
        return b"re:" + payload

    w.fwd[name].handle(b"echo", echo)


# A is linked to four dead ends (each closer to T than C, linked to A only) and to C,
# which is linked to T. Greedy tries the four dead ends, its TRIES, and gives up.
STAR = {"a": _id(0x00), "b1": _id(0xE1), "b2": _id(0xE2), "b3": _id(0xE3), "b4": _id(0xE4),
        "c": _id(0x80), "t": T}
STAR_EDGES = [("a", "b1"), ("a", "b2"), ("a", "b3"), ("a", "b4"), ("a", "c"), ("c", "t")]


@pytest.mark.parametrize("lookahead", [True, False])
async def test_a_neighbour_with_a_link_to_the_target_comes_before_greedy_dead_ends(
        lookahead: bool) -> None:
    w = await _net(STAR, STAR_EDGES, lookahead=lookahead)
    try:
        _echo_at(w, "t")
        if lookahead:
            assert await w.fwd["a"].send_toward(T, b"echo", b"x", 10) == b"re:x"
            assert w.fwd["a"].stats["via_lookahead"] == 1
            assert w.fwd["c"].stats["forwarded"] == 1
            assert all(w.fwd[b].stats["no_route"] == 0 for b in ("b1", "b2", "b3", "b4"))
            assert w.fwd["a"].stats["next_refused"] == 0
        else:  # greedy alone: four refusals, the message is lost
            with pytest.raises(KrpcError) as e:
                await w.fwd["a"].send_toward(T, b"echo", b"x", 10)
            assert e.value.code == ERR_NO_ROUTE
            assert w.fwd["a"].stats["next_refused"] == 4
            assert w.fwd["c"].stats["forwarded"] == 0
    finally:
        await _close(w)


# A - B - D - T is greedy's path (B is A's neighbour closest to T, D is B's); C is
# farther than B but linked to T itself: A - C - T, one hop less.
CHAIN = {"a": _id(0x00), "b": _id(0xC0), "c": _id(0x40), "d": _id(0xE0), "t": T}
CHAIN_EDGES = [("a", "b"), ("b", "d"), ("d", "t"), ("a", "c"), ("c", "t")]


@pytest.mark.parametrize("lookahead", [True, False])
async def test_lookahead_takes_fewer_hops(lookahead: bool) -> None:
    w = await _net(CHAIN, CHAIN_EDGES, lookahead=lookahead)
    try:
        _echo_at(w, "t")
        assert await w.fwd["a"].send_toward(T, b"echo", b"x", 10) == b"re:x"
        forwarded = {n: w.fwd[n].stats["forwarded"] for n in ("b", "c", "d")}
        if lookahead:  # two hops
            assert forwarded == {"b": 0, "c": 1, "d": 0}
        else:  # three hops
            assert forwarded == {"b": 1, "c": 0, "d": 1}
    finally:
        await _close(w)


async def test_the_hop_limit_holds_with_lookahead() -> None:
    w = await _net(CHAIN, CHAIN_EDGES, max_hops=1)
    try:
        _echo_at(w, "t")
        with pytest.raises(KrpcError) as e:  # A -> C is hop 1, C -> T hop 2: refused
            await w.fwd["a"].send_toward(T, b"echo", b"x", 10)
        assert e.value.code == ERR_HOP_LIMIT
        assert w.fwd["t"].stats["hop_limit"] == 1
    finally:
        await _close(w)


async def test_a_false_claim_costs_one_refusal_and_the_next_neighbour_is_tried() -> None:
    # L says it is linked to T (it is not) and is closer to T than C: tried first, it
    # refuses (no route), and A moves on to C.
    ids = {"a": _id(0x00), "l": _id(0xE8), "c": _id(0x80), "t": T}
    w = await _net(ids, [("a", "l"), ("a", "c"), ("c", "t")])
    try:
        _echo_at(w, "t")
        to_l = next(x for x in w.links["a"].items if x.peer_id == ids["l"])
        to_l.peer_links = frozenset({T})
        assert await w.fwd["a"].send_toward(T, b"echo", b"x", 10) == b"re:x"
        assert w.fwd["l"].stats["no_route"] == 1
        assert w.fwd["a"].stats["next_refused"] == 1
        assert w.fwd["c"].stats["forwarded"] == 1
    finally:
        await _close(w)


async def test_links_back_to_us_or_to_the_previous_hop_count_for_nothing() -> None:
    ids = {"a": _id(0xF1), "b": _id(0x10), "c": _id(0xE0), "t": T}
    w = await _net(ids, [("a", "b"), ("a", "c")], told=False)
    try:
        fa = w.fwd["a"]
        to_b, to_c = w.links["a"].items
        # B claims a link to A itself, which is closest to T: no progress through it
        to_b.peer_links = frozenset({ids["a"]})
        assert fa._next_hops(T, None, strict=True) == []
        # C claims a link to B, the hop a message toward B's neighbourhood came from:
        # no progress either
        to_c.peer_links = frozenset({ids["b"]})
        assert fa._next_hops(_id(0x11), w.nodes["b"].address, strict=True) == []
        # ... but a link to the target is
        to_c.peer_links = frozenset({T})
        assert fa._next_hops(T, None, strict=True) == [w.nodes["c"].address]
    finally:
        await _close(w)


async def test_link_lists_over_real_data_channels_feed_the_forwarder() -> None:
    nodes = {name: DhtNode(bind=None, links=LinkDriver(), node_id=nid, seed=i)
             for i, (name, nid) in enumerate(STAR.items())}
    fwd: dict[str, Forwarder] = {}
    try:
        for node in nodes.values():
            await node.start()
        drivers = {name: n.links for name, n in nodes.items()}
        for x, y in STAR_EDGES:
            await couple_direct(drivers[x], drivers[y])  # type: ignore[arg-type]
        fwd = {name: Forwarder(n, n.links, udp=False)  # type: ignore[arg-type]
               for name, n in nodes.items()}
        a = drivers["a"]
        assert a is not None
        to_c = a.link_for(STAR["c"])
        assert to_c is not None
        for _ in range(500):
            if to_c.peer_links == {T}:
                break
            await asyncio.sleep(0.01)
        assert to_c.peer_links == {T}
        # garbage lists from a dead end: dropped and counted, nothing closed
        b1 = drivers["b1"]
        assert b1 is not None
        to_a = b1.link_for(STAR["a"])
        assert to_a is not None
        to_a.channel.send(LINKS + b"\x01" * 20 * (MAX_ENTRIES + 1))
        to_a.channel.send(LINKS + b"\x01" * 7)

        async def echo(payload: bytes, origin: bytes) -> bytes:
            return b"re:" + payload

        fwd["t"].handle(b"echo", echo)
        assert await fwd["a"].send_toward(T, b"echo", b"x", 20) == b"re:x"
        assert fwd["c"].stats["forwarded"] == 1
        assert all(fwd[b].stats["no_route"] == 0 for b in ("b1", "b2", "b3", "b4"))
        for _ in range(500):
            if nodes["a"].stats["link_garbage"] >= 2:
                break
            await asyncio.sleep(0.01)
        assert nodes["a"].stats["link_garbage_lists_too_many"] == 1
        assert nodes["a"].stats["link_garbage_lists_length"] == 1
        assert len(a.links()) == 5 and all(x.is_open for x in a.links())
    finally:
        for f in fwd.values():
            await f.aclose()
        for node in nodes.values():
            await node.stop()
