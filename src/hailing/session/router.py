"""SignalRouter: every incoming envelope is opened, checked and handed to one handler.

Theory of operation
-------------------
Envelopes come from each coupler's :class:`~hailing.session.coupler.Inlet` (one consumer
task per coupler, supervised) and from open data channels (:meth:`SignalRouter.from_channel`).
For each, in order (the counter in ``stats`` that a refusal bumps is in brackets):

1. **open** it (:func:`~hailing.signaling.envelope.open_envelope`): at most
   :data:`~hailing.signaling.envelope.MAX_ENVELOPE` bytes, sealed to us, by the sender
   it names, fresh, not replayed (the replay cache keeps a window per sender and never
   evicts a contact's for a stranger's: :mod:`hailing.signaling.replay`). A second
   delivery of bytes already opened (an offer posted to both our pair and public inbox)
   is a ``duplicates``; anything else refused is a ``bad_envelopes`` (the reasons are in
   :attr:`replay`.stats);
2. **origin**: an envelope that came over a data channel must be from that channel's
   peer (``misrouted_signals``);
3. **the coupler's own check** (:meth:`~hailing.session.coupler.Coupler.admit`, e.g.
   the contract's wallet check) for an envelope a coupler brought (``refused_<reason>``);
4. **deadline**: a kind registered ``strict_expiry`` (offers) is dropped once past its
   own expiry, even within the clock-skew allowance the envelope gives
   (``stale_<kind>s``): a caller that has given up must not ring anyone;
5. **once ever**: for a kind registered ``once_ever`` (offers and endpoint records: what
   rings or is kept), the nonce is recorded on disk (:meth:`SignalStore.record_handling`,
   kept until the envelope's expiry plus the clock skew, bounded per contact and for
   all strangers together), so an inbox or a chain that hands the same envelope to a
   restarted node does not get it handled twice (``already_handled``, or
   ``below_replay_floor`` for one older than a record that had to go). Answers are
   not: an answer only matters to the process that holds the matching offer, and two
   processes of one identity (a daemon and a one-shot ``send --no-daemon`` on the same
   data directory) both hear it; the one that did not call must not record it as
   handled for the one that did;
6. **dispatch** by kind to the registered handler (``unknown_kind`` if none).

A handler is a plain function of (opened envelope, :class:`Source`); it must not block
(a call it accepts runs in its own supervised task). A handler that raises is a bug: the
envelope is dropped, ``receive_errors`` counted and the traceback logged once; the
router goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import StorageError
from ..identity import Identity
from ..rtc.connection import Connection
from ..signaling import envelope
from ..signaling.envelope import EnvelopeError, ReplayCache, ReplayedEnvelope
from ..signaling.store import SignalStore
from .coupler import INLET_SIZE, Coupler, Inlet
from .supervisor import Supervisor

__all__ = ["OPENED_MEMORY", "Handler", "SignalRouter", "Source"]

log = logging.getLogger("hailing.session")

#: Digests of recently opened envelopes kept to recognise a second delivery of one.
OPENED_MEMORY = 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Where an envelope came from: a coupler, or an open data channel."""

    coupler: Coupler | None = None
    channel: Connection | None = None

    @property
    def name(self) -> str:
        """The coupler's name, or ``channel``."""
        return self.coupler.name if self.coupler is not None else "channel"


Handler = Callable[[envelope.Opened, Source], None]


