"""Identity keys and contact ids.

An :class:`Identity` is one ed25519 signing key, made from a 32-byte seed. Its X25519 key
pair for encryption is derived from the same seed with libsodium's ed25519 -> curve25519
conversion, so a person has exactly one key to keep and one public key to share.

A contact id is that public key as text a person can paste, read aloud or scan::

    "hl" + base32(pubkey || checksum)      lowercase RFC 4648 alphabet, no padding
    checksum = BLAKE2b-32bit("hailing contact id v1" || pubkey)

60 characters in all. :func:`parse_contact_id` accepts it with surrounding whitespace and
in any case (a QR code carries it upper-cased, which QR's alphanumeric mode stores
compactly), and names what is wrong in one line otherwise.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
from collections.abc import Callable
from typing import Any

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.signing

from ..errors import LocalProtocolError

__all__ = [
    "CONTACT_ID_LENGTH",
    "CONTACT_ID_PREFIX",
    "Identity",
    "contact_qr",
    "format_contact_id",
    "parse_contact_id",
    "text_qr",
    "verify_signature",
    "x25519_public_key",
]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

CONTACT_ID_PREFIX = "hl"
_CHECKSUM_TAG = b"hailing contact id v1"
_CHECKSUM_SIZE = 4
_B32_CHARS = (PUBLIC_KEY_SIZE + _CHECKSUM_SIZE) * 8 // 5 + 1  # 288 bits -> 58 characters
CONTACT_ID_LENGTH = len(CONTACT_ID_PREFIX) + _B32_CHARS
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _checksum(pubkey: bytes) -> bytes:
    return nacl.hash.blake2b(
        _CHECKSUM_TAG + pubkey, digest_size=_CHECKSUM_SIZE, encoder=nacl.encoding.RawEncoder
    )


def format_contact_id(pubkey: bytes) -> str:
    """The contact id of a 32-byte ed25519 public key."""
    if not isinstance(pubkey, bytes) or len(pubkey) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError("a contact id is made from a 32-byte ed25519 public key")
    text = base64.b32encode(pubkey + _checksum(pubkey)).decode("ascii").rstrip("=").lower()
    return CONTACT_ID_PREFIX + text


def parse_contact_id(text: str) -> bytes:
    """The 32-byte public key in a contact id; :class:`LocalProtocolError` if it is not one."""
    if not isinstance(text, str):
        raise LocalProtocolError(f"a contact id is text, not {type(text).__name__}")
    s = text.strip().lower()
    if not s.startswith(CONTACT_ID_PREFIX):
        shown = s[:12] + ("..." if len(s) > 12 else "")
        raise LocalProtocolError(
            f"a contact id starts with {CONTACT_ID_PREFIX!r}, this one is {shown!r}"
        )
    if len(s) != CONTACT_ID_LENGTH:
        raise LocalProtocolError(
            f"a contact id is {CONTACT_ID_LENGTH} characters long, this one has {len(s)}"
        )
    body = s[len(CONTACT_ID_PREFIX):]
    for i, ch in enumerate(body):
        if ch not in _ALPHABET:
            raise LocalProtocolError(
                f"contact id has {ch!r} at position {i + len(CONTACT_ID_PREFIX) + 1}: "
                "only letters a-z and digits 2-7 are used"
            )
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):  # pragma: no cover - the alphabet was checked
        raise LocalProtocolError("contact id is not valid base32") from None
    pubkey, check = raw[:PUBLIC_KEY_SIZE], raw[PUBLIC_KEY_SIZE:]
    # The last character carries 2 unused bits; only the canonical form (zeros) is valid,
    # so one key has exactly one contact id.
    if check != _checksum(pubkey) or format_contact_id(pubkey) != s:
        raise LocalProtocolError("contact id checksum does not match: a typo?")
    return pubkey


def x25519_public_key(ed25519_pub: bytes) -> bytes:
    """The X25519 public key derived from an ed25519 public key (libsodium's conversion).

    Raises :class:`LocalProtocolError` for bytes that are not a usable ed25519 point
    (wrong length, not on the curve, small order).
    """
    if not isinstance(ed25519_pub, bytes) or len(ed25519_pub) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError("an ed25519 public key is 32 bytes")
    try:
        out: bytes = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_pub)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError):
        raise LocalProtocolError("not a valid ed25519 public key") from None
    return out


def verify_signature(pubkey: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``pubkey``'s ed25519 signature of ``data``. Never raises."""
    if not (isinstance(pubkey, bytes) and len(pubkey) == PUBLIC_KEY_SIZE):
        return False
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
        return False
    try:
        nacl.signing.VerifyKey(pubkey).verify(bytes(data), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError,
            TypeError):
        return False
    return True


class Identity:
    """One person's (or node's) key: ed25519 for signatures, X25519 derived for encryption.

    Make one with :meth:`generate` or :meth:`from_seed`; keep it on disk with
    :func:`hailing.identity.load_or_create_identity`. ``repr`` never shows the secret.
    """

    __slots__ = ("_signing", "_x25519", "contact_id", "public_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.contact_id: str = format_contact_id(self.public_key)
        secret = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(
            bytes(signing_key) + self.public_key
        )
        self._x25519 = nacl.public.PrivateKey(secret)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a 32-byte seed (the same seed always gives the same identity)."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise LocalProtocolError("an identity seed is exactly 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] = os.urandom) -> Identity:
        """A new random identity (``rng`` must be a CSPRNG; it is injectable for tests)."""
        return cls.from_seed(rng(SEED_SIZE))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Keep it secret; the keystore encrypts it at rest."""
        return bytes(self._signing)

    @property
    def x25519_private_key(self) -> nacl.public.PrivateKey:
        """The X25519 key for :class:`nacl.public.Box`, derived from the signing key."""
        return self._x25519

    @property
    def x25519_public_key(self) -> bytes:
        return bytes(self._x25519.public_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``data`` (detached)."""
        sig: bytes = self._signing.sign(bytes(data)).signature
        return sig

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.public_key == self.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"Identity({self.contact_id})"


