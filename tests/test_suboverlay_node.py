"""The node side of the public DHT: the sub-overlay over UDP (loopback), the BEP42 id
saved, and the public bootstrap list (never contacted: its expansion is checked offline)."""

from __future__ import annotations

import ast
import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from hailing import node as node_mod
from hailing._state import NodeState
from hailing.dht import DhtConfig, bep42
from hailing.dht.suboverlay import HAILING_INFOHASH
from hailing.krpc import Query, Response, decode_message, encode_message
from hailing.node import PUBLIC_BOOTSTRAP, DhtNode, bootstrap_list, parse_hostport

LOOPBACK = "127.0.0.1"
FOREIGN = DhtConfig(version=None, extensions=False)
PUBLIC_IP = "198.18.0.5"  # what the fake peers tell the node its address is (never used)


# -- BEP42: the re-derived id is saved ------------------------------------------------------


class _Voter(asyncio.DatagramProtocol):
    """A peer that answers every query and tells the sender its address is PUBLIC_IP
    (BEP42's ``ip`` field), as peers on the Internet tell a node behind a NAT."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        q = decode_message(data)
        assert isinstance(q, Query)
        ip = socket.inet_aton(PUBLIC_IP) + addr[1].to_bytes(2, "big")
        self.transport.sendto(encode_message(Response(q.tid, {b"id": b"V" * 20}, None, ip)), addr)


async def test_a_bep42_id_taken_from_the_votes_is_saved_and_kept(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Voter, local_addr=(LOOPBACK, 0))
    voter = transport.get_extra_info("sockname")
    try:
        async with DhtNode((LOOPBACK, 0), data_dir=tmp_path, seed=7) as node:
            first = node.node_id
            assert not bep42.node_id_prefix_ok(first, PUBLIC_IP)
            for _ in range(8):  # OWN_ID_VOTES answers naming one public address
                await node.ping(voter)
            new = node.node_id
            assert new != first and bep42.node_id_prefix_ok(new, PUBLIC_IP)
            # saved at once, not only at the next periodic save or at stop
            with NodeState(tmp_path) as state:
                assert state.node_id() == new
        async with DhtNode((LOOPBACK, 0), data_dir=tmp_path, seed=8) as again:
            assert again.node_id == new
    finally:
        transport.close()


# -- the sub-overlay over UDP -----------------------------------------------------------------


async def test_bootstrap_waits_for_hailing_nodes_among_foreign_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hailing nodes joined only through foreign (plain Mainline) nodes find each other
    at bootstrap, and an inbox post right after reaches the listener."""
    foreign = [DhtNode((LOOPBACK, 0), config=FOREIGN, seed=i) for i in range(24)]
    hailing: list[DhtNode] = []
    try:
        for n in foreign:
            await n.start()
        boot = foreign[0].address
        for n in foreign[1:]:
            await n.bootstrap([boot])
        for i in range(3):
            h = DhtNode((LOOPBACK, 0), bootstrap=[foreign[i + 5].address], seed=100 + i)
            await h.start()
            hailing.append(h)
            await h.bootstrap()
        for h in hailing:
            await h.bootstrap()  # a second join: the sub-table may still be < k (3 nodes)
        callee, caller = hailing[0], hailing[-1]
        assert {i.id for i in await callee.find_hailing_nodes()} == {
            h.node_id for h in hailing[1:]}
        key = b"\x11" * 20
        assert await callee.listen(key) >= 1
        assert await caller.post(key, b"offer") >= 1
        msg = await asyncio.wait_for(callee.inbox(), 10)
        assert msg.value == b"offer"
        stored = [a for n in foreign for a in n.core.peers.get(HAILING_INFOHASH, n.core.config.k)]
        assert stored  # the foreign nodes hold the announces
        # STUN probes try the sub-table's nodes first: hailing nodes answer STUN, foreign
        # ones (libtorrent) do not, and are 99 % of a public routing table
        seen: dict[str, Any] = {}

        def spy(known: Any, nodes: Any, key: Any, rng: Any, **kw: Any) -> list[Any]:
            seen.update(kw, nodes=nodes)
            return []

        monkeypatch.setattr(node_mod, "pick_servers", spy)
        caller._stun_probe(0.0)
        assert sorted(seen["hailing"]) == sorted(h.address for h in hailing if h is not caller)
        assert len(seen["nodes"]) > len(seen["hailing"])
    finally:
        for n in hailing + foreign:
            await n.stop()


# -- the public bootstrap list: parsed, never contacted -------------------------------------


def test_public_expands_to_the_well_known_routers_without_resolving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("the public bootstrap list must not be resolved in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    addrs = bootstrap_list(["public"])
    assert addrs == [parse_hostport(t) for t in PUBLIC_BOOTSTRAP]
    assert ("router.bittorrent.com", 6881) in addrs and ("dht.libtorrent.org", 25401) in addrs
    assert bootstrap_list(["127.0.0.1:6881", "PUBLIC", "127.0.0.1:6881"])[0] == (LOOPBACK, 6881)
    assert len(bootstrap_list(["127.0.0.1:6881", "public"])) == 1 + len(PUBLIC_BOOTSTRAP)
    assert bootstrap_list(["127.0.0.1:1"]) == [(LOOPBACK, 1)]


async def test_names_are_resolved_once_when_the_node_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bootstrap name goes through the loop's getaddrinfo (here a fake that maps the
    name to a loopback node): the public routers' path, with no network."""
    async with DhtNode((LOOPBACK, 0), seed=1) as target, DhtNode((LOOPBACK, 0), seed=2) as n:
        asked: list[str] = []

        async def fake(host: str, port: int, **kw: Any) -> list[Any]:
            asked.append(host)
            assert host == "router.example.invalid"
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", target.address)]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake)
        assert await n.bootstrap([("router.example.invalid", 6881)]) == 1
        assert asked == ["router.example.invalid"]


def test_no_test_uses_the_public_list() -> None:
    """Only this module and the CLI's expansion test name the public list (the
    constant, its expansion, or ``--bootstrap public``): no other test or fixture can
    join the public DHT. And in the library only :func:`bootstrap_list` reads it."""
    tests = Path(__file__).parent
    allowed = {Path(__file__).name, "test_suboverlay_cli.py"}
    words = ("PUBLIC_BOOTSTRAP", "bootstrap_list", "--bootstrap public",
             '"--bootstrap", "public"', 'bootstrap", "public')
    offenders = [str(p) for p in tests.rglob("*.py") if p.name not in allowed
                 and any(w in p.read_text(errors="replace") for w in words)]
    assert offenders == []
    src = Path(node_mod.__file__).parent
    users: list[str] = []
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                    isinstance(n, ast.Name) and n.id == "PUBLIC_BOOTSTRAP" for n in ast.walk(fn)):
                users.append(f"{path.name}:{fn.name}")
    assert users == ["_addrs.py:bootstrap_list"]
