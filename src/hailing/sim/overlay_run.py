"""The lookup workload on the data-channel overlay (:mod:`hailing.sim.overlay`).

:func:`run_overlay_benchmark` is :func:`hailing.sim.scenario.run_lookup_benchmark` with
every host behind a :class:`LinkOverlay`: the hosts join (each newcomer through one
bootstrap link), the owners put their items, then the gets run under churn (with
``churn_mode="continuous"``, ``churn`` of the hosts leave and are replaced by newcomers
every ``churn_period``, here over ``duration``). Between the join and the puts the overlay is given ``settle`` seconds
(its pin rounds and self-lookups): a value put while most couplings still fail is stored
away from the nodes closest to its key, and no get finds it there. The result is the scenario's, plus
``overlay``: the couplings, links and signaling of the join phase (``join``) and of the
puts and gets under churn (``run``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, TextIO

from . import scenario
from .engine import Simulator
from .overlay import LinkOverlay, OverlayConfig


def run_overlay_benchmark(
    params: scenario.SimParams, config: OverlayConfig, progress: TextIO | None = None,
    *, settle: float = 180.0, min_soft_timeout: float = 1.5,
) -> dict[str, Any]:
    params.validate()
    config.validate()
    wall0 = time.perf_counter()
    overlays: list[LinkOverlay] = []

    def attach(sim: Simulator) -> None:
        # A request to a peer without a link waits for the coupling first: the core's
        # soft timeouts (tuned for UDP round trips) must cover it, or every lookup ends
        # before the couplings to the nodes closest to its target complete.
        sim.config = replace(sim.config, min_soft_timeout=min_soft_timeout,
                             max_soft_timeout=max(min_soft_timeout, sim.config.max_soft_timeout))
        overlays.append(LinkOverlay(sim, config))

    run = scenario._joined_run(params, progress, attach)
    (overlay,) = overlays
    # The overlay settles (pin rounds, self-lookups) before anything is put: a put
    # made while most couplings still fail misses the closest nodes for good.
    run.sim.run(until=run.sim.now + settle)
    t_joined = run.sim.now
    overlay.new_phase("join")
    scenario._put_phase(run)
    if params.churn_mode == "once" and params.churn > 0:
        scenario._churn_once(run)
    elif params.churn_mode == "continuous" and params.churn > 0:
        scenario._start_continuous_churn(run)
    scenario._get_phase(run)
    overlay.new_phase("run")
    overlay.check()
    result = scenario._result(run, time.perf_counter() - wall0, t_joined)
    report = overlay.report()
    del report["phases"]["current"]
    result["overlay"] = report
    return result
