"""The envelope: the one format for everything sensitive that leaves a node.

Theory of operation (the byte layout and the rationale are in ``docs/envelope.md``)::

    version (1) | E (32) | box(e, R)[ S (32) | box(s, R)[ kind (1) | timestamp u32 (4)
                                                         | ttl u16 (2) | fp_len (1)
                                                         | fingerprint | body ] ]

``E`` is a fresh ephemeral X25519 key (its secret ``e`` is thrown away), ``R`` the
recipient's X25519 key, ``S`` the sender's ed25519 identity key and ``s`` the X25519
secret derived from it. Each ``box`` is libsodium's ``crypto_box`` (X25519,
XSalsa20-Poly1305, 16-byte MAC) with its nonce derived from the version, ``E`` and the
public keys, so no nonce is carried. The outer box hides who sends (a sealed box, as
``crypto_box_seal`` builds it); the inner box proves it: only the holders of ``s`` or of
``R``'s secret can compute its key. Overhead: 105 bytes + the fingerprint.

:func:`seal` makes an envelope, :func:`open_envelope` checks and opens one. Anything but a
good, fresh, first-seen envelope raises an :class:`EnvelopeError` subclass (counted in
:attr:`ReplayCache.stats`) and never any other exception: a caller handling remote input
catches ``EnvelopeError`` and drops the message. After the data channel of the session an
envelope set up opens, both sides exchange :func:`transcript_proof` and check the other's
with :func:`verify_transcript`.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public

from ..errors import (
    EnvelopeError,
    ExpiredEnvelope,
    ForgedEnvelope,
    FutureEnvelope,
    LocalProtocolError,
    MalformedEnvelope,
    ReplayedEnvelope,
    TamperedEnvelope,
    UnknownEnvelopeVersion,
    UnopenableEnvelope,
    WrongRecipient,
)
from ..identity import Identity, verify_signature, x25519_public_key
from .replay import CLOCK_SKEW, ReplayCache

__all__ = [
    "CLOCK_SKEW",
    "KIND_ANSWER",
    "KIND_CANCEL",
    "KIND_OFFER",
    "MAX_ENVELOPE",
    "OVERHEAD",
    "VERSION",
    "EnvelopeError",
    "ExpiredEnvelope",
    "ForgedEnvelope",
    "FutureEnvelope",
    "MalformedEnvelope",
    "Opened",
    "ReplayCache",
    "ReplayedEnvelope",
    "TamperedEnvelope",
    "UnknownEnvelopeVersion",
    "UnopenableEnvelope",
    "WrongRecipient",
    "open_envelope",
    "seal",
    "transcript_proof",
    "verify_transcript",
]

VERSION = 1
MAX_TTL = 0xFFFF  # seconds: the ttl field is a uint16
KIND_OFFER = 1
KIND_ANSWER = 2
#: A caller gave up before an answer; the body is the offer's reference (its first
#: 8 bytes of ephemeral key, as an answer names it). KIND_ENDPOINT is 3.
KIND_CANCEL = 4

_KEY = 32
_MAC = nacl.bindings.crypto_secretbox_MACBYTES  # 16: crypto_box is a secretbox (Poly1305)
_FIELDS = struct.Struct(">BIHB")  # kind, timestamp, ttl, fingerprint length
_OUTER_NONCE_TAG = b"hailing-env-out"
_INNER_NONCE_TAG = b"hailing-env-in"
_TRANSCRIPT_TAG = b"hailing transcript v1\x00"
MIN_SIZE = 1 + _KEY + _MAC + _KEY + _MAC + _FIELDS.size
OVERHEAD = MIN_SIZE  # bytes added to the body, fingerprint aside: 105
#: The largest envelope :func:`open_envelope` looks at: the largest any coupler carries
#: (the WebSocket relay's 64 KiB payload; a DHT inbox value is 1000 bytes, a contract
#: event 512, a data-channel signal 4096). Larger ones are refused before any copy,
#: crypto or parsing (docs/envelope.md).
MAX_ENVELOPE = 64 * 1024


# -- sealing and opening ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """An envelope that passed every check. ``sender`` is the ed25519 identity key;
    ``nonce`` the envelope's 32-byte ephemeral key, unique per envelope."""

    sender: bytes
    kind: int
    body: bytes
    timestamp: float
    expires: float
    nonce: bytes
    fingerprint: bytes | None


