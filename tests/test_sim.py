"""The discrete-event simulator (:mod:`hailing.sim`): determinism, the network model, the
packet hook, churn bookkeeping, the lookup workload and ``python -m hailing.sim``.

Networks are kept small (a few hundred nodes) so the whole file runs in well under a
minute on a shared two-core machine."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Hashable
from typing import Any, ClassVar

import pytest

from hailing.dht import DhtConfig, Event, Pong
from hailing.dht.protocol import DhtProtocol
from hailing.sim import (
    NetworkModel,
    SimNode,
    SimParams,
    Simulator,
    percentile,
    run_lookup_benchmark,
)
from hailing.sim import scenario as scenario_mod
from hailing.sim.engine import HostLeft

SIM = [sys.executable, "-m", "hailing.sim"]
RESULT_KEYS = {
    "nodes", "lookups", "success_rate", "latency_ms", "messages_per_lookup", "hops",
    "wall_s", "peak_rss_mb", "seed", "params",
}
# Fields that measure the machine, not the simulation.
MACHINE_FIELDS = {"wall_s", "peak_rss_mb"}


# == helpers =============================================================================


def small_sim(n: int = 2, *, jitter: float = 0.02, loss: float = 0.0, seed: int = 5) -> Simulator:
    """A simulator with ``n`` cores that know nothing of each other (no bootstrap)."""
    net = NetworkModel(random.Random(seed), loss=loss, jitter=jitter, seed=seed)
    # These tests count packets of the network model: a queried core does not ping its
    # querier back to verify it (issue 9's admission; tested in test_routing_capture.py).
    sim = Simulator(seed, net, DhtConfig(verify_senders=False))
    for _ in range(n):
        sim.add_node()
    return sim


def ping(sim: Simulator, src: SimNode, dst: SimNode, outcomes: list[Event]) -> None:
    sim.command(src, lambda core, now: core.ping(dst.addr, now), outcomes.append)


def record_arrivals(node: SimNode) -> list[tuple[float, bytes]]:
    """Wrap the node's core so every datagram it receives is recorded (time, bytes)."""
    seen: list[tuple[float, bytes]] = []
    inner = node.proto.receive_datagram

    def wrapper(data: bytes, addr: Hashable, now: float) -> None:
        seen.append((now, data))
        inner(data, addr, now)

    node.proto.receive_datagram = wrapper  # type: ignore[method-assign]
    return seen


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in MACHINE_FIELDS}


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*SIM, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def check_result_shape(r: dict[str, Any], params: SimParams) -> None:
    assert r.keys() >= RESULT_KEYS, RESULT_KEYS - r.keys()
    assert r["nodes"] == params.nodes and r["lookups"] == params.lookups
    assert r["seed"] == params.seed
    assert r["params"]["nodes"] == params.nodes and r["params"]["strategy"] == params.strategy
    assert 0.0 <= r["success_rate"] <= 1.0
    lat = r["latency_ms"]
    assert set(lat) >= {"p50", "p95", "p99"}
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 60_000
    msgs = r["messages_per_lookup"]
    assert set(msgs) >= {"mean", "p95"}
    assert 1 <= msgs["mean"] < 500 and 1 <= msgs["p95"] < 1000
    hops = r["hops"]
    assert set(hops) >= {"p50", "p95"}
    assert 1 <= hops["p50"] <= hops["p95"] < 40
    assert isinstance(r["wall_s"], float) and r["wall_s"] >= 0
    assert isinstance(r["peak_rss_mb"], float) and r["peak_rss_mb"] > 0
    json.dumps(r)  # the CLI prints it: it must be plain JSON


# == determinism =========================================================================


DET_NODES = 200


@pytest.fixture(scope="module")
def det_runs() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    # 200 nodes (determinism does not depend on the size; large runs are the benchmarks')
    a = run_lookup_benchmark(SimParams(nodes=DET_NODES, lookups=30, seed=11))
    b = run_lookup_benchmark(SimParams(nodes=DET_NODES, lookups=30, seed=11))
    c = run_lookup_benchmark(SimParams(nodes=DET_NODES, lookups=30, seed=12))
    return a, b, c


