"""STUN on the DHT port: every hailing node is a STUN server, and learns its own NAT.

Theory of operation
-------------------
A hailing node's UDP socket carries two protocols, told apart by the first byte as
RFC 7983 does for WebRTC: 0..3 is STUN (RFC 8489), anything else goes to the DHT core
(KRPC is bencode, whose first byte is ``d``). :class:`StunEndpoint` is the STUN side,
sans-IO like the core: the node hands it datagrams (:meth:`StunEndpoint.receive`) and
timer expiries (:meth:`~StunEndpoint.handle_timer`) with a clock value, sends what
:meth:`~StunEndpoint.datagrams_to_send` returns from the same socket and re-arms its
timer at :meth:`~StunEndpoint.get_timer`. The codec is aioice's ``stun`` module.

*Only a node that is not behind a NAT serves.* ICE asks a STUN server from sockets of
its own, not from the DHT socket that found the server: a hailing node behind a NAT
answers our DHT socket (its NAT holds a mapping to us) but its NAT drops ICE's
requests, so each call's ICE would wait its 5 s STUN timeout for it, and a NATed party
listing it first would gather no reflexive candidate at all (aiortc asks only the first
STUN server). So once a node's own probe said it is behind a NAT, it answers Binding
requests with error 403 (counted ``stun_declined``): whoever asks forgets it at once.
A later probe that nobody answers (its servers vanished) does not make it forget that
it is behind a NAT.

*Server.* A Binding request (class request, method binding, the magic cookie, a length
that matches the datagram, a FINGERPRINT only if it is right) is answered with a Binding
success response carrying only XOR-MAPPED-ADDRESS (and FINGERPRINT when the request had
one): no SOFTWARE, nothing that names the node. :func:`answer` is that responder alone.
Everything else (indications, other methods, responses to no transaction of ours,
garbage) is dropped and counted: ``stun_garbage``, ``stun_ignored``, ``stun_unmatched``.
The per-source datagram budget of the UDP driver runs before any of this.

*Client.* :meth:`~StunEndpoint.start_probe` sends Binding requests to a few servers
(hailing nodes the node knows; :func:`pick_servers`) with fresh random transaction ids,
retransmitted :data:`TRIES` times within :data:`TX_TIMEOUT` seconds (RFC 8489's
doubling RTO, bounded). Responses are matched by transaction id and server address.
When every request is answered or timed out, the mapped addresses give the
:class:`NatInfo` (:func:`classify`): all equal to the address we sent from: "public";
all equal to each other but not to it: "endpoint-independent"; different per server:
"endpoint-dependent" (a symmetric NAT); fewer than two answers: "unknown". The servers
that answered are remembered, fastest first (:meth:`~StunEndpoint.servers`), for ICE.

*A vanished server is forgotten at once.* ICE (aioice) waits 5 s for a STUN server that
does not answer, on every call, before the offer and before the answer. So a server
is dropped from :meth:`~StunEndpoint.servers` at its first unanswered request (a
probe's transaction after its retransmissions, a keepalive), and, since a hailing
node's STUN server is its DHT port, at the first KRPC query of ours it leaves
unanswered (:meth:`~StunEndpoint.forget`, which the node calls from the core's hard
timeout). A server forgotten between probes that leaves fewer than
:data:`PROBE_SERVERS` brings the next probe within :data:`PROBE_RETRY` seconds (it
finds others, or the forgotten one again when it was only a lost datagram).

*Keepalive.* Behind a NAT, the storing nodes that hold our listens reach us only while
the NAT keeps a mapping to each of them (Linux conntrack: 30 s unreplied, 120-180 s
once replied; home routers often less). :meth:`~StunEndpoint.keepalive` sends one
Binding request (no retransmission) to each, every :data:`KEEPALIVE_INTERVAL` seconds
while :meth:`~StunEndpoint.keepalive_due` says so; the answer refreshes the mapping.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from aioice.stun import Message

__all__ = [
    "KEEPALIVE_INTERVAL",
    "PROBE_INTERVAL",
    "NatInfo",
    "NatMapping",
    "StunEndpoint",
    "answer",
    "classify",
    "is_stun",
    "pick_servers",
    "route_source",
]

Addr = tuple[str, int]
NatMapping = Literal["public", "endpoint-independent", "endpoint-dependent", "unknown"]

#: RFC 7983 section 7: a first byte in 0..3 is STUN (bencode's is ``d``, 0x64).
STUN_FIRST_BYTE_MAX = 3
#: RFC 8489 section 5: the magic cookie, and the fixed header's size.
MAGIC_COOKIE = b"\x21\x12\xa4\x42"
HEADER_LENGTH = 20
#: Client transactions: first retransmission after RTO, doubling (RFC 8489 section
#: 6.2.1), TRIES sends in all, given up TX_TIMEOUT after the first (0, 0.25, 0.75; 1.5).
RTO = 0.25
TRIES = 3
TX_TIMEOUT = 1.5
#: Servers asked by one probe (distinct IPs), and how many more unproven nodes are
#: tried while fewer than that are known to answer (libtorrent nodes ignore STUN).
PROBE_SERVERS = 4
PROBE_DISCOVER = 8
#: A probe is repeated this often, and sooner when the last one had no answer.
PROBE_INTERVAL = 300.0
PROBE_RETRY = 60.0
#: Behind a NAT, the storing nodes of our listens hear from us this often, at most
#: KEEPALIVE_MAX of them per round.
KEEPALIVE_INTERVAL = 25.0
KEEPALIVE_MAX = 32
#: Servers remembered (the fastest kept; one not heard from in SERVER_TTL is forgotten),
#: and client transactions in flight at most.
MAX_SERVERS = 32
SERVER_TTL = 3 * PROBE_INTERVAL
MAX_PENDING = 64

_GARBAGE_ERRORS = (ValueError, struct.error, IndexError)


def is_stun(data: bytes) -> bool:
    """RFC 7983's demultiplexing rule: is this datagram STUN (first byte 0..3)?"""
    return bool(data) and data[0] <= STUN_FIRST_BYTE_MAX


