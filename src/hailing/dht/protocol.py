"""DhtProtocol: the sans-IO Mainline DHT node (BEP5, BEP32, BEP42, BEP43, BEP44).

Theory of operation
-------------------
The object owns a routing table, the stores and the lookups, and does no IO: a driver
feeds it datagrams (:meth:`receive_datagram`) and timer expiries (:meth:`handle_timer`),
always with the current time ``now`` in seconds, then collects what it produced:
:meth:`datagrams_to_send`, :meth:`get_timer` (the next deadline) and :meth:`next_event`.

Commands (:meth:`ping`, :meth:`find_node`, :meth:`get_peers`, :meth:`announce_peer`,
:meth:`get`, :meth:`put_immutable`, :meth:`put_mutable`, :meth:`bootstrap`) return a
query id; one event carrying that id reports the outcome later. After calling anything,
the driver must send the datagrams and re-arm its timer.

Every request we send gets a transaction id and two deadlines: a soft one adapted to the
measured round-trip time, after which a lookup stops waiting for it, and a hard one after
which it counts as failed. All randomness comes from the injected ``rng``.

The protocol owns its parts and wires them together: the routing table, the stores and
the :class:`~hailing.dht.responder.Responder` (answering queries), and the
:class:`~hailing.dht._lookup_engine.LookupEngine` (``self.lookups``: lookups, store
phases, republishing), which sends its requests through the protocol and hears their
outcomes back from it (:class:`~hailing.dht.transactions.Pending` is one request in flight),
and the :class:`~hailing.dht.inbox_client.InboxClient` (``self.inboxes``: the inbox keys
we listen on, their renewals and unlistens, and the pushes we receive), and the
:class:`~hailing.dht.suboverlay.SubOverlay` (``self.sub``: the table of hailing nodes
that inbox lookups run in on a public DHT, and the announce rounds that fill it).

Answers to ``hailing_push`` never put their sender in the routing table: a listener may
be a BEP43 read-only client (a short-lived one, e.g. a one-shot ``hailing send``), and
such a node, gone a minute later, would otherwise stall every lookup that meets it.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from functools import partial
from typing import Any

from .. import bencode
from ..errors import (
    HailingError,
    KrpcError,
    LocalProtocolError,
    QueryTimeout,
    RemoteProtocolError,
)
from ..krpc import (
    AddressCodec,
    Error,
    IPAddressCodec,
    Query,
    Response,
    decode_message,
    encode_message,
)
from . import bep44, inbox
from ._lookup_engine import LookupEngine
from .admission import Admission
from .config import DhtConfig
from .events import (
    Answered,
    CommandFailed,
    Event,
    Pong,
)
from .inbox_client import InboxClient
from .lookup import Candidate, Lookup
from .responder import ExtensionHandler, Responder
from .routing import NodeEntry, RoutingTable
from .storage import ItemStore, PeerStore
from .suboverlay import SubOverlay
from .tokens import TokenManager
from .transactions import OnReply, OnStall, Pending, Rng, RttEstimator

#: Bootstrap addresses remembered to join again when the routing table runs (nearly) dry.
MAX_SEEDS = 16
#: Backoff between such joins: from a minute, doubling, up to half an hour.
REJOIN_MIN = 60.0
REJOIN_MAX = 1800.0


_SOFT, _HARD, _TICK = 0, 1, 2

class DhtProtocol:
    """A Mainline DHT node without IO. See the module docstring for the call sequence."""

    def __init__(
        self,
        config: DhtConfig | None = None,
        *,
        rng: Rng,
        now: float,
        node_id: bytes | None = None,
        codec: AddressCodec | None = None,
    ) -> None:
        self.config = cfg = config or DhtConfig()
        if cfg.lookup_strategy not in ("hailing", "lockstep"):
            raise LocalProtocolError(f"unknown lookup strategy {cfg.lookup_strategy!r}")
        self._lockstep = cfg.lookup_strategy == "lockstep"
        self._rng = rng
        if node_id is None:
            node_id = rng.getrandbits(160).to_bytes(20, "big")
        if len(node_id) != 20:
            raise LocalProtocolError("node id must be 20 bytes")
        self.node_id = node_id
        self.codec: AddressCodec = codec or IPAddressCodec()
        #: Counters: queries by method, garbage dropped, errors sent, timeouts, ...
        self.stats: Counter[str] = Counter()
        self.table = self._new_table(node_id)
        #: Who may enter the table: BEP42, and query senders verified by a ping first.
        self.admission = Admission(cfg, self.codec, self.stats, now)
        self.tokens = TokenManager(self._randbytes(16))
        self.peers = PeerStore(cfg, self.stats)
        self.items = ItemStore(cfg, self.stats)
        self.responder = Responder(
            node_id, self.table, self.tokens, self.peers, self.items, self.codec, cfg.k,
            config=cfg, stats=self.stats,
        )
        #: BEP42: the external IP (compact) most peers report in their ``ip`` field.
        self.external_ip: bytes | None = None
        self._out: list[tuple[bytes, Hashable]] = []
        self._events: deque[Event] = deque()
        self._pending: dict[bytes, Pending] = {}
        self._timers: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._tid = rng.getrandbits(16)
        self._qid = 0
        #: Round-trip times over all peers: the soft timeout of nodes we have no RTT of.
        self.rtt = RttEstimator()
        self._next_rotation = now + cfg.token_rotation
        self._next_refresh = now + cfg.bucket_refresh
        #: The inboxes we listen on (hailing extension).
        self.inboxes = InboxClient(
            node_id, start=self._lookup, send=self._request, emit=self._emit,
            tokens=self.tokens, codec=self.codec, stats=self.stats,
        )
        if cfg.extensions:
            self.responder.handlers[b"hailing_push"] = self.inboxes.on_push
        #: The hailing sub-overlay: the sub-table of hailing nodes and its rounds.
        self.sub = SubOverlay(node_id, cfg, self.codec, now, start=self._lookup,
                              send=self._request, emit=self._emit, stats=self.stats,
                              main_table=partial(getattr, self, "table"))
        self.responder.sub_table = self.sub.table
        #: Lookups and store phases (and the republishing of our stores).
        self.lookups = LookupEngine(
            node_id, cfg, self.table, self.stats, self.codec, rng,
            send=self._request, emit=self._emit, acceptable=self.admission.acceptable,
            granted=self.inboxes.granted, sub_table=self.sub.table, done=self._lookup_done,
        )
        #: Told (address, now) of every request that reached its hard timeout: a driver
        #: with other services on the same socket (STUN, nat/stun.py) forgets the node.
        self.on_unanswered: Callable[[Hashable, float], None] | None = None
        #: Nodes pinged before a possible eviction (one ping each at a time).
        self._evicting: set[bytes] = set()
        #: Bootstrap addresses given to bootstrap(), kept to join again (see _maintenance).
        self._seeds: list[Hashable] = []
        self._rejoin_backoff = REJOIN_MIN
        self._next_rejoin = now + REJOIN_MIN
        self._push_timer(now + cfg.maintenance_interval, _TICK, None)

    # == driver interface ==============================================================

    def receive_datagram(self, data: bytes, addr: Hashable, now: float) -> None:
        """Consume one datagram from ``addr``. Garbage is answered (203) or counted."""
        try:
            msg = decode_message(data)
        except RemoteProtocolError as exc:
            self.stats["dropped_malformed"] += 1
            tid = getattr(exc, "tid", None)
            if tid is not None and not self.config.read_only:
                self._send_error(tid, exc.code, str(exc), addr)
            return
        t = type(msg)
        if t is Query:
            self._on_query(msg, addr, now)  # type: ignore[arg-type]
        else:
            self._on_reply(msg, addr, now)  # type: ignore[arg-type]

    def handle_timer(self, now: float) -> None:
        """Process every deadline that is due at ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, obj = heapq.heappop(timers)
            if kind == _TICK:
                self._maintenance(now)
                self._push_timer(now + self.config.maintenance_interval, _TICK, None)
            elif not obj.done:
                if kind == _SOFT:
                    self._soft_timeout(obj, now)
                else:
                    self._hard_timeout(obj, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]:
        """Everything to send now, as ``(payload, addr)`` pairs; the list is handed over."""
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """The time at which :meth:`handle_timer` must next be called."""
        timers = self._timers
        while timers and timers[0][2] != _TICK and timers[0][3].done:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _emit(self, event: Event) -> None:
        # A method rather than the deque's bound append, so that a deep copy of the core
        # (the simulator's copy of a network) stays wired to its own queue.
        self._events.append(event)

    def next_event(self) -> Event | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    # == commands ======================================================================

    def add_node(self, node_id: bytes, addr: Hashable, now: float) -> None:
        """Seed the routing table with a node believed alive (e.g. from a saved cache)."""
        self.table.add(node_id, addr, now - self.config.questionable_after)

    def ping(self, addr: Hashable, now: float) -> int:
        qid = self._new_qid()

        def done(reply: Response | Error | None, p: Pending, now: float) -> None:
            if isinstance(reply, Response):
                self._events.append(Pong(qid, reply.sender_id, p.rtt))
            else:
                self._events.append(CommandFailed(qid, _failure(reply, f"no answer from {addr}")))

        self._request(addr, b"ping", {}, now, on_reply=done)
        return qid

    def query(self, addr: Hashable, method: bytes, args: dict[bytes, Any], now: float) -> int:
        """Send one query of any method (an extension's, say) to ``addr``: the event is
        :class:`Answered` with the response, or CommandFailed (a KrpcError carrying the
        error reply's code, or QueryTimeout). Our ``id`` is added to ``args``."""
        if type(method) is not bytes or not method:
            raise LocalProtocolError("a method name is a non-empty byte string")
        qid = self._new_qid()

        def done(reply: Response | Error | None, p: Pending, now: float) -> None:
            if isinstance(reply, Response):
                self._events.append(Answered(qid, reply.values, reply.sender_id, p.rtt))
            else:
                self._events.append(CommandFailed(qid, _failure(reply, f"no answer from {addr}")))

        self._request(addr, method, dict(args), now, on_reply=done)
        return qid

    def add_method(self, name: bytes, handler: ExtensionHandler) -> None:
        """Answer the extension method ``name`` with ``handler`` (see Responder.add_method);
        ``remove_method`` takes it back (204 again)."""
        self.responder.add_method(name, handler)

    def remove_method(self, name: bytes) -> None:
        self.responder.remove_method(name)

    def find_node(self, target: bytes, now: float) -> int:
        return self._lookup("find_node", _id20(target), now)

    def bootstrap(self, addrs: Iterable[Hashable], now: float) -> int:
        """Join: look up our own id through ``addrs`` (ids unknown) and the table.

        As in the Kademlia paper, once that lookup ends, every bucket farther than our
        closest neighbour that is not full is refreshed with a lookup of a random id in
        its range (internal lookups, no events), so that far buckets are not left empty.
        The event (NodesFound) is sent when the own-id lookup ends."""
        addrs = list(addrs)
        for a in addrs:
            if a not in self._seeds and len(self._seeds) < MAX_SEEDS:
                self._seeds.append(a)
        return self._lookup("bootstrap", self.node_id, now, seeds=addrs)

    def find_hailing_nodes(self, now: float) -> int:
        """Find hailing nodes through the sub-overlay's info-hash (a round: announce or
        get_peers, pings, a lookup of our id among them; joins a round under way). The
        event is NodesFound with the sub-table's nodes closest to our id."""
        qid = self._new_qid()
        self.sub.discover(qid, now)
        return qid

    def get_peers(self, info_hash: bytes, now: float) -> int:
        return self._lookup("get_peers", _id20(info_hash), now)

    def announce_peer(self, info_hash: bytes, port: int | None, now: float) -> int:
        """Announce that we (``port``, or the source port if None) have ``info_hash``."""
        if port is not None and not 0 < port < 65536:
            raise LocalProtocolError("port must be 1..65535")
        args: dict[bytes, Any] = {b"info_hash": _id20(info_hash)}
        if port is None:
            args[b"implied_port"] = 1
            args[b"port"] = 1
        else:
            args[b"port"] = port
        return self._lookup(
            "announce", info_hash, now, store=(b"announce_peer", args), republish=b"a" + info_hash
        )

    def get(self, target: bytes, now: float) -> int:
        """BEP44 get of an immutable item; ends as soon as a node returns the value."""
        return self._lookup("get", _id20(target), now)

    def get_mutable(self, pubkey: bytes, now: float, salt: bytes = b"") -> int:
        """BEP44 get of a mutable item: asks the whole closest set, keeps the highest seq."""
        if type(pubkey) is not bytes or len(pubkey) != 32:
            raise LocalProtocolError("an ed25519 public key is 32 bytes")
        if len(salt) > bep44.MAX_SALT_SIZE:
            raise LocalProtocolError(f"salt is longer than {bep44.MAX_SALT_SIZE} bytes")
        return self._lookup("get_mutable", bep44.mutable_target(pubkey, salt), now, salt=salt)

    def put_immutable(self, value: Any, now: float) -> tuple[int, bytes]:
        """Store ``value`` (any bencodable object) as an immutable item; (qid, target)."""
        v = bencode.encode(value)
        if len(v) > bep44.MAX_VALUE_SIZE:
            raise LocalProtocolError(f"value is {len(v)} bytes bencoded; BEP44 allows {bep44.MAX_VALUE_SIZE}")
        item = bep44.ImmutableItem(v)
        return self._put_item(item, now, None), item.target

    def put_mutable(self, item: bep44.MutableItem, now: float, cas: int | None = None) -> int:
        """Store a signed mutable item (see :meth:`bep44.MutableItem.create`)."""
        if not item.is_valid():
            raise LocalProtocolError("mutable item signature does not verify")
        return self._put_item(item, now, cas)

    # -- hailing inboxes (docs/protocol.md, "Extensions") --------------------------------

    def post(self, key: bytes, value: bytes, now: float) -> int:
        """Post ``value`` (opaque bytes, e.g. a sealed envelope) to the inbox ``key`` on
        the hailing nodes closest to it; they push it to whoever listens there."""
        if type(value) is not bytes or not 0 < len(value) <= inbox.MAX_VALUE:
            raise LocalProtocolError(f"an inbox value is 1..{inbox.MAX_VALUE} bytes")
        args: dict[bytes, Any] = {b"key": _id20(key), b"v": value}
        return self.lookups.post(self._new_qid(), key, args, now)

    def listen(self, key: bytes, now: float, ttl: float = 300.0) -> int:
        """Listen on the inbox ``key``: values already there and every later post arrive
        as :class:`InboxMessage` events. Renewed automatically until :meth:`unlisten`."""
        return self.inboxes.listen(_id20(key), ttl, now)

    def unlisten(self, key: bytes, now: float) -> None:
        """Stop listening on ``key``: renewals stop, and the storing nodes holding the
        listen are told at once (``hailing_listen`` with ttl 0)."""
        self.inboxes.unlisten(key, now)

    def unlisten_all(self, now: float) -> None:
        """Unlisten every key (a node about to stop)."""
        self.inboxes.unlisten_all(now)

    def _send_pushes(self, now: float) -> None:
        pushes, self.responder.pushes = self.responder.pushes, []
        for addr, key, v, ptoken in pushes:  # in order: a new listener's waiting values
            self.stats["pushes_sent"] += 1
            args = {b"key": key, b"v": v, b"ptoken": ptoken}
            self._request(addr, b"hailing_push", args, now, on_reply=_noop)

    def cancel_republish(self, target: bytes) -> None:
        """Stop repeating our put (of this target) or announce (of this info-hash)."""
        self.lookups.cancel_republish(target)

    # == receiving =====================================================================

    def _on_query(self, q: Query, addr: Hashable, now: float) -> None:
        st = self.stats
        if self.config.read_only and q.method != b"hailing_push":
            st["ignored_read_only"] += 1  # BEP43: a read-only node answers nothing
            return
        # Only known methods get their own counter: garbage names must not grow the stats.
        known = q.method in self.responder.handlers
        st["q_" + (q.method.decode() if known else "unknown")] += 1
        try:
            r = self.responder.answer(q, addr, now)
        except RemoteProtocolError as exc:
            st["errors_sent"] += 1
            self._send_error(q.tid, exc.code, str(exc), addr)
            return
        reply = (encode_message(Response(q.tid, r, self.config.version, self.codec.pack(addr))),
                 addr)
        if self.responder.pushes and q.method == b"hailing_post":
            # A new value's pushes leave before the poster's reply: the listeners are
            # who waits for it (a call's offer or answer), the poster only counts copies.
            self._send_pushes(now)
        self._out.append(reply)
        if self.responder.pushes:  # a new listener's waiting values: after its reply
            self._send_pushes(now)
        if not q.ro:
            self._query_sender(q.sender_id, addr, now)

    def _query_sender(self, sid: bytes, addr: Hashable, now: float) -> None:
        """A node queried us: one we know is alive again; a new one enters the table only
        once it has answered a ping of ours (see admission.py), and only if it would
        get a place in a bucket (not merely in a replacement cache)."""
        entry = self.table.get(sid)
        if entry is not None or not self.config.verify_senders:
            if entry is None or entry.addr == addr:
                self._saw_node(sid, addr, now, None)
            return
        if (self.table.would_take(sid, addr) and self.admission.acceptable(sid, addr)
                and self.admission.may_verify(addr, now)):
            self._request(addr, b"ping", {}, now, node_id=sid,
                          on_reply=partial(self._verify_done, addr))

    def _verify_done(self, addr: Hashable, reply: object, p: Pending, now: float) -> None:
        # The answer itself (if any) put the node in the table, in _on_reply.
        self.admission.done(addr)

    def _on_reply(self, msg: Response | Error, addr: Hashable, now: float) -> None:
        p = self._pending.get(msg.tid)
        if p is None or p.addr != addr or p.done:
            self.stats["dropped_unexpected"] += 1
            return
        del self._pending[msg.tid]
        p.done = True
        p.rtt = rtt = now - p.sent
        if type(msg) is Error:
            self.stats["errors_received"] += 1
            self._finish_request(p, msg, now)
            return
        assert isinstance(msg, Response)
        sid = msg.sender_id
        if p.node_id is not None and sid != p.node_id:
            # A different node answers at that address: its entry is stale, and a lookup
            # must not report the answer under the id it asked for.
            self.table.failed(p.node_id, addr)
            if p.lookup is not None:
                self._saw_node(sid, addr, now, rtt)
                self._finish_request(p, None, now)
                return
        self.rtt.update(rtt)
        if msg.ip is not None:
            self._vote_ip(msg.ip)
        if p.method != b"hailing_push":
            # A push goes to a listener, which may be a BEP43 read-only client (its
            # queries said so): answering it does not make it a routing node.
            self._saw_node(sid, addr, now, rtt, msg.version)
        self.stats["responses"] += 1
        self._finish_request(p, msg, now)

    def _new_table(self, node_id: bytes) -> RoutingTable:
        return RoutingTable.configured(node_id, self.config, self.codec, self.stats)

    def _change_node_id(self, node_id: bytes) -> None:
        """Take a new id (BEP42: one derived from our public address): the table is
        rebuilt around it from the nodes we know; stores and lookups carry on."""
        old = self.table
        self.node_id = node_id
        self.table = table = self._new_table(node_id)
        for e in old:
            table.add(e.id, e.addr, e.last_seen, e.rtt)
        self.responder.own_id = self.lookups.node_id = self.inboxes.node_id = node_id
        self.responder.table = self.lookups.table = table
        self.responder.sub_table = self.lookups.sub_table = self.sub.rebuild(node_id)
        self.stats["node_id_changes"] += 1

    def _saw_node(self, node_id: bytes, addr: Hashable, now: float, rtt: float | None,
                  version: bytes | None = None) -> None:
        """An answer (``version``: its ``v``, which feeds the sub-table) or a query from
        a known node: the node enters the tables, or a stale entry gets pinged."""
        known = self.table.get(node_id)
        ok = (known is not None and known.addr == addr) or self.admission.acceptable(node_id, addr)
        if rtt is not None:  # an answer: the sub-table's turn (it counts foreign ones too)
            self._evict(self.sub.saw(node_id, addr, version, now, rtt, ok), now)
        if ok:
            self._evict(self.table.add(node_id, addr, now, rtt), now)

    def _evict(self, stale: NodeEntry | None, now: float) -> None:
        if stale is not None and stale.id not in self._evicting:
            self._evicting.add(stale.id)
            self._request(stale.addr, b"ping", {}, now, node_id=stale.id,
                          on_reply=partial(self._evict_ping_done, stale.id))

    def _evict_ping_done(self, sid: bytes, reply: object, p: Pending, now: float) -> None:
        # A method (through a partial), not a closure: a deep copy of the core must call
        # back into the copy (the simulator copies whole networks).
        self._evicting.discard(sid)

    # == requests ======================================================================

    def _request(
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
    ) -> None:
        self._tid = (self._tid + 1) & 0xFFFF
        tid = self._tid.to_bytes(2, "big")
        old = self._pending.get(tid)
        if old is not None:  # 65536 requests in flight: the oldest slot is recycled
            old.done = True
            self._finish_request(old, None, now)
        p = Pending(tid, addr, method, now)
        p.node_id = node_id
        p.lookup = lookup
        p.cand = cand
        p.on_reply = on_reply
        p.on_stall = on_stall
        self._pending[tid] = p
        args[b"id"] = self.node_id
        if method == b"hailing_listen" and args.get(b"ttl"):
            args[b"ptoken"] = self.inboxes.push_token(addr)  # what its pushes must carry
        q = Query(tid, method, args, self.config.version, self.config.read_only)
        self._out.append((encode_message(q), addr))
        self.stats["queries_sent"] += 1
        cfg = self.config
        if self._lockstep:
            self._push_timer(now + cfg.lockstep_timeout, _HARD, p)
        else:
            self._push_timer(now + self._soft_timeout_value(node_id), _SOFT, p)
            self._push_timer(now + cfg.query_timeout, _HARD, p)

    def _soft_timeout_value(self, node_id: bytes | None) -> float:
        entry = self.table.get(node_id) if node_id is not None else None
        return self.rtt.soft_timeout(self.config, None if entry is None else entry.rtt)

    def _soft_timeout(self, p: Pending, now: float) -> None:
        p.stalled = True
        if p.lookup is not None and p.cand is not None:
            self.lookups.on_stall(p.lookup, p.cand, now)
        elif p.on_stall is not None:
            p.on_stall(p, now)

    def _hard_timeout(self, p: Pending, now: float) -> None:
        p.done = True
        self._pending.pop(p.tid, None)
        self.stats["timeouts"] += 1
        if p.node_id is not None:
            self.table.failed(p.node_id, p.addr)
            self.sub.table.failed(p.node_id, p.addr)
        if self.on_unanswered is not None:
            self.on_unanswered(p.addr, now)
        self._finish_request(p, None, now)

    def _finish_request(self, p: Pending, reply: Response | Error | None, now: float) -> None:
        if p.lookup is not None:
            if p.cand is not None:
                self.lookups.on_answer(p.lookup, p.cand, reply, now)
        elif p.on_reply is not None:
            p.on_reply(reply, p, now)

    def _send_error(self, tid: bytes, code: int, message: str, addr: Hashable) -> None:
        self._out.append((encode_message(Error(tid, code, message, self.config.version)), addr))

    # == lookups: see _lookup_engine.LookupEngine ========================================

    def _new_qid(self) -> int:
        self._qid += 1
        return self._qid

    def _lookup(
        self,
        kind: str,
        target: bytes,
        now: float,
        *,
        seeds: Iterable[Hashable] = (),
        store: tuple[bytes, dict[bytes, Any]] | None = None,
        salt: bytes = b"",
        republish: bytes | None = None,
        qid: int | None = None,
    ) -> int:
        """Start a lookup for a command (a new query id) or, with ``qid`` -1, an internal
        one (refresh, rejoin, listen renewal: no event)."""
        return self.lookups.start(
            kind, target, now, qid=qid or self._new_qid(), seeds=seeds, store=store,
            salt=salt, republish=republish,
        )

    def _put_item(
        self, item: bep44.ImmutableItem | bep44.MutableItem, now: float, cas: int | None
    ) -> int:
        store = bep44.store_args(item)
        if cas is not None:
            store[1][b"cas"] = cas
        return self._lookup("put", item.target, now, store=store, republish=b"p" + item.target)

    # == housekeeping ==================================================================

    def _maintenance(self, now: float) -> None:
        cfg = self.config
        if now >= self._next_rotation:
            self.tokens.rotate(self._randbytes(16))
            self._next_rotation = now + cfg.token_rotation
            self.items.expire(now)
            self.peers.expire(now)
            self.responder.inbox.expire(now)
        self.inboxes.renew_due(now)
        self.sub.tick(now)
        if len(self.table) >= cfg.k:
            self._rejoin_backoff = REJOIN_MIN
        elif self._seeds and now >= self._next_rejoin:
            # Fewer than k nodes known: the join failed (the bootstrap nodes were down, or
            # our network was) or churn emptied the table. Join again through the
            # bootstrap addresses and whatever the table still has, backing off.
            self._next_rejoin = now + self._rejoin_backoff
            self._rejoin_backoff = min(self._rejoin_backoff * 2, REJOIN_MAX)
            self.stats["rejoins"] += 1
            self._lookup("bootstrap", self.node_id, now, seeds=self._seeds, qid=-1)
        if now >= self._next_refresh and len(self.table):
            self._next_refresh = now + cfg.maintenance_interval * 6
            for i in self.table.stale_buckets(now, cfg.bucket_refresh)[:2]:
                self.table.touch_bucket(i, now)
                target = self.table.random_id_in_bucket(i, self._rng.getrandbits(160))
                self._lookup("refresh", target, now, qid=-1)
        self.lookups.republish_due(now)

    def _lookup_done(self, lk: Lookup, now: float) -> None:
        self.sub.lookup_done(lk, now)
        if lk.kind == "bootstrap":
            self.sub.joined(now)

    def _vote_ip(self, ip: bytes) -> None:
        self.external_ip = self.admission.vote(ip)
        new_id = self.admission.own_id(self.node_id)
        if new_id != self.node_id:
            self._change_node_id(new_id)

    def _push_timer(self, when: float, kind: int, obj: Any) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, kind, obj))

    def _randbytes(self, n: int) -> bytes:
        return self._rng.getrandbits(n * 8).to_bytes(n, "big")


def _id20(value: bytes) -> bytes:
    if type(value) is not bytes or len(value) != 20:
        raise LocalProtocolError("a target/info-hash must be 20 bytes")
    return value


def _failure(reply: Error | None, message: str) -> HailingError:
    if isinstance(reply, Error):
        return KrpcError(f"{reply.message} ({reply.code})", reply.code)
    return QueryTimeout(message)


def _noop(reply: object, p: object, now: float) -> None:
    return None
