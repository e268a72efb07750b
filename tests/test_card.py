"""Contact cards (``hailing.identity.make_card`` / ``parse_card``) and the CLI around them:
``hailing id card [--qr] [--without-rotation]`` and ``hailing contact import CARD``.

A card must survive a round trip (also wrapped and upper-cased), and every mistyped,
truncated, altered or garbage card must be refused with one line, never accepted and
never a traceback."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing.chain.wallet import load_or_create_rotation
from hailing.cli import main
from hailing.errors import LocalProtocolError
from hailing.identity import (
    CARD_PREFIX,
    Identity,
    load_or_create_identity,
    make_card,
    parse_card,
)
from hailing.identity._card import _checksum
from hailing.services.contacts import ContactBook
from hailing.signaling.store import SignalStore

ALICE = Identity.from_seed(b"\x01" * 32)
ROTATION = ("k3v7q2m4x5z6y7w2a3b4c5d6e7", "u2v3w4x5y6z7a2b3c4d5e6f7g2")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.delenv("HAILING_PASSPHRASE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _body(card: str) -> bytes:
    data = card[len(CARD_PREFIX):].upper()
    return base64.b32decode(data + "=" * (-len(data) % 8))


def _encode(raw: bytes) -> str:
    return CARD_PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


# -- the format ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rotation"), [
    ("alice", ROTATION), ("", ROTATION), ("Zoë 🦊", None), ("", None), ("a" * 64, ROTATION),
])
def test_round_trip(name: str, rotation: tuple[str, str] | None) -> None:
    card = make_card(ALICE, name, rotation)
    assert card.startswith(CARD_PREFIX) and card == card.strip().lower()
    parsed = parse_card(card)
    assert parsed.public_key == ALICE.public_key and parsed.contact_id == ALICE.contact_id
    assert parsed.name == name
    assert (parsed.rotation_prefix, parsed.rotation_user_id) == (rotation or ("", ""))
    assert parsed.has_rotation == (rotation is not None)


def test_a_card_is_one_line_of_qr_friendly_text() -> None:
    card = make_card(ALICE, "alice", ROTATION)
    assert len(card) < 300
    assert set(card.upper()) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_wrapped_and_upper_cased_cards_still_read() -> None:
    card = make_card(ALICE, "alice", ROTATION)
    wrapped = "\n".join(card[i:i + 40] for i in range(0, len(card), 40))
    assert parse_card("  " + wrapped.upper() + "\n") == parse_card(card)


def test_every_single_character_typo_is_refused() -> None:
    card = make_card(ALICE, "alice", ROTATION)
    for i in range(len(CARD_PREFIX), len(card)):
        for repl in "a7":
            if card[i] == repl:
                continue
            typo = card[:i] + repl + card[i + 1:]
            with pytest.raises(LocalProtocolError) as info:
                parse_card(typo)
            msg = str(info.value)
            assert "\n" not in msg
            assert "checksum" in msg or "damaged" in msg, (i, msg)


def test_every_truncation_is_refused() -> None:
    card = make_card(ALICE, "alice", ROTATION)
    for n in range(len(card)):
        with pytest.raises(LocalProtocolError):
            parse_card(card[:n])


def test_an_altered_card_with_a_recomputed_checksum_fails_the_signature() -> None:
    body = _body(make_card(ALICE, "alice", ROTATION))[:-4]
    name_at = 1 + 32 + 1
    altered = body[:name_at] + b"eve  " + body[name_at + 5:]
    with pytest.raises(LocalProtocolError, match="signature does not verify"):
        parse_card(_encode(altered + _checksum(altered)))
    # someone else's key with alice's signature
    other = body[:1] + Identity.from_seed(b"\x02" * 32).public_key + body[33:]
    with pytest.raises(LocalProtocolError, match="signature does not verify"):
        parse_card(_encode(other + _checksum(other)))


def test_an_unknown_version_is_named() -> None:
    body = _body(make_card(ALICE, "alice", ROTATION))[:-4]
    newer = bytes([2]) + body[1:]
    with pytest.raises(LocalProtocolError, match="version 2 is not supported"):
        parse_card(_encode(newer + _checksum(newer)))


@pytest.mark.parametrize(("text", "words"), [
    ("", ["not a contact card"]),
    ("hello", ["not a contact card", "'hello'"]),
    (ALICE.contact_id, ["this is a contact id", "contact add"]),
    ("hlcard", ["damaged"]),
    ("hlcard!!!!", ["'!'", "position 7"]),
    ("hlcard" + "a" * 300, ["checksum"]),
])
def test_garbage_is_refused_with_one_line(text: str, words: list[str]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_card(text)
    msg = str(info.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, msg


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=200).map(_encode))
def test_nothing_but_local_protocol_error_escapes(text: str) -> None:
    with contextlib.suppress(LocalProtocolError):
        parse_card(text)


def test_make_card_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        make_card(ALICE, "x" * 256)
    with pytest.raises(LocalProtocolError):
        make_card(ALICE, "alice", ("prefix", ""))


# -- the CLI ---------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), repr(err)
    return err.strip()


@pytest.fixture
def two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, str]:
    """alice and bob data directories; alice's card."""
    a, b = tmp_path / "alice", tmp_path / "bob"
    assert cli(capsys, "id", "new", "--name", "alice", "--data-dir", a)[0] == 0
    assert cli(capsys, "id", "new", "--name", "bob", "--data-dir", b)[0] == 0
    code, out, _ = cli(capsys, "id", "card", "--data-dir", a)
    assert code == 0 and len(out.splitlines()) == 1
    return a, b, out.strip()


