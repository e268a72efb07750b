"""Rendezvous keys (pair and public inboxes) and the DHT rendezvous backend.

The key functions are pure; :class:`DhtRendezvous` is driven first against a recording
fake node (what it listens on and when it stops), then once end to end on a loopback
testnet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hailing.errors import HailingError, KrpcError
from hailing.identity import Identity
from hailing.node import DhtNode
from hailing.signaling.rendezvous import (
    DAY,
    EXPECT_TTL,
    MIDNIGHT_MARGIN,
    DhtRendezvous,
    day_of,
    listen_days,
    pair_key,
    pair_secret,
    public_key_inbox,
)
from hailing.testnet import testnet as local_testnet

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
EVE = Identity.from_seed(b"e" * 32)

D = 20_000  # a day number (2024-10-04)
NOON = D * DAY + DAY / 2


# -- keys ------------------------------------------------------------------------------


def test_pair_secret_is_the_same_from_both_sides() -> None:
    ab = pair_secret(ALICE, BOB.public_key)
    assert ab == pair_secret(BOB, ALICE.public_key)
    assert len(ab) == 32
    assert ab != pair_secret(ALICE, CAROL.public_key)
    assert ab != pair_secret(CAROL, BOB.public_key)


def test_pair_keys_differ_per_day_and_per_direction() -> None:
    secret = pair_secret(ALICE, BOB.public_key)
    to_bob = pair_key(secret, BOB.public_key, D)
    assert len(to_bob) == 20
    assert to_bob == pair_key(pair_secret(BOB, ALICE.public_key), BOB.public_key, D)
    assert to_bob != pair_key(secret, ALICE.public_key, D)  # the other direction
    days = {pair_key(secret, BOB.public_key, d) for d in range(D - 3, D + 4)}
    assert len(days) == 7


def test_an_outsider_computes_other_keys() -> None:
    # Eve knows both public keys but not the pair secret: her guess at "Alice -> Bob"
    # (Eve's secret with Bob) is a different key, and so is anything built from
    # public data alone.
    real = pair_key(pair_secret(ALICE, BOB.public_key), BOB.public_key, D)
    eve_secret = pair_secret(EVE, BOB.public_key)
    assert eve_secret != pair_secret(ALICE, BOB.public_key)
    guesses = {
        pair_key(eve_secret, BOB.public_key, D),
        pair_key(pair_secret(EVE, ALICE.public_key), BOB.public_key, D),
        public_key_inbox(BOB.public_key, D),
        pair_key(BOB.public_key, BOB.public_key, D),
        pair_key(ALICE.public_key + BOB.public_key, BOB.public_key, D)[:20],
    }
    assert real not in guesses


def test_public_inbox_differs_from_pair_keys_and_per_day() -> None:
    pub = public_key_inbox(BOB.public_key, D)
    assert len(pub) == 20
    assert pub == public_key_inbox(BOB.public_key, D)
    assert pub != public_key_inbox(BOB.public_key, D + 1)
    assert pub != public_key_inbox(ALICE.public_key, D)
    for peer in (ALICE, CAROL, EVE):
        secret = pair_secret(BOB, peer.public_key)
        assert pub != pair_key(secret, BOB.public_key, D)
        assert pub != pair_key(secret, peer.public_key, D)


@pytest.mark.parametrize(
    ("offset", "days"),
    [
        (0.0, [D - 1, D]),
        (60.0, [D - 1, D]),
        (MIDNIGHT_MARGIN - 1, [D - 1, D]),
        (MIDNIGHT_MARGIN, [D]),
        (DAY / 2, [D]),
        (DAY - MIDNIGHT_MARGIN, [D]),
        (DAY - MIDNIGHT_MARGIN + 1, [D, D + 1]),
        (DAY - 60.0, [D, D + 1]),
    ],
)
def test_listen_days_near_midnight_are_two(offset: float, days: list[int]) -> None:
    now = D * DAY + offset
    assert day_of(now) == D
    assert listen_days(now) == days


# -- DhtRendezvous against a recording node ----------------------------------------------


class FakeNode:
    """Records listens, unlistens and posts; ``fail`` makes every listen/post raise."""

    def __init__(self) -> None:
        self.listening: set[bytes] = set()
        self.listen_calls: list[bytes] = []
        self.unlistened: list[bytes] = []
        self.posts: list[tuple[bytes, bytes]] = []
        self.fail = False

    async def post(self, key: bytes, value: bytes) -> int:
        if self.fail:
            raise KrpcError("store failed: rate limited (241)")
        self.posts.append((key, value))
        return 8

    async def listen(self, key: bytes, ttl: float = 300.0) -> int:
        self.listen_calls.append(key)
        if self.fail:
            raise KrpcError("store failed")
        self.listening.add(key)
        return 8

    def unlisten(self, key: bytes) -> None:
        self.unlistened.append(key)
        self.listening.discard(key)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys_from(peers: list[Identity], me: Identity, days: list[int]) -> set[bytes]:
    return {pair_key(pair_secret(me, p.public_key), me.public_key, d) for p in peers for d in days}


async def test_refresh_listens_on_allowed_contacts_only() -> None:
    node, clock = FakeNode(), Clock(NOON)
    allowed = [ALICE.public_key, CAROL.public_key]  # EVE is unknown or blocked: absent
    rdv = DhtRendezvous(node, BOB, lambda: allowed, lambda: False, clock)
    assert await rdv.refresh() == 2
    assert node.listening == keys_from([ALICE, CAROL], BOB, [D])
    assert not (node.listening & keys_from([EVE], BOB, [D]))
    assert public_key_inbox(BOB.public_key, D) not in node.listening
    k_alice = pair_key(pair_secret(BOB, ALICE.public_key), BOB.public_key, D)
    assert rdv.knows(k_alice) and rdv.peer_of(k_alice) == ALICE.public_key
    # A second refresh does not listen again on the same keys.
    calls = len(node.listen_calls)
    assert await rdv.refresh() == 2
    assert len(node.listen_calls) == calls and node.unlistened == []


async def test_public_inbox_only_with_accept_any() -> None:
    node, clock = FakeNode(), Clock(NOON)
    accept_any = [False]
    rdv = DhtRendezvous(node, BOB, lambda: [ALICE.public_key], lambda: accept_any[0], clock)
    await rdv.refresh()
    public = public_key_inbox(BOB.public_key, D)
    assert public not in node.listening
    accept_any[0] = True
    assert await rdv.refresh() == 2
    assert public in node.listening
    assert rdv.knows(public) and rdv.peer_of(public) is None
    accept_any[0] = False
    assert await rdv.refresh() == 1
    assert node.unlistened == [public] and public not in node.listening


async def test_refresh_near_midnight_listens_on_both_days() -> None:
    node, clock = FakeNode(), Clock(D * DAY + DAY - 60)
    rdv = DhtRendezvous(node, BOB, lambda: [ALICE.public_key], lambda: True, clock)
    assert await rdv.refresh() == 4
    assert node.listening == keys_from([ALICE], BOB, [D, D + 1]) | {
        public_key_inbox(BOB.public_key, D), public_key_inbox(BOB.public_key, D + 1)
    }
    # Next noon: yesterday's keys go, today's stay.
    clock.now = (D + 1) * DAY + DAY / 2
    assert await rdv.refresh() == 2
    assert node.listening == keys_from([ALICE], BOB, [D + 1]) | {
        public_key_inbox(BOB.public_key, D + 1)
    }
    assert set(node.unlistened) == keys_from([ALICE], BOB, [D]) | {
        public_key_inbox(BOB.public_key, D)
    }


async def test_blocking_a_contact_unlistens_at_the_next_refresh() -> None:
    node, clock = FakeNode(), Clock(NOON)
    allowed = [ALICE.public_key, CAROL.public_key]
    rdv = DhtRendezvous(node, BOB, lambda: list(allowed), lambda: False, clock)
    await rdv.refresh()
    k_carol = pair_key(pair_secret(BOB, CAROL.public_key), BOB.public_key, D)
    assert k_carol in node.listening
    allowed.remove(CAROL.public_key)  # Carol is blocked
    assert await rdv.refresh() == 1
    assert node.unlistened == [k_carol]
    assert not rdv.knows(k_carol) and rdv.peer_of(k_carol) is None
    assert node.listening == keys_from([ALICE], BOB, [D])
    rdv.close()
    assert node.listening == set()


async def test_refresh_fails_only_when_every_listen_failed() -> None:
    node, clock = FakeNode(), Clock(NOON)
    rdv = DhtRendezvous(node, BOB, lambda: [ALICE.public_key], lambda: True, clock)
    node.fail = True
    with pytest.raises(HailingError):
        await rdv.refresh()
    # Nothing new to listen on: no error.
    node.fail = False
    assert await rdv.refresh() == 2


async def test_send_posts_to_the_pair_key_and_the_public_inbox() -> None:
    node, clock = FakeNode(), Clock(NOON)
    rdv = DhtRendezvous(node, ALICE, lambda: [], lambda: False, clock)
    to_bob = pair_key(pair_secret(ALICE, BOB.public_key), BOB.public_key, D)
    assert await rdv.send(BOB.public_key, b"blob") == 8
    assert node.posts == [(to_bob, b"blob")]
    node.posts.clear()
    assert await rdv.send(BOB.public_key, b"blob2", public=True) == 16
    assert node.posts == [(to_bob, b"blob2"), (public_key_inbox(BOB.public_key, D), b"blob2")]
    node.fail = True
    with pytest.raises(KrpcError):
        await rdv.send(BOB.public_key, b"blob3", public=True)


async def test_expect_from_listens_for_the_answer() -> None:
    node, clock = FakeNode(), Clock(NOON)
    rdv = DhtRendezvous(node, ALICE, lambda: [], lambda: False, clock)
    await rdv.expect_from(BOB.public_key)
    answer_key = pair_key(pair_secret(BOB, ALICE.public_key), ALICE.public_key, D)
    assert node.listening == {answer_key}
    assert rdv.peer_of(answer_key) == BOB.public_key


# -- end to end on a loopback testnet ----------------------------------------------------


@pytest.fixture
async def net() -> AsyncIterator[list[DhtNode]]:
    async with local_testnet(12) as nodes:
        yield nodes


async def _next_value(node: DhtNode, timeout: float) -> bytes | None:
    try:
        return (await asyncio.wait_for(node.inbox(), timeout)).value
    except TimeoutError:
        return None


async def test_delivery_over_the_dht_and_block(net: list[DhtNode]) -> None:
    boot = [net[0].address]
    async with DhtNode(bootstrap=boot) as n_alice, DhtNode(bootstrap=boot) as n_bob, \
            DhtNode(bootstrap=boot) as n_eve:
        for n in (n_alice, n_bob, n_eve):
            await n.bootstrap()
        allowed = [ALICE.public_key]
        bob = DhtRendezvous(n_bob, BOB, lambda: list(allowed), lambda: False)
        alice = DhtRendezvous(n_alice, ALICE, lambda: [], lambda: False)
        eve = DhtRendezvous(n_eve, EVE, lambda: [], lambda: False)
        await bob.refresh()
        assert await alice.send(BOB.public_key, b"hello bob") >= 1
        assert await _next_value(n_bob, 5) == b"hello bob"
        # An unknown sender posts (even to the public inbox) where Bob does not listen.
        assert await eve.send(BOB.public_key, b"from eve", public=True) >= 1
        # Alice is blocked: after the refresh her messages no longer arrive.
        allowed.clear()
        await bob.refresh()
        assert await alice.send(BOB.public_key, b"after block") >= 1
        assert await _next_value(n_bob, 1.0) is None


async def test_a_refresh_during_a_call_keeps_listening_for_the_answer() -> None:
    """Regression: a refresh (the contact book changed, the minute came round) used to
    unlisten the keys a caller listened on for the answer of a callee that is not its
    contact, so the answer never came."""
    node, clock = FakeNode(), Clock(NOON)
    rdv = DhtRendezvous(node, ALICE, lambda: [], lambda: False, clock)
    await rdv.expect_from(BOB.public_key)
    answer_keys = keys_from([BOB], ALICE, [D])
    assert node.listening == answer_keys
    await rdv.refresh()
    assert node.listening == answer_keys and not node.unlistened
    clock.now += EXPECT_TTL + 1  # long after the call: dropped at the next refresh
    await rdv.refresh()
    assert node.listening == set() and set(node.unlistened) == answer_keys
