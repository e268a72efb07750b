"""The sub-overlay among real libtorrent nodes: 40 libtorrent DHT sessions and 4 hailing
nodes on 127.0.0.1. The hailing nodes join through libtorrent nodes only (each through a
different one), find each other through their announces, which libtorrent nodes store,
and an inbox offer posted by one reaches another that listens.

The sessions are those of tests/interop (its ``lt_settings``: 127.0.0.1 only, no
bootstrap routers, no LSD/UPnP/NAT-PMP); only their alert mask is smaller, 40 sessions'
DHT packet logs being of no use here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

lt = pytest.importorskip("libtorrent", reason="libtorrent Python bindings are not installed")

from hailing.dht.suboverlay import HAILING_INFOHASH  # noqa: E402
from hailing.node import DhtNode  # noqa: E402

pytestmark = pytest.mark.interop

LOOPBACK = "127.0.0.1"
LT_NODES = 40
HL_NODES = 4
STEP = 20.0  # bound on each waiting step (a hang fails, it does not block the suite)


def _interop_settings() -> Any:
    path = Path(__file__).parent / "interop" / "conftest.py"
    spec = importlib.util.spec_from_file_location("hailing_interop_settings", path)
    assert spec is not None and spec.loader is not None
    mod = sys.modules.get(spec.name)
    if mod is None:
        mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod.lt_settings


def lt_sessions(n: int, rng: random.Random) -> list[Any]:
    settings = _interop_settings()
    cat = lt.alert.category_t
    mask = (cat.dht_notification | cat.dht_operation_notification | cat.error_notification
            | cat.stats_notification)
    sessions = [lt.session(settings(alert_mask=mask))
                for _ in range(n)]
    for ses in sessions:
        assert ses.is_dht_running() and ses.listen_port() > 0
    ports = [s.listen_port() for s in sessions]
    for i, ses in enumerate(sessions):  # a ring plus a few random links
        for j in {(i + 1) % n, (i - 1) % n, *rng.sample(range(n), 4)} - {i}:
            ses.add_dht_node((LOOPBACK, ports[j]))
    return sessions


async def lt_table_sizes(sessions: list[Any]) -> list[int]:
    """The number of nodes in each session's routing table (libtorrent's dht_stats)."""
    for ses in sessions:
        ses.post_dht_stats()
    await asyncio.sleep(0.1)
    sizes = []
    for ses in sessions:
        n = 0
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                n = sum(int(b["num_nodes"]) for b in a.routing_table)
        sizes.append(n)
    return sizes


@pytest.fixture
async def mixed() -> AsyncIterator[tuple[list[Any], list[DhtNode]]]:
    rng = random.Random(5)
    sessions = lt_sessions(LT_NODES, rng)
    nodes: list[DhtNode] = []
    try:
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline:  # libtorrent's own joins settle a little
            if sum(s >= 4 for s in await lt_table_sizes(sessions)) >= LT_NODES * 3 // 4:
                break
            await asyncio.sleep(0.2)
        for i in range(HL_NODES):
            via = (LOOPBACK, sessions[i * 9 + 3].listen_port())
            node = DhtNode((LOOPBACK, 0), bootstrap=[via], seed=50 + i)
            await node.start()
            nodes.append(node)
        yield sessions, nodes
    finally:
        for node in nodes:
            await node.stop()
        for ses in sessions:
            ses.pause()


async def _all_found(nodes: list[DhtNode], ids: set[bytes]) -> bool:
    for n in nodes:
        if {i.id for i in await n.find_hailing_nodes()} != ids - {n.node_id}:
            return False
    return True


async def test_an_offer_reaches_the_listener_through_the_sub_overlay(
    mixed: tuple[list[Any], list[DhtNode]],
) -> None:
    sessions, nodes = mixed
    ids = {n.node_id for n in nodes}
    async with asyncio.timeout(STEP * 3):
        for node in nodes:
            await node.bootstrap()
        # Joined through libtorrent nodes only; later ones found the earlier ones through
        # the announces libtorrent stored, and the earlier ones hear of later ones as
        # soon as they are pinged, or at their next round.
        while not await _all_found(nodes, ids):
            await asyncio.sleep(0.5)
    for n in nodes:
        assert n.core.sub.foreign > 0  # it met libtorrent nodes
        assert n.stats["sub_rounds"] >= 1
        assert {e.id for e in n.core.sub.table} == ids - {n.node_id}  # no libtorrent node

    callee, caller = nodes[0], nodes[-1]
    for i in range(3):
        key = bytes([i + 1]) * 20
        async with asyncio.timeout(STEP):
            assert await callee.listen(key) == HL_NODES - 1
            assert await caller.post(key, b"offer %d" % i) >= HL_NODES - 2
            msg = await callee.inbox()
        assert (msg.key, msg.value) == (key, b"offer %d" % i)

    # libtorrent itself holds the announces: its own get_peers finds the hailing nodes
    ses = sessions[20]
    ports = {n.address[1] for n in nodes}
    found: set[int] = set()
    deadline = time.monotonic() + STEP
    while not ports <= found and time.monotonic() < deadline:
        ses.dht_get_peers(lt.sha1_hash(HAILING_INFOHASH))
        await asyncio.sleep(1.0)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_get_peers_reply_alert):
                found |= {int(p[1]) for p in a.peers()}
    assert ports <= found
