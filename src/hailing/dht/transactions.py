"""Requests in flight (KRPC transactions) and the randomness the core is given.

:class:`~hailing.dht.protocol.DhtProtocol` sends every request and keeps one
:class:`Pending` per transaction id until the answer, an error or the hard timeout. A
request belongs either to a lookup (``lookup`` and ``cand`` set: the protocol reports
its outcome to the :class:`~hailing.dht._lookup_engine.LookupEngine`) or to whoever
gave an ``on_reply`` callback (and optionally ``on_stall``, told at the soft timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

from ..krpc import Error, Response
from .config import DhtConfig
from .lookup import Candidate, Lookup


class Rng(Protocol):
    """The randomness the core needs; ``random.Random`` satisfies it."""

    def getrandbits(self, k: int, /) -> int: ...
    def random(self) -> float: ...


#: Called with the reply (None after the hard timeout), the request and ``now``.
OnReply = Callable[[Response | Error | None, "Pending", float], None]
#: Called with the request and ``now`` when it passes its soft timeout (still in flight).
OnStall = Callable[["Pending", float], None]


class SendQuery(Protocol):
    """How the lookup engine asks its owner to send a request (DhtProtocol._request)."""

    def __call__(
        self,
        addr: Hashable,
        method: bytes,
        args: dict[bytes, Any],
        now: float,
        *,
        node_id: bytes | None = None,
        lookup: Lookup | None = None,
        cand: Candidate | None = None,
        on_reply: OnReply | None = None,
        on_stall: OnStall | None = None,
    ) -> None: ...


class Pending:
    """One request in flight."""

    __slots__ = (
        "addr", "cand", "done", "lookup", "method", "node_id", "on_reply", "on_stall", "rtt",
        "sent", "stalled", "tid",
    )

    def __init__(self, tid: bytes, addr: Hashable, method: bytes, sent: float) -> None:
        self.tid = tid
        self.addr = addr
        self.method = method
        self.sent = sent
        self.node_id: bytes | None = None
        self.lookup: Lookup | None = None
        self.cand: Candidate | None = None
        #: For requests outside lookups.
        self.on_reply: OnReply | None = None
        self.on_stall: OnStall | None = None
        self.rtt = 0.0
        self.done = False
        self.stalled = False


class RttEstimator:
    """Round-trip times over all peers (RFC 6298's smoothing) and the soft timeout they
    give: how long a lookup waits on a request before it stops counting on it."""

    __slots__ = ("rttvar", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def update(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def soft_timeout(self, cfg: DhtConfig, node_rtt: float | None) -> float:
        """Twice the node's own smoothed RTT when we have it (``node_rtt``), else SRTT +
        2 RTTVAR over all peers (about the 90th percentile of the RTTs seen), within the
        configured bounds."""
        if node_rtt is not None:
            estimate = 2 * node_rtt
        elif self.srtt is None:
            return cfg.max_soft_timeout
        else:
            estimate = self.srtt + 2 * self.rttvar
        return min(cfg.max_soft_timeout, max(cfg.min_soft_timeout, estimate))
