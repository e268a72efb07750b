"""Overlay links between two nodes behind NATs, in the NAT lab: they connect with the ICE
servers the daemon gives its link driver (the STUN servers the node's DHT probe found:
public hailing nodes answering on their DHT port) and not without them.

Three public hailing DHT nodes; two nodes behind port-restricted routers (each its own
process in its host's namespace) bootstrap off them, probe their NAT, and open a link
with the daemon's driver (:class:`~hailing.daemon.overlay_ice.IceLinkDriver` on the
node's ICE source, as ``hailing up`` builds it) by a ``LinkOffer``/``LinkAnswer`` whose
SDP texts the test carries between them (what the network coupler's forwarded messages
carry). With no ICE server (what the driver had before) each side has only its host
candidate, a private LAN address the other cannot reach, and the link never opens. A
port-restricted NAT lets in only what answers something sent, so with STUN the link
opens only by hole punching to the mappings a public node's STUN saw. With a volunteer
relay (coturn, found on the DHT) known too, two port-restricted nodes still link
directly, the offerer giving its unused allocation back (the answering side never
allocates); two symmetric ones link through the offerer's relay. Skipped where the
lab cannot run, required under CI=true. Every wait has a timeout; nothing is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lab_scripts import DHT_PORT, lab_env, public_dht_nodes
from natlab import Host, Lab
from proc_lines import Lines, end_by_stdin
from turn_helpers import turnserver_or_skip

TURN_PORT = 3478
#: How long a link may take to open before it counts as failed (the QueryTimeout of
#: LinkOffer.finish / LinkAnswer).
OPEN_WAIT = 15.0

# One side of a link: bootstrap, probe the NAT, then offer (or answer) with the daemon's
# link driver; the SDP texts go through stdin/stdout as JSON lines.
LINKER = """
import asyncio, json, os, sys
from hailing.daemon.overlay_ice import IceLinkDriver
from hailing.dht import DhtConfig
from hailing.nat import RelayFinder
from hailing.node import DhtNode
from hailing.rtc.ice import selected_path
from hailing.session.iceservers import IceServerSource, node_provider
from hailing.transport.linksdp import LinkAnswer, LinkOffer

def say(**kw):
    print(json.dumps(kw), flush=True)

async def main():
    role, ice, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
    seeds = [(a, int(p)) for a, p in (s.rsplit(":", 1) for s in sys.argv[4:])]
    config = DhtConfig(enforce_node_id=False, routing_max_per_net=16, query_timeout=2.0)
    loop = asyncio.get_running_loop()

    async def read():
        return json.loads(await loop.run_in_executor(None, sys.stdin.readline))

    async with DhtNode(("0.0.0.0", 0), config=config) as node:
        await node.bootstrap(seeds)
        info = await node.nat_info()
        relays = RelayFinder(node) if ice == "relay" else None
        found = relays is not None and await relays.credentials() is not None
        source = IceServerSource(node_provider(node, relays)) if ice != "none" else None
        driver = IceLinkDriver(cap=4, source=lambda: source)
        driver.node_id = os.urandom(20)
        me = {"id": driver.node_id.hex(), "behind_nat": info.behind_nat,
              "stun": node.stun_servers(), "relay": found}

        async def opened(link):
            for _ in range(100):  # the relays its path does not use, given back
                if not driver._releasing:
                    break
                await asyncio.sleep(0.05)
            say(open=link.is_open, path=selected_path(link.pc),
                released=driver.stats["link_relays_released"])

        try:
            if role == "offer":
                offer = await LinkOffer.create(driver)
                say(sdp=offer.sdp, **me)
                got = await read()
                try:
                    link = await offer.finish(got["sdp"], peer_id=bytes.fromhex(got["id"]),
                                              timeout=wait)
                except Exception as exc:
                    say(open=False, error=repr(exc))
                else:
                    await opened(link)
            else:
                got = await read()
                answer = await LinkAnswer.create(driver, got["sdp"],
                                                 peer_id=bytes.fromhex(got["id"]), timeout=wait)
                say(sdp=answer.sdp, **me)
                try:
                    link = await answer.link()
                except Exception as exc:
                    say(open=False, error=repr(exc))
                else:
                    await opened(link)
            await loop.run_in_executor(None, sys.stdin.read)  # until the test ends us
        finally:
            await driver.aclose()
            if source is not None:
                await source.aclose()

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
    config = DhtConfig(enforce_node_id=False, routing_max_per_net=16, query_timeout=2.0)
    async with DhtNode((ip, {DHT_PORT}), config=config) as node:
        await node.bootstrap(seeds)
        cfg = TurnConfig(ip, port={TURN_PORT}, min_port=50000, max_port=50100)
        async with RelayService(node, data / "relay", cfg) as relay:
            await relay.announced.wait()
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@dataclass
class World:
    lab: Lab
    servers: list[Host]


