"""Strict canonical bencode (BEP3), as KRPC (BEP5) and BEP44 signatures need it.

``encode`` produces the one canonical form: dict keys are byte strings, sorted as raw
bytes. ``decode`` accepts only that form and rejects, with :class:`BencodeError`:
leading zeros (``i03e``, ``03:abc``), negative zero (``i-0e``), empty integers, unsorted or
duplicate dict keys, non-string keys, truncated input, trailing data and nesting deeper
than :data:`MAX_DEPTH`.

Decoded values are ``bytes``, ``int``, ``list`` and ``dict[bytes, ...]``. For encoding,
``str`` is accepted and written as UTF-8, tuples as lists, and ``bool`` is refused (it is
a frequent bug to encode ``True`` as ``i1e`` by accident).

``decode`` runs the maintained compiled decoder of the ``bencode2`` distribution first
(ten times faster than Python; every datagram a node receives goes through here). It is
exactly as strict as this module on form (sorted, unique string keys; no leading or
negative zeros; no trailing data) but not on size, so its result is kept only within this
module's two limits (nesting, integer digits), checked by a scan of the input and, when
the scan cannot tell, a walk of the value. Whatever it refuses, or whatever exceeds a
limit, is decoded again by the pure-Python decoder below, which gives the exact error;
so the result and the errors are those of the pure decoder (a differential test checks
it), only faster. Without ``bencode2`` the pure decoder does everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import BencodeError, LocalProtocolError

_fast_decode: Callable[[bytes], Any] | None
_fast_encode: Callable[[Any], bytes] | None
try:
    from bencode2 import bdecode as _fast_decode
    from bencode2 import bencode as _fast_encode
except ImportError:  # pragma: no cover - a dependency; the pure codec stands in
    _fast_decode = _fast_encode = None

__all__ = ["MAX_DEPTH", "Raw", "decode", "decode_prefix", "encode"]

#: Deepest nesting of lists/dicts ``decode`` accepts (KRPC needs 3; BEP44 values a few more).
MAX_DEPTH = 32

_MAX_INT_DIGITS = 32  # longer integers are refused (int64 needs 20)
_INT_LIMIT = 10**_MAX_INT_DIGITS


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
    """Return the canonical bencoding of ``obj``; raise LocalProtocolError if not encodable.

    A dict of the shape most KRPC messages have (:func:`_flat`: bytes keys; bytes,
    integers within the limit, or such dicts one level down) is encoded by the compiled
    encoder of ``bencode2``, which gives exactly these bytes for exactly such input (a
    differential test checks it) about ten times faster; anything else by the pure one."""
    if _fast_encode is not None and type(obj) is dict and _flat(obj, True):
        return _fast_encode(obj)
    out: list[bytes] = []
    _encode(obj, out, 0)
    return b"".join(out)


def _flat(d: dict[Any, Any], nested: bool) -> bool:
    for k, v in d.items():
        if type(k) is not bytes:
            return False
        t = type(v)
        if t is bytes:
            continue
        if t is int:
            if not -_INT_LIMIT < v < _INT_LIMIT:
                return False
            continue
        if t is dict and nested and _flat(v, False):
            continue
        return False
    return True


def _encode(obj: Any, out: list[bytes], depth: int) -> None:
    t = type(obj)
    if t is bytes:
        out.append(b"%d:%b" % (len(obj), obj))
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise LocalProtocolError("bencode: nesting too deep")
        out.append(b"d")
        keys = list(obj)
        if not all(type(k) is bytes for k in keys):
            obj = {_key(k): v for k, v in obj.items()}
            if len(obj) != len(keys):
                raise LocalProtocolError("bencode: duplicate dict key")
            keys = list(obj)
        keys.sort()
        append = out.append
        for k in keys:
            v = obj[k]
            tv = type(v)
            # Strings and small integers inline: most KRPC values are one of the two.
            if tv is bytes:
                append(b"%d:%b%d:%b" % (len(k), k, len(v), v))
            elif tv is int and -_INT_LIMIT < v < _INT_LIMIT:
                append(b"%d:%bi%de" % (len(k), k, v))
            else:
                append(b"%d:%b" % (len(k), k))
                _encode(v, out, depth + 1)
        append(b"e")
    elif t is int:
        if not -_INT_LIMIT < obj < _INT_LIMIT:
            raise LocalProtocolError("bencode: integer too large (decoders refuse it)")
        out.append(b"i%de" % obj)
    elif t is Raw:
        out.append(obj.data)
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise LocalProtocolError("bencode: nesting too deep")
        out.append(b"l")
        for v in obj:
            _encode(v, out, depth + 1)
        out.append(b"e")
    elif t is str:
        b = obj.encode()
        out.append(b"%d:%b" % (len(b), b))
    elif t is bytearray or t is memoryview:
        b = bytes(obj)
        out.append(b"%d:%b" % (len(b), b))
    else:
        raise LocalProtocolError(f"bencode: cannot encode {t.__name__}")


def _key(k: Any) -> bytes:
    if type(k) is str:
        return bytes(k.encode())
    if type(k) is bytes:
        return k
    raise LocalProtocolError(f"bencode: dict key must be bytes or str, not {type(k).__name__}")


#: Every byte to b" " but digits to b"0": ``_LONG_RUN in data.translate(_DIGITS)`` finds a
#: run of more digits than an accepted integer has (the input may hold an oversized one)
#: at C speed (a regular expression costs ten times as much).
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * (_MAX_INT_DIGITS + 1)


def decode(data: bytes) -> Any:
    """Decode exactly one canonical bencoded value filling all of ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("bencode: decode() needs bytes")
    data = bytes(data)
    if _fast_decode is not None:
        try:
            value = _fast_decode(data)
        except Exception:  # refused: the pure decoder says exactly why
            pass
        else:
            # Fewer container openers than MAX_DEPTH cannot nest deeper; no long run of
            # digits cannot hold a long integer. Only when a scan cannot tell, walk.
            if (data.count(b"l") + data.count(b"d") <= MAX_DEPTH
                    or _depth_ok(value)) and (
                    _LONG_RUN not in data.translate(_DIGITS) or _ints_ok(value)):
                return value
    return decode_pure(data)


