"""The BEP44 fallback's polling schedule follows the inbox's health (docs/protocol.md,
"BEP44 fallback", "Polling").

What is shown: a contact whose offers reach us through the inbox (its listens live) is
polled every ``IDLE_HEALTHY`` seconds, not at the fast idle schedule (the regression:
before, every contact was polled every 2-8 s whatever the inbox); when the inbox says
the listens are lost, that contact is polled at once and then at 2, 4, 8 s; a peer we
call is polled every 0.5 s whatever the inbox; the DHT coupler tells the fallback
through ``watch_listens``; and end to end on a loopback testnet, a daemon's contact is
polled slowly while hailing nodes hold its listens, and fast once they are all gone
(the node's holder pings notice, no renewal needed). Clocks are advanced by hand; the
end-to-end test shortens the core's intervals, and waits only for events."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pytest_helpers import loopback_ice
from session_doubles import eventually
from test_mainline_fallback import NOON, Clock, FakeDht, FakeNode, ident

from hailing.dht import DhtConfig
from hailing.dht import inbox_client as inbox_client_mod
from hailing.dht.bep44 import MutableItem
from hailing.dht.ids import NodeInfo
from hailing.errors import NotFoundError, QueryTimeout
from hailing.identity import Identity
from hailing.peer import Peer
from hailing.session.coupler import DhtCoupler, Inlet, MainlineCoupler
from hailing.session.dialer import FALLBACK_LADDER
from hailing.session.supervisor import Supervisor
from hailing.signaling import bep44_direct, mainline_rdv
from hailing.signaling.mainline_rdv import IDLE_HEALTHY, MainlineRendezvous
from hailing.testnet import testnet as local_testnet

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


class Health:
    """A stand-in for the DHT coupler's listen health."""

    def __init__(self) -> None:
        self.live: set[bytes] = set()
        self.watchers: list[Callable[[bytes], object]] = []

    def listening(self, peer: bytes) -> bool:
        return peer in self.live

    def watch_listens(self, callback: Callable[[bytes], object]) -> None:
        self.watchers.append(callback)

    def set(self, peer: bytes, live: bool) -> None:
        (self.live.add if live else self.live.discard)(peer)
        for w in self.watchers:
            w(peer)


def reader(me: Identity, peer: Identity, health: Health, net: FakeDht | None = None,
           mono: Clock | None = None, wall: Clock | None = None) -> MainlineRendezvous:
    return MainlineRendezvous(FakeNode(net or FakeDht()), me, lambda: [peer.public_key],
                              clock=wall or Clock(NOON), monotonic=mono or Clock(1000.0),
                              inbox_live=health.listening)


async def test_a_contact_the_inbox_carries_is_polled_slowly() -> None:
    a, b = ident(1), ident(2)
    health = Health()
    health.live.add(a.public_key)
    rb = reader(b, a, health)
    await rb.refresh()
    assert rb.next_poll(a.public_key) == 0.0  # a new contact: once at once
    waits = []
    for _ in range(4):
        await rb.poll(a.public_key, lambda blob: None)
        waits.append(rb.next_poll(a.public_key))
        assert rb.polling_slow(a.public_key)
    assert waits == [IDLE_HEALTHY] * 4  # not 2, 4, 8, 8 (every contact, before)
    assert IDLE_HEALTHY >= 60.0


async def test_without_an_inbox_beside_it_the_fast_idle_schedule_stays() -> None:
    a, b = ident(1), ident(2)
    rb = MainlineRendezvous(FakeNode(FakeDht()), b, lambda: [a.public_key],
                            clock=Clock(NOON), monotonic=Clock(0.0))
    await rb.refresh()
    waits = []
    for _ in range(4):
        await rb.poll(a.public_key, lambda blob: None)
        waits.append(rb.next_poll(a.public_key))
    assert waits == [2.0, 4.0, 8.0, 8.0]
    assert not rb.polling_slow(a.public_key)


