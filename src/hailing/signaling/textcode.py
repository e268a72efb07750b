"""Sealed envelopes as short texts to copy and paste (or scan as a QR code).

The text coupler (:mod:`hailing.session.text_coupler`) carries an offer and its answer
through a person: one side prints a text, someone copies it (a chat, an e-mail, a QR
code on a screen) and pastes it on the other side. This module is only the text form;
what travels is an ordinary sealed envelope (:mod:`hailing.signaling.envelope`), so the
text says nothing to whoever sees it but that it is a hailing offer or answer.

Two forms of the same bytes, both read by :func:`decode_text`::

    hailing:1:K:BASE64URL        the text to copy (no padding, no spaces: one "word"
                                 a terminal, a shell or a chat keeps whole)
    HAILING:1:K:BASE45           the QR code's (RFC 9285 base45: QR's alphanumeric
                                 mode, 5.5 bits a character instead of 8)

``1`` is the format version, ``K`` the kind (``o`` an offer, ``a`` an answer; upper
case in the QR form), and the encoded bytes are the envelope followed by a CRC-32
(big-endian) of ``b"hailing:1:" + kind + envelope``. CRC-32 catches every error that
spans at most 32 bits, so any one mistyped or changed character (6 bits in base64, a
16-bit group in base45) and any swapped kind letter is reported as a typing error,
never passed on; the envelope's own MAC catches the rest. Only the canonical encoding
is accepted (base64 without stray bits, base45 groups in range), so a text decodes to
exactly one envelope. In the QR form the base45 text has spaces of its own: only line
breaks, tabs and the ends are trimmed from it; from the copy form all white space is
(a mail program may wrap it).

Measured (``benchmarks/text_sizes.py``, a data-channel offer on loopback, one host
candidate): the 175-byte offer envelope is a 251-character text; its QR code (error
correction M) is version 11 (61 x 61 modules) as that base64url text in byte mode and
version 10 (57 x 57) as base45 in alphanumeric mode; the 183-byte answer, version 12
against 10. So the QR code carries the base45 form, and the copy form stays base64url,
whose text is 11 % shorter and has no character a shell or a chat mangles.

Errors are :class:`~hailing.errors.LocalProtocolError` with one line saying what is
wrong (a text is something a user pasted): not a hailing text, an unknown version, the
wrong kind (an answer pasted where an offer goes), too long, or mistyped.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from typing import Literal

from ..errors import LocalProtocolError

__all__ = ["KINDS", "MAX_ENVELOPE", "MAX_TEXT", "PREFIX", "QR_PREFIX", "TextKind",
           "b45decode", "b45encode", "decode_text", "encode_text", "qr_text", "text_kind"]

TextKind = Literal["offer", "answer"]
#: The kind letters.
KINDS: dict[TextKind, str] = {"offer": "o", "answer": "a"}
_KIND_OF = {v: k for k, v in KINDS.items()}
VERSION = 1
PREFIX = f"hailing:{VERSION}:"
QR_PREFIX = PREFIX.upper()
#: The largest envelope a text carries (a data-channel signal's limit: an offer with
#: many candidates is well under it).
MAX_ENVELOPE = 4096
_CHECK = 4
#: The longest text read (the base45 form of the largest envelope, and some slack for
#: white space around it); anything longer is refused before decoding.
MAX_TEXT = len(QR_PREFIX) + 2 + (MAX_ENVELOPE + _CHECK) * 3 // 2 + 2 + 256

_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_INDEX = {c: i for i, c in enumerate(_B45)}
_B64 = re.compile(r"[A-Za-z0-9_-]*")
_WRAPS = str.maketrans("", "", "\r\n\t")


def _check(kind_letter: str, blob: bytes) -> bytes:
    return zlib.crc32(blob, zlib.crc32(f"{PREFIX}{kind_letter}".encode())).to_bytes(_CHECK, "big")


def encode_text(blob: bytes, kind: TextKind) -> str:
    """The text to copy for the sealed envelope ``blob`` of ``kind``."""
    letter = _letter(kind)
    _check_size(blob)
    data = base64.urlsafe_b64encode(blob + _check(letter, blob)).rstrip(b"=").decode()
    return f"{PREFIX}{letter}:{data}"


def qr_text(blob: bytes, kind: TextKind) -> str:
    """The same envelope in the QR code's form (upper case, base45: alphanumeric mode)."""
    letter = _letter(kind)
    _check_size(blob)
    return f"{QR_PREFIX}{letter.upper()}:{b45encode(blob + _check(letter, blob))}"


