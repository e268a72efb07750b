"""STUN on the DHT port, sans-IO: the responder on RFC 5769's test vectors, garbage, the
client's probe and classification with a hand-advanced clock (hailing.nat.stun)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from aioice import stun
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing.nat.stun import (
    KEEPALIVE_INTERVAL,
    PROBE_INTERVAL,
    PROBE_RETRY,
    TRIES,
    TX_TIMEOUT,
    NatInfo,
    StunEndpoint,
    answer,
    classify,
    distinct_key,
    is_stun,
    pick_servers,
)

Addr = tuple[str, int]

# RFC 5769 section 2.1: a Binding request (an ICE check: SOFTWARE, PRIORITY,
# ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT).
RFC5769_REQUEST = bytes.fromhex(
    "00010058" "2112a442" "b7e7a701bc34d686fa87dfae"
    "80220010" "5354554e" "20746573" "7420636c" "69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b1" "51263b36"
    "00060009" "6576746a" "3a683676" "59202020"
    "00080014" "9aeaa70c" "bfd8cb56" "781ef2b5" "b2d3f249" "c1b571a2"
    "80280004" "e57a3bcf"
)
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
# Sections 2.2 and 2.3: the XOR-MAPPED-ADDRESS attributes of the responses for
# 192.0.2.1:32853 and [2001:db8:1234:5678:11:2233:4455:6677]:32853.
XMA_V4 = bytes.fromhex("00200008" "0001a147" "e112a643")
XMA_V6 = bytes.fromhex("00200014" "0002a147" "0113a9fa" "a5d3f179" "bc25f4b5" "bed2b9d9")
# Section 2.2: the IPv4 response itself (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
# FINGERPRINT), as a server other than a hailing node sends it.
RFC5769_RESPONSE_V4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220"
    "002000080001a147e112a64300080014"
    "2b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96"
)

V4: Addr = ("192.0.2.1", 32853)
V6: Addr = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def binding_request(tid: bytes = RFC5769_TID, fingerprint: bool = False) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, tid)
    if fingerprint:
        msg.add_fingerprint()
    return bytes(msg)


# -- the responder ------------------------------------------------------------------------


@pytest.mark.parametrize(("addr", "xma"), [(V4, XMA_V4), (V6, XMA_V6)], ids=["ipv4", "ipv6"])
def test_rfc5769_request_gets_the_vectors_mapped_address(addr: Addr, xma: bytes) -> None:
    stats: Counter[str] = Counter()
    reply = answer(RFC5769_REQUEST, addr, stats)
    assert reply is not None
    msg = stun.parse_message(reply)  # FINGERPRINT checked: the request had one
    assert msg.message_class == stun.Class.RESPONSE
    assert msg.message_method == stun.Method.BINDING
    assert msg.transaction_id == RFC5769_TID
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert reply[20:20 + len(xma)] == xma  # byte for byte as RFC 5769 shows it
    # Minimal: the mapped address and the fingerprint only (no SOFTWARE, nothing more).
    assert set(msg.attributes) == {"XOR-MAPPED-ADDRESS", "FINGERPRINT"}
    assert stats == Counter(stun_requests=1, stun_answered=1)


def test_plain_request_gets_a_plain_answer() -> None:
    reply = answer(binding_request(), V4, Counter())
    assert reply is not None
    assert set(stun.parse_message(reply).attributes) == {"XOR-MAPPED-ADDRESS"}
    assert len(reply) == 32  # 20-byte header + 12-byte attribute


@pytest.mark.parametrize("name", ["cookie", "length", "fingerprint", "short", "method",
                                  "unaligned"])
def test_malformed_requests_are_garbage(name: str) -> None:
    good = binding_request(fingerprint=True)
    bad = {
        "cookie": good[:4] + b"\x21\x12\xa4\x43" + good[8:],
        "length": good[:2] + b"\x00\x10" + good[4:],
        "fingerprint": good[:-1] + bytes([good[-1] ^ 1]),
        "short": good[:19],
        "method": b"\x00\x3f" + good[2:],  # method 0x3f: unknown to aioice
        "unaligned": good + b"\x00",
    }[name]
    stats: Counter[str] = Counter()
    assert answer(bad, V4, stats) is None
    assert stats == Counter(stun_garbage=1)


@pytest.mark.parametrize(("method", "cls"), [
    (stun.Method.BINDING, stun.Class.INDICATION),
    (stun.Method.BINDING, stun.Class.RESPONSE),
    (stun.Method.ALLOCATE, stun.Class.REQUEST),
])
def test_other_messages_are_ignored(method: stun.Method, cls: stun.Class) -> None:
    stats: Counter[str] = Counter()
    assert answer(bytes(stun.Message(method, cls)), V4, stats) is None
    assert stats == Counter(stun_ignored=1)


def test_an_opaque_address_is_not_answered() -> None:
    stats: Counter[str] = Counter()
    assert answer(binding_request(), ("not-an-ip", 1), stats) is None
    assert stats == Counter(stun_requests=1, stun_unanswerable=1)


def test_demux_rule_is_rfc7983() -> None:
    assert [b for b in range(256) if is_stun(bytes([b]))] == [0, 1, 2, 3]
    assert not is_stun(b"") and not is_stun(b"d1:ad2:id20:")


@settings(max_examples=500, deadline=None)
@given(first=st.integers(0, 3), rest=st.binary(max_size=120))
def test_garbage_never_raises_and_is_counted(first: int, rest: bytes) -> None:
    data = bytes([first]) + rest
    stats: Counter[str] = Counter()
    reply = answer(data, V4, stats)
    assert sum(stats.values()) in (1, 2)  # one verdict (an answered request: two counters)
    assert (reply is not None) == (stats["stun_answered"] == 1)
    ep = StunEndpoint(random.Random(1), 0.0)
    ep.receive(data, V4, 0.0)
    assert sum(ep.stats.values()) in (1, 2)


@settings(max_examples=300, deadline=None)
@given(header_tail=st.binary(min_size=12, max_size=12), body=st.binary(max_size=96))
def test_wellformed_headers_with_garbage_attributes_never_raise(header_tail: bytes,
                                                                body: bytes) -> None:
    """Past the header checks: the attributes are what aioice's parser must survive."""
    body = body + bytes(-len(body) % 4)
    data = b"\x00\x01" + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + header_tail + body
    stats: Counter[str] = Counter()
    answer(data, V4, stats)
    assert stats["stun_garbage"] + stats["stun_answered"] == 1


