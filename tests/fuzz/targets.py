"""The decoders under fuzz: what each is fed, and which exceptions it may raise.

Each :class:`Target` has a corpus of valid inputs (seeds for the mutations), an optional
structure-aware generator, a ``run`` that feeds one input to the decoder (and checks a
property of what it accepted), and ``allowed``: the exception types the decoder
documents. Anything else escaping ``run`` is a bug.

| target | decoder | allowed |
|---|---|---|
| bencode | ``bencode.decode`` (accepted input re-encodes to itself) | BencodeError |
| krpc | ``krpc.decode_message`` (accepted messages re-encode and decode the same) | MalformedMessage (RemoteProtocolError) |
| compact | ``krpc.decode_nodes`` (IPv4 and IPv6), ``IPAddressCodec.unpack`` | none |
| core | ``DhtProtocol.receive_datagram``: queries from many addresses, and replies to the core's own pending queries (the right tid from the right address) | none |
| envelope | ``signaling.envelope.open_envelope`` | EnvelopeError |
| sdp | ``signaling.sdp.unpack`` / ``decode_sdp`` (accepted input re-packs to itself) | SdpError |
| description | ``session.descriptions.split_offer_body`` then ``description_fingerprint``: an envelope body as compact SDP, deflated SDP text (``signaling.sdp_text``, bombs included) or SDP text, with or without an offer's extensions | SdpError |
| control | ``rtc.connection.Connection._on_message``: data-channel control frames (JSON text) and file data (binary), through the file receiver | none |
| endpoint | ``signaling.endpoint.decode_record`` (accepted records round-trip) | EndpointError |
| card | ``identity.parse_card`` (on text) | LocalProtocolError |
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from hailing import bencode
from hailing.dht import DhtConfig, DhtProtocol
from hailing.dht.bep44 import MutableItem
from hailing.errors import (
    BencodeError,
    EndpointError,
    EnvelopeError,
    LocalProtocolError,
    RemoteProtocolError,
    SdpError,
)
from hailing.identity import Identity, make_card, parse_card
from hailing.krpc import (
    IPAddressCodec,
    Query,
    decode_message,
    decode_nodes,
    encode_message,
)
from hailing.rtc.connection import Connection
from hailing.session.descriptions import description_fingerprint, offer_body, split_offer_body
from hailing.signaling import envelope, sdp, sdp_text
from hailing.signaling.endpoint import decode_record, encode_record

from .generators import KRPC_METHODS, Mutator, random_value, retype, structured

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
NOW = 1_700_000_000.0


class Target:
    """One decoder. ``make(rng)`` returns the next input (bytes); ``run`` decodes it."""

    name = ""
    allowed: tuple[type[BaseException], ...] = ()
    #: Share of inputs from each generator: random bytes, mutation, structure-aware.
    mix = (0.2, 0.5, 0.3)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mutator = Mutator(rng, self.corpus())

    def corpus(self) -> list[bytes]:
        raise NotImplementedError

    def structured(self) -> bytes:
        return self.mutator.mutate()

    def make(self) -> tuple[str, bytes]:
        """(generator name, input)."""
        r = self.rng.random()
        if r < self.mix[0]:
            return "random", self.mutator.random_bytes()
        if r < self.mix[0] + self.mix[1]:
            return "mutation", self.mutator.mutate()
        return "structured", self.structured()

    def run(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the target holds (files, loops)."""


# -- bencode and KRPC ------------------------------------------------------------------------


