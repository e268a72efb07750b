#!/usr/bin/env python3
"""The long fuzz run: a million generated inputs (or ``--inputs``) to every decoder of
remote input, one decoder at a time; only the exceptions each decoder documents may
escape.

The targets, generators and runner are the test suite's (``tests/fuzz/``; the suite
runs 3,000 inputs per decoder in ``tests/test_fuzz.py``):

  bencode   hailing.bencode.decode (accepted input must re-encode to itself)
  krpc      hailing.krpc.decode_message (accepted messages must round-trip)
  compact   hailing.krpc.decode_nodes (IPv4, IPv6) and compact peer info
  core      DhtProtocol.receive_datagram: queries, and replies to its own requests
  envelope  hailing.signaling.envelope.open_envelope (including envelopes sealed
            properly around a garbage inner plaintext)
  sdp       hailing.signaling.sdp.unpack / decode_sdp (accepted input must re-pack)
  control   data-channel frames into rtc.connection.Connection (JSON control, file data)
  card      hailing.identity.parse_card

Inputs: random bytes, mutations of valid inputs (bit flips, interesting bytes, inserts,
deletes, duplicates, splices, truncations) and structure-aware ones (valid bencode or
JSON with wrong types and sizes; envelopes with a valid seal). The same ``--seed`` gives
the same inputs. Output: JSON, per target: inputs, seconds, inputs/s, accepted, refused
with a documented error, and every unexpected exception (type, where, message, the
smallest example in hex, count).

    python benchmarks/fuzz_decoders.py --inputs 1000000 --out fuzz.json
    python benchmarks/fuzz_decoders.py --targets envelope,sdp --inputs 100000

Exits 1 if any unexpected exception was found. One process, one core: nothing is
started, nothing touches the network (the control target writes into a temporary
directory it removes).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from fuzz.harness import fuzz  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated, of: {', '.join(TARGETS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=float("inf"),
                    help="seconds per decoder at most (stops early; the count says so)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown targets: {', '.join(unknown)}")
    results: list[dict[str, Any]] = []
    started = time.time()
    head = _git_head()  # the code that runs is the code at the start
    for name in names:
        report = fuzz(name, args.inputs, seed=args.seed, time_limit=args.time_limit).to_json()
        results.append(report)
        if not args.json:
            print(f"{name:9} {report['inputs']:>9} inputs {report['seconds']:>8.1f} s "
                  f"{report['inputs_per_second'] or 0:>7}/s  unexpected: "
                  f"{report['unexpected_exceptions']}", file=sys.stderr)
    doc = {
        "benchmark": "fuzz_decoders",
        "config": {"inputs": args.inputs, "seed": args.seed, "targets": names,
                   "time_limit": None if args.time_limit == float("inf") else args.time_limit},
        "results": results,
        "total_inputs": sum(r["inputs"] for r in results),
        "total_seconds": round(time.time() - started, 1),
        "unexpected_exceptions": sum(r["unexpected_exceptions"] for r in results),
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "git_head": head},
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if doc["unexpected_exceptions"] else 0


if __name__ == "__main__":
    sys.exit(main())
