"""Browser calls through two daemons' local APIs, with aiortc playing each browser page:
the page makes the RTCPeerConnection (audio, video, the data channel ``hailing``), the
daemon seals and dials its SDP. In-process daemons on a loopback DHT testnet; ICE on
127.0.0.1 only. Every wait has a timeout; nothing here is timed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from pytest_helpers import loopback_ice
from session_doubles import eventually

from hailing.cli import build_parser
from hailing.daemon.calls import DEFAULT_RING_TIMEOUT, CallLog
from hailing.daemon.service import Daemon, DhtSettings
from hailing.identity import load_or_create_identity
from hailing.node import DhtNode
from hailing.peer import Peer
from hailing.rtc.ice import rtc_configuration
from hailing.services.contacts import ContactBook
from hailing.testnet import testnet as local_testnet

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

REFUSED = 3.0  # the timeout of calls nobody answers


@dataclass
class Node:
    """One running daemon, its events (as they were emitted) and an API client."""

    daemon: Daemon
    dir: Path
    session: aiohttp.ClientSession
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def contact_id(self) -> str:
        cid: str = self.daemon.peer.contact_id
        return cid

    async def req(self, method: str, path: str, body: Any = None, *,
                  raw: bytes | None = None) -> tuple[int, Any]:
        info = self.daemon.api_info
        assert info is not None
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        async with self.session.request(method, info.url + path, data=data, headers={
                "Authorization": f"Bearer {info.token}"}) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def event(self, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events
                         if all(e.get(k) == v for k, v in match.items())), None)

        await eventually(lambda: found() is not None, f"event {match}", timeout)
        event = found()
        assert event is not None
        return event


@dataclass
class World:
    nodes: list[DhtNode]
    tmp: Path
    session: aiohttp.ClientSession
    running: list[Daemon] = field(default_factory=list)

    async def daemon(self, name: str, peer_kw: dict[str, Any] | None = None,
                     **kw: Any) -> Node:
        data_dir = self.tmp / name

        def make_peer(node: Any) -> Peer:
            return Peer(data_dir, node=node, **(peer_kw or {}))

        d = Daemon(data_dir, make_peer, dht=DhtSettings(
            ("127.0.0.1", 0), (self.nodes[0].address,)), **kw)
        node = Node(d, data_dir, self.session)
        d.events.add_sink(node.events.append)
        await d.start()
        self.running.append(d)
        return node

    async def stop(self, node: Node) -> None:
        await node.daemon.stop()
        self.running.remove(node.daemon)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with local_testnet(10) as nodes, aiohttp.ClientSession() as session:
        w = World(nodes, tmp_path, session)
        try:
            yield w
        finally:
            for d in reversed(w.running):
                await d.stop()


def friends(tmp: Path, *names: str) -> dict[str, str]:
    ids = {n: load_or_create_identity(tmp / n).contact_id for n in names}
    for n in names:
        with ContactBook(tmp / n) as book:
            for other in names:
                if other != n:
                    book.add(ids[other], other)
    return ids


class Page:
    """What a browser page does with its RTCPeerConnection, in aiortc."""

    def __init__(self, video: bool = True) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.video = video
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self.peer_hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop(
        ).create_future()
        self.proof = ""
        self._readers: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_channel)

    def _add_tracks(self) -> None:
        self.pc.addTrack(AudioStreamTrack())
        if self.video:
            self.pc.addTrack(VideoStreamTrack())

    async def offer(self) -> str:
        self._add_tracks()
        self._on_channel(self.pc.createDataChannel("hailing"))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, offer: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        self._add_tracks()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def answered(self, answer: str, proof: str) -> None:
        self.proof = proof
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel

        def hello() -> None:
            channel.send(json.dumps({"t": "hello", "proof": self.proof, "reneg": True}))

        @channel.on("message")
        def message(data: Any) -> None:
            msg = json.loads(data)
            if msg.get("t") == "hello" and not self.peer_hello.done():
                self.peer_hello.set_result(msg)

        if channel.readyState == "open":
            hello()
        else:
            channel.on("open", hello)

    def _on_track(self, track: Any) -> None:
        async def read() -> None:
            try:
                while True:
                    await track.recv()
                    self.frames[track.kind] += 1
            except MediaStreamError:
                return

        self._readers.append(asyncio.ensure_future(read()))

    async def close(self) -> None:
        for t in self._readers:
            t.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.pc.close()


async def ring(world: World) -> tuple[Node, Node, dict[str, str]]:
    ids = friends(world.tmp, "alice", "bob")
    return await world.daemon("alice"), await world.daemon("bob"), ids


# -- a whole call ------------------------------------------------------------------------------


async def test_a_video_call_between_two_pages_through_two_daemons(world: World) -> None:
    alice, bob, ids = await ring(world)
    page_a, page_b = Page(), Page()
    try:
        offer = await page_a.offer()
        placing = asyncio.ensure_future(alice.req("POST", "/api/calls", {
            "contact": "bob", "sdp": offer, "media": "video", "call": "call-1",
            "timeout": 20}))
        rang = await bob.event(event="ring")
        assert rang["from"] == ids["alice"] and rang["contact"] == "alice"
        assert rang["media"] == "video" and rang["expires"] > rang["at"]
        call_id = rang["call"]
        status, got = await bob.req("GET", f"/api/calls/{call_id}")
        assert status == 200 and got["state"] == "ringing" and got["from"] == ids["alice"]
        assert got["sdp"] == offer  # ICE hosts are 127.0.0.1: nothing to filter
        status, accepted = await bob.req("POST", f"/api/calls/{call_id}/accept",
                                         {"sdp": await page_b.answer(got["sdp"])})
        assert status == 200, accepted
        page_b.proof = accepted["proof"]
        status, answer = await placing
        assert status == 200, answer
        assert answer["call"] == "call-1" and answer["to"] == ids["bob"]
        assert answer["contact"] == "bob" and answer["coupler"] == "dht"
        assert answer["signal_ms"] > 0
        await page_a.answered(answer["sdp"], answer["proof"])
        await bob.event(event="ring-ended", call=call_id, reason="answered")

        # Each page forwards the other's hello proof to its daemon: both verify.
        hello_b = await asyncio.wait_for(page_a.peer_hello, 20)
        hello_a = await asyncio.wait_for(page_b.peer_hello, 20)
        assert hello_a["reneg"] is True
        assert await alice.req("POST", "/api/calls/call-1/verify",
                               {"proof": hello_b["proof"]}) == (200, {"ok": True})
        assert await bob.req("POST", f"/api/calls/{call_id}/verify",
                             {"proof": hello_a["proof"]}) == (200, {"ok": True})
        # ... and nothing else does (a page's own proof, junk).
        assert await bob.req("POST", f"/api/calls/{call_id}/verify",
                             {"proof": hello_b["proof"]}) == (200, {"ok": False})
        assert await alice.req("POST", "/api/calls/call-1/verify",
                               {"proof": "00" * 64}) == (200, {"ok": False})

        # Media flows both ways.
        await eventually(lambda: min(*page_a.frames.values(), *page_b.frames.values()) >= 3,
                         "frames on both pages", 30)

        status, ended = await alice.req("POST", "/api/calls/call-1/end", {"reason": "bye"})
        assert status == 200 and ended["state"] == "ended" and ended["reason"] == "bye"
        assert ended["duration_s"] >= 0 and ended["to"] == ids["bob"]
        status, ended_b = await bob.req("POST", f"/api/calls/{call_id}/end", {})
        assert status == 200 and ended_b["state"] == "ended" and "duration_s" in ended_b
        await alice.event(event="call-ended", call="call-1")
        await bob.event(event="call-ended", call=call_id)
        # The call logs, newest first; the existing ``call`` event too.
        status, log_b = await bob.req("GET", "/api/calls?limit=10")
        assert [(c["call"], c["direction"], c["state"], c["media"]) for c in log_b["calls"]] \
            == [(call_id, "in", "ended", "video")]
        assert log_b["calls"][0]["contact"] == "alice"
        status, log_a = await alice.req("GET", "/api/calls")
        assert [(c["call"], c["direction"], c["state"]) for c in log_a["calls"]] == [
            ("call-1", "out", "ended")]
        await bob.event(event="call", accepted=True)
        # Accepting again, or an ended call: 409, never a 500.
        status, again = await bob.req("POST", f"/api/calls/{call_id}/accept", {"sdp": offer})
        assert status == 409 and "no longer rings" in again["error"]
        # Nothing was answered by the daemon's own aiortc.
        assert bob.daemon.peer.stats["failed_answers"] == 0
    finally:
        await page_a.close()
        await page_b.close()


async def test_a_page_calls_a_daemon_that_answers_by_itself(world: World) -> None:
    """``hailing up --auto-answer``: aiortc answers the page's offer (nothing rings); the
    page's proof, signed by its daemon, passes the Python side's check and the Python
    side's passes the page's; the callee's call log has the call, answered then ended."""
    from hailing.rtc.media import MediaOptions

    ids = friends(world.tmp, "alice", "bot")
    media = MediaOptions()  # sends nothing, keeps nothing
    alice = await world.daemon("alice")
    bot = await world.daemon("bot", {"answer_tracks": media.answer_tracks}, media=media)
    page = Page()
    try:
        status, answer = await alice.req("POST", "/api/calls", {
            "contact": "bot", "sdp": await page.offer(), "media": "video", "call": "to-bot",
            "timeout": 20})
        assert status == 200, answer
        await page.answered(answer["sdp"], answer["proof"])
        hello = await asyncio.wait_for(page.peer_hello, 20)
        assert await alice.req("POST", "/api/calls/to-bot/verify",
                               {"proof": hello["proof"]}) == (200, {"ok": True})
        connected = await bot.event(event="connected")  # only once the page's proof passed
        assert connected["from"] == ids["alice"] and "video" in connected["media"]
        assert not any(e["event"] == "ring" for e in bot.events)
        _, log = await bot.req("GET", "/api/calls")
        assert [(c["direction"], c["state"], c["media"], c["from"]) for c in log["calls"]] == [
            ("in", "answered", "video", ids["alice"])]
        await page.close()  # the page hangs up
        ended = await bot.event(event="call-ended")
        assert ended["from"] == ids["alice"] and ended["duration_s"] >= 0
        _, log = await bot.req("GET", "/api/calls")
        assert log["calls"][0]["state"] == "ended" and "duration_s" in log["calls"][0]
    finally:
        await page.close()


