"""In-memory couplers for session tests: a switchboard that hands envelopes from one
identity's coupler straight to another's inlet (no DHT, no chain, no relay)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hailing.errors import HailingError
from hailing.session.coupler import Capabilities, Inlet, SignalKind


@dataclass
class Switchboard:
    """Who listens ((coupler name, public key) -> inlet) and everything sent, in order."""

    inlets: dict[tuple[str, bytes], Inlet] = field(default_factory=dict)
    sent: list[tuple[str, bytes, bytes, str]] = field(default_factory=list)

    def coupler(self, owner: bytes, name: str = "pipe", *, deliver: bool = True,
                fail: str | None = None, latency: float = 0.0) -> PipeCoupler:
        return PipeCoupler(self, owner, name, deliver=deliver, fail=fail, latency=latency)


class PipeCoupler:
    """A coupler over a :class:`Switchboard`. ``deliver=False`` is a black hole (like a
    callee that never hears us); ``fail`` makes every send raise that message."""

    def __init__(self, board: Switchboard, owner: bytes, name: str, *, deliver: bool,
                 fail: str | None, latency: float) -> None:
        self.board = board
        self.owner = owner
        self.name = name
        self.deliver = deliver
        self.fail = fail
        self.capabilities = Capabilities(needs_wallet=False, typical_latency_s=latency,
                                         private=True, reach="anyone", max_blob=64 * 1024)
        self.refreshes = 0
        self.closed = False
        self.refuse: str | None = None  # what admit() answers (None: admit)

    async def start(self, sink: Inlet) -> None:
        self.board.inlets[(self.name, self.owner)] = sink

    async def expect_from(self, peer: bytes) -> None:
        return None

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        self.board.sent.append((self.name, peer, blob, kind))
        if self.fail is not None:
            raise HailingError(self.fail)
        inlet = self.board.inlets.get((self.name, peer))
        if self.deliver and inlet is not None:
            inlet.put_nowait(blob)
        return 1

    async def refresh(self) -> int:
        self.refreshes += 1
        return 1

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        return self.refuse

    def reply_hint(self, peer: bytes) -> bytes | None:
        return None

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        return False

    async def aclose(self) -> None:
        self.closed = True


async def eventually(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait (polling every 20 ms) until ``cond()``; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def offer_body() -> bytes:
    """A real compact offer (a throwaway peer connection's)."""
    import aiortc

    from hailing.rtc.ice import rtc_configuration
    from hailing.signaling.sdp import encode_sdp

    pc = aiortc.RTCPeerConnection(rtc_configuration())
    pc.createDataChannel("x")
    await pc.setLocalDescription(await pc.createOffer())
    body = encode_sdp(pc.localDescription)
    await pc.close()
    return body


@dataclass
class PeerNet:
    """Peers on one loopback testnet (:func:`peer_net`), stopped newest first at its end."""

    nodes: list[Any]
    tmp: Path
    started: list[Any] = field(default_factory=list)

    async def peer(self, name: str, **kw: Any) -> Any:
        from hailing.peer import Peer

        p = Peer(self.tmp / name, bootstrap=[self.nodes[0].address], **kw)
        await p.start()
        self.started.append(p)
        return p


@contextlib.asynccontextmanager
async def peer_net(tmp: Path, size: int = 12) -> AsyncIterator[PeerNet]:
    from hailing.testnet import testnet

    async with testnet(size) as nodes:
        n = PeerNet(nodes, tmp)
        try:
            yield n
        finally:
            for p in reversed(n.started):
                await p.stop()
