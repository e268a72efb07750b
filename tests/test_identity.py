"""Tests for hailing.identity: keys, contact ids, the QR code, the keystore and the
contact book."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import sys
from pathlib import Path

import nacl.public
import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hailing.identity as identity_pkg
from hailing._secrets import write_secret
from hailing.errors import LocalProtocolError, StorageError
from hailing.identity import (
    CONTACT_ID_LENGTH,
    KEY_FILE,
    Identity,
    contact_qr,
    format_contact_id,
    load_identity,
    load_or_create_identity,
    parse_contact_id,
    verify_signature,
    x25519_public_key,
)
from hailing.identity import _keystore as keystore
from hailing.services.contacts import Contact, ContactBook

# RFC 8032, section 7.1, TEST 1
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701c"
    "f9b46bd25bf5f0595bbe24655141438e7a100b"
)


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "KDF_OPSLIMIT", argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(keystore, "KDF_MEMLIMIT", argon2id.MEMLIMIT_MIN)


def test_public_names() -> None:
    public = {n for n in vars(identity_pkg) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(identity_pkg, n)).__name__ == "module"}
    assert set(identity_pkg.__all__) == public - modules - {"annotations"}
    assert len(identity_pkg.__all__) == len(set(identity_pkg.__all__))


# --- keys -------------------------------------------------------------------------------


def test_identity_rfc8032_vector() -> None:
    ident = Identity.from_seed(RFC_SEED)
    assert ident.public_key == RFC_PUB
    assert ident.sign(b"") == RFC_SIG
    assert ident.seed == RFC_SEED
    assert verify_signature(RFC_PUB, b"", RFC_SIG)
    assert not verify_signature(RFC_PUB, b"x", RFC_SIG)


def test_identity_x25519_is_derived_and_works() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a != b and Identity.from_seed(a.seed) == a and hash(a) == hash(Identity.from_seed(a.seed))
    assert x25519_public_key(a.public_key) == a.x25519_public_key
    assert bytes(a.x25519_private_key.public_key) == a.x25519_public_key
    sealed = nacl.public.Box(a.x25519_private_key,
                             nacl.public.PublicKey(x25519_public_key(b.public_key))).encrypt(b"hi")
    opened = nacl.public.Box(b.x25519_private_key,
                             nacl.public.PublicKey(x25519_public_key(a.public_key))).decrypt(sealed)
    assert opened == b"hi"


def test_identity_repr_hides_the_secret() -> None:
    ident = Identity.from_seed(RFC_SEED)
    assert repr(ident) == f"Identity({ident.contact_id})"
    assert RFC_SEED.hex() not in repr(ident)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32, None])
def test_identity_bad_seed(seed: object) -> None:
    with pytest.raises(LocalProtocolError):
        Identity.from_seed(seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("pub", [b"", bytes(31), bytes(32), b"\xff" * 32, "x"])
def test_x25519_public_key_rejects_garbage(pub: object) -> None:
    with pytest.raises(LocalProtocolError):
        x25519_public_key(pub)  # type: ignore[arg-type]


@settings(max_examples=100)
@given(st.binary(max_size=40), st.binary(max_size=10), st.binary(max_size=70))
def test_verify_signature_garbage_is_false(pub: bytes, data: bytes, sig: bytes) -> None:
    assert verify_signature(pub, data, sig) is False


# --- contact ids -----------------------------------------------------------------------


def test_contact_id_form() -> None:
    cid = format_contact_id(RFC_PUB)
    assert len(cid) == CONTACT_ID_LENGTH == 60
    assert cid.startswith("hl") and cid == cid.lower()
    assert set(cid[2:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert Identity.from_seed(RFC_SEED).contact_id == cid
    assert parse_contact_id(cid) == RFC_PUB


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_contact_id_round_trip(pub: bytes) -> None:
    cid = format_contact_id(pub)
    assert parse_contact_id(cid) == pub
    assert parse_contact_id(f"  {cid.upper()}\n") == pub
    assert parse_contact_id("\t" + cid[:10].upper() + cid[10:] + " ") == pub


@pytest.mark.parametrize("text, message", [
    ("", "starts with 'hl'"),
    ("xx" + "a" * 58, "starts with 'hl'"),
    ("hl" + "a" * 57, "60 characters long, this one has 59"),
    ("hl" + "a" * 59, "60 characters long, this one has 61"),
    ("hl" + "a" * 20 + "1" + "a" * 37, "'1' at position 23"),
    ("hl" + "a" * 57 + "-", "'-' at position 60"),
    ("hl" + "a" * 58, "checksum does not match: a typo?"),
])
def test_contact_id_errors(text: str, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message) as info:
        parse_contact_id(text)
    assert "\n" not in str(info.value)


def test_contact_id_every_single_typo_is_caught() -> None:
    cid = format_contact_id(RFC_PUB)
    for pos in range(2, len(cid)):
        for ch in "a7q":
            if ch != cid[pos]:
                typo = cid[:pos] + ch + cid[pos + 1:]
                with pytest.raises(LocalProtocolError, match="checksum does not match"):
                    parse_contact_id(typo)


def test_contact_id_only_the_canonical_form() -> None:
    """The last character carries 2 unused bits: changing only those keeps the key and
    the checksum, and is still refused, so one key has exactly one contact id."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    cid = format_contact_id(RFC_PUB)
    last = alphabet.index(cid[-1])
    assert last & 0b11 == 0
    for pad in (1, 2, 3):
        variant = cid[:-1] + alphabet[last | pad]
        with pytest.raises(LocalProtocolError, match="checksum does not match"):
            parse_contact_id(variant)


