"""Connect time through hailing's DHT inboxes, through OpenDHT (Jami's DHT) and through a
WebSocket relay, in one run; and the raw put-to-notification latency of both DHTs.

Three ways to carry the same call. Alice calls bob ``--calls`` times on each path,
round-robin (the order rotates every round, so all three see the same machine load);
each call is ``Peer.connect()`` until an authenticated open data channel, one message,
hang-up. Only the signaling path differs: the sealed offer and answer (same envelopes,
same rendezvous keys for both DHTs, same aiortc) travel

* ``hailing``: through hailing's DHT inboxes (post + listen/push) on a ``--nodes`` hailing
  testnet;
* ``opendht``: as OpenDHT values (``put`` to the callee's key, ``listen`` on it, as Jami
  does; ``benchmarks/opendht_coupler.py``) on a ``--nodes`` OpenDHT testnet;
* ``ws``: through the WebSocket relay (the centralized baseline).

The testnets and the relay run in child processes (the storing nodes are other machines
in real life): ``--layout process`` puts each testnet in one process (hailing's 20 nodes
on one asyncio loop, OpenDHT's 20 runners as threads), ``--layout per-node`` gives every
node its own process. The peers (their DHT nodes and aiortc) run in this process; each
pair are each other's contacts. Per call the run also records the CPU used by this
process's event loop thread, by its other threads (OpenDHT's runners) and by the path's
testnet or relay.

Then the raw latency: a listener node and a putting node per DHT, both bootstrapped into
the testnet; time from the put to the listener's notification as the asyncio application
sees it (OpenDHT's own callback thread time is reported too), for a fresh key per sample
(the put and the listen each find the key's nodes first) and for one key put to again
and again (what a contact's pair key sees); once with every node alive and once more
after the call peers left (``--no-after-leave`` skips it). Everything binds 127.0.0.1;
the run checks with ``ss -unap`` that no UDP socket of it or its children is bound
elsewhere.

    python benchmarks/connect_dht_peers.py [--calls 30] [--warmup 3] [--nodes 20]
        [--layout process|per-node] [--samples 60] [--data-root DIR] [--two-hops]
        [--ack-wait S] [--parallel-answer] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from connect_calls import pct, serve
from opendht_coupler import OpenDhtNode, opendht_peer

import hailing
from hailing.dht import DhtConfig
from hailing.node import DhtNode, parse_hostport
from hailing.peer import Peer
from hailing.rtc import set_host_addresses

PATHS = ("hailing", "opendht", "ws")
HERE = Path(__file__).resolve().parent


# -- child processes --------------------------------------------------------------------


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Child:
    """A child process whose first stdout line matches ``prefix`` (the address it serves)."""

    def __init__(self, argv: list[str], prefix: str) -> None:
        self.argv, self.prefix = argv, prefix
        self.proc: subprocess.Popen[str] | None = None
        self.line = ""

    def start(self, timeout: float = 60.0) -> str:
        self.launch()
        return self.wait_line(timeout)

    def launch(self) -> None:
        env = dict(os.environ)
        src = str(Path(hailing.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([src, str(HERE), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            preexec_fn=_die_with_parent)

    def wait_line(self, timeout: float = 60.0, prefix: str | None = None) -> str:
        """The rest of the next stdout line starting with ``prefix`` (default: the one
        given at construction); other lines are skipped."""
        assert self.proc is not None and self.proc.stdout is not None
        prefix = self.prefix if prefix is None else prefix
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.argv} exited with {self.proc.wait()}")
            if line.startswith(prefix):
                self.line = line[len(prefix):].strip()
                return self.line
        raise RuntimeError(f"{self.argv} printed no {prefix!r} line in {timeout} s")

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, prefix: str, timeout: float = 30.0) -> str | None:
        """Close stdin (the child's signal to stop), return its ``prefix`` line if any."""
        if self.proc is None or self.proc.stdin is None:
            return None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            return self.wait_line(timeout, prefix)
        except RuntimeError:
            return None
        finally:
            self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_infra(kind: str, n: int, layout: str) -> tuple[str, list[Child]]:
    """The path's infrastructure: its testnet of ``n`` nodes (``layout`` "process": all in
    one process; "per-node": one process per node) or, for ``ws``, the relay. Returns
    the bootstrap address (the relay's URL) and the children, started."""
    py = sys.executable
    opendht = [py, str(HERE / "opendht_coupler.py"), "testnet"]
    started: list[Child] = []
    try:
        if kind == "ws":
            started.append(Child([py, "-m", "hailing", "relay", "--bind", "127.0.0.1:0"],
                                 "relay listening on "))
            return started[0].start(), started
        if layout == "process":
            argv = ([py, "-m", "hailing", "testnet", "--nodes", str(n)] if kind == "hailing"
                    else [*opendht, "--nodes", str(n)])
            started.append(Child(argv, "bootstrap "))
            return started[0].start(), started

        def node(boot: str | None) -> Child:
            join = ["--bootstrap", boot] if boot else []
            if kind == "hailing":
                return Child([py, "-m", "hailing", "dht", "serve", "--bind", "127.0.0.1:0",
                              *join], "node ")
            return Child([*opendht, "--nodes", "1", *join], "bootstrap ")

        started.append(node(None))
        boot = started[0].start().split()[-1]  # "<id> listening on HOST:PORT" / "HOST:PORT"
        rest = [node(boot) for _ in range(n - 1)]
        started.extend(rest)
        for c in rest:
            c.launch()
        for c in rest:
            c.wait_line()
        time.sleep(1.0)  # the last joins' refreshes
        return boot, started
    except BaseException:
        for c in started:
            c.stop()
        raise


def non_loopback_udp(pids: list[int]) -> list[str] | None:
    """UDP sockets of ``pids`` bound to anything but 127.0.0.1 (None: no ``ss``)."""
    try:
        out = subprocess.run(["ss", "-unap"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    bad = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6 or not any(f"pid={p}," in line for p in pids):
            continue
        local, peer = parts[3], parts[4]
        if not local.startswith("127.0.0.1:") or not (peer.startswith("127.0.0.1:")
                                                      or peer in ("*:*", "0.0.0.0:*")):
            bad.append(line.strip())
    return bad


# -- calls ------------------------------------------------------------------------------


async def one_call(alice: Peer, bob_id: str, timeout: float) -> float:
    conn = await alice.connect(bob_id, timeout=timeout)
    try:
        await conn.send_text("ping")
    finally:
        await conn.close()
    assert conn.connect_ms is not None
    return conn.connect_ms


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": pct(values, 50), "p95": pct(values, 95),
            "mean": statistics.fmean(values) if values else None,
            "min": min(values, default=None), "max": max(values, default=None),
            "n": len(values)}


def _ticks_ms(stat_path: str) -> float:
    """utime + stime of a process or thread, in ms (clock-tick resolution)."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


CPU_KEYS = ("caller_loop_thread", "caller_other_threads", "callee_process",
            "infrastructure_process")


def cpu_sample(callee_pid: int | None, infra_pids: list[int]) -> list[float]:
    """CPU used so far (ms, in :data:`CPU_KEYS` order): by this thread (the caller's event
    loop: its Peer, its hailing DHT node, aiortc), by this process's other threads
    (OpenDHT's runners), by the callee process and by the path's testnet or relay."""
    me = os.getpid()
    others = 0.0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{me}/task"):
            if int(tid) != threading.get_native_id():
                others += _ticks_ms(f"/proc/{me}/task/{tid}/stat")
    callee = _ticks_ms(f"/proc/{callee_pid}/stat") if callee_pid else 0.0
    infra = sum(_ticks_ms(f"/proc/{pid}/stat") for pid in infra_pids)
    return [time.thread_time() * 1000, others, callee, infra]


async def calls(callers: dict[str, Peer], callees: dict[str, str], n: int, warmup: int,
                timeout: float, callee_pid: int | None, infra: dict[str, list[int]],
                meters: dict[str, NodeMeter]) -> dict[str, dict[str, Any]]:
    """``n`` timed calls per path after ``warmup`` untimed ones, round-robin."""
    out: dict[str, dict[str, Any]] = {
        p: {"times": [], "fails": [], "cpu": [0.0] * len(CPU_KEYS), "node": [0.0, 0.0, 0.0]}
        for p in callers}
    names = list(callers)
    for i in range(-warmup, n):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            before = cpu_sample(callee_pid, infra.get(name, []))
            meter = meters.get(name)
            node_before = meter.snapshot() if meter else (0, 0, 0.0)
            try:
                ms = await one_call(callers[name], callees[name], timeout)
            except Exception as exc:
                if i >= 0:
                    out[name]["fails"].append(f"{type(exc).__name__}: {exc}")
                continue
            if i >= 0:
                out[name]["times"].append(ms)
                after = cpu_sample(callee_pid, infra.get(name, []))
                for k in range(len(CPU_KEYS)):
                    out[name]["cpu"][k] += after[k] - before[k]
                node_after = meter.snapshot() if meter else (0, 0, 0.0)
                for k in range(3):
                    out[name]["node"][k] += node_after[k] - node_before[k]
        if i >= 0 and (i + 1) % 10 == 0:
            print(f"  {i + 1}/{n} calls: " + ", ".join(
                f"{p} p50 {pct(out[p]['times'], 50) or 0:.1f} ms ({len(out[p]['fails'])} failed)"
                for p in names), file=sys.stderr, flush=True)
    return out


# -- the peers ------------------------------------------------------------------------------


def make_peers(root: Path, tag: str, where: dict[str, str],
               hailing_k: tuple[int, ...] = (), two_hops: bool = False,
               ack_wait: float | None = None, parallel: bool = False) -> dict[str, Peer]:
    """One Peer per path, data directories ``root/<path>-<tag>``; for each k in
    ``hailing_k`` one more hailing path, ``hailing_k<k>``, whose node uses that k (how many
    storing nodes it posts to and listens on); with ``two_hops`` one more, ``hailing_2hop``,
    whose caller gives no reply hint (see :func:`no_reply_hint`); with ``ack_wait`` one
    more, ``hailing_ack``, whose callee posts its answer to the storing nodes only when
    the caller's node did not take the direct push within ``ack_wait`` s; with
    ``parallel`` one more, ``hailing_par``, whose callee always posts at once as well
    (:func:`tune`)."""
    h_boot, o_boot = parse_hostport(where["hailing"]), parse_hostport(where["opendht"])
    peers = {
        "hailing": Peer(root / f"hailing-{tag}", bootstrap=[h_boot]),
        "opendht": opendht_peer(root / f"opendht-{tag}", o_boot),
        "ws": Peer(root / f"ws-{tag}", backend="ws", relay_url=where["ws"]),
    }
    for k in hailing_k:
        peers[f"hailing_k{k}"] = Peer(root / f"hailing-k{k}-{tag}", bootstrap=[h_boot],
                                      dht_config=DhtConfig(k=k))
    if two_hops:
        peers["hailing_2hop"] = Peer(root / f"hailing-2hop-{tag}", bootstrap=[h_boot])
    if ack_wait is not None:
        peers["hailing_ack"] = Peer(root / f"hailing-ack-{tag}", bootstrap=[h_boot])
    if parallel:
        peers["hailing_par"] = Peer(root / f"hailing-par-{tag}", bootstrap=[h_boot])
    return peers


def tune(peers: dict[str, Peer], ack_wait: float | None) -> None:
    """After start: the ``hailing_2hop`` caller's offers carry no reply hint (the answer
    comes only through the storing nodes, two hops, as before the direct answer); the
    ``hailing_ack`` callee waits ``ack_wait`` s for the direct push's acknowledgement
    before posting its answer to the storing nodes."""
    if "hailing_2hop" in peers:
        coupler: Any = peers["hailing_2hop"].coupler("dht")
        coupler.reply_hint = lambda _peer: None
    if "hailing_ack" in peers:
        coupler = peers["hailing_ack"].coupler("dht")
        coupler.direct_ack_wait = ack_wait
    if "hailing_par" in peers:
        coupler = peers["hailing_par"].coupler("dht")
        coupler.direct_ack_wait = None


class NodeMeter:
    """Datagrams through a hailing Peer's DHT node and the CPU its handlers take on the
    event loop (receiving, decoding, the core, replying, ``sendto``). It wraps the node's
    UDP endpoint, a private part: a measuring device of this benchmark, not an API."""

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.cpu = 0.0  # seconds of this thread

    def attach(self, peer: Peer) -> None:
        node = peer.node
        endpoint = getattr(node, "_transport", None)
        if endpoint is None:
            return
        on_datagram, on_batch_end, sendto = (
            endpoint._on_datagram, endpoint._on_batch_end, endpoint.sendto)
        clock = time.thread_time

        def counted_datagram(data: bytes, addr: Any) -> None:
            self.received += 1
            t = clock()
            on_datagram(data, addr)
            self.cpu += clock() - t

        def counted_batch_end() -> None:
            t = clock()
            on_batch_end()
            self.cpu += clock() - t

        def counted_sendto(data: bytes, addr: Any) -> None:
            self.sent += 1
            sendto(data, addr)

        endpoint._on_datagram = counted_datagram
        endpoint._on_batch_end = counted_batch_end
        endpoint.sendto = counted_sendto

    def snapshot(self) -> tuple[int, int, float]:
        return self.received, self.sent, self.cpu


async def befriend(peers: dict[str, Peer], others: dict[str, str], name: str) -> None:
    """Each peer adds its counterpart (same path) to its contacts and listens at once."""
    for path, peer in peers.items():
        assert peer.contacts is not None
        peer.contacts.add(others[path], name)
        await peer.refresh()


async def callee_main() -> int:
    """``--callee``: the three callees in a process of their own, driven by the benchmark
    over stdin (one JSON line: data root and addresses; one more: the callers' contact
    ids) and stdout ("callees {...}", "ready", at the end "stats {...}")."""
    set_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    conf = json.loads(await reader.readline())
    peers = make_peers(Path(conf["root"]), "callee", conf["where"], tuple(conf["hailing_k"]),
                       conf.get("two_hops", False), conf.get("ack_wait"),
                       conf.get("parallel", False))
    servers: list[asyncio.Future[None]] = []
    try:
        for p in peers.values():
            await p.start()
        tune(peers, conf.get("ack_wait"))
        print("callees " + json.dumps({k: p.contact_id for k, p in peers.items()}), flush=True)
        await befriend(peers, json.loads(await reader.readline()), "caller")
        servers = [asyncio.ensure_future(serve(p)) for p in peers.values()]
        print("ready", flush=True)
        await reader.read()  # until the benchmark closes our stdin
        print("stats " + json.dumps({k: dict(p.stats) for k, p in peers.items()}), flush=True)
    finally:
        for t in servers:
            t.cancel()
        await asyncio.gather(*servers, return_exceptions=True)
        for p in peers.values():
            await p.stop()
    return 0


# -- raw put-to-notification latency ------------------------------------------------------


class HailingPair:
    """A listening and a posting hailing node."""

    name = "hailing"

    def __init__(self, boot: tuple[str, int]) -> None:
        self.listener = DhtNode(("127.0.0.1", 0), bootstrap=[boot])
        self.poster = DhtNode(("127.0.0.1", 0), bootstrap=[boot])

    async def start(self) -> None:
        for n in (self.listener, self.poster):
            await n.start()
            await n.bootstrap()

    async def stop(self) -> None:
        await self.listener.stop()
        await self.poster.stop()

    async def listen(self, key: bytes) -> None:
        await self.listener.listen(key)

    def unlisten(self, key: bytes) -> None:
        self.listener.unlisten(key)

    async def post(self, key: bytes, value: bytes) -> int:
        return await self.poster.post(key, value)

    async def heard(self) -> tuple[bytes, bytes, float | None]:
        msg = await self.listener.inbox()
        return msg.key, msg.value, None


class OpenDhtPair:
    """A listening and a putting OpenDHT runner."""

    name = "opendht"

    def __init__(self, boot: tuple[str, int]) -> None:
        self.listener = OpenDhtNode(boot)
        self.poster = OpenDhtNode(boot)

    async def start(self) -> None:
        await self.listener.start()
        await self.poster.start()

    async def stop(self) -> None:
        await self.listener.stop()
        await self.poster.stop()

    async def listen(self, key: bytes) -> None:
        await self.listener.listen(key)

    def unlisten(self, key: bytes) -> None:
        self.listener.unlisten(key)

    async def post(self, key: bytes, value: bytes) -> int:
        return await self.poster.post(key, value)

    async def heard(self) -> tuple[bytes, bytes, float | None]:
        return await self.listener.inbox()


async def one_sample(pair: Any, key: bytes, timeout: float) -> dict[str, float | None]:
    """Put a fresh value at ``key`` (listened to already); time until it is heard."""
    value = os.urandom(175)  # the size of a sealed offer
    t0 = time.perf_counter()
    put = asyncio.ensure_future(pair.post(key, value))
    put_ms: float | None = None
    try:
        while True:
            k, v, t_cb = await asyncio.wait_for(pair.heard(), timeout)
            if k == key and v == value:
                heard = time.perf_counter()
                break
        await asyncio.wait_for(put, timeout)
        put_ms = (time.perf_counter() - t0) * 1000
    finally:
        if not put.done():
            put.cancel()
        elif not put.cancelled():
            put.exception()  # retrieved: a failed put is counted by the caller
    return {"notified_ms": (heard - t0) * 1000,
            "callback_ms": (t_cb - t0) * 1000 if t_cb is not None else None,
            "put_done_ms": put_ms}


async def raw_latency(pairs: list[Any], samples: int, timeout: float,
                      settle: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows: dict[str, dict[str, list[dict[str, float | None]]]] = {
        p.name: {"fresh_key": [], "same_key": []} for p in pairs}
    fails: dict[str, int] = {p.name: 0 for p in pairs}
    same = {p.name: os.urandom(20) for p in pairs}
    for p in pairs:
        await p.listen(same[p.name])
    await asyncio.sleep(settle)
    for i in range(samples):
        for p in pairs if i % 2 == 0 else list(reversed(pairs)):
            key = os.urandom(20)
            try:
                await p.listen(key)
                await asyncio.sleep(settle)  # OpenDHT does not say when a listen is in place
                rows[p.name]["fresh_key"].append(await one_sample(p, key, timeout))
            except Exception:
                fails[p.name] += 1
            finally:
                p.unlisten(key)
            try:
                rows[p.name]["same_key"].append(await one_sample(p, same[p.name], timeout))
            except Exception:
                fails[p.name] += 1
    for name, modes in rows.items():
        out[name] = {"failures": fails[name]}
        for mode, samples_ in modes.items():
            out[name][mode] = {
                field: summary([s[field] for s in samples_ if s[field] is not None])
                for field in ("notified_ms", "callback_ms", "put_done_ms")
                if any(s[field] is not None for s in samples_)}
    for mode in ("fresh_key", "same_key"):
        h = out["hailing"][mode]["notified_ms"]["p50"]
        o = out["opendht"][mode]["notified_ms"]["p50"]
        out[f"ratio_p50_hailing_over_opendht_{mode}"] = h / o if h and o else None
    out["samples"] = samples
    return out


# -- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    set_host_addresses(["127.0.0.1"])
    result: dict[str, Any] = {"calls": args.calls, "warmup_calls": args.warmup,
                              "testnet_nodes": args.nodes, "testnet_layout": args.layout,
                              "data_root": args.data_root or tempfile.gettempdir(),
                              "callee_process": args.callee_process}
    children: dict[str, list[Child]] = {}
    try:
        where: dict[str, str] = {}
        for kind in PATHS:
            where[kind], children[kind] = start_infra(kind, args.nodes, args.layout)
        for k in args.hailing_k:
            children[f"hailing_k{k}"] = children["hailing"]
        if args.two_hops:
            children["hailing_2hop"] = children["hailing"]
        if args.ack_wait is not None:
            children["hailing_ack"] = children["hailing"]
        if args.parallel_answer:
            children["hailing_par"] = children["hailing"]
        h_boot = parse_hostport(where["hailing"])
        o_boot = parse_hostport(where["opendht"])
        with tempfile.TemporaryDirectory(prefix="hailing-bench-", dir=args.data_root) as tmp:
            root = Path(tmp)
            callers = make_peers(root, "caller", where, tuple(args.hailing_k), args.two_hops,
                                 args.ack_wait, args.parallel_answer)
            meters = {k: NodeMeter() for k in callers if k.startswith("hailing")}
            raw: list[Any] = [HailingPair(h_boot), OpenDhtPair(o_boot)]
            local: dict[str, Peer] = {}  # the callees, when they run in this process
            servers: list[asyncio.Future[None]] = []
            callee = Child([sys.executable, str(HERE / "connect_dht_peers.py"), "--callee"],
                           "callees ")
            try:
                if args.callee_process:
                    callee.launch()
                    callee.send(json.dumps({"root": str(root), "where": where,
                                            "hailing_k": args.hailing_k,
                                            "two_hops": args.two_hops,
                                            "ack_wait": args.ack_wait,
                                            "parallel": args.parallel_answer}))
                    callee_ids = json.loads(callee.wait_line())
                else:
                    local = make_peers(root, "callee", where, tuple(args.hailing_k),
                                       args.two_hops, args.ack_wait, args.parallel_answer)
                    for p in local.values():
                        await p.start()
                    tune(local, args.ack_wait)
                    callee_ids = {k: p.contact_id for k, p in local.items()}
                for p in callers.values():
                    await p.start()
                tune(callers, args.ack_wait)
                for name, meter in meters.items():
                    meter.attach(callers[name])
                for r in raw:
                    await r.start()
                # Friends: each in the other's book, both listening at once.
                await befriend(callers, callee_ids, "callee")
                caller_ids = {k: p.contact_id for k, p in callers.items()}
                if args.callee_process:
                    callee.send(json.dumps(caller_ids))
                    callee.wait_line(prefix="ready")
                else:
                    await befriend(local, caller_ids, "caller")
                    servers = [asyncio.ensure_future(serve(p)) for p in local.values()]
                await asyncio.sleep(1.0)  # OpenDHT's listens find their nodes in the background
                made = await calls(callers, callee_ids, args.calls, args.warmup, args.timeout,
                                   callee.pid, {k: [c.pid for c in cs if c.pid]
                                                for k, cs in children.items()}, meters)
                if args.samples > 0:
                    # Every node that ever joined is alive: the call peers' too.
                    result["raw_latency"] = await raw_latency(raw, args.samples, args.timeout,
                                                              args.settle)
                result["non_loopback_udp"] = non_loopback_udp(
                    [os.getpid(), *([callee.pid] if callee.pid else []),
                     *(c.pid for cs in children.values() for c in cs if c.pid)])
                stats: dict[str, Any] = {k: {"caller": dict(p.stats)} for k, p in callers.items()}
                for k, p in callers.items():
                    if p.node is not None:  # the direct answers the caller's node took
                        stats[k]["caller_node"] = {
                            c: p.node.stats.get(c, 0) for c in (
                                "pushes_direct", "push_bad_token", "queries_sent",
                                "q_hailing_push")}
                if args.callee_process:
                    line = callee.finish("stats ")
                    for k, st in (json.loads(line) if line else {}).items():
                        stats[k]["callee"] = st
                else:
                    for k, p in local.items():
                        stats[k]["callee"] = dict(p.stats)
                result["peer_stats"] = stats
                for t in servers:
                    t.cancel()
                await asyncio.gather(*servers, return_exceptions=True)
                servers = []
                for p in [*callers.values(), *local.values()]:
                    await p.stop()
                callers, local = {}, {}
                if args.samples > 0 and args.after_leave:
                    # The same after the call peers left: their nodes are dead entries in
                    # the testnets' routing tables, as after any node leaves without a word.
                    result["raw_latency_after_leave"] = await raw_latency(
                        raw, args.samples, args.timeout, args.settle)
            finally:
                callee.stop()
                for t in servers:
                    t.cancel()
                await asyncio.gather(*servers, return_exceptions=True)
                for p in [*callers.values(), *local.values()]:
                    await p.stop()
                for r in raw:
                    await r.stop()
        paths = [*PATHS, *(f"hailing_k{k}" for k in args.hailing_k),
                 *(["hailing_2hop"] if args.two_hops else []),
                 *(["hailing_ack"] if args.ack_wait is not None else []),
                 *(["hailing_par"] if args.parallel_answer else [])]
        for name in paths:
            m = made[name]
            done = max(1, len(m["times"]))
            result[name] = {
                "connect_ms": summary(m["times"]), "failures": len(m["fails"]),
                "failure_samples": m["fails"][:5],
                # per call (connect, one message, hang-up)
                "cpu_ms_per_call": {k: m["cpu"][i] / done for i, k in enumerate(CPU_KEYS)}}
            if name.startswith("hailing"):
                result[name]["caller_dht_node_per_call"] = {
                    "datagrams_received": m["node"][0] / done,
                    "datagrams_sent": m["node"][1] / done,
                    "cpu_ms_handling_datagrams": m["node"][2] * 1000 / done}
        p50 = {name: result[name]["connect_ms"]["p50"] for name in paths}
        ratios = [("hailing", "opendht"), ("hailing", "ws"), ("opendht", "ws"),
                  *((f"hailing_k{k}", "opendht") for k in args.hailing_k),
                  *([("hailing_2hop", "opendht"), ("hailing", "hailing_2hop")]
                    if args.two_hops else []),
                  *([("hailing_ack", "opendht"), ("hailing_ack", "hailing")]
                    if args.ack_wait is not None else []),
                  *([("hailing_par", "opendht"), ("hailing", "hailing_par")]
                    if args.parallel_answer else [])]
        for a, b in ratios:
            result[f"ratio_p50_{a}_over_{b}"] = p50[a] / p50[b] if p50[a] and p50[b] else None
    finally:
        for cs in children.values():
            for c in cs:
                c.stop()
    result["environment"] = environment()
    return result


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count()}
    for dist in ("opendht", "aiortc", "aiohttp"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[dist] = metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        src = Path(hailing.__file__).resolve().parent
        env["git_head"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, text=True,
                                         capture_output=True, timeout=10).stdout.strip()
        env["git_src_dirty"] = bool(subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=src, text=True,
            capture_output=True, timeout=10).stdout.strip())
    with contextlib.suppress(OSError):
        env["loadavg"] = os.getloadavg()
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=30, help="calls per path (default 30)")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed calls per path first (default 3)")
    ap.add_argument("--nodes", type=int, default=20, help="nodes per testnet (default 20)")
    ap.add_argument("--layout", choices=("process", "per-node"), default="process",
                    help="each testnet in one process (default), or one process per node")
    ap.add_argument("--hailing-k", type=int, action="append", default=[], metavar="K",
                    help="one more hailing path whose peers' nodes use k=K (posts and "
                    "listens on K storing nodes); repeatable")
    ap.add_argument("--two-hops", action="store_true",
                    help="one more hailing path, hailing_2hop, whose offers carry no reply "
                    "hint: the answer only through the storing nodes (the code before the "
                    "direct answer), in the same run")
    ap.add_argument("--ack-wait", type=float, default=None, metavar="S",
                    help="one more hailing path, hailing_ack, whose callee posts its answer "
                    "to the storing nodes only if the caller's node did not take the direct "
                    "push within S seconds")
    ap.add_argument("--parallel-answer", action="store_true",
                    help="one more hailing path, hailing_par, whose callee posts every "
                    "answer to the storing nodes at once besides the direct push")
    ap.add_argument("--samples", type=int, default=60,
                    help="raw latency samples per DHT and mode (default 60; 0: none)")
    ap.add_argument("--settle", type=float, default=0.25,
                    help="seconds between a listen and the put it should hear (default 0.25)")
    ap.add_argument("--after-leave", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the raw latency again after the call peers left (default on)")
    ap.add_argument("--data-root", default=None, metavar="DIR",
                    help="where the peers' data directories go (default: the temp dir; "
                    "/dev/shm takes the disk's fsyncs out of the calls)")
    ap.add_argument("--callee-process", action=argparse.BooleanOptionalAction, default=True,
                    help="run the callees in a process of their own (default), as on "
                    "another machine; --no-callee-process: in this one")
    ap.add_argument("--callee", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.callee:
        return asyncio.run(callee_main())
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