def _krpc_values(rng: random.Random) -> list[Any]:
    """Decoded KRPC messages of every kind (the structure-aware corpus)."""
    nid = rng.randbytes(20)
    node = rng.randbytes(20) + bytes([10, 0, 0, 1, 0x1A, 0xE1])
    node6 = rng.randbytes(20) + bytes(15) + b"\x01\x1a\xe1"
    args: list[dict[bytes, Any]] = [
        {b"id": nid},
        {b"id": nid, b"target": rng.randbytes(20)},
        {b"id": nid, b"info_hash": rng.randbytes(20)},
        {b"id": nid, b"info_hash": rng.randbytes(20), b"port": 6881, b"token": b"tok8byte",
         b"implied_port": 1},
        {b"id": nid, b"target": rng.randbytes(20), b"seq": 3},
        {b"id": nid, b"token": b"tok8byte", b"v": b"value"},
        {b"id": nid, b"token": b"tok8byte", b"v": b"value", b"k": bytes(32),
         b"sig": bytes(64), b"seq": 1, b"salt": b"s", b"cas": 0},
        {b"id": nid, b"key": rng.randbytes(20), b"v": b"posted", b"token": b"tok8byte"},
        {b"id": nid, b"key": rng.randbytes(20), b"ttl": 300, b"token": b"tok8byte"},
        {b"id": nid, b"key": rng.randbytes(20), b"ttl": 0},
        {b"id": nid, b"key": rng.randbytes(20), b"v": [b"a", b"b"]},
        {b"id": nid, b"target": rng.randbytes(20), b"want": [b"n4", b"n6"]},
    ]
    out: list[Any] = []
    for a in args:
        out.append({b"t": b"aa", b"y": b"q", b"q": rng.choice(KRPC_METHODS), b"a": a,
                    b"v": b"HL\x00\x01"})
    out += [
        {b"t": b"aa", b"y": b"r", b"r": {b"id": nid}, b"ip": bytes([127, 0, 0, 1, 0, 1])},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": nid, b"nodes": node * 3, b"token": b"tk"}},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": nid, b"nodes6": node6 * 2}},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": nid, b"values": [bytes([10, 0, 0, 2, 0, 80])],
                                         b"token": b"tk"}},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": nid, b"v": b"item", b"seq": 4,
                                         b"k": bytes(32), b"sig": bytes(64), b"token": b"t"}},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": nid, b"v": [b"x", b"y"], b"more": 1}},
        {b"t": b"aa", b"y": b"e", b"e": [201, b"A Generic Error Ocurred"]},
        {b"t": b"aa", b"y": b"e", b"e": [203, b"bad token"]},
    ]
    return out


class BencodeTarget(Target):
    name = "bencode"
    allowed = (BencodeError,)

    def corpus(self) -> list[bytes]:
        self.values = [*_krpc_values(self.rng), 0, -5, 2**70, -(10**32 - 1), b"", b"spam",
                       [], {}, [[[[b"deep"]]]], {b"a": {b"b": [1, 2, b"c"]}}]
        return [bencode.encode(v) for v in self.values]

    def structured(self) -> bytes:
        return structured(self.rng, self.values)

    def run(self, data: bytes) -> None:
        value = bencode.decode(data)
        if bencode.encode(value) != data:
            raise AssertionError("bencode accepted a non-canonical input")


class KrpcTarget(Target):
    name = "krpc"
    allowed = (RemoteProtocolError,)

    def corpus(self) -> list[bytes]:
        self.values = _krpc_values(self.rng)
        return [bencode.encode(v) for v in self.values]

    def structured(self) -> bytes:
        return structured(self.rng, self.values)

    def run(self, data: bytes) -> None:
        msg = decode_message(data)
        again = decode_message(encode_message(msg))
        if again != msg:
            raise AssertionError(f"KRPC message changed in a round trip: {msg!r} {again!r}")


