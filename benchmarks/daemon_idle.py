"""Daemon idle cost: RSS and CPU of ``hailing up`` left alone on a 20-node testnet.

Starts ``hailing testnet --nodes 20`` and three daemons (separate processes, each with 5
contacts, so each keeps listens alive on the DHT and refreshes them):

- ``fresh``: never called (aiortc is not even imported until a first call);
- ``callee`` and ``caller``: at the start ``caller`` sends one message to ``callee``
  through its daemon, and both keep that link open the whole time (``--idle-close 0``:
  the costlier case, ICE consent checks and SCTP heartbeats running).

Then nothing happens for ``--duration`` seconds (default 600). Reports for each daemon:
RSS at the end (``VmRSS``), peak RSS (``VmHWM``), PSS, anonymous and shared-library
pages (``smaps_rollup``), and CPU use (user + system time from
``/proc/PID/stat``) over the idle window after ``--warmup`` seconds, as a percentage of
one core, and over its last minute. Targets: RSS <= 80 MB, CPU < 1 %.

    python benchmarks/daemon_idle.py [--duration 600] [--nodes 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import HAILING, drain, env, first_line, report, run, start_testnet, stop

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (/proc/PID/status); Pss, Anonymous and Shared_Clean
    (/proc/PID/smaps_rollup: the shared library pages that other processes share), MiB."""
    out = {}
    for name, keys in (("status", ("VmRSS", "VmHWM")),
                       ("smaps_rollup", ("Pss", "Anonymous", "Shared_Clean"))):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def _maps(pid: int) -> str:
    """What ``pid`` maps (PyAV's libraries mapped: aiortc was imported)."""
    return Path(f"/proc/{pid}/maps").read_text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="idle seconds (default 600)")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds left out at the start")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hailing-idle-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        bootstrap = start_testnet(args.nodes, procs)
        names = ("fresh", "callee", "caller")
        ids = {n: run(["id", "new", "--data-dir", str(tmp / n), "--name", n]).split()[0]
               for n in names}
        others = {f"friend{i}": run(["id", "new", "--data-dir", str(tmp / f"friend{i}")]).split()[0]
                  for i in range(5)}
        for n in names:
            for other, oid in {**others, **{k: v for k, v in ids.items() if k != n}}.items():
                run(["contact", "add", oid, "--name", other, "--data-dir", str(tmp / n)])
        daemons: dict[str, subprocess.Popen[str]] = {}
        for n in names:
            daemons[n] = subprocess.Popen(
                [*HAILING, "up", "--data-dir", str(tmp / n), "--bootstrap", bootstrap,
                 "--idle-close", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
            procs.append(daemons[n])
        for n, p in daemons.items():
            line = first_line(p)
            assert line.startswith(f"up {ids[n]} "), line
            drain(p.stdout)
            drain(p.stderr)
        sent = json.loads(run(["send", ids["callee"], "hello", "--data-dir", str(tmp / "caller")]))
        assert sent["delivered"] is True
        t0 = time.monotonic()
        time.sleep(args.warmup)
        start = {n: (time.monotonic(), cpu_seconds(p.pid)) for n, p in daemons.items()}
        left = args.duration - args.warmup
        time.sleep(max(0.0, left - 60))
        minute = {n: (time.monotonic(), cpu_seconds(p.pid)) for n, p in daemons.items()}
        time.sleep(min(60.0, left))
        results: dict[str, Any] = {}
        for n, p in daemons.items():
            now, cpu = time.monotonic(), cpu_seconds(p.pid)
            mem = memory(p.pid)
            results[n] = {
                "rss_mb": round(mem["VmRSS"], 1), "peak_rss_mb": round(mem["VmHWM"], 1),
                "pss_mb": round(mem["Pss"], 1), "anonymous_mb": round(mem["Anonymous"], 1),
                "shared_clean_mb": round(mem["Shared_Clean"], 1),
                "webrtc_loaded": "/av.libs/" in _maps(p.pid),
                "cpu_percent": round(100 * (cpu - start[n][1]) / (now - start[n][0]), 3),
                "cpu_percent_last_minute": round(100 * (cpu - minute[n][1]) / (now - minute[n][0]), 3),
                "alive": p.poll() is None,
            }
        out = {
            "benchmark": "daemon_idle", "nodes": args.nodes, "idle_s": round(time.monotonic() - t0, 1),
            "warmup_s": args.warmup, "daemons": results,
            "targets": {"rss_mb": 80, "cpu_percent": 1.0},
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "command": " ".join(["python", "benchmarks/daemon_idle.py", *sys.argv[1:]]),
        }
    finally:
        stop(procs)
    report(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
