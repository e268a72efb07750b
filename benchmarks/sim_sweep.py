"""Simulator sweep: success of gets after a fraction of the nodes fail at once, over many
seeds, sizes and loss rates (issue 8, problem 12: one seed says little about the tail).

Every combination of ``--nodes`` x ``--loss`` x ``--fail`` x ``--seeds`` is one
``python -m hailing.sim --churn FAIL --churn-mode once --json`` run in its own process,
at most ``--jobs`` at a time (default 1; the simulator is single-threaded). Prints one
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


def run_one(nodes: int, loss: float, fail: float, seed: int, lookups: int) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "hailing.sim", "--nodes", str(nodes), "--lookups", str(lookups),
        "--loss", str(loss), "--churn", str(fail), "--churn-mode", "once", "--seed", str(seed),
        "--json",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    r: dict[str, Any] = json.loads(out.stdout)
    return {
        "nodes": nodes, "loss": loss, "fail": fail, "seed": seed, "lookups": lookups,
        "success_rate": r["success_rate"], "failures": r["failures"],
        "failure_kinds": r.get("failure_kinds"),
        "latency_ms": r["latency_ms"], "messages_per_lookup": r["messages_per_lookup"]["mean"],
        "stored_per_put_min": r["stored_per_put"]["min"],
        "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": r["peak_rss_mb"],
        "trace_sha256": r["trace_sha256"],
        "command": " ".join(["python", *cmd[1:]]),
    }


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
    args = ap.parse_args()
    combos = [
        (int(n), float(loss), float(fail), seed)
        for n in args.nodes.split(",")
        for loss in args.loss.split(",")
        for fail in args.fail.split(",")
        for seed in parse_seeds(args.seeds)
    ]
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []

    def one(c: tuple[int, float, float, int]) -> dict[str, Any]:
        r = run_one(*c, args.lookups)
        print(
            f"[{time.perf_counter() - t0:7.0f} s] nodes {r['nodes']} loss {r['loss']} fail {r['fail']}"
            f" seed {r['seed']}: success {r['success_rate']:.4f} ({r['failures']} failed"
            f" {r['failure_kinds']}) p95 {r['latency_ms']['p95']} ms wall {r['wall_s']} s",
            file=sys.stderr, flush=True,
        )
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(one, combos))
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
