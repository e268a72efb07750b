"""STUN from the DHT in the NAT lab: a node behind each kind of home router learns its
mapping from three public hailing nodes (the only STUN servers there are), and withholds
its address from reply hints wherever it is behind a NAT.

Each node is its own process in its host's namespace (``ip netns exec``): three public
nodes on the lab's "internet", and per NAT kind a node bound to every interface behind a
router of that kind, which bootstraps off the three, asks :meth:`DhtNode.nat_info` and
prints the result as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lab_scripts import DHT_PORT, lab_env, public_dht_nodes
from natlab import NAT_KINDS, Host, Lab, NatKind

#: What each kind of router must look like from the DHT.
EXPECTED: dict[NatKind, str] = {
    "public": "public",
    "full-cone": "endpoint-independent",
    "address-restricted": "endpoint-independent",
    "port-restricted": "endpoint-independent",
    "symmetric": "endpoint-dependent",
}

# The lab's public nodes share one /24 and have ids BEP42 does not bind to their
# addresses: the client's routing table must take them anyway.
CLIENT = """
import asyncio, json, sys
from hailing.dht import DhtConfig
from hailing.node import DhtNode

async def main():
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[1:])]
    config = DhtConfig(enforce_node_id=False, routing_max_per_net=16, query_timeout=2.0)
    async with DhtNode(("0.0.0.0", 0), config=config) as node:
        table = await node.bootstrap(seeds)
        during = node.reachable_address()  # the first probe has just been sent
        info = await node.nat_info()
        print(json.dumps({
            "during": during,
            "table": table, "bound": node.address, "mapping": info.mapping,
            "external": info.external, "behind_nat": info.behind_nat,
            "servers": info.servers, "stun_servers": node.stun_servers(),
            "reachable": node.reachable_address(),
        }), flush=True)

asyncio.run(main())
"""


@dataclass
class World:
    lab: Lab
    servers: list[Host]
    hosts: dict[NatKind, Host]


@pytest.fixture(scope="module")
def world(natlab_module: Lab) -> Iterator[World]:
    lab = natlab_module
    with public_dht_nodes(lab, lab_env()) as servers:
        yield World(lab, servers, {k: lab.host_behind(f"s-{k}", k) for k in NAT_KINDS})


def ask(world: World, host: Host) -> dict[str, Any]:
    seeds = [f"{s.address}:{DHT_PORT}" for s in world.servers]
    done = host.run([sys.executable, "-c", CLIENT, *seeds], timeout=60, env=lab_env())
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("kind", NAT_KINDS)
def test_a_node_behind_each_nat_kind_learns_its_mapping(world: World, kind: NatKind) -> None:
    host = world.hosts[kind]
    got = ask(world, host)
    assert got["table"] >= 3
    assert got["during"] is None  # bound to every interface: unknown until the probe ends
    assert got["mapping"] == EXPECTED[kind], got
    assert sorted(tuple(s) for s in got["servers"]) == sorted(
        (s.address, DHT_PORT) for s in world.servers)
    assert len(got["stun_servers"]) == 3
    assert got["external"][0] == host.public_address
    if kind == "public":
        assert got["behind_nat"] is False
        assert got["reachable"] == [host.address, got["bound"][1]]
    else:
        assert got["behind_nat"] is True
        assert got["reachable"] is None  # no direct-answer hint from behind a NAT
        if kind != "symmetric":  # one mapping for every server
            assert got["external"] != [host.address, got["bound"][1]]


# -- keepalives: a listen behind a NAT stays reachable ------------------------------------

#: The routers' conntrack UDP timeouts in the keepalive tests (Linux: 30 s unreplied,
#: 120 s once replied); the wait before the post is several times this.
CONNTRACK_TIMEOUT = 3
KEEPALIVE_ON = 0.5
KEEPALIVE_OFF = 1e9

LISTENER = """
import asyncio, json, sys
import hailing.nat.stun as nat_stun
nat_stun.KEEPALIVE_INTERVAL = float(sys.argv[1])
from hailing.dht import DhtConfig
from hailing.node import DhtNode

async def main():
    key, wait = bytes.fromhex(sys.argv[2]), float(sys.argv[3])
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[4:])]
    config = DhtConfig(enforce_node_id=False, routing_max_per_net=16, query_timeout=2.0)
    async with DhtNode(("0.0.0.0", 0), config=config) as node:
        await node.bootstrap(seeds)
        info = await node.nat_info(refresh=True)
        holders = await node.listen(key, ttl=300.0)  # renewed only after 150 s
        print(json.dumps({"mapping": info.mapping, "holders": holders}), flush=True)
        try:
            got = (await asyncio.wait_for(node.inbox(), wait)).value.decode()
        except TimeoutError:
            got = None
        print(json.dumps({"got": got, "keepalives": node.stats.get("stun_keepalives", 0)}),
              flush=True)

asyncio.run(main())
"""

POSTER = """
import asyncio, sys
from hailing.dht import DhtConfig
from hailing.node import DhtNode

async def main():
    key, value = bytes.fromhex(sys.argv[1]), sys.argv[2].encode()
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[3:])]
    config = DhtConfig(enforce_node_id=False, routing_max_per_net=16, query_timeout=2.0)
    async with DhtNode(("0.0.0.0", 0), config=config) as node:
        await node.bootstrap(seeds)
        print(await node.post(key, value), flush=True)

asyncio.run(main())
"""


def listen_then_post(world: World, name: str, interval: float) -> dict[str, Any]:
    """A node behind a port-restricted router (conntrack timeouts shortened) listens on a
    key at the public nodes; well after its NAT would have forgotten them, a public node
    posts to the key. What the listener received."""
    host = world.lab.host_behind(name, "port-restricted")
    assert host.router is not None
    host.router.run(["sysctl", "-w",
                     f"net.netfilter.nf_conntrack_udp_timeout={CONNTRACK_TIMEOUT}",
                     f"net.netfilter.nf_conntrack_udp_timeout_stream={CONNTRACK_TIMEOUT}"],
                    check=True)
    seeds = [f"{s.address}:{DHT_PORT}" for s in world.servers]
    key = (name.encode() * 20)[:20].hex()
    wait = 6 * CONNTRACK_TIMEOUT
    listener = host.popen([sys.executable, "-c", LISTENER, str(interval), key, str(wait),
                           *seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=lab_env())
    try:
        assert listener.stdout is not None
        first = json.loads(listener.stdout.readline())
        assert first["mapping"] == "endpoint-independent" and first["holders"] >= 1, first
        # Three times the conntrack timeout: without keepalives the router has forgotten
        # every storing node by now (a wait, not a measured time).
        time.sleep(3 * CONNTRACK_TIMEOUT)
        poster = world.lab.public_host(f"{name}-p")
        posted = poster.run([sys.executable, "-c", POSTER, key, "hello", *seeds],
                            timeout=60, env=lab_env())
        assert posted.returncode == 0 and int(posted.stdout) >= 1, posted.stderr
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_keepalives_keep_a_listen_behind_a_nat_reachable(world: World) -> None:
    got = listen_then_post(world, "ka-on", KEEPALIVE_ON)
    assert got["got"] == "hello"
    assert got["keepalives"] >= 3


def test_without_keepalives_the_nat_forgets_the_storing_nodes(world: World) -> None:
    """The regression the keepalives fix: the push is dropped by the router."""
    got = listen_then_post(world, "ka-off", KEEPALIVE_OFF)
    assert got == {"got": None, "keepalives": 0}
