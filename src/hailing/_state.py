"""A node's state on disk: one SQLite file in its data directory.

Holds the node id and the routing-table cache, so a restarted node keeps its identity
and rejoins at once from the nodes it knew. It is a cache: nothing in it is needed to
run, so nothing about it may stop a node (:func:`load_node_state`):

- a file that is corrupt, not a database, or of another schema is moved aside to
  ``dht.sqlite3.corrupt-<timestamp>`` (never deleted), one warning says so, and a fresh
  file is created (new node id, empty routing table: the node joins again);
- a file that cannot be used otherwise (locked by another process, not readable) is
  left alone: the node runs without it this time, after one warning;
- every statement waits at most :data:`BUSY_TIMEOUT` for another process's lock, so a
  periodic save never blocks the event loop for long; a save that fails is skipped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ._sqlite import SqliteFile, set_aside, storage_error
from ._sqlite import data_dir as _data_dir
from .errors import CorruptStorageError, StorageError

SCHEMA_VERSION = 1
DB_NAME = "dht.sqlite3"
#: Seconds a statement waits for a lock held by another process before giving up.
BUSY_TIMEOUT = 0.05

log = logging.getLogger("hailing.node")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS routing (
    id BLOB PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, last_seen REAL NOT NULL
);
"""

Saved = tuple[bytes, tuple[str, int], float]


class NodeState(SqliteFile):
    """The SQLite store of one node. Use as a context manager or call :meth:`close`."""

    def __init__(self, data_dir: str | os.PathLike[str], busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.dir = _data_dir(data_dir)
        super().__init__(self.dir / DB_NAME, _SCHEMA, SCHEMA_VERSION, timeout=busy_timeout)

    def check(self) -> None:
        """Raise CorruptStorageError unless SQLite's quick integrity check passes (the
        file is a small cache: this takes milliseconds)."""
        rows = self._query("PRAGMA quick_check(1)")
        if not rows or rows[0][0] != "ok":
            detail = rows[0][0] if rows else "no answer"
            raise CorruptStorageError(f"{self.path} is damaged: {detail}")

    def node_id(self) -> bytes | None:
        rows = self._query("SELECT value FROM meta WHERE key='node_id'")
        if not rows:
            return None
        value = rows[0][0]
        if not isinstance(value, bytes) or len(value) != 20:
            raise CorruptStorageError(f"{self.path}: stored node id is corrupt")
        return value

    def set_node_id(self, node_id: bytes) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES ('node_id', ?)", (node_id,))

    def routing_nodes(self) -> list[Saved]:
        """The saved routing table: (id, (host, port), last_seen); bad rows are skipped
        (a host must be an IP address: a name would cost a blocking DNS lookup on the
        event loop at each send)."""
        out = []
        rows = self._query("SELECT id, host, port, last_seen FROM routing")
        for nid, host, port, seen in rows:
            if isinstance(nid, bytes) and len(nid) == 20 and _is_ip(host) \
                    and type(port) is int and 0 < port < 65536 \
                    and type(seen) in (int, float):
                out.append((nid, (host, port), float(seen)))
        return out

    def save_routing(self, nodes: Iterable[Saved]) -> None:
        rows = [(nid, addr[0], addr[1], seen) for nid, addr, seen in nodes]
        try:
            with self._db:
                self._db.execute("DELETE FROM routing")
                self._db.executemany("INSERT OR REPLACE INTO routing VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise storage_error(f"cannot write {self.path}", exc) from None


def _is_ip(host: object) -> bool:
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def load_node_state(
    data_dir: str | os.PathLike[str], busy_timeout: float = BUSY_TIMEOUT
) -> tuple[NodeState | None, bytes | None, list[Saved]]:
    """Open the node's cache: ``(state or None, saved node id, saved routing table)``.

    A corrupt file is set aside and rebuilt; any other failure leaves ``state`` None
    (the node runs without a cache). Each case logs one warning on ``hailing.node``
    (stderr when logging is not configured). Only an unusable data directory raises."""
    d = _data_dir(data_dir)
    try:
        return _load(d, busy_timeout)
    except CorruptStorageError as exc:
        return rebuild_node_state(d, exc, busy_timeout), None, []
    except StorageError as exc:
        log.warning("hailing: %s; running without the routing cache this time", exc)
        return None, None, []


def rebuild_node_state(
    data_dir: str | os.PathLike[str], why: StorageError, busy_timeout: float = BUSY_TIMEOUT
) -> NodeState | None:
    """Move the corrupt cache aside and open a fresh one (None if that fails too);
    logs one warning saying what happened."""
    d = _data_dir(data_dir)
    try:
        moved = set_aside(d / DB_NAME)
        state, _, _ = _load(d, busy_timeout)
    except StorageError as exc:
        log.warning("hailing: %s; %s; running without the routing cache", why, exc)
        return None
    log.warning(
        "hailing: %s; moved it to %s and started a fresh cache "
        "(a new node id; the node joins again)", why, moved.name,
    )
    return state


def _load(d: os.PathLike[str], busy_timeout: float) -> tuple[NodeState, bytes | None, list[Saved]]:
    state = NodeState(d, busy_timeout)
    try:
        state.check()
        return state, state.node_id(), state.routing_nodes()
    except BaseException:
        state.close()
        raise


def save_table(state: NodeState, data_dir: Path | None, node_id: bytes,
               nodes: list[Saved], stats: Counter[str], warned: set[str]) -> NodeState | None:
    """Save a node's routing table; returns the state to keep using. Never raises and
    never waits long: a locked file (another process) skips this save; a file found
    corrupt is set aside and the table saved to a fresh one (``state_rebuilds``). Each
    kind of failure is logged once, all counted (``state_saves_skipped``)."""
    try:
        state.save_routing(nodes)
    except CorruptStorageError as exc:
        stats["state_rebuilds"] += 1
        state.close()
        fresh = rebuild_node_state(data_dir, exc) if data_dir is not None else None
        if fresh is not None:
            with contextlib.suppress(StorageError):
                fresh.set_node_id(node_id)
                fresh.save_routing(nodes)
        return fresh
    except StorageError as exc:
        save_failed(exc, stats, warned)
    return state


def save_failed(exc: StorageError, stats: Counter[str], warned: set[str]) -> None:
    """Count a skipped save; log its kind the first time only."""
    stats["state_saves_skipped"] += 1
    kind = type(exc).__name__
    if kind not in warned:
        warned.add(kind)
        log.warning("hailing: %s; routing cache not saved (counted in stats, "
                    "not repeated)", exc)
