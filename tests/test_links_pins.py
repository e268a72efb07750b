"""Pins spread over levels (transport/pins.py): besides its closest peers, a node pins
links at shallower levels, chosen with a phase of its own id so that different nodes
hold different levels; the link manager keeps them (loopback ICE for the last test)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pytest_helpers import loopback_ice
from test_links import Clock, drivers, until

from hailing.transport import couple_direct
from hailing.transport.links import FILL_RETRY, GRACE
from hailing.transport.pins import choose_pins, level, phase_of, pick_levels
from hailing.transport.topology import LocalCoupler

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


def _id(top: int, rest: bytes = bytes(19)) -> bytes:
    return bytes([top]) + rest


def test_levels_and_phase() -> None:
    own = _id(0x01)
    assert level(own, own) == 160
    assert level(own, _id(0x80)) == 0 and level(own, _id(0x40)) == 1
    assert level(own, _id(0x03)) == 6 and level(own, _id(0x00, bytes(18) + b"\x01")) == 7
    assert phase_of(bytes(20)) == 0.0
    nid = bytes(8) + b"\x80\x00\x00\x00" + bytes(8)  # bits 64..95 = 0x80000000
    assert phase_of(nid) == 0.5
    assert 0.0 <= phase_of(b"\xff" * 20) < 1.0


def test_pick_levels_spreads_from_the_phase() -> None:
    levels = [0, 1, 2, 3, 4, 5, 6, 7]
    assert pick_levels(levels[:2], 4, 0.3) == [0, 1]  # fewer than the budget: all
    assert pick_levels(levels, 0, 0.3) == []
    assert pick_levels(levels, 2, 0.0) == [0, 4]
    assert pick_levels(levels, 2, 0.5) == [2, 6]
    assert pick_levels(levels, 2, 0.99) == [3, 7]


def test_different_nodes_hold_different_levels_evenly() -> None:
    # 400 nodes with random ids, each knowing a peer at levels 0..11: two level pins
    # each. Every level is held by about 2/12 of the nodes; with one spread for all,
    # the same two levels would be held by every node.
    rng = random.Random(5)
    held: Counter[int] = Counter()
    chosen: set[tuple[int, ...]] = set()
    nodes = 400
    for _ in range(nodes):
        own = rng.randbytes(20)
        mine = int.from_bytes(own, "big")
        peers = []
        for lv in range(12):  # a peer sharing exactly lv bits with own
            flip = 1 << (159 - lv)
            low = rng.getrandbits(159 - lv)
            peers.append(((mine ^ flip) >> (159 - lv) << (159 - lv) | low).to_bytes(20, "big"))
        pins = choose_pins(own, peers, closest=0, levels=2)
        levels = tuple(sorted(level(own, p) for p, why in pins.items() if why == "level"))
        assert len(levels) == 2
        chosen.add(levels)
        held.update(levels)
    assert set(held) == set(range(12))
    expected = nodes * 2 / 12
    assert all(0.6 * expected <= held[lv] <= 1.4 * expected for lv in range(12)), held
    assert len(chosen) >= 6


def test_choose_pins_the_deepest_levels_then_levels_picked_by_the_phase() -> None:
    own = _id(0x01)  # phase 0: of four levels, two pins take the 1st and the 3rd
    peers = [_id(0x03), _id(0x02), _id(0x04), _id(0x05), _id(0x10), _id(0x40), _id(0x80),
             _id(0x81)]
    pins = choose_pins(own, peers, closest=1, levels=2)
    # 0x03 is the closest at the deepest level (6); shallower levels: 0, 1, 3, 5
    assert pins == {_id(0x03): "closest", _id(0x81): "level", _id(0x10): "level"}
    # a peer we have a link to is its level's pin before a closer one we only know
    linked = {_id(0x80), _id(0x02)}
    assert choose_pins(own, peers, closest=1, levels=2, linked=linked) == {
        _id(0x02): "closest", _id(0x80): "level", _id(0x10): "level"}
    # the closest pins are one a level, the deepest ones
    assert choose_pins(own, peers, closest=2, levels=0) == {
        _id(0x03): "closest", _id(0x05): "closest"}
    assert choose_pins(own, peers, closest=0, levels=0) == {}
    assert choose_pins(own, [], closest=2, levels=2) == {}


async def test_the_manager_pins_levels_and_never_evicts_them() -> None:
    clock = Clock()
    async with drivers(9, cap=8, closest=1, levels=2, clock=clock) as (hub, *others):
        tops = [0x03, 0x04, 0x10, 0x40, 0x80, 0x05, 0x06, 0x07]
        for d, top in zip(others, tops, strict=True):
            d.node_id = _id(top, b"\x01" * 19)
            d.closest = d.levels = 0  # the peers pin nothing: the hub may evict any
        hub.node_id = _id(0x01, b"\x01" * 19)
        for d in others:
            await couple_direct(hub, d)
            clock.now += GRACE
        pins = {x.peer_id[:1]: x.pins for x in hub.links()}  # type: ignore[index]
        assert pins[b"\x03"] == {"closest"}
        assert pins[b"\x80"] == {"level"} and pins[b"\x10"] == {"level"}
        assert sum(1 for p in pins.values() if p) == 3
        # every peer's link list has come (each has no other link: none is spared as
        # the last link of its peer, links.LONELY, since all are)
        await until(lambda: all(x.lists_heard > float("-inf") for x in hub.links()), "lists")
        # one more link over the cap: an unpinned one goes, never a level pin
        extra = drivers(1, clock=clock)
        async with extra as (late,):
            late.node_id = _id(0x06, b"\x02" * 19)
            clock.now += GRACE
            await couple_direct(hub, late)
            assert hub.stats["link_evicted"] == 1
            kept = {x.peer_id[:1] for x in hub.links()}  # type: ignore[index]
            assert {b"\x03", b"\x80", b"\x10"} <= kept and len(hub.links()) == 8
            assert b"\x04" not in kept  # the least recently used unpinned


class _Host:
    """The node side of a driver, as far as pins need it: the ids it knows."""

    def __init__(self, node_id: bytes, known: list[bytes]) -> None:
        self.node_id = node_id
        self.known = known

    def known_ids(self) -> list[bytes]:
        return list(self.known)

    def link_datagram(self, data: bytes, addr: object) -> None:
        pass

    def link_opened(self, link: object) -> None:
        pass

    def link_closed(self, link: object) -> None:
        pass

    def link_unreachable(self, data: bytes, addr: object) -> None:
        pass

    def known_id(self, addr: object) -> None:
        return None


async def test_the_manager_couples_the_pins_it_has_no_link_to() -> None:
    clock = Clock()
    async with drivers(7, cap=8, closest=1, levels=2, clock=clock) as (hub, *others):
        for d, top in zip(others, [0x03, 0x04, 0x10, 0x40, 0x80, 0x81], strict=True):
            d.node_id = _id(top, b"\x01" * 19)
            d.closest = d.levels = 0
        hub.node_id = _id(0x01, b"\x01" * 19)
        ids = [d.node_id for d in others if d.node_id is not None]
        host = _Host(hub.node_id, ids)
        hub.attach(host)  # type: ignore[arg-type]
        hub.couplers = [LocalCoupler([hub, *others])]
        await couple_direct(hub, others[1])  # linked to 0x04 only
        expected = choose_pins(hub.node_id, ids, 1, 2)
        assert expected == {_id(0x03, b"\x01" * 19): "closest",
                            _id(0x10, b"\x01" * 19): "level", _id(0x81, b"\x01" * 19): "level"}
        for _ in range(4):  # one coupling per round, closest first
            hub.tick()
            await until(lambda: hub._filling is None or hub._filling.done(), "a pin coupled")
        pins = {x.peer_id: x.pins for x in hub.links()}
        assert all(why in pins.get(peer, set()) for peer, why in expected.items()), pins
        assert hub.stats["link_pin_coupled"] == 3 and len(hub.links()) == 4
        # a peer that cannot be coupled is tried once a FILL_RETRY
        ghost = _id(0x00, b"\x01" * 19)  # the closest of all, but no driver here
        host.known.append(ghost)
        hub.tick()
        await until(lambda: hub.stats["link_pin_failed"] == 1, "the ghost tried")
        hub.tick()
        await until(lambda: hub._filling is not None and hub._filling.done(), "settled")
        assert hub.stats["link_pin_failed"] == 1
        clock.now += FILL_RETRY
        hub.tick()
        await until(lambda: hub.stats["link_pin_failed"] == 2, "the ghost tried again")
        # without fill_pins, the manager only pins links that are open
        hub.fill_pins = False
        clock.now += FILL_RETRY
        hub.tick()
        assert hub._filling is not None and hub._filling.done()
        assert hub.stats["link_pin_failed"] == 2
