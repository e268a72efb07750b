"""The one way hailing opens its SQLite files: every failure is a one-line StorageError
naming the file (:class:`~hailing.errors.CorruptStorageError` when the file is damaged,
not a database, or has another schema), and nothing is ever deleted. A rebuildable
cache may be moved aside (:func:`set_aside`) and created again.

These files are read and written on the event loop, so a statement waits at most
:data:`BUSY_TIMEOUT` for a lock another process holds (a CLI command writing the contact
book while the daemon runs holds it for milliseconds; a stuck ``sqlite3`` shell holds it
forever): a locked file costs the loop that long and becomes a one-line StorageError,
never a 10-second stall per statement (issue 9 item 10)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._secrets import private_dir
from .errors import CorruptStorageError, StorageError

#: SQLite primary result codes that mean "this file is not what we expect": SQLITE_ERROR
#: (no such table or column: another schema), SQLITE_CORRUPT, SQLITE_MISMATCH (a value
#: of the wrong type), SQLITE_FORMAT, SQLITE_NOTADB.
_CORRUPT_CODES = frozenset({1, 11, 20, 24, 26})
#: Seconds a statement waits for another process's lock before failing (StorageError).
BUSY_TIMEOUT = 0.25
#: Files SQLite keeps beside a database; moved with it.
_SIDE_FILES = ("-journal", "-wal", "-shm")


def data_dir(path: str | os.PathLike[str]) -> Path:
    """The data directory ``path``, created (mode 0700) if missing."""
    return private_dir(path)


def storage_error(message: str, exc: sqlite3.Error) -> StorageError:
    """The one-line error for ``exc``: CorruptStorageError when the file is at fault."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = f"{message}: {exc}"
    if isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        return CorruptStorageError(text)
    return StorageError(text)


def set_aside(path: Path, now: float | None = None) -> Path:
    """Rename ``path`` (and its journal files) to ``<name>.corrupt-<timestamp>``; return
    the new path. Raises StorageError if it cannot be moved."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in _SIDE_FILES:
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
    except OSError as exc:
        raise StorageError(f"cannot move {path} aside: {exc.strerror}") from None
    return target


class SqliteFile:
    """An open SQLite file with ``schema`` applied; a context manager.

    With ``version``, the schema must have a ``meta(key, value)`` table: the version is
    written there on creation and checked on every later opening (another version is a
    CorruptStorageError). ``timeout`` is how long a statement waits for a lock another
    process holds before failing (StorageError).
    """

    def __init__(
        self, path: Path, schema: str, version: int | None = None, *,
        timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = path
        self._version = version
        try:
            self._db = sqlite3.connect(path, timeout=timeout)
        except sqlite3.Error as exc:
            raise storage_error(f"cannot open {path}", exc) from None
        try:
            with self._db:
                self._db.executescript(schema)
                self._check()
            # Once the file is known to be ours: WAL with synchronous=NORMAL, so one write
            # costs no fsync of its own (a checkpoint syncs many) and the file stays
            # consistent after a crash (at worst a power cut loses the last few writes).
            # Signaling records are written on the event loop, in the path of every call.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            self._db.close()
            raise storage_error(f"{path} is not a usable hailing database", exc) from None
        except StorageError:
            self._db.close()
            raise

    def _check(self) -> None:
        if self._version is None:
            return
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (self._version,))
        elif row[0] != self._version:
            raise CorruptStorageError(f"{self.path}: unsupported schema version {row[0]!r}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(f"{self.path} is unreadable", exc) from None

    def _write(self, sql: str, args: tuple[object, ...] = ()) -> int:
        return self._write_all([(sql, args)])[0]

    def _write_all(self, statements: list[tuple[str, tuple[object, ...]]]) -> list[int]:
        """Run ``statements`` in one transaction (one commit); their row counts."""
        try:
            with self._db:
                return [self._db.execute(sql, args).rowcount for sql, args in statements]
        except sqlite3.Error as exc:
            raise storage_error(f"cannot write {self.path}", exc) from None
