"""Suite-wide fixtures.

``pcs``: every RTCPeerConnection the test's peers create (``recording_pcs``).
``started``: a list of Peers the test started; stopped, newest first, at teardown.

Every test fails (at teardown) when asyncio reports an exception nobody retrieved
("Task exception was never retrieved", "Future exception was never retrieved"): such an
exception is a failure that vanished, which the session's supervision must never allow.

That check runs a full garbage collection after every test (a future in a reference
cycle reports only when it is collected). So that it costs what the test left behind,
not the whole heap (modules, classes, collected items: about 200,000 objects, 0.1 s a
collection, 2,400 times), the heap that is alive when a test module starts is frozen
(``gc.freeze``): the collector skips it from then on. What is alive between two modules
lives as long as the session (modules, session fixtures, caches); the previous module's
fixtures are torn down by then, and their garbage is collected (and checked) just before.
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
#: Found when a module starts, in what the previous one left: reported by the next test.
_LEFT_BY_PREVIOUS_MODULE: list[str] = []


def _record_unretrieved(monkeypatch: pytest.MonkeyPatch, seen: list[str]) -> None:
    """Append to ``seen`` every unretrieved exception asyncio reports (any event loop)."""
    original = asyncio.BaseEventLoop.call_exception_handler

    def record(self: asyncio.BaseEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if _UNRETRIEVED in message:
            seen.append(f"{message}: {context.get('exception')!r}")
        original(self, context)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_exception_handler", record)


@pytest.fixture(autouse=True, scope="module")
def _heap_frozen_between_modules() -> None:
    """Collect what the previous module left (its module fixtures are torn down by now),
    then freeze what is alive: see the docstring above. An unretrieved exception found
    in that garbage fails this module's first test, as it did when that test's own
    collection found it. Autouse and module-scoped: it runs before this module's own
    module fixtures, which are therefore never frozen."""
    with pytest.MonkeyPatch.context() as patch:
        _record_unretrieved(patch, _LEFT_BY_PREVIOUS_MODULE)
        gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def unretrieved_exceptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The unretrieved exceptions asyncio reported during the test (any event loop); the
    test fails if any is left at teardown. A test that provokes one on purpose may
    request this fixture and clear the list."""
    seen = _LEFT_BY_PREVIOUS_MODULE[:]
    _LEFT_BY_PREVIOUS_MODULE.clear()
    _record_unretrieved(monkeypatch, seen)
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
