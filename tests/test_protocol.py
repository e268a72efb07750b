"""DhtProtocol, the sans-IO core: answering, lookups, timeouts, tokens, storage, BEP42/43/44.

Two fixtures are used: a single core that the test queries by hand as an outside peer
(``ask``), and :mod:`netsim` networks of cores with a hand-advanced clock.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netsim import MemoryNet, build_network, join

from hailing import bencode
from hailing.dht import (
    HAILING_VERSION,
    CommandFailed,
    DhtConfig,
    DhtProtocol,
    ItemFound,
    NodeInfo,
    NodesFound,
    PeersFound,
    Pong,
    StoreDone,
    bep42,
    bep44,
)
from hailing.dht.ids import distance
from hailing.errors import KrpcError, LocalProtocolError, QueryTimeout
from hailing.krpc import (
    Error,
    IPAddressCodec,
    Message,
    Query,
    Response,
    decode_message,
    decode_nodes,
    encode_message,
    encode_nodes,
)

CLIENT = ("203.0.113.7", 4321)  # an outside peer the test plays by hand
CLIENT_ID = bytes([7]) * 20
CODEC = IPAddressCodec()
SEED = bytes(range(32))  # ed25519 seed for mutable items
PUBKEY = bep44.public_key(SEED)


def make(config: DhtConfig | None = None, seed: int = 1, **kw: Any) -> DhtProtocol:
    return DhtProtocol(config, rng=random.Random(seed), now=0.0, **kw)


def sent(p: DhtProtocol, now: float = 0.0) -> list[tuple[Message, Hashable]]:
    return [(decode_message(d), a) for d, a in p.datagrams_to_send(now)]


def ask(
    p: DhtProtocol,
    method: bytes,
    args: dict[bytes, Any] | None = None,
    now: float = 0.0,
    addr: Hashable = CLIENT,
    tid: bytes = b"tt",
    ro: bool = False,
    sender: bytes = CLIENT_ID,
) -> Response | Error:
    """Send one query to ``p`` from ``addr``; return its single reply."""
    a = {b"id": sender, **(args or {})}
    p.receive_datagram(encode_message(Query(tid, method, a, None, ro)), addr, now)
    # A new sender also gets a ping (verification before it enters the table): skipped.
    out = [(m, to) for m, to in sent(p, now) if not (isinstance(m, Query) and m.method == b"ping")]
    assert len(out) == 1, out
    msg, to = out[0]
    assert to == addr
    assert isinstance(msg, (Response, Error)) and msg.tid == tid
    return msg


def ok(reply: Response | Error) -> dict[bytes, Any]:
    assert isinstance(reply, Response), reply
    return reply.values


def err(reply: Response | Error) -> int:
    assert isinstance(reply, Error), reply
    return reply.code


def advance(p: DhtProtocol, until: float) -> None:
    """Fire every timer of a lone core up to ``until``."""
    while (t := p.get_timer()) is not None and t <= until:
        p.handle_timer(t)
        p.datagrams_to_send(t)  # bucket refreshes etc.: nobody answers them here


def ids_of(nodes: tuple[NodeInfo, ...] | list[NodeInfo]) -> list[bytes]:
    return [n.id for n in nodes]


def true_closest(net: MemoryNet, target: bytes, exclude: DhtProtocol | None = None, k: int = 8) -> list[bytes]:
    ids = [p.node_id for p in net.live() if p is not exclude]
    return sorted(ids, key=lambda i: distance(i, target))[:k]


def rand_id(rng: random.Random) -> bytes:
    return rng.getrandbits(160).to_bytes(20, "big")


def token_for(p: DhtProtocol, now: float = 0.0, addr: Hashable = CLIENT) -> bytes:
    token: bytes = ok(ask(p, b"get_peers", {b"info_hash": b"h" * 20}, now, addr))[b"token"]
    return token


def mutable_args(item: bep44.MutableItem, **extra: Any) -> dict[bytes, Any]:
    a: dict[bytes, Any] = {
        b"k": item.pubkey,
        b"seq": item.seq,
        b"sig": item.sig,
        b"v": bencode.Raw(item.value_bencoded),
    }
    if item.salt:
        a[b"salt"] = item.salt
    a.update({k.encode(): v for k, v in extra.items()})
    return a


# == answering queries ====================================================================


def test_ping_pong() -> None:
    net = MemoryNet()
    a, b = net.add(), net.add()
    qid = a.ping(net.addr_of(b), net.now)
    ev = net.wait_event(a, qid)
    assert ev == Pong(qid, b.node_id, pytest.approx(2 * net.latency))
    # both now know each other
    assert a.table.get(b.node_id) is not None
    assert b.table.get(a.node_id) is not None
    assert b.stats["q_ping"] == 1 and a.stats["responses"] == 1


@pytest.mark.parametrize(
    ("method", "args", "keys"),
    [
        (b"ping", {}, {b"id"}),
        (b"find_node", {b"target": b"t" * 20}, {b"id", b"nodes"}),
        (b"get_peers", {b"info_hash": b"h" * 20}, {b"id", b"nodes", b"token"}),
        (b"get", {b"target": b"t" * 20}, {b"id", b"nodes", b"token"}),
    ],
)
def test_queries_are_answered_with_the_right_keys(method: bytes, args: dict[bytes, Any], keys: set[bytes]) -> None:
    p = make()
    reply = ask(p, method, args)
    assert set(ok(reply)) == keys
    assert reply.values[b"id"] == p.node_id
    assert isinstance(reply, Response)
    assert reply.ip == CODEC.pack(CLIENT) == bytes([203, 0, 113, 7]) + (4321).to_bytes(2, "big")
    assert reply.version == HAILING_VERSION
    assert p.stats["q_" + method.decode()] == 1


def test_write_queries_are_answered_with_the_right_keys() -> None:
    p = make()
    token = token_for(p)
    r = ask(p, b"announce_peer", {b"info_hash": b"h" * 20, b"port": 6881, b"token": token})
    assert set(ok(r)) == {b"id"} and isinstance(r, Response) and r.ip == CODEC.pack(CLIENT)
    r = ask(p, b"put", {b"token": token, b"v": b"hello"})
    assert set(ok(r)) == {b"id"} and isinstance(r, Response) and r.version == HAILING_VERSION
    item = bep44.MutableItem.create(SEED, b"x", salt=b"s", seq=1)
    assert set(ok(ask(p, b"put", mutable_args(item, token=token)))) == {b"id"}


def test_version_can_be_omitted() -> None:
    p = make(DhtConfig(version=None))
    reply = ask(p, b"ping")
    assert reply.version is None
    p.ping(CLIENT, 0.0)
    (q, _), = sent(p)
    assert isinstance(q, Query) and q.version is None and q.ro is False


def test_find_node_returns_the_closest_nodes_compact() -> None:
    p = make()
    rng = random.Random(3)
    for i in range(40):
        p.add_node(rand_id(rng), (f"10.51.100.{i + 1}", 1000 + i), 0.0)  # local: no per-IP limit
    target = rand_id(rng)
    expected = [(e.id, e.addr) for e in p.table.closest(target)]
    assert len(expected) == 8
    values = ok(ask(p, b"find_node", {b"target": target}, ro=True))
    assert decode_nodes(values[b"nodes"], CODEC) == expected


def test_ipv6_requester_gets_nodes6_and_want_selects() -> None:
    p = make()
    p.add_node(b"\x01" * 20, ("198.51.100.1", 1), 0.0)
    p.add_node(b"\x02" * 20, ("2001:db8::2", 2), 0.0)
    v6client = ("2001:db8::77", 7)
    values = ok(ask(p, b"find_node", {b"target": b"\x00" * 20}, addr=v6client, ro=True))
    assert set(values) == {b"id", b"nodes6"}
    assert decode_nodes(values[b"nodes6"], CODEC, ipv6=True) == [(b"\x02" * 20, ("2001:db8::2", 2))]
    values = ok(ask(p, b"find_node", {b"target": b"\x00" * 20, b"want": [b"n4", b"n6"]}, ro=True))
    assert decode_nodes(values[b"nodes"], CODEC) == [(b"\x01" * 20, ("198.51.100.1", 1))]
    assert len(values[b"nodes6"]) == 38
    values = ok(ask(p, b"get", {b"target": b"\x00" * 20, b"want": [b"n6"]}, ro=True))
    assert b"nodes" not in values and b"nodes6" in values


def test_unknown_method_is_error_204() -> None:
    p = make()
    reply = ask(p, b"vote", {b"target": b"t" * 20})
    assert err(reply) == 204
    assert isinstance(reply, Error) and reply.message == "Method Unknown"
    assert p.table.get(CLIENT_ID) is None  # a failed query does not earn a table entry


@pytest.mark.parametrize(
    ("method", "args"),
    [
        (b"find_node", {}),
        (b"find_node", {b"target": b"t" * 19}),
        (b"find_node", {b"target": 5}),
        (b"get_peers", {}),
        (b"get_peers", {b"info_hash": [b"h" * 20]}),
        (b"get", {b"target": b"t" * 21}),
        (b"announce_peer", {b"port": 1}),
    ],
)
def test_malformed_arguments_are_error_203(method: bytes, args: dict[bytes, Any]) -> None:
    p = make()
    assert err(ask(p, method, args)) == 203
    assert p.stats["errors_sent"] == 1


@pytest.mark.parametrize(
    "args",
    [
        {b"port": 0},
        {b"port": 65536},
        {b"port": b"6881"},
        {},
        {b"info_hash": b"short", b"port": 1},
    ],
)
def test_malformed_announce_is_error_203(args: dict[bytes, Any]) -> None:
    p = make()
    token = token_for(p)
    full = {b"info_hash": b"h" * 20, b"token": token, **args}
    assert err(ask(p, b"announce_peer", full)) == 203
    assert p.peers.get(b"h" * 20, 0.0) == []


@pytest.mark.parametrize(
    "args",
    [
        {},  # no v
        {b"k": b"k" * 31},
        {b"k": PUBKEY, b"seq": 1, b"sig": b"s" * 63},
        {b"k": PUBKEY, b"seq": -1, b"sig": b"s" * 64},
        {b"k": PUBKEY, b"seq": b"1", b"sig": b"s" * 64},
        {b"k": PUBKEY, b"seq": 1, b"sig": b"s" * 64, b"salt": 5},
        {b"k": PUBKEY, b"seq": 1, b"sig": b"s" * 64, b"cas": b"1"},
        {b"target": b"x" * 20},  # immutable put whose target does not match v
    ],
)
def test_malformed_put_is_error_203(args: dict[bytes, Any]) -> None:
    p = make()
    token = token_for(p)
    full: dict[bytes, Any] = {b"token": token, **args}
    if args:
        full[b"v"] = b"value"
    assert err(ask(p, b"put", full)) == 203
    assert len(p.items) == 0


@pytest.mark.parametrize(
    ("data", "tid"),
    [
        (b"", None),
        (b"garbage", None),
        (b"i1e", None),
        (b"d1:t2:aa1:y1:q", None),  # truncated
        (b"d1:y1:qe", None),  # no tid
        (b"d1:ti5e1:y1:qe", None),  # tid of the wrong type
        (b"d1:t2:aa1:y1:qe", b"aa"),  # query without method
        (b"d1:t2:ab1:y1:xe", b"ab"),  # unknown message type
        (b"d1:ad2:id3:abce1:q4:ping1:t2:ac1:y1:qe", b"ac"),  # short id
        (b"d1:rde1:t2:ad1:y1:re", b"ad"),  # response without id
        (b"d1:ei201e1:t2:ae1:y1:ee", b"ae"),  # bad error body
    ],
)
def test_garbage_datagrams_are_counted_and_answered_only_with_a_tid(data: bytes, tid: bytes | None) -> None:
    p = make()
    p.receive_datagram(data, CLIENT, 0.0)
    assert p.stats["dropped_malformed"] == 1
    out = sent(p)
    if tid is None:
        assert out == []
    else:
        assert len(out) == 1
        msg, to = out[0]
        assert to == CLIENT and isinstance(msg, Error) and msg.tid == tid and msg.code == 203
    assert len(p.table) == 0
    assert p.next_event() is None


QUERY_ARGS = st.dictionaries(
    st.sampled_from(
        [b"id", b"target", b"info_hash", b"port", b"implied_port", b"token", b"v", b"k",
         b"seq", b"sig", b"salt", b"cas", b"want"]
    ),
    st.one_of(
        st.binary(max_size=70),
        st.integers(-3, 70000),
        st.lists(st.sampled_from([b"n4", b"n6", 1, b""]), max_size=3),
        st.dictionaries(st.binary(max_size=3), st.integers(-5, 5), max_size=2),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put", b"x"]),
    QUERY_ARGS,
    st.booleans(),
)
def test_random_queries_never_raise_and_get_one_reply(method: bytes, args: dict[bytes, Any], valid_token: bool) -> None:
    p = make()
    token = token_for(p)
    if valid_token:
        args = {**args, b"token": token}
    args[b"id"] = CLIENT_ID
    wire = encode_message(Query(b"qq", method, args))
    p.receive_datagram(wire, CLIENT, 1.0)
    out = sent(p, 1.0)
    assert len(out) == 1
    msg, _ = out[0]
    assert isinstance(msg, (Response, Error)) and msg.tid == b"qq"
    if isinstance(msg, Error):
        assert msg.code in (203, 204, 205, 206, 207, 301, 302)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_datagrams_never_raise(data: bytes) -> None:
    p = make()
    p.receive_datagram(data, CLIENT, 0.0)
    for msg, _ in sent(p):
        assert isinstance(msg, (Response, Error))


def test_method_stats_stay_bounded() -> None:
    # every distinct garbage method name must not grow the stats without limit
    p = make()
    for i in range(500):
        ask(p, b"m%d" % i, tid=b"t%d" % i)
    assert len(p.stats) < 10
    assert p.stats["q_unknown"] == 500 and p.stats["errors_sent"] == 500


# == BEP43 read-only nodes ================================================================


def test_read_only_node_flags_queries_and_answers_nothing() -> None:
    p = make(DhtConfig(read_only=True))
    p.ping(CLIENT, 0.0)
    (q, to), = sent(p)
    assert isinstance(q, Query) and q.ro is True and to == CLIENT
    raw = bencode.decode(encode_message(q))
    assert raw[b"ro"] == 1
    # queries get no answer, not even an error; garbage gets no error either
    p.receive_datagram(encode_message(Query(b"zz", b"ping", {b"id": CLIENT_ID})), CLIENT, 0.0)
    p.receive_datagram(encode_message(Query(b"zy", b"nope", {b"id": CLIENT_ID})), CLIENT, 0.0)
    p.receive_datagram(b"d1:t2:aa1:y1:qe", CLIENT, 0.0)
    assert sent(p) == []
    assert p.stats["ignored_read_only"] == 2 and p.stats["dropped_malformed"] == 1
    assert p.table.get(CLIENT_ID) is None


def test_read_only_node_is_not_added_to_routing_tables() -> None:
    net = build_network(12)
    ro = join(net, net.addr_of(next(iter(net.nodes.values()))), DhtConfig(read_only=True))
    qid = ro.find_node(rand_id(random.Random(1)), net.now)
    ev = net.wait_event(ro, qid)
    assert isinstance(ev, NodesFound) and len(ev.nodes) == 8
    assert len(ro.table) >= 8  # it learns from answers ...
    others = [p for p in net.nodes.values() if p is not ro]
    assert all(p.table.get(ro.node_id) is None for p in others)  # ... but nobody stores it
    assert sum(p.stats["q_find_node"] for p in others) > 0
    # and it does not answer
    qid = others[0].ping(net.addr_of(ro), net.now)
    ev = net.wait_event(others[0], qid)
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, QueryTimeout)
    assert ro.stats["ignored_read_only"] == 1


# == lookups ==============================================================================


@pytest.fixture(scope="module")
def net100() -> MemoryNet:
    return build_network(100, seed=11)


def test_find_node_returns_the_true_k_closest(net100: MemoryNet) -> None:
    rng = random.Random(5)
    nodes = list(net100.nodes.values())
    for _ in range(12):
        src = rng.choice(nodes)
        target = rand_id(rng)
        qid = src.find_node(target, net100.now)
        ev = net100.wait_event(src, qid)
        assert isinstance(ev, NodesFound) and ev.target == target
        assert ids_of(ev.nodes) == true_closest(net100, target, exclude=src)
        assert all(net100.nodes[n.addr].node_id == n.id for n in ev.nodes)
        assert ev.stats.responses >= 8 and ev.stats.timeouts == 0
        assert 1 <= ev.stats.hops <= 6 and ev.stats.duration < 0.5


def test_find_node_of_an_existing_id(net100: MemoryNet) -> None:
    nodes = list(net100.nodes.values())
    src, wanted = nodes[3], nodes[77]
    qid = src.find_node(wanted.node_id, net100.now)
    ev = net100.wait_event(src, qid)
    assert isinstance(ev, NodesFound)
    assert ev.nodes[0] == NodeInfo(wanted.node_id, net100.addr_of(wanted))


def test_dead_node_in_the_closest_set_does_not_stall_the_lookup() -> None:
    net = build_network(60, seed=4)
    rng = random.Random(9)
    target = rand_id(rng)
    truth = true_closest(net, target)
    by_id = {p.node_id: p for p in net.nodes.values()}
    dead = [by_id[truth[0]], by_id[truth[2]]]
    for p in dead:
        net.kill(p)
    cfg = DhtConfig()
    assert cfg.query_timeout == 4.0 and cfg.max_soft_timeout == 1.5
    # the first node has never measured an RTT (soft timeout 1.5 s); the others have
    first = next(iter(net.nodes.values()))
    assert first.node_id not in truth
    later = next(p for p in list(net.live())[1:] if p.node_id not in truth)
    for src, limit in [(first, cfg.max_soft_timeout + 0.2), (later, 0.6)]:
        start = net.now
        qid = src.find_node(target, start)
        ev = net.wait_event(src, qid)
        assert isinstance(ev, NodesFound)
        # Every answering node still lists the two dead nodes among its k closest, so
        # the lookup can be sure of k - 2 live ones only; those must be exact.
        live_k = len(ev.nodes) - len(dead)
        assert ids_of(ev.nodes)[:live_k] == true_closest(net, target, exclude=src)[:live_k]
        assert not {p.node_id for p in dead} & set(ids_of(ev.nodes))
        # soft timeouts: far below the hard query_timeout
        assert ev.stats.duration < limit
        assert net.now - start < limit + 0.05


def test_lookup_waits_only_for_soft_timeouts_even_with_many_dead_nodes() -> None:
    net = build_network(40, seed=6)
    target = rand_id(random.Random(2))
    truth = true_closest(net, target, k=16)
    by_id = {p.node_id: p for p in net.nodes.values()}
    for nid in truth[:6]:
        net.kill(by_id[nid])
    src = next(p for p in net.live() if p.node_id not in truth)
    qid = src.find_node(target, net.now)
    ev = net.wait_event(src, qid)
    assert isinstance(ev, NodesFound)
    # Answers keep listing the 6 dead nodes, so only the first k - 6 are certain.
    live_k = len(ev.nodes) - 6
    assert ids_of(ev.nodes)[:live_k] == true_closest(net, target, exclude=src)[:live_k]
    assert ev.stats.duration < 2.0


def test_lookup_with_empty_table_fails_at_once() -> None:
    p = make()
    qid = p.find_node(b"t" * 20, 0.0)
    ev = p.next_event()
    assert ev == CommandFailed(qid, ev.error) and isinstance(ev.error, QueryTimeout)  # type: ignore[union-attr]
    qid = p.get(b"t" * 20, 0.0)
    ev = p.next_event()
    assert isinstance(ev, ItemFound) and ev.qid == qid and ev.item is None
    assert sent(p) == []


def test_bootstrap_from_an_address() -> None:
    net = MemoryNet()
    a, b = net.add(), net.add()
    qid = b.bootstrap([net.addr_of(a)], net.now)
    ev = net.wait_event(b, qid)
    # the seed's id was unknown when it was asked; its answer makes it a result
    assert isinstance(ev, NodesFound) and ev.stats.responses == 1
    assert ev.nodes == (NodeInfo(a.node_id, net.addr_of(a)),)
    assert b.table.get(a.node_id) is not None and a.table.get(b.node_id) is not None


def test_bootstrap_result_is_the_closest_set_seeds_included() -> None:
    net = build_network(30, seed=12)
    nodes = list(net.nodes.values())
    newcomer = net.add()
    # seeds: the node closest to the newcomer and two others
    nearest = min(nodes, key=lambda p: distance(p.node_id, newcomer.node_id))
    seeds = [net.addr_of(p) for p in (nearest, nodes[0], nodes[1])]
    ev = net.wait_event(newcomer, newcomer.bootstrap(dict.fromkeys(seeds), net.now))
    assert isinstance(ev, NodesFound)
    assert ids_of(ev.nodes) == true_closest(net, newcomer.node_id, exclude=newcomer)
    assert ev.nodes[0].id == nearest.node_id


def test_ping_to_a_dead_address_times_out() -> None:
    net = MemoryNet()
    a = net.add()
    start = net.now
    qid = a.ping(("10.9.9.9", 6881), start)
    ev = net.wait_event(a, qid)
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, QueryTimeout)
    assert "10.9.9.9" in str(ev.error)
    assert a.config.query_timeout <= net.now - start < a.config.query_timeout + 0.1
    assert a.stats["timeouts"] == 1


def test_ping_answered_by_an_error_fails_with_krpc_error() -> None:
    p = make()
    qid = p.ping(CLIENT, 0.0)
    (q, _), = sent(p)
    p.receive_datagram(encode_message(Error(q.tid, 202, "Server Error")), CLIENT, 0.1)
    ev = p.next_event()
    assert isinstance(ev, CommandFailed) and ev.qid == qid
    assert isinstance(ev.error, KrpcError) and ev.error.code == 202
    assert p.stats["errors_received"] == 1


def test_same_seed_same_trace() -> None:
    def trace(seed: int) -> tuple[Any, ...]:
        net = build_network(15, seed=seed)
        src = list(net.nodes.values())[4]
        qid = src.find_node(b"\x55" * 20, net.now)
        ev = net.wait_event(src, qid)
        return (net.sent, net.now, [p.node_id for p in net.nodes.values()], ev)

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


# == unexpected responses =================================================================


def test_response_from_wrong_address_or_unknown_tid_is_dropped() -> None:
    p = make()
    target = ("198.51.100.9", 9)
    qid = p.ping(target, 0.0)
    (q, _), = sent(p)
    reply = encode_message(Response(q.tid, {b"id": b"r" * 20}))
    p.receive_datagram(reply, ("198.51.100.10", 9), 0.1)  # another host
    p.receive_datagram(reply, ("198.51.100.9", 10), 0.1)  # another port
    other_tid = bytes([q.tid[0] ^ 0xFF]) + q.tid[1:]
    p.receive_datagram(encode_message(Response(other_tid, {b"id": b"r" * 20})), target, 0.1)
    p.receive_datagram(encode_message(Error(other_tid, 201, "x")), target, 0.1)
    assert p.stats["dropped_unexpected"] == 4
    assert p.next_event() is None and len(p.table) == 0
    p.receive_datagram(reply, target, 0.2)
    assert p.next_event() == Pong(qid, b"r" * 20, pytest.approx(0.2))
    p.receive_datagram(reply, target, 0.3)  # a duplicate
    assert p.stats["dropped_unexpected"] == 5
    assert p.next_event() is None


def test_lookup_ignores_an_answer_from_a_different_node_id() -> None:
    # The node we knew at an address is gone; another one answers there. Its answer must
    # not be reported under the old id.
    p = make()
    honest, stale = ("10.51.100.1", 1), ("10.51.100.2", 2)  # local: no BEP42, no per-IP limit
    p.add_node(b"\x10" * 20, honest, 0.0)
    p.add_node(b"\x11" * 20, stale, 0.0)
    qid = p.find_node(b"\x12" * 20, 1.0)
    queries = {to: q for q, to in sent(p, 1.0)}
    assert set(queries) == {honest, stale}
    p.receive_datagram(encode_message(Response(queries[honest].tid, {b"id": b"\x10" * 20, b"nodes": b""})), honest, 1.1)
    p.receive_datagram(encode_message(Response(queries[stale].tid, {b"id": b"\x99" * 20, b"nodes": b""})), stale, 1.1)
    ev = p.next_event()
    assert isinstance(ev, NodesFound) and ev.qid == qid
    assert ev.nodes == (NodeInfo(b"\x10" * 20, honest),)
    assert p.table.get(b"\x99" * 20) is not None  # the newcomer is a node like any other
    e = p.table.get(b"\x11" * 20)
    assert e is None or e.fail_count > 0


# == timers, tokens, storage ==============================================================


def test_timer_deadlines() -> None:
    p = make()
    assert p.get_timer() == p.config.maintenance_interval
    p.ping(CLIENT, 0.0)
    assert p.get_timer() == p.config.max_soft_timeout  # no RTT measured yet
    p.handle_timer(p.config.max_soft_timeout)
    assert p.get_timer() == p.config.query_timeout
    assert p.next_event() is None
    p.handle_timer(p.config.query_timeout)
    assert isinstance(p.next_event(), CommandFailed)
    assert p.get_timer() == 10.0


def test_token_survives_one_rotation_not_two() -> None:
    p = make()
    token = token_for(p)
    assert p.config.token_rotation == 300.0
    announce = {b"info_hash": b"h" * 20, b"port": 6881, b"token": token}
    advance(p, 310.0)  # one rotation (at t=300)
    assert token_for(p, 310.0) != token
    assert set(ok(ask(p, b"announce_peer", announce, 310.0))) == {b"id"}
    assert set(ok(ask(p, b"put", {b"token": token, b"v": b"a"}, 310.0))) == {b"id"}
    advance(p, 610.0)  # second rotation (at t=600)
    assert err(ask(p, b"announce_peer", announce, 610.0)) == 203
    assert err(ask(p, b"put", {b"token": token, b"v": b"b"}, 610.0)) == 203
    fresh = token_for(p, 610.0)
    assert set(ok(ask(p, b"put", {b"token": fresh, b"v": b"b"}, 610.0))) == {b"id"}


@pytest.mark.parametrize("token", [b"", b"12345678", b"x" * 20, 5])
def test_bad_token_is_error_203(token: Any) -> None:
    p = make()
    assert err(ask(p, b"announce_peer", {b"info_hash": b"h" * 20, b"port": 1, b"token": token})) == 203
    assert err(ask(p, b"put", {b"token": token, b"v": b"v"})) == 203
    item = bep44.MutableItem.create(SEED, b"x")
    assert err(ask(p, b"put", mutable_args(item, token=token))) == 203
    assert len(p.items) == 0 and len(p.peers) == 0


def test_token_is_bound_to_the_requester_ip() -> None:
    p = make()
    token = token_for(p)
    other = ("203.0.113.8", 4321)
    assert err(ask(p, b"put", {b"token": token, b"v": b"v"}, addr=other)) == 203
    # same host, other port: accepted (the token binds the IP)
    assert set(ok(ask(p, b"put", {b"token": token, b"v": b"v"}, addr=(CLIENT[0], 1)))) == {b"id"}


def test_announced_peers_expire_after_peer_ttl() -> None:
    p = make()
    token = token_for(p)
    ask(p, b"announce_peer", {b"info_hash": b"h" * 20, b"port": 6881, b"token": token})
    ask(p, b"announce_peer", {b"info_hash": b"h" * 20, b"implied_port": 1, b"port": 9, b"token": token}, addr=(CLIENT[0], 5555))
    values = ok(ask(p, b"get_peers", {b"info_hash": b"h" * 20}, 1.0))[b"values"]
    assert sorted(CODEC.unpack(v) for v in values) == [(CLIENT[0], 5555), (CLIENT[0], 6881)]  # type: ignore[type-var]
    ttl = p.config.peer_ttl
    advance(p, ttl - 1)
    assert len(ok(ask(p, b"get_peers", {b"info_hash": b"h" * 20}, ttl - 1))[b"values"]) == 2
    assert b"values" not in ok(ask(p, b"get_peers", {b"info_hash": b"h" * 20}, ttl))
    advance(p, ttl + 310)
    assert len(p.peers) == 0


def test_items_expire_after_item_ttl_unless_put_again() -> None:
    p = make()
    token = token_for(p)
    ask(p, b"put", {b"token": token, b"v": b"first"})
    target1 = bep44.immutable_target(b"5:first")
    ttl = p.config.item_ttl
    advance(p, ttl / 2)
    token = token_for(p, ttl / 2)
    ask(p, b"put", {b"token": token, b"v": b"second"}, ttl / 2)
    target2 = bep44.immutable_target(b"6:second")
    assert ok(ask(p, b"get", {b"target": target1}, ttl - 1))[b"v"] == b"first"
    assert b"v" not in ok(ask(p, b"get", {b"target": target1}, ttl))
    assert ok(ask(p, b"get", {b"target": target2}, ttl))[b"v"] == b"second"
    advance(p, ttl + 310)
    assert len(p.items) == 1
    assert b"v" not in ok(ask(p, b"get", {b"target": target2}, ttl * 1.5))


# == BEP44 on the wire ====================================================================


def test_immutable_put_get() -> None:
    p = make()
    token = token_for(p)
    value = {b"a": [1, b"b"]}
    target = bep44.immutable_target(bencode.encode(value))
    assert b"v" not in ok(ask(p, b"get", {b"target": target}))
    ok(ask(p, b"put", {b"token": token, b"v": value, b"target": target}))
    r = ok(ask(p, b"get", {b"target": target}))
    assert r[b"v"] == value and b"k" not in r and b"seq" not in r


def test_mutable_put_get_with_salt() -> None:
    p = make()
    token = token_for(p)
    item = bep44.MutableItem.create(SEED, [b"hello", 1], salt=b"chat", seq=4)
    ok(ask(p, b"put", mutable_args(item, token=token)))
    # no salt: another target
    assert b"v" not in ok(ask(p, b"get", {b"target": bep44.mutable_target(PUBKEY)}))
    r = ok(ask(p, b"get", {b"target": bep44.mutable_target(PUBKEY, b"chat")}))
    assert (r[b"k"], r[b"seq"], r[b"sig"], r[b"v"]) == (PUBKEY, 4, item.sig, [b"hello", 1])
    assert bep44.verify(r[b"k"], r[b"sig"], b"chat", r[b"seq"], bencode.encode(r[b"v"]))


def test_mutable_seq_ordering_302() -> None:
    p = make()
    token = token_for(p)
    target = bep44.mutable_target(PUBKEY)
    ok(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"two", seq=2), token=token)))
    assert err(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"one", seq=1), token=token))) == 302
    assert err(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"TWO", seq=2), token=token))) == 302
    ok(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"two", seq=2), token=token)))  # refresh
    assert ok(ask(p, b"get", {b"target": target}))[b"v"] == b"two"
    ok(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"three", seq=3), token=token)))
    assert ok(ask(p, b"get", {b"target": target}))[b"v"] == b"three"


def test_mutable_cas_301() -> None:
    p = make()
    token = token_for(p)
    target = bep44.mutable_target(PUBKEY)
    # with nothing stored, cas is ignored (BEP44)
    ok(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"a", seq=5), token=token, cas=99)))
    assert err(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"b", seq=6), token=token, cas=4))) == 301
    assert ok(ask(p, b"get", {b"target": target}))[b"seq"] == 5
    ok(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"b", seq=6), token=token, cas=5)))
    assert ok(ask(p, b"get", {b"target": target}))[b"v"] == b"b"


def test_oversize_value_205() -> None:
    p = make()
    token = token_for(p)
    big = b"x" * 996  # bencodes to 1000 bytes: the limit
    ok(ask(p, b"put", {b"token": token, b"v": big}))
    assert err(ask(p, b"put", {b"token": token, b"v": big + b"x"})) == 205
    v = bencode.encode(big + b"x")
    sig = bep44.sign(SEED, b"", 1, v)
    args = {b"k": PUBKEY, b"seq": 1, b"sig": sig, b"v": big + b"x", b"token": token}
    assert err(ask(p, b"put", args)) == 205
    assert len(p.items) == 1


def test_bad_signature_206() -> None:
    p = make()
    token = token_for(p)
    item = bep44.MutableItem.create(SEED, b"v", seq=1)
    bad_sig = bytes([item.sig[0] ^ 1]) + item.sig[1:]
    assert err(ask(p, b"put", mutable_args(item, token=token, sig=bad_sig))) == 206
    # a valid signature over another seq is just as bad
    assert err(ask(p, b"put", mutable_args(item, token=token, seq=2))) == 206
    other_key = bep44.public_key(b"\x01" * 32)
    assert err(ask(p, b"put", mutable_args(item, token=token, k=other_key))) == 206
    assert len(p.items) == 0


def test_long_salt_207() -> None:
    p = make()
    token = token_for(p)
    salt = b"s" * 65
    v = bencode.encode(b"v")
    args = {b"k": PUBKEY, b"salt": salt, b"seq": 1, b"sig": bep44.sign(SEED, salt, 1, v), b"token": token, b"v": b"v"}
    assert err(ask(p, b"put", args)) == 207
    salt = b"s" * 64
    args.update({b"salt": salt, b"sig": bep44.sign(SEED, salt, 1, v)})
    ok(ask(p, b"put", args))


def test_get_with_seq_omits_v_when_not_newer() -> None:
    p = make()
    token = token_for(p)
    ok(ask(p, b"put", mutable_args(bep44.MutableItem.create(SEED, b"v3", seq=3), token=token)))
    target = bep44.mutable_target(PUBKEY)
    for seq, has_v in [(3, False), (4, False), (2, True), (0, True)]:
        r = ok(ask(p, b"get", {b"target": target, b"seq": seq}))
        assert (b"v" in r) is has_v
        assert r[b"seq"] == 3 and r[b"k"] == PUBKEY and len(r[b"sig"]) == 64 and b"token" in r


# == BEP44 through lookups ================================================================


def test_put_get_immutable_through_the_network() -> None:
    net = build_network(20, seed=2)
    a, b = list(net.nodes.values())[5], list(net.nodes.values())[15]
    qid, target = a.put_immutable([b"hello", {b"x": 1}], net.now)
    ev = net.wait_event(a, qid)
    copies = a.config.put_copies  # 2k: a put stores on the 16 closest nodes
    assert isinstance(ev, StoreDone) and ev.stored == copies and ev.errors == () and ev.target == target
    holders = [p for p in net.nodes.values() if p.items.get(target, net.now) is not None]
    assert len(holders) == copies
    assert {p.node_id for p in holders} >= set(true_closest(net, target, exclude=a))
    qid = b.get(target, net.now)
    ev = net.wait_event(b, qid)
    assert isinstance(ev, ItemFound) and ev.item is not None
    assert ev.item.value == [b"hello", {b"x": 1}] and ev.item.target == target


def test_put_get_mutable_with_salt_through_the_network() -> None:
    net = build_network(20, seed=3)
    a, b = list(net.nodes.values())[2], list(net.nodes.values())[12]
    item = bep44.MutableItem.create(SEED, b"v1", salt=b"room", seq=1)
    ev = net.wait_event(a, a.put_mutable(item, net.now))
    assert isinstance(ev, StoreDone) and ev.stored == a.config.put_copies
    newer = bep44.MutableItem.create(SEED, b"v2", salt=b"room", seq=2)
    ev = net.wait_event(a, a.put_mutable(newer, net.now, cas=1))
    assert isinstance(ev, StoreDone) and ev.stored == a.config.put_copies
    ev = net.wait_event(b, b.get_mutable(PUBKEY, net.now, salt=b"room"))
    assert isinstance(ev, ItemFound) and ev.item == newer
    # without the salt: nothing
    ev = net.wait_event(b, b.get_mutable(PUBKEY, net.now))
    assert isinstance(ev, ItemFound) and ev.item is None
    # an older seq is refused by every storing node
    ev = net.wait_event(a, a.put_mutable(item, net.now))
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, KrpcError)
    assert ev.error.code == 302


def test_get_of_a_missing_item() -> None:
    net = build_network(12, seed=5)
    a = list(net.nodes.values())[3]
    ev = net.wait_event(a, a.get(b"\x42" * 20, net.now))
    assert isinstance(ev, ItemFound) and ev.item is None and ev.target == b"\x42" * 20
    assert ev.stats.responses >= 8


def test_announce_and_get_peers_through_the_network() -> None:
    net = build_network(20, seed=8)
    nodes = list(net.nodes.values())
    a, b, c = nodes[1], nodes[9], nodes[17]
    info_hash = b"\x77" * 20
    ev = net.wait_event(a, a.announce_peer(info_hash, 51413, net.now))
    assert isinstance(ev, StoreDone) and ev.stored == 8
    ev = net.wait_event(b, b.announce_peer(info_hash, None, net.now))  # implied port
    assert isinstance(ev, StoreDone) and ev.stored == 8
    ev = net.wait_event(c, c.get_peers(info_hash, net.now))
    assert isinstance(ev, PeersFound) and ev.info_hash == info_hash
    host_a = net.addr_of(a)[0]  # type: ignore[index]
    assert sorted(ev.peers) == sorted([(host_a, 51413), net.addr_of(b)])  # type: ignore[type-var]
    assert len(ev.nodes) == 8


def test_local_misuse_raises() -> None:
    p = make()
    with pytest.raises(LocalProtocolError):
        p.find_node(b"short", 0.0)
    with pytest.raises(LocalProtocolError):
        p.announce_peer(b"h" * 20, 0, 0.0)
    with pytest.raises(LocalProtocolError):
        p.get_mutable(b"k" * 31, 0.0)
    with pytest.raises(LocalProtocolError):
        p.get_mutable(PUBKEY, 0.0, salt=b"s" * 65)
    with pytest.raises(LocalProtocolError):
        p.put_immutable(b"x" * 1000, 0.0)
    item = bep44.MutableItem.create(SEED, b"x")
    with pytest.raises(LocalProtocolError):
        p.put_mutable(bep44.MutableItem(item.pubkey, b"", 2, item.value_bencoded, item.sig), 0.0)
    with pytest.raises(LocalProtocolError):
        DhtProtocol(rng=random.Random(1), now=0.0, node_id=b"x" * 19)
    assert sent(p) == [] and p.next_event() is None


# == republishing =========================================================================

FAST = DhtConfig(item_ttl=300.0, republish_interval=120.0, token_rotation=60.0)


def test_republish_keeps_an_item_alive_beyond_item_ttl() -> None:
    net = build_network(24, seed=21, config=FAST)
    nodes = list(net.nodes.values())
    putter, reader = nodes[4], nodes[20]
    kept = putter.put_immutable(b"kept", net.now)
    dropped = putter.put_immutable(b"dropped", net.now)
    for qid, _ in (kept, dropped):
        assert isinstance(net.wait_event(putter, qid), StoreDone)
    putter.cancel_republish(dropped[1])
    net.run(duration=3 * FAST.item_ttl)
    ev = net.wait_event(reader, reader.get(kept[1], net.now))
    assert isinstance(ev, ItemFound) and ev.item == bep44.ImmutableItem(b"4:kept")
    ev = net.wait_event(reader, reader.get(dropped[1], net.now))
    assert isinstance(ev, ItemFound) and ev.item is None


def test_republish_moves_an_item_to_new_storing_nodes() -> None:
    net = build_network(24, seed=22, config=FAST)
    first = next(iter(net.nodes))
    nodes = list(net.nodes.values())
    putter = nodes[7]
    item = bep44.MutableItem.create(SEED, b"survivor", seq=9)
    target = item.target
    assert isinstance(net.wait_event(putter, putter.put_mutable(item, net.now)), StoreDone)
    holders = [p for p in net.live() if p.items.get(target, net.now) is not None]
    assert len(holders) == FAST.put_copies
    for p in holders:
        if net.addr_of(p) != first:
            net.kill(p)
    # new nodes join right next to the target
    rng = random.Random(1)
    newcomers = []
    for _ in range(8):
        nid = target[:3] + rand_id(rng)[3:]
        newcomers.append(join(net, first, FAST, node_id=nid))
    assert all(p.items.get(target, net.now) is None for p in newcomers)
    net.run(duration=FAST.republish_interval + 2 * FAST.maintenance_interval)
    assert all(p.items.get(target, net.now) == item for p in newcomers)
    reader = next(p for p in net.live() if p is not putter and p not in newcomers)
    net.run(duration=2 * FAST.item_ttl)
    ev = net.wait_event(reader, reader.get_mutable(PUBKEY, net.now))
    assert isinstance(ev, ItemFound) and ev.item == item


# == forged values, BEP42 =================================================================

FAKE = ("198.51.100.50", 6881)
FAKE_ID = b"\x05" * 20


def _one_query(p: DhtProtocol, now: float) -> Query:
    (q, to), = sent(p, now)
    assert to == FAKE and isinstance(q, Query)
    return q


@pytest.mark.parametrize(
    "values",
    [
        {b"v": b"not the value whose hash is the target"},
        {b"v": b"x", b"k": PUBKEY, b"seq": 1, b"sig": b"s" * 64},  # mutable reply to an immutable get
    ],
)
def test_forged_immutable_value_is_ignored(values: dict[bytes, Any]) -> None:
    p = make()
    p.add_node(FAKE_ID, FAKE, 0.0)
    target = bep44.immutable_target(b"5:right")
    qid = p.get(target, 0.0)
    q = _one_query(p, 0.0)
    assert q.method == b"get" and q.args[b"target"] == target
    p.receive_datagram(encode_message(Response(q.tid, {b"id": FAKE_ID, b"token": b"tk", **values})), FAKE, 0.1)
    ev = p.next_event()
    assert isinstance(ev, ItemFound) and ev.qid == qid and ev.item is None
    assert p.stats["bad_items"] == 1


def test_genuine_immutable_value_is_accepted() -> None:
    p = make()
    p.add_node(FAKE_ID, FAKE, 0.0)
    target = bep44.immutable_target(b"5:right")
    qid = p.get(target, 0.0)
    q = _one_query(p, 0.0)
    p.receive_datagram(encode_message(Response(q.tid, {b"id": FAKE_ID, b"v": b"right"})), FAKE, 0.1)
    ev = p.next_event()
    assert ev == ItemFound(qid, target, bep44.ImmutableItem(b"5:right"), ev.stats, ev.nodes)  # type: ignore[union-attr]
    assert p.stats["bad_items"] == 0


def _mutable_reply(item: bep44.MutableItem, **over: Any) -> dict[bytes, Any]:
    r: dict[bytes, Any] = {
        b"id": FAKE_ID, b"k": item.pubkey, b"seq": item.seq, b"sig": item.sig,
        b"v": bencode.Raw(item.value_bencoded),
    }
    r.update({k.encode(): v for k, v in over.items()})
    return r


@pytest.mark.parametrize(
    "forge",
    [
        {"sig": b"\x00" * 64},  # bad signature
        {"seq": 2},  # signature over another seq
        {"v": b"tampered"},  # signature over another value
        {"k": bep44.public_key(b"\x09" * 32)},  # another key: another target
        {"k": b"short"},
        {"seq": b"1"},
    ],
)
def test_forged_mutable_value_is_ignored(forge: dict[str, Any]) -> None:
    p = make()
    p.add_node(FAKE_ID, FAKE, 0.0)
    item = bep44.MutableItem.create(SEED, b"value", salt=b"s", seq=1)
    qid = p.get_mutable(PUBKEY, 0.0, salt=b"s")
    q = _one_query(p, 0.0)
    assert q.args[b"target"] == item.target
    p.receive_datagram(encode_message(Response(q.tid, _mutable_reply(item, **forge))), FAKE, 0.1)
    ev = p.next_event()
    assert isinstance(ev, ItemFound) and ev.qid == qid and ev.item is None
    assert p.stats["bad_items"] == 1


def test_mutable_get_keeps_the_highest_seq() -> None:
    p = make()
    fakes = [((f"10.51.100.{i}", 1), bytes([i]) * 20) for i in (1, 2, 3)]  # local: no per-IP limit
    for addr, nid in fakes:
        p.add_node(nid, addr, 0.0)
    items = [bep44.MutableItem.create(SEED, b"v%d" % s, seq=s) for s in (3, 7, 5)]
    qid = p.get_mutable(PUBKEY, 0.0)
    queries = {to: q for q, to in sent(p)}
    for ((addr, nid), item) in zip(fakes, items, strict=True):
        reply = {**_mutable_reply(item), b"id": nid}
        p.receive_datagram(encode_message(Response(queries[addr].tid, reply)), addr, 0.1)
    ev = p.next_event()
    assert isinstance(ev, ItemFound) and ev.qid == qid and ev.item == items[1]
    assert p.stats["bad_items"] == 0


def _secure_id(ip: str) -> bytes:
    return bep42.secure_node_id(ip, 5, bytes(range(17)))


def _insecure_id(ip: str) -> bytes:
    nid = bytes([(_secure_id(ip)[0] ^ 0x80)]) + bytes(19)
    assert not bep42.node_id_prefix_ok(nid, ip)
    return nid


def _query_and_verify(p: DhtProtocol, addr: Hashable, nid: bytes) -> None:
    """``nid`` at ``addr`` pings ``p`` and answers the verification ping, if any."""
    p.receive_datagram(encode_message(Query(b"tt", b"ping", {b"id": nid})), addr, 0.0)
    for m, to in sent(p):
        if isinstance(m, Query) and m.method == b"ping" and to == addr:
            p.receive_datagram(encode_message(Response(m.tid, {b"id": nid})), addr, 0.05)


@pytest.mark.parametrize(
    ("ip", "secure", "accepted"),
    [
        ("1.2.3.4", False, False),
        ("1.2.3.4", True, True),
        ("2001:4860::8888", False, False),
        ("2001:4860::8888", True, True),
        ("192.168.1.5", False, True),  # private: exempt
        ("10.1.2.3", False, True),
        ("127.0.0.1", False, True),
        ("fe80::1", False, True),
    ],
)
def test_bep42_enforcement_on_queries(ip: str, secure: bool, accepted: bool) -> None:
    nid = _secure_id(ip) if secure else _insecure_id(ip)
    p = make()  # enforced by default
    _query_and_verify(p, (ip, 6881), nid)
    assert (p.table.get(nid) is not None) is accepted
    assert p.stats["rejected_node_id"] == (0 if accepted else 1)
    # without enforcement everyone is accepted
    lax = make(DhtConfig(enforce_node_id=False))
    _query_and_verify(lax, (ip, 6881), nid)
    assert lax.table.get(nid) is not None


def test_bep42_enforcement_on_responses() -> None:
    p = make()
    addr = ("1.2.3.4", 6881)
    qid = p.ping(addr, 0.0)
    (q, _), = sent(p)
    p.receive_datagram(encode_message(Response(q.tid, {b"id": _insecure_id("1.2.3.4")})), addr, 0.1)
    assert isinstance(p.next_event(), Pong)
    assert len(p.table) == 0 and p.stats["rejected_node_id"] == 1
    qid = p.ping(addr, 0.2)
    (q, _), = sent(p, 0.2)
    p.receive_datagram(encode_message(Response(q.tid, {b"id": _secure_id("1.2.3.4")})), addr, 0.3)
    ev = p.next_event()
    assert isinstance(ev, Pong) and ev.qid == qid
    assert p.table.get(_secure_id("1.2.3.4")) is not None


def test_external_ip_is_voted_from_responses() -> None:
    p = make()
    for i, seen_as in enumerate([("5.6.7.8", 1), ("5.6.7.8", 2), ("9.9.9.9", 3)]):
        addr = (f"198.51.100.{i + 1}", 1)
        p.ping(addr, 0.0)
        (q, _), = sent(p)
        ip = CODEC.pack(seen_as)
        p.receive_datagram(encode_message(Response(q.tid, {b"id": bytes([i + 1]) * 20}, None, ip)), addr, 0.1)
    assert p.external_ip == bytes([5, 6, 7, 8])


def test_encode_nodes_used_by_responder_skips_unpackable() -> None:
    # opaque addresses without a wire form are never sent in nodes
    p = make()
    p.add_node(b"\x01" * 20, "opaque", 0.0)
    p.add_node(b"\x02" * 20, ("198.51.100.2", 2), 0.0)
    values = ok(ask(p, b"find_node", {b"target": b"\x00" * 20}))
    assert values[b"nodes"] == encode_nodes([(b"\x02" * 20, ("198.51.100.2", 2))], CODEC)[0]
