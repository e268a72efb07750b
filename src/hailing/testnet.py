"""A local DHT testnet: N nodes on loopback in one process, bootstrapped off each other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .dht import DhtConfig
from .errors import LocalProtocolError
from .node import Addr, DhtNode

#: Most nodes one testnet process runs (each is a socket and a routing table).
MAX_TESTNET_NODES = 2000


async def start_testnet(
    n: int, bind: str = "127.0.0.1", base_port: int = 0, config: DhtConfig | None = None
) -> list[DhtNode]:
    """Start ``n`` nodes; node 0 is the bootstrap node. Ports are ``base_port + i``, or
    chosen by the OS when ``base_port`` is 0. Every node has bootstrapped when this returns.
    On error the nodes already started are stopped."""
    if not 1 <= n <= MAX_TESTNET_NODES:
        raise LocalProtocolError(f"--nodes must be 1..{MAX_TESTNET_NODES}, got {n}")
    if base_port and not 0 < base_port <= 65535 - n + 1:
        raise LocalProtocolError(f"--base-port {base_port} leaves no room for {n} ports")
    nodes: list[DhtNode] = []
    try:
        first = DhtNode((bind, base_port), config=config)
        await first.start()
        nodes.append(first)
        for i in range(1, n):
            port = base_port + i if base_port else 0
            node = DhtNode((bind, port), config=config, bootstrap=[first.address])
            await node.start()
            nodes.append(node)
        # Join in small batches so the joins see each other (a wave, not a thundering herd).
        for i in range(1, n, 16):
            await asyncio.gather(*(nd.bootstrap() for nd in nodes[i : i + 16]))
        if n > 1:
            await first.bootstrap([nodes[1].address])
        # A node that only queried another enters its table once it answered a ping
        # (issue 9), so nodes that joined at once did not see each other: once those
        # pings have landed, every node looks itself up again (a second wave).
        for _ in range(200):
            if not any(nd.core.admission.pending for nd in nodes):
                break
            await asyncio.sleep(0.01)
        for i in range(1, n, 16):
            await asyncio.gather(*(nd.bootstrap() for nd in nodes[i : i + 16]))
    except BaseException:
        await asyncio.gather(*(nd.stop() for nd in nodes))
        raise
    return nodes


@contextlib.asynccontextmanager
async def testnet(
    n: int, bind: str = "127.0.0.1", base_port: int = 0, config: DhtConfig | None = None
) -> AsyncIterator[list[DhtNode]]:
    """``async with testnet(20) as nodes:`` — started nodes, stopped on exit."""
    nodes = await start_testnet(n, bind, base_port, config)
    try:
        yield nodes
    finally:
        await asyncio.gather(*(nd.stop() for nd in nodes))


def bootstrap_address(nodes: list[DhtNode]) -> Addr:
    return nodes[0].address
