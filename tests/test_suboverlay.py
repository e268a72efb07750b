"""The hailing sub-overlay (dht/suboverlay.py) between in-memory cores, clock by hand.

A *foreign* node is hailing's core configured as a plain Mainline node
(``DhtConfig(version=None, extensions=False)``): no ``v``, 204 to hailing's methods, the
marker ignored, as libtorrent does (tests/test_suboverlay_libtorrent.py has the real one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

import pytest
from netsim import MemoryNet, ask, join, krpc_query

from hailing.dht import CommandFailed, DhtConfig, DhtProtocol, InboxMessage, NodesFound, StoreDone
from hailing.dht.ids import id_to_int
from hailing.dht.routing import SourceKeys
from hailing.dht.suboverlay import (
    ANNOUNCE_INTERVAL,
    HAILING_INFOHASH,
    SUB_MARKER,
    is_hailing,
)
from hailing.errors import NotFoundError
from hailing.krpc import IPAddressCodec, decode_nodes

FOREIGN = DhtConfig(version=None, extensions=False)
KEY = b"K" * 20


def mixed_net(foreign: int, hailing: int, seed: int = 1,
              config: DhtConfig | None = None) -> tuple[MemoryNet, list[DhtProtocol]]:
    """``foreign`` plain Mainline nodes, then ``hailing`` hailing nodes joining through
    the first foreign node only (they must find each other through the DHT)."""
    net = MemoryNet(seed=seed)
    first = net.add(config=FOREIGN)
    via = net.addr_of(first)
    for _ in range(foreign - 1):
        join(net, via, FOREIGN)
    hl = [join(net, via, config) for _ in range(hailing)]
    return net, hl


def sub_ids(p: DhtProtocol) -> set[bytes]:
    return {e.id for e in p.sub.table}


def test_the_info_hash_is_sha1_of_its_name() -> None:
    assert hashlib.sha1(b"hailing nodes v1").digest() == HAILING_INFOHASH
    assert is_hailing(b"HL\x00\x01") and is_hailing(b"HL\x07\x00")
    assert not is_hailing(None) and not is_hailing(b"LT\x02\x01") and not is_hailing(b"H")


def test_the_sub_table_holds_only_nodes_that_answer_as_hailing() -> None:
    net, hl = mixed_net(30, 3)
    net.run(duration=5.0)
    hailing_ids = {p.node_id for p in hl}
    for p in hl:
        assert sub_ids(p) == hailing_ids - {p.node_id}  # all the others, nobody else
        assert len(p.table) > len(p.sub.table)  # the main table has the foreign nodes
        assert p.sub.foreign > 0


def test_hailing_nodes_find_each_other_through_announces_on_foreign_nodes() -> None:
    net, hl = mixed_net(40, 4)
    net.run(duration=5.0)
    holders = [p for p in net.live() if p.peers.get(HAILING_INFOHASH, net.now)]
    assert holders and all(p.config.version is None for p in holders)  # foreign nodes store it
    assert all(p.stats["sub_rounds"] >= 1 for p in hl)
    ev = net.wait_event(hl[0], hl[0].find_hailing_nodes(net.now))
    assert isinstance(ev, NodesFound) and ev.target == HAILING_INFOHASH
    assert {n.id for n in ev.nodes} == {p.node_id for p in hl[1:]}


def test_rounds_repeat_every_announce_interval() -> None:
    net, hl = mixed_net(20, 2)
    net.run(duration=5.0)
    p = hl[0]
    before = p.stats["sub_rounds"]
    net.run(duration=ANNOUNCE_INTERVAL + 30)
    assert p.stats["sub_rounds"] > before
    # The peer entries (30 minutes) outlive the interval: still announced much later.
    net.run(duration=3 * ANNOUNCE_INTERVAL)
    addr = net.addr_of(p)
    stored = [v for q in net.live() for v in q.peers.get(HAILING_INFOHASH, net.now)]
    assert any(p.codec.unpack(v) == addr for v in stored)


def test_a_read_only_node_looks_but_does_not_announce() -> None:
    net, hl = mixed_net(25, 2)
    ro = join(net, net.addr_of(net.live()[0]), DhtConfig(read_only=True))
    ev = net.wait_event(ro, ro.find_hailing_nodes(net.now))
    assert isinstance(ev, NodesFound) and {n.id for n in ev.nodes} == {p.node_id for p in hl}
    stored = {ro.codec.unpack(v) for q in net.live() for v in q.peers.get(HAILING_INFOHASH, net.now)}
    assert net.addr_of(ro) not in stored and {net.addr_of(p) for p in hl} <= stored


def test_a_hailing_only_network_runs_no_round() -> None:
    net = MemoryNet()
    first = net.add()
    nodes = [join(net, net.addr_of(first)) for _ in range(12)]
    net.run(duration=ANNOUNCE_INTERVAL * 2)
    assert all(p.stats["sub_rounds"] == 0 and p.sub.foreign == 0 for p in nodes)
    assert not any(p.peers.get(HAILING_INFOHASH, net.now) for p in net.live())
    # find_hailing_nodes answers at once with what the sub-table has
    ev = net.wait_event(nodes[0], nodes[0].find_hailing_nodes(net.now))
    assert isinstance(ev, NodesFound) and ev.nodes


def _closest_ids(answer: dict[bytes, object]) -> list[bytes]:
    return [nid for nid, _ in decode_nodes(answer[b"nodes"], _CODEC)]  # type: ignore[arg-type]


_CODEC = IPAddressCodec()


def test_the_marker_gets_the_closest_hailing_nodes() -> None:
    net, hl = mixed_net(30, 3)
    net.run(duration=5.0)
    target = b"\x00" * 20
    hailing_ids = {p.node_id for p in hl}
    plain = ask(net, hl[0], ("10.9.0.1", 1), krpc_query(b"find_node", {b"target": target}))
    marked = ask(net, hl[0], ("10.9.0.1", 1),
                 krpc_query(b"find_node", {b"target": target, SUB_MARKER: 1}))
    assert len(_closest_ids(plain)) == 8 and not set(_closest_ids(plain)) <= hailing_ids
    assert set(_closest_ids(marked)) == hailing_ids - {hl[0].node_id}
    got = ask(net, hl[0], ("10.9.0.1", 1),
              krpc_query(b"get", {b"target": target, SUB_MARKER: 1}))
    assert set(_closest_ids(got)) == hailing_ids - {hl[0].node_id}
    # a marker of the wrong type is ignored (the main table answers)
    odd = ask(net, hl[0], ("10.9.0.1", 1),
              krpc_query(b"find_node", {b"target": target, SUB_MARKER: b"x"}))
    assert _closest_ids(odd) == _closest_ids(plain)


def test_a_foreign_node_ignores_the_marker_and_refuses_hailing_methods() -> None:
    net, _ = mixed_net(10, 1)
    f = net.live()[3]
    src = ("10.9.0.2", 1)
    plain = ask(net, f, src, krpc_query(b"find_node", {b"target": KEY}))
    marked = ask(net, f, src, krpc_query(b"find_node", {b"target": KEY, SUB_MARKER: 1}))
    assert plain[b"nodes"] == marked[b"nodes"]
    assert ask(net, f, src, krpc_query(b"hailing_post", {b"key": KEY, b"v": b"x", b"token": b"t"})) \
        == {b"error": 204}


def _queries_to_foreign(net: MemoryNet) -> int:
    return sum(p.stats["q_get"] for p in net.live() if p.config.version is None)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_an_inbox_lives_on_hailing_nodes_among_foreign_ones(seed: int) -> None:
    net, hl = mixed_net(40, 5, seed=seed)
    net.run(duration=5.0)
    callee, caller = hl[0], hl[-1]
    net.wait_event(callee, callee.listen(KEY, net.now))
    asked = _queries_to_foreign(net)
    ev = net.wait_event(caller, caller.post(KEY, b"offer", net.now))
    assert isinstance(ev, StoreDone) and ev.stored >= 3
    assert _queries_to_foreign(net) == asked  # the lookup stayed among hailing nodes
    net.run(duration=1.0)
    assert [e.value for e in net.events[net.addr_of(callee)] if isinstance(e, InboxMessage)] \
        == [b"offer"]
    # the key the test below fails on: found here
    ev = net.wait_event(caller, caller.post(_far_key([p.node_id for p in hl]), b"x", net.now))
    assert isinstance(ev, StoreDone) and ev.stored >= 3


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_without_the_sub_overlay_the_inbox_finds_nobody(seed: int) -> None:
    """The regression the sub-overlay fixes: the same network, inbox lookups walking
    the whole DHT, end on the foreign nodes closest to the key."""
    off = DhtConfig(suboverlay=False)
    net, hl = mixed_net(40, 5, seed=seed, config=off)
    net.run(duration=5.0)
    far = _far_key([p.node_id for p in hl])
    ev = net.wait_event(hl[-1], hl[-1].post(far, b"offer", net.now))
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, NotFoundError)
    assert all(p.stats["sub_rounds"] == 0 for p in hl)


def _far_key(ids: list[bytes]) -> bytes:
    """A key whose closest 16 nodes are (almost surely) foreign: far from every hailing id."""
    best, best_d = b"", -1
    for i in range(256):
        k = hashlib.sha1(b"key%d" % i).digest()
        d = min(id_to_int(k) ^ id_to_int(x) for x in ids)
        if d > best_d:
            best, best_d = k, d
    return best


def test_the_sub_table_follows_a_bep42_id_change() -> None:
    net, hl = mixed_net(20, 3)
    net.run(duration=5.0)
    p = hl[0]
    ids = sub_ids(p)
    p._change_node_id(b"\x42" * 20)
    assert p.sub.table.own_id == b"\x42" * 20 and sub_ids(p) == ids
    assert p.responder.sub_table is p.sub.table and p.lookups.sub_table is p.sub.table


def test_a_hailing_node_that_times_out_leaves_the_sub_table() -> None:
    net, hl = mixed_net(20, 3)
    net.run(duration=5.0)
    dead = hl[1]
    gone: Hashable = net.kill(dead)
    p = hl[0]
    for _ in range(3):  # lookups inside the sub-overlay ask the dead node and time out
        net.wait_event(p, p.post(hashlib.sha1(gone.__repr__().encode()).digest(), b"x", net.now))
        p.lookups.inbox_nodes.clear()
        net.run(duration=5.0)
    assert dead.node_id not in sub_ids(p)


def test_the_benchmarking_range_is_not_limited_per_network() -> None:
    """RFC 2544's 198.18.0.0/15 (the NAT lab's internet, one /24 for every public host)
    is exempt from the per-/24 limits of the tables and lookups, as private blocks are."""
    keys = SourceKeys(IPAddressCodec())
    assert keys(("198.18.0.100", 6881)) is None and keys(("198.19.255.1", 1)) is None
    assert keys(("::ffff:198.18.0.7", 1)) is None
    assert keys(("198.20.0.1", 1)) is not None and keys(("203.0.113.5", 1)) is not None
    assert SourceKeys(IPAddressCodec(), exempt_local=False)(("198.18.0.1", 1)) is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_vanished_hailing_node_leaves_the_sub_table_at_its_first_timeout(seed: int) -> None:
    """Every post and listen starts from the sub-table: a vanished hailing node left in
    it would cost each of them a query timeout. It goes at its first unanswered query,
    and the driver hears of it (``on_unanswered``: the node forgets it as a STUN
    server too)."""
    net, hl = mixed_net(30, 3, seed=seed)
    net.run(duration=5.0)
    p, dead = hl[0], hl[1]
    unanswered: list[Hashable] = []
    p.on_unanswered = lambda addr, now: unanswered.append(addr)
    assert dead.node_id in sub_ids(p)
    gone = net.kill(dead)
    p.post(dead.node_id, b"x", net.now)  # its id as the key: it is asked first
    net.run(duration=p.config.query_timeout + 1.0)
    assert dead.node_id not in sub_ids(p)
    assert unanswered == [gone]  # one query, unanswered