class CompactTarget(Target):
    name = "compact"
    mix = (0.4, 0.6, 0.0)

    def corpus(self) -> list[bytes]:
        self.codec = IPAddressCodec()
        v4 = b"".join(self.rng.randbytes(20) + bytes([1, 2, 3, i, 0x1A, 0xE1]) for i in range(8))
        v6 = b"".join(self.rng.randbytes(20) + bytes(15) + bytes([i, 0x1A, 0xE1])
                      for i in range(8))
        return [v4, v6, v4[:26], v6[:38], bytes([10, 0, 0, 1, 0, 80]), bytes(16) + b"\x00\x50"]

    def run(self, data: bytes) -> None:
        for ipv6 in (False, True):
            for nid, addr in decode_nodes(data, self.codec, ipv6):
                if len(nid) != 20 or self.codec.pack(addr) is None:
                    raise AssertionError(f"decode_nodes returned an unusable node {addr!r}")
        if len(data) in (6, 18):
            addr = self.codec.unpack(data)
            if addr is not None and self.codec.pack(addr) != data:
                raise AssertionError(f"compact peer {data.hex()} does not round-trip")


# -- the DHT core ------------------------------------------------------------------------------


class CoreTarget(Target):
    """One ``DhtProtocol`` fed queries from random addresses and replies to its own
    pending requests. The loopback exemption is off so the per-source limits run too."""

    name = "core"
    mix = (0.1, 0.3, 0.6)

    def corpus(self) -> list[bytes]:
        self.values = _krpc_values(self.rng)
        config = DhtConfig()
        if hasattr(config, "exempt_loopback"):
            config = DhtConfig(exempt_loopback=False)  # type: ignore[call-arg]
        self.now = 1000.0
        self.core = DhtProtocol(config, rng=random.Random(self.rng.getrandbits(32)), now=self.now)
        for i in range(64):
            self.core.add_node(self.rng.randbytes(20), (f"10.0.{i}.1", 6881), self.now)
        self.pending: list[tuple[bytes, Hashable, bytes]] = []  # (tid, addr, method)
        self.addr: Hashable = ("10.9.9.9", 6881)
        self._start_commands()
        return [bencode.encode(v) for v in self.values]

    def _start_commands(self) -> None:
        core, now, rng = self.core, self.now, self.rng
        commands: list[Callable[[], object]] = [
            lambda: core.find_node(rng.randbytes(20), now),
            lambda: core.get_peers(rng.randbytes(20), now),
            lambda: core.get(rng.randbytes(20), now),
            lambda: core.get_mutable(rng.randbytes(32), now, b"salt"),
            lambda: core.listen(rng.randbytes(20), now),
            lambda: core.post(rng.randbytes(20), b"hello", now),
            lambda: core.announce_peer(rng.randbytes(20), 6881, now),
            lambda: core.put_immutable(b"immutable", now),
            lambda: core.put_mutable(MutableItem.create(bytes(32), b"v", b"", 1), now),
            lambda: core.ping(("10.0.0.1", 6881), now),
        ]
        rng.choice(commands)()
        self._collect()

    def _collect(self) -> None:
        for data, addr in self.core.datagrams_to_send(self.now):
            with contextlib.suppress(RemoteProtocolError):
                msg = decode_message(data)
                if type(msg) is Query:
                    self.pending.append((msg.tid, addr, msg.method))
        del self.pending[:-200]
        while self.core.next_event() is not None:
            pass

    def structured(self) -> bytes:
        rng = self.rng
        if self.pending and rng.random() < 0.7:  # a reply to one of our requests
            tid, addr, _method = self.pending.pop(rng.randrange(len(self.pending)))
            value = dict(rng.choice(self.values[-8:]))
            r = rng.random()
            if r < 0.7 and b"r" in value:  # a well-formed reply whose values are wrong
                value[b"r"] = retype(rng, value[b"r"])
            elif r < 0.9:
                value = retype(rng, value)
            else:
                value = random_value(rng)
            if isinstance(value, dict):
                value[b"t"] = tid
            self.addr = addr
            return bencode.encode(value)
        self.addr = (f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                     rng.randrange(1, 65536))
        query = dict(rng.choice(self.values[:12]))
        if rng.random() < 0.8:  # a well-formed query whose arguments are wrong
            query[b"q"] = rng.choice(KRPC_METHODS)
            query[b"a"] = retype(rng, query[b"a"])
            return bencode.encode(query)
        return structured(rng, self.values)

    def make(self) -> tuple[str, bytes]:
        self.addr = ("10.8.8.8", 6881)
        return super().make()

    def run(self, data: bytes) -> None:
        self.now += 0.01
        self.core.receive_datagram(data, self.addr, self.now)
        if self.rng.random() < 0.05:
            self.core.handle_timer(self.now)
        if len(self.pending) < 20:
            self._start_commands()
        self._collect()


