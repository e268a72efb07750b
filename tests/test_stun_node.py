"""STUN on a DhtNode's UDP port, on 127.0.0.1 (OS-chosen ports only): aioice's own STUN
client gets a server-reflexive candidate from a node, KRPC keeps working on the same
port, a node learns its NAT from three others, a flooding source does not starve
another's STUN or KRPC, and behind a NAT the node keeps its listens' storing nodes
hearing from it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any

import aioice
import aioice.ice
import pytest
from aioice import stun

import hailing.nat.stun as nat_stun
from hailing import bencode
from hailing.dht import DhtConfig
from hailing.errors import HailingError
from hailing.node import DhtNode
from hailing.testnet import testnet as running_testnet

LOCAL = ("127.0.0.1", 0)
FAST = DhtConfig(query_timeout=0.5, max_soft_timeout=0.25, maintenance_interval=0.2)

Addr = tuple[str, int]


class RawSocket:
    """A bare UDP socket on ``host`` (any loopback address)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))
        self.address: Addr = self.sock.getsockname()

    def send(self, data: bytes, addr: Addr) -> None:
        self.sock.sendto(data, addr)

    async def stun_reply(self, tid: bytes, timeout: float = 5.0) -> stun.Message:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                data, _ = await loop.sock_recvfrom(self.sock, 65535)
                if data[:1] in (b"\x00", b"\x01", b"\x02", b"\x03"):
                    msg = stun.parse_message(data)
                    if msg.transaction_id == tid:
                        return msg

    async def krpc_reply(self, tid: bytes, timeout: float = 5.0) -> dict[bytes, Any]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                data, _ = await loop.sock_recvfrom(self.sock, 65535)
                if data[:1] == b"d":
                    msg = bencode.decode(data)
                    assert isinstance(msg, dict)
                    if msg.get(b"t") == tid:
                        return msg

    async def replies(self, stun_tids: set[bytes], krpc_tids: set[bytes],
                      timeout: float = 10.0) -> dict[bytes, Any]:
        """Every reply named (STUN by transaction id, KRPC by ``t``), whatever the order."""
        loop = asyncio.get_running_loop()
        got: dict[bytes, Any] = {}
        async with asyncio.timeout(timeout):
            while not stun_tids | krpc_tids <= set(got):
                data, _ = await loop.sock_recvfrom(self.sock, 65535)
                if data[:1] == b"d":
                    msg = bencode.decode(data)
                    assert isinstance(msg, dict)
                    got[msg[b"t"]] = msg
                else:
                    reply = stun.parse_message(data)
                    got[reply.transaction_id] = reply
        return got

    def close(self) -> None:
        self.sock.close()


def ping_query(tid: bytes) -> bytes:
    return bencode.encode({b"a": {b"id": bytes(range(20))}, b"q": b"ping", b"t": tid,
                           b"y": b"q"})


def binding(tid: bytes) -> bytes:
    return bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, tid))


async def test_aioice_gets_a_server_reflexive_candidate_from_a_node(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda **kw: ["127.0.0.1"])
    async with DhtNode(LOCAL) as node:
        conn = aioice.Connection(ice_controlling=True, stun_server=node.address)
        try:
            await conn.gather_candidates()
            by_type = {c.type: c for c in conn.local_candidates}
        finally:
            await conn.close()
        assert set(by_type) == {"host", "srflx"}
        host, srflx = by_type["host"], by_type["srflx"]
        assert (srflx.host, srflx.port) == (host.host, host.port)  # no NAT on loopback
        assert (srflx.related_address, srflx.related_port) == (host.host, host.port)
        assert node.stats.get("stun_answered", 0) >= 1
        # The same port still speaks KRPC, and STUN never reached the core.
        raw = RawSocket()
        try:
            raw.send(ping_query(b"p1"), node.address)
            assert (await raw.krpc_reply(b"p1"))[b"y"] == b"r"
        finally:
            raw.close()
        assert node.stats.get("dropped_malformed", 0) == 0


async def test_garbage_stun_is_counted_and_krpc_still_answered() -> None:
    async with DhtNode(LOCAL) as node:
        raw = RawSocket()
        try:
            junk = [b"\x00", b"\x01\x01\x00\x00", bytes(20), b"\x03" + bytes(50),
                    b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x43" + bytes(12),  # bad cookie
                    bytes(stun.Message(stun.Method.BINDING, stun.Class.INDICATION))]
            for data in junk:
                raw.send(data, node.address)
            raw.send(binding(b"after-junk12"), node.address)
            reply = await raw.stun_reply(b"after-junk12")
            assert reply.attributes["XOR-MAPPED-ADDRESS"] == raw.address
            raw.send(ping_query(b"p2"), node.address)
            assert (await raw.krpc_reply(b"p2"))[b"y"] == b"r"
        finally:
            raw.close()
        stats = node.stats
        assert stats.get("stun_garbage", 0) == 5 and stats.get("stun_ignored", 0) == 1
        assert stats.get("stun_answered", 0) == 1
        assert stats.get("dropped_malformed", 0) == 0  # none of it reached the core


async def test_a_read_only_node_answers_stun_too() -> None:
    async with DhtNode(LOCAL, config=DhtConfig(read_only=True)) as node:
        raw = RawSocket()
        try:
            raw.send(binding(b"read-only-12"), node.address)
            reply = await raw.stun_reply(b"read-only-12")
        finally:
            raw.close()
        assert reply.message_class == stun.Class.RESPONSE


