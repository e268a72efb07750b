"""The compiled encoder (bencode2) takes the flat dicts most KRPC messages are and must
give exactly the pure encoder's bytes for them; anything else stays with the pure
encoder, so every refusal (bools, oversized integers, str keys that collide, ...) is
unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing import bencode
from hailing.errors import LocalProtocolError

LIMIT = 10**32
ints = st.integers(min_value=-LIMIT + 1, max_value=LIMIT - 1)
leaves = st.one_of(st.binary(max_size=40), ints)
flat = st.dictionaries(st.binary(max_size=12), leaves, max_size=6)
messages = st.dictionaries(st.binary(max_size=12), st.one_of(leaves, flat), max_size=6)


def pure(obj: Any) -> bytes:
    out: list[bytes] = []
    bencode._encode(obj, out, 0)
    return b"".join(out)


def test_the_fast_encoder_is_installed() -> None:
    assert bencode._fast_encode is not None


@settings(max_examples=400)
@given(messages)
def test_flat_dicts_encode_exactly_as_the_pure_encoder_does(msg: dict[bytes, Any]) -> None:
    assert bencode._flat(msg, True)
    assert bencode.encode(msg) == pure(msg)
    assert bencode.decode(bencode.encode(msg)) == msg


@pytest.mark.parametrize("obj", [
    {b"a": True},                       # a bool is not an integer here
    {b"a": {b"b": False}},
    {b"a": 10**32},                     # beyond what decoders accept
    {b"a": {b"b": -(10**32)}},
    {"a": 1, b"a": 2},                  # a str key colliding with a bytes key
])
def test_what_the_pure_encoder_refuses_is_still_refused(obj: Any) -> None:
    assert not bencode._flat(obj, True)
    with pytest.raises(LocalProtocolError):
        bencode.encode(obj)


@pytest.mark.parametrize("obj", [
    {b"a": [1, 2]}, {b"a": {b"b": {b"c": 1}}}, {b"a": "text"}, {b"r": bencode.Raw(b"i1e")},
    {b"a": bytearray(b"x")},
])
def test_other_shapes_go_to_the_pure_encoder(obj: Any) -> None:
    assert not bencode._flat(obj, True)
    assert bencode.encode(obj) == pure(obj)
