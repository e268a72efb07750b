"""A per-source budget of datagrams, checked before a datagram is decoded.

A source is an IPv4 address or an IPv6 /64 (the ports and the low 64 bits of an IPv6
address are free to an attacker). Each source has a token bucket of :attr:`burst`
datagrams refilled at :attr:`rate` per second; a datagram beyond it is dropped unread by
the protocol and counted. This is what keeps one flooding source from taking the node's
CPU (and, through the socket's queue, everyone's answers): dropping a datagram here
costs about a microsecond, answering one about fifty (issue 9, the flood benchmark).

Memory is bounded: at most :attr:`max_sources` buckets; when that many are held, the
idle ones (full again) are forgotten, and if every one is busy the whole table is
(an attacker with that many sources gets a fresh burst each, nothing more).
"""

from __future__ import annotations

import socket

__all__ = ["SourceRateLimiter", "is_loopback", "source_key"]


def source_key(host: str) -> str | bytes:
    """The source a datagram from ``host`` is accounted to: its IPv4 address, its IPv6
    /64 (an IPv4-mapped address counts as its IPv4 address), as ``dht.quota.source_of``
    counts (which works on the core's compact addresses; this on the socket's text)."""
    if ":" not in host:
        return host
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    try:
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0])[:8]
    except OSError:
        return host


def is_loopback(host: str) -> bool:
    return host.startswith(("127.", "::ffff:127.")) or host == "::1"


class SourceRateLimiter:
    """Token buckets per source; ``allow(host, now)`` spends one token or says no."""

    __slots__ = ("_buckets", "burst", "exempt_loopback", "max_sources", "rate")

    def __init__(self, rate: float, burst: float, *, exempt_loopback: bool = False,
                 max_sources: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.exempt_loopback = exempt_loopback
        self.max_sources = max_sources
        self._buckets: dict[str | bytes, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, host: str, now: float) -> bool:
        key = source_key(host)
        bucket = self._buckets.get(key)
        if bucket is None:
            if self.exempt_loopback and is_loopback(host):
                return True
            if len(self._buckets) >= self.max_sources:
                self._forget_idle(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        refill = self.burst / self.rate if self.rate > 0 else float("inf")
        idle = [k for k, (_, last) in self._buckets.items() if now - last >= refill]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()
