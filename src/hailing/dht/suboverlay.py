"""The hailing sub-overlay: hailing nodes find each other inside a public Mainline DHT.

On the public DHT hailing nodes are a small minority among libtorrent (and other)
nodes, which do not know the inbox methods. An inbox lookup that walked the whole DHT
would end on the closest nodes to its key, almost all of them foreign, and find nobody
to store on. So a hailing node keeps a second routing table, the **sub-table**, of the
nodes whose answers carry hailing's version prefix (``v`` starting with ``HL``), and
runs its inbox lookups (posts and listens) inside it (docs/protocol.md, "The hailing
sub-overlay on the public DHT").

Theory of operation
-------------------
:class:`SubOverlay` is a component :class:`~hailing.dht.protocol.DhtProtocol` owns
(``self.sub``). It does no IO and reads no clock, as the rest of the core.

- **The sub-table** (:attr:`SubOverlay.table`, the same
  :class:`~hailing.dht.routing.RoutingTable` class with k=8 buckets and the same
  admission rules) is fed by every answer the node receives (:meth:`SubOverlay.saw`,
  called by the protocol next to the main table's update) whose ``v`` says hailing.
  An entry is dropped at its first request that times out (:data:`SUB_MAX_FAIL`; the
  main table waits for a second one): every post and listen of ours starts from the
  sub-table, and a vanished hailing node left in it would cost each of them a query
  timeout (the BEP44 fallback's callers wait for that before their offer goes out).
  A node dropped by a lost datagram comes back with its next answer to anything.
- **Finding hailing nodes**: hailing nodes ``announce_peer`` themselves (BEP5, with
  ``implied_port``: the DHT port as the announcer's NAT maps it) under
  :data:`HAILING_INFOHASH`, any Mainline node storing the announce; a **round**
  (:meth:`SubOverlay._begin`) is that announce (a read-only node, BEP43, only looks:
  ``get_peers``), whose lookup also collects the peers announced there; each one not
  yet in the sub-table is pinged (its answer feeds the sub-table), and once the pings
  are settled a ``subjoin`` lookup of our own id runs inside the sub-overlay, so that
  the sub-table knows our neighbourhood among hailing nodes as a Kademlia table must.
- **Scheduling** lives here, in the core's maintenance tick (:meth:`SubOverlay.tick`,
  with ``now``), not in the driver: a round starts when a join (a ``bootstrap``
  lookup) ends and then every :data:`ANNOUNCE_INTERVAL` (15 minutes: stored peers
  expire after 30), sooner while the sub-table has fewer than k nodes (from a minute,
  doubling). Only a node that has met a foreign node (an answer without hailing's
  ``v``) runs rounds: in a network of hailing nodes only the whole DHT is the overlay
  already, and such testnets stay exactly as they were. A driver that needs hailing
  nodes before it goes on (:meth:`~hailing.node.DhtNode.bootstrap` does when the join
  left fewer than k in the sub-table) asks with :meth:`SubOverlay.discover` (the
  protocol's :meth:`~hailing.dht.protocol.DhtProtocol.find_hailing_nodes`), which
  joins the round under way or starts one and reports with ``NodesFound``.
- **The marker**: the lookups that stay inside the sub-overlay (``post``, ``listen``,
  ``subjoin``) carry the argument :data:`SUB_MARKER` (``hailing_sub=1``) in their
  ``get``/``find_node`` queries. A hailing node answers such a query with the closest
  nodes of its *sub-table* (the responder; the main table only while the sub-table is
  empty); a libtorrent node ignores the unknown argument (BEP5) and answers from its
  own table. The lookup engine starts these lookups from the sub-table (from the main
  table while the sub-table is empty) and takes new candidates
  only from answers carrying hailing's ``v``, so it queries only nodes named by
  hailing nodes, and stores only on nodes that answered as hailing nodes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from functools import partial
from typing import Any

from ..krpc import AddressCodec, Error, Response
from .config import HAILING_VERSION, DhtConfig
from .events import Event, LookupStats, NodesFound
from .lookup import Lookup
from .routing import NodeEntry, RoutingTable
from .transactions import Pending, SendQuery

#: The well-known info-hash hailing nodes announce themselves under (BEP5
#: ``announce_peer``) and look each other up with (``get_peers``): SHA-1 of
#: ``b"hailing nodes v1"``. Any Mainline node stores the announces; no hailing node
#: needs to be near it.
HAILING_INFOHASH = hashlib.sha1(b"hailing nodes v1").digest()

#: The query argument asking a hailing node for its closest *hailing* nodes
#: (``hailing_sub=1`` in ``find_node``/``get``/``get_peers``). BEP5 says unknown
#: arguments are ignored, so other nodes answer as usual.
SUB_MARKER = b"hailing_sub"

#: A round (announce, ping the announced peers, subjoin) every 15 minutes: libtorrent
#: forgets an announced peer after 30 (BEP5 leaves it open; libtorrent's peer timeout).
ANNOUNCE_INTERVAL = 15 * 60.0
#: While the sub-table has fewer than k nodes, rounds come sooner: from a minute, doubling.
RETRY_MIN = 60.0
#: Announced peers pinged in one round (get_peers answers carry up to 50-100 each).
MAX_PINGS = 32

#: The lookups that run inside the sub-overlay (marker, sub-table seeds, hailing-only
#: candidates). ``subjoin`` is the sub-overlay's own join: a lookup of our id.
SUB_KINDS = frozenset(("post", "listen", "subjoin"))

#: Requests in a row a sub-table entry may leave unanswered (see the module docstring).
SUB_MAX_FAIL = 1

#: How the sub-overlay starts a lookup through its owner: (kind, target, now, store=, qid=).
StartLookup = Callable[..., int]


def is_hailing(version: bytes | None) -> bool:
    """Does a KRPC ``v`` field say hailing (``HL`` followed by the version)?"""
    return version is not None and version[:2] == HAILING_VERSION[:2]


class _Round:
    __slots__ = ("pings", "started", "state")

    def __init__(self, now: float) -> None:
        self.started = now
        self.state = "peers"  # -> "pings" -> "join"
        self.pings = 0


class SubOverlay:
    """The sub-table and the rounds that fill it. See the module docstring."""

    def __init__(
        self,
        node_id: bytes,
        config: DhtConfig,
        codec: AddressCodec,
        now: float,
        *,
        start: StartLookup,
        send: SendQuery,
        emit: Callable[[Event], None],
        main_table: Callable[[], RoutingTable],
        stats: Counter[str],
    ) -> None:
        self.config = config
        self._codec = codec
        self.enabled = config.extensions and config.suboverlay
        self.table = self._new_table(node_id)
        self._start = start
        self._send = send
        self._emit = emit
        self._main = main_table
        #: The node's counters (``sub_rounds``, ``sub_pings``, ``sub_peers_found``).
        self.stats = stats
        #: Answers without hailing's ``v`` seen so far: rounds run only once there is one.
        self.foreign = 0
        self._round: _Round | None = None
        self._waiters: list[int] = []
        self._next = now + RETRY_MIN
        self._backoff = RETRY_MIN

    def _new_table(self, node_id: bytes) -> RoutingTable:
        cfg = dataclasses.replace(self.config, max_fail_count=SUB_MAX_FAIL)
        return RoutingTable.configured(node_id, cfg, self._codec, Counter())

    def rebuild(self, node_id: bytes) -> RoutingTable:
        """Our id changed (BEP42): the sub-table is rebuilt around it."""
        old, self.table = self.table, self._new_table(node_id)
        for e in old:
            self.table.add(e.id, e.addr, e.last_seen, e.rtt)
        return self.table

    @property
    def wanted(self) -> bool:
        """Do we need the sub-overlay: enabled, and some foreign node seen?"""
        return self.enabled and self.foreign > 0

    # -- what the protocol calls -------------------------------------------------------

    def saw(self, node_id: bytes, addr: Hashable, version: bytes | None, now: float,
            rtt: float | None, admitted: bool = True) -> NodeEntry | None:
        """An answer from ``node_id``: a hailing node that passed the main table's
        admission checks (``admitted``: BEP42) enters the sub-table; a foreign one is
        counted. Returns a stale entry to ping, as :meth:`RoutingTable.add` does."""
        if not is_hailing(version):
            self.foreign += 1
            return None
        return self.table.add(node_id, addr, now, rtt) if admitted else None

    def tick(self, now: float) -> None:
        """The maintenance tick: start the next round when it is due."""
        if self._round is None and self.wanted and now >= self._next and len(self._main()):
            self._begin(now)

    def joined(self, now: float) -> None:
        """A join (bootstrap lookup) ended: a round now unless the sub-table is full enough."""
        if self._round is None and self.wanted and len(self.table) < self.config.k:
            self._begin(now)

    def discover(self, qid: int, now: float) -> None:
        """Report (NodesFound under ``qid``) once a round has run: the one under way, or
        a new one. Reports at once when the sub-overlay is not in use."""
        if not self.wanted:
            self._emit(NodesFound(qid, HAILING_INFOHASH, self._nodes()))
            return
        self._waiters.append(qid)
        if self._round is None:
            self._begin(now)

    def lookup_done(self, lk: Lookup, now: float) -> None:
        """Every lookup's end (the engine's hook): the announce/get_peers of a round
        brings the announced peers; the subjoin ends the round."""
        rnd = self._round
        if lk.target == HAILING_INFOHASH and lk.kind in ("get_peers", "announce"):
            peers: dict[Hashable, None] = {}
            for c in lk.cands:
                if c.extra and type(c.extra) is list:
                    peers.update(dict.fromkeys(c.extra))
            self._ping_peers(list(peers), now)
        elif lk.kind == "subjoin" and rnd is not None and rnd.state == "join":
            self._finish(now)

    # -- a round -----------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        self._round = _Round(now)
        self.stats["sub_rounds"] += 1
        if self.config.read_only:  # BEP43: a read-only node is nobody's peer; it only looks
            self._start("get_peers", HAILING_INFOHASH, now, qid=-1)
        else:
            args: dict[bytes, Any] = {b"info_hash": HAILING_INFOHASH, b"implied_port": 1,
                                      b"port": 1}
            self._start("announce", HAILING_INFOHASH, now, qid=-1,
                        store=(b"announce_peer", args))

    def _ping_peers(self, peers: Iterable[Hashable], now: float) -> None:
        rnd = self._round
        known = {e.addr for e in self.table}
        fresh = [a for a in peers if a not in known][:MAX_PINGS]
        self.stats["sub_peers_found"] += len(fresh)
        if rnd is None or rnd.state != "peers":
            # Peers from someone else's get_peers of the info-hash: worth a ping too.
            for a in fresh:
                self._ping(None, a, now)
            return
        rnd.state = "pings"
        rnd.pings = len(fresh)
        for a in fresh:
            self._ping(rnd, a, now)
        if not fresh:
            self._join(now)

    def _ping(self, rnd: _Round | None, addr: Hashable, now: float) -> None:
        self.stats["sub_pings"] += 1
        self._send(addr, b"ping", {}, now, on_reply=partial(self._pinged, rnd))

    def _pinged(self, rnd: _Round | None, reply: Response | Error | None, p: Pending,
                now: float) -> None:
        # A method (through a partial), not a closure: a deep copy of the core must call
        # back into the copy. The answer itself fed the sub-table (SubOverlay.saw).
        if rnd is None or rnd is not self._round or rnd.state != "pings":
            return
        rnd.pings -= 1
        if rnd.pings <= 0:
            self._join(now)

    def _join(self, now: float) -> None:
        rnd = self._round
        assert rnd is not None
        if not len(self.table):
            self._finish(now)
            return
        rnd.state = "join"
        self._start("subjoin", self.table.own_id, now, qid=-1)

    def _finish(self, now: float) -> None:
        rnd, self._round = self._round, None
        if len(self.table) >= self.config.k:
            self._backoff = RETRY_MIN
            self._next = now + ANNOUNCE_INTERVAL
        else:
            self._next = now + self._backoff
            self._backoff = min(self._backoff * 2, ANNOUNCE_INTERVAL)
        nodes = self._nodes()
        stats = LookupStats(duration=0.0 if rnd is None else max(0.0, now - rnd.started))
        waiters, self._waiters = self._waiters, []
        for qid in waiters:
            self._emit(NodesFound(qid, HAILING_INFOHASH, nodes, stats))

    def _nodes(self) -> tuple[Any, ...]:
        return tuple(e.info() for e in self.table.closest(self.table.own_id, 32))
