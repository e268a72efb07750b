"""Strict canonical bencode (BEP3), as KRPC (BEP5) and BEP44 signatures need it.

``encode`` produces the one canonical form: dict keys are byte strings, sorted as raw
bytes. ``decode`` accepts only that form and rejects, with :class:`BencodeError`:
leading zeros (``i03e``, ``03:abc``), negative zero (``i-0e``), empty integers, unsorted or
duplicate dict keys, non-string keys, truncated input, trailing data and nesting deeper
than :data:`MAX_DEPTH`.

Decoded values are ``bytes``, ``int``, ``list`` and ``dict[bytes, ...]``. For encoding,
``str`` is accepted and written as UTF-8, tuples as lists, and ``bool`` is refused (it is
a frequent bug to encode ``True`` as ``i1e`` by accident).
"""

from __future__ import annotations

from typing import Any

from .errors import BencodeError, LocalProtocolError

__all__ = ["MAX_DEPTH", "Raw", "decode", "decode_prefix", "encode"]

#: Deepest nesting of lists/dicts ``decode`` accepts (KRPC needs 3; BEP44 values a few more).
MAX_DEPTH = 32

_DIGITS = frozenset(b"0123456789")
_MAX_INT_DIGITS = 32  # longer integers are refused (int64 needs 20)


class Raw:
    """Bytes that are already bencoded; ``encode`` splices them in unchanged.

    Used for stored BEP44 values, so a value is sent exactly as it was signed.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Raw) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Raw({self.data!r})"


def encode(obj: Any) -> bytes:
    """Return the canonical bencoding of ``obj``; raise LocalProtocolError if not encodable."""
    out: list[bytes] = []
    _encode(obj, out.append, 0)
    return b"".join(out)


def _encode(obj: Any, put: Any, depth: int) -> None:
    t = type(obj)
    if t is bytes:
        put(b"%d:" % len(obj))
        put(obj)
    elif t is int:
        put(b"i%de" % obj)
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise LocalProtocolError("bencode: nesting too deep")
        put(b"d")
        items = []
        for k, v in obj.items():
            if type(k) is str:
                k = k.encode()
            elif type(k) is not bytes:
                raise LocalProtocolError(f"bencode: dict key must be bytes or str, not {type(k).__name__}")
            items.append((k, v))
        items.sort(key=_first)
        prev = None
        for k, v in items:
            if k == prev:
                raise LocalProtocolError(f"bencode: duplicate dict key {k!r}")
            prev = k
            put(b"%d:" % len(k))
            put(k)
            _encode(v, put, depth + 1)
        put(b"e")
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise LocalProtocolError("bencode: nesting too deep")
        put(b"l")
        for v in obj:
            _encode(v, put, depth + 1)
        put(b"e")
    elif t is str:
        b = obj.encode()
        put(b"%d:" % len(b))
        put(b)
    elif t is Raw:
        put(obj.data)
    elif isinstance(obj, (bytearray, memoryview)):
        b = bytes(obj)
        put(b"%d:" % len(b))
        put(b)
    else:
        raise LocalProtocolError(f"bencode: cannot encode {t.__name__}")


def _first(item: tuple[bytes, Any]) -> bytes:
    return item[0]


def decode(data: bytes) -> Any:
    """Decode exactly one canonical bencoded value filling all of ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("bencode: decode() needs bytes")
    data = bytes(data)
    try:
        value, end = _decode(data, 0, 0)
    except IndexError:
        raise BencodeError("bencode: truncated input") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops this first
        raise BencodeError("bencode: nesting too deep") from None
    if end != len(data):
        raise BencodeError(f"bencode: {len(data) - end} bytes of trailing data")
    return value


def decode_prefix(data: bytes) -> tuple[Any, int]:
    """Decode one value at the start of ``data``; return it and the offset after it."""
    try:
        return _decode(bytes(data), 0, 0)
    except IndexError:
        raise BencodeError("bencode: truncated input") from None


def _decode(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    c = data[i]
    if c == 0x64:  # d
        if depth >= MAX_DEPTH:
            raise BencodeError("bencode: nesting too deep")
        d: dict[bytes, Any] = {}
        i += 1
        prev: bytes | None = None
        while data[i] != 0x65:  # e
            if data[i] not in _DIGITS:
                raise BencodeError("bencode: dict key is not a byte string")
            k, i = _decode_bytes(data, i)
            if prev is not None and k <= prev:
                raise BencodeError(
                    "bencode: duplicate dict key" if k == prev else "bencode: unsorted dict keys"
                )
            prev = k
            d[k], i = _decode(data, i, depth + 1)
        return d, i + 1
    if c == 0x6C:  # l
        if depth >= MAX_DEPTH:
            raise BencodeError("bencode: nesting too deep")
        lst: list[Any] = []
        i += 1
        while data[i] != 0x65:
            v, i = _decode(data, i, depth + 1)
            lst.append(v)
        return lst, i + 1
    if c == 0x69:  # i
        end = data.find(b"e", i + 1, i + 2 + _MAX_INT_DIGITS)
        if end < 0:
            raise BencodeError("bencode: unterminated or oversized integer")
        digits = data[i + 1 : end]
        if digits[:1] == b"-":
            body = digits[1:]
            if body[:1] == b"0":
                raise BencodeError("bencode: negative zero or leading zero in integer")
        else:
            body = digits
            if body[:1] == b"0" and len(body) > 1:
                raise BencodeError("bencode: leading zero in integer")
        if not body or not all(b in _DIGITS for b in body):
            raise BencodeError("bencode: malformed integer")
        return int(digits), end + 1
    if c in _DIGITS:
        return _decode_bytes(data, i)
    raise BencodeError(f"bencode: unexpected byte 0x{c:02x} at offset {i}")


def _decode_bytes(data: bytes, i: int) -> tuple[bytes, int]:
    colon = data.find(b":", i, i + 12)
    if colon < 0:
        raise BencodeError("bencode: malformed string length")
    digits = data[i:colon]
    if not digits or not all(b in _DIGITS for b in digits):
        raise BencodeError("bencode: malformed string length")
    if digits[0] == 0x30 and len(digits) > 1:
        raise BencodeError("bencode: leading zero in string length")
    n = int(digits)
    start = colon + 1
    end = start + n
    if end > len(data):
        raise BencodeError("bencode: truncated string")
    return data[start:end], end
