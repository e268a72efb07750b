"""BEP 44 "Storing arbitrary data in the DHT": items, targets, signatures, put rules.

Immutable items are stored under the SHA-1 of their bencoded value.  Mutable items
are stored under ``sha1(k + salt)`` and carry an ed25519 signature over::

    [4:salt<len>:<salt>]3:seqi<seq>e1:v<bencoded value>

(the salt part only when the salt is non-empty).  Values are always handled in
their *verbatim* bencoded form (``value_bencoded``): BEP44 requires hashing and
verifying the bytes exactly as they appeared in the message.

This module is pure (no IO, no clock, no randomness): keys are derived from a
caller-supplied 32-byte ed25519 seed.  Ed25519 is PyNaCl (libsodium), whose
verification is stricter than some DHT implementations (it rejects small-order
public keys and non-canonical signatures); honestly generated items are unaffected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from hailing import bencode
from hailing.errors import PROTOCOL_ERROR, LocalProtocolError, PutRejected

__all__ = [
    "ERR_CAS_MISMATCH",
    "ERR_INVALID_SIGNATURE",
    "ERR_SALT_TOO_BIG",
    "ERR_SEQ_TOO_LOW",
    "ERR_VALUE_TOO_BIG",
    "MAX_SALT_SIZE",
    "MAX_SEQ",
    "MAX_VALUE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "ImmutableItem",
    "MutableItem",
    "PutRejected",
    "check_put",
    "immutable_target",
    "mutable_target",
    "public_key",
    "sign",
    "signature_buffer",
    "verify",
]

MAX_VALUE_SIZE: Final = 1000  # BEP44: v must be <= 1000 bytes bencoded
MAX_SALT_SIZE: Final = 64  # BEP44: the salt string MUST NOT be longer than 64 bytes
MAX_SEQ: Final = 0x7FFF_FFFF_FFFF_FFFF  # BEP44: seq SHOULD not exceed MAX_INT64
PUBLIC_KEY_SIZE: Final = 32  # BEP44: k is a 32 byte ed25519 public key
SIGNATURE_SIZE: Final = 64  # BEP44: sig is a 64 byte ed25519 signature
SEED_SIZE: Final = 32  # ed25519 (RFC 8032) private key seed

ERR_VALUE_TOO_BIG: Final = 205  # BEP44: message (v field) too big
ERR_INVALID_SIGNATURE: Final = 206  # BEP44: invalid signature
ERR_SALT_TOO_BIG: Final = 207  # BEP44: salt (salt field) too big
ERR_CAS_MISMATCH: Final = 301  # BEP44: the CAS hash mismatched, re-read value and try again
ERR_SEQ_TOO_LOW: Final = 302  # BEP44: sequence number less than current


def immutable_target(v_bencoded: bytes) -> bytes:
    """Return the BEP44 target of an immutable item: SHA-1 of its bencoded value."""
    return hashlib.sha1(v_bencoded).digest()


def mutable_target(pubkey: bytes, salt: bytes = b"") -> bytes:
    """Return the BEP44 target of a mutable item: ``sha1(k + salt)``."""
    return hashlib.sha1(pubkey + salt).digest()


def signature_buffer(salt: bytes, seq: int, v_bencoded: bytes) -> bytes:
    """Return the exact bytes BEP44 signs: ``[4:salt<n>:<salt>]3:seqi<seq>e1:v<v>``.

    The salt part is present only when ``salt`` is non-empty (BEP44: an empty salt
    is as if it was not specified).
    """
    salt_part = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return b"%s3:seqi%de1:v%s" % (salt_part, seq, v_bencoded)


def public_key(seed: bytes) -> bytes:
    """Return the 32-byte ed25519 public key for a 32-byte ``seed``.

    Raises :class:`LocalProtocolError` if ``seed`` is not 32 bytes.
    """
    return bytes(_signing_key(seed).verify_key)


def sign(seed: bytes, salt: bytes, seq: int, v_bencoded: bytes) -> bytes:
    """Return the 64-byte ed25519 signature of the BEP44 buffer for these fields.

    Raises :class:`LocalProtocolError` if ``seed`` is not 32 bytes.
    """
    signed = _signing_key(seed).sign(signature_buffer(salt, seq, v_bencoded))
    return bytes(signed.signature)


def verify(pubkey: bytes, sig: bytes, salt: bytes, seq: int, v_bencoded: bytes) -> bool:
    """Return whether ``sig`` is ``pubkey``'s valid signature over these fields.

    Never raises on garbage: wrong key or signature lengths, invalid curve points and
    non-bytes arguments all give ``False``.
    """
    if not isinstance(pubkey, bytes) or not isinstance(sig, bytes):
        return False
    if len(pubkey) != PUBLIC_KEY_SIZE or len(sig) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(pubkey).verify(signature_buffer(salt, seq, v_bencoded), sig)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _signing_key(seed: bytes) -> SigningKey:
    """Return the PyNaCl signing key for ``seed``, refusing anything but 32 bytes."""
    if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
        raise LocalProtocolError(f"ed25519 seed must be {SEED_SIZE} bytes")
    return SigningKey(seed)


@dataclass(frozen=True, slots=True)
class MutableItem:
    """A BEP44 mutable item, holding its value in verbatim bencoded form."""

    pubkey: bytes
    salt: bytes
    seq: int
    value_bencoded: bytes
    sig: bytes

    @property
    def target(self) -> bytes:
        """The DHT key this item is stored under: ``sha1(pubkey + salt)``."""
        return mutable_target(self.pubkey, self.salt)

    @property
    def value(self) -> object:
        """The decoded value (raises :class:`~hailing.errors.BencodeError` if malformed)."""
        decoded: object = bencode.decode(self.value_bencoded)
        return decoded

    @classmethod
    def create(cls, seed: bytes, value: object, salt: bytes = b"", seq: int = 1) -> MutableItem:
        """Bencode ``value`` and sign it with ``seed`` into a new item.

        Raises :class:`LocalProtocolError` if the value is not encodable or, once
        encoded, larger than :data:`MAX_VALUE_SIZE`, if ``salt`` is longer than
        :data:`MAX_SALT_SIZE`, if ``seq`` is outside ``0..MAX_SEQ`` or if ``seed`` is
        not 32 bytes: storing nodes would reject such an item.
        """
        v = bencode.encode(value)
        if len(v) > MAX_VALUE_SIZE:
            raise LocalProtocolError(f"value is {len(v)} bytes bencoded, max {MAX_VALUE_SIZE}")
        if len(salt) > MAX_SALT_SIZE:
            raise LocalProtocolError(f"salt is {len(salt)} bytes, max {MAX_SALT_SIZE}")
        if not 0 <= seq <= MAX_SEQ:
            raise LocalProtocolError(f"seq must be in 0..{MAX_SEQ}, got {seq}")
        return cls(
            pubkey=public_key(seed),
            salt=bytes(salt),
            seq=seq,
            value_bencoded=v,
            sig=sign(seed, salt, seq, v),
        )

    def is_valid(self) -> bool:
        """Return whether the signature verifies (size limits are :func:`check_put`'s)."""
        return verify(self.pubkey, self.sig, self.salt, self.seq, self.value_bencoded)


@dataclass(frozen=True, slots=True)
class ImmutableItem:
    """A BEP44 immutable item, holding its value in verbatim bencoded form."""

    value_bencoded: bytes

    @property
    def target(self) -> bytes:
        """The DHT key this item is stored under: SHA-1 of the bencoded value."""
        return immutable_target(self.value_bencoded)

    @property
    def value(self) -> object:
        """The decoded value (raises :class:`~hailing.errors.BencodeError` if malformed)."""
        decoded: object = bencode.decode(self.value_bencoded)
        return decoded


def check_put(existing: MutableItem | None, new: MutableItem, cas: int | None) -> None:
    """Decide whether a storing node accepts mutable item ``new``; raise if not.

    ``existing`` is the item currently stored under the same target (or ``None``),
    ``cas`` the put's optional ``cas`` field.  Checks, in libtorrent's order:

    * bencoded value empty or over 1000 bytes: 205;
    * salt over 64 bytes: 207;
    * seq negative or over MAX_INT64 (BEP44 "MAY reject"): 203, as libtorrent;
    * signature invalid: 206;
    * with a stored item only (BEP44: otherwise ``cas`` SHOULD be ignored):
      ``cas`` given and not the stored seq: 301; seq lower than stored: 302;
      seq equal to stored but a different value: 302 (BEP44 "MUST reject" seq
      lower than *or equal*; libtorrent silently keeps the old value instead).

    Returning normally means accept; if the seq and value equal the stored ones the
    put is a refresh (BEP44: the node SHOULD reset its timeout).  Raises
    :class:`LocalProtocolError` if ``existing`` is stored under another target.
    """
    if not new.value_bencoded or len(new.value_bencoded) > MAX_VALUE_SIZE:
        raise PutRejected(ERR_VALUE_TOO_BIG, "message (v field) too big")
    if len(new.salt) > MAX_SALT_SIZE:
        raise PutRejected(ERR_SALT_TOO_BIG, "salt (salt field) too big")
    if not 0 <= new.seq <= MAX_SEQ:
        raise PutRejected(PROTOCOL_ERROR, "invalid sequence number")
    if not new.is_valid():
        raise PutRejected(ERR_INVALID_SIGNATURE, "invalid signature")
    if existing is None:
        return
    if existing.target != new.target:
        raise LocalProtocolError("check_put: existing item is stored under another target")
    if cas is not None and cas != existing.seq:
        raise PutRejected(ERR_CAS_MISMATCH, "CAS mismatch")
    if new.seq < existing.seq:
        raise PutRejected(ERR_SEQ_TOO_LOW, "sequence number less than current")
    if new.seq == existing.seq and new.value_bencoded != existing.value_bencoded:
        raise PutRejected(ERR_SEQ_TOO_LOW, "sequence number not greater than current")


def store_args(item: ImmutableItem | MutableItem) -> tuple[bytes, dict[bytes, Any]]:
    """The method and arguments of the ``put`` that stores ``item`` (token and id are
    added per storing node)."""
    args: dict[bytes, Any] = {b"v": bencode.Raw(item.value_bencoded)}
    if isinstance(item, MutableItem):
        args[b"k"] = item.pubkey
        args[b"seq"] = item.seq
        args[b"sig"] = item.sig
        if item.salt:
            args[b"salt"] = item.salt
    return b"put", args
