"""The media tracks of one connection: what it sends, and what the peer sends it.

Theory of operation
-------------------
aiortc creates a remote track (a ``RemoteStreamTrack``) for each media section the peer
sends on, while the remote description is applied, and emits the peer connection's
``track`` event for it. The caller's :class:`~hailing.rtc.connection.Connection` exists
before the answer is applied, so it hears those events; the callee's is made only once
the caller's data channel opened, long after the offer was applied, so :class:`Tracks`
also takes the remote tracks already on the peer connection's transceivers when it is
made. Either way every received track is in :attr:`Tracks.received` once the connection
is authenticated, and :meth:`Tracks.next` hands them out one by one.

A received track must be read (``await track.recv()``) by someone, or its decoded frames
pile up in memory for the whole call: record it, play it, or drop it
(:class:`hailing.rtc.media.CallMedia` does one of these for every received track).

Nothing here imports aiortc: it works on whatever peer connection it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConnectionClosed, QueryTimeout

__all__ = ["MEDIA_KINDS", "Tracks", "add_answer_tracks", "media_kinds"]

#: The kinds of media tracks (a data channel is not one).
MEDIA_KINDS = ("audio", "video")


def media_kinds(pc: Any) -> list[str]:
    """The media kinds (``audio``, ``video``) of ``pc``'s transceivers, in order, once each:
    for an answering peer connection, what the offer has."""
    kinds: list[str] = []
    for transceiver in _transceivers(pc):
        kind = getattr(transceiver, "kind", None)
        if kind in MEDIA_KINDS and kind not in kinds:
            kinds.append(kind)
    return kinds


def add_answer_tracks(pc: Any, tracks: Iterable[Any]) -> list[Any]:
    """Add ``tracks`` to an answering ``pc`` (the offer applied), each on a media section
    of its kind the offer has and that sends nothing yet. A track the offer has no room
    for (a video track for an audio-only call, a second audio track) would make aiortc
    fail the answer: it is stopped instead. The tracks added are stopped when ``pc``
    closes or fails (they belong to this call). Returns the tracks added."""
    free: dict[str, int] = {}
    for transceiver in _transceivers(pc):
        kind = getattr(transceiver, "kind", None)
        if kind in MEDIA_KINDS and getattr(transceiver.sender, "track", None) is None:
            free[kind] = free.get(kind, 0) + 1
    added: list[Any] = []
    for track in tracks:
        if free.get(track.kind, 0) > 0:
            free[track.kind] -= 1
            pc.addTrack(track)
            added.append(track)
        else:
            track.stop()
    if added:
        def closed() -> None:
            if getattr(pc, "connectionState", None) in ("closed", "failed"):
                for track in added:
                    track.stop()

        pc.on("connectionstatechange", closed)
    return added


def _transceivers(pc: Any) -> Sequence[Any]:
    get = getattr(pc, "getTransceivers", None)
    return list(get()) if callable(get) else []


class Tracks:
    """The media of one connection (``conn.tracks``).

    :attr:`received` are the peer's tracks (aiortc ``MediaStreamTrack`` objects, audio or
    video); :attr:`sent` are ours; :meth:`next` waits for the next received track not yet
    handed out (for a peer that adds one later) and raises
    :class:`~hailing.errors.ConnectionClosed` once the connection closed with none left.
    """

    def __init__(self, pc: Any) -> None:
        self._pc = pc
        self.received: list[Any] = []
        self._handed = 0
        self._changed = asyncio.Event()
        self._ended: str | None = None
        for transceiver in _transceivers(pc):  # the callee's: the offer is applied already
            track = getattr(getattr(transceiver, "receiver", None), "track", None)
            if track is not None:
                self._add(track)
        on = getattr(pc, "on", None)
        if callable(on):
            on("track", self._add)

    def _add(self, track: Any) -> None:
        if getattr(track, "kind", None) in MEDIA_KINDS and all(t is not track for t in self.received):
            self.received.append(track)
            self._changed.set()

    @property
    def sent(self) -> list[Any]:
        """Our tracks on this connection (those given to ``connect`` or by ``answer_tracks``)."""
        get = getattr(self._pc, "getSenders", None)
        senders = get() if callable(get) else []
        return [s.track for s in senders if getattr(s, "track", None) is not None]

    @property
    def kinds(self) -> list[str]:
        """The media kinds this connection negotiated (sending, receiving or both)."""
        return media_kinds(self._pc)

    async def next(self, timeout: float | None = None) -> Any:
        """The next received track not yet returned by this method. Raises
        :class:`ConnectionClosed` when the connection closed and none is left,
        :class:`QueryTimeout` after ``timeout`` seconds without one."""
        try:
            async with asyncio.timeout(timeout):
                while self._handed >= len(self.received):
                    if self._ended is not None:
                        raise ConnectionClosed(f"the connection is closed: {self._ended}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise QueryTimeout(f"no media track came in {timeout:g} s") from None
        self._handed += 1
        return self.received[self._handed - 1]

    def end(self, reason: str) -> None:
        """The connection closed (called by it): :meth:`next` waits no more."""
        if self._ended is None:
            self._ended = reason
            self._changed.set()
