"""A storing node under a hostile source, on real sockets (issue 9 items 2, 5, 7, 8): a
flood of stores from one source churns only that source's entries, rate limits key on
the IPv4 address or IPv6 /64 and can be exercised on loopback, a listen reply always
fits in a datagram, and pushes need the listener's push token.

The loopback exemption is turned off (``DhtConfig(exempt_loopback=False)``) where real
limits are exercised: then 127.0.0.1 is one source and 127.0.0.2 another."""

from __future__ import annotations

import asyncio

from netsim import MemoryNet, Udp, ask, build_network, krpc_query, sockets

from hailing.dht import DhtConfig, InboxMessage, Listening, StoreDone
from hailing.dht import inbox as ib
from hailing.dht.responder import ERR_RATE_LIMITED
from hailing.errors import SERVER_ERROR
from hailing.krpc import Error, IPAddressCodec, Response, decode_message, encode_message
from hailing.krpc._codec import MAX_DATAGRAM
from hailing.node import DhtNode

KEY = b"K" * 20
STRICT = DhtConfig(exempt_loopback=False)


# -- item 2: a store flood from one source ------------------------------------------------


async def test_an_announce_flood_from_one_ip_churns_only_its_own_entries() -> None:
    # Before, one IP (200 ports x 10,000 info-hashes) filled the peer store and every
    # later announce from anyone else pushed out another's swarm, after a full scan.
    cfg = DhtConfig(exempt_loopback=False, max_torrents=60, max_peers_per_source=40,
                    source_burst=10_000)
    async with DhtNode(("127.0.0.1", 0), config=cfg) as node, \
            sockets(4) as flood, sockets(1, "127.0.0.2") as (legit,):

        async def announce(s: Udp, i: int, token: bytes) -> None:
            args = {b"info_hash": i.to_bytes(20, "big"), b"port": 6881, b"token": token}
            assert await s.ask(node.address, b"announce_peer", args) == {b"id": node.node_id}

        tokens = [await s.token(node.address) for s in flood]
        for i in range(100):  # four ports of one IP
            await announce(flood[i % 4], i, tokens[i % 4])
        legit_token = await legit.token(node.address)
        for i in range(1000, 1010):
            await announce(legit, i, legit_token)
        for i in range(100, 300):  # the flood goes on
            await announce(flood[i % 4], i, tokens[i % 4])
        for i in range(1000, 1010):
            r = await legit.ask(node.address, b"get_peers", {b"info_hash": i.to_bytes(20, "big")})
            assert r[b"values"] == [IPAddressCodec().pack(("127.0.0.2", 6881))]
        table = node.core.peers.table
        assert table.held_by(b"\x7f\x00\x00\x01") == 40 and len(node.core.peers) == 50
        assert node.stats["peers_displaced"] == 300 - 40
        assert "pong" not in await legit.ask(node.address, b"ping", {})  # still answering


# -- item 8: rate limits per IPv4 address / IPv6 /64, on loopback --------------------------


async def test_post_rate_limit_applies_on_loopback_without_the_exemption() -> None:
    async with DhtNode(("127.0.0.1", 0), config=STRICT) as node, \
            sockets(3) as flood, sockets(1, "127.0.0.2") as (other,):
        tokens = [await s.token(node.address) for s in flood]
        codes = []
        for i in range(int(ib.POST_BURST) + 10):  # three ports, one source
            s = i % 3
            r = await flood[s].ask(node.address, b"hailing_post",
                                   {b"key": KEY, b"token": tokens[s], b"v": b"m%d" % i})
            codes.append(r.get(b"error"))
        assert codes.count(None) <= ib.POST_BURST + 1 and codes[-1] == ERR_RATE_LIMITED
        assert node.stats["rate_limited_hailing_post"] >= 9
        token = await other.token(node.address)  # another source is not affected
        r = await other.ask(node.address, b"hailing_post", {b"key": KEY, b"token": token, b"v": b"x"})
        assert r == {b"id": node.node_id}


