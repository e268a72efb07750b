"""Compact SDP codec (hailing.signaling.sdp): real aiortc round trips and connections,
property-tested round trips, garbage on both input paths, and the sizes it reaches."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rtc_ice import candidate_addresses, connect_pair, exchange

from hailing.errors import LocalProtocolError, RemoteProtocolError
from hailing.rtc import host_addresses, rtc_configuration
from hailing.signaling.sdp import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_SCTP_PORT,
    MAX_CANDIDATES,
    MAX_SIZE,
    CandidateType,
    CompactCandidate,
    CompactSdp,
    SdpError,
    decode_sdp,
    default_priority,
    encode_sdp,
    fingerprint_of,
    pack,
    parse_sdp,
    unpack,
)

FP = bytes(range(32))


def roundtrip(d: RTCSessionDescription) -> RTCSessionDescription:
    return decode_sdp(encode_sdp(d))


async def aiortc_offer() -> tuple[RTCPeerConnection, RTCSessionDescription]:
    pc = RTCPeerConnection(rtc_configuration())
    pc.createDataChannel("chat")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription


def sha256_in(sdp: str) -> bytes:
    m = re.search(r"a=fingerprint:sha-256 ([0-9A-F:]+)", sdp)
    assert m
    return bytes.fromhex(m.group(1).replace(":", ""))


# -- real aiortc descriptions ---------------------------------------------------------


async def test_real_connection_built_from_decoded_descriptions() -> None:
    seen: list[tuple[RTCSessionDescription, RTCSessionDescription]] = []

    def via(d: RTCSessionDescription) -> RTCSessionDescription:
        decoded = roundtrip(d)
        seen.append((d, decoded))
        return decoded

    with host_addresses(["127.0.0.1"]):
        a, b, channel_a, channel_b = await connect_pair(offer_via=via, answer_via=via)
        try:
            await exchange(channel_a, channel_b)
        finally:
            await a.close()
            await b.close()
    assert [d.type for d, _ in seen] == ["offer", "answer"]
    for original, decoded in seen:
        assert decoded.type == original.type
        assert decoded.sdp != original.sdp  # really rebuilt, not passed through
        assert "sha-384" not in decoded.sdp
        assert sha256_in(decoded.sdp) == sha256_in(original.sdp)
        assert candidate_addresses(decoded.sdp) == candidate_addresses(original.sdp)
        assert candidate_addresses(decoded.sdp) == ["127.0.0.1"]
        assert parse_sdp(decoded.type, decoded.sdp) == parse_sdp(original.type, original.sdp)
    assert parse_sdp("offer", seen[0][1].sdp).setup == "actpass"
    assert parse_sdp("answer", seen[1][1].sdp).setup == "active"


async def test_fingerprint_of_matches_the_dtls_certificate() -> None:
    with host_addresses(["127.0.0.1"]):
        pc, offer = await aiortc_offer()
    try:
        assert pc.sctp is not None
        local = pc.sctp.transport.getLocalParameters().fingerprints
        [sha256] = [f.value for f in local if f.algorithm == "sha-256"]
        expected = bytes.fromhex(sha256.replace(":", ""))
        assert fingerprint_of(offer) == expected
        assert fingerprint_of((offer.type, offer.sdp)) == expected
        assert fingerprint_of(encode_sdp(offer)) == expected
        assert fingerprint_of(decode_sdp(encode_sdp(offer))) == expected
    finally:
        await pc.close()


def test_fingerprint_of_garbage_blob_raises_sdp_error() -> None:
    with pytest.raises(SdpError):
        fingerprint_of(b"\x01\x00garbage")


# -- sizes ------------------------------------------------------------------------------


def _with_candidates(sdp: str, lines: list[str]) -> str:
    return sdp.replace("a=end-of-candidates", "\r\n".join([*lines, "a=end-of-candidates"]))


AIOICE_LIKE = [  # what aioice would gather on a multi-homed host with a STUN server
    "a=candidate:1 1 udp 2130706431 192.168.1.20 50000 typ host",
    "a=candidate:2 1 udp 2130706431 10.8.0.2 50001 typ host",
    "a=candidate:3 1 udp 2130706431 2001:db8::20 50002 typ host",
    "a=candidate:4 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 50000",
    "a=candidate:5 1 udp 2130706431 172.17.0.1 50003 typ host",
    "a=candidate:6 1 udp 2130706431 fd00::5 50004 typ host",
    "a=candidate:7 1 udp 16777215 198.51.100.9 3478 typ relay raddr 203.0.113.7 rport 61000",
]


async def test_sizes_for_1_4_and_8_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    with host_addresses(["127.0.0.1"]):
        pc, offer = await aiortc_offer()
    await pc.close()
    sizes = {}
    for n in (1, 4, 8):
        sdp = _with_candidates(offer.sdp, AIOICE_LIKE[: n - 1])
        blob = encode_sdp(("offer", sdp))
        assert len(unpack(blob).candidates) == n
        sizes[n] = (len(sdp.encode()), len(blob))
    with capsys.disabled():
        print("\ncompact SDP sizes (text SDP -> compact):", sizes)
    assert sizes[1][1] <= 72
    assert sizes[4][1] < 200
    assert sizes[4][1] <= 110
    assert sizes[8][1] <= 160
    assert all(text > 5 * compact for text, compact in sizes.values())


# -- browser-shaped SDP -------------------------------------------------------------------

CHROME_OFFER = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=candidate:2395300328 1 udp 2113937151 0d5f2f8b-3a63-4cd2-9c0e-2f1a7a8f3c11.local 54321 typ host generation 0 network-cost 999
a=candidate:842163049 1 udp 1677729535 203.0.113.5 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0 network-cost 999
a=candidate:1179241904 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0
a=ice-ufrag:x8Yq
a=ice-pwd:uPxWzNq3k8m2Hb7nB4cQ0tJr
a=ice-options:trickle
a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99
a=setup:actpass
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
"""

