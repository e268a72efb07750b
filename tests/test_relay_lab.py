"""Relays from the DHT in the NAT lab: a public volunteer (coturn supervised by its node)
announces itself; a node behind a symmetric NAT finds it on the DHT, gets credentials,
and relays through it to a public peer, which sees only the relay's address. The relay
refuses that node without credentials, with forged ones, and past its cap.

Each node is its own process in its host's namespace (``ip netns exec``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from natlab import Host, Lab, UdpAgent
from proc_lines import end_by_stdin
from turn_helpers import turnserver_or_skip

ROOT = Path(__file__).resolve().parent.parent
DHT_PORT = 6881
TURN_PORT = 3478

# The lab's public nodes share one /24 and have ids BEP42 does not bind to their
# addresses: every node's table and lookups must take them anyway.
CONFIG = ("DhtConfig(enforce_node_id=False, routing_max_per_net=16, lookup_max_per_net=16, "
          "query_timeout=2.0)")

SERVER = f"""
import asyncio, sys
from hailing.dht import DhtConfig
from hailing.node import DhtNode

async def main():
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[2:])]
    async with DhtNode((sys.argv[1], {DHT_PORT}), config={CONFIG}) as node:
        if seeds:
            await node.bootstrap(seeds)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

VOLUNTEER = f"""
import asyncio, sys
from pathlib import Path
from hailing.dht import DhtConfig
from hailing.nat import RelayService, TurnConfig
from hailing.node import DhtNode

async def main():
    ip, data = sys.argv[1], Path(sys.argv[2])
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[3:])]
    async with DhtNode((ip, {DHT_PORT}), config={CONFIG}) as node:
        await node.bootstrap(seeds)
        cfg = TurnConfig(ip, port={TURN_PORT}, min_port=50000, max_port=50100,
                         user_quota=2, total_quota=4)
        async with RelayService(node, data / "relay", cfg) as relay:
            await relay.announced.wait()
            print("ready", relay.stats["announces"], relay.stats["announced_on"], flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

CLIENT = f"""
import asyncio, json, struct, sys, time
from hailing.dht import DhtConfig
from hailing.nat import RelayFinder
from hailing.node import DhtNode
from turn_helpers import Allocation, allocate_error

async def main():
    peer = (sys.argv[1], int(sys.argv[2]))
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[3:])]
    out = {{}}
    async with DhtNode(("0.0.0.0", 0), config={CONFIG}) as node:
        await node.bootstrap(seeds)
        finder = RelayFinder(node)
        creds = await finder.credentials()
        if creds is None:
            from hailing.nat import RELAY_INFOHASH
            peers = await node.get_peers(RELAY_INFOHASH)
            sys.exit(f"no relay: {{dict(finder.stats)}}, peers now {{peers}}, "
                     f"table {{len(node.routing_table())}}")
        out["urls"] = list(creds.urls)
        server = creds.address
        out["none"] = await allocate_error(server, None, None)
        out["forged"] = await allocate_error(server, creds.username, "x" + creds.password)
        held = []
        for _ in range(2):
            held.append(await Allocation.open(server, creds.username, creds.password))
            await held[-1].allocate()
        out["relayed"] = list(held[0].relayed)
        out["past_quota"] = await allocate_error(server, creds.username, creds.password)
        got = asyncio.Queue()

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.put_nowait((data, addr))

        first = held[0]
        first.proto.receiver = Receiver()
        await first.proto.send_data(b"ping", peer)
        print(json.dumps(out), flush=True)
        async with asyncio.timeout(20):
            data, addr = await got.get()
        print(json.dumps({{"echo": data.decode(), "from": list(addr)}}), flush=True)
        for a in held:
            await a.close()

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}


@dataclass
class World:
    lab: Lab
    seeds: list[str]
    relay: Host
    peer: Host


@pytest.fixture(scope="module")
def world(natlab_module: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    turnserver_or_skip()
    lab = natlab_module
    servers = [lab.public_host(f"rdht{i}") for i in range(2)]
    relay = lab.public_host("volunteer")
    procs: list[subprocess.Popen[str]] = []
    try:
        seeds: list[str] = []
        for host in servers:
            procs.append(host.popen([sys.executable, "-c", SERVER, host.address, *seeds],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    env=_env()))
            assert procs[-1].stdout is not None
            assert procs[-1].stdout.readline().strip() == "ready"
            seeds.append(f"{host.address}:{DHT_PORT}")
        data = tmp_path_factory.mktemp("volunteer")
        procs.append(relay.popen([sys.executable, "-c", VOLUNTEER, relay.address, str(data),
                                  *seeds], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=_env()))
        assert procs[-1].stdout is not None
        ready = procs[-1].stdout.readline().split()
        assert ready[:2] == ["ready", "1"] and int(ready[2]) >= 1, ready
        yield World(lab, seeds, relay, lab.public_host("peer"))
    finally:
        end_by_stdin(procs, timeout=15)


def test_a_node_behind_a_symmetric_nat_relays_through_a_volunteer_found_on_the_dht(
        world: World) -> None:
    client = world.lab.host_behind("rclient", "symmetric")
    with UdpAgent(world.peer) as agent:
        port = agent.bind(0)
        proc = client.popen([sys.executable, "-c", CLIENT, world.peer.address, str(port),
                             *world.seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            got: dict[str, Any] = json.loads(line)
            assert got["urls"] == [f"turn:{world.relay.address}:{TURN_PORT}?transport=udp"]
            assert got["none"] == 401 and got["forged"] == 401  # no or forged credentials
            assert got["past_quota"] == 486  # past its cap (2 allocations per credential)
            assert got["relayed"][0] == world.relay.address
            (ip, src_port, data), = agent.recv(port, timeout=20)
            # The peer sees the relay's address only, never the client's.
            assert (ip, src_port, data) == (world.relay.address, got["relayed"][1], "ping")
            assert ip not in (client.address, client.public_address)
            agent.send(port, (ip, src_port), "pong")
            echo = json.loads(proc.stdout.readline())
            assert echo == {"echo": "pong", "from": [world.peer.address, port]}
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
