"""``python -m hailing.sim``: run the lookup workload on N simulated nodes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from .overlay import FORWARDING, OverlayConfig
from .overlay_run import run_overlay_benchmark
from .scenario import DEFENCES, SimParams, run_lookup_benchmark


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(
        prog="python -m hailing.sim",
        description="Simulate N real hailing DHT cores on a virtual network (latency, loss, "
        "churn) and measure gets of stored values. Deterministic for a given --seed.",
    )
    ap.add_argument("--nodes", type=int, required=True, help="number of nodes")
    ap.add_argument("--lookups", type=int, required=True, help="number of gets to measure")
    ap.add_argument("--churn", type=float, default=0.0,
                    help="fraction of nodes that fail (once) or are replaced per period (continuous)")
    ap.add_argument("--churn-mode", choices=("once", "continuous"), default="once")
    ap.add_argument("--loss", type=float, default=0.0, help="packet loss probability")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strategy", choices=("hailing", "lockstep"), default="hailing",
                    help="lookup algorithm: hailing's, or the kademlia package's lock-step rounds")
    ap.add_argument("--items", type=int, default=0, help="items stored (default lookups/10, min 10)")
    ap.add_argument("--mutable-fraction", type=float, default=0.0,
                    help="fraction of the items that are mutable (BEP44 signed)")
    ap.add_argument("--duration", type=float, default=3600.0,
                    help="continuous churn: virtual seconds the gets are spread over")
    ap.add_argument("--liars", type=float, default=0.0,
                    help="fraction of the nodes that are colluding liars (docs/simulator.md)")
    ap.add_argument("--liar-mode", choices=("route", "drop"), default="route",
                    help="route: answers name only fellow liars, values dropped; drop: values dropped")
    ap.add_argument("--sybil", type=int, default=0, metavar="IDS",
                    help="a Sybil attacker with IDS ids near the first item's key (every get asks for it)")
    ap.add_argument("--sybil-ips", type=int, default=10, help="addresses the Sybil ids use")
    ap.add_argument("--defences", choices=DEFENCES, default="all",
                    help="issue 9's routing defences the nodes run: all (the default "
                    "configuration), none (as before), no-bep42 (all but BEP42)")
    ap.add_argument("--cap", type=int, default=0, metavar="P",
                    help="the data-channel overlay: at most P links per node, coupling by "
                    "forwarding (docs/simulator.md); 0 (default): no overlay")
    ap.add_argument("--forwarding", choices=FORWARDING, default="nexthop",
                    help="with --cap: how offers and answers travel (next-hop or flooding)")
    ap.add_argument("--json", action="store_true", help="print one JSON object, no progress")
    args = ap.parse_args(argv)
    params = SimParams(
        nodes=args.nodes, lookups=args.lookups, churn=args.churn, churn_mode=args.churn_mode,
        loss=args.loss, seed=args.seed, strategy=args.strategy, items=args.items,
        mutable_fraction=args.mutable_fraction, duration=args.duration, liars=args.liars,
        liar_mode=args.liar_mode, sybil_ids=args.sybil, sybil_ips=args.sybil_ips,
        defences=args.defences,
    )
    try:
        params.validate()
    except ValueError as exc:
        ap.error(str(exc))
    if args.cap and (args.liars or args.sybil or args.strategy != "hailing"):
        ap.error("--cap runs without adversaries, with the hailing strategy")
    progress = None if args.json else sys.stderr
    if args.cap:
        try:
            config = OverlayConfig(cap=args.cap, forwarding=args.forwarding)
            config.validate()
        except ValueError as exc:
            ap.error(str(exc))
        result = run_overlay_benchmark(params, config, progress=progress)
    else:
        result = run_lookup_benchmark(params, progress=progress)
    if args.json:
        print(json.dumps(result))
        return 0
    lat, msgs, hops = result["latency_ms"], result["messages_per_lookup"], result["hops"]

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(f"{result['nodes']} nodes, {result['lookups']} gets ({params.strategy}, seed {params.seed})")
    aborted = f", {result['aborted']} aborted: their host left" if result["aborted"] else ""
    print(f"  success      {result['success_rate']:.2%} ({result['failures']} failed{aborted})")
    print(f"  latency      p50 {f(lat['p50'])} ms, p95 {f(lat['p95'])} ms, p99 {f(lat['p99'])} ms")
    print(f"  messages/get mean {msgs['mean']:.1f}, p95 {f(msgs['p95'])}")
    print(f"  hops         p50 {f(hops['p50'])}, p95 {f(hops['p95'])}")
    if "overlay" in result:
        c = result["overlay"]["phases"]["run"]["couplings"]
        sig = result["overlay"]["phases"]["run"]["signaling"]
        rate = "-" if c["success_rate"] is None else f"{c['success_rate']:.2%}"
        print(f"  couplings    {c['succeeded']}/{c['to_live_targets']} ({rate}) after the join,"
              f" {sig['per_new_link'] or 0:.1f} signaling messages per new link")
    print(f"  wall {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
