"""``hailing send`` wall time through a daemon against one-shot, in the same run.

On a loopback ``hailing testnet`` (default 20 nodes), bob runs ``hailing up``. Two
callers send to him, interleaved send by send so both see the same machine load:

- ``daemon``: alice runs ``hailing up`` too, and each ``hailing send bob ...
  --data-dir alice`` goes through her daemon (the first one calls bob; the others reuse
  the link her daemon keeps);
- ``one-shot``: ``hailing send bob ... --data-dir carol --bootstrap ...`` with no daemon
  for carol: each send starts its own DHT node, joins, calls, sends and exits.

Each sample is the wall time of the whole ``hailing send`` process, from spawn to exit
(what a script calling it waits), and its CPU time (user + system: what the machine's
load does not change). Also reported: the ``connect_ms`` each send printed,
the time to start Python and import ``hailing.cli`` (the floor of any command), and the
daemon's own share: ``POST /api/send`` made from the benchmark's process.
Target: daemon median <= 0.5 s.

    python benchmarks/daemon_send.py [--sends 20] [--nodes 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import HAILING, drain, env, first_line, report, run, start_testnet, stop


def timed(cmd: list[str]) -> tuple[float, float, dict[str, Any] | None, str]:
    """Wall time and CPU time (user + system) of one process, its JSON output, stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
    return wall, cpu, result, p.stderr.strip()


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


def summary(walls: list[float], cpus: list[float],
            results: list[dict[str, Any] | None]) -> dict[str, Any]:
    ok = [r for r in results if r is not None and r.get("delivered") is True]
    connects = [r["connect_ms"] for r in ok]
    return {
        "sends": len(walls), "delivered": len(ok),
        "wall_s": {"median": round(statistics.median(walls), 3), "p90": round(pct(walls, 90) or 0, 3),
                   "min": round(min(walls), 3), "max": round(max(walls), 3)},
        "cpu_s": {"median": round(statistics.median(cpus), 3)},
        "connect_ms": {"median": round(statistics.median(connects), 1) if connects else None,
                       "first": connects[0] if connects else None},
        "reused": sum(1 for r in ok if r.get("reused")),
    }


async def api_sends(data_dir: Path, to: str, n: int) -> list[float]:
    """The daemon's share of a send: ``POST /api/send`` from this process, in ms."""
    from hailing.daemon.client import find_daemon

    client = await find_daemon(data_dir)
    assert client is not None, "alice's daemon is not running"
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        r = await client.request("POST", "/api/send", {"contact": to, "text": f"api {i}"})
        times.append((time.perf_counter() - t0) * 1000)
        assert r["delivered"] is True
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sends", type=int, default=20, help="sends of each kind (default 20)")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hailing-send-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        bootstrap = start_testnet(args.nodes, procs)
        ids = {n: run(["id", "new", "--data-dir", str(tmp / n), "--name", n]).split()[0]
               for n in ("alice", "bob", "carol")}
        for n in ("alice", "carol"):
            run(["contact", "add", ids[n], "--name", n, "--data-dir", str(tmp / "bob")])
            run(["contact", "add", ids["bob"], "--name", "bob", "--data-dir", str(tmp / n)])
        for n in ("bob", "alice"):
            p = subprocess.Popen([*HAILING, "up", "--data-dir", str(tmp / n), "--bootstrap",
                                  bootstrap], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env())
            procs.append(p)
            assert first_line(p).startswith(f"up {ids[n]} "), n
            drain(p.stdout)
            drain(p.stderr)
        floor = [timed([sys.executable, "-c", "import hailing.cli"])[:2] for _ in range(5)]
        load_before = os.getloadavg()
        Samples = tuple[list[float], list[float], list[dict[str, Any] | None]]
        through: Samples = ([], [], [])
        oneshot: Samples = ([], [], [])
        errors: list[str] = []
        for i in range(args.sends):
            for kind, into, extra in (
                    ("daemon", through, ["--data-dir", str(tmp / "alice")]),
                    ("one-shot", oneshot, ["--data-dir", str(tmp / "carol"), "--bootstrap",
                                           bootstrap, "--no-daemon"])):
                wall, cpu, result, err = timed([*HAILING, "send", ids["bob"], f"{kind} {i}",
                                                *extra])
                into[0].append(wall)
                into[1].append(cpu)
                into[2].append(result)
                if result is None:
                    errors.append(f"{kind} {i}: {err}")
                print(f"{kind} {i}: {wall:.3f} s", file=sys.stderr, flush=True)
        api_ms = asyncio.run(api_sends(tmp / "alice", ids["bob"], args.sends))
        d, o = summary(*through), summary(*oneshot)
        d["api_request_ms"] = {"median": round(statistics.median(api_ms), 1),
                               "p90": round(pct(api_ms, 90) or 0, 1)}
        out = {
            "benchmark": "daemon_send", "nodes": args.nodes, "sends": args.sends,
            "daemon": d, "one_shot": o,
            "speedup_median": round(o["wall_s"]["median"] / d["wall_s"]["median"], 1),
            "import_hailing_cli_s": {"wall_median": round(statistics.median(f[0] for f in floor), 3),
                                     "cpu_median": round(statistics.median(f[1] for f in floor), 3)},
            "load_average": {"before": round(load_before[0], 2),
                             "after": round(os.getloadavg()[0], 2)},
            "errors": errors[:10], "target_daemon_median_s": 0.5,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "command": " ".join(["python", "benchmarks/daemon_send.py", *sys.argv[1:]]),
        }
    finally:
        stop(procs)
    report(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
