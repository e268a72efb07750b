"""The BEP44 fallback over libtorrent nodes only (docs/protocol.md "BEP44 fallback").

Two hailing peers whose only DHT neighbours are libtorrent sessions (on 127.0.0.1, no
bootstrap routers: see conftest.py): their own nodes are BEP43 read-only (as behind a
NAT), so no node anywhere speaks hailing's inbox methods. The call's inbox rung fails at
once, and the call connects through BEP44 mutable items that libtorrent stored (its packet
log shows it accepted the peers' ``put`` queries)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("libtorrent", reason="libtorrent Python bindings are not installed")

from pytest_helpers import loopback_ice

from hailing.dht import DhtConfig
from hailing.peer import Peer
from hailing.session.coupler import MainlineCoupler
from hailing.session.dialer import FALLBACK_LADDER

pytestmark = pytest.mark.interop

LIBTORRENT_NODES = 8

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


@pytest.fixture
def lt_net(lt_session: Any, ltkit: Any) -> Iterator[list[Any]]:
    sessions = [lt_session() for _ in range(LIBTORRENT_NODES)]
    addrs = [ltkit.lt_addr(s) for s in sessions]
    for s in sessions:
        for a in addrs:
            if a != ltkit.lt_addr(s):
                s.add_dht_node(a)
    yield sessions


async def fallback_peer(tmp: Path, name: str, ltkit: Any, sessions: list[Any]) -> Peer:
    p = Peer(tmp / name, bootstrap=[ltkit.lt_addr(s) for s in sessions[:3]],
             dht_config=DhtConfig(read_only=True), ladder=list(FALLBACK_LADDER))
    await p.start()
    mainline = p.coupler("mainline")
    assert isinstance(mainline, MainlineCoupler)
    mainline.rendezvous.idle_max = 1.0  # keep the test short
    return p


async def test_a_call_connects_through_items_stored_on_libtorrent_nodes(
        lt_net: list[Any], ltkit: Any, tmp_path: Path) -> None:
    alice = await fallback_peer(tmp_path, "alice", ltkit, lt_net)
    bob = await fallback_peer(tmp_path, "bob", ltkit, lt_net)
    try:
        assert alice.contacts is not None and bob.contacts is not None
        alice.contacts.add(bob.contact_id, "bob")
        bob.contacts.add(alice.contact_id, "alice")
        await bob.refresh()
        conn = await alice.connect(bob.contact_id, timeout=40)
        assert conn.coupler == "mainline"
        inbox = alice._dialer().last[0]
        assert inbox.coupler == "dht" and "no hailing node answered" in (inbox.error or "")
        incoming = await asyncio.wait_for(bob.accept(), 10)
        assert incoming.peer == alice.public_key
        # the offer and the answer were stored by libtorrent: it accepted both peers' puts
        for peer in (alice, bob):
            assert peer.node is not None
            addr = (str(peer.node.address[0]), int(peer.node.address[1]))
            puts = [p for s in lt_net for p in ltkit.queries_from(s, addr, b"put")]
            assert puts, f"no libtorrent node accepted {addr}'s BEP44 put"
            assert all(isinstance(p.get(b"a"), dict) and b"salt" in p.get(b"a") for p in puts)
    finally:
        await alice.stop()
        await bob.stop()
