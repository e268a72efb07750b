"""``hailing up --on-call CMD`` through the real CLI: two ``hailing up`` processes on a
``hailing testnet`` process; the caller's page is a captured Chromium offer (the daemon
only seals and sends it). Every wait has a timeout; nothing here is timed."""

from __future__ import annotations

import json
import shlex
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_helpers import run_testnet
from test_daemon import Up, friends, up, wait_until

OFFER = (Path(__file__).parent / "data" / "sdp" / "chromium150-offer-av-data.sdp").read_text()


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    yield from run_testnet(6)


def test_hailing_up_runs_the_on_call_command_with_the_ring_on_stdin(
        bootstrap: str, tmp_path: Path) -> None:
    ids = friends(tmp_path, "alice", "bob")
    out = tmp_path / "rings dir" / "ring.json"
    out.parent.mkdir()
    script = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read())"
    cmd = shlex.join([sys.executable, "-c", script, str(out)])
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    with up(b_dir, "--bootstrap", bootstrap, "--on-call", cmd) as bd, \
            up(a_dir, "--bootstrap", bootstrap) as ad:
        bob, alice = Up(bd, b_dir), Up(ad, a_dir)
        results: list[tuple[int, Any]] = []
        caller = threading.Thread(target=lambda: results.append(alice.request(
            "POST", "/api/calls", {"contact": "bob", "sdp": OFFER, "media": "video",
                                   "call": "from-the-cli", "timeout": 8})))
        caller.start()
        bob.d.wait_event(event="ring")
        [rang] = [e for e in bob.d.events() if e["event"] == "ring"]
        wait_until(lambda: out.exists() and out.read_text().endswith("\n"))
        [line] = out.read_text().splitlines()
        assert json.loads(line) == rang  # the event exactly as printed
        assert rang["from"] == ids["alice"] and rang["contact"] == "alice"
        assert rang["media"] == "video"
        caller.join(30)
        assert results and results[0][0] == 504  # nobody accepted
        bob.d.wait_event(event="missed", call=rang["call"])
        status, body = bob.request("GET", "/api/status")
        assert status == 200 and body["calls"]["on_call_runs"] == 1
        assert bob.d.stop() == 0 and alice.d.stop() == 0
