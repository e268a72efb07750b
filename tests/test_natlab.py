"""The NAT lab's own tests: each NAT kind does what it claims, hole punching works exactly
where the NATs allow it, and the lab leaves nothing behind and never leaves its range.

Behaviour is checked with plain UDP sockets (``natlab.UdpAgent``): a host behind a NAT
sends to public host A, whose agent sees the mapping (the source address and port);
then A from another port and B (which the host never sent to) try to reach that mapping;
then the host sends to B, and B's view of the mapping is compared with A's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import pytest
from natlab import NAT_KINDS, Host, Lab, NatKind, UdpAgent, natlab_available
from natlab import fixtures as natlab_fixtures
from natlab.netns import lab_namespaces, namespace_pids
from natlab.rules import router_rules

TESTS = Path(__file__).resolve().parent
LAB_NET = ipaddress.IPv4Network("198.18.0.0/15")
Addr = tuple[str, int]

#: kind -> (same mapping towards A and B, A from another port reaches, B reaches)
BEHAVIOUR: dict[NatKind, tuple[bool, bool, bool]] = {
    "public": (True, True, True),
    "full-cone": (True, True, True),
    "address-restricted": (True, True, False),
    "port-restricted": (True, False, False),
    "symmetric": (False, False, False),
}


@dataclass
class World:
    """One lab for the behaviour tests: public A and B, a host per kind for the filtering
    tests, two more per kind for hole punching (each pair of hosts meets only once)."""

    lab: Lab
    a: Host
    b: Host
    filt: dict[NatKind, Host]
    punch: dict[NatKind, tuple[Host, Host]]
    agents: dict[str, UdpAgent] = field(default_factory=dict)

    def agent(self, host: Host) -> UdpAgent:
        if host.name not in self.agents:
            self.agents[host.name] = UdpAgent(host)
        return self.agents[host.name]


@pytest.fixture(scope="module")
def world(natlab_module: Lab) -> Iterator[World]:
    lab = natlab_module
    w = World(
        lab, lab.public_host("a"), lab.public_host("b"),
        {k: lab.host_behind(f"f-{k}", k) for k in NAT_KINDS},
        {k: (lab.host_behind(f"p1-{k}", k), lab.host_behind(f"p2-{k}", k)) for k in NAT_KINDS},
    )
    yield w
    for agent in w.agents.values():
        agent.close()


def _mapping(world: World, agent: UdpAgent, port: int, via: Host, data: str) -> Addr:
    """Send from ``agent``'s ``port`` to a new port of public ``via``: the source it sees."""
    seer = world.agent(via)
    sport = seer.bind()
    agent.send(port, (via.address, sport), data)
    got = seer.recv(sport, timeout=5)
    assert [d for _, _, d in got] == [data]
    return got[0][0], got[0][1]


@pytest.mark.parametrize("kind", NAT_KINDS)
def test_nat_kind_mapping_and_filtering(world: World, kind: NatKind) -> None:
    same_mapping, a2_reaches, b_reaches = BEHAVIOUR[kind]
    h = world.filt[kind]
    ah, aa, ab = world.agent(h), world.agent(world.a), world.agent(world.b)
    hp, a1, a2, b1 = ah.bind(), aa.bind(), aa.bind(), ab.bind()

    ah.send(hp, (world.a.address, a1), "to-a1")
    got = aa.recv(a1, timeout=5)
    assert [(ip, d) for ip, _, d in got] == [(h.public_address, "to-a1")]
    mapped = (got[0][0], got[0][1])
    if kind == "public":
        assert mapped == (h.address, hp)
    else:
        assert h.address != h.public_address

    # Filtering: A from another port, then B, then a sentinel from A:a1 (which must reach).
    aa.send(a2, mapped, "from-a2")
    ab.send(b1, mapped, "from-b")
    aa.send(a1, mapped, "sentinel")
    got = ah.recv(hp, timeout=5, until="sentinel") + ah.recv(hp, timeout=0.3, count=99)
    seen = {d for _, _, d in got}
    assert "sentinel" in seen
    assert ("from-a2" in seen, "from-b" in seen) == (a2_reaches, b_reaches), seen

    # Mapping: the same socket towards B (a port B never sent from).
    towards_b = _mapping(world, ah, hp, world.b, "to-b")
    assert towards_b[0] == h.public_address
    assert (towards_b == mapped) == same_mapping, (mapped, towards_b)


