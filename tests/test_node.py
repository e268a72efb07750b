"""DhtNode over real UDP on 127.0.0.1 (OS-chosen ports only): lifecycle, a loopback
testnet, persistence in a data directory, and garbage from a raw socket."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hailing import bencode
from hailing.dht import DhtConfig
from hailing.dht.bep44 import mutable_target, public_key
from hailing.dht.ids import distance
from hailing.errors import (
    LocalProtocolError,
    QueryTimeout,
    RemoteProtocolError,
)
from hailing.node import DhtNode
from hailing.testnet import testnet as running_testnet
from hailing.transport import _ingress
from hailing.transport._ingress import SourceRateLimiter
from hailing.transport.udp import RECV_BUFFER

LOCAL = ("127.0.0.1", 0)
#: Short timeouts so that unanswered queries fail fast in tests.
FAST = DhtConfig(query_timeout=0.5, max_soft_timeout=0.25, maintenance_interval=0.2)


def closed_port() -> int:
    """A UDP port on 127.0.0.1 that was just bound by us and closed (nobody listens)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(LOCAL)
        port: int = s.getsockname()[1]
    finally:
        s.close()
    return port


@pytest.fixture
async def net() -> AsyncIterator[list[DhtNode]]:
    async with running_testnet(16) as nodes:
        yield nodes


# -- lifecycle ---------------------------------------------------------------------------


async def test_start_stop_leaves_no_tasks_and_stop_is_idempotent() -> None:
    before = asyncio.all_tasks()
    node = DhtNode(LOCAL)
    await node.start()
    assert node.running
    host, port = node.address
    assert host == "127.0.0.1" and port != 0
    other = DhtNode(LOCAL)
    async with other:
        assert await other.ping(node.address) == node.node_id
    await node.stop()
    await node.stop()  # idempotent
    assert not node.running
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
    with pytest.raises(LocalProtocolError):
        await node.ping(other.address)


async def test_start_twice_is_refused() -> None:
    async with DhtNode(LOCAL) as node:
        with pytest.raises(LocalProtocolError):
            await node.start()


async def test_restarted_instance_still_times_out_queries() -> None:
    # After stop()/start() of the same object the timer must be armed again.
    node = DhtNode(LOCAL, config=FAST)
    await node.start()
    await node.stop()
    await asyncio.sleep(0.3)  # the old timer deadline is now in the past
    await node.start()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(QueryTimeout):
                await node.ping(("127.0.0.1", closed_port()))
    finally:
        await node.stop()


async def test_ping_closed_port_raises_query_timeout() -> None:
    port = closed_port()
    async with DhtNode(LOCAL, config=FAST) as node:
        async with asyncio.timeout(5):
            with pytest.raises(QueryTimeout):
                await node.ping(("127.0.0.1", port))
        assert node.stats["timeouts"] >= 1


# -- testnet -----------------------------------------------------------------------------


async def test_ping_returns_the_right_id(net: list[DhtNode]) -> None:
    assert await net[0].ping(net[7].address) == net[7].node_id
    assert await net[7].ping(net[0].address) == net[0].node_id


async def test_find_node_returns_k_closest(net: list[DhtNode]) -> None:
    target = os.urandom(20)
    asker = net[3]
    found = await asker.find_node(target)
    k = asker.config.k
    assert len(found) == k
    ids = [n.id for n in found]
    assert len(set(ids)) == k
    by_id = {n.node_id: n for n in net}
    for info in found:
        assert by_id[info.id].address == info.addr
    assert ids == sorted(ids, key=lambda i: distance(i, target))
    others = sorted((n.node_id for n in net if n is not asker), key=lambda i: distance(i, target))
    assert ids == others[:k]


async def test_put_get_immutable(net: list[DhtNode]) -> None:
    target = await net[1].put(b"hello loopback")
    assert target == hashlib.sha1(b"14:hello loopback").digest()
    assert await net[-1].get(target) == b"hello loopback"
    value = {b"list": [1, b"two"], b"n": -3}
    t2 = await net[5].put(value)
    assert await net[9].get(t2) == value
    report = await net[2].put_report(b"report")
    assert report.stored > 0
    assert await net[10].get(os.urandom(20)) is None


async def test_put_mutable_auto_seq_and_salt(net: list[DhtNode]) -> None:
    seed = os.urandom(32)
    pub = public_key(seed)
    writer, reader = net[2], net[13]

    t1 = await writer.put_mutable(seed, b"one")
    assert t1 == mutable_target(pub)
    item = await reader.get_mutable(pub)
    assert item is not None and (item.value, item.seq) == (b"one", 1)

    assert await writer.put_mutable(seed, b"two") == t1  # no seq: one more than the network's
    item = await reader.get_mutable(pub)
    assert item is not None and (item.value, item.seq) == (b"two", 2)

    # Another node holding the same key continues from the network's seq.
    await net[8].put_mutable(seed, b"three")
    item = await reader.get_mutable(pub)
    assert item is not None and (item.value, item.seq) == (b"three", 3)

    # With a salt: a separate item with its own seq.
    ts = await writer.put_mutable(seed, b"salted", salt=b"status")
    assert ts == mutable_target(pub, b"status") != t1
    item = await reader.get_mutable(pub, b"status")
    assert item is not None and (item.value, item.seq, item.salt) == (b"salted", 1, b"status")
    await writer.put_mutable(seed, b"salted again", salt=b"status")
    item = await reader.get_mutable(pub, b"status")
    assert item is not None and (item.value, item.seq) == (b"salted again", 2)
    item = await reader.get_mutable(pub)
    assert item is not None and item.seq == 3

    # Explicit seq; a lower one is refused by every node.
    await writer.put_mutable(seed, b"ten", seq=10)
    item = await reader.get_mutable(pub)
    assert item is not None and (item.value, item.seq) == (b"ten", 10)
    with pytest.raises(RemoteProtocolError):
        await writer.put_mutable(seed, b"old", seq=4)

    assert await reader.get_mutable(public_key(os.urandom(32))) is None


