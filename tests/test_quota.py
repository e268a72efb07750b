"""Per-source accounting (dht/quota.py): sources, bounded tables that evict the heaviest
source first, work budgets, and the cost of an insert into a full store (issue 9 items
2 and 8). Clocks are advanced by hand; costs are counted function calls, never times."""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial

import pytest

from hailing.dht import DhtConfig, DhtProtocol
from hailing.dht import inbox as ib
from hailing.dht.bep44 import ImmutableItem
from hailing.dht.listeners import ListenerTable
from hailing.dht.quota import SourceBudget, SourceTable, exempt, source_of
from hailing.dht.storage import ItemStore, PeerStore
from hailing.krpc import IPAddressCodec, Query, encode_message

CODEC = IPAddressCodec()


# -- sources --------------------------------------------------------------------------------


def test_a_source_is_an_ipv4_address_or_an_ipv6_64_whatever_the_port() -> None:
    assert source_of(CODEC, ("198.51.100.7", 1)) == source_of(CODEC, ("198.51.100.7", 2)) \
        == bytes([198, 51, 100, 7])
    assert source_of(CODEC, ("198.51.100.8", 1)) != source_of(CODEC, ("198.51.100.7", 1))
    a = source_of(CODEC, ("2001:db8:1:2:aaaa::1", 1))
    assert a == source_of(CODEC, ("2001:db8:1:2:ffff:ffff:ffff:ffff", 9)) and len(a) == 8
    assert a != source_of(CODEC, ("2001:db8:1:3::1", 1))
    # an IPv4-mapped address (a dual-stack socket) is its IPv4 address, not one /64 for all
    assert source_of(CODEC, ("::ffff:198.51.100.7", 5)) == source_of(CODEC, ("198.51.100.7", 1))
    assert source_of(CODEC, ("::ffff:198.51.100.8", 5)) != source_of(CODEC, ("::ffff:198.51.100.7", 5))
    # opaque addresses are charged to their codec key, apart from any IP
    assert source_of(CODEC, "opaque") == b"\x00" + CODEC.ip_key("opaque")


def test_loopback_is_per_socket_while_exempt_and_one_source_without_the_exemption() -> None:
    for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert source_of(CODEC, (host, 1)) != source_of(CODEC, (host, 2))
        assert exempt(CODEC, (host, 1), True)
        assert source_of(CODEC, (host, 1), False) == source_of(CODEC, (host, 2), False)
        assert not exempt(CODEC, (host, 1), False)
    assert source_of(CODEC, ("127.0.0.1", 1), False) != source_of(CODEC, ("127.0.0.2", 1), False)
    assert not exempt(CODEC, ("10.0.0.1", 1), True)


# -- tables ---------------------------------------------------------------------------------


def table(per_key: int = 100, source_per_key: int = 100, per_source: int = 100,
          total: int = 100, max_keys: int | None = None) -> SourceTable[None]:
    return SourceTable(per_key=per_key, source_per_key=source_per_key, per_source=per_source,
                       total=total, max_keys=max_keys)


def test_a_full_table_evicts_the_heaviest_sources_oldest_entry() -> None:
    stats: Counter[str] = Counter()
    t: SourceTable[None] = SourceTable(per_key=100, source_per_key=100, per_source=100,
                                       total=10, name="x", stats=stats)
    for i in range(7):
        t.put(b"k%d" % i, 1, b"heavy", None, 100.0, now=float(i))
    for i in range(3):
        t.put(b"l%d" % i, 1, b"light%d" % i, None, 100.0, now=0.0)
    for i in range(5):  # newcomers from fresh sources: the heavy one pays, oldest first
        assert t.put(b"n%d" % i, 1, b"new%d" % i, None, 100.0, now=10.0) is not None
    assert len(t) == 10 and t.held_by(b"heavy") == 2 and stats["x_displaced"] == 5
    assert [t.get(b"k%d" % i, 1, 10.0) is not None for i in range(7)] == [False] * 5 + [True] * 2
    assert all(t.get(b"l%d" % i, 1, 10.0) for i in range(3))


def test_a_source_over_its_quota_displaces_its_own_oldest_entry() -> None:
    t = table(per_source=3)
    for i in range(3):
        t.put(b"o%d" % i, 1, b"other", None, 100.0, now=0.0)
    for i in range(50):
        t.put(b"k%d" % i, 1, b"flood", None, 100.0, now=float(i))
    assert t.held_by(b"flood") == 3 and t.held_by(b"other") == 3
    assert [e.key for k in (47, 48, 49) for e in t.live(b"k%d" % k, 60.0)] == [b"k47", b"k48", b"k49"]


