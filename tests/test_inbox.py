"""hailing's inbox extension: multi-writer values with listen/push, and its bounds."""

from __future__ import annotations

import asyncio

import pytest
from netsim import MemoryNet, ask, build_network, krpc_query

from hailing import bencode
from hailing.dht import CommandFailed, DhtConfig, InboxMessage, Listening, StoreDone
from hailing.dht import inbox as ib
from hailing.testnet import testnet as local_testnet

KEY = b"K" * 20


def inbox_events(net: MemoryNet, p: object) -> list[InboxMessage]:
    return [e for e in net.events[net.addr_of(p)] if isinstance(e, InboxMessage)]  # type: ignore[arg-type]


def test_post_is_pushed_to_the_listener_once() -> None:
    net = build_network(30)
    nodes = list(net.nodes.values())
    callee, caller = nodes[4], nodes[20]
    ev = net.wait_event(callee, callee.listen(KEY, net.now))
    assert isinstance(ev, Listening) and ev.nodes == 8
    ev = net.wait_event(caller, caller.post(KEY, b"offer", net.now))
    assert isinstance(ev, StoreDone) and ev.stored == 8
    net.run(duration=1.0)
    got = inbox_events(net, callee)
    assert [m.value for m in got] == [b"offer"]  # 8 pushes, delivered once
    assert callee.stats["q_hailing_push"] >= 6  # one per storing node both lookups found


def test_values_posted_before_the_listen_are_delivered() -> None:
    net = build_network(30)
    nodes = list(net.nodes.values())
    net.wait_event(nodes[1], nodes[1].post(KEY, b"early", net.now))
    net.wait_event(nodes[2], nodes[2].post(KEY, b"second", net.now))
    net.wait_event(nodes[9], nodes[9].listen(KEY, net.now))
    assert sorted(m.value for m in inbox_events(net, nodes[9])) == [b"early", b"second"]


def test_listen_is_renewed_and_values_expire() -> None:
    net = build_network(20)
    nodes = list(net.nodes.values())
    callee = nodes[3]
    net.wait_event(callee, callee.listen(KEY, net.now, ttl=60))
    net.run(duration=400.0)  # several renewals later the listen still works
    net.wait_event(nodes[10], nodes[10].post(KEY, b"late", net.now))
    net.run(duration=1.0)
    assert [m.value for m in inbox_events(net, callee)] == [b"late"]
    # after VALUE_TTL without posts a new listener finds nothing
    net.run(duration=ib.VALUE_TTL + 20)
    other = nodes[15]
    net.wait_event(other, other.listen(KEY, net.now))
    assert inbox_events(net, other) == []
    callee.unlisten(KEY, net.now)
    assert KEY not in callee.inboxes


def test_no_hailing_node_near_the_key_is_a_clear_failure() -> None:
    # Nodes that do not announce themselves as hailing (v field) are never sent inbox
    # methods; with only such nodes the post fails with a clear error.
    net = build_network(10, config=DhtConfig(version=b"LT\x02\x11"))
    nodes = list(net.nodes.values())
    ev = net.wait_event(nodes[1], nodes[1].post(KEY, b"x", net.now))
    assert isinstance(ev, CommandFailed) and "hailing" in str(ev.error)


# -- the storing node's bounds, fed directly ------------------------------------------------


def _token(net: MemoryNet, node: object, src: tuple[str, int]) -> bytes:
    r = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))
    token = r[b"token"]
    assert isinstance(token, bytes)
    return token


def test_storing_node_bounds() -> None:
    net = MemoryNet()
    node = net.add()
    src = ("10.7.0.1", 1000)
    token = _token(net, node, src)
    # bad token, missing v, oversize value
    assert ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": b"x" * 8, b"v": b"a"})) == {b"error": 203}
    assert ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": token})) == {b"error": 203}
    big = b"x" * (ib.MAX_VALUE + 1)
    assert ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": token, b"v": big})) == {b"error": 205}
    assert ask(net, node, src, krpc_query(b"hailing_post", {b"key": b"short", b"token": token, b"v": b"a"})) == {b"error": 203}
    # rate limit per source IP: a burst, then 241
    codes = []
    for i in range(int(ib.POST_BURST) + 5):
        r = ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": token, b"v": b"m%d" % i}))
        codes.append(r.get(b"error"))
    assert codes.count(None) <= ib.POST_BURST + 3 and codes[-1] == 241  # + refill meanwhile
    # the inbox keeps at most MAX_VALUES_PER_KEY values, from many sources
    for i in range(ib.MAX_VALUES_PER_KEY + 4):
        s = (f"10.8.{i}.1", 1000)
        t = _token(net, node, s)
        ask(net, node, s, krpc_query(b"hailing_post", {b"key": b"Q" * 20, b"token": t, b"v": b"v%d" % i}))
    assert len(node.responder.inbox.values(b"Q" * 20, net.now)) == ib.MAX_VALUES_PER_KEY
    # listeners per key are bounded: newcomers displace (tests/test_listeners.py)
    for i in range(ib.MAX_LISTENERS_PER_KEY + 2):
        s = (f"10.9.{i}.1", 1000)
        t = _token(net, node, s)
        g = ask(net, node, s, krpc_query(b"hailing_listen", {b"key": KEY, b"token": t, b"ttl": 60,
                                                         b"ptoken": b"p" * 8}))
        assert g[b"ttl"] == 60
    assert len(node.responder.inbox.listeners(KEY, net.now)) == ib.MAX_LISTENERS_PER_KEY
    assert node.stats["errors_sent"] >= 5