# -- signaling ---------------------------------------------------------------------------------


def _seal_plain(sender: Identity, recipient: Identity, inner_plain: bytes, eph: bytes) -> bytes:
    """An envelope whose inner plaintext is ``inner_plain``, sealed properly (what an
    attacker with its own identity can make): reaches the parser behind both MACs."""
    import nacl.public

    version = bytes([envelope.VERSION])
    key = nacl.public.PrivateKey(eph)
    eph_pub = bytes(key.public_key)
    rx = recipient.x25519_public_key
    inner_nonce = envelope._nonce(envelope._INNER_NONCE_TAG, version, eph_pub,
                                  sender.public_key, recipient.public_key)
    inner = nacl.public.Box(sender.x25519_private_key, nacl.public.PublicKey(rx))
    inner_ct = inner.encrypt(inner_plain, inner_nonce).ciphertext
    outer_nonce = envelope._nonce(envelope._OUTER_NONCE_TAG, version, eph_pub, rx)
    outer = nacl.public.Box(key, nacl.public.PublicKey(rx))
    return version + eph_pub + outer.encrypt(sender.public_key + inner_ct, outer_nonce).ciphertext


class EnvelopeTarget(Target):
    name = "envelope"
    allowed = (EnvelopeError,)

    def corpus(self) -> list[bytes]:
        self.replay = envelope.ReplayCache()
        rng = self.rng
        return [envelope.seal(ALICE, BOB.public_key, kind, rng.randbytes(size), now=NOW,
                              ttl=ttl, fingerprint=fp, rng=rng.randbytes)
                for kind, size, ttl, fp in [(1, 0, 120, None), (2, 150, 30, bytes(32)),
                                            (255, 600, 65535, b"f"), (0, 3, 1, bytes(255))]]

    def structured(self) -> bytes:
        rng = self.rng
        fields = envelope._FIELDS.pack(
            rng.randrange(256), int(NOW) + rng.choice((0, -100, 100, -(2**20), 2**20)),
            rng.randrange(65536), rng.choice((0, 1, 32, 255, rng.randrange(256))))
        plain = (fields + rng.randbytes(rng.randrange(300)))[:rng.randrange(len(fields) + 300)]
        sender = ALICE if rng.random() < 0.8 else Identity.from_seed(rng.randbytes(32))
        return _seal_plain(sender, BOB, plain, rng.randbytes(32))

    def run(self, data: bytes) -> None:
        envelope.open_envelope(BOB, data, now=NOW, replay=self.replay)


class SdpTarget(Target):
    name = "sdp"
    allowed = (SdpError,)

    def corpus(self) -> list[bytes]:
        cand = sdp.CompactCandidate
        rich = sdp.CompactSdp(
            type="answer", ice_ufrag="ab+/", ice_pwd="p" * 22, fingerprint=bytes(range(32)),
            setup="passive",
            candidates=(
                cand("host", "127.0.0.1", 1, sdp.default_priority("host", 1)),
                cand("srflx", "2001:db8::1", 2, 7, 2, "10.0.0.1", 0),
                cand("relay", "1e2e3e4e-0000-4000-8000-000000000000.local", 3, 9, 1, "::1", 4),
            ),
            end_of_candidates=False, mid="data", sctp_port=5001, max_message_size=0,
        )
        plain = sdp.CompactSdp(type="offer", ice_ufrag="abcd", ice_pwd="q" * 24,
                               fingerprint=bytes(32), setup="actpass",
                               candidates=(cand("host", "192.0.2.1", 50000, 2130706431),))
        return [sdp.pack(rich), sdp.pack(plain)]

    def run(self, data: bytes) -> None:
        d = sdp.unpack(data)
        if sdp.pack(d) != data:
            raise AssertionError("compact SDP accepted a non-canonical blob")
        sdp.decode_sdp(data)
        if sdp.fingerprint_of(data) != d.fingerprint:
            raise AssertionError("fingerprint_of disagrees with unpack")


