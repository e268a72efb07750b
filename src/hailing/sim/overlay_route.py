"""How the simulator's overlay picks pinned levels and routes an offer over links.

The strategies of :class:`~hailing.sim.overlay.LinkOverlay`, as functions of the links
alone (``hosts[addr].links``: the open links of each live host, ``ids[addr]``: every
host's id as an int), so that each one can be read, tested and compared on its own:

- :func:`xor_closest`: the id of a sorted block closest to a value (the oracle's pins);
- :func:`pick_levels`: which levels (common prefix length with the host's id) a host
  pins, given the levels it knows a host at;
- :func:`route_greedy`: the greedy walk alone (``backtrack=False``);
- :func:`route_backtrack`: next-hop routing with backtracking, optionally with one step
  of **lookahead** (each host knows its linked peers' links) and a chosen first hop
  (the host that named the target);
- :func:`flood`: the naive way, measured beside it.

What a real node does to match each one is in docs/overlay.md, "In the simulator".
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Mapping
from typing import Protocol

#: Larger than any XOR distance between 160-bit ids.
_FAR = 1 << 161


class HasLinks(Protocol):
    @property
    def links(self) -> Mapping[Hashable, None]: ...


Hosts = Mapping[Hashable, HasLinks]
Rtt = Callable[[Hashable, Hashable], float]
LinkIds = Callable[[Hashable], set[int]]


def spread(levels: list[int], budget: int) -> list[int]:
    """At most ``budget`` of the sorted ``levels``, spread evenly from the farthest
    (level 0: half the id space) to the deepest (the closest neighbour)."""
    m = len(levels)
    if m <= budget:
        return levels
    if budget <= 1:
        return levels[-budget:] if budget else []
    picks = sorted({round(i * (m - 1) / (budget - 1)) for i in range(budget)})
    return [levels[i] for i in picks]


def pick_levels(levels: list[int], budget: int, deep: int, phase: float | None,
                covered: set[int] | None = None) -> list[int]:
    """The levels to pin among the sorted ``levels`` a host knows a peer at.

    ``phase`` None: :func:`spread` (the same levels on every host, since every host has
    about log2 n levels). Otherwise the ``deep`` deepest levels (the closest neighbours:
    lookups of the host's own region and the last hops of every route need them), and
    the rest of the ``budget`` spread evenly over the shallower levels from an offset
    ``phase`` in [0, 1) of the host's own: across hosts, every shallow level is pinned
    by a ``(budget - deep) / shallow levels`` share of them. With ``covered`` (levels the
    host's neighbours' pins reach already), the uncovered shallow levels are spread over
    first."""
    m = len(levels)
    if m <= budget:
        return levels
    if phase is None:
        return spread(levels, budget)
    deep = min(deep, budget)
    kept = levels[m - deep:] if deep else []
    shallow = levels[:m - deep]
    rest = budget - deep
    if rest <= 0:
        return kept
    if covered:
        bare = [level for level in shallow if level not in covered]
        if len(bare) >= rest:
            shallow = bare
        else:
            others = [level for level in shallow if level in covered]
            return sorted(bare + pick_levels(others, rest - len(bare), 0, phase)) + kept
    s = len(shallow)
    picks = sorted({int((i + phase) * s / rest) % s for i in range(rest)})
    return [shallow[i] for i in picks] + kept


def xor_closest(ids: list[int], v: int, lo: int, hi: int, prefix: int, depth: int) -> int:
    """The id in the sorted block ids[lo:hi] (the ids whose first ``depth`` bits are
    ``prefix``) XOR-closest to ``v``: bit by bit, keep the half that matches ``v``'s bit
    if it is not empty."""
    while hi - lo > 1:
        shift = 159 - depth
        mid = bisect.bisect_left(ids, (prefix * 2 + 1) << shift, lo, hi)
        if ((v >> shift) & 1 and mid < hi) or mid == lo:
            lo, prefix = mid, prefix * 2 + 1
        else:
            hi, prefix = mid, prefix * 2
        depth += 1
    return ids[lo]


def route_greedy(hosts: Hosts, ids: Mapping[Hashable, int], src: Hashable, dst: Hashable,
                 max_hops: int, detour: bool) -> tuple[list[Hashable], str | None]:
    """Next-hop routing over open links: the path, and why it ended short. Each hop goes
    to the linked peer closest to the target; with ``detour`` a host with no closer link
    takes its closest one the message has not visited (the message id is remembered by
    every host it passed: loop suppression)."""
    t = ids[dst]
    cur = src
    path = [src]
    visited = {src}
    for _ in range(max_hops):
        links = hosts[cur].links
        if dst in links:
            path.append(dst)
            return path, None
        best = None
        bd = ids[cur] ^ t if not detour else _FAR
        for q in links:
            d = ids[q] ^ t
            if d < bd and q not in visited:
                bd, best = d, q
        if best is None:
            return path, "stuck"
        cur = best
        path.append(best)
        visited.add(best)
    return path, "hop_limit"


def _closest(hosts: Hosts, ids: Mapping[Hashable, int], links: Mapping[Hashable, None],
             t: int, visited: set[Hashable], dst: Hashable, lookahead: bool,
             link_ids: LinkIds | None = None, visited_ids: set[int] | None = None) -> Hashable | None:
    """The next hop among ``links`` not yet visited. Without lookahead: the peer closest
    to ``t``. With it: a peer linked to the target itself first, else the peer ``q``
    with the smallest ``min(d(q, t), d(m, t) for m linked to q and not visited)``, ties
    to the peer itself closer. ``link_ids(q)`` (the ids of q's links) and ``visited_ids``
    give the same answer faster."""
    best = None
    if not lookahead:
        bd = _FAR
        for q in links:
            d = ids[q] ^ t
            if d < bd and q not in visited:
                bd, best = d, q
        return best
    key = (_FAR, _FAR)
    for q in links:
        if q in visited:
            continue
        own = ids[q] ^ t
        their = hosts[q].links
        if dst in their:
            return q
        reach = own
        if link_ids is not None and visited_ids is not None:
            reach = min(reach, min(map(t.__xor__, link_ids(q) - visited_ids), default=_FAR))
        else:
            for m in their:
                d = ids[m] ^ t
                if d < reach and m not in visited:
                    reach = d
        k = (reach, own)
        if k < key:
            key, best = k, q
    return best


def route_backtrack(hosts: Hosts, ids: Mapping[Hashable, int], rtt: Rtt, src: Hashable, dst: Hashable,
                    max_hops: int, *, lookahead: bool = False, first: Hashable | None = None,
                    link_ids: LinkIds | None = None) -> tuple[list[Hashable], str | None, int, float]:
    """Next-hop routing with backtracking: each host forwards to its next hop among the
    linked peers the message has not visited (it carries their list: loop suppression;
    :func:`_closest` picks it); a host with none left sends it back to the host it came
    from, which tries its next one. ``first``, if the origin has a link to it, is the
    origin's first hop (the host that named the target). At most ``max_hops`` hops on
    the path and ``2 * max_hops`` steps in all. ``link_ids(addr)``: the ids of a host's
    links, for a faster lookahead (same result). Returns the path, why it failed, the
    steps (each one signaling message) and their summed one-way delay."""
    t = ids[dst]
    budget = 2 * max_hops
    stack = [src]
    visited = {src}
    visited_ids = {ids[src]} if link_ids is not None else None
    steps = 0
    delay = 0.0
    while True:
        cur = stack[-1]
        links = hosts[cur].links
        if dst in links:
            stack.append(dst)
            return stack, None, steps + 1, delay + rtt(cur, dst) / 2
        if steps >= budget:
            return stack, "hop_limit", steps, delay
        best = None
        if len(stack) <= max_hops - 1:
            if first is not None and steps == 0 and first in links:
                best = first
                if lookahead:  # a neighbour linked to the target itself goes first
                    best = next((q for q in links if dst in hosts[q].links), first)
            else:
                best = _closest(hosts, ids, links, t, visited, dst, lookahead, link_ids, visited_ids)
        if best is None:
            stack.pop()
            if not stack:
                return [src], "stuck", steps, delay
            steps += 1
            delay += rtt(cur, stack[-1]) / 2
            continue
        visited.add(best)
        if visited_ids is not None:
            visited_ids.add(ids[best])
        stack.append(best)
        steps += 1
        delay += rtt(cur, best) / 2


def flood(hosts: Hosts, rtt: Rtt, src: Hashable, dst: Hashable, ttl: int) -> tuple[int, bool, float, int]:
    """A flood from ``src`` with the TTL: (messages, reached dst, one-way latency to dst
    along the first copy's path, its hops). Each host forwards the first copy it gets to
    all its links but the sender's; the target does not forward."""
    seen: dict[Hashable, float] = {src: 0.0}
    frontier = [src]
    messages = 0
    hops = 0
    for depth in range(ttl):
        nxt = []
        for u in frontier:
            if u == dst:
                continue
            lu = seen[u]
            links = hosts[u].links
            messages += len(links) - (0 if depth == 0 else 1)
            for v in links:
                if v not in seen:
                    seen[v] = lu + rtt(u, v) / 2
                    nxt.append(v)
                    if v == dst:
                        hops = depth + 1
        frontier = nxt
        if not frontier:
            break
    return messages, dst in seen, seen.get(dst, 0.0), hops
