"""The node's cache on disk (dht.sqlite3) never stops a node: a corrupt file is set aside
and rebuilt with one warning, a locked one is done without, a periodic save never waits
long (issue 8 item 7, issue 9 item 10)."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hailing._state import BUSY_TIMEOUT, DB_NAME, NodeState, load_node_state
from hailing.errors import CorruptStorageError
from hailing.node import DhtNode

LOCAL = ("127.0.0.1", 0)


def _valid_cache(d: Path, rows: int = 500) -> bytes:
    with NodeState(d) as s:
        s.set_node_id(b"N" * 20)
        s.save_routing([(os.urandom(20), (f"10.0.{i // 250}.{i % 250 + 1}", 6881), 1.0)
                        for i in range(rows)])
    return (d / DB_NAME).read_bytes()


def _garbage(d: Path) -> None:
    (d / DB_NAME).write_bytes(b"\xff not a database " + os.urandom(4000))


def _truncated(d: Path) -> None:
    data = _valid_cache(d)
    (d / DB_NAME).write_bytes(data[: len(data) // 2])


def _header_byte(d: Path) -> None:
    data = bytearray(_valid_cache(d))
    data[3] ^= 0x20  # "SQLite format 3" magic
    (d / DB_NAME).write_bytes(bytes(data))


def _other_schema(d: Path) -> None:
    db = sqlite3.connect(d / DB_NAME)
    db.executescript("CREATE TABLE routing (x); CREATE TABLE meta (a, b, c);")
    db.close()


def _other_version(d: Path) -> None:
    _valid_cache(d)
    db = sqlite3.connect(d / DB_NAME)
    with db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    db.close()


def _bad_node_id(d: Path) -> None:
    _valid_cache(d)
    db = sqlite3.connect(d / DB_NAME)
    with db:
        db.execute("UPDATE meta SET value = 'text' WHERE key = 'node_id'")
    db.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "hailing.node" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "damage", [_garbage, _truncated, _header_byte, _other_schema, _other_version, _bad_node_id]
)
async def test_a_corrupt_cache_is_set_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    damage(tmp_path)
    original = (tmp_path / DB_NAME).read_bytes()
    async with DhtNode(LOCAL, data_dir=tmp_path) as node:  # raised StorageError before
        node_id = node.node_id
    aside = list(tmp_path.glob(DB_NAME + ".corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == original  # kept, never deleted
    (warning,) = _warnings(caplog)
    assert str(tmp_path / DB_NAME) in warning and aside[0].name in warning
    assert "\n" not in warning
    # the rebuilt cache works: the next start keeps the new id, with no warning
    caplog.clear()
    async with DhtNode(LOCAL, data_dir=tmp_path) as again:
        assert again.node_id == node_id
    assert _warnings(caplog) == []


async def test_bad_rows_in_the_routing_cache_are_skipped(tmp_path: Path) -> None:
    _valid_cache(tmp_path, rows=3)
    db = sqlite3.connect(tmp_path / DB_NAME)
    with db:
        db.execute("INSERT INTO routing VALUES (?, '10.1.1.1', 6881, 'yesterday')", (b"A" * 20,))
        db.execute("INSERT INTO routing VALUES (?, '10.1.1.2', 'port', 1.0)", (b"B" * 20,))
        db.execute("INSERT INTO routing VALUES ('text id', '10.1.1.3', 6881, 1.0)")
    db.close()
    state, node_id, nodes = load_node_state(tmp_path)  # float('yesterday') raised before
    assert state is not None
    state.close()
    assert node_id == b"N" * 20 and len(nodes) == 3


def _lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


async def test_a_locked_cache_at_start_is_done_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original = _valid_cache(tmp_path)
    other = _lock(tmp_path / DB_NAME)
    try:
        async with DhtNode(LOCAL, data_dir=tmp_path) as node:
            assert node.running
    finally:
        other.close()
    assert (tmp_path / DB_NAME).read_bytes() == original  # left alone, not set aside
    assert not list(tmp_path.glob("*.corrupt-*"))
    (warning,) = _warnings(caplog)
    assert "locked" in warning


async def test_a_locked_cache_skips_the_periodic_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with DhtNode(LOCAL, data_dir=tmp_path) as node:
        state = node._state
        assert state is not None
        # a statement waits BUSY_TIMEOUT for a lock, not the 10 s it used to
        (busy_ms,) = state._db.execute("PRAGMA busy_timeout").fetchone()
        assert busy_ms == int(BUSY_TIMEOUT * 1000) <= 100
        other = _lock(tmp_path / DB_NAME)
        try:
            node._next_save = 0.0
            node._on_timer()  # the periodic save: skipped, counted, no exception
            node._save()
        finally:
            other.close()
        assert node.stats["state_saves_skipped"] == 2
        assert len(_warnings(caplog)) == 1  # warned once
        node._save()
        assert node.stats["state_saves_skipped"] == 2  # saves again once unlocked


async def test_a_cache_found_corrupt_while_saving_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with DhtNode(LOCAL, data_dir=tmp_path) as node:
        node_id = node.node_id

        def broken(self: NodeState, nodes: object) -> None:
            raise CorruptStorageError(f"{self.path}: database disk image is malformed")

        monkeypatch.setattr(NodeState, "save_routing", broken)
        node._save()
        monkeypatch.undo()
        assert node.stats["state_rebuilds"] == 1
    assert len(list(tmp_path.glob(DB_NAME + ".corrupt-*"))) == 1
    async with DhtNode(LOCAL, data_dir=tmp_path) as again:
        assert again.node_id == node_id  # the fresh cache was written


def test_the_warning_is_one_line_on_stderr_without_logging_configured(tmp_path: Path) -> None:
    _garbage(tmp_path)
    code = (
        "import asyncio, sys\n"
        "from hailing.node import DhtNode\n"
        "async def main():\n"
        "    async with DhtNode(('127.0.0.1', 0), data_dir=sys.argv[1]):\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt-" in lines[0] and "Traceback" not in out.stderr
