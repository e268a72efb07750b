"""Kademlia over data channels only: 30 nodes on loopback without any UDP socket, at most
p = 8 links each. Each node joins through ONE bootstrap link (couple_direct with a
random node already in); every other link is opened by the network coupler, through
forwarding, as the DHT asks for it. Then BEP44 put/get and inbox calls succeed.

The bootstrap link stands for the link a newcomer has to the friend who let it in: it
is pinned at both ends. (Unpinned, a newcomer whose every link its peers evicted, LRU,
would be cut off: a coupler needs a link to forward through.)

One overlay is shared by the module's tests (building it is the expensive part)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from overlay_helpers import OverlayNode, start_node, stop_all
from pytest_helpers import loopback_ice

from hailing.dht.bep44 import MutableItem
from hailing.transport import LinkAddr, couple_direct

pytestmark = pytest.mark.asyncio(loop_scope="module")
_loopback_ice = pytest.fixture(scope="module", autouse=True)(loopback_ice)

N = 30
P = 8


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def overlay() -> AsyncIterator[list[OverlayNode]]:
    rng = random.Random(2026)
    nodes: list[OverlayNode] = []
    started = time.monotonic()
    try:
        for i in range(N):
            o = await start_node(p=P, seed=7000 + i)
            if nodes:
                boot = rng.choice(nodes)
                await couple_direct(o.driver, boot.driver, pinned=True)  # the one bootstrap link
                await o.node.bootstrap()
            nodes.append(o)
        print(f"overlay of {N} built in {time.monotonic() - started:.1f} s")
        yield nodes
    finally:
        await stop_all(nodes)


async def test_the_overlay_is_built_by_forwarding(overlay: list[OverlayNode]) -> None:
    coupled = sum(o.fwd.stats["link_coupled"] for o in overlay)
    forwarded = sum(o.fwd.stats["forwarded"] for o in overlay)
    print(f"links coupled through forwarding: {coupled}, hops forwarded: {forwarded}")
    assert coupled >= 2 * N  # far more links than the N - 1 bootstrap links
    # next hop, never flooding: a message takes a few hops (flooding: N per message)
    sent = sum(o.fwd.stats["sent"] for o in overlay)
    assert forwarded / sent < 4
    for o in overlay:
        assert o.node._transport is None
        assert all(isinstance(e.addr, LinkAddr) for e in o.node.core.table)
        # the soft cap holds for unpinned links (2p while links are in use: links.py)
        assert len([x for x in o.driver.links() if x.is_open and not x.pinned]) <= 2 * P
        assert len(o.node.core.table) >= 1
        assert o.fwd.stats["task_errors"] == 0


async def test_bep44_put_and_get_succeed(overlay: list[OverlayNode]) -> None:
    rng = random.Random(5)
    for i in range(3):
        writer, reader = rng.sample(overlay, 2)
        value = f"over forwarded links {i}".encode()
        target = await writer.node.put(value)
        assert await reader.node.get(target) == value
    seed = bytes(range(32))
    writer, reader = rng.sample(overlay, 2)
    await writer.node.put_mutable(seed, b"mutable", salt=b"overlay")
    item = await reader.node.get_mutable(MutableItem.create(seed, b"", b"overlay", 0).pubkey,
                                         b"overlay")
    assert item is not None and item.value == b"mutable"


async def test_inbox_calls_succeed(overlay: list[OverlayNode]) -> None:
    rng = random.Random(9)
    for i in range(3):
        listener, poster = rng.sample(overlay, 2)
        key = bytes([i + 1]) * 20
        assert await listener.node.listen(key) >= 1
        assert await poster.node.post(key, b"an offer, sealed") >= 1
        async with asyncio.timeout(30):
            msg = await listener.node.inbox()
        assert msg.key == key and msg.value == b"an offer, sealed"
        listener.node.unlisten(key)
