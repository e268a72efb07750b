"""KRPC codec (BEP5 messages, BEP43 ``ro``, BEP42 ``ip``) and compact node info (BEP5/32)."""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing import bencode
from hailing.errors import RemoteProtocolError
from hailing.krpc import (
    COMPACT_NODE_V4,
    COMPACT_NODE_V6,
    Error,
    IPAddressCodec,
    Query,
    Response,
    decode_message,
    decode_nodes,
    encode_message,
    encode_nodes,
)
from hailing.krpc._codec import MAX_DATAGRAM, MAX_TID, MalformedMessage

A = b"abcdefghij0123456789"
B = b"mnopqrstuvwxyz123456"

# -- BEP5's example messages ("KRPC Protocol" and "DHT Queries" sections) -----------------

BEP5_EXAMPLES: list[tuple[bytes, Query | Response | Error]] = [
    (
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        Error(b"aa", 201, "A Generic Error Ocurred"),
    ),
    (
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        Query(b"aa", b"ping", {b"id": A}),
    ),
    (b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re", Response(b"aa", {b"id": B})),
    (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        Query(b"aa", b"find_node", {b"id": A, b"target": B}),
    ),
    (
        b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re",
        Response(b"aa", {b"id": b"0123456789abcdefghij", b"nodes": b"def456..."}),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        Query(b"aa", b"get_peers", {b"id": A, b"info_hash": B}),
    ),
    (
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        Response(b"aa", {b"id": A, b"token": b"aoeusnth", b"values": [b"axje.u", b"idhtnm"]}),
    ),
    (
        b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re",
        Response(b"aa", {b"id": A, b"nodes": b"def456...", b"token": b"aoeusnth"}),
    ),
    (
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
        b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        Query(
            b"aa",
            b"announce_peer",
            {b"id": A, b"implied_port": 1, b"info_hash": B, b"port": 6881, b"token": b"aoeusnth"},
        ),
    ),
]


@pytest.mark.parametrize(("wire", "message"), BEP5_EXAMPLES)
def test_bep5_examples_decode(wire: bytes, message: Any) -> None:
    assert decode_message(wire) == message


@pytest.mark.parametrize(("wire", "message"), BEP5_EXAMPLES)
def test_bep5_examples_encode(wire: bytes, message: Any) -> None:
    assert encode_message(message) == wire


def test_bep5_values_are_compact_peers() -> None:
    msg = decode_message(BEP5_EXAMPLES[6][0])
    assert isinstance(msg, Response)
    codec = IPAddressCodec()
    assert [codec.unpack(v) for v in msg.values[b"values"]] == [
        ("97.120.106.101", 11893),
        ("105.100.104.116", 28269),
    ]


def test_sender_id() -> None:
    q = decode_message(BEP5_EXAMPLES[1][0])
    r = decode_message(BEP5_EXAMPLES[2][0])
    assert isinstance(q, Query) and isinstance(r, Response)
    assert q.sender_id == A
    assert r.sender_id == B


# -- optional fields: v, ro (BEP43), ip (BEP42) -------------------------------------------


def test_query_with_version_and_read_only() -> None:
    q = Query(b"t1", b"ping", {b"id": A}, b"HL\x00\x01", True)
    wire = encode_message(q)
    assert wire == b"d1:ad2:id20:" + A + b"e1:q4:ping2:roi1e1:t2:t11:v4:HL\x00\x011:y1:qe"
    assert decode_message(wire) == q


def test_ro_only_written_when_set() -> None:
    wire = encode_message(Query(b"t1", b"ping", {b"id": A}))
    assert b"2:ro" not in wire and b"1:v" not in wire
    assert decode_message(wire) == Query(b"t1", b"ping", {b"id": A}, None, False)


@pytest.mark.parametrize("ro", [b"i0e", b"i2e", b"1:1", b"le"])
def test_ro_other_than_1_is_not_read_only(ro: bytes) -> None:
    wire = b"d1:ad2:id20:" + A + b"e1:q4:ping2:ro" + ro + b"1:t2:aa1:y1:qe"
    msg = decode_message(wire)
    assert isinstance(msg, Query) and msg.ro is False


def test_response_with_ip_and_version() -> None:
    ip = bytes([1, 2, 3, 4, 0x1A, 0xE1])
    r = Response(b"xy", {b"id": B}, b"UT\x01\x02", ip)
    wire = encode_message(r)
    assert wire == b"d2:ip6:" + ip + b"1:rd2:id20:" + B + b"e1:t2:xy1:v4:UT\x01\x021:y1:re"
    assert decode_message(wire) == r


def test_response_with_ipv6_ip() -> None:
    ip = bytes(range(16)) + b"\x1a\xe1"
    r = Response(b"xy", {b"id": B}, None, ip)
    assert decode_message(encode_message(r)) == r


@pytest.mark.parametrize("ip", [b"i1e", b"5:abcde", b"0:", b"le"])
def test_unusable_ip_is_ignored(ip: bytes) -> None:
    wire = b"d2:ip" + ip + b"1:rd2:id20:" + B + b"e1:t2:xy1:y1:re"
    msg = decode_message(wire)
    assert isinstance(msg, Response) and msg.ip is None and msg.sender_id == B


def test_non_string_version_is_ignored() -> None:
    wire = b"d1:rd2:id20:" + B + b"e1:t2:xy1:vi5e1:y1:re"
    msg = decode_message(wire)
    assert isinstance(msg, Response) and msg.version is None


def test_error_round_trip_and_unicode() -> None:
    e = Error(b"\x00\x01", 204, "Method Unknown \u00e9", b"LT\x01\x00")
    assert decode_message(encode_message(e)) == e
    # invalid UTF-8 from a peer is replaced, never raised
    wire = b"d1:eli203e2:\xff\xfee1:t1:x1:y1:ee"
    assert decode_message(wire) == Error(b"x", 203, "\ufffd\ufffd")
    # long messages are cut
    long = bencode.encode({b"e": [201, b"x" * 1000], b"t": b"x", b"y": b"e"})
    msg = decode_message(long)
    assert isinstance(msg, Error) and len(msg.message) == 200


def test_error_with_extra_elements_is_accepted() -> None:
    assert decode_message(b"d1:eli202e3:abci7ee1:t1:x1:y1:ee") == Error(b"x", 202, "abc")


def test_unknown_keys_are_tolerated() -> None:
    wire = bencode.encode(
        {b"a": {b"id": A, b"zz": [1]}, b"q": b"ping", b"t": b"aa", b"y": b"q", b"z": b"?"}
    )
    assert decode_message(wire) == Query(b"aa", b"ping", {b"id": A, b"zz": [1]})


# -- malformed messages -------------------------------------------------------------------


def _wire(d: dict[bytes, Any]) -> bytes:
    return bencode.encode(d)


def _query(**over: Any) -> dict[bytes, Any]:
    d: dict[bytes, Any] = {b"a": {b"id": A}, b"q": b"ping", b"t": b"aa", b"y": b"q"}
    for k, v in over.items():
        if v is None:
            d.pop(k.encode(), None)
        else:
            d[k.encode()] = v
    return d


@pytest.mark.parametrize(
    ("wire", "tid", "reason"),
    [
        (b"", None, "truncated"),
        (b"i1e", None, "not a dictionary"),
        (b"le", None, "not a dictionary"),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:q", None, "truncated"),
        (b"d1:t2:aa1:y1:q1:ad2:id20:abcdefghij0123456789e1:q4:pinge", None, "unsorted"),
        (_wire(_query(t=None)), None, "transaction id"),
        (_wire(_query(t=b"")), None, "transaction id"),
        (_wire(_query(t=5)), None, "transaction id"),
        (_wire(_query(t=b"x" * (MAX_TID + 1))), None, "transaction id"),
        (_wire(_query(y=None)), b"aa", "unknown message type"),
        (_wire(_query(y=b"x")), b"aa", "unknown message type"),
        (_wire(_query(y=1)), b"aa", "unknown message type"),
        (_wire(_query(q=None)), b"aa", "method"),
        (_wire(_query(q=b"")), b"aa", "method"),
        (_wire(_query(q=[b"ping"])), b"aa", "method"),
        (_wire(_query(a=None)), b"aa", "argument dictionary"),
        (_wire(_query(a=[A])), b"aa", "argument dictionary"),
        (_wire(_query(a={})), b"aa", "20-byte id"),
        (_wire(_query(a={b"id": A[:19]})), b"aa", "20-byte id"),
        (_wire(_query(a={b"id": 5})), b"aa", "20-byte id"),
        (_wire({b"t": b"r1", b"y": b"r"}), b"r1", "value dictionary"),
        (_wire({b"r": b"x", b"t": b"r1", b"y": b"r"}), b"r1", "value dictionary"),
        (_wire({b"r": {}, b"t": b"r1", b"y": b"r"}), b"r1", "20-byte id"),
        (_wire({b"r": {b"id": A + b"x"}, b"t": b"r1", b"y": b"r"}), b"r1", "20-byte id"),
        (_wire({b"t": b"e1", b"y": b"e"}), b"e1", "malformed error"),
        (_wire({b"e": [201], b"t": b"e1", b"y": b"e"}), b"e1", "malformed error"),
        (_wire({b"e": [b"201", b"x"], b"t": b"e1", b"y": b"e"}), b"e1", "malformed error"),
        (_wire({b"e": [201, 5], b"t": b"e1", b"y": b"e"}), b"e1", "malformed error"),
        (_wire({b"e": b"201", b"t": b"e1", b"y": b"e"}), b"e1", "malformed error"),
    ],
)
def test_malformed(wire: bytes, tid: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as info:
        decode_message(wire)
    assert info.value.tid == tid
    assert info.value.code == 203
    assert isinstance(info.value, RemoteProtocolError)


def test_oversized_datagram() -> None:
    pad = b"x" * MAX_DATAGRAM
    wire = _wire(_query(z=pad))
    assert len(wire) > MAX_DATAGRAM
    with pytest.raises(MalformedMessage, match="too large"):
        decode_message(wire)
    ok = _wire(_query(z=pad[: MAX_DATAGRAM - 100]))
    assert len(ok) <= MAX_DATAGRAM
    assert isinstance(decode_message(ok), Query)


# -- garbage in ---------------------------------------------------------------------------

SAMPLES = [w for w, _ in BEP5_EXAMPLES] + [
    encode_message(Query(b"t1", b"ping", {b"id": A}, b"HL\x00\x01", True)),
    encode_message(Response(b"xy", {b"id": B}, b"UT\x01\x02", bytes([1, 2, 3, 4, 5, 6]))),
]


def _check_garbage(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except RemoteProtocolError:
        return
    assert isinstance(msg, (Query, Response, Error))
    assert type(msg.tid) is bytes and 0 < len(msg.tid) <= MAX_TID
    if not isinstance(msg, Error):
        assert type(msg.sender_id) is bytes and len(msg.sender_id) == 20


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_garbage_bytes(data: bytes) -> None:
    _check_garbage(data)


@settings(max_examples=500)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_messages(wire: bytes, data: st.DataObject) -> None:
    raw = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "cut"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "insert":
            raw.insert(pos, data.draw(st.sampled_from(b"ield:0123456789-xyqrtav")))
        else:
            del raw[pos:]
    _check_garbage(bytes(raw))


KEYS = [b"a", b"e", b"id", b"ip", b"q", b"r", b"ro", b"t", b"v", b"y"]
krpc_leaves = st.sampled_from([b"", b"q", b"r", b"e", b"aa", A, A[:6], 0, 1, 201, -1])
krpc_values = krpc_leaves | st.lists(krpc_leaves, max_size=3) | st.dictionaries(
    st.sampled_from(KEYS), krpc_leaves | st.lists(krpc_leaves, max_size=2), max_size=4
)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from([b"a", b"e", b"ip", b"q", b"r", b"ro", b"t", b"v", b"y"]),
        krpc_values,
        max_size=7,
    )
)
def test_structured_garbage(d: dict[bytes, Any]) -> None:
    _check_garbage(bencode.encode(d))


# -- compact node info --------------------------------------------------------------------

ids = st.binary(min_size=20, max_size=20)
ports = st.integers(1, 65535)
# 0.0.0.0/8 is never a destination (the overlay's link form): not a UDP address
v4 = st.builds(lambda n, p: (str(ipaddress.IPv4Address(n)), p), st.integers(2**24, 2**32 - 1), ports)
v6 = st.builds(lambda n, p: (str(ipaddress.IPv6Address(n)), p), st.integers(0, 2**128 - 1), ports)


@given(st.lists(st.tuples(ids, v4), max_size=10), st.lists(st.tuples(ids, v6), max_size=10))
def test_compact_nodes_round_trip(n4: list[tuple[bytes, Hashable]], n6: list[tuple[bytes, Hashable]]) -> None:
    codec = IPAddressCodec()
    mixed = [x for pair in zip(n4, n6, strict=False) for x in pair] + n4[len(n6) :] + n6[len(n4) :]
    nodes, nodes6 = encode_nodes(mixed, codec)
    assert len(nodes) == COMPACT_NODE_V4 * len(n4)
    assert len(nodes6) == COMPACT_NODE_V6 * len(n6)
    assert decode_nodes(nodes, codec) == n4
    assert decode_nodes(nodes6, codec, ipv6=True) == n6


def test_compact_node_layout() -> None:
    codec = IPAddressCodec()
    nodes, nodes6 = encode_nodes([(A, ("1.2.3.4", 6881)), (B, ("2001:db8::1", 258))], codec)
    assert nodes == A + bytes([1, 2, 3, 4]) + (6881).to_bytes(2, "big")
    assert nodes6 == B + ipaddress.IPv6Address("2001:db8::1").packed + b"\x01\x02"
    assert codec.unpack(nodes[20:]) == ("1.2.3.4", 6881)
    assert codec.unpack(nodes6[20:]) == ("2001:db8::1", 258)


@given(st.lists(st.tuples(ids, v4), min_size=1, max_size=5), st.integers(1, COMPACT_NODE_V4 - 1))
def test_partial_trailing_entry_is_ignored(n4: list[tuple[bytes, Hashable]], extra: int) -> None:
    codec = IPAddressCodec()
    nodes, _ = encode_nodes(n4, codec)
    assert decode_nodes(nodes + b"\xaa" * extra, codec) == n4
    assert decode_nodes(nodes[:-extra], codec) == n4[:-1]


def test_partial_trailing_entry_is_ignored_v6() -> None:
    codec = IPAddressCodec()
    _, nodes6 = encode_nodes([(A, ("::1", 1)), (B, ("::2", 2))], codec)
    assert decode_nodes(nodes6[:-1], codec, ipv6=True) == [(A, ("::1", 1))]
    assert decode_nodes(nodes6[: COMPACT_NODE_V6 - 1], codec, ipv6=True) == []


def test_port_zero_entries_are_skipped() -> None:
    codec = IPAddressCodec()
    good = A + bytes([1, 2, 3, 4]) + b"\x1a\xe1"
    zero = B + bytes([5, 6, 7, 8]) + b"\x00\x00"
    assert decode_nodes(zero + good + zero, codec) == [(A, ("1.2.3.4", 6881))]
    assert decode_nodes(B + bytes(16) + b"\x00\x00", codec, ipv6=True) == []
    assert codec.unpack(bytes([5, 6, 7, 8, 0, 0])) is None


@pytest.mark.parametrize("garbage", [None, 5, [b"x"], "str", b""])
def test_decode_nodes_garbage(garbage: object) -> None:
    assert decode_nodes(garbage, IPAddressCodec()) == []


@pytest.mark.parametrize(
    "addr",
    [("localhost", 80), ("1.2.3.4", 70000), ("1.2.3.4", -1), ("1.2.3.4",), "1.2.3.4:80", 42, ("1.2.3.4", "x")],
)
def test_unpackable_addresses_are_skipped(addr: Hashable) -> None:
    codec = IPAddressCodec()
    assert codec.pack(addr) is None
    assert encode_nodes([(A, addr), (B, ("9.9.9.9", 9))], codec) == (
        B + bytes([9, 9, 9, 9, 0, 9]),
        b"",
    )


def test_ip_key() -> None:
    codec = IPAddressCodec()
    assert codec.ip_key(("1.2.3.4", 1)) == codec.ip_key(("1.2.3.4", 2)) == bytes([1, 2, 3, 4])
    assert codec.ip_key(("::1", 1)) == bytes(15) + b"\x01"
    assert codec.ip_key("opaque") == b"'opaque'"


@pytest.mark.parametrize("n", [0, 5, 7, 17, 19])
def test_unpack_wrong_length(n: int) -> None:
    assert IPAddressCodec().unpack(b"\x01" * n) is None
