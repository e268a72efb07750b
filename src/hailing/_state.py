"""A node's state on disk: one SQLite file in its data directory.

Holds the node id and the routing-table cache, so a restarted node keeps its identity
and rejoins at once from the nodes it knew. A file that is not a hailing database, or is
corrupt, raises :class:`~hailing.errors.StorageError` with the path; nothing is deleted.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable

from ._sqlite import SqliteFile
from ._sqlite import data_dir as _data_dir
from .errors import StorageError

SCHEMA_VERSION = 1
DB_NAME = "dht.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS routing (
    id BLOB PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, last_seen REAL NOT NULL
);
"""


class NodeState(SqliteFile):
    """The SQLite store of one node. Use as a context manager or call :meth:`close`."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = _data_dir(data_dir)
        super().__init__(self.dir / DB_NAME, _SCHEMA, SCHEMA_VERSION)

    def node_id(self) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key='node_id'").fetchone()
        if row is None:
            return None
        value = row[0]
        if not isinstance(value, bytes) or len(value) != 20:
            raise StorageError(f"{self.path}: stored node id is corrupt")
        return value

    def set_node_id(self, node_id: bytes) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('node_id', ?)", (node_id,))

    def routing_nodes(self) -> list[tuple[bytes, tuple[str, int], float]]:
        """The saved routing table: (id, (host, port), last_seen); bad rows are skipped."""
        out = []
        try:
            rows = self._db.execute("SELECT id, host, port, last_seen FROM routing").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: routing cache unreadable: {exc}") from None
        for nid, host, port, seen in rows:
            if isinstance(nid, bytes) and len(nid) == 20 and isinstance(host, str) \
                    and isinstance(port, int) and 0 < port < 65536:
                out.append((nid, (host, port), float(seen)))
        return out

    def save_routing(self, nodes: Iterable[tuple[bytes, tuple[str, int], float]]) -> None:
        with self._db:
            self._db.execute("DELETE FROM routing")
            self._db.executemany(
                "INSERT OR REPLACE INTO routing VALUES (?, ?, ?, ?)",
                [(nid, addr[0], addr[1], seen) for nid, addr, seen in nodes],
            )