def test_post_rate_limit_keys_on_the_ipv6_64() -> None:
    # Before: keyed on the full address, so 1,000 addresses of one /64 had 1,000 buckets.
    net = MemoryNet()
    node = net.add()
    for i in range(1000):  # all sent at once: no refill meanwhile
        src = (f"2001:db8:0:7::{i + 1:x}", 1000 + i)
        token = node.tokens.issue(node.codec.ip_key(src))
        net.listen(src)
        net.inject(krpc_query(b"hailing_post", {b"key": KEY, b"token": token, b"v": b"m%d" % i}),
                   src, net.addr_of(node))
    net.run(duration=0.5)
    answers = [decode_message(d) for out in net.outside.values() for d, _ in out]
    assert len(answers) == 1000
    assert sum(isinstance(m, Response) for m in answers) == ib.POST_BURST
    assert node.stats["rate_limited_hailing_post"] == 1000 - ib.POST_BURST
    src = ("2001:db8:0:8::1", 1000)  # the next /64 is another source
    token = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))[b"token"]
    assert ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": token,
                                                           b"v": b"y"})) == {b"id": node.node_id}
    assert len(node.responder.inbox.post_budget) == 2


def test_store_methods_share_a_work_budget_per_source() -> None:
    net = MemoryNet()
    node = net.add(config=DhtConfig(source_burst=30, source_rate=0.01))
    src = ("192.0.2.9", 1000)
    token = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))[b"token"]
    codes = []
    for i in range(40):
        args = {b"info_hash": i.to_bytes(20, "big"), b"port": 1, b"token": token}
        codes.append(ask(net, node, src, krpc_query(b"announce_peer", args)).get(b"error"))
    assert codes[:30] == [None] * 30 and codes[-1] == SERVER_ERROR
    r = ask(net, node, src, krpc_query(b"put", {b"token": token, b"v": b"x"}))
    assert r == {b"error": SERVER_ERROR}
    assert node.stats["rate_limited_announce_peer"] >= 5 and node.stats["rate_limited_put"] == 1
    # a bad token costs nothing: a spoofed sender cannot spend its victim's budget
    other = ("192.0.2.10", 1000)
    for _ in range(50):
        ask(net, node, other, krpc_query(b"put", {b"token": b"12345678", b"v": b"x"}))
    token = ask(net, node, other, krpc_query(b"get", {b"target": KEY}))[b"token"]
    assert ask(net, node, other, krpc_query(b"put", {b"token": token, b"v": b"x"})) \
        == {b"id": node.node_id}


# -- item 5: a listen reply always fits in a datagram ------------------------------------


def test_the_largest_listen_reply_fits_in_a_datagram() -> None:
    values, more = ib.fit_values([b"x" * ib.MAX_VALUE] * ib.MAX_VALUES_PER_KEY)
    assert more == ib.MAX_VALUES_PER_KEY - len(values) > 0
    r = {b"id": b"i" * 20, b"ttl": 600, b"values": values, b"more": more}
    worst = Response(b"t" * 16, r, b"v" * 300, b"\x00" * 18)
    assert len(encode_message(worst)) <= MAX_DATAGRAM
    # and small values all fit
    assert ib.fit_values([b"abc"] * 16) == ([b"abc"] * 16, 0)


async def test_a_listener_registers_and_gets_every_value_of_a_full_inbox_over_udp() -> None:
    # Before: four 1,000-byte posts made the listen reply exceed 4,096 bytes, which the
    # listener's decoder refused: it could not register and never got the values.
    async with DhtNode(("127.0.0.1", 0)) as node, sockets(2) as posters:
        posted = []
        for i in range(ib.MAX_VALUES_PER_KEY):
            s = posters[i % 2]
            v = bytes([65 + i]) * ib.MAX_VALUE
            r = await s.ask(node.address, b"hailing_post",
                            {b"key": KEY, b"token": await s.token(node.address), b"v": v})
            assert r == {b"id": node.node_id}
            posted.append(v)
        async with DhtNode(("127.0.0.1", 0), bootstrap=[node.address]) as client:
            await client.bootstrap()
            assert await client.listen(KEY) == 1
            got = [(await asyncio.wait_for(client.inbox(), 5)).value for _ in posted]
            assert sorted(got) == sorted(posted)
            assert node.stats["pushes_sent"] == ib.MAX_VALUES_PER_KEY - 3  # 3 fit in the reply


# -- item 7: pushes need the listener's push token -----------------------------------------


