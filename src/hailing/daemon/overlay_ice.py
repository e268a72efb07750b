"""The ICE servers of the daemon's own overlay links: the same as its calls'.

The links the node's :class:`~hailing.transport.datachannel.LinkDriver` opens itself
(the link manager's pins and reconnections, the couplings of lookups through the
network coupler, ``transport/network_coupler.py``, and the answering side of each) get
the ICE servers every call gets (docs/nat.md, "Paths"): the session's
:class:`~hailing.session.iceservers.IceServerSource`, i.e. the STUN servers its DHT node
found (read live at each new connection) and a volunteer relay's TURN credentials
(cached, refreshed ahead, asked at start), made into an ``RTCConfiguration`` by
:func:`~hailing.rtc.ice.rtc_configuration` (only servers ICE can reach: loopback ones
only when ICE gathers on loopback, as tests run). A coupling waits for them no longer
than a call does (:data:`~hailing.session.iceservers.WAIT`, and only while the source
has no answer yet), and the cache is the one calls use: one relay credential, one
refresh, for both.

Layers: the transport may not import the session, so the daemon hands the driver a
callable (:class:`LinkIce`, the driver's ``configuration``), which finds the source
when asked (the daemon's Peer, made after its DHT node, owns it): before the Peer has
started, and with a Peer that has none, a link gets no ICE server, as before.

A link's offering connection gathers a relay candidate whenever a relay is known (its
SDP goes whole); the answering side gathers none (links have no call policy: any node
asking for links must not be able to hold our relay allocations; the offerer's relay
alone connects every pair of NATs). Once connected, the allocations its path does not use are given back
(:func:`~hailing.rtc.ice.release_unused_relays`, counted ``link_relays_released`` in
the driver's stats), as calls do, so that a volunteer's quota (4 allocations a
credential) counts only the links and calls it carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..rtc.ice import release_unused_relays, rtc_configuration
from ..session.iceservers import IceServerSource
from ..transport.datachannel import LinkDriver

__all__ = ["IceLinkDriver", "LinkIce", "peer_ice_source"]

log = logging.getLogger("hailing.daemon")


def peer_ice_source(get_peer: Callable[[], Any]) -> Callable[[], IceServerSource | None]:
    """The ICE server source of the Peer ``get_peer()`` returns when asked (its
    connection manager's), or None (no Peer yet, not started, or one without)."""

    def source() -> IceServerSource | None:
        ice = getattr(getattr(get_peer(), "manager", None), "ice", None)
        return ice if isinstance(ice, IceServerSource) else None

    return source


class LinkIce:
    """A driver's ``configuration``: an ``RTCConfiguration`` with the ICE servers of
    ``source()`` (None: no source, no server)."""

    def __init__(self, source: Callable[[], IceServerSource | None]) -> None:
        self._source = source

    async def __call__(self, *, relay: bool = True) -> Any:
        source = self._source()
        if source is None:
            return None
        servers = await source.get()  # at most WAIT seconds, as for a call
        return rtc_configuration(servers.stun, servers.turn if relay else None)


class IceLinkDriver(LinkDriver):
    """The daemon's link driver: its peer connections get :class:`LinkIce`'s
    configuration, and give back the relay allocations their path does not use once
    connected."""

    def __init__(self, *, cap: int, source: Callable[[], IceServerSource | None]) -> None:
        self._ice = LinkIce(source)
        super().__init__(cap=cap, configuration=self._ice)
        self._releasing: set[asyncio.Task[None]] = set()

    async def configuration_for(self, *, answering: bool) -> Any:
        # The answering side of a link gathers no relay candidate: links have no call
        # policy, so any node could otherwise make ours hold a volunteer's allocations
        # (4 a credential) and leave our calls without a relay. The offerer's relay
        # alone connects every pair of NATs (TURN permissions are per address).
        return await self._ice(relay=not answering)

    async def new_peer_connection(self, *, answering: bool = False) -> Any:
        pc = await super().new_peer_connection(answering=answering)
        released = False

        def state() -> None:
            nonlocal released
            if pc.connectionState == "connected" and not released:
                released = True
                task = asyncio.ensure_future(self._release(pc))
                self._releasing.add(task)
                task.add_done_callback(self._releasing.discard)

        pc.on("connectionstatechange", state)
        return pc

    async def _release(self, pc: Any) -> None:
        try:
            if released := await release_unused_relays(pc):
                self.stats["link_relays_released"] += released
        except Exception as exc:  # never: release_unused_relays is bounded and quiet
            log.debug("overlay link: relays not released: %r", exc)

    async def aclose(self) -> None:
        await super().aclose()
        for task in list(self._releasing):
            task.cancel()
        await asyncio.gather(*self._releasing, return_exceptions=True)