@pytest.mark.parametrize("value", [None, b"hl" + bytes(58), 42])
def test_contact_id_not_text(value: object) -> None:
    with pytest.raises(LocalProtocolError, match="text"):
        parse_contact_id(value)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.text(max_size=80) | st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=58,
                                       max_size=58).map(lambda s: "hl" + s))
def test_contact_id_garbage(text: str) -> None:
    try:
        pub = parse_contact_id(text)
    except LocalProtocolError:
        return
    assert format_contact_id(pub) == text.strip().lower()


@pytest.mark.parametrize("pub", [b"", bytes(31), "hl"])
def test_format_contact_id_misuse(pub: object) -> None:
    with pytest.raises(LocalProtocolError):
        format_contact_id(pub)  # type: ignore[arg-type]


# --- QR code ---------------------------------------------------------------------------


def _unrender(text: str, dark_terminal: bool) -> list[list[bool]]:
    top = {"\u2588": True, "\u2580": True, "\u2584": False, " ": False}
    bottom = {"\u2588": True, "\u2580": False, "\u2584": True, " ": False}
    rows: list[list[bool]] = []
    for line in text.split("\n"):
        rows.append([top[c] != dark_terminal for c in line])
        rows.append([bottom[c] != dark_terminal for c in line])
    return rows


@pytest.mark.parametrize("dark_terminal", [True, False])
def test_contact_qr_draws_the_qr_matrix(dark_terminal: bool) -> None:
    qrcode = pytest.importorskip("qrcode")
    cid = format_contact_id(RFC_PUB)
    text = contact_qr("  " + cid.upper() + " ", dark_terminal=dark_terminal)
    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(cid.upper())
    qr.make(fit=True)
    expected = [[bool(m) for m in row] for row in qr.get_matrix()]
    drawn = _unrender(text, dark_terminal)
    assert drawn[:len(expected)] == expected
    assert all(not any(row) for row in drawn[len(expected):])  # padding row is light
    assert qr.version <= 3  # upper case: alphanumeric mode keeps the code small


def test_contact_qr_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qrcode", None)
    with pytest.raises(LocalProtocolError, match="pip install qrcode"):
        contact_qr(format_contact_id(RFC_PUB))