FIREFOX_OFFER = """v=0
o=mozilla...THIS_IS_SDPARTA-99.0 1234 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F
a=group:BUNDLE sdparta_0
a=ice-options:trickle
a=msid-semantic:WMS *
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=candidate:0 1 UDP 2122252543 2001:DB8:0:0::1 40000 typ host
a=candidate:1 1 UDP 2122187007 192.0.2.44 40001 typ host
a=sendrecv
a=end-of-candidates
a=ice-pwd:0123456789abcdef0123456789abcdef
a=ice-ufrag:89abcdef
a=mid:sdparta_0
a=setup:actpass
a=sctp-port:5000
a=max-message-size:1073741823
"""


def test_chrome_shaped_offer() -> None:
    d = parse_sdp("offer", CHROME_OFFER)
    assert [c.address for c in d.candidates] == [
        "0d5f2f8b-3a63-4cd2-9c0e-2f1a7a8f3c11.local",
        "203.0.113.5",
    ]  # the TCP candidate is left out
    assert d.candidates[1].related_address == "0.0.0.0"
    assert d.candidates[1].related_port == 0
    assert d.candidates[0].priority == 2113937151
    assert not d.end_of_candidates
    blob = encode_sdp(("offer", CHROME_OFFER))
    assert unpack(blob) == d
    assert len(blob) < 120


def test_firefox_shaped_offer_keeps_mid_and_message_size() -> None:
    d = parse_sdp("offer", FIREFOX_OFFER)
    assert d.mid == "sdparta_0"
    assert d.max_message_size == 1073741823
    assert d.fingerprint == FP
    assert d.candidates[0].address == "2001:db8::1"
    decoded = decode_sdp(encode_sdp(("offer", FIREFOX_OFFER)))
    assert "a=group:BUNDLE sdparta_0" in decoded.sdp
    assert "a=mid:sdparta_0" in decoded.sdp
    assert parse_sdp("offer", decoded.sdp) == d


def test_missing_max_message_size_means_64k() -> None:
    sdp = FIREFOX_OFFER.replace("a=max-message-size:1073741823\n", "")
    assert parse_sdp("offer", sdp).max_message_size == 65536


# -- property tests -------------------------------------------------------------------

