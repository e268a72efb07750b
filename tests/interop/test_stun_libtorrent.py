"""STUN on the DHT port next to libtorrent (loopback only; see conftest.py): a libtorrent
node ignores a hailing node's Binding requests (its port multiplexes uTP and the DHT, and
STUN is neither), answers nothing STUN-like, and keeps answering KRPC; the hailing node
counts the timeouts and reports an unknown mapping rather than a wrong one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

lt = pytest.importorskip("libtorrent", reason="libtorrent Python bindings are not installed")

from hailing.node import DhtNode  # noqa: E402

pytestmark = pytest.mark.interop

OP_TIMEOUT = 10.0


async def test_libtorrent_ignores_stun_and_keeps_answering_krpc(lt_session: Any,
                                                                ltkit: Any) -> None:
    ses = lt_session()
    lt_addr = ltkit.lt_addr(ses)
    lt_id = ltkit.lt_node_id(ses)
    async with DhtNode(("127.0.0.1", 0), bootstrap=[lt_addr]) as node:
        assert await asyncio.wait_for(node.bootstrap(), OP_TIMEOUT) >= 1
        info = await asyncio.wait_for(node.nat_info(refresh=True), OP_TIMEOUT)
        assert info.mapping == "unknown" and info.servers == () and info.external is None
        assert node.stun_servers() == []
        stats = node.stats
        assert stats.get("stun_timeouts", 0) >= 1 and stats.get("stun_responses", 0) == 0
        assert stats.get("stun_garbage", 0) == 0 and stats.get("dropped_malformed", 0) == 0
        # libtorrent still talks KRPC with us.
        assert await asyncio.wait_for(node.ping(lt_addr), OP_TIMEOUT) == lt_id