def test_same_seed_same_trace_and_results(det_runs: tuple[dict[str, Any], ...]) -> None:
    a, b, _ = det_runs
    assert len(a["trace_sha256"]) == 64
    assert a["trace_sha256"] == b["trace_sha256"]
    assert a["packets"]["sent"] > DET_NODES * 10  # the trace covers a real run, not an empty one
    assert a["success_rate"] == b["success_rate"]
    assert a["latency_ms"] == b["latency_ms"]
    assert a["hops"] == b["hops"] and a["messages_per_lookup"] == b["messages_per_lookup"]
    assert comparable(a) == comparable(b)


def test_different_seed_different_trace(det_runs: tuple[dict[str, Any], ...]) -> None:
    a, _, c = det_runs
    assert a["trace_sha256"] != c["trace_sha256"]
    assert a["packets"] != c["packets"] or a["latency_ms"] != c["latency_ms"]


def test_hand_built_simulator_is_deterministic() -> None:
    """Lower level: the same seed (with loss and a reordering hook) gives the same trace,
    delivery count and event order; another seed does not."""

    def one(seed: int) -> tuple[str, int, list[str]]:
        net = NetworkModel(random.Random(seed), loss=0.1, seed=seed)
        net.route_packet = lambda data, src, dst, d: [d * 3] if len(data) % 3 == 0 else [d]
        sim = Simulator(seed, net)
        first = sim.add_node()
        log: list[str] = []
        for _ in range(40):
            node = sim.add_node()
            sim.command(node, lambda core, now: core.bootstrap([first.addr], now),
                        lambda ev: log.append(f"{type(ev).__name__}@{sim.now:.9f}"))
        sim.run(until=60.0)
        return sim.trace, sim.delivered, log

    r1, r2, r3 = one(3), one(3), one(4)
    assert r1[1] > 500 and len(r1[2]) == 40
    assert r1 == r2
    assert r1[0] != r3[0]


# == network model =======================================================================


def test_rtt_percentiles_in_documented_ranges() -> None:
    s = NetworkModel(random.Random(0), seed=1).stats()
    assert abs(s["p50"] - 80.0) <= 8.0, s
    assert 200.0 <= s["p95"] <= 300.0, s
    assert 300.0 <= s["p99"] <= 500.0, s
    assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]


def test_rtt_symmetric_and_stable() -> None:
    net = NetworkModel(random.Random(0), seed=9)
    hosts = [(f"10.0.0.{i}", 6881) for i in range(60)]
    first = {(a, b): net.rtt(a, b) for a in hosts for b in hosts if a != b}
    for (a, b), v in first.items():
        assert net.rtt(b, a) == v
        assert net.rtt(a, b) == v
        assert 0.0 < v < 60.0
    assert len(set(first.values())) > len(first) // 2 * 0.99  # pairs differ
    # Another seed gives another matrix.
    other = NetworkModel(random.Random(0), seed=10)
    assert sum(other.rtt(a, b) != v for (a, b), v in first.items()) > len(first) * 0.9


def test_stats_does_not_disturb_host_numbering() -> None:
    net = NetworkModel(random.Random(0), seed=2)
    a, b = ("a", 1), ("b", 1)
    before = net.rtt(a, b)
    net.stats(1000)
    assert net.rtt(a, b) == before


def test_delay_is_half_rtt_plus_jitter() -> None:
    net = NetworkModel(random.Random(3), seed=3)
    a, b = ("a", 1), ("b", 1)
    one_way = net.rtt(a, b) / 2
    delays = [d for _ in range(5000) for d in net.route(b"x", a, b)]
    assert len(delays) == 5000
    assert min(delays) >= one_way
    mean_extra = sum(delays) / len(delays) / one_way - 1.0
    assert 0.015 < mean_extra < 0.025  # exponential jitter, mean 2 % of the one-way delay
    assert len(set(delays)) > 4000  # jitter varies per packet


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.3])
def test_loss_fraction_matches_configuration(loss: float) -> None:
    net = NetworkModel(random.Random(42), loss=loss, seed=1)
    n = 20000
    lost = sum(not net.route(b"p", ("a", i % 7), ("b", i % 11)) for i in range(n))
    assert net.sent == n and net.dropped == lost
    sd = math.sqrt(n * loss * (1 - loss))
    assert abs(lost - n * loss) <= 4 * sd + 0.5, (lost, n * loss)


