"""Storage errors a person can recover from (issue 8, item 7, identity part):

- a corrupt ``peer.sqlite3`` does not block ``id show`` (the key is a file of its own);
- every storage error line says how to recover, for each file of a data directory;
- an encrypted key's errors name ``HAILING_PASSPHRASE``;
- ``hailing id passphrase`` encrypts, re-encrypts or (``--remove``) decrypts the key,
  atomically, mode 600, reading passphrases from the environment or a prompt.

In-process ``main()`` with a fast KDF for the passphrase paths; subprocesses for the
no-traceback checks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

import hailing.cli.identity as cli_identity
from hailing.cli import main
from hailing.cli._recovery import recovery_hint
from hailing.errors import LocalProtocolError, StorageError
from hailing.identity import (
    KEY_FILE,
    change_passphrase,
    is_encrypted,
    load_identity,
    load_or_create_identity,
)
from hailing.identity import _keystore as keystore
from hailing.services.contacts import ContactBook

RECOVERY_WORDS = ("to recover:", "restore it from a backup", "chmod", "hailing id new",
                  "hailing config")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HAILING_DATA_DIR", "HAILING_PASSPHRASE", "HAILING_NEW_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "KDF_OPSLIMIT", argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(keystore, "KDF_MEMLIMIT", argon2id.MEMLIMIT_MIN)


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), repr(err)
    return err.strip()


def says_how_to_recover(msg: str) -> bool:
    return any(word in msg for word in RECOVERY_WORDS)


def run(*argv: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "HAILING_PASSPHRASE"}
    e.update(env)
    done = subprocess.run([sys.executable, "-m", "hailing", *map(str, argv)],
                          capture_output=True, text=True, env=e, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stderr, done.stderr
    return done


# -- a corrupt contact book does not hide the identity ------------------------------------------


def test_id_show_survives_a_corrupt_contact_book(tmp_path: Path) -> None:
    d = tmp_path / "me"
    ident = load_or_create_identity(d)
    with ContactBook(d) as book:
        book.set_name("me")
    (d / "peer.sqlite3").write_bytes(b"this is not a database " * 200)
    done = run("id", "show", "--data-dir", d)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [ident.contact_id]
    warning = one_line(done.stderr)
    assert warning.startswith("hailing: warning:") and "peer.sqlite3" in warning
    assert "to recover: move it aside" in warning and "contacts" in warning
    assert (d / "peer.sqlite3").read_bytes().startswith(b"this is not")  # untouched


def test_id_card_survives_a_corrupt_contact_book(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "me"
    load_or_create_identity(d)
    (d / "peer.sqlite3").write_bytes(b"garbage" * 500)
    code, out, err = cli(capsys, "id", "card", "--without-rotation", "--data-dir", d)
    assert code == 0 and out.startswith("hlcard")
    assert "warning" in one_line(err)


# -- every storage error says how to recover ---------------------------------------------------


def _corrupt_peer_db(d: Path) -> None:
    (d / "peer.sqlite3").write_bytes(b"garbage " * 512)


def _truncated_key(d: Path) -> None:
    (d / KEY_FILE).write_bytes(b"HLID\x01")


def _open_key(d: Path) -> None:
    (d / KEY_FILE).chmod(0o644)


def _missing_key(d: Path) -> None:
    (d / KEY_FILE).unlink()


def _bad_rotation(d: Path) -> None:
    path = d / "rotation.json"
    path.write_text("{not json")
    path.chmod(0o600)


def _bad_chain_config(d: Path) -> None:
    path = d / "chain.json"
    path.write_text("[]")
    path.chmod(0o600)


def _bad_config(d: Path) -> None:
    (d / "config.toml").write_text("bootstrap = \n")


@pytest.mark.parametrize(("damage", "argv", "file"), [
    (_corrupt_peer_db, ["contact", "list"], "peer.sqlite3"),
    (_corrupt_peer_db, ["status"], "peer.sqlite3"),
    (_truncated_key, ["id", "show"], KEY_FILE),
    (_open_key, ["id", "show"], KEY_FILE),
    (_missing_key, ["id", "card"], KEY_FILE),
    (_bad_rotation, ["rotation", "show"], "rotation.json"),
    (_bad_rotation, ["id", "card"], "rotation.json"),
    (_bad_chain_config, ["send", "someone", "hi", "--via", "contract"], "chain.json"),
    (_bad_config, ["listen"], "config.toml"),
])
def test_every_storage_error_says_how_to_recover(damage: object, argv: list[str], file: str,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "me"
    load_or_create_identity(d)
    with ContactBook(d) as book:
        book.add(load_or_create_identity(tmp_path / "x").contact_id, "someone")
    damage(d)  # type: ignore[operator]
    code, out, err = cli(capsys, *argv, "--data-dir", d)
    assert code == 1 and out == ""
    msg = one_line(err)
    assert file in msg, msg
    assert says_how_to_recover(msg), msg


@pytest.mark.parametrize(("message", "words"), [
    ("/d/peer.sqlite3 is not a usable hailing database: file is not a database",
     ["mv /d/peer.sqlite3 /d/peer.sqlite3.bad", "contacts"]),
    ("cannot write /d/peer.sqlite3: database is locked", ["move it aside"]),
    ("/d/rotation.json is corrupt (not JSON); it was left untouched", ["new card"]),
    ("/d/chain.json is corrupt (rpc and contract must be strings)", ["contract deploy"]),
    ("/d/dht.sqlite3 is damaged: x", ["cache"]),
    ("cannot write /d/history.sqlite3: disk I/O error", ["message history"]),
    ("cannot create data directory /nope/x: Permission denied", ["--data-dir"]),
    ("cannot read /d/other.bin: Permission denied", ["own the file"]),
])
def test_recovery_hints(message: str, words: list[str]) -> None:
    hint = recovery_hint(message)
    assert hint is not None
    for word in words:
        assert word in hint, hint


def test_a_message_that_already_says_it_gets_no_second_hint() -> None:
    assert recovery_hint("/d/identity.key is damaged; restore it from a backup") is None
    assert recovery_hint("/d/identity.key is accessible by other users: run 'chmod 600 x'") \
        is None
    assert recovery_hint("something unrelated went wrong") is None


# -- HAILING_PASSPHRASE in the key's errors -----------------------------------------------------


def test_encrypted_key_errors_name_the_variable(tmp_path: Path, fast_kdf: None) -> None:
    load_or_create_identity(tmp_path, "pw")
    with pytest.raises(LocalProtocolError, match="HAILING_PASSPHRASE"):
        load_identity(tmp_path)
    with pytest.raises(LocalProtocolError, match="HAILING_PASSPHRASE"):
        load_identity(tmp_path, "wrong")
    plain = tmp_path / "plain"
    load_or_create_identity(plain)
    with pytest.raises(LocalProtocolError, match=r"HAILING_PASSPHRASE.*hailing id passphrase"):
        load_identity(plain, "pw")


# -- change_passphrase --------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_change_passphrase_round_trip(tmp_path: Path, fast_kdf: None) -> None:
    ident = load_or_create_identity(tmp_path)
    key = tmp_path / KEY_FILE
    assert not is_encrypted(tmp_path)
    assert change_passphrase(tmp_path, None, "one") == ident
    assert is_encrypted(tmp_path) and _mode(key) == 0o600
    assert load_identity(tmp_path, "one") == ident
    assert change_passphrase(tmp_path, "one", "two") == ident
    assert load_identity(tmp_path, "two") == ident
    with pytest.raises(LocalProtocolError):
        load_identity(tmp_path, "one")
    assert change_passphrase(tmp_path, "two", None) == ident
    assert not is_encrypted(tmp_path) and load_identity(tmp_path) == ident
    assert _mode(key) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]  # no temporary left


def test_a_wrong_current_passphrase_changes_nothing(tmp_path: Path, fast_kdf: None) -> None:
    load_or_create_identity(tmp_path, "right")
    before = (tmp_path / KEY_FILE).read_bytes()
    with pytest.raises(LocalProtocolError, match="wrong passphrase"):
        change_passphrase(tmp_path, "wrong", "new")
    with pytest.raises(LocalProtocolError, match="passphrase is needed"):
        change_passphrase(tmp_path, None, "new")
    assert (tmp_path / KEY_FILE).read_bytes() == before


def test_a_failed_write_leaves_the_old_key(tmp_path: Path, fast_kdf: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ident = load_or_create_identity(tmp_path)
    before = (tmp_path / KEY_FILE).read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="No space left"):
        change_passphrase(tmp_path, None, "pw")
    monkeypatch.undo()
    assert (tmp_path / KEY_FILE).read_bytes() == before and load_identity(tmp_path) == ident
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_is_encrypted_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="hailing id new"):
        is_encrypted(tmp_path)


# -- hailing id passphrase ----------------------------------------------------------------------


def test_id_passphrase_from_the_environment(tmp_path: Path, fast_kdf: None,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ident = load_or_create_identity(tmp_path)
    monkeypatch.setenv("HAILING_NEW_PASSPHRASE", "first")
    code, out, err = cli(capsys, "id", "passphrase", "--data-dir", tmp_path)
    assert code == 0, err
    assert "now encrypted" in out and "HAILING_PASSPHRASE" in out
    assert load_identity(tmp_path, "first") == ident

    monkeypatch.setenv("HAILING_PASSPHRASE", "first")
    monkeypatch.setenv("HAILING_NEW_PASSPHRASE", "second")
    code, out, err = cli(capsys, "id", "passphrase", "--data-dir", tmp_path)
    assert code == 0 and "new passphrase" in out, err
    assert load_identity(tmp_path, "second") == ident

    monkeypatch.setenv("HAILING_PASSPHRASE", "second")
    code, out, err = cli(capsys, "id", "passphrase", "--remove", "--data-dir", tmp_path)
    assert code == 0 and "unencrypted" in out, err
    assert load_identity(tmp_path) == ident


def test_id_passphrase_from_a_prompt(tmp_path: Path, fast_kdf: None,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    ident = load_or_create_identity(tmp_path, "old")
    answers = {"current passphrase: ": "old", "new passphrase: ": "new",
               "new passphrase again: ": "new"}
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return answers[prompt]

    monkeypatch.setattr(cli_identity, "_ask", ask)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    code, _, err = cli(capsys, "id", "passphrase", "--data-dir", tmp_path)
    assert code == 0, err
    assert asked == list(answers)
    assert load_identity(tmp_path, "new") == ident

    answers["current passphrase: "] = "new"
    answers["new passphrase again: "] = "typo"
    before = (tmp_path / KEY_FILE).read_bytes()
    code, _, err = cli(capsys, "id", "passphrase", "--data-dir", tmp_path)
    assert code == 1 and "differ" in one_line(err)
    assert (tmp_path / KEY_FILE).read_bytes() == before


@pytest.mark.parametrize(("encrypted", "env", "argv", "words"), [
    (False, {}, [], ["HAILING_NEW_PASSPHRASE"]),                      # nobody to ask
    (True, {"HAILING_NEW_PASSPHRASE": "x"}, [], ["HAILING_PASSPHRASE", "current"]),
    (False, {}, ["--remove"], ["not encrypted"]),
    (True, {"HAILING_PASSPHRASE": "pw", "HAILING_NEW_PASSPHRASE": "pw"}, [], ["current one"]),
    (True, {"HAILING_PASSPHRASE": "bad", "HAILING_NEW_PASSPHRASE": "x"}, [],
     ["wrong passphrase", "HAILING_PASSPHRASE"]),
])
def test_id_passphrase_refusals_are_one_line(encrypted: bool, env: dict[str, str],
                                             argv: list[str], words: list[str], tmp_path: Path,
                                             fast_kdf: None, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    load_or_create_identity(tmp_path, "pw" if encrypted else None)
    before = (tmp_path / KEY_FILE).read_bytes()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, out, err = cli(capsys, "id", "passphrase", *argv, "--data-dir", tmp_path)
    assert code == 1 and out == ""
    msg = one_line(err)
    for word in words:
        assert word in msg, msg
    assert (tmp_path / KEY_FILE).read_bytes() == before


def test_id_passphrase_in_a_subprocess(tmp_path: Path) -> None:
    d = tmp_path / "me"
    ident = load_or_create_identity(d)
    done = run("id", "passphrase", "--data-dir", d, HAILING_NEW_PASSPHRASE="s3cret")
    assert done.returncode == 0, done.stderr
    assert _mode(d / KEY_FILE) == 0o600
    assert run("id", "show", "--data-dir", d, HAILING_PASSPHRASE="s3cret").stdout.split()[0] \
        == ident.contact_id
    locked = run("id", "show", "--data-dir", d)
    assert locked.returncode == 1 and "HAILING_PASSPHRASE" in one_line(locked.stderr)
