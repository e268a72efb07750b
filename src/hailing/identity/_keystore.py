"""The identity key on disk: ``<data_dir>/identity.key``.

File format (all integers big-endian)::

    plain      b"HLID" | version=2 | mode=0 | seed (32) | check (16)              54 bytes
    encrypted  b"HLID" | version=2 | mode=1 | opslimit u32 | memlimit u64 | salt (16)
               | SecretBox(key, seed): nonce (24) | MAC (16) | seed (32)
               | check (16)                                                      122 bytes
               key = argon2id(passphrase, salt, opslimit, memlimit), 32 bytes
               check = BLAKE2b-128(every byte before it, person="hailing key file")

Version 1 files (written before the checksum, without ``check``: 38 and 106 bytes) are
still read; every file written is version 2. The checksum is what keeps a flipped bit in
an unencrypted key from silently becoming another identity (issue 9 item 10): any change
to a version 2 file is :class:`StorageError` ("... is damaged: its checksum does not
match"), checked before the key derivation runs. In an encrypted file the SecretBox MAC
protects the seed as well, but without the checksum a damaged file would read as a wrong
passphrase.

The KDF limits are stored so that a file stays readable when the defaults change; a file
asking for more than :data:`MAX_MEMLIMIT` / :data:`MAX_OPSLIMIT` is refused rather than
allowed to exhaust memory. A tampered header only derives a wrong key, which the
SecretBox MAC rejects.

Policy:

- The file is a secret file (:mod:`hailing._secrets`): created with mode 0600 (its
  directory 0700), written whole to a temporary file and hard-linked into place, so it
  never exists half-written and an existing key file is never overwritten; nothing here
  deletes a key file.
- A key file that group or others can read or write is refused (:class:`StorageError`,
  with the ``chmod`` that fixes it), encrypted or not, as OpenSSH does: a copy of an
  encrypted key is open to an offline passphrase search. POSIX only.
- A wrong or missing passphrase is the caller's to fix (:class:`LocalProtocolError`); a
  truncated, unknown or unreadable file is :class:`StorageError`. Both name the file.
- A passphrase given for a file that is not encrypted is refused too: silently ignoring
  it would let a user believe the key is protected.
- Every message says how to recover: the passphrase errors name ``HAILING_PASSPHRASE``
  (where the ``hailing`` command reads it), a damaged file says to restore it from a
  backup (the key cannot be rebuilt), a missing one how to create one.
- :func:`change_passphrase` encrypts a plain key, re-encrypts an encrypted one under a new
  passphrase, or decrypts it: the new file is checked to hold the same identity, then
  written atomically (temporary file + rename, mode 0600) over the old one.
- The identity's display name is metadata, kept in the contact book's SQLite file
  (:meth:`hailing.services.contacts.ContactBook.set_name`), not here.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from .._secrets import private_dir, read_secret, write_secret
from ..errors import LocalProtocolError, StorageError
from ._keys import SEED_SIZE, Identity

__all__ = [
    "KEY_FILE",
    "PASSPHRASE_ENV",
    "change_passphrase",
    "is_encrypted",
    "load_identity",
    "load_or_create_identity",
]

KEY_FILE = "identity.key"
#: Where the ``hailing`` command (and ``hailing up``) reads the key's passphrase.
PASSPHRASE_ENV = "HAILING_PASSPHRASE"
_RESTORE = ("restore it from a backup: the key cannot be rebuilt, and without it this "
            "identity (its contact id) is lost")
MAGIC = b"HLID"
#: The version written; :data:`VERSION_UNCHECKED` files are still read.
VERSION = 2
VERSION_UNCHECKED = 1
MODE_PLAIN = 0
MODE_ENCRYPTED = 1

KDF_OPSLIMIT: int = argon2id.OPSLIMIT_MODERATE  # 3 passes
KDF_MEMLIMIT: int = argon2id.MEMLIMIT_MODERATE  # 256 MiB, about 1 s
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 2 * 1024**3

_HEADER = struct.Struct(">4sBB")
_KDF = struct.Struct(">IQ16s")
_CHECK_SIZE = 16
_CHECK_PERSON = b"hailing key file"
_PLAIN_BODY = _HEADER.size + SEED_SIZE
_SEALED_SIZE = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES + SEED_SIZE
_ENCRYPTED_BODY = _HEADER.size + _KDF.size + _SEALED_SIZE
#: File sizes by (version, mode).
_SIZES = {
    (VERSION_UNCHECKED, MODE_PLAIN): _PLAIN_BODY,
    (VERSION_UNCHECKED, MODE_ENCRYPTED): _ENCRYPTED_BODY,
    (VERSION, MODE_PLAIN): _PLAIN_BODY + _CHECK_SIZE,
    (VERSION, MODE_ENCRYPTED): _ENCRYPTED_BODY + _CHECK_SIZE,
}
_MAX_SIZE = max(_SIZES.values())


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECK_SIZE, person=_CHECK_PERSON).digest()


def _check_passphrase(passphrase: str | None) -> None:
    if passphrase is not None and (not isinstance(passphrase, str) or not passphrase):
        raise LocalProtocolError("a passphrase is a non-empty string (or None for no passphrase)")


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    key: bytes = argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt,
        opslimit=opslimit, memlimit=memlimit,
    )
    return key


def encode_key_file(identity: Identity, passphrase: str | None) -> bytes:
    """The bytes of a key file holding ``identity`` (encrypted when a passphrase is given)."""
    _check_passphrase(passphrase)
    if passphrase is None:
        body = _HEADER.pack(MAGIC, VERSION, MODE_PLAIN) + identity.seed
    else:
        salt = nacl.utils.random(argon2id.SALTBYTES)
        key = _derive(passphrase, salt, KDF_OPSLIMIT, KDF_MEMLIMIT)
        sealed = bytes(nacl.secret.SecretBox(key).encrypt(identity.seed))
        body = (_HEADER.pack(MAGIC, VERSION, MODE_ENCRYPTED)
                + _KDF.pack(KDF_OPSLIMIT, KDF_MEMLIMIT, salt) + sealed)
    return body + _checksum(body)


def decode_key_file(data: bytes, passphrase: str | None, path: Path) -> Identity:
    """The identity in a key file's bytes; ``path`` only names the file in errors."""
    _check_passphrase(passphrase)
    if len(data) < _HEADER.size:
        raise StorageError(f"{path} is truncated ({len(data)} bytes): not a hailing key file; "
                           f"{_RESTORE}")
    magic, version, mode = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StorageError(f"{path} is not a hailing key file; {_RESTORE}")
    if version not in (VERSION_UNCHECKED, VERSION):
        raise StorageError(f"{path}: unsupported key file version {version} (made by a newer "
                           f"hailing?); upgrade hailing, or {_RESTORE}")
    if mode not in (MODE_PLAIN, MODE_ENCRYPTED):
        raise StorageError(f"{path}: unknown key protection mode {mode}; {_RESTORE}")
    size = _SIZES[version, mode]
    if len(data) != size:
        raise StorageError(f"{path} is damaged: {len(data)} bytes, expected {size}; "
                           f"{_RESTORE}")
    if version == VERSION:
        data, check = data[:-_CHECK_SIZE], data[-_CHECK_SIZE:]
        if _checksum(data) != check:
            raise StorageError(f"{path} is damaged: its checksum does not match (a changed "
                               f"byte); {_RESTORE}")
    if mode == MODE_PLAIN:
        if passphrase is not None:
            raise LocalProtocolError(
                f"{path} is not encrypted, but a passphrase was given: unset {PASSPHRASE_ENV}, "
                "or encrypt the key with 'hailing id passphrase'")
        return Identity.from_seed(data[_HEADER.size:])
    if passphrase is None:
        raise LocalProtocolError(f"{path} is encrypted: a passphrase is needed (set "
                                 f"{PASSPHRASE_ENV})")
    opslimit, memlimit, salt = _KDF.unpack_from(data, _HEADER.size)
    if not (argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT
            and argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT):
        raise StorageError(f"{path}: key derivation limits out of range (damaged file?); "
                           f"{_RESTORE}")
    key = _derive(passphrase, salt, opslimit, memlimit)
    try:
        seed = nacl.secret.SecretBox(key).decrypt(data[_HEADER.size + _KDF.size:])
    except nacl.exceptions.CryptoError:
        raise LocalProtocolError(f"wrong passphrase for {path} (check {PASSPHRASE_ENV}), or the "
                                 "file is damaged") from None
    return Identity.from_seed(bytes(seed))


