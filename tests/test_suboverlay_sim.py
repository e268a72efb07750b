"""The sub-overlay in the simulator: 1-5 % hailing nodes among plain Mainline ones
(hailing.sim.mixed). Every call's offer reaches the callee through the sub-overlay;
without it (inbox lookups walking the whole DHT, as before) most calls find nobody."""

from __future__ import annotations

import pytest

from hailing.sim.mixed import run_mixed

SEEDS = range(1, 7)


@pytest.mark.parametrize(("nodes", "fraction", "seed"),
                         [(300, 0.03, s) for s in SEEDS] + [(400, 0.05, s) for s in (7, 8, 9)])
def test_calls_reach_the_callee_through_the_sub_overlay(nodes: int, fraction: float,
                                                         seed: int) -> None:
    r = run_mixed(nodes, fraction, seed=seed, calls=5)
    assert (r.delivered, r.listen_failed, r.post_failed) == (5, 0, 0)


def test_one_percent_of_a_thousand() -> None:
    r = run_mixed(1000, 0.01, seed=11, calls=6)
    assert r.hailing == 10 and r.delivered == 6


def test_without_the_sub_overlay_most_calls_fail() -> None:
    """The regression: the same networks (the first three seeds: 15 calls, each network
    delivers 0-2 of its 5) with ``suboverlay=False``."""
    results = [run_mixed(300, 0.03, seed=s, calls=5, suboverlay=False) for s in SEEDS[:3]]
    delivered = sum(r.delivered for r in results)
    calls = sum(r.calls for r in results)
    assert delivered <= calls // 3, (delivered, calls)
    assert sum(r.listen_failed for r in results) >= calls // 2
