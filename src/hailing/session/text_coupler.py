"""The text coupler: an offer and its answer carried by a person, as texts to copy/paste.

Theory of operation
-------------------
:class:`TextCoupler` is a :class:`~hailing.session.coupler.Coupler` whose "network" is
whoever asked for a text (the daemon's API, :mod:`hailing.daemon.text`):

- **Caller.** :func:`text_offer` seals an offer to a contact through the session's
  :class:`~hailing.session.connections.ConnectionManager` as any call does; the
  coupler's :meth:`~TextCoupler.send` hands the sealed envelope to the waiting
  :meth:`~TextCoupler.take_offer` instead of a network, and the call goes on waiting
  for the answer (as long as the offer lives: minutes, a person carries it). The
  offer is made without the per-contact call lock of :meth:`hailing.peer.Peer.connect`:
  a text offer waiting ten minutes never holds up other calls to that contact.
- **Callee.** :meth:`~TextCoupler.paste` puts the pasted envelope into the coupler's
  :class:`~hailing.session.coupler.Inlet`: the normal path runs, the
  :class:`~hailing.session.router.SignalRouter` (open, replay, expiry, once-ever),
  the call policy (**the callee decides first**) and the manager's answer. The
  router's :meth:`~TextCoupler.admit` tells the coupler who sealed the pasted
  envelope; an accepted offer's answer comes back through :meth:`~TextCoupler.send`
  and is returned to whoever pasted. A blocked or unknown caller, a busy callee, an
  expired, replayed, tampered offer or one sealed to someone else all give the same
  result: no answer (:attr:`Pasted.answer` None), which the CLI and the web app show
  as "nothing to answer". Whether an answer is still coming is asked of the manager
  (``answering(caller)``: an accepted offer is being answered), so a refusal is known
  at once, with no timer.
- **Caller again.** The pasted answer goes through the same inlet; the router hands it
  to the manager, which completes the call :func:`text_offer` started.

A CANCEL or an endpoint record cannot go as a text: :meth:`~TextCoupler.send` refuses
them (a caller that gives up on a text offer just stops waiting; the callee's answer,
if any, then finds nobody).

The callee's side waits :data:`ANSWER_HOLD` seconds for the caller's channel (the
Peer sets it in the manager's ``channel_waits``; other calls wait
:data:`~hailing.session.connections.CHANNEL_TIMEOUT`): the answer text must be finished
within that time (``docs/overlay.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import LocalProtocolError, NotFoundError
from ..signaling.textcode import MAX_ENVELOPE, TextKind
from .coupler import Capabilities, Inlet, SignalKind

if TYPE_CHECKING:
    from ..rtc.connection import Connection
    from .connections import ConnectionManager
    from .router import SignalRouter

__all__ = ["ANSWER_HOLD", "ANSWER_WAIT", "OFFER_TTL", "Pasted", "TextCoupler",
           "start_text_coupler", "text_offer"]

#: How long a text offer lives and its caller waits for the answer text (seconds).
OFFER_TTL = 600.0
#: Longest a paste waits for the session's answer to an accepted offer (the answering
#: side gathers its candidates first; on loopback a few milliseconds).
ANSWER_WAIT = 30.0
#: How long the answering side waits for the caller's channel once it made the answer
#: text (seconds): a person carries the text back (other calls wait CHANNEL_TIMEOUT).
#: Below what the answering side's ICE lasts: an answer finished 110 s later still
#: connected on loopback, one finished 150 s later did not (aioice's checks gave up).
ANSWER_HOLD = 90.0
#: How often a paste asks whether an accepted offer is still being answered.
_POLL = 0.05
#: Most pastes in progress at once (more: a one-line error, try again).
MAX_PASTES = 16


@dataclass(frozen=True, slots=True)
class Pasted:
    """What became of a pasted envelope: ``sender`` is who sealed it (None: it did not
    open here: not for us, damaged, replayed); ``answer`` is the sealed answer to give
    back (None: nothing to answer)."""

    sender: bytes | None
    answer: bytes | None = None


class _Paste:
    __slots__ = ("kind", "sender")

    def __init__(self, kind: TextKind) -> None:
        self.kind = kind
        self.sender: bytes | None = None


class TextCoupler:
    """Envelopes carried as texts (see the module docstring). ``answering(peer)``: whether
    the session is answering an accepted offer of ``peer`` now (the manager's)."""

    name = "text"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=60.0, private=True,
                                reach="anyone", max_blob=MAX_ENVELOPE)

    def __init__(self, answering: Callable[[bytes], bool] | None = None, *,
                 answer_wait: float = ANSWER_WAIT) -> None:
        self._answering = answering or (lambda peer: False)
        self.answer_wait = answer_wait
        self._inlet: Inlet | None = None
        self._offers: dict[bytes, asyncio.Future[bytes]] = {}
        self._answers: dict[bytes, asyncio.Future[bytes]] = {}
        self._pastes: dict[bytes, _Paste] = {}

    # -- the Coupler interface ----------------------------------------------------------

    async def start(self, sink: Inlet) -> None:
        self._inlet = sink

    async def expect_from(self, peer: bytes) -> None:
        return None

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        """Hand ``blob`` to whoever waits for it: an offer to :meth:`take_offer`, an
        answer to the :meth:`paste` of that caller's offer. NotFoundError when nobody
        waits; LocalProtocolError for what cannot go as a text."""
        if kind == "offer":
            waiting = self._offers.pop(peer, None)
        elif kind == "answer":
            waiting = self._answers.pop(peer, None)
        else:
            self._count(f"text_{kind}s_refused")
            raise LocalProtocolError(f"a {kind} cannot go as a text")
        if waiting is None or waiting.done():
            self._count(f"text_{kind}s_unclaimed")
            raise NotFoundError(f"nobody is waiting for this {kind} text")
        waiting.set_result(blob)
        self._count(f"text_{kind}s_made")
        return 1

    async def refresh(self) -> int:
        return 0

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        """Learn who sealed a pasted envelope (the router opened it); never refuses."""
        paste = self._pastes.get(_digest(blob))
        if paste is not None:
            paste.sender = sender
            if paste.kind == "offer":  # its answer comes back through send()
                old = self._answers.pop(sender, None)
                if old is not None and not old.done():
                    old.cancel()
                self._answers[sender] = asyncio.get_running_loop().create_future()
        return None

    def reply_hint(self, peer: bytes) -> bytes | None:
        return None  # the answer goes back the way the offer came: through a person

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        return False

    async def aclose(self) -> None:
        for fut in [*self._offers.values(), *self._answers.values()]:
            fut.cancel()
        self._offers.clear()
        self._answers.clear()

    # -- what the API asks -----------------------------------------------------------------

    def take_offer(self, peer: bytes) -> asyncio.Future[bytes]:
        """The next offer sealed to ``peer`` through this coupler (see :func:`text_offer`)."""
        old = self._offers.pop(peer, None)
        if old is not None and not old.done():
            old.cancel()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._offers[peer] = fut
        return fut

    async def paste(self, blob: bytes, kind: TextKind) -> Pasted:
        """Hand a pasted envelope (``kind``: what the text said it is) to the session and
        return what became of it (see the module docstring and :class:`Pasted`)."""
        inlet = self._inlet
        if inlet is None:
            raise LocalProtocolError("the text coupler is not started")
        if len(self._pastes) >= MAX_PASTES:
            raise LocalProtocolError("too many texts are being handled: try again")
        key = _digest(blob)
        if key in self._pastes:
            raise LocalProtocolError("this text is being handled already")
        paste = self._pastes[key] = _Paste(kind)
        try:
            self._count(f"text_{kind}s_pasted")
            if not inlet.put_nowait(blob):
                raise LocalProtocolError("too many texts are being handled: try again")
            await inlet.queue.join()  # the router opened, checked and dispatched it
            sender = paste.sender
            if sender is None or kind == "answer":
                return Pasted(sender)
            return Pasted(sender, await self._answer_of(sender))
        finally:
            del self._pastes[key]

    async def _answer_of(self, sender: bytes) -> bytes | None:
        fut = self._answers.get(sender)
        if fut is None:
            return None
        deadline = time.monotonic() + self.answer_wait
        try:
            while not fut.done():
                # not accepted (refused, stale, handled before) or failed while answering
                if not self._answering(sender) or time.monotonic() > deadline:
                    self._count("text_offers_unanswered")
                    return None
                await asyncio.wait([fut], timeout=_POLL)
            return None if fut.cancelled() else fut.result()
        finally:
            if self._answers.get(sender) is fut:
                del self._answers[sender]

    def _count(self, what: str) -> None:
        if self._inlet is not None:
            self._inlet.stats[what] += 1


