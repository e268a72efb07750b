"""The core's one way to add a KRPC extension method (``DhtProtocol.add_method``) and to
send one (``DhtProtocol.query``), on a pair of in-memory protocol objects."""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

import pytest

from hailing.dht import Answered, CommandFailed, DhtProtocol, Event
from hailing.errors import KrpcError, LocalProtocolError, QueryTimeout, RemoteProtocolError
from hailing.krpc import Error, Query, Response, decode_message, encode_message

A = ("198.18.0.1", 6881)
B = ("198.18.0.2", 6881)


class Pair:
    """Two cores wired together by hand: ``deliver`` moves every datagram across."""

    def __init__(self, seed: int = 1) -> None:
        self.a = DhtProtocol(rng=random.Random(seed), now=0.0)
        self.b = DhtProtocol(rng=random.Random(seed + 1), now=0.0)
        self.now = 0.0

    def deliver(self) -> None:
        moved = True
        while moved:
            moved = False
            for src, dst, addr in ((self.a, self.b, A), (self.b, self.a, B)):
                for data, to in src.datagrams_to_send(self.now):
                    if to == (B if src is self.a else A):
                        dst.receive_datagram(data, addr, self.now)
                        moved = True

    def events(self, p: DhtProtocol) -> list[Event]:
        out = []
        while (ev := p.next_event()) is not None:
            out.append(ev)
        return out


def echo(args: dict[bytes, Any], addr: Hashable, now: float) -> dict[bytes, Any]:
    x = args.get(b"x")
    if type(x) is not int:
        raise RemoteProtocolError("argument 'x' must be an integer")
    if x < 0:
        raise RemoteProtocolError("too negative", 241)
    if x == 13:
        raise ValueError("a bug in the handler")
    return {b"y": x + 1, b"id": b"a forged id is replaced"}


def test_an_added_method_is_answered_and_counted() -> None:
    pair = Pair()
    pair.b.add_method(b"hailing_echo", echo)
    qid = pair.a.query(B, b"hailing_echo", {b"x": 41}, 0.0)
    pair.deliver()
    (ev,) = pair.events(pair.a)
    assert isinstance(ev, Answered) and ev.qid == qid
    assert ev.reply == {b"y": 42, b"id": pair.b.node_id}  # our id, not the handler's
    assert ev.node_id == pair.b.node_id
    assert pair.b.stats["q_hailing_echo"] == 1


@pytest.mark.parametrize(("args", "code"), [
    ({}, 203), ({b"x": b"nope"}, 203), ({b"x": -1}, 241), ({b"x": 13}, 202),
])
def test_handler_errors_become_krpc_errors(args: dict[bytes, Any], code: int) -> None:
    pair = Pair()
    pair.b.add_method(b"hailing_echo", echo)
    pair.a.query(B, b"hailing_echo", args, 0.0)
    pair.deliver()
    (ev,) = pair.events(pair.a)
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, KrpcError)
    assert ev.error.code == code
    assert pair.b.stats["q_hailing_echo"] == 1
    assert pair.b.stats["errors_sent"] == 1
    assert pair.b.stats["handler_failed_hailing_echo"] == (1 if code == 202 else 0)


def test_unknown_and_removed_methods_are_204() -> None:
    pair = Pair()
    pair.a.query(B, b"hailing_echo", {b"x": 1}, 0.0)
    pair.deliver()
    (ev,) = pair.events(pair.a)
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, KrpcError)
    assert ev.error.code == 204
    pair.b.add_method(b"hailing_echo", echo)
    pair.b.remove_method(b"hailing_echo")
    pair.b.remove_method(b"ping")  # only added methods can go
    pair.a.query(B, b"hailing_echo", {b"x": 1}, 0.0)
    pair.a.query(B, b"ping", {}, 0.0)
    pair.deliver()
    failed, pong = pair.events(pair.a)
    assert isinstance(failed, CommandFailed) and isinstance(failed.error, KrpcError)
    assert failed.error.code == 204
    assert isinstance(pong, Answered)
    assert pair.b.stats["q_unknown"] == 2


def test_add_method_refuses_misuse() -> None:
    p = Pair().b
    p.add_method(b"hailing_echo", echo)
    for name in (b"hailing_echo", b"ping", b"", b"\xff", b"x" * 65):
        with pytest.raises(LocalProtocolError):
            p.add_method(name, echo)


def test_a_query_without_answer_times_out() -> None:
    pair = Pair()
    pair.a.query(B, b"hailing_echo", {b"x": 1}, 0.0)
    pair.a.datagrams_to_send(0.0)  # lost
    deadline = pair.a.get_timer()
    while deadline is not None and not (evs := pair.events(pair.a)):
        pair.a.handle_timer(deadline)
        deadline = pair.a.get_timer()
    (ev,) = evs
    assert isinstance(ev, CommandFailed) and isinstance(ev.error, QueryTimeout)


def test_a_read_only_node_answers_no_extension() -> None:
    from hailing.dht import DhtConfig

    p = DhtProtocol(DhtConfig(read_only=True), rng=random.Random(3), now=0.0)
    p.add_method(b"hailing_echo", echo)
    q = Query(b"tt", b"hailing_echo", {b"id": bytes(20), b"x": 1}, None, False)
    p.receive_datagram(encode_message(q), A, 0.0)
    assert p.datagrams_to_send(0.0) == []


def test_garbage_method_names_do_not_grow_the_stats() -> None:
    p = Pair().b
    p.add_method(b"hailing_echo", echo)
    for i in range(50):
        q = Query(b"t" + bytes([i]), b"m%d" % i, {b"id": bytes(20)}, None, False)
        p.receive_datagram(encode_message(q), A, 0.0)
    replies = [decode_message(d) for d, _ in p.datagrams_to_send(0.0)]
    assert all(isinstance(r, Error) and r.code == 204 for r in replies
               if not isinstance(r, Query))
    assert not any(isinstance(r, Response) for r in replies)
    assert p.stats["q_unknown"] == 50
    assert not [k for k in p.stats if k.startswith("q_m")]
