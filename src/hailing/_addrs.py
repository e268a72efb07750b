"""Addresses as text: ``HOST:PORT`` parsing and formatting, and the bootstrap list of the
public Mainline DHT (:data:`PUBLIC_BOOTSTRAP`, the word ``public``), resolved without
blocking when a node joins (:func:`resolve`). Re-exported by :mod:`hailing.node`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable

from .errors import LocalProtocolError

__all__ = ["PUBLIC", "PUBLIC_BOOTSTRAP", "Addr", "bootstrap_list", "format_hostport",
           "parse_hostport", "resolve"]

Addr = tuple[str, int]

log = logging.getLogger("hailing.node")

#: The public Mainline DHT's well-known routers (the ones BitTorrent, uTorrent,
#: Transmission and libtorrent ship), as HOST:PORT. Used only when asked for by name
#: (:func:`bootstrap_list`, ``--bootstrap public``); no test ever contacts them.
PUBLIC_BOOTSTRAP = (
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
)
#: The word that stands for PUBLIC_BOOTSTRAP in a bootstrap list.
PUBLIC = "public"


def parse_hostport(text: str, default_host: str | None = None) -> Addr:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a tuple; raise LocalProtocolError."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_host is None:
            raise LocalProtocolError(f"expected HOST:PORT, got {text!r}")
        host, port = default_host, text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise LocalProtocolError(f"missing host in {text!r}")
    try:
        num = int(port)
    except ValueError:
        raise LocalProtocolError(f"invalid port in {text!r}") from None
    if not 0 <= num < 65536:
        raise LocalProtocolError(f"port out of range in {text!r}")
    return host, num


def bootstrap_list(words: Iterable[str]) -> list[Addr]:
    """Parse bootstrap ``HOST:PORT`` words; the word ``public`` stands for
    :data:`PUBLIC_BOOTSTRAP` (names, resolved when the node joins). Resolves nothing."""
    out: list[Addr] = []
    for word in words:
        for text in PUBLIC_BOOTSTRAP if word.strip().lower() == PUBLIC else (word,):
            addr = parse_hostport(text)
            if addr not in out:
                out.append(addr)
    return out


async def resolve(addrs: Iterable[Addr], family: int = socket.AF_INET) -> list[Addr]:
    """IP addresses for ``addrs`` (names resolved with the loop's getaddrinfo, in
    ``family``); a name that does not resolve is left out (logged once)."""
    loop = asyncio.get_running_loop()
    out: list[Addr] = []
    for host, port in addrs:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("hailing: bootstrap %s:%d not resolved (%s)", host, port, exc)
                continue
            for info in infos[:2]:
                out.append((str(info[4][0]), int(info[4][1])))
            continue
        out.append((host, port))
    return out


def format_hostport(addr: Addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
