#!/usr/bin/env python3
"""How long hailing takes to import, in fresh processes.

Each case is run ``--runs`` times (default 21) in a new interpreter, the cases
interleaved so that a busy moment of the machine hits all of them alike:

  python          ``python -c pass``: the interpreter's own start, the baseline
  hailing         ``python -c "import hailing"``: the curated, lazily imported API
  peer            ``python -c "import hailing.peer"`` (``hailing.rtc.peer`` where the
                  facade has not moved yet): everything a Peer needs, but not web3
  cli_help        ``python -m hailing --help``

For each: wall time of the whole process (start to exit, milliseconds; median, min, max,
all samples) and the median minus the baseline's median (the cost of the import itself).
Then one ``-X importtime`` run per import case gives the interpreter's own measure of the
import (the cumulative microseconds of its top-level module) and the heavy third-party
packages the import loaded (aiortc, web3, eth-*, vyper, aiohttp, PyNaCl).

The code imported is this checkout's ``src/`` (``PYTHONPATH`` is set to it).

    python benchmarks/import_time.py --runs 21 --out import_time.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
HEAVY = ("aiortc", "av", "web3", "eth_account", "eth_keys", "eth_abi", "eth_tester",
         "vyper", "aiohttp", "nacl", "websockets")


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{path}" if path else str(SRC)}


def _peer_module() -> str:
    sys.path.insert(0, str(SRC))
    try:
        return "hailing.peer" if importlib.util.find_spec("hailing.peer") else "hailing.rtc.peer"
    finally:
        sys.path.remove(str(SRC))


def cases() -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python": [py, "-c", "pass"],
        "hailing": [py, "-c", "import hailing"],
        "peer": [py, "-c", f"import {_peer_module()}"],
        "cli_help": [py, "-m", "hailing", "--help"],
    }


def _wall_ms(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000.0


def _importtime(module: str, env: dict[str, str]) -> dict[str, Any]:
    """One ``-X importtime`` run: cumulative microseconds of ``module`` and the heavy
    packages loaded."""
    code = f"import {module}, sys; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                          env=env, capture_output=True, text=True)
    cumulative = None
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            cumulative = int(parts[1])
    loaded = set(done.stdout.split())
    return {
        "importtime_cumulative_us": cumulative,
        "modules_loaded": len(loaded),
        "hailing_modules_loaded": sum(1 for m in loaded if m.split(".")[0] == "hailing"),
        "heavy_loaded": sorted(m for m in HEAVY if m in loaded),
    }


def run(runs: int) -> dict[str, Any]:
    env = _env()
    argvs = cases()
    for argv in argvs.values():  # warm the file cache and the .pyc files
        _wall_ms(argv, env)
    samples: dict[str, list[float]] = {name: [] for name in argvs}
    for _ in range(runs):
        for name, argv in argvs.items():
            samples[name].append(_wall_ms(argv, env))
    base = statistics.median(samples["python"])
    results: dict[str, Any] = {}
    for name, argv in argvs.items():
        ms = samples[name]
        entry: dict[str, Any] = {
            "command": " ".join(["python", *argv[1:]]),
            "median_ms": round(statistics.median(ms), 1),
            "min_ms": round(min(ms), 1),
            "max_ms": round(max(ms), 1),
            "median_minus_python_ms": round(statistics.median(ms) - base, 1),
            "samples_ms": [round(x, 1) for x in ms],
        }
        if argv[1] == "-c" and argv[2].startswith("import "):
            entry.update(_importtime(argv[2].removeprefix("import "), env))
        results[name] = entry
    return {
        "benchmark": "import_time",
        "runs": runs,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21, help="fresh processes per case (>= 20)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    doc = json.dumps(run(args.runs), indent=1)
    print(doc)
    if args.out:
        args.out.write_text(doc + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
