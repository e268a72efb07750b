"""Listeners of inbox keys on a storing node: displacement, per-source quotas, unlisten.

Regression tests for issue 8 item 1 (the 9th one-shot send to a contact failed with
"too many listeners") and issue 9 items 1 and 4 (an unlisten for a key never listened on
raised KeyError and leaked the count; refused listens left empty per-key entries).
"""

from __future__ import annotations

import pytest
from netsim import MemoryNet, ask, build_network, join, krpc_query, sockets

from hailing.dht import CommandFailed, DhtConfig, DhtProtocol, Listening
from hailing.dht import inbox as ib
from hailing.dht.listeners import ListenerTable
from hailing.node import DhtNode
from hailing.testnet import testnet as local_testnet

KEY = b"K" * 20


def _token(net: MemoryNet, node: object, src: tuple[str, int]) -> bytes:
    r = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))
    token = r[b"token"]
    assert isinstance(token, bytes)
    return token


def _listen(net: MemoryNet, node: object, src: tuple[str, int], key: bytes = KEY,
            ttl: int = 300) -> dict[bytes, object]:
    t = _token(net, node, src)
    return ask(net, node, src, krpc_query(b"hailing_listen", {b"key": key, b"token": t, b"ttl": ttl,
                                                                b"ptoken": b"p" * 8}))


# -- the table alone ------------------------------------------------------------------------


def test_a_full_key_takes_a_newcomer_by_displacing_the_entry_closest_to_expiry() -> None:
    t = ListenerTable()
    for i in range(ib.MAX_LISTENERS_PER_KEY):
        assert t.listen(KEY, (f"10.0.0.{i}", 1), b"s%d" % i, 300, now=float(i)) == 300
    assert t.listen(KEY, ("10.9.9.9", 1), b"new", 300, now=10.0) == 300
    got = t.listeners(KEY, 10.0)
    assert len(got) == ib.MAX_LISTENERS_PER_KEY
    assert ("10.0.0.0", 1) not in got and ("10.9.9.9", 1) in got  # the oldest went
    assert t.displaced == 1 and len(t) == ib.MAX_LISTENERS_PER_KEY


def test_the_heaviest_source_on_a_key_is_displaced_first() -> None:
    t = ListenerTable()
    for i in range(4):  # one source, four listeners: its own per-key quota
        t.listen(KEY, ("10.0.0.1", 100 + i), b"heavy", 300, now=50.0 + i)
    for i in range(4):
        t.listen(KEY, (f"10.0.1.{i}", 1), b"s%d" % i, 300, now=float(i))  # older
    t.listen(KEY, ("10.9.9.9", 1), b"new", 300, now=60.0)
    got = t.listeners(KEY, 60.0)
    assert ("10.0.0.1", 100) not in got  # the heavy source lost its oldest entry
    assert all((f"10.0.1.{i}", 1) in got for i in range(4))  # the lighter ones stay


def test_one_source_holds_at_most_its_share_of_a_key() -> None:
    t = ListenerTable()
    for i in range(10):
        assert t.listen(KEY, ("10.0.0.1", 100 + i), b"one", 300, now=float(i)) == 300
    got = t.listeners(KEY, 10.0)
    assert got == [("10.0.0.1", 100 + i) for i in range(6, 10)]


def test_a_source_over_its_quota_is_refused_and_leaves_nothing_behind() -> None:
    t = ListenerTable(per_source=3)
    for i in range(3):
        assert t.listen(bytes([i]) * 20, ("10.0.0.1", 1), b"a", 300, now=0.0) == 300
    for i in range(3, 100):
        assert t.listen(bytes([i]) * 20, ("10.0.0.1", 1), b"a", 300, now=0.0) == 0.0
    assert t.refused == 97 and t.keys_held == 3 and len(t) == 3
    # another source is not affected
    assert t.listen(b"\x05" * 20, ("10.0.0.2", 1), b"b", 300, now=0.0) == 300