async def test_lost_listens_mean_a_poll_at_once_then_the_fast_idle_schedule() -> None:
    a, b = ident(1), ident(2)
    health = Health()
    health.live.add(a.public_key)
    mono = Clock(1000.0)
    rb = reader(b, a, health, mono=mono)
    health.watch_listens(rb.inbox_changed)
    await rb.refresh()
    await rb.poll(a.public_key, lambda blob: None)
    assert rb.next_poll(a.public_key) == IDLE_HEALTHY
    mono.now += 5
    health.set(a.public_key, False)  # the DHT node's holder pings found nobody
    assert rb.next_poll(a.public_key) == 0.0  # not 55 s later
    assert not rb.polling_slow(a.public_key)
    assert rb.stats["mainline_inbox_lost"] == 1
    waits = []
    for _ in range(4):
        await rb.poll(a.public_key, lambda blob: None)
        waits.append(rb.next_poll(a.public_key))
    assert waits == [2.0, 4.0, 8.0, 8.0]
    # the listens come back: nothing changes until the next poll, which slows down
    health.set(a.public_key, True)
    assert rb.next_poll(a.public_key) == 8.0
    await rb.poll(a.public_key, lambda blob: None)
    assert rb.next_poll(a.public_key) == IDLE_HEALTHY
    # a change for a contact not polled slowly, or for a stranger, does nothing
    health.set(ident(9).public_key, False)
    assert rb.stats["mainline_inbox_lost"] == 1


async def test_a_peer_we_call_is_polled_fast_whatever_the_inbox() -> None:
    a, b = ident(1), ident(2)
    net, wall, mono = FakeDht(), Clock(NOON), Clock(1000.0)
    health = Health()
    health.live.add(a.public_key)
    rb = reader(b, a, health, net=net, mono=mono, wall=wall)
    ra = MainlineRendezvous(FakeNode(net), a, lambda: [b.public_key], clock=wall)
    await rb.refresh()
    await rb.poll(a.public_key, lambda blob: None)
    assert rb.polling_slow(a.public_key)
    await rb.expect_from(a.public_key)  # we call alice: its answer may come by an item
    assert not rb.polling_slow(a.public_key) and rb.polling_fast(a.public_key)
    assert rb.next_poll(a.public_key) == mainline_rdv.FAST_INTERVAL
    await rb.poll(a.public_key, lambda blob: None)
    assert rb.next_poll(a.public_key) == mainline_rdv.FAST_INTERVAL
    wall.now += 2
    await ra.send(b.public_key, b"the answer")
    got: list[bytes] = []
    await rb.poll(a.public_key, got.append)
    assert got == [b"the answer"] and not rb.polling_fast(a.public_key)
    # something came: one poll at the minimum (a CANCEL, an endpoint record), then slow
    assert rb.next_poll(a.public_key) == mainline_rdv.IDLE_MIN
    await rb.poll(a.public_key, got.append)
    assert rb.next_poll(a.public_key) == IDLE_HEALTHY


async def test_the_polling_loop_wakes_for_a_contact_whose_listens_are_lost() -> None:
    a, b = ident(1), ident(2)
    net = FakeDht()
    stats: Counter[str] = Counter()
    supervisor = Supervisor(stats)
    health = Health()
    health.live.add(a.public_key)
    coupler = MainlineCoupler(FakeNode(net), b, lambda: [a.public_key],  # type: ignore[arg-type]
                              inbox=health)
    assert health.watchers  # the coupler listens to the inbox's changes
    rdv = coupler.rendezvous
    rdv.idle_healthy = 3600.0  # a slow poll would never come within the test
    rdv.idle_min = rdv.idle_max = 0.01
    await coupler.start(Inlet("mainline", supervisor, stats))
    try:
        await eventually(lambda: len(net.gets) == 1 and rdv.polling_slow(a.public_key),
                         "the first poll, then slow")
        await asyncio.sleep(0.05)
        assert len(net.gets) == 1
        health.set(a.public_key, False)
        await eventually(lambda: len(net.gets) >= 4, "polled fast at once")
    finally:
        await coupler.aclose()
        await supervisor.aclose()
    assert stats["mainline_inbox_lost"] == 1 and stats["task_errors"] == 0


