"""Link lists (transport/linklists.py): each side of a link tells the other which links it
has; the lists follow the links, go out debounced and at most once a second per link, and
garbage lists are dropped and counted without closing anything (loopback ICE only).

The drivers share a fake clock: a list may go out again on a link only when the test
moves the clock by the interval."""

from __future__ import annotations

import pytest
from pytest_helpers import loopback_ice
from test_links import Clock, drivers, until

from hailing.transport import couple_direct
from hailing.transport.linklists import (
    BURST,
    INTERVAL,
    LINKS,
    MAX_ENTRIES,
    MIN_GAP,
    decode,
    encode,
)
from hailing.transport.links import GRACE

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


async def test_each_peer_hears_the_other_links_of_its_neighbour() -> None:
    clock = Clock()
    async with drivers(4, clock=clock) as (hub, b, c, d):
        await couple_direct(hub, b)
        await couple_direct(hub, c)
        to_hub_b, to_hub_c = b.link_for(hub.node_id), c.link_for(hub.node_id)  # type: ignore[arg-type]
        assert to_hub_b is not None and to_hub_c is not None
        # c's link opened within the interval of b's first list: b hears it once the
        # clock allows one more list on that link
        await until(lambda: to_hub_c.peer_links == {b.node_id}, "c hears of b")
        assert to_hub_b.peer_links in (frozenset(), {c.node_id})
        clock.now += INTERVAL
        await until(lambda: to_hub_b.peer_links == {c.node_id}, "b hears of c")
        # never our own id, never the peer's
        assert b.node_id not in to_hub_b.peer_links and hub.node_id not in to_hub_b.peer_links
        # one more link: both hear of it (after the interval); a closed one is forgotten
        clock.now += INTERVAL
        ld, _ = await couple_direct(hub, d)
        await until(lambda: to_hub_b.peer_links == {c.node_id, d.node_id}, "b hears of d")
        await until(lambda: to_hub_c.peer_links == {b.node_id, d.node_id}, "c hears of d")
        clock.now += INTERVAL
        await ld.close()
        await until(lambda: to_hub_b.peer_links == {c.node_id}, "b hears d is gone")
        await until(lambda: to_hub_c.peer_links == {b.node_id}, "c hears d is gone")
        assert hub.stats.get("link_garbage", 0) == 0
        assert b.stats["link_lists_received"] >= 2
        # the lists go with the link
        await to_hub_b.close()
        assert to_hub_b.peer_links == frozenset()


async def test_lists_are_debounced_and_at_most_one_a_second_per_link() -> None:
    clock = Clock()
    async with drivers(6, clock=clock) as (hub, *others):
        first = others[0]
        await couple_direct(hub, first)
        to_hub = first.link_for(hub.node_id)  # type: ignore[arg-type]
        assert to_hub is not None
        await until(lambda: to_hub.lists_heard > float("-inf"), "the first list")
        heard = first.stats["link_lists_received"]
        for other in others[1:]:  # four changes within one interval of the clock
            await couple_direct(hub, other)
        last = others[-1].link_for(hub.node_id)  # type: ignore[arg-type]
        assert last is not None
        await until(lambda: len(last.peer_links) == 4, "the newest link heard its list")
        assert first.stats["link_lists_received"] == heard  # nothing more yet
        clock.now += INTERVAL
        want = {o.node_id for o in others[1:]}
        await until(lambda: to_hub.peer_links == want, "all four in one list")
        assert first.stats["link_lists_received"] == heard + 1
        # nothing sent on a link that already heard the current list
        sent = hub.stats["link_lists_sent"]
        clock.now += INTERVAL
        assert hub.lists.flush() is None and hub.stats["link_lists_sent"] == sent


def test_the_frame_codec() -> None:
    ids = [bytes([i]) * 20 for i in range(3)]
    assert decode(encode(ids)) == tuple(ids)
    assert decode(encode([])) == ()
    assert decode(LINKS + b"x" * 21) == "length"
    assert decode(LINKS + b"x" * 20 * (MAX_ENTRIES + 1)) == "too_many"
    assert decode(encode([b"x" * 20] * MAX_ENTRIES)) == (b"x" * 20,) * MAX_ENTRIES
    with pytest.raises(ValueError):
        encode([b"short"])
    with pytest.raises(ValueError):
        encode([b"x" * 20] * (MAX_ENTRIES + 1))


async def test_garbage_lists_are_dropped_counted_and_close_nothing() -> None:
    clock = Clock()
    async with drivers(3, clock=clock) as (a, b, c):
        la, lb = await couple_direct(a, b)
        await couple_direct(a, c)
        await until(lambda: la.lists_heard > float("-inf"), "b's first list")
        clock.now += BURST * MIN_GAP
        bad = [LINKS + b"x" * 21, LINKS + b"y" * 20 * (MAX_ENTRIES + 1)]
        for frame in bad:
            lb.channel.send(frame)
        await until(lambda: a.stats["link_garbage"] == 2, "two garbage lists")
        assert a.stats["link_garbage_lists_length"] == 1
        assert a.stats["link_garbage_lists_too_many"] == 1
        # the budget is full again (BURST lists): four go through, the fifth is too many
        for i in range(int(BURST)):
            lb.channel.send(encode([bytes([9 + i]) * 20]))
        await until(lambda: la.peer_links == {b"\x0c" * 20}, "four good lists")
        lb.channel.send(encode([b"\x0d" * 20]))  # no time has passed: over the budget
        await until(lambda: a.stats["link_garbage_lists_too_often"] == 1, "too often")
        assert la.peer_links == {b"\x0c" * 20}
        clock.now += MIN_GAP  # one more list's worth
        lb.channel.send(encode([b"\x0a" * 20, a.node_id]))  # type: ignore[list-item]
        await until(lambda: la.peer_links == {b"\x0a" * 20}, "the next list, our id left out")
        # nothing was closed: the links still carry frames both ways
        assert la.is_open and all(x.is_open for x in a.links()) and len(a.links()) == 2
        assert a.stats["link_garbage"] == 3


async def test_a_list_before_the_peer_is_known_is_garbage() -> None:
    async with drivers(2) as (a, b):
        b.node_id = None  # b sends no hello: a does not know who it is
        la, lb = await couple_direct(a, b, tell_ids=False)
        lb.channel.send(encode([b"\x05" * 20]))
        await until(lambda: a.stats["link_garbage_lists_unidentified"] == 1, "counted")
        assert la.peer_links == frozenset() and la.is_open


async def test_eviction_spares_a_peer_that_has_no_other_link() -> None:
    clock = Clock()
    async with drivers(6, cap=2, clock=clock) as (hub, b, c, d, e, f):
        lb, _ = await couple_direct(hub, b)  # b is linked to the hub only
        lc, _ = await couple_direct(hub, c)
        await couple_direct(c, e)
        await couple_direct(c, f)
        clock.now += INTERVAL
        await until(lambda: lc.peer_links == {e.node_id, f.node_id}, "c's links")
        await until(lambda: lb.lists_heard > float("-inf"), "b's (empty) list")
        assert lb.peer_links == frozenset()
        clock.now += GRACE
        await couple_direct(hub, d)  # over the cap: b is the least recently used ...
        assert lc.farewell and not lb.farewell  # ... but c goes: b would be cut off
        assert hub.stats["link_spared_lonely"] == 1 and hub.stats["link_evicted"] == 1
