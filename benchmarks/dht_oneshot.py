#!/usr/bin/env python3
"""One-shot clients against a long-lived callee on a loopback DHT testnet (issue 8 #11).

Question: "in about half of the runs, every send between one caller and one callee
takes ~4 s to connect instead of ~45 ms". A send with ``hailing send`` and no daemon
starts a short-lived DHT node, listens on its answer key, posts the offer to the
callee's inbox, waits for the answer (which the long-lived callee posts to the answer
key) and exits. This script replays exactly that DHT traffic (no WebRTC), ``--sends``
times per run, ``--runs`` runs (each on a fresh ``--nodes``-node testnet), and reports
per phase the median and maximum, and how many sends took over a second.

Phases: ``join`` (bootstrap), ``listen`` (answer key), ``post`` (offer),
``answer_post`` (the callee's post of the answer), ``signal`` (listen to answer
delivered: what signaling adds to a connect).

    python benchmarks/dht_oneshot.py --runs 4 --sends 10                # clients as today
    python benchmarks/dht_oneshot.py --runs 4 --sends 10 --read-only    # BEP43 clients

JSON on stdout (and in --out FILE); a summary on stderr unless --json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import statistics
import sys
import time
from typing import Any

from hailing.dht import DhtConfig
from hailing.node import DhtNode
from hailing.testnet import testnet

INBOX = hashlib.sha1(b"callee inbox").digest()
ANSWERS = hashlib.sha1(b"caller answer key").digest()
PHASES = ("join", "listen", "post", "answer_post", "signal")


async def _next(node: DhtNode, value: bytes) -> None:
    while (await asyncio.wait_for(node.inbox(), 15)).value != value:
        pass


async def one_run(run: int, args: argparse.Namespace) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    async with testnet(args.nodes) as nodes:
        boot = [nodes[0].address]
        async with DhtNode(("127.0.0.1", 0), bootstrap=boot) as callee:
            await callee.bootstrap()
            await callee.listen(INBOX)
            for i in range(args.sends):
                offer, answer = b"offer %d %d" % (run, i), b"answer %d %d" % (run, i)
                cfg = DhtConfig(read_only=args.read_only)
                t0 = time.perf_counter()
                async with DhtNode(("127.0.0.1", 0), bootstrap=boot, config=cfg) as client:
                    await client.bootstrap()
                    t1 = time.perf_counter()
                    await client.listen(ANSWERS)
                    t2 = time.perf_counter()
                    await client.post(INBOX, offer)
                    t3 = time.perf_counter()
                    await _next(callee, offer)
                    t4 = time.perf_counter()
                    await callee.post(ANSWERS, answer)
                    t5 = time.perf_counter()
                    await _next(client, answer)
                    t6 = time.perf_counter()
                out.append({"join": t1 - t0, "listen": t2 - t1, "post": t3 - t2,
                            "answer_post": t5 - t4, "signal": t6 - t1})
                await asyncio.sleep(args.gap)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--sends", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between sends")
    ap.add_argument("--read-only", action="store_true", help="BEP43 read-only clients")
    ap.add_argument("--json", action="store_true", help="no summary on stderr")
    ap.add_argument("--out")
    args = ap.parse_args()
    runs = []
    for run in range(args.runs):
        sends = await one_run(run, args)
        runs.append(sends)
        if not args.json:
            print(f"run {run}: signal ms " + " ".join(f"{s['signal'] * 1000:.0f}" for s in sends),
                  file=sys.stderr, flush=True)
    flat = [s for r in runs for s in r]
    phases: dict[str, Any] = {}
    for ph in PHASES:
        xs = sorted(s[ph] for s in flat)
        phases[ph] = {"p50_ms": round(statistics.median(xs) * 1000, 1),
                      "max_ms": round(xs[-1] * 1000, 1), "over_1s": sum(x > 1.0 for x in xs)}
        if not args.json:
            print(f"{ph:12s} p50 {phases[ph]['p50_ms']:7.1f} ms  max {phases[ph]['max_ms']:7.1f} ms"
                  f"  >1 s: {phases[ph]['over_1s']}/{len(xs)}", file=sys.stderr)
    slow_runs = sum(1 for r in runs if sum(s["signal"] > 1.0 for s in r) > len(r) // 2)
    doc = {"benchmark": "dht_oneshot", "nodes": args.nodes, "runs": args.runs,
           "sends": args.sends, "read_only_clients": args.read_only, "phases": phases,
           "runs_mostly_slow": slow_runs, "python": platform.python_version(),
           "signal_ms": [[round(s["signal"] * 1000, 1) for s in r] for r in runs]}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
