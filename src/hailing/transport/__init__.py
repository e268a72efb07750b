"""Drivers that carry the DHT core's datagrams: UDP, and WebRTC data channels
(``datachannel``: links named by ``LinkAddr``; ``links``: the link manager)."""

from .datachannel import LinkCoupler, LinkDriver, couple_direct
from .linkaddr import LinkAddr, OverlayCodec
from .links import Link
from .udp import UdpEndpoint

__all__ = ["Link", "LinkAddr", "LinkCoupler", "LinkDriver", "OverlayCodec", "UdpEndpoint",
           "couple_direct"]
