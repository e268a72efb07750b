"""The one way hailing opens its SQLite files: every failure is a one-line StorageError
naming the file, and nothing is ever deleted."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._secrets import private_dir
from .errors import StorageError


def data_dir(path: str | os.PathLike[str]) -> Path:
    """The data directory ``path``, created (mode 0700) if missing."""
    return private_dir(path)


class SqliteFile:
    """An open SQLite file with ``schema`` applied; a context manager.

    With ``version``, the schema must have a ``meta(key, value)`` table: the version is
    written there on creation and checked on every later opening.
    """

    def __init__(self, path: Path, schema: str, version: int | None = None) -> None:
        self.path = path
        self._version = version
        try:
            self._db = sqlite3.connect(path, timeout=10.0)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {path}: {exc}") from None
        try:
            with self._db:
                self._db.executescript(schema)
                self._check()
        except sqlite3.Error as exc:
            self._db.close()
            raise StorageError(f"{path} is not a usable hailing database: {exc}") from None
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
            raise StorageError(f"{self.path}: unsupported schema version {row[0]!r}")

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
            raise StorageError(f"{self.path} is unreadable: {exc}") from None

    def _write(self, sql: str, args: tuple[object, ...] = ()) -> int:
        try:
            with self._db:
                return self._db.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from None
