"""Links to friends and the ladder, at the session level: the ``link`` coupler signals a
further call (with media) over an open link, node ids are exchanged over links and kept
with the contact, the ``network`` coupler forwards through a forwarder (a double here;
the overlay's own tests run the real one), the default ladder, ladders as text, and the
friend marks of the contact book. Two Peers in one process on a loopback testnet."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pytest_helpers import loopback_ice
from session_doubles import PeerNet as Net
from session_doubles import eventually, peer_net

from hailing.errors import (
    HailingError,
    LocalProtocolError,
    NotFoundError,
    QueryTimeout,
    UsageError,
)
from hailing.peer import Peer
from hailing.services.contacts import ContactBook
from hailing.services.friends import FriendBook
from hailing.session.dialer import Rung
from hailing.session.ladder import default_ladder, describe, ladder_from_text
from hailing.session.link_coupler import NO_LINK, LinkCoupler
from hailing.session.network_coupler import KIND, NO_NODE_ID, NO_OVERLAY, NetworkCoupler
from hailing.session.node_ids import KIND_NODE, NodeIds
from hailing.session.router import Source
from hailing.signaling import envelope

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with peer_net(tmp_path) as n:
        yield n


async def befriend(a: Peer, b: Peer) -> None:
    assert a.contacts is not None and b.contacts is not None
    a.contacts.add(b.contact_id, "b")
    b.contacts.add(a.contact_id, "a")
    await a.refresh()
    await b.refresh()


# -- the link coupler ---------------------------------------------------------------------


async def test_a_media_call_is_signaled_over_the_open_link(net: Net) -> None:
    ladder = [Rung("link", 5.0), Rung("dht")]
    alice = await net.peer("alice", ladder=ladder)
    bob = await net.peer("bob", ladder=ladder)
    await befriend(alice, bob)
    first = await alice.connect(bob.contact_id, timeout=15)
    await bob.accept(10)
    assert first.coupler == "dht"
    assert [a.coupler for a in alice.dialer.last] == ["link", "dht"]  # type: ignore[union-attr]
    assert alice.dialer.last[0].error == NO_LINK  # type: ignore[union-attr]

    call = await alice.connect(bob.contact_id, timeout=15, tracks=["audio"])
    answered = await bob.accept(10)
    assert call.coupler == "link" and answered.coupler == "channel"
    assert call.tracks.kinds == ["audio"]
    assert answered.tracks.kinds == ["audio"]
    assert [a.coupler for a in alice.dialer.last] == ["link"]  # type: ignore[union-attr]
    await call.close()
    await first.close()


async def test_the_link_coupler_fails_at_once_without_a_link() -> None:
    coupler = LinkCoupler(lambda peer: None)
    with pytest.raises(NotFoundError, match=NO_LINK):
        await coupler.send(b"p" * 32, b"blob", "offer")
    assert coupler.reply_hint(b"p" * 32) is None
    assert coupler.capabilities.reach == "friends"


# -- node ids over links ------------------------------------------------------------------


async def test_node_ids_are_exchanged_over_a_link_and_kept_with_the_contact(
        net: Net, tmp_path: Path) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await befriend(alice, bob)
    conn = await alice.connect(bob.contact_id, timeout=15)
    inc = await bob.accept(10)
    assert alice.node is not None and bob.node is not None
    assert alice.node_ids is not None and bob.node_ids is not None
    await eventually(lambda: alice.node_ids.of(bob.public_key) == bob.node.node_id,  # type: ignore[union-attr]
                     "alice learns bob's node id")
    await eventually(lambda: bob.node_ids.of(alice.public_key) == alice.node.node_id,  # type: ignore[union-attr]
                     "bob learns alice's node id")
    # sent right after each side's proof, before the other side tracked the connection:
    # still taken, never dropped as an unexpected signal
    assert conn.stats["garbage"] == 0 and inc.stats["garbage"] == 0
    assert alice.stats["node_ids_sent"] == 1 and bob.stats["node_ids_sent"] == 1
    await conn.close()
    with FriendBook(tmp_path / "alice") as book:  # kept on disk: a restart knows it
        assert book.node_id(bob.public_key) == bob.node.node_id


def _node_ids(stats: Counter[str], contact: bool = True) -> tuple[NodeIds, list[bytes]]:
    from hailing.identity import Identity

    saved: list[bytes] = []
    ids = NodeIds(Identity.generate(), stats=stats, own=lambda: b"n" * 20,
                  is_contact=lambda p: contact, load=lambda p: None,
                  save=lambda p, n: saved.append(n))
    return ids, saved


def test_a_node_id_is_taken_only_over_a_link_from_a_contact() -> None:
    stats: Counter[str] = Counter()
    ids, saved = _node_ids(stats)

    class Channel:
        peer = b"s" * 32

    def opened(body: bytes) -> envelope.Opened:
        return envelope.Opened(sender=b"s" * 32, kind=KIND_NODE, body=body, timestamp=0.0,
                               expires=1e12, nonce=b"x" * 24, fingerprint=None)

    ids.received(opened(b"i" * 20), Source())  # through a coupler, not a link
    assert stats["node_ids_refused"] == 1 and saved == []
    ids.received(opened(b"i" * 19), Source(channel=Channel()))  # type: ignore[arg-type]
    assert stats["node_ids_bad"] == 1 and saved == []
    ids.received(opened(b"i" * 20), Source(channel=Channel()))  # type: ignore[arg-type]
    assert saved == [b"i" * 20] and ids.of(b"s" * 32) == b"i" * 20
    stranger, _ = _node_ids(stats, contact=False)
    stranger.received(opened(b"i" * 20), Source(channel=Channel()))  # type: ignore[arg-type]
    assert stats["node_ids_refused"] == 2


# -- the network coupler ------------------------------------------------------------------


class Overlay:
    """Forwarders that deliver straight to the target's handler (a double)."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, dict[bytes, Callable[[bytes, bytes], Awaitable[bytes | None]]]] = {}
        self.seen: list[bytes] = []

    def forwarder(self, node_id: bytes) -> Forwarder:
        return Forwarder(self, node_id)


