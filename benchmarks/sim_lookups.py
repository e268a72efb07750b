"""Simulator benchmarks: hailing's lookups vs the kademlia package's lock-step lookups.

Runs ``python -m hailing.sim`` scenarios (each in its own process, so peak RSS is per
scenario) for both strategies on the same seed and network, and prints one JSON document
with every result and the hailing/lockstep ratios. Usage:

    python benchmarks/sim_lookups.py [--nodes 10000] [--lookups 1000] [--seed 1]
        [--scenarios baseline,fail30,fail50,continuous] [--strategies hailing,lockstep]
        [--out FILE]

Scenarios (all with 1 % packet loss):
  baseline    no churn
  fail30      30 % of the nodes fail at once after the puts
  fail50      50 % fail at once
  continuous  30 % of the nodes replaced every 10 simulated minutes for an hour,
              owners republishing every 10 minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

SCENARIOS: dict[str, list[str]] = {
    "baseline": [],
    "fail30": ["--churn", "0.3", "--churn-mode", "once"],
    "fail50": ["--churn", "0.5", "--churn-mode", "once"],
    "continuous": ["--churn", "0.3", "--churn-mode", "continuous", "--duration", "3600"],
}


def run_one(nodes: int, lookups: int, seed: int, strategy: str, extra: list[str]) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "hailing.sim", "--nodes", str(nodes), "--lookups", str(lookups),
        "--loss", "0.01", "--seed", str(seed), "--strategy", strategy, "--json", *extra,
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout)
    result["command"] = " ".join(["python", *cmd[1:]])
    result["process_wall_s"] = round(time.perf_counter() - t0, 2)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--strategies", default="hailing,lockstep")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            ap.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        for strategy in args.strategies.split(","):
            print(f"{name} / {strategy} ...", file=sys.stderr, flush=True)
            r = run_one(args.nodes, args.lookups, args.seed, strategy, SCENARIOS[name])
            results.setdefault(name, {})[strategy] = r
            print(
                f"  success {r['success_rate']:.4f}  p50 {r['latency_ms']['p50']:.0f} ms"
                f"  p95 {r['latency_ms']['p95']:.0f} ms  msgs {r['messages_per_lookup']['mean']:.1f}"
                f"  hops p50 {r['hops']['p50']:.0f}  wall {r['wall_s']:.0f} s"
                f"  rss {r['peak_rss_mb']:.0f} MB",
                file=sys.stderr, flush=True,
            )
    ratios: dict[str, dict[str, float]] = {}
    for name, by in results.items():
        if "hailing" in by and "lockstep" in by:
            h, lk = by["hailing"], by["lockstep"]
            ratios[name] = {
                "p50_lockstep_over_hailing": lk["latency_ms"]["p50"] / h["latency_ms"]["p50"],
                "p95_lockstep_over_hailing": lk["latency_ms"]["p95"] / h["latency_ms"]["p95"],
                "messages_lockstep_over_hailing": lk["messages_per_lookup"]["mean"]
                / h["messages_per_lookup"]["mean"],
            }
    doc = {"nodes": args.nodes, "lookups": args.lookups, "seed": args.seed,
           "results": results, "ratios": ratios}
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