@pytest.mark.parametrize(
    "args",
    [
        {b"key": KEY, b"v": b"x"},  # no token
        {b"key": 5, b"token": b"t" * 8, b"v": b"x"},
        {b"key": KEY, b"token": b"t" * 8, b"v": [b"list"]},
        {b"key": KEY, b"token": b"t" * 8, b"v": b""},
    ],
)
def test_garbage_posts_get_203(args: dict[bytes, object]) -> None:
    net = MemoryNet()
    node = net.add()
    assert ask(net, node, ("10.7.0.2", 1), krpc_query(b"hailing_post", args)) == {b"error": 203}


def test_push_for_a_key_we_do_not_listen_on_is_refused() -> None:
    net = MemoryNet()
    node = net.add()
    r = ask(net, node, ("10.7.0.3", 1), krpc_query(b"hailing_push", {b"key": KEY, b"v": b"spam"}))
    assert r == {b"error": 203}
    assert not inbox_events(net, node)
    r = ask(net, node, ("10.7.0.3", 1), krpc_query(b"hailing_push", {b"key": KEY}))
    assert r == {b"error": 203}


def test_seen_values_dedupes_and_is_bounded() -> None:
    seen = ib.SeenValues(size=3)
    assert seen.first_time(KEY, b"a") and not seen.first_time(KEY, b"a")
    for v in (b"b", b"c", b"d"):
        assert seen.first_time(KEY, v)
    assert seen.first_time(KEY, b"a")  # forgotten: the cache is bounded


async def test_inbox_over_udp() -> None:
    async with local_testnet(12) as nodes:
        callee, caller = nodes[2], nodes[9]
        assert await callee.listen(KEY) > 0
        assert await caller.post(KEY, bencode.encode([b"sealed", 1])) > 0
        msg = await asyncio.wait_for(callee.inbox(), 5)
        assert msg.key == KEY and bencode.decode(msg.value) == [b"sealed", 1]


def test_loopback_sources_are_not_rate_limited() -> None:
    net = MemoryNet()
    node = net.add()
    src = ("127.0.0.1", 4000)
    token = _token(net, node, src)
    for i in range(int(ib.POST_BURST) + 5):
        r = ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": token, b"v": b"m%d" % i}))
        assert r.get(b"error") is None


def test_second_post_goes_straight_to_the_remembered_storing_nodes() -> None:
    net = build_network(30)
    nodes = list(net.nodes.values())
    callee, caller = nodes[4], nodes[20]
    net.wait_event(callee, callee.listen(KEY, net.now))
    net.wait_event(caller, caller.post(KEY, b"first", net.now))
    sent = caller.stats["queries_sent"]
    ev = net.wait_event(caller, caller.post(KEY, b"second", net.now))
    assert isinstance(ev, StoreDone) and ev.stored >= 6
    assert caller.stats["queries_sent"] - sent == ev.stored  # no lookup: posts only
    net.run(duration=1.0)
    assert [m.value for m in inbox_events(net, callee)] == [b"first", b"second"]


def test_post_falls_back_to_a_lookup_when_the_remembered_nodes_are_gone() -> None:
    net = build_network(30)
    nodes = list(net.nodes.values())
    caller = nodes[20]
    net.wait_event(caller, caller.post(KEY, b"first", net.now))
    holders = [p for p in nodes if p.responder.inbox.values(KEY, net.now)]
    for p in holders:
        net.kill(p)
    ev = net.wait_event(caller, caller.post(KEY, b"second", net.now))
    assert isinstance(ev, StoreDone) and ev.stored > 0
    assert not {net.addr_of(p) for p in holders} & {
        net.addr_of(p) for p in nodes if p.responder.inbox.values(KEY, net.now)
    } - net.dead