class Forwarder:
    def __init__(self, overlay: Overlay, node_id: bytes) -> None:
        self.overlay, self.node_id = overlay, node_id
        overlay.nodes[node_id] = {}

    def handle(self, kind: bytes,
               handler: Callable[[bytes, bytes], Awaitable[bytes | None]]) -> None:
        self.overlay.nodes[self.node_id][kind] = handler

    async def send_toward(self, target: bytes, kind: bytes, payload: bytes,
                          timeout: float) -> bytes:
        self.overlay.seen.append(payload)
        handler = self.overlay.nodes.get(target, {}).get(kind)
        if handler is None:
            raise QueryTimeout("no route")
        return await handler(payload, self.node_id) or b""


async def test_a_call_goes_through_the_network_coupler_once_node_ids_are_known(
        net: Net) -> None:
    overlay = Overlay()
    ladder = [Rung("network", 5.0), Rung("dht")]
    alice = await net.peer("alice", ladder=ladder)
    bob = await net.peer("bob", ladder=ladder)
    assert alice.node is not None and bob.node is not None
    alice.forwarder = overlay.forwarder(alice.node.node_id)
    bob.forwarder = overlay.forwarder(bob.node.node_id)
    await befriend(alice, bob)
    first = await alice.connect(bob.contact_id, timeout=15)
    await bob.accept(10)
    assert first.coupler == "dht"
    assert alice.dialer.last[0].error == NO_NODE_ID  # type: ignore[union-attr]
    await eventually(lambda: alice.node_ids.of(bob.public_key) is not None,  # type: ignore[union-attr]
                     "a node id")
    await first.close()

    second = await alice.connect(bob.contact_id, timeout=15)
    inc = await bob.accept(10)
    assert second.coupler == "network" and inc.coupler == "network"
    # the offer and the answer crossed the overlay sealed: no SDP in clear
    assert len(overlay.seen) >= 2 and not any(b"a=fingerprint" in s for s in overlay.seen)
    await second.close()


async def test_the_network_coupler_fails_at_once_without_overlay_or_node_id() -> None:
    stats: Counter[str] = Counter()
    none = NetworkCoupler(lambda: None, lambda p: b"n" * 20, lambda: b"o" * 20, stats=stats)
    with pytest.raises(NotFoundError, match=NO_OVERLAY):
        await none.send(b"p" * 32, b"blob", "offer")
    assert none.reply_hint(b"p" * 32) is None and not none.available
    overlay = Overlay()
    unknown = NetworkCoupler(lambda: overlay.forwarder(b"o" * 20), lambda p: None,
                             lambda: b"o" * 20)
    with pytest.raises(NotFoundError, match=re.escape(NO_NODE_ID)):
        await unknown.send(b"p" * 32, b"blob", "offer")
    assert unknown.reply_hint(b"p" * 32) == b"o" * 20
    assert not unknown.reply_direct(b"p" * 32, b"short", b"blob")
    assert unknown.reply_direct(b"p" * 32, b"t" * 20, b"blob")  # the answer's route
    handler = overlay.nodes[b"t" * 20] = {}
    got: list[bytes] = []

    async def take(payload: bytes, origin: bytes) -> None:
        got.append(payload)

    handler[KIND] = take
    assert await unknown.send(b"p" * 32, b"blob", "answer") == 1 and got == [b"blob"]