# -- classification -----------------------------------------------------------------------

L: Addr = ("10.0.0.2", 6881)
P: Addr = ("198.18.0.9", 6881)


@pytest.mark.parametrize(("answers", "expected"), [
    ([], ("unknown", None)),
    ([(P, L)], ("unknown", True)),
    ([(L, L)], ("unknown", False)),
    ([(L, L), (L, L), (L, L)], ("public", False)),
    ([(P, L), (P, L), (P, L)], ("endpoint-independent", True)),
    ([(P, L), (("198.18.0.9", 7000), L)], ("endpoint-dependent", True)),
    ([(P, L), (("198.18.0.10", 6881), L)], ("endpoint-dependent", True)),
    ([(L, L), (P, L)], ("endpoint-dependent", True)),
    # IPv6 spelled two ways is one address.
    ([(("2001:db8::1", 1), ("2001:db8:0::1", 1))] * 2, ("public", False)),
])
def test_classify(answers: list[tuple[Addr, Addr]], expected: tuple[str, bool | None]) -> None:
    assert classify(answers) == expected


def test_pick_servers_prefers_known_and_distinct_ips() -> None:
    key = lambda a: distinct_key(a, False)  # noqa: E731
    known = [("198.18.0.1", 1), ("198.18.0.1", 2), ("198.18.0.2", 1)]
    nodes = [(f"198.18.0.{i}", 6881) for i in range(1, 30)]
    picked = pick_servers(known, nodes, key, random.Random(3), count=4, discover=8)
    assert picked[:2] == [("198.18.0.1", 1), ("198.18.0.2", 1)]
    assert len(picked) == 10 and len({a[0] for a in picked}) == 10
    # Enough known servers: no discovery.
    known4 = [(f"198.18.0.{i}", 1) for i in range(1, 6)]
    assert pick_servers(known4, nodes, key, random.Random(3), count=4) == known4[:4]


