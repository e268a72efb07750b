"""Issue 9, item 6: a routing table one address cannot take over.

Per-IP limits (table and bucket), BEP42 by default for public addresses (and our own id
made compliant), query senders verified by a rate-limited ping before they enter a
bucket (hand-advanced clock), lookups with one candidate per network on disjoint paths,
and the eclipse itself through real UDP on loopback: one socket, many ids."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Hashable

import pytest

from hailing import bencode
from hailing.dht import DhtConfig, DhtProtocol, bep42
from hailing.dht.lookup import ANSWERED, FRESH, Lookup
from hailing.dht.routing import RoutingTable, SourceKeys
from hailing.krpc import IPAddressCodec, Query, Response, decode_message, encode_message
from hailing.node import DhtNode

OWN = bytes(20)


def table(exempt_local: bool = True, **kw: int) -> RoutingTable:
    return RoutingTable(OWN, keys=SourceKeys(IPAddressCodec(), exempt_local), **kw)


def far_id(i: int) -> bytes:
    """Ids spread over the far half and quarter (different buckets for i % 2)."""
    return bytes([0x80 | (i % 2) << 6 | (i >> 8) & 0x3F, i & 0xFF]) + bytes(18)


# -- per-IP limits in the table ------------------------------------------------------------

def test_one_ip_holds_one_entry_in_the_whole_table() -> None:
    t = table()
    for i in range(50):
        t.add(far_id(i), ("1.2.3.4", 1000 + i), 0.0)
    assert len(t) == 1 and sum(len(b.replacements) for b in t.buckets) == 0
    assert t.stats["routing_refused_ip"] == 49


def test_one_slash24_holds_one_entry_per_bucket() -> None:
    t = table()
    for i in range(9):  # ids near ours, from different networks: the table splits
        t.add(bytes([0x01, i + 1]) + bytes(18), (f"9.{i}.0.1", 1), 0.0)
    assert len(t.buckets) > 2
    for i in range(20):
        t.add(far_id(2 * i), (f"1.2.3.{i + 1}", 1), 0.0)  # all in bucket 0
    assert len(t.buckets[0].nodes) == 1 and t.stats["routing_refused_net"] == 19
    t.add(bytes([0x40]) + bytes(19), ("1.2.3.200", 1), 0.0)  # bucket 1: allowed
    assert len(t.buckets[1].nodes) == 1


def test_local_addresses_are_exempt_unless_configured() -> None:
    lax, strict = table(), table(exempt_local=False)
    for i in range(8):
        lax.add(far_id(2 * i), ("127.0.0.1", 1000 + i), 0.0)
        strict.add(far_id(2 * i), ("127.0.0.1", 1000 + i), 0.0)
    assert len(lax) == 8 and len(strict) == 1


def test_counts_follow_removals_and_replacements() -> None:
    t = table(max_per_ip=2, max_per_net=100)
    t.add(far_id(0), ("1.2.3.4", 1), 0.0)
    t.add(far_id(1), ("1.2.3.4", 2), 0.0)
    t.add(far_id(3), ("1.2.3.4", 3), 0.0)  # a third: refused
    assert len(t) == 2
    t.remove(far_id(0))
    t.add(far_id(3), ("1.2.3.4", 3), 0.0)  # room again
    assert t.get(far_id(3)) is not None
    # a full bucket: newcomers wait in its replacement cache, and count there too
    for i in range(40):
        t.add(bytes([0xC0, i + 1]) + bytes(18), (f"5.{i}.0.1", 1), 0.0)
    assert t._ips == {e.keys[0]: 1 for b in t.buckets for e in b.nodes + b.replacements
                      if e.keys and e.keys[0] != bytes([1, 2, 3, 4])} | {bytes([1, 2, 3, 4]): 2}


# -- BEP42 ---------------------------------------------------------------------------------

def test_bep42_is_enforced_by_default_for_public_addresses_only() -> None:
    assert DhtConfig().enforce_node_id
    p = DhtProtocol(rng=random.Random(1), now=0.0)
    random_id = bytes([0x55]) * 20
    assert not p.admission.acceptable(random_id, ("1.2.3.4", 1))
    assert p.admission.acceptable(bep42.secure_node_id("1.2.3.4", 3, bytes(17)), ("1.2.3.4", 1))
    assert p.admission.acceptable(random_id, ("192.168.1.9", 1))
    assert p.stats["rejected_node_id"] == 1


def test_own_id_becomes_compliant_once_peers_agree_on_our_public_address() -> None:
    p = DhtProtocol(rng=random.Random(1), now=0.0, node_id=bytes([0x55]) * 20)
    peer = ("10.0.0.2", 1)
    p.add_node(bytes([0x11]) * 20, peer, 0.0)
    me = IPAddressCodec().pack(("8.8.4.4", 6881))
    for i in range(8):
        p.ping(peer, float(i))
        (data, _), = p.datagrams_to_send(float(i))
        q = decode_message(data)
        p.receive_datagram(encode_message(Response(q.tid, {b"id": bytes([0x11]) * 20}, ip=me)), peer, i + 0.1)
    assert bep42.node_id_prefix_ok(p.node_id, "8.8.4.4")
    assert p.node_id[2:] [:-1][1:] == (bytes([0x55]) * 20)[3:19]  # derived from the old id
    assert p.table.get(bytes([0x11]) * 20) is not None and p.table.own_id == p.node_id
    assert p.stats["node_id_changes"] == 1


# -- verification before insert (hand-advanced clock) ----------------------------------------

def query(p: DhtProtocol, sender: bytes, addr: Hashable, now: float) -> list[Query]:
    """``sender`` pings ``p``; returns the queries ``p`` sends back (verification pings)."""
    p.receive_datagram(encode_message(Query(b"q" + sender[:1], b"ping", {b"id": sender})), addr, now)
    out = [decode_message(d) for d, _ in p.datagrams_to_send(now)]
    return [m for m in out if isinstance(m, Query)]


def test_a_query_sender_enters_only_after_answering_our_ping() -> None:
    p = DhtProtocol(rng=random.Random(1), now=0.0)
    sender, addr = bytes([0x42]) * 20, ("10.1.1.1", 7)
    (ping,) = query(p, sender, addr, 0.0)
    assert ping.method == b"ping" and p.table.get(sender) is None
    assert query(p, sender, addr, 0.5) == []  # one verification at a time per address
    p.receive_datagram(encode_message(Response(ping.tid, {b"id": sender})), addr, 1.0)
    assert p.table.get(sender) is not None


def test_a_silent_sender_stays_out_and_may_be_verified_again_later() -> None:
    p = DhtProtocol(rng=random.Random(1), now=0.0)
    sender, addr = bytes([0x42]) * 20, ("10.1.1.1", 7)
    assert len(query(p, sender, addr, 0.0)) == 1
    p.handle_timer(p.config.query_timeout + 0.1)  # the ping times out
    assert p.table.get(sender) is None
    assert len(query(p, sender, addr, p.config.query_timeout + 0.2)) == 1


def test_verification_pings_are_rate_limited() -> None:
    cfg = DhtConfig(verify_rate=10.0, verify_burst=20, verify_pending=1000)
    p = DhtProtocol(cfg, rng=random.Random(1), now=0.0)
    sent = sum(len(query(p, bytes([i + 1]) * 20, (f"10.2.{i}.1", 1), 0.0)) for i in range(100))
    assert sent == 20 and p.stats["verify_refused_rate"] == 80
    later = sum(len(query(p, bytes([i + 1]) * 20, (f"10.3.{i}.1", 1), 1.0)) for i in range(100))
    assert later == 10  # one second refills verify_rate tokens


def test_pending_verifications_are_capped() -> None:
    cfg = DhtConfig(verify_rate=1000.0, verify_burst=1000, verify_pending=5)
    p = DhtProtocol(cfg, rng=random.Random(1), now=0.0)
    sent = sum(len(query(p, bytes([i + 1]) * 20, (f"10.2.{i}.1", 1), 0.0)) for i in range(30))
    assert sent == 5 and p.stats["verify_refused_pending"] == 25


# -- lookups: one candidate per network, disjoint paths ---------------------------------------

def test_a_lookup_takes_one_candidate_per_slash24() -> None:
    lk = Lookup(1, "get", OWN, b"\xff" * 20, 8, 5, 96, 0.0, keys=SourceKeys(IPAddressCodec()))
    added = [lk.add(bytes([0, i + 1]) + bytes(18), ("1.2.3.4", 1000 + i), 1) for i in range(10)]
    assert added.count(True) == 1 and lk.refused_net == 9
    assert lk.add(bytes([0, 99]) + bytes(18), ("1.2.4.4", 1), 1)


def test_disjoint_paths_keep_what_a_path_learned_to_that_path() -> None:
    lk = Lookup(1, "get", OWN, b"\xff" * 20, 2, 6, 96, 0.0, paths=3)
    for i in range(6):
        lk.add(bytes([0x40 + i]) + bytes(19), (f"10.0.0.{i}", 1), 0)
    assert sorted(c.path for c in lk.cands) == [0, 0, 1, 1, 2, 2]
    first = lk.next_requests()
    assert len(first) == 6  # ceil(6 / 3) = 2 per path
    liar = lk.cands[0]
    lk.answered(liar)
    # the liar names two nodes (closest of all): they join its path only
    for i in range(2):
        assert lk.add(bytes([0, i + 1]) + bytes(18), (f"10.9.0.{i}", 1), 1, liar.path)
    assert {c.path for c in lk.cands[:2]} == {liar.path}
    # another path cannot take them over
    assert not lk.add(bytes([0, 1]) + bytes(18), ("10.9.0.0", 1), 1, (liar.path + 1) % 3)
    for c in list(lk.cands):
        if c.state != ANSWERED:
            lk.answered(c)
    assert lk.is_done()
    assert all(c.state != FRESH for c in lk.cands)


# -- the eclipse through real UDP on loopback ---------------------------------------------------

async def test_one_socket_with_many_ids_cannot_eclipse_a_node_over_udp() -> None:
    """The attack of issue 9: one socket pings with many ids near the node's own id and
    answers every ping it gets with the id it used last. Before the fix every id entered
    the table and find_node near the node's id named only the attacker."""
    cfg = DhtConfig(exempt_loopback=False, query_timeout=0.5, max_soft_timeout=0.25)
    loop = asyncio.get_running_loop()
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.setblocking(False)
    attacker.bind(("127.0.0.1", 0))
    try:
        async with DhtNode(("127.0.0.1", 0), config=cfg) as node:
            own = int.from_bytes(node.node_id, "big")
            ids = [(own ^ (i + 1) << 8).to_bytes(20, "big") for i in range(120)]

            async def drain(nid: bytes) -> None:
                while True:
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(attacker, 2048), 0.02)
                    except TimeoutError:
                        return
                    m = bencode.decode(data)
                    if m.get(b"y") == b"q":  # a verification ping: answered as nid
                        reply = {b"t": m[b"t"], b"y": b"r", b"r": {b"id": nid}}
                        attacker.sendto(bencode.encode(reply), node.address)

            for i, nid in enumerate(ids):
                ping = {b"t": b"p%d" % i, b"y": b"q", b"q": b"ping", b"a": {b"id": nid}}
                attacker.sendto(bencode.encode(ping), node.address)
                await drain(nid)
            port = attacker.getsockname()[1]
            mine = [e for e in node.core.table if e.addr == ("127.0.0.1", port)]
            assert 1 <= len(mine) <= cfg.routing_max_per_ip  # verified once, then limited
            ask = {b"t": b"fn", b"y": b"q", b"q": b"find_node",
                   b"a": {b"id": b"\x01" * 20, b"target": node.node_id}}
            attacker.sendto(bencode.encode(ask), node.address)
            while True:
                m = bencode.decode(await asyncio.wait_for(loop.sock_recv(attacker, 2048), 2.0))
                if m.get(b"t") == b"fn":
                    break
            nodes = m[b"r"][b"nodes"]
            named = [nodes[i + 20 : i + 26] for i in range(0, len(nodes), 26)]
            assert sum(1 for c in named if c[-2:] == port.to_bytes(2, "big")) <= 1
    finally:
        attacker.close()


@pytest.mark.parametrize("ip", ["1.2.3.4", "2001:db8::1"])
def test_source_keys(ip: str) -> None:
    keys = SourceKeys(IPAddressCodec())((ip, 1))
    assert keys is not None
    host, net = keys
    assert (len(host), len(net)) == ((4, 3) if "." in ip else (8, 8))
    assert SourceKeys(IPAddressCodec())(("127.0.0.1", 1)) is None
    assert SourceKeys(IPAddressCodec(), exempt_local=False)(("127.0.0.1", 1)) is not None