# -- end to end: a daemon's node on a loopback testnet of hailing nodes ---------------------


async def test_a_daemon_polls_slowly_while_its_listens_live_and_fast_once_their_nodes_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the core's intervals shortened (30 s checks, 10 s ticks, 4 s timeouts otherwise)
    monkeypatch.setattr(inbox_client_mod, "HOLDER_CHECK", 1.0)
    fast_core = DhtConfig(maintenance_interval=0.2, query_timeout=1.0, read_only=True)
    alice = ident(11)
    async with local_testnet(6) as nodes:
        p = Peer(tmp_path / "bob", bootstrap=[nodes[0].address], dht_config=fast_core,
                 ladder=list(FALLBACK_LADDER))
        await p.start()
        try:
            assert p.contacts is not None
            dht, mainline = p.coupler("dht"), p.coupler("mainline")
            assert isinstance(dht, DhtCoupler) and isinstance(mainline, MainlineCoupler)
            rdv = mainline.rendezvous
            rdv.idle_min = rdv.idle_max = 0.05
            p.contacts.add(alice.contact_id, "alice")
            await p.refresh()
            await eventually(lambda: dht.listening(alice.public_key), "listens granted")
            await eventually(lambda: rdv.polling_slow(alice.public_key),
                             "alice polled slowly (the inbox carries her offers)")
            gets = p.stats["mainline_gets"]
            await asyncio.sleep(0.3)
            assert p.stats["mainline_gets"] == gets  # nothing more while the inbox lives
            for n in nodes:  # every storing node goes, without a word
                await n.stop()
            await eventually(lambda: not dht.listening(alice.public_key),
                             "the listens known lost", timeout=20)
            await eventually(lambda: p.stats["mainline_gets"] >= gets + 3,
                             "alice polled fast again", timeout=20)
            assert p.stats["mainline_inbox_lost"] >= 1
            assert p.node is not None and p.node.stats["listens_lost"] >= 1
        finally:
            await p.stop()


# -- direct polls: the nodes that answered the last full get ------------------------------


class DirectNode(FakeNode):
    """A FakeNode whose full gets name closest nodes, and that answers ``get`` queries
    to those addresses: from the shared items (BEP44 ``seq`` honoured), or as told by
    ``behave[addr]``: ``"silent"`` (a timeout), or a reply dictionary (garbage)."""

    CLOSEST: ClassVar[list[tuple[str, int]]] = [(f"198.18.0.{i}", 6881) for i in range(1, 9)]

    def __init__(self, net: FakeDht) -> None:
        super().__init__(net)
        self.full = 0
        self.queries: list[tuple[tuple[str, int], dict[bytes, Any]]] = []
        self.behave: dict[tuple[str, int], Any] = {}

    async def get_mutable_nodes(self, pubkey: bytes, salt: bytes = b""
                                ) -> tuple[MutableItem | None, tuple[NodeInfo, ...]]:
        self.full += 1
        item = await self.get_mutable(pubkey, salt)
        return item, tuple(NodeInfo(bytes([i]) * 20, a) for i, a in enumerate(self.CLOSEST))

    async def query(self, addr: tuple[str, int], method: bytes, args: dict[bytes, Any]
                    ) -> dict[bytes, Any]:
        assert method == b"get"
        self.queries.append((addr, args))
        how = self.behave.get(addr)
        if how == "silent":
            raise QueryTimeout("no answer")
        if how is not None:
            return how  # type: ignore[no-any-return]
        item = self.net.items.get(args[b"target"])
        r: dict[bytes, Any] = {b"id": b"x" * 20, b"token": b"t"}
        if item is not None:
            r[b"seq"] = item.seq
            if b"seq" not in args or item.seq > args[b"seq"]:
                r.update({b"k": item.pubkey, b"sig": item.sig, b"v": item.value})
        return r


