"""Contacts by name wherever the CLI takes a contact (send, chat, contact block/allow/
remove/rename, endpoint publish --to / list --contact, rotation set), and the whole
promise of issue 8: once set up, ``hailing send bob "hi"`` needs no other flag.

Resolution is unit-tested on :func:`hailing.services.names.resolve_contact`; the CLI
paths run ``hailing.cli.main`` in process; the end-to-end send runs real subprocesses
(a testnet, a listening callee, the sender) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from proc_lines import START_TIMEOUT

from hailing.cli import build_parser, main
from hailing.cli._shared import prepare
from hailing.errors import LocalProtocolError, NotFoundError
from hailing.identity import Identity, load_or_create_identity
from hailing.services.contacts import Contact, ContactBook
from hailing.services.names import resolve_contact
from hailing.signaling.store import SignalStore

HAILING = [sys.executable, "-m", "hailing"]
TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.delenv("HAILING_PASSPHRASE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def key(n: int) -> bytes:
    return Identity.from_seed(bytes([n]) * 32).public_key


def contact(n: int, name: str) -> Contact:
    return Contact(key(n), name, "allowed")


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), repr(err)
    return err.strip()


# -- resolve_contact -------------------------------------------------------------------------


BOOK = [contact(1, "bob"), contact(2, "Bobby"), contact(3, "alice"), contact(4, "ALICE"),
        contact(5, "Carol"), Contact(key(6), "", "blocked")]


def test_a_contact_id_is_itself_even_when_unknown() -> None:
    stranger = Identity.from_seed(b"\x09" * 32)
    assert resolve_contact(stranger.contact_id, BOOK) == stranger.public_key
    assert resolve_contact(f"  {stranger.contact_id.upper()} ", []) == stranger.public_key


def test_exact_name_then_case_insensitive() -> None:
    assert resolve_contact("bob", BOOK) == key(1)
    assert resolve_contact("bobby", BOOK) == key(2)   # no exact match: ignore case
    assert resolve_contact("carol", BOOK) == key(5)
    assert resolve_contact("alice", BOOK) == key(3)   # exact wins over a case-only twin
    assert resolve_contact("ALICE", BOOK) == key(4)


def test_an_ambiguous_name_lists_the_candidates() -> None:
    book = [contact(1, "bob"), contact(2, "bob"), contact(3, "alice")]
    with pytest.raises(LocalProtocolError) as info:
        resolve_contact("bob", book)
    msg = str(info.value)
    assert "2 contacts are named 'bob'" in msg
    assert Contact(key(1), "", "allowed").contact_id[:12] in msg
    assert Contact(key(2), "", "allowed").contact_id[:12] in msg
    assert "alice" not in msg and "\n" not in msg
    with pytest.raises(LocalProtocolError, match="2 contacts are named 'Alice'"):
        resolve_contact("Alice", BOOK)  # two names equal ignoring case, none exactly


def test_an_unknown_name_suggests_or_lists() -> None:
    with pytest.raises(NotFoundError) as info:
        resolve_contact("bo", BOOK)
    assert "did you mean bob (" in str(info.value) and "Bobby (" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        resolve_contact("carl", BOOK)  # close to Carol
    assert "did you mean Carol (" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        resolve_contact("zed", BOOK)  # nothing close: a small book is listed whole
    assert str(info.value).endswith("contacts: bob, Bobby, alice, ALICE, Carol")
    big = [contact(10 + i, f"friend{i}") for i in range(20)]
    with pytest.raises(NotFoundError, match="see 'hailing contact list'"):
        resolve_contact("zed", big)
    with pytest.raises(NotFoundError, match="the contact book is empty"):
        resolve_contact("bob", [])


def test_a_mistyped_contact_id_gets_the_checksum_error() -> None:
    good = Contact(key(1), "", "allowed").contact_id
    typo = good[:20] + ("b" if good[20] != "b" else "c") + good[21:]
    with pytest.raises(LocalProtocolError, match="checksum"):
        resolve_contact(typo, BOOK)


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_is_refused(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        resolve_contact(bad, BOOK)


# -- the CLI takes names -----------------------------------------------------------------------


@pytest.fixture
def me(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A data directory with contacts bob, bob2 (renamed below) and carol."""
    data = tmp_path / "me"
    load_or_create_identity(data)
    ids = {n: load_or_create_identity(tmp_path / n).contact_id for n in ("bob", "bob2", "carol")}
    with ContactBook(data) as book:
        for n, cid in ids.items():
            book.add(cid, n)
    return data, ids


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_contact_commands_take_names(me: tuple[Path, dict[str, str]],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    data, ids = me
    d = ["--data-dir", str(data)]
    assert cli(capsys, "contact", "block", "carol", *d)[1] == f"{ids['carol']} blocked carol\n"
    assert cli(capsys, "contact", "allow", "Carol", *d)[1] == f"{ids['carol']} allowed carol\n"
    assert cli(capsys, "contact", "rename", "bob2", "robert", *d)[1] == \
        f"{ids['bob2']} allowed robert\n"
    assert cli(capsys, "contact", "remove", "robert", *d)[1] == f"removed {ids['bob2']}\n"
    out = cli(capsys, "contact", "list", *d)[1]
    assert [line.split()[2] for line in out.splitlines()] == ["bob", "carol"]


def test_rotation_set_and_endpoints_take_names(me: tuple[Path, dict[str, str]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data, ids = me
    code, _, err = cli(capsys, "rotation", "set", "bob", "--user-id", "u" * 16, "--prefix",
                         "p" * 16, "--data-dir", data)
    assert code == 0, err
    with SignalStore(data) as store:
        secret = store.rotation(ids["bob"])
    assert secret is not None and secret.user_id == "u" * 16
    assert cli(capsys, "endpoint", "list", "--contact", "carol", "--data-dir", data)[0] == 0
    args = build_parser().parse_args(["endpoint", "publish", "--to", "carol", "--kind", "sip",
                                      "--endpoint", "h:5060", "--data-dir", str(data)])
    prepare(args)
    assert args.to == ContactBook(data).get(ids["carol"]).pubkey  # type: ignore[union-attr]


@pytest.mark.parametrize("argv", [["send", "NAME", "hi"], ["chat", "NAME"]])
def test_send_and_chat_resolve_before_any_network(argv: list[str],
                                                  me: tuple[Path, dict[str, str]]) -> None:
    data, ids = me
    args = build_parser().parse_args([a.replace("NAME", "bob") for a in argv]
                                     + ["--data-dir", str(data)])
    prepare(args)
    assert args.contact == ContactBook(data).get(ids["bob"]).pubkey  # type: ignore[union-attr]


@pytest.mark.parametrize(("argv", "words"), [
    (["send", "dave", "hi"], ["no contact named 'dave'", "contacts: bob, bob2, carol"]),
    (["send", "bo", "hi"], ["did you mean bob (", "bob2 ("]),
    (["contact", "block", "zed"], ["no contact named 'zed'"]),
    (["rotation", "set", "nobody", "--user-id", "u", "--prefix", "p"], ["no contact named"]),
    (["endpoint", "list", "--contact", "nobody"], ["no contact named"]),
])
def test_unknown_names_are_one_usage_line(argv: list[str], words: list[str],
                                          me: tuple[Path, dict[str, str]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = me
    code, out, err = cli(capsys, *argv, "--data-dir", data)
    assert code == 2 and out == ""
    msg = one_line(err)
    for word in words:
        assert word in msg, msg


def test_an_ambiguous_name_is_one_usage_line(me: tuple[Path, dict[str, str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data, ids = me
    with ContactBook(data) as book:
        book.rename(ids["bob2"], "bob")
    code, out, err = cli(capsys, "send", "bob", "hi", "--data-dir", data)
    assert code == 2 and out == ""
    msg = one_line(err)
    assert "2 contacts are named 'bob'" in msg
    assert ids["bob"][:12] in msg and ids["bob2"][:12] in msg


def test_a_contact_id_needs_no_contact_book(me: tuple[Path, dict[str, str]]) -> None:
    data, ids = me
    (data / "peer.sqlite3").write_bytes(b"not a database" * 100)
    args = build_parser().parse_args(["send", ids["carol"], "hi", "--data-dir", str(data)])
    prepare(args)  # no StorageError: the id was enough
    assert isinstance(args.contact, bytes)


def test_resolving_a_name_creates_nothing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "nothing-here"
    code, _, err = cli(capsys, "send", "bob", "hi", "--data-dir", empty)
    assert code == 2 and "the contact book is empty" in one_line(err)
    assert not empty.exists()


# -- the promise: no flags once set up ---------------------------------------------------------


def _env(data_dir: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("HAILING_PASSPHRASE", "HAILING_ICE_HOSTS")}  # config.toml gives them
    e["HAILING_DATA_DIR"] = str(data_dir)
    return e


def _hailing(data_dir: Path, *argv: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*HAILING, *argv], capture_output=True, text=True, timeout=timeout,
                          env=_env(data_dir), stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def _spawn(data_dir: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*HAILING, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(data_dir), stdin=subprocess.DEVNULL)


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    assert ready, "no output line in time"
    line = proc.stdout.readline()  # the commands flush their first line at once
    assert line, proc.stderr.read() if proc.stderr else ""
    return line.strip()


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    assert "Traceback" not in out + err, err
    return out, err


def test_send_bob_hi_needs_no_other_flag(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    testnet = _spawn(tmp_path, "testnet", "--nodes", "6")
    try:
        m = re.fullmatch(r"bootstrap (127\.0\.0\.1:\d+)", _first_line(testnet))
        assert m
        for who in (alice, bob):
            assert _hailing(who, "id", "new", "--name", who.name).returncode == 0
            assert _hailing(who, "config", "set", "bootstrap", m.group(1)).returncode == 0
            assert _hailing(who, "config", "set", "ice_hosts", "127.0.0.1").returncode == 0
        ids = {who.name: _hailing(who, "id", "show").stdout.split()[0] for who in (alice, bob)}
        assert _hailing(alice, "contact", "add", ids["bob"], "--name", "bob").returncode == 0
        assert _hailing(bob, "contact", "add", ids["alice"], "--name", "alice").returncode == 0

        listener = _spawn(bob, "listen")
        try:
            assert _first_line(listener) == f"listening as {ids['bob']}"
            done = _hailing(alice, "send", "bob", "hi")
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout)
            assert result["delivered"] is True and result["to"] == ids["bob"]
        finally:
            out, _ = _stop(listener)
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert any(e.get("event") == "message" and e.get("from") == ids["alice"]
                   and e.get("contact") == "alice" and e.get("text") == "hi"
                   for e in events), events
    finally:
        _stop(testnet)