# -- ladders ------------------------------------------------------------------------------


def test_the_default_ladder_has_only_what_is_available() -> None:
    assert describe(default_ladder(network=True, dht=True, mainline=True, contract=True)
                    ) == "link:5,network:10,dht,mainline,contract"
    assert describe(default_ladder(dht=True, mainline=True)) == "link:5,dht,mainline"
    ladder = default_ladder(dht=True, mainline=True)
    assert [r.after_timeout for r in ladder] == [True, True, False]
    assert describe(default_ladder(contract=True)) == "link:5,contract"
    with pytest.raises(LocalProtocolError):
        default_ladder(link=False)


def test_ladders_as_text() -> None:
    rungs = ladder_from_text("link:3, dht,mainline,contract")
    assert [(r.name, r.timeout, r.after_timeout) for r in rungs] == [
        ("link", 3.0, True), ("dht", None, True), ("mainline", None, False),
        ("contract", None, True)]
    assert describe(ladder_from_text(["mainline", "dht"])) == "mainline,dht"
    assert ladder_from_text(["mainline", "dht"])[0].after_timeout
    for bad, why in (("link,smoke", "unknown coupler 'smoke'"), ("dht:soon", "seconds"),
                     ("dht,dht", "twice"), ("link:0", "positive"), ("", "at least one")):
        with pytest.raises(LocalProtocolError, match=why):
            ladder_from_text(bad)


async def test_a_peer_refuses_an_unknown_rung(tmp_path: Path) -> None:
    with pytest.raises(HailingError, match="no coupler named 'smoke'"):
        Peer(tmp_path / "x", ladder=["link", "smoke"])


# -- friend marks -------------------------------------------------------------------------


def test_friend_marks_and_node_ids_persist_and_bump_the_book_version(tmp_path: Path) -> None:
    key = b"k" * 32
    with ContactBook(tmp_path) as book, FriendBook(tmp_path) as friends:
        book.add(key, "kim")
        v0 = book.version()
        friends.set_friend(key)
        assert friends.is_friend(key) and friends.marked() == [key]
        v1 = book.version()
        assert v1 != v0
        assert friends.set_node_id(key, b"n" * 20)
        assert not friends.set_node_id(key, b"n" * 20)
        assert book.version() == v1  # learning a node id is no change of the book
        with pytest.raises(LocalProtocolError):
            friends.set_node_id(key, b"short")
        friends.set_friend(key, False)
        assert friends.marked() == [] and book.version() != v1
    with FriendBook(tmp_path) as again:
        assert again.node_id(key) == b"n" * 20 and not again.is_friend(key)


def test_up_takes_its_ladder_from_the_flag_or_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from hailing.cli import build_parser, main
    from hailing.cli._shared import prepare
    from hailing.cli.up import _daemon_parts

    data = tmp_path / "d"
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)

    def ladder(*argv: str) -> str:
        args = build_parser().parse_args(["up", "--data-dir", str(data), "--bootstrap",
                                          "127.0.0.1:1", *argv])
        prepare(args)
        make_peer = _daemon_parts(args)[0]
        return describe(make_peer(None).ladder)

    # the overlay is on by default: the network rung is available
    assert ladder() == "link:5,network:10,dht,mainline"
    assert ladder("--no-bep44-fallback") == "link:5,network:10,dht"
    assert ladder("--links", "0") == "link:5,dht,mainline"
    assert ladder("--ladder", "dht:4,link") == "dht:4,link"
    assert main(["config", "set", "ladder", "link:2,dht,mainline", "--data-dir", str(data)]) == 0
    assert ladder() == "link:2,dht,mainline"
    assert ladder("--ladder", "dht") == "dht"  # the flag wins
    assert ladder("--links", "8") == "link:2,dht,mainline"  # config.toml's, still
    assert ladder("--links", "8", "--ladder", "network,dht") == "network,dht"
    assert ladder("--ladder", "link,network") == "link,network"
    with pytest.raises(UsageError, match="leave 'network' out of the ladder"):
        ladder("--links", "0", "--ladder", "link,network")
    assert main(["config", "unset", "ladder", "--data-dir", str(data)]) == 0
    assert ladder("--links", "8") == "link:5,network:10,dht,mainline"
    assert main(["config", "set", "ladder", "link,carrier-pigeon", "--data-dir", str(data)]) == 1
    assert "unknown coupler 'carrier-pigeon'" in capsys.readouterr().err
    help_text = build_parser()._subparsers._group_actions[0].choices["up"].format_help()  # type: ignore[union-attr]
    assert "--ladder NAMES" in help_text and "network" in help_text


