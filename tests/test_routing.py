"""Routing table: splitting, closest(), replacement cache, ping-before-evict, failures."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing.dht.ids import ID_BITS, distance, id_to_int, int_to_id
from hailing.dht.routing import RoutingTable

OWN = bytes(20)  # 000...0: an id sharing i leading bits with OWN has its top set bit at 159-i


def with_cpl(cpl: int, low: int = 0, own: bytes = OWN) -> bytes:
    """An id sharing exactly ``cpl`` leading bits with ``own`` (``low`` fills the tail)."""
    bit = ID_BITS - 1 - cpl
    v = id_to_int(own) ^ (1 << bit)
    v = (v >> bit << bit) | (low & ((1 << bit) - 1))
    return int_to_id(v)


def addr(n: int) -> tuple[str, int]:
    return (f"10.1.{n // 250}.{n % 250 + 1}", 6881)


def check_invariants(t: RoutingTable) -> None:
    seen = 0
    for i, b in enumerate(t.buckets):
        assert len(b.nodes) <= t.k
        for e in b.nodes + b.replacements:
            assert t.bucket_index(e.id_int) == i, (i, e.id.hex())
        for e in b.nodes:
            assert t.get(e.id) is e
        seen += len(b.nodes)
    assert seen == len(t) == len(list(t))


def test_with_cpl_helper() -> None:
    for cpl in (0, 1, 7, 8, 100, 159):
        nid = with_cpl(cpl, low=2**160 - 1)
        assert ID_BITS - distance(nid, OWN).bit_length() == cpl


# -- bucket_index and splitting -----------------------------------------------------------


def test_single_bucket_holds_everything() -> None:
    t = RoutingTable(OWN, k=8)
    assert len(t.buckets) == 1
    for cpl in (0, 5, 159):
        assert t.bucket_index(id_to_int(with_cpl(cpl))) == 0
    assert t.bucket_index(id_to_int(OWN)) == 0


def test_bucket_splits_only_when_our_bucket_overflows() -> None:
    t = RoutingTable(OWN, k=8)
    far = [with_cpl(0, low=i) for i in range(8)]
    for i, nid in enumerate(far):
        assert t.add(nid, addr(i), 0.0) is None
    assert len(t.buckets) == 1 and len(t) == 8
    # a 9th node: the only bucket is full and contains our id, so it splits
    near = with_cpl(1)
    assert t.add(near, addr(8), 0.0) is None
    assert len(t.buckets) == 2
    assert [e.id for e in t.buckets[0].nodes] == far
    assert [e.id for e in t.buckets[1].nodes] == [near]
    # bucket 0 is full and does not contain our id: no split, the newcomer waits
    assert t.add(with_cpl(0, low=99), addr(9), 0.0) is None
    assert len(t.buckets) == 2 and len(t) == 9
    assert [e.id for e in t.buckets[0].replacements] == [with_cpl(0, low=99)]
    check_invariants(t)


def test_split_repeats_until_nodes_separate() -> None:
    t = RoutingTable(OWN, k=8)
    # eight nodes sharing 5 bits with us, then one sharing 6: five splits in one add
    for i in range(8):
        t.add(with_cpl(5, low=i), addr(i), 0.0)
    t.add(with_cpl(6), addr(8), 0.0)
    assert len(t.buckets) == 7
    assert [len(b.nodes) for b in t.buckets] == [0, 0, 0, 0, 0, 8, 1]
    check_invariants(t)


def test_bucket_index_caps_at_last_bucket() -> None:
    t = RoutingTable(OWN, k=1)
    for cpl in range(10):
        t.add(with_cpl(cpl), addr(cpl), 0.0)
    assert len(t.buckets) == 10
    for cpl in range(40):
        assert t.bucket_index(id_to_int(with_cpl(cpl))) == min(cpl, 9)
    check_invariants(t)


def test_table_depth_is_bounded() -> None:
    t = RoutingTable(OWN, k=1)
    for cpl in range(ID_BITS):
        t.add(with_cpl(cpl), addr(cpl), 0.0)
    assert len(t.buckets) == ID_BITS
    assert len(t) == ID_BITS
    check_invariants(t)


def test_own_id_is_never_added() -> None:
    t = RoutingTable(OWN)
    assert t.add(OWN, addr(0), 0.0) is None
    assert len(t) == 0 and t.get(OWN) is None


@settings(max_examples=50)
@given(st.binary(min_size=20, max_size=20), st.lists(st.binary(min_size=20, max_size=20), max_size=150))
def test_invariants_hold_for_random_ids(own: bytes, ids: list[bytes]) -> None:
    t = RoutingTable(own, k=4, replacement_cache=3)
    for i, nid in enumerate(ids):
        t.add(nid, addr(i), float(i))
    check_invariants(t)
    assert len(t) <= len(set(ids) - {own})


# -- closest() ----------------------------------------------------------------------------


@settings(max_examples=80)
@given(
    st.binary(min_size=20, max_size=20),
    st.lists(st.binary(min_size=20, max_size=20), max_size=200, unique=True),
    st.binary(min_size=20, max_size=20),
    st.integers(1, 40),
    st.integers(1, 8),
)
def test_closest_equals_brute_force(own: bytes, ids: list[bytes], target: bytes, count: int, k: int) -> None:
    t = RoutingTable(own, k=k)
    for i, nid in enumerate(ids):
        t.add(nid, addr(i), 0.0)
    table_ids = [e.id for e in t]
    expected = sorted(table_ids, key=lambda n: distance(n, target))[:count]
    assert [e.id for e in t.closest(target, count)] == expected
    assert [e.id for e in t.closest(target)] == sorted(table_ids, key=lambda n: distance(n, target))[:k]


def test_closest_with_clustered_ids() -> None:
    # ids close to our own id fill many buckets; targets near and far from us
    rng = random.Random(7)
    own = int_to_id(rng.getrandbits(160))
    t = RoutingTable(own, k=8)
    for i in range(400):
        cpl = rng.randrange(0, 30)
        t.add(with_cpl(cpl, low=rng.getrandbits(160), own=own), addr(i), 0.0)
    assert len(t.buckets) > 10
    everyone = [e.id for e in t]
    for target in [own, with_cpl(3, own=own), with_cpl(25, own=own), int_to_id(rng.getrandbits(160))]:
        for count in (1, 8, 20, 1000):
            expected = sorted(everyone, key=lambda n: distance(n, target))[:count]
            assert [e.id for e in t.closest(target, count)] == expected


# -- replacement cache, ping-before-evict, failures ---------------------------------------


def full_far_bucket(questionable_after: float = 900.0, **kw: int) -> RoutingTable:
    """A table whose bucket 0 holds 8 nodes (added at t=0..7) and cannot split."""
    t = RoutingTable(OWN, k=8, questionable_after=questionable_after, **kw)
    for i in range(8):
        t.add(with_cpl(0, low=i), addr(i), float(i))
    t.add(with_cpl(1), addr(100), 0.0)  # forces the split: bucket 0 is no longer ours
    assert len(t.buckets) == 2 and len(t.buckets[0].nodes) == 8
    return t


def test_replacement_cache_is_bounded_and_keeps_the_freshest() -> None:
    t = full_far_bucket(replacement_cache=3)
    for i in range(10, 15):
        assert t.add(with_cpl(0, low=i), addr(i), 10.0) is None
    b = t.buckets[0]
    assert [e.id for e in b.replacements] == [with_cpl(0, low=i) for i in (12, 13, 14)]
    # seeing a waiting node again moves it to the fresh end
    t.add(with_cpl(0, low=12), addr(12), 11.0)
    assert [e.id for e in b.replacements] == [with_cpl(0, low=i) for i in (13, 14, 12)]
    assert len(t) == 9
    assert all(t.get(e.id) is None for e in b.replacements)


def test_ping_before_evict_only_when_questionable() -> None:
    t = full_far_bucket(questionable_after=900.0)
    b = t.buckets[0]
    # everyone was seen recently: nothing to ping
    assert t.add(with_cpl(0, low=50), addr(50), 899.0) is None
    # node 0 (seen at t=0) is questionable at t=900: it is returned for a ping
    stale = t.add(with_cpl(0, low=51), addr(51), 900.0)
    assert stale is not None and stale.id == with_cpl(0, low=0) and stale.addr == addr(0)
    # the newcomer waits; nobody was evicted
    assert t.get(with_cpl(0, low=51)) is None and len(b.nodes) == 8
    # node 0 answers the ping: now node 1 is the stalest
    t.add(with_cpl(0, low=0), addr(0), 901.0)
    assert b.nodes[-1].id == with_cpl(0, low=0)
    stale = t.add(with_cpl(0, low=52), addr(52), 902.0)
    assert stale is not None and stale.id == with_cpl(0, low=1)


def test_failed_removes_after_max_fail_count_and_promotes_freshest_replacement() -> None:
    t = full_far_bucket()
    b = t.buckets[0]
    t.add(with_cpl(0, low=20), addr(20), 5.0)
    t.add(with_cpl(0, low=21), addr(21), 6.0)
    victim = with_cpl(0, low=3)
    t.failed(victim, addr(3))
    assert t.get(victim) is not None and t.get(victim).fail_count == 1  # type: ignore[union-attr]
    t.failed(victim, addr(999))  # another address: not the node we know
    assert t.get(victim).fail_count == 1  # type: ignore[union-attr]
    t.failed(victim, addr(3))
    assert t.get(victim) is None
    assert t.get(with_cpl(0, low=21)) is not None  # the freshest replacement took the slot
    assert [e.id for e in b.replacements] == [with_cpl(0, low=20)]
    assert len(b.nodes) == 8
    check_invariants(t)


def test_failed_without_replacements_just_removes() -> None:
    t = RoutingTable(OWN, max_fail_count=1)
    t.add(with_cpl(0), addr(0), 0.0)
    t.failed(with_cpl(0), addr(0))
    assert len(t) == 0
    t.failed(with_cpl(0), addr(0))  # unknown node: ignored
    assert len(t) == 0


def test_a_success_resets_the_fail_count() -> None:
    t = RoutingTable(OWN, max_fail_count=2)
    t.add(with_cpl(0), addr(0), 0.0)
    t.failed(with_cpl(0), addr(0))
    t.add(with_cpl(0), addr(0), 1.0, rtt=0.1)
    t.failed(with_cpl(0), addr(0))
    e = t.get(with_cpl(0))
    assert e is not None and e.fail_count == 1 and e.rtt == 0.1


def test_newcomer_replaces_a_failed_node_at_once() -> None:
    t = full_far_bucket()
    b = t.buckets[0]
    t.add(with_cpl(0, low=30), addr(30), 8.0)  # waits in the cache
    t.failed(with_cpl(0, low=5), addr(5))  # one timeout: not yet removed
    assert len(b.nodes) == 8
    newcomer = with_cpl(0, low=31)
    assert t.add(newcomer, addr(31), 9.0) is None
    assert t.get(with_cpl(0, low=5)) is None
    assert t.get(newcomer) is not None and t.get(newcomer).addr == addr(31)  # type: ignore[union-attr]
    assert [e.id for e in b.replacements] == [with_cpl(0, low=30)]
    assert len(b.nodes) == 8
    check_invariants(t)


def test_same_id_from_new_address_is_ignored_while_the_old_one_works() -> None:
    t = RoutingTable(OWN)
    nid = with_cpl(0)
    t.add(nid, addr(1), 0.0)
    t.add(nid, addr(2), 5.0)
    e = t.get(nid)
    assert e is not None and e.addr == addr(1) and e.last_seen == 0.0
    # once the old address has failed, the new one takes over
    t.failed(nid, addr(1))
    t.add(nid, addr(2), 6.0)
    e = t.get(nid)
    assert e is not None and e.addr == addr(2) and e.fail_count == 0 and e.last_seen == 6.0
    assert len(t) == 1


def test_remove_promotes_a_replacement() -> None:
    t = full_far_bucket()
    t.add(with_cpl(0, low=40), addr(40), 1.0)
    t.remove(with_cpl(0, low=2))
    assert t.get(with_cpl(0, low=2)) is None
    assert t.get(with_cpl(0, low=40)) is not None
    t.remove(b"\x01" * 20)  # unknown: no-op
    check_invariants(t)


def test_rtt_is_smoothed() -> None:
    t = RoutingTable(OWN)
    t.add(with_cpl(0), addr(0), 0.0, rtt=1.0)
    t.add(with_cpl(0), addr(0), 1.0, rtt=2.0)
    e = t.get(with_cpl(0))
    assert e is not None and e.rtt == pytest.approx(1.2)


def test_stale_buckets_and_refresh() -> None:
    t = full_far_bucket()
    # bucket 0 last changed when node 7 joined (t=7), bucket 1 when its node joined (t=0)
    assert [b.last_changed for b in t.buckets] == [7.0, 0.0]
    assert t.stale_buckets(899.0, 900.0) == []
    assert t.stale_buckets(900.0, 900.0) == [1]
    assert t.stale_buckets(907.0, 900.0) == [0, 1]
    t.touch_bucket(1, 500.0)
    assert t.stale_buckets(1000.0, 900.0) == [0]
    # BEP5: a node of the bucket being heard from again makes the bucket fresh
    t.add(with_cpl(0, low=4), addr(4), 950.0)
    assert t.stale_buckets(1000.0, 900.0) == []


# -- random_id_in_bucket ------------------------------------------------------------------


def deep_table(own: bytes, depth: int) -> RoutingTable:
    t = RoutingTable(own, k=2)
    for cpl in range(depth):
        t.add(with_cpl(cpl, low=1, own=own), addr(2 * cpl), 0.0)
        t.add(with_cpl(cpl, low=2, own=own), addr(2 * cpl + 1), 0.0)
    return t


@pytest.mark.parametrize("depth", [0, 1, 2, 30, ID_BITS])
def test_random_id_lands_in_every_bucket(depth: int) -> None:
    rng = random.Random(depth)
    own = int_to_id(rng.getrandbits(160))
    t = deep_table(own, depth)
    if depth > 2:
        assert len(t.buckets) >= depth - 1
    for index in range(len(t.buckets)):
        for bits in (0, 2**160 - 1, rng.getrandbits(160), rng.getrandbits(160)):
            nid = t.random_id_in_bucket(index, bits)
            assert len(nid) == 20
            assert t.bucket_index(id_to_int(nid)) == index


@given(st.binary(min_size=20, max_size=20), st.integers(0, 2**160 - 1), st.integers(0, 40))
def test_random_id_in_bucket_property(own: bytes, bits: int, depth: int) -> None:
    t = deep_table(own, depth)
    index = bits % len(t.buckets)
    assert t.bucket_index(id_to_int(t.random_id_in_bucket(index, bits))) == index


def test_random_id_uses_the_random_bits() -> None:
    t = deep_table(OWN, 10)
    ids = {t.random_id_in_bucket(3, b) for b in (0, 1, 2**100, 2**155 - 1)}
    assert len(ids) == 4
