"""The NAT matrix, timed: calls between daemons behind every pair of NAT kinds.

In a NAT lab (``tests/natlab``; needs root, network namespaces and iptables), the world
of ``tests/test_nat_matrix.py`` (``tests/natmatrix_world.py``): three public hailing DHT
nodes (the last also a coturn relay, volunteered on the DHT) and one daemon behind each
NAT kind for calling and one for being called, none configured with a STUN or TURN
server. Every pair (caller kind x callee kind, 25) is called ``--calls`` times; calls go
round-robin over the pairs so that every pair sees the same machine load. A call is a
``POST /api/send`` of a text through the caller's daemon to the callee: a new link
(DHT signaling, ICE with the DHT nodes' STUN and the relay, DTLS, SCTP, the identity
proof), its ``connect_ms`` as the daemon measured it, and its ICE path; then the caller
hangs up (``DELETE /api/links/{contact}``) and the next call starts once the callee saw
the link close.

Per pair: success rate, connect p50/p95 (ms), how many calls went direct or relayed,
and the candidate types. The baseline, in the same run, is the ``public -> public``
pair: two hosts on the public segment reaching each other with host candidates, over
the same DHT nodes. Targets: every pair connects (100 %); hole-punchable pairs direct in
>= 95 % of their calls; the p50 connect time through NATs (every pair but the
baseline) <= 2x the baseline's.

    sudo python benchmarks/nat_matrix.py [--calls 20] [--kinds public,symmetric] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "tests")]

import natmatrix_world  # noqa: E402
from natmatrix_world import NatWorld, expected_path  # noqa: E402

from tests.natlab import NAT_KINDS, Lab, natlab_available  # noqa: E402

BASELINE = ("public", "public")
DEBUG_SITE = """import logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                    format="%(asctime)s %(name)s %(message)s")
for name in ("aioice", "aiortc"):
    logging.getLogger(name).setLevel(logging.INFO)
"""


def pct(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile."""
    if not values:
        return None
    s = sorted(values)
    return round(s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))], 1)


def path_name(path: dict[str, Any] | None) -> str:
    if not path:
        return "none"
    return f"{path.get('local')}/{path.get('remote')}"


def run(calls: int, kinds: list[str], timeout: float, log: Any,
        keep: str | None = None) -> dict[str, Any]:
    pairs = [(a, b) for a in kinds for b in kinds]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {p: [] for p in pairs}
    with contextlib.ExitStack() as stack:
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            tmp = keep
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hailing-natmatrix-"))
        lab = stack.enter_context(Lab())
        began = time.perf_counter()
        world = NatWorld(lab, Path(tmp), callers=kinds, callees=kinds)
        try:
            world.start()
            built = time.perf_counter() - began
            print(f"world up in {built:.1f} s: {len(world.daemons)} daemons", file=log,
                  flush=True)
            t0 = time.perf_counter()
            for i in range(calls):
                for caller, callee in pairs:
                    at = time.time()
                    result = world.call(caller, callee, timeout=timeout)
                    if not result.get("delivered"):
                        result["round"], result["at"] = i, round(at, 1)
                        print(f"round {i + 1}: {caller} -> {callee} failed: {result}",
                              file=log, flush=True)
                    samples[(caller, callee)].append(result)
                    if result.get("delivered"):
                        world.hang_up(caller, callee)
                print(f"round {i + 1}/{calls} done ({time.perf_counter() - t0:.0f} s)",
                      file=log, flush=True)
            calling = time.perf_counter() - t0
        finally:
            world.close()
    return summarize(samples, calls, built, calling)