def test_contact_qr_bad_id() -> None:
    with pytest.raises(LocalProtocolError, match="checksum"):
        contact_qr("hl" + "a" * 58)


# --- keystore --------------------------------------------------------------------------


def test_keystore_create_and_load(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    ident = load_or_create_identity(data_dir)
    key_file = data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    body = b"HLID\x02\x00" + ident.seed
    assert key_file.read_bytes() == body + keystore._checksum(body)
    assert load_identity(data_dir) == ident
    assert load_or_create_identity(data_dir) == ident
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary file left


def test_keystore_default_kdf_is_moderate(tmp_path: Path) -> None:
    ident = load_or_create_identity(tmp_path, passphrase="correct horse")
    data = (tmp_path / KEY_FILE).read_bytes()
    assert data[6:10] == argon2id.OPSLIMIT_MODERATE.to_bytes(4, "big")
    assert data[10:18] == argon2id.MEMLIMIT_MODERATE.to_bytes(8, "big")
    assert ident.seed not in data


def test_keystore_passphrase(tmp_path: Path, fast_kdf: None) -> None:
    ident = load_or_create_identity(tmp_path, passphrase="correct horse")
    key_file = tmp_path / KEY_FILE
    data = key_file.read_bytes()
    assert len(data) == 122 and data[:6] == b"HLID\x02\x01" and ident.seed not in data
    assert load_identity(tmp_path, passphrase="correct horse") == ident
    assert load_or_create_identity(tmp_path, passphrase="correct horse") == ident
    with pytest.raises(LocalProtocolError, match=re.escape(f"wrong passphrase for {key_file}")):
        load_identity(tmp_path, passphrase="battery staple")
    with pytest.raises(LocalProtocolError, match=re.escape(f"{key_file} is encrypted: a passphrase")):
        load_identity(tmp_path)
    with pytest.raises(LocalProtocolError, match="non-empty"):
        load_identity(tmp_path, passphrase="")
    assert key_file.read_bytes() == data  # nothing was rewritten


def test_keystore_passphrase_for_a_plain_file(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    with pytest.raises(LocalProtocolError, match="not encrypted, but a passphrase"):
        load_identity(tmp_path, passphrase="x")


def test_keystore_missing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=re.escape(f"{tmp_path / KEY_FILE} does not exist")):
        load_identity(tmp_path)


def _v1(data: bytes) -> bytes:
    """A version 2 key file's content in the version 1 format (no checksum)."""
    return data[:4] + b"\x01" + data[5:-16]


def _rechecked(data: bytes) -> bytes:
    """``data`` (a changed version 2 file) with its checksum made to match again."""
    return data[:-16] + keystore._checksum(data[:-16])


def _damage_cases(plain: bytes, enc: bytes) -> list[tuple[bytes, str]]:
    return [
        (b"", "truncated"), (b"HLI", "truncated"),
        (b"XXXX\x02\x00" + plain[6:], "not a hailing key file"),
        (b"HLID\x03\x00" + plain[6:], "unsupported key file version 3"),
        (b"HLID\x02\x07" + plain[6:], "unknown key protection mode 7"),
        (plain[:-1], "damaged: 53 bytes"), (plain + b"x", "damaged: 55 bytes"),
        (enc[:-1], "damaged: 121 bytes"),
        (_v1(plain)[:-1], "damaged: 37 bytes"), (_v1(enc) + b"x", "damaged: 107 bytes"),
        (plain[:-17] + bytes([plain[-17] ^ 1]) + plain[-16:], "checksum does not match"),
        (enc[:30] + bytes([enc[30] ^ 0x80]) + enc[31:], "checksum does not match"),
        (_rechecked(enc[:6] + (0).to_bytes(4, "big") + enc[10:]), "limits out of range"),
        (_v1(enc)[:6] + (99).to_bytes(4, "big") + _v1(enc)[10:], "limits out of range"),
        (_rechecked(enc[:10] + (2**40).to_bytes(8, "big") + enc[18:]), "limits out of range"),
    ]


def test_keystore_damaged_files(tmp_path: Path, fast_kdf: None) -> None:
    plain = keystore.encode_key_file(Identity.generate(), None)
    enc = keystore.encode_key_file(Identity.generate(), "pw")
    for i, (data, message) in enumerate(_damage_cases(plain, enc)):
        d = tmp_path / str(i)
        d.mkdir()
        (d / KEY_FILE).write_bytes(data)
        os.chmod(d / KEY_FILE, 0o600)
        with pytest.raises(StorageError, match=message) as info:
            load_or_create_identity(d, passphrase="pw" if data[5:6] == b"\x01" else None)
        assert str(d / KEY_FILE) in str(info.value)
        assert (d / KEY_FILE).read_bytes() == data  # never overwritten


def test_keystore_tampered_encrypted_header_is_a_wrong_key(tmp_path: Path,
                                                           fast_kdf: None) -> None:
    enc = bytearray(_v1(keystore.encode_key_file(Identity.generate(), "pw")))
    enc[20] ^= 1  # a salt byte (a version 2 file: "checksum does not match", below)
    with pytest.raises(LocalProtocolError, match="wrong passphrase"):
        keystore.decode_key_file(bytes(enc), "pw", tmp_path / KEY_FILE)


def test_keystore_every_changed_bit_of_a_plain_key_is_an_error(tmp_path: Path) -> None:
    """A flipped bit in an unencrypted key file never becomes another identity: the
    checksum (or the header checks) refuse it with one line naming the file."""
    data = keystore.encode_key_file(Identity.generate(), None)
    path = tmp_path / KEY_FILE
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(StorageError) as info:
            keystore.decode_key_file(bytes(flipped), None, path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_bytes(data[:20] + bytes([data[20] ^ 4]) + data[21:])
    os.chmod(path, 0o600)
    with pytest.raises(StorageError, match=r"checksum does not match.*restore it from a backup"):
        load_identity(tmp_path)


def test_keystore_changed_encrypted_key_is_damaged_not_a_wrong_passphrase(
        tmp_path: Path, fast_kdf: None) -> None:
    data = keystore.encode_key_file(Identity.generate(), "pw")
    for i in (6, 20, 40, 80, 105):  # KDF limits, salt, nonce, MAC, seed
        flipped = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        with pytest.raises(StorageError, match="checksum does not match"):
            keystore.decode_key_file(flipped, "pw", tmp_path / KEY_FILE)


def test_keystore_reads_version_1_files(tmp_path: Path, fast_kdf: None) -> None:
    ident = Identity.generate()
    for passphrase in (None, "pw"):
        old = _v1(keystore.encode_key_file(ident, passphrase))
        assert len(old) == (38 if passphrase is None else 106)
        assert keystore.decode_key_file(old, passphrase, tmp_path / KEY_FILE) == ident
    # a version 1 file keeps its format until its passphrase changes; then it is version 2
    d = tmp_path / "old"
    d.mkdir(mode=0o700)
    (d / KEY_FILE).write_bytes(_v1(keystore.encode_key_file(ident, None)))
    os.chmod(d / KEY_FILE, 0o600)
    assert load_or_create_identity(d) == ident
    assert keystore.change_passphrase(d, None, "pw") == ident
    assert (d / KEY_FILE).read_bytes()[:6] == b"HLID\x02\x01"


@settings(max_examples=200)
@given(st.binary(max_size=130) | st.binary(min_size=100, max_size=100).map(
    lambda b: b"HLID\x01\x01" + b) | st.binary(min_size=32, max_size=32).map(
    lambda b: b"HLID\x01\x00" + b) | st.binary(min_size=48, max_size=48).map(
    lambda b: b"HLID\x02\x00" + b))
def test_keystore_garbage(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keystore, "MAX_MEMLIMIT", 64 * 1024)  # garbage must not cost a GiB
        for passphrase in (None, "pw"):
            try:
                ident = keystore.decode_key_file(data, passphrase, Path("identity.key"))
            except (StorageError, LocalProtocolError) as exc:
                assert "\n" not in str(exc)
            else:
                assert data[:6] in (b"HLID\x01\x00", b"HLID\x01\x01")  # only unchecked
                assert isinstance(ident, Identity)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666, 0o700])
