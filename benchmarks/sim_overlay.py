"""The data-channel overlay in the simulator (issue 12): connection cap p, coupling by
next-hop forwarding, flooding measured beside it, under churn.

Every run is ``hailing.sim.overlay_run.run_overlay_benchmark`` in its own process (at
most ``--jobs`` at a time): ``nodes`` real DHT cores join behind a link layer capped at p
links per node, owners put items, then gets run while ``--churn`` of the nodes leave
and are replaced during the run. Each run reports lookup success and latency, the
couplings attempted and succeeded (after the join: puts and gets under churn), the
signaling messages per new link by next-hop forwarding, and on ``--flood-samples``
couplings what flooding the offer and answer (TTL ``--flood-ttl``) would have cost on
the same links at the same moment. Two series:

- ``--caps`` at ``--nodes`` (the issue: 10,000 nodes, p in 8, 16, 32, 64);
- ``--sweep`` sizes at ``--sweep-cap``: forwarding cost against n, with the least-squares
  fit messages = a + b log2(n) (and flooding's messages beside it, with its own fit
  against n).

Medians over ``--seeds`` per point. Prints one JSON document (``--out`` writes it too);
progress on stderr. Usage:

    python benchmarks/sim_overlay.py [--nodes 10000] [--caps 8,16,32,64]
        [--sweep 500,1000,2000,5000,10000] [--sweep-cap 32] [--seeds 1]
        [--lookups 200] [--duration 300] [--churn 0.3] [--jobs 2] [--out FILE]
        [--set NAME=VALUE ...]   (OverlayConfig options: the A/B of docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _report import emit


def run_one(nodes: int, cap: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--nodes", str(nodes), "--caps", str(cap),
           "--seeds", str(seed), "--lookups", str(args.lookups), "--duration", str(args.duration),
           "--churn", str(args.churn), "--flood-samples", str(args.flood_samples),
           "--flood-ttl", str(args.flood_ttl)]
    for opt in args.set:
        cmd += ["--set", opt]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=args.timeout)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def worker(args: argparse.Namespace) -> int:
    from hailing.sim.overlay import OverlayConfig
    from hailing.sim.overlay_run import run_overlay_benchmark
    from hailing.sim.scenario import SimParams

    params = SimParams(nodes=args.nodes, lookups=args.lookups, churn=args.churn,
                       churn_mode="continuous", churn_period=args.duration,
                       duration=args.duration, seed=int(args.seeds))
    config = OverlayConfig(cap=int(args.caps), flood_samples=args.flood_samples,
                           flood_every=31, flood_ttl=args.flood_ttl, **overlay_options(args.set))
    r = run_overlay_benchmark(params, config)
    run = r["overlay"]["phases"]["run"]
    c, sig, fl = run["couplings"], run["signaling"], run["flood_samples"]
    print(json.dumps({
        "nodes": args.nodes, "cap": int(args.caps), "seed": int(args.seeds),
        "options": overlay_options(args.set), "control": run["control"],
        "lookups": {"success": r["success_rate"], "aborted": r["aborted"],
                    "failure_kinds": r["failure_kinds"], "p50_ms": r["latency_ms"]["p50"],
                    "p95_ms": r["latency_ms"]["p95"], "messages": r["messages_per_lookup"]["mean"]},
        "couplings": {"attempted": c["attempted"], "to_live_targets": c["to_live_targets"],
                      "succeeded": c["succeeded"], "success": c["success_rate"],
                      "failures": c["failures"], "to_dead_targets": c["to_dead_targets"],
                      "bootstrap": c["bootstrap"], "rejoin_after_stuck": c["rejoin_after_stuck"],
                      "stuck_target_unlinked": c["stuck_target_unlinked"],
                      "first_hop_introducer": c["first_hop_introducer"]},
        "nexthop": {"per_new_link": sig["per_new_link"], "per_coupling": sig["per_coupling"],
                    "hops": sig["hops"], "coupling_ms": run["coupling_ms"]},
        "flood": fl,
        "links": {**run["links"], "per_node": r["overlay"]["links_per_node"]},
        "join_couplings_success": r["overlay"]["phases"]["join"]["couplings"]["success_rate"],
        "departures": r["departures"], "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
        "trace_sha256": r["trace_sha256"],
    }))
    return 0


def overlay_options(pairs: list[str]) -> dict[str, Any]:
    """``--set name=value`` options of OverlayConfig (value as JSON: true, 3, null)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name] = json.loads(value)
    return out


