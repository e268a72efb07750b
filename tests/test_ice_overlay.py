"""The ICE servers of the daemon's own overlay links (hailing.daemon.overlay_ice): the
links its node's driver opens itself get the STUN servers its DHT node found and a
volunteer relay's TURN credentials, as calls do, from the same cached source.

Everything runs on loopback (ICE host candidates on 127.0.0.1 only, so only loopback
servers are kept in a configuration). The TURN server on 127.0.0.1 appears only as a
value: a peer connection is made and closed without gathering, nothing is sent to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiortc
import pytest
from pytest_helpers import loopback_ice
from turn_helpers import Creds

from hailing.daemon.overlay_ice import IceLinkDriver, LinkIce, peer_ice_source
from hailing.daemon.service import Daemon, DhtSettings
from hailing.peer import Peer
from hailing.rtc.ice import NO_SERVERS, IceServers
from hailing.session.iceservers import IceServerSource
from hailing.testnet import testnet as local_testnet
from hailing.transport.datachannel import LinkDriver
from hailing.transport.linksdp import LinkAnswer, LinkOffer

TURN = Creds(("turn:127.0.0.1:3478?transport=udp",), "1764400000:hl", "c2VjcmV0")


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    yield from loopback_ice()


def recording(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The configuration of every RTCPeerConnection made from now on (the driver imports
    aiortc's at call time)."""
    configs: list[Any] = []
    original = aiortc.RTCPeerConnection

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, configuration: Any = None) -> None:
            configs.append(configuration)
            super().__init__(configuration=configuration)

    monkeypatch.setattr(aiortc, "RTCPeerConnection", Recording)
    return configs


def urls_of(config: Any) -> list[str]:
    return [u for s in config.iceServers for u in (s.urls if isinstance(s.urls, list)
                                                   else [s.urls])]


def creds_of(config: Any) -> list[tuple[str | None, str | None]]:
    return [(s.username, s.credential) for s in config.iceServers if s.username]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, list[IceServers]]]:
    """A daemon with the overlay on (the default), whose Peer's ICE servers are STUN on a
    testnet node's DHT port (which answers STUN) and, once a relay is known, TURN."""
    async with local_testnet(3) as nodes:
        stun = (nodes[0].address, nodes[1].address)
        served: list[IceServers] = [IceServers(stun, None)]

        async def provider() -> IceServers:  # what node_provider gives in a network
            return served[-1]

        d = Daemon(tmp_path / "a", lambda node: Peer(tmp_path / "a", node=node,
                                                     ice_servers=provider),
                   dht=DhtSettings(("127.0.0.1", 0), (nodes[2].address,)))
        await d.start()
        try:
            yield d, served
        finally:
            await d.stop()


async def test_a_daemons_overlay_links_carry_its_stun_and_turn_servers(
        daemon: tuple[Daemon, list[IceServers]], monkeypatch: pytest.MonkeyPatch) -> None:
    d, served = daemon
    driver = d.node.links
    assert isinstance(driver, LinkDriver)  # the overlay is on by default
    configs = recording(monkeypatch)
    source = d.peer.manager.ice
    async with asyncio.timeout(20):
        pc = await driver.new_peer_connection()
        await pc.close()
        stun = [f"stun:{ip}:{port}" for ip, port in served[0].stun]
        assert urls_of(configs[-1]) == stun  # no relay known: STUN only

        served.append(IceServers(served[0].stun, TURN))  # a volunteer announced itself
        source.warm()  # a call's refresh; the overlay reads the same cache
        assert source._task is not None
        await asyncio.wait_for(source._task, 5)
        pc = await driver.new_peer_connection()
        await pc.close()
    assert urls_of(configs[-1]) == [*stun, TURN.urls[0]]
    assert creds_of(configs[-1]) == [(TURN.username, TURN.password)]
    assert source.cached == served[-1]  # one cache for calls and links


async def test_a_link_between_two_such_drivers_opens_with_a_reflexive_candidate() -> None:
    """On loopback the DHT node's STUN sees the host as it is: the link still opens
    (what every loopback daemon test now does with its overlay links)."""
    async with local_testnet(2) as nodes:
        async def provider() -> IceServers:
            return IceServers((nodes[0].address,), None)

        source = IceServerSource(provider)
        a = IceLinkDriver(cap=4, source=lambda: source)
        b = IceLinkDriver(cap=4, source=lambda: source)
        a.node_id, b.node_id = b"\x01" * 20, b"\x02" * 20
        try:
            async with asyncio.timeout(30):
                offer = await LinkOffer.create(a)
                assert "typ srflx" in offer.sdp  # STUN was asked
                answer = await LinkAnswer.create(b, offer.sdp, peer_id=a.node_id)
                link = await offer.finish(answer.sdp, peer_id=b.node_id)
                assert link.is_open and (await answer.link()).is_open
        finally:
            await a.aclose()
            await b.aclose()
            await source.aclose()


async def test_no_peer_yet_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the daemon's Peer has started (or with a Peer that has no ICE source),
    a link gets no ICE server, as before: never aiortc's default."""
    assert peer_ice_source(lambda: None)() is None
    assert peer_ice_source(lambda: object())() is None
    assert await LinkIce(lambda: None)() is None
    configs = recording(monkeypatch)
    driver = IceLinkDriver(cap=2, source=lambda: None)
    pc = await driver.new_peer_connection()
    await pc.close()
    assert configs[-1].iceServers == []

    async def nothing() -> IceServers:
        return NO_SERVERS

    empty = IceServerSource(nothing)
    assert (await LinkIce(lambda: empty)()).iceServers == []
    await empty.aclose()
    await driver.aclose()


async def test_the_answering_side_of_a_link_gathers_no_relay(
        daemon: tuple[Daemon, list[IceServers]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Any node may ask ours for a link (no call policy): answering one must not take one
    of the relay's allocations that our calls need; only the offering side has TURN."""
    d, served = daemon
    driver = d.node.links
    assert isinstance(driver, LinkDriver)
    served.append(IceServers(served[0].stun, TURN))
    source = d.peer.manager.ice
    source.warm()
    assert source._task is not None
    configs = recording(monkeypatch)
    async with asyncio.timeout(20):
        await asyncio.wait_for(source._task, 5)
        for answering in (True, False):
            pc = await driver.new_peer_connection(answering=answering)
            await pc.close()
    stun = [f"stun:{ip}:{port}" for ip, port in served[0].stun]
    assert urls_of(configs[0]) == stun and creds_of(configs[0]) == []
    assert urls_of(configs[1]) == [*stun, TURN.urls[0]]
