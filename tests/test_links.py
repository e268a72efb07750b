"""The link manager: the cap p and LRU eviction (never a pinned link), keepalives and
dead links, reconnection of pinned links by the fastest coupler (loopback ICE only).

Times come from a fake clock handed to the drivers: nothing here depends on how fast
the machine is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from pytest_helpers import loopback_ice

from hailing.errors import QueryTimeout, SdpError
from hailing.transport import Link, LinkAnswer, LinkDriver, LinkOffer, couple_direct
from hailing.transport.links import DEAD_AFTER, GRACE
from hailing.transport.topology import LocalCoupler

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def drivers(n: int, *, cap: int = 16, closest: int = 0, levels: int = 0,
                  clock: Clock | None = None) -> AsyncIterator[list[LinkDriver]]:
    clock = clock or Clock()
    out = [LinkDriver(cap=cap, closest=closest, levels=levels, clock=clock, keepalive=10.0)
           for _ in range(n)]
    for i, d in enumerate(out):
        d.node_id = bytes([i + 1]) * 20
    try:
        yield out
    finally:
        for d in out:
            await d.aclose()


async def until(cond: object, what: str) -> None:
    for _ in range(400):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_the_cap_evicts_the_least_recently_used_unpinned_link() -> None:
    clock = Clock()
    async with drivers(6, cap=3, clock=clock) as (hub, *others):
        links: list[Link] = []
        for other in others[:3]:
            link, _ = await couple_direct(hub, other)
            links.append(link)
            clock.now += 10.0  # link i last used at its adoption
        pinned, oldest, newer = links
        hub.pin(pinned, "friend")
        assert pinned.pinned and not oldest.pinned
        clock.now += GRACE
        await couple_direct(hub, others[3])  # one too many: the LRU unpinned goes
        assert oldest not in hub.links() and oldest.farewell  # it drains, then closes
        assert not pinned.farewell and not newer.farewell
        assert hub.stats["link_evicted"] == 1
        assert hub.link_for(others[1].node_id) is None  # type: ignore[arg-type]
        # the evicted peer was told: its side closes too, as an eviction, not a death
        far = others[1].link_for(hub.node_id)  # type: ignore[arg-type]
        await until(lambda: others[1].link_for(hub.node_id) is None,  # type: ignore[arg-type]
                    "the peer's side retired it")
        assert far is not None and far.farewell
        # use "newer" now: the next eviction takes the new, unused link, never the pin
        clock.now += GRACE
        newer.last_used = clock.now
        clock.now += GRACE
        fourth = hub.link_for(others[3].node_id)  # type: ignore[arg-type]
        await couple_direct(hub, others[4])
        assert fourth is not None and fourth.farewell and fourth not in hub.links()
        assert not pinned.farewell and not newer.farewell
        assert len(hub.links()) == 3


async def test_pinned_links_are_never_evicted_the_cap_yields() -> None:
    clock = Clock()
    async with drivers(4, cap=2, clock=clock) as (hub, *others):
        for other in others:
            await couple_direct(hub, other, pinned=True)
            clock.now += 10.0
        assert len(hub.links()) == 3 and all(x.pinned for x in hub.links())
        assert hub.stats["link_over_cap"] >= 1 and hub.stats.get("link_evicted", 0) == 0
        first = hub.links()[0]
        hub.unpin(first, "adopted")
        hub.tick()  # one over the cap, and its peer still pins it: kept for now
        assert len(hub.links()) == 3 and first.peer_pinned
        peer = next(o for o in others if o.node_id == first.peer_id)
        peer.unpin(peer.links()[0], "adopted")  # the peer says "free"
        await until(lambda: not first.peer_pinned, "the peer's free")
        hub.tick()
        assert len(hub.links()) == 2 and hub.stats["link_evicted"] == 1
        assert first not in hub.links()


async def test_links_the_peer_pinned_are_evicted_last() -> None:
    clock = Clock()
    async with drivers(5, cap=2, clock=clock) as (hub, *others):
        kept, _ = await couple_direct(hub, others[0])
        others[0].pin(others[0].links()[0], "friend")  # the peer pins its side only
        await until(lambda: kept.peer_pinned, "the peer's keep")
        clock.now += 10.0
        newer, _ = await couple_direct(hub, others[1])
        clock.now += 10.0
        await couple_direct(hub, others[2])  # over the cap: "kept" is the LRU, but spared
        await couple_direct(hub, others[3])  # the rest are in use: one over the cap
        assert not kept.farewell and newer.farewell
        assert kept in hub.links() and len(hub.links()) == 3


async def test_a_link_in_use_is_spared_one_over_the_cap() -> None:
    clock = Clock()
    async with drivers(6, cap=2, clock=clock) as (hub, *others):
        for other in others[:3]:
            await couple_direct(hub, other)  # all used "now": within the grace
        assert len(hub.links()) == 3 and hub.stats["link_over_cap"] >= 1
        await couple_direct(hub, others[3])  # two over the cap: the LRU goes anyway
        assert len(hub.links()) == 3
        clock.now += GRACE
        hub.tick()
        assert len(hub.links()) == 2


async def test_the_closest_peers_are_pinned() -> None:
    async with drivers(4, cap=8, closest=2) as (hub, *others):
        # node ids 0x02.., 0x03.., 0x04.. against ours 0x01..: XOR 3, 2, 5, levels 6, 6,
        # 5: the closest link at each of the two deepest levels is pinned (pins.py)
        for other in others:
            await couple_direct(hub, other)
        pins = {x.peer_id[:1]: x.pinned for x in hub.links()}  # type: ignore[index]
        assert pins == {b"\x02": False, b"\x03": True, b"\x04": True}


async def test_keepalives_and_a_silent_link_is_dead() -> None:
    clock = Clock()
    async with drivers(2, clock=clock) as (a, b):
        la, lb = await couple_direct(a, b)
        await until(lambda: la.hello_sent and lb.hello_sent, "hellos")
        clock.now += a.keepalive
        a.tick()
        assert a.stats["link_keepalives"] == 1
        before = la.last_received
        clock.now += 1.0
        await until(lambda: la.last_received > before, "the pong")
        assert b.stats.get("link_garbage", 0) == 0
        # b goes silent (its channel stays open but it sends nothing): a gives up
        lb.channel.send = lambda data: None
        clock.now += DEAD_AFTER * a.keepalive + 1.0
        a.tick()
        assert la.closed and a.stats["link_dead"] == 1
        assert a.link_for(b.node_id) is None  # type: ignore[arg-type]


class SlowCoupler:
    """A coupler that succeeds after ``cost`` seconds of the fake clock (or fails)."""

    def __init__(self, name: str, cost: float, clock: Clock, local: LocalCoupler,
                 fail: bool = False) -> None:
        self.name, self.cost, self.clock, self.local, self.fail = name, cost, clock, local, fail
        self.calls = 0

    async def couple(self, driver: LinkDriver, target: bytes) -> Link:
        self.calls += 1
        self.clock.now += self.cost
        if self.fail:
            raise ConnectionError("this coupler cannot")
        return await self.local.couple(driver, target)


async def test_couplers_are_tried_fastest_first() -> None:
    clock = Clock()
    async with drivers(4, clock=clock) as ds:
        a = ds[0]
        local = LocalCoupler(ds)
        slow = SlowCoupler("slow", 5.0, clock, local)
        fast = SlowCoupler("fast", 1.0, clock, local)
        broken = SlowCoupler("broken", 0.0, clock, local, fail=True)
        a.couplers = [broken, slow, fast]
        assert await a.couple(ds[1].node_id) is not None  # type: ignore[arg-type]
        assert (broken.calls, slow.calls, fast.calls) == (1, 1, 0)
        assert await a.couple(ds[2].node_id) is not None  # type: ignore[arg-type]
        assert fast.calls == 1  # untried came first
        assert [c.name for c in a.ordered_couplers()] == ["fast", "slow", "broken"]
        assert await a.couple(ds[3].node_id) is not None  # type: ignore[arg-type]
        assert (broken.calls, slow.calls, fast.calls) == (1, 1, 2)
        assert a.coupler_times() == {"broken": pytest.approx(20.0), "slow": 5.0, "fast": 1.0}


async def test_a_pinned_link_is_reconnected_with_its_pins() -> None:
    async with drivers(3) as (a, b, c):
        local = LocalCoupler([a, b, c])
        a.couplers = [local]
        la, lb = await couple_direct(a, b)
        a.pin(la, "friend")
        await couple_direct(a, c)  # unpinned: not reconnected
        await lb.close()  # b drops it (a restart, a network change...)
        await c.links()[0].close()
        await until(lambda: (x := a.link_for(b.node_id)) is not None  # type: ignore[arg-type]
                    and x is not la and x.is_open, "a new link to b")
        assert a.stats["link_reconnected"] == 1 and local.coupled == 1
        assert a.link_for(b.node_id).pins == {"friend"}  # type: ignore[arg-type, union-attr]
        assert a.link_for(c.node_id) is None  # type: ignore[arg-type]
        a.unpin(a.link_for(b.node_id), "friend")  # type: ignore[arg-type]


async def test_the_peer_id_is_learned_from_the_hello_and_a_lie_closes_the_link() -> None:
    async with drivers(3) as (a, b, c):
        la, lb = await couple_direct(a, b, tell_ids=False)
        await until(lambda: la.peer_id == b.node_id and lb.peer_id == a.node_id, "hellos")
        assert a.link_for(b.node_id) is la and b.link_for(a.node_id) is lb  # type: ignore[arg-type]
        lb.channel.send(b"\x00H" + bytes(20))  # b now claims another id
        await until(lambda: la.closed, "the lying link closed")
        assert a.stats["link_id_mismatch"] == 1
        assert a.link_for(b.node_id) is None  # type: ignore[arg-type]
        # a peer that claims our own id: refused
        _, from_a = await couple_direct(c, a, tell_ids=False)
        to_c = c.links()[0]
        await until(lambda: to_c.peer_id is not None, "a's hello")
        to_c.peer_id = None  # as if a's hello had not come
        from_a.channel.send(b"\x00H" + c.node_id)  # type: ignore[operator]
        await until(lambda: to_c.closed, "the link to ourselves closed")
        assert c.stats["link_to_self"] == 1


async def test_a_peer_without_hello_is_known_by_its_first_query() -> None:
    async with drivers(2) as (a, b):
        b.node_id = None  # b says no hello (it does not know its id yet)
        la, lb = await couple_direct(a, b, tell_ids=False)
        query = b"d1:ad2:id20:" + b"\x07" * 20 + b"e1:q4:ping1:t2:aa1:y1:qe"
        lb.channel.send(query)
        await until(lambda: la.peer_id == b"\x07" * 20, "the id of the first query")
        assert a.stats["link_received"] == 1


async def test_a_link_on_a_shared_connection_closes_only_its_channel() -> None:
    async with drivers(2) as (a, b):
        la, lb = await couple_direct(a, b)
        la.owns_pc = lb.owns_pc = False  # as adopt(..., owns_pc=False) on a friend link
        await la.close()
        await until(lambda: lb.closed, "b saw the channel close")
        assert la.pc.connectionState == lb.pc.connectionState == "connected"
        await la.pc.close()
        await lb.pc.close()


async def test_a_link_by_offer_and_answer_texts() -> None:
    async with drivers(2) as (a, b):
        offer = await LinkOffer.create(a)
        assert "a=candidate" in offer.sdp and "127.0.0.1" in offer.sdp
        answer = await LinkAnswer.create(b, offer.sdp, peer_id=a.node_id)
        la = await offer.finish(answer.sdp, peer_id=b.node_id)
        lb = await answer.link()
        assert a.link_for(b.node_id) is la and b.link_for(a.node_id) is lb  # type: ignore[arg-type]
        assert la.is_open and lb.is_open


@pytest.mark.parametrize("sdp", ["", "hello", "v=0\r\nnonsense", "v=0\r\nm=application x\r\n",
                                 "v=0" + "x" * 20000, None, 7])
async def test_garbage_sdp_is_refused_and_nothing_stays_open(sdp: object) -> None:
    async with drivers(2) as (a, b):
        with pytest.raises(SdpError):
            await LinkAnswer.create(b, sdp)  # type: ignore[arg-type]
        offer = await LinkOffer.create(a)
        with pytest.raises((SdpError, QueryTimeout)):
            await offer.finish(sdp, timeout=1.0)  # type: ignore[arg-type]
        assert offer.pc.connectionState == "closed"
        assert a.links() == [] and b.links() == []


async def test_an_answer_never_taken_times_out() -> None:
    async with drivers(2) as (a, b):
        offer = await LinkOffer.create(a)
        answer = await LinkAnswer.create(b, offer.sdp, timeout=1.0)
        with pytest.raises(QueryTimeout):
            await answer.link()
        assert answer.pc.connectionState == "closed" and b.links() == []
        await offer.cancel()


async def test_a_pin_made_before_the_peer_id_is_known_is_kept_for_that_peer() -> None:
    async with drivers(2) as (a, b):
        la, _ = await couple_direct(a, b, tell_ids=False)
        if la.peer_id is None:
            a.pin(la, "friend")
        else:  # the hello came first: pin it the same way
            la.peer_id = None
            a.pin(la, "friend")
            a._bind(la, b.node_id)  # type: ignore[arg-type]
        await until(lambda: la.peer_id == b.node_id, "b's hello")
        assert a._wanted[b.node_id] == {"friend"}  # type: ignore[index]
