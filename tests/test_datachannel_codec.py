"""LinkAddr and the overlay codec: vectors, round trips, garbage; frames of any kind
fed to the driver (no network)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing.dht import bep42
from hailing.errors import SdpError
from hailing.krpc import IPAddressCodec, decode_nodes, encode_nodes
from hailing.transport import LinkAddr, LinkDriver, OverlayCodec
from hailing.transport.datachannel import MAX_FRAME
from hailing.transport.linksdp import _description

NODE = bytes(range(1, 21))


def test_link_addr_is_the_first_five_bytes_of_the_node_id() -> None:
    assert LinkAddr.of(NODE) == LinkAddr(b"\x01\x02\x03\x04\x05")
    assert LinkAddr.of(NODE[:5]) == LinkAddr.of(NODE)
    assert hash(LinkAddr.of(NODE)) == hash(LinkAddr(NODE[:5]))
    assert repr(LinkAddr.of(NODE)) == "LinkAddr(0102030405)"
    for bad in (b"", b"1234", b"123456", "12345", bytearray(5)):
        with pytest.raises(ValueError):
            LinkAddr(bad)  # type: ignore[arg-type]


def test_vectors() -> None:
    codec = OverlayCodec()
    assert codec.pack(LinkAddr(b"\xaa\xbb\xcc\xdd\xee")) == b"\x00\xaa\xbb\xcc\xdd\xee"
    assert codec.unpack(b"\x00\xaa\xbb\xcc\xdd\xee") == LinkAddr(b"\xaa\xbb\xcc\xdd\xee")
    assert codec.ip_key(LinkAddr(b"\xaa\xbb\xcc\xdd\xee")) == b"L\xaa\xbb\xcc\xdd\xee"
    # UDP addresses pass through as IPAddressCodec packs them
    assert codec.pack(("1.2.3.4", 6881)) == bytes([1, 2, 3, 4, 0x1A, 0xE1])
    assert codec.unpack(bytes([1, 2, 3, 4, 0x1A, 0xE1])) == ("1.2.3.4", 6881)
    assert codec.ip_key(("1.2.3.4", 6881)) == bytes([1, 2, 3, 4])
    assert codec.unpack(bytes(15) + b"\x01\x1a\xe1") == ("::1", 6881)
    # a link handle may end in two zero bytes (a "port" 0): still a link
    assert codec.unpack(b"\x00\x01\x02\x03\x00\x00") == LinkAddr(b"\x01\x02\x03\x00\x00")


def test_without_udp_ip_entries_are_dropped() -> None:
    codec = OverlayCodec(udp=False)
    assert codec.unpack(bytes([1, 2, 3, 4, 0x1A, 0xE1])) is None
    assert codec.unpack(bytes(15) + b"\x01\x1a\xe1") is None
    assert codec.unpack(b"\x00\x01\x02\x03\x04\x05") == LinkAddr(b"\x01\x02\x03\x04\x05")


def test_udp_nodes_never_take_a_link_entry_for_a_destination() -> None:
    """A UDP-only node reading a dual node's nodes list drops the link entries."""
    overlay, ip = OverlayCodec(), IPAddressCodec()
    nodes = [(NODE, LinkAddr.of(NODE)), (bytes(20), ("10.0.0.1", 7))]
    v4, _ = encode_nodes(nodes, overlay)
    assert decode_nodes(v4, overlay) == nodes
    assert decode_nodes(v4, ip) == [(bytes(20), ("10.0.0.1", 7))]
    assert ip.unpack(b"\x00\x01\x02\x03\x04\x05") is None


def test_bep42_exempts_the_link_block() -> None:
    """Link peers' ids are not derived from an IP, and our own id never moves for the
    0.h0.h1.h2 that link peers report as our address."""
    assert bep42.is_local_raw(b"\x00\xaa\xbb\xcc")
    assert bep42.is_exempt("0.170.187.204")
    assert not bep42.is_local_raw(b"\x01\xaa\xbb\xcc")


@given(st.binary(min_size=5, max_size=5))
def test_round_trip(handle: bytes) -> None:
    codec = OverlayCodec(udp=False)
    addr = LinkAddr(handle)
    packed = codec.pack(addr)
    assert packed is not None and len(packed) == 6
    assert codec.unpack(packed) == addr


@given(st.tuples(st.integers(1, 255), st.integers(0, 255), st.integers(0, 255),
                 st.integers(0, 255)), st.integers(1, 65535))
def test_ip_round_trip(octets: tuple[int, int, int, int], port: int) -> None:
    codec = OverlayCodec()
    addr = (".".join(map(str, octets)), port)
    packed = codec.pack(addr)
    assert packed is not None
    assert codec.unpack(packed) == addr


@given(st.binary(max_size=40))
def test_garbage_never_raises(data: bytes) -> None:
    for codec in (OverlayCodec(), OverlayCodec(udp=False)):
        out = codec.unpack(data)
        if len(data) not in (6, 18):
            assert out is None
        if out is not None:
            assert codec.pack(out) == data or isinstance(out, tuple)