def fit_log2(points: list[tuple[int, float]]) -> dict[str, float] | None:
    """Least squares y = a + b log2(n), with R^2."""
    if len(points) < 2:
        return None
    xs = [math.log2(n) for n, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss = sum((y - my) ** 2 for y in ys)
    res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return {"a": round(a, 3), "b": round(b, 3), "r2": round(1 - res / ss, 4) if ss else 1.0}


def fit_linear(points: list[tuple[int, float]]) -> dict[str, float] | None:
    """Least squares y = c n through the origin (flooding reaches everyone)."""
    if not points:
        return None
    c = sum(n * y for n, y in points) / sum(n * n for n, _ in points)
    return {"c": round(c, 4)}


def median_of(runs: list[dict[str, Any]], get: Any) -> float | None:
    vals = [v for v in (get(r) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["nodes"], r["cap"]), []).append(r)
    return {f"{n}/{cap}": {
        "nodes": n, "cap": cap, "seeds": len(rs),
        "lookup_success": median_of(rs, lambda r: r["lookups"]["success"]),
        "lookup_p50_ms": median_of(rs, lambda r: r["lookups"]["p50_ms"]),
        "lookup_p95_ms": median_of(rs, lambda r: r["lookups"]["p95_ms"]),
        "couplings_attempted": median_of(rs, lambda r: r["couplings"]["attempted"]),
        "couplings_success": median_of(rs, lambda r: r["couplings"]["success"]),
        "couplings_success_min": min(r["couplings"]["success"] or 0 for r in rs),
        "nexthop_messages_per_new_link": median_of(rs, lambda r: r["nexthop"]["per_new_link"]),
        "nexthop_messages_per_coupling": median_of(rs, lambda r: r["nexthop"]["per_coupling"]["mean"]),
        "nexthop_hops_p50": median_of(rs, lambda r: r["nexthop"]["hops"]["p50"]),
        "coupling_ms_p50": median_of(rs, lambda r: r["nexthop"]["coupling_ms"]["p50"]),
        "flood_messages_per_coupling": median_of(
            rs, lambda r: r["flood"]["messages"]["mean"] if r["flood"] else None),
        "flood_reached": median_of(rs, lambda r: r["flood"]["reached"] if r["flood"] else None),
        "wall_s": median_of(rs, lambda r: r["wall_s"]),
    } for (n, cap), rs in sorted(groups.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--caps", default="8,16,32,64")
    ap.add_argument("--sweep", default="500,1000,2000,5000,10000", help="sizes ('' for none)")
    ap.add_argument("--sweep-cap", type=int, default=32)
    ap.add_argument("--seeds", default="1", help="comma-separated")
    ap.add_argument("--lookups", type=int, default=200)
    ap.add_argument("--duration", type=float, default=300.0,
                    help="virtual seconds of gets; --churn of the nodes are replaced in it")
    ap.add_argument("--churn", type=float, default=0.3)
    ap.add_argument("--flood-samples", type=int, default=30)
    ap.add_argument("--flood-ttl", type=int, default=7)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="an OverlayConfig option for every run, e.g. lookahead=false")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5400.0, help="per run, seconds")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    caps = [int(c) for c in args.caps.split(",") if c]
    sweep = [int(n) for n in args.sweep.split(",") if n]
    combos = sorted({(args.nodes, c, s) for c in caps for s in seeds}
                    | {(n, args.sweep_cap, s) for n in sweep for s in seeds})
    t0 = time.perf_counter()

    def one(combo: tuple[int, int, int]) -> dict[str, Any]:
        r = run_one(*combo, args)
        fl = r["flood"]
        print(f"[{time.perf_counter() - t0:6.0f} s] n {r['nodes']} p {r['cap']} seed {r['seed']}:"
              f" lookups {r['lookups']['success']:.3f} p50 {r['lookups']['p50_ms']} ms,"
              f" couplings {r['couplings']['succeeded']}/{r['couplings']['to_live_targets']},"
              f" next-hop {r['nexthop']['per_coupling']['mean']} msgs/coupling,"
              f" flood {fl['messages']['mean'] if fl else None}, wall {r['wall_s']} s",
              file=sys.stderr, flush=True)
        return r

    # Largest first: the long runs start while the small ones fill the other job.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(one, sorted(combos, key=lambda c: -c[0] * c[1])))
    summary = summarize(runs)
    swept = [summary[f"{n}/{args.sweep_cap}"] for n in sweep if f"{n}/{args.sweep_cap}" in summary]
    nexthop_pts = [(s["nodes"], s["nexthop_messages_per_coupling"]) for s in swept
                   if s["nexthop_messages_per_coupling"] is not None]
    flood_pts = [(s["nodes"], s["flood_messages_per_coupling"]) for s in swept
                 if s["flood_messages_per_coupling"] is not None]
    doc = {
        "params": {k: v for k, v in vars(args).items() if k != "worker"},
        "python": sys.version.split()[0], "wall_s": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "sweep": {
            "cap": args.sweep_cap, "points": swept,
            "nexthop_fit_log2": fit_log2(nexthop_pts),
            "nexthop_per_new_link_fit_log2": fit_log2(
                [(s["nodes"], s["nexthop_messages_per_new_link"]) for s in swept
                 if s["nexthop_messages_per_new_link"] is not None]),
            "flood_fit_log2": fit_log2(flood_pts), "flood_fit_linear": fit_linear(flood_pts),
        },
        "runs": runs,
    }
    emit(doc, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
