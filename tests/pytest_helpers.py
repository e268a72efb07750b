"""Helpers shared by the pytest modules (pytest-only; benchmarks use conftest_chain)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import aiortc
import pytest
from conftest_chain import anvil_binary

import hailing.rtc


def anvil_or_skip() -> str:
    """The anvil binary; without one the test is skipped, or fails under
    ``HAILING_REQUIRE_ANVIL`` (as in ``scripts/test.sh``, so CI cannot skip it silently)."""
    binary, why = anvil_binary()
    if binary is None:
        if os.environ.get("HAILING_REQUIRE_ANVIL"):
            pytest.fail(why)
        pytest.skip(why)
    return binary


def loopback_ice() -> Iterator[None]:
    """ICE host candidates on 127.0.0.1 only, for the duration (restored after)."""
    before = hailing.rtc.current_host_addresses()
    hailing.rtc.set_host_addresses(["127.0.0.1"])
    yield
    hailing.rtc.set_host_addresses(before)


def recording_pcs(monkeypatch: pytest.MonkeyPatch) -> list[aiortc.RTCPeerConnection]:
    """Every RTCPeerConnection created from now on (peer.py imports it at call time)."""
    created: list[aiortc.RTCPeerConnection] = []
    original = aiortc.RTCPeerConnection

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            created.append(self)

    monkeypatch.setattr(aiortc, "RTCPeerConnection", Recording)
    return created


def run_testnet(nodes: int = 8) -> Iterator[str]:
    """A ``hailing testnet --nodes NODES`` subprocess for the duration; yields its bootstrap
    address and checks that it stops cleanly. For a module's ``bootstrap`` fixture."""
    from test_cli_peer import BOOTSTRAP_LINE, daemon  # the CLI process helpers live there

    with daemon("testnet", "--nodes", str(nodes)) as d:
        m = BOOTSTRAP_LINE.fullmatch(d.first_line())
        assert m, d.out.lines
        yield m.group(1)
        assert d.stop() == 0, d.err.lines