async def test_a_call_through_the_real_forwarder(net: Net) -> None:
    """The network coupler over :class:`~hailing.transport.forward.Forwarder` (its links
    here: a stand-in listing the other node at its UDP address, as tests/test_forward.py
    does; the same over data channels is the overlay's tests)."""
    from dataclasses import dataclass

    from hailing.transport.forward import Forwarder

    @dataclass
    class Link:
        peer_id: bytes
        addr: object
        is_open: bool = True

    @dataclass
    class Links:
        items: list[Link]

        def links(self) -> list[Link]:
            return list(self.items)

    ladder = [Rung("network", 5.0), Rung("dht")]
    alice = await net.peer("alice", ladder=ladder)
    bob = await net.peer("bob", ladder=ladder)
    assert alice.node is not None and bob.node is not None
    alice.forwarder = Forwarder(alice.node, Links([Link(bob.node.node_id, bob.node.address)]),
                                udp=False)
    bob.forwarder = Forwarder(bob.node, Links([Link(alice.node.node_id, alice.node.address)]),
                              udp=False)
    try:
        await befriend(alice, bob)
        first = await alice.connect(bob.contact_id, timeout=15)
        await bob.accept(10)
        await eventually(lambda: alice.node_ids.of(bob.public_key) is not None,  # type: ignore[union-attr]
                         "a node id")
        await first.close()
        call = await alice.connect(bob.contact_id, timeout=15, tracks=["audio"])
        inc = await bob.accept(10)
        assert call.coupler == "network" and inc.coupler == "network"
        assert call.tracks.kinds == ["audio"]
        assert alice.forwarder.stats["sent"] >= 1 and bob.forwarder.stats["sent"] >= 1
        await call.close()
    finally:
        await alice.forwarder.aclose()
        await bob.forwarder.aclose()


# -- the daemon's friend-link keeper (deterministic: a fake clock and dial) ----------------


