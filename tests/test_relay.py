"""Relays from the DHT (hailing.nat.relay): the ``hailing_relay`` exchange between
DhtNodes on loopback, credentials that work with a real coturn, refusals counted."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Hashable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from turn_helpers import (
    RELAY_PORTS,
    allocate_error,
    free_udp_port,
    turnserver_or_skip,
    turnservers_of,
)

from hailing import bencode
from hailing.dht import DhtConfig
from hailing.errors import KrpcError, LocalProtocolError, RemoteProtocolError
from hailing.nat import RELAY_INFOHASH, RelayFinder, RelayService, TurnConfig, TurnCredentials
from hailing.nat.relay import RELAY_METHOD
from hailing.node import DhtNode
from hailing.testnet import testnet as dht_testnet


def turn_config() -> TurnConfig:
    return TurnConfig("127.0.0.1", port=free_udp_port(), min_port=RELAY_PORTS[0],
                      max_port=RELAY_PORTS[1], allow_loopback_peers=True)


@pytest.fixture
async def net() -> AsyncIterator[list[DhtNode]]:
    async with dht_testnet(5) as nodes:
        yield nodes


@pytest.fixture
async def relay(net: list[DhtNode], tmp_path: Path) -> AsyncIterator[RelayService]:
    turnserver_or_skip()
    service = RelayService(net[1], tmp_path / "relay", turn_config(), per_source_burst=3)
    await service.start()
    await service.announced.wait()
    yield service
    await service.stop()


async def ask(node: DhtNode, relay: DhtNode, args: dict[bytes, Any]) -> dict[bytes, Any]:
    return await node.query(relay.address, RELAY_METHOD, args)


# -- without coturn ------------------------------------------------------------------------

def test_the_info_hash() -> None:
    assert hashlib.sha1(b"hailing relay v1").digest() == RELAY_INFOHASH


def test_credentials_on_the_wire() -> None:
    creds = TurnCredentials(("turn:198.18.0.5:3478?transport=udp",), "1700000000:abc",
                            "pass=", 1700000000.0)
    assert TurnCredentials.from_wire(creds.to_wire()) == creds
    assert creds.address == ("198.18.0.5", 3478)
    six = TurnCredentials(("turn:[2001:db8::1]:3478?transport=udp",), "u", "p", 1.0)
    assert six.address == ("2001:db8::1", 3478)


@pytest.mark.parametrize("value", [
    b"garbage", b"le", {b"urls": [], b"u": b"u", b"p": b"p", b"e": 1},
    {b"urls": [b"stun:1.2.3.4:3478"], b"u": b"u", b"p": b"p", b"e": 1},
    {b"urls": [b"turn:example.org:3478"], b"u": b"u", b"p": b"p", b"e": 1},
    {b"urls": [b"turn:1.2.3.4:0"], b"u": b"u", b"p": b"p", b"e": 1},
    {b"urls": [b"turn:1.2.3.4:3478"], b"u": b"\xff", b"p": b"p", b"e": 1},
    {b"urls": [b"turn:1.2.3.4:3478"], b"u": b"u", b"p": b"p"},
    {b"urls": [b"turn:1.2.3.4:3478"], b"u": b"u" * 300, b"p": b"p", b"e": 1},
])
def test_bad_credentials_are_refused(value: Any) -> None:
    data = value if isinstance(value, bytes) else bencode.encode(value)
    with pytest.raises(RemoteProtocolError):
        TurnCredentials.from_wire(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 8 * 120 - 1))
def test_random_and_flipped_wire_bytes_never_escape(data: bytes, bit: int) -> None:
    good = TurnCredentials(("turn:198.18.0.5:3478?transport=udp",), "17:abc", "pw", 17.0)
    wire = bytearray(good.to_wire())
    wire[bit // 8 % len(wire)] ^= 1 << (bit % 8)
    for blob in (data, bytes(wire)):
        with contextlib.suppress(RemoteProtocolError):
            TurnCredentials.from_wire(blob)


async def test_an_unstarted_service_answers_202(net: list[DhtNode], tmp_path: Path) -> None:
    service = RelayService(net[1], tmp_path / "relay", turn_config())
    with pytest.raises(RemoteProtocolError) as err:
        service._answer({b"k": bytes(PrivateKey.generate().public_key)}, ("127.0.0.1", 1), 0.0)
    assert err.value.code == 202 and service.stats["unavailable"] == 1
    with pytest.raises(LocalProtocolError):
        service.mint()


async def test_nobody_volunteers(net: list[DhtNode]) -> None:
    now = [1000.0]
    finder = RelayFinder(net[4], clock=lambda: now[0])
    assert await finder.credentials() is None
    assert await finder.credentials() is None  # believed for a while: no second lookup
    assert finder.stats["lookups"] == 1 and finder.stats["none_found"] == 1
    assert finder.stats["cached"] == 1
    looked = []
    for step in (9, 2, 19, 2, 39, 2):  # believed 10 s, then 20, then 40
        now[0] += step
        await finder.credentials()
        looked.append(finder.stats["lookups"])
    assert looked == [1, 2, 2, 3, 3, 4]
    assert await finder.credentials(refresh=True) is None and finder.stats["lookups"] == 5


def fake_volunteer(node: DhtNode, url: str, reply: str = "sealed") -> None:
    """``node`` answers hailing_relay with credentials naming ``url`` (or garbage)."""

    def answer(args: dict[bytes, Any], addr: Hashable, now: float) -> dict[bytes, Any]:
        creds = TurnCredentials((url,), "9999999999:x", "pw", 9999999999.0)
        if reply == "garbage":
            return {b"r": b"not sealed at all"}
        if reply == "other key":
            return {b"r": SealedBox(PrivateKey.generate().public_key).encrypt(creds.to_wire())}
        return {b"r": SealedBox(PublicKey(args[b"k"])).encrypt(creds.to_wire())}

    node.core.add_method(RELAY_METHOD, answer)


@pytest.mark.parametrize(("url", "reply"), [
    ("turn:198.18.0.9:3478?transport=udp", "sealed"),  # not the volunteer's own IP
    ("turn:127.0.0.1:3478?transport=udp", "garbage"),
    ("turn:127.0.0.1:3478?transport=udp", "other key"),
])
async def test_a_finder_refuses_bad_answers(net: list[DhtNode], url: str, reply: str) -> None:
    fake_volunteer(net[2], url, reply)
    await net[2].announce(RELAY_INFOHASH, implied=True)
    finder = RelayFinder(net[4])
    assert await finder.credentials() is None
    assert finder.stats["asked"] == 1 and finder.stats["bad_replies"] == 1


async def test_a_finder_takes_good_answers_from_a_fake_volunteer(net: list[DhtNode]) -> None:
    fake_volunteer(net[2], "turn:127.0.0.1:3478?transport=udp")
    await net[2].announce(RELAY_INFOHASH, implied=True)
    finder = RelayFinder(net[4])
    creds = await finder.credentials()
    assert creds is not None and creds.username == "9999999999:x"
    assert await finder.credentials() is creds and finder.stats["lookups"] == 1


# -- with coturn ---------------------------------------------------------------------------

async def test_credentials_from_the_dht_allocate(net: list[DhtNode], relay: RelayService
                                                 ) -> None:
    finder = RelayFinder(net[4], rng=random.Random(1))
    creds = await finder.credentials()
    assert creds is not None
    assert creds.urls == relay.urls == (f"turn:127.0.0.1:{relay.address[1]}?transport=udp",)
    assert 3500 < creds.ttl() <= 3600
    assert await allocate_error(creds.address, creds.username, creds.password) is None
    assert relay.stats["minted"] == 1 and relay.stats["announces"] == 1
    assert net[1].stats["q_hailing_relay"] == 1
    assert await finder.credentials() is creds  # cached until 80 % of the ttl
    assert finder.stats["lookups"] == 1 and finder.stats["answers"] == 1


async def test_a_direct_query_gets_sealed_credentials(net: list[DhtNode],
                                                      relay: RelayService) -> None:
    key = PrivateKey.generate()
    reply = await ask(net[3], net[1], {b"k": bytes(key.public_key)})
    creds = TurnCredentials.from_wire(SealedBox(key).decrypt(reply[b"r"]))
    assert await allocate_error(creds.address, creds.username, creds.password) is None
    with pytest.raises(CryptoError):  # sealed to the requester only
        SealedBox(PrivateKey.generate()).decrypt(reply[b"r"])


@pytest.mark.parametrize("args", [
    {}, {b"k": b"short"}, {b"k": 7}, {b"k": [b"x" * 32]}, {b"k": bytes(33)},
    {b"k": bytes(32)},  # a low-order point: no shared secret
])
async def test_garbage_arguments_get_203_and_are_counted(net: list[DhtNode],
                                                         relay: RelayService,
                                                         args: dict[bytes, Any]) -> None:
    with pytest.raises(KrpcError) as err:
        await ask(net[3], net[1], args)
    assert err.value.code == 203
    assert relay.stats["bad_args"] == 1 and relay.stats["minted"] == 0
    assert net[1].stats["errors_sent"] >= 1


async def test_requests_are_rate_limited_per_source(net: list[DhtNode],
                                                    relay: RelayService) -> None:
    codes = []
    for _ in range(5):
        try:
            await ask(net[3], net[1], {b"k": bytes(PrivateKey.generate().public_key)})
            codes.append(0)
        except KrpcError as exc:
            codes.append(exc.code)
    assert codes == [0, 0, 0, 241, 241]  # a burst of 3, then 12 an hour
    assert relay.stats["rate_limited"] == 2 and relay.stats["minted"] == 3


async def test_a_stopped_relay_answers_204_and_leaves_nothing(net: list[DhtNode],
                                                             tmp_path: Path) -> None:
    turnserver_or_skip()
    service = RelayService(net[1], tmp_path / "relay", turn_config())
    await service.start()
    assert turnservers_of(tmp_path / "relay")
    await service.stop()
    assert turnservers_of(tmp_path / "relay") == []
    with pytest.raises(KrpcError) as err:
        await ask(net[3], net[1], {b"k": bytes(PrivateKey.generate().public_key)})
    assert err.value.code == 204
    assert RELAY_INFOHASH not in {k[1:] for k in net[1].core.lookups.republish}


async def test_a_volunteer_needs_a_started_node_and_coturn(tmp_path: Path) -> None:
    node = DhtNode(config=DhtConfig())
    await node.start()
    try:
        service = RelayService(node, tmp_path / "relay", turn_config(), binary="no-turnserver")
        with pytest.raises(LocalProtocolError, match="coturn"):
            await service.start()
        with pytest.raises(KrpcError):  # nothing registered
            other = DhtNode()
            await other.start()
            try:
                await ask(other, node, {b"k": bytes(32)})
            finally:
                await other.stop()
    finally:
        await node.stop()
