"""Where the time goes: the simulator's workload under cProfile, grouped by module, and
the core's raw query-answering rate.

    python benchmarks/core_profile.py [--nodes 2000] [--lookups 200] [--top 15] [--json]

Part 1 profiles ``run_lookup_benchmark`` (join, put, get) and reports the share of time
per module and the top functions. Part 2 feeds a single DhtProtocol a fixed mix of
queries (20 % ping, 50 % find_node, 30 % get) from 50 sources and reports queries
answered per second by the core alone (no sockets, no event loop).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import time
from collections import defaultdict
from typing import Any

from hailing import bencode
from hailing.dht import DhtProtocol
from hailing.sim import SimParams, run_lookup_benchmark


def profile_sim(nodes: int, lookups: int, top: int) -> dict[str, Any]:
    prof = cProfile.Profile()
    prof.enable()
    result = run_lookup_benchmark(SimParams(nodes=nodes, lookups=lookups, loss=0.01))
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    by_module: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, func), (_cc, _nc, tottime, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = filename.split("/src/")[-1] if "/src/" in filename else filename.rsplit("/", 1)[-1]
        by_module[name] += tottime
        rows.append((tottime, f"{name}:{line}({func})"))
    rows.sort(reverse=True)
    return {
        "nodes": nodes, "lookups": lookups, "packets": result["packets"]["sent"],
        "profiled_s": round(total, 2),
        "by_module_pct": {m: round(100 * t / total, 1) for m, t in
                          sorted(by_module.items(), key=lambda kv: -kv[1])[:top]},
        "top_functions_pct": [(f, round(100 * t / total, 1)) for t, f in rows[:top]],
    }


def core_rate(seconds: float = 3.0) -> dict[str, Any]:
    rng = random.Random(1)
    p = DhtProtocol(rng=rng, now=0.0)
    for i in range(200):
        q = bencode.encode({b"a": {b"id": rng.randbytes(20)}, b"q": b"ping", b"t": b"aa", b"y": b"q"})
        p.receive_datagram(q, (f"10.0.{i // 250}.{i % 250 + 1}", 1000 + i), 0.0)
    p.datagrams_to_send(0.0)
    ids = [rng.randbytes(20) for _ in range(50)]
    msgs = []
    for i in range(1000):
        r, nid = rng.random(), ids[i % 50]
        if r < 0.2:
            a: dict[bytes, Any] = {b"id": nid}
            m = b"ping"
        elif r < 0.7:
            a, m = {b"id": nid, b"target": rng.randbytes(20)}, b"find_node"
        else:
            a, m = {b"id": nid, b"target": rng.randbytes(20)}, b"get"
        msgs.append((bencode.encode({b"a": a, b"q": m, b"t": b"ab", b"y": b"q"}),
                     (f"10.1.0.{i % 50 + 1}", 2000 + i % 50)))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for data, addr in msgs:
            p.receive_datagram(data, addr, 1.0)
            p.datagrams_to_send(1.0)
        n += len(msgs)
    return {"queries_per_s": round(n / (time.perf_counter() - t0))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--lookups", type=int, default=200)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    doc = {"core": core_rate(), "sim_profile": profile_sim(args.nodes, args.lookups, args.top)}
    if args.json:
        print(json.dumps(doc))
    else:
        print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
