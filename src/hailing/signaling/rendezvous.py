"""Rendezvous keys and the DHT rendezvous backend.

Where a sealed offer or answer for someone is posted on the DHT:

- **pair keys**: two people share an X25519 secret (each side's identity secret with the
  other's public key). The inbox of ``recipient`` for messages from ``sender`` on day
  ``d`` is ``BLAKE2b(key=pair secret, d || recipient key)``, 20 bytes. Only the two of
  them can compute it; an outsider who sees the key cannot tell whose it is, and cannot
  link today's key to yesterday's, even knowing both public keys. A callee listens only
  on the keys of contacts it allows: a blocked (or unknown) caller posts into a key
  nobody listens to, which is exactly what an offline callee looks like.
- **public key**: ``BLAKE2b(d || recipient key)`` for strangers. A callee listens on it
  only with ``accept_any``; the session's DHT coupler posts an offer there only when no
  answer came through the pair key within a second (:mod:`hailing.session.coupler`). Anyone who knows the recipient's contact id can compute it
  (and so see that envelopes arrive there, though not from whom: envelopes hide the
  sender).

Days are UTC days (Unix time // 86400). Around midnight both days' keys are listened to,
so two clocks a few minutes apart still meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import nacl.bindings
import nacl.encoding
import nacl.hash

from ..errors import HailingError
from ..identity import Identity, x25519_public_key

DAY = 86400
#: Listen to the neighbouring day's keys when this close to midnight (clock skew).
MIDNIGHT_MARGIN = 15 * 60
#: How long the keys of a peer we called (:meth:`DhtRendezvous.expect_from`) stay
#: listened to, whatever refreshes happen meanwhile: longer than any call waits.
EXPECT_TTL = 15 * 60.0


def day_of(unix_time: float) -> int:
    return int(unix_time // DAY)


def pair_secret(me: Identity, peer_pub: bytes) -> bytes:
    """The 32-byte secret ``me`` shares with ``peer_pub`` (the same from both sides)."""
    shared = nacl.bindings.crypto_scalarmult(
        me.x25519_private_key.encode(), x25519_public_key(peer_pub)
    )
    a, b = sorted((me.public_key, peer_pub))
    return nacl.hash.blake2b(
        shared + a + b, digest_size=32, person=b"hailing-pair", encoder=nacl.encoding.RawEncoder
    )


def pair_key(secret: bytes, recipient_pub: bytes, day: int) -> bytes:
    return nacl.hash.blake2b(
        day.to_bytes(4, "big") + recipient_pub, key=secret, digest_size=20,
        person=b"hailing-rdv", encoder=nacl.encoding.RawEncoder,
    )


def public_key_inbox(recipient_pub: bytes, day: int) -> bytes:
    return nacl.hash.blake2b(
        day.to_bytes(4, "big") + recipient_pub, digest_size=20,
        person=b"hailing-public", encoder=nacl.encoding.RawEncoder,
    )


def listen_days(now: float) -> list[int]:
    """The days whose keys to listen on at ``now`` (two near midnight)."""
    d = day_of(now)
    into = now - d * DAY
    if into < MIDNIGHT_MARGIN:
        return [d - 1, d]
    if DAY - into < MIDNIGHT_MARGIN:
        return [d, d + 1]
    return [d]


class _Node(Protocol):
    """What the backend needs of a DHT node (hailing.node.DhtNode has it)."""

    async def post(self, key: bytes, value: bytes) -> int: ...
    async def listen(self, key: bytes, ttl: float = 300.0) -> int: ...
    def unlisten(self, key: bytes) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """A blob that arrived on one of our inboxes; ``peer`` is who the key belongs to
    (None for the public inbox: the envelope inside says who sent it)."""

    blob: bytes
    peer: bytes | None


class DhtRendezvous:
    """Posts blobs to others' inboxes and listens on ours, over hailing's DHT inboxes.

    ``allowed()`` returns the public keys of the contacts we accept calls from; it is
    asked again at every :meth:`refresh` (and each day), so blocking someone takes
    effect at the next refresh. The keys of a peer we are calling
    (:meth:`expect_from`) are kept through refreshes for :data:`EXPECT_TTL`, so a
    refresh in the middle of a call never stops us hearing its answer.
    """

    def __init__(
        self,
        node: _Node,
        identity: Identity,
        allowed: Callable[[], list[bytes]],
        accept_any: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.identity = identity
        self._allowed = allowed
        self._accept_any = accept_any
        self._clock = clock
        self._secrets: dict[bytes, bytes] = {}
        self._keys: dict[bytes, bytes | None] = {}  # listened key -> peer (None: public)
        self._expected: dict[bytes, float] = {}  # peer we called -> until when we listen
        #: Keys of ours some storing node has held (see :meth:`listens_lost`).
        self._held: set[bytes] = set()
        watch = getattr(node, "watch_listens", None)
        if watch is not None:
            watch(self._listen_changed)

    def _listen_changed(self, key: bytes, live: bool) -> None:
        if live and key in self._keys:
            self._held.add(key)

    def secret(self, peer_pub: bytes) -> bytes:
        s = self._secrets.get(peer_pub)
        if s is None:
            s = self._secrets[peer_pub] = pair_secret(self.identity, peer_pub)
        return s

    def peer_of(self, key: bytes) -> bytes | None:
        return self._keys.get(key)

    def listening(self, peer_pub: bytes) -> bool:
        """Whether every pair key we listen on for ``peer_pub`` is held by a storing
        node that still answers (``DhtNode.listening``): its offers reach us through
        the inbox. False when we do not listen for it at all, or the node cannot tell."""
        live = getattr(self.node, "listening", None)
        keys = [k for k, p in self._keys.items() if p == peer_pub]
        return bool(keys) and live is not None and all(live(k) for k in keys)

    def listens_lost(self) -> bool:
        """Whether our listens are known lost: some storing node held one of our keys
        once, and none that still answers holds any of them now (``DhtNode.listening``):
        the hailing nodes we had vanished. False when the node cannot tell, and for
        listens no node ever took (a node that never met a hailing node: its posts
        fail at once anyway)."""
        live = getattr(self.node, "listening", None)
        if live is None or not any(k in self._held for k in self._keys):
            return False
        return not any(live(k) for k in self._keys)

    def watch_listens(self, callback: Callable[[bytes], object]) -> None:
        """Call ``callback(peer)`` whenever a pair key of ``peer`` gains or loses its
        last live storing node (see :meth:`listening`); nothing for nodes that cannot
        tell."""
        watch = getattr(self.node, "watch_listens", None)
        if watch is None:
            return

        def changed(key: bytes, live: bool) -> None:
            peer = self._keys.get(key)
            if peer is not None:
                callback(peer)

        watch(changed)

    def knows(self, key: bytes) -> bool:
        return key in self._keys

    def inbox_key(self, peer_pub: bytes) -> bytes:
        """Today's key of our inbox for ``peer_pub``'s messages (where its answer comes)."""
        return pair_key(self.secret(peer_pub), self.identity.public_key, day_of(self._clock()))

    def outbox_key(self, peer_pub: bytes) -> bytes:
        """Today's key of ``peer_pub``'s inbox for our messages (where :meth:`send` posts)."""
        return pair_key(self.secret(peer_pub), peer_pub, day_of(self._clock()))

    async def refresh(self) -> int:
        """Listen on today's keys (and the neighbouring day's near midnight); stop
        listening on keys no longer wanted. Returns how many keys are listened to."""
        now = self._clock()
        wanted: dict[bytes, bytes | None] = {}
        me = self.identity.public_key
        self._expected = {p: t for p, t in self._expected.items() if t > now}
        for d in listen_days(now):
            for peer in [*self._allowed(), *self._expected]:
                wanted[pair_key(self.secret(peer), me, d)] = peer
            if self._accept_any():
                wanted[public_key_inbox(me, d)] = None
        for key in list(self._keys):
            if key not in wanted:
                self.node.unlisten(key)
                del self._keys[key]
        new = [k for k in wanted if k not in self._keys]
        self._keys.update(wanted)
        self._held &= set(self._keys)
        results = await asyncio.gather(*(self.node.listen(k) for k in new), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if new and len(failed) == len(new):
            first = failed[0]
            raise first if isinstance(first, HailingError) else HailingError(str(first))
        return len(self._keys)

    async def expect_from(self, peer_pub: bytes) -> None:
        """Listen for answers from ``peer_pub`` (a callee we are about to call)."""
        me = self.identity.public_key
        new = []
        now = self._clock()
        self._expected[peer_pub] = now + EXPECT_TTL
        for d in listen_days(now):
            key = pair_key(self.secret(peer_pub), me, d)
            if key not in self._keys:
                self._keys[key] = peer_pub
                new.append(key)
        await asyncio.gather(*(self.node.listen(k) for k in new))

    async def send(self, peer_pub: bytes, blob: bytes, *, public: bool = False,
                   kind: str = "offer") -> int:
        """Post ``blob`` to ``peer_pub``'s inbox for us (and its public inbox too when
        ``public``). Returns how many storing nodes took it. ``kind`` (offer, answer,
        endpoint) does not matter here: the envelope carries it."""
        d = day_of(self._clock())
        key = pair_key(self.secret(peer_pub), peer_pub, d)
        if not public:  # awaited directly: a task would send it a turn of the loop later
            try:
                stored = await self.node.post(key, blob)
            except HailingError:
                raise
            except Exception as exc:  # a timeout, say: reported as below
                raise HailingError("no DHT node stored the message") from exc
            if stored == 0:
                raise HailingError("no DHT node stored the message")
            return stored
        posts = [self.node.post(key, blob)]
        if public:
            posts.append(self.node.post(public_key_inbox(peer_pub, d), blob))
        results = await asyncio.gather(*posts, return_exceptions=True)
        stored = sum(r for r in results if isinstance(r, int))
        if stored == 0:
            err = next((r for r in results if isinstance(r, BaseException)), None)
            if isinstance(err, HailingError):
                raise err
            raise HailingError("no DHT node stored the message")
        return stored

    async def send_public(self, peer_pub: bytes, blob: bytes) -> int:
        """Post ``blob`` to ``peer_pub``'s public inbox only (an offer to a callee that
        may not know us). Returns how many storing nodes took it."""
        stored = await self.node.post(public_key_inbox(peer_pub, day_of(self._clock())), blob)
        if stored == 0:
            raise HailingError("no DHT node stored the message")
        return stored

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        for key in self._keys:
            with contextlib.suppress(HailingError):
                self.node.unlisten(key)
        self._keys.clear()