def _load_qrcode() -> Any:
    try:
        return importlib.import_module("qrcode")
    except ImportError:
        raise LocalProtocolError(
            "a terminal QR code needs the optional 'qrcode' package: pip install qrcode"
        ) from None


def contact_qr(contact_id: str, *, dark_terminal: bool = True) -> str:
    """A QR code of a contact id for a terminal, two module rows per text line.

    Uses the optional ``qrcode`` package (:class:`LocalProtocolError` if missing). The id
    is encoded upper-case (QR alphanumeric mode: a smaller code; parsing ignores case).
    ``dark_terminal`` draws the light modules as blocks, so light text on a dark background
    shows dark modules on a light field, as scanners expect.
    """
    pubkey = parse_contact_id(contact_id)
    return text_qr(format_contact_id(pubkey).upper(), dark_terminal=dark_terminal)


def qr_matrix(text: str, *, border: int = 2) -> list[list[bool]]:
    """The modules of a QR code of ``text`` (error correction M), quiet zone included:
    rows of booleans, True for a dark module."""
    qrcode = _load_qrcode()
    qr = qrcode.QRCode(border=border, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(text)
    qr.make(fit=True)
    return [[bool(m) for m in row] for row in qr.get_matrix()]


def text_qr(text: str, *, dark_terminal: bool = True) -> str:
    """A terminal QR code of ``text`` (see :func:`contact_qr`; a contact card is passed
    upper-case, as contact ids are, for QR's compact alphanumeric mode)."""
    matrix = qr_matrix(text)
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))
    glyph = {(True, True): "\u2588", (True, False): "\u2580", (False, True): "\u2584",
             (False, False): " "}
    lines = []
    for top, bottom in zip(matrix[0::2], matrix[1::2], strict=True):
        lines.append("".join(
            glyph[(t != dark_terminal, b != dark_terminal)] for t, b in zip(top, bottom,
                                                                             strict=True)
        ))
    return "\n".join(lines)
