"""BEP 42 "DHT Security extension": node IDs bound to the node's external IP.

A compliant node ID carries, in its first 21 bits, the top 21 bits of
``crc32c((ip & mask) | (r << shift))`` where ``r`` is a number in ``[0, 7]``; the
last byte of the node ID carries ``r`` in its low three bits (the other five bits
of that byte are free).  Everything else in the ID is random.

For IPv4 the masked address is hashed as its 4 big-endian octets, for IPv6 as the
8 big-endian octets of the high 64 bits.  (The BEP's prose says "store the result
in a big endian 64 bit integer and hash those 8 bytes", but its own example code
and test vectors hash 4 bytes for IPv4, as libtorrent does; we follow the code and
the vectors.)

This module is pure: no IO and no hidden randomness.  Randomness is always passed
in, either as explicit bytes (:func:`secure_node_id`) or as an injected
``randbytes`` callable (:func:`generate_node_id`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final

from crc32c import crc32c

__all__ = [
    "EXEMPT_V4_NETWORKS",
    "EXEMPT_V6_NETWORKS",
    "NODE_ID_LEN",
    "SUFFIX_LEN",
    "V4_MASK",
    "V6_MASK",
    "compliant_id",
    "generate_node_id",
    "is_exempt",
    "is_local_raw",
    "node_id_ok_raw",
    "node_id_prefix_ok",
    "secure_node_id",
]

NODE_ID_LEN: Final = 20  # BEP5: node IDs are 160 bits
V4_MASK: Final = bytes((0x03, 0x0F, 0x3F, 0xFF))  # BEP42: v4_mask, i.e. 0x030f3fff
V6_MASK: Final = bytes((0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF))  # BEP42: v6_mask
R_MASK: Final = 0x07  # BEP42: r is a random number in [0, 7]
R_SHIFT_IN_FIRST_OCTET: Final = 5  # BEP42: r << 29 (v4) / r << 61 (v6) == first octet | r << 5
THIRD_BYTE_CRC_MASK: Final = 0xF8  # BEP42: 21 bits = 8 + 8 + top 5 bits of the third byte
SUFFIX_LEN: Final = 17  # BEP42: 3 low bits of byte 2 + bytes 3..18 are random

# BEP42 "Enforcement": peers on these local-network blocks are exempt.
EXEMPT_V4_NETWORKS: Final = (
    ipaddress.IPv4Network("10.0.0.0/8"),  # BEP42: reserved for local networks
    ipaddress.IPv4Network("172.16.0.0/12"),  # BEP42: reserved for local networks
    ipaddress.IPv4Network("192.168.0.0/16"),  # BEP42: reserved for local networks
    ipaddress.IPv4Network("169.254.0.0/16"),  # BEP42: reserved for self-assigned IPs
    ipaddress.IPv4Network("127.0.0.0/8"),  # BEP42: reserved for loopback
    # "This network", never a destination: the overlay's data-channel links
    # (transport/linkaddr.py) travel in compact form as 0.h0.h1.h2:h3h4.
    ipaddress.IPv4Network("0.0.0.0/8"),
)
# BEP42 lists IPv4 blocks only; these are the IPv6 equivalents (as libtorrent's is_local).
EXEMPT_V6_NETWORKS: Final = (
    ipaddress.IPv6Network("::1/128"),  # loopback
    ipaddress.IPv6Network("fe80::/10"),  # link-local (self-assigned)
    ipaddress.IPv6Network("fec0::/10"),  # deprecated site-local (RFC 3879)
    ipaddress.IPv6Network("fc00::/7"),  # unique local addresses (RFC 4193)
)


def _parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse ``ip``; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) becomes IPv4.

    Raises :class:`ValueError` if ``ip`` is not a valid IPv4 or IPv6 address.
    """
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _crc(ip: str, r: int) -> int:
    """Return BEP42's ``crc32c((ip & mask) | (r << 29 or 61))`` for ``ip`` and ``r``."""
    return _crc_raw(_parse(ip).packed, r)


def _crc_raw(packed: bytes, r: int) -> int:
    """:func:`_crc` of a packed address (4 bytes, or 16 of which the high 8 count)."""
    if len(packed) == 4:
        octets, mask = packed, V4_MASK
    else:
        octets, mask = packed[:8], V6_MASK  # BEP42: the high 64 bits only
    masked = bytearray(o & m for o, m in zip(octets, mask, strict=True))
    masked[0] |= (r & R_MASK) << R_SHIFT_IN_FIRST_OCTET
    return crc32c(bytes(masked))


def secure_node_id(ip: str, rand: int, suffix: bytes) -> bytes:
    """Build the BEP42 node ID for external address ``ip``.

    ``rand`` (0..255) becomes the last byte of the ID; its low three bits are the
    ``r`` fed to the hash.  ``suffix`` must be :data:`SUFFIX_LEN` (17) random bytes:
    the low three bits of ``suffix[0]`` fill the free low bits of ID byte 2, and
    ``suffix[1:]`` becomes ID bytes 3..18.

    Raises :class:`ValueError` on a malformed ``ip``, ``rand`` out of range or a
    ``suffix`` of the wrong length.
    """
    if not 0 <= rand <= 0xFF:
        raise ValueError(f"rand must be in 0..255, got {rand}")
    if len(suffix) != SUFFIX_LEN:
        raise ValueError(f"suffix must be {SUFFIX_LEN} bytes, got {len(suffix)}")
    crc = _crc(ip, rand)
    head = bytes(
        (
            (crc >> 24) & 0xFF,
            (crc >> 16) & 0xFF,
            ((crc >> 8) & THIRD_BYTE_CRC_MASK) | (suffix[0] & ~THIRD_BYTE_CRC_MASK & 0xFF),
        )
    )
    return head + bytes(suffix[1:]) + bytes((rand,))