# -- refusals look like absence ------------------------------------------------------------------


async def test_a_declined_or_blocked_call_reads_exactly_like_an_offline_callee(
        world: World) -> None:
    ids = friends(world.tmp, "alice", "bob", "carol")  # carol never comes online
    # alice's calls carry no timeout, as a page's: her daemon's ring timeout applies
    alice = await world.daemon("alice", ring_timeout=REFUSED)
    bob = await world.daemon("bob")
    page = Page(video=False)
    try:
        offer = await page.offer()

        async def call(who: str, call_id: str) -> tuple[int, Any]:
            return await alice.req("POST", "/api/calls", {
                "contact": who, "sdp": offer, "media": "audio", "call": call_id})

        offline = await call("carol", "to-carol")
        placing = asyncio.ensure_future(call("bob", "to-bob"))
        rang = await bob.event(event="ring")
        assert await bob.req("POST", f"/api/calls/{rang['call']}/decline") == (
            200, {"call": rang["call"], "declined": True})
        declined = await placing
        assert offline[0] == declined[0] == 504
        assert offline[1] == declined[1]
        assert declined[1]["kind"] == "QueryTimeout"
        assert declined[1]["error"].startswith("nobody answered within 3 s")
        await bob.event(event="ring-ended", call=rang["call"], reason="declined")

        # Busy, then blocked (bob accepting anyone, so the offer still reaches him
        # through his public inbox): the same, and bob never rings.
        rings = len([e for e in bob.events if e["event"] == "ring"])
        assert (await bob.req("POST", "/api/status", {"status": "busy"}))[0] == 200
        assert await call("bob", "busy") == (offline[0], offline[1])
        await bob.event(event="call", accepted=False, reason="busy")
        assert (await bob.req("POST", "/api/status", {"status": "available",
                                                      "accept_any": True}))[0] == 200
        status, _ = await bob.req("POST", f"/api/contacts/{ids['alice']}/block")
        assert status == 200
        assert await call("bob", "blocked") == (offline[0], offline[1])
        await bob.event(event="call", accepted=False, reason="blocked")
        assert len([e for e in bob.events if e["event"] == "ring"]) == rings
        _, log_b = await bob.req("GET", "/api/calls")
        assert [(c["state"], c.get("reason"), c["from"]) for c in log_b["calls"]] == [
            ("refused", "blocked", ids["alice"]), ("refused", "busy", ids["alice"]),
            ("declined", "declined", ids["alice"])]
        _, log_a = await alice.req("GET", "/api/calls")
        assert [(c["call"], c["state"], c["reason"]) for c in log_a["calls"]] == [
            ("blocked", "failed", "no answer"), ("busy", "failed", "no answer"),
            ("to-bob", "failed", "no answer"), ("to-carol", "failed", "no answer")]
        # (refusals are the callee's to know: the caller's log says no answer)
    finally:
        await page.close()