async def test_nat_info_on_loopback_is_public_with_three_nodes() -> None:
    async with running_testnet(3, config=FAST) as others, DhtNode(LOCAL, config=FAST) as node:
        await node.bootstrap([others[0].address])
        info = await node.nat_info(refresh=True)
        assert info.mapping == "public" and info.behind_nat is False
        assert info.external == node.address
        assert sorted(info.servers) == sorted(o.address for o in others)
        assert sorted(node.stun_servers()) == sorted(o.address for o in others)
        assert await node.nat_info() is info  # cached until refreshed
        assert node.reachable_address() == node.address
        assert node.stats.get("stun_responses", 0) >= 3


async def test_nat_info_without_known_nodes_is_unknown() -> None:
    async with DhtNode(LOCAL) as node:
        info = await node.nat_info()
        assert (info.mapping, info.external, info.servers) == ("unknown", None, ())
        assert node.reachable_address() == node.address  # as before: the bound address
        assert node.stun_servers() == []


async def test_nat_info_needs_a_started_node() -> None:
    with pytest.raises(HailingError, match="not started"):
        await DhtNode(LOCAL).nat_info()


async def test_a_stun_flood_from_one_source_does_not_starve_another() -> None:
    """2,000 Binding requests at once from 127.0.0.2: the node answers its budget's
    worth and drops the rest unread, counted; 127.0.0.3's STUN and KRPC are answered
    throughout (the per-source budget runs before the demultiplexing)."""
    config = dataclasses.replace(FAST, exempt_loopback=False, source_datagram_rate=50.0,
                                 source_datagram_burst=100.0)
    flooder, client = RawSocket("127.0.0.2"), RawSocket("127.0.0.3")
    try:
        async with DhtNode(LOCAL, config=config) as node:
            flood = binding(b"flood-flood!")
            for i in range(2000):
                flooder.send(flood, node.address)
                if i % 100 == 0:
                    client.send(binding(b"good-%07d" % i), node.address)
                    client.send(ping_query(b"k%04d" % i), node.address)
            stun_tids = {b"good-%07d" % i for i in range(0, 2000, 100)}
            krpc_tids = {b"k%04d" % i for i in range(0, 2000, 100)}
            got = await client.replies(stun_tids, krpc_tids)
            for tid in stun_tids:
                assert got[tid].attributes["XOR-MAPPED-ADDRESS"] == client.address
            for tid in krpc_tids:
                assert got[tid][b"y"] == b"r"
            stats = node.stats
            assert stats.get("stun_requests", 0) <= 100 + 20 + 5  # the burst, the client, a refill
            assert stats.get("udp_rate_limited", 0) >= 2000 - 105
    finally:
        flooder.close()
        client.close()


# -- behind a NAT (simulated: the node believes it sends from another address) -----------


def behind_a_nat(monkeypatch: pytest.MonkeyPatch, node: DhtNode) -> None:
    """Every server sees ``node`` at its socket's address, while it "sends from"
    10.0.0.2: what a node behind an endpoint-independent NAT finds (the other nodes of
    the process stay public: a node behind a NAT serves no STUN)."""
    real = nat_stun.route_source
    monkeypatch.setattr("hailing.node.route_source", lambda server, bound: (
        ("10.0.0.2", 1) if bound == node.address else real(server, bound)))


async def test_behind_a_nat_the_reply_hint_address_is_withheld(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_testnet(3, config=FAST) as others, DhtNode(LOCAL, config=FAST) as node:
        behind_a_nat(monkeypatch, node)
        await node.bootstrap([others[0].address])
        assert node.reachable_address() == node.address  # before it knows
        info = await node.nat_info(refresh=True)
        assert info.mapping == "endpoint-independent" and info.behind_nat is True
        assert info.external == node.address
        assert node.reachable_address() is None
        assert len(node.stun_servers()) == 3  # still good STUN servers for ICE
        assert not node.core.responder.storing  # no storing node either (dht/responder.py)
        assert all(o.core.responder.storing for o in others)


async def test_behind_a_nat_listen_holders_get_keepalives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The storing nodes holding our listen hear a Binding request from us every
    keepalive interval (shortened here), one each per round."""
    monkeypatch.setattr(nat_stun, "KEEPALIVE_INTERVAL", 0.2)
    async with running_testnet(6, config=FAST) as others, DhtNode(LOCAL, config=FAST) as node:
        behind_a_nat(monkeypatch, node)
        await node.bootstrap([others[0].address])
        await node.nat_info(refresh=True)
        key = bytes(range(20))
        assert await node.listen(key) >= 1
        holders = set(node.core.inboxes.holders(key, asyncio.get_running_loop().time()))
        by_addr = {o.address: o for o in others}
        assert holders and holders <= set(by_addr)
        before = {a: by_addr[a].stats.get("stun_answered", 0) for a in holders}  # type: ignore[index]
        async with asyncio.timeout(30):
            while not all(by_addr[a].stats.get("stun_answered", 0) >= before[a] + 2  # type: ignore[index]
                          for a in holders):
                await asyncio.sleep(0.05)
        assert node.stats.get("stun_keepalives", 0) >= 2 * len(holders)


async def test_a_stun_server_whose_port_leaves_a_krpc_query_unanswered_is_forgotten() -> None:
    """A public node sends vanished STUN servers no Binding request between its probes
    (5 minutes apart): the first KRPC query to the same port that times out (an inbox
    holder's ping, a lookup's query) drops it from the list ICE gets."""
    async with running_testnet(3, config=FAST) as others, DhtNode(LOCAL, config=FAST) as node:
        await node.bootstrap([others[0].address])
        await node.nat_info(refresh=True)
        assert sorted(node.stun_servers()) == sorted(o.address for o in others)
        gone = others[1].address
        await others[1].stop()
        with pytest.raises(HailingError):
            await node.ping(gone)
        assert sorted(node.stun_servers()) == sorted(o.address for o in others if o.address != gone)
        assert node.stats["stun_servers_forgotten"] == 1
