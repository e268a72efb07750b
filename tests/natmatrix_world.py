"""The NAT matrix's world: public hailing DHT nodes (one of them a TURN relay) and daemons
behind every NAT kind, in a NAT lab. Shared by ``tests/test_nat_matrix.py`` and
``benchmarks/nat_matrix.py``.

::

    with Lab() as lab:
        world = NatWorld(lab, tmp_dir)
        world.start()                       # 3 public nodes, a relay, 10 daemons
        result = world.call("public", "symmetric")   # caller kind, callee kind
        result["path"]                      # {"local": ..., "remote": ..., "relayed": ...}
        world.hang_up("public", "symmetric")
        world.close()                       # every process stopped (the lab kills the rest)

The volunteer is a ``hailing up --serve-relay`` daemon on the last public host. Nobody
configures a STUN or TURN server: every other daemon is a plain ``hailing up
--bootstrap`` to the public nodes, whose STUN (on their DHT port) and relay it finds itself.
Each daemon has its own data directory; callers and callees have each other as contacts
(written to their contact books before they start). The daemons' API listens on
127.0.0.1 inside their namespace: a small driver process inside each caller's namespace
forwards the API requests (:class:`Driver`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from natlab import NAT_KINDS, Host, Lab
from proc_lines import Lines, end_by_stdin

__all__ = ["DHT_PORT", "EXTRA_PATH", "KINDS", "Driver", "LabDaemon", "NatWorld", "expected_path",
           "hole_punchable"]

SRC = Path(__file__).resolve().parents[1] / "src"
INTEROP = Path(__file__).resolve().parent / "interop"
KINDS: tuple[str, ...] = tuple(NAT_KINDS)
#: The public nodes' DHT (and STUN) port.
DHT_PORT = 6881
#: How long a process may take to come up (seconds).
START_TIMEOUT = 60.0

#: A public hailing DHT node with a BEP42 id for its address (the volunteer relay is a
#: ``hailing up --serve-relay`` daemon).
NODE_SCRIPT = """
import asyncio, os, sys
from pathlib import Path

async def main(ip, port, data, boot):
    from hailing.dht.bep42 import generate_node_id
    from hailing.node import DhtNode
    # a BEP42 id for its public address (others keep only such nodes in their tables)
    node = DhtNode((ip, port), data_dir=Path(data) / "dht",
                   node_id=generate_node_id(ip, os.urandom),
                   bootstrap=[(h, int(p)) for h, p in (b.split(":") for b in boot)])
    await node.start()
    if boot:
        await node.bootstrap()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await node.stop()

ip, port, data, _, *boot = sys.argv[1:]
try:
    asyncio.run(main(ip, int(port), data, boot))
except KeyboardInterrupt:
    pass
"""

#: Inside a caller's namespace: one JSON request a line on stdin
#: ({"method", "path", "body"?, "timeout"?}) -> one JSON line {"status", "body"}.
DRIVER_SCRIPT = """
import json, sys, urllib.error, urllib.request
info = json.load(open(sys.argv[1] + "/api.json"))
for line in sys.stdin:
    req = json.loads(line)
    data = json.dumps(req["body"]).encode() if req.get("body") is not None else None
    r = urllib.request.Request(info["url"] + req["path"], data=data, method=req["method"],
                               headers={"Authorization": "Bearer " + info["token"],
                                        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=req.get("timeout", 60)) as resp:
            out = {"status": resp.status, "body": json.loads(resp.read() or b"null")}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "body": json.loads(e.read() or b"null")}
    except Exception as e:
        out = {"status": 0, "body": {"error": repr(e)}}
    print(json.dumps(out), flush=True)
