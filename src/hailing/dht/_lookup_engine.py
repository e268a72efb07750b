"""The lookup engine: a component :class:`~hailing.dht.protocol.DhtProtocol` owns that
starts, advances and completes iterative lookups, and runs the store phase of puts,
announces, inbox posts and listens.

Theory of operation
-------------------
A command starts a :class:`~hailing.dht.lookup.Lookup` (:meth:`LookupEngine.start`)
seeded with the routing table's closest nodes (and bootstrap addresses). The engine sends
the requests the lookup wants through its owner, which tracks them as transactions and
reports each outcome back: :meth:`~LookupEngine.on_answer` (an answer, an error or the
hard timeout) and :meth:`~LookupEngine.on_stall` (the soft timeout). After each, the
engine sends the next requests; once the lookup is done it first tries to go on
(:meth:`~LookupEngine._refill` from farther table nodes, :meth:`~LookupEngine._widen` for
a get whose closest set did not answer), then completes it: an event for commands, the
store phase for puts, announces, posts and listens. Stores the network accepted are
repeated every republish interval (:meth:`~LookupEngine.republish_due`).

What the engine needs of its owner is passed in explicitly, nothing more: the node id,
the configuration, the routing table (read, and filled by refreshes), the stats counter,
the address codec, the random generator, and four callables: ``send`` a request,
``emit`` an event, ``acceptable`` (may this id at this address enter the table, BEP42)
and ``granted`` (a storing node accepted a listen: who, its token and its answer, which
carries the values it already held). Time comes as ``now`` with every call, as
everywhere in the core.

The lookups of :data:`~hailing.dht.suboverlay.SUB_KINDS` (inbox posts and listens, and
the sub-overlay's own join) run inside the hailing sub-overlay when it is on
(``DhtConfig.suboverlay``; see :mod:`hailing.dht.suboverlay`): they start from the
sub-table (``sub_table``), carry the marker argument, and take candidates only from
answers that carry hailing's ``v``. The owner hears of every lookup's end through
``done`` (the sub-overlay collects the peers of its announces there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from functools import partial
from typing import Any

from .. import bencode
from ..errors import GENERIC_ERROR, HailingError, KrpcError, NotFoundError, QueryTimeout
from ..krpc import AddressCodec, Error, Response, decode_nodes
from . import bep44
from .config import DhtConfig
from .events import (
    CommandFailed,
    Event,
    ItemFound,
    Listening,
    LookupStats,
    NodesFound,
    PeersFound,
    StoreDone,
)
from .ids import NodeInfo, id_to_int
from .lookup import ANSWERED, FAILED, FRESH, STALLED, Candidate, Lookup
from .responder import MAX_WIDE_NODES
from .routing import NodeEntry, RoutingTable, SourceKeys
from .suboverlay import SUB_KINDS, SUB_MARKER, is_hailing
from .transactions import Pending, Rng, SendQuery

#: Told that a storing node accepted a listen: (key, addr, node id, token, answer, now).
Granted = Callable[[bytes, Hashable, "bytes | None", bytes, Response, float], None]

#: Lookups that run on disjoint paths (DhtConfig.lookup_paths): those for a value and
#: those that choose where a value is stored. Node lookups (joins, refreshes) and the
#: inbox methods (latency first; their values are sealed and pushed) take one path.
_MULTIPATH = frozenset(("get", "get_mutable", "get_peers", "put", "announce"))

#: How many times a starved lookup takes further nodes from the routing table.
MAX_REFILLS = 3

#: How long the storing nodes (and tokens) of an inbox key are reused for posts; tokens
#: stay valid 5 to 10 minutes (BEP5), nodes may leave: a minute is a safe middle.
INBOX_NODES_TTL = 60.0


class _Store:
    """The second phase of put/announce/post/listen: requests to the closest nodes with
    their tokens. ``outstanding`` counts requests still awaited, ``stalled`` those past
    their soft timeout (no longer awaited, but a late answer still counts)."""

    __slots__ = ("errors", "lookup", "outstanding", "reported", "stalled", "stored")

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.outstanding = 0
        self.stalled = 0
        self.stored = 0
        self.reported = False
        self.errors: list[tuple[int, str]] = []


class LookupEngine:
    """Lookups and store phases of one DhtProtocol (see the module docstring)."""

    def __init__(
        self,
        node_id: bytes,
        config: DhtConfig,
        table: RoutingTable,
        stats: Counter[str],
        codec: AddressCodec,
        rng: Rng,
        *,
        send: SendQuery,
        emit: Callable[[Event], None],
        acceptable: Callable[[bytes, Hashable], bool],
        granted: Granted,
        sub_table: RoutingTable | None = None,
        done: Callable[[Lookup, float], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.table = table
        self.stats = stats
        self.codec = codec
        self._rng = rng
        self._send = send
        self._emit = emit
        self._acceptable = acceptable
        self._granted = granted
        #: The sub-overlay's table of hailing nodes (the owner replaces it on an id change).
        self.sub_table = sub_table
        self._done = done
        #: Lookups that run inside the sub-overlay (none when it is off: as before it).
        on = config.suboverlay and config.extensions
        self._sub_kinds: frozenset[str] = SUB_KINDS if on else frozenset()
        self._lockstep = config.lookup_strategy == "lockstep"
        self._keys = SourceKeys(codec, config.exempt_loopback)
        #: Our own puts/announces, repeated every republish_interval: key -> (due, action).
        self.republish: dict[bytes, tuple[float, tuple[str, bytes, Any]]] = {}
        #: Recent storing nodes of inbox keys: key -> (expiry, [(addr, id, token)]).
        self.inbox_nodes: dict[bytes, tuple[float, list[tuple[Hashable, bytes, bytes]]]] = {}

    # == what the owner calls ==========================================================

    def start(
        self,
        kind: str,
        target: bytes,
        now: float,
        *,
        qid: int,
        seeds: Iterable[Hashable] = (),
        store: tuple[bytes, dict[bytes, Any]] | None = None,
        salt: bytes = b"",
        republish: bytes | None = None,
    ) -> int:
        """Start a lookup; ``qid`` -1 marks internal ones (refresh, republish): no event.

        ``republish`` names a store (put/announce) to repeat every republish interval
        once the network has accepted it."""
        cfg = self.config
        # Table refreshes are background work: latency does not matter there, messages do.
        alpha = min(cfg.alpha, 3) if kind == "refresh" else cfg.alpha
        # A put's closest set is the put_copies nodes it stores on (2k by default).
        k = max(cfg.put_copies, cfg.k) if kind == "put" else cfg.k
        lk = Lookup(qid, kind, target, self.node_id, k, alpha, cfg.max_lookup_candidates, now,
                    paths=cfg.lookup_paths if kind in _MULTIPATH and not self._lockstep else 1,
                    keys=self._keys, max_per_net=cfg.lookup_max_per_net)
        lk.store = store
        lk.salt = salt
        lk.lockstep = self._lockstep
        lk.republish = republish
        for addr in seeds:
            lk.add_seed(addr)
        for e in self._seed_nodes(kind, target, cfg.k * 2):
            lk.add(e.id, e.addr, 0)
        self._advance(lk, now)
        return lk.qid

    def _seed_nodes(self, kind: str, target: bytes, count: int) -> list[NodeEntry]:
        """Where a lookup starts: the routing table's closest nodes; for a lookup inside
        the sub-overlay the sub-table's, or the main table's while the sub-table is
        empty (a node restarted from its saved table, before any answer: the hailing
        nodes among those it asks answer from their own sub-tables)."""
        sub = self.sub_table
        if kind not in self._sub_kinds or sub is None or not len(sub):
            return self.table.closest(target, count)
        return sub.closest(target, count)

    def post(self, qid: int, key: bytes, args: dict[bytes, Any], now: float) -> int:
        """Post to an inbox: straight to its storing nodes when a lookup of ``key`` found
        them in the last INBOX_NODES_TTL (one round trip instead of a lookup first; if
        they all fail, the post falls back to a lookup, see _store_done), else through a
        lookup."""
        cached = self.inbox_nodes.get(key)
        if cached is None or cached[0] <= now:
            return self.start("post", key, now, qid=qid, store=(b"hailing_post", args))
        cfg = self.config
        lk = Lookup(qid, "post", key, self.node_id, cfg.k, cfg.alpha, cfg.max_lookup_candidates, now)
        lk.store = (b"hailing_post", args)
        lk.cached = True
        for addr, node_id, token in cached[1]:
            c = Candidate(node_id, addr, id_to_int(node_id) ^ id_to_int(key), 0)
            c.state, c.token, c.extra = ANSWERED, token, True
            lk.cands.append(c)
        lk.cands.sort(key=lambda c: c.dist)
        lk.finished = True
        self._store_phase(lk, now)
        return lk.qid

    def on_answer(self, lk: Lookup, c: Candidate, reply: Response | Error | None, now: float) -> None:
        """The request to ``c`` ended: an answer, an error, or the hard timeout (None)."""
        if isinstance(reply, Response):
            lk.answered(c)
            self._lookup_reply(lk, c, reply, now)
        else:
            lk.failed(c)
        self._advance(lk, now)

    def on_stall(self, lk: Lookup, c: Candidate, now: float) -> None:
        """The request to ``c`` passed its soft timeout: stop counting on it."""
        lk.stalled(c)
        self._advance(lk, now)

    def republish_due(self, now: float) -> None:
        """Repeat the stores whose republish interval has passed."""
        interval = self.config.republish_interval
        for key, (due, (kind, target, store)) in list(self.republish.items()):
            if due <= now:
                self.republish[key] = (now + interval, (kind, target, store))
                self.start(kind, target, now, qid=-1, store=store, republish=key)

    def cancel_republish(self, target: bytes) -> None:
        self.republish.pop(b"p" + target, None)
        self.republish.pop(b"a" + target, None)

    def refresh_far_buckets(self, now: float) -> None:
        """Fill every bucket farther than the closest one that is not full (a join)."""
        table = self.table
        for i in range(len(table.buckets) - 1):
            if len(table.buckets[i].nodes) < table.k:
                table.touch_bucket(i, now)
                target = table.random_id_in_bucket(i, self._rng.getrandbits(160))
                self.start("refresh", target, now, qid=-1)

    # == the lookup itself =============================================================

    def _lookup_method(self, lk: Lookup) -> tuple[bytes, bytes]:
        if lk.kind in ("find_node", "bootstrap", "refresh", "subjoin"):
            return b"find_node", b"target"
        # put, post and listen first collect write tokens with BEP44 gets.
        if lk.kind in ("get_peers", "announce"):
            return b"get_peers", b"info_hash"
        return b"get", b"target"

    def _advance(self, lk: Lookup, now: float) -> None:
        if lk.finished:
            return
        method, key = self._lookup_method(lk)
        sub = lk.kind in self._sub_kinds
        for c in lk.next_requests():
            args: dict[bytes, Any] = {key: lk.target}
            if lk.widened:
                args[b"hailing_k"] = MAX_WIDE_NODES
            if sub:
                args[SUB_MARKER] = 1
            self._send(c.addr, method, args, now, node_id=c.id, lookup=lk, cand=c)
        if lk.is_done():
            if self._refill(lk) or self._widen(lk) or self._retry_silent(lk):
                self._advance(lk, now)
                return
            lk.finished = True
            self._complete(lk, now)

    def _refill(self, lk: Lookup) -> bool:
        """A lookup that ran out of candidates before k of them answered takes the next
        nodes of our routing table, up to MAX_REFILLS times. Under churn the entries
        nearest a target can all be dead (nobody evicts a dead entry until a live node
        wants its place): without this a get from such a table ends with no answer at
        all, while live nodes a little farther in the same table would lead to the value."""
        if (lk.stop or lk.lockstep or lk.kind == "refresh" or lk.refills >= MAX_REFILLS
                or len(lk.closest_answered()) >= lk.k):
            return False
        lk.refills += 1
        want = self.config.k * 2 * (lk.refills + 1)
        added = False
        for e in self._seed_nodes(lk.kind, lk.target, want):  # the nearer ones are known already
            added = lk.add(e.id, e.addr, 0) or added
        if added:
            self.stats["lookup_refills"] += 1
        return added

    def _widen(self, lk: Lookup) -> bool:
        """A get that ends empty-handed while nodes of its closest set did not answer
        searches once more, twice as deep. After mass failures dead entries fill the
        closest k of every routing table, so every answer names only dead nodes near
        the target: the nearest nodes that did answer are asked again, this time for up
        to MAX_WIDE_NODES nodes (``hailing_k``; other clients ignore the argument), which
        reaches past the dead entries to live nodes that hold the value. A hailing node
        answers such a query from its replacement caches too: the live nodes near the
        target are often known only there (their buckets are full of dead entries that
        nobody has asked yet). The nodes of the closest set that did not answer are
        asked once more (see _retry_silent)."""
        if lk.kind not in ("get", "get_mutable") or lk.result is not None or lk.widened:
            return False
        if not any(c.state == STALLED or c.state == FAILED for c in lk.cands[: lk.k]):
            return False
        lk.widened = True
        self._retry_silent(lk)
        lk.k *= 2
        for c in lk.closest_answered(self.config.alpha):
            c.state = FRESH
        return True

    def _retry_silent(self, lk: Lookup) -> bool:
        """A get about to end empty-handed asks once more (once per node) the nodes of
        its closest set (closer than its k-th answer) that failed or stalled: the request
        may have been lost, and under packet loss the one live node left holding the
        value looks dead after one lost packet. A stalled request's late answer is still
        used; whichever of the two requests ends first settles the candidate (see
        Lookup.answered and Lookup.failed)."""
        if lk.kind not in ("get", "get_mutable") or lk.result is not None or lk.lockstep:
            return False
        answered = 0
        retried = False
        for c in lk.cands:
            st = c.state
            if st == ANSWERED:
                answered += 1
                if answered >= lk.k:
                    break
            elif st in (FAILED, STALLED) and not c.retries:
                c.retries = 1
                c.state = FRESH
                retried = True
        if retried:
            self.stats["lookup_retries"] += 1
        return retried

    def _lookup_reply(self, lk: Lookup, c: Candidate, r: Response, now: float) -> None:
        vals = r.values
        if c.id is None:  # a bootstrap seed: now we know its id, and it counts as a result
            c.id = r.sender_id
            lk.add_answered_seed(c)
        if lk.kind in self._sub_kinds and not is_hailing(r.version):
            # Inside the sub-overlay: a foreign node's answer names foreign nodes (it
            # ignored the marker), and it cannot store an inbox value.
            c.extra = False
            return
        codec = self.codec
        depth = c.depth + 1
        path = c.path
        for nid, addr in decode_nodes(vals.get(b"nodes"), codec):
            lk.add(nid, addr, depth, path)
        if b"nodes6" in vals:
            for nid, addr in decode_nodes(vals.get(b"nodes6"), codec, ipv6=True):
                lk.add(nid, addr, depth, path)
        if lk.kind == "refresh":
            # A refresh only has to fill the target's bucket. Nodes the answer names go
            # straight into that bucket while it has room, as questionable entries (as
            # libtorrent's "heard about" nodes): the first failure removes them, and a
            # full bucket ends the refresh.
            table = self.table
            bucket = table.buckets[table.bucket_index(id_to_int(lk.target))]
            stale = now - self.config.questionable_after
            for nid, addr in decode_nodes(vals.get(b"nodes"), codec):
                if len(bucket.nodes) >= table.k:
                    break
                if table.get(nid) is None and self._acceptable(nid, addr):
                    table.add(nid, addr, stale)
                    bucket = table.buckets[table.bucket_index(id_to_int(lk.target))]
            if len(bucket.nodes) >= table.k:
                lk.stop = True
            return
        token = vals.get(b"token")
        if type(token) is bytes and len(token) <= 64:
            c.token = token
        kind = lk.kind
        if kind == "get_peers" or kind == "announce":
            values = vals.get(b"values")
            if type(values) is list:
                found = c.extra = []
                for v in values[:200]:
                    if type(v) is bytes:
                        a = codec.unpack(v)
                        if a is not None:
                            found.append(a)
        elif kind == "get" or kind == "get_mutable" or kind == "put":
            self._lookup_item(lk, c, vals, depth - 1)
        elif kind == "post" or kind == "listen":
            # Only hailing nodes know the inbox methods; others would answer 204.
            c.extra = is_hailing(r.version)

    def _lookup_item(self, lk: Lookup, c: Candidate, vals: dict[bytes, Any], depth: int) -> None:
        if b"v" not in vals or lk.kind == "put":
            return
        try:
            v = bencode.encode(vals[b"v"])
        except HailingError:
            return
        if b"k" not in vals:
            item = bep44.ImmutableItem(v)
            if item.target == lk.target and lk.kind == "get":
                lk.result, lk.result_depth = item, depth
                lk.stop = True
            else:
                self.stats["bad_items"] += 1
            return
        k, sig, seq = vals.get(b"k"), vals.get(b"sig"), vals.get(b"seq")
        salt = lk.salt
        if type(k) is not bytes or type(sig) is not bytes or type(seq) is not int:
            self.stats["bad_items"] += 1
            return
        mitem = bep44.MutableItem(k, salt, seq, v, sig)
        if mitem.target != lk.target or not mitem.is_valid():
            self.stats["bad_items"] += 1
            return
        best = lk.result
        if best is None or (isinstance(best, bep44.MutableItem) and seq > best.seq):
            lk.result, lk.result_depth = mitem, depth

    def _complete(self, lk: Lookup, now: float) -> None:
        if self._done is not None:
            self._done(lk, now)
        if lk.refused_net:
            self.stats["lookup_refused_net"] += lk.refused_net
        if lk.qid < 0 and lk.kind not in ("put", "announce", "listen", "post"):
            if lk.kind == "bootstrap":  # a rejoin: fill the far buckets as a join does
                self.refresh_far_buckets(now)
            return
        stats = LookupStats(lk.messages, lk.responses, lk.timeouts, lk.hops(), max(0.0, now - lk.started))
        kind = lk.kind
        if kind == "bootstrap":
            self.refresh_far_buckets(now)
        if kind in ("find_node", "bootstrap"):
            nodes = tuple(NodeInfo(c.id, c.addr) for c in lk.closest_answered() if c.id)
            if not nodes and not lk.responses:
                self._emit(CommandFailed(lk.qid, QueryTimeout("no node answered the lookup")))
            else:
                self._emit(NodesFound(lk.qid, lk.target, nodes, stats))
        elif kind == "get_peers":
            peers: dict[Hashable, None] = {}
            for c in lk.cands:
                if c.extra:
                    peers.update(dict.fromkeys(c.extra))
            nodes = tuple(NodeInfo(c.id, c.addr) for c in lk.closest_answered() if c.id)
            self._emit(PeersFound(lk.qid, lk.target, tuple(peers), nodes, stats))
        elif kind in ("get", "get_mutable"):
            nodes = tuple(NodeInfo(c.id, c.addr) for c in lk.closest_answered() if c.id)
            self._emit(ItemFound(lk.qid, lk.target, lk.result, stats, nodes))
        else:  # put / announce: second phase
            self._store_phase(lk, now)

    def _store_phase(self, lk: Lookup, now: float) -> None:
        """Send the store requests. The phase reports (:meth:`_store_done`) once every
        request answered, failed or stalled, as a lookup does: one dead storing node
        (e.g. a remembered one that has left since) costs a soft timeout, not the hard
        one. Only while nothing was stored yet does it wait for the stalled ones."""
        assert lk.store is not None
        method, args = lk.store
        st = _Store(lk)
        inbox = lk.kind in ("post", "listen")
        chosen: list[tuple[Hashable, bytes, bytes]] = []
        for c in lk.closest_answered(lk.k * 2 if inbox else None):
            if c.token is None or (inbox and not c.extra):
                continue
            if inbox and st.outstanding >= self.config.k:
                break
            if inbox and c.id is not None:
                chosen.append((c.addr, c.id, c.token))
            a = dict(args)
            a[b"token"] = c.token
            st.outstanding += 1

            # Partials of methods, not closures: a deep copy of the core (the simulator
            # copies whole networks) must call back into the copy.
            self._send(c.addr, method, a, now, node_id=c.id,
                       on_reply=partial(self._store_reply, st, c.token),
                       on_stall=partial(self._store_stall, st))
        if chosen and not lk.cached:
            self.inbox_nodes[lk.target] = (now + INBOX_NODES_TTL, chosen)
            if len(self.inbox_nodes) > 1024:
                self.inbox_nodes = {
                    k: v for k, v in self.inbox_nodes.items() if v[0] > now
                }
        self._store_progress(st, now)

    def _store_reply(self, st: _Store, token: bytes, reply: Response | Error | None,
                     p: Pending, now: float) -> None:
        if p.stalled:
            st.stalled -= 1
        else:
            st.outstanding -= 1
        if isinstance(reply, Response):
            st.stored += 1
            if st.lookup.kind == "listen":  # late grants count too: unlisten needs them
                self._granted(st.lookup.target, p.addr, p.node_id, token, reply, now)
        elif isinstance(reply, Error):
            st.errors.append((reply.code, reply.message))
        self._store_progress(st, now)

    def _store_stall(self, st: _Store, p: Pending, now: float) -> None:
        st.outstanding -= 1
        st.stalled += 1
        if st.lookup.kind in ("post", "listen"):
            self._forget_inbox_node(st.lookup.target, p.addr)
        self._store_progress(st, now)

    def _store_progress(self, st: _Store, now: float) -> None:
        if st.reported or st.outstanding:
            return
        if st.stalled and not st.stored and not st.lookup.cached:
            return  # nothing stored yet: a late answer may still come (or the hard timeout)
        st.reported = True
        self._store_done(st, now)

    def _forget_inbox_node(self, key: bytes, addr: Hashable) -> None:
        """A remembered storing node of ``key`` did not answer in time: later posts skip it
        (and look the key up again once fewer than half of the k remain)."""
        cached = self.inbox_nodes.get(key)
        if cached is None:
            return
        nodes = [n for n in cached[1] if n[0] != addr]
        if len(nodes) * 2 < self.config.k:
            del self.inbox_nodes[key]
        else:
            self.inbox_nodes[key] = (cached[0], nodes)

    def _store_done(self, st: _Store, now: float) -> None:
        lk = st.lookup
        if st.stored and lk.republish is not None and lk.store is not None:
            # Only what the network accepted is repeated, and never with its cas.
            method, args = lk.store
            args = {k: v for k, v in args.items() if k != b"cas"}
            self.republish[lk.republish] = (
                now + self.config.republish_interval, (lk.kind, lk.target, (method, args))
            )
        if lk.cached and st.stored == 0:
            # The remembered storing nodes are gone: find the key's nodes again.
            self.inbox_nodes.pop(lk.target, None)
            self.start(lk.kind, lk.target, now, store=lk.store, qid=lk.qid)
            return
        if lk.qid < 0:
            return
        stats = LookupStats(
            lk.messages + st.stored + len(st.errors), lk.responses, lk.timeouts, lk.hops(),
            now - lk.started,
        )
        if st.stored == 0 and not st.errors and lk.kind in ("post", "listen"):
            self._emit(CommandFailed(lk.qid, NotFoundError(
                "no hailing node answered near this key (the network's nodes do not "
                "support hailing's inbox methods)"
            )))
        elif lk.kind == "listen" and st.stored:
            self._emit(Listening(lk.qid, lk.target, st.stored, stats))
        elif st.stored == 0:
            err = st.errors[0] if st.errors else (GENERIC_ERROR, "no node accepted the value")
            self._emit(
                CommandFailed(lk.qid, KrpcError(f"store failed: {err[1]} ({err[0]})", err[0]))
            )
        else:
            self._emit(StoreDone(lk.qid, lk.target, st.stored, tuple(st.errors), stats))
