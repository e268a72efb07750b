"""The mixed network in the NAT lab (:mod:`mixed_world`): 40 libtorrent DHT nodes and 4
public hailing nodes on the public segment, daemons behind port-restricted NATs. Every
node joins through libtorrent nodes only: a call connects through the sub-overlay (the
inbox on the public hailing nodes, found through announces libtorrent stores), and once
every public hailing node is stopped, through the BEP44 fallback (items on libtorrent
nodes, polled). Skipped where the lab cannot run, required under CI=true; nothing here
is timed (benchmarks/mixed_network.py measures).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mixed_world import HL_NODES, MixedWorld
from natlab import Lab

CALL_TIMEOUT = 30.0
#: The fallback polls (p50 about 4 s a direction): room for both directions and ICE, and
#: for the callee to notice that its inbox listens are gone (up to 25.5 s; then it polls
#: fast), on a loaded machine.
FALLBACK_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(natlab_module: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedWorld]:
    w = MixedWorld(natlab_module, tmp_path_factory.mktemp("mixed"))
    try:
        w.start()
        yield w
    finally:
        w.close()


def _status(world: MixedWorld, name: str) -> dict[str, object]:
    d = world.daemons[name]
    assert d.driver is not None
    code, body = d.driver.request("GET", "/api/status")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def test_a_call_connects_through_the_sub_overlay(world: MixedWorld, tmp_path: Path) -> None:
    for d in world.daemons.values():  # joined through a libtorrent node, nothing else
        assert list(d.args)[:2] == ["--bootstrap", world.bootstrap], d.args
    result = world.call("port-restricted", "port-restricted", timeout=CALL_TIMEOUT)
    (tmp_path / "call.json").write_text(json.dumps(result))
    assert result.get("delivered"), (result, world.caller("port-restricted").stderr())
    assert result["via"] == "dht", result  # the inbox, not the BEP44 fallback
    assert not result["path"]["relayed"], result


def test_with_every_hailing_node_stopped_the_bep44_fallback_connects(
        world: MixedWorld, tmp_path: Path) -> None:
    caller = world.caller("port-restricted")
    world.stop_hailing_nodes("e-port-restricted")  # no hailing node can store an inbox
    assert len(world.hailing_procs) == HL_NODES
    assert all(p.poll() is not None for p in world.hailing_procs)
    result = world.send(caller, world.fallback_callee, timeout=FALLBACK_TIMEOUT)
    (tmp_path / "fallback.json").write_text(json.dumps(result))
    assert result.get("delivered"), (result, caller.stderr(), world.fallback_callee.stderr())
    assert result["via"] == "mainline", result
