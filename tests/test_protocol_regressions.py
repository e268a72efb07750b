"""Regression tests for bugs found by review and by the test writers."""

from __future__ import annotations

from netsim import build_network

from hailing.dht import CommandFailed, DhtConfig, NodesFound, StoreDone
from hailing.dht.bep44 import MutableItem
from hailing.dht.routing import RoutingTable

SEED = bytes(range(32))


def test_small_network_with_a_dead_node_does_not_wait_for_the_hard_timeout() -> None:
    # 6 nodes (fewer than k): once every live node has answered, a dead one must not
    # hold the lookup until query_timeout.
    net = build_network(6)
    nodes = list(net.nodes.values())
    net.kill(nodes[3])
    p = nodes[1]
    qid = p.find_node(bytes(20), net.now)
    ev = net.wait_event(p, qid)
    assert isinstance(ev, NodesFound)
    assert ev.stats.duration < p.config.query_timeout / 2


def test_rejected_mutable_put_does_not_replace_the_republished_item() -> None:
    cfg = DhtConfig(republish_interval=600.0, item_ttl=900.0)
    net = build_network(12, config=cfg)
    nodes = list(net.nodes.values())
    p = nodes[2]
    good = MutableItem.create(SEED, b"newest", seq=5)
    ev = net.wait_event(p, p.put_mutable(good, net.now))
    assert isinstance(ev, StoreDone)
    stale = MutableItem.create(SEED, b"older", seq=3)
    ev = net.wait_event(p, p.put_mutable(stale, net.now))
    assert isinstance(ev, CommandFailed)  # every node refuses seq 3 < 5 (302)
    # Well past item_ttl the good item must still be there, republished.
    net.run(duration=2000.0)
    reader = nodes[9]
    ev = net.wait_event(reader, reader.get_mutable(good.pubkey, net.now))
    assert ev.item is not None and ev.item.seq == 5 and ev.item.value == b"newest"  # type: ignore[attr-defined]


def test_one_eviction_ping_per_questionable_node() -> None:
    net = build_network(2)
    p = next(iter(net.nodes.values()))
    table: RoutingTable = p.table
    # Fill a far bucket (one that cannot split) with questionable nodes, then offer many
    # newcomers for it: the stalest node must be pinged once, not once per newcomer.
    far = bytes([p.node_id[0] ^ 0x80]) + bytes(19)
    for i in range(table.k):
        table.add(far[:19] + bytes([i]), (f"10.9.0.{i + 1}", 1), net.now - 10_000)
    p.datagrams_to_send(net.now)
    sent_before = p.stats["queries_sent"]
    for i in range(20):
        nid = far[:18] + bytes([1, i])
        p._saw_node(nid, (f"10.9.1.{i + 1}", 1), net.now, 0.01)
    assert p.stats["queries_sent"] - sent_before == 1


def test_join_refreshes_far_buckets_so_gets_survive_dead_nodes() -> None:
    # Without the Kademlia join refresh, nodes that joined early never learned of later
    # ones far from their own id, and a get could miss all live holders of an item.
    net = build_network(60, latency=0.04)
    nodes = list(net.nodes.values())
    qid, target = nodes[3].put_immutable(b"x", net.now)
    assert isinstance(net.wait_event(nodes[3], qid), StoreDone)
    for dead in nodes[10:25]:
        net.kill(dead)
    found = 0
    for p in nodes[30:60]:
        ev = net.wait_event(p, p.get(target, net.now))
        found += ev.item is not None  # type: ignore[attr-defined]
    assert found == 30