def test_keystore_refuses_an_open_key_file(tmp_path: Path, mode: int) -> None:
    ident = load_or_create_identity(tmp_path)
    key_file = tmp_path / KEY_FILE
    os.chmod(key_file, mode)
    if mode & 0o077:
        with pytest.raises(StorageError, match=re.escape(f"chmod 600 {key_file}")):
            load_identity(tmp_path)
        with pytest.raises(StorageError, match="accessible by other users"):
            load_or_create_identity(tmp_path)
        assert stat.S_IMODE(key_file.stat().st_mode) == mode  # not "fixed" behind our back
    else:
        assert load_identity(tmp_path) == ident


def test_keystore_key_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).mkdir()
    with pytest.raises(StorageError, match="not a regular file"):
        load_or_create_identity(tmp_path)


def test_keystore_never_overwrites(tmp_path: Path) -> None:
    key_file = tmp_path / KEY_FILE
    key_file.write_bytes(b"something else")
    os.chmod(key_file, 0o600)
    with pytest.raises(StorageError):
        load_or_create_identity(tmp_path)
    assert key_file.read_bytes() == b"something else"
    assert write_secret(key_file, b"new", overwrite=False) is False
    assert key_file.read_bytes() == b"something else"
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_identity_name_lives_in_the_contact_book(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    with ContactBook(tmp_path) as book:
        book.set_name(" alice ")
        assert book.name() == "alice"
    with ContactBook(tmp_path) as book:
        assert book.name() == "alice"
        with pytest.raises(LocalProtocolError, match="name"):
            book.set_name("")


def test_keystore_unusable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="cannot create data directory"):
        load_or_create_identity(tmp_path / "file" / "sub")