def node_id_prefix_ok(node_id: bytes, ip: str) -> bool:
    """Return whether ``node_id`` satisfies BEP42's restriction for address ``ip``.

    The first 21 bits of ``node_id`` must equal the first 21 bits of the CRC32C of
    the masked address combined with ``r = node_id[19] & 7``.  A ``node_id`` that is
    not exactly 20 bytes is never OK.  This is the bare check: it does *not* apply
    the local-network exemption, so callers enforcing BEP42 should accept
    ``is_exempt(ip) or node_id_prefix_ok(node_id, ip)``.

    Raises :class:`ValueError` only if ``ip`` is not a valid address.
    """
    if len(node_id) != NODE_ID_LEN:
        return False
    return node_id_ok_raw(node_id, _parse(ip).packed)


def node_id_ok_raw(node_id: bytes, packed: bytes) -> bool:
    """:func:`node_id_prefix_ok` for a packed address (4 or 16 bytes; an IPv4-mapped
    IPv6 address is not unwrapped here): the routing table's hot path, no text parsing."""
    if len(node_id) != NODE_ID_LEN:
        return False
    crc = _crc_raw(packed, node_id[-1])
    return (
        node_id[0] == (crc >> 24) & 0xFF
        and node_id[1] == (crc >> 16) & 0xFF
        and node_id[2] & THIRD_BYTE_CRC_MASK == (crc >> 8) & THIRD_BYTE_CRC_MASK
    )


def is_exempt(ip: str) -> bool:
    """Return whether ``ip`` is on a local network and so exempt from BEP42 checks.

    IPv4 uses BEP42's list (10/8, 172.16/12, 192.168/16, 169.254/16, 127/8);
    IPv6 exempts loopback, link-local, site-local and unique-local addresses.
    IPv4-mapped IPv6 addresses are judged as IPv4.

    Raises :class:`ValueError` if ``ip`` is not a valid address.
    """
    addr = _parse(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return any(addr in net for net in EXEMPT_V4_NETWORKS)
    return any(addr in net for net in EXEMPT_V6_NETWORKS)


def generate_node_id(ip: str, randbytes: Callable[[int], bytes]) -> bytes:
    """Generate a fresh BEP42-compliant node ID for ``ip`` from injected randomness.

    ``randbytes(n)`` must return ``n`` random bytes (e.g. ``secrets.token_bytes`` or
    ``random.Random(seed).randbytes`` in tests).  It is called for 1 byte (``rand``)
    and then for :data:`SUFFIX_LEN` bytes.  Raises :class:`ValueError` if it returns
    the wrong number of bytes or ``ip`` is invalid.
    """
    rand_byte = randbytes(1)
    if len(rand_byte) != 1:
        raise ValueError("randbytes(1) did not return exactly 1 byte")
    return secure_node_id(ip, rand_byte[0], randbytes(SUFFIX_LEN))


def is_local_raw(raw: bytes) -> bool:
    """:func:`is_exempt` for a packed address (4 or 16 bytes), without parsing text:
    the hot path of the routing table's per-IP limits. Any other length is not local."""
    if len(raw) == 4:
        a, b = raw[0], raw[1]
        return (
            a in (0, 10, 127)
            or (a == 172 and 16 <= b < 32)
            or (a == 192 and b == 168)
            or (a == 169 and b == 254)
        )
    if len(raw) == 16:
        if raw[:12] == bytes(10) + b"\xff\xff":  # IPv4-mapped: judged as IPv4
            return is_local_raw(raw[12:])
        a, b = raw[0], raw[1]
        return (
            raw == bytes(15) + b"\x01"
            or (a == 0xFE and b & 0xC0 in (0x80, 0xC0))  # fe80::/10 and fec0::/10
            or a & 0xFE == 0xFC  # fc00::/7
        )
    return False


def compliant_id(node_id: bytes, ip: str) -> bytes:
    """``node_id`` if it satisfies BEP42 for ``ip`` (or ``ip`` is exempt), else the
    compliant id derived from it: its last byte (``rand``) and its bytes 2..18 (the
    suffix) are kept, so the same old id and address always give the same new id (a
    node that restarts with its saved id lands on the same compliant id).

    Raises :class:`ValueError` if ``node_id`` is not 20 bytes or ``ip`` is invalid.
    """
    if len(node_id) != NODE_ID_LEN:
        raise ValueError("a node id is 20 bytes")
    if is_exempt(ip) or node_id_prefix_ok(node_id, ip):
        return node_id
    return secure_node_id(ip, node_id[-1], node_id[2:19])