async def test_a_push_without_the_listeners_token_is_refused_over_udp() -> None:
    async with DhtNode(("127.0.0.1", 0)) as node, sockets(2) as (attacker, poster), \
            DhtNode(("127.0.0.1", 0), bootstrap=[node.address]) as client:
        await client.bootstrap()
        assert await client.listen(KEY) == 1
        push = {b"key": KEY, b"v": b"forged offer"}
        assert await attacker.ask(client.address, b"hailing_push", push) == {b"error": 203}
        bad = {**push, b"ptoken": b"12345678"}
        assert await attacker.ask(client.address, b"hailing_push", bad) == {b"error": 203}
        # a token issued to the storing node's IP is no use from another IP
        stolen = client.core.inboxes.push_token(("127.0.0.9", 1))
        assert await attacker.ask(client.address, b"hailing_push", {**push, b"ptoken": stolen}) \
            == {b"error": 203}
        assert client.stats["push_bad_token"] == 3
        # the storing node's pushes carry the token and arrive
        r = await poster.ask(node.address, b"hailing_post",
                             {b"key": KEY, b"token": await poster.token(node.address),
                              b"v": b"real offer"})
        assert r == {b"id": node.node_id}
        msg = await asyncio.wait_for(client.inbox(), 5)
        assert msg.value == b"real offer" and client._inbox.empty()


def test_a_listen_without_a_push_token_is_refused() -> None:
    net = MemoryNet()
    node = net.add()
    src = ("10.7.0.1", 1000)
    token = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))[b"token"]
    r = ask(net, node, src, krpc_query(b"hailing_listen", {b"key": KEY, b"token": token, b"ttl": 60}))
    assert r == {b"error": 203} and len(node.responder.inbox.listener_table) == 0


def test_push_tokens_outlive_a_renewal_period() -> None:
    net = MemoryNet()
    listener = net.add()
    storing = ("10.7.0.2", 6881)
    ptoken = listener.inboxes.push_token(storing)
    ip_key = listener.codec.ip_key(storing)
    for _ in range(2):  # two rotations (5 to 10 minutes): still good
        listener.tokens.rotate(b"s" * 16)
        assert listener.tokens.check_push(ptoken, ip_key)
    listener.tokens.rotate(b"t" * 16)
    assert not listener.tokens.check_push(ptoken, ip_key)
    assert not listener.tokens.check(ptoken, ip_key)  # never a write token


def test_a_renewed_listen_carries_a_fresh_push_token() -> None:
    net = build_network(12)
    nodes = list(net.nodes.values())
    callee, caller = nodes[3], nodes[8]
    ev = net.wait_event(callee, callee.listen(KEY, net.now, ttl=60))
    assert isinstance(ev, Listening)
    net.run(duration=1200.0)  # many renewals and token rotations
    assert isinstance(net.wait_event(caller, caller.post(KEY, b"late", net.now)), StoreDone)
    net.run(duration=1.0)
    got = [e.value for e in net.events[net.addr_of(callee)] if isinstance(e, InboxMessage)]
    assert got == [b"late"] and callee.stats["push_bad_token"] == 0


def test_waiting_values_that_do_not_fit_are_pushed_to_a_new_listener_only() -> None:
    net = MemoryNet()
    node = net.add()
    for i in range(ib.MAX_VALUES_PER_KEY):
        src = (f"10.6.0.{i}", 1000)
        token = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))[b"token"]
        v = bytes([65 + i]) * ib.MAX_VALUE
        assert ask(net, node, src, krpc_query(b"hailing_post", {b"key": KEY, b"token": token,
                                                               b"v": v})) == {b"id": node.node_id}
    src = ("10.6.1.1", 1000)
    out = net.listen(src)
    token = ask(net, node, src, krpc_query(b"get", {b"target": KEY}))[b"token"]
    listen = krpc_query(b"hailing_listen", {b"key": KEY, b"token": token, b"ttl": 60,
                                            b"ptoken": b"p" * 8})
    out.clear()
    net.inject(listen, src, net.addr_of(node))
    net.run(duration=0.1)
    first = [decode_message(d) for d, _ in out]
    reply = next(m for m in first if isinstance(m, Response))
    assert len(reply.values[b"values"]) == 3 and reply.values[b"more"] == 13
    pushes = [m for m in first if not isinstance(m, Response | Error)]
    assert [m.args[b"v"] for m in pushes] == [bytes([65 + i]) * ib.MAX_VALUE for i in range(3, 16)]  # type: ignore[attr-defined]
    assert all(m.args[b"ptoken"] == b"p" * 8 for m in pushes)  # type: ignore[attr-defined]
    out.clear()
    net.inject(listen, src, net.addr_of(node))  # a renewal: every value was pushed already
    net.run(duration=0.1)
    again = [decode_message(d) for d, _ in out]
    assert len(again) == 1 and again[0].values[b"more"] == 13  # type: ignore[union-attr]