@pytest.mark.parametrize("loss", [-0.1, 1.0, 1.5])
def test_loss_out_of_range_rejected(loss: float) -> None:
    with pytest.raises(ValueError):
        NetworkModel(random.Random(0), loss=loss)


def test_partition_drops_exactly_cross_group_and_heal_restores() -> None:
    net = NetworkModel(random.Random(0), seed=1)
    g1 = [("g1", i) for i in range(4)]
    g2 = [("g2", i) for i in range(4)]
    loose = [("x", i) for i in range(3)]  # in no group
    hosts = g1 + g2 + loose
    group = {h: 0 for h in g1} | {h: 1 for h in g2} | {h: -1 for h in loose}
    net.partition([g1, g2])
    for a in hosts:
        for b in hosts:
            if a == b:
                continue
            delivered = bool(net.route(b"q", a, b))
            assert delivered == (group[a] == group[b]), (a, b)
    net.heal()
    assert all(net.route(b"q", a, b) for a in hosts for b in hosts if a != b)
    # A new partition replaces the old one.
    net.partition([g1 + g2])
    assert net.route(b"q", g1[0], g2[0]) and not net.route(b"q", g1[0], loose[0])


def test_partition_in_simulator_blocks_ping_until_heal() -> None:
    sim = small_sim(2)
    a, b = sim.live
    sim.network.partition([[a.addr], [b.addr]])
    out: list[Event] = []
    ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert len(out) == 1 and not isinstance(out[0], Pong)
    assert b.proto.stats["q_ping"] == 0
    sim.network.heal()
    ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert isinstance(out[1], Pong) and b.proto.stats["q_ping"] == 1


def test_hook_sees_every_packet_and_can_drop() -> None:
    sim = small_sim(2)
    a, b = sim.live
    seen: list[tuple[Hashable, Hashable, float]] = []

    def drop_all(data: bytes, src: Hashable, dst: Hashable, delay: float) -> list[float]:
        seen.append((src, dst, delay))
        return []

    sim.network.route_packet = drop_all
    out: list[Event] = []
    ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert seen and seen[0][:2] == (a.addr, b.addr) and seen[0][2] > 0
    assert sim.delivered == 0 and b.proto.stats["q_ping"] == 0
    assert sim.network.dropped == len(seen)
    assert len(out) == 1 and not isinstance(out[0], Pong)


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_hook_duplicates_reach_the_destination_core(copies: int) -> None:
    sim = small_sim(2)
    a, b = sim.live
    arrivals = record_arrivals(b)

    def dup(data: bytes, src: Hashable, dst: Hashable, delay: float) -> list[float]:
        if src == a.addr:
            return [delay + 0.001 * i for i in range(copies)]
        return [delay]

    sim.network.route_packet = dup
    out: list[Event] = []
    ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert len(arrivals) == copies
    assert len({data for _, data in arrivals}) == 1  # the same packet, several times
    assert b.proto.stats["q_ping"] == copies  # the core answered each copy
    assert sim.delivered == 2 * copies  # copies pings in, copies pongs back
    assert len(out) == 1 and isinstance(out[0], Pong)
    assert a.proto.stats["dropped_unexpected"] == copies - 1  # late duplicate pongs


def _arrival_order(delay_first: bool) -> list[int]:
    """Two pings a -> b sent at the same instant on a jitter-free network; the hook
    optionally holds back the first one. Returns the send indexes in arrival order."""
    sim = small_sim(2, jitter=0.0)
    a, b = sim.live
    arrivals = record_arrivals(b)
    sent: list[bytes] = []

    def hook(data: bytes, src: Hashable, dst: Hashable, delay: float) -> list[float]:
        if src != a.addr:
            return [delay]
        sent.append(data)
        return [delay + 0.5] if delay_first and len(sent) == 1 else [delay]

    sim.network.route_packet = hook
    out: list[Event] = []
    ping(sim, a, b, out)
    ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert len(sent) == 2 and sent[0] != sent[1] and len(arrivals) == 2
    assert [type(e) for e in out] == [Pong, Pong]
    return [sent.index(data) for _, data in arrivals]


