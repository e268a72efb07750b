"""Two Peers in one process on a loopback DHT testnet: calls, admission, garbage, restart.

Every test gets its own 12-node testnet (it starts in a few tens of milliseconds): no
inbox, listener or replay state leaks from one test into the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiortc
import pytest
from pytest_helpers import loopback_ice
from session_doubles import PeerNet as Net
from session_doubles import eventually, peer_net

import hailing.rtc.connection as connection_mod
from hailing.errors import HailingError, QueryTimeout
from hailing.identity import Identity
from hailing.peer import CallEvent, Peer
from hailing.rtc.connection import AuthenticationError, Connection, FileReceived, TextMessage
from hailing.signaling import envelope
from hailing.signaling.envelope import KIND_ANSWER, KIND_OFFER
from hailing.signaling.rendezvous import day_of, pair_key, pair_secret, public_key_inbox

REFUSED_TIMEOUT = 3.0  # how long a refused caller waits


_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with peer_net(tmp_path) as n:
        yield n



async def allow(callee: Peer, caller: Peer) -> None:
    assert callee.contacts is not None
    callee.contacts.add(caller.contact_id, "caller")
    await callee.refresh()


def drain_calls(p: Peer) -> list[CallEvent]:
    out = []
    while not p.calls.empty():
        out.append(p.calls.get_nowait())
    return out



async def call(caller: Peer, callee: Peer) -> tuple[Connection, Connection]:
    conn = await caller.connect(callee.contact_id, timeout=10)
    inc = await callee.accept(10)
    return conn, inc


# -- a call -----------------------------------------------------------------------------


async def test_connect_text_and_file(net: Net, tmp_path: Path) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await allow(bob, alice)
    conn, inc = await call(alice, bob)
    assert conn.peer == bob._identity().public_key
    assert inc.peer == alice._identity().public_key
    assert conn.contact_id == bob.contact_id and inc.contact_id == alice.contact_id
    assert conn.connect_ms is not None and 0 < conn.connect_ms < 10_000
    assert [(e.peer, e.accepted, e.reason) for e in drain_calls(bob)] == [
        (alice._identity().public_key, True, "accepted")
    ]

    await conn.send_text("hello bob")
    assert await inc.recv() == TextMessage("hello bob")
    await inc.send_text("hi alice ✓")
    assert await conn.recv() == TextMessage("hi alice ✓")

    data = random.Random(7).randbytes(300_000)
    src = tmp_path / "photo.bin"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert await conn.send_file(src) == digest
    got = await inc.recv()
    assert isinstance(got, FileReceived)
    assert got.name == "photo.bin" and got.size == len(data) and got.sha256 == digest
    assert got.path.parent == bob.downloads
    assert hashlib.sha256(got.path.read_bytes()).hexdigest() == digest
    assert [p.name for p in bob.downloads.iterdir()] == ["photo.bin"]  # no partial left
    assert conn.stats["garbage"] == inc.stats["garbage"] == 0
    assert alice.stats["bad_envelopes"] == bob.stats["bad_envelopes"] == 0


async def test_a_callee_whose_answer_send_returns_late_still_hears_the_callers_hello(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: on a chain the callee's ``send`` of the answer returns once the
    transaction is mined, by which time the caller may have connected and sent its hello.
    The callee's channel must have its message handler from the moment it exists, or the
    hello is lost and the call fails after the proof timeout."""
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await allow(bob, alice)
    coupler = bob.coupler("dht")
    original = coupler.send
    late = asyncio.Event()

    async def slow_send(peer: bytes, blob: bytes, kind: str) -> int:
        n = await original(peer, blob, kind)  # type: ignore[arg-type]
        if kind == "answer":
            await asyncio.sleep(1.5)  # "waiting for the receipt"
            late.set()
        return n

    monkeypatch.setattr(coupler, "send", slow_send)
    conn = await alice.connect(bob.contact_id, timeout=10)
    assert late.is_set()
    inc = await bob.accept(10)
    await conn.send_text("made it")
    assert await inc.recv() == TextMessage("made it")
    assert bob.stats["failed_answers"] == 0


