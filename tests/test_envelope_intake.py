"""Envelope intake under attack (issue 9 items 7 and 9): the size limit of
``open_envelope``, the replay cache's per-sender windows and strangers' budget, and the
bounded, persistent records of handled envelopes on disk.

Each test names the defect it guards against; each fails on the code before the fix.
"""

from __future__ import annotations

import array
import contextlib
import os
import sqlite3
from pathlib import Path

import nacl.public
import pytest

import hailing.signaling.store as store_mod
from hailing.errors import EnvelopeError, LocalProtocolError
from hailing.identity import Identity
from hailing.rtc.connection import MAX_SIGNAL
from hailing.session import ContractCoupler, DhtCoupler, WsCoupler
from hailing.signaling.envelope import (
    CLOCK_SKEW,
    MAX_ENVELOPE,
    OVERHEAD,
    FutureEnvelope,
    MalformedEnvelope,
    ReplayCache,
    ReplayedEnvelope,
    open_envelope,
    seal,
)
from hailing.signaling.store import SignalStore

NOW = 1_700_000_000.0
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(32, 64)))


def stranger() -> Identity:
    return Identity.from_seed(os.urandom(32))


def is_alice(sender: bytes) -> bool:
    return sender == ALICE.public_key


def opens(blob: bytes, replay: ReplayCache, now: float = NOW) -> bool:
    try:
        open_envelope(BOB, blob, now=now, replay=replay)
    except EnvelopeError:
        return False
    return True


# -- item 9: the size limit ------------------------------------------------------------


def test_the_limit_covers_every_coupler_and_the_data_channel() -> None:
    """The largest legitimate envelope is the relay's 64 KiB payload."""
    fake_rdv = type("R", (), {"poll_interval": 1.0})()
    blobs = [DhtCoupler.capabilities.max_blob, WsCoupler.capabilities.max_blob,
             ContractCoupler(fake_rdv).capabilities.max_blob, MAX_SIGNAL]  # type: ignore[arg-type]
    assert max(blobs) == MAX_ENVELOPE == 64 * 1024
    largest = seal(ALICE, BOB.public_key, 1, bytes(MAX_ENVELOPE - OVERHEAD), now=NOW)
    assert len(largest) == MAX_ENVELOPE
    assert opens(largest, ReplayCache())


