"""Interrupted transfers and chats through the real CLI, each side its own process, on a
``hailing testnet`` subprocess (127.0.0.1, ICE on loopback): Ctrl-C or ``kill -9`` on
either side gives one line on that side and a prompt event on the other; limits are
checked before connecting; partial files do not outlive the next start; two chats meet."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_helpers import run_testnet
from test_cli_peer import (
    HAILING,
    Daemon,
    Lines,
    book,
    collect,
    env,
    listening,
    new_ids,
    one_error_line,
    spawn,
)

BIG = 64 * 1024 * 1024  # long enough on loopback that a signal lands mid-transfer
WAIT = 30.0


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A ``hailing testnet --nodes 8`` subprocess shared by this module."""
    yield from run_testnet(8)


def clean_stderr(lines: list[str]) -> None:
    text = "\n".join(lines)
    for bad in ("Traceback", "never retrieved", "was destroyed"):
        assert bad not in text, text


@contextlib.contextmanager
def transfer(tmp: Path, bootstrap: str) -> Iterator[tuple[dict[str, str], Daemon, Daemon]]:
    """bob listening, alice sending him a big file; yields once bob has its file-started."""
    ids = new_ids(tmp, "alice", "bob")
    with book(tmp / "bob") as b:
        b.add(ids["alice"], "alice")
    src = tmp / "big.bin"
    with src.open("wb") as f:
        f.write(os.urandom(1 << 20) * (BIG >> 20))
    with listening(tmp / "bob", "--bootstrap", bootstrap) as bob:
        sender = Daemon(spawn("send", ids["bob"], "--file", src, "--data-dir", tmp / "alice",
                              "--bootstrap", bootstrap, "--timeout", "15"))
        try:
            bob.wait_event(event="file-started", name="big.bin", size=BIG, timeout=WAIT)
            yield ids, bob, sender
        finally:
            if sender.proc.poll() is None:
                sender.proc.kill()
            sender.proc.wait(10)


def exit_of(d: Daemon, timeout: float = WAIT) -> int:
    code = d.proc.wait(timeout)
    d.out.thread.join(5)
    d.err.thread.join(5)
    clean_stderr(d.err.lines)
    return code


def partials(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "downloads").glob(".partial-*"))


# -- Ctrl-C and kill -9 during a transfer ----------------------------------------------------


def test_ctrl_c_on_the_sender(bootstrap: str, tmp_path: Path) -> None:
    with transfer(tmp_path, bootstrap) as (ids, bob, sender):
        sender.proc.send_signal(signal.SIGINT)
        assert exit_of(sender) == 130
        assert sender.err.lines == ["hailing: interrupted; the file was not delivered"]
        assert sender.out.lines == []
        i = bob.wait_event(event="file-aborted", timeout=WAIT)
        assert bob.events(i)[0] == {"event": "file-aborted", "from": ids["alice"], "name": "big.bin",
                                    "reason": "cancelled by the sender", "contact": "alice"}
        bob.wait_event(i, event="closed", reason="the peer hung up", timeout=WAIT)
        assert not any(e["event"] == "file" for e in bob.events())
        assert partials(tmp_path / "bob") == []
        assert bob.stop(signal.SIGINT) == 0
    clean_stderr(bob.err.lines)


def test_ctrl_c_on_the_receiver(bootstrap: str, tmp_path: Path) -> None:
    with transfer(tmp_path, bootstrap) as (ids, bob, sender):
        assert bob.stop(signal.SIGINT) == 0
        events = bob.events()
        assert events[-2:] == [
            {"event": "file-aborted", "from": ids["alice"], "name": "big.bin",
             "reason": "the connection closed: listen stopped", "contact": "alice"},
            {"event": "closed", "from": ids["alice"], "reason": "listen stopped", "contact": "alice"},
        ], events
        assert exit_of(sender) == 1
        assert sender.err.lines == ["hailing: error: the file was not delivered: the peer hung up"]
        assert partials(tmp_path / "bob") == []
    clean_stderr(bob.err.lines)


def test_kill_9_of_the_receiver_is_noticed_and_its_partial_file_cleaned(bootstrap: str, tmp_path: Path) -> None:
    with transfer(tmp_path, bootstrap) as (_ids, bob, sender):
        bob.proc.kill()
        bob.proc.wait(10)
        # Noticed by the keepalive (seconds), not SCTP's own timeout (30-60 s): the wait
        # below would run out first.
        assert exit_of(sender, timeout=20) == 1
        (line,) = sender.err.lines
        assert line.startswith("hailing: error: the file was not delivered: the peer stopped answering")
    left = partials(tmp_path / "bob")
    assert len(left) == 1  # what the killed receiver was writing
    with listening(tmp_path / "bob", "--bootstrap", bootstrap) as again:
        assert partials(tmp_path / "bob") == []
        assert again.stop() == 0


def test_kill_9_of_the_sender_is_noticed(bootstrap: str, tmp_path: Path) -> None:
    with transfer(tmp_path, bootstrap) as (ids, bob, sender):
        sender.proc.kill()
        i = bob.wait_event(event="file-aborted", timeout=20)
        ev = bob.events(i)[0]
        assert ev["from"] == ids["alice"] and ev["reason"].startswith(
            "the connection closed: the peer stopped answering"), ev
        i = bob.wait_event(i, event="closed", timeout=20)
        assert bob.events(i)[0]["reason"].startswith("the peer stopped answering")
        assert partials(tmp_path / "bob") == []
        assert bob.stop() == 0
    clean_stderr(bob.err.lines)


