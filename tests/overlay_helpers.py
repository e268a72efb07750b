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


def overlay_config() -> DhtConfig:
    """A node on links: its lookups wait up to 1.2 s before they count a request as
    stalled (what ``DhtNode(bind=None, links=...)`` takes by default). A request to a node without a link waits for a coupling (0.3-1.3 s on the
    test machine, the network coupler's ``timings``), and the default soft timeout
    (0.15 s over fast links) counted nearly every such request stalled: lookups then
    ended on the nodes already linked, and a listen and a post to one key met on
    different nodes (1 in 8 inbox calls lost; none in 40 with this)."""
    return DhtConfig(min_soft_timeout=1.2)


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
                   config=config if config is not None else (overlay_config() if udp else None),
                   node_id=node_id)
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
