"""The listening side of hailing's inboxes (docs/protocol.md, "Inboxes"), a component
:class:`~hailing.dht.protocol.DhtProtocol` owns (``self.inboxes``).

Theory of operation
-------------------
:meth:`InboxClient.listen` starts a ``listen`` lookup of the key; its store phase sends
``hailing_listen`` to the closest hailing nodes, and each one that accepts is reported
back (:meth:`~InboxClient.granted`): it is remembered with its token until the ttl it
granted, and the values it already held are delivered. The listen is renewed at half its
ttl (:meth:`~InboxClient.renew_due`, from the protocol's maintenance tick) by a new
lookup, since storing nodes come and go.

:meth:`~InboxClient.unlisten` stops the renewals and sends ``hailing_listen`` with ttl 0
to every node that still holds the listen: it stops pushing to us, and the slot is free
at once instead of when the listen expires. A node that stops unlistens everything
(:meth:`~InboxClient.unlisten_all`); a grant that arrives after the unlisten is taken
back the same way. Nothing waits for the answers.

Pushes (``hailing_push``, :meth:`~InboxClient.on_push`) for keys we listen on become
:class:`~hailing.dht.events.InboxMessage` events, each value once whichever storing node
pushed it. A push must carry the push token (``ptoken``) that our listen gave that
storing node (:meth:`~InboxClient.push_token`, issued from our token secrets for the
storing node's IP, as a write token is): anyone else's push is refused with 203 and
counted (``push_bad_token``), so nobody but a node we listen at can push to us.

A *direct* push comes instead from a peer we handed a direct push token for the key
(:meth:`~InboxClient.direct_token`, bound to the key rather than to an IP; the session
seals it into a call's offer so that the callee's node can push the answer straight to
us): it is delivered like any push (counted ``pushes_direct``), and the copies the
storing nodes push later are the duplicates :class:`SeenValues` drops.

**Is anyone still holding the listen?** A storing node that goes away says nothing, and
its grant stays on our books until it expires (up to the ttl, 5 minutes). So every
:data:`HOLDER_CHECK` seconds (checked on the maintenance tick) each key none of whose
holders answered within that time has one of them pinged (one ping per address,
whatever the number of keys it holds; the holder heard from longest ago first). A holder
that does not answer (the query's hard timeout) is dropped from every key it held; the
key's other holders are pinged as soon as that ping stalls (its soft timeout, a round
trip or so), not after its hard timeout; a key left with no holder is *lost*: it is
looked up again at once (a renewal, which may find other storing nodes). Every change
of a key between "some live holder" and "none" (a grant, a holder dropped, the last
grant expiring) is an event, :class:`~hailing.dht.events.ListenChanged` (counted
``listens_live``, ``listens_lost``), so whoever runs a fallback for that key (the BEP44
fallback's polling, :mod:`hailing.signaling.mainline_rdv`) learns it at once;
:meth:`~InboxClient.live` says the same when asked. So a key whose storing nodes all
vanished is known lost at most ``HOLDER_CHECK`` (checked on the 10 s maintenance tick)
plus a soft and a hard query timeout (4 s) after: about 25 s at worst, 15 s on average
(48 s and 23 s with the 30 s check and the pings one after the other of before). A
holder's answer
to the ping refreshes a NAT's mapping to it too (besides the STUN keepalives). Cost: one
ping per holder address per ``HOLDER_CHECK`` (``listen_holder_pings``; a grant counts as
an answer).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

from ..errors import LocalProtocolError, RemoteProtocolError
from ..krpc import AddressCodec, Error, Query, Response
from .events import Event, InboxMessage, ListenChanged
from .inbox import MAX_LISTEN_TTL, MAX_VALUE, MAX_VALUES_PER_KEY, SeenValues
from .tokens import TokenManager
from .transactions import OnReply, Pending, SendQuery

#: Shortest listen ttl a client asks for (renewals at half of it).
MIN_LISTEN_TTL = 30.0
#: Seconds between checks that a listen's storing nodes are still there (a ping to one
#: that has not answered for that long; see the module docstring). A multiple of the
#: maintenance tick (10 s), which runs the checks.
HOLDER_CHECK = 20.0

#: How the client starts a lookup through its owner: (kind, key, now, store=, qid=) -> qid.
StartLookup = Callable[..., int]


class _Listen:
    __slots__ = ("check_due", "due", "live", "nodes", "ttl")

    def __init__(self, due: float, ttl: float) -> None:
        self.due = due
        self.ttl = ttl
        #: What the last ListenChanged said (a new key: not live), when to check holders.
        self.live = False
        self.check_due = 0.0
        #: Storing nodes that hold our listen: addr -> (node id, token, granted until).
        self.nodes: dict[Hashable, tuple[bytes | None, bytes, float]] = {}


class InboxClient:
    """The keys one node listens on. See the module docstring."""

    def __init__(
        self,
        node_id: bytes,
        *,
        start: StartLookup,
        send: SendQuery,
        emit: Callable[[Event], None],
        tokens: TokenManager,
        codec: AddressCodec,
        stats: Counter[str],
    ) -> None:
        self.node_id = node_id
        self._start = start
        self._send = send
        self._emit = emit
        self._tokens = tokens
        self._codec = codec
        self._stats = stats
        self._listens: dict[bytes, _Listen] = {}
        self._seen = SeenValues()
        #: Holder address -> when it last answered us (a grant or a ping).
        self._alive: dict[Hashable, float] = {}
        #: Holder addresses pinged now (their answer settles every key they hold).
        self._pinging: set[Hashable] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._listens

    def __len__(self) -> int:
        return len(self._listens)

    def holders(self, key: bytes, now: float) -> list[Hashable]:
        """The storing nodes known to hold our listen on ``key`` now."""
        entry = self._listens.get(key)
        if entry is None:
            return []
        return [a for a, (_, _, until) in entry.nodes.items() if until > now]

    def live(self, key: bytes, now: float) -> bool:
        """Whether some storing node holds our listen on ``key`` and, as far as we know,
        is still there (see the module docstring)."""
        return bool(self.holders(key, now))

    # -- commands ----------------------------------------------------------------------

    def listen(self, key: bytes, ttl: float, now: float) -> int:
        """Start (or restart) listening on ``key``; returns the lookup's query id."""
        ttl = min(max(ttl, MIN_LISTEN_TTL), MAX_LISTEN_TTL)
        entry = self._listens.get(key)
        if entry is None:
            entry = self._listens[key] = _Listen(now + ttl / 2, ttl)
        else:
            entry.due, entry.ttl = now + ttl / 2, ttl
        return self._start("listen", key, now, store=_listen_args(key, ttl))

    def unlisten(self, key: bytes, now: float) -> int:
        """Stop listening on ``key``: no more renewals, and ttl 0 to every node holding
        the listen. Returns how many unlisten requests were sent."""
        entry = self._listens.pop(key, None)
        if entry is None:
            return 0
        sent = 0
        for addr, (node_id, token, until) in entry.nodes.items():
            if until > now:
                self._unlisten_at(key, addr, node_id, token, now)
                sent += 1
        return sent

    def unlisten_all(self, now: float) -> int:
        return sum(self.unlisten(key, now) for key in list(self._listens))

    def push(self, addr: Hashable, key: bytes, value: bytes, ptoken: bytes, now: float,
             on_reply: OnReply | None = None) -> None:
        """Push ``value`` on ``key`` straight to the listener at ``addr`` with the direct
        push token it gave us: one ``hailing_push`` datagram, never repeated (a listener
        that refuses it, or is not there, costs nothing more), and whoever answers stays
        out of the routing table. ``on_reply`` hears its answer (a ``Response`` when the
        listener took the value, an ``Error``, or None after the hard timeout). Counted
        ``direct_pushes_sent``."""
        if type(key) is not bytes or len(key) != 20:
            raise LocalProtocolError("an inbox key is 20 bytes")
        if type(value) is not bytes or not 0 < len(value) <= MAX_VALUE:
            raise LocalProtocolError(f"an inbox value is 1..{MAX_VALUE} bytes")
        if type(ptoken) is not bytes or not 0 < len(ptoken) <= 20:
            raise LocalProtocolError("a push token is 1..20 bytes")
        self._stats["direct_pushes_sent"] += 1
        args: dict[bytes, Any] = {b"key": key, b"v": value, b"ptoken": ptoken}
        self._send(addr, b"hailing_push", args, now, on_reply=on_reply or _ignore)

    # -- what the protocol calls -------------------------------------------------------

    def push_token(self, addr: Hashable) -> bytes:
        """The push token a listen to the storing node at ``addr`` carries (``ptoken``)."""
        return self._tokens.issue_push(self._codec.ip_key(addr))

    def direct_token(self, key: bytes) -> bytes:
        """A push token for ``key`` that any pusher may use (see the module docstring)."""
        return self._tokens.issue_direct(key)

    def renew_due(self, now: float) -> None:
        """The maintenance tick: renew the listens due, and check their holders."""
        for key, entry in list(self._listens.items()):
            entry.nodes = {a: n for a, n in entry.nodes.items() if n[2] > now}
            if entry.due <= now:
                self._renew(key, entry, now)
            self._report(key, entry, now)
            if entry.nodes and entry.check_due <= now:
                entry.check_due = now + HOLDER_CHECK
                self._check(entry, now)
        held = {a for entry in self._listens.values() for a in entry.nodes}
        self._alive = {a: t for a, t in self._alive.items() if a in held}

    def _renew(self, key: bytes, entry: _Listen, now: float) -> None:
        entry.due = now + entry.ttl / 2
        self._start("listen", key, now, qid=-1, store=_listen_args(key, entry.ttl))

    def _report(self, key: bytes, entry: _Listen, now: float) -> None:
        live = bool(entry.nodes) and any(n[2] > now for n in entry.nodes.values())
        if live != entry.live:
            entry.live = live
            self._stats["listens_live" if live else "listens_lost"] += 1
            self._emit(ListenChanged(0, key, live))

    def _check(self, entry: _Listen, now: float, every: bool = False) -> None:
        """Ping one holder of ``entry`` (``every``: each one) unless one answered within
        HOLDER_CHECK or is being pinged."""
        recent = now - HOLDER_CHECK / 2  # within this round of checks
        if any(self._alive.get(a, -1.0) >= recent for a in entry.nodes):
            return
        if not every and any(a in self._pinging for a in entry.nodes):
            return  # its answer settles this key too
        ordered = sorted(entry.nodes, key=lambda a: self._alive.get(a, -1.0))
        for addr in ordered if every else ordered[:1]:
            if addr in self._pinging:
                continue
            self._pinging.add(addr)
            self._stats["listen_holder_pings"] += 1
            self._send(addr, b"ping", {}, now, node_id=entry.nodes[addr][0],
                       on_reply=partial(self._pong, addr), on_stall=partial(self._stalled, addr))

    def _stalled(self, addr: Hashable, p: Pending, now: float) -> None:
        """A holder's ping is late (soft timeout): the other holders of its keys are
        pinged now, so that a key whose holders all vanished is known lost one hard
        timeout later, not two."""
        for entry in list(self._listens.values()):
            if addr in entry.nodes:
                self._check(entry, now, every=True)

    def _pong(self, addr: Hashable, reply: Response | Error | None, p: Pending,
              now: float) -> None:
        self._pinging.discard(addr)
        if reply is not None:  # an error answer is an answer: the node is there
            self._alive[addr] = now
            return
        self._stats["listen_holders_gone"] += 1
        self._alive.pop(addr, None)
        for key, entry in list(self._listens.items()):
            if entry.nodes.pop(addr, None) is None:
                continue
            self._report(key, entry, now)
            if entry.nodes:
                self._check(entry, now, every=True)  # the others, at once
            else:
                self._renew(key, entry, now)  # other storing nodes, if any

    def granted(
        self, key: bytes, addr: Hashable, node_id: bytes | None, token: bytes, reply: Response,
        now: float,
    ) -> None:
        """A storing node accepted our listen on ``key`` (the engine's store phase)."""
        entry = self._listens.get(key)
        if entry is None:  # unlistened while the listen was on its way: take it back
            self._unlisten_at(key, addr, node_id, token, now)
            return
        ttl = reply.values.get(b"ttl")
        until = now + (ttl if type(ttl) is int and 0 < ttl <= entry.ttl else entry.ttl)
        entry.nodes[addr] = (node_id, token, until)
        self._alive[addr] = now
        self._report(key, entry, now)
        self.deliver(key, reply.values.get(b"values"))

    def on_push(self, q: Query, addr: Hashable, now: float) -> dict[bytes, Any]:
        """The ``hailing_push`` handler (a storing node hands us a new value)."""
        key = q.args.get(b"key")
        v = q.args.get(b"v")
        if type(key) is not bytes or type(v) is not bytes or len(v) > MAX_VALUE:
            raise RemoteProtocolError("hailing_push needs 'key' and 'v'")
        if key not in self._listens:
            raise RemoteProtocolError("not listening on this key")
        ptoken = q.args.get(b"ptoken")
        if not self._tokens.check_push(ptoken, self._codec.ip_key(addr)):
            if not self._tokens.check_direct(ptoken, key):
                self._stats["push_bad_token"] += 1
                raise RemoteProtocolError("invalid token")
            self._stats["pushes_direct"] += 1
        self.deliver(key, [v])
        return {b"id": self.node_id}

    def deliver(self, key: bytes, values: object) -> None:
        if type(values) is not list:
            return
        for v in values[:MAX_VALUES_PER_KEY]:
            if type(v) is bytes and self._seen.first_time(key, v):
                self._emit(InboxMessage(0, key, v))

    def _unlisten_at(
        self, key: bytes, addr: Hashable, node_id: bytes | None, token: bytes, now: float
    ) -> None:
        args: dict[bytes, Any] = {b"key": key, b"ttl": 0, b"token": token}
        self._send(addr, b"hailing_listen", args, now, node_id=node_id, on_reply=_ignore)


def _listen_args(key: bytes, ttl: float) -> tuple[bytes, dict[bytes, Any]]:
    return b"hailing_listen", {b"key": key, b"ttl": int(ttl)}


def _ignore(reply: object, p: Pending, now: float) -> None:
    return None
