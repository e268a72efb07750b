"""Interop tests: hailing's DhtNode against libtorrent's DHT (PyPI ``libtorrent`` 2.x).

Everything runs on 127.0.0.1; the libtorrent sessions have no bootstrap routers (see
conftest.py). Each direction of each feature is tested: hailing as client with libtorrent as
server, and the reverse. libtorrent-side packet captures (``dht_pkt_alert``) are used to
check that hailing answered libtorrent's queries with replies rather than KRPC errors.

Expected values are computed independently of hailing (hashlib, PyNaCl, libtorrent's own
bencoder), never by calling hailing's helpers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

lt = pytest.importorskip("libtorrent", reason="libtorrent Python bindings are not installed")

from nacl.signing import SigningKey, VerifyKey  # noqa: E402

from hailing.node import DhtNode  # noqa: E402

pytestmark = pytest.mark.interop

LOOPBACK = "127.0.0.1"
OP_TIMEOUT = 10.0  # one hailing operation / one libtorrent lookup round
STEP_DEADLINE = 15.0  # retrying a lookup until it sees the expected data


async def hop(coro: Any, timeout: float = OP_TIMEOUT) -> Any:
    """Await a hailing coroutine with a timeout, so a hang fails the test instead."""
    return await asyncio.wait_for(coro, timeout)


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def new_node(*bootstrap: tuple[str, int]) -> DhtNode:
    return DhtNode(bind=(LOOPBACK, 0), data_dir=None, bootstrap=list(bootstrap), config=None)


def as_addr(addr: Any) -> tuple[str, int]:
    host, port = addr
    return (str(host), int(port))


async def lt_knows(ltkit: Any, ses: Any, node_id: bytes, addr: tuple[str, int]) -> bool:
    """Poll until ``ses``'s routing table has (node_id, addr); return True or fail."""
    deadline = time.monotonic() + STEP_DEADLINE
    table: list[Any] = []
    while time.monotonic() < deadline:
        table = await ltkit.lt_live_nodes(ses)
        if (node_id, addr) in table:
            return True
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"libtorrent's routing table never contained hailing {node_id.hex()} at {addr}; "
        f"it has {[(i.hex(), a) for i, a in table]}"
    )


def assert_no_krpc_errors(ltkit: Any, sessions: list[Any], addr: tuple[str, int]) -> None:
    """No KRPC error in either direction between any libtorrent session and ``addr``."""
    for ses in sessions:
        errors = ltkit.krpc_errors(ses, addr)
        assert not errors, (
            "KRPC errors between libtorrent and hailing "
            "(outgoing=True: libtorrent rejected a hailing query): "
            + repr([(p.outgoing, p.msg) for p in errors])
        )


def served(
    ltkit: Any, sessions: list[Any], addr: tuple[str, int], query: bytes, check: Any
) -> bool:
    """Did hailing (``addr``) answer a libtorrent ``query`` with a reply whose ``r`` passes
    ``check``? (From libtorrent's packet log: what libtorrent actually received.)"""
    for ses in sessions:
        for p in ltkit.replies_to(ses, addr, query):
            r = p.get(b"r")
            if isinstance(r, dict) and check(r):
                return True
    return False


def accepted(
    ltkit: Any, sessions: list[Any], addr: tuple[str, int], query: bytes, check: Any
) -> bool:
    """Did libtorrent accept (reply y=r to) a hailing ``query`` whose ``a`` passes ``check``?"""
    for ses in sessions:
        for p in ltkit.queries_from(ses, addr, query):
            a = p.get(b"a")
            if isinstance(a, dict) and check(a):
                return True
    return False


def compact_peer(peer: tuple[str, int]) -> bytes:
    return socket.inet_aton(peer[0]) + peer[1].to_bytes(2, "big")


def has_compact_peer(values: Any, peer: tuple[str, int]) -> bool:
    want = compact_peer(peer)
    if not isinstance(values, list):
        return False
    return any(
        isinstance(v, bytes) and want in [v[i : i + 6] for i in range(0, len(v) - 5, 6)]
        for v in values
    )


async def wait_served(
    ltkit: Any,
    ses: Any,
    addr: tuple[str, int],
    query: bytes,
    check: Any,
    lookup: Any,
    what: str,
) -> None:
    """Run the libtorrent ``lookup`` (every 2 s) until hailing served ``query`` per ``check``."""
    deadline = time.monotonic() + STEP_DEADLINE
    while time.monotonic() < deadline:
        lookup()
        try:
            await ltkit.wait_for(
                lambda: served(ltkit, [ses], addr, query, check), timeout=2.0, what=what
            )
            return
        except AssertionError:
            continue
    replies = [p.msg for p in ltkit.replies_to(ses, addr, query)]
    raise AssertionError(f"hailing never served {what}; its {query!r} replies: {replies!r}")


