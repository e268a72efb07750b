"""Message history: ``<data_dir>/history.sqlite3``.

Every text and file a daemon sent or received, in order (``id`` grows), with the contact,
the direction (``in``/``out``), when, and for a file its name, size, SHA-256 and where it
was saved (received) or read from (sent). Written at once; a restart loses nothing. Read
back a page at a time, newest page first, by :meth:`History.page`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Literal

from .._sqlite import SqliteFile
from .._sqlite import data_dir as _data_dir
from ..errors import StorageError
from ..identity import format_contact_id

DB_NAME = "history.sqlite3"
SCHEMA_VERSION = 1
#: Most entries one page holds.
MAX_PAGE = 500

Direction = Literal["in", "out"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact BLOB NOT NULL CHECK (length(contact) = 32),
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind TEXT NOT NULL CHECK (kind IN ('text', 'file')),
    at REAL NOT NULL,
    text TEXT,
    name TEXT,
    path TEXT,
    size INTEGER,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_contact ON messages (contact, id);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    contact: bytes
    direction: Direction
    kind: Literal["text", "file"]
    at: float
    text: str | None = None
    name: str | None = None
    path: str | None = None
    size: int | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "contact": format_contact_id(self.contact),
                               "direction": self.direction, "kind": self.kind, "at": self.at}
        if self.kind == "text":
            out["text"] = self.text
        else:
            out.update(name=self.name, path=self.path, size=self.size, sha256=self.sha256)
        return out


_COLUMNS = "id, contact, direction, kind, at, text, name, path, size, sha256"


class History(SqliteFile):
    """The message history of one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        super().__init__(_data_dir(data_dir) / DB_NAME, _SCHEMA, SCHEMA_VERSION)

    def add_text(self, contact: bytes, direction: Direction, text: str,
                 at: float | None = None) -> int:
        return self._add(contact, direction, "text", at, text=text)

    def add_file(self, contact: bytes, direction: Direction, *, name: str, path: str,
                 size: int, sha256: str, at: float | None = None) -> int:
        return self._add(contact, direction, "file", at, name=name, path=path, size=size,
                         sha256=sha256)

    def _add(self, contact: bytes, direction: Direction, kind: str, at: float | None,
             **cols: object) -> int:
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        try:
            with self._db:
                cur = self._db.execute(
                    f"INSERT INTO messages (contact, direction, kind, at, {names}) "
                    f"VALUES (?, ?, ?, ?, {marks})",
                    (contact, direction, kind, time.time() if at is None else at,
                     *cols.values()))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from None
        return int(cur.lastrowid or 0)

    def page(self, contact: bytes | None = None, *, limit: int = 50,
             before: int | None = None) -> list[Entry]:
        """Up to ``limit`` entries with ``id < before`` (the newest when ``before`` is None),
        oldest first; with ``contact``, only that contact's."""
        limit = max(1, min(limit, MAX_PAGE))
        where: list[str] = []
        args: list[object] = []
        if contact is not None:
            where.append("contact = ?")
            args.append(contact)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"SELECT {_COLUMNS} FROM messages {clause} ORDER BY id DESC LIMIT ?",
                           (*args, limit))
        return [Entry(*row) for row in reversed(rows)]

    def entry(self, entry_id: int) -> Entry | None:
        """The entry ``entry_id``, or None."""
        rows = self._query(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (entry_id,))
        return Entry(*rows[0]) if rows else None

    def last_seen(self) -> dict[bytes, float]:
        """When each contact last sent something (a text or a file)."""
        rows = self._query("SELECT contact, max(at) FROM messages WHERE direction = 'in' "
                           "GROUP BY contact", ())
        return {bytes(contact): float(at) for contact, at in rows}

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM messages")[0][0])
