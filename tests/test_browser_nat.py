"""The web app's calls across NATs: real Chromium pages behind home routers of the NAT
lab call each other with video, with no STUN or TURN server configured anywhere.

Each test builds its own lab (:mod:`natlab`): three public hailing DHT nodes, the last
one a volunteer relay (``hailing up --serve-relay``, coturn), as the NAT matrix has them
(:class:`natmatrix_world.NatWorld`), and two people, each a ``hailing up --bootstrap``
daemon and a Chromium (fake camera and microphone) in the SAME namespace behind a home
router, driven by ``tests/browser/lab_person.py`` (run in that namespace: the process,
Playwright's driver and Chromium see only its interfaces) through its stdin and stdout.

- port-restricted alice calls full-cone bob: frames decoded keep increasing on both
  pages, and both pages' stats path (callstats.js, the selected candidate pair) is
  direct: a server-reflexive or peer-reflexive candidate, no relay;
- symmetric alice calls symmetric carol: no direct path exists, the call goes through
  the volunteer's relay (a relay candidate on at least one side), frames both ways;
- in both, the iceServers each page gave its RTCPeerConnection are exactly what the
  daemon's ``GET /api/ice`` answered it: ``stun:`` URLs of the lab's DHT nodes and the
  relay's ``turn:`` URL with credentials, nothing else; the page's reflexive and relay
  candidates came from those servers, and every address seen is a lab address.

Skipped with the reason without the lab (root, namespaces, iptables), Chromium or
Playwright; under CI=true those are failures. Every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from natlab import Host, Lab
from natmatrix_world import DHT_PORT, NatWorld
from proc_lines import Lines

REPO = Path(__file__).resolve().parent.parent
BROWSER = REPO / "tests" / "browser"
if str(BROWSER) not in sys.path:
    sys.path.insert(0, str(BROWSER))

from browser_harness import chromium_path, make_friends  # noqa: E402

DRIVER = BROWSER / "lab_person.py"
#: How long a person (daemon, Chromium, the signed-in page) may take to be ready.
START_S = 180.0
#: The default bound of one command to a person.
COMMAND_S = 150.0
#: The lab's addresses: the public segment and the home LANs (RFC 2544's range).
LAB_NET = ipaddress.ip_network("198.18.0.0/15")


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("HAILING_REQUIRE_BROWSER"))


@pytest.fixture
def chromium_ok() -> None:
    """Skip without Chromium or Playwright (fail under CI=true), before any lab is built."""
    path, why = chromium_path()
    if path is None or importlib.util.find_spec("playwright") is None:
        why = why or "Playwright is not installed (pip install -e '.[test]')"
        if _required():
            pytest.fail(f"the browser tests are required here (CI=true) but {why}",
                        pytrace=False)
        pytest.skip(why)


class Person:
    """A daemon and a Chromium page in one lab host (``lab_person.py`` there)."""

    def __init__(self, host: Host, name: str, data_dir: Path, bootstrap: str,
                 log_dir: Path) -> None:
        self.host = host
        self.name = name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"),
                                             str(BROWSER)])
        env["PYTHONUNBUFFERED"] = "1"
        env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
        self.stderr_path = log_dir / f"{name}.stderr.txt"
        self.proc = host.popen([sys.executable, "-u", str(DRIVER), name, str(data_dir),
                                bootstrap], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=open(self.stderr_path, "wb"),  # noqa: SIM115
                               env=env)
        assert self.proc.stdout is not None
        self.out = Lines(self.proc.stdout)
        self._read = 0
        self._pending: list[tuple[str, float]] = []
        self.contact_id: str = self._result("start", START_S)

    def send(self, op: str, timeout: float = COMMAND_S, **args: Any) -> None:
        """Start a command (its result: :meth:`result`)."""
        stdin: IO[bytes] | None = self.proc.stdin
        assert stdin is not None
        if "timeout" in _TIMED.get(op, ()):
            args.setdefault("timeout", timeout - 10)
        stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        stdin.flush()
        self._pending.append((op, timeout))

    def result(self) -> Any:
        op, timeout = self._pending.pop(0)
        return self._result(op, timeout)

    def do(self, op: str, timeout: float = COMMAND_S, **args: Any) -> Any:
        self.send(op, timeout, **args)
        return self.result()

    def _result(self, op: str, timeout: float) -> Any:
        try:
            i = self.out.wait_for(lambda line: line.startswith("@@ "), self._read, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{self.name}: no answer to {op!r} in {timeout:.0f} s "
                                 f"(exit {self.proc.poll()}): {exc}\n{self.stderr()}") from None
        self._read = i + 1
        answer = json.loads(self.out.lines[i][3:])
        if not answer["ok"]:
            raise AssertionError(f"{self.name}: {op} failed:\n{answer['error']}\n"
                                 f"{self.stderr()}")
        return answer["result"]

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")[-3000:]
        return ""

    def close(self) -> None:
        """Quit (the page, Chromium and the daemon stop); killed if it lingers."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"op": "quit"}\n')
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