# -- hanging up before the answer ------------------------------------------------------------------


async def test_a_caller_that_hangs_up_while_ringing_is_a_missed_call(world: World) -> None:
    alice, bob, ids = await ring(world)
    page = Page(video=False)
    try:
        offer = await page.offer()
        body = {"contact": ids["bob"], "sdp": offer, "media": "audio", "call": "c1",
                "timeout": 30}
        placing = asyncio.ensure_future(alice.req("POST", "/api/calls", body))
        rang = await bob.event(event="ring")
        # The caller's page cancels (DELETE): bob's ringing stops, a missed call.
        assert await alice.req("DELETE", "/api/calls/c1") == (200, {"call": "c1",
                                                                     "cancelled": True})
        status, err = await placing
        assert status == 409 and "cancelled" in err["error"]
        await bob.event(event="ring-ended", call=rang["call"], reason="cancelled")
        missed = await bob.event(event="missed", call=rang["call"])
        assert missed["from"] == ids["alice"] and missed["contact"] == "alice"
        status, entry = await bob.req("GET", f"/api/calls/{rang['call']}")
        assert (entry["state"], entry["reason"]) == ("missed", "cancelled")
        status, entry = await bob.req("POST", f"/api/calls/{rang['call']}/accept",
                                      {"sdp": offer})
        assert status == 409 and "missed" in entry["error"]

        # The page aborting its request does the same.
        start = len(bob.events)
        placing = asyncio.ensure_future(alice.req("POST", "/api/calls", {**body, "call": "c2"}))
        await eventually(lambda: any(e["event"] == "ring" for e in bob.events[start:]),
                         "the second ring")
        placing.cancel()
        await asyncio.gather(placing, return_exceptions=True)
        await eventually(lambda: any(e["event"] == "missed" for e in bob.events[start:]),
                         "the second missed call", 20)
        _, log_a = await alice.req("GET", "/api/calls")
        await eventually(lambda: alice.daemon.calls is not None and
                         alice.daemon.calls.log.get("c2")["state"] == "cancelled",  # type: ignore[index]
                         "the caller's log")
        assert [c["call"] for c in log_a["calls"]][-1] == "c1"
        assert bob.daemon.peer.stats["cancelled_calls"] == 2

        # A restart keeps the log; nothing rings again.
        _, before = await bob.req("GET", "/api/calls")
        await world.stop(bob)
        bob2 = await world.daemon("bob")
        _, after = await bob2.req("GET", "/api/calls")
        assert after == before and [c["state"] for c in after["calls"]] == ["missed", "missed"]
        assert not any(e["event"] == "ring" for e in bob2.events)
    finally:
        await page.close()


