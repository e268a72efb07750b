"""The callee's side on its own (``hailing.session.callee``), with a stand-in connection
manager: the policy runs first and a refused caller gets nothing; an accepted offer is
answered, or rung when it has media and someone takes ringing calls; garbage inside a
good envelope is no call at all; the answer goes back the way the offer came."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest

from hailing.session.callee import Callee, reply_route
from hailing.session.connections import ConnectionManager
from hailing.session.events import CallEvent
from hailing.session.external import IncomingCall
from hailing.session.router import Source
from hailing.signaling.envelope import KIND_OFFER, Opened

CALLER = bytes(range(32))
FINGERPRINT = bytes(range(100, 132))


def sdp(*media: str) -> bytes:
    """An offer's SDP text with one DTLS fingerprint and these media sections."""
    fp = ":".join(f"{b:02X}" for b in FINGERPRINT)
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
             f"a=fingerprint:sha-256 {fp}", "a=group:BUNDLE 0"]
    for i, kind in enumerate((*media, "application")):
        proto = "UDP/DTLS/SCTP webrtc-datachannel" if kind == "application" else "UDP/TLS/RTP/SAVPF 96"
        lines += [f"m={kind} 9 {proto}", "c=IN IP4 0.0.0.0", f"a=mid:{i}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def offer(body: bytes) -> Opened:
    return Opened(sender=CALLER, kind=KIND_OFFER, body=body, timestamp=0.0, expires=60.0,
                  nonce=bytes(32), fingerprint=None)


class Manager:
    """What Callee uses of a ConnectionManager: records what it was asked to do."""

    def __init__(self) -> None:
        self.answered: list[tuple[Opened, str | None, bool]] = []
        self.rung: list[tuple[str, tuple[str, ...]]] = []
        self.answers: list[Opened] = []
        self.cancels: list[Opened] = []

    def was_cancelled(self, opened: Opened) -> bool:
        return False

    def answer(self, opened: Opened, reply: Any, coupler: str | None = None, *,
               stranger: bool = False) -> str | None:
        self.answered.append((opened, coupler, stranger))
        return None

    def ring(self, opened: Opened, reply: Any, coupler: str, sdp: str,
             media: tuple[str, ...], on_call: Any, *, stranger: bool = False) -> str | None:
        self.rung.append((coupler, media))
        return None

    def answer_received(self, opened: Opened) -> None:
        self.answers.append(opened)

    def cancel_received(self, opened: Opened) -> None:
        self.cancels.append(opened)


class Coupler:
    name = "pipe"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, str]] = []
        self.direct: list[tuple[bytes, bytes, bytes]] = []

    @property
    def capabilities(self) -> Any:
        class Caps:
            max_blob = 10_000
        return Caps()

    async def send(self, peer: bytes, blob: bytes, kind: str) -> int:
        self.sent.append((peer, blob, kind))
        return 1

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        self.direct.append((peer, hint, blob))
        return True


def callee(verdict: str, on_media: Callable[[IncomingCall], None] | None = None
           ) -> tuple[Callee, Manager, list[CallEvent], Counter[str]]:
    manager, events, stats = Manager(), [], Counter[str]()
    c = Callee(cast(ConnectionManager, manager), admit=lambda caller: verdict,
               is_contact=lambda caller: verdict == "accepted", emit=events.append,
               on_media=lambda: on_media, stats=stats)
    return c, manager, events, stats


@pytest.mark.parametrize("verdict", ["blocked", "busy", "dnd", "unknown"])
def test_a_refused_caller_gets_nothing_and_the_refusal_is_one_event(verdict: str) -> None:
    c, manager, events, stats = callee(verdict, on_media=lambda call: None)
    c.offer(offer(sdp("audio")), Source(cast(Any, Coupler())))
    assert manager.answered == [] and manager.rung == []
    assert stats[f"refused_{verdict}"] == 1
    assert [(e.accepted, e.reason, e.coupler, e.media) for e in events] == [
        (False, verdict, "pipe", ("audio",))]


def test_an_accepted_offer_is_answered_or_rung() -> None:
    c, manager, events, _ = callee("accepted")
    c.offer(offer(sdp()), Source(cast(Any, Coupler())))
    assert [(coupler, stranger) for _, coupler, stranger in manager.answered] == [("pipe", False)]
    # with media and nobody taking ringing calls: answered here too
    c.offer(offer(sdp("audio", "video")), Source(cast(Any, Coupler())))
    assert len(manager.answered) == 2 and manager.rung == []
    rings: list[IncomingCall] = []
    c, manager, events, _ = callee("accepted", on_media=rings.append)
    c.offer(offer(sdp("audio", "video")), Source(cast(Any, Coupler())))
    assert manager.rung == [("pipe", ("audio", "video"))] and manager.answered == []
    assert [(e.accepted, e.reason) for e in events] == [(True, "accepted")]


@pytest.mark.parametrize("body", [b"", b"v=0\r\n", b"\x00garbage",
                                  sdp().replace(b"sha-256", b"sha-1")])
def test_an_offer_not_bound_to_one_fingerprint_is_no_call(body: bytes) -> None:
    c, manager, events, stats = callee("accepted")
    c.offer(offer(body), Source(cast(Any, Coupler())))
    assert (manager.answered, manager.rung, events) == ([], [], [])
    assert stats["unbound_offers"] == 1


def test_answers_and_cancels_go_to_the_manager() -> None:
    c, manager, _, _ = callee("accepted")
    c.answer(offer(b"a"), Source())
    c.cancel(offer(b"c"), Source())
    assert [o.body for o in manager.answers] == [b"a"]
    assert [o.body for o in manager.cancels] == [b"c"]


async def test_the_answer_goes_back_the_way_the_offer_came() -> None:
    coupler = Coupler()
    await reply_route(Source(cast(Any, coupler)), CALLER, "answer")(b"one")
    assert coupler.sent == [(CALLER, b"one", "answer")] and coupler.direct == []
    # with the offer's reply hint: straight back as well as through the coupler
    await reply_route(Source(cast(Any, coupler)), CALLER, "answer", b"hint")(b"two")
    assert coupler.direct == [(CALLER, b"hint", b"two")]
    assert coupler.sent[-1] == (CALLER, b"two", "answer")

    class Channel:
        def __init__(self) -> None:
            self.signals: list[bytes] = []

        def send_signal(self, blob: bytes) -> None:
            self.signals.append(blob)

    channel = Channel()
    await reply_route(Source(channel=cast(Any, channel)), CALLER, "answer")(b"three")
    assert channel.signals == [b"three"]
