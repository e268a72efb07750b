"""The SDP inside an offer or answer envelope: compact when it can be, deflated otherwise.

A data-channel-only description travels in the compact binary form of
:mod:`hailing.signaling.sdp` (about 100 bytes; its first byte is the codec version, 1).
A description the compact form cannot carry (media tracks added before the offer, more
candidates than it holds) travels as its SDP text deflated with a preset dictionary of
SDP (:mod:`hailing.signaling.sdp_text`, first byte 2: a browser's audio, video and data
offer in about 480 bytes instead of 6.9 KB, so it fits a DHT value); the envelope's kind
says whether it is an offer or an answer. Plain SDP text (UTF-8, starting with ``v=0``)
is still accepted from a peer. A coupler whose ``max_blob`` is too small for a body is
skipped.

Either way the DTLS fingerprint comes out of the authenticated body, binding the session
to the identity that sealed the envelope. Remote bytes that are neither raise
:class:`~hailing.signaling.sdp.SdpError`.

An offer's body may start with **extensions** (:func:`offer_body`,
:func:`split_offer_body`; docs/envelope.md "Offer extensions"): byte 3 (no description
starts with it), a length byte, then (type, length, value) triples, then the
description. Type 1 is the *reply hint*: bytes from the coupler that carries the offer
telling the callee's coupler how to send the answer straight back (the DHT coupler's: a
direct push token and the caller's node address). Unknown types are skipped, so later
extensions do not break this reader.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from ..errors import LocalProtocolError
from ..signaling import sdp_text
from ..signaling.sdp import SdpError, decode_sdp, encode_sdp, fingerprint_of

if TYPE_CHECKING:
    from aiortc import RTCSessionDescription

__all__ = ["EXT_REPLY_HINT", "MAX_TEXT_SDP", "OFFER_EXTENSIONS", "decode_description",
           "description_fingerprint", "encode_description", "offer_body", "split_offer_body"]

#: The largest SDP text accepted in an envelope.
MAX_TEXT_SDP = sdp_text.MAX_TEXT
_TEXT = b"v=0"
#: The first byte of an offer body that carries extensions before its description.
OFFER_EXTENSIONS = 3
#: Extension type: the caller's reply hint (opaque to the session; its coupler's).
EXT_REPLY_HINT = 1
_FINGERPRINT = re.compile(r"^a=fingerprint:sha-256 ((?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2})\s*$",
                          re.MULTILINE)


def encode_description(description: RTCSessionDescription) -> bytes:
    """The envelope body for a local description (after ICE gathering)."""
    try:
        return encode_sdp(description)
    except LocalProtocolError:
        text = description.sdp.encode()
        if not text.startswith(_TEXT) or len(text) > MAX_TEXT_SDP:
            raise
        return sdp_text.pack_sdp_text(description.sdp)


def _is_text(body: bytes) -> bool:
    return body.startswith(_TEXT) or body[:1] == bytes([sdp_text.FORMAT])


def _text(body: bytes) -> str:
    if body[:1] == bytes([sdp_text.FORMAT]):
        return sdp_text.unpack_sdp_text(body)
    if len(body) > MAX_TEXT_SDP:
        raise SdpError(f"an SDP text of {len(body)} bytes is too long")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("an SDP text is not UTF-8") from None


def description_fingerprint(body: bytes) -> bytes:
    """The raw sha-256 DTLS fingerprint in an envelope body; SdpError if none (or two)."""
    if not _is_text(body):
        return fingerprint_of(body)
    found = {m.replace(":", "").lower() for m in _FINGERPRINT.findall(_text(body))}
    if len(found) != 1:
        raise SdpError(f"need exactly one sha-256 fingerprint, found {len(found)}")
    return bytes.fromhex(found.pop())


def decode_description(body: bytes,
                       kind: Literal["offer", "answer"]) -> RTCSessionDescription:
    """The description to give aiortc. The compact form carries its own type (a remote
    peer can lie about it: aiortc then refuses it, and the session drops the call)."""
    if not _is_text(body):
        return decode_sdp(body)
    from aiortc import RTCSessionDescription

    return RTCSessionDescription(sdp=_text(body), type=kind)


def offer_body(description: bytes, reply_hint: bytes | None = None) -> bytes:
    """An offer's envelope body: ``description``, after the reply hint if there is one."""
    if not reply_hint:
        return description
    if len(reply_hint) > 253:
        raise LocalProtocolError(f"a reply hint of {len(reply_hint)} bytes is too long")
    ext = bytes([EXT_REPLY_HINT, len(reply_hint)]) + reply_hint
    return bytes([OFFER_EXTENSIONS, len(ext)]) + ext + description


def split_offer_body(body: bytes) -> tuple[bytes, bytes | None]:
    """(description, reply hint or None) of an offer's body, with or without extensions;
    SdpError for extensions that do not parse (truncated, empty, a type twice)."""
    if body[:1] != bytes([OFFER_EXTENSIONS]):
        return body, None
    if len(body) < 2:
        raise SdpError("an offer's extensions are truncated")
    end = 2 + body[1]
    if body[1] < 2 or len(body) <= end:
        raise SdpError("an offer's extensions are empty, truncated or hide its description")
    seen: dict[int, bytes] = {}
    pos = 2
    while pos < end:
        if pos + 2 > end or pos + 2 + body[pos + 1] > end:
            raise SdpError("an offer extension runs past the extensions")
        kind, size = body[pos], body[pos + 1]
        if kind in seen:
            raise SdpError(f"offer extension {kind} appears twice")
        seen[kind] = body[pos + 2 : pos + 2 + size]
        pos += 2 + size
    hint = seen.get(EXT_REPLY_HINT)
    if hint is not None and not hint:
        raise SdpError("an empty reply hint")
    return body[end:], hint
