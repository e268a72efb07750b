"""Relays from the DHT: public nodes volunteer a TURN service, others find them there.

Theory of operation
-------------------
A volunteer (:class:`RelayService`, ``hailing up --serve-relay``) runs coturn beside its
DHT node (:class:`~hailing.nat.turnserver.TurnServer`), announces itself with
``announce_peer`` under :data:`RELAY_INFOHASH` (implied port: its DHT port) at start and
every :data:`ANNOUNCE_INTERVAL`, and answers the KRPC extension method
``hailing_relay`` (docs/protocol.md): the query carries ``k``, a fresh X25519 public key
of the requester; the answer's ``r`` is a bencoded credential (:class:`TurnCredentials`:
TURN URLs, time-limited username and password, expiry) sealed to ``k`` (libsodium
sealed box), so only the requester can read it. Each source (an IPv4 address or IPv6
/64) may get :attr:`RelayService.per_source_hour` credentials an hour (a token bucket;
past it error 241); garbage arguments get error 203, a relay whose coturn is down 202;
all counted in :attr:`RelayService.stats`. coturn itself enforces the caps (bandwidth
per allocation and in all, allocations per credential and in all, lifetime).

A node that needs a relay (:class:`RelayFinder`) looks up :data:`RELAY_INFOHASH` with
``get_peers``, asks up to ``ask`` volunteers at once and keeps the first valid answer
(the fastest), until 80 % of its lifetime has passed; when nobody volunteers it says so
(None) and looks again no sooner than :data:`NEGATIVE_CACHE` later (doubling while
nobody volunteers, up to :data:`NEGATIVE_CACHE_MAX`), or when asked to (``refresh``). A credential whose
TURN server is not on the volunteer's own IP is refused (a volunteer cannot point
others' traffic at a third party).

What a relay learns: the transport addresses of the two peers it relays between, and
the encrypted (DTLS/SRTP) bytes between them: never who they are or what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from .. import bencode
from ..dht.quota import SourceBudget, source_of
from ..dht.responder import ERR_RATE_LIMITED
from ..errors import (
    PROTOCOL_ERROR,
    SERVER_ERROR,
    BencodeError,
    HailingError,
    LocalProtocolError,
    RemoteProtocolError,
)
from .turnserver import TurnConfig, TurnServer, rest_credentials

if TYPE_CHECKING:
    from ..node import Addr, DhtNode

log = logging.getLogger("hailing.nat.relay")

#: The info-hash volunteers announce themselves under.
RELAY_INFOHASH = hashlib.sha1(b"hailing relay v1").digest()
#: The KRPC extension method that hands out credentials (docs/protocol.md).
RELAY_METHOD = b"hailing_relay"
#: How long a minted credential is valid (s), and the longest a volunteer gives.
DEFAULT_TTL = 3600.0
MAX_TTL = 24 * 3600.0
#: Credentials one source may get an hour from one volunteer (token bucket: a burst of
#: PER_SOURCE_BURST, refilled at this rate).
PER_SOURCE_HOUR = 12
PER_SOURCE_BURST = 4
#: How often a volunteer announces itself (s; BEP5 peers expire after 30 min).
ANNOUNCE_INTERVAL = 15 * 60.0
#: A credential is used until this share of its lifetime has passed.
REFRESH_AT = 0.8
#: How long "nobody volunteers" is believed (s): 10 s after the first such answer (a
#: node that looked right after its start, before the DHT knew anyone), doubling with
#: each one after it, up to 5 minutes; a found relay resets it.
NEGATIVE_CACHE = 10.0
NEGATIVE_CACHE_MAX = 300.0
#: A finder waits this long for a volunteer's answer (s).
ASK_TIMEOUT = 5.0
#: Bounds of what a volunteer may send back.
MAX_SEALED = 2048
MAX_URLS = 4
MAX_FIELD = 256


@dataclass(frozen=True)
class TurnCredentials:
    """Time-limited TURN credentials: ``urls`` like ``"turn:198.18.0.5:3478?transport=udp"``,
    a TURN REST API ``username`` and ``password``, valid until ``expires`` (unix time)."""

    urls: tuple[str, ...]
    username: str
    password: str
    expires: float

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) of the first URL (for a TURN client such as aioice's)."""
        return _turn_address(self.urls[0])

    def ttl(self, now: float | None = None) -> float:
        """Seconds left until they expire."""
        return self.expires - (time.time() if now is None else now)

    def to_wire(self) -> bytes:
        """Bencoded, as sealed in a ``hailing_relay`` answer."""
        return bencode.encode({b"urls": [u.encode() for u in self.urls],
                               b"u": self.username.encode(), b"p": self.password.encode(),
                               b"e": int(self.expires)})

    @classmethod
    def from_wire(cls, data: bytes) -> TurnCredentials:
        """Parse :meth:`to_wire`'s bytes; RemoteProtocolError on anything else."""
        try:
            d = bencode.decode(data)
        except BencodeError:
            raise RemoteProtocolError("credentials are not bencoded") from None
        if type(d) is not dict:
            raise RemoteProtocolError("credentials are not a dictionary")
        urls, u, p, e = d.get(b"urls"), d.get(b"u"), d.get(b"p"), d.get(b"e")
        if (type(urls) is not list or not 0 < len(urls) <= MAX_URLS or type(e) is not int
                or not isinstance(u, bytes) or not isinstance(p, bytes)
                or not all(type(x) is bytes and 0 < len(x) <= MAX_FIELD for x in (*urls, u, p))):
            raise RemoteProtocolError("credentials lack urls, u, p or e")
        try:
            texts = tuple(x.decode("ascii") for x in urls)
            creds = cls(texts, u.decode("ascii"), p.decode("ascii"), float(e))
        except UnicodeDecodeError:
            raise RemoteProtocolError("credentials are not ASCII") from None
        for url in texts:
            _turn_address(url)
        return creds


