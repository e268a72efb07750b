"""Drivers that carry the DHT core's datagrams: UDP, and WebRTC data channels
(``datachannel``: links named by ``LinkAddr``; ``links``: the link manager)."""

from .datachannel import LinkCoupler, LinkDriver, couple_direct
from .linkaddr import LinkAddr, OverlayCodec
from .links import Link
from .linksdp import LinkAnswer, LinkOffer
from .udp import UdpEndpoint

__all__ = ["Link", "LinkAddr", "LinkAnswer", "LinkCoupler", "LinkDriver", "LinkOffer",
           "OverlayCodec", "UdpEndpoint", "couple_direct"]