@dataclass(frozen=True, slots=True)
class NatInfo:
    """What the last probe learned about this node's NAT.

    ``external``: the address the fastest server saw us at (None without an answer;
    under an endpoint-dependent mapping another server sees another port).
    ``mapping``: see the module docstring. ``servers``: those that answered, fastest
    first. ``checked_at``: the node's clock (``loop.time()``) when the probe ended,
    ``-inf`` before the first. ``behind_nat``: True when some server saw us at another
    address than the one we sent from, False when every one saw that one; without an
    answer, what the probe before said (None before any answer).
    """

    external: Addr | None
    mapping: NatMapping
    servers: tuple[Addr, ...]
    checked_at: float
    behind_nat: bool | None = None


UNCHECKED = NatInfo(None, "unknown", (), float("-inf"))


# -- the responder ------------------------------------------------------------------------


def _parse(data: bytes, stats: Counter[str]) -> Message | None:
    """The STUN message in ``data`` (aioice's codec), or None, counted, for garbage."""
    from aioice import stun

    if (len(data) < HEADER_LENGTH or data[0] > STUN_FIRST_BYTE_MAX
            or data[4:8] != MAGIC_COOKIE or len(data) % 4):
        stats["stun_garbage"] += 1
        return None
    try:
        return stun.parse_message(data)  # length, FINGERPRINT, known method
    except _GARBAGE_ERRORS:
        stats["stun_garbage"] += 1
        return None


def _binding_reply(msg: Message, addr: Addr, stats: Counter[str]) -> bytes | None:
    from aioice import stun

    if msg.message_method != stun.Method.BINDING:
        stats["stun_ignored"] += 1
        return None
    stats["stun_requests"] += 1
    reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, msg.transaction_id)
    reply.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
    try:
        if "FINGERPRINT" in msg.attributes:
            reply.add_fingerprint()
        out = bytes(reply)
    except ValueError:  # not an IP address (a driver's opaque address)
        stats["stun_unanswerable"] += 1
        return None
    stats["stun_answered"] += 1
    return out


def answer(data: bytes, addr: Addr, stats: Counter[str]) -> bytes | None:
    """The responder alone: the Binding success response to send back to ``addr`` for
    the Binding request ``data``, or None (counted in ``stats``) for anything else."""
    from aioice import stun

    msg = _parse(data, stats)
    if msg is None:
        return None
    if msg.message_class != stun.Class.REQUEST:
        stats["stun_ignored"] += 1
        return None
    return _binding_reply(msg, addr, stats)


