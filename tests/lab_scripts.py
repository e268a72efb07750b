"""Python scripts that lab tests start inside a namespace (``host.popen([sys.executable,
"-c", SCRIPT, ...])``), shared by the lab tests that need the same process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from proc_lines import end_by_stdin

if TYPE_CHECKING:
    from natlab import Host, Lab

__all__ = ["DHT_NODE", "DHT_PORT", "SRC", "lab_env", "public_dht_nodes"]

#: The package's source, put on PYTHONPATH of the lab's processes.
SRC = Path(__file__).resolve().parent.parent / "src"

#: The port the lab's public DHT nodes listen on (and answer STUN on).
DHT_PORT = 6881

#: A plain hailing DHT node at ``argv[1]:argv[2]`` (it answers STUN on its port): prints
#: "ready" once bound, runs until its stdin closes.
DHT_NODE = """
import asyncio, sys
from hailing.node import DhtNode

async def main():
    async with DhtNode((sys.argv[1], int(sys.argv[2]))) as node:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def lab_env() -> dict[str, str]:
    """The environment of a process started in the lab: ours, with :data:`SRC` importable."""
    return {**os.environ, "PYTHONPATH": str(SRC)}


@contextlib.contextmanager
def public_dht_nodes(lab: Lab, env: dict[str, str], count: int = 3) -> Iterator[list[Host]]:
    """``count`` public hosts of ``lab`` (``dht0``...) each running :data:`DHT_NODE` on
    :data:`DHT_PORT`, ready when entered; stopped (stdin closed) on exit."""
    servers = [lab.public_host(f"dht{i}") for i in range(count)]
    procs: list[subprocess.Popen[str]] = []
    try:
        for host in servers:
            procs.append(host.popen([sys.executable, "-c", DHT_NODE, host.address, str(DHT_PORT)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    env=env))
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        yield servers
    finally:
        end_by_stdin(procs)
