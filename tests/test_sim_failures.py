"""The simulator's mass-failure tools: one network copied for several failing fractions
(benchmarks/sim_sweep.py) and the reasons it gives for failed gets."""

from __future__ import annotations

from hailing.sim.scenario import SimParams, run_failure_fractions, run_lookup_benchmark


def test_copied_network_gives_the_same_run_as_a_separate_one() -> None:
    # Join and put once, then each fraction on its own deep copy: every result, down to
    # the trace hash, is that of a separate run with the same seed and fraction. (A
    # callback that still pointed into the original network, such as a closure over a
    # core, would make the later fractions differ.)
    # 200 nodes and 40 lookups (400 and 100 belong in benchmarks/sim_sweep.py): requests
    # are still in flight at every copy, which is what the check needs. Two fractions: the
    # first runs on a copy, the last on the original afterwards, so state the copy still
    # shared with the original (or with anything a later run reads) shows in either.
    params = SimParams(nodes=200, lookups=40, loss=0.01, seed=3)
    fractions = [0.3, 0.0]
    forked = run_failure_fractions(params, fractions)
    for fraction, r in zip(fractions, forked, strict=True):
        alone = run_lookup_benchmark(SimParams(nodes=200, lookups=40, loss=0.01, seed=3, churn=fraction))
        assert r["params"]["churn"] == fraction
        assert r["trace_sha256"] == alone["trace_sha256"]
        assert r["success_rate"] == alone["success_rate"]


def test_failed_gets_are_explained() -> None:
    r = run_lookup_benchmark(SimParams(nodes=120, lookups=60, churn=0.9, seed=3))
    kinds = r["failure_kinds"]
    assert r["failures"] > 0 and sum(kinds.values()) == r["failures"]
    assert set(kinds) <= {"error", "isolated", "value_lost", "missed"}
    assert kinds.get("value_lost", 0) > 0  # nine nodes in ten gone: whole items with them


def test_a_copied_network_calls_back_into_the_copy() -> None:
    # Requests in flight carry callbacks; in the copy they must reach the copied cores
    # (partials of their methods), never the original ones (closures would).
    from functools import partial

    from hailing.sim import scenario

    run = scenario._joined_run(SimParams(nodes=300, lookups=30, seed=5), None)
    scenario._put_phase(run)
    copy = scenario._copy_run(run)
    originals = {id(n.proto) for n in run.sim.live} | {id(n.proto.lookups) for n in run.sim.live}
    checked = 0
    for node in copy.sim.live:
        for pending in node.proto._pending.values():
            for cb in (pending.on_reply, pending.on_stall):
                if cb is None or (getattr(cb, "__closure__", None) is None and not isinstance(cb, partial)):
                    continue  # nothing, or a plain module function
                assert isinstance(cb, partial), cb
                owner = cb.func.__self__  # type: ignore[attr-defined]
                assert owner is node.proto or owner is node.proto.lookups
                assert id(owner) not in originals
                checked += 1
    assert checked > 0
