"""A mixed network: half the nodes speak only data channels (no UDP socket), half speak
UDP and data channels, in one routing space. The UDP nodes join over UDP; each
channel-only node joins through one bootstrap link (couple_direct) and gets its other
links through the network coupler, forwarded over links and UDP hops alike. Values and
inbox messages cross between the two kinds both ways."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from overlay_helpers import OverlayNode, start_node, stop_all
from pytest_helpers import loopback_ice

from hailing.transport import LinkAddr, couple_direct

pytestmark = pytest.mark.asyncio(loop_scope="module")
_loopback_ice = pytest.fixture(scope="module", autouse=True)(loopback_ice)

HALF = 6
P = 8


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mixed() -> AsyncIterator[tuple[list[OverlayNode], list[OverlayNode]]]:
    rng = random.Random(44)
    both: list[OverlayNode] = []
    dc_only: list[OverlayNode] = []
    try:
        for i in range(HALF):
            o = await start_node(p=P, seed=500 + i, udp=True)
            if both:
                await o.node.bootstrap([both[0].node.address])
            both.append(o)
        for o in both:
            await o.node.find_node(o.id)
        for i in range(HALF):
            o = await start_node(p=P, seed=600 + i)
            await couple_direct(o.driver, rng.choice(both + dc_only).driver)
            await o.node.bootstrap()
            dc_only.append(o)
        for o in both + dc_only:
            await o.node.find_node(o.id)
        yield both, dc_only
    finally:
        await stop_all(both + dc_only)


async def test_both_kinds_share_one_routing_space(
        mixed: tuple[list[OverlayNode], list[OverlayNode]]) -> None:
    both, dc_only = mixed
    for o in dc_only:
        assert o.node._transport is None
        assert all(isinstance(e.addr, LinkAddr) for e in o.node.core.table)
    # UDP nodes know channel-only nodes (by link address) and UDP nodes (by UDP address)
    kinds = {type(e.addr) for o in both for e in o.node.core.table}
    assert kinds == {LinkAddr, tuple}
    assert sum(o.fwd.stats["link_coupled"] for o in both + dc_only) > 0


async def test_a_udp_node_reaches_a_channel_only_node_it_has_no_link_to(
        mixed: tuple[list[OverlayNode], list[OverlayNode]]) -> None:
    both, dc_only = mixed
    for u in both:
        for d in dc_only:
            if u.driver.link_for(d.id) is None:
                assert await u.node.ping(LinkAddr.of(d.id)) == d.id
                assert u.driver.link_for(d.id) is not None
                return
    pytest.skip("every UDP node is linked to every channel-only node already")


async def test_values_cross_between_the_two_kinds(
        mixed: tuple[list[OverlayNode], list[OverlayNode]]) -> None:
    both, dc_only = mixed
    rng = random.Random(3)
    for i, (writers, readers) in enumerate([(dc_only, both), (both, dc_only),
                                            (dc_only, dc_only)]):
        w = rng.choice(writers)
        r = rng.choice([x for x in readers if x is not w])
        value = f"mixed {i}".encode()
        target = await w.node.put(value)
        assert await r.node.get(target) == value


async def test_inbox_messages_cross_between_the_two_kinds(
        mixed: tuple[list[OverlayNode], list[OverlayNode]]) -> None:
    both, dc_only = mixed
    rng = random.Random(8)
    for i, (listeners, posters) in enumerate([(dc_only, both), (both, dc_only)]):
        listener, poster = rng.choice(listeners), rng.choice(posters)
        key = bytes([0x40 + i]) * 20
        assert await listener.node.listen(key) >= 1
        assert await poster.node.post(key, b"hello across") >= 1
        async with asyncio.timeout(30):
            msg = await listener.node.inbox()
        assert msg.value == b"hello across"
        listener.node.unlisten(key)
