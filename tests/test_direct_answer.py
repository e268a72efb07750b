"""The answer skips a hop: a caller's offer carries (sealed) a reply hint, and the
callee's node pushes the accepted call's answer straight to the caller's node besides
posting it to the storing nodes (docs/protocol.md "Direct pushes", docs/envelope.md
"Offer extensions").

What is shown: the answer arrives by the direct push (with every storing node's push to
the caller dropped, the call still connects: it would time out without the mechanism);
a forged or stale hint costs the callee one datagram and nothing else, and a refused
caller's hint costs nothing at all; an offer without a hint (the old format) is still
answered; the DHT's direct push token is bound to its key and refused elsewhere."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_helpers import loopback_ice
from session_doubles import PeerNet as Net
from session_doubles import eventually, offer_body, peer_net

from hailing import bencode
from hailing.dht import DhtConfig
from hailing.errors import QueryTimeout, SdpError
from hailing.node import DhtNode
from hailing.peer import Peer
from hailing.session.descriptions import (
    EXT_REPLY_HINT,
    OFFER_EXTENSIONS,
    split_offer_body,
)
from hailing.session.descriptions import (
    offer_body as make_offer_body,
)
from hailing.session.router import Source
from hailing.signaling import envelope
from hailing.signaling.envelope import KIND_OFFER
from hailing.testnet import testnet as local_testnet

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

KEY = b"K" * 20


# -- the offer's extensions ---------------------------------------------------------------


def test_an_offer_body_without_extensions_is_the_description_itself() -> None:
    desc = b"\x01" + b"x" * 60
    assert make_offer_body(desc) == desc
    assert make_offer_body(desc, None) == desc
    assert split_offer_body(desc) == (desc, None)
    assert split_offer_body(b"v=0\r\n") == (b"v=0\r\n", None)


def test_the_reply_hint_travels_before_the_description() -> None:
    desc = b"\x01" + b"x" * 60
    body = make_offer_body(desc, b"H" * 14)
    assert body[0] == OFFER_EXTENSIONS
    assert body == bytes([3, 16, EXT_REPLY_HINT, 14]) + b"H" * 14 + desc
    assert split_offer_body(body) == (desc, b"H" * 14)


def test_unknown_extensions_are_skipped() -> None:
    desc = b"\x02deflated"
    body = bytes([3, 9, 7, 3]) + b"new" + bytes([1, 2]) + b"hi" + desc
    assert split_offer_body(body) == (desc, b"hi")
    assert split_offer_body(bytes([3, 5, 7, 3]) + b"new" + desc) == (desc, None)


@pytest.mark.parametrize("body", [
    b"\x03",                                  # no length
    b"\x03\x00\x01",                          # empty extensions
    b"\x03\x04\x01\x02hi",                    # nothing after them: no description
    b"\x03\x04\x01\x05hi\x01xx",              # a value running past the extensions
    b"\x03\x03\x01\x00\x09\x01",              # a type without its length byte
    b"\x03\x02\x01\x00\x01",                  # an empty hint
    b"\x03\x08\x01\x02hi\x01\x02ho\x01",      # the hint twice
])
def test_extensions_that_do_not_parse_are_refused(body: bytes) -> None:
    with pytest.raises(SdpError):
        split_offer_body(body)


# -- the DHT's direct push ----------------------------------------------------------------


async def test_a_direct_push_token_lets_anyone_holding_it_push_on_that_key_only() -> None:
    async with local_testnet(10) as nodes:
        # read-only (a one-shot caller's node, say): nothing but the push reply could
        # put it in the pusher's table
        listener = DhtNode(bootstrap=[nodes[0].address], config=DhtConfig(read_only=True))
        pusher = DhtNode(bootstrap=[nodes[0].address])
        async with listener, pusher:
            await listener.bootstrap()
            await listener.listen(KEY)
            await listener.listen(b"L" * 20)
            token = listener.direct_token(KEY)
            assert token != listener.direct_token(b"L" * 20)
            pusher.push(listener.address, KEY, b"straight", token)
            msg = await asyncio.wait_for(listener.inbox(), 5)
            assert (msg.key, msg.value) == (KEY, b"straight")
            assert listener.stats.get("pushes_direct", 0) == 1
            assert pusher.stats.get("direct_pushes_sent", 0) == 1
            # the same token on another key we listen on, and a made-up token: refused
            pusher.push(listener.address, b"L" * 20, b"elsewhere", token)
            pusher.push(listener.address, KEY, b"forged", b"\x00" * 8)
            await eventually(lambda: listener.stats.get("push_bad_token", 0) == 2,
                             "two refusals")
            assert listener.stats.get("pushes_direct", 0) == 1 and listener._inbox.empty()
            # the listener that answered a push is not a routing node of the pusher's
            assert all(n.addr != listener.address for n in pusher.routing_table())


# -- calls --------------------------------------------------------------------------------


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with peer_net(tmp_path) as n:
        yield n


async def pair(net: Net) -> tuple[Peer, Peer]:
    alice = await net.peer("alice")
    bob = await net.peer("bob")
    assert alice.contacts is not None and bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    alice.contacts.add(bob.contact_id, "bob")
    await bob.refresh()
    return alice, bob


def node_of(p: Peer) -> DhtNode:
    node = p.coupler("dht").node  # type: ignore[attr-defined]
    assert isinstance(node, DhtNode)
    return node


def drop_storing_pushes_to(nodes: list[DhtNode], addr: Any) -> list[int]:
    """Make every storing node of the testnet drop its pushes to ``addr``: only a direct
    push reaches that node. Returns a one-item list counting the pushes dropped."""
    dropped = [0]
    for n in nodes:
        core = n.core
        original: Callable[[float], None] = core._send_pushes

        def send(now: float, core: Any = core, original: Callable[[float], None] = original
                 ) -> None:
            keep = [p for p in core.responder.pushes if p[0] != addr]
            dropped[0] += len(core.responder.pushes) - len(keep)
            core.responder.pushes = keep
            original(now)

        core._send_pushes = send
    return dropped


async def test_the_answer_arrives_by_the_direct_push(net: Net) -> None:
    """With every storing node's push to the caller dropped, only the callee's direct
    push brings the answer: the call connects (without the mechanism it times out)."""
    alice, bob = await pair(net)
    dropped = drop_storing_pushes_to(net.nodes, node_of(alice).address)
    conn = await alice.connect(bob.contact_id, timeout=5)
    inc = await bob.accept(5)
    await conn.send_text("one hop")
    assert (await inc.recv()).text == "one hop"  # type: ignore[union-attr]
    assert node_of(alice).stats.get("pushes_direct", 0) == 1
    assert node_of(bob).stats.get("direct_pushes_sent", 0) == 1
    assert bob.stats["direct_answers_sent"] == 1
    await eventually(lambda: dropped[0] >= 1, "the storing nodes' pushes dropped")
    await conn.close()
    await inc.close()


async def test_the_second_copy_of_the_answer_changes_nothing(net: Net) -> None:
    """Both copies arrive (direct, then through the storing nodes): one answer, one call."""
    alice, bob = await pair(net)
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    assert node_of(alice).stats.get("pushes_direct", 0) == 1
    await asyncio.sleep(0.3)  # the storing nodes' copies come in meanwhile
    assert alice.stats["unexpected_answers"] == 0 and bob.calls.qsize() == 1
    await conn.close()
    await inc.close()


def forge_hint(monkeypatch: pytest.MonkeyPatch, p: Peer, make: Callable[[bytes], bytes]) -> None:
    coupler = p.coupler("dht")
    real = coupler.reply_hint

    def forged(peer: bytes) -> bytes | None:
        hint = real(peer)
        assert hint is not None
        return make(hint)

    monkeypatch.setattr(coupler, "reply_hint", forged)


def udp_sink() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


async def test_a_hint_naming_someone_else_costs_one_datagram_of_the_callees_own(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller whose hint names another address (a victim, a stale address) makes the
    callee send that address one datagram per accepted call, whose content is the
    callee's own push of its sealed answer; the call still connects through the storing
    nodes, and the address enters no routing table."""
    alice, bob = await pair(net)
    victim = udp_sink()
    port = victim.getsockname()[1]
    forge_hint(monkeypatch, alice, lambda h: h[:8] + bytes([127, 0, 0, 1]) + port.to_bytes(2, "big"))
    try:
        conn = await alice.connect(bob.contact_id, timeout=10)
        inc = await bob.accept(10)
        await asyncio.sleep(0.5)  # anything more (a retry) would have come by now
        got = drain(victim)
        assert len(got) == 1
        msg = bencode.decode(got[0])
        assert msg[b"q"] == b"hailing_push" and len(msg[b"a"][b"v"]) > 100
        assert node_of(bob).stats.get("direct_pushes_sent", 0) == 1
        assert all(n.addr[1] != port for n in node_of(bob).routing_table())
        assert node_of(alice).stats.get("pushes_direct", 0) == 0
        await conn.close()
        await inc.close()
    finally:
        victim.close()