def direct_pair(net: FakeDht) -> tuple[MainlineRendezvous, MainlineRendezvous, DirectNode]:
    a, b = ident(1), ident(2)
    node = DirectNode(net)
    ra = MainlineRendezvous(FakeNode(net), a, lambda: [b.public_key], clock=Clock(NOON))
    rb = MainlineRendezvous(node, b, lambda: [a.public_key], clock=Clock(NOON),
                            monotonic=Clock(0.0))
    return ra, rb, node


async def test_polls_after_a_full_get_ask_its_closest_nodes_directly() -> None:
    net = FakeDht()
    ra, rb, node = direct_pair(net)
    a, b = ident(1).public_key, ident(2).public_key
    assert rb.direct is not None
    await rb.refresh()
    got: list[bytes] = []
    await rb.poll(a, got.append)
    assert node.full == 1 and node.queries == []  # the first poll: a lookup
    target = rb.inbox(a).target
    assert rb.direct.nodes(target) == DirectNode.CLOSEST[:3]
    for _ in range(3):
        await rb.poll(a, got.append)
    assert node.full == 1 and len(node.queries) == 9  # 3 polls x the 3 closest
    assert {addr for addr, _ in node.queries} == set(DirectNode.CLOSEST[:3])
    assert all(q[b"target"] == target and b"seq" not in q for _, q in node.queries)
    await ra.send(b, b"an offer")
    await rb.poll(a, got.append)
    assert got == [b"an offer"] and node.full == 1  # read from the nodes asked directly
    node.queries.clear()
    await rb.poll(a, got.append)  # now with the seq seen: nothing newer, no value
    assert got == [b"an offer"]
    seq = net.items[target].seq
    assert [q[b"seq"] for _, q in node.queries] == [seq] * 3
    for _ in range(10):  # a full get every FULL_EVERY polls all the same
        await rb.poll(a, got.append)
    assert node.full == 2
    assert rb.stats["mainline_full_gets"] == 2
    assert rb.stats["mainline_direct_gets"] == rb.stats["mainline_gets"] - 2


async def test_every_full_every_th_poll_is_a_full_get() -> None:
    _, rb, node = direct_pair(FakeDht())
    a = ident(1).public_key
    await rb.refresh()
    fulls = []
    for _ in range(2 * bep44_direct.FULL_EVERY + 1):
        await rb.poll(a, lambda blob: None)
        fulls.append(node.full)
    every = bep44_direct.FULL_EVERY
    assert fulls == [1] * every + [2] * every + [3]


async def test_remembered_nodes_that_stop_answering_mean_a_full_get() -> None:
    net = FakeDht()
    _, rb, node = direct_pair(net)
    a = ident(1).public_key
    await rb.refresh()
    await rb.poll(a, lambda blob: None)
    assert rb.direct is not None
    target = rb.inbox(a).target
    node.behave[DirectNode.CLOSEST[0]] = "silent"
    await rb.poll(a, lambda blob: None)  # 2 of 3 answered: fine, the silent one forgotten
    assert node.full == 1 and rb.direct.nodes(target) == DirectNode.CLOSEST[1:3]
    node.behave[DirectNode.CLOSEST[1]] = "silent"
    await rb.poll(a, lambda blob: None)  # 1 of 2: a full get at once, in the same poll
    assert node.full == 2
    assert rb.stats["mainline_direct_errors"] == 2 and rb.stats["mainline_get_errors"] == 0


