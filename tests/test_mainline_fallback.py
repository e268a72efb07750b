"""The BEP44 fallback (docs/protocol.md "BEP44 fallback"): sealed envelopes as BEP44
mutable items under per-pair, per-day keys, polled.

What is shown: the keys match an independent derivation and a pinned vector; only the
pair computes them, they differ per day and direction and link to nothing (many
identities); the size limit is BEP44's; a second message the same day replaces the
first and nothing is handed on twice; garbage under the key is dropped and counted; a
blocked contact's item is never even fetched; polls back off and speed up as designed,
never more than the bound in flight; closing stops every poll. On a loopback testnet of
hailing nodes that do not know the inbox methods, a call falls from the inbox to the
fallback and connects, a blocked caller gets nothing, a replayed item rings nothing.
(tests/interop/test_mainline_fallback_libtorrent.py: the same call over libtorrent
nodes only.)"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from pytest_helpers import loopback_ice
from session_doubles import eventually

from hailing import bencode
from hailing.dht import DhtConfig
from hailing.dht import bep44 as b44
from hailing.dht.bep44 import MutableItem
from hailing.errors import KrpcError, LocalProtocolError, PutRejected, QueryTimeout
from hailing.identity import Identity
from hailing.peer import Peer
from hailing.session.coupler import Inlet, MainlineCoupler
from hailing.session.dialer import FALLBACK_LADDER
from hailing.session.supervisor import Supervisor
from hailing.signaling import mainline_rdv
from hailing.signaling.mainline_rdv import (
    MAX_BLOB,
    ItemKey,
    MainlineRendezvous,
    item_key,
    item_seq,
)
from hailing.signaling.rendezvous import DAY, pair_key, pair_secret, public_key_inbox
from hailing.testnet import testnet as local_testnet

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)

NOON = 20_000 * DAY + DAY / 2  # a wall clock far from midnight


def ident(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"mainline test %d" % n).digest())


# -- an in-memory BEP44 network ---------------------------------------------------------


class FakeDht:
    """BEP44 storage every FakeNode shares, with storing nodes' put rules (check_put)."""

    def __init__(self) -> None:
        self.items: dict[bytes, MutableItem] = {}
        self.gets: list[bytes] = []  # targets asked for, in order
        self.lie: dict[bytes, MutableItem] = {}  # what a lying storing node answers
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate: asyncio.Event | None = None
        self.put_gate: asyncio.Event | None = None


class FakeNode:
    def __init__(self, net: FakeDht) -> None:
        self.net = net

    async def get_mutable(self, pubkey: bytes, salt: bytes = b"") -> MutableItem | None:
        target = b44.mutable_target(pubkey, salt)
        self.net.gets.append(target)
        self.net.in_flight += 1
        self.net.most_in_flight = max(self.net.most_in_flight, self.net.in_flight)
        try:
            if self.net.gate is not None:
                await self.net.gate.wait()
            await asyncio.sleep(0)
        finally:
            self.net.in_flight -= 1
        return self.net.lie.get(target) or self.net.items.get(target)

    async def put_mutable(self, signing_seed: bytes, value: Any, salt: bytes = b"",
                          seq: int | None = None, cas: int | None = None) -> bytes:
        assert seq is not None
        if self.net.put_gate is not None:
            await self.net.put_gate.wait()
        item = MutableItem.create(signing_seed, value, salt, seq)
        try:
            b44.check_put(self.net.items.get(item.target), item, cas)
        except PutRejected as exc:
            raise KrpcError(f"store failed: {exc.message} ({exc.code})", exc.code) from None
        self.net.items[item.target] = item
        return item.target


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pair(net: FakeDht, a: Identity, b: Identity, *, wall: Clock | None = None,
         mono: Clock | None = None, a_allows: Callable[[], list[bytes]] | None = None,
         b_allows: Callable[[], list[bytes]] | None = None,
         ) -> tuple[MainlineRendezvous, MainlineRendezvous]:
    wall = wall or Clock(NOON)
    kw: dict[str, Any] = {"clock": wall}
    if mono is not None:
        kw["monotonic"] = mono
    ra = MainlineRendezvous(FakeNode(net), a, a_allows or (lambda: [b.public_key]), **kw)
    rb = MainlineRendezvous(FakeNode(net), b, b_allows or (lambda: [a.public_key]), **kw)
    return ra, rb


