"""The daemon's events: one JSON object each, the same on stdout (one a line) and on the
API's WebSocket (one a text frame).

The events ``hailing listen`` prints keep their shape: ``call``, ``failed``,
``connected``, ``message``, ``file``, ``closed``, ``chain``; what a connection yields
beyond text and files (e.g. ``FileStarted``) becomes ``file-started`` with its fields.
The daemon adds events for what it does itself: ``connected``/``closed`` with ``to`` for
links it opened, ``sent`` and ``file-sent`` for what it delivered, ``file-progress``
while a file goes out, ``contact`` and ``presence`` when they were changed through the
API, and ``error`` when one of its own tasks failed. An event about
something that came in names the contact in ``from``; one about something that went out,
in ``to``. Every event has ``at`` (Unix time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Event = dict[str, Any]
#: Events a subscriber may have waiting before it is cut off as too slow.
SUBSCRIBER_QUEUE = 1000


class Subscription:
    """A subscriber's queue. ``lagged`` once events had to be dropped for it."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.lagged = False

    def put(self, event: Event) -> None:
        if self.queue.full():
            self.lagged = True
            return
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()


class EventBus:
    """Fan-out of events to sinks (called at once, e.g. the stdout printer) and to
    subscribers (queues, e.g. the WebSocket clients)."""

    def __init__(self) -> None:
        self._sinks: list[Callable[[Event], None]] = []
        self._subs: set[Subscription] = set()

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        self._sinks.append(sink)

    def emit(self, event: Event) -> None:
        event.setdefault("at", round(time.time(), 3))
        for sink in self._sinks:
            sink(event)
        for sub in self._subs:
            sub.put(event)

    @contextlib.contextmanager
    def subscribe(self, size: int = SUBSCRIBER_QUEUE) -> Iterator[Subscription]:
        sub = Subscription(size)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


def item_event(item: object, who: str) -> Event:
    """The event for one thing a connection yielded (a text, a file, a file event)."""
    text = getattr(item, "text", None)
    if isinstance(text, str):
        return {"event": "message", "from": who, "text": text}
    name = type(item).__name__
    kind = "file" if name == "FileReceived" else re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()
    event: Event = {"event": kind, "from": who}
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        for f in dataclasses.fields(item):
            event[f.name] = _jsonable(getattr(item, f.name))
    return event


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