# --------------------------------------------------------------------------- network


@dataclass
class Net:
    node: DhtNode
    a: Any  # libtorrent session
    b: Any  # libtorrent session


@pytest.fixture
async def net(lt_session: Any, ltkit: Any) -> AsyncIterator[Net]:
    """1 hailing node + 2 libtorrent sessions that all know each other."""
    a = lt_session()
    b = lt_session()
    a_addr, b_addr = ltkit.lt_addr(a), ltkit.lt_addr(b)
    a.add_dht_node(b_addr)
    b.add_dht_node(a_addr)
    node = new_node(a_addr, b_addr)
    await hop(node.start())
    try:
        addr = as_addr(node.address)
        a.add_dht_node(addr)
        b.add_dht_node(addr)
        n = await hop(node.bootstrap())
        assert n >= 2, f"hailing bootstrapped with {n} nodes, expected both libtorrent sessions"
        await lt_knows(ltkit, a, node.node_id, addr)
        await lt_knows(ltkit, b, node.node_id, addr)
        yield Net(node, a, b)
    finally:
        await hop(node.stop())


# --------------------------------------------------------------------------- libtorrent lookups (retrying)


async def lt_get_immutable(ltkit: Any, ses: Any, target: bytes) -> Any:
    deadline = time.monotonic() + STEP_DEADLINE
    while True:
        ses.dht_get_immutable_item(lt.sha1_hash(target))
        a = await ltkit.wait_alert(
            ses, lt.dht_immutable_item_alert, lambda a: a.target == target, OP_TIMEOUT
        )
        # libtorrent reports "not found" as an empty entry (b"" in Python)
        if a.item not in (b"", None) or time.monotonic() >= deadline:
            return a
        await asyncio.sleep(0.2)


async def lt_get_mutable(ltkit: Any, ses: Any, pk: bytes, salt: bytes, min_seq: int) -> Any:
    deadline = time.monotonic() + STEP_DEADLINE
    while True:
        ses.dht_get_mutable_item(pk, salt)
        a = await ltkit.wait_alert(
            ses,
            lt.dht_mutable_item_alert,
            lambda a: a.key == pk and a.salt == salt and a.authoritative,
            OP_TIMEOUT,
        )
        if (a.item not in (b"", None) and a.seq >= min_seq) or time.monotonic() >= deadline:
            return a
        await asyncio.sleep(0.2)


async def lt_find_peer(ltkit: Any, ses: Any, info_hash: bytes, peer: tuple[str, int]) -> Any:
    """Repeat libtorrent get_peers lookups until ``peer`` is reported; return the alert."""
    deadline = time.monotonic() + STEP_DEADLINE
    seen: list[Any] = []
    while time.monotonic() < deadline:
        ses.dht_get_peers(lt.sha1_hash(info_hash))
        # a reply alert is posted per response carrying values; none if nobody has peers
        a = await ltkit.poll_alert(
            ses,
            lt.dht_get_peers_reply_alert,
            lambda a: a.info_hash == info_hash and peer in [tuple(p) for p in a.peers],
            2.0,
        )
        if a is not None:
            return a
        ltkit.drain(ses)
        seen = [x.peers for x in ltkit.state(ses).buffer if x.name == "dht_get_peers_reply_alert"]
    raise AssertionError(f"libtorrent get_peers never returned {peer}; replies seen: {seen}")


async def hailing_retry(fn: Any, ok: Any) -> Any:
    """Call the hailing coroutine function ``fn`` until ``ok(result)`` or the deadline."""
    deadline = time.monotonic() + STEP_DEADLINE
    while True:
        result = await hop(fn())
        if ok(result) or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- 1. bootstrap


async def test_bootstrap_each_other(lt_session: Any, ltkit: Any) -> None:
    ses = lt_session()
    lt_addr = ltkit.lt_addr(ses)
    lt_id = ltkit.lt_node_id(ses)
    async with new_node(lt_addr) as node:
        addr = as_addr(node.address)
        assert addr[0] == LOOPBACK and addr[1] > 0
        assert len(node.node_id) == 20
        assert node.node_id != lt_id

        ses.add_dht_node(addr)
        n = await hop(node.bootstrap())
        assert n >= 1, "hailing's routing table is empty after bootstrapping off libtorrent"

        # hailing -> libtorrent: ping answers with libtorrent's id, lookups find it
        assert await hop(node.ping(lt_addr)) == lt_id
        found = await hop(node.find_node(lt_id))
        assert (lt_id, lt_addr) in [(i.id, as_addr(i.addr)) for i in found], (
            f"hailing find_node did not return libtorrent's node: {found!r}"
        )

        # libtorrent -> hailing: hailing's node is in libtorrent's routing table
        await lt_knows(ltkit, ses, node.node_id, addr)
        ses.post_dht_stats()
        stats = await ltkit.wait_alert(ses, lt.dht_stats_alert, timeout=OP_TIMEOUT)
        assert sum(b["num_nodes"] for b in stats.routing_table) >= 1

        if ltkit.packet_log_available(ses):
            pkts = ltkit.packets_with(ses, addr)
            assert any(not p.outgoing and p.get(b"y") == b"r" for p in pkts), (
                "libtorrent never received a reply from hailing"
            )
            assert any(not p.outgoing and p.get(b"y") == b"q" for p in pkts), (
                "libtorrent never received a query from hailing"
            )
        assert_no_krpc_errors(ltkit, [ses], addr)