def summarize(samples: dict[tuple[str, str], list[dict[str, Any]]], calls: int,
              built: float, calling: float) -> dict[str, Any]:
    rows = []
    nat_ms: list[float] = []
    punchable = punchable_direct = 0
    for (caller, callee), results in samples.items():
        ok = [r for r in results if r.get("delivered")]
        ms = [float(r["connect_ms"]) for r in ok]
        relayed = sum(1 for r in ok if r["path"]["relayed"])
        direct = len(ok) - relayed
        expected = expected_path(caller, callee)
        if expected == "direct":
            punchable += len(results)
            punchable_direct += direct
        if (caller, callee) != BASELINE:
            nat_ms += ms
        rows.append({
            "caller": caller, "callee": callee, "expected": expected, "calls": len(results),
            "connected": len(ok), "success_rate": round(len(ok) / max(1, len(results)), 3),
            "direct": direct, "relayed": relayed,
            "connect_ms": {"p50": pct(ms, 50), "p95": pct(ms, 95),
                           "mean": round(statistics.fmean(ms), 1) if ms else None},
            "paths": dict(Counter(path_name(r.get("path")) for r in ok)),
            "errors": dict(Counter(str(r.get("error")) for r in results
                                   if not r.get("delivered"))),
            "failed_calls": [{k: r.get(k) for k in ("round", "at", "status", "error")}
                             for r in results if not r.get("delivered")],
        })
    base = next(r for r in rows if (r["caller"], r["callee"]) == BASELINE) \
        if BASELINE in samples else None
    base_p50 = base["connect_ms"]["p50"] if base else None
    nat_p50 = pct(nat_ms, 50)
    direct_ms = [m for (a, b), rs in samples.items() if (a, b) != BASELINE
                 for r, m in ((r, r.get("connect_ms")) for r in rs)
                 if r.get("delivered") and not r["path"]["relayed"]]
    relayed_ms = [r["connect_ms"] for rs in samples.values() for r in rs
                  if r.get("delivered") and r["path"]["relayed"]]
    total = sum(r["calls"] for r in rows)
    return {
        "benchmark": "nat_matrix", "calls_per_pair": calls, "pairs": len(rows),
        "calls": total, "platform": platform.platform(), "cpus": os.cpu_count(),
        "world_build_s": round(built, 1), "calling_s": round(calling, 1),
        "s_per_call": round(calling / max(1, total), 2),
        "summary": {
            "pairs_all_connected": all(r["success_rate"] == 1.0 for r in rows),
            "success_rate": round(sum(r["connected"] for r in rows) / max(1, total), 4),
            "hole_punchable_direct_rate": round(punchable_direct / max(1, punchable), 4),
            "relayed_pairs_relayed_rate": round(
                sum(r["relayed"] for r in rows if r["expected"] == "relayed")
                / max(1, sum(r["calls"] for r in rows if r["expected"] == "relayed")), 4),
            "baseline": "public -> public (host candidates on the public segment)",
            "baseline_p50_ms": base_p50,
            "nat_p50_ms": nat_p50, "nat_p95_ms": pct(nat_ms, 95),
            "nat_direct_p50_ms": pct([float(m) for m in direct_ms], 50),
            "relayed_p50_ms": pct([float(m) for m in relayed_ms], 50),
            "ratio_nat_p50_to_baseline": (round(nat_p50 / base_p50, 2)
                                          if nat_p50 and base_p50 else None),
        },
        "rows": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20, help="calls per pair (default 20)")
    ap.add_argument("--kinds", default=",".join(NAT_KINDS),
                    help="NAT kinds, comma-separated (default: all five)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep the daemons' data directories and stderr logs in DIR")
    ap.add_argument("--debug-log", action="store_true",
                    help="the daemons log aioice/aiortc at INFO to their stderr (with --keep)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in NAT_KINDS]
    if unknown or args.calls < 1:
        ap.error(f"unknown kinds {unknown} (one of {', '.join(NAT_KINDS)})" if unknown
                 else "--calls must be at least 1")
    ok, why = natlab_available()
    if not ok:
        print(f"nat_matrix: the NAT lab cannot run here: {why}", file=sys.stderr)
        return 2
    if args.debug_log:
        if not args.keep:
            ap.error("--debug-log needs --keep DIR")
        site = Path(args.keep) / "site"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(DEBUG_SITE)
        natmatrix_world.EXTRA_PATH.append(str(site))
    result = run(args.calls, kinds, args.timeout, sys.stderr, args.keep)
    result["command"] = "python benchmarks/nat_matrix.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
