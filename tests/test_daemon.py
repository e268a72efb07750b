"""The daemon (``hailing up``) end to end through the real CLI: every daemon, send, chat,
contact and status command is its own subprocess, on a ``hailing testnet`` subprocess on
127.0.0.1 (ICE on loopback only). Every wait has a timeout; nothing here is timed."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_peer import (
    BOOTSTRAP_LINE,
    CONTACT_ID,
    Daemon,
    book,
    collect,
    daemon,
    new_ids,
    no_traceback,
    ok,
    one_error_line,
    run,
    send_result,
    spawn,
)

UP_LINE = re.compile(r"up (" + CONTACT_ID.pattern + r") dht (127\.0\.0\.1:\d+) api "
                     r"(http://127\.0\.0\.1:(\d+))")


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    with daemon("testnet", "--nodes", "8") as d:
        m = BOOTSTRAP_LINE.fullmatch(d.first_line())
        assert m, d.out.lines
        yield m.group(1)
        assert d.stop() == 0, d.err.lines


class Up:
    """A running ``hailing up`` and what its first line and api.json say."""

    def __init__(self, d: Daemon, data_dir: Path) -> None:
        self.d = d
        self.data_dir = data_dir
        m = UP_LINE.fullmatch(d.first_line())
        assert m, d.out.lines
        self.contact_id, self.dht, self.url, port = m.groups()
        self.port = int(port)
        info = json.loads((data_dir / "api.json").read_text())
        assert info["port"] == self.port and info["url"] == self.url
        self.token: str = info["token"]

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None, raw: bytes | None = None,
                auth: bool = True) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Authorization": f"Bearer {self.token}"} if auth else {}
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, json.loads(payload) if payload else None

    def history(self, contact: str | None = None) -> list[dict[str, Any]]:
        query = f"?limit=500&contact={contact}" if contact else "?limit=500"
        status, body = self.request("GET", "/api/history" + query)
        assert status == 200, body
        messages: list[dict[str, Any]] = body["messages"]
        return messages


def up(data_dir: Path, *args: str) -> Any:
    """``hailing up``, yielding an :class:`Up` once its first line is out."""
    return daemon("up", "--data-dir", data_dir, *args)


def friends(base: Path, *names: str) -> dict[str, str]:
    """Identities that all have each other as contacts."""
    ids = new_ids(base, *names)
    for n in names:
        with book(base / n) as b:
            for other in names:
                if other != n:
                    b.add(ids[other], other)
    return ids


def wait_until(pred: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def no_event(d: Daemon, start: int, seconds: float, **match: Any) -> None:
    """No event matching ``match`` arrives within ``seconds`` (from line ``start``)."""
    with pytest.raises(AssertionError, match="no matching line"):
        d.wait_event(start, timeout=seconds, **match)


# -- many sends, a restart, history --------------------------------------------------------


def test_twenty_sends_through_daemons_and_a_restart_loses_nothing(bootstrap: str,
                                                                  tmp_path: Path) -> None:
    ids = friends(tmp_path, "alice", "bob")
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    with up(b_dir, "--bootstrap", bootstrap) as bd, up(a_dir, "--bootstrap", bootstrap) as ad:
        bob, alice = Up(bd, b_dir), Up(ad, a_dir)
        assert bob.contact_id == ids["bob"] and alice.contact_id == ids["alice"]
        assert stat.S_IMODE((b_dir / "api.json").stat().st_mode) == 0o600
        # One daemon per data directory.
        again = run("up", "--data-dir", b_dir, "--bootstrap", bootstrap)
        assert "already runs" in one_error_line(again, 1)

        results = [send_result(run("send", ids["bob"], f"message {i}", "--data-dir", a_dir,
                                   "--timeout", "20", timeout=40)) for i in range(20)]
        assert all(r["to"] == ids["bob"] for r in results)
        # The first send called; the others used the link the daemon kept.
        assert [r["reused"] for r in results] == [False] + [True] * 19
        last = bob.d.wait_event(event="message", text="message 19")
        got = [e["text"] for e in bob.d.events()[: last] if e["event"] == "message"]
        assert got == [f"message {i}" for i in range(20)]
        assert [e["event"] for e in bob.d.events() if e["event"] == "call"] == ["call"]

        assert [m["text"] for m in alice.history(ids["bob"])] == got
        assert {m["direction"] for m in alice.history()} == {"out"}
        assert [(m["text"], m["direction"]) for m in bob.history()] == [(t, "in") for t in got]

        # A restart: same identity, contacts and history; nothing old rings.
        assert bob.d.stop(signal.SIGINT) == 0
        assert not (b_dir / "api.json").exists()
        alice.d.wait_event(event="closed", to=ids["bob"])
        with up(b_dir, "--bootstrap", bootstrap) as bd2:
            bob2 = Up(bd2, b_dir)
            assert bob2.contact_id == ids["bob"]
            no_event(bob2.d, 1, 5.0, event="call")
            assert [m["text"] for m in bob2.history()] == got
            contacts = ok(run("contact", "list", "--data-dir", b_dir))
            assert contacts == [f"{ids['alice']} allowed alice"]
            # alice's daemon noticed the link closed and calls again.
            r = send_result(run("send", ids["bob"], "after the restart", "--data-dir", a_dir,
                                "--timeout", "20", timeout=40))
            assert r["reused"] is False
            bob2.d.wait_event(event="message", text="after the restart")
            assert [e["event"] for e in bob2.d.events() if e["event"] == "call"] == ["call"]
            assert bob2.d.stop() == 0
        assert alice.d.stop() == 0


# -- contacts and presence through the daemon -----------------------------------------------


def test_contact_added_while_running_is_reachable_at_once(bootstrap: str, tmp_path: Path) -> None:
    """The daemon listens for a new contact the moment it is added (not at its next
    refresh, a minute later): the caller's short timeout would run out before that."""
    ids = new_ids(tmp_path, "bob", "carol", "dave")
    b_dir = tmp_path / "bob"
    with book(tmp_path / "carol") as c:
        c.add(ids["bob"], "bob")
    with book(tmp_path / "dave") as d:
        d.add(ids["bob"], "bob")
    with up(b_dir, "--bootstrap", bootstrap) as bd:
        bob = Up(bd, b_dir)
        start = len(bob.d.out)
        added = ok(run("contact", "add", ids["carol"], "--name", "carol", "--data-dir", b_dir))
        assert added == [f"{ids['carol']} allowed carol"]
        bob.d.wait_event(start, event="contact", contact_id=ids["carol"], state="allowed")
        r = send_result(run("send", ids["bob"], "hi, just added", "--data-dir", tmp_path / "carol",
                            "--bootstrap", bootstrap, "--timeout", "15", timeout=30))
        assert r["delivered"] is True
        bob.d.wait_event(start, event="message", text="hi, just added", **{"from": ids["carol"]})
        # A contact subcommand with no API route runs locally, then the daemon refreshes.
        ok(run("contact", "add", ids["dave"], "--name", "dave", "--data-dir", b_dir))
        send_result(run("send", ids["bob"], "dave here", "--data-dir", tmp_path / "dave",
                        "--bootstrap", bootstrap, "--timeout", "15", timeout=30))
        bob.d.wait_event(start, event="message", text="dave here")

        # status and contact go through the daemon with the one-shot output.
        assert ok(run("status", "busy", "--data-dir", b_dir)) == ["status busy, accept-any off"]
        bob.d.wait_event(start, event="presence", status="busy")
        assert ok(run("status", "--data-dir", b_dir)) == ["status busy, accept-any off"]
        assert ok(run("status", "available", "--no-daemon", "--data-dir", b_dir)) == [
            "status available, accept-any off"]
        assert ok(run("contact", "block", ids["carol"], "--data-dir", b_dir)) == [
            f"{ids['carol']} blocked carol"]
        assert ok(run("contact", "remove", ids["dave"], "--data-dir", b_dir)) == [
            f"removed {ids['dave']}"]
        gone = run("contact", "remove", ids["dave"], "--data-dir", b_dir)
        assert "no such contact" in one_error_line(gone, 1)
        assert ok(run("contact", "list", "--data-dir", b_dir)) == [f"{ids['carol']} blocked carol"]
        # A second node for the same identity would answer the same calls.
        twice = run("listen", "--data-dir", b_dir, "--bootstrap", bootstrap)
        assert "already listens" in one_error_line(twice, 1)
        assert bob.d.stop() == 0