# --------------------------------------------------------------------------- 2. immutable


async def test_immutable_hailing_put_libtorrent_get(net: Net, ltkit: Any) -> None:
    value = [b"hailing", 42, {b"k": b"v", b"nonce": os.urandom(8)}]
    target = await hop(net.node.put(value))
    assert target == sha1(lt.bencode(value))

    addr = as_addr(net.node.address)
    if ltkit.packet_log_available(net.a):
        await ltkit.wait_for(
            lambda: accepted(ltkit, [net.a, net.b], addr, b"put", lambda a: a.get(b"v") == value),
            timeout=3.0,
            what="a libtorrent node accepting hailing's immutable put",
        )

    got = await lt_get_immutable(ltkit, net.b, target)
    assert got.target == target
    assert got.item == value
    assert_no_krpc_errors(ltkit, [net.a, net.b], addr)


async def test_immutable_libtorrent_put_hailing_get(net: Net, ltkit: Any) -> None:
    value = {b"from": b"libtorrent", b"n": 7, b"nonce": os.urandom(8)}
    target = net.a.dht_put_immutable_item(value).to_bytes()
    assert target == sha1(lt.bencode(value))
    put = await ltkit.wait_alert(net.a, lt.dht_put_alert, lambda a: a.target == target, OP_TIMEOUT)
    assert put.num_success >= 1

    addr = as_addr(net.node.address)
    if ltkit.packet_log_available(net.a):
        assert ltkit.replies_to(net.a, addr, b"put"), "hailing did not reply to libtorrent's put"

    got = await hailing_retry(lambda: net.node.get(target), lambda v: v is not None)
    assert got == value

    # hailing stored libtorrent's item and serves it to another libtorrent node
    if ltkit.packet_log_available(net.b):
        await wait_served(
            ltkit,
            net.b,
            addr,
            b"get",
            lambda r: r.get(b"v") == value,
            lambda: net.b.dht_get_immutable_item(lt.sha1_hash(target)),
            "the immutable item to libtorrent's get",
        )
    assert_no_krpc_errors(ltkit, [net.a, net.b], addr)


# --------------------------------------------------------------------------- 3. mutable (salted)


async def test_mutable_libtorrent_put_hailing_get(net: Net, ltkit: Any) -> None:
    seed = os.urandom(32)
    signing = SigningKey(seed)
    pk = bytes(signing.verify_key)
    salt = b"interop-salt-" + os.urandom(4).hex().encode()
    addr = as_addr(net.node.address)

    for expected_seq, data in ((1, b"first value from libtorrent"), (2, b"second value")):
        # the binding stores `data` as a bencoded string and uses seq = network seq + 1
        net.a.dht_put_mutable_item(ltkit.lt_secret_key(seed), pk, data, salt)
        put = await ltkit.wait_alert(
            net.a,
            lt.dht_put_alert,
            lambda a, s=expected_seq: a.public_key == pk and a.salt == salt and a.seq == s,
            OP_TIMEOUT,
        )
        assert put.num_success >= 1
        expected_sig = signing.sign(
            ltkit.bep44_signed_bytes(salt, expected_seq, lt.bencode(data))
        ).signature
        assert put.signature == expected_sig  # RFC 8032 signatures are deterministic

        item = await hailing_retry(
            lambda: net.node.get_mutable(pk, salt=salt),
            lambda it, s=expected_seq: it is not None and it.seq >= s,
        )
        assert item is not None, "hailing get_mutable found nothing"
        assert item.value == data
        assert item.seq == expected_seq
        assert item.pubkey == pk
        assert item.salt == salt
        assert item.sig == expected_sig

        # hailing stored it and serves it, correctly formed, to another libtorrent node
        if ltkit.packet_log_available(net.b):
            await wait_served(
                ltkit,
                net.b,
                addr,
                b"get",
                lambda r, s=expected_seq, d=data, g=expected_sig: (
                    r.get(b"k") == pk
                    and r.get(b"seq") == s
                    and r.get(b"v") == d
                    and r.get(b"sig") == g
                ),
                lambda: net.b.dht_get_mutable_item(pk, salt),
                f"mutable item seq={expected_seq} to libtorrent's get",
            )

    if ltkit.packet_log_available(net.a):
        assert ltkit.replies_to(net.a, addr, b"put"), "hailing did not reply to libtorrent's put"
    assert_no_krpc_errors(ltkit, [net.a, net.b], addr)


