"""Deflated SDP text (format 2): captured descriptions, sizes, round trips, garbage in."""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing.errors import LocalProtocolError, SdpError
from hailing.session.descriptions import description_fingerprint
from hailing.signaling.sdp_text import DICTIONARY, FORMAT, MAX_TEXT, pack_sdp_text, unpack_sdp_text

DATA = Path(__file__).parent / "data" / "sdp"
#: Captured with audio, video and a data channel (Chromium 150 headless with fake
#: devices; aiortc with its test tracks); addresses rewritten to documentation ones.
SAMPLES = sorted(DATA.glob("*.sdp"))
#: The sealed envelope costs ~165 bytes around its body, and a DHT value holds 1,000.
BODY_BUDGET = 1000 - 165


def _read(path: Path) -> str:
    return path.read_bytes().decode()


def test_the_samples_are_there() -> None:
    assert len(SAMPLES) == 4


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_captured_descriptions_fit_a_dht_value(path: Path) -> None:
    text = _read(path)
    blob = pack_sdp_text(text)
    assert blob[0] == FORMAT
    assert unpack_sdp_text(blob) == text  # lossless: the peer gets exactly this text
    assert len(blob) <= BODY_BUDGET, (path.name, len(text), len(blob))
    # the dictionary is what makes it fit: plain DEFLATE is two to three times larger
    assert len(zlib.compress(text.encode(), 9)) > 1.8 * len(blob)


@pytest.mark.parametrize("path", [p for p in SAMPLES if "chromium" in p.name], ids=lambda p: p.name)
def test_a_browser_description_takes_under_500_bytes(path: Path) -> None:
    assert len(pack_sdp_text(_read(path))) < 500


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_fingerprint_comes_out_of_the_packed_body(path: Path) -> None:
    text = _read(path)
    line = next(ln for ln in text.splitlines() if ln.startswith("a=fingerprint:sha-256 "))
    expected = bytes.fromhex(line.split()[1].replace(":", ""))
    assert description_fingerprint(pack_sdp_text(text)) == expected


@given(st.text(max_size=600).map(lambda t: "v=0\r\n" + t))
def test_any_sdp_text_round_trips(text: str) -> None:
    assert unpack_sdp_text(pack_sdp_text(text)) == text


@pytest.mark.parametrize("text", ["", "o=- 1 2 IN IP4 0.0.0.0\r\n", "v=0" + "x" * MAX_TEXT])
def test_pack_refuses_what_is_not_an_sdp_text(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        pack_sdp_text(text)


def _deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)
    return bytes([FORMAT]) + c.compress(raw) + c.flush()


def test_a_small_blob_cannot_inflate_into_a_large_allocation() -> None:
    bomb = _deflate(b"v=0\r\n" + b"a" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(SdpError, match="inflates past"):
        unpack_sdp_text(bomb)


@pytest.mark.parametrize(("blob", "reason"), [
    (b"", "format byte"),
    (b"\x01abc", "format byte"),
    (b"v=0\r\n", "format byte"),
    (bytes([FORMAT]), "truncated"),
    (_deflate(b"v=0\r\ns=-\r\n")[:-2], "truncated"),
    (_deflate(b"v=0\r\ns=-\r\n") + b"x", "after"),
    (_deflate(b"o=- 1 2\r\n"), "v=0"),
    (_deflate(b"v=0\r\n\xff\xfe"), "UTF-8"),
    (bytes([FORMAT]) + b"\xff" * 20, "corrupt"),
])
def test_bad_blobs_are_refused(blob: bytes, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        unpack_sdp_text(blob)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_in(data: bytes) -> None:
    with contextlib.suppress(SdpError):  # SdpError or a text; nothing else may escape
        unpack_sdp_text(bytes([FORMAT]) + data)


@settings(max_examples=300)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_blobs_raise_sdp_error_or_decode(path: Path, data: st.DataObject) -> None:
    blob = bytearray(pack_sdp_text(_read(path)))
    pos = data.draw(st.integers(1, len(blob) - 1))
    blob[pos] = data.draw(st.integers(0, 255))
    try:
        text = unpack_sdp_text(bytes(blob))
    except SdpError:
        return
    assert text.startswith("v=0")