# -- the client's pure parts --------------------------------------------------------------


def _same(a: Addr, b: Addr) -> bool:
    try:
        return a[1] == b[1] and ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0])
    except ValueError:
        return a == b


def classify(answers: Sequence[tuple[Addr, Addr]]) -> tuple[NatMapping, bool | None]:
    """The mapping behaviour told by ``answers``: (mapped address a server saw, the local
    address we sent from to it), fastest first; and whether we are behind a NAT."""
    if not answers:
        return "unknown", None
    behind = not all(_same(mapped, local) for mapped, local in answers)
    if len(answers) < 2:
        return "unknown", behind
    if not behind:
        return "public", False
    first = answers[0][0]
    if all(_same(mapped, first) for mapped, _ in answers):
        return "endpoint-independent", True
    return "endpoint-dependent", True


def distinct_key(addr: Addr, exempt_loopback: bool) -> Hashable:
    """Servers are told apart by IP; loopback ones (a testnet's) by IP and port when
    ``exempt_loopback`` (as the DHT config's per-IP limits do)."""
    host = addr[0]
    if exempt_loopback and (host.startswith("127.") or host == "::1"):
        return addr
    return host


def pick_servers(known: Sequence[Addr], nodes: Sequence[Addr], key: Callable[[Addr], Hashable],
                 rng: random.Random, count: int = PROBE_SERVERS,
                 discover: int = PROBE_DISCOVER, hailing: Sequence[Addr] = ()) -> list[Addr]:
    """Servers for a probe: the ``known`` ones that answered before (best first), then,
    while fewer than ``count`` are known, up to ``discover`` more taken at random from
    ``hailing`` (nodes known to be hailing nodes: they answer STUN), then from ``nodes``
    (the routing table); one per :func:`distinct_key`."""
    picked: list[Addr] = []
    seen: set[Hashable] = set()

    def take(addr: Addr) -> None:
        k = key(addr)
        if k not in seen:
            seen.add(k)
            picked.append(addr)

    for addr in known:
        if len(picked) >= count:
            break
        take(addr)
    if len(picked) < count:
        limit = len(picked) + discover
        for group in (hailing, nodes):
            pool = list(group)
            rng.shuffle(pool)
            for addr in pool:
                if len(picked) >= limit:
                    break
                take(addr)
    return picked


def route_source(server: Addr, bound: Addr) -> Addr | None:
    """The local address datagrams to ``server`` leave from: ``bound`` itself, or for a
    socket bound to every interface the source address the kernel picks for that route
    (a connected UDP socket's name; nothing is sent), with the bound port. None when
    there is no route."""
    try:
        host = ipaddress.ip_address(bound[0])
    except ValueError:
        return None
    if not host.is_unspecified:
        return bound
    family = socket.AF_INET6 if host.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(server)
            name = sock.getsockname()
        except OSError:
            return None
    return (str(name[0]), bound[1])


# -- the endpoint -------------------------------------------------------------------------


@dataclass(slots=True)
class _Tx:
    server: Addr
    local: Addr | None
    request: bytes
    first_sent: float
    next_send: float
    tries_left: int
    probe: bool


@dataclass(slots=True)
class _Probe:
    started: float
    pending: set[bytes] = field(default_factory=set)
    #: (server, mapped, local, rtt) of each answer.
    answers: list[tuple[Addr, Addr, Addr, float]] = field(default_factory=list)