async def test_mutable_hailing_put_libtorrent_get(net: Net, ltkit: Any) -> None:
    seed = os.urandom(32)
    signing = SigningKey(seed)
    pk = bytes(signing.verify_key)
    salt = b"hailing-salt-" + os.urandom(4).hex().encode()
    addr = as_addr(net.node.address)

    for expected_seq, value in (
        (1, {b"msg": b"hello from hailing", b"n": 1}),
        (2, {b"msg": b"updated", b"n": 2}),
    ):
        target = await hop(net.node.put_mutable(seed, value, salt=salt))  # seq=None
        assert target == sha1(pk + salt)
        signed = ltkit.bep44_signed_bytes(salt, expected_seq, lt.bencode(value))
        expected_sig = signing.sign(signed).signature
        if ltkit.packet_log_available(net.a):
            await ltkit.wait_for(
                lambda s=expected_seq, v=value, g=expected_sig: accepted(
                    ltkit,
                    [net.a, net.b],
                    addr,
                    b"put",
                    lambda a: (
                        a.get(b"k") == pk
                        and a.get(b"salt") == salt
                        and a.get(b"seq") == s
                        and a.get(b"v") == v
                        and a.get(b"sig") == g
                    ),
                ),
                timeout=3.0,
                what=f"a libtorrent node accepting hailing's mutable put seq={expected_seq}",
            )

        got = await lt_get_mutable(ltkit, net.b, pk, salt, expected_seq)
        assert got.authoritative
        assert got.item == value
        assert got.seq == expected_seq, "seq=None must be one more than what the network has"
        assert got.key == pk
        assert got.salt == salt
        VerifyKey(pk).verify(signed, bytes(got.signature))
        assert bytes(got.signature) == expected_sig

    assert_no_krpc_errors(ltkit, [net.a, net.b], addr)


# --------------------------------------------------------------------------- 4. peers


async def test_libtorrent_announce_hailing_get_peers(net: Net, ltkit: Any) -> None:
    info_hash = os.urandom(20)
    port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
    addr = as_addr(net.node.address)
    net.a.dht_announce(lt.sha1_hash(info_hash), port, 0)

    if ltkit.packet_log_available(net.a):
        await ltkit.wait_for(
            lambda: ltkit.replies_to(net.a, addr, b"announce_peer"),
            timeout=STEP_DEADLINE,
            what="hailing's reply to libtorrent's announce_peer",
        )

    peers = await hailing_retry(
        lambda: net.node.get_peers(info_hash),
        lambda ps: (LOOPBACK, port) in [as_addr(p) for p in ps],
    )
    assert (LOOPBACK, port) in [as_addr(p) for p in peers], f"hailing get_peers: {peers!r}"

    # hailing stored the peer and serves it to another libtorrent node
    if ltkit.packet_log_available(net.b):
        await wait_served(
            ltkit,
            net.b,
            addr,
            b"get_peers",
            lambda r: has_compact_peer(r.get(b"values"), (LOOPBACK, port)) and b"token" in r,
            lambda: net.b.dht_get_peers(lt.sha1_hash(info_hash)),
            "the announced peer to libtorrent's get_peers",
        )
    assert_no_krpc_errors(ltkit, [net.a, net.b], addr)


async def test_hailing_announce_libtorrent_get_peers(net: Net, ltkit: Any) -> None:
    info_hash = os.urandom(20)
    port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
    addr = as_addr(net.node.address)

    n_accepted = await hop(net.node.announce(info_hash, port))
    assert n_accepted >= 1, "hailing reports no node accepted its announce_peer"
    if ltkit.packet_log_available(net.a):
        await ltkit.wait_for(
            lambda: accepted(
                ltkit,
                [net.a, net.b],
                addr,
                b"announce_peer",
                lambda a: (
                    a.get(b"info_hash") == info_hash
                    and a.get(b"port") == port
                    and not a.get(b"implied_port")
                ),
            ),
            timeout=3.0,
            what="a libtorrent node accepting hailing's announce_peer with an explicit port",
        )

    reply = await lt_find_peer(ltkit, net.b, info_hash, (LOOPBACK, port))
    assert reply.num_peers >= 1
    assert_no_krpc_errors(ltkit, [net.a, net.b], addr)
