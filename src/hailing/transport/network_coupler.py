"""The network coupler: node-to-node links opened by signaling forwarded through the overlay.

Theory of operation
-------------------
:class:`NetworkCoupler` is a :class:`~hailing.transport.datachannel.LinkCoupler`: the
link driver calls :meth:`NetworkCoupler.couple` to open a link to a node it has none
to. Two forwarded messages of kind ``link`` (:mod:`hailing.transport.forward`) do it:

1. *hello*: ``0x01 | E`` (the origin's fresh X25519 public key, nothing secret).
   The target answers ``0x01 | T`` (its own fresh key for this coupling).
2. *offer*: ``0x02 | E | box(e, T)[bencode {"id": origin id, "tgt": target asked,
   "sdp": offer}]``; the target checks that the target asked is its own id (or a
   prefix of it), answers ``0x02 | box(t, E)[bencode {"id": target id, "sdp":
   answer}]``, and adopts the data channel when it opens. The origin checks that the
   id in the answer is the one it asked for, and adopts its side.

``box`` is libsodium's ``crypto_box`` (PyNaCl's :class:`nacl.public.Box`: X25519,
XSalsa20-Poly1305, a random nonce carried in front). Forwarders see two public keys,
sizes and the target id, never SDP, candidates or addresses. The keys are not bound to
any identity (a node id is not a key): a forwarder on the path could answer in the
target's place and be linked instead (docs/threat-model.md); what a link carries is
DHT traffic, open to any node anyway, and identities are proven above it (envelopes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from typing import Any

import nacl.exceptions
import nacl.public

from .. import bencode
from ..errors import BencodeError, HailingError, LocalProtocolError, RemoteProtocolError, SdpError
from .datachannel import LinkDriver
from .forward import ERR_RATE_LIMITED, Forwarder
from .links import Link
from .linksdp import LinkAnswer, LinkOffer

KIND = b"link"
HELLO = 1
OFFER = 2
#: Couplings a target keeps between hello and offer (the oldest is forgotten first).
MAX_PENDING = 64
#: Peer connections a target holds open waiting for the origin's channel.
MAX_OPENING = 16
#: How long a target waits for the offer after a hello, and for the channel after it.
PENDING_TTL = 30.0
OPEN_TIMEOUT = 20.0
_KEY = 32

__all__ = ["KIND", "NetworkCoupler", "attach"]


class NetworkCoupler:
    """Opens links through ``forwarder`` (and answers the couplings others start)."""

    name = "network"

    def __init__(self, forwarder: Forwarder, driver: LinkDriver, *,
                 timeout: float = 10.0) -> None:
        self.forwarder = forwarder
        self.driver = driver
        self.timeout = timeout
        self._pending: OrderedDict[bytes, tuple[nacl.public.PrivateKey, float]] = OrderedDict()
        self._opening: set[asyncio.Task[None]] = set()
        #: Seconds of the last couplings' steps: (the hello's round trip, the offer being
        #: made beside it; what making the offer took beyond that; the offer's round trip
        #: with the target's answer; the channel open after the answer).
        self.timings: deque[tuple[float, float, float, float]] = deque(maxlen=256)
        self._loop = asyncio.get_running_loop()
        forwarder.handle(KIND, self._on_message)

    def _count(self, what: str) -> None:
        self.forwarder._count("link_" + what)

    # -- the origin ------------------------------------------------------------------

    async def couple(self, driver: LinkDriver, target: bytes) -> Link:
        """Open a link to the node whose id is (or starts with) ``target``."""
        if driver is not self.driver:
            raise LocalProtocolError("this coupler serves another driver")
        fwd = self.forwarder
        secret = nacl.public.PrivateKey.generate()
        ours = bytes(secret.public_key)
        t0 = self._loop.time()
        # The offer is made (ICE gathering) while the hello travels.
        making = asyncio.ensure_future(LinkOffer.create(driver))
        try:
            reply = await fwd.send_toward(target, KIND, bytes([HELLO]) + ours, self.timeout)
        except BaseException:
            making.cancel()
            with contextlib.suppress(BaseException):
                await (await making).cancel()
            raise
        t1 = self._loop.time()
        offer = await making
        try:
            if len(reply) != 1 + _KEY or reply[0] != HELLO:
                self._count("bad_replies")
                raise RemoteProtocolError("malformed hello reply")
            box = nacl.public.Box(secret, nacl.public.PublicKey(reply[1:]))
            plain = bencode.encode({b"id": fwd._core.node_id, b"tgt": target,
                                    b"sdp": offer.sdp.encode()})
            t2 = self._loop.time()
            reply = await fwd.send_toward(target, KIND, bytes([OFFER]) + ours
                                          + box.encrypt(plain), self.timeout)
            t3 = self._loop.time()
            if not reply or reply[0] != OFFER:
                self._count("bad_replies")
                raise RemoteProtocolError("malformed offer reply")
            answer = _open(box, reply[1:])
            peer_id, sdp = answer.get(b"id"), answer.get(b"sdp")
            if type(peer_id) is not bytes or len(peer_id) != 20 or type(sdp) is not bytes:
                self._count("bad_replies")
                raise RemoteProtocolError("malformed answer")
            if not peer_id.startswith(target):
                self._count("wrong_peer")
                raise RemoteProtocolError("the answer comes from another node than asked")
        except BaseException:
            await offer.cancel()
            raise
        link = await offer.finish(sdp.decode("utf-8", "replace"), peer_id=peer_id,
                                  timeout=OPEN_TIMEOUT)
        self.timings.append((t1 - t0, t2 - t1, t3 - t2, self._loop.time() - t3))
        self._count("coupled")
        return link

    # -- the target ------------------------------------------------------------------

    async def _on_message(self, payload: bytes, origin: bytes) -> bytes:
        step = payload[:1]
        if step == bytes([HELLO]):
            return self._on_hello(payload)
        if step == bytes([OFFER]):
            return await self._on_offer(payload)
        self._count("bad_messages")
        raise RemoteProtocolError("unknown coupling step")

    def _on_hello(self, payload: bytes) -> bytes:
        if len(payload) != 1 + _KEY:
            self._count("bad_messages")
            raise RemoteProtocolError("a hello is 33 bytes")
        now = self._loop.time()
        pending = self._pending
        while pending and next(iter(pending.values()))[1] <= now:
            pending.popitem(last=False)
        secret = nacl.public.PrivateKey.generate()
        pending[payload[1:]] = (secret, now + PENDING_TTL)
        pending.move_to_end(payload[1:])
        while len(pending) > MAX_PENDING:
            pending.popitem(last=False)
            self._count("pending_dropped")
        self._count("hellos")
        return bytes([HELLO]) + bytes(secret.public_key)

    async def _on_offer(self, payload: bytes) -> bytes:
        theirs = payload[1:1 + _KEY]
        entry = self._pending.pop(theirs, None)
        if entry is None or entry[1] <= self._loop.time():
            self._count("unknown_offers")
            raise RemoteProtocolError("no hello for this offer")
        box = nacl.public.Box(entry[0], nacl.public.PublicKey(theirs))
        offer = _open(box, payload[1 + _KEY:])
        origin_id, target, sdp = offer.get(b"id"), offer.get(b"tgt"), offer.get(b"sdp")
        if (type(origin_id) is not bytes or len(origin_id) != 20 or type(sdp) is not bytes
                or type(target) is not bytes or not 5 <= len(target) <= 20):
            self._count("bad_messages")
            raise RemoteProtocolError("malformed offer")
        own = self.forwarder._core.node_id
        if not own.startswith(target):
            self._count("wrong_target")
            raise RemoteProtocolError("this offer is meant for another node")
        if len(self._opening) >= MAX_OPENING:
            self._count("busy")
            raise RemoteProtocolError("too many couplings under way", ERR_RATE_LIMITED)
        try:
            link_answer = await LinkAnswer.create(self.driver, sdp.decode("utf-8", "replace"),
                                                  peer_id=origin_id, timeout=OPEN_TIMEOUT)
        except SdpError:
            self._count("bad_sdp")
            raise RemoteProtocolError("the offer's SDP was refused") from None
        task = asyncio.ensure_future(self._wait_open(link_answer))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        plain = bencode.encode({b"id": own, b"sdp": link_answer.sdp.encode()})
        return bytes([OFFER]) + box.encrypt(plain)

    async def _wait_open(self, link_answer: LinkAnswer) -> None:
        try:
            await link_answer.link()
        except asyncio.CancelledError:
            await link_answer.cancel()
            raise
        except HailingError:
            self._count("open_timeouts")
            return
        self._count("answered")

    async def aclose(self) -> None:
        """Stop answering couplings; peer connections still opening are closed."""
        for task in list(self._opening):
            task.cancel()
        for task in list(self._opening):
            with contextlib.suppress(asyncio.CancelledError, HailingError):
                await task
        self._pending.clear()


def _open(box: nacl.public.Box, sealed: bytes) -> dict[bytes, Any]:
    try:
        value = bencode.decode(box.decrypt(sealed))
    except (nacl.exceptions.CryptoError, BencodeError, ValueError, TypeError):
        raise RemoteProtocolError("a sealed coupling message does not open") from None
    if type(value) is not dict:
        raise RemoteProtocolError("a sealed coupling message is a dictionary")
    return value


def attach(node: Any, *, max_hops: int = 16, timeout: float = 10.0
           ) -> tuple[Forwarder, NetworkCoupler]:
    """Give a started :class:`~hailing.node.DhtNode` with a LinkDriver (``links=``) a
    forwarder and a network coupler (added to the driver's couplers). Close them with
    ``await coupler.aclose(); await forwarder.aclose()`` before the node stops."""
    driver = node.links
    if not isinstance(driver, LinkDriver):
        raise LocalProtocolError("the node has no link driver")
    forwarder = Forwarder(node, driver, max_hops=max_hops)
    coupler = NetworkCoupler(forwarder, driver, timeout=timeout)
    driver.couplers.append(coupler)
    return forwarder, coupler