def _punch(world: World, h1: Host, h2: Host) -> tuple[bool, bool]:
    """Both hosts learn their mapping from A, then send to each other's at once, a few
    rounds, answering whatever reaches them at its source (as ICE does with a
    peer-reflexive candidate). Whether each received anything from the other."""
    g1, g2 = world.agent(h1), world.agent(h2)
    p1, p2 = g1.bind(), g2.bind()
    m1 = _mapping(world, g1, p1, world.a, "stun1")
    m2 = _mapping(world, g2, p2, world.a, "stun2")
    heard = [False, False]
    sides = ((g1, p1, m2, h2), (g2, p2, m1, h1))
    for _ in range(10):
        for g, p, peer, _h in sides:
            g.send(p, peer, "punch")
        time.sleep(0.02)
        for i, (g, p, _peer, other) in enumerate(sides):
            for ip, port, data in g.recv(p, timeout=0, count=99):
                assert ip == other.public_address
                heard[i] = True
                if data == "punch":
                    g.send(p, (ip, port), "ack")
    for i, (g, p, _peer, _other) in enumerate(sides):
        if not heard[i] and g.recv(p, timeout=0.3):
            heard[i] = True
    return heard[0], heard[1]


@pytest.mark.parametrize(("k1", "k2"), list(combinations_with_replacement(NAT_KINDS, 2)))
def test_hole_punching(world: World, k1: NatKind, k2: NatKind) -> None:
    hard = {"port-restricted", "symmetric"}
    blocked = (k1 == "symmetric" and k2 in hard) or (k2 == "symmetric" and k1 in hard)
    h1, h2 = world.punch[k1][0], world.punch[k2][1]
    assert _punch(world, h1, h2) == ((False, False) if blocked else (True, True))


# -- the lab stays inside its range and leaves nothing behind ------------------------------


def _json(argv: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def test_every_address_and_route_stays_in_the_lab(world: World) -> None:
    lab = world.lab
    assert lab.internet is not None
    for ns in lab.namespaces:
        for link in _json(["ip", "-n", ns, "-j", "addr"]):
            name = link["ifname"]
            if name != "lo":  # every other interface is a veth to another lab namespace
                assert link.get("link_netnsid") is not None or link.get("linkinfo") is None
            for a in link.get("addr_info", []):
                addr = ipaddress.ip_address(a["local"])
                if name == "lo":
                    assert addr.is_loopback, (ns, a)
                else:
                    assert addr.version == 4 and addr in LAB_NET, (ns, name, a)
        for link in _json(["ip", "-n", ns, "-j", "-d", "link"]):
            kind = link.get("linkinfo", {}).get("info_kind")
            assert link["ifname"] == "lo" or kind in ("veth", "bridge"), (ns, link)
            if kind == "veth":
                assert "link_netnsid" in link, (ns, link)  # its peer is in another namespace
        for family in ("-4", "-6"):
            for route in _json(["ip", "-n", ns, "-j", family, "route", "show", "table", "all"]):
                dst, gw = route.get("dst", ""), route.get("gateway")
                if route.get("table") == "local" or dst in ("::1", "multicast"):
                    continue
                assert family == "-4", (ns, route)
                if dst != "default":
                    assert ipaddress.IPv4Network(dst, strict=False).subnet_of(LAB_NET), (ns, route)
                if gw is not None:
                    assert ipaddress.ip_address(gw) in LAB_NET, (ns, route)
        if ns != lab.internet.ns:
            continue
        # The internet namespace is the end of every default route: it has none itself.
        routes = _json(["ip", "-n", ns, "-j", "route"])
        assert all(r.get("dst") != "default" for r in routes)
    def forwarding(ns: str) -> str:
        return subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                              capture_output=True, text=True, check=True).stdout.strip()

    routers = {h.router.ns for h in lab.hosts.values() if h.router is not None}
    assert routers and all(forwarding(ns) == "1" for ns in routers)
    assert forwarding(lab.internet.ns) == "0"


