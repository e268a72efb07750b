"""The daemon's side of the text coupler: offers and answers as texts to copy and paste.

Routes (under the API's checks, :mod:`hailing.daemon.api`):

- ``POST /api/couple/offer`` ``{"contact"}``: seal an offer to the contact and return it
  as a text (``text``; ``qr``, its QR code's form; ``qr_svg``, that code as SVG). The
  daemon holds the peer connection and waits up to ``expires_s`` (:data:`OFFER_TTL`,
  ten minutes) for the answer text; a new offer to the same contact replaces it.
- ``POST /api/couple/answer`` ``{"text"}``: a contact's offer text goes through the
  normal path (router, call policy, answer); returns the answer text, or 404 ``nothing
  to answer`` for an offer that is expired, used, damaged beyond its check, sealed to
  someone else, or from a caller the policy refuses: the same for all of these, and
  at once. The daemon holds the answering side for ``finish_within_s`` seconds.
- ``POST /api/couple/finish`` ``{"text", "timeout"?}``: the answer text completes the
  waiting offer; returns the open link as ``POST /api/connect`` does (``via`` ``text``).
  The link is the contact's link from then on (sends and chats use it).
- ``GET /api/couple``: the offers waiting for their answer.

A text that is not one, damaged or of the wrong kind is a 400 with one line
(:func:`hailing.signaling.textcode.decode_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from ..errors import HailingError, LocalProtocolError, NotFoundError, QueryTimeout
from ..identity import format_contact_id
from ..session.connections import CHANNEL_TIMEOUT
from ..session.text_coupler import OFFER_TTL, TextCoupler, text_offer
from ..signaling.textcode import TextKind, decode_text, encode_text, qr_text
from .links import path_of
from .webapp import ServerRoutes, card_svg

__all__ = ["FINISH_WAIT", "NOTHING_TO_ANSWER", "TextRoutes"]

#: How long ``finish`` waits for the channel to open and both sides to prove who they
#: are, at most (seconds).
FINISH_WAIT = 60.0
#: What a pasted offer that gets no answer says, whatever the reason (the callee's
#: policy runs first; a refused caller looks exactly like an expired offer).
NOTHING_TO_ANSWER = ("nothing to answer: the offer expired, was answered already, is not "
                     "sealed to you, or comes from someone you do not take calls from")


class _Pending:
    __slots__ = ("call", "expires", "started")

    def __init__(self, call: asyncio.Task[Any], expires: float) -> None:
        self.call = call
        self.expires = expires
        self.started = time.monotonic()


class TextRoutes(ServerRoutes):
    """The text coupler's routes for one API server (see the module docstring)."""

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self._pending: dict[bytes, _Pending] = {}

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/couple", self.get_pending)
        r.add_post("/api/couple/offer", self.post_offer)
        r.add_post("/api/couple/answer", self.post_answer)
        r.add_post("/api/couple/finish", self.post_finish)
        app.on_cleanup.append(self._cleanup)

    def _coupler(self) -> TextCoupler:
        peer = self.daemon.peer
        try:
            coupler = peer.coupler("text")
        except (AttributeError, HailingError):
            coupler = None
        if not isinstance(coupler, TextCoupler):
            raise LocalProtocolError("this daemon does not run the text coupler")
        return coupler

    # -- the handlers --------------------------------------------------------------------

    async def get_pending(self, request: web.Request) -> web.Response:
        now = time.time()
        offers = [{"contact": format_contact_id(peer),
                   "name": self.daemon._contact_name(format_contact_id(peer)),
                   "expires_s": round(max(0.0, p.expires - now), 1)}
                  for peer, p in self._pending.items() if not p.call.done()]
        return web.json_response({"offers": offers})

    async def post_offer(self, request: web.Request) -> web.Response:
        from .api import _body, _req

        body = await _body(request)
        return web.json_response(await self.offer(_req(body, "contact", str)))

    async def post_answer(self, request: web.Request) -> web.Response:
        from .api import _body, _req

        body = await _body(request)
        return web.json_response(await self.answer(_req(body, "text", str)))

    async def post_finish(self, request: web.Request) -> web.Response:
        from .api import _body, _req

        body = await _body(request)
        timeout = body.get("timeout", FINISH_WAIT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
                0 < timeout <= FINISH_WAIT):
            raise LocalProtocolError(f"'timeout' must be more than 0 and at most "
                                     f"{FINISH_WAIT:.0f}")
        return web.json_response(await self.finish(_req(body, "text", str), float(timeout)))

    # -- what they do ----------------------------------------------------------------------

    async def offer(self, ref: str) -> dict[str, Any]:
        coupler = self._coupler()
        peer = self.daemon.resolve(ref)
        manager = self.daemon.peer.manager
        if peer == self.daemon.peer.public_key:
            raise LocalProtocolError("cannot call yourself")
        old = self._pending.pop(peer, None)
        if old is not None:
            old.call.cancel()  # a new offer replaces the one waiting
        blob, call = await text_offer(manager, coupler, peer, OFFER_TTL)
        expires = time.time() + OFFER_TTL
        pending = self._pending[peer] = _Pending(call, expires)
        call.add_done_callback(lambda task: self._done(peer, pending, task))
        return {"to": format_contact_id(peer), **_texts(blob, "offer"),
                "expires_s": OFFER_TTL, "expires": round(expires)}

    def _done(self, peer: bytes, pending: _Pending, task: asyncio.Task[Any]) -> None:
        """An offer's call ended: a connection becomes the contact's link."""
        if self._pending.get(peer) is pending:
            del self._pending[peer]
        if task.cancelled() or task.exception() is not None:
            return
        conn = task.result()
        conn.connect_ms = (time.monotonic() - pending.started) * 1000
        self.daemon.links.adopt(conn, outgoing=True)

    async def answer(self, text: str) -> dict[str, Any]:
        coupler = self._coupler()
        blob = decode_text(text, "offer")
        pasted = await coupler.paste(blob, "offer")
        if pasted.sender is None or pasted.answer is None:
            raise NotFoundError(NOTHING_TO_ANSWER)
        who = format_contact_id(pasted.sender)
        return {"from": who, "name": self.daemon._contact_name(who),
                **_texts(pasted.answer, "answer"),
                "finish_within_s": self.daemon.peer.manager.channel_waits.get(
                    coupler.name, CHANNEL_TIMEOUT)}

    async def finish(self, text: str, timeout: float = FINISH_WAIT) -> dict[str, Any]:
        coupler = self._coupler()
        blob = decode_text(text, "answer")
        stats = self.daemon.peer.stats
        unexpected = stats["unexpected_answers"]
        pasted = await coupler.paste(blob, "answer")
        if pasted.sender is None:
            raise NotFoundError("this answer does not open here: it is not sealed to you, "
                                "or it was used already")
        who = format_contact_id(pasted.sender)
        pending = self._pending.get(pasted.sender)
        if pending is None:
            raise NotFoundError(f"no text offer to {who[:12]}... is waiting for an answer "
                                "(it expired, was finished, or the daemon restarted)")
        if stats["unexpected_answers"] > unexpected and not pending.call.done():
            raise NotFoundError("this answer is not for the offer waiting now (an older "
                                "offer's answer?): answer the latest offer text")
        try:
            async with asyncio.timeout(timeout):
                conn = await asyncio.shield(pending.call)
        except TimeoutError:
            raise QueryTimeout(f"the connection did not open within {timeout:.0f} s") from None
        out: dict[str, Any] = {"to": who, "connect_ms": round(conn.connect_ms or 0.0, 1),
                               "reused": False, "via": coupler.name, "path": path_of(conn)}
        return out

    async def _cleanup(self, app: web.Application) -> None:
        calls = [p.call for p in self._pending.values()]
        self._pending.clear()
        for call in calls:
            call.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*calls, return_exceptions=True)


def _texts(blob: bytes, kind: TextKind) -> dict[str, str]:
    qr = qr_text(blob, kind)
    return {"text": encode_text(blob, kind), "qr": qr, "qr_svg": card_svg(qr)}