def test_a_full_node_takes_a_newcomer_from_the_heaviest_source() -> None:
    t = ListenerTable(total=10, per_source=8)
    for i in range(8):
        t.listen(bytes([i]) * 20, ("10.0.0.1", 1), b"big", 300, now=float(i))
    for i in range(2):
        t.listen(bytes([100 + i]) * 20, ("10.0.0.2", 1), b"small", 300, now=0.0)
    assert t.listen(b"\xee" * 20, ("10.0.0.3", 1), b"fresh", 300, now=20.0) == 300
    assert len(t) == 10
    assert t.listeners(b"\x00" * 20, 20.0) == []  # big's oldest went
    assert t.listeners(b"\x64" * 20, 20.0) == [("10.0.0.2", 1)]


def test_unlisten_removes_and_unknown_unlisten_is_a_no_op() -> None:
    t = ListenerTable()
    assert t.listen(KEY, ("10.0.0.1", 1), b"a", 0, now=0.0) == 0.0  # never listened
    assert len(t) == 0 and t.keys_held == 0
    t.listen(KEY, ("10.0.0.1", 1), b"a", 300, now=0.0)
    assert t.listen(KEY, ("10.0.0.1", 1), b"a", 0, now=1.0) == 0.0
    assert len(t) == 0 and t.keys_held == 0 and t.listeners(KEY, 1.0) == []


def test_renewal_and_expiry_keep_the_counts_exact() -> None:
    t = ListenerTable()
    for i in range(50):
        t.listen(KEY, ("10.0.0.1", 1), b"a", 60, now=float(i * 30))  # renewed 50 times
    t.listen(b"B" * 20, ("10.0.0.2", 1), b"b", 60, now=0.0)
    assert len(t) == 2
    t.expire(61.0)
    assert len(t) == 1 and t.keys_held == 1
    t.expire(10_000.0)
    assert len(t) == 0 and t.keys_held == 0
    assert len(t._expiry) <= 64 + 2  # renewals do not grow the heap without bound


# -- a storing node, fed datagrams ---------------------------------------------------------


def test_unlisten_for_a_key_never_listened_on_is_answered_and_counts_nothing() -> None:
    net = MemoryNet()
    node = net.add()
    src = ("10.7.0.1", 1000)
    token = _token(net, node, src)
    for i in range(50):
        q = krpc_query(b"hailing_listen", {b"key": bytes([i]) * 20, b"token": token, b"ttl": 0})
        node.receive_datagram(q, src, net.now)  # raised KeyError before the fix
    table = node.responder.inbox.listener_table
    assert len(table) == 0 and table.keys_held == 0
    assert ask(net, node, src, krpc_query(b"hailing_listen", {b"key": KEY, b"token": token, b"ttl": 0})) \
        == {b"id": node.node_id, b"ttl": 0}
    assert _listen(net, node, src)[b"ttl"] == 300  # later listens still work


def test_nine_listeners_on_one_key_are_all_granted() -> None:
    net = MemoryNet()
    node = net.add()
    grants = [_listen(net, node, (f"10.9.{i}.1", 1000)) for i in range(ib.MAX_LISTENERS_PER_KEY + 3)]
    assert all(g.get(b"ttl") == 300 for g in grants)  # the 9th got 242 before
    assert len(node.responder.inbox.listeners(KEY, net.now)) == ib.MAX_LISTENERS_PER_KEY


def test_refused_listens_leave_no_per_key_entries() -> None:
    net = MemoryNet()
    node = net.add()
    node.responder.inbox.listener_table.per_source = 2
    src = ("10.7.0.9", 1000)
    codes = [_listen(net, node, src, key=bytes([i]) * 20).get(b"error") for i in range(40)]
    assert codes[:2] == [None, None] and set(codes[2:]) == {242}
    assert node.responder.inbox.listener_table.keys_held == 2


def test_loopback_listeners_are_accounted_per_socket() -> None:
    net = MemoryNet()
    node = net.add()
    # every process on one host shares 127.0.0.1: each socket is its own source, so
    # eight local listeners on one key do not displace each other
    for port in range(2000, 2000 + ib.MAX_LISTENERS_PER_KEY):
        assert _listen(net, node, ("127.0.0.1", port))[b"ttl"] == 300
    assert len(node.responder.inbox.listeners(KEY, net.now)) == ib.MAX_LISTENERS_PER_KEY
    assert node.responder.inbox.listener_table.displaced == 0


