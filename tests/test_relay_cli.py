"""``hailing up --serve-relay``: refusals in one line, and a daemon that volunteers a
relay found on the DHT by another node (loopback; a real coturn)."""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_helpers import run_testnet
from test_cli_peer import daemon, one_error_line, run
from test_daemon import Up
from turn_helpers import allocate_error, free_udp_port, turnserver_or_skip, turnservers_of

from hailing.cli._relay_opts import relay_config
from hailing.errors import UsageError
from hailing.nat import RelayFinder
from hailing.node import DhtNode, parse_hostport


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    yield from run_testnet(4)


def ns(**kw: Any) -> argparse.Namespace:
    base = {"serve_relay": True, "relay_ip": None, "relay_port": None, "relay_ports": None,
            "relay_max_bps": None, "relay_capacity": None, "relay_lifetime": None}
    return argparse.Namespace(**{**base, **kw})


def test_a_public_bind_serves_on_that_address() -> None:
    cfg = relay_config(ns(relay_max_bps=5000, relay_ports=(50000, 50100)), ("198.18.0.5", 6881))
    assert cfg is not None
    assert (cfg.address, cfg.external_ip, cfg.port) == ("198.18.0.5", None, 3478)
    assert (cfg.max_bps, cfg.min_port, cfg.max_port) == (5000, 50000, 50100)
    assert not cfg.allow_loopback_peers


def test_an_explicit_relay_ip() -> None:
    one_to_one = relay_config(ns(relay_ip="203.0.113.9"), ("10.0.0.5", 6881))
    assert one_to_one is not None
    assert (one_to_one.address, one_to_one.external_ip) == ("10.0.0.5", "203.0.113.9")
    anywhere = relay_config(ns(relay_ip="203.0.113.9"), ("0.0.0.0", 6881))
    assert anywhere is not None
    assert (anywhere.address, anywhere.external_ip) == ("203.0.113.9", None)


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0", "192.168.1.20", "10.1.2.3",
                                  "100.64.0.7", "::1", "fd00::5"])
def test_a_node_behind_a_nat_is_refused(bind: str) -> None:
    with pytest.raises(UsageError, match="needs a public address"):
        relay_config(ns(), (bind, 6881))


def test_relay_flags_need_serve_relay_and_a_dht_node() -> None:
    assert relay_config(ns(serve_relay=False), ("198.18.0.5", 1)) is None
    with pytest.raises(UsageError, match="--relay-port needs --serve-relay"):
        relay_config(ns(serve_relay=False, relay_port=4000), ("198.18.0.5", 1))
    with pytest.raises(UsageError, match="DHT node"):
        relay_config(ns(), None)
    with pytest.raises(UsageError, match="--read-only"):
        relay_config(ns(read_only=True), ("198.18.0.5", 1))


def test_up_refuses_a_loopback_relay_in_one_line(tmp_path: Path) -> None:
    proc = run("up", "--data-dir", tmp_path / "a", "--bootstrap", "127.0.0.1:9",
               "--serve-relay")
    assert "needs a public address" in one_error_line(proc, 2)
    proc = run("up", "--data-dir", tmp_path / "a", "--bootstrap", "127.0.0.1:9",
               "--serve-relay", "--relay-ports", "5-4")
    assert proc.returncode == 2 and b"LO-HI" in proc.stderr


async def test_up_serves_a_relay_found_on_the_dht(bootstrap: str, tmp_path: Path) -> None:
    turnserver_or_skip()
    port = free_udp_port()
    data = tmp_path / "volunteer"
    with daemon("up", "--data-dir", data, "--bootstrap", bootstrap, "--serve-relay",
                "--relay-ip", "127.0.0.1", "--relay-port", str(port),
                "--relay-ports", "61000-61999") as d:
        assert re.match(r"up hl\S+ dht 127\.0\.0\.1:\d+ api ", d.first_line())
        i = d.wait_event(event="relay")
        assert d.event_at(i)["serving"] == f"127.0.0.1:{port}"
        assert d.event_at(i)["urls"] == [f"turn:127.0.0.1:{port}?transport=udp"]
        assert turnservers_of(data / "relay")
        status = Up(d, data).request("GET", "/api/status")[1]["relay"]
        assert status["address"] == f"127.0.0.1:{port}" and status["ready"] is True
        assert status["pid"] in turnservers_of(data / "relay")
        node = DhtNode(bootstrap=[parse_hostport(bootstrap)])
        await node.start()
        try:
            await node.bootstrap()
            finder = RelayFinder(node)
            creds = None
            for _ in range(50):  # the daemon's first announce may still be under way
                creds = await finder.credentials(refresh=True)
                if creds is not None:
                    break
                await asyncio.sleep(0.1)
            assert creds is not None and creds.address == ("127.0.0.1", port)
            assert await allocate_error(creds.address, creds.username, creds.password) is None
        finally:
            await node.stop()
        stats = Up(d, data).request("GET", "/api/status")[1]["relay"]["stats"]
        assert stats["minted"] >= 1 and stats["turnserver_starts"] == 1
        assert d.stop() == 0
    assert turnservers_of(data / "relay") == []


def test_up_with_the_relay_port_taken_fails_in_one_line(bootstrap: str, tmp_path: Path
                                                         ) -> None:
    turnserver_or_skip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = run("up", "--data-dir", tmp_path / "v", "--bootstrap", bootstrap,
                   "--serve-relay", "--relay-ip", "127.0.0.1", "--relay-port", str(port),
                   "--relay-ports", "61000-61999")
    assert f"127.0.0.1:{port} is taken" in one_error_line(proc, 1)
    assert turnservers_of(tmp_path / "v" / "relay") == []