async def text_offer(manager: ConnectionManager, coupler: TextCoupler, peer: bytes,
                     wait: float = OFFER_TTL) -> tuple[bytes, asyncio.Task[Connection]]:
    """Start a call to ``peer`` whose offer goes as a text: returns the sealed offer and
    the task that completes the call once its answer is pasted (:meth:`TextCoupler.paste`)
    within ``wait`` seconds (then QueryTimeout). The task is the caller's to await or
    cancel."""
    offered = coupler.take_offer(peer)

    async def send(blob: bytes) -> int:
        return await coupler.send(peer, blob, "offer")

    async def call() -> Connection:
        conn = await manager.offer(peer, wait=wait, send=send)
        conn.coupler = coupler.name
        return conn

    task = asyncio.ensure_future(call())
    try:
        await asyncio.wait([offered, cast("asyncio.Future[Any]", task)],
                           return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not offered.done():  # the call failed before its offer was sealed
        offered.cancel()
        await task  # raises its error
        raise LocalProtocolError("the call ended before its offer was made")
    return offered.result(), task


async def start_text_coupler(manager: ConnectionManager, router: SignalRouter) -> TextCoupler:
    """A started TextCoupler for the session of ``manager`` and ``router`` (what
    ``Peer(text=True)`` runs beside its ladder): its answered calls wait
    :data:`ANSWER_HOLD` for the caller's channel."""
    coupler = TextCoupler(answering=manager.answering)
    manager.channel_waits[coupler.name] = ANSWER_HOLD
    await coupler.start(router.attach(coupler))
    return coupler


def _digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()