def test_pick_servers_tries_hailing_nodes_before_the_rest() -> None:
    key = lambda a: distinct_key(a, False)  # noqa: E731
    hailing = [(f"198.18.1.{i}", 1) for i in range(3)]
    nodes = [(f"198.18.0.{i}", 1) for i in range(50)] + hailing
    for seed in range(20):
        picked = pick_servers([], nodes, key, random.Random(seed), count=4, discover=8,
                              hailing=hailing)
        assert sorted(picked[:3]) == hailing and len(picked) == 8

def test_loopback_servers_are_told_apart_by_port_when_exempt() -> None:
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    assert distinct_key(a, True) != distinct_key(b, True)
    assert distinct_key(a, False) == distinct_key(b, False)


# -- the client, with a hand-advanced clock -----------------------------------------------


class FixedIds(random.Random):
    """An rng whose transaction ids are RFC 5769's (then counting up)."""

    def __init__(self) -> None:
        super().__init__(0)
        self.n = 0

    def randbytes(self, n: int) -> bytes:
        self.n += 1
        return RFC5769_TID if self.n == 1 else self.n.to_bytes(n, "big")


def serve(ep: StunEndpoint, mapped_of: dict[Addr, Addr], now: float,
          drop: set[Addr] = frozenset()) -> int:  # type: ignore[assignment]
    """Answer every request ``ep`` sends as a server at its destination would, seeing
    the client at ``mapped_of[server]``; returns the number of requests."""
    sent = ep.datagrams_to_send()
    for data, server in sent:
        if server in drop:
            continue
        reply = answer(data, mapped_of[server], Counter())
        assert reply is not None
        ep.receive(reply, server, now)
    return len(sent)


SERVERS: list[Addr] = [("198.18.0.1", 6881), ("198.18.0.2", 6881), ("198.18.0.3", 6881)]


@pytest.mark.parametrize(("mapped", "mapping"), [
    ([L, L, L], "public"),
    ([P, P, P], "endpoint-independent"),
    ([P, ("198.18.0.9", 1024), ("198.18.0.9", 1025)], "endpoint-dependent"),
])
def test_probe_classifies(mapped: list[Addr], mapping: str) -> None:
    ep = StunEndpoint(random.Random(5), 0.0)
    assert ep.start_probe([(s, L) for s in SERVERS], 1.0)
    assert ep.probing
    assert serve(ep, dict(zip(SERVERS, mapped, strict=True)), 1.05) == 3
    assert not ep.probing
    info = ep.info
    assert info == NatInfo(mapped[0], mapping, tuple(SERVERS), 1.05,  # type: ignore[arg-type]
                           behind_nat=mapping != "public")
    assert ep.servers() == SERVERS
    assert ep.next_probe == 1.05 + PROBE_INTERVAL
    assert ep.stats["stun_responses"] == 3


def test_retransmits_then_gives_up() -> None:
    ep = StunEndpoint(random.Random(5), 0.0)
    ep.start_probe([(SERVERS[0], L), (SERVERS[1], L)], 0.0)
    assert len(ep.datagrams_to_send()) == 2
    sends, now = 2, 0.0
    while ep.probing:
        t = ep.get_timer()
        assert t is not None and t > now
        now = t
        ep.handle_timer(now)
        sends += len(ep.datagrams_to_send())
    assert sends == 2 * TRIES
    assert now == pytest.approx(TX_TIMEOUT)
    assert ep.info.mapping == "unknown" and ep.info.external is None
    assert ep.stats["stun_timeouts"] == 2
    assert ep.next_probe == pytest.approx(TX_TIMEOUT + PROBE_RETRY)


def test_late_and_unknown_responses_are_counted_and_dropped() -> None:
    ep = StunEndpoint(FixedIds(), 0.0)
    ep.start_probe([(SERVERS[0], L)], 0.0)
    (request, server), = ep.datagrams_to_send()
    assert stun.parse_message(request).transaction_id == RFC5769_TID
    # From another address than the one asked: not ours.
    ep.receive(RFC5769_RESPONSE_V4, SERVERS[1], 0.1)
    assert ep.probing and ep.stats["stun_unmatched"] == 1
    # RFC 5769's own response (with SOFTWARE and MESSAGE-INTEGRITY) is understood.
    ep.receive(RFC5769_RESPONSE_V4, server, 0.1)
    assert not ep.probing
    assert ep.info.external == V4 and ep.info.behind_nat is True
    # The same response again, later: no transaction any more.
    ep.receive(RFC5769_RESPONSE_V4, server, 0.2)
    assert ep.stats["stun_unmatched"] == 2 and ep.stats["stun_responses"] == 1


