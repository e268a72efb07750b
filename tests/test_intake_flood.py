"""A listening peer under a stranger flood (issue 9 items 7 and 9), through the real
Peer, router and connection manager: fresh identities' sealed envelopes (timestamped
ahead of the callee's clock, as an attacker who wants to raise a replay floor would)
and garbage, some through the DHT public inbox on loopback; then a contact calls over
the DHT and gets through. Peer connections for strangers' calls are capped (in all
and per caller), and a connection's event queue is bounded with backpressure.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiortc
import pytest
from pytest_helpers import loopback_ice
from session_doubles import Switchboard, eventually, offer_body

from hailing.errors import HailingError, StorageError
from hailing.identity import Identity, load_or_create_identity
from hailing.node import DhtNode
from hailing.peer import CallEvent, Peer
from hailing.rtc.connection import MAX_EVENTS, TextMessage
from hailing.session import Source
from hailing.session.connections import MAX_CALLS_PER_CALLER, MAX_STRANGER_CALLS
from hailing.signaling.envelope import KIND_ANSWER, KIND_OFFER, MAX_ENVELOPE, seal
from hailing.signaling.replay import STRANGER_ENTRIES
from hailing.signaling.store import HANDLED_STRANGERS
from hailing.testnet import testnet as local_testnet

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

#: More valid stranger envelopes than the replay cache used to hold (4096): enough to
#: make the old cache evict and raise its global floor.
FLOOD = STRANGER_ENTRIES + 200




@pytest.fixture
async def nodes() -> AsyncIterator[list[DhtNode]]:
    async with local_testnet(8) as net:
        yield net


async def start(started: list[Peer], peer: Peer) -> Peer:
    await peer.start()
    started.append(peer)
    return peer




def garbage(bob: Identity, body: bytes) -> list[bytes]:
    good = seal(Identity.from_seed(os.urandom(32)), bob.public_key, KIND_OFFER, body,
                now=time.time())
    other = Identity.from_seed(os.urandom(32))
    return [b"", b"\x00", b"\x01" + os.urandom(50), os.urandom(300), good[:-1],
            good[:50] + bytes([good[50] ^ 1]) + good[51:],
            seal(other, other.public_key, KIND_OFFER, body, now=time.time()),
            b"\x01" + bytes(MAX_ENVELOPE), b"\x01" + os.urandom(4 * 1024 * 1024)]


async def test_a_contact_gets_through_a_stranger_flood(
        tmp_path: Path, started: list[Peer], nodes: list[DhtNode],
        pcs: list[aiortc.RTCPeerConnection]) -> None:
    """Issue 9 item 7: the replay cache's global floor let strangers' envelopes stamped
    a little in the future make the contact's offer "replayed"; item 9: every accepted
    stranger's offer cost a peer connection, without limit."""
    boot = [nodes[0].address]
    alice = await start(started, Peer(tmp_path / "alice", bootstrap=boot))
    bob = await start(started, Peer(tmp_path / "bob", bootstrap=[nodes[3].address],
                                    accept_any=True))
    assert bob.contacts is not None and bob.router is not None and bob.store is not None
    bob.contacts.add(alice.contact_id, "alice")
    await bob.refresh()
    body = await offer_body()
    before = len(pcs)
    dht = Source(coupler=bob.coupler("dht"))

    # A few through the DHT: the public inbox of an accept-any callee is computable.
    rdv = alice.coupler("dht").rendezvous  # type: ignore[attr-defined]
    through_dht = 5
    for _ in range(through_dht):
        blob = seal(Identity.from_seed(os.urandom(32)), bob.public_key, KIND_OFFER,
                    body, now=time.time() + 50)
        await rdv.send_public(bob.public_key, blob)
    await eventually(lambda: bob.stats["refused_too-many-strangers"]
                     + len([e for e in _calls(bob) if e]) >= through_dht,
                     "the strangers' offers through the DHT")
    # The bulk straight into the router: fresh identities, valid envelopes, mostly with
    # a body that is not a description (no peer connection), some real offers.
    bad = garbage(bob.identity, body)  # type: ignore[arg-type]
    for i in range(FLOOD):
        mallory = Identity.from_seed(os.urandom(32))
        real = i % 100 == 0
        blob = seal(mallory, bob.public_key, KIND_OFFER, body if real else b"junk",
                    now=time.time() + 50 + i % 9, ttl=0xFFFF)
        await bob.router.handle(blob, dht)
        if i % 500 == 0:
            for junk in bad:
                await bob.router.handle(junk, dht)
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    await conn.send_text("through the flood")
    assert await inc.recv() == TextMessage("through the flood")

    # every refusal counted: the garbage, and the flood's own envelopes that fell below
    # the strangers' floor its evictions raised (a flood costs strangers, not contacts)
    assert bob.stats["bad_envelopes"] == (len(bad) * (FLOOD // 500 + 1)
                                          + bob.replay.stats["stranger_floor"])
    assert bob.replay.stats["oversized"] == 2 * (FLOOD // 500 + 1)
    assert (bob.stats["unbound_offers"] + bob.replay.stats["stranger_floor"]
            >= FLOOD - FLOOD // 100 - 1)

    # Bounded: memory, disk rows, and peer connections for strangers.
    assert len(bob.replay) <= STRANGER_ENTRIES + 1
    assert bob.store.handled_rows() <= HANDLED_STRANGERS + 1
    assert bob.stats["refused_too-many-strangers"] > 0
    stranger_pcs = len(pcs) - before - 2  # less alice's and bob's for the contact's call
    assert 0 < stranger_pcs <= MAX_STRANGER_CALLS


def _calls(peer: Peer) -> list[bool]:
    """The accepted flags of the call events so far (the queue is left as it was)."""
    events = []
    while not peer.calls.empty():
        events.append(peer.calls.get_nowait())
    for ev in events:
        peer.calls.put_nowait(ev)
    return [ev.accepted for ev in events]


async def test_one_caller_gets_a_bounded_number_of_peer_connections(
        tmp_path: Path, started: list[Peer], pcs: list[aiortc.RTCPeerConnection]) -> None:
    """Issue 9 item 9, per caller: one stranger (and one contact) sending many valid
    offers gets at most MAX_CALLS_PER_CALLER peer connections at once."""
    board = Switchboard()
    bob_id = load_or_create_identity(tmp_path / "bob")
    bob = await start(started, Peer(tmp_path / "bob", accept_any=True,
                                    couplers=[board.coupler(bob_id.public_key)]))
    assert bob.router is not None and bob.contacts is not None
    body = await offer_body()
    created = len(pcs)
    mallory, carol = Identity.from_seed(os.urandom(32)), Identity.from_seed(os.urandom(32))
    bob.contacts.add(carol.contact_id, "carol")
    source = Source(coupler=bob.coupler("pipe"))
    for sender in (mallory, carol):
        for _ in range(3 * MAX_CALLS_PER_CALLER):
            blob = seal(sender, bob_id.public_key, KIND_OFFER, body, now=time.time())
            await bob.router.handle(blob, source)
    # counted as the offers came; the answering tasks then make their peer connections
    assert bob.stats["refused_too-many-calls"] == 2 * 2 * MAX_CALLS_PER_CALLER
    await eventually(lambda: len(pcs) - created == 2 * MAX_CALLS_PER_CALLER, "answers")
    assert len(bob.supervisor) >= 2 * MAX_CALLS_PER_CALLER
    refused = [e for e in _drain(bob) if not e.accepted]
    assert {e.reason for e in refused} == {"too-many-calls"}


def _drain(peer: Peer) -> list[CallEvent]:
    out = []
    while not peer.calls.empty():
        out.append(peer.calls.get_nowait())
    return out


async def test_a_reader_that_falls_behind_makes_the_sender_wait_not_the_memory_grow(
        tmp_path: Path, started: list[Peer]) -> None:
    """Issue 9 item 9: a connection's event queue grew without bound when its reader
    did not keep up. Now at most MAX_EVENTS wait; then the sender is told (no ack)."""
    board = Switchboard()
    peers = []
    for name in ("alice", "bob"):
        ident = load_or_create_identity(tmp_path / name)
        peers.append(await start(started, Peer(tmp_path / name,
                                               couplers=[board.coupler(ident.public_key)])))
    alice, bob = peers
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    for i in range(MAX_EVENTS):
        await conn.send_text(f"message {i}")
    with pytest.raises(HailingError, match="did not take the message"):
        await conn.send_text("one too many")
    assert inc.stats["refused_full"] == 1
    assert inc._events.qsize() == MAX_EVENTS
    assert await inc.recv() == TextMessage("message 0")  # nothing taken was lost
    await conn.send_text("room again")


async def test_a_locked_contact_book_makes_a_sender_a_stranger_not_a_traceback(
        tmp_path: Path, started: list[Peer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Who is a contact is asked of the contact book for every envelope; a book locked
    by another process (a StorageError) must not escape the router."""
    board = Switchboard()
    bob_id = load_or_create_identity(tmp_path / "bob")
    bob = await start(started, Peer(tmp_path / "bob",
                                    couplers=[board.coupler(bob_id.public_key)]))
    assert bob.router is not None and bob.contacts is not None

    def locked(*args: object) -> None:
        raise StorageError("peer.sqlite3 is locked")

    monkeypatch.setattr(bob.contacts, "state", locked)
    carol = Identity.from_seed(os.urandom(32))
    blob = seal(carol, bob_id.public_key, KIND_ANSWER, b"\0" * 8 + b"x", now=time.time())
    await bob.router.handle(blob, Source(coupler=bob.coupler("pipe")))
    assert bob.stats["receive_errors"] == 0 and bob.stats["unexpected_answers"] == 1
    assert bob.stats["contact_lookup_errors"] >= 1
