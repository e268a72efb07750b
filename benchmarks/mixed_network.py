"""Connect time on a mixed network in the NAT lab: through the sub-overlay, and through
the BEP44 fallback once every hailing node is stopped (issue 11's target: p50 <= 10 s).

The world is tests/mixed_world.py's (root and the NAT lab needed: ``sudo``): 40
libtorrent DHT nodes and 4 public hailing nodes on the lab's public segment, every node
joined through libtorrent nodes only; a caller and a callee daemon behind port-restricted
NATs (``hailing up --bootstrap <a libtorrent node>``, nothing else configured), and a
read-only callee on a public address for the fallback (with every hailing node gone
there is no STUN server left, so two NATed parties would have no path).

1. ``--calls`` calls caller -> NATed callee (through the sub-overlay: the DHT inbox on the
   public hailing nodes), each a new connection (hung up after), back to back;
2. every public hailing node and the NATed callee are stopped;
3. ``--fallback-calls`` calls caller -> public read-only callee, each after the callee
   sat idle a random ``--idle`` time (default 14-30 s: past its back-off to the idle
   poll interval, at a random phase of it, as benchmarks/bep44_fallback.py does);
4. the caller and that callee are restarted (daemons that start with no hailing node
   reachable: no STUN server listed, see docs/benchmarks.md) and step 3 again.

Reports the daemon's ``connect_ms`` (from the send to an open, authenticated data
channel) p50/p95 per phase, the coupler (``via``) and the ICE path of each call.

    sudo .venv/bin/python benchmarks/mixed_network.py [--calls 10] [--fallback-calls 8]
        [--idle 14 30] [--seed 1] [--out FILE]

``--sim`` runs the simulator's mixed networks instead (no root; hailing.sim.mixed):
1-5 % hailing nodes among plain Mainline ones, calls (listen, then post) with and
without the sub-overlay, over ``--seeds`` seeds: delivered calls and the offer's
virtual latency.

    .venv/bin/python benchmarks/mixed_network.py --sim [--seeds 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "src")]

from mixed_world import HL_NODES, LT_NODES, MixedWorld  # noqa: E402
from natlab import Lab, natlab_available  # noqa: E402


def _summary(rows: list[dict[str, Any]], via: str) -> dict[str, Any]:
    ok = [r for r in rows if r.get("delivered") and r.get("via") == via]
    ms = sorted(float(r["connect_ms"]) for r in ok)

    def pct(p: float) -> float | None:
        return ms[min(len(ms) - 1, int(p * len(ms)))] if ms else None

    return {"calls": len(rows), "connected": len(ok), "via": via,
            "connect_ms_p50": statistics.median(ms) if ms else None,
            "connect_ms_p95": pct(0.95), "connect_ms_max": ms[-1] if ms else None}


def _fallback(world: MixedWorld, calls: int, idle: tuple[float, float], rng: random.Random,
              timeout: float) -> dict[str, Any]:
    caller, callee = world.caller("port-restricted"), world.fallback_callee
    rows: list[dict[str, Any]] = []
    for i in range(calls):
        wait = rng.uniform(*idle)
        time.sleep(wait)
        r = world.send(caller, callee, timeout=timeout * 2)
        r.update(call=i, idle_s=round(wait, 1))
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        assert caller.driver is not None
        caller.driver.request("DELETE", f"/api/links/{callee.name}")
    return {**_summary(rows, "mainline"), "idle_s": list(idle), "rows": rows}


def run(calls: int, fallback_calls: int, idle: tuple[float, float], seed: int,
        timeout: float) -> dict[str, Any]:
    rng = random.Random(seed)
    report: dict[str, Any] = {"lt_nodes": LT_NODES, "hailing_public_nodes": HL_NODES,
                              "nat": "port-restricted", "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="hl-mixed-") as tmp, Lab() as lab:
        world = MixedWorld(lab, Path(tmp))
        t0 = time.monotonic()
        try:
            world.start()
            report["world_start_s"] = round(time.monotonic() - t0, 1)
            sub: list[dict[str, Any]] = []
            for i in range(calls):
                r = world.call("port-restricted", "port-restricted", timeout=timeout)
                r["call"] = i
                sub.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
                world.hang_up("port-restricted", "port-restricted")
            report["suboverlay"] = {**_summary(sub, "dht"), "rows": sub}
            world.stop_hailing_nodes("e-port-restricted")
            report["bep44_fallback"] = _fallback(world, fallback_calls, idle, rng, timeout)
            world.restart_daemon("c-port-restricted")
            world.restart_daemon(world.FALLBACK)
            report["bep44_fallback_restarted"] = _fallback(world, fallback_calls, idle, rng,
                                                           timeout)
        finally:
            world.close()
    return report


#: (nodes, hailing fraction) of the simulated networks.
SIM_NETWORKS = ((300, 0.03), (400, 0.05), (1000, 0.01))


def run_sim(seeds: int, calls: int = 5) -> dict[str, Any]:
    from hailing.sim.mixed import run_mixed

    rows = []
    for nodes, fraction in SIM_NETWORKS:
        for sub in (True, False):
            t0 = time.perf_counter()
            results = [run_mixed(nodes, fraction, seed=s, calls=calls, suboverlay=sub)
                       for s in range(1, seeds + 1)]
            lat = sorted(x for r in results for x in r.latencies)
            row = {"nodes": nodes, "hailing_fraction": fraction,
                   "hailing_nodes": results[0].hailing, "suboverlay": sub, "seeds": seeds,
                   "calls": sum(r.calls for r in results),
                   "delivered": sum(r.delivered for r in results),
                   "listen_failed": sum(r.listen_failed for r in results),
                   "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
                   "wall_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return {"simulator": rows, "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--fallback-calls", type=int, default=8)
    ap.add_argument("--idle", type=float, nargs=2, default=(14.0, 30.0), metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sim", action="store_true", help="the simulator's mixed networks")
    ap.add_argument("--seeds", type=int, default=10, help="(--sim) seeds per network")
    args = ap.parse_args()
    if args.sim:
        text = json.dumps(run_sim(args.seeds), indent=2)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n")
        return
    ok, why = natlab_available()
    if not ok:
        sys.exit(f"mixed_network: the NAT lab cannot run here: {why}")
    report = run(args.calls, args.fallback_calls, tuple(args.idle), args.seed, args.timeout)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