def test_refuse_over_quota_refuses_and_leaves_nothing() -> None:
    t: SourceTable[None] = SourceTable(per_key=8, source_per_key=8, per_source=2, total=100,
                                       refuse_over_quota=True)
    assert t.put(b"a", 1, b"s", None, 100.0, 0.0) and t.put(b"b", 1, b"s", None, 100.0, 0.0)
    assert t.put(b"c", 1, b"s", None, 100.0, 0.0) is None
    assert t.refused == 1 and t.keys_held == 2 and len(t) == 2
    assert t.put(b"a", 1, b"s", None, 200.0, 0.0) is not None  # a renewal is never refused


def test_a_full_key_displaces_its_heaviest_source_and_a_source_its_own_share() -> None:
    t = table(per_key=4, source_per_key=2)
    t.put(b"k", "a1", b"a", None, 100.0, 0.0)
    t.put(b"k", "a2", b"a", None, 100.0, 1.0)
    t.put(b"k", "a3", b"a", None, 100.0, 2.0)  # a's share of the key is 2: a1 goes
    assert [e.sub for e in t.live(b"k", 3.0)] == ["a2", "a3"]
    t.put(b"k", "b1", b"b", None, 100.0, 3.0)
    t.put(b"k", "c1", b"c", None, 100.0, 4.0)
    t.put(b"k", "d1", b"d", None, 100.0, 5.0)  # full: a (two entries) loses its oldest
    assert [e.sub for e in t.live(b"k", 6.0)] == ["a3", "b1", "c1", "d1"]
    t.put(b"k", "b1", b"b", None, 100.0, 6.0)  # b renews
    t.put(b"k", "e1", b"e", None, 100.0, 7.0)  # a, just displaced, is first among equals
    assert [e.sub for e in t.live(b"k", 8.0)] == ["c1", "d1", "b1", "e1"]
    t.put(b"k", "c1", b"c", None, 100.0, 8.0)  # c and e renew
    t.put(b"k", "e1", b"e", None, 100.0, 8.0)
    t.put(b"k", "f1", b"f", None, 100.0, 9.0)  # equals: the one renewed longest ago goes
    assert [e.sub for e in t.live(b"k", 9.0)] == ["b1", "c1", "e1", "f1"]


def test_new_keys_past_max_keys_drop_the_key_of_the_source_that_created_most() -> None:
    t = table(max_keys=5, per_source=1000, total=1000)
    t.put(b"legit", 1, b"L", None, 100.0, 0.0)
    t.put(b"legit", 2, b"F", None, 100.0, 0.0)  # the flooder joins a key it did not create
    for i in range(10):
        t.put(b"f%d" % i, 1, b"F", None, 100.0, float(i))
    assert t.keys_held == 5 and t.get(b"legit", 1, 10.0) is not None
    assert t.put(b"new", 1, b"N", None, 100.0, 11.0) is not None
    assert t.keys_held == 5 and t.get(b"legit", 1, 11.0) is not None


def test_renewal_keeps_the_source_and_expiry_keeps_the_heap_bounded() -> None:
    t = table()
    t.put(b"k", 1, b"first", None, 60.0, 0.0)
    for i in range(1, 200):
        t.put(b"k", 1, b"other", None, 60.0 + i, float(i))  # renewed by someone else
    assert t.held_by(b"first") == 1 and t.held_by(b"other") == 0
    assert len(t._expiry) <= 2 * len(t) + 64
    t.expire(258.0)
    assert len(t) == 1
    t.expire(259.0)
    assert len(t) == 0 and t.keys_held == 0 and t.held_by(b"first") == 0


def test_random_operations_keep_every_index_consistent() -> None:
    rng = random.Random(5)
    t = table(per_key=5, source_per_key=3, per_source=20, total=60, max_keys=25)
    now = 0.0
    for _ in range(5000):
        now += rng.random()
        key = b"k%d" % rng.randrange(40)
        if rng.random() < 0.1:
            t.remove(key, rng.randrange(8))
        else:
            t.put(key, rng.randrange(8), b"s%d" % rng.randrange(12), None, now + rng.uniform(1, 30), now)
        live = [e for k in list(t._keys) for e in t._keys[k].entries.values()]
        assert len(live) == len(t) <= 60 and t.keys_held <= 25
        assert all(len(k.entries) <= 5 for k in t._keys.values())
        per_source = Counter(e.source for e in live)
        assert all(t.held_by(s) == n <= 20 for s, n in per_source.items())


# -- budgets --------------------------------------------------------------------------------


