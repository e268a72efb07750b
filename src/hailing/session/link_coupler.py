"""The ``link`` coupler: a further call signaled over a link that is already open.

Theory of operation
-------------------
Seed 000: data channels to friends are set up once (at boot, however slowly), and later
connections with them (a media call, another link) are signaled *over* those channels.
:class:`LinkCoupler` is that path as a :class:`~hailing.session.coupler.Coupler`, so the
:class:`~hailing.session.dialer.Dialer` tries it like any other rung (first, in the
default ladder: :mod:`hailing.session.ladder`): :meth:`~LinkCoupler.send` hands the sealed
envelope to :meth:`~hailing.rtc.connection.Connection.send_signal` of the open link to the
peer (``open_link(peer)``; the daemon's: the one both ends keep), and raises one line,
``no open link to this contact``, when there is none, so the Dialer moves on at once.

Nothing arrives *through* the coupler: an envelope on a channel goes to the session's
router as a channel signal (:meth:`~hailing.session.router.SignalRouter.from_channel`,
which checks it is from that channel's peer), and the callee answers over the channel it
came by. So :meth:`~LinkCoupler.start` only keeps the inlet, and the callee reports such
a call's coupler as ``channel``.

It carries :data:`~hailing.rtc.connection.MAX_SIGNAL` bytes (a media offer's envelope is
about 750); reach is ``friends``: only someone we already have a link with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NotFoundError
from ..rtc.connection import MAX_SIGNAL
from .coupler import Capabilities, Inlet, NoReplyHints, SignalKind

__all__ = ["NO_LINK", "LinkCoupler", "open_link_among"]

#: The error of a send with no open link to the peer.
NO_LINK = "no open link to this contact"


def open_link_among(connections: Any, peer: bytes) -> Any:
    """The open connection to ``peer`` among ``connections`` to signal over: a data-only
    one before one that carries media (a call's ends with the call), then the one whose
    caller has the larger public key (the one both ends keep,
    :func:`hailing.daemon.links._preferred`). None when there is none."""
    best: Any = None
    best_key: tuple[bool, bytes] = (False, b"")
    for conn in list(connections):
        if conn.peer != peer or not conn.is_open:
            continue
        tracks = getattr(conn, "tracks", None)
        key = (not (tracks is not None and tracks.kinds), getattr(conn, "initiator_key", b""))
        if best is None or key > best_key:
            best, best_key = conn, key
    return best


class LinkCoupler(NoReplyHints):
    """Envelopes over an open link to the peer (see the module docstring)."""

    name = "link"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=0.005, private=True,
                                reach="friends", max_blob=MAX_SIGNAL)

    def __init__(self, open_link: Callable[[bytes], Any]) -> None:
        self._open_link = open_link
        self._inlet: Inlet | None = None

    async def start(self, sink: Inlet) -> None:
        self._inlet = sink

    async def expect_from(self, peer: bytes) -> None:
        return None  # the answer comes over the same channel, to the router

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        conn = self._open_link(peer)
        if conn is None or not conn.is_open:
            raise NotFoundError(NO_LINK)
        conn.send_signal(blob)  # a closed channel raises ConnectionClosed (a HailingError)
        return 1

    async def refresh(self) -> int:
        return 0

    async def aclose(self) -> None:
        self._inlet = None