def turn_url(host: str, port: int) -> str:
    """``turn:HOST:PORT?transport=udp`` (IPv6 in brackets, RFC 7065)."""
    h = f"[{host}]" if ":" in host else host
    return f"turn:{h}:{port}?transport=udp"


def _turn_address(url: str) -> tuple[str, int]:
    if not url.startswith("turn:"):
        raise RemoteProtocolError(f"not a turn: URL: {url[:40]!r}")
    rest = url[5:].split("?", 1)[0]
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        num = int(port)
    except ValueError:
        raise RemoteProtocolError(f"a TURN URL names an IP address and a port: {url[:60]!r}"
                                  ) from None
    if not sep or not 0 < num < 65536:
        raise RemoteProtocolError(f"bad port in {url[:60]!r}")
    return host, num


class RelayService:
    """A volunteer: coturn plus the ``hailing_relay`` method and the announces.

    ``node`` is the started DHT node it answers on; ``relay_dir`` holds coturn's files
    (``DATA_DIR/relay``). Call :meth:`start`, then :meth:`stop`."""

    def __init__(self, node: DhtNode, relay_dir: str | Path, config: TurnConfig, *,
                 ttl: float = DEFAULT_TTL, per_source_hour: float = PER_SOURCE_HOUR,
                 per_source_burst: float = PER_SOURCE_BURST,
                 announce_interval: float = ANNOUNCE_INTERVAL, binary: str = "turnserver",
                 clock: Callable[[], float] = time.time) -> None:
        if not 60 <= ttl <= MAX_TTL:
            raise LocalProtocolError(f"a relay credential lives 60..{MAX_TTL:.0f} s")
        self.node = node
        self.turn = TurnServer(relay_dir, config, binary=binary)
        self.ttl = ttl
        self.per_source_hour = per_source_hour
        self.announce_interval = announce_interval
        self._clock = clock
        self._budget = SourceBudget(per_source_hour / 3600.0, per_source_burst)
        #: requests, minted, bad_args, rate_limited, unavailable, announces, announce_failed.
        self.stats: Counter[str] = Counter()
        self._announcer: asyncio.Task[None] | None = None
        self._answering = False
        #: Set once the first announce has ended (stored or failed: see stats).
        self.announced = asyncio.Event()

    @property
    def urls(self) -> tuple[str, ...]:
        host, port = self.turn.address
        return (turn_url(host, port),)

    @property
    def address(self) -> tuple[str, int]:
        """Where TURN clients reach this relay."""
        return self.turn.address

    async def start(self) -> RelayService:
        """Start coturn (LocalProtocolError in one line when it cannot), answer
        ``hailing_relay`` and start announcing."""
        await self.turn.start()
        try:
            self.node.core.add_method(RELAY_METHOD, self._answer)
        except BaseException:
            await self.turn.stop()
            raise
        self._answering = True
        self._announcer = asyncio.ensure_future(self._announce_loop())
        return self

    async def stop(self) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
            self._announcer = None
        if self._answering:
            self._answering = False
            with contextlib.suppress(LocalProtocolError):  # the node may be stopped
                self.node.core.remove_method(RELAY_METHOD)
                self.node.core.cancel_republish(RELAY_INFOHASH)
        await self.turn.stop()

    async def __aenter__(self) -> RelayService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def mint(self, ttl: float | None = None) -> TurnCredentials:
        """Fresh credentials for this relay, valid ``ttl`` seconds (default the
        service's; at most :data:`MAX_TTL`)."""
        ttl = self.ttl if ttl is None else ttl
        if not 0 < ttl <= MAX_TTL:
            raise LocalProtocolError(f"a relay credential lives 0..{MAX_TTL:.0f} s")
        if not self.turn.secret:
            raise LocalProtocolError("the relay is not started")
        expires = int(self._clock() + ttl)
        username, password = rest_credentials(self.turn.secret, expires)
        return TurnCredentials(self.urls, username, password, float(expires))

    def status(self) -> dict[str, Any]:
        """For the daemon's status: where it serves, whether coturn runs, the counters."""
        host, port = self.address
        return {"address": f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
                "urls": list(self.urls), "ready": self.turn.ready, "pid": self.turn.pid,
                "stats": {**self.stats, **{f"turnserver_{k}": v
                                           for k, v in self.turn.stats.items()}}}

    # -- the hailing_relay method (called by the core, no IO) ---------------------------

    def _answer(self, args: dict[bytes, Any], addr: Hashable, now: float) -> dict[bytes, Any]:
        self.stats["requests"] += 1
        k = args.get(b"k")
        if type(k) is not bytes or len(k) != 32:
            self.stats["bad_args"] += 1
            raise RemoteProtocolError("argument 'k' must be a 32-byte X25519 public key",
                                      PROTOCOL_ERROR)
        if not self.turn.ready:
            self.stats["unavailable"] += 1
            raise RemoteProtocolError("relay unavailable", SERVER_ERROR)
        source = source_of(self.node.core.codec, addr, exempt_loopback=False)
        if not self._budget.allow(source, now):
            self.stats["rate_limited"] += 1
            raise RemoteProtocolError("rate limited", ERR_RATE_LIMITED)
        try:
            sealed = SealedBox(PublicKey(k)).encrypt(self.mint().to_wire())
        except CryptoError:  # a low-order point: no shared secret
            self.stats["bad_args"] += 1
            raise RemoteProtocolError("argument 'k' is not a usable X25519 key",
                                      PROTOCOL_ERROR) from None
        self.stats["minted"] += 1
        return {b"r": sealed}

    async def _announce_loop(self) -> None:
        while True:
            try:
                stored = await self.node.announce(RELAY_INFOHASH, implied=True)
                # We repeat it ourselves, more often than the core's hourly republish.
                self.node.core.cancel_republish(RELAY_INFOHASH)
                self.stats["announces"] += 1
                self.stats["announced_on"] = stored  # nodes that took the last one
                log.info("relay announced on %d nodes", stored)
            except HailingError as exc:
                self.stats["announce_failed"] += 1
                log.info("relay announce failed: %s", exc)
            self.announced.set()
            await asyncio.sleep(self.announce_interval)