# -- admission ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    caller_state: str  # "allowed", "blocked" or "unknown"
    accept_any: bool = False
    status: str = "available"
    verdict: str = "accepted"
    #: Whether the offer reaches the callee at all. A caller who is unknown (without
    #: accept_any) or blocked posts to keys the callee does not listen on: the callee
    #: never sees the offer, so it records no CallEvent either.
    reaches: bool = True


CASES = {
    "allowed": Case("allowed"),
    "allowed, accept-any": Case("allowed", accept_any=True),
    "unknown, accept-any": Case("unknown", accept_any=True),
    "unknown": Case("unknown", verdict="unknown caller", reaches=False),
    "blocked": Case("blocked", verdict="blocked", reaches=False),
    "blocked, accept-any": Case("blocked", accept_any=True, verdict="blocked"),
    "busy": Case("allowed", status="busy", verdict="busy"),
    "do-not-disturb": Case("allowed", status="dnd", verdict="do-not-disturb"),
    "do-not-disturb, accept-any": Case("unknown", accept_any=True, status="dnd",
                                       verdict="do-not-disturb"),
}


async def setup_callee(callee: Peer, caller: Peer, case: Case) -> None:
    book = callee.contacts
    assert book is not None
    if case.caller_state == "allowed":
        book.add(caller.contact_id, "caller")
    elif case.caller_state == "blocked":
        book.block(caller.contact_id)
    book.set_accept_any(case.accept_any)
    book.set_status(case.status)  # type: ignore[arg-type]
    await callee.refresh()