def text_kind(text: str) -> TextKind:
    """Which kind of text ``text`` is (``offer`` or ``answer``), before decoding it."""
    return _split(text)[1]


def decode_text(text: str, expect: TextKind | None = None) -> bytes:
    """The sealed envelope in ``text`` (either form). ``expect``: the kind it must be
    (an answer pasted as an offer is a clear error). LocalProtocolError, one line,
    for anything else (see the module docstring)."""
    qr, kind, body = _split(text)
    if expect is not None and kind != expect:
        raise LocalProtocolError(f"this is an {kind} text, not an {expect} text")
    letter = KINDS[kind]
    try:
        data = b45decode(body) if qr else _b64decode(body)
    except ValueError:
        raise LocalProtocolError(_mistyped(kind)) from None
    blob, check = data[:-_CHECK], data[-_CHECK:]
    if len(data) <= _CHECK or check != _check(letter, blob):
        raise LocalProtocolError(_mistyped(kind))
    if len(blob) > MAX_ENVELOPE:
        raise LocalProtocolError(f"this {kind} text is too long (at most {MAX_ENVELOPE} "
                                 "bytes of envelope)")
    return blob


def _split(text: str) -> tuple[bool, TextKind, str]:
    if not isinstance(text, str):
        raise LocalProtocolError("a hailing text is text")
    if len(text) > MAX_TEXT:
        raise LocalProtocolError(f"too long for a hailing text ({len(text)} characters, "
                                 f"at most {MAX_TEXT})")
    text = text.strip()
    qr = text.startswith(QR_PREFIX)
    if not qr and not text.startswith(PREFIX):
        if text.lower().startswith("hailing:") and text[8:9].isdigit():
            raise LocalProtocolError("this hailing text has a format version this "
                                     f"version of hailing does not read (it reads {VERSION})")
        raise LocalProtocolError("not a hailing text (it starts with 'hailing:1:')")
    rest = text[len(PREFIX):]
    letter, sep, body = rest.partition(":")
    kind = _KIND_OF.get(letter.lower() if qr else letter)
    if not sep or kind is None or (qr and letter != letter.upper()):
        raise LocalProtocolError("not a hailing text: after 'hailing:1:' comes 'o:' (an "
                                 "offer) or 'a:' (an answer)")
    body = body.translate(_WRAPS) if qr else "".join(body.split())
    return qr, kind, body


def _mistyped(kind: str) -> str:
    return (f"this {kind} text is damaged (a character changed, missing or added on the "
            "way): copy it again, whole")


def _letter(kind: TextKind) -> str:
    letter = KINDS.get(kind)
    if letter is None:
        raise LocalProtocolError(f"a text is an offer or an answer, not {kind!r}")
    return letter


def _check_size(blob: bytes) -> None:
    if not 0 < len(blob) <= MAX_ENVELOPE:
        raise LocalProtocolError(f"a {len(blob)}-byte envelope does not fit a text "
                                 f"(1 to {MAX_ENVELOPE} bytes)")


def _b64decode(body: str) -> bytes:
    """Canonical base64url without padding: anything else is ValueError."""
    if _B64.fullmatch(body) is None or len(body) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != body:
        raise ValueError("not canonical")  # stray low bits in the last character
    return data


def b45encode(data: bytes) -> str:
    """RFC 9285 base45."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (_B45[c], _B45[d], _B45[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (_B45[c], _B45[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """RFC 9285 base45; ValueError for a character outside the alphabet, a dangling
    character, or a group out of range (so every byte string has one encoding)."""
    try:
        values = [_B45_INDEX[c] for c in text]
    except KeyError:
        raise ValueError("not base45") from None
    if len(values) % 3 == 1:
        raise ValueError("not base45: a dangling character")
    out = bytearray()
    for i in range(0, len(values), 3):
        group = values[i:i + 3]
        if len(group) == 3:
            n = group[0] + group[1] * 45 + group[2] * 45 * 45
            if n > 0xFFFF:
                raise ValueError("not base45: a group out of range")
            out += n.to_bytes(2, "big")
        else:
            n = group[0] + group[1] * 45
            if n > 0xFF:
                raise ValueError("not base45: a group out of range")
            out.append(n)
    return bytes(out)
