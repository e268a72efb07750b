"""The NAT lab: an internet of network namespaces, home routers and hosts.

Topology (every box is a network namespace the lab creates; the root namespace gets
nothing, not even one end of a veth)::

                          internet (hl-<pid>-<n>-internet)
                bridge br0 198.18.0.1/24 -- the public segment 198.18.0.0/24
        p0 |               p1 |                     p2 |
      eth0 | 198.18.0.2   wan | 198.18.0.3         wan | 198.18.0.4
     [ public host ]   [ router (kind) ]       [ router (kind) ]        ...
                           lan | 198.19.1.1        lan | 198.19.2.1
                          eth0 | 198.19.1.2       eth0 | 198.19.2.2
                          [ host behind ]         [ host behind ]

A public host and a router's ``wan`` take the next free 198.18.0.x; router N's LAN is
198.19.N.0/24 with the router at .1 and its one host at .2. Default routes point at the
lab's own gateways (host -> its router -> 198.18.0.1, the bridge, which routes nowhere):
no namespace has an interface or a route that leaves the lab, and every address is in
198.18.0.0/15 (plus 127.0.0.1 and ::1 on ``lo``; IPv6 link-local addresses are not
generated: ``addrgenmode none``). IP forwarding is switched on in routers only. The NAT
rules of each kind are in :mod:`natlab.rules`.

Theory of operation: ``Lab()`` reserves a name prefix ``hl-<pid>-<n>``; ``start()`` (or
``with``) checks :func:`natlab.probe.natlab_available`, removes the leftovers of dead
owners and builds the internet namespace; ``public_host()`` and ``host_behind()`` each add
their namespaces at once (a few ``ip -batch`` processes each). ``close()`` (leaving the
``with`` block for any reason, atexit, SIGTERM/SIGHUP) kills every process started through
a host and anything else still inside the namespaces, then deletes them, veths with them.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from . import teardown
from .capture import Capture
from .netns import NETNS_DIR, delete_namespaces, ip_batch, purge_dead_owners, run_checked
from .probe import iptables_restore, natlab_available
from .rules import NAT_KINDS, NatKind, router_rules

__all__ = ["GATEWAY", "PUBLIC_NET", "Host", "Lab", "LabUnavailable"]

#: The public segment (RFC 2544 benchmarking range) and the bridge's address on it.
PUBLIC_NET = "198.18.0.0/24"
GATEWAY = "198.18.0.1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")
_numbers = itertools.count()


class LabUnavailable(RuntimeError):
    """The machine cannot run the lab (not root, no namespaces, no iptables...)."""


class Host:
    """A namespace of the lab with one address: a public host, a host behind a router,
    a router itself (``host.router``) or the internet namespace (``lab.internet``)."""

    def __init__(self, lab: Lab, name: str, ns: str, address: str, public_address: str,
                 kind: NatKind, router: Host | None = None) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        self.address = address
        self.public_address = public_address
        self.kind: NatKind = kind
        self.router = router
        #: Every address of the host (several for ``public_host(name, addresses=n)``).
        self.addresses: tuple[str, ...] = (address,)

    def __repr__(self) -> str:
        return (f"Host({self.name!r}, {self.kind}, address={self.address}, "
                f"public_address={self.public_address}, ns={self.ns})")

    @property
    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command in this namespace."""
        return ["ip", "netns", "exec", self.ns]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen(argv, **kw)`` inside the namespace; killed at teardown."""
        if self.lab.closed:
            raise RuntimeError(f"the lab of {self.name} is closed")
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.exec_prefix, *argv], **kw)
        self.lab._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` inside the namespace; output captured as text unless ``kw``
        says otherwise."""
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run([*self.exec_prefix, *argv], timeout=timeout, check=check, **kw)

    def capture(self, filter: str = "", *, interface: str = "any",
                settle: float = 0.2) -> Capture:
        """tcpdump in the namespace: ``with host.capture("udp") as cap: ...`` then
        ``cap.packets()`` (see :mod:`natlab.capture`)."""
        return Capture(self.exec_prefix, filter, interface=interface, settle=settle)