def _root_state() -> str:
    parts = []
    for argv in (["ip", "-o", "addr"], ["ip", "-o", "link"], ["ip", "route", "show", "table", "all"],
                 ["ip", "-6", "route", "show", "table", "all"]):
        parts.append(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return "\n".join(parts)


def _gone(names: list[str]) -> bool:
    existing = set(lab_namespaces())
    return not any(n in existing for n in names)


def test_root_namespace_unchanged_and_teardown_complete() -> None:
    natlab_fixtures.require_natlab()
    before = _root_state()
    with Lab() as lab:
        for kind in NAT_KINDS:
            lab.host_behind(kind.replace("-", ""), kind)
        names = list(lab.namespaces)
        assert set(names) <= set(lab_namespaces())
        assert len(names) == 1 + 1 + 2 * 4
        assert _root_state() == before
    assert _gone(names)
    assert _root_state() == before


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_teardown_after_an_exception_kills_processes(exc: type[BaseException]) -> None:
    natlab_fixtures.require_natlab()
    names: list[str] = []
    procs: list[subprocess.Popen[Any]] = []
    pids: list[int] = []
    with pytest.raises(exc), Lab() as lab:
        h = lab.host_behind("alice", "symmetric")
        procs.append(h.popen(["sleep", "60"]))
        procs.append(h.popen(["sh", "-c", "sleep 60 & sleep 60 & wait"]))
        names.extend(lab.namespaces)
        deadline = time.monotonic() + 5
        while len(namespace_pids([h.ns])) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        pids.extend(namespace_pids([h.ns]))
        assert len(pids) == 4  # sleep, sh and its two children (grandchildren of the lab)
        raise exc("inside the lab")
    assert _gone(names)
    assert lab.closed
    with pytest.raises(RuntimeError, match="closed"):
        h.popen(["true"])
    assert all(p.returncode is not None for p in procs)
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"


_CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
from natlab import Lab
lab = Lab().start()
lab.host_behind("x", "port-restricted")
print(json.dumps(lab.namespaces), flush=True)
time.sleep(60)
"""


def _child_lab() -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(TESTS))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the child lab did not start"
    return proc, json.loads(line)


def test_sigterm_tears_the_lab_down() -> None:
    natlab_fixtures.require_natlab()
    proc, names = _child_lab()
    assert not _gone(names)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == -signal.SIGTERM
    assert proc.stdout is not None
    proc.stdout.close()
    assert _gone(names)


def test_a_new_lab_removes_dead_owners_leftovers_only() -> None:
    natlab_fixtures.require_natlab()
    dead, dead_names = _child_lab()
    alive, alive_names = _child_lab()
    try:
        dead.kill()  # SIGKILL: no teardown runs
        dead.wait(timeout=10)
        assert not _gone(dead_names)
        with Lab():
            assert _gone(dead_names)
            assert set(alive_names) <= set(lab_namespaces())  # a live owner's lab stays
    finally:
        alive.terminate()
        alive.wait(timeout=20)
        for p in (dead, alive):
            assert p.stdout is not None
            p.stdout.close()
    assert _gone(alive_names)


# -- the Host API -------------------------------------------------------------------------


def test_host_api_and_capture(natlab: Lab) -> None:
    pub = natlab.public_host("dht1")
    h = natlab.host_behind("alice", "port-restricted")
    assert (pub.kind, pub.address, pub.public_address) == ("public", "198.18.0.2", "198.18.0.2")
    assert (h.kind, h.address, h.public_address) == ("port-restricted", "198.19.1.2",
                                                     "198.18.0.3")
    assert h.router is not None and h.router.address == h.public_address
    out = h.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], timeout=10)
    assert out.returncode == 0 and " 198.19.1.2/24 " in out.stdout
    lo = h.run(["ip", "-o", "addr", "show", "dev", "lo"], timeout=10).stdout
    assert "127.0.0.1/8" in lo and "UP" in h.run(["ip", "link", "show", "lo"]).stdout

    gp, gh = UdpAgent(pub), UdpAgent(h)
    try:
        pp, hp = gp.bind(), gh.bind()
        with h.capture("udp") as cap, h.router.capture("udp", interface="wan") as wan:
            gh.send(hp, (pub.address, pp), "hello")
            got = gp.recv(pp, timeout=5)
            assert [d for _, _, d in got] == ["hello"]
        assert (h.address, hp, pub.address, pp) in cap.packets()
        assert (h.public_address, got[0][1], pub.address, pp) in wan.packets()
    finally:
        gp.close()
        gh.close()


def test_public_host_with_several_addresses(natlab: Lab) -> None:
    many = natlab.public_host("many", addresses=3)
    other = natlab.public_host("other")
    assert many.addresses == ("198.18.0.2", "198.18.0.3", "198.18.0.4")
    assert many.address == many.public_address == "198.18.0.2"
    assert other.address == "198.18.0.5"
    with UdpAgent(other) as g:
        port = g.bind()
        send = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.bind((sys.argv[1], 0)); s.sendto(b'x', (sys.argv[2], int(sys.argv[3])))")
        for a in many.addresses:
            many.run([sys.executable, "-c", send, a, other.address, str(port)], check=True)
        got = g.recv(port, timeout=5, count=3)
    assert sorted(ip for ip, _, _ in got) == list(many.addresses)
    with pytest.raises(ValueError):
        natlab.public_host("toomany", addresses=300)


def test_bad_names_and_kinds_are_refused(natlab: Lab) -> None:
    natlab.public_host("x")
    for bad in ("x", "Bad", "a b", "internet", "y-nat", "z" * 25):
        with pytest.raises(ValueError):
            natlab.public_host(bad)
    with pytest.raises(ValueError):
        natlab.host_behind("ok", "carrier-grade")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        router_rules("public", wan="198.18.0.2", lan="198.19.1.0/24", host="198.19.1.2")


def test_fixture_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(natlab_fixtures, "natlab_available", lambda: (False, "no namespaces"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no namespaces"):
        natlab_fixtures.require_natlab()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true: no namespaces"):
        natlab_fixtures.require_natlab()


def test_natlab_available_here_and_one_package_under_both_names() -> None:
    ok, why = natlab_available()
    assert isinstance(ok, bool) and why
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tests.natlab as t; "
            "import natlab, natlab.lab; from tests.natlab import Lab; "
            "assert t is natlab and Lab is natlab.lab.Lab; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(TESTS.parent)], capture_output=True,
                         text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""})
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("kind", ["address-restricted", "port-restricted"])
def test_an_early_punch_does_not_move_the_mapping(natlab: Lab, kind: NatKind) -> None:
    """A peer's packet that reaches the router before the host's first packet to that peer
    is dropped without a trace: the host's packet then keeps its mapping. (Were the packet
    answered, or its conntrack entry confirmed, Linux would translate the host's packet to
    another port, and a cone NAT would look symmetric to the peer.)"""
    a, b = natlab.public_host("a"), natlab.public_host("b")
    h = natlab.host_behind("h", kind)
    ga, gb, gh = UdpAgent(a), UdpAgent(b), UdpAgent(h)
    try:
        a1, b1, hp = ga.bind(), gb.bind(), gh.bind()
        gh.send(hp, (a.address, a1), "stun")
        mapped = ga.recv(a1, timeout=5)[0][:2]
        for _ in range(3):
            gb.send(b1, mapped, "early")
        assert gh.recv(hp, timeout=0.3) == []
        gh.send(hp, (b.address, b1), "late")
        assert [(ip, port, d) for ip, port, d in gb.recv(b1, timeout=5)] == [
            (*mapped, "late")]
    finally:
        for g in (ga, gb, gh):
            g.close()
