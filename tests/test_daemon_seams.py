"""Two parts of the daemon on their own, with connections that have nothing behind them:
:meth:`Links.deliver` (a send on a link tried once more when the link went away) and
:class:`MediaCalls` (a media call answered here: in the call log, its events, ended
however it ends)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from hailing.daemon.events import Event, EventBus
from hailing.daemon.links import REPLACED, Link, Links
from hailing.daemon.media_calls import MediaCalls
from hailing.errors import HailingError, LocalProtocolError
from hailing.identity import format_contact_id
from hailing.rtc.connection import TextMessage

BOB = bytes(range(1, 33))


class Conn:
    """A connection: yields ``items``, then stays open until closed."""

    def __init__(self, items: Sequence[object] = (), media: tuple[str, ...] = ()) -> None:
        self.peer = BOB
        self.items = list(items)
        self.is_open = True
        self.close_reason: str | None = None
        self.connect_ms = 5.0
        self.tracks = SimpleNamespace(kinds=media, sent=[], received=[])
        self._closed = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[object]:
        return self._items()

    async def _items(self) -> AsyncIterator[object]:
        for item in self.items:
            yield item
        await self._closed.wait()

    async def close(self, reason: str = "closed", replaced: bool = False) -> None:
        self.close_reason = self.close_reason or reason
        self.is_open = False
        self._closed.set()


class Dialer:
    def __init__(self) -> None:
        self.conns: list[Conn] = []

    async def __call__(self, peer: bytes, timeout: float) -> Conn:
        self.conns.append(Conn())
        return self.conns[-1]


def fails_on(*bad: Conn, error: HailingError) -> Any:
    """An op that raises ``error`` on the links of ``bad``, else says which conn it used."""
    async def op(link: Link) -> dict[str, Any]:
        if link.conn in bad:
            raise error
        return {"used": link.conn}
    return op


async def test_a_send_on_a_reused_link_that_went_away_is_tried_once_on_a_new_call() -> None:
    dial = Dialer()
    links = Links(dial, EventBus())
    try:
        link, ms, extra = await links.deliver(BOB, 5.0, fails_on(error=HailingError("x")))
        assert ms == 5.0 and extra == {"used": dial.conns[0]}
        # the link is reused; the other side went away without a word: a new call
        link, ms, extra = await links.deliver(BOB, 5.0, fails_on(dial.conns[0],
                                                                 error=HailingError("gone")))
        assert len(dial.conns) == 2 and extra == {"used": dial.conns[1]} and ms == 5.0
        assert link.conn is dial.conns[1] and dial.conns[0].close_reason == "closed"
        # our own mistake is never retried, not even on a reused link
        with pytest.raises(LocalProtocolError):
            await links.deliver(BOB, 5.0, fails_on(dial.conns[1],
                                                   error=LocalProtocolError("too big")))
        assert len(dial.conns) == 2
    finally:
        await links.aclose()


async def test_a_send_that_fails_on_a_fresh_call_is_retried_only_when_it_was_replaced() -> None:
    dial = Dialer()
    links = Links(dial, EventBus())
    try:
        first: list[Conn] = []

        async def fails_first(link: Link) -> dict[str, Any]:
            if not first:
                first.append(link.conn)
                raise HailingError("the channel closed")
            return {}

        with pytest.raises(HailingError, match="the channel closed"):
            await links.deliver(BOB, 5.0, fails_first)
        assert len(dial.conns) == 1
        await links.drop(links.open_link(BOB))  # type: ignore[arg-type]
        first.clear()

        async def replaced_under_the_send(link: Link) -> dict[str, Any]:
            if not first:
                first.append(link.conn)
                link.conn.close_reason = REPLACED
                raise HailingError("replaced")
            return {"used": link.conn}

        link, ms, extra = await links.deliver(BOB, 5.0, replaced_under_the_send)
        assert extra == {"used": dial.conns[-1]} and dial.conns[-1] is not first[0]
        assert link.conn is dial.conns[-1] and ms == 5.0 and len(dial.conns) == 3
    finally:
        await links.aclose()


class CallLog:
    def __init__(self) -> None:
        self.answered: list[tuple[bytes, tuple[str, ...]]] = []
        self.ended: list[tuple[str, bytes, str | None]] = []

    def answered_here(self, peer: bytes, media: Sequence[str]) -> str | None:
        self.answered.append((peer, tuple(media)))
        return "call-1"

    def ended_here(self, call_id: str, peer: bytes, reason: str | None) -> None:
        self.ended.append((call_id, peer, reason))


async def wait_for(events: list[Event], name: str) -> Event:
    async with asyncio.timeout(30):
        while not any(e["event"] == name for e in events):
            await asyncio.sleep(0.01)
    return next(e for e in events if e["event"] == name)


async def test_a_media_call_answered_here_is_logged_and_ends_when_the_daemon_stops() -> None:
    bus, events, log = EventBus(), [], CallLog()
    bus.add_sink(events.append)
    calls = MediaCalls(bus, media=None, calls=lambda: log, name_of=lambda who: None)  # type: ignore[arg-type,return-value]
    conn = Conn([TextMessage("hello")], media=("audio", "video"))
    calls.take(conn)
    await wait_for(events, "message")
    who = format_contact_id(BOB)
    connected = next(e for e in events if e["event"] == "connected")
    assert connected["from"] == who and connected["call"] == "call-1"
    assert connected["media"] == ("audio", "video") and connected["recording"] is None
    assert [c["from"] for c in calls.status()] == [who]
    assert log.answered == [(BOB, ("audio", "video"))]

    await calls.aclose()  # the daemon stops: the call ends, logged and said
    closed = await wait_for(events, "closed")
    assert closed["call"] == "call-1" and closed["reason"] == "the daemon stopped"
    assert log.ended == [("call-1", BOB, "the daemon stopped")]
    assert calls.status() == [] and conn.close_reason == "the daemon stopped"


async def test_a_media_call_that_ends_by_itself_is_said_once() -> None:
    bus, events = EventBus(), []
    bus.add_sink(events.append)
    calls = MediaCalls(bus, media=None, calls=lambda: None, name_of=lambda who: None)
    conn = Conn(media=("audio",))
    calls.take(conn)
    await wait_for(events, "connected")
    await conn.close("bye")
    closed = await wait_for(events, "closed")
    assert closed["reason"] == "bye" and closed["call"] is None
    await calls.aclose()
    assert [e["event"] for e in events] == ["connected", "closed"] and calls.status() == []