# -- keys ---------------------------------------------------------------------------------


def independent_key(secret: bytes, recipient: bytes, day: int) -> tuple[bytes, bytes, bytes]:
    """(seed, pubkey, target) with hashlib and PyNaCl only, as docs/protocol.md says."""
    msg = day.to_bytes(4, "big") + recipient
    seed = hashlib.blake2b(msg, key=secret, digest_size=32, person=b"hailing-b44-seed").digest()
    salt = hashlib.blake2b(msg, key=secret, digest_size=16, person=b"hailing-b44-salt").digest()
    pub = bytes(SigningKey(seed).verify_key)
    return seed, pub, hashlib.sha1(pub + salt).digest()


def independent_pair(seed_a: bytes, pub_b: bytes) -> bytes:
    """The pair secret as docs/protocol.md states it, with PyNaCl's bindings only."""
    import nacl.bindings as nb

    pub_a = bytes(SigningKey(seed_a).verify_key)
    sk_a = nb.crypto_sign_ed25519_sk_to_curve25519(seed_a + pub_a)
    shared = nb.crypto_scalarmult(sk_a, nb.crypto_sign_ed25519_pk_to_curve25519(pub_b))
    lo, hi = sorted((pub_a, pub_b))
    return hashlib.blake2b(shared + lo + hi, digest_size=32, person=b"hailing-pair").digest()


@pytest.mark.parametrize("n", range(8))
def test_item_keys_match_an_independent_derivation(n: int) -> None:
    a, b = ident(2 * n), ident(2 * n + 1)
    secret = independent_pair(hashlib.sha256(b"mainline test %d" % (2 * n)).digest(),
                              b.public_key)
    assert secret == pair_secret(a, b.public_key) == pair_secret(b, a.public_key)
    day = 19_000 + 37 * n
    key = item_key(secret, b.public_key, day)
    assert (key.seed, key.pubkey, key.target) == independent_key(secret, b.public_key, day)
    assert len(key.salt) == mainline_rdv.SALT_SIZE


def test_item_key_pinned_vector() -> None:
    key = item_key(bytes(range(32)), bytes(range(32, 64)), 20_000)
    assert key.seed.hex() == PINNED_SEED
    assert key.salt.hex() == PINNED_SALT
    assert key.target.hex() == PINNED_TARGET


PINNED_SEED = "886e13e4e53a365aac10a708b910f0af0427d6fefd3c6ba4aaa126c3a0134dfb"
PINNED_SALT = "6c846f0d8b78e4bb14eb47eb6ad8bf06"
PINNED_TARGET = "ed1fd86899c3c4d7a0e9ac8fa86be7fe5ad3229c"


@pytest.mark.parametrize("seed", range(20))
def test_only_the_pair_computes_its_keys_and_they_link_to_nothing(seed: int) -> None:
    rng = random.Random(seed)
    a, b, c = (ident(rng.randrange(1 << 30)) for _ in range(3))
    net = FakeDht()
    ra, rb = pair(net, a, b)
    rc = MainlineRendezvous(FakeNode(net), c, lambda: [])
    day = 19_000 + rng.randrange(2000)
    # both contacts compute both directions
    assert ra.outbox(b.public_key, day) == rb.inbox(a.public_key, day)
    assert rb.outbox(a.public_key, day) == ra.inbox(b.public_key, day)
    keys: list[ItemKey] = [ra.outbox(b.public_key, day), rb.outbox(a.public_key, day),
                           ra.outbox(b.public_key, day + 1), ra.outbox(b.public_key, day - 1)]
    # a third party's keys with either of them are others
    keys += [rc.outbox(a.public_key, day), rc.outbox(b.public_key, day),
             rc.inbox(a.public_key, day), rc.inbox(b.public_key, day)]
    targets = [k.target for k in keys]
    pubkeys = [k.pubkey for k in keys]
    assert len(set(targets)) == len(targets)  # per direction, per day, per pair
    assert len(set(pubkeys)) == len(pubkeys)  # the signing key too: no link by key
    # nothing public names them: not the identities, not hailing's inbox keys
    secret = pair_secret(a, b.public_key)
    public = {a.public_key, b.public_key, c.public_key, pair_key(secret, b.public_key, day),
              pair_key(secret, a.public_key, day), public_key_inbox(a.public_key, day),
              public_key_inbox(b.public_key, day)}
    for k in keys:
        assert k.pubkey not in public and k.target not in public
        assert all(p[:20] != k.target for p in public)