def test_hook_delay_reorders() -> None:
    assert _arrival_order(delay_first=False) == [0, 1]
    assert _arrival_order(delay_first=True) == [1, 0]


# == churn bookkeeping ===================================================================


def test_kill_removes_node_from_live_and_nodes() -> None:
    sim = small_sim(6)
    victims = [sim.live[1], sim.live[4], sim.live[5]]
    sim.run(until=3.0)
    for v in victims:
        sim.kill(v)
        assert not v.alive and v.left_at == sim.now
        assert v not in sim.live and v.addr not in sim.nodes
    sim.kill(victims[0])  # killing twice is harmless
    assert len(sim.live) == 3 and len(sim.nodes) == 3
    assert {n.addr for n in sim.live} == set(sim.nodes)
    assert all(n.alive for n in sim.live)
    # The bookkeeping survives further adds and kills.
    new = sim.add_node()
    sim.kill(sim.live[0])
    assert new in sim.live and len(sim.live) == 3 and {n.addr for n in sim.live} == set(sim.nodes)


def test_random_live_never_returns_dead_node() -> None:
    sim = small_sim(30)
    dead = sim.live[::2]
    for n in list(dead):
        sim.kill(n)
    picks = [sim.random_live() for _ in range(2000)]
    assert all(p.alive and p.addr in sim.nodes for p in picks)
    assert len({p.addr for p in picks}) == 15  # and it does cover every live node
    keep = sim.live[0]
    assert all(sim.random_live(exclude=keep) is not keep for _ in range(500))


@pytest.mark.parametrize("kill_in_flight", [False, True])
def test_packets_to_dead_node_are_not_delivered(kill_in_flight: bool) -> None:
    sim = small_sim(2)
    a, b = sim.live
    arrivals = record_arrivals(b)
    out: list[Event] = []
    if kill_in_flight:
        ping(sim, a, b, out)  # on the wire now
        sim.kill(b)
    else:
        sim.kill(b)
        ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert arrivals == [] and b.proto.stats["q_ping"] == 0 and sim.delivered == 0
    assert sim.network.sent == 1  # it was sent, and lost
    assert len(out) == 1 and not isinstance(out[0], Pong)


def test_packets_are_delivered_when_alive() -> None:
    """The control for the test above: the same ping reaches a live node."""
    sim = small_sim(2)
    a, b = sim.live
    arrivals = record_arrivals(b)
    out: list[Event] = []
    ping(sim, a, b, out)
    sim.run(until=sim.now + 10)
    assert len(arrivals) == 1 and sim.delivered == 2 and isinstance(out[0], Pong)


def test_a_command_whose_host_leaves_gets_host_left() -> None:
    """Regression: a killed host's pending commands used to vanish, so a workload waiting
    for them (the get phase under continuous churn) ran forever."""
    sim = small_sim(2)
    a, b = sim.live
    out: list[Any] = []
    ping(sim, a, b, out)
    sim.kill(a)
    assert len(out) == 1 and isinstance(out[0], HostLeft)
    sim.run(until=sim.now + 30)
    assert len(out) == 1  # and nothing more, ever