class SignalRouter:
    """Opens, checks and dispatches the envelopes sealed to ``identity`` (see the module
    docstring). ``stats`` and ``supervisor`` are shared with the session."""

    def __init__(self, identity: Identity, store: SignalStore, *, supervisor: Supervisor,
                 stats: Counter[str], clock: Callable[[], float] = time.time,
                 replay: ReplayCache | None = None,
                 is_contact: Callable[[bytes], bool] | None = None) -> None:
        self.identity = identity
        self.store = store
        self.stats = stats
        #: Whose envelopes are a contact's (their replay state is never evicted for a
        #: stranger's); by default the replay cache's own.
        self.replay = replay if replay is not None else ReplayCache(is_contact=is_contact)
        self.is_contact = is_contact or self.replay.is_contact
        self._supervisor = supervisor
        self._clock = clock
        self._handlers: dict[int, tuple[Handler, bool, str, bool]] = {}
        self._opened: OrderedDict[bytes, None] = OrderedDict()
        self._channel: asyncio.Queue[tuple[bytes, Connection]] = asyncio.Queue(
            maxsize=INLET_SIZE)
        self._channel_started = False

    def on(self, kind: int, handler: Handler, *, name: str, strict_expiry: bool = False,
           once_ever: bool = True) -> None:
        """Send opened envelopes of ``kind`` to ``handler``. With ``strict_expiry`` one
        past its own expiry is dropped and counted ``stale_<name>s``; with ``once_ever``
        (the default) one handled before, by any process on this data directory, is
        dropped and counted ``already_handled``."""
        self._handlers[kind] = (handler, strict_expiry, name, once_ever)

    # -- inputs --------------------------------------------------------------------------

    def attach(self, coupler: Coupler) -> Inlet:
        """The inlet to give ``coupler.start``; its envelopes are handled from now on."""
        inlet = Inlet(coupler.name, self._supervisor, self.stats)
        source = Source(coupler=coupler)

        async def consume() -> None:
            while True:
                blob = await inlet.queue.get()
                try:
                    await self.handle(blob, source)
                finally:
                    inlet.queue.task_done()  # the contract watcher saves its cursor after

        self._supervisor.loop(consume, name=f"{coupler.name} router")
        return inlet

    def from_channel(self, conn: Connection, blob: bytes) -> None:
        """An envelope that arrived over ``conn``'s data channel (Connection.on_signal)."""
        if self._channel.full():
            self.stats["dropped_blobs"] += 1
            return
        if not self._channel_started:
            self._channel_started = True

            async def consume() -> None:
                while True:
                    data, origin = await self._channel.get()
                    await self.handle(data, Source(channel=origin))

            self._supervisor.loop(consume, name="channel router")
        self._channel.put_nowait((blob, conn))

    # -- the checks ----------------------------------------------------------------------

    async def handle(self, blob: bytes, source: Source) -> None:
        """Open, check and dispatch one envelope; never raises for remote input."""
        try:
            await self._handle(blob, source)
        except Exception:  # a bug in a handler: keep routing, but say so
            self.stats["receive_errors"] += 1
            log.exception("handling a signaling envelope from %s failed", source.name)

    async def _handle(self, blob: bytes, source: Source) -> None:
        now = self._clock()
        try:
            opened = envelope.open_envelope(self.identity, blob, now=now, replay=self.replay)
        except ReplayedEnvelope:
            digest = hashlib.sha256(blob).digest()  # opened once: at most MAX_ENVELOPE
            self.stats["duplicates" if digest in self._opened else "bad_envelopes"] += 1
            return
        except EnvelopeError:
            self.stats["bad_envelopes"] += 1
            return
        self._opened[hashlib.sha256(blob).digest()] = None
        if len(self._opened) > OPENED_MEMORY:
            self._opened.popitem(last=False)
        if source.channel is not None and source.channel.peer != opened.sender:
            self.stats["misrouted_signals"] += 1  # someone else's envelope on a channel
            return
        if source.coupler is not None:
            refused = await source.coupler.admit(opened.sender, blob)
            if refused is not None:
                self.stats["refused_" + refused] += 1
                return
        entry = self._handlers.get(opened.kind)
        if entry is None:
            self.stats["unknown_kind"] += 1
            return
        handler, strict, name, once_ever = entry
        if strict and now > opened.expires:
            self.stats[f"stale_{name}s"] += 1  # its sender gave up: do not act on it
            return
        if once_ever and (refused := self._record_handling(opened, now)) is not None:
            self.stats[refused] += 1  # handled before a restart: never twice
            return
        handler(opened, source)

    def _record_handling(self, opened: envelope.Opened, now: float) -> str | None:
        """The on-disk record (see :meth:`on`): None, or why not to handle it again. A
        file that cannot be written (locked by another process, full, read-only) does
        not stop the envelope: the in-memory replay cache still refuses it twice in this
        run; counted (``handled_record_errors``), warned about once."""
        try:
            return self.store.record_handling(
                opened.nonce, opened.expires, now, sender=opened.sender,
                timestamp=opened.timestamp, contact=self.is_contact(opened.sender))
        except StorageError as exc:
            self.stats["handled_record_errors"] += 1
            if self.stats["handled_record_errors"] == 1:
                log.warning("hailing: %s; handling the envelope anyway (counted in "
                            "handled_record_errors, not repeated)", exc)
            return None