def test_item_seq_is_the_milliseconds_into_the_day() -> None:
    assert item_seq(20_000 * DAY, 20_000) == 0
    assert item_seq(20_000 * DAY + 1.5, 20_000) == 1500
    assert item_seq(20_000 * DAY + DAY - 0.001, 20_000) == DAY * 1000 - 1


# -- writing ------------------------------------------------------------------------------


async def test_the_size_limit_is_bep44s() -> None:
    net = FakeDht()
    ra, _ = pair(net, ident(1), ident(2))
    assert len(bencode.encode(b"x" * MAX_BLOB)) == b44.MAX_VALUE_SIZE
    assert MainlineCoupler.capabilities.max_blob == MAX_BLOB
    assert await ra.send(ident(2).public_key, b"x" * MAX_BLOB) == 1
    with pytest.raises(LocalProtocolError, match="does not fit a BEP44 item"):
        await ra.send(ident(2).public_key, b"x" * (MAX_BLOB + 1))
    with pytest.raises(LocalProtocolError):
        await ra.send(ident(2).public_key, b"")
    assert ra.stats["mainline_puts"] == 1 and len(net.items) == 1


@pytest.mark.parametrize("name", ["chromium150-offer-av-data.sdp", "aiortc-offer-av-data.sdp",
                                  "chromium150-answer-av-data.sdp",
                                  "aiortc-answer-av-data.sdp"])
async def test_sealed_media_offers_and_answers_fit_an_item(name: str) -> None:
    from hailing.session.external import pack_external_sdp
    from hailing.signaling import envelope

    sdp = (Path(__file__).parent / "data" / "sdp" / name).read_text()
    body, fp = pack_external_sdp(sdp, None)
    a, b = ident(1), ident(2)
    blob = envelope.seal(a, b.public_key, envelope.KIND_OFFER, body, now=NOON, fingerprint=fp)
    assert len(blob) <= MAX_BLOB
    net = FakeDht()
    ra, rb = pair(net, a, b)
    assert await ra.send(b.public_key, blob) == 1
    got: list[bytes] = []
    await rb.refresh()
    await rb.poll(a.public_key, got.append)
    assert got == [blob]


async def test_a_second_message_replaces_the_first_with_a_higher_seq() -> None:
    a, b = ident(1), ident(2)
    net, wall = FakeDht(), Clock(NOON)
    ra, _ = pair(net, a, b, wall=wall)
    await ra.send(b.public_key, b"offer one")
    first = net.items[ra.outbox(b.public_key).target]
    wall.now -= 5.0  # the clock goes back: the seq still grows
    await ra.send(b.public_key, b"offer two")
    second = net.items[ra.outbox(b.public_key).target]
    assert second.value == b"offer two" and second.seq > first.seq
    assert first.seq == item_seq(NOON, 20_000)
    # another process of ours wrote later: the storing nodes' 302 -> one more than theirs
    other = MainlineRendezvous(FakeNode(net), a, lambda: [], clock=Clock(NOON + 3600))
    await other.send(b.public_key, b"from elsewhere")
    await ra.send(b.public_key, b"offer three")
    third = net.items[ra.outbox(b.public_key).target]
    assert third.value == b"offer three" and third.seq == item_seq(NOON + 3600, 20_000) + 1