@pytest.fixture(scope="module")
def world(natlab_module: Lab) -> Iterator[World]:
    lab = natlab_module
    with public_dht_nodes(lab, lab_env()) as servers:
        yield World(lab, servers)


def _json_line(lines: Lines, key: str) -> dict[str, Any]:
    i = lines.wait_for(lambda ln: ln.startswith("{") and f'"{key}"' in ln, timeout=90)
    got: dict[str, Any] = json.loads(lines.lines[i])
    return got


def _send(proc: subprocess.Popen[bytes], value: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(value) + "\n").encode())
    proc.stdin.flush()


def link(world: World, a: Host, b: Host, ice: str) -> dict[str, dict[str, Any]]:
    """``a`` offers a link to ``b`` (``ice``: "none", "stun", or "relay": STUN and a
    volunteer found on the DHT); what each side said."""
    seeds = [f"{s.address}:{DHT_PORT}" for s in world.servers]
    procs = [h.popen([sys.executable, "-c", LINKER, role, ice, str(OPEN_WAIT), *seeds],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=lab_env())
             for h, role in ((a, "offer"), (b, "answer"))]
    try:
        out = [Lines(p.stdout) for p in procs]  # type: ignore[arg-type]
        offer = _json_line(out[0], "sdp")
        _send(procs[1], offer)
        answer = _json_line(out[1], "sdp")
        _send(procs[0], answer)
        return {"offer": offer, "answer": answer, "offerer": _json_line(out[0], "open"),
                "answerer": _json_line(out[1], "open")}
    finally:
        end_by_stdin(procs)


def _candidates(sdp: str) -> list[tuple[str, str]]:
    """(type, address) of each ICE candidate."""
    parts = [ln.split() for ln in sdp.splitlines() if ln.startswith("a=candidate:")]
    return [(p[7], p[4]) for p in parts]


def test_two_nodes_behind_port_restricted_nats_link_only_with_the_nodes_stun(
        world: World) -> None:
    a = world.lab.host_behind("oi-a", "port-restricted")
    b = world.lab.host_behind("oi-b", "port-restricted")
    servers = sorted((s.address, DHT_PORT) for s in world.servers)

    got = link(world, a, b, "stun")
    for side, host in (("offer", a), ("answer", b)):
        assert got[side]["behind_nat"] is True, got[side]
        assert sorted(tuple(s) for s in got[side]["stun"]) == servers
        # the reflexive candidate is the NAT's mapping, as a public node's STUN saw it
        assert ("srflx", host.public_address) in _candidates(got[side]["sdp"]), got[side]
    assert got["offerer"]["open"] is True, got
    assert got["answerer"]["open"] is True, got
    # a direct path through both NATs: each reached the other at its mapping
    path = got["offerer"]["path"]
    assert path["local"] == "host" and path["remote"] in ("srflx", "prflx"), path
    assert path["relayed"] is False

    got = link(world, a, b, "none")  # the driver's configuration before: no ICE server
    for side, host in (("offer", a), ("answer", b)):
        assert _candidates(got[side]["sdp"]) == [("host", host.address)], got[side]
    assert got["offerer"]["open"] is False, got
    assert "QueryTimeout" in got["offerer"]["error"]
    assert got["answerer"]["open"] is False, got


@pytest.fixture(scope="module")
def volunteer(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A public node volunteering as a TURN relay (coturn), announced on the DHT."""
    turnserver_or_skip()
    host = world.lab.public_host("oi-relay")
    seeds = [f"{s.address}:{DHT_PORT}" for s in world.servers]
    data = tmp_path_factory.mktemp("oi-volunteer")
    proc = host.popen([sys.executable, "-c", VOLUNTEER, host.address, str(data), *seeds],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lab_env())
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield host
    finally:
        end_by_stdin([proc], timeout=15)


def test_with_a_relay_known_links_go_direct_where_they_can_and_relayed_where_not(
        world: World, volunteer: Host) -> None:
    a = world.lab.host_behind("oi-c", "port-restricted")
    b = world.lab.host_behind("oi-d", "port-restricted")
    got = link(world, a, b, "relay")
    assert got["offer"]["relay"] is True, got["offer"]
    assert ("relay", volunteer.address) in _candidates(got["offer"]["sdp"]), got["offer"]
    # the answering side never allocates (any node may ask for a link: no call policy)
    assert not any(kind == "relay" for kind, _ in _candidates(got["answer"]["sdp"])), got
    for side in ("offerer", "answerer"):
        assert got[side]["open"] is True, got
        assert got[side]["path"]["relayed"] is False, got
    assert got["offerer"]["released"] == 1, got  # its allocation, unused, given back
    assert got["answerer"]["released"] == 0, got

    a = world.lab.host_behind("oi-e", "symmetric")
    b = world.lab.host_behind("oi-f", "symmetric")
    got = link(world, a, b, "relay")
    assert got["offerer"]["open"] is True, got
    assert got["answerer"]["open"] is True, got
    assert got["offerer"]["path"]["relayed"] is True, got  # no direct path exists
