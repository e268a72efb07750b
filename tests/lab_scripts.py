"""Python scripts that lab tests start inside a namespace (``host.popen([sys.executable,
"-c", SCRIPT, ...])``), shared by the lab tests that need the same process."""

from __future__ import annotations

__all__ = ["DHT_NODE"]

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