class StunEndpoint:
    """The STUN side of one node's socket. See the module docstring."""

    def __init__(self, rng: random.Random, now: float, *, exempt_loopback: bool = True,
                 first_probe: float = PROBE_INTERVAL) -> None:
        self._rng = rng
        self.exempt_loopback = exempt_loopback
        #: Counters (``stun_*``), merged into the node's stats.
        self.stats: Counter[str] = Counter()
        #: What the last finished probe learned.
        self.info: NatInfo = UNCHECKED
        self._out: list[tuple[bytes, Addr]] = []
        self._txs: dict[bytes, _Tx] = {}
        self._probe: _Probe | None = None
        #: server -> (rtt, the address it saw us at, when) of its last answer.
        self._servers: dict[Addr, tuple[float, Addr, float]] = {}
        self.next_probe = now + first_probe
        self.next_keepalive = now + KEEPALIVE_INTERVAL

    # -- what the driver calls ---------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """A datagram :func:`is_stun` said is STUN, from ``addr``."""
        from aioice import stun

        msg = _parse(data, self.stats)
        if msg is None:
            return
        cls = msg.message_class
        if cls == stun.Class.REQUEST and self.info.behind_nat:
            if msg.message_method == stun.Method.BINDING:
                self.stats["stun_declined"] += 1
                err = stun.Message(stun.Method.BINDING, stun.Class.ERROR, msg.transaction_id)
                err.attributes["ERROR-CODE"] = (403, "behind a NAT")
                self._out.append((bytes(err), addr))
            else:
                self.stats["stun_ignored"] += 1
        elif cls == stun.Class.REQUEST:
            reply = _binding_reply(msg, addr, self.stats)
            if reply is not None:
                self._out.append((reply, addr))
        elif cls in (stun.Class.RESPONSE, stun.Class.ERROR):
            self._response(msg, addr, now)
        else:
            self.stats["stun_ignored"] += 1

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` (and the driver's probe/keepalive check) is due."""
        due = min((tx.next_send for tx in self._txs.values()), default=float("inf"))
        if self._probe is None:
            due = min(due, self.next_probe)
        if self.info.behind_nat:
            due = min(due, self.next_keepalive)
        return due

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due, give up what timed out, finish a probe that is done."""
        for tid, tx in list(self._txs.items()):
            if tx.next_send > now:
                continue
            if tx.tries_left > 0:
                self._send(tx, now)
                continue
            del self._txs[tid]
            self.stats["stun_timeouts"] += 1
            self.forget(tx.server, now)
            if self._probe is not None:
                self._probe.pending.discard(tid)
        self._maybe_finish(now)

    # -- probes ------------------------------------------------------------------------

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def probe_due(self, now: float) -> bool:
        return self._probe is None and now >= self.next_probe

    def forget(self, server: Addr, now: float) -> bool:
        """``server`` left a request of ours unanswered (a STUN transaction, or a KRPC
        query to the same port): it is no STUN server of ours any more (see the module
        docstring). True when it was one (counted ``stun_servers_forgotten``)."""
        key = server if server in self._servers else next(
            (a for a in self._servers if _same(a, server)), None)
        if key is None:
            return False
        del self._servers[key]
        self.stats["stun_servers_forgotten"] += 1
        if len(self._servers) < PROBE_SERVERS and self._probe is None:
            self.next_probe = min(self.next_probe, now + PROBE_RETRY)
        return True

    def known_servers(self) -> list[Addr]:
        """Servers that answered, fastest first (any number per IP)."""
        return sorted(self._servers, key=lambda a: self._servers[a][0])

    def servers(self) -> list[Addr]:
        """Servers that answered our Binding requests, fastest first, one per IP."""
        out: list[Addr] = []
        seen: set[Hashable] = set()
        for addr in self.known_servers():
            k = distinct_key(addr, self.exempt_loopback)
            if k not in seen:
                seen.add(k)
                out.append(addr)
        return out

    def start_probe(self, servers: Iterable[tuple[Addr, Addr]], now: float) -> bool:
        """Ask each (server, local address we send to it from) for our mapped address.
        False (nothing done) while a probe runs. With no server the probe ends at once:
        "unknown", and the next one is due sooner."""
        if self._probe is not None:
            return False
        self.stats["stun_probes"] += 1
        self._probe = _Probe(now)
        for server, local in servers:
            tid = self._request(server, local, now, TRIES, probe=True)
            if tid is not None:
                self._probe.pending.add(tid)
        self._maybe_finish(now)
        return True

    # -- keepalive ---------------------------------------------------------------------

    def keepalive_due(self, now: float) -> bool:
        return bool(self.info.behind_nat) and now >= self.next_keepalive

    def keepalive(self, addrs: Iterable[Addr], now: float) -> int:
        """One Binding request to each of ``addrs`` (at most :data:`KEEPALIVE_MAX`),
        none repeated; the next round :data:`KEEPALIVE_INTERVAL` later. Returns the
        number sent (counted ``stun_keepalives``)."""
        self.next_keepalive = now + KEEPALIVE_INTERVAL
        sent = 0
        for addr in addrs:
            if sent >= KEEPALIVE_MAX:
                break
            if self._request(addr, None, now, 1, probe=False) is not None:
                sent += 1
        self.stats["stun_keepalives"] += sent
        return sent

    # -- internals ---------------------------------------------------------------------

    def _request(self, server: Addr, local: Addr | None, now: float, tries: int,
                 probe: bool) -> bytes | None:
        from aioice import stun

        if len(self._txs) >= MAX_PENDING:
            self.stats["stun_pending_full"] += 1
            return None
        tid = self._rng.randbytes(12)
        while tid in self._txs:
            tid = self._rng.randbytes(12)
        request = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, tid))
        tx = _Tx(server, local, request, now, now, tries, probe)
        self._txs[tid] = tx
        self._send(tx, now)
        return tid

    def _send(self, tx: _Tx, now: float) -> None:
        self._out.append((tx.request, tx.server))
        self.stats["stun_sent"] += 1
        tx.tries_left -= 1
        if tx.tries_left > 0:
            # 0, RTO, 3*RTO: each wait twice the one before (RFC 8489 section 6.2.1).
            tx.next_send = now + RTO * 2 ** (TRIES - 1 - tx.tries_left)
        else:
            tx.next_send = tx.first_sent + TX_TIMEOUT

    def _response(self, msg: Message, addr: Addr, now: float) -> None:
        from aioice import stun

        tx = self._txs.get(msg.transaction_id)
        if tx is None or not _same(tx.server, addr) or msg.message_method != stun.Method.BINDING:
            self.stats["stun_unmatched"] += 1
            return
        del self._txs[msg.transaction_id]
        probe = self._probe
        if probe is not None:
            probe.pending.discard(msg.transaction_id)
        mapped = msg.attributes.get("XOR-MAPPED-ADDRESS") or msg.attributes.get("MAPPED-ADDRESS")
        if msg.message_class != stun.Class.RESPONSE or not isinstance(mapped, tuple):
            self.stats["stun_errors"] += 1
            self.forget(tx.server, now)
            self._maybe_finish(now)
            return
        self.stats["stun_responses"] += 1
        mapped = (str(mapped[0]), int(mapped[1]))
        rtt = now - tx.first_sent
        before = self._servers.get(tx.server)
        if tx.probe or before is not None:  # a keepalive's holder is no server unless probed
            self._remember(tx.server, rtt, mapped, now)
        if tx.probe and tx.local is not None and probe is not None:
            probe.answers.append((tx.server, mapped, tx.local, rtt))
        elif before is not None and not _same(before[1], mapped) and self._probe is None:
            # A keepalive saw a new mapping (the NAT rebound us): probe again now.
            self.stats["stun_mapping_changed"] += 1
            self.next_probe = now
        self._maybe_finish(now)

    def _remember(self, server: Addr, rtt: float, mapped: Addr, now: float) -> None:
        self._servers[server] = (rtt, mapped, now)
        if len(self._servers) > MAX_SERVERS:
            slowest = max(self._servers, key=lambda a: self._servers[a][0])
            del self._servers[slowest]

    def _maybe_finish(self, now: float) -> None:
        probe = self._probe
        if probe is None or probe.pending:
            return
        self._probe = None
        for server, (_, _, seen) in list(self._servers.items()):
            if seen < now - SERVER_TTL:  # not asked for long (a probe asks only four)
                del self._servers[server]
        answers = sorted(probe.answers, key=lambda a: a[3])
        mapping, behind = classify([(mapped, local) for _, mapped, local, _ in answers])
        if behind is None:  # nobody answered (our servers vanished): still behind that NAT
            behind = self.info.behind_nat
        self.info = NatInfo(
            external=answers[0][1] if answers else None,
            mapping=mapping,
            servers=tuple(server for server, _, _, _ in answers),
            checked_at=now,
            behind_nat=behind,
        )
        self.stats["stun_mapping_" + mapping.replace("-", "_")] += 1
        self.next_probe = now + (PROBE_INTERVAL if answers else PROBE_RETRY)
        if behind:
            self.next_keepalive = min(self.next_keepalive, now + KEEPALIVE_INTERVAL)