ICE_CHARS = string.ascii_letters + string.digits + "+/"
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"
ipv4 = st.ip_addresses(v=4).filter(lambda ip: not (ip.is_unspecified or ip.is_multicast))
ipv6 = st.ip_addresses(v=6).filter(lambda ip: not (ip.is_unspecified or ip.is_multicast))
addresses = st.one_of(ipv4.map(str), ipv6.map(str), st.uuids().map(lambda u: f"{u}.local"))


@st.composite
def candidates(draw: st.DrawFn) -> CompactCandidate:
    ctype: CandidateType = draw(st.sampled_from(["host", "srflx", "prflx", "relay"]))
    component = draw(st.sampled_from([1, 2]))
    default = default_priority(ctype, component)
    related = draw(st.none() | st.tuples(st.ip_addresses().map(str), st.integers(0, 65535)))
    return CompactCandidate(
        type=ctype,
        address=draw(addresses),
        port=draw(st.integers(1, 65535)),
        priority=draw(st.just(default) | st.integers(1, 2**31 - 1)),
        component=component,
        related_address=None if related is None else related[0],
        related_port=None if related is None else related[1],
    )


descriptions = st.builds(
    CompactSdp,
    type=st.sampled_from(["offer", "answer"]),
    ice_ufrag=st.text(ICE_CHARS, min_size=4, max_size=255),
    ice_pwd=st.text(ICE_CHARS, min_size=22, max_size=255),
    fingerprint=st.binary(min_size=32, max_size=32),
    setup=st.sampled_from(["actpass", "active", "passive"]),
    candidates=st.lists(candidates(), max_size=8).map(tuple),
    end_of_candidates=st.booleans(),
    mid=st.just("0") | st.text(TOKEN_CHARS, min_size=1, max_size=32),
    sctp_port=st.just(DEFAULT_SCTP_PORT) | st.integers(1, 65535),
    max_message_size=st.just(DEFAULT_MAX_MESSAGE_SIZE) | st.integers(0, 2**32 - 1),
)


@given(descriptions)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_property_round_trip(d: CompactSdp) -> None:
    blob = encode_sdp((d.type, d.to_sdp()))
    assert blob == pack(d)
    assert len(blob) <= MAX_SIZE
    assert unpack(blob) == d
    decoded = decode_sdp(blob)
    assert decoded.type == d.type
    assert parse_sdp(decoded.type, decoded.sdp) == d
    assert encode_sdp(decoded) == blob
    assert fingerprint_of(blob) == d.fingerprint


@given(descriptions)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_property_aiortc_parses_the_rebuilt_sdp_to_the_same_fields(d: CompactSdp) -> None:
    parsed = SessionDescription.parse(decode_sdp(pack(d)).sdp)
    [media] = parsed.media
    assert (media.kind, media.profile, media.fmt) == (
        "application",
        "UDP/DTLS/SCTP",
        ["webrtc-datachannel"],
    )
    assert media.ice is not None
    assert media.ice.usernameFragment == d.ice_ufrag
    assert media.ice.password == d.ice_pwd
    assert media.rtp.muxId == d.mid
    assert media.sctp_port == d.sctp_port
    assert media.sctpCapabilities is not None
    assert media.sctpCapabilities.maxMessageSize == d.max_message_size
    assert media.ice_candidates_complete == d.end_of_candidates
    assert media.dtls is not None
    assert {"actpass": "auto", "active": "client", "passive": "server"}[d.setup] == (
        media.dtls.role
    )
    [fp] = media.dtls.fingerprints
    assert fp.algorithm == "sha-256"
    assert bytes.fromhex(fp.value.replace(":", "")) == d.fingerprint
    assert len(media.ice_candidates) == len(d.candidates)
    for got, want in zip(media.ice_candidates, d.candidates, strict=True):
        assert (got.ip, got.port, got.type, got.protocol) == (
            want.address,
            want.port,
            want.type,
            "udp",
        )
        assert (got.priority, got.component) == (want.priority, want.component)
        assert (got.relatedAddress, got.relatedPort) == (want.related_address, want.related_port)


# -- garbage: the decoder (remote input) ------------------------------------------------------


