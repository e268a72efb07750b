"""The identity-level ``network`` coupler: envelopes forwarded through the overlay.

Theory of operation
-------------------
When a node runs the data-channel overlay (a
:class:`~hailing.transport.datachannel.LinkDriver` with a
:class:`~hailing.transport.forward.Forwarder`), a sealed envelope can travel hop by hop
over existing data channels toward a target node id (next-hop, greedy by XOR distance,
with a hop limit and loop suppression: docs/overlay.md, "Forwarding"), with no DHT
storage and no relay. :class:`NetworkCoupler` is that path for the session's
envelopes: :meth:`~NetworkCoupler.send` forwards the sealed envelope as a message of
kind :data:`KIND` (``b"env"``) toward the **contact's node id**, which it learned from an
earlier link (:mod:`hailing.session.node_ids`, kept with the contact), and the
forwarder's handler for that kind puts what arrives into the coupler's inlet, where the
router opens and checks it like any envelope (forwarders only ever see sealed bytes).

The answer goes back the same way, toward the caller's node: the caller's
:meth:`~NetworkCoupler.reply_hint` is its own node id (sealed inside the offer, so only
the callee reads it), and the callee's :meth:`~NetworkCoupler.reply_direct` records it
as the route of that caller's answer (a caller whose node id the callee never learned
can still be answered; the hint wins over an older recorded id).

:meth:`~NetworkCoupler.send` raises one line, so the Dialer moves on at once, when this
node has no overlay (``this node has no data-channel overlay``), the contact's node id
is unknown (``no node id known for this contact (learned over a first link)``), or, for
an offer, this node has no open data-channel link (``no open data-channel link to
forward through``: a daemon that just started, before its friend links; the forwarder
would send over UDP only, and a first hop at the contact's node's address from before
its restart waits out the query timeout, 4 s, before the DHT inbox is tried); a forward
that fails on the way raises the forwarder's error. An answer, a CANCEL or an endpoint
record goes back the way its offer came and is sent without that check.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..errors import HailingError, NotFoundError, QueryTimeout
from ..signaling import envelope
from ..transport.forward import MAX_PAYLOAD as FORWARD_MAX_PAYLOAD
from .coupler import Capabilities, Inlet, SignalKind
from .node_ids import NODE_ID_SIZE

__all__ = ["KIND", "NO_LINK", "NO_NODE_ID", "NO_OVERLAY", "SEND_TIMEOUT", "ForwarderLike",
           "NetworkCoupler"]

#: The forwarder message kind of a sealed session envelope.
KIND = b"env"
#: Seconds a forwarded envelope waits for the target node's acknowledgement.
SEND_TIMEOUT = 5.0
#: Answer routes learned from offers' hints, remembered (oldest forgotten first).
ROUTE_MEMORY = 1024
NO_OVERLAY = "this node has no data-channel overlay"
NO_NODE_ID = "no node id known for this contact (learned over a first link)"
NO_LINK = "no open data-channel link to forward through"


class ForwarderLike(Protocol):
    """What the coupler uses of :class:`~hailing.transport.forward.Forwarder`."""

    def handle(self, kind: bytes,
               handler: Callable[[bytes, bytes], Awaitable[bytes | None]]) -> None: ...

    async def send_toward(self, target: bytes, kind: bytes, payload: bytes,
                          timeout: float) -> bytes: ...


class NetworkCoupler:
    """Envelopes forwarded toward the contact's node (see the module docstring).
    ``forwarder()`` is this node's forwarder (None: no overlay), ``node_of(peer)`` the
    contact's node id as learned over a link, ``own()`` our node's id."""

    name = "network"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=0.05, private=True,
                                reach="friends",
                                max_blob=min(envelope.MAX_ENVELOPE, FORWARD_MAX_PAYLOAD))

    def __init__(self, forwarder: Callable[[], ForwarderLike | None],
                 node_of: Callable[[bytes], bytes | None],
                 own: Callable[[], bytes | None], *, stats: Counter[str] | None = None,
                 timeout: float = SEND_TIMEOUT) -> None:
        self._forwarder = forwarder
        self._node_of = node_of
        self._own = own
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.timeout = timeout
        self._inlet: Inlet | None = None
        self._routes: OrderedDict[bytes, bytes] = OrderedDict()  # caller -> its node id
        self._handled: ForwarderLike | None = None

    @property
    def available(self) -> bool:
        """This node has an overlay to forward through."""
        return self._forwarder() is not None

    async def start(self, sink: Inlet) -> None:
        self._inlet = sink
        self._register()

    def _register(self) -> ForwarderLike | None:
        fwd = self._forwarder()
        if fwd is not None and fwd is not self._handled:
            fwd.handle(KIND, self._arrived)
            self._handled = fwd
        return fwd

    async def _arrived(self, payload: bytes, origin: bytes) -> bytes | None:
        """The forwarder's handler: a sealed envelope for us (opened by the router)."""
        if self._inlet is None or not 0 < len(payload) <= envelope.MAX_ENVELOPE:
            self.stats["network_envelopes_dropped"] += 1
            return None
        self.stats["network_envelopes"] += 1
        self._inlet.put_nowait(payload)
        return None

    async def expect_from(self, peer: bytes) -> None:
        return None  # the answer is forwarded to our node, whose handler is registered

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        fwd = self._register()
        if fwd is None:
            raise NotFoundError(NO_OVERLAY)
        target = self._routes.get(peer) or self._node_of(peer)
        if target is None:
            raise NotFoundError(NO_NODE_ID)
        if kind == "offer" and not _has_open_link(fwd):
            self.stats["network_no_link"] += 1
            raise NotFoundError(NO_LINK)
        try:
            await fwd.send_toward(target, KIND, blob, self.timeout)
        except HailingError:
            raise
        except TimeoutError:
            raise QueryTimeout(f"the overlay did not deliver within {self.timeout:.0f} s"
                               ) from None
        self.stats["network_envelopes_sent"] += 1
        return 1

    async def refresh(self) -> int:
        self._register()
        return 0

    async def admit(self, sender: bytes, blob: bytes) -> str | None:
        return None

    def reply_hint(self, peer: bytes) -> bytes | None:
        own = self._own() if self._forwarder() is not None else None
        return own if own is not None and len(own) == NODE_ID_SIZE else None

    def reply_direct(self, peer: bytes, hint: bytes, blob: bytes) -> bool:
        """Record ``hint`` (the caller's node id) as where :meth:`send` forwards the
        answer (it sends nothing itself); False for a hint that is not a node id."""
        if len(hint) != NODE_ID_SIZE:
            self.stats["reply_hints_bad"] += 1
            return False
        self._routes[peer] = hint
        self._routes.move_to_end(peer)
        while len(self._routes) > ROUTE_MEMORY:
            self._routes.popitem(last=False)
        return True

    async def aclose(self) -> None:
        self._inlet = None


def _has_open_link(fwd: ForwarderLike) -> bool:
    """Whether ``fwd``'s link driver has an open link (a forwarder without one, a
    stand-in, is taken as having one)."""
    driver = getattr(fwd, "driver", None)
    links = getattr(driver, "links", None)
    if links is None:
        return True
    return any(getattr(x, "is_open", False) for x in links())