def test_chat_through_the_daemon(bootstrap: str, tmp_path: Path) -> None:
    ids = friends(tmp_path, "alice", "bob")
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    with up(b_dir, "--bootstrap", bootstrap) as bd, up(a_dir, "--bootstrap", bootstrap) as ad:
        bob, alice = Up(bd, b_dir), Up(ad, a_dir)
        # Both send at once, each with no link yet: both may call ("glare"). Both are
        # delivered, and both ends settle on the same single link.
        sends = [spawn("send", ids["bob"], "glare a", "--data-dir", a_dir),
                 spawn("send", ids["alice"], "glare b", "--data-dir", b_dir)]
        for p in sends:
            send_result(collect(p, timeout=40))
        bob.d.wait_event(event="message", text="glare a")
        alice.d.wait_event(event="message", text="glare b")
        for who in (alice, bob):
            wait_until(lambda who=who: len(who.request("GET", "/api/links")[1]["links"]) == 1)
        assert not [e for d in (alice.d, bob.d) for e in d.events()
                    if e["event"] == "closed" and e["links"] == 0]

        chat = Daemon(spawn("chat", ids["bob"], "--data-dir", a_dir, "--timeout", "20",
                            stdin=subprocess.PIPE))
        try:
            stdin = chat.proc.stdin
            assert stdin is not None
            stdin.write(b"hello over chat\n")
            stdin.flush()
            bob.d.wait_event(event="message", text="hello over chat")
            # bob answers with a send through his own daemon: it takes the open link.
            r = send_result(run("send", ids["alice"], "hi alice", "--data-dir", b_dir))
            assert r["reused"] is True
            chat.out.wait_for(lambda line: line == "bob: hi alice")
            stdin.write(b"/quit\n")
            stdin.flush()
            assert chat.proc.wait(timeout=20) == 0, chat.err.lines
        finally:
            if chat.proc.poll() is None:
                chat.proc.kill()
                chat.proc.wait(timeout=10)
        chat.out.thread.join(5)
        assert chat.out.lines == ["bob: hi alice"]
        no_traceback("\n".join(chat.err.lines))

        # A file through the daemon (a relative path is the sender's cwd's).
        data = os.urandom(300_000)
        (tmp_path / "photo.bin").write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        r = send_result(collect(spawn("send", ids["bob"], "--file", "photo.bin", "--data-dir",
                                      a_dir, cwd=tmp_path)))
        assert r["sha256"] == digest and r["bytes"] == len(data) and r["reused"] is True
        bob.d.wait_event(event="file-started", name="photo.bin", size=len(data))
        i = bob.d.wait_event(event="file", sha256=digest)
        got = Path(bob.d.events(i)[0]["path"])
        assert got.is_absolute() and got.read_bytes() == data
        alice.d.wait_event(event="file-sent", sha256=digest)
        alice.d.wait_event(event="file-progress", sent=len(data), size=len(data))
        kinds = [(m["direction"], m["kind"]) for m in alice.history(ids["bob"])]
        assert sorted(kinds[:2]) == [("in", "text"), ("out", "text")]  # the glare pair
        assert kinds[2:] == [("out", "text"), ("in", "text"), ("out", "file")]
        assert bob.history()[-1]["sha256"] == digest

        # Ctrl-C on a send through the daemon: one line, exit 130, and the daemon cancels
        # the transfer, so the receiver hears of it at once (not after a timeout).
        big = tmp_path / "big.bin"
        with big.open("wb") as f:
            f.truncate(48 * 1024 * 1024)
        start = len(bob.d.out)
        sender = Daemon(spawn("send", ids["bob"], "--file", big, "--data-dir", a_dir))
        try:
            bob.d.wait_event(start, event="file-started", name="big.bin")
            sender.proc.send_signal(signal.SIGINT)
            assert sender.proc.wait(timeout=20) == 130
        finally:
            if sender.proc.poll() is None:
                sender.proc.kill()
                sender.proc.wait(timeout=10)
        sender.err.thread.join(5)
        assert sender.err.lines == ["hailing: interrupted; the file was not delivered"]
        assert sender.out.lines == []
        bob.d.wait_event(start, event="file-aborted", name="big.bin")
        assert not any(e["event"] == "file" for e in bob.d.events(start))
        # The link is still there for the next send (a contact by name, too).
        assert send_result(run("send", "bob", "still here", "--data-dir", a_dir))["reused"]
        bob.d.wait_event(start, event="message", text="still here")

        # bob's node stops while alice chats through hers: she is told, as one-shot says it.
        chat = Daemon(spawn("chat", "bob", "--data-dir", a_dir, stdin=subprocess.PIPE))
        try:
            chat.err.wait_for(lambda line: line.startswith("connected in"))
            assert bob.d.stop() == 0
            assert chat.proc.wait(timeout=20) == 0, chat.err.lines
        finally:
            if chat.proc.poll() is None:
                chat.proc.kill()
                chat.proc.wait(timeout=10)
        chat.out.thread.join(5)
        assert chat.out.lines == ["bob left"]
        assert alice.d.stop() == 0