async def test_a_cancel_sent_while_its_offer_is_being_stored_lands_after_it() -> None:
    a, b = ident(1), ident(2)
    net = FakeDht()
    ra, _ = pair(net, a, b)
    net.put_gate = asyncio.Event()
    offer = asyncio.ensure_future(ra.send(b.public_key, b"offer"))
    await asyncio.sleep(0.01)
    cancel = asyncio.ensure_future(ra.send(b.public_key, b"cancel"))
    await asyncio.sleep(0.01)
    net.put_gate.set()
    assert await offer == 1 and await cancel == 1
    stored = net.items[ra.outbox(b.public_key).target]
    assert stored.value == b"cancel"
    assert ra._writing == {}  # nothing kept per item once written


async def test_a_put_nobody_stores_is_one_clear_error() -> None:
    class Refusing(FakeNode):
        async def put_mutable(self, *a: Any, **k: Any) -> bytes:
            raise KrpcError("store failed: no node accepted the value (201)", 201)

    r = MainlineRendezvous(Refusing(FakeDht()), ident(1), lambda: [], clock=Clock(NOON))
    with pytest.raises(Exception, match="no DHT node stored the BEP44 item") as info:
        await r.send(ident(2).public_key, b"offer")
    assert not isinstance(info.value, LocalProtocolError)
    assert r.stats["mainline_put_errors"] == 1


# -- reading ------------------------------------------------------------------------------


async def test_items_are_handed_on_once_and_replaced_ones_again() -> None:
    a, b = ident(1), ident(2)
    net, wall = FakeDht(), Clock(NOON)
    ra, rb = pair(net, a, b, wall=wall)
    await rb.refresh()
    got: list[bytes] = []
    await rb.poll(a.public_key, got.append)
    assert got == []
    await ra.send(b.public_key, b"offer one")
    await rb.poll(a.public_key, got.append)
    await rb.poll(a.public_key, got.append)  # the same item: not again
    wall.now += 1
    await ra.send(b.public_key, b"offer one")  # the same bytes, a new seq: again (the
    await rb.poll(a.public_key, got.append)    # router drops the replay, see below)
    await ra.send(b.public_key, b"offer two")
    await rb.poll(a.public_key, got.append)
    assert got == [b"offer one", b"offer one", b"offer two"]
    assert rb.stats["mainline_items"] == 3 and rb.stats["mainline_gets"] == 5


def forged(key: ItemKey, value: Any, seq: int, *, sign_with: bytes | None = None,
           raw: bytes | None = None) -> MutableItem:
    v = raw if raw is not None else bencode.encode(value)
    sig = b44.sign(sign_with or key.seed, key.salt, seq, v)
    return MutableItem(key.pubkey, key.salt, seq, v, sig)


async def test_garbage_under_the_key_is_dropped_and_counted() -> None:
    a, b = ident(1), ident(2)
    net = FakeDht()
    ra, rb = pair(net, a, b)
    await rb.refresh()
    key = ra.outbox(b.public_key)
    got: list[bytes] = []
    cases: list[tuple[MutableItem, str]] = [
        (forged(key, b"offer", 10, sign_with=b"\x07" * 32), "mainline_bad_signatures"),
        (forged(key, 42, 11), "mainline_bad_items"),                   # not a byte string
        (forged(key, [b"offer"], 12), "mainline_bad_items"),
        (forged(key, None, 13, raw=b"9:short"), "mainline_bad_items"),   # not bencode
        (forged(key, b"x" * 1500, 14), "mainline_bad_items"),            # over BEP44's size
        (forged(key, b"", 15), "mainline_bad_items"),
    ]
    for item, counter in cases:
        before = rb.stats[counter]
        net.lie[key.target] = item
        await rb.poll(a.public_key, got.append)
        assert rb.stats[counter] == before + 1, counter
    # an item for another key (a storing node answering with someone else's item)
    other = ra.outbox(b.public_key, 19_999)
    net.lie[key.target] = forged(other, b"elsewhere", 20)
    await rb.poll(a.public_key, got.append)
    assert rb.stats["mainline_bad_signatures"] == 2
    assert got == []
    net.lie.clear()
    await ra.send(b.public_key, b"the real offer")
    await rb.poll(a.public_key, got.append)
    assert got == [b"the real offer"]


