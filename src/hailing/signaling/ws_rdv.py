"""The WebSocket-relay rendezvous backend (the centralized baseline), used by
:class:`hailing.session.coupler.WsCoupler`."""

from __future__ import annotations

from collections.abc import Callable

from ..identity import Identity, format_contact_id
from .ws_relay import RelayClient, RelayError

__all__ = ["WsRendezvous"]


class WsRendezvous:
    """The centralized baseline: offers and answers through a WebSocket relay
    (:mod:`hailing.signaling.ws_relay`), addressed by contact id. The payloads are the
    same sealed envelopes, but the relay sees who talks to whom, and whether a callee is
    online: the privacy the DHT path gives is exactly what this one lacks.

    :meth:`start` connects; :meth:`pump` hands every payload received to a callback
    until the connection ends (it raises :class:`RelayError` when the relay lost us, and
    reconnects when it is run again); :meth:`aclose` disconnects."""

    def __init__(self, url: str, identity: Identity) -> None:
        self.url = url
        self.identity = identity
        self.client = RelayClient(url, identity.contact_id)
        self._lost = False

    async def start(self) -> None:
        await self.client.connect()

    async def pump(self, deliver: Callable[[bytes], object]) -> None:
        if self._lost:  # the relay dropped us: a new connection
            self.client = RelayClient(self.url, self.identity.contact_id)
            await self.client.connect()
            self._lost = False
        try:
            async for _sender, payload in self.client:
                deliver(payload)
        except RelayError:
            self._lost = True
            raise

    async def expect_from(self, peer_pub: bytes) -> None:
        return None

    async def refresh(self) -> int:
        return 0

    async def send(self, peer_pub: bytes, blob: bytes, *, kind: str = "offer") -> int:
        await self.client.send(format_contact_id(peer_pub), blob)
        return 1

    async def aclose(self) -> None:
        await self.client.close()
