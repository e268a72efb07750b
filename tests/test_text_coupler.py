"""The text coupler: the text codec (round trips, every damage a clear error) and two
Peers coupled by pasted texts through the normal router, policy and manager path."""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_helpers import loopback_ice
from session_doubles import PeerNet, peer_net

from hailing.errors import LocalProtocolError, NotFoundError
from hailing.identity import Identity, qr_matrix
from hailing.peer import Peer
from hailing.session.text_coupler import TextCoupler, text_offer
from hailing.signaling import envelope
from hailing.signaling.textcode import (
    MAX_ENVELOPE,
    MAX_TEXT,
    PREFIX,
    b45decode,
    b45encode,
    decode_text,
    encode_text,
    qr_text,
    text_kind,
)

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

blobs = st.binary(min_size=1, max_size=600)
kinds = st.sampled_from(["offer", "answer"])


# -- the codec ---------------------------------------------------------------------------


@given(blobs, kinds)
def test_round_trip_both_forms(blob: bytes, kind: str) -> None:
    text = encode_text(blob, kind)  # type: ignore[arg-type]
    assert text.startswith(PREFIX) and text_kind(text) == kind
    assert set(text) <= set(string.ascii_letters + string.digits + "-_:")
    assert decode_text(text, kind) == blob  # type: ignore[arg-type]
    qr = qr_text(blob, kind)  # type: ignore[arg-type]
    assert qr == qr.upper()
    assert decode_text(qr, kind) == blob  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_base45_round_trip_and_rfc_examples(data: bytes) -> None:
    assert b45decode(b45encode(data)) == data
    assert b45encode(b"AB") == "BB8"  # RFC 9285 section 4.3
    assert b45encode(b"Hello!!") == "%69 VD92EX0"
    assert b45decode("QED8WEX0") == b"ietf!"


def _bad(text: str) -> str:
    with pytest.raises(LocalProtocolError) as info:
        decode_text(text)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("form", [encode_text, qr_text])
def test_every_bit_flip_and_truncation_is_a_clear_error(form: object) -> None:
    blob = bytes(range(256))[:200]
    text = form(blob, "offer")  # type: ignore[operator]
    raw = text.encode()
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            try:
                damaged = flipped.decode()
            except UnicodeDecodeError:
                continue  # not text: nothing a paste could carry
            if damaged.strip() != text and damaged.translate(
                    str.maketrans("", "", " \t\r\n")) != text.replace(" ", ""):
                _bad(damaged)
    for n in range(len(text) - 1, 0, -1):  # every truncation
        _bad(text[:n])


def test_clear_messages() -> None:
    blob = b"x" * 100
    offer = encode_text(blob, "offer")
    assert "damaged" in _bad(offer[:-3] + ("A" if offer[-3] != "A" else "B") + offer[-2:])
    assert "not a hailing text" in _bad("hello")
    assert "not a hailing text" in _bad("hailing:1:x:abcd")
    assert "version" in _bad("hailing:7:o:abcd")
    assert "too long" in _bad("hailing:1:o:" + "A" * MAX_TEXT)
    with pytest.raises(LocalProtocolError, match="an offer text, not an answer"):
        decode_text(offer, "answer")
    # swapping the kind letter is caught by the check
    assert "damaged" in _bad(offer.replace(":o:", ":a:"))
    # a mail program's line breaks and spaces around it do not matter
    wrapped = "  " + "\n".join(offer[i:i + 40] for i in range(0, len(offer), 40)) + "\n"
    assert decode_text(wrapped) == blob
    with pytest.raises(LocalProtocolError):
        encode_text(b"y" * (MAX_ENVELOPE + 1), "offer")


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_garbage_is_a_one_line_error(garbage: str) -> None:
    for text in (garbage, PREFIX + "o:" + garbage, "HAILING:1:A:" + garbage):
        try:
            decode_text(text)
        except LocalProtocolError as exc:
            assert "\n" not in str(exc)


def test_qr_form_is_the_smaller_code() -> None:
    """The measurement behind the QR form (docs/overlay.md): base45 in alphanumeric
    mode against base64url in byte mode, for envelopes of an offer's size."""
    a, b = Identity.generate(), Identity.generate()
    for size in (250, 350, 500):
        blob = envelope.seal(a, b.public_key, envelope.KIND_OFFER, bytes(size), now=0.0)
        b64, b45 = len(qr_matrix(encode_text(blob, "offer"))), len(qr_matrix(qr_text(blob, "offer")))
        assert b45 < b64, (size, b45, b64)


# -- two Peers coupled by texts -------------------------------------------------------------


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[PeerNet]:
    async with peer_net(tmp_path, size=8) as n:
        yield n


def _text(p: Peer) -> TextCoupler:
    c = p.coupler("text")
    assert isinstance(c, TextCoupler)
    return c


