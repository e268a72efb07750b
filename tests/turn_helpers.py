"""Helpers for the tests (and the benchmark) that run a real coturn on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.stun as stun
import pytest
from aioice.turn import UDP_TRANSPORT, TurnClientUdpProtocol


@dataclass(frozen=True)
class Creds:
    """TURN credentials as a relay finder gives them (``RelayCredentials``' shape)."""

    urls: tuple[str, ...]
    username: str
    password: str
    expires: float = 0.0


#: Relay ports of the loopback tests: above the ephemeral range (free_udp_port).
RELAY_PORTS = (61000, 61999)


def turnserver_or_skip() -> str:
    """coturn's turnserver; without it the test is skipped, or fails under CI=true
    (scripts/install-natlab.sh installs it there)."""
    binary = shutil.which("turnserver")
    if binary is None:
        why = "coturn's turnserver is not installed (apt-get install coturn)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + ": required under CI=true")
        pytest.skip(why)
    return binary


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def turnservers_of(relay_dir: Path) -> list[int]:
    """Live turnserver processes started on ``relay_dir``'s config."""
    conf = str(relay_dir / "turnserver.conf").encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"turnserver" in cmdline and conf in cmdline and pid_alive(int(entry.name)):
            out.append(int(entry.name))
    return out


class Allocation:
    """A TURN client on one UDP socket (aioice's protocol), driven by hand."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: TurnClientUdpProtocol
                 ) -> None:
        self.transport = transport
        self.proto = proto
        self.relayed: tuple[str, int] | None = None
        self.lifetime: int | None = None

    @classmethod
    async def open(cls, server: tuple[str, int], username: str | None,
                   password: str | None, lifetime: int = 600) -> Allocation:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: TurnClientUdpProtocol(server, username=username, password=password,
                                          lifetime=lifetime, channel_refresh_time=500),
            remote_addr=server)
        return cls(transport, proto)

    async def allocate(self) -> tuple[str, int]:
        """Allocate; raises aioice.stun.TransactionFailed (``.response.error_code``)."""
        request = stun.Message(message_method=stun.Method.ALLOCATE,
                               message_class=stun.Class.REQUEST)
        request.attributes["LIFETIME"] = self.proto.lifetime
        request.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
        response, _ = await self.proto.request_with_retry(request)
        self.relayed = response.attributes["XOR-RELAYED-ADDRESS"]
        self.lifetime = response.attributes["LIFETIME"]
        self.proto.relayed_address = self.relayed
        return self.relayed  # type: ignore[return-value]

    async def close(self) -> None:
        if self.relayed is not None and not self.transport.is_closing():
            await self.proto.delete()  # frees the allocation at once (quota)
        self.transport.close()


async def allocate_error(server: tuple[str, int], username: str | None,
                         password: str | None) -> int | None:
    """The error code of an Allocate with these credentials (None: it succeeded)."""
    alloc = await Allocation.open(server, username, password)
    try:
        await alloc.allocate()
    except stun.TransactionFailed as exc:
        code: int = exc.response.error_code
        return code
    finally:
        await alloc.close()
    return None


class Sink(asyncio.DatagramProtocol):
    """A plain UDP peer: counts what it receives."""

    def __init__(self) -> None:
        self.bytes = 0
        self.datagrams = 0
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bytes += len(data)
        self.datagrams += 1
        if self.queue.qsize() < 64:
            self.queue.put_nowait((data, addr))



async def open_channel(a: Any, b: Any, opened: asyncio.Event, timeout: float = 30) -> None:
    """``a`` (an RTCPeerConnection with a data channel whose "open" sets ``opened``) offers,
    ``b`` answers, both without trickle; returns once the channel is open."""
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    async with asyncio.timeout(timeout):
        await opened.wait()
