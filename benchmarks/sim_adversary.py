"""Simulator: gets among liars and under a Sybil attack, with and without issue 9's
routing defences, side by side (docs/simulator.md, "Adversaries").

Each (scenario, defences, seed) is one ``python -m hailing.sim ... --json`` run in its
own process, one at a time (a 10,000-node run takes minutes and ~2 GB); the exact
command is in the output as ``command``. Prints one JSON document: every run's key
figures, and per (scenario, defences) the min and median success and the median
latency over the seeds. Usage:

    python benchmarks/sim_adversary.py [--nodes 10000] [--lookups 1000] [--seeds 1,2]
        [--scenarios honest,liars10,liars20,drop20,sybil] [--defences none,all]
        [--out FILE]

Scenarios:
  honest   no adversary (what the defences cost an honest network)
  liars10  10 % of the nodes are colluding liars: their answers name only each other
           (the ones closest to the target), never a value; they drop what is stored
  liars20  the same with 20 %
  drop20   20 % of the nodes drop stored values but route honestly
  sybil    1,000 ids on 10 addresses near one key, placed before the key's value is
           put; every get asks for that key
Defences: ``none`` (the core as it was), ``all`` (the default configuration),
``no-bep42`` (all but BEP42: what the other defences do alone).
``--seeds`` takes a list and ranges (``1-3`` or ``1,4``). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

SCENARIOS: dict[str, list[str]] = {
    "honest": [],
    "liars10": ["--liars", "0.1", "--liar-mode", "route"],
    "liars20": ["--liars", "0.2", "--liar-mode", "route"],
    "drop20": ["--liars", "0.2", "--liar-mode", "drop"],
    "sybil": ["--sybil", "1000", "--sybil-ips", "10"],
}


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def run_one(nodes: int, lookups: int, seed: int, scenario: str, defences: str) -> dict[str, Any]:
    args = [
        "-m", "hailing.sim", "--nodes", str(nodes), "--lookups", str(lookups), "--seed", str(seed),
        "--defences", defences, *SCENARIOS[scenario], "--json",
    ]
    out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True)
    r: dict[str, Any] = json.loads(out.stdout)
    return {
        "scenario": scenario, "defences": defences, "seed": seed, "nodes": nodes,
        "lookups": lookups, "success_rate": r["success_rate"], "failures": r["failures"],
        "failure_kinds": r["failure_kinds"], "latency_ms": r["latency_ms"],
        "messages_per_lookup": r["messages_per_lookup"]["mean"],
        "stored_per_put": r["stored_per_put"], "adversaries": r["adversaries"],
        "packets_sent": r["packets"]["sent"], "wall_s": r["wall_s"],
        "peak_rss_mb": r["peak_rss_mb"], "trace_sha256": r["trace_sha256"],
        "command": " ".join(["python", *args]),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["defences"]), []).append(r)
    out = []
    for (scenario, defences), rs in groups.items():
        rates = [r["success_rate"] for r in rs]
        p50s = [r["latency_ms"]["p50"] for r in rs if r["latency_ms"]["p50"] is not None]
        p95s = [r["latency_ms"]["p95"] for r in rs if r["latency_ms"]["p95"] is not None]
        out.append({
            "scenario": scenario, "defences": defences, "seeds": len(rs),
            "success_min": min(rates), "success_median": statistics.median(rates),
            "p50_ms_median": statistics.median(p50s) if p50s else None,
            "p95_ms_median": statistics.median(p95s) if p95s else None,
            "messages_median": statistics.median(r["messages_per_lookup"] for r in rs),
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--seeds", default="1", help="seeds: list and ranges, e.g. 1-3 or 1,4")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--defences", default="none,all", help="comma-separated: none, all, no-bep42")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    t0 = time.perf_counter()
    runs = []
    for seed in parse_seeds(args.seeds):
        for scenario in scenarios:
            for defences in args.defences.split(","):
                r = run_one(args.nodes, args.lookups, seed, scenario, defences)
                runs.append(r)
                print(
                    f"[{time.perf_counter() - t0:6.0f} s] {scenario} defences={defences} seed {seed}: "
                    f"success {r['success_rate']:.4f} {r['failure_kinds']} p50 {r['latency_ms']['p50']} "
                    f"p95 {r['latency_ms']['p95']} msgs {r['messages_per_lookup']:.1f} wall {r['wall_s']} s",
                    file=sys.stderr, flush=True,
                )
    doc = {
        "nodes": args.nodes, "lookups": args.lookups, "python": sys.version.split()[0],
        "wall_s": round(time.perf_counter() - t0, 1), "summary": summarize(runs), "runs": runs,
    }
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