def test_a_get_whose_host_leaves_is_aborted_and_the_run_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lock-step gets last seconds (5 s timeouts): under continuous churn some requesters
    leave mid-get. Those gets are counted as aborted, outside the success rate, and the
    run still finishes."""
    p = SimParams(nodes=200, lookups=30, churn=0.5, churn_mode="continuous", duration=600.0,
                  churn_period=120.0, seed=3, strategy="lockstep")
    started: list[SimNode] = []
    original = Simulator.command

    def command(self: Simulator, node: SimNode, start: Any, callback: Any) -> None:
        original(self, node, start, callback)
        if getattr(callback, "__name__", "") == "done" and not started:
            started.append(node)
            self.kill(node)  # the first requester leaves right after asking

    monkeypatch.setattr(Simulator, "command", command)
    r = run_lookup_benchmark(p)
    assert started and r["aborted"] >= 1
    assert r["aborted"] + r["failures"] + round(r["success_rate"] * (30 - r["aborted"])) == 30


class _Watched(Simulator):
    """A Simulator that records what the churn code does to it."""

    instances: ClassVar[list[_Watched]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kills: list[tuple[float, SimNode, int]] = []  # time, node, live count before
        self.adds: list[tuple[float, int]] = []  # time, live count after
        self.bad_picks = 0
        _Watched.instances.append(self)

    def kill(self, node: SimNode) -> None:
        if node.alive:
            self.kills.append((self.now, node, len(self.live)))
        super().kill(node)

    def add_node(self, config: Any = None) -> SimNode:
        node = super().add_node(config)
        self.adds.append((self.now, len(self.live)))
        return node

    def random_live(self, exclude: SimNode | None = None) -> SimNode:
        node = super().random_live(exclude)
        if not node.alive or node.addr not in self.nodes:
            self.bad_picks += 1
        return node


def _watched_run(monkeypatch: pytest.MonkeyPatch, params: SimParams) -> tuple[dict[str, Any], _Watched]:
    _Watched.instances = []
    monkeypatch.setattr(scenario_mod, "Simulator", _Watched)
    result = run_lookup_benchmark(params)
    (sim,) = _Watched.instances
    return result, sim


def test_continuous_churn_bookkeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    p = SimParams(nodes=200, lookups=20, churn=0.3, churn_mode="continuous", duration=1200.0, seed=4)
    r, sim = _watched_run(monkeypatch, p)
    items = p.item_count()
    assert sim.kills, "no departures at all"
    churn_start = sim.kills[0][0]
    # Exponential sessions (scenario.py): mean such that 1 - exp(-period/mean) = churn;
    # every non-protected slot is a Poisson process of departures of rate 1/mean while
    # churn lasts (a leaver is replaced at once and the newcomer gets a fresh session).
    mean = -p.churn_period / math.log(1.0 - p.churn)
    expected = (p.nodes - items) * p.duration / mean
    departures = len(sim.kills)
    assert r["departures"] == departures == r["joins_during_churn"]
    assert 0.7 * expected <= departures <= 1.3 * expected, (departures, expected)
    # Departures are spread over the whole run, not bunched at its start.
    last = sim.kills[-1][0]
    assert last - churn_start > 0.75 * p.duration
    assert last <= churn_start + p.duration + 1.0
    # The population stays constant: every departure finds a full network (the last
    # one was replaced) and every replacement restores it.
    assert all(before == p.nodes for _, _, before in sim.kills)
    churn_adds = [(t, n) for t, n in sim.adds if t >= churn_start]
    assert len(churn_adds) == departures and all(n == p.nodes for _, n in churn_adds)
    assert len(sim.live) == p.nodes == len(sim.nodes)
    # Protected owners never leave.
    assert not any(node.protected for _, node, _ in sim.kills)
    protected = [n for n in sim.live if n.protected]
    assert len(protected) == items and all(n.joined_at < churn_start for n in protected)
    assert sim.bad_picks == 0
    assert r["success_rate"] >= 0.9


def test_once_churn_bookkeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    p = SimParams(nodes=200, lookups=20, churn=0.25, seed=6)
    r, sim = _watched_run(monkeypatch, p)
    assert len(sim.kills) == r["departures"] == round(0.25 * p.nodes)
    assert len({t for t, _, _ in sim.kills}) == 1  # all at once
    assert not any(node.protected for _, node, _ in sim.kills)
    assert len(sim.live) == p.nodes - r["departures"] and r["joins_during_churn"] == 0
    assert sim.bad_picks == 0
    assert r["success_rate"] >= 0.9


# == workload ============================================================================


def test_lookup_benchmark_no_churn() -> None:
    p = SimParams(nodes=300, lookups=40, seed=2)
    r = run_lookup_benchmark(p)
    check_result_shape(r, p)
    assert r["success_rate"] == 1.0 and r["failures"] == 0
    assert r["departures"] == 0 and r["packets"]["dropped"] == 0
    assert r["stored_per_put"]["min"] >= 1
    # A get takes at least one round trip (no node starts out holding the value).
    assert r["latency_ms"]["p50"] >= 20.0


@pytest.fixture(scope="module")
def churned_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    common = {"nodes": 300, "lookups": 30, "churn": 0.2, "seed": 3}
    hailing = run_lookup_benchmark(SimParams(**common, strategy="hailing"))
    lockstep = run_lookup_benchmark(SimParams(**common, strategy="lockstep"))
    return hailing, lockstep


def test_lockstep_strategy_runs(churned_pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, lockstep = churned_pair
    check_result_shape(lockstep, SimParams(nodes=300, lookups=30, churn=0.2, seed=3,
                                           strategy="lockstep"))
    assert lockstep["params"]["strategy"] == "lockstep"
    assert lockstep["departures"] == 60
    assert lockstep["success_rate"] >= 0.9


def test_hailing_beats_lockstep_under_churn(
    churned_pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    hailing, lockstep = churned_pair
    assert hailing["success_rate"] >= lockstep["success_rate"]
    assert lockstep["latency_ms"]["p50"] > hailing["latency_ms"]["p50"], (
        hailing["latency_ms"], lockstep["latency_ms"])


def test_mutable_items_are_found() -> None:
    p = SimParams(nodes=200, lookups=20, seed=5, mutable_fraction=1.0)
    r = run_lookup_benchmark(p)
    check_result_shape(r, p)
    assert r["success_rate"] == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("nodes", 1), ("lookups", 0), ("churn", 1.0), ("loss", -0.5),
     ("churn_mode", "sometimes"), ("strategy", "foo"), ("items", 500)],
)
def test_bad_params_rejected(field: str, value: Any) -> None:
    p = SimParams(nodes=100, lookups=10)
    setattr(p, field, value)
    with pytest.raises(ValueError):
        run_lookup_benchmark(p)


def test_percentile_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 100) == 4.0
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 95) == 95.0
    assert percentile([], 50) is None  # JSON null, never NaN


def test_cli_json_is_strict_when_every_get_fails() -> None:
    def reject(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name}")

    proc = run_cli("--nodes", "30", "--lookups", "10", "--loss", "0.97", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout, parse_constant=reject)
    assert doc["success_rate"] < 1.0 or doc["latency_ms"]["p50"] is not None


# == CLI =================================================================================


def test_cli_json() -> None:
    proc = run_cli("--nodes", "200", "--lookups", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --json: no progress
    out = proc.stdout.strip().splitlines()
    assert len(out) == 1
    r = json.loads(out[0])
    check_result_shape(r, SimParams(nodes=200, lookups=20))
    assert r["success_rate"] == 1.0


def test_cli_summary() -> None:
    proc = run_cli("--nodes", "200", "--lookups", "20", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "success" in text and "latency" in text and "200 nodes" in text
    assert not text.lstrip().startswith("{")
    assert "join" in proc.stderr  # progress goes to stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--nodes", "1", "--lookups", "5"],
        ["--nodes", "50", "--lookups", "5", "--churn", "1.5"],
        ["--nodes", "50", "--lookups", "5", "--strategy", "foo"],
        ["--nodes", "50", "--lookups", "5", "--loss", "-1"],
        ["--nodes", "50", "--lookups", "5", "--churn-mode", "never"],
        ["--nodes", "many", "--lookups", "5"],
        ["--lookups", "5"],
    ],
)
def test_cli_bad_arguments(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    err = proc.stderr
    assert len(err.splitlines()) == 1 and err.endswith("\n") and "error" in err, repr(err)


def test_protocol_class_is_the_real_core() -> None:
    sim = small_sim(1)
    assert type(sim.live[0].proto) is DhtProtocol
