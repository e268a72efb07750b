"""The simulated Internet: pairwise round-trip times, loss, partitions and a packet hook.

Latency model
-------------
Every pair of hosts gets a fixed round-trip time drawn from a log-normal distribution
with median :attr:`NetworkModel.median_rtt` (80 ms) and shape ``sigma`` (0.7), which
puts the 95th percentile near 250 ms and the 99th near 400 ms, with a tail beyond. This
is the shape of wide-area RTTs between Internet hosts measured with King (Gummadi,
Saroiu and Gribble, IMW 2002: median RTT about 80 ms between DNS servers worldwide,
long right tail). The value for a pair is derived from a hash of the pair and the seed,
so it needs no N x N matrix (hosts are numbered as they first appear) and is the same in both directions. Each packet takes half
the pair's RTT plus an exponential jitter (mean 2 % of the one-way delay), so packets
can overtake each other (reordering comes for free). :meth:`NetworkModel.stats` reports
the model's own percentiles; a test checks them.

Loss is independent per packet. A partition splits hosts into groups; packets between
groups are dropped. ``route_packet`` is a hook in trio's style: it receives every packet
with its computed delay and returns the delays at which copies arrive: ``[]`` drops it,
two values duplicate it, a larger value delays (and so reorders) it.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Hashable, Iterable

RouteHook = Callable[[bytes, Hashable, Hashable, float], list[float]]

_NORMAL = statistics.NormalDist()
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a well-mixed 64-bit hash of a 64-bit integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


class NetworkModel:
    """Delay, loss and partitions for the simulator. All randomness comes from ``rng``."""

    def __init__(
        self,
        rng: random.Random,
        *,
        loss: float = 0.0,
        median_rtt: float = 0.080,
        sigma: float = 0.7,
        jitter: float = 0.02,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.rng = rng
        self.loss = loss
        self.median_rtt = median_rtt
        self.sigma = sigma
        self.jitter = jitter
        self._seed = _mix64(seed & _MASK64)
        self._ids: dict[Hashable, int] = {}
        self._group: dict[Hashable, int] = {}
        self.route_packet: RouteHook | None = None
        self.sent = 0
        self.dropped = 0

    def rtt(self, a: Hashable, b: Hashable) -> float:
        """The fixed round-trip time of the pair (a, b), in seconds."""
        ids = self._ids
        ia = ids.get(a)
        if ia is None:
            ia = ids[a] = len(ids) + 1
        ib = ids.get(b)
        if ib is None:
            ib = ids[b] = len(ids) + 1
        if ib < ia:
            ia, ib = ib, ia
        u = (_mix64(self._seed ^ (ia << 32 | ib)) + 0.5) / 2.0**64
        return self.median_rtt * math.exp(self.sigma * _NORMAL.inv_cdf(u))

    def partition(self, groups: Iterable[Iterable[Hashable]]) -> None:
        """Split hosts into groups; packets between different groups are dropped.
        Hosts in no group are in a group of their own kind (group -1)."""
        self._group = {}
        for i, g in enumerate(groups):
            for host in g:
                self._group[host] = i

    def heal(self) -> None:
        self._group = {}

    def route(self, data: bytes, src: Hashable, dst: Hashable) -> list[float]:
        """Delays (seconds) after which copies of this packet arrive; [] if lost."""
        self.sent += 1
        if self._group and self._group.get(src, -1) != self._group.get(dst, -1):
            self.dropped += 1
            return []
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return []
        one_way = self.rtt(src, dst) / 2
        delay = one_way * (1.0 + rng.expovariate(1.0 / self.jitter)) if self.jitter else one_way
        if self.route_packet is not None:
            delays = self.route_packet(data, src, dst, delay)
            if not delays:
                self.dropped += 1
            return delays
        return [delay]

    def stats(self, samples: int = 20000) -> dict[str, float]:
        """Percentiles (ms) of the pairwise RTT over random host pairs."""
        rng = random.Random(1)
        saved, self._ids = self._ids, {}
        try:
            values = sorted(
                self.rtt(("probe", rng.getrandbits(40)), ("probe", rng.getrandbits(40))) * 1000
                for _ in range(samples)
            )
        finally:
            self._ids = saved
        def q(p: float) -> float:
            return values[min(len(values) - 1, int(p * len(values)))]

        return {"p50": q(0.50), "p90": q(0.90), "p95": q(0.95), "p99": q(0.99), "max": values[-1]}
