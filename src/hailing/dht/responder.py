"""The answering side of the DHT core: what a node replies to each KRPC query.

Pure functions of the node's state: :meth:`Responder.answer` takes a decoded query and
returns the ``r`` dictionary, or raises :class:`~hailing.errors.RemoteProtocolError` with
the KRPC error code to send (203 malformed arguments or bad token, 204 unknown method,
BEP44's 205-207 and 301-302). It never touches the routing table.

Every method that stores something or costs work (``announce_peer``, ``put``,
``hailing_post``, ``hailing_listen``) is charged to its source
(:func:`~hailing.dht.quota.source_of`): once its token checks out (so a spoofed sender
cannot spend someone else's budget), a per-source token bucket must allow it (else
error 202 for the BEP methods, 241 for hailing's, counted as ``rate_limited_<method>``),
and what it stores is charged to the source in the store's
:class:`~hailing.dht.quota.SourceTable`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

from .. import bencode
from ..errors import (
    METHOD_UNKNOWN,
    PROTOCOL_ERROR,
    SERVER_ERROR,
    BencodeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..krpc import COMPACT_NODE_V4, COMPACT_NODE_V6, AddressCodec, Query, encode_nodes
from . import bep44
from .config import DhtConfig
from .inbox import MAX_VALUE, InboxStore, fit_values
from .quota import SourceBudget, exempt, source_of
from .routing import RoutingTable
from .storage import ItemStore, PeerStore
from .suboverlay import SUB_MARKER, is_hailing
from .tokens import TokenManager

Handler = Callable[[Query, Hashable, float], dict[bytes, Any]]
#: An extension method's handler (:meth:`Responder.add_method`): the query's arguments,
#: its sender and ``now`` -> the response dictionary, or raise RemoteProtocolError.
ExtensionHandler = Callable[[dict[bytes, Any], Hashable, float], dict[bytes, Any]]


def _need_id20(args: dict[bytes, Any], key: bytes) -> bytes:
    v = args.get(key)
    if type(v) is not bytes or len(v) != 20:
        raise RemoteProtocolError(f"argument {key.decode()!r} must be a 20-byte string")
    return v


class Responder:
    """Answers queries from the node's table, tokens and stores."""

    def __init__(
        self,
        own_id: bytes,
        table: RoutingTable,
        tokens: TokenManager,
        peers: PeerStore,
        items: ItemStore,
        codec: AddressCodec,
        k: int,
        inbox: InboxStore | None = None,
        *,
        config: DhtConfig | None = None,
        stats: Counter[str] | None = None,
    ) -> None:
        cfg = config or DhtConfig()
        self.own_id = own_id
        self.table = table
        self.tokens = tokens
        self.peers = peers
        self.items = items
        self.codec = codec
        self.k = k
        #: Counters of refusals (the protocol's stats when it owns us).
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.inbox = inbox or InboxStore(self.stats)
        self.exempt_loopback = cfg.exempt_loopback
        #: The work budget of announce_peer, put and hailing_listen, per source.
        self.work = SourceBudget(cfg.source_rate, cfg.source_burst)
        #: Pushes owed to listeners after a post or a new listen:
        #: (listener address, key, value, the listener's push token).
        self.pushes: list[tuple[Hashable, bytes, bytes, bytes]] = []
        self.handlers: dict[bytes, Handler] = {
            b"ping": self._ping,
            b"find_node": self._find_node,
            b"get_peers": self._get_peers,
            b"announce_peer": self._announce_peer,
            b"get": self._get,
            b"put": self._put,
            b"hailing_post": self._hailing_post,
            b"hailing_listen": self._hailing_listen,
        }
        #: hailing's extensions (DhtConfig.extensions): without them, a plain Mainline node.
        self.extensions = cfg.extensions
        if not cfg.extensions:
            del self.handlers[b"hailing_post"], self.handlers[b"hailing_listen"]
        #: False while the node knows it is behind a NAT (its STUN probe, nat/stun.py):
        #: then it refuses to store posts and listens (an unlisten still goes). Only the
        #: nodes its NAT holds a mapping to reach it: a listen it held would look live
        #: to the listener while posters could not reach it (a caller's node holding its
        #: callee's listen: the callee's BEP44 fallback then polls slowly, a minute, for
        #: offers that can only come that way).
        self.storing = True
        #: The sub-overlay's table of hailing nodes: what a query with the marker gets.
        self.sub_table: RoutingTable | None = None
        #: Methods added with add_method (only those may be removed).
        self._extensions: set[bytes] = set()

    def answer(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        handler = self.handlers.get(q.method)
        if handler is None:
            raise RemoteProtocolError("Method Unknown", METHOD_UNKNOWN)
        return handler(q, addr, now)

    def add_method(self, name: bytes, handler: ExtensionHandler) -> None:
        """Answer the KRPC method ``name`` with ``handler`` (see :data:`ExtensionHandler`),
        counted as ``q_<name>`` like the built-in methods (others are still 204).

        The reply carries our ``id`` whatever the handler returns. A handler that raises
        :class:`RemoteProtocolError` gets its code and message sent as the KRPC error;
        one that raises anything else is a bug of ours: error 202, counted as
        ``handler_failed_<name>``, and the node carries on."""
        if type(name) is not bytes or not name or len(name) > MAX_METHOD_NAME:
            raise LocalProtocolError(f"a method name is 1..{MAX_METHOD_NAME} bytes")
        try:
            label = name.decode("ascii")
        except UnicodeDecodeError:
            raise LocalProtocolError("a method name is ASCII") from None
        if name in self.handlers:
            raise LocalProtocolError(f"the method {label!r} is already answered")

        def answer(q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
            try:
                r = handler(q.args, addr, now)
            except RemoteProtocolError:
                raise
            except Exception:
                self.stats["handler_failed_" + label] += 1
                raise RemoteProtocolError("Server Error", SERVER_ERROR) from None
            return {**r, b"id": self.own_id}

        self.handlers[name] = answer
        self._extensions.add(name)

    def remove_method(self, name: bytes) -> None:
        """Stop answering an extension method added with :meth:`add_method` (its
        queries get 204 again); a method not added is ignored."""
        if name in self._extensions:
            self._extensions.discard(name)
            del self.handlers[name]

    def source(self, addr: Hashable) -> bytes:
        """The source ``addr`` is charged to (:func:`~hailing.dht.quota.source_of`)."""
        return source_of(self.codec, addr, self.exempt_loopback)

    def _charge(self, q: Query, addr: Hashable, source: bytes, now: float, code: int) -> None:
        """Spend one unit of the work budget of ``source`` or refuse with ``code``."""
        if exempt(self.codec, addr, self.exempt_loopback) or self.work.allow(source, now):
            return
        self.stats["rate_limited_" + q.method.decode()] += 1
        raise RemoteProtocolError("rate limited", code)

    # -- BEP5 --------------------------------------------------------------------------

    def _ping(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        return {b"id": self.own_id}

    def _nodes(self, target: bytes, q: Query, addr: Hashable, r: dict[bytes, Any]) -> None:
        # hailing extension: a node may ask for more than k nodes (up to MAX_WIDE_NODES),
        # to see past dead entries that crowd the closest k after mass failures. Such an
        # answer draws on the replacement caches too: after a mass failure the live nodes
        # near a target are often known only there, kept out of buckets full of dead
        # entries that nobody has asked yet (docs/simulator.md).
        # A query with the sub-overlay's marker gets our closest *hailing* nodes (from
        # the sub-table, unless it is empty: dht/suboverlay.py).
        table = self.table
        if not self.extensions:
            count = None
        else:
            count = q.args.get(b"hailing_k")
            sub = self.sub_table
            if q.args.get(SUB_MARKER) == 1 and sub is not None and len(sub):
                table = sub
        # A node that is not hailing gets no data-channel link addresses (0.0.0.0/8 on
        # the wire): it could not use them, and they would spread over the public DHT.
        # It gets the closest nodes it can reach instead (a few more are looked at).
        hailing = is_hailing(q.version)
        wide = type(count) is int and self.k < count <= MAX_WIDE_NODES
        want_n: int = count if wide else self.k  # type: ignore[assignment]
        asked = want_n
        while True:
            nodes = table.closest(target, asked, replacements=wide)
            v4, v6 = encode_nodes(((e.id, e.addr) for e in nodes), self.codec,
                                  this_network=hailing, limit=want_n)
            if (hailing or len(nodes) < asked
                    or len(v4) // COMPACT_NODE_V4 + len(v6) // COMPACT_NODE_V6 >= want_n):
                break
            asked *= 4
        want = q.args.get(b"want")
        if type(want) is list and (b"n4" in want or b"n6" in want):
            if b"n4" in want:
                r[b"nodes"] = v4
            if b"n6" in want:
                r[b"nodes6"] = v6
            return
        packed = self.codec.pack(addr)
        if packed is not None and len(packed) == 18:
            r[b"nodes6"] = v6
        else:
            r[b"nodes"] = v4

    def _find_node(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        target = _need_id20(q.args, b"target")
        r: dict[bytes, Any] = {b"id": self.own_id}
        self._nodes(target, q, addr, r)
        return r

    def _get_peers(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        info_hash = _need_id20(q.args, b"info_hash")
        r: dict[bytes, Any] = {
            b"id": self.own_id,
            b"token": self.tokens.issue(self.codec.ip_key(addr)),
        }
        values = self.peers.get(info_hash, now)
        if values:
            r[b"values"] = values
        self._nodes(info_hash, q, addr, r)
        return r

    def _announce_peer(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        a = q.args
        info_hash = _need_id20(a, b"info_hash")
        if not self.tokens.check(a.get(b"token"), self.codec.ip_key(addr)):
            raise RemoteProtocolError("invalid token")
        source = self.source(addr)
        self._charge(q, addr, source, now, SERVER_ERROR)
        packed = self.codec.pack(addr)
        if packed is None:
            raise RemoteProtocolError("address cannot be announced")
        if a.get(b"implied_port") == 1:
            peer = packed
        else:
            port = a.get(b"port")
            if type(port) is not int or not 0 < port < 65536:
                raise RemoteProtocolError("argument 'port' must be 1..65535")
            peer = packed[:-2] + port.to_bytes(2, "big")
        self.peers.add(info_hash, peer, source, now)
        return {b"id": self.own_id}

    # -- BEP44 -------------------------------------------------------------------------

    def _get(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        target = _need_id20(q.args, b"target")
        r: dict[bytes, Any] = {
            b"id": self.own_id,
            b"token": self.tokens.issue(self.codec.ip_key(addr)),
        }
        item = self.items.get(target, now)
        if isinstance(item, bep44.ImmutableItem):
            r[b"v"] = bencode.Raw(item.value_bencoded)
        elif item is not None:
            seq = q.args.get(b"seq")
            if type(seq) is not int or item.seq > seq:
                r[b"v"] = bencode.Raw(item.value_bencoded)
            r[b"k"] = item.pubkey
            r[b"sig"] = item.sig
            r[b"seq"] = item.seq
        self._nodes(target, q, addr, r)
        return r

    def _put(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        a = q.args
        if not self.tokens.check(a.get(b"token"), self.codec.ip_key(addr)):
            raise RemoteProtocolError("invalid token")
        source = self.source(addr)
        self._charge(q, addr, source, now, SERVER_ERROR)
        if b"v" not in a:
            raise RemoteProtocolError("argument 'v' missing")
        try:
            v = bencode.encode(a[b"v"])
        except (LocalProtocolError, BencodeError):
            raise RemoteProtocolError("argument 'v' is not bencodable") from None
        if len(v) > bep44.MAX_VALUE_SIZE:
            raise RemoteProtocolError("message (v field) too big", bep44.ERR_VALUE_TOO_BIG)
        k = a.get(b"k")
        if k is None:
            imm = bep44.ImmutableItem(v)
            target = imm.target
            # BEP44 mentions an optional target argument for immutable puts; if present it must match.
            t = a.get(b"target")
            if t is not None and t != target:
                raise RemoteProtocolError("target does not match value")
            self.items.put(target, imm, source, now)
            return {b"id": self.own_id}
        salt = a.get(b"salt", b"")
        seq = a.get(b"seq")
        sig = a.get(b"sig")
        cas = a.get(b"cas")
        if type(k) is not bytes or len(k) != 32:
            raise RemoteProtocolError("argument 'k' must be a 32-byte key")
        if type(salt) is not bytes:
            raise RemoteProtocolError("argument 'salt' must be a string")
        if len(salt) > bep44.MAX_SALT_SIZE:
            raise RemoteProtocolError("salt (salt field) too big", bep44.ERR_SALT_TOO_BIG)
        if type(seq) is not int or seq < 0:
            raise RemoteProtocolError("argument 'seq' must be a non-negative integer")
        if type(sig) is not bytes or len(sig) != 64:
            raise RemoteProtocolError("argument 'sig' must be 64 bytes")
        if cas is not None and type(cas) is not int:
            raise RemoteProtocolError("argument 'cas' must be an integer")
        item = bep44.MutableItem(k, salt, seq, v, sig)
        target = item.target
        existing = self.items.get(target, now)
        if not isinstance(existing, bep44.MutableItem):
            existing = None
        bep44.check_put(existing, item, cas)  # raises PutRejected (a RemoteProtocolError)
        self.items.put(target, item, source, now)
        return {b"id": self.own_id}


    # -- hailing extensions (docs/protocol.md) ----------------------------------------------

    def _hailing_post(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        a = q.args
        key = _need_id20(a, b"key")
        if not self.storing:
            self.stats["store_refused_nat"] += 1
            raise RemoteProtocolError("behind a NAT: not a storing node")
        if not self.tokens.check(a.get(b"token"), self.codec.ip_key(addr)):
            raise RemoteProtocolError("invalid token")
        v = a.get(b"v")
        if type(v) is not bytes or not v:
            raise RemoteProtocolError("argument 'v' must be a non-empty string")
        if len(v) > MAX_VALUE:
            raise RemoteProtocolError("message (v field) too big", bep44.ERR_VALUE_TOO_BIG)
        source = self.source(addr)
        # Loopback sources are exempt by default (as BEP42 exempts local addresses): on a
        # loopback testnet every node shares 127.0.0.1 (DhtConfig.exempt_loopback).
        if not exempt(self.codec, addr, self.exempt_loopback) and not self.inbox.allow_post(
            source, now
        ):
            self.stats["rate_limited_hailing_post"] += 1
            raise RemoteProtocolError("rate limited", ERR_RATE_LIMITED)
        if self.inbox.post(key, v, source, now):
            for listener, ptoken in self.inbox.push_targets(key, now):
                self.pushes.append((listener, key, v, ptoken))
        return {b"id": self.own_id}

    def _hailing_listen(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        a = q.args
        key = _need_id20(a, b"key")
        if not self.tokens.check(a.get(b"token"), self.codec.ip_key(addr)):
            raise RemoteProtocolError("invalid token")
        ttl = a.get(b"ttl", 300)
        if type(ttl) is not int or ttl < 0:
            raise RemoteProtocolError("argument 'ttl' must be a non-negative integer")
        source = self.source(addr)
        if not ttl:  # an unlisten: removing a listener that does not exist is a no-op
            self.inbox.listen(key, addr, source, 0.0, now)
            return {b"id": self.own_id, b"ttl": 0}
        if not self.storing:
            self.stats["store_refused_nat"] += 1
            raise RemoteProtocolError("behind a NAT: not a storing node")
        ptoken = a.get(b"ptoken")
        if type(ptoken) is not bytes or not 0 < len(ptoken) <= MAX_PTOKEN:
            raise RemoteProtocolError("argument 'ptoken' (the listener's push token) missing")
        self._charge(q, addr, source, now, ERR_RATE_LIMITED)
        new = not self.inbox.listener_table.holds(key, addr, now)
        granted = self.inbox.listen(key, addr, source, float(ttl), now, ptoken)
        if not granted:  # only when this source holds its whole quota of listeners
            raise RemoteProtocolError("too many listeners", ERR_LISTENERS_FULL)
        # The reply stays under the datagram limit by construction: the values that do
        # not fit are counted in `more` and, for a new listener, pushed right after.
        values, more = fit_values(self.inbox.values(key, now))
        r: dict[bytes, Any] = {b"id": self.own_id, b"ttl": int(granted), b"values": values}
        if more:
            r[b"more"] = more
            if new:
                for v in self.inbox.values(key, now)[len(values):]:
                    self.pushes.append((addr, key, v, ptoken))
        return r


#: Most nodes an answer carries when a hailing node asks for more (``hailing_k``).
MAX_WIDE_NODES = 32

#: Longest extension method name (a known method's name becomes a stats key).
MAX_METHOD_NAME = 64

#: Longest push token a listener may hand us (ours are TOKEN_BYTES; BEP5 allows any).
MAX_PTOKEN = 20

#: hailing extension error codes (docs/protocol.md).
ERR_RATE_LIMITED = 241
ERR_LISTENERS_FULL = 242

__all__ = [
    "ERR_LISTENERS_FULL", "ERR_RATE_LIMITED", "PROTOCOL_ERROR", "ExtensionHandler", "Responder",
]
