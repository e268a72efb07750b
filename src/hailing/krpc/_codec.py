"""Strict KRPC codec: bytes <-> :mod:`._messages`.

``decode_message`` raises :class:`~hailing.errors.RemoteProtocolError` for anything that
is not a well-formed KRPC message, with ``tid`` set on the exception when the transaction
id could be read (so the caller can still send an error reply, BEP5 code 203).
"""

from __future__ import annotations

from typing import Any

from .. import bencode
from ..errors import BencodeError, MalformedMessage
from ._messages import Error, Message, Query, Response

#: Longest transaction id accepted. BEP5 leaves the length open; real clients use 2-4 bytes.
MAX_TID = 16
#: Longest datagram a node will parse (Mainline messages fit in ~1,500 bytes).
MAX_DATAGRAM = 4096


def encode_message(msg: Message) -> bytes:
    """Encode a message; dict keys come out sorted, as bencode demands."""
    d: dict[bytes, Any]
    if type(msg) is Query:
        a = msg.args
        d = {b"a": a, b"q": msg.method, b"t": msg.tid, b"y": b"q"}
        if msg.ro:
            d[b"ro"] = 1
    elif type(msg) is Response:
        d = {b"r": msg.values, b"t": msg.tid, b"y": b"r"}
        if msg.ip is not None:
            d[b"ip"] = msg.ip
    else:
        assert isinstance(msg, Error)
        d = {b"e": [msg.code, msg.message.encode("utf-8", "replace")], b"t": msg.tid, b"y": b"e"}
    if msg.version is not None:
        d[b"v"] = msg.version
    return bencode.encode(d)


def decode_message(data: bytes) -> Message:
    """Decode one datagram into a Query, Response or Error, or raise MalformedMessage."""
    if len(data) > MAX_DATAGRAM:
        raise MalformedMessage("datagram too large")
    try:
        d = bencode.decode(data)
    except BencodeError as exc:
        raise MalformedMessage(str(exc)) from None
    if type(d) is not dict:
        raise MalformedMessage("KRPC message is not a dictionary")
    tid = d.get(b"t")
    if type(tid) is not bytes or not 0 < len(tid) <= MAX_TID:
        raise MalformedMessage("missing or invalid transaction id")
    version = d.get(b"v")
    if version is not None and type(version) is not bytes:
        version = None
    y = d.get(b"y")
    if y == b"q":
        method = d.get(b"q")
        args = d.get(b"a")
        if type(method) is not bytes or not method:
            raise MalformedMessage("query without method name", tid)
        if type(args) is not dict:
            raise MalformedMessage("query without argument dictionary", tid)
        sid = args.get(b"id")
        if type(sid) is not bytes or len(sid) != 20:
            raise MalformedMessage("query without a valid 20-byte id", tid)
        return Query(tid, method, args, version, d.get(b"ro") == 1)
    if y == b"r":
        r = d.get(b"r")
        if type(r) is not dict:
            raise MalformedMessage("response without value dictionary", tid)
        sid = r.get(b"id")
        if type(sid) is not bytes or len(sid) != 20:
            raise MalformedMessage("response without a valid 20-byte id", tid)
        ip = d.get(b"ip")
        if ip is not None and (type(ip) is not bytes or len(ip) not in (6, 18)):
            ip = None
        return Response(tid, r, version, ip)
    if y == b"e":
        e = d.get(b"e")
        if (
            type(e) is not list
            or len(e) < 2
            or type(e[0]) is not int
            or type(e[1]) is not bytes
        ):
            raise MalformedMessage("malformed error message", tid)
        return Error(tid, e[0], e[1].decode("utf-8", "replace")[:200], version)
    raise MalformedMessage("unknown message type", tid)
