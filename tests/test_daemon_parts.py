"""The daemon's parts that need no network: its files (lock, api.json), the history, the
event bus and how connection items become events."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hailing.daemon._files import (
    ApiInfo,
    DaemonLock,
    is_locked,
    read_api_info,
    remove_api_info,
    write_api_info,
)
from hailing.daemon.events import EventBus, item_event
from hailing.daemon.history import History
from hailing.errors import DaemonError, LocalProtocolError
from hailing.rtc.connection import FileAborted, FileReceived, FileStarted, TextMessage

ALICE, BOB = bytes(range(32)), bytes(range(1, 33))


def test_one_lock_per_data_directory(tmp_path: Path) -> None:
    assert not is_locked(tmp_path)
    lock = DaemonLock(tmp_path).acquire()
    assert is_locked(tmp_path)
    with pytest.raises(DaemonError, match=f"already runs .*pid {os.getpid()}"):
        DaemonLock(tmp_path).acquire()
    # Another process sees it held too (flock is per open file, not per process).
    probe = "from pathlib import Path; from hailing.daemon._files import is_locked; " \
            f"print(is_locked(Path({str(tmp_path)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True"
    lock.release()
    assert not is_locked(tmp_path)
    DaemonLock(tmp_path).acquire().release()


def test_api_info_is_private_and_removed_only_by_its_owner(tmp_path: Path) -> None:
    info = ApiInfo(pid=os.getpid(), url="http://127.0.0.1:1234", port=1234, token="t" * 43,
                   contact_id="hl" + "a" * 58)
    path = write_api_info(tmp_path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_api_info(tmp_path) == info
    remove_api_info(tmp_path, ApiInfo(1, "x", 1, "other", ""))  # not ours: stays
    assert path.exists()
    remove_api_info(tmp_path, info)
    assert not path.exists() and read_api_info(tmp_path) is None


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"pid": 1}',
                                     b'{"pid": "1", "url": "u", "port": 1, "token": "t"}',
                                     b'{"pid": 1, "url": "u", "port": 70000, "token": "t"}'])
def test_a_damaged_api_file_means_no_daemon(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "api.json"
    path.write_bytes(content)
    path.chmod(0o600)
    assert read_api_info(tmp_path) is None


def test_an_api_file_others_can_read_is_not_trusted(tmp_path: Path) -> None:
    info = ApiInfo(pid=os.getpid(), url="http://127.0.0.1:1", port=1, token="t", contact_id="")
    write_api_info(tmp_path, info).chmod(0o644)
    assert read_api_info(tmp_path) is None


def test_history_pages_back_by_id(tmp_path: Path) -> None:
    with History(tmp_path) as h:
        for i in range(7):
            h.add_text(ALICE if i % 2 else BOB, "in" if i % 3 else "out", f"m{i}", at=100.0 + i)
        fid = h.add_file(ALICE, "in", name="a.bin", path="/x/a.bin", size=3, sha256="ab" * 32)
        newest = h.page(limit=3)
        assert [e.text for e in newest[:2]] == ["m5", "m6"] and newest[2].id == fid
        assert [e.text for e in h.page(limit=3, before=newest[0].id)] == ["m2", "m3", "m4"]
        assert [e.text for e in h.page(BOB)] == ["m0", "m2", "m4", "m6"]
        assert h.page(BOB, before=1) == []
        assert newest[2].to_json()["sha256"] == "ab" * 32
        assert h.count() == 8
    with History(tmp_path) as again:  # kept on disk
        assert again.count() == 8


def test_events_name_the_contact_when_the_book_has_a_name() -> None:
    """``contact``: the book's name for the id in ``from``/``to``; none for a stranger, a
    nameless contact, or an id the book cannot parse (which must not fail the event)."""
    alice, stranger = "hl" + "a" * 58, "hl" + "c" * 58
    names = {alice: "alice"}

    def name_of(cid: str) -> str | None:
        if cid == "garbage":
            raise LocalProtocolError("not a contact id")
        return names.get(cid)

    bus = EventBus(name_of)
    seen: list[dict[str, object]] = []
    bus.add_sink(seen.append)
    bus.emit({"event": "message", "from": alice, "text": "hi"})
    bus.emit({"event": "sent", "to": alice, "text": "yo"})
    bus.emit({"event": "message", "from": stranger, "text": "?"})
    bus.emit({"event": "message", "from": "garbage", "text": "?"})
    bus.emit({"event": "chain", "up": True})
    assert [e.get("contact") for e in seen] == ["alice", "alice", None, None, None]
    assert all("at" in e for e in seen)


def test_connection_items_become_listen_shaped_events() -> None:
    who = "hl" + "b" * 58
    assert item_event(TextMessage("hi"), who) == {"event": "message", "from": who, "text": "hi"}
    got = item_event(FileReceived("a.bin", Path("/d/a.bin"), 3, "cd" * 32), who)
    assert got == {"event": "file", "from": who, "name": "a.bin", "path": "/d/a.bin",
                   "size": 3, "sha256": "cd" * 32}
    assert item_event(FileStarted("a.bin", 3), who) == {
        "event": "file-started", "from": who, "name": "a.bin", "size": 3}
    assert item_event(FileAborted("a.bin", "lost"), who)["event"] == "file-aborted"


async def test_a_slow_subscriber_is_marked_lagged_not_blocking() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.add_sink(lambda ev: seen.append(ev["event"]))
    with bus.subscribe(size=2) as slow, bus.subscribe() as fast:
        for i in range(3):
            bus.emit({"event": f"e{i}"})
        assert slow.lagged and not fast.lagged
        assert slow.dropped == 1 and bus.dropped == 1  # bounded, and counted
        assert (await slow.get())["event"] == "e0"
        assert fast.queue.qsize() == 3
        assert bus.subscribers == 2
    assert bus.subscribers == 0
    assert seen == ["e0", "e1", "e2"]
