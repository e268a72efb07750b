"""Couplers: every way a sealed offer, answer or endpoint record travels.

Theory of operation
-------------------
A coupler carries opaque sealed envelopes (:mod:`hailing.signaling.envelope`) between
two identities and knows nothing else: what is inside, who may call and what to answer
are the session's business (:mod:`hailing.session.router`). Every coupler has the same
interface, :class:`Coupler`, and describes itself with data, :class:`Capabilities`:
whether it needs a funded wallet, how long a message typically takes, whether it hides
who talks to whom, who it can reach, and the largest envelope it carries. Code that
chooses between couplers (the :class:`~hailing.session.dialer.Dialer`) reads that data;
it never asks what class a coupler is.

Lifecycle: :meth:`Coupler.start` gets an :class:`Inlet`, the coupler's end of the
session: it puts every envelope that arrives into ``inlet.queue`` and runs its
background loops with :meth:`Inlet.loop` (owned and restarted by the session's
:class:`~hailing.session.supervisor.Supervisor`). :meth:`~Coupler.expect_from` prepares
to hear from a peer we are about to call, :meth:`~Coupler.send` posts an envelope,
:meth:`~Coupler.refresh` re-reads what to listen for (contacts, the day),
:meth:`~Coupler.admit` is the coupler's own check of an envelope that came through it
(the contract's "paid by the sender's wallet of the day"; a pass elsewhere), and
:meth:`~Coupler.aclose` stops it.

**Answers that skip a hop.** A coupler may hand the caller a *reply hint*
(:meth:`~Coupler.reply_hint`): opaque bytes the session seals into the offer (so only
the callee reads them) and the callee's coupler of the same kind uses, once the
callee's policy accepted the call, to send the sealed answer straight back
(:meth:`~Coupler.reply_direct`) besides the usual way (the first copy wins; a second is
a duplicate the router or the DHT node drops). The DHT coupler's hint is a direct push
token and the caller's node address: its answer reaches the caller's node in one hop
instead of two (through a storing node), and once a caller's node has taken one, the
next answers to it go to the storing nodes only if their push is not taken in time
(:attr:`DhtCoupler.direct_ack_wait`). A coupler with nothing faster answers None and
False.

The adapters here wrap the signaling backends: :class:`DhtCoupler`
(:class:`~hailing.signaling.rendezvous.DhtRendezvous`, hailing's DHT inboxes),
:class:`MainlineCoupler` (:class:`~hailing.signaling.mainline_rdv.MainlineRendezvous`,
BEP44 items that any Mainline node stores, polled: the fallback where no hailing node
is reachable),
:class:`ContractCoupler` (:class:`~hailing.signaling.contract_rdv.ContractRendezvous`,
events of the signaling contract) and :class:`WsCoupler`
(:class:`~hailing.signaling.ws_rdv.WsRendezvous`, the WebSocket relay baseline).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..dht.inbox import MAX_VALUE as DHT_MAX_VALUE
from ..dht.tokens import TOKEN_BYTES
from ..errors import HailingError, LocalProtocolError, NotFoundError
from ..identity import Identity
from ..krpc import IPAddressCodec
from ..signaling.mainline_rdv import MAX_BLOB as MAINLINE_MAX_BLOB
from ..signaling.mainline_rdv import MainlineRendezvous
from ..signaling.rendezvous import DhtRendezvous
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ..node import DhtNode
    from ..signaling.contract_rdv import ChainStatus, ContractRendezvous
    from ..signaling.store import SignalStore
    from ..signaling.ws_rdv import WsRendezvous

__all__ = ["Capabilities", "ContractCoupler", "Coupler", "DhtCoupler", "InboxHealth", "Inlet",
           "MainlineCoupler", "NoReplyHints", "Reach", "SignalKind", "WsCoupler"]

#: What an envelope is, for a coupler that routes by it (``cancel``: a caller's CANCEL,
#: which travels the way its offer went).
SignalKind = Literal["offer", "answer", "endpoint", "cancel"]
#: Seconds after which an unanswered offer also goes to the callee's public inbox (see
#: :meth:`DhtCoupler.send`).
PUBLIC_DELAY = 1.0
#: Who a coupler can carry a first call from: ``anyone`` who knows the contact id, or
#: only ``friends`` who exchanged a secret beforehand (the contract's rotation secret).
Reach = Literal["anyone", "friends"]
#: The signaling contract's payload limit (``MAX_PAYLOAD`` in chain/contract.vy).
CONTRACT_MAX_PAYLOAD = 512
#: The relay's payload limit (``MAX_PAYLOAD`` in signaling/ws_relay.py; a test checks
#: they agree): aiohttp is imported only when a relay is used.
WS_MAX_PAYLOAD = 64 * 1024
#: How many envelopes may wait for the router, per coupler; more are dropped and counted.
INLET_SIZE = 1024
#: ``DhtCoupler.direct_ack_wait="auto"``: how long an answer waits for the caller's node
#: to take its direct push before it goes to the storing nodes, in round trips of the
#: last direct push it took, and the bounds (seconds); how many callers are remembered.
ACK_WAIT_RTTS = 4.0
ACK_WAIT_MIN = 0.05
ACK_WAIT_MAX = 0.5
ACK_MEMORY = 1024
#: The DHT coupler's reply hint: a direct push token, then a compact IPv4 or IPv6 address.
_HINT_SIZES = (TOKEN_BYTES + 6, TOKEN_BYTES + 18)
_ADDRESSES = IPAddressCodec()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a coupler is like: plain data, for ladders, UIs and docs."""

    #: Sending needs a funded wallet (gas) or a wallet of the day.
    needs_wallet: bool
    #: The usual one-way time of an envelope, in seconds (order of magnitude).
    typical_latency_s: float
    #: Observers (storing nodes, chain watchers, the relay) cannot tell who talks to whom.
    private: bool
    #: Who can reach a callee through it (see :data:`Reach`).
    reach: Reach
    #: The largest sealed envelope it carries, in bytes.
    max_blob: int