def _depth_ok(value: Any) -> bool:
    """Does ``value`` nest at most MAX_DEPTH containers deep (as ``_decode`` allows)?"""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        t = type(v)
        if t is dict or t is list:
            if depth > MAX_DEPTH:
                return False
            stack.extend((x, depth + 1) for x in (v.values() if t is dict else v))
    return True


def _ints_ok(value: Any) -> bool:
    """Is every integer in ``value`` within _MAX_INT_DIGITS digits?"""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is int:
            if not -_INT_LIMIT < v < _INT_LIMIT:
                return False
        elif t is dict:
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
    return True


def decode_pure(data: bytes) -> Any:
    """:func:`decode` in pure Python only: the reference the fast path is checked against."""
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
    if 0x30 <= c <= 0x39:  # a byte string
        colon = data.find(b":", i, i + 12)
        if colon < 0:
            raise BencodeError("bencode: malformed string length")
        digits = data[i:colon]
        if not digits.isdigit() or (c == 0x30 and colon - i > 1):
            raise BencodeError("bencode: malformed string length or leading zero")
        end = colon + 1 + int(digits)
        if end > len(data):
            raise BencodeError("bencode: truncated string")
        return data[colon + 1 : end], end
    if c == 0x64:  # d
        if depth >= MAX_DEPTH:
            raise BencodeError("bencode: nesting too deep")
        d: dict[bytes, Any] = {}
        n = len(data)
        i += 1
        prev = b""
        first = True
        find = data.find
        # Keys (always strings) and string values are parsed inline: KRPC messages are
        # mostly strings, and a call per string would double the decoding time.
        while True:
            c = data[i]
            if c == 0x65:  # e
                return d, i + 1
            if not 0x30 <= c <= 0x39:
                raise BencodeError("bencode: dict key is not a byte string")
            colon = find(b":", i, i + 12)
            digits = data[i:colon]
            if colon < 0 or not digits.isdigit() or (c == 0x30 and colon - i > 1):
                raise BencodeError("bencode: malformed string length or leading zero")
            i = colon + 1 + int(digits)
            if i > n:
                raise BencodeError("bencode: truncated string")
            k = data[colon + 1 : i]
            if not first and k <= prev:
                raise BencodeError(
                    "bencode: duplicate dict key" if k == prev else "bencode: unsorted dict keys"
                )
            first = False
            prev = k
            c = data[i]
            if 0x30 <= c <= 0x39:
                colon = find(b":", i, i + 12)
                digits = data[i:colon]
                if colon < 0 or not digits.isdigit() or (c == 0x30 and colon - i > 1):
                    raise BencodeError("bencode: malformed string length or leading zero")
                i = colon + 1 + int(digits)
                if i > n:
                    raise BencodeError("bencode: truncated string")
                d[k] = data[colon + 1 : i]
            else:
                d[k], i = _decode(data, i, depth + 1)
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
        end = data.find(b"e", i + 1, i + 3 + _MAX_INT_DIGITS)  # room for the sign
        if end < 0:
            raise BencodeError("bencode: unterminated or oversized integer")
        body = data[i + 2 : end] if data[i + 1] == 0x2D else data[i + 1 : end]
        if not body.isdigit():
            raise BencodeError("bencode: malformed integer")
        if len(body) > _MAX_INT_DIGITS:
            raise BencodeError("bencode: oversized integer")
        if body[0] == 0x30 and (len(body) > 1 or end - i - 1 != len(body)):
            raise BencodeError("bencode: leading zero or negative zero in integer")
        return int(data[i + 1 : end]), end + 1
    raise BencodeError(f"bencode: unexpected byte 0x{c:02x} at offset {i}")