@pytest.mark.parametrize("size", [MAX_ENVELOPE + 1, 64 * 1024 * 1024])
def test_an_oversized_envelope_is_refused_before_any_crypto(
        size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9 item 9: a 64 MiB envelope was copied and decrypted (a 320 MiB peak)."""
    blob = b"\x01" + bytes(size - 1)

    def no_crypto(*args: object) -> None:
        raise AssertionError("crypto ran on an oversized envelope")

    monkeypatch.setattr(nacl.public, "Box", no_crypto)
    replay = ReplayCache()
    with pytest.raises(MalformedEnvelope, match=f"{size} bytes refused"):
        open_envelope(BOB, blob, now=NOW, replay=replay)
    assert replay.stats == {"oversized": 1}


def test_an_oversized_memoryview_counts_its_bytes_not_its_items() -> None:
    view = memoryview(array.array("I", bytes(MAX_ENVELOPE)))  # 16 Ki items, 64 KiB
    replay = ReplayCache()
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, view, now=NOW, replay=replay)  # type: ignore[arg-type]
    assert replay.stats == {"unknown_version": 1}  # exactly the limit: looked at
    big = memoryview(array.array("I", bytes(MAX_ENVELOPE + 4)))
    with pytest.raises(MalformedEnvelope, match="refused"):
        open_envelope(BOB, big, now=NOW, replay=replay)  # type: ignore[arg-type]
    assert replay.stats["oversized"] == 1


# -- item 7: the replay cache in memory ---------------------------------------------------


def test_strangers_flooding_from_the_future_cannot_refuse_a_contact() -> None:
    """Issue 9 item 7: once the cache was full, each eviction raised one global floor;
    envelopes timestamped slightly ahead made every legitimate one "replayed"."""
    replay = ReplayCache(per_sender=4, stranger_entries=16, stranger_senders=16,
                         is_contact=is_alice)
    early = seal(ALICE, BOB.public_key, 1, b"before the flood", now=NOW - 5)
    assert opens(early, replay)
    for i in range(40):  # ahead of the receiver's clock, within the skew allowance
        ahead = seal(stranger(), BOB.public_key, 1, b"flood", now=NOW + 19 + i)
        assert opens(ahead, replay)
    assert replay.stats["stranger_evictions"] == 24
    assert opens(seal(ALICE, BOB.public_key, 1, b"a call", now=NOW), replay)
    with pytest.raises(ReplayedEnvelope):  # the contact's window was kept: still refused
        open_envelope(BOB, early, now=NOW, replay=replay)
    # strangers are what a stranger flood costs: bounded, counted, and no replay gets in
    assert not opens(seal(stranger(), BOB.public_key, 1, b"late", now=NOW), replay)
    assert replay.stats["stranger_floor"] == 1
    assert len(replay) == 16 + 2
    # once the flood's timestamps are past, strangers are heard again
    later = NOW + CLOCK_SKEW + 1
    assert opens(seal(stranger(), BOB.public_key, 1, b"hello", now=later), replay, later)


def test_one_sender_flooding_only_raises_its_own_floor() -> None:
    replay = ReplayCache(per_sender=4)
    mallory, carol = stranger(), stranger()
    for i in range(10):
        assert opens(seal(mallory, BOB.public_key, 1, b"%d" % i, now=NOW + 40 + i), replay)
    assert opens(seal(carol, BOB.public_key, 1, b"hi", now=NOW), replay)
    assert not opens(seal(mallory, BOB.public_key, 1, b"old", now=NOW), replay)
    assert replay.stats["below_floor"] == 1 and replay.stats["stranger_floor"] == 0
    assert replay.senders == 2 and len(replay) == 5


def test_a_replay_of_an_evicted_strangers_envelope_is_still_refused() -> None:
    replay = ReplayCache(per_sender=1, stranger_entries=2, stranger_senders=2)
    first = seal(stranger(), BOB.public_key, 1, b"x", now=NOW)
    assert opens(first, replay)
    for _ in range(3):
        assert opens(seal(stranger(), BOB.public_key, 1, b"y", now=NOW + 1), replay, NOW + 1)
    assert not opens(first, replay, NOW + 2)
    assert replay.stats["stranger_floor"] == 1


def test_a_far_future_envelope_is_refused_counted_and_not_kept() -> None:
    replay = ReplayCache()
    blob = seal(stranger(), BOB.public_key, 1, b"x", now=NOW + CLOCK_SKEW + 1)
    with pytest.raises(FutureEnvelope):
        open_envelope(BOB, blob, now=NOW, replay=replay)
    assert replay.stats == {"future": 1} and len(replay) == 0 and replay.senders == 0


def test_a_stranger_who_becomes_a_contact_leaves_the_budget() -> None:
    contacts: set[bytes] = set()
    replay = ReplayCache(per_sender=2, stranger_entries=2, stranger_senders=2,
                         is_contact=contacts.__contains__)
    carol = stranger()
    first = seal(carol, BOB.public_key, 1, b"x", now=NOW)
    assert opens(first, replay)
    contacts.add(carol.public_key)
    for i in range(5):
        assert opens(seal(stranger(), BOB.public_key, 1, b"y", now=NOW + 30 + i), replay)
    with pytest.raises(ReplayedEnvelope, match="seen before"):  # her window moved, kept
        open_envelope(BOB, first, now=NOW, replay=replay)
    assert opens(seal(carol, BOB.public_key, 1, b"z", now=NOW), replay)


def test_idle_windows_are_swept() -> None:
    replay = ReplayCache(is_contact=is_alice)
    assert opens(seal(ALICE, BOB.public_key, 1, b"x", now=NOW, ttl=10), replay)
    for _ in range(5):
        assert opens(seal(stranger(), BOB.public_key, 1, b"x", now=NOW, ttl=10), replay)
    later = NOW + 10 + 2 * CLOCK_SKEW + 1
    assert opens(seal(stranger(), BOB.public_key, 1, b"x", now=later), replay, later)
    assert replay.senders == 1 and len(replay) == 1


@pytest.mark.parametrize("kwargs", [{"per_sender": 0}, {"stranger_entries": 0},
                                    {"stranger_senders": 0},
                                    {"per_sender": 10, "stranger_entries": 5}])
def test_replay_cache_misuse(kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        ReplayCache(**kwargs)


# -- item 7: the records on disk ----------------------------------------------------------


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HANDLED_STRANGERS", 8)
    monkeypatch.setattr(store_mod, "HANDLED_PER_CONTACT", 3)


def record(store: SignalStore, nonce: bytes, sender: bytes, ts: float, *, ttl: float = 65535,
           contact: bool = False, now: float = NOW) -> str | None:
    return store.record_handling(nonce, ts + ttl, now, sender=sender, timestamp=ts,
                                 contact=contact)


def test_strangers_rows_are_bounded_and_never_push_out_a_contacts(
        tmp_path: Path, small: None) -> None:
    """Issue 9 item 7: a flood left one row per envelope for 18 hours; now strangers
    share a bounded number of rows, and a contact's rows and calls are theirs."""
    alice = ALICE.public_key
    with SignalStore(tmp_path) as store:
        assert record(store, b"a0" * 16, alice, NOW - 5, contact=True) is None
        for i in range(100):  # up to the clock skew ahead, one a second
            assert record(store, os.urandom(32), os.urandom(32), NOW - 41 + i) is None
        assert store.handled_rows() == 8 + 1
        assert record(store, b"a0" * 16, alice, NOW - 5, contact=True) == "already_handled"
        assert record(store, b"a1" * 16, alice, NOW, contact=True) is None
        assert record(store, b"s0" * 16, os.urandom(32), NOW) == "below_replay_floor"
    # the floor and the rows survive a restart: nothing old is handled again
    with SignalStore(tmp_path) as store:
        assert record(store, b"a1" * 16, alice, NOW, contact=True) == "already_handled"
        assert record(store, b"s1" * 16, os.urandom(32), NOW + 1) == "below_replay_floor"
        # past the flood's timestamps strangers are heard again
        assert record(store, b"s2" * 16, os.urandom(32), NOW + 60) is None


def test_a_contacts_own_rows_are_bounded_by_its_own_floor(tmp_path: Path, small: None) -> None:
    alice = ALICE.public_key
    with SignalStore(tmp_path) as store:
        for i in range(5):
            assert record(store, b"%02d" % i * 16, alice, NOW + i, contact=True) is None
        assert store.handled_rows() == 3
        assert record(store, b"00" * 16, alice, NOW, contact=True) == "below_replay_floor"
        assert record(store, b"x" * 32, os.urandom(32), NOW) is None  # strangers unaffected


def test_rows_and_floors_go_when_their_envelopes_could_no_longer_open(
        tmp_path: Path, small: None) -> None:
    with SignalStore(tmp_path) as store:
        for i in range(10):
            assert record(store, os.urandom(32), os.urandom(32), NOW + i, ttl=30) is None
        later = NOW + 10 + 30 + CLOCK_SKEW + 1
        assert record(store, b"n" * 32, os.urandom(32), later, now=later) is None
        assert store.handled_rows() == 1
        assert store._query("SELECT count(*) FROM replay_floor") == [(0,)]


def test_records_of_the_first_schema_are_kept(tmp_path: Path) -> None:
    """A data directory written before the replay records were bounded: its records
    still stop a restarted node from handling those envelopes again."""
    with SignalStore(tmp_path):
        pass
    with contextlib.closing(sqlite3.connect(tmp_path / "peer.sqlite3")) as db, db:
        db.execute("INSERT INTO handled_envelopes VALUES (?, ?)", (b"old" * 10, NOW + 100))
    with SignalStore(tmp_path) as store:
        assert record(store, b"old" * 10, os.urandom(32), NOW) == "already_handled"
        assert store._query("SELECT count(*) FROM handled_envelopes") == [(0,)]


def test_a_legacy_row_that_is_not_a_number_is_left_behind(tmp_path: Path) -> None:
    """Garbage in the first schema's table (edited by hand, say) is not migrated into
    the bounded records (their CHECKs refuse it) and fails nothing."""
    with SignalStore(tmp_path):
        pass
    with contextlib.closing(sqlite3.connect(tmp_path / "peer.sqlite3")) as db, db:
        db.execute("INSERT INTO handled_envelopes VALUES (?, ?)", (b"bad" * 10, "soon"))
        db.execute("INSERT INTO handled_envelopes VALUES (?, ?)", (b"good" * 8, NOW + 9))
    with SignalStore(tmp_path) as store:
        assert store.handled_rows() == 1
        assert record(store, b"bad" * 10, os.urandom(32), NOW) is None
        assert record(store, b"good" * 8, os.urandom(32), NOW) == "already_handled"