class Lab:
    """A NAT lab (see the module docstring). Use as ``with Lab() as lab:``."""

    def __init__(self) -> None:
        pid = os.getpid()
        for n in _numbers:  # another copy of this module may have used a number already
            prefix = f"hl-{pid}-{n}"
            if not any(x.startswith(prefix + "-") for x in _listdir(NETNS_DIR)):
                break
        self.prefix = prefix
        self.owner = pid  # a forked child inherits the object, never the teardown
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self.internet: Host | None = None
        self.build_seconds = 0.0
        self._procs: list[subprocess.Popen[Any]] = []
        self._ports = itertools.count()
        self._next_public = 2
        self._next_lan = 1
        self._closed = False
        self._restore = ""

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, hosts={sorted(self.hosts)})"

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> Lab:
        """Build the internet namespace (the public segment's bridge)."""
        if self.internet is not None:
            return self
        ok, why = natlab_available()
        if not ok:
            raise LabUnavailable(why)
        self._restore = iptables_restore()
        purge_dead_owners()
        teardown.register(self)
        began = time.perf_counter()
        ns = self._add_namespaces("internet")[0]
        ip_batch(["link set lo up",
                  "link add br0 type bridge",
                  "link set br0 addrgenmode none",
                  f"addr add {GATEWAY}/24 dev br0",
                  "link set br0 up"], ns=ns)
        run_checked(["ip", "netns", "exec", ns, "sh", "-c",
                     "echo 0 > /proc/sys/net/ipv4/ip_forward"])
        self.internet = Host(self, "internet", ns, GATEWAY, GATEWAY, "public")
        self.build_seconds += time.perf_counter() - began
        return self

    def close(self) -> None:
        """Kill the lab's processes and delete its namespaces. Idempotent."""
        if self._closed:
            return
        self._closed = True
        teardown.unregister(self)
        if os.getpid() != self.owner:
            return
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 2.0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        delete_namespaces(list(reversed(self.namespaces)))

    # -- building ---------------------------------------------------------------------------

    def public_host(self, name: str, *, addresses: int = 1) -> Host:
        """A host with a public address on the segment (kind ``"public"``); with
        ``addresses=n``, n of them (``host.addresses``; ``host.address`` is the first),
        for several nodes in one namespace, each on its own IP."""
        self._check_name(name)
        if not 1 <= addresses <= 255 - self._next_public:
            raise ValueError(f"cannot give {addresses} addresses: the segment has "
                             f"{max(0, 255 - self._next_public)} left")
        began = time.perf_counter()
        ns = self._add_namespaces(name)[0]
        own = [self._public_address() for _ in range(addresses)]
        address = own[0]
        self._plug(ns, "eth0", address)
        ip_batch(["link set lo up",
                  "link set eth0 addrgenmode none",
                  *(f"addr add {a}/24 dev eth0" for a in own),
                  "link set eth0 up",
                  f"route add default via {GATEWAY} src {address}"], ns=ns)
        host = Host(self, name, ns, address, address, "public")
        host.addresses = tuple(own)
        self.hosts[name] = host
        self.build_seconds += time.perf_counter() - began
        return host

    def host_behind(self, name: str, kind: NatKind) -> Host:
        """A home router of ``kind`` and one host behind it (``"public"``: a public host)."""
        if kind == "public":
            return self.public_host(name)
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r} (one of {', '.join(NAT_KINDS)})")
        self._check_name(name)
        began = time.perf_counter()
        hns, rns = self._add_namespaces(name, f"{name}-nat")
        wan = self._public_address()
        n = self._next_lan
        if n > 254:
            raise RuntimeError("the lab has no LAN prefix left (254 routers)")
        self._next_lan += 1
        lan, gw, address = f"198.19.{n}.0/24", f"198.19.{n}.1", f"198.19.{n}.2"
        self._plug(rns, "wan", wan)
        ip_batch(["link set lo up",
                  "link set wan addrgenmode none",
                  f"addr add {wan}/24 dev wan",
                  "link set wan up",
                  f"link add lan type veth peer name eth0 netns {hns}",
                  "link set lan addrgenmode none",
                  f"addr add {gw}/24 dev lan",
                  "link set lan up",
                  f"route add default via {GATEWAY}"], ns=rns)
        ip_batch(["link set lo up",
                  "link set eth0 addrgenmode none",
                  f"addr add {address}/24 dev eth0",
                  "link set eth0 up",
                  f"route add default via {gw}"], ns=hns)
        rules = router_rules(kind, wan=wan, lan=lan, host=address)
        run_checked(["ip", "netns", "exec", rns, "sh", "-c",
                     f"echo 1 > /proc/sys/net/ipv4/ip_forward && exec {self._restore}"],
                    input=rules)
        router = Host(self, f"{name}-nat", rns, wan, wan, kind)
        host = Host(self, name, hns, address, wan, kind, router)
        self.hosts[name] = host
        self.build_seconds += time.perf_counter() - began
        return host

    def _add_namespaces(self, *roles: str) -> list[str]:
        if self._closed:
            raise RuntimeError("this lab is closed")
        if self.internet is None and roles != ("internet",):
            raise RuntimeError("start the lab first (with Lab() as lab: ...)")
        names = [f"{self.prefix}-{role}" for role in roles]
        self.namespaces.extend(names)  # before creating them: a failure half-way is cleaned
        ip_batch(f"netns add {n}" for n in names)
        return names

    def _check_name(self, name: str) -> None:
        if (not _NAME.match(name) or name in self.hosts or name.endswith("-nat")
                or name == "internet"):
            raise ValueError(f"bad or duplicate host name {name!r} (lower-case letters, "
                             "digits, - and _, at most 24; not 'internet', not '*-nat')")

    def _public_address(self) -> str:
        x = self._next_public
        if x > 254:
            raise RuntimeError("the public segment is full (253 addresses)")
        self._next_public += 1
        return f"198.18.0.{x}"

    def _plug(self, ns: str, ifname: str, address: str) -> None:
        """A veth from a new bridge port of the internet namespace to ``ifname`` in ``ns``."""
        assert self.internet is not None
        port = f"p{next(self._ports)}"
        ip_batch([f"link add {port} type veth peer name {ifname} netns {ns}",
                  f"link set {port} addrgenmode none",
                  f"link set {port} master br0",
                  f"link set {port} up"], ns=self.internet.ns)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
