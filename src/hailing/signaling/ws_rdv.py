"""The WebSocket-relay rendezvous backend of :class:`hailing.rtc.peer.Peer` (the
centralized baseline)."""

from __future__ import annotations

import asyncio
import contextlib

from ..identity import Identity, format_contact_id
from .ws_relay import RelayClient

__all__ = ["WsRendezvous"]


class WsRendezvous:
    """The centralized baseline: offers and answers through a WebSocket relay
    (:mod:`hailing.signaling.ws_relay`), addressed by contact id. The payloads are the
    same sealed envelopes, but the relay sees who talks to whom, and whether a callee is
    online: the privacy the DHT path gives is exactly what this one lacks."""

    def __init__(self, url: str, identity: Identity) -> None:
        self.client = RelayClient(url, identity.contact_id)
        self._pump: asyncio.Task[None] | None = None

    async def start(self, sink: asyncio.Queue[bytes]) -> None:
        await self.client.connect()

        async def pump() -> None:
            async for _sender, payload in self.client:
                if not sink.full():
                    sink.put_nowait(payload)

        self._pump = asyncio.ensure_future(pump())

    async def expect_from(self, peer_pub: bytes) -> None:
        return None

    async def refresh(self) -> int:
        return 0

    async def send(self, peer_pub: bytes, blob: bytes, *, public: bool = False,
                   kind: str = "offer") -> int:
        await self.client.send(format_contact_id(peer_pub), blob)
        return 1

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        await self.client.close()