# --- contact book ----------------------------------------------------------------------

BOB = Identity.from_seed(bytes(range(32)))
CAROL = Identity.from_seed(bytes(range(1, 33)))
DAVE = Identity.from_seed(bytes(range(2, 34)))


def test_contacts_add_get_list_remove(tmp_path: Path) -> None:
    with ContactBook(tmp_path) as book:
        assert book.list() == [] and book.get(BOB.contact_id) is None
        bob = book.add(BOB.contact_id, "Bob")
        assert bob == Contact(BOB.public_key, "Bob", "allowed")
        assert bob.contact_id == BOB.contact_id and not bob.blocked
        assert book.add(f" {CAROL.contact_id.upper()} ", " Carol ").name == "Carol"
        assert book.get(BOB.public_key) == bob == book.get(BOB.contact_id) == book.get(bob)
        assert [c.name for c in book.list()] == ["Bob", "Carol"]
        assert book.state(BOB.contact_id) == "allowed" and book.state(DAVE.public_key) == "unknown"
        assert book.remove(bob) is True and book.remove(bob) is False
        assert book.get(BOB.public_key) is None and book.state(BOB.public_key) == "unknown"
        assert [c.name for c in book.list()] == ["Carol"]


def test_contacts_block_allow_rename(tmp_path: Path) -> None:
    with ContactBook(tmp_path) as book:
        book.add(BOB.contact_id, "Bob")
        assert book.block(BOB.contact_id).state == "blocked"
        assert book.state(BOB.public_key) == "blocked"
        assert book.add(BOB.contact_id, "Robert") == Contact(BOB.public_key, "Robert", "blocked")
        assert book.allow(BOB.public_key).state == "allowed"
        stranger = book.block(DAVE.contact_id)  # someone never added
        assert stranger == Contact(DAVE.public_key, "", "blocked") and stranger.blocked
        assert book.block(DAVE.contact_id, name="spam").name == "spam"
        assert book.allow(CAROL.contact_id, name="Carol").state == "allowed"
        assert book.rename(DAVE.public_key, "Dave").name == "Dave"
        assert book.get(DAVE.public_key) == Contact(DAVE.public_key, "Dave", "blocked")
        with pytest.raises(LocalProtocolError, match="not in the contact book"):
            book.rename(Identity.generate().contact_id, "x")