class Inlet:
    """A coupler's end of the session: where its envelopes go (``queue``, drained by
    the router, which calls ``task_done`` after handling each) and how it runs its
    background loops (owned by the session's supervisor)."""

    def __init__(self, name: str, supervisor: Supervisor, stats: Counter[str],
                 size: int = INLET_SIZE) -> None:
        self.name = name
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=size)
        self.stats = stats
        self._supervisor = supervisor

    def put_nowait(self, blob: bytes) -> bool:
        """Hand over an envelope; when the router is that far behind it is dropped and
        counted (``dropped_blobs``) and False returned."""
        if self.queue.full():
            self.stats["dropped_blobs"] += 1
            return False
        self.queue.put_nowait(blob)
        return True

    def loop(self, make: Callable[[], Coroutine[Any, Any, Any]], what: str
             ) -> asyncio.Task[Any]:
        """Run ``make()`` in the background for as long as the session runs (or until it
        returns); restarted (after a delay) if it fails, each failure logged and counted."""
        return self._supervisor.loop(make, name=f"{self.name} {what}")

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` once in the background, owned by the session (cancelled when it
        stops; a failure logged and counted)."""
        return self._supervisor.spawn(coro, name=f"{self.name} {what}")


class Coupler(Protocol):
    """The interface of every signaling path (see the module docstring)."""

    @property
    def name(self) -> str:
        """Short stable name: ``dht``, ``contract``, ``ws``, ..."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def start(self, sink: Inlet) -> None:
        """Start hearing envelopes (into ``sink``); raise a one-line error if unusable."""
        ...

    async def expect_from(self, peer: bytes) -> None:
        """Be ready to hear ``peer``'s answer to a call we are about to make."""
        ...

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        """Post a sealed envelope to ``peer``; returns how many carriers took it (>= 1)
        or raises a :class:`~hailing.errors.HailingError`."""
        ...

    async def refresh(self) -> int:
        """Re-read what to listen for (contacts, the day); returns how much is listened."""
        ...

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        """This coupler's own check of an envelope that came through it and opened as
        from ``sender``: None to go on, else the reason it is refused (counted as
        ``refused_<reason>``)."""
        ...

    def reply_hint(self, peer: bytes) -> bytes | None:
        """What our offer to ``peer`` should carry (sealed) so that its coupler can send
        the answer straight back to us (see the module docstring); None for nothing."""
        ...

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        """Send an answer ``blob`` to the caller ``peer`` straight through the reply
        ``hint`` of its offer, besides :meth:`send` (which the session calls too): at most
        one datagram, never repeated, and never for a call the policy did not accept.
        False when the hint is not usable here (counted ``reply_hints_bad``)."""
        ...

    async def aclose(self) -> None: ...


class NoReplyHints:
    """The :class:`Coupler` methods of a coupler with no check of its own and no straight
    way back for an answer: every envelope goes on, an offer carries no reply hint, and a
    hint is never usable here."""

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        return None

    def reply_hint(self, peer: bytes) -> bytes | None:
        return None

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        return False



# -- the DHT inbox ------------------------------------------------------------------------


class DhtCoupler:
    """Sealed envelopes through hailing's DHT inboxes (pair keys and the public inbox;
    see :mod:`hailing.signaling.rendezvous`). The node is started by its owner."""

    name = "dht"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=0.05, private=True,
                                reach="anyone", max_blob=DHT_MAX_VALUE)

    def __init__(self, node: DhtNode, identity: Identity, allowed: Callable[[], list[bytes]],
                 accept_any: Callable[[], bool], clock: Callable[[], float] = time.time,
                 public_delay: float = PUBLIC_DELAY,
                 direct_ack_wait: float | Literal["auto"] | None = "auto",
                 fallback: bool = False) -> None:
        self.node = node
        #: Another rung (the BEP44 fallback) carries calls where no hailing node is
        #: reachable: then a first listen that no node took does not stop the start
        #: (counted ``inbox_listen_failures``; the listens are renewed as usual).
        self.fallback = fallback
        self.rendezvous = DhtRendezvous(node, identity, allowed, accept_any, clock)
        self.public_delay = public_delay
        self._inlet: Inlet | None = None
        self._public: dict[bytes, asyncio.Task[Any]] = {}  # peer -> its delayed public post
        #: When an answer pushed directly also goes to the storing nodes (see
        #: :meth:`send`): None, at once; a number, only if the caller's node did not
        #: take the direct push within that many seconds; ``auto``, as None for a
        #: caller whose node has not taken our last direct answer, else as a number:
        #: :data:`ACK_WAIT_RTTS` times that push's round trip, within
        #: [:data:`ACK_WAIT_MIN`, :data:`ACK_WAIT_MAX`].
        self.direct_ack_wait = direct_ack_wait
        self._direct: dict[bytes, tuple[bytes, asyncio.Future[float | None]]] = {}
        #: Callers whose node took our last direct answer -> that push's round trip.
        self._took: OrderedDict[bytes, float] = OrderedDict()
        self._last_push: dict[bytes, asyncio.Future[float | None]] = {}

    async def start(self, sink: Inlet) -> None:
        self._inlet = sink
        await self.refresh()

        async def pump() -> None:
            while True:
                msg = await self.node.inbox()
                # Anything on a pair key of ours (an answer) shows that peer knows us:
                # the offer need not go to the public inbox as well.
                peer = self.rendezvous.peer_of(msg.key)
                pending = self._public.pop(peer, None) if peer is not None else None
                if pending is not None:
                    pending.cancel()
                sink.put_nowait(msg.value)

        sink.loop(pump, "inbox pump")

    async def expect_from(self, peer: bytes) -> None:
        await self.rendezvous.expect_from(peer)

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        """Post to ``peer``'s inbox for us (the pair key). An offer also goes to the
        public inbox, where a callee that accepts strangers hears it even when it does
        not know us (yet), but only :attr:`public_delay` seconds later and only if no
        answer came meanwhile: a contact answers through the pair key first, so most
        calls cost half the DHT messages and tell the public inbox's storing nodes
        nothing. If no node stores the pair-key post, the public one goes at once."""
        if kind == "offer" and self.fallback and self.rendezvous.listens_lost():
            # None of our own listens has a storing node left: no hailing node is in
            # reach, and a post would only wait for the vanished ones. The next rung
            # (the BEP44 fallback) gets the call at once.
            self._count("inbox_offers_skipped")
            raise NotFoundError("no hailing node holds our inbox listens: the inbox is out of reach")
        direct = self._direct.pop(peer, None) if kind == "answer" else None
        if direct is not None and direct[0] == blob:
            wait = self._ack_wait(peer)
            if wait is not None:
                try:  # the caller's node took the direct push: the storing nodes need not
                    async with asyncio.timeout(wait):
                        if await asyncio.shield(direct[1]) is not None:
                            self._count("answers_direct_only")
                            return 1
                except TimeoutError:
                    self._count("direct_answers_late")
                    self._took.pop(peer, None)  # both ways at once until one is taken
        if kind == "cancel":
            # where the offer went: the pair key, and the public inbox unless its delayed
            # post is still waiting (then it never goes)
            pending = self._public.pop(peer, None)
            if pending is not None and not pending.done():
                pending.cancel()
                return await self.rendezvous.send(peer, blob, kind=kind)
            return await self.rendezvous.send(peer, blob, public=True, kind=kind)
        if kind != "offer":
            try:
                return await self.rendezvous.send(peer, blob, kind=kind)
            except HailingError:
                # No storing node took it (a DHT too loaded to answer in time, say); an
                # answer the caller's node took by the direct push is delivered all the
                # same: failing here would hang up a call that is connecting
                if direct is None or direct[0] != blob or await asyncio.shield(direct[1]) is None:
                    raise
                self._count("answers_direct_only")
                self._count("answer_posts_failed")
                return 1
        try:
            stored = await self.rendezvous.send(peer, blob, kind=kind)
        except HailingError:
            return await self.rendezvous.send_public(peer, blob)
        self._post_public_later(peer, blob)
        return stored

    def _post_public_later(self, peer: bytes, blob: bytes) -> None:
        if self._inlet is None:
            return
        old = self._public.pop(peer, None)
        if old is not None:
            old.cancel()

        async def post() -> None:
            await asyncio.sleep(self.public_delay)
            try:
                await self.rendezvous.send_public(peer, blob)
            except HailingError:
                pass  # the pair-key post stands; the call times out if nobody answers
            finally:
                if self._public.get(peer) is task:
                    del self._public[peer]

        task = self._inlet.spawn(post(), "public offer")
        self._public[peer] = task

    def reply_hint(self, peer: bytes) -> bytes | None:
        """A direct push token for our inbox for ``peer`` (today's pair key: where its
        answer comes) and our node's address (compact, 6 or 18 bytes): with it the
        callee's node pushes the answer to ours itself, one hop instead of two. None when
        the node cannot tell its reachable address."""
        addr = self.node.reachable_address()
        packed = _ADDRESSES.pack(addr) if addr is not None else None
        if packed is None:
            return None
        return self.node.direct_token(self.rendezvous.inbox_key(peer)) + packed

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        """Push the answer ``blob`` straight to the caller's node named by ``hint`` (see
        :meth:`reply_hint`), on the key the answer is posted to. The datagram is our
        node's own push of our sealed answer: nothing in it is the caller's to choose."""
        addr = _ADDRESSES.unpack(hint[TOKEN_BYTES:]) if len(hint) in _HINT_SIZES else None
        if not isinstance(addr, tuple) or not 0 < len(blob) <= DHT_MAX_VALUE or not self.node.running:
            self._count("reply_hints_bad")
            return False
        taken = self.node.push(addr, self.rendezvous.outbox_key(peer), blob, hint[:TOKEN_BYTES])
        self._count("direct_answers_sent")
        self._last_push[peer] = taken
        taken.add_done_callback(lambda f: self._taken(peer, f))
        if self.direct_ack_wait is not None:
            self._direct[peer] = (blob, taken)
        return True

    def _taken(self, peer: bytes, push: asyncio.Future[float | None]) -> None:
        """Remember whether ``peer``'s node took our last direct answer (see ``auto``)."""
        if self._last_push.get(peer) is not push:
            return  # a later push decides
        del self._last_push[peer]
        self._took.pop(peer, None)
        rtt = push.result()
        if rtt is not None:
            self._took[peer] = rtt
            if len(self._took) > ACK_MEMORY:
                self._took.popitem(last=False)

    def _ack_wait(self, peer: bytes) -> float | None:
        if self.direct_ack_wait != "auto":
            return self.direct_ack_wait
        rtt = self._took.get(peer)
        if rtt is None:
            return None
        return min(ACK_WAIT_MAX, max(ACK_WAIT_MIN, ACK_WAIT_RTTS * rtt))

    def _count(self, what: str) -> None:
        if self._inlet is not None:
            self._inlet.stats[what] += 1

    def listening(self, peer: bytes) -> bool:
        """Whether ``peer``'s offers reach us through the inbox now: storing nodes hold
        our listens on its pair keys and still answer (see
        :meth:`DhtRendezvous.listening`)."""
        return self.rendezvous.listening(peer)

    def watch_listens(self, callback: Callable[[bytes], object]) -> None:
        """``callback(peer)`` whenever :meth:`listening` may have changed for ``peer``."""
        self.rendezvous.watch_listens(callback)

    async def refresh(self) -> int:
        try:
            return await self.rendezvous.refresh()
        except NotFoundError:
            if not self.fallback:
                raise
            self._count("inbox_listen_failures")
            return 0

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        return None

    async def aclose(self) -> None:
        for task in self._public.values():
            task.cancel()
        self._public.clear()
        self.rendezvous.close()


# -- the public-Mainline fallback -----------------------------------------------------------


class InboxHealth(Protocol):
    """What the BEP44 fallback asks of the inbox coupler beside it (:class:`DhtCoupler`):
    whether a contact's offers reach us through the inbox, and when that changes."""

    def listening(self, peer: bytes) -> bool: ...

    def watch_listens(self, callback: Callable[[bytes], object]) -> None: ...


class MainlineCoupler(NoReplyHints):  # no reply hint: the answer is polled: nothing faster to offer
    """Sealed envelopes as BEP44 mutable items under per-pair, per-day keys, polled
    (:mod:`hailing.signaling.mainline_rdv`): any Mainline node (libtorrent, ...) stores
    them, so it works where no hailing node is reachable. Only contacts reach us (the
    keys come from the pair secret) and only allowed ones are polled; an answer takes a
    poll (:data:`~hailing.signaling.mainline_rdv.FAST_INTERVAL`) plus a get, an offer to
    an idle callee up to :data:`~hailing.signaling.mainline_rdv.IDLE_MAX` more. With
    ``inbox`` (the ``dht`` coupler of the same ladder), a contact whose offers reach us
    through the inbox is polled only every
    :data:`~hailing.signaling.mainline_rdv.IDLE_HEALTHY` seconds, and at the fast idle
    schedule again as soon as the inbox says its listens are lost. The node is started
    by its owner (it may be shared with the ``dht`` coupler)."""

    name = "mainline"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=3.0, private=True,
                                reach="friends", max_blob=MAINLINE_MAX_BLOB)

    def __init__(self, node: DhtNode, identity: Identity, allowed: Callable[[], list[bytes]],
                 clock: Callable[[], float] = time.time, inbox: InboxHealth | None = None
                 ) -> None:
        self.rendezvous = MainlineRendezvous(
            node, identity, allowed, clock,
            inbox_live=inbox.listening if inbox is not None else None)
        if inbox is not None:
            inbox.watch_listens(self.rendezvous.inbox_changed)
        self._poller: asyncio.Task[Any] | None = None

    async def start(self, sink: Inlet) -> None:
        self.rendezvous.stats = sink.stats
        await self.rendezvous.refresh()
        self._poller = sink.loop(lambda: self.rendezvous.run(sink.put_nowait), "poller")

    async def expect_from(self, peer: bytes) -> None:
        await self.rendezvous.expect_from(peer)

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        # offer and CANCEL, answer and endpoint: each replaces the last one to that peer
        return await self.rendezvous.send(peer, blob)

    async def refresh(self) -> int:
        return await self.rendezvous.refresh()

    async def aclose(self) -> None:
        self.rendezvous.close()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)


# -- the WebSocket relay -----------------------------------------------------------------


class WsCoupler(NoReplyHints):  # no reply hint: the relay is one hop already
    """The centralized baseline: a WebSocket relay that forwards by contact id. It sees
    who talks to whom and who is online (``private`` is False)."""

    name = "ws"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=0.01, private=False,
                                reach="anyone", max_blob=WS_MAX_PAYLOAD)

    def __init__(self, url: str, identity: Identity) -> None:
        from ..signaling.ws_rdv import WsRendezvous

        self.rendezvous: WsRendezvous = WsRendezvous(url, identity)

    async def start(self, sink: Inlet) -> None:
        await self.rendezvous.start()
        sink.loop(lambda: self.rendezvous.pump(sink.put_nowait), "relay pump")

    async def expect_from(self, peer: bytes) -> None:
        return None

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        return await self.rendezvous.send(peer, blob, kind=kind)

    async def refresh(self) -> int:
        return 0

    async def aclose(self) -> None:
        await self.rendezvous.aclose()


# -- the signaling contract --------------------------------------------------------------


class ContractCoupler:
    """Offers, answers and endpoint records as events of the signaling contract, to the
    recipient's rotating address of the day (see :mod:`hailing.signaling.contract_rdv`).
    Build one with :meth:`open`. With ``require_wallet`` (a contract option),
    :meth:`admit` refuses envelopes whose transaction the sender's own wallet of the
    day did not pay."""

    name = "contract"

    def __init__(self, rendezvous: ContractRendezvous) -> None:
        self.rendezvous = rendezvous
        self._stats: Counter[str] = Counter()
        self.capabilities = Capabilities(
            needs_wallet=True, typical_latency_s=max(1.0, 2 * rendezvous.poll_interval),
            private=True, reach="friends", max_blob=CONTRACT_MAX_PAYLOAD)

    @classmethod
    async def open(cls, data_dir: str | os.PathLike[str], identity: Identity,
                   store: SignalStore, *, rpc_url: str, clock: Callable[[], float] = time.time,
                   **options: Any) -> ContractCoupler:
        """Connect to the chain (see :meth:`ContractRendezvous.open`; ``options`` are its
        keyword arguments). web3 is imported only here, when a contract is used."""
        from ..signaling.contract_rdv import ContractRendezvous

        return cls(await ContractRendezvous.open(data_dir, identity, store, rpc_url=rpc_url,
                                                 clock=clock, **options))

    @property
    def status_events(self) -> asyncio.Queue[ChainStatus]:
        """The chain endpoint going down and coming back (for ``listen``'s output)."""
        return self.rendezvous.status_events

    async def start(self, sink: Inlet) -> None:
        self._stats = sink.stats
        await self.rendezvous.prepare(sink.queue)
        sink.loop(self.rendezvous.watch, "watcher")

    async def expect_from(self, peer: bytes) -> None:
        await self.rendezvous.expect_from(peer)

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        if len(blob) > self.capabilities.max_blob:
            raise LocalProtocolError(f"a {len(blob)}-byte envelope does not fit a contract "
                                     f"event (at most {self.capabilities.max_blob})")
        # a CANCEL goes where its offer went: an Offer event to the callee's address
        return await self.rendezvous.send(peer, blob,
                                          kind="offer" if kind == "cancel" else kind)

    async def refresh(self) -> int:
        return await self.rendezvous.refresh()

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        if not self.rendezvous.require_wallet:
            return None
        # The seed's authentication by wallet: the transaction must have been paid by the
        # sender's own wallet of the day, which only its friends can compute.
        if not await self.rendezvous.paid_by(sender, blob):
            return "wallet"
        self._stats["wallet_verified"] += 1
        return None

    def reply_hint(self, peer: bytes) -> bytes | None:
        return None  # a chain event reaches the recipient only through the chain

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        return False

    async def aclose(self) -> None:
        await self.rendezvous.aclose()
