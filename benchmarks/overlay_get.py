#!/usr/bin/env python3
"""DHT get latency over the data-channel overlay against UDP, on the same 30 nodes (issue 12).

Each of ``--nodes`` nodes runs both drivers under one node id: a core on a UDP socket
(127.0.0.1) and a core on data-channel links only (``DhtNode(bind=None, links=...)``),
in one process and one event loop, so that both routing spaces have the same ids, the
same machine and the same load. The links are a Kademlia-like neighbourhood
(``transport.topology.neighbourhood``: the p/2 XOR-closest peers and one per far bucket,
at most ``--p`` per node) built with ``couple_direct`` (real ICE, DTLS and SCTP on
127.0.0.1; the SDP exchanged in memory). Every node puts one immutable item in each
space; then ``--gets`` gets of a random item from a random node run in both spaces,
alternately (which space goes first alternates too).

Two overlay phases, in this order:

- ``links``: the overlay as built, no coupler: a lookup reaches only nodes it has a link
  to, queries to the others fail at once (error 201); a get succeeds when the item is
  found that way.
- ``coupled``: every driver has a ``LocalCoupler`` (in-memory signaling, as the overlay's
  network coupler would forward it): a query to a node without a link opens one (the
  link cap ``--p`` evicts the least recently used unpinned link), so lookups are the
  same as over UDP, plus the cost of the links they open.

    python benchmarks/overlay_get.py --nodes 30 --p 8 --gets 200 --out /tmp/overlay_get.json

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
from typing import Any

import hailing.rtc
from hailing.dht import DhtConfig
from hailing.node import DhtNode
from hailing.transport import LinkAddr, LinkDriver, couple_direct
from hailing.transport.topology import LocalCoupler, neighbourhood


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary(ms: list[float], ok: int, n: int) -> dict[str, Any]:
    return {"gets": n, "found": ok, "success": ok / n if n else None,
            "p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95),
            "mean_ms": statistics.fmean(ms) if ms else None}


async def timed_get(node: DhtNode, target: bytes, value: bytes) -> tuple[float, bool]:
    t0 = time.perf_counter()
    try:
        got = await node.get(target)
    except Exception:
        got = None
    return (time.perf_counter() - t0) * 1000.0, got == value


async def pings(udp: list[DhtNode], dc: list[DhtNode], edges: list[tuple[int, int]],
                rng: random.Random, n: int) -> dict[str, Any]:
    """One query's round trip between linked nodes, over UDP and over their link."""
    ms: dict[str, list[float]] = {"udp": [], "dc": []}
    for i in range(n):
        a, b = edges[rng.randrange(len(edges))]
        for space in (("udp", "dc") if i % 2 == 0 else ("dc", "udp")):
            src, dst = (udp[a], udp[b]) if space == "udp" else (dc[a], dc[b])
            addr: Any = dst.address if space == "udp" else LinkAddr.of(dst.node_id)
            t0 = time.perf_counter()
            await src.ping(addr)
            ms[space].append((time.perf_counter() - t0) * 1000.0)
    return {s: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for s, v in ms.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    hailing.rtc.set_host_addresses(["127.0.0.1"])
    rng = random.Random(args.seed)
    cfg = DhtConfig(exempt_loopback=True)
    ids = [rng.getrandbits(160).to_bytes(20, "big") for _ in range(args.nodes)]
    drivers = [LinkDriver(cap=args.p) for _ in ids]
    udp = [DhtNode(("127.0.0.1", 0), node_id=i, seed=args.seed + n, config=cfg)
           for n, i in enumerate(ids)]
    dc = [DhtNode(bind=None, links=d, node_id=i, seed=args.seed + n, config=cfg)
          for n, (i, d) in enumerate(zip(ids, drivers, strict=True))]
    out: dict[str, Any] = {"nodes": args.nodes, "p": args.p, "gets": args.gets,
                           "seed": args.seed, "python": platform.python_version()}
    try:
        for node in udp + dc:
            await node.start()
        t0 = time.perf_counter()
        edges = neighbourhood(ids, args.p, args.seed)
        for a, b in edges:
            await couple_direct(drivers[a], drivers[b])
        out["links"] = len(edges)
        out["couple_s"] = time.perf_counter() - t0
        out["couple_ms_per_link"] = out["couple_s"] * 1000.0 / max(1, len(edges))
        for node in udp[1:]:
            await node.bootstrap([udp[0].address])
        await udp[0].bootstrap()
        for node in dc:
            await node.bootstrap()
        values = [b"item %d" % n for n in range(args.nodes)]
        items: dict[str, list[bytes]] = {"udp": [], "dc": []}
        for n, v in enumerate(values):
            items["udp"].append(await udp[n].put(v))
            items["dc"].append(await dc[n].put(v))
        await asyncio.sleep(args.settle)  # the joins' bucket refreshes end
        out["ping_ms"] = await pings(udp, dc, edges, rng, args.pings)
        out["phases"] = {}
        for phase in ("links", "coupled"):
            if phase == "coupled":
                local = LocalCoupler(drivers)
                for d in drivers:
                    d.couplers = [local]
            coupled0 = sum(d.stats["link_coupled"] for d in drivers)
            ms: dict[str, list[float]] = {"udp": [], "dc": []}
            ok = {"udp": 0, "dc": 0}
            warm: list[float] = []  # dc gets that opened no link
            cold: list[float] = []
            for g in range(args.gets):
                who, what = rng.randrange(args.nodes), rng.randrange(args.nodes)
                order = ("udp", "dc") if g % 2 == 0 else ("dc", "udp")
                for space in order:
                    node = udp[who] if space == "udp" else dc[who]
                    opened = sum(d.stats["link_coupled"] for d in drivers)
                    t, found = await timed_get(node, items[space][what], values[what])
                    if found:
                        ms[space].append(t)
                        ok[space] += 1
                        if space == "dc":
                            fresh = sum(d.stats["link_coupled"] for d in drivers) > opened
                            (cold if fresh else warm).append(t)
            res = {s: summary(ms[s], ok[s], args.gets) for s in ("udp", "dc")}
            p50u, p50d = res["udp"]["p50_ms"], res["dc"]["p50_ms"]
            res["ratio_p50_dc_over_udp"] = p50d / p50u if p50u and p50d else None
            p95u, p95d = res["udp"]["p95_ms"], res["dc"]["p95_ms"]
            res["ratio_p95_dc_over_udp"] = p95d / p95u if p95u and p95d else None
            res["dc_no_link_opened"] = {"gets": len(warm), "p50_ms": pct(warm, 0.5),
                                        "p95_ms": pct(warm, 0.95)}
            res["dc_links_opened"] = {"gets": len(cold), "p50_ms": pct(cold, 0.5),
                                      "p95_ms": pct(cold, 0.95)}
            res["links_opened"] = sum(d.stats["link_coupled"] for d in drivers) - coupled0
            res["links_open_after"] = statistics.median(len(d.links()) for d in drivers)
            out["phases"][phase] = res
        stats: dict[str, int] = {}
        for d in drivers:
            for k, v in d.stats.items():
                stats[k] = stats.get(k, 0) + v
        out["link_stats"] = dict(sorted(stats.items()))
    finally:
        for node in udp + dc:
            await node.stop()
    return out


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: the median over the runs of each space's p50/p95/success, and the
    ratios (dc over udp) of those medians."""
    out: dict[str, Any] = {}
    for phase in runs[0]["phases"]:
        res: dict[str, Any] = {}
        for space in ("udp", "dc"):
            res[space] = {
                key: statistics.median(v) if (v := [r["phases"][phase][space][key] for r in runs
                                                    if r["phases"][phase][space][key] is not None])
                else None
                for key in ("p50_ms", "p95_ms", "success")}
        for q in ("p50", "p95"):
            u, d = res["udp"][f"{q}_ms"], res["dc"][f"{q}_ms"]
            res[f"ratio_{q}_dc_over_udp"] = d / u if u and d else None
        res["links_opened"] = statistics.median(r["phases"][phase]["links_opened"] for r in runs)
        res["dc_links_opened_p50_ms"] = statistics.median(
            [x for r in runs if (x := r["phases"][phase]["dc_links_opened"]["p50_ms"]) is not None]
            or [0.0])
        res["dc_no_link_opened_p50_ms"] = statistics.median(
            [x for r in runs if (x := r["phases"][phase]["dc_no_link_opened"]["p50_ms"]) is not None]
            or [0.0])
        out[phase] = res
    for space in ("udp", "dc"):
        out.setdefault("ping_p50_ms", {})[space] = statistics.median(
            r["ping_ms"][space]["p50"] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=30)
    ap.add_argument("--p", type=int, default=8, help="links per node (the cap)")
    ap.add_argument("--gets", type=int, default=200, help="gets per space and phase")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                    help="one run (a fresh network) per seed; medians over the runs")
    ap.add_argument("--pings", type=int, default=200, help="pings per space over links")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds of quiet after the joins and puts, before measuring")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(asyncio.run(run(args)))
    result: dict[str, Any] = {"nodes": args.nodes, "p": args.p, "gets": args.gets,
                              "seeds": args.seeds, "median_over_runs": medians(runs),
                              "runs": runs}
    result["wall_s"] = time.perf_counter() - t0
    result["command"] = "python benchmarks/overlay_get.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(f"ping p50: {result['median_over_runs']['ping_p50_ms']}", file=sys.stderr)
    for phase, res in result["median_over_runs"].items():
        if phase == "ping_p50_ms":
            continue
        print(f"{phase}: udp p50 {res['udp']['p50_ms']:.1f} ms p95 {res['udp']['p95_ms']:.1f} ms "
              f"({res['udp']['success']:.0%}); dc p50 {res['dc']['p50_ms'] or 0:.1f} ms "
              f"p95 {res['dc']['p95_ms'] or 0:.1f} ms ({res['dc']['success']:.0%}); "
              f"ratio p50 {res['ratio_p50_dc_over_udp'] or 0:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
