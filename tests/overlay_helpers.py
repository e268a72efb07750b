"""Nodes on data-channel links with forwarding and the network coupler, for the overlay
tests (loopback ICE only: the tests use pytest_helpers.loopback_ice)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from hailing.dht import DhtConfig
from hailing.node import DhtNode
from hailing.transport import LinkDriver
from hailing.transport.forward import Forwarder
from hailing.transport.network_coupler import NetworkCoupler, attach


@dataclass
class OverlayNode:
    node: DhtNode
    driver: LinkDriver
    fwd: Forwarder
    coupler: NetworkCoupler

    @property
    def id(self) -> bytes:
        return self.node.node_id


async def start_node(*, p: int, seed: int, udp: bool = False,
                     config: DhtConfig | None = None, node_id: bytes | None = None
                     ) -> OverlayNode:
    driver = LinkDriver(cap=p)
    node = DhtNode(bind=("127.0.0.1", 0) if udp else None, links=driver, seed=seed,
                   config=config or DhtConfig(), node_id=node_id)
    await node.start()
    fwd, coupler = attach(node)
    return OverlayNode(node, driver, fwd, coupler)


async def stop_node(o: OverlayNode) -> None:
    await o.coupler.aclose()
    await o.fwd.aclose()
    await o.node.stop()


async def stop_all(nodes: list[OverlayNode]) -> None:
    await asyncio.gather(*(stop_node(o) for o in nodes), return_exceptions=True)


def pick(rng: random.Random, nodes: list[OverlayNode]) -> OverlayNode:
    return nodes[rng.randrange(len(nodes))]