async def test_announce_and_get_peers(net: list[DhtNode]) -> None:
    info_hash = os.urandom(20)
    assert await net[4].announce(info_hash) > 0
    assert await net[6].announce(info_hash, port=6881) > 0
    peers = await net[11].get_peers(info_hash)
    assert net[4].address in peers
    assert ("127.0.0.1", 6881) in peers
    assert await net[11].get_peers(os.urandom(20)) == []


# -- persistence -------------------------------------------------------------------------


async def test_data_dir_keeps_id_and_routing_table(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    async with running_testnet(12) as nodes:
        target = await nodes[3].put(b"still here")
        node = DhtNode(LOCAL, data_dir=data_dir, bootstrap=[nodes[0].address])
        await node.start()
        try:
            assert await node.bootstrap() > 0
            node_id = node.node_id
        finally:
            await node.stop()
        assert (data_dir / "dht.sqlite3").is_file()

        again = DhtNode(LOCAL, data_dir=data_dir)  # no bootstrap address at all
        await again.start()
        try:
            assert again.node_id == node_id
            assert len(again.core.table) > 0
            assert await again.get(target) == b"still here"
        finally:
            await again.stop()


# -- garbage from a raw socket -------------------------------------------------------------


class RawPeer:
    """A bare non-blocking UDP socket on 127.0.0.1 (it can send even empty datagrams)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(LOCAL)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    async def reply_to(self, tid: bytes, timeout: float = 3.0) -> dict[bytes, Any]:
        """The next received message with transaction id ``tid`` (others are skipped)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                data, _ = await loop.sock_recvfrom(self.sock, 65535)
                msg = bencode.decode(data)
                assert isinstance(msg, dict)
                if msg.get(b"t") == tid:
                    return msg

    def close(self) -> None:
        self.sock.close()


def query(tid: bytes, method: bytes, args: dict[bytes, Any]) -> bytes:
    return bencode.encode({b"a": args, b"q": method, b"t": tid, b"y": b"q"})


RAW_ID = bytes(range(20))


async def test_garbage_is_counted_and_node_keeps_answering() -> None:
    garbage = [
        b"\xff" + os.urandom(200),  # random bytes
        b"",  # empty datagram
        b"d1:ad2:id20:" + RAW_ID[:5],  # truncated bencode
        query(b"g1", b"ping", {})[:-7],  # truncated query
        bencode.encode({b"a": {}, b"q": b"ping", b"t": b"g2", b"y": b"q"}),  # query without id
        b"d1:t2:g3e",  # a dict with only a transaction id
        b"i42e",  # bencode, but not a dict
        b"d1:ad2:id20:" + RAW_ID + b"e1:q4:ping1:t2:g41:y1:qe" + b"x" * 60_000,  # huge
    ]
    peer = RawPeer()
    try:
        async with DhtNode(LOCAL) as node:
            before = node.stats.get("dropped_malformed", 0)
            for data in garbage:
                peer.send(data, node.address)
            # The query without id had a readable tid: it gets a 203 error reply.
            err = await peer.reply_to(b"g2")
            assert err[b"y"] == b"e" and err[b"e"][0] == 203
            peer.send(query(b"pp", b"ping", {b"id": RAW_ID}), node.address)
            pong = await peer.reply_to(b"pp")
            assert pong[b"y"] == b"r" and pong[b"r"][b"id"] == node.node_id
            assert node.stats["dropped_malformed"] - before == len(garbage)
            async with DhtNode(LOCAL) as other:
                assert await other.ping(node.address) == node.node_id
    finally:
        peer.close()


@pytest.mark.parametrize(
    ("method", "args", "code"),
    [
        (b"find_node", {}, 203),  # missing target
        (b"get_peers", {b"info_hash": b"short"}, 203),
        (b"get", {b"target": 5}, 203),
        (b"announce_peer", {b"info_hash": bytes(20), b"port": 1, b"token": b"bad"}, 203),
        (b"put", {b"token": b"bad", b"v": b"x"}, 203),
        (b"frobnicate", {}, 204),
        (b"vote", {b"target": bytes(20)}, 204),
    ],
)
async def test_bad_query_gets_krpc_error_reply(
    method: bytes, args: dict[bytes, Any], code: int
) -> None:
    peer = RawPeer()
    try:
        async with DhtNode(LOCAL) as node:
            peer.send(query(b"q1", method, {**args, b"id": RAW_ID}), node.address)
            reply = await peer.reply_to(b"q1")
            assert reply[b"y"] == b"e"
            assert reply[b"e"][0] == code
            assert isinstance(reply[b"e"][1], bytes)
            assert node.stats["errors_sent"] >= 1
            # ... and the node still answers.
            peer.send(query(b"q2", b"ping", {b"id": RAW_ID}), node.address)
            assert (await peer.reply_to(b"q2"))[b"y"] == b"r"
    finally:
        peer.close()


# -- the socket's receive buffer (issue 9 item 11) -------------------------------------------


def _rmem_max() -> int | None:
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except OSError:
        return None


async def test_the_receive_buffer_is_enlarged_and_reported() -> None:
    async with DhtNode(LOCAL) as node:
        transport = node._transport
        assert transport is not None and transport.sock is not None
        granted = transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert node.stats["udp_rcvbuf"] == granted
        cap = _rmem_max()
        if cap is not None:  # Linux grants min(asked, rmem_max), reported doubled
            assert granted >= 2 * min(RECV_BUFFER, cap)


@pytest.mark.skipif((_rmem_max() or 0) < 2 * 1024 * 1024, reason="net.core.rmem_max too small")
async def test_large_junk_datagrams_do_not_crowd_out_good_queries() -> None:
    """30 junk datagrams of 60 kB and 300 of 1 kB (2.1 MB) arrive before 20 pings, all
    between two turns of the event loop: with the kernel's default buffer (~200 kB) the
    pings were dropped with most of the junk; now every datagram is read."""
    peer = RawPeer()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    try:
        async with DhtNode(LOCAL) as node:
            junk = [b"x" * 60_000] * 30 + [b"y" * 1000] * 300
            for data in junk:  # no await in between: the node reads nothing meanwhile
                peer.send(data, node.address)
            for i in range(20):
                peer.send(query(b"p%02d" % i, b"ping", {b"id": RAW_ID}), node.address)
            for i in range(20):
                assert (await peer.reply_to(b"p%02d" % i))[b"y"] == b"r"
            assert node.stats["dropped_malformed"] == len(junk)
    finally:
        peer.close()


# -- a per-source datagram budget (the flood benchmark) ----------------------------------------


def _no_loopback_exemption(monkeypatch: pytest.MonkeyPatch, **kw: float) -> DhtConfig:
    config = DhtConfig(**kw)  # type: ignore[arg-type]
    if hasattr(config, "exempt_loopback"):
        return dataclasses.replace(config, exempt_loopback=False)
    monkeypatch.setattr(_ingress, "is_loopback", lambda host: False)
    return config


def test_the_source_budget_is_per_address_and_per_ipv6_64() -> None:
    limiter = SourceRateLimiter(10.0, 5.0)
    assert [limiter.allow("10.0.0.1", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("10.0.0.2", 0.0)  # another source: its own budget
    assert limiter.allow("10.0.0.1", 0.1)  # refilled at 10/s
    assert not limiter.allow("10.0.0.1", 0.1)
    for i in range(5):  # one /64, any interface id
        assert limiter.allow(f"2001:db8:1:2::{i + 1}", 0.0)
    assert not limiter.allow("2001:db8:1:2:ffff::1", 0.0)
    assert limiter.allow("2001:db8:1:3::1", 0.0)
    assert not limiter.allow("::ffff:10.0.0.1", 0.1)  # an IPv4-mapped address is the IPv4
    exempt = SourceRateLimiter(1.0, 1.0, exempt_loopback=True)
    assert all(exempt.allow("127.0.0.1", 0.0) for _ in range(10)) and len(exempt) == 0


def test_the_source_budget_holds_a_bounded_number_of_sources() -> None:
    limiter = SourceRateLimiter(1.0, 2.0, max_sources=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 250}.{i % 250}", float(i))
        assert len(limiter) <= 100


async def test_a_flooding_source_does_not_reach_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 pings at once from 127.0.0.2: the node decodes its budget's worth (the burst)
    and drops the rest unread, counted; a client at 127.0.0.1 is answered throughout."""
    config = _no_loopback_exemption(monkeypatch, source_datagram_rate=50.0,
                                    source_datagram_burst=100.0)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind(("127.0.0.2", 0))
    peer = RawPeer()
    try:
        async with DhtNode(LOCAL, config=config) as node:
            ping = query(b"fl", b"ping", {b"id": RAW_ID})
            for i in range(2000):
                flooder.sendto(ping, node.address)
                if i % 100 == 0:
                    peer.send(query(b"g%03d" % i, b"ping", {b"id": RAW_ID}), node.address)
            for i in range(0, 2000, 100):
                assert (await peer.reply_to(b"g%03d" % i))[b"y"] == b"r"
            assert node.stats["q_ping"] <= 100 + 20 + 5  # the burst, the client, a refill
            assert node.stats["udp_rate_limited"] >= 2000 - 105
    finally:
        flooder.close()
        peer.close()
