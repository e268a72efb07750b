"""Calls whose media a page owns (session layer): ``Peer.call_external``, ringing
``IncomingCall``s, the sealed CANCEL, and browser host candidates filtered to the ICE
hosts. Peers talk over an in-memory switchboard; the SDPs are captured Chromium ones."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiortc
import pytest
from pytest_helpers import loopback_ice
from session_doubles import Switchboard, eventually

from hailing.errors import DaemonError, LocalProtocolError, QueryTimeout
from hailing.identity import Identity, load_or_create_identity
from hailing.peer import CallEvent, Peer
from hailing.session import connections, external
from hailing.session.connections import MAX_CALLS_PER_CALLER
from hailing.session.external import (
    IncomingCall,
    filter_candidates,
    media_kinds,
    pack_external_sdp,
)
from hailing.signaling import envelope, sdp_text
from hailing.signaling.envelope import KIND_CANCEL, KIND_OFFER

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

SDP = Path(__file__).parent / "data" / "sdp"
OFFER = (SDP / "chromium150-offer-av-data.sdp").read_text()
ANSWER = (SDP / "chromium150-answer-av-data.sdp").read_text()


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def test_host_candidates_on_other_addresses_are_removed_and_nothing_else_changes() -> None:
    offer = crlf(OFFER)
    assert "198.18.0.2" in offer and "2001:db8::2" in offer
    kept = filter_candidates(offer, ["198.18.0.2"])
    lines, kept_lines = offer.splitlines(keepends=True), kept.splitlines(keepends=True)
    gone = [ln for ln in lines if ln not in kept_lines]
    assert gone and all(ln.startswith("a=candidate:") and " 2001:db8::2 " in ln for ln in gone)
    assert [ln for ln in lines if ln not in gone] == kept_lines  # byte-exact otherwise
    assert kept.endswith("\r\n") and "\n" not in kept.replace("\r\n", "")
    assert filter_candidates(offer, None) == offer
    # Only host candidates are filtered.
    srflx = "a=candidate:1 1 udp 1 203.0.113.9 5000 typ srflx raddr 0.0.0.0 rport 0\r\n"
    assert filter_candidates("v=0\r\n" + srflx, ["127.0.0.1"]) == "v=0\r\n" + srflx
    none_left = filter_candidates(offer, ["127.0.0.1"])
    assert "a=candidate:" not in none_left


def test_media_kinds_and_bad_page_sdps() -> None:
    assert media_kinds(OFFER) == ("audio", "video")
    assert media_kinds("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n") == ()
    body, fp = pack_external_sdp(OFFER, None)
    assert body[0] == sdp_text.FORMAT and sdp_text.unpack_sdp_text(body) == OFFER
    assert len(fp) == 32
    for bad in [None, 5, b"v=0", "", "hello", "v=0\r\n", "v=0\r\n" + "a=x\r\n" * 4000,
                OFFER * 2, OFFER + "garbage\r\n", "v=0\x00" + OFFER,
                OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:sha-1"),
                OFFER + "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"]:
        with pytest.raises(LocalProtocolError):
            pack_external_sdp(bad, None)
    assert external._REF == connections.ANSWER_REF


# -- two peers over a switchboard ------------------------------------------------------------


def identity(tmp: Path, name: str) -> Identity:
    return load_or_create_identity(tmp / name)


async def pair(tmp: Path, started: list[Peer], board: Switchboard, *,
               rings: list[IncomingCall] | None = None, callee_delivers: bool = True,
               caller_kw: dict[str, object] | None = None) -> tuple[Peer, Peer]:
    a_id, b_id = identity(tmp, "alice"), identity(tmp, "bob")
    alice = Peer(tmp / "alice", couplers=[board.coupler(a_id.public_key)],
                 **(caller_kw or {}))  # type: ignore[arg-type]
    bob = Peer(tmp / "bob", couplers=[board.coupler(b_id.public_key,
                                                    deliver=callee_delivers)],
               on_media_offer=rings.append if rings is not None else None)
    for p in (alice, bob):
        await p.start()
        started.append(p)
    assert bob.contacts is not None and alice.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    alice.contacts.add(bob.contact_id, "bob")
    return alice, bob


def events(p: Peer) -> list[CallEvent]:
    out = []
    while not p.calls.empty():
        out.append(p.calls.get_nowait())
    return out


async def test_a_page_calls_a_page_through_the_session(tmp_path: Path,
                                                       started: list[Peer]) -> None:
    board = Switchboard()
    rings: list[IncomingCall] = []
    alice, bob = await pair(tmp_path, started, board, rings=rings)
    call = asyncio.ensure_future(alice.call_external(bob.contact_id, OFFER, timeout=10))
    await eventually(lambda: bool(rings), "the ring")
    [ring] = rings
    # The page's host candidates on other addresses than the ICE hosts (here 127.0.0.1
    # only) were removed before sealing; every other byte is the page's.
    assert ring.sender == alice.public_key and ring.sdp == filter_candidates(OFFER,
                                                                             ["127.0.0.1"])
    assert "a=candidate:" in OFFER and "a=candidate:" not in ring.sdp
    assert ring.media == ("audio", "video") and ring.coupler == "pipe" and ring.ringing
    assert ring.expires > time.time()
    assert [(e.accepted, e.reason, e.media) for e in events(bob)] == [
        (True, "accepted", ("audio", "video"))]
    bob_proof = await ring.answer(ANSWER)
    answered = await call
    assert answered.sdp == filter_candidates(ANSWER, ["127.0.0.1"])
    assert answered.coupler == "pipe"
    assert answered.signal_ms > 0
    # Each side's proof verifies at the other; nothing else does.
    assert answered.verify(bob_proof) and ring.verify(answered.proof_hex)
    assert not answered.verify(answered.proof_hex) and not ring.verify(bob_proof)
    for junk in ["", "zz" * 64, "00" * 64, 5, None, "ab"]:
        assert not answered.verify(junk) and not ring.verify(junk)
    assert ring.state == "answered"
    with pytest.raises(DaemonError, match="no longer rings"):
        await ring.answer(ANSWER)  # twice
    with pytest.raises(DaemonError):
        ring.decline()
    # An answered call holds its place in the caps until it ends.
    assert bob.manager is not None and bob.manager._external
    ring.end()
    assert ring.state == "ended" and not bob.manager._external
    # The aiortc path was never taken: no peer connection answered anything.
    assert bob.stats["failed_answers"] == 0 and bob.stats["rung_calls"] == 1


async def test_without_the_callback_a_media_offer_takes_the_aiortc_path(
        tmp_path: Path, started: list[Peer], pcs: list[aiortc.RTCPeerConnection]) -> None:
    """``on_media_offer=None``: nothing changes (aiortc answers the offer itself)."""
    board = Switchboard()
    alice, bob = await pair(tmp_path, started, board)
    answered = await alice.call_external(bob.contact_id, OFFER, timeout=10)
    assert len(pcs) == 1 and "m=audio" in answered.sdp  # aiortc's answer
    assert bob.stats["rung_calls"] == 0


async def test_a_cancel_stops_the_ringing_and_gives_back_its_place(
        tmp_path: Path, started: list[Peer]) -> None:
    board = Switchboard()
    rings: list[IncomingCall] = []
    alice, bob = await pair(tmp_path, started, board, rings=rings)
    seen: list[str] = []
    call = asyncio.ensure_future(alice.call_external(bob.contact_id, OFFER, timeout=20))
    await eventually(lambda: bool(rings), "the ring")
    rings[0].on_state = lambda c: seen.append(c.state)
    call.cancel()  # the page hung up before an answer
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: rings[0].state == "cancelled", "the CANCEL")
    assert seen == ["cancelled"] and rings[0].reason == "cancelled"
    assert rings[0].finished.is_set()
    assert bob.manager is not None and not bob.manager._external
    assert bob.stats["cancelled_calls"] == 1 and alice.stats["cancels_sent"] == 1
    with pytest.raises(DaemonError, match="cancelled"):
        await rings[0].answer(ANSWER)


async def test_an_unanswered_ring_expires_with_its_offer(tmp_path: Path,
                                                         started: list[Peer]) -> None:
    board = Switchboard()
    rings: list[IncomingCall] = []
    alice, bob = await pair(tmp_path, started, board, rings=rings, callee_delivers=False)
    assert alice.identity is not None
    body, _ = pack_external_sdp(OFFER, None)
    blob = envelope.seal(alice.identity, bob.public_key, KIND_OFFER, body, now=time.time(),
                         ttl=1)
    board.inlets[("pipe", bob.public_key)].put_nowait(blob)
    await eventually(lambda: bool(rings), "the ring")
    await eventually(lambda: rings[0].state == "expired", "the expiry")
    assert rings[0].reason == "expired" and bob.stats["expired_calls"] == 1
    assert bob.manager is not None and not bob.manager._external


async def test_ringing_calls_count_in_the_call_caps(tmp_path: Path,
                                                    started: list[Peer]) -> None:
    board = Switchboard()
    rings: list[IncomingCall] = []
    alice, bob = await pair(tmp_path, started, board, rings=rings, callee_delivers=False)
    assert alice.identity is not None
    body, _ = pack_external_sdp(OFFER, None)
    inlet = board.inlets[("pipe", bob.public_key)]
    for _ in range(MAX_CALLS_PER_CALLER + 1):
        inlet.put_nowait(envelope.seal(alice.identity, bob.public_key, KIND_OFFER, body,
                                       now=time.time(), ttl=30))
    await eventually(lambda: bob.stats["refused_too-many-calls"] == 1, "the refusal")
    assert len(rings) == MAX_CALLS_PER_CALLER
    assert [e.reason for e in events(bob)][-1] == "too-many-calls"
    rings[0].decline()  # a place again
    inlet.put_nowait(envelope.seal(alice.identity, bob.public_key, KIND_OFFER, body,
                                   now=time.time(), ttl=30))
    await eventually(lambda: len(rings) == MAX_CALLS_PER_CALLER + 1, "one more ring")


async def test_a_cancel_that_overtakes_its_offer_keeps_it_from_ringing(
        tmp_path: Path, started: list[Peer]) -> None:
    board = Switchboard()
    rings: list[IncomingCall] = []
    alice, bob = await pair(tmp_path, started, board, rings=rings)
    assert alice.identity is not None
    body, _ = pack_external_sdp(OFFER, None)
    offer = envelope.seal(alice.identity, bob.public_key, KIND_OFFER, body, now=time.time(),
                          ttl=30)
    cancel = envelope.seal(alice.identity, bob.public_key, KIND_CANCEL, offer[1:9],
                           now=time.time())
    inlet = board.inlets[("pipe", bob.public_key)]
    inlet.put_nowait(cancel)
    inlet.put_nowait(offer)
    await eventually(lambda: bob.stats["cancelled_before_offer"] == 1, "the offer")
    assert rings == [] and bob.stats["unmatched_cancels"] == 1
    # Garbage CANCELs are counted and change nothing.
    inlet.put_nowait(envelope.seal(alice.identity, bob.public_key, KIND_CANCEL, b"short",
                                   now=time.time()))
    await eventually(lambda: bob.stats["bad_cancels"] == 1, "the bad cancel")


async def test_an_aiortc_callee_gives_up_the_peer_connection_when_the_caller_hangs_up(
        tmp_path: Path, started: list[Peer], pcs: list[aiortc.RTCPeerConnection]) -> None:
    """The known defect: a caller that hung up before the answer left the callee's
    peer connection waiting CHANNEL_TIMEOUT (30 s). Its CANCEL ends it now."""
    board = Switchboard()
    alice, bob = await pair(tmp_path, started, board, callee_delivers=False)
    with pytest.raises(QueryTimeout):  # the answer never reaches the caller
        await alice.connect(bob.contact_id, timeout=2)
    await eventually(lambda: any(e.failed for e in list(bob.calls._queue)),  # type: ignore[attr-defined]
                     "the callee giving up", timeout=15)
    failed = [e for e in events(bob) if e.failed]
    assert [e.reason for e in failed] == ["the caller hung up"]
    assert bob.stats["cancelled_answers"] == 1
    assert len(pcs) == 2 and all(pc.connectionState == "closed" for pc in pcs)


async def test_an_answered_call_a_page_never_ends_gives_its_place_back_at_last(
        tmp_path: Path, started: list[Peer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "EXTERNAL_HOLD", 0.5)
    board = Switchboard()
    rings: list[IncomingCall] = []
    alice, bob = await pair(tmp_path, started, board, rings=rings)
    assert alice.identity is not None
    body, _ = pack_external_sdp(OFFER, None)
    board.inlets[("pipe", bob.public_key)].put_nowait(envelope.seal(
        alice.identity, bob.public_key, KIND_OFFER, body, now=time.time(), ttl=30))
    await eventually(lambda: bool(rings), "the ring")
    await rings[0].answer(ANSWER)
    assert bob.manager is not None and bob.manager._external
    await eventually(lambda: rings[0].state == "ended", "the hold's end")
    assert rings[0].reason == "not ended by its page" and not bob.manager._external
    assert bob.stats["calls_never_ended"] == 1
