"""What the overlay on by default costs ``hailing up``: start, stop, memory, output.

On a loopback testnet (``--nodes``, default 8), three daemons per round: ``alice`` and
``bob`` are friends (their daemons link at boot), ``loner`` has no friend. Each round
runs them all with ``--links P`` for each P of ``--links`` (default 0 and 32, the
default), the values interleaved round by round. Per daemon and round:

- ``up_s``: from the process start to its ``up`` line (everything listens);
- ``linked_s`` (alice): from her start until both friends report the link (and, with
  P > 0, the friend link's DHT channel open and routed on both sides); ``connected``:
  the friend link's ``connected`` events (``via``: the rung that signaled it);
- ``rss_mb`` and ``webrtc_loaded`` (aiortc's libraries mapped) once linked;
- ``stop_s``: from SIGINT to the process's exit (alice first, then bob, then loner),
  and its exit code;
- ``stderr_lines``: what it wrote on stderr over the whole run (noise).

    python benchmarks/daemon_overlay.py [--rounds 3] [--links 0 --links 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _procs import HAILING, env, report, run, start_testnet, stop


def _status(data_dir: Path) -> dict[str, Any]:
    info = json.loads((data_dir / "api.json").read_text())
    req = urllib.request.Request(info["url"] + "/api/status",
                                 headers={"Authorization": f"Bearer {info['token']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def _linked(data_dir: Path, overlay: bool) -> bool:
    s = _status(data_dir)
    if [f["linked"] for f in s["friends"]] != [True]:
        return False
    if not overlay:
        return True
    links = s["overlay"]["links"]
    return any(x["open"] and "friend" in x["pins"] and x["routed"] for x in links)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Lines:
    """Reads a stream in a thread (the pipe never fills): counts its lines, keeps the
    first 20, when the first came, and the JSON events."""

    def __init__(self, stream: Any) -> None:
        self.count = 0
        self.text: list[str] = []
        self.first_at: float | None = None
        self.events: list[dict[str, Any]] = []
        self.first = threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            if self.first_at is None:
                self.first_at = time.monotonic()
                self.first.set()
            self.count += 1
            if len(self.text) < 20:
                self.text.append(line.rstrip())
            if line.startswith("{"):
                self.events.append(json.loads(line))
        self.first.set()


def one_round(tmp: Path, bootstrap: str, links: int) -> dict[str, Any]:
    procs: dict[str, subprocess.Popen[str]] = {}
    started: dict[str, float] = {}
    out: dict[str, Any] = {}
    errs: dict[str, _Lines] = {}
    outs: dict[str, _Lines] = {}
    try:
        for name in ("bob", "alice", "loner"):
            started[name] = time.monotonic()
            procs[name] = subprocess.Popen(
                [*HAILING, "up", "--data-dir", str(tmp / name), "--bootstrap", bootstrap,
                 "--links", str(links)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env())
            errs[name] = _Lines(procs[name].stderr)
            outs[name] = _Lines(procs[name].stdout)
        for name in procs:
            got = outs[name]
            if not got.first.wait(60) or not got.text or not got.text[0].startswith("up "):
                raise SystemExit(f"{name}: no up line ({got.text}, {errs[name].text})")
            assert got.first_at is not None
            out[name] = {"up_s": round(got.first_at - started[name], 3)}
        deadline = time.monotonic() + 120
        while not (_linked(tmp / "alice", links > 0) and _linked(tmp / "bob", links > 0)):
            if time.monotonic() > deadline:
                raise SystemExit("alice and bob did not link within 120 s")
            time.sleep(0.05)
        out["alice"]["linked_s"] = round(time.monotonic() - started["alice"], 3)
        for name in ("alice", "bob"):  # how the friend link came: whose call, which rung
            out[name]["connected"] = [{k: e.get(k) for k in ("to", "from", "via",
                                                              "connect_ms")}
                                      for e in outs[name].events if e["event"] == "connected"]
            out[name]["friend_link_failures"] = sum(
                e["event"] == "friend-link" for e in outs[name].events)
        for name, p in procs.items():
            maps = Path(f"/proc/{p.pid}/maps").read_text()
            out[name].update(rss_mb=round(_rss_mb(p.pid), 1), webrtc_loaded="/av.libs/" in maps)
        for name in ("alice", "bob", "loner"):
            p = procs[name]
            t0 = time.monotonic()
            p.send_signal(signal.SIGINT)
            try:
                code = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                code = p.wait()
            out[name].update(stop_s=round(time.monotonic() - t0, 3), exit=code)
        time.sleep(0.2)  # the stderr readers finish
        for name in procs:
            out[name].update(stderr_lines=errs[name].count, stderr=errs[name].text)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--links", type=int, action="append", default=None)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    values = args.links or [0, 32]
    tmp = Path(tempfile.mkdtemp(prefix="hailing-overlay-default-"))
    net: list[subprocess.Popen[str]] = []
    rounds: dict[int, list[dict[str, Any]]] = {v: [] for v in values}
    try:
        bootstrap = start_testnet(args.nodes, net)
        ids = {n: run(["id", "new", "--data-dir", str(tmp / n), "--name", n]).split()[0]
               for n in ("alice", "bob", "loner")}
        for me, other in (("alice", "bob"), ("bob", "alice")):
            run(["contact", "add", ids[other], "--name", other, "--data-dir", str(tmp / me)])
            run(["contact", "friend", other, "--data-dir", str(tmp / me)])
        for _ in range(args.rounds):
            for v in values:
                rounds[v].append(one_round(tmp, bootstrap, v))
    finally:
        stop(net)

    def med(v: int, who: str, key: str) -> float:
        return round(statistics.median(r[who][key] for r in rounds[v]), 3)

    summary = {str(v): {
        who: {k: med(v, who, k) for k in ("up_s", "stop_s", "rss_mb", "stderr_lines")
              if k in rounds[v][0][who]}
        | ({"linked_s": med(v, who, "linked_s")} if who == "alice" else {})
        | {"max_stop_s": max(r[who]["stop_s"] for r in rounds[v]),
           "exits": sorted({r[who]["exit"] for r in rounds[v]}),
           "webrtc_loaded": sorted({r[who]["webrtc_loaded"] for r in rounds[v]})}
        for who in ("alice", "bob", "loner")} for v in values}
    report({"benchmark": "daemon_overlay", "nodes": args.nodes, "rounds": args.rounds,
            "summary": summary, "runs": {str(v): r for v, r in rounds.items()},
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
            "command": " ".join(["python", "benchmarks/daemon_overlay.py", *sys.argv[1:]])},
           args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
