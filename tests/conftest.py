"""Suite-wide fixtures.

``pcs``: every RTCPeerConnection the test's peers create (``recording_pcs``).
``started``: a list of Peers the test started; stopped, newest first, at teardown.

Every test fails (at teardown) when asyncio reports an exception nobody retrieved
("Task exception was never retrieved", "Future exception was never retrieved"): such an
exception is a failure that vanished, which the session's supervision must never allow.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from natlab.fixtures import natlab, natlab_module  # noqa: F401  (NAT lab fixtures)

if TYPE_CHECKING:
    import aiortc

    from hailing.peer import Peer

_UNRETRIEVED = "exception was never retrieved"


@pytest.fixture(autouse=True)
def unretrieved_exceptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The unretrieved exceptions asyncio reported during the test (any event loop); the
    test fails if any is left at teardown. A test that provokes one on purpose may
    request this fixture and clear the list."""
    seen: list[str] = []
    original = asyncio.BaseEventLoop.call_exception_handler

    def record(self: asyncio.BaseEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if _UNRETRIEVED in message:
            seen.append(f"{message}: {context.get('exception')!r}")
        original(self, context)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_exception_handler", record)
    yield seen
    gc.collect()  # futures report an unretrieved exception when they are collected
    if seen:
        pytest.fail("asyncio reported exceptions nobody retrieved:\n" + "\n".join(seen),
                    pytrace=False)


@pytest.fixture
def pcs(monkeypatch: pytest.MonkeyPatch) -> list[aiortc.RTCPeerConnection]:
    """Every RTCPeerConnection the peers create."""
    from pytest_helpers import recording_pcs

    return recording_pcs(monkeypatch)


@pytest.fixture
async def started() -> AsyncIterator[list[Peer]]:
    peers: list[Peer] = []
    yield peers
    for p in reversed(peers):
        await p.stop()
