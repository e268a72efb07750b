"""The DHT core over WebRTC data channels: nodes with no UDP at all, and a node with
both drivers in one routing space (loopback ICE only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_helpers import loopback_ice

from hailing.dht import DhtConfig
from hailing.errors import LocalProtocolError
from hailing.node import NO_UDP, DhtNode
from hailing.transport import LinkAddr, LinkDriver, couple_direct
from hailing.transport.topology import LocalCoupler, neighbourhood

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


def dc_config() -> DhtConfig:
    return DhtConfig(exempt_loopback=True)


@contextlib.asynccontextmanager
async def dc_nodes(n: int, p: int, *, seed: int = 0, couplers: bool = True
                   ) -> AsyncIterator[list[DhtNode]]:
    """``n`` nodes without UDP, linked as a Kademlia-like neighbourhood of ``p`` links;
    with ``couplers``, each opens the other links its lookups need with a LocalCoupler
    (in-memory SDP), at most ``p`` at a time."""
    drivers = [LinkDriver(cap=p) for _ in range(n)]
    if couplers:
        local = LocalCoupler(drivers)
        for d in drivers:
            d.couplers.append(local)
    nodes = [DhtNode(bind=None, links=d, seed=seed * 1000 + i, config=dc_config())
             for i, d in enumerate(drivers)]
    try:
        for node in nodes:
            await node.start()
        edges = neighbourhood([x.node_id for x in nodes], p, seed)
        for a, b in edges:
            await couple_direct(nodes[a].links, nodes[b].links)  # type: ignore[arg-type]
        for node in nodes:
            await node.bootstrap()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def test_two_nodes_without_udp() -> None:
    async with dc_nodes(2, 4) as (a, b):
        assert a.address == NO_UDP and a._transport is None
        assert [x.addr for x in a.routing_table()] == [LinkAddr.of(b.node_id)]
        assert await a.ping(LinkAddr.of(b.node_id)) == b.node_id
        found = await b.find_node(a.node_id)
        assert found[0].id == a.node_id
        target = await a.put(b"over a data channel")
        assert await a.get(target) == b"over a data channel"
        assert a.stats["link_sent"] > 0 and b.stats["link_received"] > 0
        assert a.stats.get("link_garbage", 0) == 0


@pytest.mark.parametrize("seed", [1, 2])
async def test_ten_nodes_put_get_over_links_only(seed: int) -> None:
    async with dc_nodes(10, 4, seed=seed) as nodes:
        for node in nodes:
            assert node._transport is None
            assert all(isinstance(e.addr, LinkAddr) for e in node.core.table)
        values = [f"value {i}".encode() for i in range(3)]
        targets = [await nodes[i].put(v) for i, v in enumerate(values)]
        for i, (target, value) in enumerate(zip(targets, values, strict=True)):
            assert await nodes[-1 - i].get(target) == value
        seed_key = bytes([seed]) * 32
        await nodes[4].put_mutable(seed_key, b"mutable over links", salt=b"s")
        from hailing.dht.bep44 import MutableItem

        pub = MutableItem.create(seed_key, b"", b"s", 0).pubkey
        item = await nodes[8].get_mutable(pub, b"s")
        assert item is not None and item.value == b"mutable over links"
        far = await nodes[0].find_node(nodes[9].node_id)
        assert far[0].id == nodes[9].node_id
        for node in nodes:
            assert node.stats.get("socket_errors", 0) == 0
            assert len(node.links.links()) <= 4 + 1  # type: ignore[union-attr]
        assert sum(n.stats.get("link_coupled", 0) for n in nodes) > 0


async def test_one_routing_space_through_a_node_with_both_drivers() -> None:
    """A UDP-only node and a DC-only node find each other's values through a node
    that runs both drivers."""
    cfg = dc_config()
    udp = DhtNode(("127.0.0.1", 0), seed=11, config=cfg)
    both = DhtNode(("127.0.0.1", 0), links=LinkDriver(), seed=12, config=cfg)
    dc = DhtNode(bind=None, links=LinkDriver(), seed=13, config=cfg)
    async with udp, both, dc:
        assert both.links is not None and dc.links is not None
        await couple_direct(both.links, dc.links)
        await udp.bootstrap([both.address])
        await dc.bootstrap()
        await both.bootstrap([udp.address])
        kinds = {type(e.addr) for e in both.core.table}
        assert kinds == {LinkAddr, tuple}
        from_udp = await udp.put(b"put over UDP")
        from_dc = await dc.put(b"put over a data channel")
        assert await dc.get(from_udp) == b"put over UDP"
        assert await udp.get(from_dc) == b"put over a data channel"
        # the UDP-only node never took the link entry for an address
        assert all(type(e.addr) is tuple for e in udp.core.table)
        assert all(type(e.addr) is LinkAddr for e in dc.core.table)


async def test_a_dead_link_fails_fast_and_leaves_the_table() -> None:
    async with dc_nodes(3, 4, seed=3, couplers=False) as (a, b, c):
        link = a.links.link_for(b.node_id)  # type: ignore[union-attr]
        assert link is not None
        assert a.core.table.get(b.node_id) is not None
        await link.close()
        assert a.core.table.get(b.node_id) is None
        assert a.links.link_for(b.node_id) is None  # type: ignore[union-attr]
        # No coupler can open a new link: the query fails at once, with error 201,
        # not after the query timeout (the command would take >= 4 s otherwise).
        before = a.stats.get("link_failed_fast", 0)
        from hailing.errors import KrpcError

        with pytest.raises(KrpcError):
            async with asyncio.timeout(a.config.query_timeout / 2):
                await a.ping(LinkAddr.of(b.node_id))
        assert a.stats["link_failed_fast"] == before + 1
        assert a.stats["link_unreachable"] >= 1
        # the other side noticed too (the channel closed), and c still answers
        for _ in range(100):
            if b.links.link_for(a.node_id) is None:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        assert b.core.table.get(a.node_id) is None
        assert await a.ping(LinkAddr.of(c.node_id)) == c.node_id


async def test_a_node_without_udp_keeps_its_id_but_no_udp_node_from_its_cache(
        tmp_path: Path) -> None:
    async with DhtNode(("127.0.0.1", 0), data_dir=tmp_path, config=dc_config()) as udp:
        other = DhtNode(("127.0.0.1", 0), config=dc_config())
        async with other:
            await udp.bootstrap([other.address])
            assert len(udp.routing_table()) == 1
        node_id = udp.node_id
    async with DhtNode(bind=None, links=LinkDriver(), data_dir=tmp_path,
                       config=dc_config()) as dc:
        assert dc.node_id == node_id and dc.routing_table() == []
        with pytest.raises(LocalProtocolError):
            await dc.nat_info()
        assert dc.stun_servers() == [] and dc.reachable_address() is None


async def test_a_query_in_flight_fails_when_its_link_dies() -> None:
    """The peer never answers; when the link dies the ping fails with error 201, not
    with the query timeout (QueryTimeout) that a ping to a silent UDP node ends in."""
    async with dc_nodes(2, 4, seed=4, couplers=False) as (a, b):
        assert b.links is not None and a.links is not None
        b.links._on_frame = lambda link, msg: None  # type: ignore[method-assign]
        ping = asyncio.ensure_future(a.ping(LinkAddr.of(b.node_id)))
        await asyncio.sleep(0.2)
        assert not ping.done()
        link = a.links.link_for(b.node_id)
        assert link is not None
        a.links._lost(link, "dead")  # as the keepalive round does with a silent link
        from hailing.errors import KrpcError

        with pytest.raises(KrpcError) as info:
            await ping
        assert info.value.code == 201  # type: ignore[attr-defined]
        assert a.core.table.get(b.node_id) is None


def test_a_node_on_links_alone_waits_for_couplings_before_it_counts_a_request_stalled() -> None:
    """On links alone a request to an unlinked peer waits for a coupling: the default
    soft timeout of such a node covers it; a UDP node (or one given a config) keeps its own."""
    from hailing.node import LINKS_MIN_SOFT_TIMEOUT

    assert DhtNode(bind=None, links=LinkDriver()).config.min_soft_timeout == LINKS_MIN_SOFT_TIMEOUT
    assert DhtNode(links=LinkDriver()).config.min_soft_timeout == DhtConfig().min_soft_timeout
    assert DhtNode().config.min_soft_timeout == DhtConfig().min_soft_timeout
    given = DhtConfig(min_soft_timeout=0.3)
    assert DhtNode(bind=None, links=LinkDriver(), config=given).config is given