def test_an_error_response_ends_the_transaction_without_an_answer() -> None:
    ep = StunEndpoint(random.Random(2), 0.0)
    ep.start_probe([(SERVERS[0], L)], 0.0)
    (request, server), = ep.datagrams_to_send()
    err = stun.Message(stun.Method.BINDING, stun.Class.ERROR,
                       stun.parse_message(request).transaction_id,
                       {"ERROR-CODE": (400, "Bad Request")})
    ep.receive(bytes(err), server, 0.1)
    assert not ep.probing and ep.info.mapping == "unknown"
    assert ep.stats["stun_errors"] == 1 and ep.servers() == []


def test_a_probe_with_no_server_ends_at_once_and_retries_sooner() -> None:
    ep = StunEndpoint(random.Random(2), 0.0)
    assert ep.probe_due(PROBE_INTERVAL) and not ep.probe_due(1.0)
    ep.start_probe([], 10.0)
    assert not ep.probing and ep.info.checked_at == 10.0
    assert ep.next_probe == 10.0 + PROBE_RETRY


def test_no_busy_timer_while_a_probe_runs() -> None:
    ep = StunEndpoint(random.Random(2), 0.0, first_probe=0.0)
    ep.start_probe([(SERVERS[0], L)], 5.0)
    t = ep.get_timer()
    assert t is not None and t > 5.0  # the overdue next_probe does not count while probing


def test_keepalives_only_behind_a_nat_and_bounded() -> None:
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, L), 0.01)
    assert ep.info.mapping == "public"
    assert not ep.keepalive_due(1000.0)  # public: nothing to keep open
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, P), 0.01)
    assert ep.info.behind_nat
    due = ep.get_timer()
    assert due is not None and due <= 0.01 + KEEPALIVE_INTERVAL
    assert ep.keepalive_due(due)
    holders = [(f"198.18.1.{i}", 6881) for i in range(100)]
    assert ep.keepalive(holders, due) == 32
    assert len(ep.datagrams_to_send()) == 32  # one each, no more
    assert not ep.keepalive_due(due + 1.0)
    assert ep.keepalive_due(due + KEEPALIVE_INTERVAL)
    # Unanswered keepalives are not retransmitted; they time out quietly.
    ep.handle_timer(due + TX_TIMEOUT)
    assert ep.datagrams_to_send() == [] and ep.stats["stun_timeouts"] == 32


def test_a_keepalive_that_sees_a_new_mapping_asks_for_a_probe() -> None:
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, P), 0.01)
    ep.keepalive(SERVERS[:1], 30.0)
    serve(ep, {SERVERS[0]: ("198.18.0.9", 9999)}, 30.01)  # the NAT rebound us
    assert ep.stats["stun_mapping_changed"] == 1
    assert ep.probe_due(30.01)


def test_servers_not_heard_from_for_long_are_forgotten() -> None:
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, L), 0.01)
    later = 0.01 + 3 * PROBE_INTERVAL - 1.0
    ep.start_probe([(SERVERS[0], L)], later)
    serve(ep, {SERVERS[0]: L}, later)
    assert ep.servers() == SERVERS  # not yet
    much_later = later + 2.0
    ep.start_probe([(SERVERS[0], L)], much_later)
    serve(ep, {SERVERS[0]: L}, much_later)
    assert ep.servers() == SERVERS[:1]


def test_pending_transactions_are_bounded() -> None:
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, P), 0.01)
    for i in range(5):
        ep.keepalive([(f"198.18.{i}.{j}", 1) for j in range(40)], 30.0 + i)
    assert ep.stats["stun_pending_full"] > 0
    assert len(ep.datagrams_to_send()) == 64


# -- a vanished server is forgotten at once -----------------------------------------------