@given(st.one_of(st.none(), st.integers(), st.text(), st.binary(), st.tuples(st.text())))
def test_garbage_addresses_do_not_pack(addr: object) -> None:
    assert OverlayCodec().pack(addr) is None  # type: ignore[arg-type]


class FakeChannel:
    """A data channel that records what is sent on it (no network)."""

    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def on(self, event: str, fn: object = None) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.readyState = "closed"


class FakePc:
    connectionState = "connected"

    def on(self, event: str, fn: object = None) -> None:
        pass

    async def close(self) -> None:
        pass


class Host:
    node_id = b"\x01" * 20

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, LinkAddr]] = []

    def link_datagram(self, data: bytes, addr: LinkAddr) -> None:
        self.datagrams.append((data, addr))

    def link_opened(self, link: object) -> None:
        pass

    def link_closed(self, link: object) -> None:
        pass

    def link_unreachable(self, data: bytes, addr: LinkAddr) -> None:
        pass

    def known_id(self, addr: LinkAddr) -> bytes | None:
        return None

    def known_ids(self) -> list[bytes]:
        return []


frames = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.binary(max_size=64).map(lambda b: b"d" + b),
    st.binary(max_size=24).map(lambda b: b"\x00" + b),
    st.integers(MAX_FRAME - 2, MAX_FRAME + 2).map(lambda n: b"d" * n),
)


@settings(deadline=None)
@given(st.lists(frames, max_size=30))
def test_frames_of_any_kind_never_raise_and_are_all_accounted(batch: list[bytes | str]) -> None:
    async def run() -> None:
        driver = LinkDriver(clock=lambda: 0.0, keepalive=0)
        host = Host()
        driver.attach(host)
        channel = FakeChannel()
        link = driver.adopt(FakePc(), channel, peer_id=b"\x02" * 20)
        for frame in batch:
            driver._on_frame(link, frame)
        stats = driver.stats
        control = sum(1 for f in batch if type(f) is bytes and f[:1] == b"\x00"
                      and len(f) <= MAX_FRAME)
        counted = stats["link_received"] + stats["link_garbage"] + stats["link_rate_limited"]
        assert counted + control >= len(batch) >= counted
        assert len(host.datagrams) == stats["link_received"]
        assert all(d[:1] == b"d" and len(d) <= MAX_FRAME for d, _ in host.datagrams)
        await driver.aclose()

    asyncio.run(run())


@settings(deadline=None)  # the first example imports aiortc
@given(st.one_of(st.text(max_size=200), st.text(max_size=200).map(
    lambda t: "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" + t)))
def test_garbage_sdp_text_raises_sdp_error_only(text: str) -> None:
    with contextlib.suppress(SdpError):
        _description(text, "offer")


@pytest.mark.parametrize("version", [None, b"LT\x01\x02"])
def test_a_node_that_is_not_hailing_is_never_told_a_link_address(version: bytes | None) -> None:
    """A dual node answers a Mainline node (no hailing ``v``) with its UDP entries only,
    still k of them where it knows enough; a hailing querier gets both kinds."""
    import random

    from hailing import bencode
    from hailing.dht import DhtProtocol
    from hailing.dht.config import HAILING_VERSION

    proto = DhtProtocol(rng=random.Random(3), now=0.0, node_id=bytes(20), codec=OverlayCodec())
    rng = random.Random(4)
    target = b"\x7f" + bytes(19)
    for i in range(400):  # random ids: about 8 of each kind in every bucket that fills
        nid = rng.randbytes(20)
        addr = LinkAddr.of(nid) if i % 2 == 0 else (f"10.0.{i % 250}.{1 + i // 250}", 6881)
        proto.table.add(nid, addr, 0.0)
    querier = ("10.9.9.9", 6881)

    def ask(v: bytes | None) -> list[tuple[bytes, object]]:
        q = {b"t": b"aa", b"y": b"q", b"q": b"find_node",
             b"a": {b"id": b"\xff" * 20, b"target": target}}
        if v is not None:
            q[b"v"] = v
        proto.receive_datagram(bencode.encode(q), querier, 1.0)
        out = [d for d, a in proto.datagrams_to_send(1.0) if a == querier]
        r = bencode.decode(out[-1])[b"r"]
        return decode_nodes(r[b"nodes"], OverlayCodec())

    foreign = ask(version)
    assert len(foreign) == 8
    assert not any(isinstance(a, LinkAddr) for _, a in foreign)
    both = ask(HAILING_VERSION)
    assert [n for n, _ in both] == [e.id for e in proto.table.closest(target, 8)]
    assert any(isinstance(a, LinkAddr) for _, a in both)
    # the closest of each kind come first: the foreign answer is the table's closest UDP ones
    udp = [e for e in proto.table.closest(target, 400) if not isinstance(e.addr, LinkAddr)]
    assert [n for n, _ in foreign] == [e.id for e in udp[:8]]
