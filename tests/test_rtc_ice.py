"""The ICE host-address setting and the no-STUN configuration (hailing.rtc.ice).

Two aiortc peers in one process connect over a data channel with host candidates on
127.0.0.1 only. No test enumerates or uses any other interface: aioice's own
``get_host_addresses`` is never called here, only compared by identity.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import aioice.ice
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from hailing.errors import LocalProtocolError
from hailing.rtc import (
    ENV_VAR,
    apply_environment,
    current_host_addresses,
    host_addresses,
    rtc_configuration,
    set_host_addresses,
)

LOOPBACK = ["127.0.0.1"]
T = TypeVar("T")
Transform = Callable[[RTCSessionDescription], RTCSessionDescription]


@pytest.fixture(autouse=True)
def _restore_setting() -> Iterator[None]:
    before = current_host_addresses()
    yield
    set_host_addresses(before)


def candidate_addresses(sdp: str) -> list[str]:
    """The connection address of every ``a=candidate`` line."""
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


async def _wait(awaitable: Awaitable[object], what: str) -> object:
    try:
        return await asyncio.wait_for(awaitable, 15)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def connect_pair(
    offer_via: Transform = lambda d: d,
    answer_via: Transform = lambda d: d,
) -> tuple[RTCPeerConnection, RTCPeerConnection, RTCDataChannel, RTCDataChannel]:
    """Two peers on 127.0.0.1 with an open data channel.

    The offer and the answer travel through ``offer_via`` / ``answer_via`` (a codec round
    trip, for example) before the other side sees them. The caller closes the peers.
    """
    loop = asyncio.get_running_loop()
    a = RTCPeerConnection(rtc_configuration())
    b = RTCPeerConnection(rtc_configuration())
    a_open: asyncio.Future[None] = loop.create_future()
    b_channel: asyncio.Future[RTCDataChannel] = loop.create_future()
    channel_a = a.createDataChannel("chat")
    channel_a.on("open", lambda: _resolve(a_open, None))
    b.on("datachannel", lambda ch: _resolve(b_channel, ch))
    try:
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(offer_via(a.localDescription))
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(answer_via(b.localDescription))
        await _wait(a_open, "the caller's channel to open")
        channel_b = await _wait(b_channel, "the callee's channel")
    except BaseException:
        await a.close()
        await b.close()
        raise
    assert isinstance(channel_b, RTCDataChannel)
    return a, b, channel_a, channel_b


async def exchange(first: RTCDataChannel, second: RTCDataChannel) -> None:
    """Send a message each way and check that it arrives intact."""
    loop = asyncio.get_running_loop()
    got_second: asyncio.Future[object] = loop.create_future()
    got_first: asyncio.Future[object] = loop.create_future()
    second.on("message", lambda m: _resolve(got_second, m))
    first.on("message", lambda m: _resolve(got_first, m))
    first.send("ping \u2603")
    assert await _wait(got_second, "ping") == "ping \u2603"
    second.send(b"pong\x00\xff")
    assert await _wait(got_first, "pong") == b"pong\x00\xff"


async def test_two_peers_connect_over_loopback_only() -> None:
    with host_addresses(LOOPBACK):
        a, b, channel_a, channel_b = await connect_pair()
        try:
            for pc in (a, b):
                addrs = candidate_addresses(pc.localDescription.sdp)
                assert addrs, "no candidate gathered"
                assert set(addrs) == {"127.0.0.1"}, addrs
                assert " typ srflx" not in pc.localDescription.sdp
                assert " typ relay" not in pc.localDescription.sdp
            await exchange(channel_a, channel_b)
            assert a.connectionState == b.connectionState == "connected"
        finally:
            await a.close()
            await b.close()


def test_rtc_configuration_names_no_ice_server() -> None:
    # None would make aiortc fall back to its default public STUN server.
    assert rtc_configuration().iceServers == []


def test_patch_point_is_the_attribute_aioice_calls() -> None:
    set_host_addresses(None)
    original = aioice.ice.get_host_addresses
    with host_addresses(LOOPBACK):
        assert aioice.ice.get_host_addresses is not original
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == LOOPBACK
        assert current_host_addresses() == LOOPBACK
    assert aioice.ice.get_host_addresses is original
    assert current_host_addresses() is None


def test_ip_versions_follow_aioice_flags() -> None:
    with host_addresses(["127.0.0.1", "::1", "127.0.0.1"]):
        get = aioice.ice.get_host_addresses
        assert get(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        assert get(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert get(use_ipv4=False, use_ipv6=True) == ["::1"]
        assert get(use_ipv4=False, use_ipv6=False) == []


def test_context_manager_nests_and_restores_on_error() -> None:
    set_host_addresses(None)
    with host_addresses(LOOPBACK):
        with pytest.raises(RuntimeError), host_addresses(["::1"]):
            assert current_host_addresses() == ["::1"]
            raise RuntimeError("boom")
        assert current_host_addresses() == LOOPBACK
    assert current_host_addresses() is None


@pytest.mark.parametrize(
    "garbage",
    [
        [],
        "127.0.0.1",
        b"127.0.0.1",
        127,
        [""],
        ["localhost"],
        ["127.0.0"],
        ["127.0.0.1:80"],
        ["256.0.0.1"],
        [None],
        [2130706433],
        [b"127.0.0.1"],
        ["fe80::1%eth0"],
        ["0.0.0.0"],
        ["::"],
        ["224.0.0.251"],
        ["127.0.0.1", "nope"],
    ],
)
def test_garbage_addresses_are_refused_and_change_nothing(garbage: object) -> None:
    set_host_addresses(LOOPBACK)
    with pytest.raises(LocalProtocolError):
        set_host_addresses(garbage)  # type: ignore[arg-type]
    assert current_host_addresses() == LOOPBACK


def test_environment_variable() -> None:
    set_host_addresses(None)
    apply_environment({})
    assert current_host_addresses() is None
    apply_environment({ENV_VAR: "  "})
    assert current_host_addresses() is None
    apply_environment({ENV_VAR: "127.0.0.1"})
    assert current_host_addresses() == LOOPBACK
    apply_environment({ENV_VAR: "127.0.0.2, ::1"})
    assert current_host_addresses() == ["127.0.0.2", "::1"]


@pytest.mark.parametrize("garbage", ["localhost", "127.0.0.1,,x", "0.0.0.0", "\x00", "1.2.3.4/8"])
def test_environment_garbage_fails_closed(garbage: str) -> None:
    set_host_addresses(LOOPBACK)
    with pytest.raises(LocalProtocolError, match=ENV_VAR):
        apply_environment({ENV_VAR: garbage})
    assert current_host_addresses() == LOOPBACK


def test_subprocess_inherits_the_setting_at_import() -> None:
    code = (
        "import hailing.rtc, aioice.ice\n"
        "print(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))\n"
    )
    env = {**os.environ, ENV_VAR: "127.0.0.1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['127.0.0.1']"


def test_package_all_matches_public_names() -> None:
    import types

    import hailing.rtc as rtc

    public = {
        name
        for name, value in vars(rtc).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(rtc.__all__) == public - {"annotations"}
    assert len(rtc.__all__) == len(set(rtc.__all__))