@pytest.mark.parametrize("seed", range(10))
async def test_random_garbage_never_escapes_and_is_counted(seed: int) -> None:
    rng = random.Random(seed)
    a, b = ident(1), ident(2)
    net = FakeDht()
    ra, rb = pair(net, a, b)
    await rb.refresh()
    key = ra.outbox(b.public_key)
    got: list[bytes] = []
    bad = 0
    for seq in range(1, 60):
        kind = rng.randrange(4)
        if kind == 0:  # random bytes as the bencoded value
            item = forged(key, None, seq, raw=rng.randbytes(rng.randrange(1, 1200)))
        elif kind == 1:  # a random bencodable value that is not a byte string
            item = forged(key, rng.choice([rng.randrange(-9, 9**9), [rng.randbytes(8)],
                                           {b"v": rng.randbytes(4)}]), seq)
        elif kind == 2:  # signed by someone else
            item = forged(key, rng.randbytes(rng.randrange(1, 900)), seq,
                          sign_with=rng.randbytes(32))
        else:  # a good item
            item = forged(key, rng.randbytes(rng.randrange(1, MAX_BLOB + 1)), seq)
        net.lie[key.target] = item
        try:
            ok = type(bencode.decode(item.value_bencoded)) is bytes
        except Exception:
            ok = False
        good = kind == 3 or (kind == 0 and ok and 0 < len(item.value) <= MAX_BLOB)
        before = len(got)
        await rb.poll(a.public_key, got.append)
        assert len(got) == before + (1 if good else 0)
        bad += 0 if good else 1
    assert rb.stats["mainline_bad_items"] + rb.stats["mainline_bad_signatures"] == bad
    assert rb.stats["mainline_items"] == len(got)


async def test_a_blocked_contact_is_never_polled() -> None:
    a, b, carol = ident(1), ident(2), ident(3)
    net = FakeDht()
    allowed = [a.public_key, carol.public_key]
    rb = MainlineRendezvous(FakeNode(net), b, lambda: list(allowed), clock=Clock(NOON))
    rc = MainlineRendezvous(FakeNode(net), carol, lambda: [], clock=Clock(NOON))
    rb.idle_min = rb.idle_max = 0.01
    await rb.refresh()
    assert set(rb.watched()) == {a.public_key, carol.public_key}
    allowed.remove(carol.public_key)  # blocked
    await rb.refresh()
    assert rb.watched() == [a.public_key] and rb.next_poll(carol.public_key) is None
    await rc.send(b.public_key, b"carol's offer")
    got: list[bytes] = []
    task = asyncio.ensure_future(rb.run(got.append))
    try:
        await eventually(lambda: net.gets.count(rb.inbox(a.public_key).target) >= 5,
                         "alice's item polled")
    finally:
        rb.close()
        await task
    assert rb.inbox(carol.public_key).target not in net.gets
    assert got == []


async def test_polls_back_off_and_come_back_when_something_arrives() -> None:
    a, b = ident(1), ident(2)
    net, wall, mono = FakeDht(), Clock(NOON), Clock(1000.0)
    ra, rb = pair(net, a, b, wall=wall, mono=mono)
    await rb.refresh()
    assert rb.next_poll(a.public_key) == 0.0
    waits = []
    for _ in range(6):
        await rb.poll(a.public_key, lambda blob: None)
        waits.append(rb.next_poll(a.public_key))
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    await ra.send(b.public_key, b"offer")
    await rb.poll(a.public_key, lambda blob: None)
    assert rb.next_poll(a.public_key) == mainline_rdv.IDLE_MIN
    # calling alice: fast polls until an answer written after the call started comes
    await rb.expect_from(a.public_key)
    assert rb.polling_fast(a.public_key)
    await rb.poll(a.public_key, lambda blob: None)
    assert rb.next_poll(a.public_key) == mainline_rdv.FAST_INTERVAL
    wall.now += 2
    await ra.send(b.public_key, b"the answer")
    await rb.poll(a.public_key, lambda blob: None)
    assert not rb.polling_fast(a.public_key)
    assert rb.next_poll(a.public_key) == mainline_rdv.IDLE_MIN


