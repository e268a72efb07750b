"""The listening and posting side of inboxes: unlisten, store phases that do not wait on
dead nodes, and read-only clients that stay out of routing tables (issue 8 items 1, 11).

Times here are virtual (the MemoryNet clock is advanced by hand), so "did not wait for
the hard timeout" is an exact statement, not a measurement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from netsim import MemoryNet, build_network, join

from hailing.dht import DhtConfig, DhtProtocol, InboxMessage, ListenChanged, Listening, StoreDone
from hailing.dht.inbox_client import HOLDER_CHECK
from hailing.node import DhtNode
from hailing.testnet import testnet as local_testnet

KEY = b"K" * 20
READ_ONLY = DhtConfig(read_only=True)


def holders(net: MemoryNet, listener: DhtProtocol, key: bytes = KEY) -> list[DhtProtocol]:
    """The live storing nodes that have ``listener`` registered on ``key``."""
    addr = net.addr_of(listener)
    return [p for p in net.live() if addr in p.responder.inbox.listeners(key, net.now)]


def in_any_table(net: MemoryNet, p: DhtProtocol) -> bool:
    return any(e.id == p.node_id for q in net.live() if q is not p for e in q.table)


# -- unlisten ---------------------------------------------------------------------------


def test_unlisten_frees_the_storing_nodes_at_once() -> None:
    net = build_network(20)
    client = list(net.nodes.values())[12]
    ev = net.wait_event(client, client.listen(KEY, net.now))
    assert isinstance(ev, Listening)
    assert len(holders(net, client)) == ev.nodes == 8
    assert set(client.inboxes.holders(KEY, net.now)) == {net.addr_of(p) for p in holders(net, client)}
    client.unlisten(KEY, net.now)
    net.run(duration=0.5)  # one round trip, far less than any listen ttl
    assert holders(net, client) == []
    assert KEY not in client.inboxes
    assert sum(len(p.responder.inbox.listener_table) for p in net.live()) == 0


def test_a_grant_that_arrives_after_the_unlisten_is_taken_back() -> None:
    net = build_network(20)
    client = list(net.nodes.values())[5]
    client.listen(KEY, net.now)
    client.unlisten(KEY, net.now)  # before the lookup even started answering
    net.run(duration=2.0)
    assert holders(net, client) == []


def test_unlisten_all_and_a_renewed_listen_reaches_every_holder() -> None:
    net = build_network(20)
    client = list(net.nodes.values())[7]
    net.wait_event(client, client.listen(KEY, net.now, ttl=60))
    net.wait_event(client, client.listen(b"L" * 20, net.now, ttl=60))
    net.run(duration=200.0)  # several renewals
    assert holders(net, client) and holders(net, client, b"L" * 20)
    client.unlisten_all(net.now)
    net.run(duration=0.5)
    assert holders(net, client) == [] and holders(net, client, b"L" * 20) == []


async def test_a_stopped_node_unlistens_over_udp() -> None:
    async with local_testnet(12) as nodes:
        client = DhtNode(("127.0.0.1", 0), bootstrap=[nodes[0].address], config=READ_ONLY)
        await client.start()
        await client.bootstrap()
        assert await client.listen(KEY) > 0
        now = asyncio.get_running_loop().time

        def still_held() -> list[DhtNode]:
            return [n for n in nodes if n.core.responder.inbox.listeners(KEY, now())]

        assert still_held()
        await client.stop()
        for _ in range(100):  # the unlistens are one datagram each; no reply is awaited
            if not still_held():
                break
            await asyncio.sleep(0.01)
        assert still_held() == []


# -- store phases do not wait on dead nodes ------------------------------------------------


def test_a_post_to_remembered_nodes_does_not_wait_for_a_dead_one() -> None:
    # The callee answers a one-shot caller on the caller's answer key. The callee
    # remembers the key's storing nodes for a minute; one of them (a one-shot client's
    # node) has exited since. The post must complete after that node's soft timeout,
    # not the 4 s hard timeout.
    net = build_network(30)
    nodes = list(net.nodes.values())
    callee, listener = nodes[3], nodes[21]
    net.wait_event(listener, listener.listen(KEY, net.now))
    net.wait_event(callee, callee.post(KEY, b"first answer", net.now))
    cached = callee.lookups.inbox_nodes[KEY][1]
    dead = next(p for p in nodes if net.addr_of(p) == cached[0][0])
    net.kill(dead)
    start = net.now
    ev = net.wait_event(callee, callee.post(KEY, b"second answer", net.now), limit=10.0)
    took = net.now - start
    assert isinstance(ev, StoreDone) and ev.stored == len(cached) - 1
    assert took <= callee.config.max_soft_timeout + 0.1 < callee.config.query_timeout
    # and the dead node is forgotten: the next post does not ask it
    sent_before = callee.stats["queries_sent"]
    ev = net.wait_event(callee, callee.post(KEY, b"third answer", net.now))
    assert isinstance(ev, StoreDone) and net.now - start < callee.config.query_timeout
    assert callee.stats["queries_sent"] - sent_before == len(cached) - 1  # posts only
    assert all(a != net.addr_of(dead) for a, _, _ in callee.lookups.inbox_nodes[KEY][1])
    net.run(duration=1.0)
    got = [e.value for e in net.events[net.addr_of(listener)] if isinstance(e, InboxMessage)]
    assert got == [b"first answer", b"second answer", b"third answer"]


def test_a_store_phase_still_waits_when_nothing_was_stored_yet() -> None:
    # If every storing node is slow (past its soft timeout) the phase waits for the
    # late answers instead of reporting a failure.
    net = build_network(12, latency=0.01)
    nodes = list(net.nodes.values())
    client = nodes[4]
    net.wait_event(client, client.get(KEY, net.now))  # learn the RTTs (soft timeout ~0.15 s)
    slow = {net.addr_of(p) for p in nodes if p is not client}

    def delay_store(data: bytes, src: object, dst: object) -> bool:
        if b"hailing_post" in data and dst in slow:
            net.inject(data, src, dst)  # type: ignore[arg-type]
            net._q[-1] = (net.now + 1.0, *net._q[-1][1:])  # delivered 1 s later
            return True
        return False

    net.drop = delay_store
    ev = net.wait_event(client, client.post(KEY, b"slow", net.now), limit=10.0)
    assert isinstance(ev, StoreDone) and ev.stored > 0


# -- read-only clients stay out of routing tables -----------------------------------------


def test_a_read_only_listener_answering_pushes_stays_out_of_routing_tables() -> None:
    net = build_network(20)
    first = net.addr_of(next(iter(net.nodes.values())))
    client = join(net, first, READ_ONLY)
    net.wait_event(client, client.listen(KEY, net.now))
    poster = list(net.nodes.values())[9]
    net.wait_event(poster, poster.post(KEY, b"offer", net.now))
    net.run(duration=1.0)
    assert [e.value for e in net.events[net.addr_of(client)] if isinstance(e, InboxMessage)] \
        == [b"offer"]
    assert client.stats["q_hailing_push"] >= 1  # it answered pushes...
    assert not in_any_table(net, client)  # ...and still nobody routes through it


async def test_a_peer_can_run_its_dht_node_read_only(tmp_path: Path) -> None:
    from hailing.peer import Peer

    peer = Peer(tmp_path, dht_config=READ_ONLY)
    node = await peer._open_node()
    try:
        assert node.core.config.read_only
    finally:
        await node.stop()


# -- are the storing nodes still there? (the BEP44 fallback polls by it) -------------------


def _changes(net: MemoryNet, p: DhtProtocol, key: bytes = KEY) -> list[bool]:
    return [e.live for e in net.events[net.addr_of(p)]
            if isinstance(e, ListenChanged) and e.key == key]


@pytest.mark.parametrize("which", [12, 5, 17])
def test_a_listen_whose_storing_nodes_all_vanish_is_known_lost_long_before_its_grants_expire(
        which: int) -> None:
    net = build_network(20)
    client = list(net.nodes.values())[which]
    assert not client.inboxes.live(KEY, net.now)
    ev = net.wait_event(client, client.listen(KEY, net.now))
    assert isinstance(ev, Listening) and client.inboxes.live(KEY, net.now)
    assert _changes(net, client) == [True]
    net.run(duration=3 * HOLDER_CHECK)  # healthy: pings answered, nothing changes
    assert _changes(net, client) == [True]
    assert client.stats["listen_holder_pings"] >= 2
    for p in net.live():  # every other node: the renewal finds nobody either
        if p is not client:
            net.kill(p)
    # the next check (within HOLDER_CHECK) pings one holder; when that ping stalls
    # (soft timeout) the others are pinged at once, so one hard timeout later none is
    # left (two hard timeouts, one after the other, before)
    cfg = client.config
    pings = client.stats["listen_holder_pings"]
    first_ping = lost_at = None
    while lost_at is None and net.now < 100.0 + HOLDER_CHECK:
        net.run(duration=0.05)
        if first_ping is None and client.stats["listen_holder_pings"] > pings:
            first_ping = net.now
        if not client.inboxes.live(KEY, net.now):
            lost_at = net.now
    assert first_ping is not None and lost_at is not None
    assert lost_at - first_ping <= cfg.max_soft_timeout + cfg.query_timeout + 0.1
    # the grants (ttl 300 s) have not expired: the pings told
    assert _changes(net, client) == [True, False]
    assert not client.inboxes.live(KEY, net.now)
    assert client.inboxes.holders(KEY, net.now) == []
    assert client.stats["listens_lost"] == 1


def test_a_lost_listen_is_looked_up_again_at_once_and_found_on_other_nodes() -> None:
    net = build_network(24)
    client = list(net.nodes.values())[3]
    net.wait_event(client, client.listen(KEY, net.now))
    first = set(client.inboxes.holders(KEY, net.now))
    for p in list(net.live()):
        if net.addr_of(p) in first:
            net.kill(p)
    net.run(duration=HOLDER_CHECK + client.config.maintenance_interval
            + 4 * client.config.query_timeout + 5.0)
    assert _changes(net, client) == [True, False, True]
    now_held = set(client.inboxes.holders(KEY, net.now))
    assert now_held and not now_held & first
    assert client.inboxes.live(KEY, net.now)


def test_one_holder_that_does_not_answer_does_not_lose_the_listen() -> None:
    net = build_network(20)
    client = list(net.nodes.values())[8]
    net.wait_event(client, client.listen(KEY, net.now))
    held = client.inboxes.holders(KEY, net.now)
    gone = held[0]
    net.kill(net.nodes[gone])
    net.run(duration=4 * HOLDER_CHECK)
    assert _changes(net, client) == [True]
    assert client.inboxes.live(KEY, net.now)
    assert gone not in client.inboxes.holders(KEY, net.now)


def test_a_node_behind_a_nat_stores_no_listen_and_no_post() -> None:
    """Only the nodes its NAT holds a mapping to reach a node behind a NAT: a listen it
    held would look live to the listener while posters could not reach it (the callee's
    BEP44 fallback would then poll slowly for offers that can only come that way)."""
    net = build_network(20)
    client = list(net.nodes.values())[3]
    natted = [p for p in net.live() if p is not client][:1][0]
    natted.responder.storing = False  # what the node sets from its STUN probe
    key = natted.node_id  # it is the closest node to the key
    ev = net.wait_event(client, client.listen(key, net.now))
    assert isinstance(ev, Listening) and ev.nodes >= 1
    assert natted not in holders(net, client, key) and holders(net, client, key)
    ev = net.wait_event(client, client.post(key, b"offer", net.now))
    assert isinstance(ev, StoreDone) and ev.stored >= 1
    assert natted.responder.inbox.listeners(key, net.now) == []
    assert natted.stats["store_refused_nat"] >= 2
    client.unlisten(key, net.now)  # an unlisten still goes through
    net.run(duration=1.0)
