"""The public-Mainline fallback: sealed envelopes as BEP44 mutable items, polled.

Where no hailing node is reachable (the public Mainline DHT with no hailing node near a
key, or every hailing node down), hailing's inbox methods find nobody to store a post.
Every Mainline node (libtorrent, ...) stores BEP44 mutable items, though, so a sealed
offer or answer can wait there for its recipient to fetch it (docs/protocol.md, "BEP44
fallback").

Theory of operation
-------------------
**Keys.** For each direction (sender -> recipient) and UTC day ``d`` the two contacts
share one mutable item, derived from their pair secret
(:func:`~hailing.signaling.rendezvous.pair_secret`, which only they can compute)::

    seed = BLAKE2b-256(key=pair secret, d (4 bytes, big-endian) || recipient key,
                       person="hailing-b44-seed")      # the ed25519 signing seed
    salt = BLAKE2b-128(key=pair secret, same message, person="hailing-b44-salt")
    target = SHA1(ed25519 public key of seed || salt)  # BEP44

Both contacts can compute both directions' keys: the sender signs its item, the
recipient computes the target and verifies. Outsiders, storing nodes included, see a
fresh public key and salt every day and for every pair: nothing links them to each
other, to anyone's identity or to yesterday's item.

**Items.** The value ``v`` is the sealed envelope itself (a bencoded byte string, so an
envelope of at most :data:`MAX_BLOB` bytes: BEP44's 1000 bytes of ``v``). ``seq`` is
the milliseconds since the start of the key's day when it was written (at least one
more than the writer's last seq on that key), so a second message the same day replaces
the first (an offer, then its CANCEL; the next call's offer) and a reader can tell a
fresh item from an old one. Nothing else is in the item: who wrote it, what it is and
for whom are inside the sealed envelope.

**Readers poll** (:meth:`MainlineRendezvous.run`), never more than :data:`MAX_IN_FLIGHT`
gets at once, the peers whose poll is due oldest first (round-robin):

- a peer we are calling (:meth:`~MainlineRendezvous.expect_from`) every
  :data:`FAST_INTERVAL` seconds, until an item written after the call started arrives
  or :data:`FAST_WINDOW` seconds pass (then, if it is no contact, as a contact for
  :data:`EXPECT_TTL`: a late answer to a long call is still heard);
- every allowed contact, for its offers: every :data:`IDLE_MIN` seconds, doubling
  after each poll that found nothing new up to :data:`IDLE_MAX`, back to the minimum
  when something arrives. With ``IDLE_MAX`` 8 s an offer to an idle callee waits 4 s
  for its poll on average (p50 about 4 s plus one get), which keeps a call through the
  fallback within issue 11's p50 target of 10 s.

Blocked and unknown senders are not polled at all: their items sit unread, which is
exactly what an offline callee looks like. Near midnight both days' keys are read. An
item is handed on once (by seq); what it holds is the session's business (the router
opens it, drops replays and stale offers). Garbage (a value that is not a byte string,
too large, or, from a lying storing node, a bad signature) is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.encoding
import nacl.hash

from .. import bencode
from ..dht import bep44
from ..dht.bep44 import MutableItem
from ..errors import HailingError, KrpcError, LocalProtocolError
from ..identity import Identity
from .rendezvous import DAY, day_of, listen_days, pair_secret

__all__ = [
    "EXPECT_TTL",
    "FAST_INTERVAL",
    "FAST_WINDOW",
    "IDLE_MAX",
    "IDLE_MIN",
    "MAX_BLOB",
    "MAX_IN_FLIGHT",
    "ItemKey",
    "MainlineRendezvous",
    "item_key",
    "item_seq",
]

#: The largest envelope an item carries: BEP44 allows 1000 bytes of bencoded ``v``, and
#: a byte string of 996 bytes is ``996:`` + 996 bytes.
MAX_BLOB = bep44.MAX_VALUE_SIZE - len(b"%d:" % (bep44.MAX_VALUE_SIZE - 4))
#: Bytes of the salt (BEP44 allows up to 64).
SALT_SIZE = 16
#: Poll interval of a peer whose answer we wait for (seconds), and how long we wait.
FAST_INTERVAL = 0.5
FAST_WINDOW = 60.0
#: How long a peer we called is polled at all (as a contact once the fast window is
#: over), whether or not it is a contact: longer than any call waits.
EXPECT_TTL = 15 * 60.0
#: Poll interval of an allowed contact, for its offers: from IDLE_MIN, doubled after
#: each poll that found nothing new, up to IDLE_MAX (seconds).
IDLE_MIN = 2.0
IDLE_MAX = 8.0
#: Most gets in flight at once.
MAX_IN_FLIGHT = 4
#: One get gives up after this long (the core's lookups end well before).
GET_TIMEOUT = 15.0
#: An item written this long before a call started is not its answer (clock skew).
SKEW = 60.0
#: Item keys kept computed (peer, direction, day); all forgotten when full.
KEY_CACHE = 4096
#: BEP44: "sequence number less than current" (the writer's clock went back).
_SEQ_TOO_LOW = bep44.ERR_SEQ_TOO_LOW


@dataclass(frozen=True, slots=True)
class ItemKey:
    """One direction's mutable item of one day: the signing seed (only the pair can
    compute it), its public key and the salt. ``target`` is where it is stored."""

    seed: bytes
    pubkey: bytes
    salt: bytes

    @property
    def target(self) -> bytes:
        return bep44.mutable_target(self.pubkey, self.salt)


def item_key(secret: bytes, recipient_pub: bytes, day: int) -> ItemKey:
    """The item that carries envelopes to ``recipient_pub`` on ``day`` from the other
    holder of the pair ``secret`` (see the module docstring)."""
    if len(secret) != 32 or len(recipient_pub) != 32:
        raise LocalProtocolError("a pair secret and a public key are 32 bytes")
    msg = day.to_bytes(4, "big") + recipient_pub
    seed = nacl.hash.blake2b(msg, key=secret, digest_size=32, person=b"hailing-b44-seed",
                             encoder=nacl.encoding.RawEncoder)
    salt = nacl.hash.blake2b(msg, key=secret, digest_size=SALT_SIZE,
                             person=b"hailing-b44-salt", encoder=nacl.encoding.RawEncoder)
    return ItemKey(seed, bep44.public_key(seed), salt)


def item_seq(now: float, day: int) -> int:
    """The seq of an item written at ``now`` on the key of ``day``: milliseconds since
    the start of that day."""
    return max(0, int((now - day * DAY) * 1000))


class _Node(Protocol):
    """What the fallback needs of a DHT node (:class:`hailing.node.DhtNode` has it)."""

    async def get_mutable(self, pubkey: bytes, salt: bytes = b"") -> MutableItem | None: ...

    async def put_mutable(self, signing_seed: bytes, value: Any, salt: bytes = b"",
                          seq: int | None = None, cas: int | None = None) -> bytes: ...


@dataclass(slots=True)
class _Watch:
    """A peer whose items to us we poll."""

    interval: float = IDLE_MIN
    due: float = 0.0
    #: Until when (monotonic) we poll fast for its answer, and since when (wall clock).
    fast_until: float = 0.0
    #: Until when (monotonic) it is polled, contact or not (we called it).
    expect_until: float = 0.0
    fast_since: float = 0.0
    #: Target -> the highest seq handed on.
    seen: dict[bytes, int] = field(default_factory=dict)


class MainlineRendezvous:
    """Writes envelopes as BEP44 items under the pair's keys and polls ours (see the
    module docstring).

    ``allowed()`` returns the contacts to poll for offers, asked again at every
    :meth:`refresh`; ``deliver(blob)`` receives each new item's value. Counters go to
    ``stats``: ``mainline_puts``, ``mainline_put_errors``, ``mainline_gets``,
    ``mainline_get_errors``, ``mainline_items`` (new items handed on),
    ``mainline_bad_items`` (not a byte string, or larger than :data:`MAX_BLOB`) and
    ``mainline_bad_signatures`` (an item that does not verify under the key we asked
    for: a lying storing node; the node's own lookup already drops most)."""

    def __init__(self, node: _Node, identity: Identity, allowed: Callable[[], list[bytes]],
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 stats: Counter[str] | None = None) -> None:
        self.node = node
        self.identity = identity
        self._allowed = allowed
        self._clock = clock
        self._mono = monotonic
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.fast_interval = FAST_INTERVAL
        self.idle_min = IDLE_MIN
        self.idle_max = IDLE_MAX
        self.max_in_flight = MAX_IN_FLIGHT
        self._secrets: dict[bytes, bytes] = {}
        self._watch: dict[bytes, _Watch] = {}
        self._contacts: set[bytes] = set()
        self._last_seq: dict[bytes, int] = {}  # target we wrote -> its seq
        self._keys: dict[tuple[bytes, bytes, int], ItemKey] = {}
        self._writing: dict[bytes, tuple[asyncio.Lock, int]] = {}  # target -> lock, users
        self._wake = asyncio.Event()
        self._closed = False

    # -- keys -----------------------------------------------------------------------------

    def secret(self, peer_pub: bytes) -> bytes:
        s = self._secrets.get(peer_pub)
        if s is None:
            s = self._secrets[peer_pub] = pair_secret(self.identity, peer_pub)
        return s

    def outbox(self, peer_pub: bytes, day: int | None = None) -> ItemKey:
        """The item we write to ``peer_pub`` on ``day`` (default: today)."""
        d = day_of(self._clock()) if day is None else day
        return self._key(peer_pub, peer_pub, d)

    def inbox(self, peer_pub: bytes, day: int | None = None) -> ItemKey:
        """The item ``peer_pub`` writes to us on ``day`` (default: today)."""
        d = day_of(self._clock()) if day is None else day
        return self._key(peer_pub, self.identity.public_key, d)

    def _key(self, peer_pub: bytes, recipient: bytes, day: int) -> ItemKey:
        cached = self._keys.get((peer_pub, recipient, day))
        if cached is None:
            if len(self._keys) >= KEY_CACHE:
                self._keys.clear()
            cached = self._keys[(peer_pub, recipient, day)] = item_key(
                self.secret(peer_pub), recipient, day)
        return cached

    def watched(self) -> list[bytes]:
        """The peers whose items to us are polled now."""
        return list(self._watch)

    def next_poll(self, peer_pub: bytes) -> float | None:
        """Seconds until ``peer_pub``'s item to us is polled next (0: due), None when it
        is not polled at all."""
        w = self._watch.get(peer_pub)
        return None if w is None else max(0.0, w.due - self._mono())

    def polling_fast(self, peer_pub: bytes) -> bool:
        """Whether we poll ``peer_pub`` fast (waiting for its answer)."""
        w = self._watch.get(peer_pub)
        return w is not None and w.fast_until > self._mono()

    # -- writing --------------------------------------------------------------------------

    async def send(self, peer_pub: bytes, blob: bytes) -> int:
        """Write ``blob`` (a sealed envelope) as today's item to ``peer_pub``, replacing
        the one before. Returns 1 (the storing nodes took it) or raises: a
        LocalProtocolError for a blob BEP44 cannot carry, else a HailingError."""
        if type(blob) is not bytes or not blob:
            raise LocalProtocolError("an envelope is non-empty bytes")
        if len(bencode.encode(blob)) > bep44.MAX_VALUE_SIZE:
            raise LocalProtocolError(
                f"a {len(blob)}-byte envelope does not fit a BEP44 item (at most "
                f"{MAX_BLOB} bytes: {bep44.MAX_VALUE_SIZE} bencoded)")
        now = self._clock()
        day = day_of(now)
        key = self.outbox(peer_pub, day)
        # one write at a time per item: an offer's CANCEL never lands under the offer
        lock, users = self._writing.get(key.target, (asyncio.Lock(), 0))
        self._writing[key.target] = (lock, users + 1)
        try:
            async with lock:
                return await self._write(key, blob, item_seq(now, day))
        finally:
            lock, users = self._writing[key.target]
            if users == 1:
                del self._writing[key.target]
            else:
                self._writing[key.target] = (lock, users - 1)

    async def _write(self, key: ItemKey, blob: bytes, seq: int) -> int:
        seq = max(seq, self._last_seq.get(key.target, -1) + 1)
        try:
            try:
                await self.node.put_mutable(key.seed, blob, key.salt, seq)
            except KrpcError as exc:
                if exc.code != _SEQ_TOO_LOW:
                    raise
                # our clock went back (or another process wrote): one more than theirs
                current = await self.node.get_mutable(key.pubkey, key.salt)
                seq = max(seq, (current.seq if current is not None else 0) + 1)
                await self.node.put_mutable(key.seed, blob, key.salt, seq)
        except HailingError as exc:
            self.stats["mainline_put_errors"] += 1
            raise HailingError(f"no DHT node stored the BEP44 item ({exc})") from exc
        except TimeoutError as exc:
            self.stats["mainline_put_errors"] += 1
            raise HailingError("no DHT node stored the BEP44 item (timed out)") from exc
        self._last_seq[key.target] = seq
        self.stats["mainline_puts"] += 1
        # An envelope lives seconds: the node need not repeat the put every hour.
        core = getattr(self.node, "core", None)
        if core is not None:
            core.cancel_republish(key.target)
        return 1

    # -- reading --------------------------------------------------------------------------

    async def refresh(self) -> int:
        """Re-read the allowed contacts: poll the new ones at once, stop polling the ones
        gone (unless we are waiting for their answer). Returns how many are polled."""
        now = self._mono()
        allowed = set(self._allowed())
        self._contacts = allowed
        for peer in allowed:
            if peer not in self._watch:
                self._watch[peer] = _Watch(interval=self.idle_min, due=now)
        for peer in list(self._watch):
            if peer not in allowed and self._watch[peer].expect_until <= now:
                del self._watch[peer]
        self._wake.set()
        return len(self._watch)

    async def expect_from(self, peer_pub: bytes) -> None:
        """Poll ``peer_pub``'s item to us fast: we are about to call it."""
        now = self._mono()
        w = self._watch.get(peer_pub)
        if w is None:
            w = self._watch[peer_pub] = _Watch()
        w.fast_until = now + FAST_WINDOW
        w.expect_until = now + EXPECT_TTL
        w.fast_since = self._clock()
        w.due = min(w.due, now + self.fast_interval)  # a new watch: at once
        self._wake.set()

    async def run(self, deliver: Callable[[bytes], object]) -> None:
        """Poll until :meth:`close`: the due peers oldest first, at most
        :attr:`max_in_flight` gets at once. Returns when closed; a poll that fails
        (a bug: remote garbage is counted, never raised) fails it."""
        running: dict[bytes, asyncio.Task[None]] = {}

        def done(task: asyncio.Task[None]) -> None:
            self._wake.set()

        try:
            while not self._closed:
                for peer, task in list(running.items()):
                    if task.done():
                        del running[peer]
                        task.result()  # a bug in a poll: the supervisor restarts us
                now = self._mono()
                due = sorted((w.due, p) for p, w in self._watch.items()
                             if w.due <= now and p not in running)
                for _, peer in due[: max(0, self.max_in_flight - len(running))]:
                    task = running[peer] = asyncio.ensure_future(self.poll(peer, deliver))
                    task.add_done_callback(done)
                self._wake.clear()
                later = [w.due for p, w in self._watch.items() if p not in running]
                wait = None
                if later and len(running) < self.max_in_flight:
                    wait = max(0.0, min(later) - self._mono())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            tasks = list(running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def poll(self, peer: bytes, deliver: Callable[[bytes], object]) -> None:
        """Read ``peer``'s item(s) to us once (today's; both days' near midnight), hand
        on what is new, and schedule the next poll (what :meth:`run` does when due)."""
        fresh = False
        got = False
        for day in listen_days(self._clock()):
            key = self.inbox(peer, day)
            self.stats["mainline_gets"] += 1
            try:
                async with asyncio.timeout(GET_TIMEOUT):
                    item = await self.node.get_mutable(key.pubkey, key.salt)
            except (HailingError, TimeoutError):
                self.stats["mainline_get_errors"] += 1
                continue
            w = self._watch.get(peer)
            if item is None or w is None:
                continue
            if item.seq <= w.seen.get(key.target, -1):
                continue
            if item.target != key.target or not item.is_valid():
                self.stats["mainline_bad_signatures"] += 1
                continue
            w.seen[key.target] = item.seq
            blob = _blob_of(item)
            if blob is None:
                self.stats["mainline_bad_items"] += 1
                continue
            self.stats["mainline_items"] += 1
            got = True
            written = day * DAY + item.seq / 1000
            if w.fast_until and written >= w.fast_since - SKEW:
                fresh = True
            deliver(blob)
        self._reschedule(peer, got, fresh)

    def _reschedule(self, peer: bytes, got: bool, fresh: bool) -> None:
        w = self._watch.get(peer)
        if w is None:
            return
        now = self._mono()
        days = {day_of(self._clock()) + i for i in (-1, 0, 1)}
        keep = {self.inbox(peer, d).target for d in days}
        w.seen = {t: s for t, s in w.seen.items() if t in keep}
        if fresh:  # the answer we waited for came
            w.fast_until = 0.0
        if got:
            w.interval = self.idle_min
        if w.fast_until > now:
            w.due = now + self.fast_interval
        elif peer in self._contacts or w.expect_until > now:
            w.due = now + w.interval
            w.interval = min(self.idle_max, w.interval * 2)  # the next, if nothing comes
        else:
            del self._watch[peer]

    def close(self) -> None:
        """Stop polling (:meth:`run` returns and cancels its gets)."""
        self._closed = True
        self._watch.clear()
        self._wake.set()


def _blob_of(item: MutableItem) -> bytes | None:
    """The envelope an item carries, or None for garbage."""
    if len(item.value_bencoded) > bep44.MAX_VALUE_SIZE:
        return None
    try:
        value = item.value
    except HailingError:
        return None
    if type(value) is not bytes or not 0 < len(value) <= MAX_BLOB:
        return None
    return value
