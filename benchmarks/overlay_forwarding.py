#!/usr/bin/env python3
"""The network coupler at work: an overlay built through forwarding (issue 12).

``--nodes`` nodes on loopback with data channels only (no UDP socket), at most ``--p``
links each, join one after the other, each through one bootstrap link (``couple_direct``
with a random node already in, pinned at both ends); every other link is opened by the
network coupler as the DHT asks for it (hello and sealed offer/answer forwarded hop by
hop, ``transport/forward.py``). Then ``--gets`` gets of items put by random nodes.

Reported: the time to build, couplings made and failed, hops per forwarded message, the
coupling time and its steps (quantiles), forwarding refusals by reason, gets found.
``--lookahead both`` (the default) runs every seed twice, greedy forwarding on the
neighbours alone (``off``) and with one step of lookahead through their link lists
(``on``), and prints them side by side; ``--levels both`` does the same with the link
manager's pins over levels, and its coupling of pins it has no link to (``off``: only
the closest open links pinned, as before them).

    python benchmarks/overlay_forwarding.py --nodes 30 --p 8 --seeds 3 --out /tmp/fwd.json

JSON on stdout (and in --out FILE); a summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from overlay_helpers import start_node, stop_all  # type: ignore[import-not-found]

import hailing.rtc
from hailing.dht import DhtConfig
from hailing.transport import couple_direct


def _q(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    d = statistics.quantiles(values, n=10)
    return {"p10": round(d[0], 3), "p50": round(d[4], 3), "p90": round(d[8], 3),
            "max": round(max(values), 3)}


async def run(seed: int, n: int, p: int, gets: int, soft: float, lookahead: bool,
              levels: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes = []
    started = time.monotonic()
    try:
        for i in range(n):
            o = await start_node(p=p, seed=seed * 1000 + i,
                                 config=DhtConfig(min_soft_timeout=soft))
            o.fwd.lookahead = lookahead
            if not levels:
                o.driver.levels = 0
                o.driver.fill_pins = False
            if nodes:
                await couple_direct(o.driver, rng.choice(nodes).driver, pinned=True)
                await o.node.bootstrap()
            nodes.append(o)
        built = time.monotonic() - started
        targets = []
        for i in range(gets):
            w = rng.choice(nodes)
            targets.append((await w.node.put(f"item {seed} {i}".encode()), i))
        found = 0
        for target, i in targets:
            r = rng.choice(nodes)
            if await r.node.get(target) == f"item {seed} {i}".encode():
                found += 1
        stats: dict[str, int] = {}
        for o in nodes:
            for k, v in o.node.stats.items():
                if k.startswith(("fwd_", "link_couple", "link_lists", "link_garbage", "link_pin",
                                 "link_evicted")):
                    stats[k] = stats.get(k, 0) + v
        timings = [t for o in nodes for t in o.coupler.timings]
        sent = stats.get("fwd_sent", 0)
        return {
            "seed": seed, "lookahead": lookahead, "level_pins": nodes[0].driver.levels,
            "built_s": round(built, 2),
            "couplings": stats.get("fwd_link_coupled", 0),
            "couplings_failed": stats.get("link_couple_failed", 0),
            "hops_per_message": round(1 + stats.get("fwd_forwarded", 0) / sent, 2) if sent else None,
            "couple_s": _q([sum(t) for t in timings]),
            "steps_p50_s": {name: round(statistics.median(t[i] for t in timings), 3)
                            for i, name in enumerate(["hello", "offer_after_hello",
                                                      "offer_answered", "open"])}
            if timings else {},
            "gets": gets, "gets_found": found,
            "counters": dict(sorted(stats.items())),
        }
    finally:
        await stop_all(nodes)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=30)
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--gets", type=int, default=10)
    ap.add_argument("--soft", type=float, default=1.2,
                    help="DhtConfig.min_soft_timeout of the nodes (default 1.2 s)")
    ap.add_argument("--lookahead", choices=["on", "off", "both"], default="both",
                    help="forward with one step of lookahead, greedy on the neighbours "
                         "alone, or both on each seed (default)")
    ap.add_argument("--levels", choices=["on", "off", "both"], default="on",
                    help="the link manager's pins over levels (default on)")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    hailing.rtc.set_host_addresses(["127.0.0.1"])
    choice = {"on": [True], "off": [False], "both": [False, True]}
    report: dict[str, Any] = {
        "benchmark": "overlay_forwarding", "nodes": args.nodes, "p": args.p,
        "min_soft_timeout": args.soft, "python": platform.python_version(), "runs": []}
    for s in range(args.first_seed, args.first_seed + args.seeds):
        for lv in choice[args.levels]:
            for la in choice[args.lookahead]:
                r = await run(s, args.nodes, args.p, args.gets, args.soft, la, lv)
                report["runs"].append(r)
                _summary(r)
                if args.out:  # after each run: a long one interrupted keeps what it did
                    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def _summary(r: dict[str, Any]) -> None:
    mode = ("lookahead" if r["lookahead"] else "greedy") + (
        f", {r['level_pins']} level pins" if r["level_pins"] else ", no level pins")
    c = r["counters"]
    print(f"seed {r['seed']} {mode}: built {r['built_s']} s, {r['couplings']} couplings "
          f"({r['couplings_failed']} failed), {r['hops_per_message']} hops/message, "
          f"coupling {r['couple_s']}, gets {r['gets_found']}/{r['gets']}, "
          f"gave up {c.get('fwd_gave_up', 0)}, escapes {c.get('fwd_escapes', 0)}, "
          f"via lookahead {c.get('fwd_via_lookahead', 0)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
