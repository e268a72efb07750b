"""The callee's side of a call: every offer meets the call policy before anything else.

Theory of operation
-------------------
The :class:`~hailing.session.router.SignalRouter` hands :class:`Callee` the offers,
answers and CANCELs it opened (signed, sealed to us, fresh, not replayed, from the
origin they claim). For an offer, **the callee decides first**:

1. the body is split into the description and the coupler's reply hint (if any); a
   description that is not bound to the envelope (no single DTLS fingerprint) is
   garbage inside a good envelope: no call at all, counted ``unbound_offers``; one whose
   CANCEL overtook it is dropped, counted ``cancelled_before_offer``;
2. ``admit(caller)`` (the call policy: blocked, busy, do-not-disturb, unknown and not
   accept-any) runs before anything is answered. A refused caller gets nothing at all,
   exactly what an offline callee looks like (counted ``refused_<reason>``);
3. an accepted offer with audio or video rings for a page when ``on_media()`` gives a
   handler (:meth:`ConnectionManager.ring
   <hailing.session.connections.ConnectionManager.ring>`), else the
   :class:`~hailing.session.connections.ConnectionManager` answers it here; either may
   still refuse it when too many calls are being answered;
4. the answer goes back the way the offer came (:func:`reply_route`): through the same
   coupler, and with the offer's reply hint also straight back (the answer skips a hop),
   or over the data channel it came on. Only then does the caller learn our candidates.

Every offer that gets this far is one :class:`~hailing.session.events.CallEvent`
(``emit``), accepted or refused with the reason. Answers and CANCELs go to the
connection manager, which owns the calls in progress.

This module never imports the services layer: the policy comes in as ``admit`` and
``is_contact``, plain callables.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable

from ..errors import SdpError
from ..signaling import envelope
from ..signaling.envelope import KIND_ANSWER, KIND_CANCEL, KIND_OFFER
from .connections import ConnectionManager, bound
from .coupler import SignalKind
from .descriptions import split_offer_body
from .dialer import sender
from .events import CallEvent
from .external import IncomingCall, media_of
from .router import SignalRouter, Source

__all__ = ["Callee", "reply_route"]

#: Where a ringing media call goes (a page answers it), or None: answered here.
MediaHandler = Callable[[IncomingCall], None]


class Callee:
    """Decides on, then answers or rings, the offers the router opened (see the module
    docstring). ``admit(caller)`` is ``"accepted"`` or the reason of a refusal;
    ``is_contact(caller)`` tells contacts from strangers (whose calls yield first);
    ``on_media()`` is read at each offer (its owner may set it after start)."""

    def __init__(self, manager: ConnectionManager, *, admit: Callable[[bytes], str],
                 is_contact: Callable[[bytes], bool], emit: Callable[[CallEvent], None],
                 on_media: Callable[[], MediaHandler | None], stats: Counter[str]) -> None:
        self.manager = manager
        self.stats = stats
        self._admit = admit
        self._is_contact = is_contact
        self._emit = emit
        self._on_media = on_media

    def attach(self, router: SignalRouter) -> None:
        """Take the router's offers, answers and CANCELs from now on."""
        router.on(KIND_OFFER, self.offer, name="offer", strict_expiry=True)
        router.on(KIND_ANSWER, self.answer, name="answer", once_ever=False)
        router.on(KIND_CANCEL, self.cancel, name="cancel", once_ever=False)

    def offer(self, opened: envelope.Opened, source: Source) -> None:
        """A router handler: an offer, decided on first (see the module docstring)."""
        try:  # the reply hint (if any) is the coupler's; the rest is the description
            description, hint = split_offer_body(opened.body)
        except SdpError:
            description, hint = b"", None
        opened = dataclasses.replace(opened, body=description)
        if not bound(opened):  # garbage inside a good envelope: no call at all
            self.stats["unbound_offers"] += 1
            return
        manager = self.manager
        if manager.was_cancelled(opened):  # its CANCEL overtook it
            self.stats["cancelled_before_offer"] += 1
            return
        sdp, media = media_of(opened.body)
        verdict = self._admit(opened.sender)
        stranger = not self._is_contact(opened.sender)
        reply = reply_route(source, opened.sender, "answer", hint)
        on_media = self._on_media()
        if verdict == "accepted" and media and on_media is not None:
            assert sdp is not None
            verdict = manager.ring(opened, reply, source.name, sdp, media, on_media,
                                   stranger=stranger) or verdict
        elif verdict == "accepted":  # unless too many calls are being answered (counted)
            verdict = manager.answer(opened, reply, source.name,
                                     stranger=stranger) or verdict
        else:
            self.stats["refused_" + verdict] += 1
        self._emit(CallEvent(opened.sender, verdict == "accepted", verdict,
                             coupler=source.name, media=media))

    def answer(self, opened: envelope.Opened, source: Source) -> None:
        """A router handler: an answer to one of our offers."""
        self.manager.answer_received(opened)

    def cancel(self, opened: envelope.Opened, source: Source) -> None:
        """A router handler: a caller gave up its offer."""
        self.manager.cancel_received(opened)


def reply_route(source: Source, peer: bytes, kind: SignalKind,
                hint: bytes | None = None) -> Callable[[bytes], Awaitable[object]]:
    """How to answer ``peer``: the way its offer came; with the offer's reply ``hint``,
    also straight back through the coupler (the answer skips a hop)."""
    coupler = source.coupler
    if coupler is not None:
        send = sender(coupler, peer, kind)
        if hint is None:
            return send

        async def direct_and_post(blob: bytes) -> int:
            coupler.reply_direct(peer, hint, blob)  # one datagram, counted there
            return await send(blob)

        return direct_and_post
    channel = source.channel
    assert channel is not None

    async def over_channel(blob: bytes) -> None:
        channel.send_signal(blob)

    return over_channel
