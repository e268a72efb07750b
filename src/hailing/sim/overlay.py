"""The data-channel overlay in the simulator: links, a connection cap, forwarded coupling.

Theory of operation
-------------------
Attached to a :class:`~hailing.sim.engine.Simulator` (``sim.links``), a
:class:`LinkOverlay` stands for the data-channel driver of every simulated host: a core
may only send to a peer it has an open **link** with. The cores themselves are unchanged
(they still address peers by their simulated host addresses; the real driver's
``LinkAddr`` handle is a prefix of the peer's node id, which changes nothing here).

- **Cap.** A host holds at most ``cap`` (p) links. It **pins** ``pins`` of them, one per
  level (common prefix length with its id): the closest peer it knows at each of its
  ``deep_pins`` deepest levels, and at levels spread over the shallower ones from an
  offset of its own (``pin_phase``: across hosts every level is pinned by many;
  :func:`~hailing.sim.overlay_route.pick_levels`), re-read every ``pin_interval``. A
  host never evicts a link it pins. To open a link beyond the cap a host evicts its
  least recently used other link (the link closes at both ends), keeping links the
  other end pins up to ``cap // 4`` and sparing a peer that would be left with one link
  or none (``spare_lonely``); a host whose links are all pinned refuses (``full``).
- **Coupling.** A datagram to a peer with no link starts a coupling and waits in its
  queue (``queue`` datagrams; more are dropped). The offer travels from the origin
  toward the target over open links, the answer comes back the same way, then the link
  opens after ``open_rtts`` round trips between the two ends (ICE). Forwarding is either

  * ``nexthop``: XOR routing over links, each hop to the linked peer closest to the
    target that the offer has not visited (it carries the list: loop suppression), or
    with ``lookahead`` the peer whose own links come closest (each host knows its
    peers' link lists: ``link_list_frames``); a host with none left sends it back and
    the host before tries its next one (``backtrack``), at most ``max_hops`` hops on
    the path and twice that many steps; an offer that runs out of steps (``hop_limit``)
    or of hosts (``stuck``) fails, its error travelling back along the path (a stuck
    origin is cut off from the rest: with ``rejoin`` it couples again at once through
    the bootstrap coupler); or
  * ``flood``: the naive way, every host forwards a message it has not seen yet to all
    its links but the one it came from, up to ``flood_ttl`` hops; the answer is flooded
    back the same way.

  Every hop of an offer, an answer or an error reply is one **signaling message**. The
  path is the links as they are when the coupling starts; the coupling fails if a host
  on it (or either end) left before it completes. A host with no link at all (a
  newcomer, or one whose links all went) couples through a **bootstrap** coupler (the
  signal server, a pasted text, a friend link), counted apart from forwarded couplings.
- **Flood samples.** With ``flood_samples`` in ``nexthop`` mode, that many couplings
  also measure, on the same links at the same moment, what a flood would have cost.
  Nothing of it touches the run: the trace hash is the same with or without samples.

Everything is deterministic: the only generator is seeded from the simulator's seed,
and a coupling's outcome is folded into the trace hash.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from ..dht import DhtProtocol, NodesFound
from ..dht.routing import NodeEntry
from .engine import SimNode, Simulator
from .overlay_report import OverlayStats, phase_report
from .overlay_route import flood, pick_levels, route_backtrack, route_greedy, xor_closest

FORWARDING = ("nexthop", "flood")
_OUTCOMES = {"ok": 0, "stuck": 1, "hop_limit": 2, "full": 3, "path_broken": 4,
             "target_left": 5, "target_dead": 6, "ttl": 7, "origin_left": 8}


@dataclass
class OverlayConfig:
    cap: int = 16
    #: Closest neighbours pinned, one per level (None: cap // 2).
    pins: int | None = None
    forwarding: str = "nexthop"
    max_hops: int = 16
    #: Next-hop: a host with no closer link forwards to its closest unvisited one.
    detour: bool = True
    #: Next-hop: a host with no unvisited link sends the message back, and the host
    #: before it tries its next link (within 2 * max_hops steps).
    backtrack: bool = True
    flood_ttl: int = 7
    #: ICE round trips between the two ends after the answer came back.
    open_rtts: float = 1.0
    #: Datagrams queued per coupling in progress.
    queue: int = 16
    pin_interval: float = 60.0
    #: The link manager looks up its own id (a find_node) to find its closest
    #: neighbours: after the join, then at doubling intervals.
    self_lookup: bool = True
    #: Where the pins come from: "table" (the routing table, the last self-lookup, the
    #: links and the pinned neighbours' pins) or "oracle" (the live population: the
    #: truly closest host at each level, a converged neighbour maintenance).
    pin_source: str = "table"
    #: Pins diversified per host: the ``deep_pins`` deepest levels, the rest spread over
    #: the shallower levels from an offset derived from the host's id (False: every
    #: host spreads its pins over the same levels, from the farthest to the deepest).
    pin_phase: bool = True
    #: Deepest levels always pinned with ``pin_phase`` (None: half the pins).
    deep_pins: int | None = None
    #: Next-hop: each host knows its linked peers' links (each host sends its link list
    #: on every link when it changes: ``link_list_frames``) and picks the peer linked to
    #: the target, else the one whose own links come closest to it.
    lookahead: bool = True
    #: With ``pin_phase``: the shallow pins go first to levels that none of the pins of
    #: the host's pinned neighbours reach (they tell them: the neighbour exchange).
    complement: bool = False
    #: Next-hop: the origin's first hop is the host whose reply named the target (it
    #: remembers the last ``introducer_memory`` targets named on each host's links).
    introducer: bool = False
    introducer_memory: int = 64
    #: A forwarded coupling that comes back ``stuck`` (every host the origin's links
    #: lead to was tried: it is cut off from the rest) is retried at once through the
    #: bootstrap coupler, as the link manager's next coupler would.
    rejoin: bool = True
    #: Eviction spares a link whose peer has at most 2 links (it would be left with
    #: one or none), unless every candidate is such a link.
    spare_lonely: bool = True
    #: ``nexthop`` mode: couplings that also measure a flood on the same links...
    flood_samples: int = 0
    #: ... one every this many couplings.
    flood_every: int = 1

    def pin_count(self) -> int:
        return self.cap // 2 if self.pins is None else self.pins

    def validate(self) -> None:
        if self.cap < 2:
            raise ValueError("the cap must be at least 2")
        if not 0 <= self.pin_count() < self.cap:
            raise ValueError("pins must be in [0, cap)")
        if self.forwarding not in FORWARDING:
            raise ValueError(f"forwarding must be one of {', '.join(FORWARDING)}")
        if self.pin_source not in ("table", "oracle"):
            raise ValueError("pin_source must be table or oracle")
        if self.max_hops < 1 or self.flood_ttl < 1 or self.queue < 1:
            raise ValueError("max_hops, flood_ttl and queue must be at least 1")
        if self.deep_pins is not None and not 0 <= self.deep_pins <= self.pin_count():
            raise ValueError("deep_pins must be in [0, pins]")
        if self.introducer_memory < 1:
            raise ValueError("introducer_memory must be at least 1")

    def deep_count(self) -> int:
        return self.pin_count() // 2 if self.deep_pins is None else self.deep_pins


class _Host:
    __slots__ = ("addr", "id_int", "introduced", "link_ids", "links", "nearest", "next_lookup", "pending",
                 "phase", "pins")

    def __init__(self, addr: Hashable, id_int: int) -> None:
        self.addr = addr
        self.id_int = id_int
        #: Peer address -> None, least recently used first.
        self.links: OrderedDict[Hashable, None] = OrderedDict()
        #: The linked peers' ids (what ``lookahead`` scans: the link list this host sends).
        self.link_ids: set[int] = set()
        self.pins: set[Hashable] = set()
        self.pending: dict[Hashable, _Coupling] = {}
        #: What the last self-lookup found (id as int, address), and when the next runs.
        self.nearest: list[tuple[int, Hashable]] = []
        self.next_lookup = 0.0
        #: Target -> the peer whose reply named it last (``introducer``), oldest first.
        self.introduced: OrderedDict[Hashable, Hashable] = OrderedDict()
        #: Where this host's shallow pins start (``pin_phase``): bits of its own id.
        self.phase = ((id_int >> 64) & 0xFFFFFFFF) / 2**32


class _Coupling:
    __slots__ = ("bootstrap", "fail", "hops", "messages", "path", "purpose", "queue", "start")

    def __init__(self, start: float, purpose: str) -> None:
        self.start = start
        self.purpose = purpose
        self.queue: list[bytes] = []
        self.path: list[Hashable] = []
        self.hops = 0
        self.messages = 0
        self.fail: str | None = None
        self.bootstrap = False


def _find_self(node_id: bytes, core: DhtProtocol, now: float) -> int:
    return core.find_node(node_id, now)


class LinkOverlay:
    """Links, the cap and coupling for every host of ``sim`` (see the module docstring)."""

    def __init__(self, sim: Simulator, config: OverlayConfig) -> None:
        config.validate()
        self.sim = sim
        self.cfg = config
        self.n_pins = config.pin_count()
        self.rng = random.Random(sim.seed * 7907 + 0x0E7)
        self.hosts: dict[Hashable, _Host] = {}
        self.ids: dict[Hashable, int] = {}  # every host ever: a dead target keeps its id
        self._by_bytes: dict[bytes, Hashable] = {}  # every host ever, by its id
        #: Live hosts' ids, sorted, and the host of each id (``pin_source="oracle"``).
        self._sorted: list[int] = []
        self._by_id: dict[int, Hashable] = {}
        self.stats = OverlayStats()
        self.phases: dict[str, OverlayStats] = {}
        self._flood_sampled = 0
        #: Called with (host, peer, pinned_here, pinned_there) at each eviction (tests).
        self.on_evict: Callable[[Hashable, Hashable, bool, bool], None] | None = None
        sim.links = self

    # -- the engine's hooks ------------------------------------------------------------------

    def node_added(self, node: SimNode) -> None:
        id_int = int.from_bytes(node.proto.node_id, "big")
        self.hosts[node.addr] = _Host(node.addr, id_int)
        self.ids[node.addr] = id_int
        self._by_bytes[node.proto.node_id] = node.addr
        if self.cfg.pin_source == "oracle":
            bisect.insort(self._sorted, id_int)
            self._by_id[id_int] = node.addr
        # The first pins right after the join (its lookup filled the table), the self-
        # lookups from a pin interval on.
        self.hosts[node.addr].next_lookup = self.sim.now + self.cfg.pin_interval
        self.sim.call_later(5.0 + 5.0 * self.rng.random(), self._maintain, node.addr)

    def node_left(self, node: SimNode) -> None:
        host = self.hosts.pop(node.addr, None)
        if host is None:
            return
        if self.cfg.pin_source == "oracle":
            del self._sorted[bisect.bisect_left(self._sorted, host.id_int)]
            del self._by_id[host.id_int]
        for peer in host.links:
            other = self.hosts.get(peer)
            if other is not None:
                self._unlink(other, host)
        self.stats.counts["links_lost_to_churn"] += len(host.links)

    def send(self, node: SimNode, data: bytes, dst: Hashable) -> None:
        src = node.addr
        host = self.hosts[src]
        links = host.links
        if dst in links:
            links.move_to_end(dst)
            self.hosts[dst].links.move_to_end(src)
            self._transmit(src, data, dst)
            return
        c = host.pending.get(dst)
        if c is None:
            c = self._couple(host, dst, "dht")
        if len(c.queue) < self.cfg.queue:
            c.queue.append(data)
        else:
            self.stats.counts["queue_dropped"] += 1

    def _transmit(self, src: Hashable, data: bytes, dst: Hashable) -> None:
        """A datagram on an open link. With ``introducer``, the receiving host's driver
        reads the ``nodes`` of a KRPC response (compact node info: 20-byte id, then the
        address) and remembers, for each node named, the peer that named it."""
        if self.cfg.introducer and b"1:y1:r" in data:
            i = data.find(b"5:nodes")
            if i >= 0:
                self._note_named(src, data, i + 7, dst)
        self.sim.transmit(src, data, dst)

    def _note_named(self, src: Hashable, data: bytes, i: int, dst: Hashable) -> None:
        j = data.find(b":", i, i + 6)
        if j < 0 or not data[i:j].isdigit():
            return
        n = int(data[i:j])
        blob = data[j + 1:j + 1 + n]
        host = self.hosts.get(dst)
        if host is None or len(blob) != n or n % 26:
            return
        named, by_id, cap = host.introduced, self._by_bytes, self.cfg.introducer_memory
        for k in range(0, n, 26):
            peer = by_id.get(blob[k:k + 20])
            if peer is not None and peer != dst:
                named[peer] = src
                named.move_to_end(peer)
        while len(named) > cap:
            named.popitem(last=False)

    def _link(self, a: _Host, b: _Host) -> None:
        """Open the link between ``a`` and ``b`` (both ends)."""
        a.links[b.addr] = None
        a.link_ids.add(b.id_int)
        b.links[a.addr] = None
        b.link_ids.add(a.id_int)
        self._announce(a)
        self._announce(b)

    def _unlink(self, host: _Host, peer: _Host) -> None:
        """Close ``host``'s end of its link to ``peer``."""
        del host.links[peer.addr]
        host.link_ids.discard(peer.id_int)
        self._announce(host)

    def _announce(self, host: _Host) -> None:
        """``lookahead``: ``host``'s link set changed; it sends its link list (the peers'
        ids) on each of its links, one control frame each."""
        if self.cfg.lookahead:
            n = len(host.links)
            counts = self.stats.counts
            counts["link_list_frames"] += n
            counts["link_list_entries"] += n * n

    # -- pins --------------------------------------------------------------------------------

    def _maintain(self, addr: Hashable) -> None:
        host = self.hosts.get(addr)
        if host is None:
            return
        sim, cfg = self.sim, self.cfg
        node = sim.nodes[addr]
        if cfg.self_lookup and sim.now >= host.next_lookup:
            # The link manager asks the overlay for its closest neighbours (and so lets
            # them learn of this host), as the join did; again at growing intervals.
            gap = max(cfg.pin_interval, 2 * (sim.now - node.joined_at))
            host.next_lookup = sim.now + gap
            sim.command(node, functools.partial(_find_self, node.proto.node_id),
                        functools.partial(self._found_nearest, addr))
        self._repin(host, node.proto.table)
        sim.call_later(cfg.pin_interval, self._maintain, addr)

    def _found_nearest(self, addr: Hashable, ev: Any) -> None:
        host = self.hosts.get(addr)
        if host is not None and isinstance(ev, NodesFound):
            host.nearest = [(int.from_bytes(n.id, "big"), n.addr) for n in ev.nodes]
            self._repin(host, self.sim.nodes[addr].proto.table)

    def _repin(self, host: _Host, table: Iterable[NodeEntry]) -> None:
        """Pin the closest neighbour at each level (common prefix length with our id)
        among the routing table, the last self-lookup and the open links, deepest levels
        first; a peer we already have a link with at a level takes its place (so one
        link serves as the pin of both its ends). Couple the pins that have no link."""
        own = host.id_int
        links = host.links
        ids = self.ids
        best: dict[int, tuple[int, Hashable]] = {}
        if self.cfg.pin_source == "oracle":
            self._repin_oracle(host)
            return
        candidates: list[tuple[int, Hashable]] = [(e.id_int, e.addr) for e in table]
        candidates += host.nearest
        candidates += [(ids[q], q) for q in links]
        # Neighbour exchange: each pinned neighbour on an open link tells us its pins
        # (one message on the link; Chord's stabilization, in XOR space).
        hosts = self.hosts
        told = 0
        covered: set[int] = set()  # levels our pinned neighbours' pins reach
        for q in host.pins:
            if q in links:
                told += 1
                theirs = [(ids[r], r) for r in hosts[q].pins if r in hosts and r != host.addr]
                candidates += theirs
                covered.update(160 - (i ^ own).bit_length() for i, _ in theirs)
        self.stats.counts["neighbour_exchange"] += told
        for id_int, peer in candidates:
            d = id_int ^ own
            if not d:
                continue
            level = 160 - d.bit_length()
            rank = d if peer not in links else -1
            cur = best.get(level)
            if cur is None or rank < cur[0]:
                best[level] = (rank, peer)
        wanted = [best[level][1] for level in self._levels(host, sorted(best),
                                                            covered if self.cfg.complement else None)]
        host.pins = set(wanted)
        for peer in wanted:
            if peer not in links and peer not in host.pending:
                self._couple(host, peer, "pin")

    def _repin_oracle(self, host: _Host) -> None:
        """Pins from the live population itself: at each level the truly closest host
        (what a converged neighbour maintenance would find), deepest levels first."""
        ids, own, links = self._sorted, host.id_int, host.links
        bisect_left = bisect.bisect_left
        wanted: list[Hashable] = []
        for level in range(160):
            shift = 159 - level
            sibling = (own >> shift) ^ 1  # our first level+1 bits, the last one flipped
            lo = bisect_left(ids, sibling << shift)
            hi = bisect_left(ids, (sibling + 1) << shift, lo)
            if lo < hi:
                wanted.append(self._by_id[xor_closest(ids, own, lo, hi, sibling, level + 1)])
            ours = own >> shift
            if bisect_left(ids, (ours + 1) << shift) - bisect_left(ids, ours << shift) <= 1:
                break  # nobody else shares more than `level` bits with us
        wanted = [wanted[i] for i in self._levels(host, list(range(len(wanted))))]
        host.pins = set(wanted)
        for peer in wanted:
            if peer not in links and peer not in host.pending:
                self._couple(host, peer, "pin")

    def _link_ids(self, addr: Hashable) -> set[int]:
        return self.hosts[addr].link_ids

    def _levels(self, host: _Host, levels: list[int], covered: set[int] | None = None) -> list[int]:
        cfg = self.cfg
        return pick_levels(levels, self.n_pins, cfg.deep_count(), host.phase if cfg.pin_phase else None,
                           covered)

    # -- coupling ----------------------------------------------------------------------------

    def _couple(self, host: _Host, dst: Hashable, purpose: str, bootstrap: bool = False) -> _Coupling:
        sim, cfg, st = self.sim, self.cfg, self.stats
        c = _Coupling(sim.now, purpose)
        host.pending[dst] = c
        rtt = sim.network.rtt
        alive = dst in self.hosts
        if bootstrap or not host.links:
            # Nothing to forward through: the bootstrap coupler (signal server, text).
            c.bootstrap = True
            st.counts["bootstrap_couplings"] += 1
            if not alive:
                c.fail = "target_dead"
            delay = rtt(host.addr, dst) * (1.0 + cfg.open_rtts)
            sim.call_later(delay, self._complete, host.addr, dst, c)
            return c
        st.counts["couplings"] += 1
        st.counts[f"couplings_{purpose}"] += 1
        if cfg.forwarding == "nexthop" and cfg.backtrack:
            first = host.introduced.get(dst) if cfg.introducer else None
            path, fail, steps, explore = route_backtrack(
                self.hosts, self.ids, rtt, host.addr, dst, cfg.max_hops, lookahead=cfg.lookahead, first=first,
                link_ids=self._link_ids)
            if first is not None and len(path) > 1 and path[1] == first:
                st.counts["first_hop_introducer"] += 1
            if fail == "stuck" and alive and not self.hosts[dst].links:
                st.counts["stuck_target_unlinked"] += 1  # nothing could reach it
            c.path, c.fail, c.hops = path, fail, len(path) - 1
            # Every step out or back, then the answer (or error) back along the path.
            c.messages = steps + c.hops
            one_way = (explore + sum(rtt(a, b) for a, b in itertools.pairwise(path)) / 2) / 2
            if alive and self._flood_sampled < cfg.flood_samples and (
                    st.counts["couplings"] % cfg.flood_every == 0):
                self._flood_sample(host.addr, dst)
        elif cfg.forwarding == "nexthop":
            path, fail = route_greedy(self.hosts, self.ids, host.addr, dst, cfg.max_hops, cfg.detour)
            c.path, c.fail, c.hops = path, fail, len(path) - 1
            c.messages = 2 * c.hops  # offer out, answer (or error) back along the path
            one_way = sum(rtt(a, b) for a, b in itertools.pairwise(path)) / 2
            if alive and self._flood_sampled < cfg.flood_samples and (
                    st.counts["couplings"] % cfg.flood_every == 0):
                self._flood_sample(host.addr, dst)
        else:
            msgs, reached, one_way, hops = flood(self.hosts, rtt, host.addr, dst, cfg.flood_ttl)
            c.hops = hops
            c.messages = msgs
            if reached:
                back_msgs, _, back, _ = flood(self.hosts, rtt, dst, host.addr, cfg.flood_ttl)
                c.messages += back_msgs
                one_way = (one_way + back) / 2
            else:
                c.fail = "ttl"
        if not alive:
            c.fail = "target_dead"
        delay = 2 * one_way + (cfg.open_rtts * rtt(host.addr, dst) if c.fail is None else 0.0)
        sim.call_later(delay, self._complete, host.addr, dst, c)
        return c

    def _flood_sample(self, src: Hashable, dst: Hashable) -> None:
        self._flood_sampled += 1
        st = self.stats
        rtt, ttl = self.sim.network.rtt, self.cfg.flood_ttl
        msgs, reached, out, _ = flood(self.hosts, rtt, src, dst, ttl)
        if reached:
            back_msgs, _, back, _ = flood(self.hosts, rtt, dst, src, ttl)
            msgs += back_msgs
            st.flood_reached += 1
            st.flood_times.append(out + back + self.cfg.open_rtts * self.sim.network.rtt(src, dst))
        st.flood_messages.append(msgs)

    def _complete(self, origin: Hashable, target: Hashable, c: _Coupling) -> None:
        st = self.stats
        host = self.hosts.get(origin)
        if host is None:
            self._outcome(origin, target, c, "origin_left")
            return
        if host.pending.get(target) is c:
            del host.pending[target]
        fail = c.fail
        other = self.hosts.get(target)
        if fail is None:
            if other is None:
                fail = "target_left"
            elif any(h not in self.hosts for h in c.path):
                fail = "path_broken"
        if fail is None and other is not None and target not in host.links:
            a, b = self._victim(host), self._victim(other)
            if a is False or b is False:
                fail = "full"
            else:
                for h, v in ((host, a), (other, b)):
                    if v is not True:
                        self._evict(h, v)
                self._link(host, other)
                st.counts["links_opened_bootstrap" if c.bootstrap else "links_opened"] += 1
        self._outcome(origin, target, c, fail or "ok")
        if fail == "stuck" and self.cfg.rejoin and other is not None and target not in host.pending:
            st.counts["rejoin_after_stuck"] += 1
            self._couple(host, target, c.purpose, bootstrap=True).queue = c.queue
            return
        if fail is not None:
            st.counts["dropped_on_failure"] += len(c.queue)
            return
        for data in c.queue:
            self._transmit(origin, data, target)

    def _outcome(self, origin: Hashable, target: Hashable, c: _Coupling, outcome: str) -> None:
        sim, st = self.sim, self.stats
        sim.fold(struct.pack("!IIB", sim.host_index(origin), sim.host_index(target),
                             _OUTCOMES[outcome]))
        if c.bootstrap:
            st.counts[f"bootstrap_{outcome}"] += 1
            return
        st.counts["signaling_messages"] += c.messages
        if outcome == "target_dead":
            st.counts["target_dead"] += 1
            st.counts["signaling_to_dead"] += c.messages
            return
        st.messages.append(c.messages)
        if outcome == "ok":
            st.counts["succeeded"] += 1
            st.hops.append(c.hops)
            st.times.append(sim.now - c.start)
        else:
            st.failures[outcome] += 1

    def _victim(self, host: _Host) -> Hashable | bool:
        """True if ``host`` has room, else the link to evict: the least recently used
        one this host does not pin and the other end does not pin either (links the
        other end pins are kept only up to ``cap // 4`` of them: the rest of the cap is
        for traffic); False if every link is pinned (never: pins < cap)."""
        links = host.links
        if len(links) < self.cfg.cap:
            return True
        hosts, pins, addr = self.hosts, host.pins, host.addr
        remote = [peer for peer in links if peer not in pins and addr in hosts[peer].pins]
        honour = set(remote[len(remote) - self.cfg.cap // 4:]) if len(remote) > self.cfg.cap // 4 else set(remote)
        if self.cfg.spare_lonely:
            for peer in links:
                if peer not in pins and peer not in honour and len(hosts[peer].links) > 2:
                    return peer
        for peer in links:
            if peer not in pins and peer not in honour:
                return peer
        return False

    def _evict(self, host: _Host, peer: Hashable) -> None:
        other = self.hosts[peer]
        if self.on_evict is not None:
            self.on_evict(host.addr, peer, peer in host.pins, host.addr in other.pins)
        self._unlink(host, other)
        self._unlink(other, host)
        self.stats.counts["evicted"] += 1

    # -- results -----------------------------------------------------------------------------

    def new_phase(self, name: str) -> None:
        """Close the current phase under ``name``; what follows is counted afresh."""
        self.phases[name] = self.stats
        self.stats = OverlayStats()
        self._flood_sampled = 0

    def check(self) -> None:
        """Raise AssertionError unless links are symmetric and within the cap."""
        for addr, host in self.hosts.items():
            assert len(host.links) <= self.cfg.cap, (addr, len(host.links))
            for peer in host.links:
                assert addr in self.hosts[peer].links, (addr, peer)

    def report(self) -> dict[str, Any]:
        degree = [len(h.links) for h in self.hosts.values()]
        pinned = [sum(1 for p in h.links if p in h.pins) for h in self.hosts.values()]
        phases = dict(self.phases)
        phases["current"] = self.stats
        return {
            "config": {**self.cfg.__dict__, "pins": self.n_pins},
            "links_per_node": {"mean": sum(degree) / max(1, len(degree)), "max": max(degree, default=0),
                               "pinned_mean": sum(pinned) / max(1, len(pinned))},
            "phases": {name: phase_report(s) for name, s in phases.items()},
        }
