"""The peer commands of the real ``hailing`` CLI (id, contact, status, listen, send, chat,
relay), each run in its own subprocess against a ``hailing testnet`` subprocess on
127.0.0.1 (OS-chosen ports; ICE restricted to 127.0.0.1). Every wait has a timeout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from proc_lines import START_TIMEOUT, Lines
from pytest_helpers import run_testnet

from hailing.identity import load_or_create_identity
from hailing.services.contacts import ContactBook

HAILING = [sys.executable, "-m", "hailing"]
TIMEOUT = 20.0
CONTACT_ID = re.compile(r"hl[a-z2-7]{58}")
BOOTSTRAP_LINE = re.compile(r"bootstrap (127\.0\.0\.1:\d+)")
RELAY_LINE = re.compile(r"relay listening on (ws://127\.0\.0\.1:\d+/\S*)")
NOBODY = "nobody answered"


@pytest.fixture(autouse=True)
def _default_data_dir_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commands run without --data-dir use tmp_path/xdg/hailing, never the user's own."""
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def env(**extra: str) -> dict[str, str]:
    """The subprocess environment: ICE on loopback only, no passphrase unless given."""
    e = {k: v for k, v in os.environ.items() if k != "HAILING_PASSPHRASE"}
    e["HAILING_ICE_HOSTS"] = "127.0.0.1"
    e.update(extra)
    return e


def no_traceback(*streams: bytes | str) -> None:
    for data in streams:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        assert "Traceback" not in text, text


def spawn(*args: str | Path, stdin: Any = subprocess.DEVNULL, cwd: Path | None = None,
          extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*HAILING, *map(str, args)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(**(extra_env or {})),
        cwd=cwd,
    )


