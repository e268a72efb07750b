"""Drivers that carry the DHT core's datagrams: UDP (here); WebRTC data channels later."""

from .udp import UdpEndpoint

__all__ = ["UdpEndpoint"]