# -- --on-call ---------------------------------------------------------------------------------------


async def test_the_on_call_command_gets_the_ring_as_json(world: World, tmp_path: Path) -> None:
    ids = friends(world.tmp, "alice", "bob")
    out = tmp_path / "ring.json"
    script = "import sys; open(sys.argv[1], 'w').write(sys.stdin.read())"
    alice = await world.daemon("alice")
    bob = await world.daemon("bob", on_call=[sys.executable, "-c", script, str(out)])
    page = Page(video=False)
    try:
        placing = asyncio.ensure_future(alice.req("POST", "/api/calls", {
            "contact": "bob", "sdp": await page.offer(), "media": "audio", "timeout": 5}))
        rang = await bob.event(event="ring")
        await eventually(lambda: out.exists() and out.read_text().endswith("\n"),
                         "the command's output")
        line = out.read_text()
        assert line.count("\n") == 1
        got = json.loads(line)
        assert got == {k: rang[k] for k in got} and got["event"] == "ring"
        assert got["from"] == ids["alice"] and got["call"] == rang["call"]
        await eventually(lambda: bob.daemon.status()["calls"].get("on_call_runs") == 1,
                         "the run counted")
        assert (await placing)[0] == 504
    finally:
        await page.close()


async def test_a_failing_on_call_command_is_counted_never_fatal(world: World) -> None:
    friends(world.tmp, "alice", "bob")
    alice = await world.daemon("alice")
    bob = await world.daemon("bob", on_call=["/nonexistent/notify"])
    page = Page(video=False)
    try:
        placing = asyncio.ensure_future(alice.req("POST", "/api/calls", {
            "contact": "bob", "sdp": await page.offer(), "media": "audio", "timeout": 3}))
        await bob.event(event="ring")
        await eventually(lambda: bob.daemon.status()["calls"].get("on_call_failures") == 1,
                         "the failure counted")
        assert (await placing)[0] == 504
        assert not bob.daemon.failed.is_set()
        assert (await bob.req("GET", "/api/status"))[0] == 200
    finally:
        await page.close()