def test_card_import_adds_the_contact_and_their_rotation(
        two: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    a, b, card = two
    alice = load_or_create_identity(a)
    code, out, err = cli(capsys, "contact", "import", card, "--data-dir", b)
    assert code == 0, err
    assert out == f"{alice.contact_id} allowed alice\n"
    assert "rotation secret recorded" in err
    # exactly what 'rotation show' on alice's side and 'rotation set' on bob's side did
    code, shown, _ = cli(capsys, "rotation", "show", "--data-dir", a)
    expected = json.loads(shown)
    with SignalStore(b) as store:
        secret = store.rotation(alice.public_key)
    assert secret is not None
    assert (secret.user_id, secret.prefix) == (expected["user_id"], expected["prefix"])
    # the name is what later commands use
    assert cli(capsys, "contact", "block", "alice", "--data-dir", b)[1].split()[1] == "blocked"
    # importing again (a new card, same person) keeps the state and updates the rest
    code, out, _ = cli(capsys, "contact", "import", card, "--name", "Alice L.", "--data-dir", b)
    assert out == f"{alice.contact_id} blocked Alice L.\n"


def test_the_card_is_stable_and_uses_the_rotation_file(
        two: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    a, _, card = two
    assert cli(capsys, "id", "card", "--data-dir", a)[1].strip() == card
    secret = load_or_create_rotation(a)
    parsed = parse_card(card)
    assert (parsed.rotation_prefix, parsed.rotation_user_id) == (secret.prefix, secret.user_id)
    assert parsed.name == "alice"


def test_card_without_rotation(two: tuple[Path, Path, str],
                               capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _ = two
    card = cli(capsys, "id", "card", "--without-rotation", "--data-dir", a)[1].strip()
    assert not parse_card(card).has_rotation
    code, _, err = cli(capsys, "contact", "import", card, "--data-dir", b)
    assert code == 0 and "no rotation secret" in err
    with SignalStore(b) as store:
        assert store.rotation(parse_card(card).public_key) is None


def test_card_qr(two: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("qrcode")
    a, _, card = two
    code, out, _ = cli(capsys, "id", "card", "--qr", "--data-dir", a)
    lines = out.splitlines()
    assert code == 0 and lines[0] == card and len(lines) > 20
    assert set("".join(lines[1:])) <= set(" \u2580\u2584\u2588")


def test_import_needs_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nameless = make_card(ALICE, None, ROTATION)
    code, out, err = cli(capsys, "contact", "import", nameless, "--data-dir", tmp_path / "b")
    assert code == 1 and out == "" and "--name" in one_line(err)
    code, out, _ = cli(capsys, "contact", "import", nameless, "--name", "al", "--data-dir",
                       tmp_path / "b")
    assert out == f"{ALICE.contact_id} allowed al\n"


def test_import_refuses_own_card_and_a_name_taken(two: tuple[Path, Path, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a, b, card = two
    code, _, err = cli(capsys, "contact", "import", card, "--data-dir", a)
    assert code == 1 and "your own card" in one_line(err)
    with ContactBook(b) as book:
        book.add(Identity.from_seed(b"\x05" * 32).contact_id, "Alice")
    code, _, err = cli(capsys, "contact", "import", card, "--data-dir", b)
    assert code == 1 and "already named 'Alice'" in one_line(err)
    assert cli(capsys, "contact", "import", card, "--name", "alice2", "--data-dir", b)[0] == 0


@pytest.mark.parametrize("how", ["typo", "truncated", "garbage", "contact id"])
def test_import_refuses_a_bad_card_with_one_usage_line(
        how: str, two: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    a, b, card = two
    bad = {"typo": card[:50] + ("b" if card[50] != "b" else "c") + card[51:],
           "truncated": card[:-7], "garbage": "hello world",
           "contact id": load_or_create_identity(a).contact_id}[how]
    code, out, err = cli(capsys, "contact", "import", bad, "--data-dir", b)
    assert code == 2 and out == ""
    one_line(err)
    assert not (b / "peer.sqlite3").exists() or ContactBook(b).list() == []


def test_contact_add_points_a_card_to_import(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "contact", "add", make_card(ALICE, "a", ROTATION), "--name",
                       "a", "--data-dir", tmp_path)
    assert code == 2 and "contact import" in one_line(err)


def test_a_subprocess_round_trip_has_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HAILING_DATA_DIR": str(tmp_path / "me")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "hailing", *argv], capture_output=True,
                              text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert "Traceback" not in done.stderr
        return done

    card = make_card(ALICE, "alice", ROTATION)
    assert run("contact", "import", card).returncode == 0
    bad = run("contact", "import", card[:-1] + ("a" if card[-1] != "a" else "b"))
    assert bad.returncode == 2 and "checksum" in one_line(bad.stderr)


def test_import_from_a_file_or_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import io

    card = make_card(ALICE, "alice", ROTATION)
    path = tmp_path / "alice.card"
    path.write_text(card + "\n")
    code, out, _ = cli(capsys, "contact", "import", path, "--data-dir", tmp_path / "b")
    assert code == 0 and out == f"{ALICE.contact_id} allowed alice\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(card))
    code, out, _ = cli(capsys, "contact", "import", "-", "--name", "al", "--data-dir",
                       tmp_path / "c")
    assert code == 0 and out == f"{ALICE.contact_id} allowed al\n"
    code, _, err = cli(capsys, "contact", "import", tmp_path / "missing.card", "--data-dir",
                       tmp_path / "d")
    assert code == 2 and "cannot read" in one_line(err)
