"""Not a benchmark: the ``hailing`` subprocesses the daemon benchmarks start and stop.

Imported by ``daemon_idle.py`` and ``daemon_send.py`` as a sibling module (a script's own
folder is first on ``sys.path``, as for ``connect_calls`` in ``connect_dht_peers.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

HAILING = [sys.executable, "-m", "hailing"]


def env() -> dict[str, str]:
    """This environment, without a passphrase, with ICE host candidates on loopback only."""
    e = {k: v for k, v in os.environ.items() if k != "HAILING_PASSPHRASE"}
    e["HAILING_ICE_HOSTS"] = "127.0.0.1"
    return e


def first_line(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The first line ``proc`` prints on stdout, stripped; exits if none comes in time."""
    stream = proc.stdout
    assert stream is not None
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        raise SystemExit(f"{proc.args} printed no first line")
    return box[0].strip()


def drain(stream: IO[str] | None) -> None:
    """Keep reading a process's output so it never blocks on a full pipe."""
    if stream is not None:
        threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


def run(cmd: list[str], **kw: Any) -> str:
    """``hailing CMD...`` to its end (it must succeed); its stdout."""
    return subprocess.run([*HAILING, *cmd], check=True, capture_output=True, text=True,
                          env=env(), **kw).stdout


def start_testnet(nodes: int, procs: list[subprocess.Popen[str]]) -> str:
    """Start ``hailing testnet --nodes NODES`` (added to ``procs``); its bootstrap address."""
    net = subprocess.Popen([*HAILING, "testnet", "--nodes", str(nodes)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env=env())
    procs.append(net)
    m = re.fullmatch(r"bootstrap (\S+)", first_line(net))
    assert m, "testnet: unexpected first line"
    drain(net.stdout)
    return m.group(1)


def stop(procs: list[subprocess.Popen[str]]) -> None:
    """Terminate ``procs`` (last started first) and wait for them; kill what lingers."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def report(out: dict[str, Any], path: str | None) -> None:
    """Print ``out`` as JSON, and write it to ``path`` too if one is given."""
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
