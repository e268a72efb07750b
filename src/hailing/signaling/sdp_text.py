"""Any SDP text in a few hundred bytes: DEFLATE with a preset dictionary of SDP itself.

The compact binary form (:mod:`hailing.signaling.sdp`) carries only a data-channel
description. A call with audio and video has a browser's full SDP: 5-7 KB of text, more
than a DHT value (1,000 bytes) holds, about 1.6 KB even deflated. Most of that text is the
same in every session (attribute names, codec lines, header-extension URIs); what
changes is a handful of tokens (ICE credentials, the fingerprint, SSRCs, stream ids,
candidates). Deflated with a *preset dictionary* made of those common lines, a Chrome
offer with audio, video and a data channel takes about 450 bytes, its answer about 380
(``tests/test_sdp_text.py`` measures captured descriptions). Lossless: the peer gets
back exactly the SDP text the other side produced, so no browser ever sees a munged
description, whatever its version or codecs.

Wire format::

    u8   FORMAT = 2 (deflated SDP text, dictionary version 1)
    raw DEFLATE stream (RFC 1951, no zlib header) of the SDP text's UTF-8 bytes,
         compressed with DICTIONARY as its preset dictionary

Decoding inflates at most :data:`MAX_TEXT` bytes (a small blob cannot expand into a
large allocation), requires the stream to end exactly where the blob ends, and the text
to be UTF-8 starting with ``v=0``; anything else raises
:class:`~hailing.errors.SdpError`. The dictionary is part of the format: changing it
takes a new format byte, and the old one must stay decodable.
"""

from __future__ import annotations

import zlib

from hailing.errors import LocalProtocolError, SdpError

from ._sdp_dictionary import DICTIONARY_V1

__all__ = ["DICTIONARY", "FORMAT", "MAX_TEXT", "pack_sdp_text", "unpack_sdp_text"]

#: The first byte of a deflated SDP text (the compact form's is 1; SDP text's is "v").
FORMAT = 2
#: The longest SDP text packed or unpacked.
MAX_TEXT = 16 * 1024

#: The preset dictionary, format 2 (version 1; :mod:`._sdp_dictionary`).
DICTIONARY = DICTIONARY_V1


def pack_sdp_text(sdp: str) -> bytes:
    """The format-2 blob for an SDP text; LocalProtocolError for one that is not SDP
    (not starting with ``v=0``) or longer than :data:`MAX_TEXT`."""
    raw = sdp.encode("utf-8")
    if not raw.startswith(b"v=0") or len(raw) > MAX_TEXT:
        raise LocalProtocolError(f"not an SDP text of at most {MAX_TEXT} bytes")
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)
    return bytes([FORMAT]) + c.compress(raw) + c.flush()


def unpack_sdp_text(blob: bytes) -> str:
    """The SDP text in a format-2 blob; SdpError for anything else."""
    if not blob or blob[0] != FORMAT:
        raise SdpError("not a deflated SDP text (format byte)")
    d = zlib.decompressobj(-15, zdict=DICTIONARY)
    try:
        raw = d.decompress(blob[1:], MAX_TEXT + 1)
    except zlib.error as exc:
        raise SdpError(f"a deflated SDP text is corrupt: {exc}") from None
    if len(raw) > MAX_TEXT or d.unconsumed_tail:
        raise SdpError(f"a deflated SDP text inflates past {MAX_TEXT} bytes")
    if not d.eof:
        raise SdpError("a deflated SDP text is truncated")
    if d.unused_data:
        raise SdpError(f"{len(d.unused_data)} bytes after a deflated SDP text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("a deflated SDP text is not UTF-8") from None
    if not text.startswith("v=0"):
        raise SdpError("a deflated SDP text does not start with v=0")
    return text