def _accepts_only_canonical(blob: bytes) -> None:
    """Decoding either raises SdpError or accepted a blob that re-encodes to itself."""
    try:
        d = unpack(blob)
    except SdpError as exc:
        assert isinstance(exc, RemoteProtocolError)
        assert str(exc)
        return
    assert pack(d) == blob
    decode_sdp(blob)


@given(st.binary(max_size=1500))
@settings(max_examples=500)
def test_random_bytes_raise_only_sdp_error(blob: bytes) -> None:
    _accepts_only_canonical(blob)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_after_the_version_byte(tail: bytes) -> None:
    _accepts_only_canonical(b"\x01" + tail)


RICH = CompactSdp(
    type="answer",
    ice_ufrag="ab+/",
    ice_pwd="p" * 22,
    fingerprint=FP,
    setup="passive",
    candidates=(
        CompactCandidate("host", "127.0.0.1", 1, default_priority("host", 1)),
        CompactCandidate("srflx", "2001:db8::1", 2, 7, 2, "10.0.0.1", 0),
        CompactCandidate("relay", "1e2e3e4e-0000-4000-8000-000000000000.local", 3, 9, 1, "::1", 4),
    ),
    end_of_candidates=False,
    mid="data",
    sctp_port=5001,
    max_message_size=0,
)


def test_every_truncation_raises_sdp_error() -> None:
    blob = pack(RICH)
    assert unpack(blob) == RICH
    for n in range(len(blob)):
        with pytest.raises(SdpError):
            decode_sdp(blob[:n])


def test_every_bit_flip_is_refused_or_canonical() -> None:
    blob = pack(RICH)
    for i in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[i] ^= 1 << bit
            _accepts_only_canonical(bytes(flipped))