class RelayFinder:
    """Finds a volunteer on the DHT and gets credentials from it (module docstring)."""

    def __init__(self, node: DhtNode, *, ask: int = 3, timeout: float = ASK_TIMEOUT,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.node = node
        self.ask = ask
        self.timeout = timeout
        self._clock = clock
        self._rng = rng or random.Random()
        #: lookups, asked, answers, errors, bad_replies, none_found, cached.
        self.stats: Counter[str] = Counter()
        self._cached: TurnCredentials | None = None
        self._renew_at = 0.0
        self._nobody_for = NEGATIVE_CACHE
        self._lock = asyncio.Lock()

    async def credentials(self, refresh: bool = False) -> TurnCredentials | None:
        """Valid credentials of a volunteer relay, or None when nobody volunteers.
        Cached until 80 % of their lifetime (or ``refresh``)."""
        async with self._lock:
            now = self._clock()
            if not refresh and now < self._renew_at:
                self.stats["cached"] += 1
                return self._cached
            creds = await self._find()
            now = self._clock()
            self._cached = creds
            if creds is not None:
                self._renew_at = now + REFRESH_AT * (creds.expires - now)
                self._nobody_for = NEGATIVE_CACHE
            else:
                self._renew_at = now + self._nobody_for
                self._nobody_for = min(2 * self._nobody_for, NEGATIVE_CACHE_MAX)
            return creds

    async def _find(self) -> TurnCredentials | None:
        self.stats["lookups"] += 1
        try:
            peers = await self.node.get_peers(RELAY_INFOHASH)
        except HailingError as exc:
            log.info("relay lookup failed: %s", exc)
            peers = []
        own = {self.node.address, self.node.reachable_address()}
        peers = [p for p in dict.fromkeys(peers) if p not in own]
        if not peers:
            self.stats["none_found"] += 1
            return None
        chosen = self._rng.sample(peers, min(self.ask, len(peers)))
        tasks = [asyncio.ensure_future(self._ask(p)) for p in chosen]
        try:
            for next_done in asyncio.as_completed(tasks):
                creds = await next_done
                if creds is not None:
                    return creds
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.stats["none_found"] += 1
        return None

    async def _ask(self, addr: Addr) -> TurnCredentials | None:
        """One volunteer's credentials, or None (counted) on any failure."""
        key = PrivateKey.generate()
        self.stats["asked"] += 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self.node.query(addr, RELAY_METHOD,
                                              {b"k": bytes(key.public_key)})
        except (HailingError, TimeoutError) as exc:
            self.stats["errors"] += 1
            log.info("relay %s refused or did not answer: %s", addr, exc)
            return None
        try:
            sealed = reply.get(b"r")
            if type(sealed) is not bytes or len(sealed) > MAX_SEALED:
                raise RemoteProtocolError("no sealed credentials (r)")
            try:
                plain = SealedBox(key).decrypt(sealed)
            except CryptoError:
                raise RemoteProtocolError("credentials not sealed to our key") from None
            creds = TurnCredentials.from_wire(plain)
            if any(_turn_address(u)[0] != str(ipaddress.ip_address(addr[0]))
                   for u in creds.urls):
                raise RemoteProtocolError("a TURN server that is not the volunteer's")
            if creds.ttl(self._clock()) < 60:
                raise RemoteProtocolError("credentials expired or about to")
        except RemoteProtocolError as exc:
            self.stats["bad_replies"] += 1
            log.info("relay %s sent bad credentials: %s", addr, exc)
            return None
        self.stats["answers"] += 1
        return creds


__all__ = [
    "ANNOUNCE_INTERVAL", "DEFAULT_TTL", "MAX_TTL", "PER_SOURCE_HOUR", "RELAY_INFOHASH",
    "RELAY_METHOD", "RelayFinder", "RelayService", "TurnCredentials", "turn_url",
]