def test_send_shows_progress_on_a_terminal_only(bootstrap: str, tmp_path: Path) -> None:
    ids = new_ids(tmp_path, "alice", "bob")
    with book(tmp_path / "bob") as b:
        b.add(ids["alice"], "alice")
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    with listening(tmp_path / "bob", "--bootstrap", bootstrap) as bob:
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                [*HAILING, "send", ids["bob"], "--file", str(src), "--data-dir", str(tmp_path / "alice"),
                 "--bootstrap", bootstrap, "--timeout", "15"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env())
            os.close(slave)
            out, _ = proc.communicate(timeout=WAIT)
            tty = b""
            with contextlib.suppress(OSError):  # EIO once the child's side is closed
                while chunk := os.read(master, 65536):
                    tty += chunk
        finally:
            os.close(master)
        assert proc.returncode == 0, tty
        assert json.loads(out)["delivered"] is True
        text = tty.decode(errors="replace")
        assert "sending payload.bin: " in text and "of 3.1 MB (100 %)" in text, text
        assert text.endswith("\r\x1b[K"), repr(text[-40:])  # the line is cleared at the end
        assert "Traceback" not in text
        bob.wait_event(event="file", name="payload.bin", timeout=WAIT)
        assert bob.stop() == 0


# -- limits before connecting ----------------------------------------------------------------


def test_limits_are_checked_before_connecting(tmp_path: Path) -> None:
    bob = new_ids(tmp_path, "bob")["bob"]
    a = tmp_path / "alice"
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(8 * 1024**3 + 1)  # sparse
    # Nobody listens at this bootstrap address: a command that tried to connect would
    # fail differently (and later).
    net = ["--data-dir", a, "--bootstrap", "127.0.0.1:9", "--timeout", "30"]
    procs = {
        "text": spawn("send", bob, "x" * (64 * 1024 + 1), *net),
        "file": spawn("send", bob, "--file", huge, *net),
        "dir": spawn("send", bob, "--file", tmp_path, *net),
    }
    errors = {k: one_error_line(collect(p), 1) for k, p in procs.items()}
    assert "a message is at most 65536 bytes" in errors["text"], errors
    assert "the most a file can be is 8589934592 bytes" in errors["file"], errors
    assert "not a regular file" in errors["dir"], errors
    assert not (a / "dht").exists()  # no node was even started


# -- chat ------------------------------------------------------------------------------------


def chat(tmp: Path, me: str, other: str, bootstrap: str) -> Daemon:
    return Daemon(spawn("chat", other, "--data-dir", tmp / me, "--bootstrap", bootstrap,
                        "--timeout", "20", stdin=subprocess.PIPE))


def say(d: Daemon, line: str) -> None:
    assert d.proc.stdin is not None
    d.proc.stdin.write(line.encode() + b"\n")
    d.proc.stdin.flush()


def wait_line(lines: Lines, text: str, start: int = 0) -> int:
    return lines.wait_for(lambda s: s == text, start, WAIT)


def test_ctrl_c_in_a_chat_is_shown_to_the_listener(bootstrap: str, tmp_path: Path) -> None:
    ids = new_ids(tmp_path, "alice", "bob")
    with book(tmp_path / "bob") as b:
        b.add(ids["alice"], "alice")
    with listening(tmp_path / "bob", "--bootstrap", bootstrap) as bob:
        alice = chat(tmp_path, "alice", ids["bob"], bootstrap)
        try:
            say(alice, "hello")
            bob.wait_event(event="message", text="hello", timeout=WAIT)
            alice.proc.send_signal(signal.SIGINT)
            assert exit_of(alice) == 130
            assert alice.err.lines[-1] == f"hailing: interrupted; left the chat with {ids['bob'][:10]}"
            bob.wait_event(event="closed", reason="the peer hung up", timeout=WAIT)
        finally:
            if alice.proc.poll() is None:
                alice.proc.kill()
        assert bob.stop() == 0


@pytest.mark.parametrize("stagger", [False, True])
def test_two_chats_meet_and_a_hang_up_is_shown(bootstrap: str, tmp_path: Path, stagger: bool) -> None:
    """Both run ``hailing chat`` with the other (at once, or one well before the other):
    they end up on one connection and talk both ways; Ctrl-C on one side shows
    "<name> left" on the other, which then exits 0."""
    ids = new_ids(tmp_path, "alice", "bob")
    with book(tmp_path / "alice") as b:
        b.add(ids["bob"], "bob")
    with book(tmp_path / "bob") as b:
        b.add(ids["alice"], "alice")
    alice = chat(tmp_path, "alice", ids["bob"], bootstrap)
    procs = [alice]
    try:
        if stagger:
            alice.err.wait_for(lambda s: s.startswith("calling bob"), 0, WAIT)
        bob = chat(tmp_path, "bob", ids["alice"], bootstrap)
        procs.append(bob)
        for d in (alice, bob):
            d.err.wait_for(lambda s: s.startswith("connected"), 0, WAIT)
        say(alice, "hi bob")
        say(bob, "hi alice")
        wait_line(bob.out, "alice: hi bob")
        wait_line(alice.out, "bob: hi alice")
        say(alice, "second")
        wait_line(bob.out, "alice: second")
        bob.proc.send_signal(signal.SIGINT)
        assert exit_of(bob) == 130
        wait_line(alice.out, "bob left")
        assert exit_of(alice) == 0
        # Each line arrived once, whatever connection carried it.
        assert alice.out.lines == ["bob: hi alice", "bob left"]
        assert bob.out.lines == ["alice: hi bob", "alice: second"]
    finally:
        for d in procs:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(10)
