"""The supervised coturn (hailing.nat.turnserver) on 127.0.0.1: credentials, caps,
supervision. Needs Debian's coturn: skipped without it, failed under CI=true."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import signal
import stat
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from turn_helpers import (
    RELAY_PORTS,
    Allocation,
    Sink,
    allocate_error,
    free_udp_port,
    pid_alive,
    turnserver_or_skip,
    turnservers_of,
)

from hailing.errors import LocalProtocolError, StorageError
from hailing.nat.turnserver import TurnConfig, TurnServer, load_secret, rest_credentials


def config(**kw: Any) -> TurnConfig:
    base: dict[str, Any] = {"port": free_udp_port(), "min_port": RELAY_PORTS[0],
                            "max_port": RELAY_PORTS[1], "allow_loopback_peers": True}
    return TurnConfig("127.0.0.1", **{**base, **kw})


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[TurnServer]:
    turnserver_or_skip()
    server = TurnServer(tmp_path / "relay", config())
    await server.start()
    yield server
    await server.stop()


def creds(server: TurnServer, ttl: float = 600) -> tuple[str, str]:
    return rest_credentials(server.secret, int(time.time() + ttl))


# -- without coturn ------------------------------------------------------------------------

def test_rest_credentials_are_coturns_scheme() -> None:
    user, password = rest_credentials("s3cret", 1700000000, "abc")
    assert user == "1700000000:abc"
    mac = hmac.new(b"s3cret", b"1700000000:abc", hashlib.sha1).digest()
    assert password == base64.b64encode(mac).decode()
    assert rest_credentials("s3cret", 1)[0] != rest_credentials("s3cret", 1)[0]


def test_the_secret_is_made_once_and_private(tmp_path: Path) -> None:
    relay = tmp_path / "relay"
    first = load_secret(relay)
    assert len(first) == 64 and load_secret(relay) == first
    assert stat.S_IMODE((relay / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE(relay.stat().st_mode) == 0o700
    os.chmod(relay / "secret", 0o644)  # readable by others: refused, never used
    with pytest.raises(StorageError):
        load_secret(relay)


def test_the_config_has_the_caps_and_nothing_system_wide(tmp_path: Path) -> None:
    cfg = TurnConfig("198.18.0.5", port=3478, max_bps=123, capacity_bps=456, user_quota=2,
                     total_quota=7, max_lifetime=900)
    text = cfg.render("SECRET", tmp_path)
    lines = set(text.splitlines())
    for line in ("listening-ip=198.18.0.5", "relay-ip=198.18.0.5", "external-ip=198.18.0.5",
                 "listening-port=3478", "use-auth-secret", "static-auth-secret=SECRET",
                 "max-bps=123", "bps-capacity=456", "user-quota=2", "total-quota=7",
                 "max-allocate-lifetime=900", "no-tcp", "no-tls", "no-dtls", "no-tcp-relay",
                 "no-cli", "no-multicast-peers", "fingerprint", "log-file=stdout",
                 f"pidfile={tmp_path}/turnserver.pid", f"userdb={tmp_path}/turndb",
                 "denied-peer-ip=10.0.0.0-10.255.255.255"):
        assert line in lines, line
    assert "allow-loopback-peers" not in lines
    assert "/var/" not in text and "/etc/" not in text
    nat = TurnConfig("10.0.0.5", external_ip="198.18.0.5").render("S", tmp_path)
    assert "external-ip=198.18.0.5/10.0.0.5" in nat.splitlines()


@pytest.mark.parametrize("kw", [
    {"address": "nope"}, {"port": 0}, {"min_port": 100}, {"min_port": 5000, "max_port": 4000},
    {"port": 50000}, {"max_bps": -1}, {"max_lifetime": 5}, {"external_ip": "x"},
])
def test_bad_settings_are_one_line_errors(kw: dict[str, Any], tmp_path: Path) -> None:
    args = {"address": "127.0.0.1", "port": 3478, **kw}
    with pytest.raises(LocalProtocolError) as err:
        TurnServer(tmp_path, TurnConfig(**args))
    assert "\n" not in str(err.value)


async def test_a_missing_turnserver_is_a_one_line_error(tmp_path: Path) -> None:
    server = TurnServer(tmp_path / "relay", config(), binary="turnserver-not-installed")
    with pytest.raises(LocalProtocolError, match="apt-get install coturn"):
        await server.start()


# -- with coturn ---------------------------------------------------------------------------

async def test_allocate_with_valid_credentials(turn: TurnServer) -> None:
    conf = turn.relay_dir / "turnserver.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert turn.secret in conf.read_text()
    alloc = await Allocation.open(turn.address, *creds(turn), lifetime=3600)
    try:
        host, port = await alloc.allocate()
        assert host == "127.0.0.1" and RELAY_PORTS[0] <= port <= RELAY_PORTS[1]
        assert alloc.lifetime == 600  # the lifetime cap, not the 3600 asked for
    finally:
        await alloc.close()


async def test_refused_without_forged_or_expired_credentials(turn: TurnServer) -> None:
    user, password = creds(turn)
    assert await allocate_error(turn.address, None, None) == 401
    assert await allocate_error(turn.address, user, "AAAA" + password[4:]) == 401
    forged_user = f"{int(time.time()) + 600}:mine"
    assert await allocate_error(turn.address, forged_user, password) == 401
    other_secret = rest_credentials("another node's secret", int(time.time()) + 600)
    assert await allocate_error(turn.address, *other_secret) == 401
    assert await allocate_error(turn.address, *creds(turn, ttl=-5)) == 401
    assert await allocate_error(turn.address, user, password) is None


async def test_quotas_refuse_past_the_cap(tmp_path: Path) -> None:
    turnserver_or_skip()
    async with TurnServer(tmp_path / "relay", config(user_quota=2, total_quota=3)) as turn:
        held: list[Allocation] = []
        try:
            one = creds(turn)
            for _ in range(2):
                held.append(await Allocation.open(turn.address, *one))
                await held[-1].allocate()
            assert await allocate_error(turn.address, *one) == 486  # per credential
            held.append(await Allocation.open(turn.address, *creds(turn)))
            await held[-1].allocate()
            assert await allocate_error(turn.address, *creds(turn)) == 486  # in all
            await held.pop().close()
            # coturn frees a deleted allocation's quota a moment later: room again soon.
            for _ in range(100):
                if await allocate_error(turn.address, *creds(turn)) is None:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("a freed allocation never made room")
        finally:
            for a in held:
                await a.close()


async def test_the_bandwidth_cap_holds(tmp_path: Path) -> None:
    turnserver_or_skip()
    cap = 100_000
    async with TurnServer(tmp_path / "relay", config(max_bps=cap, capacity_bps=0)) as turn:
        alloc = await Allocation.open(turn.address, *creds(turn))
        loop = asyncio.get_running_loop()
        sink_t, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
        try:
            await alloc.allocate()
            peer = sink_t.get_extra_info("sockname")
            await alloc.proto.send_data(b"hello", peer)  # binds a channel
            await sink.queue.get()
            payload = bytes(1000)
            frame = struct.pack("!HH", alloc.proto.peer_to_channel[peer], len(payload)) + payload
            sent = 0
            started = time.monotonic()
            while (now := time.monotonic()) - started < 2.0:  # 10x the cap, for 2 s
                while sent < 10 * cap * (now - started):  # catch up, however late we woke
                    alloc.transport.sendto(frame)
                    sent += len(payload)
                await asyncio.sleep(0.004)
            for _ in range(20):  # what is in flight lands
                before = sink.bytes
                await asyncio.sleep(0.05)
                if sink.bytes == before:
                    break
            elapsed = time.monotonic() - started
            assert sent >= 10 * cap * 1.9  # we did send well past the cap
            assert 0 < sink.bytes <= 2 * cap * elapsed + cap  # 2x slack, 1 s of burst
        finally:
            sink_t.close()
            await alloc.close()


async def test_the_supervisor_restarts_a_killed_turnserver(turn: TurnServer) -> None:
    first = turn.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for _ in range(600):  # the backoff (1 s) plus a start: bounded, not timed
        if turn.ready and turn.pid not in (None, first):
            break
        await asyncio.sleep(0.05)
    assert turn.ready and turn.pid != first
    assert turn.stats["exits"] == 1 and turn.stats["restarts"] == 1
    assert await allocate_error(turn.address, *creds(turn)) is None


async def test_nothing_is_left_running_after_stop(tmp_path: Path) -> None:
    turnserver_or_skip()
    server = TurnServer(tmp_path / "relay", config())
    await server.start()
    pid = server.pid
    assert pid is not None and turnservers_of(server.relay_dir) == [pid]
    await server.stop()
    assert not pid_alive(pid)
    assert turnservers_of(server.relay_dir) == []
    assert not (server.relay_dir / "turnserver.pid").exists()
    await server.stop()  # idempotent


async def test_a_taken_port_is_a_one_line_error(turn: TurnServer, tmp_path: Path) -> None:
    other = TurnServer(tmp_path / "other", TurnConfig(
        "127.0.0.1", port=turn.config.port, min_port=RELAY_PORTS[0], max_port=RELAY_PORTS[1]))
    with pytest.raises(LocalProtocolError, match="is taken") as err:
        await other.start()
    assert "\n" not in str(err.value)
    assert turnservers_of(other.relay_dir) == []


async def test_a_turnserver_left_by_a_killed_node_is_killed_at_start(tmp_path: Path) -> None:
    turnserver_or_skip()
    cfg = config()
    first = TurnServer(tmp_path / "relay", cfg)
    await first.start()
    orphan = first.pid
    assert orphan is not None
    # As if the node died: its supervisor is gone, the process and pid file are not.
    assert first._supervisor is not None
    first._supervisor.cancel()
    first._proc = None
    second = TurnServer(tmp_path / "relay", cfg)
    try:
        await second.start()
        assert second.stats["stale_killed"] == 1 and second.pid != orphan
        for _ in range(100):
            if not pid_alive(orphan):
                break
            await asyncio.sleep(0.02)
        assert not pid_alive(orphan)
    finally:
        await second.stop()
        if pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_missing_turnserver_fails_the_tests_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        turnserver_or_skip()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="apt-get install coturn"):
        turnserver_or_skip()


@pytest.mark.parametrize("peer", ["10.1.2.3", "192.168.1.1", "172.16.0.9", "169.254.1.1",
                                  "100.64.0.1", "224.0.0.1"])
async def test_a_volunteer_never_relays_into_private_networks(turn: TurnServer,
                                                              peer: str) -> None:
    import aioice.stun as stun

    alloc = await Allocation.open(turn.address, *creds(turn))
    try:
        await alloc.allocate()
        with pytest.raises(stun.TransactionFailed) as err:  # no datagram ever leaves
            await alloc.proto.channel_bind(0x4000, (peer, 9))
        assert err.value.response.error_code == 403
        await alloc.proto.channel_bind(0x4001, ("127.0.0.1", 9))  # the test's loopback: ok
    finally:
        await alloc.close()


_HOLDER = """
import asyncio, sys
from pathlib import Path
from hailing.nat.turnserver import TurnConfig, TurnServer

async def main():
    cfg = TurnConfig("127.0.0.1", port=int(sys.argv[2]), min_port=61000, max_port=61999)
    server = await TurnServer(Path(sys.argv[1]), cfg).start()
    print(server.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_node_killed_with_sigkill_leaves_no_turnserver(tmp_path: Path) -> None:
    import subprocess
    import sys

    turnserver_or_skip()
    src = str(Path(__file__).resolve().parent.parent / "src")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "relay"), str(free_udp_port())],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": src})
    try:
        assert holder.stdout is not None
        child = int(holder.stdout.readline())
        assert pid_alive(child)
        holder.kill()  # no stop(), no atexit: the kernel's parent-death signal does it
        holder.wait(timeout=10)
        for _ in range(200):
            if not pid_alive(child):
                break
            await asyncio.sleep(0.05)
        assert not pid_alive(child)
        assert turnservers_of(tmp_path / "relay") == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