class DescriptionTarget(Target):
    """An offer's or answer's body as the session layer reads it: compact SDP (format 1),
    deflated SDP text (format 2, :mod:`hailing.signaling.sdp_text`) or plain SDP text."""

    name = "description"
    allowed = (SdpError,)

    def corpus(self) -> list[bytes]:
        samples = sorted((Path(__file__).parent.parent / "data" / "sdp").glob("*.sdp"))
        texts = [p.read_bytes().decode() for p in samples]
        plain = ([sdp_text.pack_sdp_text(t) for t in texts] + [t.encode() for t in texts[:1]]
                 + SdpTarget(self.rng).corpus())
        # an offer's body may carry extensions (the reply hint) before its description
        return plain + [offer_body(d, b"\x07" * 14) for d in plain[:3]]

    def run(self, data: bytes) -> None:
        data, hint = split_offer_body(data)  # as the session reads an offer
        if hint is not None and not 0 < len(hint) <= 253:
            raise AssertionError("a reply hint out of bounds")
        fp = description_fingerprint(data)
        if len(fp) != 32:
            raise AssertionError("a fingerprint that is not 32 bytes")
        if data[:1] == bytes([sdp_text.FORMAT]):
            text = sdp_text.unpack_sdp_text(data)
            if not text.startswith("v=0") or len(text.encode()) > sdp_text.MAX_TEXT:
                raise AssertionError("an accepted deflated text out of bounds")


# -- the data channel ----------------------------------------------------------------------------


class _Channel:
    """Just enough of an aiortc RTCDataChannel for a Connection."""

    readyState = "open"
    bufferedAmount = 0
    bufferedAmountLowThreshold = 0

    def __init__(self) -> None:
        self.sent = 0

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        pass

    def send(self, data: str | bytes) -> None:
        self.sent += 1