#: Commands that take a ``timeout`` argument (given the command's bound minus a margin).
_TIMED = {"wait_ice": ("timeout",), "accept": ("timeout",), "frames": ("timeout",),
          "path": ("timeout",), "hang_up": ("timeout",), "call_over": ("timeout",),
          "stats_panel": ("timeout",)}


@contextlib.contextmanager
def two_people(lab: Lab, tmp: Path, caller: tuple[str, str],
               callee: tuple[str, str]) -> Iterator[tuple[NatWorld, Person, Person]]:
    """The public nodes and relay, then ``caller`` and ``callee`` ((name, NAT kind)),
    friends of each other, each ready with its page signed in."""
    world = NatWorld(lab, tmp / "world", callers=(), callees=())
    people: list[Person] = []
    try:
        world.start_nodes()
        make_friends(tmp, caller[0], callee[0])
        for name, kind in (caller, callee):
            host = lab.host_behind(name, kind)  # type: ignore[arg-type]
            people.append(Person(host, name, tmp / name, world.bootstrap, tmp))
        yield world, people[0], people[1]
    finally:
        for person in people:
            person.close()
        world.close()


def _host_of(url: str) -> tuple[str, int]:
    """``stun:IP:PORT`` / ``turn:IP:PORT?transport=udp`` -> (IP, PORT)."""
    rest = url.split(":", 1)[1].split("?", 1)[0]
    ip, port = rest.rsplit(":", 1)
    return ip.strip("[]"), int(port)


def check_ice(world: NatWorld, person: Person) -> dict[str, Any]:
    """The iceServers the page used are the daemon's ``/api/ice`` list and nothing else:
    STUN on the lab's DHT nodes, the volunteer's TURN with credentials; the page's
    reflexive and relay candidates came from them; every address is a lab address."""
    used = person.do("ice_used")
    daemon = person.do("api", method="GET", path="/api/ice")
    assert daemon["status"] == 200, daemon
    answers = [a["iceServers"] for a in used["answers"]]
    assert answers, f"{person.name}'s page never asked GET /api/ice: {used}"
    assert used["pcs"], f"{person.name}'s page made no RTCPeerConnection"
    nodes = {(h.address, DHT_PORT) for h in world.nodes}
    relay = world.nodes[-1].address
    for pc in used["pcs"]:
        servers = pc["iceServers"]
        # exactly what the daemon answered the page (the JSON, entry by entry)
        assert any(_same_servers(servers, a) for a in answers), (servers, answers)
        stun = [u for s in servers for u in s["urls"] if u.startswith("stun:")]
        turn = [s for s in servers if any(u.startswith("turn:") for u in s["urls"])]
        assert stun and all(_host_of(u) in nodes for u in stun), (stun, nodes)
        assert len(turn) == 1 and turn[0]["username"] and turn[0]["credential"], turn
        assert all(_host_of(u)[0] == relay for u in turn[0]["urls"]), (turn, relay)
        assert all(u.split(":", 1)[0] in ("stun", "turn") for s in servers
                   for u in s["urls"]), servers
        urls = {u for s in servers for u in s["urls"]}
        for c in pc["candidates"]:
            address = c["address"]
            if address and not address.endswith(".local"):
                assert ipaddress.ip_address(address) in LAB_NET, c
            if c["side"] == "local" and c["type"] in ("srflx", "relay"):
                # from one of the daemon's servers (a TURN server's Allocate answer
                # gives a server-reflexive candidate too: Chromium names it stun:)
                assert _host_of(c["url"]) in {_host_of(u) for u in urls}, (c, urls)
    # the daemon's own list (now) names only lab nodes too
    now = daemon["body"]["iceServers"]
    print(f"{person.name}: the page's iceServers "
          f"{[s['urls'] for s in used['pcs'][-1]['iceServers']]}, the daemon's now "
          f"{[s['urls'] for s in now]}; local candidates {sorted(local_types(used))}")
    assert all(_host_of(u) in nodes or _host_of(u)[0] == relay
               for s in now for u in s["urls"]), now
    return used