def test_budget_refills_and_forgets_the_least_recently_seen_source() -> None:
    b = SourceBudget(rate=1.0, burst=3.0, max_sources=100)
    assert [b.allow(b"s", 0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.allow(b"s", 0.5) and b.allow(b"s", 1.5)
    assert b.allow(b"t", 1.5)  # another source has its own bucket
    for i in range(1000):
        b.allow(b"x%d" % i, 2.0)
    assert len(b) == 100  # memory bounded


# -- the cost of an insert into a full store (issue 9 item 2) ---------------------------------


def calls(fn: Callable[[], object]) -> int:
    """Python and C function calls made while ``fn`` runs (an operation count)."""
    n = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal n
        if event == "call" or event == "c_call":
            n += 1

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n


def ip(i: int) -> tuple[str, int]:
    return (f"11.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 6881)


def full_core(size: int, method: bytes) -> DhtProtocol:
    cfg = DhtConfig(max_torrents=size, max_items=size)
    p = DhtProtocol(cfg, rng=random.Random(1), now=0.0)
    for i in range(size):  # one entry per source, as many sources as the store holds
        src = p.responder.source(ip(i))
        if method == b"announce_peer":
            p.peers.add(i.to_bytes(20, "big"), CODEC.pack(ip(i)), src, 0.0)
        else:
            p.items.put(i.to_bytes(20, "big"), ib_item(i), src, 0.0)
    return p


def ib_item(i: int) -> ImmutableItem:
    return ImmutableItem(b"%d:%d" % (len(str(i)), i))


def store_query(p: DhtProtocol, method: bytes, i: int) -> bytes:
    token = p.tokens.issue(CODEC.ip_key(ip(i)))
    if method == b"announce_peer":
        args = {b"id": b"I" * 20, b"info_hash": (10**9 + i).to_bytes(20, "big"), b"port": 1,
                b"token": token}
    else:
        args = {b"id": b"I" * 20, b"v": b"value %d" % i, b"token": token}
    return encode_message(Query(b"t%d" % (i % 10), method, args))


def mean_cost(fns: list[Callable[[], object]]) -> float:
    return sum(calls(fn) for fn in fns) / len(fns)


@pytest.mark.parametrize("method", [b"announce_peer", b"put"])
def test_a_store_into_a_full_store_costs_the_same_at_any_size(method: bytes) -> None:
    # Before: each new info-hash scanned every swarm (min over 10,000 swarms of max over
    # their peers: ~200 ms), and a put ran heapq.nsmallest over every item.
    cost = {}
    for size in (1000, 10_000):
        p = full_core(size, method)
        fresh = range(size + 1, size + 201)  # 200 stores from fresh sources
        cost[size] = mean_cost(
            [partial(p.receive_datagram, store_query(p, method, i), ip(i), 1.0) for i in fresh]
        )
        assert p.stats["errors_sent"] == 0
        store = p.peers if method == b"announce_peer" else p.items
        assert len(store) == size
    assert cost[10_000] <= cost[1000] * 1.1 + 2


def filled(kind: str, size: int, stats: Counter[str]) -> Callable[[int], object]:
    """A store of ``kind`` filled to ``size`` entries, one per source; its insert."""
    if kind == "peers":
        peers = PeerStore(DhtConfig(max_torrents=size, max_peer_entries=size), stats)

        def insert(i: int) -> object:
            peers.add(i.to_bytes(20, "big"), i, b"s%d" % i, 0.0)
            return None
    elif kind == "items":
        items = ItemStore(DhtConfig(max_items=size), stats)

        def insert(i: int) -> object:
            items.put(i.to_bytes(20, "big"), ib_item(i), b"s%d" % i, 0.0)
            return None
    elif kind == "inbox":
        inbox = ib.InboxStore(stats)
        inbox.values_table.total = size

        def insert(i: int) -> object:
            return inbox.post(i.to_bytes(20, "big"), b"v", b"s%d" % i, 0.0)
    else:
        listeners = ListenerTable(total=size, stats=stats)

        def insert(i: int) -> object:
            return listeners.listen(i.to_bytes(20, "big"), i, b"s%d" % i, 60, 0.0)
    for i in range(size):
        insert(i)
    return insert


@pytest.mark.parametrize("kind", ["peers", "items", "inbox", "listeners"])
def test_every_store_inserts_into_a_full_table_at_constant_cost(kind: str) -> None:
    cost = {}
    for size in (500, 5000):
        stats: Counter[str] = Counter()
        insert = filled(kind, size, stats)
        cost[size] = mean_cost([partial(insert, i) for i in range(size, size + 300)])
        assert sum(v for k, v in stats.items() if k.endswith("_displaced")) == 300
    assert cost[5000] <= cost[500] * 1.1 + 2