def _nonce(tag: bytes, *parts: bytes) -> bytes:
    return nacl.hash.blake2b(b"".join(parts), digest_size=nacl.public.Box.NONCE_SIZE,
                             person=tag, encoder=nacl.encoding.RawEncoder)


def seal(
    sender: Identity,
    recipient_pub: bytes,
    kind: int,
    body: bytes,
    *,
    now: float,
    ttl: float = 120.0,
    fingerprint: bytes | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Seal ``body`` from ``sender`` to the ed25519 key ``recipient_pub``.

    ``kind`` (0-255) tells the receiver what the body is; ``fingerprint`` is the sender's
    DTLS certificate fingerprint (raw bytes, usually 32 for sha-256) of the session the
    envelope sets up. The envelope expires ``ttl`` seconds (rounded up, at most 65535)
    after ``now`` (Unix seconds, truncated to whole seconds). ``rng`` must be a CSPRNG: it
    makes the ephemeral key, which is also the nonce (injectable for tests only).
    """
    if not isinstance(sender, Identity):
        raise LocalProtocolError("the sender is an Identity")
    recipient_x = x25519_public_key(recipient_pub)
    if not isinstance(kind, int) or not 0 <= kind <= 0xFF:
        raise LocalProtocolError("an envelope kind is an integer 0-255")
    if not isinstance(body, bytes):
        raise LocalProtocolError("an envelope body is bytes")
    fp = b"" if fingerprint is None else fingerprint
    if not isinstance(fp, bytes) or (fingerprint is not None and not 1 <= len(fp) <= 0xFF):
        raise LocalProtocolError("a fingerprint is 1-255 raw bytes (or None)")
    if not math.isfinite(now) or not 0 <= now < 2**32:
        raise LocalProtocolError("now is a Unix time in seconds (0 to 2**32)")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL:
        raise LocalProtocolError(f"an envelope ttl is more than 0 and at most {MAX_TTL} s")
    timestamp = int(now)
    inner_plain = _FIELDS.pack(kind, timestamp, math.ceil(ttl), len(fp)) + fp + body

    eph = nacl.public.PrivateKey(rng(_KEY))
    eph_pub = bytes(eph.public_key)
    version = bytes([VERSION])
    inner_nonce = _nonce(_INNER_NONCE_TAG, version, eph_pub, sender.public_key, recipient_pub)
    inner = nacl.public.Box(sender.x25519_private_key, nacl.public.PublicKey(recipient_x))
    inner_ct = inner.encrypt(inner_plain, inner_nonce).ciphertext
    outer_nonce = _nonce(_OUTER_NONCE_TAG, version, eph_pub, recipient_x)
    outer = nacl.public.Box(eph, nacl.public.PublicKey(recipient_x))
    outer_ct = outer.encrypt(sender.public_key + inner_ct, outer_nonce).ciphertext
    return version + eph_pub + outer_ct


def _open(recipient: Identity, blob: bytes, now: float, replay: ReplayCache) -> Opened:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise MalformedEnvelope(f"an envelope is bytes, not {type(blob).__name__}")
    size = blob.nbytes if isinstance(blob, memoryview) else len(blob)
    if size > MAX_ENVELOPE:  # before any copy, crypto or parsing
        exc = MalformedEnvelope(f"envelope of {size} bytes refused: at most {MAX_ENVELOPE}")
        exc.reason = "oversized"
        raise exc
    blob = bytes(blob)
    if not blob:
        raise MalformedEnvelope("empty envelope")
    if blob[0] != VERSION:
        raise UnknownEnvelopeVersion(f"unknown envelope version {blob[0]}")
    if len(blob) < MIN_SIZE:
        raise MalformedEnvelope(f"envelope truncated: {len(blob)} bytes, at least {MIN_SIZE}")
    version, eph_pub, outer_ct = blob[:1], blob[1:1 + _KEY], blob[1 + _KEY:]
    recipient_x = recipient.x25519_public_key
    try:
        outer = nacl.public.Box(recipient.x25519_private_key, nacl.public.PublicKey(eph_pub))
        plain = outer.decrypt(outer_ct, _nonce(_OUTER_NONCE_TAG, version, eph_pub, recipient_x))
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError):
        raise UnopenableEnvelope(
            "envelope does not open: sealed to another key, or changed on the way"
        ) from None
    sender, inner_ct = plain[:_KEY], plain[_KEY:]
    try:
        sender_x = x25519_public_key(sender)
        inner = nacl.public.Box(recipient.x25519_private_key, nacl.public.PublicKey(sender_x))
        inner_plain = inner.decrypt(
            inner_ct,
            _nonce(_INNER_NONCE_TAG, version, eph_pub, sender, recipient.public_key),
        )
    except (LocalProtocolError, nacl.exceptions.CryptoError, nacl.exceptions.ValueError):
        raise ForgedEnvelope("envelope forged: its sender's key did not seal it") from None
    kind, timestamp, ttl, fp_len = _FIELDS.unpack_from(inner_plain)
    rest = inner_plain[_FIELDS.size:]
    if len(rest) < fp_len:
        raise MalformedEnvelope("envelope fingerprint runs past its end")
    expires = timestamp + ttl
    if timestamp > now + CLOCK_SKEW:
        raise FutureEnvelope(f"envelope timestamped {timestamp - now:.0f} s in the future")
    if now > expires + CLOCK_SKEW:
        raise ExpiredEnvelope(f"envelope expired {now - expires:.0f} s ago")
    replay.check_and_add(sender, eph_pub, timestamp, expires, now)
    return Opened(
        sender=sender, kind=kind, body=rest[fp_len:], timestamp=float(timestamp),
        expires=float(expires), nonce=eph_pub, fingerprint=rest[:fp_len] if fp_len else None,
    )


def open_envelope(recipient: Identity, blob: bytes, *, now: float,
                  replay: ReplayCache) -> Opened:
    """Check and open an envelope sealed to ``recipient``.

    Raises an :class:`EnvelopeError` subclass, never anything else, for bytes that are not
    a good envelope; each refusal is counted in ``replay.stats`` by its ``reason``, each
    success as ``opened``. A clock difference of :data:`CLOCK_SKEW` is tolerated.
    """
    if not isinstance(now, int | float) or not math.isfinite(now):
        raise LocalProtocolError("now is a finite Unix time in seconds")
    try:
        opened = _open(recipient, blob, now, replay)
    except EnvelopeError as exc:
        replay.stats[exc.reason] += 1
        raise
    replay.stats["opened"] += 1
    return opened


# -- identity proof over the data channel ----------------------------------------------


def _transcript(signer_is_initiator: bool, signer_fp: bytes, other_fp: bytes) -> bytes:
    for fp in (signer_fp, other_fp):
        if not isinstance(fp, bytes) or not 1 <= len(fp) <= 0xFF:
            raise LocalProtocolError("a DTLS fingerprint is 1-255 raw bytes")
    init_fp, resp_fp = (signer_fp, other_fp) if signer_is_initiator else (other_fp, signer_fp)
    role = b"I" if signer_is_initiator else b"R"
    return (_TRANSCRIPT_TAG + role + bytes([len(init_fp)]) + init_fp
            + bytes([len(resp_fp)]) + resp_fp)


def transcript_proof(identity: Identity, local_fp: bytes, remote_fp: bytes,
                     initiator: bool) -> bytes:
    """The 64-byte proof that ``identity`` is the endpoint of the DTLS session with these
    fingerprints (``local_fp`` its own, ``remote_fp`` the peer's) in this role
    (``initiator``: this side sent the offer). Send it over the opened data channel."""
    return identity.sign(_transcript(bool(initiator), local_fp, remote_fp))


def verify_transcript(peer_pub: bytes, proof: bytes, local_fp: bytes, remote_fp: bytes,
                      initiator: bool) -> bool:
    """Whether ``proof`` is ``peer_pub``'s :func:`transcript_proof` for this session, seen
    from this side (``local_fp``, ``remote_fp`` and ``initiator`` are this side's own
    view). Never raises: any garbage is False."""
    try:
        transcript = _transcript(not initiator, remote_fp, local_fp)
    except LocalProtocolError:
        return False
    return verify_signature(peer_pub, transcript, proof)