def _same_servers(page: list[dict[str, Any]], answer: list[dict[str, Any]]) -> bool:
    def norm(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(tuple(e["urls"] if isinstance(e["urls"], list) else [e["urls"]]),
                 e.get("username") or "", e.get("credential") or "") for e in entries]
    return norm(page) == norm(answer)


def local_types(used: dict[str, Any]) -> set[str]:
    return {c["type"] for pc in used["pcs"] for c in pc["candidates"] if c["side"] == "local"}


def call_with_video(caller: Person, callee: Person) -> None:
    """``caller`` clicks the callee's video call button, the callee accepts; frames
    decoded keep increasing on both pages."""
    for p in (caller, callee):  # the daemons found STUN servers and the relay
        p.send("wait_ice")
    for p in (caller, callee):
        p.result()
    caller.do("call", name=callee.name, media="video")
    callee.do("accept")
    for p in (caller, callee):
        p.send("frames")
    frames = [p.result() for p in (caller, callee)]
    for n in frames:
        assert 0 < n[0] < n[1], frames


def hang_up(caller: Person, callee: Person) -> None:
    caller.do("hang_up")
    callee.do("call_over")


def test_port_restricted_calls_full_cone_directly(chromium_ok: None, natlab: Lab,
                                                  tmp_path: Path) -> None:
    with two_people(natlab, tmp_path, ("alice", "port-restricted"),
                    ("bob", "full-cone")) as (world, alice, bob):
        call_with_video(alice, bob)
        seen = {p.name: p.do("path", want="direct") for p in (alice, bob)}
        print(f"\nport-restricted alice -> full-cone bob: {json.dumps(seen)}")
        paths = {name: s["path"] for name, s in seen.items()}
        for name, path in paths.items():
            assert "relay" not in (path["local"], path["remote"]), (name, paths)
            # the other side is behind a NAT: reached at its mapping, as a DHT node's
            # STUN saw it (srflx) or as its checks came (prflx)
            assert path["remote"] in ("srflx", "prflx"), (name, paths)
        for p in (alice, bob):
            used = check_ice(world, p)
            assert "srflx" in local_types(used), (p.name, used)  # STUN from the DHT
        hang_up(alice, bob)


def test_symmetric_calls_symmetric_through_the_volunteer_relay(
        chromium_ok: None, natlab: Lab, tmp_path: Path) -> None:
    with two_people(natlab, tmp_path, ("alice", "symmetric"),
                    ("carol", "symmetric")) as (world, alice, carol):
        call_with_video(alice, carol)
        seen = {p.name: p.do("path", want="relayed") for p in (alice, carol)}
        print(f"\nsymmetric alice -> symmetric carol: {json.dumps(seen)}")
        paths = {name: s["path"] for name, s in seen.items()}
        assert any("relay" in (p["local"], p["remote"]) for p in paths.values()), paths
        relay = world.nodes[-1].address
        for name, path in paths.items():  # what a relayed side sends goes to the relay
            if path["local"] == "relay":
                assert path["localAddress"].startswith(relay + ":"), (name, paths)
        for p in (alice, carol):
            used = check_ice(world, p)
            assert "relay" in local_types(used), (p.name, used)
        panel = alice.do("stats_panel")
        assert "relay" in panel["path"], panel
        shot = tmp_path / "relayed-call-stats.png"
        alice.do("screenshot", path=str(shot))
        print(f"stats panel: {panel['path']!r}; screenshot {shot}")
        # frames still flow after the stats were read
        for p in (alice, carol):
            p.send("frames")
        for p in (alice, carol):
            p.result()
        hang_up(alice, carol)