async def test_friend_links_back_off_yield_to_the_larger_key_and_pin() -> None:
    from hailing.daemon.events import EventBus
    from hailing.daemon.friend_links import FriendLinks
    from hailing.daemon.links import Links

    now = [100.0]
    dials: list[tuple[bytes, float]] = []

    async def dial(peer: bytes, timeout: float) -> object:
        dials.append((peer, now[0]))
        raise QueryTimeout("nobody answered")

    events: list[dict[str, object]] = []
    bus = EventBus()
    bus.add_sink(events.append)
    links = Links(dial, bus, idle_close=0)
    small, large = b"\x01" * 32, b"\xff" * 32
    keeper = FriendLinks(links, lambda: [small, large], lambda: b"\x80" * 32, bus,
                         clock=lambda: now[0], jitter=lambda: 0.5, yield_wait=3.0)

    async def step() -> None:
        keeper.step()
        for _ in range(5):
            await asyncio.sleep(0)

    await step()
    # the friend with the smaller key than ours is called at once; the larger one is
    # given YIELD_WAIT to call us first
    assert [p for p, _ in dials] == [small]
    now[0] += 3.0
    await step()
    assert [t for p, t in dials if p == large] == [103.0]
    assert links.pinned(small) and not links.pinned(b"\x02" * 32)
    # failures back off: 2 s, 4 s, 8 s ... (jitter 0.5: exactly), at most BACKOFF_MAX
    while len([d for d in dials if d[0] == small]) < 11:
        now[0] += 1.0
        await step()
    times = [t for p, t in dials if p == small]
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits[0] == 3.0  # due at 102, the first look after was at 103
    assert waits[1:] == [4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert events[0]["event"] == "friend-link" and events[0]["error"] == "nobody answered"
    status = {s["contact"]: s for s in keeper.status()}
    assert len(status) == 2 and all(not s["linked"] for s in status.values())
    await keeper.aclose()


async def test_a_call_forwarded_over_a_real_data_channel_link(net: Net, tmp_path: Path) -> None:
    """The same over the overlay itself: two nodes with a LinkDriver, one data-channel
    link between them (couple_direct), forwarding over links only (no UDP hop)."""
    from hailing.node import DhtNode
    from hailing.transport.datachannel import LinkDriver, couple_direct
    from hailing.transport.forward import Forwarder

    nodes = []
    for _ in range(2):
        node = DhtNode(("127.0.0.1", 0), links=LinkDriver(cap=4),
                       bootstrap=[net.nodes[0].address])
        await node.start()
        await node.bootstrap()
        nodes.append(node)
    a_node, b_node = nodes
    ladder = [Rung("network", 5.0), Rung("dht")]
    alice = await net.peer("alice", ladder=ladder, node=a_node)
    bob = await net.peer("bob", ladder=ladder, node=b_node)
    assert a_node.links is not None and b_node.links is not None
    await couple_direct(a_node.links, b_node.links, pinned=True)
    alice.forwarder = Forwarder(a_node, a_node.links, udp=False)
    bob.forwarder = Forwarder(b_node, b_node.links, udp=False)
    try:
        await befriend(alice, bob)
        first = await alice.connect(bob.contact_id, timeout=15)
        await bob.accept(10)
        assert first.coupler == "dht"
        await eventually(lambda: alice.node_ids.of(bob.public_key) == b_node.node_id,  # type: ignore[union-attr]
                         "bob's node id")
        await first.close()
        call = await alice.connect(bob.contact_id, timeout=15, tracks=["audio"])
        inc = await bob.accept(10)
        assert call.coupler == "network" and inc.coupler == "network"
        assert a_node.links.stats["link_sent"] > 0 and b_node.links.stats["link_sent"] > 0
        await call.close()
    finally:
        await alice.forwarder.aclose()
        await bob.forwarder.aclose()
        for p in (alice, bob):
            await p.stop()
        for node in nodes:
            await node.stop()


# -- a page's call to a friend goes over the friend link (in-process daemons) -------------


async def test_a_pages_call_to_a_friend_is_signaled_over_the_friend_link(tmp_path: Path) -> None:
    """Two daemons whose owners are friends: the link opens from boot with nothing sent,
    then auto-answer bob takes a page's audio call that alice's daemon signals over it
    (the ladder's first rung), not through the DHT."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    from hailing.daemon.dhtnode import DhtSettings
    from hailing.daemon.service import Daemon
    from hailing.identity import load_or_create_identity
    from hailing.rtc.ice import rtc_configuration
    from hailing.rtc.media import MediaOptions
    from hailing.session.ladder import default_ladder
    from hailing.testnet import testnet as local_testnet

    ids = {n: load_or_create_identity(tmp_path / n).contact_id for n in ("alice", "bob")}
    for me, other in (("alice", "bob"), ("bob", "alice")):
        with ContactBook(tmp_path / me) as book, FriendBook(tmp_path / me) as marks:
            c = book.add(ids[other], other)
            marks.set_friend(c.pubkey)
    media = MediaOptions()
    async with local_testnet(8) as nodes, aiohttp.ClientSession() as session:
        daemons: list[Daemon] = []

        async def start(name: str, **kw: object) -> Daemon:
            peer_kw = {"answer_tracks": media.answer_tracks} if kw else {}

            def make_peer(node: object) -> Peer:
                return Peer(tmp_path / name, node=node,  # type: ignore[arg-type]
                            ladder=default_ladder(dht=True, mainline=True), **peer_kw)

            d = Daemon(tmp_path / name, make_peer, dht=DhtSettings(
                ("127.0.0.1", 0), (nodes[0].address,)), **kw)  # type: ignore[arg-type]
            await d.start()
            daemons.append(d)
            return d

        alice = await start("alice")
        bob = await start("bob", media=media)
        pc = RTCPeerConnection(rtc_configuration())
        try:
            await eventually(lambda: alice.links.open_count(bob.peer.public_key) == 1
                             and bob.links.open_count(alice.peer.public_key) == 1,
                             "the friend link", 30)
            pc.addTrack(AudioStreamTrack())
            pc.createDataChannel("hailing")
            await pc.setLocalDescription(await pc.createOffer())
            info = alice.api_info
            assert info is not None
            async with session.post(info.url + "/api/calls", headers={
                    "Authorization": f"Bearer {info.token}"}, data=json.dumps({
                        "contact": "bob", "sdp": pc.localDescription.sdp, "media": "audio",
                        "call": "c1", "timeout": 20})) as resp:
                answer = json.loads(await resp.text())
                assert resp.status == 200, answer
            assert answer["coupler"] == "link"
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            # still one link between them: the call is not a link
            await asyncio.sleep(0)
            assert alice.links.open_count(bob.peer.public_key) == 1
        finally:
            await pc.close()
            for d in reversed(daemons):
                await d.stop()


async def test_a_friend_link_we_called_reopens_a_dht_channel_its_driver_dropped() -> None:
    """The driver dropped a friend link's DHT channel (its keepalive) while the link
    stayed: the caller's keeper unpins it (so the driver does not open a connection of
    its own to the friend's node) and opens another, at most every DHT_RETRY seconds;
    an unmarked friend's channel is unpinned; the callee's side takes one only from a
    friend."""
    from dataclasses import dataclass, field

    from hailing.daemon.events import EventBus
    from hailing.daemon.friend_links import DHT_LABEL, DHT_RETRY, FriendLinks
    from hailing.daemon.links import Links

    class PC:
        def __init__(self) -> None:
            self.channels: list[str] = []

        def createDataChannel(self, label: str) -> object:
            self.channels.append(label)
            return label

    @dataclass
    class DriverLink:
        pc: PC
        pins: set[str] = field(default_factory=set)
        closed: bool = False

    class Driver:
        def __init__(self) -> None:
            self.items: list[DriverLink] = []

        def adopt(self, pc: PC, channel: object, *, owns_pc: bool = True) -> DriverLink:
            assert channel == DHT_LABEL and owns_pc is False
            self.items.append(DriverLink(pc))
            return self.items[-1]

        def pin(self, link: DriverLink, why: str) -> None:
            link.pins.add(why)

        def unpin(self, link: DriverLink, why: str) -> None:
            link.pins.discard(why)

        def links(self) -> list[DriverLink]:
            return list(self.items)

    friend = b"\x05" * 32

    class Conn:
        peer = friend
        is_open = True
        connect_ms = 1.0
        coupler = "dht"
        initiator_key = b"\x09" * 32

        def __init__(self) -> None:
            self.pc = PC()

        def __aiter__(self) -> Conn:
            return self

        async def __anext__(self) -> object:
            await asyncio.sleep(3600)
            raise StopAsyncIteration

        async def close(self, *a: object, **k: object) -> None:
            return None

    now = [0.0]

    async def dial(peer: bytes, timeout: float) -> Conn:
        return Conn()

    links = Links(dial, EventBus(), idle_close=0)
    driver = Driver()
    marked = [friend]
    keeper = FriendLinks(links, lambda: list(marked), lambda: b"\x09" * 32, EventBus(),
                         clock=lambda: now[0], driver=driver)
    keeper.step()  # calls the friend (our key is larger: at once)
    for _ in range(5):
        await asyncio.sleep(0)
    link = links.open_link(friend)
    assert link is not None and link.conn.pc.channels == [DHT_LABEL]
    assert driver.items[0].pins == {"friend"}
    keeper.step()
    assert link.conn.pc.channels == [DHT_LABEL]  # it has one: nothing more
    dropped = driver.items.pop()  # the driver dropped it: closed, still pinned there
    dropped.closed = True
    dropped.pins.add("closest")  # the driver's own reason too: not reconnected either
    keeper.step()
    assert link.conn.pc.channels == [DHT_LABEL, DHT_LABEL]
    assert dropped.pins == set() and keeper.stats["dht_channels_released"] == 1
    dropped = driver.items.pop()
    dropped.closed = True
    now[0] += DHT_RETRY / 2
    keeper.step()
    assert len(link.conn.pc.channels) == 2  # not again so soon
    now[0] += DHT_RETRY
    keeper.step()
    assert len(link.conn.pc.channels) == 3 and keeper.stats["dht_channels_reopened"] == 2
    assert dropped.pins == set() and driver.items[0].pins == {"friend"}
    marked.clear()  # unmarked: its channel may be evicted like any link
    keeper.step()
    assert driver.items[0].pins == set() and keeper.stats["dht_channels_released"] == 3

    class Stranger:
        peer = b"\x07" * 32
        pc = PC()

    assert not keeper.take_channel(Stranger(), type("Ch", (), {"label": DHT_LABEL})())
    assert keeper.stats["dht_channels_refused"] == 1
    assert not keeper.take_channel(Conn(), type("Ch", (), {"label": "other"})())
    await keeper.aclose()
    await links.aclose()
