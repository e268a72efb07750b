"""Every SQLite fault is a one-line StorageError and costs the event loop little (issue 9
item 10): a locked file waits a short, bounded time, a full or read-only disk skips the
write and counts it, a damaged routing row is skipped. See also tests/test_node_state.py
(corrupt and locked dht.sqlite3) and the key file checksum in tests/test_identity.py."""

from __future__ import annotations

import logging
import random
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from hailing._sqlite import BUSY_TIMEOUT, SqliteFile
from hailing._state import DB_NAME, NodeState, load_node_state
from hailing.daemon.history import History
from hailing.errors import StorageError
from hailing.identity import Identity
from hailing.node import DhtNode
from hailing.services.contacts import ContactBook
from hailing.session import SignalRouter, Source, Supervisor
from hailing.signaling import envelope
from hailing.signaling.envelope import KIND_OFFER
from hailing.signaling.store import PEER_DB, SignalStore

LOCAL = ("127.0.0.1", 0)
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))


def _lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def _busy_ms(f: SqliteFile) -> int:
    (ms,) = f._db.execute("PRAGMA busy_timeout").fetchone()
    return int(ms)


@pytest.mark.parametrize("opener", [ContactBook, SignalStore, History])
def test_every_database_waits_briefly_for_a_lock(
        tmp_path: Path, opener: Callable[[Path], SqliteFile]) -> None:
    """These files are written on the event loop: a lock held by another process used
    to stall it 10 s per statement."""
    with opener(tmp_path) as f:
        assert _busy_ms(f) == int(BUSY_TIMEOUT * 1000) <= 250


def test_a_locked_contact_book_is_a_one_line_error(tmp_path: Path) -> None:
    with ContactBook(tmp_path) as book:
        other = _lock(tmp_path / PEER_DB)
        try:
            with pytest.raises(StorageError, match="locked") as info:
                book.add(ALICE.contact_id, "alice")
        finally:
            other.close()
        assert str(tmp_path / PEER_DB) in str(info.value) and "\n" not in str(info.value)
        assert book.add(ALICE.contact_id, "alice").name == "alice"  # works once unlocked


async def test_an_offer_is_handled_while_the_peer_database_is_locked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The record of handled envelopes cannot be written: the offer still rings (the
    in-memory replay cache refuses it twice), counted, one warning and no traceback."""
    stats: Counter[str] = Counter()
    supervisor = Supervisor(stats)
    got: list[bytes] = []
    with SignalStore(tmp_path) as store:
        router = SignalRouter(BOB, store, supervisor=supervisor, stats=stats,
                              clock=lambda: 1010.0)
        router.on(KIND_OFFER, lambda opened, source: got.append(opened.body),
                  name="offer", strict_expiry=True)
        other = _lock(tmp_path / PEER_DB)
        try:
            for i in range(3):
                blob = envelope.seal(ALICE, BOB.public_key, KIND_OFFER, b"offer%d" % i,
                                     now=1000.0, ttl=30)
                await router.handle(blob, Source())
                await router.handle(blob, Source())  # a replay: refused in memory
        finally:
            other.close()
        await supervisor.aclose()
    assert got == [b"offer0", b"offer1", b"offer2"]
    assert stats["receive_errors"] == 0 and stats["handled_record_errors"] == 3
    assert not any(r.exc_info for r in caplog.records)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "locked" in warnings[0] and "\n" not in warnings[0]


# -- dht.sqlite3 -----------------------------------------------------------------------------


def _full(db: sqlite3.Connection) -> None:
    """Make the next write that needs a page fail as on a full disk (SQLITE_FULL)."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")


def _read_only(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA query_only = 1")  # SQLITE_READONLY, as a read-only file or mount


def _fill_table(node: DhtNode) -> None:
    """Eight nodes in each of the 60 buckets nearest the node's own id (480 rows)."""
    own = int.from_bytes(node.node_id, "big")
    rng = random.Random(1)
    for depth in range(60):
        for j in range(8):
            low = rng.getrandbits(159 - depth)
            nid = ((own >> (159 - depth)) ^ 1) << (159 - depth) | low
            addr = (f"10.{depth}.{j}.1", 6881)
            node.core.add_node(nid.to_bytes(20, "big"), addr, node._loop.time())
    assert len(node.core.table) >= 400


@pytest.mark.parametrize(("fault", "words"), [(_full, "full"), (_read_only, "readonly")])
async def test_a_periodic_save_on_a_full_or_read_only_disk_is_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        fault: Callable[[sqlite3.Connection], None], words: str) -> None:
    async with DhtNode(LOCAL, data_dir=tmp_path) as node:
        _fill_table(node)  # a save then needs more pages than the file has
        state = node._state
        assert state is not None
        fault(state._db)
        node._next_save = 0.0
        node._on_timer()  # no exception
        assert node.stats["state_saves_skipped"] == 1
    assert not list(tmp_path.glob(DB_NAME + ".corrupt-*"))  # not mistaken for damage
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "hailing.node" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and words in warnings[0] and "\n" not in warnings[0]


def test_a_routing_row_with_a_host_name_is_skipped(tmp_path: Path) -> None:
    """A host name in the cache (damage, or a hand edit) would cost a blocking DNS
    lookup on the event loop at every send to it."""
    with NodeState(tmp_path) as s:
        s.set_node_id(b"N" * 20)
        s.save_routing([(b"A" * 20, ("10.0.0.1", 6881), 1.0),
                        (b"B" * 20, ("::1", 6881), 1.0)])
    db = sqlite3.connect(tmp_path / DB_NAME)
    with db:
        db.execute("INSERT INTO routing VALUES (?, 'router.example', 6881, 1.0)", (b"C" * 20,))
        db.execute("INSERT INTO routing VALUES (?, '10.0.0.300', 6881, 1.0)", (b"D" * 20,))
        db.execute("INSERT INTO routing VALUES (?, X'31302e302e302e32', 6881, 1.0)",
                   (b"E" * 20,))  # the host as a blob
    db.close()
    state, _, nodes = load_node_state(tmp_path)
    assert state is not None
    state.close()
    assert sorted(n[0] for n in nodes) == [b"A" * 20, b"B" * 20]
