"""The data-channel overlay in the simulator (:mod:`hailing.sim.overlay`): determinism,
the connection cap, pinned links, next-hop forwarding against flooding, churn.

Networks are small (60-120 nodes, a minute or two of virtual time) so the file runs in
well under a minute on a shared two-core machine; the large runs are in
benchmarks/sim_overlay.py."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Hashable
from dataclasses import replace
from typing import Any

import pytest

from hailing.sim import scenario
from hailing.sim.engine import Simulator
from hailing.sim.overlay import LinkOverlay, OverlayConfig, _spread, _xor_closest
from hailing.sim.overlay_run import run_overlay_benchmark

SEEDS = [1, 2, 3, 4, 5, 6]


def params(n: int = 80, seed: int = 1, churn: float = 0.3, lookups: int = 20) -> scenario.SimParams:
    return scenario.SimParams(nodes=n, lookups=lookups, churn=churn, churn_mode="continuous",
                              churn_period=60.0, duration=60.0, seed=seed)


class Checked(LinkOverlay):
    """A LinkOverlay that checks its invariants after every coupling completes (the
    only place a link opens) and records every eviction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evictions: list[tuple[Hashable, Hashable, bool, bool]] = []
        self.max_links = 0
        self.on_evict = lambda h, p, here, there: self.evictions.append((h, p, here, there))

    def _complete(self, origin: Hashable, target: Hashable, c: Any) -> None:
        super()._complete(origin, target, c)
        self.check()
        for h in (self.hosts.get(origin), self.hosts.get(target)):
            if h is not None:
                self.max_links = max(self.max_links, len(h.links))


def build(n: int = 80, seed: int = 1, churn: float = 0.3, **cfg: Any) -> tuple[Checked, scenario._Run]:
    """Join n nodes behind a Checked overlay, let it settle, put, then run gets under
    churn (run_overlay_benchmark's phases, with the overlay kept for inspection)."""
    overlays: list[Checked] = []
    p = params(n, seed, churn)

    def attach(sim: Any) -> None:
        sim.config = replace(sim.config, min_soft_timeout=1.5)
        overlays.append(Checked(sim, OverlayConfig(**cfg)))

    run = scenario._joined_run(p, None, attach)
    run.sim.run(until=run.sim.now + 60.0)
    ov = overlays[0]
    ov.new_phase("join")
    scenario._put_phase(run)
    if churn:
        scenario._start_continuous_churn(run)
    scenario._get_phase(run)
    ov.new_phase("run")
    return ov, run


@pytest.fixture(scope="module")
def nexthop() -> tuple[Checked, scenario._Run]:
    return build(100, seed=3, cap=8)


# == determinism ===========================================================================


def test_same_seed_same_trace_and_result() -> None:
    a = run_overlay_benchmark(params(60, seed=7), OverlayConfig(cap=8), settle=30.0)
    b = run_overlay_benchmark(params(60, seed=7), OverlayConfig(cap=8), settle=30.0)
    c = run_overlay_benchmark(params(60, seed=8), OverlayConfig(cap=8), settle=30.0)
    assert a["trace_sha256"] == b["trace_sha256"]
    assert a["overlay"] == b["overlay"]
    assert a["trace_sha256"] != c["trace_sha256"]
    # The couplings are part of the trace: the overlay changes what the cores do.
    plain = scenario.run_lookup_benchmark(params(60, seed=7))
    assert plain["trace_sha256"] != a["trace_sha256"]


def test_flood_samples_do_not_change_the_run() -> None:
    a = run_overlay_benchmark(params(60, seed=2), OverlayConfig(cap=8), settle=30.0)
    b = run_overlay_benchmark(params(60, seed=2), OverlayConfig(cap=8, flood_samples=10, flood_every=3),
                              settle=30.0)
    assert a["trace_sha256"] == b["trace_sha256"]
    assert b["overlay"]["phases"]["run"]["flood_samples"]["samples"] == 10
    assert a["overlay"]["phases"]["run"]["flood_samples"] is None


# == the cap and the pins ==================================================================


def test_cap_never_exceeded_and_links_symmetric(nexthop: tuple[Checked, scenario._Run]) -> None:
    ov, _ = nexthop
    assert ov.max_links == ov.cfg.cap  # the cap was reached (so it was tested) ...
    ov.check()  # ... and never exceeded: Checked.check ran after every coupling
    assert all(peer in ov.hosts for h in ov.hosts.values() for peer in h.links)


def test_pinned_links_never_evicted(nexthop: tuple[Checked, scenario._Run]) -> None:
    ov, _ = nexthop
    assert len(ov.evictions) > 100
    assert not [e for e in ov.evictions if e[2]], "a host evicted a link it pins"
    pinned = [sum(1 for p in h.pins if p in h.links) for h in ov.hosts.values()]
    assert sum(pinned) / len(pinned) >= 2
    assert all(len(h.pins) <= ov.n_pins for h in ov.hosts.values())


def test_eviction_takes_the_least_recently_used_unpinned_link() -> None:
    sim = Simulator(1)
    ov = LinkOverlay(sim, OverlayConfig(cap=4, pins=1))
    nodes = [sim.add_node() for _ in range(7)]
    a = ov.hosts[nodes[0].addr]
    for other in nodes[1:5]:
        ov.hosts[other.addr].links[a.addr] = None
        a.links[other.addr] = None
    a.pins = {nodes[1].addr}  # the oldest link is pinned: the next oldest goes
    assert ov._victim(a) == nodes[2].addr
    ov.hosts[nodes[2].addr].pins = {a.addr}  # pinned by the other end (within its quota)
    assert ov._victim(a) == nodes[3].addr
    a.links.move_to_end(nodes[3].addr)  # used just now
    assert ov._victim(a) == nodes[4].addr