# -- garbage -------------------------------------------------------------------------------------------


async def test_garbage_to_every_call_route_is_a_clear_4xx(world: World) -> None:
    alice, bob, _ = await ring(world)
    page = Page(video=False)
    try:
        offer = await page.offer()
        good = {"contact": "bob", "sdp": offer, "media": "audio"}
        cases: list[tuple[str, str, Any, int]] = [
            ("POST", "/api/calls", {}, 400),
            ("POST", "/api/calls", {**good, "sdp": 5}, 400),
            ("POST", "/api/calls", {**good, "sdp": "hello"}, 400),
            ("POST", "/api/calls", {**good, "sdp": "v=0\r\n" + "a=x\r\n" * 5000}, 400),
            ("POST", "/api/calls", {**good, "sdp": "v=0\r\nm=application 9 x\r\n"}, 400),
            ("POST", "/api/calls", {**good, "media": "smell"}, 400),
            ("POST", "/api/calls", {**good, "media": ["audio"]}, 400),
            ("POST", "/api/calls", {**good, "contact": "nobody"}, 404),
            ("POST", "/api/calls", {**good, "contact": 7}, 400),
            ("POST", "/api/calls", {**good, "call": "a b/c"}, 400),
            ("POST", "/api/calls", {**good, "call": "x" * 65}, 400),
            ("POST", "/api/calls", {**good, "call": 3}, 400),
            ("POST", "/api/calls", {**good, "timeout": -1}, 400),
            ("POST", "/api/calls", {**good, "timeout": "soon"}, 400),
            ("POST", "/api/calls", [1, 2], 400),
            ("GET", "/api/calls?limit=lots", None, 400),
            ("GET", "/api/calls/nope", None, 404),
            ("DELETE", "/api/calls/nope", None, 404),
            ("POST", "/api/calls/nope/accept", {"sdp": offer}, 404),
            ("POST", "/api/calls/nope/accept", {"sdp": 1}, 400),
            ("POST", "/api/calls/nope/decline", None, 404),
            ("POST", "/api/calls/nope/verify", {"proof": "00"}, 404),
            ("POST", "/api/calls/nope/verify", {"proof": 5}, 400),
            ("POST", "/api/calls/nope/verify", {}, 400),
            ("POST", "/api/calls/nope/end", None, 404),
            ("POST", "/api/calls/nope/end", {"reason": 5}, 400),
            ("POST", "/api/calls/nope/end", {"reason": "x" * 1000}, 400),
            ("PUT", "/api/calls", {}, 405),
        ]
        for method, path, body, want in cases:
            status, answer = await alice.req(method, path, body)
            assert status == want, (method, path, answer)
            assert isinstance(answer["error"], str) and answer["error"], answer
        status, answer = await alice.req("POST", "/api/calls", raw=b"{not json")
        assert status == 400
        status, answer = await alice.req("POST", "/api/calls/x/accept", raw=b"\xff\xfe")
        assert status == 400

        # A ringing call: the wrong things to do with it.
        placing = asyncio.ensure_future(alice.req("POST", "/api/calls", {
            **good, "call": "g1", "timeout": 10}))
        rang = await bob.event(event="ring")
        cid = rang["call"]
        assert (await alice.req("POST", "/api/calls", {**good, "call": "g1"}))[0] == 409
        for bad, want in [({"sdp": "v=0 nonsense"}, 400), ({"sdp": offer * 3}, 400),
                          ({}, 400)]:
            status, answer = await bob.req("POST", f"/api/calls/{cid}/accept", bad)
            assert status == want, answer
        assert (await alice.req("POST", "/api/calls/g1/accept", {"sdp": offer}))[0] == 400
        assert await bob.req("POST", f"/api/calls/{cid}/verify", {"proof": "zz"}) == (
            200, {"ok": False})  # not answered yet
        assert (await bob.req("GET", f"/api/calls/{cid}"))[1]["state"] == "ringing"
        assert await alice.req("DELETE", "/api/calls/g1") == (200, {"call": "g1",
                                                                     "cancelled": True})
        assert (await placing)[0] == 409
        await bob.event(event="missed", call=cid)
        assert (await bob.req("POST", f"/api/calls/{cid}/decline"))[0] == 409
        assert (await alice.req("DELETE", "/api/calls/g1"))[0] == 409
        assert (await alice.req("POST", "/api/calls/g1/verify", {"proof": "00"}))[0] == 409
        # Still serving, and nothing crashed.
        assert (await alice.req("GET", "/api/status"))[0] == 200
        assert not alice.daemon.failed.is_set() and not bob.daemon.failed.is_set()
    finally:
        await page.close()


