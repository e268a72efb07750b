"""The daemon's events: one JSON object each, the same on stdout (one a line) and on the
API's WebSocket (one a text frame).

The events ``hailing listen`` prints keep their shape: ``call``, ``failed``,
``connected``, ``message``, ``file``, ``closed``, ``chain``; what a connection yields
beyond text and files (e.g. ``FileStarted``) becomes ``file-started`` with its fields.
The daemon adds events for what it does itself: ``connected``/``closed`` with ``to`` for
links it opened, ``sent`` and ``file-sent`` for what it delivered, ``file-progress``
while a file goes out, ``contact`` and ``presence`` when they were changed through the
API, ``ring``, ``ring-ended``, ``missed`` and ``call-ended`` for browser calls
(:mod:`hailing.daemon.calls`), and ``error`` when one of its own tasks failed. An event about
something that came in names the contact in ``from``; one about something that went out,
in ``to``. Every event has ``at`` (Unix time), and one that names a contact in the book
by a name has ``contact`` (that name) too.
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

from ..errors import HailingError

Event = dict[str, Any]
#: Events a subscriber may have waiting before it is cut off as too slow.
SUBSCRIBER_QUEUE = 1000


class Subscription:
    """A subscriber's queue, bounded: once full, events are dropped for it (counted in
    ``dropped``) and it is ``lagged``, which the API answers by closing the client."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.lagged = False
        self.dropped = 0

    def put(self, event: Event) -> bool:
        """Queue ``event``; False (and counted) if the subscriber is too far behind."""
        if self.queue.full():
            self.lagged = True
            self.dropped += 1
            return False
        self.queue.put_nowait(event)
        return True

    async def get(self) -> Event:
        return await self.queue.get()


def add_contact_name(event: Event, name_of: Callable[[str], str | None]) -> Event:
    """Add ``contact``: the book's name for the contact id in ``from`` or ``to``, if any."""
    who = event.get("from", event.get("to"))
    if isinstance(who, str) and "contact" not in event:
        try:
            name = name_of(who)
        except (HailingError, ValueError):  # a malformed id: no name, and no failure
            name = None
        if name:
            event["contact"] = name
    return event


class EventBus:
    """Fan-out of events to sinks (called at once, e.g. the stdout printer) and to
    subscribers (queues, e.g. the WebSocket clients). ``name_of`` maps a contact id to
    its name in the book (or None), for :func:`add_contact_name`."""

    def __init__(self, name_of: Callable[[str], str | None] | None = None) -> None:
        self._sinks: list[Callable[[Event], None]] = []
        self._subs: set[Subscription] = set()
        self._name_of = name_of
        #: Events dropped for subscribers that fell behind (each is then closed).
        self.dropped = 0

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        self._sinks.append(sink)

    def emit(self, event: Event) -> None:
        event.setdefault("at", round(time.time(), 3))
        if self._name_of is not None:
            add_contact_name(event, self._name_of)
        for sink in self._sinks:
            sink(event)
        for sub in self._subs:
            if not sub.put(event):
                self.dropped += 1

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