"""


def hole_punchable(caller: str, callee: str) -> bool:
    """Whether two NAT kinds let a direct path through: all pairs but a symmetric NAT
    with a port-restricted or symmetric one (docs/nat.md)."""
    hard = {"port-restricted", "symmetric"}
    return not ((caller == "symmetric" and callee in hard)
                or (callee == "symmetric" and caller in hard))


def expected_path(caller: str, callee: str) -> str:
    """``direct`` or ``relayed``: what ICE should end up with for these NAT kinds."""
    return "direct" if hole_punchable(caller, callee) else "relayed"


#: Directories put before ``src`` on the lab processes' path (e.g. one with a
#: ``sitecustomize.py`` that turns logging on: ``benchmarks/nat_matrix.py --debug-log``).
EXTRA_PATH: list[str] = []


def clean_env() -> dict[str, str]:
    """The environment of the lab's processes: ``src`` (and ``tests/interop``, for the
    libtorrent settings in ``lt_loopback``) on the path, no hailing settings
    of the test's own (no ICE host restriction: each namespace has lab addresses only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILING_")}
    env["PYTHONPATH"] = os.pathsep.join([*EXTRA_PATH, str(SRC), str(INTEROP)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Driver:
    """The API of one daemon, from inside its namespace (see :data:`DRIVER_SCRIPT`)."""

    def __init__(self, host: Host, data_dir: Path) -> None:
        self.proc = host.popen([sys.executable, "-u", "-c", DRIVER_SCRIPT, str(data_dir)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env=clean_env())
        assert self.proc.stdout is not None
        self.out = Lines(self.proc.stdout)
        self._read = 0

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 60.0) -> tuple[int, Any]:
        stdin: IO[bytes] | None = self.proc.stdin
        assert stdin is not None
        line = json.dumps({"method": method, "path": path, "body": body, "timeout": timeout})
        stdin.write(line.encode() + b"\n")
        stdin.flush()
        i = self.out.wait_for(lambda _: True, start=self._read, timeout=timeout + 10)
        self._read = i + 1
        reply = json.loads(self.out.lines[i])
        return int(reply["status"]), reply["body"]

    def close(self) -> None:
        end_by_stdin([self.proc], timeout=5)


@dataclass
class LabDaemon:
    """One ``hailing up`` inside a lab host."""

    name: str
    kind: str
    host: Host
    data_dir: Path
    contact_id: str
    proc: subprocess.Popen[bytes] | None = None
    out: Lines | None = None
    driver: Driver | None = None
    dht_port: int = 0
    args: Sequence[str] = ()
    stderr_path: Path | None = None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON events printed so far (``name``: only those)."""
        out = []
        for line in list(self.out.lines if self.out is not None else [])[2:]:
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict) and (name is None or ev.get("event") == name):
                    out.append(ev)
        return out

    def stderr(self) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")[-4000:]


@dataclass
class NatWorld:
    """Public nodes, a relay and daemons in ``lab`` (see the module docstring)."""

    lab: Lab
    tmp: Path
    callers: Iterable[str] = KINDS
    callees: Iterable[str] = KINDS
    public_nodes: int = 3
    relay: bool = True
    extra_args: Sequence[str] = ()
    nodes: list[Host] = field(default_factory=list)
    daemons: dict[str, LabDaemon] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"{self.nodes[0].address}:{DHT_PORT}"

    def caller(self, kind: str) -> LabDaemon:
        return self.daemons["c-" + kind]

    def callee(self, kind: str) -> LabDaemon:
        return self.daemons["e-" + kind]

    # -- building ---------------------------------------------------------------------

    def start(self) -> NatWorld:
        self.start_nodes()
        names = [("c-" + k, k) for k in self.callers] + [("e-" + k, k) for k in self.callees]
        self.make_identities(names)
        for name, kind in names:
            self.add_daemon(name, kind)
        self.wait_daemons()
        self.wait_ice()
        return self

    def wait_ice(self, timeout: float = 90.0) -> None:
        """Until every daemon knows STUN servers (its DHT node's first probe) and, with a
        relay in the world, a relay (``GET /api/ice``, as a page would ask)."""
        deadline = time.monotonic() + timeout
        waiting = [d for d in self.daemons.values() if d.driver is not None]
        while waiting:
            d = waiting[0]
            assert d.driver is not None
            _, body = d.driver.request("GET", "/api/ice")
            urls = [u for s in (body or {}).get("iceServers", []) for u in s["urls"]]
            if any(u.startswith("stun:") for u in urls) and (
                    not self.relay or any(u.startswith("turn:") for u in urls)):
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise AssertionError(f"{d.name} found no STUN server or relay: {body}")
            time.sleep(0.5)

    def start_nodes(self) -> None:
        """The public hailing nodes (the last one a relay), each answering STUN on its
        DHT port; returns once all are up and joined."""
        waiting = []
        for i in range(self.public_nodes):
            host = self.lab.public_host(f"dht{i + 1}")
            self.nodes.append(host)
            relay = self.relay and i == self.public_nodes - 1
            boot = [] if i == 0 else [f"{self.nodes[0].address}:{DHT_PORT}"]
            data = self.tmp / f"dht{i + 1}"
            data.mkdir(parents=True, exist_ok=True)
            if relay:  # a volunteer: a daemon that also serves a TURN relay (coturn)
                argv = ["-m", "hailing", "up", "--serve-relay", "--data-dir", str(data),
                        "--bind", f"{host.address}:{DHT_PORT}", "--bootstrap", boot[0]]
            else:
                argv = ["-u", "-c", NODE_SCRIPT, host.address, str(DHT_PORT), str(data),
                        "-", *boot]
            proc = host.popen([sys.executable, *argv], stdout=subprocess.PIPE,
                              stderr=open(data / "stderr.txt", "wb"),  # noqa: SIM115
                              env=clean_env())
            self._procs.append(proc)
            assert proc.stdout is not None
            lines = Lines(proc.stdout)
            if i == 0:  # the others join through it
                self._wait_ready(lines, proc, data)
            else:
                waiting.append((lines, proc, data))
        for lines, proc, data in waiting:
            self._wait_ready(lines, proc, data)

    @staticmethod
    def _wait_ready(lines: Lines, proc: subprocess.Popen[bytes], data: Path) -> None:
        try:
            lines.wait_for(lambda line: line == "ready" or line.startswith('{"event": "relay"'),
                           timeout=START_TIMEOUT)
        except AssertionError:
            err = (data / "stderr.txt").read_text(errors="replace")[-3000:]
            raise AssertionError(f"a public node did not start (exit {proc.poll()}):\n"
                                 f"{err}") from None

    def make_identities(self, names: Sequence[tuple[str, str]]) -> None:
        """Each daemon's identity, and every caller and callee in each other's book."""
        from hailing.identity import load_or_create_identity
        from hailing.services.contacts import ContactBook

        ids = {name: load_or_create_identity(self.tmp / name).contact_id
               for name, _ in names}
        for name, _ in names:
            others = [n for n, _ in names if n[:2] != name[:2]]
            with ContactBook(self.tmp / name) as book:
                for other in others:
                    book.add(ids[other], other)
        for name, kind in names:
            self.daemons[name] = LabDaemon(name, kind, None,  # type: ignore[arg-type]
                                           self.tmp / name, ids[name])

    def add_daemon(self, name: str, kind: str, *args: str) -> LabDaemon:
        """Start ``hailing up`` for ``name`` behind a NAT of ``kind`` (its identity made
        by :meth:`make_identities`, or a new one)."""
        d = self.daemons.get(name)
        if d is None:
            from hailing.identity import load_or_create_identity

            d = self.daemons[name] = LabDaemon(
                name, kind, None, self.tmp / name,  # type: ignore[arg-type]
                load_or_create_identity(self.tmp / name).contact_id)
        d.host = self.lab.host_behind(name, kind)  # type: ignore[arg-type]
        d.args = ["--bootstrap", self.bootstrap, *self.extra_args, *args]
        self.spawn_up(d, f"{name}.stderr.txt")
        return d

    def spawn_up(self, d: LabDaemon, stderr_name: str) -> None:
        """Start ``hailing up`` for ``d`` in its host (its data directory and arguments):
        its stdout read into ``d.out``, its stderr written to ``tmp/stderr_name``. Does not
        wait for it (:meth:`wait_daemons` does)."""
        d.stderr_path = self.tmp / stderr_name
        d.proc = d.host.popen([sys.executable, "-m", "hailing", "up", "--data-dir",
                               str(d.data_dir), *d.args], stdout=subprocess.PIPE,
                              stderr=open(d.stderr_path, "wb"),  # noqa: SIM115
                              env=clean_env())
        self._procs.append(d.proc)
        assert d.proc.stdout is not None
        d.out = Lines(d.proc.stdout)

    def wait_daemons(self) -> None:
        for d in self.daemons.values():
            if d.out is None or d.driver is not None:
                continue
            try:
                d.out.wait_for(lambda line: line.startswith("up "), timeout=START_TIMEOUT)
            except AssertionError:
                raise AssertionError(f"{d.name} did not come up (exit "
                                     f"{d.proc.poll() if d.proc else None}):\n"
                                     f"{d.stderr()}") from None
            up = next(line for line in d.out.lines if line.startswith("up "))
            d.dht_port = int(up.split()[3].rsplit(":", 1)[1])
            d.driver = Driver(d.host, d.data_dir)

    # -- calling ----------------------------------------------------------------------

    def call(self, caller: str, callee: str, *, timeout: float = 30.0,
             text: str = "hello through the NAT") -> dict[str, Any]:
        """The caller (kind) sends a text to the callee (kind) through its daemon: the
        API's answer (``path``, ``connect_ms``, ``reused``...), or ``{"error", "status"}``."""
        return self.send(self.caller(caller), self.callee(callee), timeout=timeout,
                         text=text)

    def send(self, src: LabDaemon, dst: LabDaemon, *, timeout: float = 30.0,
             text: str = "hello") -> dict[str, Any]:
        assert src.driver is not None
        status, body = src.driver.request("POST", "/api/send", {
            "contact": dst.name, "text": text, "timeout": timeout}, timeout=timeout + 15)
        if status != 200:
            return {"status": status, "error": (body or {}).get("error", str(body))}
        result: dict[str, Any] = body
        return result

    def hang_up(self, caller: str, callee: str) -> None:
        """Close the caller's links to the callee and wait until both sides saw it."""
        src, dst = self.caller(caller), self.callee(callee)
        assert src.driver is not None
        closed_before = sum(1 for e in dst.events("closed") if e.get("from") == src.contact_id)
        src.driver.request("DELETE", f"/api/links/{dst.name}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(1 for e in dst.events("closed")
                   if e.get("from") == src.contact_id) > closed_before:
                return
            time.sleep(0.02)

    def callee_path(self, caller: str, callee: str, *, calls: int = 1,
                    timeout: float = 10.0) -> dict[str, Any] | None:
        """The path the callee's ``connected`` event gave for the caller's ``calls``-th
        call (its stdout is read by a thread: waited for, at most ``timeout`` s)."""
        src, dst = self.caller(caller), self.callee(callee)
        deadline = time.monotonic() + timeout
        while True:
            events = [e for e in dst.events("connected") if e.get("from") == src.contact_id]
            if len(events) >= calls or time.monotonic() > deadline:
                return events[calls - 1].get("path") if len(events) >= calls else None
            time.sleep(0.02)

    # -- stopping ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process this world started (SIGTERM, then SIGKILL after 10 s)."""
        for d in self.daemons.values():
            if d.driver is not None:
                d.driver.close()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