def test_a_server_is_forgotten_at_its_first_unanswered_keepalive() -> None:
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, P), 0.01)
    assert ep.servers() == SERVERS and ep.next_probe == 0.01 + PROBE_INTERVAL
    ep.keepalive(SERVERS, 30.0)
    serve(ep, dict.fromkeys(SERVERS, P), 30.01, drop={SERVERS[1]})  # it stopped
    assert sorted(ep.servers()) == SERVERS  # not yet: its transaction is still open
    ep.handle_timer(30.0 + TX_TIMEOUT)
    assert sorted(ep.servers()) == [SERVERS[0], SERVERS[2]]
    assert ep.stats["stun_servers_forgotten"] == 1
    # fewer servers than a probe wants: the next probe looks for others soon
    assert ep.next_probe == pytest.approx(30.0 + TX_TIMEOUT + PROBE_RETRY)


def test_forget_drops_a_server_that_left_another_request_unanswered() -> None:
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(ep, dict.fromkeys(SERVERS, L), 0.01)
    assert ep.info.mapping == "public"  # no keepalives: nothing else would notice
    assert ep.forget(("198.18.0.2", 6881), 50.0)  # a KRPC query to its port timed out
    assert ep.servers() == [SERVERS[0], SERVERS[2]]
    assert not ep.forget(("198.18.0.2", 6881), 51.0)  # once
    assert not ep.forget(("198.18.0.7", 6881), 51.0)  # never a server
    assert ep.stats["stun_servers_forgotten"] == 1
    assert ep.next_probe == 50.0 + PROBE_RETRY


def test_a_keepalive_answer_never_makes_a_holder_a_server() -> None:
    # Keepalives go to the listens' storing nodes, which may sit behind NATs of their
    # own (they answer our DHT socket, not ICE's): only a probe picks STUN servers.
    ep = StunEndpoint(random.Random(4), 0.0)
    ep.start_probe([(s, L) for s in SERVERS[:2]], 0.0)
    serve(ep, dict.fromkeys(SERVERS, P), 0.01)
    ep.keepalive(SERVERS, 30.0)
    serve(ep, dict.fromkeys(SERVERS, P), 30.01)
    assert sorted(ep.servers()) == SERVERS[:2] and ep.stats["stun_responses"] == 5


def test_a_node_behind_a_nat_declines_to_serve_and_is_forgotten_at_once() -> None:
    """A NATed hailing node answers a DHT socket its NAT has a mapping to, but not ICE's
    own sockets: listed as a STUN server it would cost every call ICE's STUN timeout
    (and a NATed caller listing it first its reflexive candidate)."""
    natted = StunEndpoint(random.Random(1), 0.0)
    natted.start_probe([(s, L) for s in SERVERS], 0.0)
    serve(natted, dict.fromkeys(SERVERS, P), 0.01)
    assert natted.info.behind_nat
    client = StunEndpoint(random.Random(2), 0.0)
    client.start_probe([(SERVERS[0], L), (P, L)], 1.0)
    for data, server in client.datagrams_to_send():
        if server == P:
            natted.receive(data, L, 1.01)
            (reply, to), = natted.datagrams_to_send()
            assert to == L and stun.parse_message(reply).message_class == stun.Class.ERROR
            client.receive(reply, P, 1.02)
        else:
            client.receive(answer(data, L, Counter()) or b"", server, 1.02)
    assert not client.probing and client.servers() == [SERVERS[0]]
    assert natted.stats["stun_declined"] == 1 and client.stats["stun_errors"] == 1
    # its servers vanish: a probe nobody answers does not make it forget its NAT
    natted.start_probe([(s, L) for s in SERVERS], 400.0)
    for t in (400.25, 400.75, 400.0 + TX_TIMEOUT):  # two retransmissions, then given up
        natted.handle_timer(t)
    assert not natted.probing and natted.info.mapping == "unknown"
    assert natted.info.behind_nat and natted.keepalive_due(500.0)
    natted.datagrams_to_send()
    natted.receive(binding_request(), L, 401.0)
    (reply, _), = natted.datagrams_to_send()
    assert stun.parse_message(reply).message_class == stun.Class.ERROR
    public = StunEndpoint(random.Random(3), 0.0)  # not known to be behind a NAT: serves
    public.receive(binding_request(), L, 2.0)
    (reply, _), = public.datagrams_to_send()
    assert stun.parse_message(reply).message_class == stun.Class.RESPONSE