async def test_an_old_item_does_not_end_the_wait_for_an_answer() -> None:
    a, b = ident(1), ident(2)
    net, wall, mono = FakeDht(), Clock(NOON), Clock(0.0)
    ra, rb = pair(net, a, b, wall=wall, mono=mono, b_allows=lambda: [])
    await ra.send(b.public_key, b"an answer of an hour ago")
    wall.now += 3600
    await rb.expect_from(a.public_key)  # not a contact: polled only while calling
    got: list[bytes] = []
    await rb.poll(a.public_key, got.append)
    assert got == [b"an answer of an hour ago"]  # handed on (the router drops it)
    assert rb.polling_fast(a.public_key)
    mono.now += mainline_rdv.FAST_WINDOW + 1
    await rb.poll(a.public_key, got.append)
    assert not rb.polling_fast(a.public_key)  # a long call: its answer still heard
    assert rb.next_poll(a.public_key) == mainline_rdv.IDLE_MIN
    mono.now += mainline_rdv.EXPECT_TTL
    await rb.poll(a.public_key, got.append)
    assert rb.watched() == []  # the call is long over and it is no contact: not polled


async def test_near_midnight_both_days_are_read() -> None:
    a, b = ident(1), ident(2)
    net = FakeDht()
    wall = Clock(20_001 * DAY - 60)  # a minute before midnight
    ra, rb = pair(net, a, b, wall=wall)
    await ra.send(b.public_key, b"late offer")
    wall.now += 120  # the reader is past midnight
    got: list[bytes] = []
    await rb.refresh()
    await rb.poll(a.public_key, got.append)
    assert got == [b"late offer"]
    assert {rb.inbox(a.public_key, 20_000).target,
            rb.inbox(a.public_key, 20_001).target} <= set(net.gets)


@pytest.mark.parametrize("seed", range(5))
async def test_polls_are_round_robin_and_bounded(seed: int) -> None:
    rng = random.Random(seed)
    me = ident(100 + seed)
    contacts = [ident(rng.randrange(1 << 30)).public_key for _ in range(rng.randrange(6, 20))]
    net = FakeDht()
    net.gate = asyncio.Event()
    r = MainlineRendezvous(FakeNode(net), me, lambda: contacts, clock=Clock(NOON))
    r.max_in_flight = rng.randrange(1, 5)
    r.idle_min = r.idle_max = 0.01
    await r.refresh()
    task = asyncio.ensure_future(r.run(lambda blob: None))
    try:
        await eventually(lambda: net.in_flight == r.max_in_flight, "gets in flight")
        await asyncio.sleep(0.05)
        assert net.in_flight == r.max_in_flight  # held: no more started
        net.gate.set()
        wanted = {r.inbox(c).target for c in contacts}
        await eventually(lambda: wanted <= set(net.gets), "every contact polled")
        await eventually(lambda: all(net.gets.count(t) >= 3 for t in wanted),
                         "every contact polled again and again")
    finally:
        r.close()
        await task
    assert net.most_in_flight == r.max_in_flight


async def test_closing_the_coupler_stops_the_polling() -> None:
    a, b = ident(1), ident(2)
    net = FakeDht()
    stats: Counter[str] = Counter()
    supervisor = Supervisor(stats)
    coupler = MainlineCoupler(FakeNode(net), b, lambda: [a.public_key])  # type: ignore[arg-type]
    coupler.rendezvous.idle_min = coupler.rendezvous.idle_max = 0.01
    await coupler.start(Inlet("mainline", supervisor, stats))
    await eventually(lambda: len(net.gets) >= 3, "polls")
    assert len(supervisor) == 1
    await coupler.aclose()
    assert len(supervisor) == 0
    assert not [t for t in asyncio.all_tasks() if "mainline" in t.get_name()]
    polled = len(net.gets)
    await asyncio.sleep(0.1)
    assert len(net.gets) == polled
    await supervisor.aclose()
    assert stats["task_errors"] == 0


# -- the ladder ---------------------------------------------------------------------------


class Tick:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ladder_couplers(*names: str) -> list[Any]:
    from session_doubles import Switchboard

    board = Switchboard()
    return [board.coupler(b"o" * 32, n) for n in names]