# -- the API refuses what it must -----------------------------------------------------------


def test_api_refuses_foreign_and_garbage_requests(bootstrap: str, tmp_path: Path) -> None:
    new_ids(tmp_path, "bob")
    b_dir = tmp_path / "bob"
    with up(b_dir, "--bootstrap", bootstrap) as bd:
        bob = Up(bd, b_dir)
        port = bob.port
        status, body = bob.request("GET", "/api/status")
        assert status == 200 and body["contact_id"] == bob.contact_id

        refused = {
            "missing token": bob.request("GET", "/api/status", auth=False),
            "wrong token": bob.request("GET", "/api/status",
                                       headers={"Authorization": "Bearer " + "x" * 43}),
            "not bearer": bob.request("GET", "/api/status",
                                      headers={"Authorization": f"Basic {bob.token}"}),
            "foreign origin": bob.request("GET", "/api/status",
                                          headers={"Origin": "http://evil.example"}),
            "null origin": bob.request("POST", "/api/status", {"status": "dnd"},
                                       headers={"Origin": "null"}),
            "foreign host": bob.request("GET", "/api/status",
                                        headers={"Host": f"evil.example:{port}"}),
            "other port": bob.request("GET", "/api/status",
                                      headers={"Host": f"127.0.0.1:{port + 1}"}),
            "bad json": bob.request("POST", "/api/send", raw=b"{not json"),
            "not an object": bob.request("POST", "/api/send", [1, 2]),
            "wrong type": bob.request("POST", "/api/send", {"contact": 7, "text": "x"}),
            "text and file": bob.request("POST", "/api/send", {"contact": bob.contact_id,
                                                               "text": "x", "file": "/y"}),
            "bad timeout": bob.request("POST", "/api/send", {"contact": bob.contact_id,
                                                             "text": "x", "timeout": -1}),
            "bad status": bob.request("POST", "/api/status", {"status": "away"}),
            "bad contact id": bob.request("POST", "/api/contacts", {"contact": "hlnope",
                                                                   "name": "x"}),
            "unknown name": bob.request("POST", "/api/send", {"contact": "nobody", "text": "x"}),
            "relative path": bob.request("POST", "/api/send", {"contact": bob.contact_id,
                                                               "file": "x.bin"}),
            "bad limit": bob.request("GET", "/api/history?limit=-3"),
            "oversized": bob.request("POST", "/api/send", raw=b'{"text": "' + b"a" * 600_000
                                     + b'"}'),
            "unknown path": bob.request("GET", "/api/nothing"),
            "wrong method": bob.request("PUT", "/api/status"),
        }
        expected = {"missing token": 401, "wrong token": 401, "not bearer": 401,
                    "foreign origin": 403, "null origin": 403, "foreign host": 403,
                    "other port": 403, "oversized": 413, "unknown path": 404,
                    "wrong method": 405, "unknown name": 404}
        for name, (code, answer) in refused.items():
            assert code == expected.get(name, 400), (name, code, answer)
            assert isinstance(answer, dict) and answer["error"], (name, answer)
        # None of them changed anything.
        assert bob.request("GET", "/api/status")[1]["status"] == "available"

        # Bytes that are not HTTP at all.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x00\xff garbage \r\n\r\n")
            assert re.match(rb"HTTP/1\.[01] 400 ", s.recv(100))

        # The event WebSocket: the same checks, then the events.
        ws_refused = {
            "no token": _ws_handshake(port, {}),
            "foreign origin": _ws_handshake(port, {"Authorization": f"Bearer {bob.token}",
                                                   "Origin": "http://evil.example"}),
        }
        assert ws_refused["no token"].startswith(b"HTTP/1.1 401"), ws_refused
        assert ws_refused["foreign origin"].startswith(b"HTTP/1.1 403"), ws_refused
        assert _ws_handshake(port, {"Authorization": f"Bearer {bob.token}",
                                    "Origin": f"http://127.0.0.1:{port}"}).startswith(
            b"HTTP/1.1 101")

        # Still serving, and a presence change reaches the event stream and stdout.
        start = len(bob.d.out)
        assert bob.request("POST", "/api/status", {"status": "dnd"})[0] == 200
        bob.d.wait_event(start, event="presence", status="dnd")
        assert bob.d.stop() == 0