def spy_posts(monkeypatch: pytest.MonkeyPatch, p: Peer) -> list[bytes]:
    """Keys ``p``'s DHT node posts to from now on."""
    node = p.node
    assert node is not None
    keys: list[bytes] = []
    original = node.post

    async def post(key: bytes, value: bytes) -> int:
        keys.append(key)
        return await original(key, value)

    monkeypatch.setattr(node, "post", post)
    return keys


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_admission(net: Net, case: Case, pcs: list[aiortc.RTCPeerConnection],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    caller = await net.peer("caller")
    callee = await net.peer("callee")
    await setup_callee(callee, caller, case)
    callee_posts = spy_posts(monkeypatch, callee)
    caller_pub = caller._identity().public_key

    if case.verdict == "accepted":
        conn, inc = await call(caller, callee)
        assert inc.peer == caller_pub
        await conn.send_text("ok")
        assert await inc.recv() == TextMessage("ok")
        assert [(e.peer, e.accepted, e.reason) for e in drain_calls(callee)] == [
            (caller_pub, True, "accepted")
        ]
        assert len(pcs) == 2 and all(pc.remoteDescription is not None for pc in pcs)
        assert callee_posts  # the answer
        # Allowed with accept-any, the offer arrives twice (pair and public inbox):
        # a duplicate, not a bad envelope.
        assert callee.stats["bad_envelopes"] == 0
        return

    t0 = time.monotonic()
    with pytest.raises(QueryTimeout) as info:
        await caller.connect(callee.contact_id, timeout=REFUSED_TIMEOUT)
    assert REFUSED_TIMEOUT <= time.monotonic() - t0 < REFUSED_TIMEOUT + 2
    message = str(info.value)
    assert message and "\n" not in message and "nobody answered" in message

    # The caller never got a byte from the callee: no envelope at all reached it
    # (every inbox value is counted by the replay cache, opened or refused), its
    # peer connection never got a remote description, and the callee never made a
    # peer connection (so it gathered no candidates) nor posted anything.
    assert caller.replay.stats == Counter()
    assert caller.stats == Counter()
    assert len(pcs) == 1 and pcs[0].remoteDescription is None
    assert callee_posts == []
    assert callee.manager.incoming.empty()

    events = drain_calls(callee)
    if case.reaches:
        assert [(e.peer, e.accepted, e.reason) for e in events] == [
            (caller_pub, False, case.verdict)
        ]
        assert callee.stats["refused_" + case.verdict] == 1
        assert callee.replay.stats["opened"] >= 1
    else:
        assert events == []
        assert callee.replay.stats == Counter()
        assert not any(k.startswith("refused_") for k in callee.stats)


async def test_a_blocked_caller_cannot_tell_a_block_from_an_offline_callee(
    net: Net, pcs: list[aiortc.RTCPeerConnection]
) -> None:
    """Three callers: one calls a callee that blocked it, one a callee that blocked it
    and accepts anyone (the offer reaches it and is refused), one a callee that allowed
    it but went offline. Each caller sees the same thing. (One after the other: calls
    made at once slow each other down by a few hundred ms in one event loop.)"""
    callers = [await net.peer(f"caller{i}") for i in range(3)]
    blocker = await net.peer("blocker")
    blocker_any = await net.peer("blocker-any")
    gone = await net.peer("gone")
    await setup_callee(blocker, callers[0], Case("blocked"))
    await setup_callee(blocker_any, callers[1], Case("blocked", accept_any=True))
    await setup_callee(gone, callers[2], Case("allowed"))
    await gone.stop()

    async def outcome(caller: Peer, callee_id: str) -> tuple[type, str, float]:
        t0 = time.monotonic()
        try:
            await caller.connect(callee_id, timeout=REFUSED_TIMEOUT)
        except Exception as exc:
            return type(exc), str(exc), time.monotonic() - t0
        raise AssertionError("the call was answered")

    results = [await outcome(c, p.contact_id)
               for c, p in zip(callers, [blocker, blocker_any, gone], strict=True)]
    (t_blk, m_blk, s_blk), (t_any, m_any, s_any), (t_off, m_off, s_off) = results
    assert t_blk is t_any is t_off is QueryTimeout
    assert m_blk == m_any == m_off
    assert abs(s_blk - s_off) < 0.5 and abs(s_any - s_off) < 0.5
    # (each gave up and sent a CANCEL, in the background: when it left is not the point)
    cancels = ("cancels_sent", "cancel_errors")
    assert [{k: v for k, v in c.stats.items() if k not in cancels} for c in callers] == [
        {}, {}, {}]
    assert [dict(c.replay.stats) for c in callers] == [{}, {}, {}]
    assert len(pcs) == 3 and all(pc.remoteDescription is None for pc in pcs)
    # ... though the blocker that accepts anyone did see (and refuse) the offer.
    assert [e.reason for e in drain_calls(blocker_any)] == ["blocked"]
    assert drain_calls(blocker) == []


# -- garbage at the rendezvous ------------------------------------------------------------


async def test_garbage_at_the_rendezvous_is_dropped_and_counted(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob", accept_any=True)
    await allow(bob, alice)
    a_id, b_pub = alice._identity(), bob._identity().public_key
    now = time.time()
    to_bob = pair_key(pair_secret(a_id, b_pub), b_pub, day_of(now))
    raw = net.nodes[5]
    rng = random.Random(3)
    good = envelope.seal(a_id, b_pub, KIND_OFFER, b"x" * 40, now=now)
    eve = Identity.from_seed(b"e" * 32)
    garbage = {
        "unknown_version": b"\x07" + rng.randbytes(150),
        "unopenable": b"\x01" + rng.randbytes(300),
        "malformed": good[:60],
        "truncated": good[:-1],
        "to someone else": envelope.seal(a_id, eve.public_key, KIND_OFFER, b"x", now=now),
        "expired": envelope.seal(a_id, b_pub, KIND_OFFER, b"x", now=now - 3600, ttl=60),
    }
    for value in garbage.values():
        assert await raw.post(to_bob, value) >= 1
    # Good envelopes with garbage inside: an offer that is no SDP, an answer nobody
    # asked for, an unknown kind.
    for kind in (KIND_OFFER, KIND_ANSWER, 77):
        assert await raw.post(to_bob, envelope.seal(a_id, b_pub, kind, b"junk", now=now)) >= 1
    await eventually(lambda: sum(bob.replay.stats.values()) == 9, "the garbage to arrive")
    assert bob.stats["bad_envelopes"] == 6
    assert bob.replay.stats == Counter(
        unknown_version=1, unopenable=3, malformed=1, expired=1, opened=3
    )
    assert bob.stats["unbound_offers"] == 1
    assert bob.stats["unexpected_answers"] == 1
    assert bob.stats["unknown_kind"] == 1
    assert drain_calls(bob) == []  # garbage is no call, not even a refused one
    assert bob.stats["task_errors"] == 0

    # Bob still works. Alice's offer is kept (posted to the pair key only) and
    # replayed afterwards to Bob's public inbox with a raw post.
    offers: list[bytes] = []
    rdv = alice.coupler("dht").rendezvous  # type: ignore[attr-defined]
    send = rdv.send

    async def capture(peer: bytes, blob: bytes, *, public: bool = False, **kw: Any) -> int:
        offers.append(blob)
        return await send(peer, blob, **kw)

    monkeypatch.setattr(rdv, "send", capture)
    conn, inc = await call(alice, bob)
    await conn.send_text("after the garbage")
    assert await inc.recv() == TextMessage("after the garbage")
    assert len(drain_calls(bob)) == 1

    assert await raw.post(public_key_inbox(b_pub, day_of(time.time())), offers[0]) >= 1
    await eventually(lambda: bob.replay.stats["replayed"] == 1, "the replay to arrive")
    assert bob.stats["duplicates"] == 1
    assert bob.stats["bad_envelopes"] == 6
    await asyncio.sleep(0.3)
    assert drain_calls(bob) == [] and bob.manager.incoming.empty()  # not answered again
    assert bob.stats["failed_answers"] == 0


# -- garbage on the data channel ----------------------------------------------------------


def garbage_frames() -> list[str | bytes]:
    return [
        "{not json",
        json.dumps({"t": "nope", "id": 1}),
        b"\x00stray binary",
        json.dumps({"t": "msg", "text": "no id"}),
        json.dumps({"t": "end", "id": 77}),
        json.dumps([1, 2]),
        json.dumps({"t": "ack", "id": 4242}),
        # a file that sends more than it announced, then its end
        json.dumps({"t": "file", "id": 78, "name": "evil", "size": 10, "sha256": "0" * 64}),
        b"x" * 20,
        json.dumps({"t": "end", "id": 78}),
    ]


GARBAGE_REASONS = Counter(json=1, unknown_type=1, stray_binary=1, shape=2, stray_end=2,
                          unexpected_ack=1, oversized_file=1)


async def test_garbage_on_the_data_channel_is_dropped_and_counted(
    net: Net, tmp_path: Path
) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await allow(bob, alice)
    conn, inc = await call(alice, bob)
    for frame in garbage_frames():
        conn.channel.send(frame)
    # A file whose content does not match its SHA-256 is rejected (an "ok": false ack
    # goes back, unexpected on Alice's side).
    conn.channel.send(json.dumps({"t": "file", "id": 90, "name": "bad", "size": 3,
                                  "sha256": "0" * 64}))
    conn.channel.send(b"abc")
    conn.channel.send(json.dumps({"t": "end", "id": 90}))

    await conn.send_text("still here")  # ordered channel: the garbage came first
    assert await inc.recv() == TextMessage("still here")
    assert inc.stats["garbage"] == sum(GARBAGE_REASONS.values())
    assert {k[len("garbage_"):]: v for k, v in inc.stats.items()
            if k.startswith("garbage_")} == GARBAGE_REASONS
    assert inc.stats["files_aborted"] == 1 and inc.stats["files_rejected"] == 1
    assert list(bob.downloads.iterdir()) == []  # no partial or rejected file left
    assert conn.stats["garbage"] == conn.stats["garbage_unexpected_ack"] == 1

    # Both ways, files too, still work.
    for frame in garbage_frames():
        inc.channel.send(frame)
    await inc.send_text("back")
    assert await conn.recv() == TextMessage("back")
    assert conn.stats["garbage"] == 1 + sum(GARBAGE_REASONS.values())
    src = tmp_path / "after.txt"
    src.write_bytes(b"after the garbage\n" * 1000)
    assert await conn.send_file(src) == hashlib.sha256(src.read_bytes()).hexdigest()
    got = await inc.recv()
    assert isinstance(got, FileReceived) and got.path.read_bytes() == src.read_bytes()


def lying(monkeypatch: pytest.MonkeyPatch, liar: Identity) -> None:
    """``liar`` signs something else than the session transcript."""
    real = connection_mod.transcript_proof

    def proof(identity: Identity, local_fp: bytes, remote_fp: bytes, initiator: bool) -> bytes:
        if identity.public_key == liar.public_key:
            return identity.sign(b"not the transcript")
        return real(identity, local_fp, remote_fp, initiator)

    monkeypatch.setattr(connection_mod, "transcript_proof", proof)


async def test_a_callee_that_fails_the_identity_proof_is_refused(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await allow(bob, alice)
    lying(monkeypatch, bob._identity())
    with pytest.raises(AuthenticationError):
        await alice.connect(bob.contact_id, timeout=10)
    assert alice.manager is not None and not alice.manager.connections


async def test_a_caller_that_fails_the_identity_proof_is_not_yielded(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await allow(bob, alice)
    lying(monkeypatch, alice._identity())
    # Bob's own proof is good, so Alice may get as far as a connection: Bob closes it.
    conn: Connection | None
    try:
        conn = await alice.connect(bob.contact_id, timeout=10)
    except HailingError:
        conn = None
    await eventually(lambda: bob.stats["failed_answers_AuthenticationError"] == 1,
                     "bob to refuse the proof")
    assert bob.manager is not None
    assert bob.manager.incoming.empty() and not bob.manager.connections
    assert drain_calls(bob)[0].accepted  # admitted by policy, refused by the proof
    if conn is not None:
        with pytest.raises(HailingError):
            await asyncio.wait_for(conn.recv(), 10)


# -- restart -----------------------------------------------------------------------------


async def test_restart_keeps_identity_and_contacts(net: Net) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    eve = Identity.from_seed(b"e" * 32)
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "Alice")
    bob.contacts.block(eve.public_key)
    bob.contacts.set_accept_any(True)
    before = (bob.contact_id, bob.contacts.list())
    await bob.stop()

    again = await net.peer("bob")
    assert again.contacts is not None
    assert (again.contact_id, again.contacts.list()) == before
    assert again.contacts.state(alice.contact_id) == "allowed"
    assert again.contacts.state(eve.public_key) == "blocked"
    assert again.contacts.accept_any()
    # ... and the restarted peer takes Alice's call.
    conn, inc = await call(alice, again)
    assert inc.peer == alice._identity().public_key
    await conn.send_text("welcome back")
    assert await inc.recv() == TextMessage("welcome back")



async def test_a_restarted_callee_does_not_answer_an_offer_twice(net: Net) -> None:
    # The storing nodes still hold the offer after a restart and hand it over again on
    # listen; the in-memory replay cache is gone, the record on disk is not.
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    await allow(bob, alice)
    conn, _inc = await call(alice, bob)
    await conn.close()
    assert [e.accepted for e in drain_calls(bob)] == [True]
    await bob.stop()
    again = await net.peer("bob")
    await eventually(lambda: again.stats["already_handled"] >= 1, "the stored offer again")
    assert drain_calls(again) == []
    assert again.stats["failed_answers"] == 0 and again.manager.incoming.empty()


async def test_a_contact_is_called_through_the_pair_key_only(net: Net) -> None:
    """An offer goes to the callee's public inbox only when no answer came through the
    pair key within the coupler's public delay: a call between contacts costs no second
    post and tells the public inbox's storing nodes nothing (before, every offer reached
    an accept-any callee twice, once per inbox)."""
    alice = await net.peer("alice")
    bob = await net.peer("bob", accept_any=True)  # listens on its public inbox too
    await allow(bob, alice)
    conn = await alice.connect(bob.contact_id, timeout=20)
    inc = await bob.accept(10)
    coupler = alice.coupler("dht")
    await asyncio.sleep(coupler.public_delay + 0.5)  # type: ignore[attr-defined]
    assert bob.stats["duplicates"] == 0 and bob.calls.qsize() == 1
    await conn.close()
    await inc.close()


async def test_a_stranger_reaches_an_accept_any_callee_through_the_public_inbox(
        net: Net) -> None:
    alice = await net.peer("alice")
    bob = await net.peer("bob", accept_any=True)  # does not know alice
    conn = await alice.connect(bob.contact_id, timeout=20)
    inc = await bob.accept(10)
    await conn.send_text("hello, stranger")
    assert (await inc.recv()).text == "hello, stranger"  # type: ignore[union-attr]
    await conn.close()