def test_contacts_persist_across_reopen(tmp_path: Path) -> None:
    with ContactBook(tmp_path) as book:
        book.add(BOB.contact_id, "Bob")
        book.block(CAROL.contact_id, "Carol")
        book.set_status("dnd")
        book.set_accept_any(True)
        book.set_name("me")
    with ContactBook(tmp_path) as book:
        assert book.list() == [Contact(BOB.public_key, "Bob", "allowed"),
                               Contact(CAROL.public_key, "Carol", "blocked")]
        assert book.status() == "dnd" and book.accept_any() is True and book.name() == "me"
        book.set_name(None)
        book.set_accept_any(False)
    with ContactBook(tmp_path) as book:
        assert book.name() is None and book.accept_any() is False


def test_contacts_status(tmp_path: Path) -> None:
    with ContactBook(tmp_path) as book:
        assert book.status() == "available" and book.accept_any() is False
        for status in ("busy", "dnd", "available"):
            book.set_status(status)
            assert book.status() == status
        with pytest.raises(LocalProtocolError, match="available, busy, dnd"):
            book.set_status("away")  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            book.set_accept_any(1)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\nb", "\x00", None, 5])
def test_contacts_bad_names(tmp_path: Path, name: object) -> None:
    with ContactBook(tmp_path) as book:
        with pytest.raises(LocalProtocolError):
            book.add(BOB.contact_id, name)  # type: ignore[arg-type]
        if name is not None:  # None clears the name
            with pytest.raises(LocalProtocolError):
                book.set_name(name)  # type: ignore[arg-type]
        assert book.list() == []


@pytest.mark.parametrize("ref", ["hl" + "a" * 58, "bob", bytes(31), 42, None])
def test_contacts_bad_references(tmp_path: Path, ref: object) -> None:
    with ContactBook(tmp_path) as book:
        for call in (lambda: book.add(ref, "x"), lambda: book.get(ref),  # type: ignore[arg-type]
                     lambda: book.block(ref), lambda: book.remove(ref)):  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError):
                call()


@pytest.mark.parametrize("content", [
    b"garbage" * 100, b"SQLite format 3\x00" + bytes(100), os.urandom(4096),
])
def test_contacts_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "peer.sqlite3"
    path.write_bytes(content)
    with pytest.raises(StorageError, match=re.escape(str(path))):
        ContactBook(tmp_path)
    assert path.read_bytes() == content


def test_contacts_corrupt_values_and_schema(tmp_path: Path) -> None:
    ContactBook(tmp_path).close()
    db = sqlite3.connect(tmp_path / "peer.sqlite3")
    with db:
        db.execute("INSERT INTO meta VALUES ('status', 'sleeping')")
        db.execute("INSERT INTO meta VALUES ('accept_any', 'yes')")
        db.execute("INSERT INTO meta VALUES ('name', x'00')")
    with ContactBook(tmp_path) as book:
        for call in (book.status, book.accept_any, book.name):
            with pytest.raises(StorageError, match="corrupt"):
                call()
    with db:
        db.execute("UPDATE meta SET value=99 WHERE key='schema'")
    db.close()
    with pytest.raises(StorageError, match="unsupported schema version 99"):
        ContactBook(tmp_path)


def test_contacts_unusable_directory(tmp_path: Path) -> None:
    (tmp_path / "peer.sqlite3").mkdir()
    with pytest.raises(StorageError, match=re.escape("peer.sqlite3")):
        ContactBook(tmp_path)
