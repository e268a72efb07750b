"""Closing a relayed peer connection never waits on a relay that no longer answers.

aioice deletes a TURN allocation when its connection closes (a Refresh with lifetime 0)
and retransmits that request for about 31 s when the relay is silent; aiortc's
``RTCPeerConnection.close()`` waits for it. A daemon stopping at the same time as its
relay (a lab's teardown, a volunteer going away) hung that long. With
``hailing.rtc.ice.bound_turn_deletion`` (applied by the first ``rtc_configuration``) the
deletion is given up after a bound and the close completes. And a session's stop closes
its connections side by side: its time is one close's bound, not one per connection.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCIceTransportPolicy, RTCPeerConnection
from pytest_helpers import loopback_ice
from turn_helpers import RELAY_PORTS, free_udp_port, open_channel, turnserver_or_skip

from hailing.identity import load_or_create_identity
from hailing.nat import TurnConfig, TurnCredentials
from hailing.nat.turnserver import TurnServer, rest_credentials
from hailing.rtc import rtc_configuration
from hailing.rtc.ice import selected_path
from hailing.session.connections import ConnectionManager
from hailing.session.supervisor import Supervisor

#: Far more than the bounded close takes, far less than aioice's retransmissions (31.5 s).
CLOSE_BOUND_S = 8.0


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    yield from loopback_ice()


async def _relayed_pair(turn: TurnCredentials) -> tuple[Any, Any]:
    """Two peer connections on loopback whose only candidates are relayed, connected."""
    config = rtc_configuration(turn=turn)
    config.iceTransportPolicy = RTCIceTransportPolicy.RELAY
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    opened = asyncio.Event()
    channel = a.createDataChannel("hailing")
    channel.on("open", opened.set)
    await open_channel(a, b, opened)
    return a, b


@pytest.mark.timeout(90)
async def test_a_relayed_connection_closes_when_its_relay_is_gone(tmp_path: Path) -> None:
    turnserver_or_skip()
    config = TurnConfig("127.0.0.1", port=free_udp_port(), min_port=RELAY_PORTS[0],
                        max_port=RELAY_PORTS[1], allow_loopback_peers=True)
    server = TurnServer(tmp_path / "relay", config)
    await server.start()
    pcs: tuple[Any, ...] = ()
    try:
        expires = int(time.time() + 600)
        username, password = rest_credentials(server.secret, expires)
        turn = TurnCredentials((f"turn:127.0.0.1:{config.port}?transport=udp",),
                               username, password, float(expires))
        pcs = await _relayed_pair(turn)
        assert selected_path(pcs[0])["relayed"] and selected_path(pcs[1])["relayed"]
    finally:
        await server.stop()  # the relay is gone: nothing answers the deletions
    async with asyncio.timeout(CLOSE_BOUND_S):
        await asyncio.gather(*(pc.close() for pc in pcs))


async def test_a_session_closes_its_connections_side_by_side(tmp_path: Path) -> None:
    """Each close here ends only once every close has begun: closing one after the
    other would never end."""
    manager = ConnectionManager(load_or_create_identity(tmp_path / "me"),
                                downloads=tmp_path / "downloads", supervisor=Supervisor(),
                                stats=Counter(), emit=lambda _event: None)
    began: list[object] = []
    everyone = asyncio.Event()

    class SlowToClose:
        async def close(self) -> None:
            began.append(self)
            if len(began) == 3:
                everyone.set()
            await everyone.wait()

    manager.connections.update(SlowToClose() for _ in range(3))  # type: ignore[misc]
    async with asyncio.timeout(CLOSE_BOUND_S):
        await manager.aclose()
    assert len(began) == 3 and not manager.connections