async def test_the_fallback_has_the_whole_call_when_the_inbox_cannot_store() -> None:
    from hailing.errors import NotFoundError
    from hailing.session.dialer import Dialer

    clock = Tick()
    dialer = Dialer(ladder_couplers("dht", "mainline"), list(FALLBACK_LADDER), clock=clock)
    waits: list[tuple[str, float]] = []

    async def attempt(c: Any, wait: float) -> str:
        waits.append((c.name, wait))
        clock.now += 0.25
        if c.name == "dht":
            raise NotFoundError("no hailing node answered near this key (...)")
        return "connected"

    result, used = await dialer.dial(30.0, attempt)
    assert (result, used.name) == ("connected", "mainline")
    assert waits == [("dht", 30.0), ("mainline", 29.75)]  # the inbox alone: all of it


async def test_an_unanswered_inbox_offer_is_not_offered_again_through_the_fallback() -> None:
    from hailing.session.dialer import Dialer

    clock = Tick()
    dialer = Dialer(ladder_couplers("dht", "mainline"), list(FALLBACK_LADDER), clock=clock)
    tried: list[str] = []

    async def attempt(c: Any, wait: float) -> str:
        tried.append(c.name)
        clock.now += wait
        raise TimeoutError

    with pytest.raises(QueryTimeout) as info:
        await dialer.dial(8.0, attempt)
    # rung once: the callee heard the offer where it listens and did not answer
    assert tried == ["dht"]
    assert str(info.value) == ("nobody answered within 8 s (offline, busy, or not "
                               "accepting calls)")
    assert [a.coupler for a in dialer.last] == ["dht"]


# -- on a loopback testnet ----------------------------------------------------------------


async def test_put_and_get_round_trip_on_hailing_nodes() -> None:
    a, b = ident(1), ident(2)
    async with local_testnet(8) as nodes:
        ra = MainlineRendezvous(nodes[3], a, lambda: [])
        rb = MainlineRendezvous(nodes[6], b, lambda: [a.public_key])
        await rb.refresh()
        await ra.send(b.public_key, b"sealed offer bytes")
        got: list[bytes] = []
        await rb.poll(a.public_key, got.append)
        assert got == [b"sealed offer bytes"]
        # the writer's node does not repeat the put every hour: an envelope lives seconds
        assert not nodes[3].core.lookups.republish