# -- clients that come and go, in a network of cores ------------------------------------


@pytest.mark.parametrize("count", [ib.MAX_LISTENERS_PER_KEY + 1, 3 * ib.MAX_LISTENERS_PER_KEY])
def test_short_lived_listeners_never_lock_a_key(count: int) -> None:
    # One-shot clients listen on their answer key and vanish without a word (as a
    # process that is killed): the next one must still get its listen.
    net = build_network(20)
    first = net.addr_of(next(iter(net.nodes.values())))
    for _ in range(count):
        client = join(net, first)
        ev = net.wait_event(client, client.listen(KEY, net.now))
        assert isinstance(ev, Listening), ev  # CommandFailed (242) from the 9th before
        assert not isinstance(ev, CommandFailed)
        net.kill(client)
        net.run(duration=1.0)


@pytest.mark.parametrize("killed", [False, True])
async def test_one_shot_nodes_over_udp_never_lock_their_answer_key(
    killed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 8 item 1 on real sockets: nine short-lived nodes listen on one key and stop,
    # politely (they unlisten) or killed (they never do: the key fills and newcomers
    # displace the oldest)
    if killed:
        monkeypatch.setattr(DhtProtocol, "unlisten_all", lambda self, now: None)
    async with local_testnet(10) as nodes:
        boot = [nodes[0].address]
        for _ in range(ib.MAX_LISTENERS_PER_KEY + 1):
            async with DhtNode(("127.0.0.1", 0), bootstrap=boot) as client:
                await client.bootstrap()
                assert await client.listen(KEY) > 0


async def test_unlistens_for_unknown_keys_over_udp_are_answered_and_leak_nothing() -> None:
    # issue 9 item 1 on the wire: each used to raise KeyError inside receive_datagram
    # after counting a listener, until every listen on the node failed with 242
    async with DhtNode(("127.0.0.1", 0)) as node, sockets(1) as (udp,):
        token = await udp.token(node.address, KEY)
        for i in range(300):
            r = await udp.ask(node.address, b"hailing_listen",
                                 {b"key": i.to_bytes(20, "big"), b"token": token, b"ttl": 0})
            assert r == {b"id": node.node_id, b"ttl": 0}
        table = node.core.responder.inbox.listener_table
        assert len(table) == 0 and table.keys_held == 0
        r = await udp.ask(node.address, b"hailing_listen",
                             {b"key": KEY, b"token": token, b"ttl": 60, b"ptoken": b"p" * 8})
        assert r[b"ttl"] == 60


async def test_one_socket_cannot_take_a_nodes_listener_slots_over_udp() -> None:
    # issue 9 items 3 and 4 on the wire: one socket could take all 10,000 listener slots
    # (everyone else then got 242), and each refused listen left an empty per-key entry.
    # Without the loopback exemption 127.0.0.1 is one source, 127.0.0.2 another.
    # (the UDP driver's datagram budget off too: this test is about the listener quota)
    cfg = DhtConfig(exempt_loopback=False, source_burst=100_000, source_datagram_rate=0)
    async with DhtNode(("127.0.0.1", 0), config=cfg) as node:
        async with sockets(1) as (udp,):
            token = await udp.token(node.address, KEY)
            quota = ib.MAX_LISTENS_PER_SOURCE
            codes = []
            for i in range(quota + 50):
                r = await udp.ask(node.address, b"hailing_listen",
                                     {b"key": i.to_bytes(20, "big"), b"token": token,
                                      b"ttl": 600, b"ptoken": b"p" * 8})
                codes.append(r.get(b"error", r.get(b"ttl")))
            assert codes[:quota] == [600] * quota and set(codes[quota:]) == {242}
            table = node.core.responder.inbox.listener_table
            assert len(table) == quota and table.keys_held == quota  # refused: nothing kept
            assert node.stats["listeners_refused"] == 50
        # a listener from another source still gets in, on one of the flooded keys too
        async with DhtNode(("127.0.0.2", 0), bootstrap=[node.address]) as client:
            await client.bootstrap()
            assert await client.listen(KEY) == 1
            assert await client.listen((7).to_bytes(20, "big")) == 1