@pytest.mark.parametrize("seed", range(6))
async def test_garbage_from_the_remembered_nodes_is_counted_and_they_are_forgotten(
        seed: int) -> None:
    rng = random.Random(seed)
    net = FakeDht()
    ra, rb, node = direct_pair(net)
    a, b = ident(1).public_key, ident(2).public_key
    await rb.refresh()
    await ra.send(b, b"the real offer")
    got: list[bytes] = []
    await rb.poll(a, got.append)  # a full get: the real item
    assert got == [b"the real offer"]
    assert rb.direct is not None
    key = rb.inbox(a)
    real = net.items[key.target]
    wrong_seed = bytes(rng.randrange(256) for _ in range(32))
    forged = MutableItem.create(wrong_seed, b"a forged offer", key.salt, real.seq + 5)
    garbage: list[Any] = [
        {b"v": b"x", b"k": b"short", b"sig": b"s", b"seq": real.seq + 1},
        {b"v": b"x", b"k": real.pubkey, b"sig": b"\0" * 64, b"seq": real.seq + 1},
        {b"v": b"x"},
        {b"v": b"x", b"k": forged.pubkey, b"sig": forged.sig, b"seq": forged.seq},
        {b"v": b"x", b"k": real.pubkey, b"sig": real.sig, b"seq": -1},
        {b"v": b"x", b"k": real.pubkey, b"sig": real.sig, b"seq": "7"},
        {b"v": rng.randbytes(rng.randrange(1, 40)), b"k": real.pubkey,
         b"sig": rng.randbytes(64), b"seq": real.seq + 2},
        ["not", "a", "dict"],
    ]
    liar = DirectNode.CLOSEST[rng.randrange(3)]
    node.behave[liar] = rng.choice(garbage)
    await rb.poll(a, got.append)
    assert got == [b"the real offer"]  # nothing new handed on, nothing raised
    assert liar not in rb.direct.nodes(key.target)
    bad = (rb.stats["mainline_direct_garbage"] + rb.stats["mainline_bad_signatures"])
    assert bad == 1
    # every remembered node lies: a full get, which finds the real item (seen already)
    for addr in DirectNode.CLOSEST:
        node.behave[addr] = rng.choice(garbage)
    full = node.full
    await rb.poll(a, got.append)
    assert node.full == full + 1 and got == [b"the real offer"]


class ListenNode:
    """A DHT node double for the inbox coupler: listens always taken, posts counted,
    and whether a storing node still holds each listen is the test's to say."""

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.posts = 0
        self.watchers: list[Callable[[bytes, bool], object]] = []

    def watch_listens(self, callback: Callable[[bytes, bool], object]) -> None:
        self.watchers.append(callback)

    async def listen(self, key: bytes, ttl: float = 300.0) -> int:
        for w in self.watchers:  # a storing node took it: the event, as DhtNode's
            if self.live:
                w(key, True)
        return 1

    def unlisten(self, key: bytes) -> None:
        pass

    async def post(self, key: bytes, value: bytes) -> int:
        self.posts += 1
        return 1

    def listening(self, key: bytes) -> bool:
        return self.live


async def test_the_inbox_rung_fails_at_once_when_none_of_our_listens_is_held() -> None:
    """Right after every hailing node vanished, a post would wait for the vanished
    nodes (a query timeout each) before the BEP44 fallback got the call: with all our
    own listens known lost, the inbox rung fails at once, without a post. Only with a
    fallback rung behind it, only for offers, never while a listen is held, and not
    for listens no node ever took (no hailing node met yet: a post fails at once)."""
    me, bob = ident(1), ident(2)
    node = ListenNode()
    coupler = DhtCoupler(node, me, lambda: [bob.public_key], lambda: False,  # type: ignore[arg-type]
                         clock=Clock(NOON), fallback=True)
    without = DhtCoupler(node, me, lambda: [bob.public_key], lambda: False,  # type: ignore[arg-type]
                         clock=Clock(NOON))
    for c in (coupler, without):
        assert await c.rendezvous.refresh() == 1
    assert await coupler.send(bob.public_key, b"offer", "offer") == 1  # held: posted
    node.live = False  # every holder of every listen of ours stopped answering
    with pytest.raises(NotFoundError, match="no hailing node holds our inbox listens"):
        await coupler.send(bob.public_key, b"offer", "offer")
    assert node.posts == 1
    assert await coupler.send(bob.public_key, b"answer", "answer") == 1  # not an offer
    assert await without.send(bob.public_key, b"offer", "offer") == 1  # no fallback rung
    assert node.posts == 3
    never = ListenNode(live=False)
    fresh = DhtCoupler(never, me, lambda: [bob.public_key], lambda: False,  # type: ignore[arg-type]
                       clock=Clock(NOON), fallback=True)
    await fresh.rendezvous.refresh()
    assert await fresh.send(bob.public_key, b"offer", "offer") == 1 and never.posts == 1
