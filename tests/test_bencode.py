"""Strict canonical bencode: encode vectors, every rejection, round trips, garbage in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing import bencode
from hailing.bencode import MAX_DEPTH, Raw, decode, decode_prefix, decode_pure, encode
from hailing.errors import BencodeError, LocalProtocolError, RemoteProtocolError

# -- encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", b"0:"),
        (b"spam", b"4:spam"),
        (b"\x00\xff", b"2:\x00\xff"),
        ("spam", b"4:spam"),
        ("\u00e9", b"2:\xc3\xa9"),  # str is written as UTF-8
        (bytearray(b"ab"), b"2:ab"),
        (memoryview(b"ab"), b"2:ab"),
        (0, b"i0e"),
        (3, b"i3e"),
        (-3, b"i-3e"),
        (2**63, b"i9223372036854775808e"),
        ([], b"le"),
        ([b"spam", b"eggs"], b"l4:spam4:eggse"),
        ((1, 2), b"li1ei2ee"),  # tuples are lists
        ({}, b"de"),
        ({b"cow": b"moo", b"spam": b"eggs"}, b"d3:cow3:moo4:spam4:eggse"),
        ({b"spam": [b"a", b"b"]}, b"d4:spaml1:a1:bee"),
        # keys are sorted as raw bytes, whatever the insertion order
        ({b"b": 1, b"a": 2, b"ab": 3, b"B": 4}, b"d1:Bi4e1:ai2e2:abi3e1:bi1ee"),
        ({"z": 1, b"y": 2}, b"d1:yi2e1:zi1ee"),  # str keys become bytes
        ({b"\xff": 1, b"\x00": 2}, b"d1:\x00i2e1:\xffi1ee"),
        ([{b"a": [[]]}], b"ld1:alleeee"),
    ],
)
def test_encode_vectors(value: Any, expected: bytes) -> None:
    assert encode(value) == expected


@pytest.mark.parametrize("value", [True, False, [True], {b"a": False}])
def test_bool_is_refused(value: Any) -> None:
    with pytest.raises(LocalProtocolError, match="bool"):
        encode(value)


@pytest.mark.parametrize("value", [None, 1.5, {1: b"x"}, {(b"a",): 1}, {b"a"}, object()])
def test_unencodable_values(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


@pytest.mark.parametrize("value", [10**32, -(10**32), 2**200])
def test_integers_decode_would_refuse_are_not_encoded(value: int) -> None:
    # encode never produces what decode rejects: integers are capped at 32 digits.
    with pytest.raises(LocalProtocolError, match="too large"):
        encode(value)
    edge = 10**32 - 1
    assert decode(encode(edge)) == edge
    assert decode(encode(-edge)) == -edge


def test_duplicate_key_after_str_conversion_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="duplicate"):
        encode({"a": 1, b"a": 2})


def test_raw_is_spliced_verbatim() -> None:
    assert encode([Raw(b"i1e"), b"x"]) == b"li1e1:xe"
    assert encode({b"v": Raw(b"d1:ai1ee")}) == b"d1:vd1:ai1eee"
    # Raw is trusted: not re-validated, not re-encoded.
    assert encode(Raw(b"not bencode")) == b"not bencode"
    assert Raw(b"x") == Raw(b"x") and Raw(b"x") != Raw(b"y") and Raw(b"x") != b"x"
    assert hash(Raw(b"x")) == hash(Raw(b"x"))


def test_encode_depth_limit_matches_decode() -> None:
    ok: Any = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    data = encode(ok)
    assert data == b"l" * MAX_DEPTH + b"e" * MAX_DEPTH
    assert decode(data) == ok
    with pytest.raises(LocalProtocolError, match="deep"):
        encode([ok])
    with pytest.raises(LocalProtocolError, match="deep"):
        encode({b"a": ok})


# -- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"i0e", 0),
        (b"i-42e", -42),
        (b"i" + b"9" * 32 + b"e", int("9" * 32)),
        (b"i-" + b"9" * 32 + b"e", -int("9" * 32)),
        (b"le", []),
        (b"l4:spami3ee", [b"spam", 3]),
        (b"de", {}),
        (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
        (b"d0:i1e1:ai2ee", {b"": 1, b"a": 2}),
    ],
)
def test_decode_vectors(data: bytes, expected: Any) -> None:
    assert decode(data) == expected
    assert decode(bytearray(data)) == expected
    assert decode(memoryview(data)) == expected


def test_decoded_strings_are_bytes() -> None:
    assert type(decode(b"1:a")) is bytes
    assert type(decode(bytearray(b"1:a"))) is bytes


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"i03e", "leading zero"),
        (b"i00e", "leading zero"),
        (b"i-03e", "zero"),
        (b"03:abc", "leading zero"),
        (b"00:", "leading zero"),
        (b"i-0e", "negative zero"),
        (b"ie", "malformed integer"),
        (b"i-e", "malformed integer"),
        (b"i--1e", "malformed integer"),
        (b"i+1e", "malformed integer"),
        (b"i1.5e", "malformed integer"),
        (b"i 1e", "malformed integer"),
        (b"i" + b"1" * 33 + b"e", "oversized"),
        (b"i-" + b"1" * 33 + b"e", "oversized"),
        (b"i" + b"1" * 40 + b"e", "oversized"),
        (b"-1:a", "unexpected byte"),
        (b"+1:a", "unexpected byte"),
        (b"1a:a", "string length"),
        (b":a", "unexpected byte"),
        (b"d1:bi1e1:ai2ee", "unsorted"),
        (b"d2:abi1e1:ai2ee", "unsorted"),
        (b"d1:ai1e1:ai2ee", "duplicate"),
        (b"di1ei2ee", "not a byte string"),
        (b"dlei2ee", "not a byte string"),
        (b"dd1:ai1eei2ee", "not a byte string"),
        (b"i1ei2e", "trailing"),
        (b"4:spamx", "trailing"),
        (b"lee", "trailing"),
        (b"", "truncated"),
        (b"x", "unexpected byte"),
        (b"e", "unexpected byte"),
        (b"l", "truncated"),
        (b"d1:a", "truncated"),
        (b"5:spam", "truncated"),
        (b"99999999999:", "truncated"),
        (b"999999999999:", "string length"),  # too many length digits
        (b"i1", "unterminated"),
    ],
)
def test_decode_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(BencodeError, match=reason):
        decode(data)


def test_bencode_error_is_a_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(b"i03e")
    assert info.value.code == 203


@pytest.mark.parametrize("bad", ["4:spam", 42, None, [b"4:spam"]])
def test_decode_needs_bytes(bad: Any) -> None:
    with pytest.raises(LocalProtocolError):
        decode(bad)


VALID = [
    b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    b"d4:spaml1:a1:bee",
    b"li-12e0:d0:lee3:xyze",
    b"i123456e",
    b"10:0123456789",
]


@pytest.mark.parametrize("message", VALID)
def test_every_truncation_is_rejected(message: bytes) -> None:
    assert encode(decode(message)) == message
    for cut in range(len(message)):
        with pytest.raises(BencodeError):
            decode(message[:cut])


@pytest.mark.parametrize("message", VALID)
def test_every_trailing_byte_is_rejected(message: bytes) -> None:
    for extra in (b"e", b"0", b"i1e", b"\x00"):
        with pytest.raises(BencodeError, match="trailing"):
            decode(message + extra)


@pytest.mark.parametrize("kind", [b"l", b"d1:a"])
def test_nesting_limit(kind: bytes) -> None:
    def nested(depth: int) -> bytes:
        # `depth` containers, the innermost holding an integer
        if kind == b"l":
            return b"l" * depth + b"i0e" + b"e" * depth
        return b"d1:a" * depth + b"i0e" + b"e" * depth

    value = decode(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        value = value[0] if kind == b"l" else value[b"a"]
    assert value == 0
    with pytest.raises(BencodeError, match="deep"):
        decode(nested(MAX_DEPTH + 1))
    # Far deeper input must still be a BencodeError, not a RecursionError.
    with pytest.raises(BencodeError):
        decode(nested(100_000))


def test_decode_prefix() -> None:
    assert decode_prefix(b"i1e4:spam") == (1, 3)
    assert decode_prefix(b"4:spamxyz") == (b"spam", 6)
    with pytest.raises(BencodeError, match="truncated"):
        decode_prefix(b"l4:spam")
    with pytest.raises(BencodeError, match="leading zero"):
        decode_prefix(b"i01eXX")


def test_public_names() -> None:
    assert sorted(bencode.__all__) == ["MAX_DEPTH", "Raw", "decode", "decode_prefix", "encode"]


# -- properties ---------------------------------------------------------------------------

values = st.recursive(
    st.binary(max_size=40) | st.integers(min_value=-(2**70), max_value=2**70),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.binary(max_size=8), children, max_size=6),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data
    assert decode_prefix(data + b"trailing") == (value, len(data))


@given(st.dictionaries(st.binary(max_size=6), st.integers(-(2**64), 2**64), min_size=2, max_size=8))
def test_encoded_dict_keys_are_sorted(d: dict[bytes, int]) -> None:
    data = encode(d)
    assert list(decode(data)) == sorted(d)


@settings(max_examples=400)
@given(st.binary(max_size=64))
def test_garbage_in(data: bytes) -> None:
    try:
        value = decode(data)
    except BencodeError:
        return
    assert encode(value) == data


# Bytes drawn from the bencode alphabet reach far deeper into the decoder than random bytes.
bencodish = st.lists(
    st.sampled_from([b"i", b"e", b"l", b"d", b":", b"-", b"0", b"1", b"2", b"9", b"a"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=600)
@given(bencodish)
def test_garbage_in_bencode_alphabet(data: bytes) -> None:
    try:
        value = decode(data)
    except BencodeError:
        return
    assert encode(value) == data


@settings(max_examples=300)
@given(values, st.data())
def test_mutated_valid_input(value: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(raw))
    except BencodeError:
        return
    assert encode(decoded) == bytes(raw)


# -- the compiled fast path against the pure decoder ----------------------------------------


def _outcome(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "value", fn(data)
    except BencodeError as exc:
        return "error", str(exc)


def test_the_fast_decoder_is_installed() -> None:
    """bencode2 is a dependency: without it every datagram costs ten times the CPU."""
    assert bencode._fast_decode is not None


# Deep nesting and long integers: what the compiled decoder accepts and this codec does not.
edges = st.one_of(
    st.integers(MAX_DEPTH - 2, MAX_DEPTH + 3).map(lambda n: b"l" * n + b"e" * n),
    st.integers(MAX_DEPTH - 2, MAX_DEPTH + 3).map(lambda n: b"d1:a" * n + b"i1e" + b"e" * n),
    st.integers(30, 40).map(lambda n: b"i" + b"7" * n + b"e"),
    st.integers(30, 40).map(lambda n: b"li-" + b"7" * n + b"ee"),
    st.integers(30, 40).map(lambda n: b"d1:x%d:%se" % (n, b"5" * n)),  # digits in a string
)


@settings(max_examples=300)
@given(st.one_of(bencodish, edges, values.map(encode), st.binary(max_size=64)))
def test_fast_path_agrees_with_the_pure_decoder(data: bytes) -> None:
    """Same value or same error, on valid, garbage, deep and oversized inputs alike."""
    assert _outcome(decode, data) == _outcome(bencode.decode_pure, data)


@settings(max_examples=300)
@given(values, st.data())
def test_fast_path_agrees_on_mutated_input(value: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw.insert(pos, data.draw(st.sampled_from(b"ield:-0123456789")))
        elif raw:
            del raw[pos]
    assert _outcome(decode, bytes(raw)) == _outcome(bencode.decode_pure, bytes(raw))


@pytest.mark.parametrize("n", [MAX_DEPTH, MAX_DEPTH + 1])
def test_nesting_limit_with_many_container_bytes(n: int) -> None:
    """Past the scan (more ``l``/``d`` bytes than the limit, here inside strings) the walk
    decides: a shallow value full of such bytes is fine, a deep one is refused."""
    shallow = encode([b"l" * 40, b"d" * 40])
    assert decode(shallow) == [b"l" * 40, b"d" * 40]
    deep = b"l" * n + b"1:d" + b"e" * n
    if n <= MAX_DEPTH:
        assert decode(deep) == decode_pure(deep)
    else:
        with pytest.raises(BencodeError, match="nesting"):
            decode(deep)


def test_long_digit_runs_inside_strings_are_fine() -> None:
    value = {b"n": b"1" * 50, b"i": 10**31}
    assert decode(encode(value)) == value