class ControlTarget(Target):
    """Frames from an authenticated peer on one Connection (a new one every 500 inputs
    or once the peer said bye). Needs a running event loop: the harness gives it one."""

    name = "control"

    def corpus(self) -> list[bytes]:
        self.downloads = Path(tempfile.mkdtemp(prefix="hailing-fuzz-"))
        self.frames: list[dict[str, Any]] = [
            {"t": "ping"}, {"t": "pong"}, {"t": "msg", "id": 1, "text": "hello"},
            {"t": "ack", "id": 1, "ok": True},
            {"t": "file", "id": 2, "name": "a.txt", "size": 5,
             "sha256": hashlib.sha256(b"hello").hexdigest()},
            {"t": "end", "id": 2}, {"t": "abort", "id": 2},
            {"t": "sig", "blob": bytes(120).hex()}, {"t": "hello", "proof": bytes(64).hex()},
            {"t": "bye", "replaced": True},
        ]
        self.conn: Connection | None = None
        self.uses = 0
        return [b"T" + json.dumps(f).encode() for f in self.frames] + [b"B" + b"hello"]

    def _connection(self) -> Connection:
        if self.conn is None or self.conn._closed or self.uses >= 500:
            if self.conn is not None:
                self.conn._files.stop("fuzz")
            conn = Connection(None, _Channel(), BOB, ALICE.public_key, initiator=False,
                              local_fp=bytes(32), remote_fp=bytes(32),
                              downloads=self.downloads)
            conn._authenticated.set_result(None)
            conn.on_signal = lambda c, blob: None
            self.conn, self.uses = conn, 0
        self.uses += 1
        return self.conn

    def structured(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.02:  # deep nesting, within the frame size limit
            depth = rng.choice((10, 1000, 5000, 60_000))
            opener, closer = rng.choice((("[", "]"), ('{"t":', "}")))
            return b"T" + (opener * depth + "1" + closer * rng.choice((0, depth))).encode()
        frame = dict(rng.choice(self.frames))
        for _ in range(rng.randrange(1, 3)):
            key = rng.choice(["t", "id", "text", "name", "size", "sha256", "blob", "proof",
                              "ok", "replaced", "error"])
            frame[key] = rng.choice([
                None, True, 0, -1, 2**64, 1.5, float("nan") if rng.random() < 0.1 else 2.0,
                "", "x" * rng.randrange(100), "../../etc/passwd", "\ud800", [], {},
                rng.randbytes(rng.randrange(40)).hex(), rng.choice(["msg", "file", "end"]),
            ])
        return b"T" + json.dumps(frame).encode("utf-8", "surrogatepass")

    def run(self, data: bytes) -> None:
        conn = self._connection()
        if data[:1] == b"B":
            conn._on_message(data[1:])
        else:
            conn._on_message(data[1:].decode("utf-8", "surrogateescape"))
        while not conn._events.empty():
            conn._events.get_nowait()

    def close(self) -> None:
        if self.conn is not None:
            self.conn._files.stop("fuzz")
        shutil.rmtree(self.downloads, ignore_errors=True)


# -- endpoint records -----------------------------------------------------------------------------


class EndpointTarget(Target):
    name = "endpoint"
    allowed = (EndpointError,)

    def corpus(self) -> list[bytes]:
        return [
            b'{"e":"sip:alice@192.0.2.1:5060","k":"sip","x":{}}',
            b'{"e":"192.0.2.7:51820","k":"wireguard","x":{"address":"10.8.0.2/32",'
            b'"public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}',
        ]

    def structured(self) -> bytes:
        rng = self.rng
        obj: dict[str, Any] = {"e": "x", "k": "sip", "x": {}}
        key = rng.choice(["e", "k", "x", "y"])
        obj[key] = rng.choice([None, 1, "", "sip:" + "a" * rng.randrange(400), [], {"a": 1},
                               {"a": "b" * 300}, "wireguard", "\u0000", 1e308])
        if rng.random() < 0.05:
            return b"[" * rng.randrange(1, 400)
        return json.dumps(obj).encode()

    def run(self, data: bytes) -> None:
        record = decode_record(data)
        if decode_record(encode_record(record)) != record:
            raise AssertionError("an endpoint record changed in a round trip")


# -- the contact card ----------------------------------------------------------------------------


class CardTarget(Target):
    name = "card"
    allowed = (LocalProtocolError,)

    def corpus(self) -> list[bytes]:
        cards = [make_card(ALICE), make_card(BOB, "Bob B."),
                 make_card(ALICE, "Ålice ☃", ("0xabc", "user-1"))]
        return [c.encode() for c in cards]

    def run(self, data: bytes) -> None:
        card = parse_card(data.decode("utf-8", "replace"))
        if not isinstance(card.public_key, bytes):
            raise AssertionError("a card without a key")


TARGETS: dict[str, type[Target]] = {
    t.name: t for t in (BencodeTarget, KrpcTarget, CompactTarget, CoreTarget, EnvelopeTarget,
                        SdpTarget, DescriptionTarget, ControlTarget, EndpointTarget,
                        CardTarget)
}


def needs_loop(name: str) -> bool:
    return name == "control"


def run_in_loop(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` inside a running event loop (what ControlTarget needs)."""

    async def main() -> Any:
        return fn()

    return asyncio.run(main())
