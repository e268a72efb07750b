"""Contact cards: everything a friend needs to reach you, as one string.

A contact id alone lets a friend call you over the DHT. The contract path also needs your
rotation secret (the passphrase prefix and user id from which your daily wallet addresses
are derived, :mod:`hailing.chain.wallet`); exchanging it used to take ``rotation show`` on
one side and ``rotation set`` on the other. A card carries the key, your display name and
the rotation secret together, signed by your identity key::

    "hlcard" + base32(body || checksum)          lowercase RFC 4648 alphabet, no padding
    body     = version=1 | public key (32) | name | prefix | user id | signature (64)
               each text field: length (1 byte) | UTF-8, empty when absent
    signature = ed25519(identity, "hailing contact card v1" || body without signature)
    checksum  = BLAKE2b-32bit("hailing contact card v1 checksum" || body)

About 260 characters with a rotation secret. :func:`parse_card` ignores case and any
whitespace (a card wrapped by a terminal or a mail client still reads), and names what is
wrong in one line: not a card, a character outside the alphabet, a checksum that does not
match (a typo, or part of it was not copied), a signature that does not verify (someone
changed it), an unknown version.

The rotation secret links your daily addresses to each other for whoever holds it: give
your card to friends only, as you would the contact id of a private account.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import nacl.encoding
import nacl.hash

from ..errors import LocalProtocolError
from ._keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, format_contact_id, verify_signature

__all__ = ["CARD_PREFIX", "ContactCard", "make_card", "parse_card"]

CARD_PREFIX = "hlcard"
CARD_VERSION = 1
_SIGN_TAG = b"hailing contact card v1"
_CHECK_TAG = b"hailing contact card v1 checksum"
_CHECKSUM_SIZE = 4
_MAX_FIELD = 255
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ContactCard:
    """A parsed (checked and verified) card. Empty strings for fields it does not carry."""

    public_key: bytes
    name: str
    rotation_prefix: str
    rotation_user_id: str

    @property
    def contact_id(self) -> str:
        return format_contact_id(self.public_key)

    @property
    def has_rotation(self) -> bool:
        return bool(self.rotation_prefix and self.rotation_user_id)


def _checksum(body: bytes) -> bytes:
    return nacl.hash.blake2b(_CHECK_TAG + body, digest_size=_CHECKSUM_SIZE,
                             encoder=nacl.encoding.RawEncoder)


def _field(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise LocalProtocolError(f"a card's {what} is text, not {type(value).__name__}")
    raw = value.encode("utf-8")
    if len(raw) > _MAX_FIELD:
        raise LocalProtocolError(f"a card's {what} is at most {_MAX_FIELD} bytes of UTF-8")
    return bytes([len(raw)]) + raw


def make_card(identity: Identity, name: str | None = None,
              rotation: tuple[str, str] | None = None) -> str:
    """The card of ``identity``: its display ``name`` and its rotation secret
    ``(prefix, user_id)``, signed."""
    prefix, user_id = rotation if rotation is not None else ("", "")
    if bool(prefix) != bool(user_id):
        raise LocalProtocolError("a rotation secret has both a prefix and a user id")
    unsigned = (bytes([CARD_VERSION]) + identity.public_key + _field(name or "", "name")
                + _field(prefix, "rotation prefix") + _field(user_id, "rotation user id"))
    body = unsigned + identity.sign(_SIGN_TAG + unsigned)
    text = base64.b32encode(body + _checksum(body)).decode("ascii").rstrip("=").lower()
    return CARD_PREFIX + text


def _damaged() -> LocalProtocolError:
    return LocalProtocolError("this contact card is damaged or incomplete: copy all of it")


def parse_card(text: str) -> ContactCard:
    """The card in ``text``; :class:`LocalProtocolError` (one line) if it is not a valid,
    unaltered card."""
    if not isinstance(text, str):
        raise LocalProtocolError(f"a contact card is text, not {type(text).__name__}")
    s = _SPACE.sub("", text).lower()
    if not s.startswith(CARD_PREFIX):
        if s.startswith("hl") and len(s) == 60:
            raise LocalProtocolError("this is a contact id, not a card: add it with 'hailing "
                                     "contact add CONTACT_ID --name NAME'")
        shown = s[:12] + ("..." if len(s) > 12 else "")
        raise LocalProtocolError(f"not a contact card: a card starts with {CARD_PREFIX!r}, "
                                 f"this text is {shown!r}")
    data = s[len(CARD_PREFIX):]
    for i, ch in enumerate(data):
        if ch not in _ALPHABET:
            raise LocalProtocolError(
                f"contact card has {ch!r} at position {i + len(CARD_PREFIX) + 1}: only "
                "letters a-z and digits 2-7 are used")
    if len(data) % 8 in (1, 3, 6):  # lengths base32 without padding never has
        raise _damaged()
    try:
        raw = base64.b32decode(data.upper() + "=" * (-len(data) % 8))
    except (binascii.Error, ValueError):
        raise _damaged() from None
    if len(raw) < 1 + PUBLIC_KEY_SIZE + 3 + SIGNATURE_SIZE + _CHECKSUM_SIZE:
        raise _damaged()
    body, check = raw[:-_CHECKSUM_SIZE], raw[-_CHECKSUM_SIZE:]
    if check != _checksum(body):
        raise LocalProtocolError("contact card checksum does not match: a typo, or not all "
                                 "of it was copied?")
    if body[0] != CARD_VERSION:
        raise LocalProtocolError(f"contact card version {body[0]} is not supported (made by "
                                 "a newer hailing?)")
    pos = 1 + PUBLIC_KEY_SIZE
    pubkey = body[1:pos]
    fields: list[str] = []
    for what in ("name", "rotation prefix", "rotation user id"):
        if pos >= len(body):
            raise _damaged()
        size = body[pos]
        value = body[pos + 1: pos + 1 + size]
        if len(value) != size:
            raise _damaged()
        try:
            fields.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise LocalProtocolError(f"contact card's {what} is not UTF-8") from None
        pos += 1 + size
    unsigned, signature = body[:pos], body[pos:]
    if len(signature) != SIGNATURE_SIZE:
        raise _damaged()
    if not verify_signature(pubkey, _SIGN_TAG + unsigned, signature):
        raise LocalProtocolError("contact card signature does not verify: it was altered, or "
                                 "not made by the key it names")
    name, prefix, user_id = fields
    if bool(prefix) != bool(user_id):
        raise _damaged()
    return ContactCard(pubkey, name, prefix, user_id)
