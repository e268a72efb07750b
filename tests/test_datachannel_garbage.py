"""Garbage on a data channel is dropped and counted; the link and the others keep
working (loopback ICE only)."""

from __future__ import annotations

import asyncio

import pytest
from pytest_helpers import loopback_ice

from hailing.dht import DhtConfig
from hailing.node import DhtNode
from hailing.transport import LinkAddr, LinkDriver, couple_direct
from hailing.transport.datachannel import MAX_FRAME
from hailing.transport.links import FRAME_BURST, FRAME_RATE

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

GARBAGE: list[bytes | str] = [
    "a text message",                    # text frames are not KRPC
    b"not bencode at all",               # neither bencode nor a control frame
    b"d" + b"x" * MAX_FRAME,             # oversized
    b"\x00Zunknown control",             # an unknown control frame
    b"\x00H" + b"short id",              # a hello of the wrong length
    b"\x00P with a tail",                # a ping with a tail
]


class Clock:
    """The links' clock, frozen unless a test moves it: a link's frame budget then
    refills only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def three_nodes(clock: Clock | None = None) -> list[DhtNode]:
    clock = clock or Clock()
    nodes = [DhtNode(bind=None, links=LinkDriver(clock=clock), seed=70 + i,
                     config=DhtConfig(exempt_loopback=True)) for i in range(3)]
    for node in nodes:
        await node.start()
    a, b, c = nodes
    await couple_direct(a.links, b.links)  # type: ignore[arg-type]
    await couple_direct(a.links, c.links)  # type: ignore[arg-type]
    for node in nodes:
        await node.bootstrap()
    # each side's first link list (linklists.py) has arrived: no valid frame is left
    # to come in the middle of a test's garbage
    for _ in range(500):
        if all(x.lists_heard > float("-inf") for n in nodes if n.links is not None
               for x in n.links.links()):
            break
        await asyncio.sleep(0.01)
    return nodes


async def test_garbage_is_dropped_and_counted() -> None:
    a, b, c = await three_nodes()
    try:
        assert a.links is not None and b.links is not None
        to_a = b.links.link_for(a.node_id)
        assert to_a is not None
        core_garbage = a.stats.get("dropped_malformed", 0)
        for frame in GARBAGE:
            to_a.channel.send(frame)
        # KRPC that the core drops (bencode, not a message): counted by the core
        to_a.channel.send(b"d1:q4:pinge")
        # b's answer to this ping travels after the garbage on the same ordered channel
        assert await a.ping(LinkAddr.of(b.node_id)) == b.node_id
        assert a.stats["link_garbage"] == len(GARBAGE)
        assert a.stats["link_garbage_text"] == 1 and a.stats["link_garbage_oversized"] == 1
        assert a.stats["dropped_malformed"] == core_garbage + 1
        # nothing closed: every link still carries queries
        assert all(x.is_open for x in a.links.links()) and len(a.links.links()) == 2
        assert await a.ping(LinkAddr.of(c.node_id)) == c.node_id
        assert await b.ping(LinkAddr.of(a.node_id)) == a.node_id
    finally:
        for node in (a, b, c):
            await node.stop()


async def test_a_flood_is_cut_at_the_link_budget_and_others_keep_working() -> None:
    clock = Clock()
    a, b, c = await three_nodes(clock)
    try:
        assert a.links is not None and b.links is not None
        to_a = b.links.link_for(a.node_id)
        assert to_a is not None
        flood = int(FRAME_BURST * 3)
        for _ in range(flood):
            to_a.channel.send(b"junk")
        # while the flood arrives, the link to c works
        assert await a.ping(LinkAddr.of(c.node_id)) == c.node_id
        for _ in range(500):
            if a.stats.get("link_garbage", 0) + a.stats.get("link_rate_limited", 0) >= flood:
                break
            await asyncio.sleep(0.02)
        assert a.stats["link_garbage"] + a.stats["link_rate_limited"] == flood
        assert a.stats["link_rate_limited"] >= flood - FRAME_BURST
        assert to_a.is_open and a.links.link_for(b.node_id) is not None
        clock.now += FRAME_BURST / FRAME_RATE  # the budget refills: b is heard again
        assert await a.ping(LinkAddr.of(b.node_id)) == b.node_id
    finally:
        for node in (a, b, c):
            await node.stop()
