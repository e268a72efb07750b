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
inherit the restriction.

``rtc_configuration(stun, turn)`` is the ``RTCConfiguration`` to give every
``RTCPeerConnection``: only the ICE servers it is given (the daemon's come from the DHT:
hailing nodes that answer STUN on their DHT port, and a volunteer's TURN relay), never
aiortc's default (Google's STUN server). aiortc 1.16 uses only the **first** ``stun:``
URL and the **first** ``turn:`` URL of a configuration, aioice asks a STUN server from
IPv4 sockets only, and aiortc cannot parse a URL with an IPv6 address, so its list is
the IPv4 servers, best first; a browser (:func:`ice_servers_json`) gets IPv6 ones too.

``selected_path(pc)`` says which path a connected peer connection uses: the candidate
types of ICE's nominated pair (``host``, ``srflx``, ``prflx``, ``relay``) and whether a
relay carries it. aioice pairs its host and relay candidates only (a server-reflexive
candidate shares its host candidate's socket), so ``local`` is ``host`` or ``relay``;
``remote`` tells how the other side was reached: its host address, its address as a
STUN server saw it (``srflx``), an address learnt from its checks through hole
punching (``prflx``), or its relay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hailing.errors import LocalProtocolError

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

__all__ = [
    "ENV_VAR",
    "NO_SERVERS",
    "PATH_TYPES",
    "IceServers",
    "TurnLike",
    "answer_checks_at_once",
    "apply_environment",
    "bound_turn_deletion",
    "close_peer_connection",
    "current_host_addresses",
    "gathers_on_loopback",
    "host_addresses",
    "ice_servers_json",
    "prefer_direct_paths",
    "prune_redundant_candidates",
    "release_unused_relays",
    "rtc_configuration",
    "selected_path",
    "set_host_addresses",
    "stun_url",
    "tune_aioice",
    "turn_urls",
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


#: The candidate types a path names (RFC 8445 section 5.1.1), and "unknown".
PATH_TYPES = ("host", "srflx", "prflx", "relay", "unknown")
#: ``turn:IP:PORT`` with ``?transport=udp`` or none (UDP, the only transport relays offer).
_TURN_URL = re.compile(r"^turn:(?P<host>\[[0-9A-Fa-f:.]+\]|[0-9.]+):(?P<port>[0-9]{1,5})"
                       r"(?:\?transport=udp)?$")
_CREDENTIAL = re.compile(r"^[\x21-\x7e]{1,256}$")


class TurnLike(Protocol):
    """What a TURN relay's time-limited credentials give ICE (``hailing.nat.relay``'s
    ``TurnCredentials`` is one)."""

    @property
    def urls(self) -> tuple[str, ...]: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...


@dataclass(frozen=True)
class IceServers:
    """The ICE servers of a peer connection: STUN servers (``(ip, port)``, best first)
    and one relay's credentials, or none."""

    stun: tuple[tuple[str, int], ...] = ()
    turn: TurnLike | None = None

    def __bool__(self) -> bool:
        return bool(self.stun) or self.turn is not None


NO_SERVERS = IceServers()


def _server_ip(host: object, *, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(host, str):
        raise LocalProtocolError(f"not an IP address for a {what} server: {host!r}")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise LocalProtocolError(f"not an IP address for a {what} server: {host!r}") from None
    if ip.is_unspecified or ip.is_multicast or (isinstance(ip, ipaddress.IPv6Address)
                                                and ip.scope_id is not None):
        raise LocalProtocolError(f"not a usable {what} server address: {host!r}")
    return ip


def stun_url(addr: Sequence[object]) -> str:
    """``stun:IP:PORT`` (``stun:[IPv6]:PORT``) for a server address; LocalProtocolError for
    anything but an IP address and a port."""
    if len(addr) != 2:
        raise LocalProtocolError(f"a STUN server is (ip, port), not {addr!r}")
    ip = _server_ip(addr[0], what="STUN")
    port = addr[1]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise LocalProtocolError(f"not a port for a STUN server: {port!r}")
    return f"stun:{ip}:{port}" if ip.version == 4 else f"stun:[{ip}]:{port}"


def turn_urls(turn: TurnLike, *, loopback: bool | None = None) -> list[str]:
    """The usable URLs of a relay's credentials (``turn:IP:PORT``, UDP, an IP address
    that is neither unspecified nor multicast; ``loopback`` True/False: only loopback /
    only other addresses), in their order; empty when none is, or when the username or
    password is not 1-256 printable ASCII characters. A volunteer relay chose these:
    nothing else (a host name, TLS, TCP) is ever handed to ICE."""
    username, password = getattr(turn, "username", None), getattr(turn, "password", None)
    if not isinstance(username, str) or not _CREDENTIAL.fullmatch(username) \
            or not isinstance(password, str) or not _CREDENTIAL.fullmatch(password):
        return []
    out: list[str] = []
    urls = getattr(turn, "urls", ())
    for url in urls if isinstance(urls, tuple | list) else ():
        m = _TURN_URL.fullmatch(url) if isinstance(url, str) else None
        if m is None or not 0 < int(m["port"]) < 65536:
            continue
        try:
            ip = _server_ip(m["host"], what="TURN")
        except LocalProtocolError:
            continue
        if loopback is None or ip.is_loopback == loopback:
            out.append(url if url.endswith("?transport=udp") else url + "?transport=udp")
    return out


def _stun_urls(stun: Sequence[Sequence[object]], loopback: bool | None) -> list[str]:
    """STUN URLs (``loopback`` as for :func:`turn_urls`), IPv4 first (aioice asks only
    from IPv4 sockets), else in the given order, without duplicates. LocalProtocolError
    for anything that is not an IP address and a port."""
    urls = [stun_url(addr) for addr in stun]
    if loopback is not None:
        urls = [u for u, addr in zip(urls, stun, strict=True)
                if ipaddress.ip_address(str(addr[0]).strip("[]")).is_loopback == loopback]
    v4 = [u for u in urls if not u.startswith("stun:[")]
    v6 = [u for u in urls if u.startswith("stun:[")]
    return list(dict.fromkeys(v4 + v6))


def ice_servers_json(stun: Sequence[Sequence[object]] = (), turn: TurnLike | None = None,
                     *, loopback: bool | None = None,
                     ipv6: bool = True) -> list[dict[str, Any]]:
    """The ``iceServers`` of an ``RTCConfiguration`` as JSON (``GET /api/ice``): one entry
    with every STUN URL, one with the relay's URLs and credentials. ``loopback`` True:
    only servers on loopback addresses; False: only others (a browser never gathers on
    loopback, and a server it cannot reach holds its gathering); None: all. ``ipv6``
    False: no server on an IPv6 address (aiortc cannot parse their URLs)."""
    servers: list[dict[str, Any]] = []
    stun_urls = [u for u in _stun_urls(stun, loopback) if ipv6 or "[" not in u]
    if stun_urls:
        servers.append({"urls": stun_urls})
    relay = turn_urls(turn, loopback=loopback) if turn is not None else []
    relay = [u for u in relay if ipv6 or "[" not in u]
    if relay and turn is not None:
        servers.append({"urls": relay, "username": turn.username,
                        "credential": turn.password})
    return servers


def gathers_on_loopback() -> bool:
    """Whether this process's ICE gathers on loopback addresses only
    (``HAILING_ICE_HOSTS=127.0.0.1``, as tests run). aioice skips loopback interfaces
    otherwise, so only servers on the same side are reachable: a server ICE cannot reach
    would hold every gathering for aioice's 5 s."""
    hosts = current_host_addresses()
    return hosts is not None and all(ipaddress.ip_address(h).is_loopback for h in hosts)


def rtc_configuration(stun: Sequence[Sequence[object]] = (),
                      turn: TurnLike | None = None) -> RTCConfiguration:
    """An ``RTCConfiguration`` with these ICE servers only: none by default (aiortc's
    default would ask Google's STUN server). ``stun``: ``(ip, port)`` addresses, best
    first; ``turn``: a relay's credentials. Only servers ICE can reach are kept
    (:func:`gathers_on_loopback`; IPv4 only, see the module docstring); aiortc uses the first STUN URL and the first TURN URL
    only (see the module docstring)."""
    from aiortc import RTCConfiguration, RTCIceServer

    tune_aioice()
    entries = ice_servers_json(stun, turn, loopback=gathers_on_loopback(), ipv6=False)
    servers = [RTCIceServer(urls=entry["urls"], username=entry.get("username"),
                            credential=entry.get("credential")) for entry in entries]
    return RTCConfiguration(iceServers=servers)


def _ice_connection(pc: Any) -> Any:
    """The aioice ``Connection`` under an aiortc peer connection (its data channel's
    transport, else its first media transceiver's), or None."""
    transports: list[Any] = []
    sctp = getattr(pc, "sctp", None)
    if sctp is not None:
        transports.append(sctp.transport)
    for transceiver in pc.getTransceivers():
        transports.append(transceiver.receiver.transport)
    for dtls in transports:
        ice = getattr(dtls, "transport", None)
        connection = getattr(ice, "_connection", None)
        if connection is not None:
            return connection
    return None


def selected_path(pc: Any) -> dict[str, Any]:
    """The path a connected peer connection uses: ``{"local": type, "remote": type,
    "relayed": bool}`` with the candidate types of ICE's nominated pair (see the module
    docstring). ``unknown`` types when there is none yet, or when aiortc/aioice changed
    inside (this reads their private state): never an exception."""
    unknown: dict[str, Any] = {"local": "unknown", "remote": "unknown", "relayed": False}
    try:
        connection = _ice_connection(pc)
        nominated = getattr(connection, "_nominated", None)
        if not isinstance(nominated, dict) or not nominated:
            return unknown
        pair = nominated[min(nominated)]
        local = str(pair.local_candidate.type)
        remote = str(pair.remote_candidate.type)
    except Exception:  # whatever a new aiortc/aioice looks like inside
        return unknown
    local = local if local in PATH_TYPES else "unknown"
    remote = remote if remote in PATH_TYPES else "unknown"
    return {"local": local, "remote": remote, "relayed": "relay" in (local, remote)}


#: Longest closing a peer connection may take (seconds): a backstop, its TURN
#: deletions are bounded already (:func:`bound_turn_deletion`).
PC_CLOSE_TIMEOUT = 5.0


async def close_peer_connection(pc: Any, timeout: float = PC_CLOSE_TIMEOUT) -> None:
    """``pc.close()``, given up after ``timeout`` seconds; never raises (but a
    cancellation of the caller)."""
    with suppress(Exception):
        async with asyncio.timeout(timeout):
            await pc.close()


#: Longest the deletion of unused TURN allocations may take (seconds).
RELEASE_TIMEOUT = 5.0


async def release_unused_relays(pc: Any) -> int:
    """Give back the TURN allocations of a connected peer connection that its path does
    not use (their checks stopped, the allocations deleted: RFC 8656 Refresh with
    lifetime 0), so that a relay's allocation quotas count only the connections it
    carries. Returns how many; 0 when there is no nominated pair yet, or when
    aiortc/aioice changed inside (this reads their private state)."""
    try:
        connection = _ice_connection(pc)
        nominated = connection._nominated
        if not isinstance(nominated, dict) or not nominated:
            return 0
        used = {id(pair.protocol) for pair in nominated.values()}
        unused = [p for p in connection._protocols
                  if getattr(p.local_candidate, "type", None) == "relay" and id(p) not in used]
        for protocol in unused:
            for pair in list(connection._check_list):
                if pair.protocol is protocol:
                    if pair.task is not None:
                        pair.task.cancel()
                    connection._check_list.remove(pair)
            connection._protocols.remove(protocol)
    except Exception:  # whatever a new aiortc/aioice looks like inside
        return 0
    closing = [asyncio.ensure_future(p.close()) for p in unused]
    if closing:
        _, pending = await asyncio.wait(closing, timeout=RELEASE_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
    return len(unused)


#: How long the calling side (ICE's controlling agent) holds back a check on a relayed
#: pair while checks on direct pairs are still in flight (seconds).
DIRECT_GRACE = 1.0
_RELAY = "relay"
_PENDING = ("FROZEN", "WAITING", "IN_PROGRESS")


def _relayed_pair(pair: Any) -> bool:
    return _RELAY in (pair.local_candidate.type, pair.remote_candidate.type)


def prefer_direct_paths(grace: float | None = DIRECT_GRACE) -> bool:
    """Make aioice prefer a direct path to a relayed one (``grace`` None: undo).

    aioice's controlling agent nominates aggressively: the first pair whose check
    succeeds carries the connection. A relayed pair often succeeds first: the other
    side's checks through its relay reach us early (an address-restricted NAT lets the
    relay's address in once we have talked to the relay), and trigger a check back at
    once, while the direct pair's hole punching needs a retransmission. So a check on a
    relayed pair of the controlling agent first waits until no direct pair is still
    being checked, at most until ``grace`` seconds after the connection's first relayed
    check: a direct path that works a moment later wins; where none can (symmetric with
    port-restricted or symmetric), the relay costs ``grace`` more. And once a pair is
    nominated, a check on a relayed pair (one the other side's late checks trigger) is
    not made at all: with aggressive nomination its success would move the connection
    to the relay. Applied by :func:`tune_aioice` (the first :func:`rtc_configuration`);
    returns False (and changes nothing) when aioice no longer looks as expected."""
    try:
        import aioice.ice as aioice_ice

        connection = aioice_ice.Connection
        original = getattr(connection.check_start, "__wrapped__", connection.check_start)
    except (ImportError, AttributeError):
        return False
    if grace is None:
        connection.check_start = original  # type: ignore[method-assign]
        return True

    async def check_start(self: Any, pair: Any) -> None:
        try:
            relayed = self.ice_controlling and _relayed_pair(pair)
        except AttributeError:
            relayed = False
        if relayed:
            loop = asyncio.get_running_loop()
            # one grace per connection, from its first relayed check: not one per pair
            deadline = getattr(self, "_hailing_relay_deadline", None)
            if deadline is None:
                deadline = self._hailing_relay_deadline = loop.time() + grace
            while loop.time() < deadline and not self._nominated and any(
                    p.state.name in _PENDING and not _relayed_pair(p)
                    for p in self._check_list if p is not pair):
                await asyncio.sleep(0.02)
            if pair.component in self._nominated:
                return  # connected already: a late check must not move it to a relay
        await original(self, pair)

    check_start.__wrapped__ = original  # type: ignore[attr-defined]
    connection.check_start = check_start  # type: ignore[method-assign]
    return True


def answer_checks_at_once(on: bool = True) -> bool:
    """Make aioice resend an unanswered check at once when the other side's check on the
    same pair arrives (``on`` False: undo).

    Hole punching: each side's first check toward the other's NAT mapping is usually
    dropped by the other's NAT, which has not sent anything to us yet. The other side's
    check arriving proves the way is open now; RFC 8445 (section 7.3.1.4) then wants a
    triggered check at once, but aioice waits for the retransmission timer of the check
    in progress (500 ms), and so does the whole connection. This resends that check's
    request when a check comes from the address it is sent to (the same transaction:
    its answer completes it). Applied by :func:`tune_aioice`; returns False
    (and changes nothing) when aioice no longer looks as expected."""
    try:
        import aioice.ice as aioice_ice

        connection = aioice_ice.Connection
        original = getattr(connection.check_incoming, "__wrapped__",
                           connection.check_incoming)
    except (ImportError, AttributeError):
        return False
    if not on:
        connection.check_incoming = original  # type: ignore[method-assign]
        return True

    def check_incoming(self: Any, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        try:
            for tx in list(protocol.transactions.values()):
                request = tx._Transaction__request
                if tx._Transaction__addr == addr and not tx._Transaction__future.done() \
                        and "USERNAME" in request.attributes:
                    protocol.send_stun(request, addr)
        except Exception:  # whatever a new aioice looks like inside: its own pace
            pass
        original(self, message, addr, protocol)

    check_incoming.__wrapped__ = original  # type: ignore[attr-defined]
    connection.check_incoming = check_incoming  # type: ignore[method-assign]
    return True


#: Longest a TURN allocation's deletion may take when its connection closes (seconds).
TURN_DELETE_TIMEOUT = 2.0


def bound_turn_deletion(timeout: float | None = TURN_DELETE_TIMEOUT) -> bool:
    """Bound aioice's deletion of a TURN allocation to ``timeout`` seconds (None: undo).

    Closing a relayed connection deletes its allocation (a Refresh with lifetime 0), and
    aiortc's ``RTCPeerConnection.close()`` waits for it; aioice retransmits that request
    for about 31 s when the relay does not answer (it is gone, or stopping with us), and
    a daemon's stop waited as long. After ``timeout`` the deletion is given up (its
    socket is closed; the relay frees the allocation when its lifetime ends, RFC 8656
    section 6). Applied by :func:`tune_aioice`; returns False (and changes nothing) when
    aioice no longer looks as expected."""
    try:
        import aioice.turn as aioice_turn

        protocol = aioice_turn.TurnClientMixin
        original = getattr(protocol.delete, "__wrapped__", protocol.delete)
    except (ImportError, AttributeError):
        return False
    if timeout is None:
        protocol.delete = original  # type: ignore[method-assign]
        return True
    bound = timeout

    async def delete(self: Any) -> None:
        # aioice's delete closes its socket in a finally: also when cancelled here.
        with suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await original(self)

    delete.__wrapped__ = original  # type: ignore[attr-defined]
    protocol.delete = delete  # type: ignore[method-assign]
    return True


_tuned = False


def tune_aioice() -> None:
    """Apply :func:`prefer_direct_paths`, :func:`answer_checks_at_once` and
    :func:`bound_turn_deletion` once per process (the first :func:`rtc_configuration` does; importing aioice costs about
    0.1 s, so not at import)."""
    global _tuned
    if not _tuned:
        _tuned = True
        prefer_direct_paths()
        answer_checks_at_once()
        bound_turn_deletion()


def prune_redundant_candidates(sdp: str) -> str:
    """``sdp`` without the ``srflx`` candidates whose address and port are a ``host``
    candidate's of the same component (RFC 8445 section 5.1.3: a host with a public
    address, or STUN asked on loopback, sees itself as it is). They only cost bytes in
    the sealed offer or answer; every other line is kept as it was."""
    lines = sdp.splitlines(keepends=True)
    hosts: set[tuple[str, str, str]] = set()
    for line in lines:
        parts = line.split()
        if line.startswith("a=candidate:") and len(parts) >= 8 and parts[7] == "host":
            hosts.add((parts[1], parts[4], parts[5]))
    out = []
    for line in lines:
        parts = line.split()
        if line.startswith("a=candidate:") and len(parts) >= 8 and parts[7] == "srflx" \
                and (parts[1], parts[4], parts[5]) in hosts:
            continue
        out.append(line)
    return "".join(out)