async def test_offer_answer_finish_opens_an_authenticated_link(net: PeerNet) -> None:
    alice = await net.peer("alice", text=True)
    bob = await net.peer("bob", text=True)
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    assert alice.manager is not None
    offer, call = await text_offer(alice.manager, _text(alice), bob.public_key)
    offer_text = encode_text(offer, "offer")
    pasted = await _text(bob).paste(decode_text(offer_text, "offer"), "offer")
    assert pasted.sender == alice.public_key and pasted.answer is not None
    answer_text = encode_text(pasted.answer, "answer")
    finished = await _text(alice).paste(decode_text(answer_text, "answer"), "answer")
    assert finished.sender == bob.public_key and finished.answer is None
    conn = await asyncio.wait_for(call, 30)
    incoming = await bob.accept(timeout=30)
    assert conn.coupler == "text" and incoming.coupler == "text"
    assert conn.peer == bob.public_key and incoming.peer == alice.public_key
    await conn.send_text("over a pasted answer")
    assert (await incoming.recv()).text == "over a pasted answer"  # type: ignore[union-attr]
    # the same offer pasted again: handled once ever, nothing to answer
    again = await _text(bob).paste(offer, "offer")
    assert again.answer is None
    assert alice.dialer is not None and "text" not in [r.name for r in alice.dialer.ladder]


async def test_a_blocked_caller_gets_nothing_to_answer_at_once(net: PeerNet) -> None:
    alice = await net.peer("alice", text=True)
    bob = await net.peer("bob", text=True)
    assert bob.contacts is not None and alice.manager is not None
    bob.contacts.block(alice.public_key, "alice")
    offer, call = await text_offer(alice.manager, _text(alice), bob.public_key)
    _text(bob).answer_wait = 3600.0  # were a timer to decide, the paste would hang
    pasted = await asyncio.wait_for(_text(bob).paste(offer, "offer"), 60)
    assert pasted.sender == alice.public_key and pasted.answer is None
    assert bob.stats["refused_blocked"] == 1
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)


async def test_envelopes_that_do_not_open_here_and_what_cannot_go_as_text(
        net: PeerNet) -> None:
    alice = await net.peer("alice", text=True)
    bob = await net.peer("bob", text=True)
    carol = await net.peer("carol", text=True)
    assert alice.manager is not None
    offer, call = await text_offer(alice.manager, _text(alice), bob.public_key)
    # sealed to bob: carol cannot open it (a wrong recipient looks like garbage)
    assert await _text(carol).paste(offer, "offer") == (await _text(carol).paste(
        b"\x01" + bytes(200), "offer"))
    assert carol.stats["bad_envelopes"] == 2
    # an answer nobody waits for is refused where it would be sent
    with pytest.raises(NotFoundError):
        await _text(bob).send(alice.public_key, b"x", "answer")
    with pytest.raises(LocalProtocolError):
        await _text(bob).send(alice.public_key, b"x", "cancel")
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    assert alice.stats["cancel_errors"] <= 1


async def test_the_answering_side_waits_longer_for_a_text_answer(
        net: PeerNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person carries the answer text back: the callee's call waits ANSWER_HOLD for the
    caller's channel, not the CHANNEL_TIMEOUT of other couplers' calls (made short here:
    the answer is finished after it)."""
    import hailing.session.connections as connections
    from hailing.session.text_coupler import ANSWER_HOLD

    monkeypatch.setattr(connections, "CHANNEL_TIMEOUT", 0.3)
    alice = await net.peer("alice", text=True)
    bob = await net.peer("bob", text=True)
    assert bob.contacts is not None and alice.manager is not None and bob.manager is not None
    assert bob.manager.channel_waits == {"text": ANSWER_HOLD} and ANSWER_HOLD > 60
    bob.contacts.add(alice.contact_id, "alice")
    offer, call = await text_offer(alice.manager, _text(alice), bob.public_key)
    pasted = await _text(bob).paste(offer, "offer")
    assert pasted.answer is not None
    await asyncio.sleep(1.0)  # longer than the (shortened) CHANNEL_TIMEOUT
    await _text(alice).paste(pasted.answer, "answer")
    conn = await asyncio.wait_for(call, 30)
    assert (await bob.accept(timeout=30)).peer == alice.public_key and conn.is_open
    assert bob.stats["failed_answers"] == 0


async def test_an_expired_offer_gets_what_a_blocked_caller_gets(net: PeerNet) -> None:
    alice = await net.peer("alice", text=True)
    bob = await net.peer("bob", text=True)
    assert bob.contacts is not None and alice.manager is not None
    bob.contacts.add(alice.contact_id, "alice")
    offer, call = await text_offer(alice.manager, _text(alice), bob.public_key, wait=1.0)
    await asyncio.gather(call, return_exceptions=True)  # the caller gave up: it expired
    await asyncio.sleep(1.5)
    pasted = await _text(bob).paste(offer, "offer")
    assert pasted.answer is None
    assert bob.stats["stale_offers"] == 1 and not bob.stats["refused_blocked"]


async def test_an_endpoint_record_never_goes_as_a_text(tmp_path: Path) -> None:
    """The text coupler is beside the ladder: publishing an endpoint record tries only
    the ladder's couplers, and their failure is the one reported."""
    from session_doubles import Switchboard

    from hailing.errors import HailingError
    from hailing.signaling.endpoint import EndpointRecord

    pipe = Switchboard().coupler(b"me", fail="the pipe is down")
    p = Peer(tmp_path / "p", couplers=[pipe], text=True)
    await p.start()
    try:
        assert [c.name for c in p.couplers] == ["pipe", "text"]
        with pytest.raises(HailingError, match="the pipe is down"):
            await p.publish_endpoint(Identity.generate().public_key,
                                     EndpointRecord("sip", "127.0.0.1:5060", {}))
        assert p.stats["text_endpoints_refused"] == 0
    finally:
        await p.stop()