@pytest.fixture
async def no_inbox_net(tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Hailing nodes that look like plain Mainline nodes (no ``v``: nobody takes them
    for hailing nodes, so no inbox post or listen finds a storing node)."""
    async with local_testnet(10, config=DhtConfig(version=None)) as nodes:
        yield nodes


async def fallback_peer(tmp: Path, name: str, nodes: list[Any]) -> Peer:
    # read-only nodes (as behind a NAT): the peers' own nodes store nothing either
    p = Peer(tmp / name, bootstrap=[nodes[0].address], dht_config=DhtConfig(read_only=True),
             ladder=list(FALLBACK_LADDER))
    await p.start()
    mainline = p.coupler("mainline")
    assert isinstance(mainline, MainlineCoupler)
    mainline.rendezvous.idle_max = 1.0  # keep the test short
    return p


async def test_a_call_falls_back_from_the_inbox_to_bep44_items(
        no_inbox_net: list[Any], tmp_path: Path) -> None:
    alice = await fallback_peer(tmp_path, "alice", no_inbox_net)
    bob = await fallback_peer(tmp_path, "bob", no_inbox_net)
    try:
        assert alice.contacts is not None and bob.contacts is not None
        alice.contacts.add(bob.contact_id, "bob")
        bob.contacts.add(alice.contact_id, "alice")
        await bob.refresh()
        assert bob.stats["inbox_listen_failures"] >= 1  # no inbox: started anyway
        conn = await alice.connect(bob.contact_id, timeout=30)
        assert conn.coupler == "mainline"
        inbox, fallback = alice._dialer().last
        assert inbox.coupler == "dht" and "no hailing node answered" in (inbox.error or "")
        assert fallback.coupler == "mainline" and fallback.error is None
        incoming = await bob.accept(timeout=10)
        assert incoming.peer == alice.public_key
        await conn.send_text("over BEP44 items")
        assert (await incoming.recv()).text == "over BEP44 items"  # type: ignore[union-attr]
        assert alice.stats["mainline_puts"] >= 1 and bob.stats["mainline_puts"] >= 1
        # a replayed item (the same offer, stored again with a higher seq) rings nothing
        mb = bob.coupler("mainline")
        assert isinstance(mb, MainlineCoupler)
        key = mb.rendezvous.inbox(alice.public_key)
        node = alice.node
        assert node is not None
        offer = await node.get_mutable(key.pubkey, key.salt)
        assert offer is not None
        rings = bob.stats["already_handled"] + bob.stats["duplicates"]
        items = bob.stats["mainline_items"]
        await node.put_mutable(key.seed, offer.value, key.salt, offer.seq + 1)
        await eventually(lambda: bob.stats["mainline_items"] > items, "the replay fetched")
        await eventually(lambda: bob.stats["already_handled"] + bob.stats["duplicates"]
                         > rings, "the replay dropped")
        assert bob.manager is not None and bob.manager.incoming.empty()
    finally:
        await alice.stop()
        await bob.stop()


async def test_a_blocked_caller_gets_nothing_through_the_fallback(
        no_inbox_net: list[Any], tmp_path: Path) -> None:
    alice = await fallback_peer(tmp_path, "alice", no_inbox_net)
    bob = await fallback_peer(tmp_path, "bob", no_inbox_net)
    try:
        assert alice.contacts is not None and bob.contacts is not None
        alice.contacts.add(bob.contact_id, "bob")
        bob.contacts.add(alice.contact_id, "alice")
        bob.contacts.block(alice.contact_id)
        await bob.refresh()
        mb = bob.coupler("mainline")
        assert isinstance(mb, MainlineCoupler)
        assert alice.public_key not in mb.rendezvous.watched()
        with pytest.raises(QueryTimeout, match="nobody answered"):
            await alice.connect(bob.contact_id, timeout=4)
        assert alice.stats["mainline_puts"] >= 1  # the offer was there to fetch
        assert bob.stats["mainline_gets"] == 0  # bob has nobody else to poll
        assert bob.stats["mainline_items"] == 0 and bob.calls.empty()
    finally:
        await alice.stop()
        await bob.stop()


async def test_without_the_fallback_rung_nothing_is_polled(
        no_inbox_net: list[Any], tmp_path: Path) -> None:
    p = Peer(tmp_path / "carol", bootstrap=[no_inbox_net[0].address],
             dht_config=DhtConfig(read_only=True), accept_any=True)
    with pytest.raises(Exception, match="no hailing node answered"):
        await p.start()  # a lone inbox rung still says so at once
    async with local_testnet(6) as nodes:  # where the inbox works
        q = Peer(tmp_path / "dave", bootstrap=[nodes[0].address])
        await q.start()
        try:
            assert q.contacts is not None
            q.contacts.add(ident(7).public_key, "erin")
            await q.refresh()
            assert [c.name for c in q.couplers] == ["dht"]
            assert not [t for t in asyncio.all_tasks() if "mainline" in t.get_name()]
            assert not any(k.startswith("mainline_") for k in q.stats)
        finally:
            await q.stop()


# -- hailing up ---------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "ladder"), [
    ([], [("dht", True), ("mainline", False)]),
    (["--no-bep44-fallback"], [("dht", True)]),
    (["--relay", "ws://127.0.0.1:1"], [("ws", True)]),
])
def test_hailing_up_falls_back_to_bep44_unless_told_not_to(
        tmp_path: Path, flags: list[str], ladder: list[tuple[str, bool]]) -> None:
    from hailing.cli import build_parser
    from hailing.cli._shared import prepare
    from hailing.cli.up import _daemon_parts

    args = build_parser().parse_args(
        ["up", "--data-dir", str(tmp_path), "--bootstrap", "127.0.0.1:1", *flags])
    prepare(args)
    make_peer, *_ = _daemon_parts(args)
    peer = make_peer(None)
    # the overlay's rungs (an open link, the network coupler) come first when there are
    # any (docs/overlay.md); what this test is about is what follows them
    assert [(r.name, r.after_timeout) for r in peer.ladder
            if r.name not in ("link", "network")] == ladder
