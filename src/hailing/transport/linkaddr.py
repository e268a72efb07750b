"""The address of a peer reached through a data channel, and the codec that packs it.

The DHT core treats addresses as opaque hashables and packs them with an
:class:`~hailing.krpc.AddressCodec`. A peer reached through a WebRTC data channel (a
*link*) has the address :class:`LinkAddr`: the first :data:`HANDLE_LEN` bytes of its node
id. :class:`OverlayCodec` packs it into compact IPv4 form as ``0.h0.h1.h2:h3h4``: the
block 0.0.0.0/8 is "this network" (RFC 1122), never a UDP destination, so no UDP node
ever sends to it (``IPAddressCodec`` drops such entries) and BEP42 exempts it. Entries of
that form are unpacked back to a LinkAddr; the data-channel driver resolves it to the open
link whose peer id starts with the handle. UDP addresses keep working beside it: one
routing space.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ..krpc import IPAddressCodec

__all__ = ["HANDLE_LEN", "LinkAddr", "OverlayCodec"]

#: Bytes of the peer's node id that name a link.
HANDLE_LEN = 5


@dataclass(frozen=True, slots=True)
class LinkAddr:
    """A peer reached through a data channel: the first 5 bytes of its node id."""

    handle: bytes

    def __post_init__(self) -> None:
        if type(self.handle) is not bytes or len(self.handle) != HANDLE_LEN:
            raise ValueError(f"a link handle is {HANDLE_LEN} bytes, not {self.handle!r}")

    @classmethod
    def of(cls, node_id: bytes) -> LinkAddr:
        """The link address of the node ``node_id`` (20 bytes, or a 5-byte handle)."""
        return cls(bytes(node_id[:HANDLE_LEN]))

    def __repr__(self) -> str:
        return f"LinkAddr({self.handle.hex()})"


class OverlayCodec:
    """:class:`~hailing.krpc.IPAddressCodec` plus :class:`LinkAddr` as ``0.h0.h1.h2:h3h4``.

    With ``udp=False`` (a node without a UDP socket) IP addresses unpack to None: such a
    node cannot reach them, so its lookups never wait on them.
    """

    __slots__ = ("_ip", "udp")

    def __init__(self, *, udp: bool = True) -> None:
        self._ip = IPAddressCodec()
        self.udp = udp

    def pack(self, addr: Hashable) -> bytes | None:
        if type(addr) is LinkAddr:
            return b"\x00" + addr.handle
        return self._ip.pack(addr)

    def unpack(self, data: bytes) -> Hashable | None:
        if len(data) == 6 and data[0] == 0:
            return LinkAddr(bytes(data[1:]))
        if not self.udp:
            return None
        return self._ip.unpack(data)

    def ip_key(self, addr: Hashable) -> bytes:
        if type(addr) is LinkAddr:
            return b"L" + addr.handle
        return self._ip.ip_key(addr)
