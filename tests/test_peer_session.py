"""The Peer facade over the session layer: fallback ladder, custom couplers, media tracks,
remote input that WebRTC refuses, contacts changed from outside, restarts that must not
ring old offers, and a bootstrap address where nobody listens.

Most tests use in-memory couplers (tests/session_doubles.py); the ones about the DHT
run a loopback testnet.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiortc
import pytest
from pytest_helpers import loopback_ice
from session_doubles import Switchboard, eventually, offer_body

from hailing.errors import HailingError, QueryTimeout, RemoteProtocolError
from hailing.identity import Identity, load_or_create_identity
from hailing.node import DhtNode
from hailing.peer import CallEvent, Peer
from hailing.rtc.connection import TextMessage
from hailing.rtc.ice import rtc_configuration
from hailing.services.contacts import ContactBook
from hailing.signaling import envelope, sdp_text
from hailing.signaling.envelope import KIND_ANSWER, KIND_OFFER
from hailing.signaling.sdp import encode_sdp
from hailing.testnet import testnet as local_testnet

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)




def identity(tmp: Path, name: str) -> Identity:
    return load_or_create_identity(tmp / name)


async def start(started: list[Peer], peer: Peer) -> Peer:
    await peer.start()
    started.append(peer)
    return peer


def drain(p: Peer) -> list[CallEvent]:
    out = []
    while not p.calls.empty():
        out.append(p.calls.get_nowait())
    return out




async def answer_body() -> bytes:
    """A real compact answer (of two throwaway peer connections)."""
    a, b = aiortc.RTCPeerConnection(rtc_configuration()), aiortc.RTCPeerConnection(
        rtc_configuration())
    a.createDataChannel("x")
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    body = encode_sdp(b.localDescription)
    await a.close()
    await b.close()
    return body


# -- the ladder ----------------------------------------------------------------------------


async def test_the_ladder_falls_back_and_the_connection_says_which_coupler_carried_it(
        tmp_path: Path, started: list[Peer]) -> None:
    board = Switchboard()
    a_id, b_id = identity(tmp_path, "alice"), identity(tmp_path, "bob")
    alice = await start(started, Peer(
        tmp_path / "alice", ladder=[("void", 1.0), ("broken", 1.0), "pipe"],
        couplers=[board.coupler(a_id.public_key, "void", deliver=False),
                  board.coupler(a_id.public_key, "broken", fail="relay unreachable"),
                  board.coupler(a_id.public_key, "pipe")]))
    bob = await start(started, Peer(tmp_path / "bob",
                                    couplers=[board.coupler(b_id.public_key, "pipe")]))
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")

    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    assert conn.coupler == inc.coupler == "pipe"
    assert alice.dialer is not None
    assert [(a.coupler, a.error, a.timed_out) for a in alice.dialer.last] == [
        ("void", "nobody answered within 1 s (offline, busy, or not accepting calls)", True),
        ("broken", "relay unreachable", False),
        ("pipe", None, False)]
    # The callee heard only the offer that reached it, and answered the way it came.
    assert [(e.accepted, e.coupler) for e in drain(bob)] == [(True, "pipe")]
    assert [(name, kind) for name, _, _, kind in board.sent if kind != "cancel"] == [
        ("void", "offer"), ("broken", "offer"), ("pipe", "offer"), ("pipe", "answer")]
    # The rung that timed out told its callee it gave up, the way its offer went (the
    # one that could not send had nothing to cancel).
    await eventually(lambda: any(k == "cancel" for *_, k in board.sent), "the CANCEL")
    assert [(name, kind) for name, _, _, kind in board.sent if kind == "cancel"] == [
        ("void", "cancel")]
    await conn.send_text("over the third rung")
    assert await inc.recv() == TextMessage("over the third rung")
    assert await alice.refresh() == 3  # every coupler refreshed (one key each here)


async def test_the_offer_lives_as_long_as_the_caller_waits(
        tmp_path: Path, started: list[Peer]) -> None:
    """Issue 8 item 2: the offer's ttl is the caller's wait, so nobody rings for a
    caller that has given up."""
    board = Switchboard()
    a_id, bob = identity(tmp_path, "alice"), Identity.from_seed(b"b" * 32)
    alice = await start(started, Peer(
        tmp_path / "alice", couplers=[board.coupler(a_id.public_key, deliver=False)]))
    with pytest.raises(QueryTimeout, match=r"^nobody answered within 2 s"):
        await alice.connect(bob.public_key, timeout=2)
    await eventually(lambda: len(board.sent) == 2, "the CANCEL")
    [(_, to, blob, kind), (_, to2, cancel, kind2)] = board.sent
    replay = envelope.ReplayCache()
    opened = envelope.open_envelope(bob, blob, now=time.time(), replay=replay)
    assert (to, kind, opened.kind) == (bob.public_key, "offer", KIND_OFFER)
    assert opened.expires - opened.timestamp == math.ceil(2)
    # Then the sealed CANCEL naming it: the callee stops ringing for a caller gone.
    gave_up = envelope.open_envelope(bob, cancel, now=time.time(), replay=replay)
    assert (to2, kind2, gave_up.kind) == (bob.public_key, "cancel", envelope.KIND_CANCEL)
    assert gave_up.body == opened.nonce[:8] == blob[1:9]


# -- remote input WebRTC refuses -----------------------------------------------------------


async def test_an_offer_webrtc_refuses_closes_its_peer_connection_and_fails_the_call(
        tmp_path: Path, started: list[Peer], pcs: list[aiortc.RTCPeerConnection]) -> None:
    """Issue 8 item 4: a valid envelope from an allowed caller whose SDP makes aiortc
    raise (here an *answer* description inside an offer: InvalidStateError in
    setRemoteDescription) must not escape: the callee closes the peer connection it made
    and reports a failed call."""
    board = Switchboard()
    a_id, b_id = identity(tmp_path, "alice"), identity(tmp_path, "bob")
    bob = await start(started, Peer(tmp_path / "bob",
                                    couplers=[board.coupler(b_id.public_key)]))
    assert bob.contacts is not None
    bob.contacts.add(a_id.contact_id, "alice")
    body = await answer_body()
    before = len(pcs)
    blob = envelope.seal(a_id, b_id.public_key, KIND_OFFER, body, now=time.time())
    board.inlets[("pipe", b_id.public_key)].put_nowait(blob)
    await eventually(lambda: bob.stats["failed_answers"] == 1, "the call to fail")
    events = drain(bob)
    assert [(e.accepted, e.failed) for e in events] == [(True, False), (True, True)]
    assert "WebRTC refused the caller's offer" in events[1].reason
    assert bob.stats["failed_answers_RemoteProtocolError"] == 1
    assert bob.stats["task_errors"] == 0
    [pc] = pcs[before:]
    await eventually(lambda: pc.signalingState == "closed", "the peer connection closed")
    assert bob.manager is not None and bob.manager.incoming.empty()
    assert not bob.manager.connections


async def test_an_answer_webrtc_refuses_is_one_clear_error_for_the_caller(
        tmp_path: Path, started: list[Peer], pcs: list[aiortc.RTCPeerConnection]) -> None:
    board = Switchboard()
    a_id, bob = identity(tmp_path, "alice"), Identity.from_seed(b"b" * 32)
    alice = await start(started, Peer(
        tmp_path / "alice", couplers=[board.coupler(a_id.public_key)]))
    call = asyncio.ensure_future(alice.connect(bob.public_key, timeout=10))
    await eventually(lambda: len(board.sent) == 1, "the offer")
    offer = envelope.open_envelope(bob, board.sent[0][2], now=time.time(),
                                   replay=envelope.ReplayCache())
    # An answer naming the offer, but holding an *offer* description.
    bad = envelope.seal(bob, a_id.public_key, KIND_ANSWER, offer.nonce[:8] + await offer_body(),
                        now=time.time())
    board.inlets[("pipe", a_id.public_key)].put_nowait(bad)
    with pytest.raises(RemoteProtocolError, match="WebRTC refused the callee's answer"):
        await call
    assert pcs[0].signalingState == "closed"
    assert alice.manager is not None and not alice.manager.connections


# -- media tracks and the caller's own peer connections --------------------------------------


async def test_media_tracks_and_a_custom_peer_connection_factory(
        tmp_path: Path, started: list[Peer]) -> None:
    """A track added before the offer: the description no longer fits the compact form
    and travels as SDP text; the callee answers with a track of its own."""
    from aiortc.mediastreams import AudioStreamTrack

    board = Switchboard()
    a_id, b_id = identity(tmp_path, "alice"), identity(tmp_path, "bob")
    made: list[aiortc.RTCPeerConnection] = []

    def factory() -> aiortc.RTCPeerConnection:
        pc = aiortc.RTCPeerConnection(rtc_configuration())
        made.append(pc)
        return pc

    alice = await start(started, Peer(tmp_path / "alice", pc_factory=factory,
                                      couplers=[board.coupler(a_id.public_key)]))
    bob = await start(started, Peer(
        tmp_path / "bob", couplers=[board.coupler(b_id.public_key)],
        rtc_configuration=aiortc.RTCConfiguration(iceServers=[]),
        answer_tracks=lambda caller: [AudioStreamTrack()]))
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    conn = await alice.connect(bob.contact_id, timeout=10, tracks=[AudioStreamTrack()])
    inc = await bob.accept(10)
    assert [pc for pc in made] == [conn.pc]
    body = envelope.open_envelope(
        b_id, board.sent[0][2], now=time.time(), replay=envelope.ReplayCache()).body
    assert body[0] == sdp_text.FORMAT  # a media offer travels deflated (docs/envelope.md)
    assert "m=audio" in sdp_text.unpack_sdp_text(body)
    kinds = {t.receiver.track.kind for t in inc.pc.getTransceivers() if t.receiver.track}
    assert kinds == {"audio"}
    assert {t.kind for t in conn.pc.getTransceivers()} == {"audio"}
    await conn.send_text("with media")
    assert await inc.recv() == TextMessage("with media")
    with pytest.raises(HailingError, match="rtc_configuration or pc_factory"):
        Peer(tmp_path / "x", rtc_configuration=aiortc.RTCConfiguration(), pc_factory=factory)


# -- on the DHT -----------------------------------------------------------------------------


@pytest.fixture
async def nodes() -> AsyncIterator[list[DhtNode]]:
    async with local_testnet(10) as net:
        yield net


async def test_a_contact_added_by_another_process_can_call_at_once(
        tmp_path: Path, started: list[Peer], nodes: list[DhtNode]) -> None:
    """Issue 8 item 5: ``hailing contact add`` while ``hailing listen`` runs writes the
    same peer.sqlite3 from another connection; the running peer notices within a poll
    instead of the next 60 s refresh."""
    boot = [nodes[0].address]
    alice = await start(started, Peer(tmp_path / "alice", bootstrap=boot))
    bob = await start(started, Peer(tmp_path / "bob", bootstrap=boot))
    with ContactBook(tmp_path / "bob") as other_process:
        other_process.add(alice.contact_id, "alice")
    conn = await alice.connect(bob.contact_id, timeout=8)
    inc = await bob.accept(10)
    assert conn.coupler == "dht" and inc.peer == alice.public_key
    assert bob.stats["contact_refreshes"] >= 1


async def test_a_call_with_audio_and_video_goes_through_the_dht(
        tmp_path: Path, started: list[Peer], nodes: list[DhtNode]) -> None:
    """A media description is kilobytes of SDP text; deflated with the SDP dictionary
    (format 2) its envelope fits a DHT value, so media calls need no relay."""
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    boot = [nodes[0].address]
    alice = await start(started, Peer(tmp_path / "alice", bootstrap=boot))
    bob = await start(started, Peer(
        tmp_path / "bob", bootstrap=boot,
        answer_tracks=lambda caller: [AudioStreamTrack(), VideoStreamTrack()]))
    assert alice.contacts is not None and bob.contacts is not None
    alice.contacts.add(bob.contact_id, "bob")
    bob.contacts.add(alice.contact_id, "alice")
    await bob.refresh()
    conn = await alice.connect(bob.contact_id, timeout=10,
                               tracks=[AudioStreamTrack(), VideoStreamTrack()])
    inc = await bob.accept(10)
    assert conn.coupler == "dht"
    kinds = {t.receiver.track.kind for t in inc.pc.getTransceivers() if t.receiver.track}
    assert kinds == {"audio", "video"}
    await conn.send_text("with media")
    assert await inc.recv() == TextMessage("with media")


async def test_a_restarted_listener_does_not_ring_an_offer_whose_caller_gave_up(
        tmp_path: Path, started: list[Peer], nodes: list[DhtNode]) -> None:
    """Issue 8 item 2: an offer that arrived while the callee was down (the storing nodes
    keep it and hand it over when the callee listens again) must not ring once its
    caller has given up."""
    boot = [nodes[0].address]
    alice = await start(started, Peer(tmp_path / "alice", bootstrap=boot))
    bob = await start(started, Peer(tmp_path / "bob", bootstrap=boot))
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    await bob.stop()
    started.remove(bob)
    with pytest.raises(QueryTimeout):
        await alice.connect(bob.contact_id, timeout=2)
    await asyncio.sleep(1.1)  # past the offer's expiry (whole seconds), well within the skew
    again = await start(started, Peer(tmp_path / "bob", bootstrap=boot))
    await eventually(lambda: again.stats["stale_offers"] == 1, "the stored offer again")
    await asyncio.sleep(0.2)
    assert drain(again) == [] and again.stats["failed_answers"] == 0


async def test_a_bootstrap_address_where_nobody_listens_is_a_clear_error(
        tmp_path: Path) -> None:
    """Issue 8 item 6: not 'nobody answered ... (offline, busy ...)' at the first call,
    but one line naming the address, at start."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    peer = Peer(tmp_path / "alice", bootstrap=[("127.0.0.1", port)])
    with pytest.raises(QueryTimeout) as info:
        await peer.start()
    assert str(info.value) == f"no DHT node answered at 127.0.0.1:{port}"
    assert peer.node is None and len(peer.supervisor) == 0  # nothing left running