# == forwarding ============================================================================


def test_nexthop_paths_follow_links_within_the_hop_limit(nexthop: tuple[Checked, scenario._Run]) -> None:
    ov, _ = nexthop
    rng = random.Random(1)
    addrs = list(ov.hosts)
    reached = tried = 0
    for _ in range(500):
        a, b = rng.sample(addrs, 2)
        if b in ov.hosts[a].links:
            continue
        tried += 1
        path, fail, steps, _delay = ov._route_back(a, b)
        assert len(path) - 1 <= ov.cfg.max_hops
        assert steps <= 2 * ov.cfg.max_hops + 1
        assert len(set(path)) == len(path)  # loop suppression: no host twice
        for x, y in itertools.pairwise(path):
            assert y in ov.hosts[x].links  # only over open links
        if fail is None:
            reached += 1
            assert path[-1] == b
        # Without backtracking (the greedy walk alone) the path obeys the same rules.
        walk, _ = ov._route(a, b)
        assert len(walk) - 1 <= ov.cfg.max_hops and len(set(walk)) == len(walk)
    assert reached / tried >= 0.8


def test_nexthop_never_floods(nexthop: tuple[Checked, scenario._Run]) -> None:
    ov, _ = nexthop
    run = ov.phases["run"]
    assert run.counts["couplings"] > 500
    # At most 2 x hop limit steps out and back, then the answer along the path.
    assert max(run.messages) <= 3 * ov.cfg.max_hops
    assert sum(run.messages) / len(run.messages) <= 12
    assert run.counts["succeeded"] / len(run.messages) >= 0.85


def test_flooding_costs_more_than_nexthop() -> None:
    cfg = {"cap": 8, "flood_ttl": 5}
    nh = run_overlay_benchmark(params(100, seed=4), OverlayConfig(**cfg), settle=30.0)
    fl = run_overlay_benchmark(params(100, seed=4), OverlayConfig(forwarding="flood", **cfg), settle=30.0)
    nh_msgs = nh["overlay"]["phases"]["run"]["signaling"]["per_coupling"]["mean"]
    fl_msgs = fl["overlay"]["phases"]["run"]["signaling"]["per_coupling"]["mean"]
    assert fl_msgs > 10 * nh_msgs
    # Flooding reaches about everyone, so it succeeds at least as often...
    assert fl["overlay"]["phases"]["run"]["couplings"]["success_rate"] >= 0.95
    # ... and every host within the TTL forwards it: cost ~ hosts x links.
    assert fl_msgs > 100


# == churn =================================================================================


def test_churn_handled(nexthop: tuple[Checked, scenario._Run]) -> None:
    ov, run = nexthop
    assert run.departures > 15 and run.joins_during_churn == run.departures
    assert set(ov.hosts) == {n.addr for n in run.sim.live}
    r = ov.phases["run"]
    assert r.counts["links_lost_to_churn"] > 0
    assert r.counts["target_dead"] > 0  # cores still try dead nodes: counted apart
    ok = sum(g.ok for g in run.gets)
    assert ok / len(run.gets) >= 0.7  # 30 % replaced per minute: some values are lost


@pytest.mark.parametrize("seed", SEEDS)
def test_invariants_over_seeds(seed: int) -> None:
    ov, _ = build(60, seed=seed, cap=8)
    ov.check()
    assert ov.max_links <= 8
    assert not [e for e in ov.evictions if e[2]]
    r = ov.phases["run"]
    assert max(r.messages, default=0) <= 3 * ov.cfg.max_hops
    assert r.counts["succeeded"] / max(1, len(r.messages)) >= 0.8


# == helpers ===============================================================================


def test_xor_closest_matches_a_scan() -> None:
    rng = random.Random(3)
    for _ in range(100):
        ids = sorted(rng.getrandbits(160) for _ in range(rng.randrange(2, 200)))
        own = rng.choice(ids)
        for level in range(10):
            shift = 159 - level
            sibling = (own >> shift) ^ 1
            lo = bisect.bisect_left(ids, sibling << shift)
            hi = bisect.bisect_left(ids, (sibling + 1) << shift)
            if lo < hi:
                got = _xor_closest(ids, own, lo, hi, sibling, level + 1)
                assert got == min(ids[lo:hi], key=lambda x: x ^ own)


def test_spread_keeps_farthest_and_deepest() -> None:
    assert _spread([0, 1, 2], 4) == [0, 1, 2]
    assert _spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert _spread(list(range(10)), 1) == [9]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        OverlayConfig(cap=1).validate()
    with pytest.raises(ValueError):
        OverlayConfig(cap=8, pins=8).validate()
    with pytest.raises(ValueError):
        OverlayConfig(forwarding="gossip").validate()


def test_cli_cap_runs_the_overlay() -> None:
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "hailing.sim", "--nodes", "40", "--lookups", "5", "--cap", "8",
           "--churn", "0.3", "--churn-mode", "continuous", "--duration", "20", "--json"]
    results = []
    for hashseed in ("1", "2"):  # no set or dict order leaks into the run
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, env=env)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    result = results[0]
    assert result["trace_sha256"] == results[1]["trace_sha256"]
    assert result["overlay"]["config"]["cap"] == 8
    assert result["overlay"]["links_per_node"]["max"] <= 8
    bad = subprocess.run([*cmd[:-1], "--forwarding", "gossip"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "forwarding" in bad.stderr