def _header(flags: int = 0, tail: bytes = b"") -> bytes:
    return bytes([1, flags, 4]) + b"abcd" + bytes([22]) + b"p" * 22 + FP + tail


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "truncated"),
        (bytes([0]) + _header()[1:] + b"\x00", "version"),
        (bytes([2]) + _header()[1:] + b"\x00", "version"),
        (_header(0x80, b"\x00"), "flags"),
        (_header(0x06, b"\x00"), "flags"),
        (_header(0, b"\x00\x00"), "trailing"),
        (_header(0x10, b"\x010\x00"), "mid"),
        (_header(0x10, b"\x00\x00"), "mid"),
        (_header(0x10, b"\x03a b\x00"), "mid"),
        (_header(0x20, b"\x13\x88\x00"), "sctp-port"),
        (_header(0x20, b"\x00\x00\x00"), "sctp-port"),
        (_header(0x40, b"\x00\x04\x00\x00\x00"), "max-message-size"),
        (_header(0, bytes([MAX_CANDIDATES + 1])), "candidates"),
        (_header(0, b"\x01\x0c" + b"\x00" * 20), "invalid flags"),
        (_header(0, b"\x01\x30\x7f\x00\x00\x01\x00\x01"), "invalid flags"),
        (_header(0, b"\x01\x00\x7f\x00\x00\x01\x00\x00"), "port"),
        (_header(0, b"\x01\x00\x00\x00\x00\x00\x00\x01"), "usable"),
        (_header(0, b"\x01\x00\xe0\x00\x00\xfb\x00\x01"), "usable"),
        (_header(0, b"\x01\x80\x7f\x00\x00\x01\x00\x01\x7e\xff\xff\xff"), "priority"),
        (_header(0, b"\x01\x80\x7f\x00\x00\x01\x00\x01\x00\x00\x00\x00"), "priority"),
        (_header(0, b"\x01\x80\x7f\x00\x00\x01\x00\x01\x80\x00\x00\x00"), "priority"),
        (bytes([1, 0, 3]) + b"abc" + bytes([22]) + b"p" * 22 + FP + b"\x00", "ice-ufrag"),
        (bytes([1, 0, 4]) + b"ab-d" + bytes([22]) + b"p" * 22 + FP + b"\x00", "ice-ufrag"),
        (bytes([1, 0, 4]) + b"ab\xffd" + bytes([22]) + b"p" * 22 + FP + b"\x00", "ASCII"),
        (bytes([1, 0, 4]) + b"abcd" + bytes([21]) + b"p" * 21 + FP + b"\x00", "ice-pwd"),
        (b"\x01" + b"\x00" * MAX_SIZE, "exceeds"),
    ],
)
def test_malformed_blobs_name_the_problem(blob: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        decode_sdp(blob)


def test_reference_header_is_valid() -> None:
    # the malformed cases above are one edit away from this valid blob
    assert unpack(_header(0, b"\x00")).ice_ufrag == "abcd"
    assert len(unpack(_header(0, b"\x01\x00\x7f\x00\x00\x01\x00\x01")).candidates) == 1


@pytest.mark.parametrize("garbage", [None, "01", 1, [1], {b"": b""}, object()])
def test_non_bytes_raise_sdp_error(garbage: object) -> None:
    with pytest.raises(SdpError, match="must be bytes"):
        decode_sdp(garbage)  # type: ignore[arg-type]


def test_bytes_like_inputs_are_accepted() -> None:
    blob = pack(RICH)
    assert unpack(bytearray(blob)) == unpack(memoryview(blob)) == RICH


# -- garbage and the unsupported: the encoder (local input) ---------------------------------


def _edit(old: str, new: str) -> Callable[[str], str]:
    def apply(sdp: str) -> str:
        assert old in sdp, old
        return sdp.replace(old, new)

    return apply


BASE = FIREFOX_OFFER
M_LINE = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit(M_LINE, "m=audio 9 UDP/TLS/RTP/SAVPF 111"), "media section"),
        (_edit(M_LINE, "m=application 9 DTLS/SCTP 5000"), "media section"),
        (_edit(M_LINE, "m=application 0 UDP/DTLS/SCTP webrtc-datachannel"), "rejected"),
        (lambda s: s + M_LINE + "\n", "found 2"),
        (lambda s: s.split("m=")[0], "found 0"),
        (_edit("a=fingerprint:sha-256", "a=fingerprint:sha-384"), "sha-256"),
        (_edit("a=fingerprint:sha-256 00:", "a=fingerprint:sha-256 0:"), "malformed"),
        (
            _edit("s=-", "s=-\na=fingerprint:sha-256 " + "FF:" * 31 + "FF"),
            "found 2",
        ),
        (_edit("a=sendrecv", "a=ice-lite"), "ICE lite"),
        (_edit("a=sendrecv", "a=sctpmap:5000 webrtc-datachannel 1024"), "sctpmap"),
        (_edit("a=ice-ufrag:89abcdef\n", ""), "ice-ufrag"),
        (_edit("a=setup:actpass\n", ""), "setup"),
        (_edit("a=setup:actpass", "a=setup:holdconn"), "setup"),
        (_edit("a=ice-ufrag:89abcdef", "a=ice-ufrag:89abcdef\na=ice-ufrag:x"), "2 a=ice-ufrag"),
        (_edit("a=ice-ufrag:89abcdef", "a=ice-ufrag:89a"), "ice-ufrag"),
        (_edit("a=ice-ufrag:89abcdef", "a=ice-ufrag:89ab-def"), "ice-ufrag"),
        (_edit("a=ice-pwd:0123456789abcdef", "a=ice-pwd:\u00e9123456789abcdef"), "ice-pwd"),
        (_edit("a=mid:sdparta_0", "a=mid:" + "m" * 33), "mid"),
        (_edit("a=sctp-port:5000", "a=sctp-port:70000"), "sctp-port"),
        (_edit("a=sctp-port:5000", "a=sctp-port:\u0665"), "number"),
        (_edit("a=max-message-size:1073741823", "a=max-message-size:-1"), "number"),
        (_edit("typ host\na=candidate:1", "typ\na=candidate:1"), "malformed candidate"),
        (_edit("40001 typ host", "40001 typ local"), "candidate type"),
        (_edit("192.0.2.44", "example.com"), "IP address"),
        (_edit("192.0.2.44", "0.0.0.0"), "usable"),
        (_edit("192.0.2.44 40001", "192.0.2.44 0"), "port"),
        (_edit("40001 typ host", "40001 typ host raddr 10.0.0.1 x 1"), "raddr/rport"),
        (_edit("40001 typ host", "40001 typ host raddr 10.0.0.1"), "raddr/rport"),
        (_edit("40001 typ host", "40001 typ host generation"), "malformed"),
        (_edit("1 1 UDP 2122187007", "1 3 UDP 2122187007"), "component"),
        (_edit("1 1 UDP 2122187007", "1 1 UDP 0"), "priority"),
        (_edit("a=sendrecv", "a=candidate:9 1 udp 1 192.0.2.1 1 typ host\nm=x"), "found 2"),
        (lambda s: s.replace("s=-", "s=-\na=candidate:9 1 udp 1 192.0.2.1 1 typ host"), "outside"),
        (lambda s: s.replace("s=-", "garbage"), "not an SDP line"),
        (
            lambda s: s.replace(
                "a=end-of-candidates",
                "\n".join(f"a=candidate:9 1 udp 1 192.0.2.1 {p} typ host" for p in range(1, 16)),
            ),
            "at most 16",
        ),
    ],
)
def test_unsupported_or_malformed_sdp_raises_local_protocol_error(
    edit: Callable[[str], str], message: str
) -> None:
    encode_sdp(("offer", BASE))  # the unedited base is fine
    with pytest.raises(LocalProtocolError, match=message):
        encode_sdp(("offer", edit(BASE)))


