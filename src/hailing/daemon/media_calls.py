"""The media calls a daemon answers itself (``hailing up --auto-answer``, or any accepted
connection with media that reached the Peer's own aiortc path).

Theory of operation
-------------------
Each accepted connection with media is a *media call*, never a link (it would replace
the contact's link, and be hung up as idle). :meth:`MediaCalls.take` runs it in a task
of its own, which:

- enters it in the call log (:meth:`Calls.answered_here
  <hailing.daemon.calls.Calls.answered_here>`), as a page's calls are;
- records its received tracks, one file per call
  (:func:`~hailing.rtc.media.recording_path`) when the daemon's
  :class:`~hailing.rtc.media.MediaOptions` say ``record``, else reads and drops them;
- emits ``connected``, then one event per item the peer sends over the call's data
  channel, then ``closed`` with ``media``, ``duration_s`` and the frame counts;
- finalizes the recording when the call ends, however it ends (the other side hangs
  up, the call fails, the daemon stops: :meth:`MediaCalls.aclose`), and never raises.

:meth:`MediaCalls.status` lists the calls in progress (``media_calls`` in
``GET /api/status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..identity import format_contact_id
from .events import EventBus, item_event
from .links import path_of

if TYPE_CHECKING:
    from ..rtc.media import MediaOptions
    from .calls import Calls

__all__ = ["MediaCalls"]

log = logging.getLogger(__name__)


class MediaCalls:
    """The media calls answered here (see the module docstring). ``media``: the
    daemon's media options (None: nothing recorded); ``calls()``: the call log, while
    the daemon has one; ``name_of(contact_id)``: a contact's name, for file names."""

    def __init__(self, events: EventBus, *, media: MediaOptions | None,
                 calls: Callable[[], Calls | None],
                 name_of: Callable[[str], str | None]) -> None:
        self.events = events
        self.media = media
        self._calls = calls
        self._name_of = name_of
        self._tasks: set[asyncio.Task[None]] = set()
        self._recordings: set[Path] = set()  # files of calls in progress (not written yet)
        self._now: dict[int, dict[str, Any]] = {}  # calls in progress, for status

    def take(self, conn: Any) -> None:
        """Run the accepted media call ``conn`` until it ends (a task of its own)."""
        task = asyncio.ensure_future(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status(self) -> list[dict[str, Any]]:
        """The calls in progress: ``from``, ``call``, ``media``, ``sent``, ``received``,
        ``recording``, ``path`` and the ``frames`` received so far."""
        return [{**c, "frames": dict(sorted(c["frames"].items()))} for c in self._now.values()]

    async def aclose(self) -> None:
        """End every call in progress; each finalizes its recording first."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, conn: Any) -> None:
        """One answered media call (see the module docstring); never raises."""
        from ..rtc.media import CallMedia, recording_path

        who = format_contact_id(conn.peer)
        record: Path | None = None
        if self.media is not None and self.media.record is not None:
            record = recording_path(self.media.record, self._name_of(who) or who[:12],
                                    taken=self._recordings)
            self._recordings.add(record)
        media = CallMedia(conn.tracks.received, record=record)
        kinds = {"media": conn.tracks.kinds, "sent": [t.kind for t in conn.tracks.sent],
                 "received": [t.kind for t in conn.tracks.received]}
        started = time.monotonic()
        call_id: str | None = None
        try:
            calls = self._calls()
            if calls is not None:  # in the call log, as a page's calls are
                call_id = calls.answered_here(conn.peer, conn.tracks.kinds)
            await media.start()
            now = {"from": who, "call": call_id, **kinds,
                   "recording": str(record) if media.recorded_kinds else None,
                   "path": path_of(conn)}
            self._now[id(media)] = {**now, "frames": media.frames}
            self.events.emit({"event": "connected", **now})
            async for item in conn:
                self.events.emit(item_event(item, who))
        except Exception as exc:
            log.warning("media call from %s failed: %r", who[:16], exc)
            with contextlib.suppress(Exception):
                await conn.close(f"failed: {exc}")
        finally:
            self._now.pop(id(media), None)
            summary = await media.stop()  # finalized first, whatever else happens
            if record is not None:
                self._recordings.discard(record)
            if conn.close_reason is None:
                with contextlib.suppress(Exception):
                    await conn.close("the daemon stopped")
            self.events.emit({"event": "closed", "from": who, "call": call_id,
                              "reason": conn.close_reason, "media": kinds["media"],
                              "duration_s": round(time.monotonic() - started, 1), **summary})
            calls = self._calls()
            if call_id is not None and calls is not None:
                calls.ended_here(call_id, conn.peer, conn.close_reason)
