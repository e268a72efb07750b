"""Which host addresses ICE may gather, and an ICE configuration with no STUN/TURN server.

aiortc gathers its ICE host candidates through aioice, which enumerates every interface of
the machine (and skips loopback) in the module-level function
``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)``. ``Connection.gather_candidates``
looks that name up in the ``aioice.ice`` module globals on every call, so replacing the
module attribute restricts gathering for every peer connection created afterwards, in this
process.

::

    set_host_addresses(["127.0.0.1"])      # only 127.0.0.1 from now on
    with host_addresses(["127.0.0.1"]):    # only inside the block, then what was before
        ...
    set_host_addresses(None)               # aioice's own behaviour again

``hailing.rtc`` applies the environment variable ``HAILING_ICE_HOSTS`` (comma- or
space-separated IP addresses) when it is imported, so subprocesses such as CLI tests
inherit the restriction. ``rtc_configuration()`` is the ``RTCConfiguration`` to give every
``RTCPeerConnection``: it names no ICE server, where aiortc's default would ask Google's
STUN server.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from hailing.errors import LocalProtocolError

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

__all__ = [
    "ENV_VAR",
    "apply_environment",
    "current_host_addresses",
    "host_addresses",
    "rtc_configuration",
    "set_host_addresses",
]

#: Environment variable read by ``apply_environment`` (at import of ``hailing.rtc``).
ENV_VAR = "HAILING_ICE_HOSTS"


class _HostFn(Protocol):
    def __call__(self, use_ipv4: bool, use_ipv6: bool) -> list[str]: ...


#: aioice's own ``get_host_addresses``, saved the first time we patch it.
_original: _HostFn | None = None
#: The restriction in force (None: aioice's default behaviour).
_current: tuple[str, ...] | None = None


def _validate(addrs: list[str]) -> tuple[str, ...]:
    if isinstance(addrs, str) or not isinstance(addrs, list | tuple):
        raise LocalProtocolError(f"host addresses must be a list of IP addresses, not {addrs!r}")
    if not addrs:
        raise LocalProtocolError("host addresses must name at least one IP address")
    out: list[str] = []
    for addr in addrs:
        if not isinstance(addr, str):
            raise LocalProtocolError(f"not an IP address for ICE host candidates: {addr!r}")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise LocalProtocolError(
                f"not an IP address for ICE host candidates: {addr!r}"
            ) from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            raise LocalProtocolError(f"scoped IPv6 addresses are not supported: {addr!r}")
        if ip.is_unspecified or ip.is_multicast:
            raise LocalProtocolError(f"not a usable ICE host address: {addr!r}")
        if str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def _restricted(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Drop-in for ``aioice.ice.get_host_addresses`` that returns the configured list."""
    addrs = _current or ()
    return [a for a in addrs if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]


def set_host_addresses(addrs: list[str] | None) -> None:
    """Restrict the host candidates ICE gathers to ``addrs``; ``None`` restores aioice's.

    Applies to every ``RTCPeerConnection`` that gathers afterwards, in this process.
    Raises ``LocalProtocolError`` for an empty list or anything that is not an IP address.
    """
    global _original, _current
    import aioice.ice

    if addrs is None:
        if _original is not None:
            aioice.ice.get_host_addresses = _original
        _current = None
        return
    validated = _validate(addrs)
    if _original is None:
        _original = aioice.ice.get_host_addresses
    _current = validated
    aioice.ice.get_host_addresses = _restricted


def current_host_addresses() -> list[str] | None:
    """The restriction in force, or ``None`` when aioice enumerates interfaces itself."""
    return None if _current is None else list(_current)


@contextmanager
def host_addresses(addrs: list[str] | None) -> Iterator[None]:
    """Apply ``set_host_addresses(addrs)`` inside the block, then restore the setting."""
    previous = current_host_addresses()
    set_host_addresses(addrs)
    try:
        yield
    finally:
        set_host_addresses(previous)


def apply_environment(environ: Mapping[str, str] | None = None) -> None:
    """Apply ``HAILING_ICE_HOSTS`` if it is set and not blank (it leaves others alone).

    Raises ``LocalProtocolError`` when the variable names anything but IP addresses: a
    typo must not silently fall back to gathering every interface.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR, "")
    addrs = value.replace(",", " ").split()
    if addrs:
        try:
            set_host_addresses(addrs)
        except LocalProtocolError as exc:
            raise LocalProtocolError(f"{ENV_VAR}={value!r}: {exc}") from None


def rtc_configuration() -> RTCConfiguration:
    """An ``RTCConfiguration`` with no STUN or TURN server (aiortc's default uses one)."""
    from aiortc import RTCConfiguration, RTCIceServer

    servers: list[RTCIceServer] = []
    return RTCConfiguration(iceServers=servers)