@pytest.mark.parametrize(
    "description",
    [
        ("pranswer", BASE),
        ("rollback", BASE),
        ("offer", BASE.encode()),
        ("offer",),
        ("offer", BASE, "x"),
        None,
        object(),
        RTCSessionDescription(sdp="v=0\r\n", type="offer"),
    ],
)
def test_encoder_refuses_non_descriptions(description: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_sdp(description)  # type: ignore[arg-type]


@given(st.text(max_size=500))
@settings(max_examples=300)
def test_random_text_raises_only_local_protocol_error(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_sdp(("offer", text))


@given(st.data())
@settings(max_examples=300)
def test_mangled_real_sdp_raises_only_local_protocol_error(data: st.DataObject) -> None:
    lines = BASE.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(0, len(lines[i])))
    junk = data.draw(st.text(max_size=8))
    lines[i] = lines[i][:j] + junk + lines[i][j + data.draw(st.integers(0, 4)) :]
    try:
        d = parse_sdp("offer", "\n".join(lines))
    except LocalProtocolError:
        return
    assert unpack(pack(d)) == d


def test_compact_fields_out_of_range_raise_local_protocol_error() -> None:
    good = CompactSdp("offer", "abcd", "p" * 22, FP, "actpass")
    pack(good)
    for bad in (
        CompactSdp("offer", "abcd", "p" * 22, FP[:31], "actpass"),
        CompactSdp("offer", "a" * 256, "p" * 22, FP, "actpass"),
        CompactSdp("offer", "abcd", "p" * 22, FP, "actpass", max_message_size=2**32),
        CompactSdp("offer", "abcd", "p" * 22, FP, "actpass", sctp_port=0),
        CompactSdp(
            "offer", "abcd", "p" * 22, FP, "actpass",
            (CompactCandidate("host", "::1", 1, 1, related_address="::1"),),
        ),
        CompactSdp(
            "offer", "abcd", "p" * 22, FP, "actpass",
            (CompactCandidate("host", "127.000.000.001", 1, 1),),
        ),
    ):  # fmt: skip
        with pytest.raises(LocalProtocolError):
            pack(bad)


def test_address_forms_are_normalised_on_encoding() -> None:
    sdp = BASE.replace("192.0.2.44", "0D5F2F8B-3A63-4CD2-9C0E-2F1A7A8F3C11.local")
    d = parse_sdp("offer", sdp)
    assert d.candidates[1].address == "0d5f2f8b-3a63-4cd2-9c0e-2f1a7a8f3c11.local"
    assert str(IPv6Address(d.candidates[0].address)) == "2001:db8::1"
    assert IPv4Address("127.0.0.1").packed in pack(RICH)