async def test_a_shared_dht_node_is_used_but_not_stopped(
        tmp_path: Path, started: list[Peer], nodes: list[DhtNode]) -> None:
    """``node=``: the daemon's one DHT node serves its Peer; stopping the Peer leaves
    the node running."""
    alice = await start(started, Peer(tmp_path / "alice", bootstrap=[nodes[0].address]))
    bob = await start(started, Peer(tmp_path / "bob", node=nodes[4]))
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    await bob.refresh()
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    await conn.send_text("via a shared node")
    assert await inc.recv() == TextMessage("via a shared node")
    await bob.stop()
    started.remove(bob)
    assert bob.node is None
    assert await nodes[4].ping(nodes[0].address)  # still running


async def test_a_starting_peer_removes_a_crashed_receivers_partial_files(
        tmp_path: Path, started: list[Peer]) -> None:
    """Issue 8 item 8: a ``.partial`` file left by a receiver that crashed does not stay
    in the downloads; finished files and live transfers' files are kept."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    downloads = tmp_path / "bob" / "downloads"
    downloads.mkdir(parents=True)
    stale = downloads / f".partial-{dead.pid}-1-1"
    stale.write_bytes(b"half a file")
    kept = downloads / "photo.jpg"
    kept.write_bytes(b"a whole file")
    bob = await start(started, Peer(tmp_path / "bob"))
    assert sorted(downloads.iterdir()) == [kept]
    assert bob.stats["stale_partials_removed"] == 1


async def test_answers_are_not_recorded_as_handled_for_other_processes(
        tmp_path: Path, started: list[Peer]) -> None:
    """A daemon and a one-shot send on one data directory both hear an answer; only
    offers and endpoint records are recorded once-ever (see the router's test)."""
    from hailing.signaling.endpoint import KIND_ENDPOINT
    from hailing.signaling.envelope import KIND_ANSWER, KIND_CANCEL, KIND_OFFER

    bob = await start(started, Peer(tmp_path / "bob"))
    assert bob.router is not None
    once = {kind: entry[3] for kind, entry in bob.router._handlers.items()}
    from hailing.session.node_ids import KIND_NODE

    # a node id over a link is kept by whoever hears it, as an answer is
    assert once == {KIND_OFFER: True, KIND_ANSWER: False, KIND_ENDPOINT: True,
                    KIND_CANCEL: False, KIND_NODE: False}
