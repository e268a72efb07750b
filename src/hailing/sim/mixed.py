"""A public-DHT-like network in the simulator: a few hailing nodes among many foreign ones.

The foreign nodes are hailing's core configured as plain Mainline nodes
(``DhtConfig(version=None, extensions=False)``: no ``v``, 204 to hailing's methods, the
sub-overlay's marker ignored), as libtorrent nodes are to hailing. :func:`run_mixed`:

1. ``nodes`` hosts join one every ``join_interval`` seconds through a random host
   already in; a fraction ``hailing`` of them (at least 2) are hailing nodes, spread
   over the joining order;
2. the network settles for ``settle`` virtual seconds (the hailing nodes' announce
   rounds, dht/suboverlay.py);
3. ``calls`` times, a random hailing callee listens on a fresh inbox key and, once it
   listens, a random other hailing caller posts an offer there; a call succeeds when
   the callee receives the offer.

With ``suboverlay=False`` the hailing nodes run inbox lookups over the whole DHT, as
before the sub-overlay: the comparison the tests and docs/benchmarks.md show.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..dht import CommandFailed, DhtConfig, DhtProtocol, Event, InboxMessage, Listening, StoreDone
from .engine import SimNode, Simulator

#: A plain Mainline node, as libtorrent is to hailing.
FOREIGN = DhtConfig(version=None, extensions=False)


@dataclass
class MixedResult:
    calls: int = 0
    delivered: int = 0
    listen_failed: int = 0
    post_failed: int = 0
    #: Virtual seconds from the post to the offer's arrival, per delivered call.
    latencies: list[float] = field(default_factory=list)
    hailing: int = 0
    nodes: int = 0

    @property
    def success_rate(self) -> float:
        return self.delivered / self.calls if self.calls else 0.0


def _start_listen(key: bytes, core: DhtProtocol, now: float) -> int:
    return core.listen(key, now)


def _start_post(key: bytes, value: bytes, core: DhtProtocol, now: float) -> int:
    return core.post(key, value, now)


def _join(via: SimNode, core: DhtProtocol, now: float) -> int:
    return core.bootstrap([via.addr], now)


def _inbox(core: DhtProtocol, now: float) -> int:
    return 0  # InboxMessage events carry qid 0: this registers a callback for them


def run_mixed(
    nodes: int = 300,
    hailing: float = 0.03,
    *,
    seed: int = 1,
    calls: int = 5,
    suboverlay: bool = True,
    join_interval: float = 0.05,
    settle: float = 300.0,
) -> MixedResult:
    """Run the scenario of the module docstring; see :class:`MixedResult`."""
    sim = Simulator(seed, config=FOREIGN, trace=False)
    rng = sim.rng
    count = max(2, round(nodes * hailing))
    chosen = set(rng.sample(range(1, nodes), count))
    hl_config = DhtConfig(suboverlay=suboverlay)
    first = sim.add_node()
    hl: list[SimNode] = []
    res = MixedResult(hailing=count, nodes=nodes)

    def join_one(i: int) -> None:
        via = sim.random_live()
        node = sim.add_node(hl_config if i in chosen else FOREIGN)
        if i in chosen:
            hl.append(node)
        sim.command(node, functools.partial(_join, via), _ignore)

    for i in range(1, nodes):
        sim.call_at(i * join_interval, join_one, i)
    sim.run(until=nodes * join_interval + settle)
    assert first.alive

    for n in range(calls):
        key = hashlib.sha1(b"mixed %d %d" % (seed, n)).digest()
        callee, caller = rng.sample(hl, 2)
        value = b"offer %d" % n
        state: dict[str, Any] = {}

        def on_msg(ev: Event, callee: SimNode = callee, key: bytes = key,
                   value: bytes = value, state: dict[str, Any] = state) -> None:
            if isinstance(ev, InboxMessage) and ev.key == key and ev.value == value:
                state["got"] = sim.now
            else:
                sim.command(callee, _inbox, on_msg)  # someone else's: wait on

        def posted(ev: Event, state: dict[str, Any] = state) -> None:
            if not isinstance(ev, StoreDone):
                res.post_failed += 1

        def listening(ev: Event, caller: SimNode = caller, key: bytes = key,
                      value: bytes = value, state: dict[str, Any] = state) -> None:
            if not isinstance(ev, Listening):
                res.listen_failed += 1
                return
            state["posted"] = sim.now
            sim.command(caller, functools.partial(_start_post, key, value), posted)

        sim.command(callee, _inbox, on_msg)
        sim.command(callee, functools.partial(_start_listen, key), listening)
        sim.run(until=sim.now + 30.0)
        res.calls += 1
        if "got" in state:
            res.delivered += 1
            res.latencies.append(state["got"] - state["posted"])
    return res


def _ignore(ev: Event) -> None:
    if isinstance(ev, CommandFailed):
        return
