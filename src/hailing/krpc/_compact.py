"""Compact node and peer info (BEP5 for IPv4, BEP32 for IPv6).

The protocol core treats addresses as opaque hashable values. An :class:`AddressCodec`
turns them into the compact bytes the wire carries and back. :class:`IPAddressCodec` is the
one for real networks: addresses are ``(host, port)`` tuples with a literal IP host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable
from typing import Any, Protocol

#: BEP5: 20-byte id + 4-byte IPv4 + 2-byte port.
COMPACT_NODE_V4 = 26
#: BEP32: 20-byte id + 16-byte IPv6 + 2-byte port.
COMPACT_NODE_V6 = 38

Addr = Hashable


class AddressCodec(Protocol):
    """How the core converts its opaque addresses to and from compact wire form."""

    def pack(self, addr: Addr) -> bytes | None:
        """Compact peer info (6 or 18 bytes) for ``addr``; None if it has no wire form."""

    def unpack(self, data: bytes) -> Addr | None:
        """The address for 6 or 18 compact bytes; None if it is not a usable address."""

    def ip_key(self, addr: Addr) -> bytes:
        """The bytes that identify the host of ``addr`` (for tokens and per-IP limits)."""


class IPAddressCodec:
    """``(host, port)`` tuples with literal IPv4/IPv6 hosts. Caches what it packs."""

    __slots__ = ("_cache", "_unpacked")

    def __init__(self) -> None:
        self._cache: dict[Addr, bytes | None] = {}
        self._unpacked: dict[bytes, Addr | None] = {}

    def pack(self, addr: Addr) -> bytes | None:
        try:
            return self._cache[addr]
        except KeyError:
            pass
        packed: bytes | None
        try:
            pair: tuple[Any, Any] = addr  # type: ignore[assignment]
            ip = ipaddress.ip_address(str(pair[0]))
            packed = ip.packed + int(pair[1]).to_bytes(2, "big")
        except (TypeError, ValueError, OverflowError, IndexError):
            packed = None
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[addr] = packed
        return packed

    def unpack(self, data: bytes) -> Addr | None:
        try:
            return self._unpacked[data]
        except KeyError:
            pass
        addr = self._unpack(data)
        if len(self._unpacked) > 65536:
            self._unpacked.clear()
        self._unpacked[data] = addr
        return addr

    def _unpack(self, data: bytes) -> Addr | None:
        n = len(data)
        if n == 6:
            if data[0] == 0:  # 0.0.0.0/8 is never a destination (the overlay's link form)
                return None
            port = int.from_bytes(data[4:6], "big")
            host = f"{data[0]}.{data[1]}.{data[2]}.{data[3]}"
        elif n == 18:
            port = int.from_bytes(data[16:18], "big")
            host = str(ipaddress.IPv6Address(data[:16]))
        else:
            return None
        if port == 0:
            return None
        return (host, port)

    def ip_key(self, addr: Addr) -> bytes:
        packed = self.pack(addr)
        if packed is None:
            return repr(addr).encode()
        return packed[:-2]


def encode_nodes(
    nodes: Iterable[tuple[bytes, Addr]], codec: AddressCodec, *,
    this_network: bool = True, limit: int | None = None,
) -> tuple[bytes, bytes]:
    """Compact ``(id, addr)`` pairs into the ``nodes`` (IPv4) and ``nodes6`` (IPv6) strings.

    With ``this_network=False``, entries in 0.0.0.0/8 ("this network", RFC 1122: never a
    UDP destination; hailing packs its data-channel link addresses there) are left out:
    for a node that could not use them (a Mainline node that is not hailing). ``limit``:
    at most that many entries in all.
    """
    v4: list[bytes] = []
    v6: list[bytes] = []
    for nid, addr in nodes:
        packed = codec.pack(addr)
        if packed is None or (not this_network and len(packed) == 6 and packed[0] == 0):
            continue
        (v4 if len(packed) == 6 else v6).append(nid + packed)
        if limit is not None and len(v4) + len(v6) >= limit:
            break
    return b"".join(v4), b"".join(v6)


def decode_nodes(data: object, codec: AddressCodec, ipv6: bool = False) -> list[tuple[bytes, Addr]]:
    """Parse a ``nodes`` (or ``nodes6``) string; garbage yields an empty or partial list.

    A length that is not a multiple of the entry size is tolerated the way libtorrent
    does: the trailing partial entry is ignored.
    """
    if type(data) is not bytes:
        return []
    size = COMPACT_NODE_V6 if ipv6 else COMPACT_NODE_V4
    out: list[tuple[bytes, Addr]] = []
    for off in range(0, len(data) - size + 1, size):
        addr = codec.unpack(data[off + 20 : off + size])
        if addr is not None:
            out.append((data[off : off + 20], addr))
    return out
