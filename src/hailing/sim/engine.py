"""The discrete-event engine: real DhtProtocol cores, virtual time, a seeded generator.

Theory of operation
-------------------
One heap of ``(time, seq, kind, ...)`` entries drives everything; ``seq`` breaks ties
in insertion order, so the same seed gives the same run, event for event. Kinds:
packet delivery, a core's timer, and a scheduled call (workload steps, churn).

After anything happens to a core (a datagram in, its timer), the engine drains it: the
datagrams it wants to send go through the :class:`NetworkModel` and come back as
deliveries; its events are passed to the callbacks registered for their query ids; and
its next deadline is put on the heap (older timer entries for that core become stale
and are skipped).

Each delivered packet is folded into :attr:`Simulator.trace` (SHA-256 over time,
source, destination and bytes), so two runs can be compared for determinism.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import struct
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from ..dht import DhtConfig, DhtProtocol, bep42
from ..krpc import IPAddressCodec
from .network import NetworkModel

_DELIVER, _TIMER, _CALL = 0, 1, 2
_INF = float("inf")

Callback = Callable[[Any], None]


class LinkLayer(Protocol):
    """What the engine asks of a link layer (:mod:`hailing.sim.overlay`): with one set
    as :attr:`Simulator.links`, every datagram a core sends goes to :meth:`send`, which
    delivers it over an open link (:meth:`Simulator.transmit`), queues it while a link is
    coupled, or drops it; hosts coming and going are reported to it."""

    def send(self, node: SimNode, data: bytes, dst: Hashable) -> None: ...

    def node_added(self, node: SimNode) -> None: ...

    def node_left(self, node: SimNode) -> None: ...


class HostLeft:
    """Passed to the callback of a command whose host left before it finished (the
    lookup dies with its host: nobody is waiting for its answer any more)."""

    __slots__ = ("qid",)

    def __init__(self, qid: int) -> None:
        self.qid = qid


class SimNode:
    """A simulated host: its address, its core and its bookkeeping."""

    __slots__ = ("addr", "alive", "index", "joined_at", "left_at", "protected", "proto", "timer_at")

    def __init__(self, index: int, addr: Hashable, proto: DhtProtocol, now: float) -> None:
        self.index = index
        self.addr = addr
        self.proto = proto
        self.alive = True
        self.protected = False
        self.timer_at = _INF
        self.joined_at = now
        self.left_at: float | None = None


#: Public /8 blocks the simulated hosts' addresses are spread over: 11.0.0.0 to
#: 126.255.255.255 (no private, loopback or multicast block among them).
_FIRST_OCTET, _OCTETS = 11, 116
_NETS = _OCTETS << 16  # /24 networks in that range
_SPREAD = 0x9E3779B1 % _NETS | 1  # odd and not a multiple of 29: a bijection mod _NETS


def host_address(index: int, port: int = 6881) -> tuple[str, int]:
    """The (fake, never used on a real network) public IPv4 address of simulated host
    ``index``: each host up to 7.6 million gets its own /24 (the routing table's per-IP
    limits see every host as a different network), spread over the range as real hosts
    are, so that BEP42 ids derived from them are spread over the id space too."""
    net = index * _SPREAD % _NETS
    a = _FIRST_OCTET + (net >> 16)
    return (f"{a}.{(net >> 8) & 255}.{net & 255}.{1 + index % 254}", port)


class Simulator:
    """Many DhtProtocol cores on one virtual network. Nothing here reads a real clock."""

    def __init__(
        self,
        seed: int,
        network: NetworkModel | None = None,
        config: DhtConfig | None = None,
        *,
        trace: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = network or NetworkModel(random.Random(seed ^ 0x5EED), seed=seed)
        self.config = config or DhtConfig()
        self.codec = IPAddressCodec()
        self.now = 0.0
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self.nodes: dict[Hashable, SimNode] = {}  # live hosts
        self._index: dict[Hashable, int] = {}  # every host ever, for the trace
        self.live: list[SimNode] = []
        self._live_pos: dict[Hashable, int] = {}
        self._callbacks: dict[tuple[int, int], Callback] = {}
        self._next_index = 1
        self._trace = hashlib.sha256() if trace else None
        self.delivered = 0
        self.events_processed = 0
        #: The link layer (None: every host can send to every other, as over UDP).
        self.links: LinkLayer | None = None

    # -- population ----------------------------------------------------------------------

    def add_node(
        self,
        config: DhtConfig | None = None,
        *,
        addr: tuple[str, int] | None = None,
        node_id: bytes | None = None,
    ) -> SimNode:
        """A new host (at ``addr``, default :func:`host_address` of its index) whose
        core has ``node_id`` (default: a BEP42 id for its address, as a node that knows
        its public address picks)."""
        index = self._next_index
        self._next_index += 1
        if addr is None:
            addr = host_address(index)
        rng = random.Random(self.rng.getrandbits(64))
        if node_id is None:
            node_id = bep42.generate_node_id(addr[0], rng.randbytes)
        proto = DhtProtocol(config or self.config, rng=rng, now=self.now, node_id=node_id,
                            codec=self.codec)
        node = SimNode(index, addr, proto, self.now)
        self.nodes[addr] = node
        self._index[addr] = index
        self._live_pos[addr] = len(self.live)
        self.live.append(node)
        if self.links is not None:
            self.links.node_added(node)
        self._drain(node)
        return node

    def kill(self, node: SimNode) -> None:
        """The host vanishes: no goodbye, packets to it are lost from now on."""
        if not node.alive:
            return
        node.alive = False
        node.left_at = self.now
        if self.links is not None:
            self.links.node_left(node)
        pos = self._live_pos.pop(node.addr)
        last = self.live.pop()
        if last is not node:
            self.live[pos] = last
            self._live_pos[last.addr] = pos
        # Forget the core: a dead host holds no memory in a long churn run.
        del self.nodes[node.addr]
        for key in [k for k in self._callbacks if k[0] == node.index]:
            self._callbacks.pop(key)(HostLeft(key[1]))

    def random_live(self, exclude: SimNode | None = None) -> SimNode:
        while True:
            node = self.live[self.rng.randrange(len(self.live))]
            if node is not exclude or len(self.live) == 1:
                return node

    # -- commands and scheduling -----------------------------------------------------------

    def command(self, node: SimNode, start: Callable[[DhtProtocol, float], int], callback: Callback) -> None:
        """Run ``start(core, now)`` (a core command returning a qid) on ``node``; the
        outcome event goes to ``callback``."""
        qid = start(node.proto, self.now)
        self._callbacks[(node.index, qid)] = callback
        self._drain(node)

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, _CALL, fn, args))

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.call_at(self.now + delay, fn, *args)

    # -- the loop --------------------------------------------------------------------------

    def run(self, until: float = _INF, stop: Callable[[], bool] | None = None) -> None:
        """Process events in time order up to ``until`` (or until ``stop()`` is true)."""
        heap = self._heap
        nodes = self.nodes
        trace = self._trace
        pack = struct.pack
        while heap:
            entry = heap[0]
            t = entry[0]
            if t > until:
                break
            heapq.heappop(heap)
            self.now = t
            kind = entry[2]
            self.events_processed += 1
            if kind == _DELIVER:
                node = nodes.get(entry[3])
                if node is None or not node.alive:
                    continue
                src, data = entry[4], entry[5]
                self.delivered += 1
                if trace is not None:
                    trace.update(pack("!dII", t, self._index[src], node.index))
                    trace.update(data)
                node.proto.receive_datagram(data, src, t)
                self._drain(node)
            elif kind == _TIMER:
                node = entry[3]
                if not node.alive or node.timer_at != t:
                    continue
                node.timer_at = _INF
                node.proto.handle_timer(t)
                self._drain(node)
            else:
                entry[3](*entry[4])
            if stop is not None and stop():
                break
        if until != _INF and self.now < until:
            self.now = until

    def _drain(self, node: SimNode) -> None:
        proto = node.proto
        now = self.now
        out = proto.datagrams_to_send(now)
        if out and self.links is not None:
            send = self.links.send
            for data, dst in out:
                send(node, data, dst)
        elif out:
            route = self.network.route
            heap = self._heap
            src = node.addr
            for data, dst in out:
                for delay in route(data, src, dst):
                    self._seq += 1
                    heapq.heappush(heap, (now + delay, self._seq, _DELIVER, dst, src, data))
        ev = proto.next_event()
        while ev is not None:
            cb = self._callbacks.pop((node.index, ev.qid), None)
            if cb is not None:
                cb(ev)
            ev = proto.next_event()
        t = proto.get_timer()
        if t is not None and t < node.timer_at:
            node.timer_at = t
            self._seq += 1
            heapq.heappush(self._heap, (t, self._seq, _TIMER, node))

    def transmit(self, src: Hashable, data: bytes, dst: Hashable) -> None:
        """Send one datagram from ``src`` to ``dst`` through the network model (what the
        link layer calls for a datagram on an open link)."""
        now = self.now
        heap = self._heap
        for delay in self.network.route(data, src, dst):
            self._seq += 1
            heapq.heappush(heap, (now + delay, self._seq, _DELIVER, dst, src, data))

    def fold(self, record: bytes) -> None:
        """Fold an event that is not a delivered packet (a link opened, a coupling
        failed) into the trace hash, with the current time."""
        if self._trace is not None:
            self._trace.update(struct.pack("!d", self.now))
            self._trace.update(record)

    def host_index(self, addr: Hashable) -> int:
        """The number of host ``addr`` (every host ever added has one)."""
        return self._index[addr]

    @property
    def trace(self) -> str:
        """Hex SHA-256 of every packet delivered so far (time, endpoints, bytes)."""
        if self._trace is None:
            raise RuntimeError("tracing is off")
        return self._trace.hexdigest()