def _ws_handshake(port: int, headers: dict[str, str]) -> bytes:
    lines = [
        "GET /api/events HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
        "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        return s.recv(200)


# -- lifecycle -------------------------------------------------------------------------------


def test_a_killed_daemon_leaves_nothing_that_blocks(bootstrap: str, tmp_path: Path) -> None:
    """kill -9 leaves api.json behind: commands see the daemon is gone and work one-shot,
    and a new ``hailing up`` starts (the kernel dropped the lock). The new one is a BEP43
    read-only DHT node, and calls still reach it."""
    ids = friends(tmp_path, "alice", "bob")
    b_dir = tmp_path / "bob"
    with up(b_dir, "--bootstrap", bootstrap) as bd:
        Up(bd, b_dir)
        bd.proc.kill()
        bd.proc.wait(timeout=10)
    assert (b_dir / "api.json").exists()
    assert ok(run("status", "--data-dir", b_dir)) == ["status available, accept-any off"]
    with up(b_dir, "--bootstrap", bootstrap, "--read-only") as bd:
        bob = Up(bd, b_dir)
        assert bob.contact_id == ids["bob"]
        status, body = bob.request("GET", "/api/status")
        assert status == 200 and body["read_only"] is True
        send_result(run("send", ids["bob"], "to a read-only node", "--data-dir",
                        tmp_path / "alice", "--bootstrap", bootstrap, "--timeout", "15",
                        timeout=30))
        bob.d.wait_event(event="message", text="to a read-only node")
        assert bob.d.stop(signal.SIGINT) == 0
    assert not (b_dir / "api.json").exists()


def test_a_first_up_says_it_created_an_identity(bootstrap: str, tmp_path: Path) -> None:
    """A data directory with no identity gets one, and one stderr line says so (a
    mistyped HAILING_DATA_DIR must not quietly become somebody new); the next start of
    the same directory says nothing of the kind."""
    d_dir = tmp_path / "new"
    for first in (True, False):
        with up(d_dir, "--bootstrap", bootstrap) as d:
            node = Up(d, d_dir)
            assert d.stop(signal.SIGINT) == 0
        said = [line for line in d.err.lines if "created a new one" in line]
        assert len(said) == int(first), d.err.lines
        if first:
            assert node.contact_id in said[0] and str(d_dir) in said[0]


def test_up_usage_errors(tmp_path: Path) -> None:
    new_ids(tmp_path, "bob")
    procs = {
        "no bootstrap": spawn("up", "--data-dir", tmp_path / "bob"),
        "api not loopback": spawn("up", "--data-dir", tmp_path / "bob", "--api", "0.0.0.0:0",
                                  "--bootstrap", "127.0.0.1:9"),
    }
    first = collect(procs["no bootstrap"])
    assert "--bootstrap" in one_error_line(first, 1)
    second = collect(procs["api not loopback"])
    assert "127.0.0.1" in one_error_line(second, 2)
    for p in (first, second):
        assert p.stdout == b""
        no_traceback(p.stderr)
    assert not (tmp_path / "bob" / "api.json").exists()
    assert os.listdir(tmp_path / "bob")  # the identity is untouched


# -- the contract watcher in the daemon ------------------------------------------------------


def test_daemons_signaling_through_the_contract(tmp_path: Path) -> None:
    """``hailing up --via contract``: no DHT node (``dht -``), the contract watcher runs in
    the daemon; sends and an endpoint record go through the daemons."""
    ids = friends(tmp_path, "alice", "bob")
    with daemon("chain", "serve", "--bind", "127.0.0.1:0", "--deploy") as chain:
        rpc = chain.first_line().split()[-1]
        chain.out.wait_for(lambda line: line.startswith("contract "))
        contract = chain.out.lines[1].split()[1]
        chain.err.wait_for(lambda line: line.startswith("account "), timeout=30)
        chain.err.wait_for(lambda line: len(chain.err.lines) >= 2, timeout=30)
        keys = [line.split()[3] for line in chain.err.lines[:2]]
        for me, other in (("alice", "bob"), ("bob", "alice")):
            shared = json.loads(ok(run("rotation", "show", "--data-dir", tmp_path / other))[0])
            ok(run("rotation", "set", ids[other], "--user-id", shared["user_id"], "--prefix",
                   shared["prefix"], "--data-dir", tmp_path / me))
        via = ["--via", "contract", "--rpc", rpc, "--contract", contract, "--poll", "0.2"]
        with up(tmp_path / "bob", *via, "--gas-key", keys[1]) as bd, \
                up(tmp_path / "alice", *via, "--gas-key", keys[0]) as ad:
            for d, who in ((bd, "bob"), (ad, "alice")):
                assert d.first_line().startswith(f"up {ids[who]} dht - api http://127.0.0.1:")
            r = send_result(run("send", "bob", "through the chain", "--data-dir",
                                tmp_path / "alice", timeout=60))
            assert r["via"] == "contract" and r["reused"] is False
            bd.wait_event(event="message", text="through the chain")
            out = ok(run("endpoint", "publish", "--to", "bob", "--kind", "sip", "--endpoint",
                         "10.0.0.7:5060", "--data-dir", tmp_path / "alice", timeout=60))
            assert json.loads(out[0])["via"] == "contract"
            deadline = time.monotonic() + 30
            while not (listed := ok(run("endpoint", "list", "--data-dir", tmp_path / "bob"))):
                assert time.monotonic() < deadline, "the endpoint record did not arrive"
                time.sleep(0.5)
            assert listed == [f"{ids['alice']} alice sip 10.0.0.7:5060"]
            assert ad.stop() == 0 and bd.stop() == 0
        assert chain.stop() == 0