# -- the log on its own -----------------------------------------------------------------------------


def test_the_call_log_is_bounded_and_closes_what_a_stop_left_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hailing.daemon.calls as calls_mod

    monkeypatch.setattr(calls_mod, "MAX_LOG", 5)
    peer = bytes(range(32))
    with CallLog(tmp_path) as log:
        for i in range(8):
            log.add(f"c{i}", "in" if i % 2 else "out", peer, "audio", "ended", at=100.0 + i)
        log.add("ring", "in", peer, "video", "ringing", at=200.0)
        log.add("out", "out", peer, "audio", "ringing", at=201.0)
        log.add("live", "in", peer, "audio", "answered", at=202.0)
        log.update("live", "answered", answered_at=203.0)
        assert log.count() == 5
        assert [e["call"] for e in log.page(10)] == ["live", "out", "ring", "c7", "c6"]
    with CallLog(tmp_path, now=260.0) as log:
        states: Callable[[str], tuple[str, str]] = lambda c: (  # noqa: E731
            log.get(c)["state"], log.get(c)["reason"])  # type: ignore[index]
        assert states("ring") == ("missed", "daemon stopped")
        assert states("out") == ("failed", "daemon stopped")
        assert states("live") == ("ended", "daemon stopped")
        assert log.get("live")["duration_s"] == 57.0  # type: ignore[index]
        assert log.get("c7")["from"].startswith("hl")  # type: ignore[index]


def test_the_on_call_command_line_is_split_without_a_shell() -> None:
    import argparse

    from hailing.cli.up import _command

    assert _command("notify-send 'a call' --urgency=critical") == [
        "notify-send", "a call", "--urgency=critical"]
    assert _command("echo $HOME; rm -rf x") == ["echo", "$HOME;", "rm", "-rf", "x"]
    for bad in ["", "   ", "'unclosed"]:
        with pytest.raises(argparse.ArgumentTypeError):
            _command(bad)


@pytest.mark.parametrize("bad", ["0", "-1", "301", "soon"])
def test_the_ring_timeout_of_hailing_up(bad: str) -> None:
    """``hailing up --ring-timeout S``: what a page's call waits when it gives none."""
    assert build_parser().parse_args(["up"]).ring_timeout == DEFAULT_RING_TIMEOUT == 30
    assert build_parser().parse_args(["up", "--ring-timeout", "8"]).ring_timeout == 8
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["up", "--ring-timeout", bad])
    assert exc.value.code == 2