def collect(proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    no_traceback(out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(*args: str | Path, timeout: float = TIMEOUT, **extra_env: str) -> subprocess.CompletedProcess[bytes]:
    return collect(spawn(*args, extra_env=extra_env), timeout)


def run_all(*argvs: list[str | Path], **extra_env: str) -> list[subprocess.CompletedProcess[bytes]]:
    """Independent commands, side by side."""
    procs = [spawn(*argv, extra_env=extra_env) for argv in argvs]
    return [collect(p) for p in procs]


def ok(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stdout lines of a command that must have succeeded."""
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode().splitlines()


def one_error_line(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert len(err.splitlines()) == 1 and err.endswith("\n") and err.strip(), repr(err)
    return err.strip()


def new_ids(base: Path, *names: str) -> dict[str, str]:
    """Identities base/NAME for the tests' setup, made in-process (fast); the commands
    under test run in subprocesses. Returns name -> contact id."""
    ids = {}
    for n in names:
        ids[n] = load_or_create_identity(base / n, None).contact_id
        with ContactBook(base / n) as b:
            b.set_name(n)
    return ids


def book(data_dir: Path) -> ContactBook:
    return ContactBook(data_dir)


@dataclass
class Daemon:
    """A long-running CLI process (listen, relay, testnet) with its output pumped."""

    proc: subprocess.Popen[bytes]
    out: Lines = field(init=False)
    err: Lines = field(init=False)

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Lines(self.proc.stdout, TIMEOUT)
        self.err = Lines(self.proc.stderr, TIMEOUT)

    def first_line(self) -> str:
        self.out.wait_for(lambda _: True, timeout=START_TIMEOUT)
        return self.out.lines[0]

    def events(self, start: int = 0) -> list[dict[str, Any]]:
        """The JSON event lines (after the first line; other lines, such as ``hailing
        up``'s ``web`` line, skipped) from index ``start``."""
        return [json.loads(line) for line in self.out.lines[max(start, 1):]
                if line.startswith("{")]

    def event_at(self, index: int) -> dict[str, Any]:
        """The event on output line ``index`` (as :meth:`wait_event` returns)."""
        event: dict[str, Any] = json.loads(self.out.lines[index])
        return event

    def wait_event(self, start: int = 0, timeout: float = TIMEOUT, **match: Any) -> int:
        def pred(line: str) -> bool:
            if not line.startswith("{"):
                return False
            ev = json.loads(line)
            return all(ev.get(k) == v for k, v in match.items())

        return self.out.wait_for(pred, max(start, 1), timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``; return the exit code (killed if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError("did not stop on the signal") from None
        self.out.thread.join(5)
        self.err.thread.join(5)
        no_traceback("\n".join(self.out.lines), "\n".join(self.err.lines))
        return code


@contextlib.contextmanager
def daemon(*args: str | Path, cwd: Path | None = None) -> Iterator[Daemon]:
    d = Daemon(spawn(*args, cwd=cwd))
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        d.proc.wait(timeout=10)


@contextlib.contextmanager
def listening(data_dir: Path, *net: str, cwd: Path | None = None) -> Iterator[Daemon]:
    """``hailing listen``; yields once its first line ``listening as <id>`` is out."""
    with daemon("listen", "--data-dir", data_dir, *net, cwd=cwd) as d:
        line = d.first_line()
        assert re.fullmatch(r"listening as " + CONTACT_ID.pattern, line), line
        yield d


def send_result(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    out = ok(proc)
    assert len(out) == 1, out
    result: dict[str, Any] = json.loads(out[0])
    assert isinstance(result["connect_ms"], int | float) and not isinstance(result["connect_ms"], bool)
    assert 0 <= result["connect_ms"] < 30_000
    assert result["delivered"] is True
    return result


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A ``hailing testnet --nodes 8`` subprocess shared by this module."""
    yield from run_testnet(8)


#: Callers of the shared listening bob, one per test: a caller's inbox still holds the
#: callee's answer to its previous call (for the inbox TTL), and a new process calling the
#: same callee a moment later can take that stale answer for the new one (see the report).
CALLERS = ("alice", "alice_file", "alice_chat", "alice_script")


@pytest.fixture(scope="module")
def pair(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], Daemon]]:
    """bob, listening, with each of CALLERS as a contact. Yields (base, ids, bob)."""
    base = tmp_path_factory.mktemp("pair")
    ids = new_ids(base, "bob", *CALLERS)
    with book(base / "bob") as b:
        for name in CALLERS:
            b.add(ids[name], name)
    with listening(base / "bob", "--bootstrap", bootstrap, cwd=base) as bob:
        assert bob.first_line() == f"listening as {ids['bob']}"
        yield base, ids, bob
        assert bob.stop() == 0


# -- identity --------------------------------------------------------------------------------


def test_id_new_show_and_refuse_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "alice"
    out = ok(run("id", "new", "--data-dir", d, "--name", "alice"))
    assert CONTACT_ID.fullmatch(out[0]), out
    ident = out[0]
    key = d / "identity.key"
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()

    again, shown = run_all(["id", "new", "--data-dir", d, "--name", "mallory"],
                           ["id", "show", "--data-dir", d])
    assert ident in one_error_line(again, 1)
    assert again.stdout == b""
    assert key.read_bytes() == before
    assert ok(shown) == [ident, "name alice"]


def test_id_with_passphrase(tmp_path: Path) -> None:
    d = tmp_path / "secret"
    out = ok(run("id", "new", "--data-dir", d, HAILING_PASSPHRASE="secret"))
    ident = out[0]
    assert CONTACT_ID.fullmatch(ident), out
    key = d / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()

    with_pass, again_with_pass = run_all(["id", "show", "--data-dir", d],
                                         ["id", "new", "--data-dir", d], HAILING_PASSPHRASE="secret")
    locked, again = run_all(["id", "show", "--data-dir", d], ["id", "new", "--data-dir", d])
    (wrong,) = run_all(["id", "show", "--data-dir", d], HAILING_PASSPHRASE="wrong")
    assert ok(with_pass) == [ident]
    assert "passphrase" in one_error_line(locked, 1)
    assert locked.stdout == b""
    assert "passphrase" in one_error_line(wrong, 1)
    assert ident.encode() not in wrong.stdout + wrong.stderr
    # A second `id new` refuses in one line, with or without the passphrase.
    assert ident in one_error_line(again_with_pass, 1)
    assert "already holds an identity" in one_error_line(again, 1)
    assert key.read_bytes() == before


# -- contacts and status ---------------------------------------------------------------------


def test_contact_round_trip(tmp_path: Path) -> None:
    ids = new_ids(tmp_path, "alice", "bob", "carol")
    b = tmp_path / "bob"
    a, c = ids["alice"], ids["carol"]
    assert ok(run("contact", "list", "--data-dir", b)) == []
    assert ok(run("contact", "add", a, "--name", "alice", "--data-dir", b)) == [f"{a} allowed alice"]
    assert ok(run("contact", "block", a, "--data-dir", b)) == [f"{a} blocked alice"]
    assert ok(run("contact", "allow", a, "--data-dir", b)) == [f"{a} allowed alice"]
    # Blocking someone not in the book records them as blocked.
    assert ok(run("contact", "block", c, "--data-dir", b))[0].split()[:2] == [c, "blocked"]
    listed = {line.split()[0]: line.split()[1] for line in ok(run("contact", "list", "--data-dir", b))}
    assert listed == {a: "allowed", c: "blocked"}
    assert ok(run("contact", "remove", a, "--data-dir", b)) == [f"removed {a}"]
    assert [line.split()[0] for line in ok(run("contact", "list", "--data-dir", b))] == [c]
    gone = run("contact", "remove", a, "--data-dir", b)
    assert "no such contact" in one_error_line(gone, 1)


def test_contact_id_typo_is_a_usage_error(tmp_path: Path) -> None:
    a = new_ids(tmp_path, "alice")["alice"]
    b = tmp_path / "bob"
    i = 20  # inside the key part: the checksum must catch it
    typo = a[:i] + ("b" if a[i] != "b" else "c") + a[i + 1:]
    argvs: list[list[str | Path]] = [
        ["contact", "add", typo, "--name", "x", "--data-dir", b],
        ["contact", "block", typo, "--data-dir", b],
        ["contact", "allow", typo, "--data-dir", b],
        ["contact", "remove", typo, "--data-dir", b],
        ["send", typo, "hi", "--data-dir", b, "--relay", "ws://127.0.0.1:9/ws"],
    ]
    for argv, proc in zip(argvs, run_all(*argvs), strict=True):
        assert "checksum" in one_error_line(proc, 2), argv
        assert proc.stdout == b""
    assert not (b / "peer.sqlite3").exists() or ok(run("contact", "list", "--data-dir", b)) == []


def test_status_is_persisted(tmp_path: Path) -> None:
    d = tmp_path / "bob"
    assert ok(run("status", "--data-dir", d)) == ["status available, accept-any off"]
    assert ok(run("status", "busy", "--data-dir", d)) == ["status busy, accept-any off"]
    assert ok(run("status", "--accept-any", "on", "--data-dir", d)) == ["status busy, accept-any on"]
    assert ok(run("status", "dnd", "--accept-any", "off", "--data-dir", d)) == ["status dnd, accept-any off"]
    assert ok(run("status", "--data-dir", d)) == ["status dnd, accept-any off"]
    assert "away" in one_error_line(run("status", "away", "--data-dir", d), 2)


# -- calls over the DHT ----------------------------------------------------------------------


def test_send_text(bootstrap: str, pair: tuple[Path, dict[str, str], Daemon]) -> None:
    base, ids, bob = pair
    start = len(bob.out)
    result = send_result(run("send", ids["bob"], "hello", "--data-dir", base / "alice",
                             "--bootstrap", bootstrap, "--timeout", "15"))
    assert result.get("to", ids["bob"]) == ids["bob"]
    msg = bob.wait_event(start, event="message", text="hello")
    events = [e for e in bob.events(start)[: msg - max(start, 1) + 1] if e["event"] != "closed"]
    kinds = [e["event"] for e in events]
    assert kinds == ["call", "connected", "message"], events
    assert events[0]["accepted"] is True and events[0]["from"] == ids["alice"]
    assert events[1]["from"] == ids["alice"]
    assert events[2] == {"event": "message", "from": ids["alice"], "text": "hello",
                         "contact": "alice"}  # the book's name for the sender


def test_send_file(bootstrap: str, pair: tuple[Path, dict[str, str], Daemon], tmp_path: Path) -> None:
    base, ids, bob = pair
    data = os.urandom(200_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    start = len(bob.out)
    result = send_result(run("send", ids["bob"], "--file", path, "--data-dir", base / "alice_file",
                             "--bootstrap", bootstrap, "--timeout", "15"))
    assert result.get("sha256", digest) == digest
    i = bob.wait_event(start, event="file")
    ev = json.loads(bob.out.lines[i])
    assert ev["from"] == ids["alice_file"] and ev["sha256"] == digest
    got = base / ev["path"]  # relative paths are relative to bob's cwd (base)
    assert got.read_bytes() == data
    assert hashlib.sha256(got.read_bytes()).hexdigest() == ev["sha256"]


def test_chat(bootstrap: str, pair: tuple[Path, dict[str, str], Daemon]) -> None:
    base, ids, bob = pair
    start = len(bob.out)
    proc = spawn("chat", ids["bob"], "--data-dir", base / "alice_chat", "--bootstrap", bootstrap,
                 "--timeout", "15", stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"hello chat\n")
        proc.stdin.flush()
        i = bob.wait_event(start, event="message", text="hello chat")
        assert bob.events(i)[0]["from"] == ids["alice_chat"]
        # Two lines in one write: both must go (not wait for more input).
        proc.stdin.write(b"line one\nline two\n")
        proc.stdin.flush()
        i = bob.wait_event(i, event="message", text="line one")
        bob.wait_event(i, event="message", text="line two")
        proc.stdin.write(b"/quit\n")
        proc.stdin.flush()
        done = collect(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    bob.wait_event(start, event="closed", **{"from": ids["alice_chat"]})


def test_chat_reads_stdin_from_a_file(bootstrap: str, pair: tuple[Path, dict[str, str], Daemon],
                                      tmp_path: Path) -> None:
    base, ids, bob = pair
    script = tmp_path / "script.txt"
    script.write_text("from a file\nlast line\n")
    start = len(bob.out)
    with script.open("rb") as f:
        done = collect(spawn("chat", ids["bob"], "--data-dir", base / "alice_script", "--bootstrap",
                             bootstrap, "--timeout", "15", stdin=f))
    assert done.returncode == 0, done.stderr
    i = bob.wait_event(start, event="message", text="from a file")
    assert bob.events(i)[0]["from"] == ids["alice_script"]
    bob.wait_event(i, event="message", text="last line")


def test_refused_callers_see_what_an_offline_callee_looks_like(bootstrap: str, tmp_path: Path) -> None:
    """Blocked, unknown (no accept-any), do-not-disturb, and offline, side by side. A
    callee does not even listen where blocked and unknown callers post, so they leave no
    event at all; a contact calling during do-not-disturb leaves a refused call."""
    cases = ("blocked", "unknown", "dnd", "offline")
    ids = new_ids(tmp_path, *(f"bob_{c}" for c in cases), *(f"alice_{c}" for c in cases))
    with book(tmp_path / "bob_blocked") as b:
        b.block(ids["alice_blocked"])
    with book(tmp_path / "bob_dnd") as b:
        b.add(ids["alice_dnd"], "alice")
        b.set_status("dnd")
    with book(tmp_path / "bob_offline") as b:
        b.add(ids["alice_offline"], "alice")
    with contextlib.ExitStack() as stack:
        bobs = {c: stack.enter_context(daemon("listen", "--data-dir", tmp_path / f"bob_{c}",
                                              "--bootstrap", bootstrap))
                for c in cases[:3]}
        for c, bob in bobs.items():
            assert bob.first_line() == f"listening as {ids[f'bob_{c}']}", c
        sends = {c: spawn("send", ids[f"bob_{c}"], "hello", "--data-dir", tmp_path / f"alice_{c}",
                          "--bootstrap", bootstrap, "--timeout", "4") for c in cases}
        results = {c: collect(p) for c, p in sends.items()}
        bobs["dnd"].wait_event(event="call", accepted=False, reason="do-not-disturb", timeout=5)
        for c, bob in bobs.items():
            assert bob.stop() == 0, c
    errors = {c: one_error_line(r, 1) for c, r in results.items()}
    for c, r in results.items():
        assert r.stdout == b"", c
        assert NOBODY in errors[c], (c, errors[c])
    assert len(set(errors.values())) == 1, errors  # indistinguishable from offline
    for c, bob in bobs.items():
        events = bob.events()
        assert all(e["event"] == "call" and e["accepted"] is False for e in events), (c, events)
        assert all(e["from"] == ids[f"alice_{c}"] for e in events), (c, events)
        if c == "dnd":
            assert events and {e["reason"] for e in events} == {"do-not-disturb"}, events


def test_accept_any_lets_an_unknown_caller_through(bootstrap: str, tmp_path: Path) -> None:
    ids = new_ids(tmp_path, "alice", "bob")
    with listening(tmp_path / "bob", "--bootstrap", bootstrap, "--accept-any") as bob:
        send_result(run("send", ids["bob"], "hi stranger", "--data-dir", tmp_path / "alice",
                        "--bootstrap", bootstrap, "--timeout", "15"))
        bob.wait_event(event="message", text="hi stranger", **{"from": ids["alice"]})
        assert bob.stop() == 0
    call = bob.events()[0]
    assert call["event"] == "call" and call["accepted"] is True and call["from"] == ids["alice"]
    # --accept-any on the command line is not persisted.
    with book(tmp_path / "bob") as b:
        assert b.accept_any() is False


# -- the WebSocket baseline ------------------------------------------------------------------


def test_relay_baseline(tmp_path: Path) -> None:
    ids = new_ids(tmp_path, "alice", "bob")
    with book(tmp_path / "bob") as b:
        b.add(ids["alice"], "alice")
    with daemon("relay", "--bind", "127.0.0.1:0") as relay:
        m = RELAY_LINE.fullmatch(relay.first_line())
        assert m, relay.out.lines
        url = m.group(1)
        with listening(tmp_path / "bob", "--relay", url) as bob:
            send_result(run("send", ids["bob"], "via the relay", "--data-dir", tmp_path / "alice",
                            "--relay", url, "--timeout", "15"))
            bob.wait_event(event="message", text="via the relay", **{"from": ids["alice"]})
            assert bob.stop() == 0
        assert relay.stop() == 0


# -- usage -----------------------------------------------------------------------------------


def test_send_usage_errors(tmp_path: Path) -> None:
    bob = new_ids(tmp_path, "bob")["bob"]
    a = tmp_path / "alice"
    f = tmp_path / "f.txt"
    f.write_text("x")
    net = ["--relay", "ws://127.0.0.1:9/ws", "--timeout", "2"]  # never reached
    procs = {
        "neither": spawn("send", bob, "--data-dir", a, *net),
        "both": spawn("send", bob, "hi", "--file", f, "--data-dir", a, *net),
        "missing file": spawn("send", bob, "--file", tmp_path / "nope", "--data-dir", a, *net),
        "no network send": spawn("send", bob, "hi", "--data-dir", a, "--timeout", "2"),
        "no network listen": spawn("listen", "--data-dir", a),
    }
    for name, p in procs.items():
        r = collect(p)
        msg = one_error_line(r, 2 if name in ("neither", "both") else 1)  # 2: wrong usage
        assert r.stdout == b"", name
        if name.startswith("no network"):
            assert "--bootstrap" in msg and "--relay" in msg, (name, msg)
        elif name == "missing file":
            assert "nope" in msg
        else:
            assert "TEXT" in msg and "--file" in msg, (name, msg)


def test_help() -> None:
    words = {
        "listen": ["--data-dir", "--bootstrap", "--relay", "--accept-any", "--ice-host"],
        "send": ["CONTACT", "TEXT", "--file", "--timeout", "--bootstrap", "--relay"],
        "id": ["new", "show"],
        "contact": ["add", "block", "allow", "remove", "list"],
    }
    for (cmd, expected), proc in zip(words.items(), run_all(*([c, "--help"] for c in words)), strict=True):
        text = "\n".join(ok(proc))
        assert text.startswith(f"usage: hailing {cmd}"), text
        for word in expected:
            assert word in text, (cmd, word)
        assert proc.stderr == b"", cmd


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_listen_stops_cleanly_on_signal(bootstrap: str, tmp_path: Path, sig: int) -> None:
    with listening(tmp_path / "bob", "--bootstrap", bootstrap) as bob:
        assert bob.stop(sig) == 0
        assert bob.out.lines[1:] == []


@pytest.mark.parametrize(("command", "read_only"), [
    (["send", "CONTACT", "hi"], True), (["chat", "CONTACT"], True), (["listen"], False)])
def test_one_shot_commands_run_a_read_only_dht_node(
        command: list[str], read_only: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 8 item 11: a one-shot sender's node is gone a second later; as a full node it
    would sit in others' routing tables and cost their lookups a timeout each. It runs
    BEP43 read-only (and still hears its answers, as every send test here shows);
    ``listen`` stays a full node."""
    import hailing.peer
    from hailing.cli import main
    from hailing.errors import HailingError
    from hailing.identity import Identity

    seen: list[object] = []

    class Recorder:
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.append(kwargs.get("dht_config"))

        async def __aenter__(self) -> None:
            raise HailingError("recorded")

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(hailing.peer, "Peer", Recorder)
    contact = Identity.generate().contact_id
    argv = [contact if a == "CONTACT" else a for a in command]
    assert main([*argv, "--data-dir", str(tmp_path), "--bootstrap", "127.0.0.1:9",
                 "--no-daemon"] if command[0] != "listen" else
                [*argv, "--data-dir", str(tmp_path), "--bootstrap", "127.0.0.1:9"]) == 1
    [config] = seen
    assert bool(getattr(config, "read_only", False)) is read_only
