"""ICE servers and the ICE path: the configuration every peer connection gets
(hailing.rtc.ice.rtc_configuration), the cached provider the session asks
(hailing.session.iceservers), the web app's ``GET /api/ice``, the page's reflexive
candidates, and ``selected_path`` in the daemon's events.

Everything runs on loopback (ICE host candidates on 127.0.0.1 only). Server addresses in
198.18.0.0/15 appear only as values: ICE on loopback drops them from its configuration, so
nothing is ever sent to them. Every wait has a timeout; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from pytest_helpers import loopback_ice
from session_doubles import eventually
from turn_helpers import Creds

from hailing.daemon.service import Daemon, DhtSettings
from hailing.errors import LocalProtocolError
from hailing.identity import load_or_create_identity
from hailing.peer import Peer
from hailing.rtc.ice import (
    NO_SERVERS,
    IceServers,
    current_host_addresses,
    gathers_on_loopback,
    ice_servers_json,
    rtc_configuration,
    selected_path,
    set_host_addresses,
    turn_urls,
)
from hailing.services.contacts import ContactBook
from hailing.session.external import filter_candidates, usable_reflexive
from hailing.session.iceservers import IceServerSource, node_provider, peer_provider
from hailing.testnet import testnet as local_testnet

TURN = Creds(("turn:198.18.0.8:3478?transport=udp",), "1764400000:hl", "c2VjcmV0")


@pytest.fixture(autouse=True)
def _restore_hosts() -> Iterator[None]:
    before = current_host_addresses()
    yield
    set_host_addresses(before)


def urls_of(config: Any) -> list[str]:
    return [u for s in config.iceServers for u in (s.urls if isinstance(s.urls, list)
                                                   else [s.urls])]


# -- the configuration -------------------------------------------------------------------


def test_no_server_by_default_not_even_aiortcs() -> None:
    assert rtc_configuration().iceServers == []
    set_host_addresses(None)
    assert rtc_configuration().iceServers == []


def test_servers_best_first_ipv4_first_and_the_relay_with_its_credentials() -> None:
    set_host_addresses(None)  # gathering on real interfaces: no loopback server
    stun = [("2001:db8::5", 6881), ("198.18.0.5", 6881), ("198.18.0.6", 6882),
            ("198.18.0.5", 6881), ("127.0.0.1", 6881)]
    config = rtc_configuration(stun, TURN)
    # aiortc uses the FIRST stun: and the FIRST turn: URL: the best IPv4 server comes
    # first; it cannot parse IPv6 URLs (a browser gets them)
    assert urls_of(config) == ["stun:198.18.0.5:6881", "stun:198.18.0.6:6882",
                               "turn:198.18.0.8:3478?transport=udp"]
    assert ice_servers_json(stun, TURN, loopback=False)[0]["urls"] == [
        "stun:198.18.0.5:6881", "stun:198.18.0.6:6882", "stun:[2001:db8::5]:6881"]
    relay = config.iceServers[-1]
    assert (relay.username, relay.credential) == (TURN.username, TURN.password)
    from aiortc.rtcicetransport import connection_kwargs

    kwargs = connection_kwargs(config.iceServers)
    assert kwargs["stun_server"] == ("198.18.0.5", 6881)
    assert kwargs["turn_server"] == ("198.18.0.8", 3478)
    assert (kwargs["turn_username"], kwargs["turn_password"]) == (TURN.username, TURN.password)


def test_ice_on_loopback_keeps_only_loopback_servers() -> None:
    set_host_addresses(["127.0.0.1"])
    assert gathers_on_loopback()
    loop_turn = Creds(("turn:127.0.0.1:3478",), "u", "p")
    config = rtc_configuration([("198.18.0.5", 6881), ("127.0.0.1", 7000)], TURN)
    assert urls_of(config) == ["stun:127.0.0.1:7000"]
    assert urls_of(rtc_configuration((), loop_turn)) == ["turn:127.0.0.1:3478?transport=udp"]
    set_host_addresses(["198.19.1.2"])
    assert not gathers_on_loopback()
    assert urls_of(rtc_configuration([("127.0.0.1", 7000)], loop_turn)) == []


@pytest.mark.parametrize("addr", [("stun.example", 3478), ("0.0.0.0", 3478),
                                  ("224.0.0.1", 3478), ("198.18.0.5", 0),
                                  ("198.18.0.5", 70000), ("198.18.0.5", True),
                                  ("198.18.0.5",), (b"198.18.0.5", 3478)])
def test_a_bad_stun_server_is_local_misuse(addr: Any) -> None:
    with pytest.raises(LocalProtocolError):
        rtc_configuration([addr])
    with pytest.raises(LocalProtocolError):
        ice_servers_json([addr])


@pytest.mark.parametrize("turn", [
    Creds(("turns:198.18.0.8:5349?transport=tcp",), "u", "p"),
    Creds(("turn:198.18.0.8:3478?transport=tcp",), "u", "p"),
    Creds(("turn:relay.example:3478",), "u", "p"),
    Creds(("turn:0.0.0.0:3478",), "u", "p"),
    Creds(("turn:198.18.0.8:0",), "u", "p"),
    Creds(("turn:198.18.0.8:3478\r\nX: y",), "u", "p"),
    Creds(("turn:198.18.0.8:3478",), "", "p"),
    Creds(("turn:198.18.0.8:3478",), "u", "pass word"),
    Creds(("turn:198.18.0.8:3478",), "u", "p" * 257),
    Creds("turn:198.18.0.8:3478", "u", "p"),  # type: ignore[arg-type]
    Creds((b"turn:198.18.0.8:3478",), "u", "p"),  # type: ignore[arg-type]
])
def test_a_volunteers_unusable_relay_urls_are_dropped(turn: Creds) -> None:
    assert turn_urls(turn) == []
    assert ice_servers_json((), turn) == []
    set_host_addresses(None)
    assert rtc_configuration((), turn).iceServers == []


def test_the_browsers_list_shape() -> None:
    assert ice_servers_json() == []
    assert ice_servers_json([("198.18.0.5", 6881), ("127.0.0.1", 1)], TURN,
                            loopback=False) == [
        {"urls": ["stun:198.18.0.5:6881"]},
        {"urls": ["turn:198.18.0.8:3478?transport=udp"], "username": TURN.username,
         "credential": TURN.password}]


# -- the page's candidates ---------------------------------------------------------------


def test_reflexive_and_relay_candidates_pass_when_usable() -> None:
    lines = [
        "a=candidate:1 1 udp 2 198.19.1.2 5000 typ host\r\n",
        "a=candidate:2 1 udp 2 127.0.0.1 5001 typ host\r\n",
        "a=candidate:3 1 udp 1 198.18.0.20 6000 typ srflx raddr 198.19.1.2 rport 5000\r\n",
        "a=candidate:4 1 udp 1 198.18.0.8 49152 typ relay raddr 198.18.0.20 rport 6000\r\n",
        "a=candidate:5 1 udp 1 127.0.0.1 6001 typ srflx raddr 0.0.0.0 rport 0\r\n",
        "a=candidate:6 1 udp 1 0.0.0.0 6002 typ relay raddr 0.0.0.0 rport 0\r\n",
        "a=candidate:7 1 udp 1 224.0.0.9 6003 typ srflx raddr 0.0.0.0 rport 0\r\n",
        "a=candidate:8 1 udp 1 x.local 6004 typ srflx\r\n",
        "a=candidate:9 1 udp 1 198.18.0.21 0 typ prflx\r\n",
        "a=candidate:10 1 udp 1 198.18.0.22 typ\r\n",
    ]
    sdp = "v=0\r\n" + "".join(lines)
    assert filter_candidates(sdp, ["198.19.1.2"]) == "v=0\r\n" + "".join(
        lines[i] for i in (0, 2, 3, 9))
    assert filter_candidates(sdp, None) == "v=0\r\n" + "".join(lines[i] for i in (0, 1, 2, 3, 9))
    assert usable_reflexive("2001:db8::1", "9") and not usable_reflexive("fe80::1", "9")
    assert not usable_reflexive("198.18.0.1", "65536")


# -- the provider, cached ----------------------------------------------------------------


async def test_the_source_caches_bounds_its_wait_and_survives_a_failing_provider() -> None:
    asked = 0
    release = asyncio.Event()
    answer = IceServers((("198.18.0.5", 6881),), TURN)

    async def provider() -> IceServers:
        nonlocal asked
        asked += 1
        await release.wait()
        return answer

    now = [0.0]
    stats: Counter[str] = Counter()
    source = IceServerSource(provider, stats=stats, wait=0.05, fresh=30.0,
                             clock=lambda: now[0])
    async with asyncio.timeout(10):
        assert await source.get() is NO_SERVERS  # not waited for past `wait`
        assert stats["ice_provider_slow"] == 1
        assert await source.get() is NO_SERVERS and asked == 1  # one question at a time
        release.set()
        await eventually(lambda: source.cached is not None, "the provider's answer")
        assert await source.get() is answer and asked == 1  # cached
        now[0] = 31.0
        assert await source.get() is answer  # stale: used at once, refreshed behind
        await eventually(lambda: asked == 2, "a refresh")
    await source.aclose()

    async def broken() -> IceServers:
        raise RuntimeError("no")

    failing = IceServerSource(broken, stats=stats)
    async with asyncio.timeout(10):
        assert await failing.get() is NO_SERVERS
    assert stats["ice_provider_errors"] == 1
    assert await IceServerSource(None).get() is NO_SERVERS


async def test_no_stun_server_yet_is_asked_again_soon() -> None:
    answers = [IceServers(), IceServers((("198.18.0.5", 6881),))]
    now = [0.0]

    async def provider() -> IceServers:
        return answers.pop(0)

    source = IceServerSource(provider, clock=lambda: now[0])
    async with asyncio.timeout(10):
        assert await source.get() == NO_SERVERS  # a node that has not probed yet
        assert await source.get() == NO_SERVERS and len(answers) == 1  # not asked again
        now[0] = 1.5  # FRESH_EMPTY later: asked, and waited for
        assert await source.get() == IceServers((("198.18.0.5", 6881),))


async def test_a_node_provider_takes_what_works() -> None:
    class Node:
        def stun_servers(self) -> list[tuple[str, int]]:
            return [("198.18.0.5", 6881)]

    class Relays:
        async def credentials(self) -> Creds:
            raise OSError("unreachable")

    class BrokenNode:
        def stun_servers(self) -> list[tuple[str, int]]:
            raise RuntimeError("no")

    class GoodRelays:
        async def credentials(self) -> Creds:
            return TURN

    assert await node_provider(Node(), Relays())() == IceServers((("198.18.0.5", 6881),))
    assert await node_provider(BrokenNode(), GoodRelays())() == IceServers((), TURN)
    assert await node_provider(object())() == NO_SERVERS
    assert await peer_provider(lambda: None)() == NO_SERVERS  # a Peer without a DHT node


# -- the path ----------------------------------------------------------------------------


def test_the_path_of_anything_else_is_unknown() -> None:
    unknown = {"local": "unknown", "remote": "unknown", "relayed": False}
    assert selected_path(None) == unknown
    assert selected_path(object()) == unknown
    assert selected_path(RTCPeerConnection()) == unknown  # not connected


# -- the daemon --------------------------------------------------------------------------


@dataclass
class Running:
    daemon: Daemon
    events: list[dict[str, Any]]

    async def req(self, session: aiohttp.ClientSession, method: str, path: str,
                  body: Any = None, token: bool = True) -> tuple[int, Any]:
        info = self.daemon.api_info
        assert info is not None
        headers = {"Authorization": f"Bearer {info.token}"} if token else {}
        async with session.request(method, info.url + path, headers=headers,
                                   data=json.dumps(body) if body is not None else None) as r:
            return r.status, await r.json()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Running, Running]]:
    ids = {n: load_or_create_identity(tmp_path / n).contact_id for n in ("alice", "bob")}
    for me, other in (("alice", "bob"), ("bob", "alice")):
        with ContactBook(tmp_path / me) as book:
            book.add(ids[other], other)

    async def provider() -> IceServers:  # what a node in the lab would give
        return IceServers((("198.18.0.5", 6881), ("127.0.0.1", 9)), TURN)

    loopback = loopback_ice()
    next(loopback)
    running: list[Daemon] = []
    try:
        async with local_testnet(8) as nodes:
            out = []
            for name, ice in (("alice", provider), ("bob", "node")):
                def make_peer(node: Any, name: str = name, ice: Any = ice) -> Peer:
                    return Peer(tmp_path / name, node=node, ice_servers=ice)

                d = Daemon(tmp_path / name, make_peer,
                           dht=DhtSettings(("127.0.0.1", 0), (nodes[0].address,)))
                events: list[dict[str, Any]] = []
                d.events.add_sink(events.append)
                await d.start()
                running.append(d)
                out.append(Running(d, events))
            yield out[0], out[1]
            for d in reversed(running):
                await d.stop()
            running.clear()
    finally:
        for d in reversed(running):
            await d.stop()
        next(loopback, None)


async def test_the_daemon_gives_the_page_its_servers_and_says_the_path(
        pair: tuple[Running, Running]) -> None:
    alice, bob = pair
    async with aiohttp.ClientSession() as session, asyncio.timeout(60):
        status, body = await alice.req(session, "GET", "/api/ice")
        assert status == 200
        # the page gets what the daemon's own peer connections get, minus loopback
        assert body == {"iceServers": [
            {"urls": ["stun:198.18.0.5:6881"]},
            {"urls": ["turn:198.18.0.8:3478?transport=udp"], "username": TURN.username,
             "credential": TURN.password}]}
        status, body = await alice.req(session, "GET", "/api/ice", token=False)
        assert status == 401 and "iceServers" not in body
        status, body = await bob.req(session, "GET", "/api/ice")  # no STUN/relay on loopback
        assert (status, body) == (200, {"iceServers": []})

        status, sent = await alice.req(session, "POST", "/api/send",
                                       {"contact": "bob", "text": "hi"})
        assert status == 200, sent
        host = {"local": "host", "remote": "host", "relayed": False}
        assert sent["path"] == host
        out = next(e for e in alice.events if e["event"] == "connected")
        assert out["path"] == host
        await eventually(lambda: any(e["event"] == "connected" for e in bob.events),
                         "bob's connected event")
        incoming = next(e for e in bob.events if e["event"] == "connected")
        assert incoming["path"] == host
        status, links = await alice.req(session, "GET", "/api/links")
        assert [link["path"] for link in links["links"]] == [host]

        # hung up: the next send calls again (what the NAT matrix benchmark does)
        status, gone = await alice.req(session, "DELETE", "/api/links/bob")
        assert (status, gone) == (200, {"contact": sent["to"], "closed": 1})
        await eventually(lambda: sum(e["event"] == "closed" for e in alice.events) == 1,
                         "alice's closed event")
        status, again = await alice.req(session, "POST", "/api/send",
                                        {"contact": "bob", "text": "again"})
        assert status == 200 and again["reused"] is False and again["path"] == host
        status, body = await alice.req(session, "DELETE", "/api/links/nobody")
        assert status == 404


# -- aioice's tunings --------------------------------------------------------------------


def test_the_tunings_wrap_aioice_once_and_can_be_undone() -> None:
    import aioice.ice

    from hailing.rtc.ice import answer_checks_at_once, prefer_direct_paths, tune_aioice

    tune_aioice()  # what the first rtc_configuration() does
    conn = aioice.ice.Connection
    original_start = conn.check_start.__wrapped__
    original_incoming = conn.check_incoming.__wrapped__
    try:
        assert prefer_direct_paths() and answer_checks_at_once()  # again: still one layer
        assert conn.check_start.__wrapped__ is original_start
        assert conn.check_incoming.__wrapped__ is original_incoming
        assert prefer_direct_paths(None) and answer_checks_at_once(False)
        assert conn.check_start is original_start
        assert conn.check_incoming is original_incoming
    finally:
        prefer_direct_paths()
        answer_checks_at_once()
    assert conn.check_start.__wrapped__ is original_start


async def test_a_connected_pair_without_relays_releases_nothing() -> None:
    from hailing.rtc.ice import release_unused_relays

    set_host_addresses(["127.0.0.1"])
    a, b = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
    opened = asyncio.Event()
    channel = a.createDataChannel("x")
    channel.on("open", opened.set)
    try:
        async with asyncio.timeout(20):
            await a.setLocalDescription(await a.createOffer())
            await b.setRemoteDescription(a.localDescription)
            await b.setLocalDescription(await b.createAnswer())
            await a.setRemoteDescription(b.localDescription)
            await opened.wait()
        assert selected_path(a) == {"local": "host", "remote": "host", "relayed": False}
        assert await release_unused_relays(a) == 0
        assert await release_unused_relays(object()) == 0
    finally:
        await a.close()
        await b.close()


async def test_stun_from_a_dht_node_and_the_redundant_candidate_pruned() -> None:
    from hailing.rtc.ice import prune_redundant_candidates

    set_host_addresses(["127.0.0.1"])
    async with local_testnet(2) as nodes:
        stun = [nodes[0].address]  # a hailing node answers STUN on its DHT port
        pc = RTCPeerConnection(rtc_configuration(stun))
        try:
            pc.createDataChannel("x")
            async with asyncio.timeout(20):
                await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
        finally:
            await pc.close()
    cands = [ln.split() for ln in sdp.splitlines() if ln.startswith("a=candidate:")]
    host = [c for c in cands if c[7] == "host"]
    srflx = [c for c in cands if c[7] == "srflx"]
    # on loopback the DHT node sees us as we are: the reflexive candidate is the host's
    assert host and srflx and [c[4:6] for c in srflx] == [c[4:6] for c in host]
    pruned = prune_redundant_candidates(sdp)
    assert "typ srflx" not in pruned and "typ host" in pruned
    assert [ln for ln in sdp.splitlines() if "typ srflx" not in ln] == pruned.splitlines()
    other = "a=candidate:2 1 udp 1 198.18.0.9 5000 typ srflx raddr 127.0.0.1 rport 1\r\n"
    assert prune_redundant_candidates(sdp + other).endswith(other)  # a real mapping stays


async def test_a_cached_value_lists_the_stun_servers_the_node_has_now() -> None:
    """The node forgets a vanished STUN server at once (nat/stun.py); a cached value
    must not list it to ICE until its next refresh (5 s of ICE's STUN timeout a call)."""
    servers = [("198.18.0.5", 6881), ("198.18.0.6", 6881)]
    asked = 0

    class Node:
        def stun_servers(self) -> list[tuple[str, int]]:
            return list(servers)

    class Relays:
        async def credentials(self) -> Creds:
            nonlocal asked
            asked += 1
            return TURN

    now = [0.0]
    source = IceServerSource(node_provider(Node(), Relays()), clock=lambda: now[0])
    async with asyncio.timeout(10):
        assert await source.get() == IceServers(tuple(servers), TURN)
        del servers[0]  # forgotten by the node
        now[0] = 1.0
        assert await source.get() == IceServers((("198.18.0.6", 6881),), TURN)
        servers.append(("198.18.0.7", 6881))  # a probe found another
        assert await source.get() == IceServers((("198.18.0.6", 6881), ("198.18.0.7", 6881)),
                                                TURN)
        assert asked == 1  # the relay's credentials stay cached
        peer = IceServerSource(peer_provider(lambda: Node()), clock=lambda: now[0])
        await peer.get()
        servers.clear()
        assert (await peer.get()).stun == ()
    await source.aclose()
