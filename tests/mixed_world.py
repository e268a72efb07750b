"""The mixed network in the NAT lab: 40 libtorrent DHT nodes and 4 public hailing nodes on
the public segment, daemons behind NATs. Shared by ``tests/test_mixed_network.py`` and
``benchmarks/mixed_network.py``.

::

    with Lab() as lab:
        world = MixedWorld(lab, tmp_dir).start()
        world.call("port-restricted", "port-restricted")   # through the sub-overlay
        world.stop_hailing_nodes()                          # every public hailing node
        world.send(world.caller("port-restricted"), world.fallback_callee)  # BEP44
        world.close()

The 40 libtorrent sessions live in ONE process in one public host with 40 addresses
(198.18.0.x, each session bound to its own, port 6881), with tests/interop's settings
(no bootstrap routers, no LSD/UPnP/NAT-PMP). The public hailing nodes join through
libtorrent nodes only (each through another one) and so do the daemons
(``hailing up --bootstrap <a libtorrent node>``): hailing nodes can only meet through
the sub-overlay's announces, which libtorrent nodes store.

The fallback callee (:attr:`MixedWorld.fallback_callee`) is a read-only daemon
(``--read-only``: BEP43, in nobody's routing table, never a storing node) on a public
address: once every public hailing node is stopped there is no STUN server left either,
so two NATed parties could not find a path; a public callee needs none.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natlab import Host
from natmatrix_world import DHT_PORT, NODE_SCRIPT, Driver, LabDaemon, NatWorld, clean_env
from proc_lines import Lines

__all__ = ["HL_NODES", "LT_NODES", "MixedWorld"]

LT_NODES = 40
HL_NODES = 4
START_TIMEOUT = 90.0
_INTEROP = Path(__file__).resolve().parent / "interop" / "conftest.py"

#: 40 libtorrent sessions in one process, one per address (argv: conftest path, addrs).
LT_SCRIPT = """
import importlib.util, random, sys, time
import libtorrent as lt
path, *addrs = sys.argv[1:]
spec = importlib.util.spec_from_file_location("lt_interop_settings", path)
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
cat = lt.alert.category_t
sessions = [lt.session(mod.lt_settings(listen_interfaces=f"{a}:6881", outgoing_interfaces=a,
                                       alert_mask=cat.error_notification)) for a in addrs]
assert all(s.is_dht_running() and s.listen_port() == 6881 for s in sessions)
rng = random.Random(1)
n = len(sessions)
for i, s in enumerate(sessions):  # a ring plus a few random links
    for j in {(i + 1) % n, (i - 1) % n, *rng.sample(range(n), 4)} - {i}:
        s.add_dht_node((addrs[j], 6881))
time.sleep(3.0)  # libtorrent's own joins
print("ready", flush=True)
while True:
    for s in sessions:
        s.pop_alerts()
    time.sleep(1.0)
"""


@dataclass
class MixedWorld(NatWorld):
    """The mixed network (module docstring). ``callers``/``callees``: NAT kinds of the
    daemons calling through the sub-overlay; plus the fallback callee."""

    callers: Any = ("port-restricted",)
    callees: Any = ("port-restricted",)
    public_nodes: int = HL_NODES
    relay: bool = False
    lt_host: Host | None = None
    hailing_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    FALLBACK = "e-public-ro"

    @property
    def bootstrap(self) -> str:
        """The daemons join through a libtorrent node."""
        assert self.lt_host is not None
        return f"{self.lt_host.addresses[LT_NODES // 2]}:{DHT_PORT}"

    @property
    def fallback_callee(self) -> LabDaemon:
        return self.daemons[self.FALLBACK]

    def start(self) -> MixedWorld:
        self.start_nodes()
        names = ([("c-" + k, k) for k in self.callers] + [("e-" + k, k) for k in self.callees]
                 + [(self.FALLBACK, "public")])
        self.make_identities(names)
        for name, kind in names:
            self.add_daemon(name, kind, *(["--read-only"] if name == self.FALLBACK else []))
        self.wait_daemons()
        self.wait_stun()
        return self

    def wait_stun(self, timeout: float = START_TIMEOUT) -> None:
        """Until every NATed daemon has STUN servers (from the public hailing nodes): a
        call between two NATed parties needs their reflexive addresses."""
        deadline = time.monotonic() + timeout
        for d in self.daemons.values():
            if d.kind == "public":
                continue
            while True:
                assert d.driver is not None
                _, body = d.driver.request("GET", "/api/ice")
                if (body or {}).get("iceServers"):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{d.name} has no STUN server:\n{d.stderr()}")
                time.sleep(0.2)

    def restart_daemon(self, name: str) -> LabDaemon:
        """Stop the daemon ``name`` and start it again (same host, data and arguments):
        a daemon that starts with no hailing node reachable."""
        d = self.daemons[name]
        if d.driver is not None:
            d.driver.close()
            d.driver = None
        if d.proc is not None and d.proc.poll() is None:
            d.proc.terminate()
            d.proc.wait(timeout=10)
        self.spawn_up(d, f"{name}.restart.stderr.txt")
        assert d.out is not None
        try:
            d.out.wait_for(lambda line: line.startswith("up "), timeout=START_TIMEOUT)
        except AssertionError:
            raise AssertionError(f"{name} did not come up again:\n{d.stderr()}") from None
        up = next(line for line in d.out.lines if line.startswith("up "))
        d.dht_port = int(up.split()[3].rsplit(":", 1)[1])
        d.driver = Driver(d.host, d.data_dir)
        return d

    def start_nodes(self) -> None:
        """The libtorrent swarm, then the public hailing nodes, each joining through a
        different libtorrent node; returns once all are up and joined."""
        lt = self.lt_host = self.lab.public_host("lt", addresses=LT_NODES)
        log = self.tmp / "lt"
        log.mkdir(parents=True, exist_ok=True)
        proc = lt.popen([sys.executable, "-u", "-c", LT_SCRIPT, str(_INTEROP), *lt.addresses],
                        stdout=subprocess.PIPE,
                        stderr=open(log / "stderr.txt", "wb"),  # noqa: SIM115
                        env=clean_env())
        self._procs.append(proc)
        assert proc.stdout is not None
        self._wait_ready(Lines(proc.stdout), proc, log)
        waiting = []
        for i in range(self.public_nodes):
            host = self.lab.public_host(f"hl{i + 1}")
            self.nodes.append(host)
            data = self.tmp / f"hl{i + 1}"
            data.mkdir(parents=True, exist_ok=True)
            boot = f"{lt.addresses[i * (LT_NODES // self.public_nodes)]}:{DHT_PORT}"
            p = host.popen([sys.executable, "-u", "-c", NODE_SCRIPT, host.address, str(DHT_PORT),
                            str(data), "-", boot], stdout=subprocess.PIPE,
                           stderr=open(data / "stderr.txt", "wb"),  # noqa: SIM115
                           env=clean_env())
            self._procs.append(p)
            self.hailing_procs.append(p)
            assert p.stdout is not None
            waiting.append((Lines(p.stdout), p, data))
        for lines, p, data in waiting:
            self._wait_ready(lines, p, data)

    def stop_hailing_nodes(self, *also: str) -> None:
        """Stop every public hailing node (and the daemons named in ``also``)."""
        procs = list(self.hailing_procs)
        for name in also:
            d = self.daemons[name]
            if d.driver is not None:
                d.driver.close()
                d.driver = None
            if d.proc is not None:
                procs.append(d.proc)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
