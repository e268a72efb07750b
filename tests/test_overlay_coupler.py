"""The network coupler: two nodes with no common link get one through forwarding, and
the forwarders never see the offer or the answer in clear (loopback ICE, no UDP)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Hashable
from typing import Any

import pytest
from overlay_helpers import OverlayNode, start_node, stop_all
from pytest_helpers import loopback_ice

from hailing import bencode
from hailing.dht import DhtConfig
from hailing.errors import KrpcError
from hailing.node import LINKS_MIN_SOFT_TIMEOUT
from hailing.transport import LinkAddr, couple_direct
from hailing.transport.forward import (
    ERR_RATE_LIMITED,
    METHOD,
    PAIR_BURST,
    PAIR_RATE,
    SOURCE_BURST,
)
from hailing.transport.links import FRAME_BURST
from hailing.transport.network_coupler import KIND

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


@pytest.fixture
async def chain() -> AsyncIterator[list[OverlayNode]]:
    """A - B - C - D: each linked only to its neighbours in the chain; their ids come
    closer to D's (and to A's going back) along it, so that greedy routing finds it."""
    ids = [bytes([first]) + bytes(range(1, 20)) for first in (0x00, 0x80, 0xC0, 0xE0)]
    # Four nodes on one event loop pass hundreds of messages over SCTP in the flood test:
    # on a loaded machine an answer can take longer than the default 4 s query timeout,
    # which is not what these tests are about (no assertion here is on time).
    config = DhtConfig(min_soft_timeout=LINKS_MIN_SOFT_TIMEOUT, query_timeout=20.0)
    nodes = [await start_node(p=8, seed=100 + i, node_id=nid, config=config)
             for i, nid in enumerate(ids)]
    try:
        for x, y in itertools.pairwise(nodes):
            await couple_direct(x.driver, y.driver)
        yield nodes
    finally:
        await stop_all(nodes)


def _record(o: OverlayNode) -> list[dict[bytes, Any]]:
    """Every hailing_fwd query ``o`` handles, as it arrived."""
    seen: list[dict[bytes, Any]] = []
    core = o.node.core
    handler = o.fwd._on_query
    core.remove_method(METHOD)

    def recording(args: dict[bytes, Any], addr: Hashable, now: float) -> dict[bytes, Any]:
        seen.append(dict(args))
        return handler(args, addr, now)

    core.add_method(METHOD, recording)
    return seen


async def test_two_nodes_without_a_common_link_connect_through_forwarding(
        chain: list[OverlayNode]) -> None:
    a, b, c, d = chain
    assert a.driver.link_for(d.id) is None
    link = await a.driver.couple(d.id)
    assert link is not None and link.peer_id == d.id
    assert d.driver.link_for(a.id) is not None
    # the new link carries DHT traffic both ways, without passing B or C
    before = b.fwd.stats["forwarded"], c.fwd.stats["forwarded"]
    assert await a.node.ping(LinkAddr.of(d.id)) == d.id
    assert await d.node.ping(LinkAddr.of(a.id)) == a.id
    assert (b.fwd.stats["forwarded"], c.fwd.stats["forwarded"]) == before
    assert a.fwd.stats["link_coupled"] == 1 and d.fwd.stats["link_answered"] == 1
    # A DHT query to a node without a link couples one by itself: A's ping to C.
    assert a.driver.link_for(c.id) is None
    assert await a.node.ping(LinkAddr.of(c.id)) == c.id
    assert a.driver.link_for(c.id) is not None
    assert a.fwd.stats["link_coupled"] == 2


async def test_a_forwarded_offer_is_never_seen_in_clear(chain: list[OverlayNode]) -> None:
    a, b, c, d = chain
    seen_b, seen_c = _record(b), _record(c)
    link = await a.driver.couple(d.id)
    assert link is not None
    sdps = [x.localDescription.sdp for x in (link.pc, d.driver.link_for(a.id).pc)]  # type: ignore[union-attr]
    secrets = set()
    for sdp in sdps:
        for m in re.finditer(r"a=(ice-ufrag|ice-pwd|fingerprint):(\S+)", sdp):
            secrets.add(m.group(2).encode())
    assert len(secrets) >= 6
    carried = seen_b + seen_c
    assert len(carried) >= 8  # hello and offer, each there and back, at B and at C
    kinds = {x.get(b"kind") for x in carried if b"kind" in x}
    assert kinds == {KIND}
    for args in carried:
        raw = bencode.encode(args)
        for clear in (b"v=0", b"a=candidate", b"candidate", b"IN IP4", b"127.0.0.1",
                      b"ice-ufrag", b"fingerprint", b"sha-256", b"webrtc-datachannel",
                      b"\x7f\x00\x00\x01", *secrets):
            assert clear not in raw
    # what they do learn: the target, the origin's claimed id and a key, sizes
    first = next(x for x in seen_b if b"tgt" in x)
    assert first[b"tgt"] == d.id and first[b"o"] == a.id
    assert len(first[b"p"]) == 33


async def test_the_target_checks_its_id_and_garbage_couplings_are_refused(
        chain: list[OverlayNode]) -> None:
    a, _b, _c, d = chain
    fwd = a.fwd
    # a hello that is not 33 bytes, an unknown step, an offer without a hello
    for payload in (b"\x01short", b"\x07" + bytes(32), b"\x02" + bytes(32) + b"sealed"):
        with pytest.raises(KrpcError) as e:
            await fwd.send_toward(d.id, KIND, payload, 10)
        assert e.value.code == 203
    assert d.fwd.stats["link_bad_messages"] == 2
    assert d.fwd.stats["link_unknown_offers"] == 1
    # an offer sealed with the keys of a hello, but for another target id
    import nacl.public

    secret = nacl.public.PrivateKey.generate()
    ours = bytes(secret.public_key)
    reply = await fwd.send_toward(d.id, KIND, b"\x01" + ours, 10)
    box = nacl.public.Box(secret, nacl.public.PublicKey(reply[1:]))
    wrong = bytes(20)
    sealed = box.encrypt(bencode.encode({b"id": a.id, b"tgt": wrong, b"sdp": b"v=0"}))
    with pytest.raises(KrpcError) as e:
        await fwd.send_toward(d.id, KIND, b"\x02" + ours + sealed, 10)
    assert e.value.code == 203
    assert d.fwd.stats["link_wrong_target"] == 1
    # an offer for the right node whose SDP is garbage (sealed properly)
    for garbage in (b"v=0", b"v=0\r\nm=application 9 nonsense", b"\xff" * 64):
        secret = nacl.public.PrivateKey.generate()
        ours = bytes(secret.public_key)
        reply = await fwd.send_toward(d.id, KIND, b"\x01" + ours, 10)
        box = nacl.public.Box(secret, nacl.public.PublicKey(reply[1:]))
        sealed = box.encrypt(bencode.encode({b"id": a.id, b"tgt": d.id, b"sdp": garbage}))
        with pytest.raises(KrpcError) as e:
            await fwd.send_toward(d.id, KIND, b"\x02" + ours + sealed, 10)
        assert e.value.code == 203
    assert d.fwd.stats["link_bad_sdp"] == 3
    assert d.fwd.stats["handler_failed"] == 0
    # a node id nobody has (D's with its last byte changed): D is the closest node,
    # is not the target, and knows nobody closer: the coupling fails with "no route"
    with pytest.raises(KrpcError) as e:
        await a.coupler.couple(a.driver, d.id[:19] + bytes([d.id[19] ^ 1]))
    assert e.value.code == 253
    assert a.driver.link_for(d.id) is None


async def test_a_flood_over_a_link_is_limited_and_others_still_get_through(
        chain: list[OverlayNode]) -> None:
    a, b, _c, d = chain

    async def echo(payload: bytes, origin: bytes) -> bytes:
        return payload

    for o in (a, d):
        o.fwd.handle(b"echo", echo)

    async def one(i: int) -> int:
        args = {b"mid": i.to_bytes(8, "big"), b"tgt": d.id, b"hops": 1, b"kind": b"echo",
                b"o": a.id, b"p": b"flood"}
        try:
            await a.node.query(LinkAddr.of(b.id), METHOD, args)
            return 0
        except KrpcError as exc:
            return exc.code

    # More than the forwarder lets one source send (SOURCE_BURST), fewer than a link
    # carries in a burst (FRAME_BURST, queries one way and answers the other, beside
    # keepalives): every query is answered, by B or by its forwarder's refusal. (400
    # queries ran into the link's own frame budget now and then: a dropped frame is a
    # timeout, not what this test is about.)
    flood = int(SOURCE_BURST + (FRAME_BURST - SOURCE_BURST) / 2)
    started = asyncio.get_running_loop().time()
    codes = await asyncio.gather(*(one(i) for i in range(flood)))
    elapsed = asyncio.get_running_loop().time() - started
    assert set(codes) <= {0, ERR_RATE_LIMITED}
    assert codes.count(ERR_RATE_LIMITED) == b.fwd.stats["rate_limited"] > 0
    # B relayed only its share for A toward C (a token bucket: burst, then its rate)
    assert b.fwd.stats["forwarded"] <= PAIR_BURST + PAIR_RATE * elapsed + 1
    # others are served: D's message to A goes through C and B (C may have refused some
    # of the flood B relayed on toward D: B's share at C, docs/overlay.md)
    assert await d.fwd.send_toward(a.id, b"echo", b"still here", 10) == b"still here"
