"""One iterative lookup (Kademlia FIND_NODE/FIND_VALUE as Mainline runs it), without IO.

Theory of operation
-------------------
Candidates are kept sorted by XOR distance to the target (at most
``max_candidates``). :meth:`Lookup.next_requests` hands out the closest fresh candidates
while fewer than ``alpha`` requests are in flight; the owner sends them. Every answer,
soft timeout ("stall") or failure is reported back, and the owner calls ``next_requests``
again at once: the lookup never waits for a whole round, so one slow or dead node costs
one slot, not the lookup. A stalled request no longer counts against ``alpha`` and no
longer holds up termination, but a late answer is still used.

The lookup is done when the ``k`` closest candidates that did not fail or stall have all
answered (the closest-set rule), or nothing is left to ask but stalled requests. A ``get`` for an immutable
item also ends as soon as a valid value arrives.

**Disjoint paths** (S/Kademlia; issue 9: lookups that tolerate lying nodes): with
``paths`` d > 1 the starting candidates are dealt round-robin to d paths, and a node an
answer names joins the path of the node that named it, unless another path knows it
already (every node belongs to one path only). Each path runs the rules above on its
own candidates, with ceil(alpha / d) requests in flight, and the lookup is done when
every path is. Colluding liars that name only each other take over the path that first
asks one of them; the nodes they name are then known, so the other paths ignore them
and go on through honest nodes. The result (the closest answered nodes) is taken over
all paths.

**One network, one candidate** (libtorrent's ``restrict_search_ips``): with ``keys``
(:class:`~hailing.dht.routing.SourceKeys`), at most ``max_per_net`` candidates come from
one IPv4 /24 (IPv6 /64); ``refused_net`` counts the others. A host with many ids (many
ports) cannot fill a lookup.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

from .ids import id_to_int

#: Extra attempts at a bootstrap address that did not answer in time.
SEED_RETRIES = 2

FRESH = 0
INFLIGHT = 1
STALLED = 2
ANSWERED = 3
FAILED = 4


class Candidate:
    """A node the lookup may ask. ``token`` and ``extra`` hold what its answer carried."""

    __slots__ = ("addr", "depth", "dist", "extra", "id", "path", "retries", "state", "token")

    def __init__(self, node_id: bytes | None, addr: Hashable, dist: int, depth: int, path: int = 0) -> None:
        self.id = node_id
        self.path = path
        self.addr = addr
        self.dist = dist
        self.depth = depth
        self.state = FRESH
        self.retries = 0
        self.token: bytes | None = None
        self.extra: Any = None


def _dist(c: Candidate) -> int:
    return c.dist


class Lookup:
    """State of one lookup; owned and driven by :class:`~hailing.dht._lookup_engine.LookupEngine`."""

    def __init__(
        self,
        qid: int,
        kind: str,
        target: bytes,
        own_id: bytes,
        k: int,
        alpha: int,
        max_candidates: int,
        started: float,
        *,
        paths: int = 1,
        keys: Callable[[Hashable], tuple[bytes, bytes] | None] | None = None,
        max_per_net: int = 1,
    ) -> None:
        self.qid = qid
        self.kind = kind
        self.target = target
        self._t = id_to_int(target)
        self.k = k
        self.alpha = alpha
        self._max = max_candidates
        self.started = started
        self.cands: list[Candidate] = []
        self.seeds: list[Candidate] = []
        self._seen: set[Hashable] = set()
        self._seen_ids: set[bytes] = {own_id}
        self.inflight = 0
        self.messages = 0
        self.responses = 0
        self.timeouts = 0
        #: True once the owner has reported the outcome.
        self.finished = False
        #: Set by the owner to end early (e.g. an immutable value was found).
        self.stop = False
        self.result: Any = None
        self.result_depth = 0
        #: BEP44 salt of a mutable get (the target alone cannot be checked without it).
        self.salt = b""
        #: put/announce: the method and arguments of the store phase.
        self.store: tuple[bytes, dict[bytes, Any]] | None = None
        #: put/announce: the key under which a successful store is republished.
        self.republish: bytes | None = None
        #: Lock-step rounds (the ``kademlia`` package's algorithm) instead of hailing's.
        self.lockstep = False
        #: Set once a get has doubled its search depth (see LookupEngine._widen).
        self.widened = False
        #: A post sent straight to remembered storing nodes, without a lookup.
        self.cached = False
        #: How many times the owner added further routing-table nodes (see LookupEngine._refill).
        self.refills = 0
        self._last_round: tuple[int, ...] = ()
        #: Disjoint paths (module docstring): requests in flight per path, next path to deal.
        self.paths = max(1, paths)
        self._path_alpha = -(-alpha // self.paths)
        self._path_inflight = [0] * self.paths
        self._deal = 0
        self._max *= self.paths
        self._keys = keys
        self._max_net = max_per_net
        self._nets: Counter[bytes] = Counter()
        #: Candidates refused because their network had max_per_net already.
        self.refused_net = 0

    # -- filling ---------------------------------------------------------------------

    def add_seed(self, addr: Hashable) -> None:
        """A bootstrap address whose id we do not know: asked first, never in the result."""
        if addr not in self._seen:
            self._seen.add(addr)
            self.seeds.append(Candidate(None, addr, 0, 0, self._next_path()))

    def _next_path(self) -> int:
        p = self._deal
        self._deal = (p + 1) % self.paths
        return p

    def add(self, node_id: bytes, addr: Hashable, depth: int, path: int = -1) -> bool:
        """Add a candidate (to ``path``, default: dealt round-robin); False if it was
        known already, is too far to keep, or its network has its share."""
        if addr in self._seen or node_id in self._seen_ids:
            return False
        dist = id_to_int(node_id) ^ self._t
        cands = self.cands
        if len(cands) >= self._max and dist >= cands[-1].dist:
            return False
        if self._keys is not None:
            keys = self._keys(addr)
            if keys is not None:
                if self._nets[keys[1]] >= self._max_net:
                    self.refused_net += 1
                    return False
                self._nets[keys[1]] += 1
        self._seen.add(addr)
        self._seen_ids.add(node_id)
        self._insert(Candidate(node_id, addr, dist, depth, self._next_path() if path < 0 else path))
        return True

    def _insert(self, c: Candidate) -> None:
        cands = self.cands
        bisect.insort(cands, c, key=_dist)
        if len(cands) > self._max:
            # Drop the farthest candidate that is not waiting on an answer.
            for i in range(len(cands) - 1, -1, -1):
                if cands[i].state != INFLIGHT:
                    del cands[i]
                    break

    def add_answered_seed(self, c: Candidate) -> None:
        """A seed answered and told us its id: it joins the candidates (and the result)."""
        if c.id is None or c.id in self._seen_ids:
            return
        self._seen_ids.add(c.id)
        c.dist = id_to_int(c.id) ^ self._t
        self._insert(c)

    # -- driving ---------------------------------------------------------------------

    def next_requests(self) -> list[Candidate]:
        """Candidates to query now (already marked in flight)."""
        if self.finished or self.stop:
            return []
        if self.lockstep:
            return self._next_round()
        out: list[Candidate] = []
        for s in self.seeds:
            if s.state == FRESH:
                s.state = INFLIGHT
                self.inflight += 1
                if self.paths > 1:
                    self._path_inflight[s.path] += 1
                out.append(s)
        if self.paths > 1:
            return self._next_on_paths(out)
        answered = 0
        for c in self.cands:
            if self.inflight >= self.alpha:
                break
            st = c.state
            if st == ANSWERED:
                answered += 1
                if answered >= self.k:
                    break
            elif st == FRESH:
                c.state = INFLIGHT
                self.inflight += 1
                out.append(c)
        self.messages += len(out)
        return out

    def _next_on_paths(self, out: list[Candidate]) -> list[Candidate]:
        """next_requests with disjoint paths: each path by itself, within its alpha."""
        k = self.k
        answered = [0] * self.paths
        inflight = self._path_inflight
        limit = self._path_alpha
        for c in self.cands:
            p = c.path
            if answered[p] >= k:
                continue
            st = c.state
            if st == ANSWERED:
                answered[p] += 1
            elif st == FRESH and inflight[p] < limit:
                c.state = INFLIGHT
                inflight[p] += 1
                self.inflight += 1
                out.append(c)
        self.messages += len(out)
        return out

    def _leave_flight(self, c: Candidate) -> None:
        self.inflight -= 1
        if self.paths > 1:
            self._path_inflight[c.path] -= 1

    def _next_round(self) -> list[Candidate]:
        """Textbook Kademlia (the ``kademlia`` package's spider crawl): a round of alpha
        requests starts only when the previous round has fully answered or timed out; a
        round that found no closer node asks every unasked node of the closest k."""
        if self.inflight:
            return []
        out = [s for s in self.seeds if s.state == FRESH]
        if not out:
            nearest = [c for c in self.cands if c.state != FAILED][: self.k]
            ids = tuple(c.dist for c in nearest)
            count = self.alpha if ids != self._last_round else self.k
            self._last_round = ids
            out = [c for c in nearest if c.state == FRESH][:count]
        for c in out:
            c.state = INFLIGHT
        self.inflight += len(out)
        self.messages += len(out)
        return out

    def answered(self, c: Candidate) -> None:
        if c.state == INFLIGHT:
            self._leave_flight(c)
        c.state = ANSWERED
        self.responses += 1

    def stalled(self, c: Candidate) -> None:
        if c.state == INFLIGHT:
            self._leave_flight(c)
            c.state = STALLED
            if c.id is None and c.retries < SEED_RETRIES:
                # A bootstrap address is the only way in: ask it again (the packet may
                # have been lost) rather than give up on joining.
                c.retries += 1
                c.state = FRESH

    def failed(self, c: Candidate) -> None:
        if c.state == INFLIGHT:
            self._leave_flight(c)
        if c.state in (INFLIGHT, STALLED):
            c.state = FAILED
            self.timeouts += 1

    def is_done(self) -> bool:
        if self.finished:
            return True
        if self.stop:  # lock-step lookups finish the round they are in
            return not self.lockstep or self.inflight == 0
        if self.lockstep:
            return self.inflight == 0 and self._round_exhausted()
        if any(s.state == INFLIGHT for s in self.seeds):
            return False
        if self.paths > 1:
            return self._paths_done()
        answered = 0
        for c in self.cands:
            st = c.state
            if st == ANSWERED:
                answered += 1
                if answered >= self.k:
                    return True
            elif st in (FRESH, INFLIGHT):
                return False
        # Fewer than k answered and nothing left to ask: done. Stalled requests are not
        # waited for (in a small network a dead node would hold every lookup up to the
        # hard timeout); their late answers are simply ignored.
        return True

    def _paths_done(self) -> bool:
        """Every path done by the closest-set rule on its own candidates."""
        answered = [0] * self.paths
        k = self.k
        for c in self.cands:
            p = c.path
            if answered[p] >= k:
                continue
            st = c.state
            if st == ANSWERED:
                answered[p] += 1
            elif st in (FRESH, INFLIGHT):
                return False
        return True

    def _round_exhausted(self) -> bool:
        nearest = [c for c in self.cands if c.state != FAILED][: self.k]
        return not any(c.state == FRESH for c in nearest) and not any(
            s.state == FRESH for s in self.seeds
        )

    def closest_answered(self, n: int | None = None) -> list[Candidate]:
        n = self.k if n is None else n
        out = [c for c in self.cands if c.state == ANSWERED]
        return out[:n]

    def hops(self) -> int:
        if self.result is not None:
            return self.result_depth + 1
        best = self.closest_answered()
        return max((c.depth for c in best), default=-1) + 1