async def test_a_stale_token_is_refused_by_the_caller_and_the_call_connects(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = await pair(net)
    forge_hint(monkeypatch, alice, lambda h: bytes(8) + h[8:])
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    await eventually(lambda: node_of(alice).stats.get("push_bad_token", 0) == 1, "the refusal")
    assert node_of(alice).stats.get("pushes_direct", 0) == 0
    assert node_of(bob).stats.get("direct_pushes_sent", 0) == 1
    await conn.close()
    await inc.close()


async def test_a_refused_callers_hint_costs_nothing(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an accepted call is answered at all: a blocked caller's hint sends nothing."""
    alice, bob = await pair(net)
    assert bob.contacts is not None
    bob.contacts.block(alice.contact_id)
    await bob.refresh()
    victim = udp_sink()
    port = victim.getsockname()[1]
    forge_hint(monkeypatch, alice, lambda h: h[:8] + bytes([127, 0, 0, 1]) + port.to_bytes(2, "big"))
    try:
        with pytest.raises(QueryTimeout):
            await alice.connect(bob.contact_id, timeout=1.5)
        assert drain(victim) == []
        assert node_of(bob).stats.get("direct_pushes_sent", 0) == 0
    finally:
        victim.close()


async def test_an_offer_without_a_hint_is_still_answered(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old format (a bare description) and a coupler with no hint to give."""
    alice, bob = await pair(net)
    monkeypatch.setattr(alice.coupler("dht"), "reply_hint", lambda peer: None)
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    assert node_of(bob).stats.get("direct_pushes_sent", 0) == 0
    assert bob.stats["direct_answers_sent"] == 0
    await conn.close()
    await inc.close()


async def test_an_offer_whose_extensions_do_not_parse_is_no_call(net: Net) -> None:
    alice, bob = await pair(net)
    assert alice.identity is not None
    desc = await offer_body()
    for body in (b"\x03\x05\x01\x09hint" + desc, b"\x03\x02\x01\x00" + desc):
        blob = envelope.seal(alice.identity, bob.public_key, KIND_OFFER, body, now=bob._clock())
        await bob.router.handle(blob, Source(coupler=bob.coupler("dht")))  # type: ignore[union-attr]
    assert bob.stats["unbound_offers"] == 2 and bob.calls.empty()


async def test_a_hint_the_coupler_cannot_use_is_counted(net: Net) -> None:
    _, bob = await pair(net)
    coupler = bob.coupler("dht")
    assert not coupler.reply_direct(b"\x00" * 32, b"short", b"answer")
    assert not coupler.reply_direct(b"\x00" * 32, bytes(8) + bytes([127, 0, 0, 1, 0, 0]), b"a")
    assert bob.stats["reply_hints_bad"] == 2


# -- posting only when the direct push was not taken (DhtCoupler.direct_ack_wait) -------


def count_posts(monkeypatch: pytest.MonkeyPatch, p: Peer) -> list[bytes]:
    node = node_of(p)
    posted: list[bytes] = []
    real = node.post

    async def post(key: bytes, value: bytes) -> int:
        posted.append(value)
        return await real(key, value)

    monkeypatch.setattr(node, "post", post)
    return posted


async def test_an_answer_the_callers_node_took_directly_is_not_posted(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = await pair(net)
    coupler: Any = bob.coupler("dht")
    coupler.direct_ack_wait = 10.0  # the push's acknowledgement comes long before
    posted = count_posts(monkeypatch, bob)
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    assert posted == [] and bob.stats["answers_direct_only"] == 1
    assert node_of(alice).stats.get("pushes_direct", 0) == 1
    await conn.close()
    await inc.close()


async def test_an_answer_the_callers_node_took_directly_stands_when_no_storing_node_takes_it(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's node took the direct push, the post to the storing nodes fails (a DHT
    too loaded to answer in time): the answer is delivered, the call connects. It used to
    fail the answer: the callee closed the peer connection the caller was opening (a
    ``hailing call`` to a browser then said "the connection was lost")."""
    alice, bob = await pair(net)
    node = node_of(bob)

    async def post(key: bytes, value: bytes) -> int:
        return 0  # nobody stored it

    monkeypatch.setattr(node, "post", post)
    conn = await alice.connect(bob.contact_id, timeout=10)
    inc = await bob.accept(10)
    await conn.send_text("delivered directly")
    assert (await inc.recv()).text == "delivered directly"  # type: ignore[union-attr]
    assert bob.stats["answer_posts_failed"] == 1 and bob.stats["failed_answers"] == 0
    await conn.close()
    await inc.close()


async def test_an_answer_whose_direct_push_was_not_taken_is_posted_after_the_wait(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = await pair(net)
    coupler: Any = bob.coupler("dht")
    coupler.direct_ack_wait = 0.2
    posted = count_posts(monkeypatch, bob)
    victim = udp_sink()  # takes the push and never answers
    port = victim.getsockname()[1]
    forge_hint(monkeypatch, alice, lambda h: h[:8] + bytes([127, 0, 0, 1]) + port.to_bytes(2, "big"))
    try:
        conn = await alice.connect(bob.contact_id, timeout=10)
        inc = await bob.accept(10)
        assert len(posted) == 1 and bob.stats["answers_direct_only"] == 0
        assert len(drain(victim)) == 1
        await conn.close()
        await inc.close()
    finally:
        victim.close()


async def test_auto_posts_only_until_the_callers_node_took_a_direct_answer(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (``auto``): the first answer to a caller goes both ways; once its node
    took one directly, the next go only directly (posted after a few round trips if not
    taken); one that was not taken puts the caller back to both ways at once."""
    alice, bob = await pair(net)
    coupler: Any = bob.coupler("dht")
    assert coupler.direct_ack_wait == "auto"
    posted = count_posts(monkeypatch, bob)

    async def call() -> None:
        conn = await alice.connect(bob.contact_id, timeout=10)
        inc = await bob.accept(10)
        await conn.close()
        await inc.close()

    await call()
    assert len(posted) == 1 and bob.stats["answers_direct_only"] == 0
    await eventually(lambda: alice.public_key in coupler._took, "the push taken")
    await call()
    assert len(posted) == 1 and bob.stats["answers_direct_only"] == 1
    victim = udp_sink()  # the caller's node moved: its hint names a silent address
    port = victim.getsockname()[1]
    forge_hint(monkeypatch, alice, lambda h: h[:8] + bytes([127, 0, 0, 1]) + port.to_bytes(2, "big"))
    try:
        await call()  # posted after the wait
        assert len(posted) == 2 and bob.stats["direct_answers_late"] == 1
        assert alice.public_key not in coupler._took
        await call()  # both ways at once again: no wait
        assert len(posted) == 3 and bob.stats["direct_answers_late"] == 1
    finally:
        victim.close()
