"""Simulator sweep: success of gets after a fraction of the nodes fail at once, over many
seeds, sizes and loss rates (issue 8, problem 12: one seed says little about the tail).

Every combination of ``--nodes`` x ``--loss`` x ``--seeds`` is one network, joined and
filled with items once in its own process (at most ``--jobs`` at a time, default 1: the
simulator is single-threaded); each ``--fail`` fraction then fails on its own copy of
it. Each result is exactly that of ``python -m hailing.sim --churn FAIL --churn-mode
once --json`` with the same arguments (same ``trace_sha256``; the command is in the
output as ``same_as``). Prints one
JSON document: every run's key figures (and why its failed gets failed, see
``failure_kinds`` in docs/simulator.md), and per (nodes, loss, fail) group the min,
median and max success over the seeds. Usage:

    python benchmarks/sim_sweep.py [--nodes 5000,10000] [--loss 0,0.01] [--fail 0.3,0.5]
        [--seeds 1-20] [--lookups 1000] [--jobs 2] [--out FILE]

``--seeds`` takes a list and ranges: ``1-20`` or ``1,2,5-8``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def run_network(nodes: int, loss: float, seed: int, fails: list[float], lookups: int) -> list[dict[str, Any]]:
    """One worker process: one network joined and filled once, then each failing fraction
    on its own copy (``hailing.sim.scenario.run_failure_fractions``: the same trace as a
    separate ``python -m hailing.sim`` run per fraction, at about half the cost)."""
    cmd = [
        sys.executable, __file__, "--worker", "--nodes", str(nodes), "--loss", str(loss),
        "--seeds", str(seed), "--fail", ",".join(str(f) for f in fails),
        "--lookups", str(lookups),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    results: list[dict[str, Any]] = json.loads(out.stdout)
    runs = []
    for fail, r in zip(fails, results, strict=True):
        same = [
            "python", "-m", "hailing.sim", "--nodes", str(nodes), "--lookups", str(lookups),
            "--loss", str(loss), "--churn", str(fail), "--churn-mode", "once", "--seed", str(seed),
            "--json",
        ]
        runs.append({
            "nodes": nodes, "loss": loss, "fail": fail, "seed": seed, "lookups": lookups,
            "success_rate": r["success_rate"], "failures": r["failures"],
            "failure_kinds": r["failure_kinds"],
            "latency_ms": r["latency_ms"], "messages_per_lookup": r["messages_per_lookup"]["mean"],
            "stored_per_put_min": r["stored_per_put"]["min"],
            "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
            "trace_sha256": r["trace_sha256"],
            "same_as": " ".join(same),
        })
    return runs


def worker(args: argparse.Namespace) -> int:
    from hailing.sim.scenario import SimParams, run_failure_fractions

    (seed,) = parse_seeds(args.seeds)
    params = SimParams(nodes=int(args.nodes), lookups=args.lookups, loss=float(args.loss), seed=seed)
    fails = [float(f) for f in args.fail.split(",")]
    print(json.dumps(run_failure_fractions(params, fails)))
    return 0


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, float, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["nodes"], r["loss"], r["fail"]), []).append(r)
    out = []
    for (nodes, loss, fail), rs in sorted(groups.items()):
        rates = [r["success_rate"] for r in rs]
        p95s = [r["latency_ms"]["p95"] for r in rs if r["latency_ms"]["p95"] is not None]
        worst = min(rs, key=lambda r: r["success_rate"])
        out.append({
            "nodes": nodes, "loss": loss, "fail": fail, "seeds": len(rs),
            "success_min": min(rates), "success_median": statistics.median(rates),
            "success_max": max(rates), "worst_seed": worst["seed"],
            "failed_gets": sum(r["failures"] for r in rs),
            "gets": sum(r["lookups"] for r in rs),
            "p95_ms_median": statistics.median(p95s) if p95s else None,
            "messages_median": statistics.median(r["messages_per_lookup"] for r in rs),
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="5000,10000", help="comma-separated network sizes")
    ap.add_argument("--loss", default="0,0.01", help="comma-separated packet loss rates")
    ap.add_argument("--fail", default="0.3,0.5", help="comma-separated fractions failing at once")
    ap.add_argument("--seeds", default="1-20", help="seeds: list and ranges, e.g. 1-20 or 1,3,5-9")
    ap.add_argument("--lookups", type=int, default=1000, help="gets per run")
    ap.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="runs at a time")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    fails = [float(f) for f in args.fail.split(",")]
    combos = [
        (int(n), float(loss), seed)
        for n in args.nodes.split(",")
        for loss in args.loss.split(",")
        for seed in parse_seeds(args.seeds)
    ]
    t0 = time.perf_counter()

    def one(c: tuple[int, float, int]) -> list[dict[str, Any]]:
        rs = run_network(*c, fails, args.lookups)
        for r in rs:
            print(
                f"[{time.perf_counter() - t0:7.0f} s] nodes {r['nodes']} loss {r['loss']} fail {r['fail']}"
                f" seed {r['seed']}: success {r['success_rate']:.4f} ({r['failures']} failed"
                f" {r['failure_kinds']}) p95 {r['latency_ms']['p95']} ms wall {r['wall_s']} s",
                file=sys.stderr, flush=True,
            )
        return rs

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = [r for rs in pool.map(one, combos) for r in rs]
    doc = {
        "lookups": args.lookups, "python": sys.version.split()[0],
        "wall_s": round(time.perf_counter() - t0, 1),
        "summary": summarize(runs), "runs": runs,
    }
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