def _key_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / KEY_FILE


def _read_bytes(path: Path) -> bytes:
    data = read_secret(path, limit=_MAX_SIZE, missing_ok=True)
    if data is None:
        raise StorageError(f"no identity in {path.parent}: {path} does not exist (create one "
                           "with 'hailing id new', or give the data directory that holds "
                           "yours: --data-dir or HAILING_DATA_DIR)")
    return data


def _read(path: Path, passphrase: str | None) -> Identity:
    return decode_key_file(_read_bytes(path), passphrase, path)


def is_encrypted(data_dir: str | os.PathLike[str]) -> bool:
    """Whether the key file of ``data_dir`` is encrypted (:class:`StorageError` if there is
    no usable key file). Reads only the header: no passphrase, no key derivation."""
    path = _key_path(data_dir)
    data = _read_bytes(path)
    if len(data) >= _HEADER.size and _HEADER.unpack_from(data)[2] == MODE_ENCRYPTED:
        return True
    decode_key_file(data, None, path)  # a plain key, or the error that says what is wrong
    return False


def change_passphrase(data_dir: str | os.PathLike[str], old: str | None,
                      new: str | None) -> Identity:
    """Re-write the key file of ``data_dir`` under passphrase ``new`` (None: unencrypted),
    given its current passphrase ``old`` (None if it is not encrypted).

    The new bytes are decoded again and must give the same identity before they replace
    the file, atomically (temporary file + rename, mode 0600): an interruption leaves the
    old file or the new one, never neither.
    """
    _check_passphrase(old)
    _check_passphrase(new)
    path = _key_path(data_dir)
    identity = decode_key_file(_read_bytes(path), old, path)
    data = encode_key_file(identity, new)
    if decode_key_file(data, new, path) != identity:  # pragma: no cover - a bug, not a state
        raise StorageError(f"re-encrypting {path} did not round-trip; the file is unchanged")
    write_secret(path, data, overwrite=True)
    return identity


def load_identity(data_dir: str | os.PathLike[str], passphrase: str | None = None) -> Identity:
    """The identity stored in ``data_dir``; :class:`StorageError` if there is none."""
    return _read(_key_path(data_dir), passphrase)


def load_or_create_identity(
    data_dir: str | os.PathLike[str], passphrase: str | None = None
) -> Identity:
    """The identity of ``data_dir``, created (and encrypted if ``passphrase``) when missing."""
    _check_passphrase(passphrase)
    directory = private_dir(data_dir)
    path = _key_path(directory)
    if os.path.lexists(path):
        identity = _read(path, passphrase)
    else:
        fresh = Identity.generate()
        identity = fresh if write_secret(path, encode_key_file(fresh, passphrase), overwrite=False) \
            else _read(path, passphrase)  # another process created it first
    return identity
