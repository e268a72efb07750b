"""A tiny in-memory network of DhtProtocol cores with a hand-advanced clock (test helper).

Every datagram takes ``latency`` seconds; ``drop`` decides per (payload, src, dst) whether
it is lost. Time only moves when :meth:`MemoryNet.run` advances it. Addresses in
``dead`` neither send nor receive. An address registered with :meth:`MemoryNet.listen`
is an "outside" endpoint (a test playing a remote peer by hand): what is sent to it is
collected, and :meth:`MemoryNet.inject` sends from it.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import socket
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

from hailing.dht import DhtConfig, DhtProtocol, Event
from hailing.krpc import Error, Query, Response, decode_message, encode_message

Addr = tuple[str, int]


class MemoryNet:
    def __init__(self, latency: float = 0.01, seed: int = 1) -> None:
        self.now = 0.0
        self.latency = latency
        self.rng = random.Random(seed)
        self.nodes: dict[Hashable, DhtProtocol] = {}
        self.dead: set[Hashable] = set()
        self.drop: Callable[[bytes, Hashable, Hashable], bool] = lambda d, s, t: False
        self._q: list[tuple[float, int, Hashable, Hashable, bytes]] = []
        self._seq = 0
        self.events: dict[Hashable, list[Event]] = {}
        self.sent = 0
        #: Outside endpoints: address -> datagrams ``(payload, src)`` delivered to it.
        self.outside: dict[Hashable, list[tuple[bytes, Hashable]]] = {}

    def add(self, addr: Addr | None = None, config: DhtConfig | None = None, **kw: Any) -> DhtProtocol:
        if addr is None:
            addr = (f"10.0.{len(self.nodes) // 250}.{len(self.nodes) % 250 + 1}", 6881)
        p = DhtProtocol(config, rng=random.Random(self.rng.getrandbits(64)), now=self.now, **kw)
        self.nodes[addr] = p
        self.events[addr] = []
        return p

    def listen(self, addr: Hashable) -> list[tuple[bytes, Hashable]]:
        """Register an outside endpoint; returns the list its datagrams are appended to."""
        return self.outside.setdefault(addr, [])

    def kill(self, p: DhtProtocol) -> Hashable:
        """Mark ``p`` dead (silent from now on); returns its address."""
        addr = self.addr_of(p)
        self.dead.add(addr)
        return addr

    def live(self) -> list[DhtProtocol]:
        return [p for a, p in self.nodes.items() if a not in self.dead]

    def addr_of(self, p: DhtProtocol) -> Hashable:
        return next(a for a, n in self.nodes.items() if n is p)

    def inject(self, data: bytes, src: Hashable, dst: Hashable) -> None:
        self._seq += 1
        heapq.heappush(self._q, (self.now + self.latency, self._seq, src, dst, data))

    def flush(self) -> None:
        for addr, p in self.nodes.items():
            if addr in self.dead:
                p.datagrams_to_send(self.now)
                continue
            for data, dst in p.datagrams_to_send(self.now):
                self.sent += 1
                if self.drop(data, addr, dst):
                    continue
                self.inject(data, addr, dst)
            while (ev := p.next_event()) is not None:
                self.events[addr].append(ev)

    def run(self, until: float | None = None, duration: float | None = None) -> None:
        """Deliver packets and fire timers up to ``until`` (or now + duration)."""
        end = until if until is not None else self.now + (duration or 0.0)
        self.flush()
        while True:
            t_pkt = self._q[0][0] if self._q else float("inf")
            t_tmr, who = float("inf"), None
            for addr, p in self.nodes.items():
                if addr in self.dead:
                    continue
                t = p.get_timer()
                if t is not None and t < t_tmr:
                    t_tmr, who = t, addr
            t = min(t_pkt, t_tmr)
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            if t_pkt <= t_tmr:
                _, _, src, dst, data = heapq.heappop(self._q)
                node = self.nodes.get(dst)
                if node is not None and dst not in self.dead:
                    node.receive_datagram(data, src, self.now)
                elif dst in self.outside:
                    self.outside[dst].append((data, src))
            else:
                assert who is not None
                self.nodes[who].handle_timer(self.now)
            self.flush()

    def wait_event(self, p: DhtProtocol, qid: int, limit: float = 60.0) -> Event:
        addr = self.addr_of(p)
        end = self.now + limit
        while self.now < end:
            for ev in self.events[addr]:
                if ev.qid == qid:
                    self.events[addr].remove(ev)
                    return ev
            self.run(duration=0.05)
        raise AssertionError(f"no event for qid {qid} within {limit} s")


def join(net: MemoryNet, via: Hashable, config: DhtConfig | None = None, **kw: Any) -> DhtProtocol:
    """Add one core (``kw`` as for :meth:`MemoryNet.add`) and bootstrap it off ``via``."""
    p = net.add(config=config, **kw)
    qid = p.bootstrap([via], net.now)
    net.wait_event(p, qid)
    return p


def build_network(n: int, seed: int = 1, latency: float = 0.01, config: DhtConfig | None = None) -> MemoryNet:
    """n cores that bootstrap off the first one, one after another."""
    net = MemoryNet(latency=latency, seed=seed)
    first = net.add(config=config)
    first_addr = net.addr_of(first)
    for _ in range(n - 1):
        join(net, first_addr, config)
    return net


def krpc_query(method: bytes, args: dict[bytes, object], tid: bytes = b"t1") -> bytes:
    """A KRPC query as an outside endpoint sends it (a fixed 20-byte sender id)."""
    return encode_message(Query(tid, method, {b"id": b"I" * 20, **args}))


def ask(net: MemoryNet, node: object, src: Addr, data: bytes) -> dict[bytes, object]:
    """Send ``data`` to ``node`` from the outside endpoint ``src``; the values of its
    answer, or ``{b"error": code}`` for an error."""
    out = net.listen(src)
    out.clear()
    net.inject(data, src, net.addr_of(node))  # type: ignore[arg-type]
    net.run(duration=0.1)
    # The node may also ping us (to verify a new query sender): keep the answer only.
    answers = [m for m in (decode_message(d) for d, _ in out) if not isinstance(m, Query)]
    assert answers, "no answer"
    msg = answers[-1]
    if isinstance(msg, Error):
        return {b"error": msg.code}
    return msg.values  # type: ignore[union-attr]


class Udp:
    """A hand-driven KRPC client socket (the adversary, or a peer played by the test)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))
        self._tid = 0

    async def ask(self, dst: tuple[str, int], method: bytes, args: dict[bytes, object]
                  ) -> dict[bytes, object]:
        """The values of the answer, or ``{b"error": code}``."""
        loop = asyncio.get_running_loop()
        self._tid += 1
        tid = self._tid.to_bytes(4, "big")
        self.sock.sendto(krpc_query(method, args, tid), dst)
        async with asyncio.timeout(5):
            while True:
                msg = decode_message((await loop.sock_recvfrom(self.sock, 65535))[0])
                if msg.tid == tid:
                    if isinstance(msg, Error):
                        return {b"error": msg.code}
                    assert isinstance(msg, Response)
                    return msg.values

    async def token(self, dst: tuple[str, int], target: bytes = b"K" * 20) -> bytes:
        """A write token of ``dst`` (from a BEP44 get)."""
        token = (await self.ask(dst, b"get", {b"target": target}))[b"token"]
        assert isinstance(token, bytes)
        return token

    def close(self) -> None:
        self.sock.close()


@asynccontextmanager
async def sockets(n: int, host: str = "127.0.0.1") -> AsyncIterator[list[Udp]]:
    socks = [Udp(host) for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()
