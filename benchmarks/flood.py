#!/usr/bin/env python3
"""A well-behaved client's service while one source floods a DHT node (issue 9).

One ``DhtNode`` (this checkout's ``src/``) runs in its own process on 127.0.0.1, with the
loopback exemption of the per-source limits turned off (``DhtConfig.exempt_loopback =
False`` where the field exists), so that the limits apply as they would on the Internet.
Two clients talk to it:

* **the good client** (127.0.0.1, in this process, a thread with a blocking socket):
  a closed loop of one ``ping`` and one BEP44 ``get`` of an item it stored before the
  flood (a get answered without it, the item evicted, is counted apart), with
  ``--pause`` seconds (0.05) between rounds (about 40 queries a second,
  within the node's per-source budget of 100); an answer later than ``--timeout``
  counts as lost. Reported: queries sent, share answered, p50/p95/p99/max latency.
* **the attacker** (127.0.0.2, its own process, ``nice``\\ d so that it never starves
  the good client of its core): sends queries as fast as one Python process can, for
  ``--duration`` seconds, then stops by itself. With a write token it fetched first (a
  token is bound to the IP, so it is good from every port).

Modes (``--modes``, comma-separated):

``one-port``     find_node, get, announce_peer and hailing_post, in turn, from one port
``many-ports``   the same from ``--ports`` (1,000) ports, round-robin
``fill``         the store-filling attack: announce_peer and put (immutable) with a
                 fresh key every time, hailing_post of 1,000-byte values 16 to a fresh
                 key (an inbox's most), from ``--ports`` ports, for
                 ``--fill-duration`` seconds (600 by default); the node's RSS is sampled
                 every 10 s and the sizes of its stores reported at the end

``--attack-ips N`` spreads the attack over N source addresses (127.1.x.y, each with its
own token): what an attacker with many addresses does, past the per-source budgets.

Reported per mode: the good client's results, the attack's send rate (datagrams/s) and
how many the node processed (its counters), the node's CPU use (share of one core) and
its RSS (start, end, peak). Targets (issue 9): >= 99 % of the good client's queries
answered, p95 <= 10 ms; RSS bounded.

    python benchmarks/flood.py --out flood.json                      # both 30 s floods
    python benchmarks/flood.py --modes fill --fill-duration 600       # the 10-minute fill

``--no-budget`` runs the node without its per-source datagram budget
(``source_datagram_rate=0``), for a side-by-side comparison.

Linux only (``/proc``). Everything binds 127.0.0.x with OS-chosen ports; every child
process dies with this one (``PR_SET_PDEATHSIG``) and is stopped at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from hailing import bencode  # noqa: E402

GOOD_IP = "127.0.0.1"
ATTACK_IP = "127.0.0.2"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The node under attack: prints its port, then a JSON line of its counters and store
#: sizes for each line read on stdin; stops at EOF.
SERVER = r"""
import asyncio, dataclasses, json, sys
from hailing.dht import DhtConfig
from hailing.node import DhtNode

def size(obj):
    try:
        return len(obj)
    except TypeError:
        return None

async def main():
    config = DhtConfig()
    exempt = getattr(config, "exempt_loopback", None)
    if exempt is not None:
        config = dataclasses.replace(config, exempt_loopback=False)
    else:  # a checkout without the field: loopback is exempt from the datagram budget
        from hailing.transport import _ingress
        _ingress.is_loopback = lambda host: False
    if "--no-budget" in sys.argv and hasattr(config, "source_datagram_rate"):
        config = dataclasses.replace(config, source_datagram_rate=0.0)
    node = DhtNode(("127.0.0.1", 0), config=config)
    await node.start()
    print(json.dumps({"port": node.address[1], "exempt_loopback_field": exempt is not None}),
          flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        core = node.core
        inbox = core.responder.inbox
        values = getattr(inbox, "values_table", None)  # per-source accounting (quota.py)
        stores = {"routing_table": size(core.table), "torrents": size(core.peers),
                  "peer_entries": size(getattr(core.peers, "table", ())) or None,
                  "items": size(core.items),
                  "inbox_values": size(values) if values is not None else None,
                  "inbox_keys": getattr(values, "keys_held", None)
                  if values is not None else size(getattr(inbox, "_values", ())),
                  "datagram_budget_sources": size(getattr(node._transport, "_limiter", None))}
        print(json.dumps({"stats": node.stats, "stores": stores}), flush=True)
    await node.stop()

asyncio.run(main())
"""


def _pdeathsig() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    def __init__(self, core: int | None, budget: bool = True) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}

        def pre() -> None:
            _pdeathsig()
            if core is not None:
                os.sched_setaffinity(0, {core})

        argv = [sys.executable, "-c", SERVER] + ([] if budget else ["--no-budget"])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=pre)
        first = json.loads(self._line())
        self.addr = (GOOD_IP, int(first["port"]))
        self.exempt_loopback_field = bool(first["exempt_loopback_field"])

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the node under test exited")
        return line

    def report(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self._line())
        return out

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0  # MiB
        return out

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- KRPC by hand ------------------------------------------------------------------------------


def query(tid: bytes, method: bytes, args: dict[bytes, Any]) -> bytes:
    return bencode.encode({b"a": args, b"q": method, b"t": tid, b"y": b"q"})


def ask(sock: socket.socket, addr: tuple[str, int], msg: bytes, tid: bytes,
        timeout: float) -> dict[bytes, Any] | None:
    """Send ``msg`` and wait for the reply with ``tid`` (others are skipped)."""
    sock.sendto(msg, addr)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
        try:
            reply = bencode.decode(data)
        except Exception:
            continue
        if isinstance(reply, dict) and reply.get(b"t") == tid:
            return reply
    return None


class Template:
    """A query with two 20-byte slots (a varying key, and the transaction id at the end)
    that can be filled without encoding: the attacker's way to reach line rate."""

    def __init__(self, method: bytes, args: dict[bytes, Any], key_field: bytes) -> None:
        marker = b"\xa5" * 20
        data = query(b"\xb6\xb6\xb6\xb6", method, {**args, key_field: marker})
        i = data.index(marker)
        j = data.index(b"\xb6\xb6\xb6\xb6")
        assert i < j
        self.parts = (data[:i], data[i + 20:j], data[j + 4:])

    def make(self, key: bytes, tid: bytes) -> bytes:
        a, b, c = self.parts
        return a + key + b + tid + c


# -- the good client -----------------------------------------------------------------------------


class GoodClient(threading.Thread):
    def __init__(self, server: tuple[str, int], pause: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.pause = pause
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((GOOD_IP, 0))
        self.id = os.urandom(20)
        self.results: dict[str, list[float | None]] = {"ping": [], "get": []}
        #: gets answered without the item (it was evicted from the node's store)
        self.missing = 0
        self.stop_at = 0.0
        self._n = 0
        self.target = self._store_item()

    def _tid(self) -> bytes:
        self._n += 1
        return b"g" + (self._n % 2**24).to_bytes(3, "big")

    def _store_item(self) -> bytes:
        value = b"the good client's item"
        target = hashlib.sha1(bencode.encode(value)).digest()
        tid = self._tid()
        got = ask(self.sock, self.server, query(tid, b"get", {b"id": self.id, b"target": target}),
                  tid, 2.0)
        if got is None or b"token" not in got.get(b"r", {}):
            raise SystemExit("the node gave no token")
        tid = self._tid()
        put = query(tid, b"put", {b"id": self.id, b"token": got[b"r"][b"token"], b"v": value})
        if ask(self.sock, self.server, put, tid, 2.0) is None:
            raise SystemExit("the node did not store the good client's item")
        return target

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            for kind in ("ping", "get"):
                tid = self._tid()
                args = {b"id": self.id} if kind == "ping" else {b"id": self.id,
                                                                  b"target": self.target}
                msg = query(tid, kind.encode(), args)
                start = time.perf_counter()
                reply = ask(self.sock, self.server, msg, tid, self.timeout)
                ok = reply is not None and reply.get(b"y") == b"r"
                if ok and kind == "get" and reply is not None and \
                        reply[b"r"].get(b"v") != b"the good client's item":
                    self.missing += 1
                self.results[kind].append(time.perf_counter() - start if ok else None)
            time.sleep(self.pause)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, samples in self.results.items():
            ok = sorted(s * 1000 for s in samples if s is not None)
            n = len(samples)

            def pct(p: float, ok: list[float] = ok) -> float | None:
                return round(ok[min(len(ok) - 1, int(p * len(ok)))], 3) if ok else None

            out[kind] = {"sent": n, "answered": len(ok),
                         "answered_pct": round(100.0 * len(ok) / n, 3) if n else None,
                         "p50_ms": round(statistics.median(ok), 3) if ok else None,
                         "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                         "max_ms": round(ok[-1], 3) if ok else None}
        out["get"]["answered_without_the_item"] = self.missing
        return out


# -- the attacker ----------------------------------------------------------------------------------


def attack_ips(n: int) -> list[str]:
    """The attacker's source addresses: 127.0.0.2, or ``n`` addresses in 127.1.0.0/16."""
    return [ATTACK_IP] if n <= 1 else [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]


def attack(server: tuple[str, int], mode: str, ports: int, ips: int, duration: float,
           core: int | None, out: Any) -> None:
    """The attacking process: floods for ``duration`` seconds, then puts its counts."""
    _pdeathsig()
    if core is not None:
        os.sched_setaffinity(0, {core})
    os.nice(10)
    addrs = attack_ips(ips)
    socks = []
    for i in range(max(ports if mode != "one-port" else 1, len(addrs))):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies are not read
        s.bind((addrs[i % len(addrs)], 0))
        socks.append(s)
    ids = [os.urandom(20) for _ in socks]
    tokens: list[bytes] = []  # a token is bound to the IP: one per address
    for i in range(len(addrs)):
        tid = b"tk%02x" % (i % 256)
        got = ask(socks[i], server, query(tid, b"get", {b"id": ids[i],
                                                         b"target": os.urandom(20)}), tid, 2.0)
        tokens.append(got[b"r"][b"token"] if got and b"token" in got.get(b"r", {})
                      else b"no token")
    for s in socks:
        s.setblocking(False)
    fresh = mode == "fill"
    # fill: posts of the largest value, 16 to a key (an inbox's most); elsewhere 200 bytes
    value = b"x" * (1000 if fresh else 200)

    def kinds(token: bytes) -> list[tuple[bytes, dict[bytes, Any], bytes]]:
        if fresh:
            return [(b"announce_peer", {b"port": 6881, b"token": token}, b"info_hash"),
                    (b"hailing_post", {b"token": token, b"v": value}, b"key"),
                    (b"put", {b"token": token}, b"v")]
        return [(b"find_node", {}, b"target"), (b"get", {}, b"target"),
                (b"announce_peer", {b"port": 6881, b"token": token}, b"info_hash"),
                (b"hailing_post", {b"token": token, b"v": value}, b"key")]

    # One template per (kind, socket): the sender id is fixed per port.
    templates = [[Template(m, {**a, b"id": nid}, f) for m, a, f in kinds(tokens[i % len(addrs)])]
                 for i, nid in enumerate(ids)]
    names = [k[0] for k in kinds(b"")]
    post = names.index(b"hailing_post")
    pool = [os.urandom(20) for _ in range(4096)]
    post_key = pool[0]
    sent = errors = posts = 0
    n = 0
    start = time.monotonic()
    stop_at = start + duration
    urandom = os.urandom
    nsocks = len(socks)
    nkinds = len(names)
    while True:
        if n % 256 == 0 and time.monotonic() >= stop_at:
            break
        i = n % nsocks
        kind = n % nkinds
        if not fresh:
            key = pool[n & 4095]
        elif kind == post:
            if posts % 16 == 0:
                post_key = urandom(20)
            posts += 1
            key = post_key
        else:
            key = urandom(20)
        data = templates[i][kind].make(key, (n & 0xFFFFFFFF).to_bytes(4, "big"))
        try:
            socks[i].sendto(data, server)
            sent += 1
        except OSError:  # the send buffer is full: the kernel pushes back
            errors += 1
        n += 1
    elapsed = time.monotonic() - start
    for s in socks:
        s.close()
    out.put({"sent": sent, "send_errors": errors, "seconds": round(elapsed, 2),
             "rate_per_s": round(sent / elapsed), "ports": nsocks, "source_ips": len(addrs),
             "kinds": [k.decode() for k in names],
             "had_tokens": sum(t != b"no token" for t in tokens)})


# -- one run -----------------------------------------------------------------------------------------


def _queries(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.startswith("q_")) + stats.get("dropped_malformed", 0)


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    duration = args.fill_duration if mode == "fill" else args.duration
    server = Server(args.server_core, budget=not args.no_budget)
    try:
        good = GoodClient(server.addr, args.pause, args.timeout)
        time.sleep(0.5)
        before = server.report()
        mem0 = server.memory()
        cpu0 = server.cpu_seconds()
        ctx = mp.get_context("fork")
        box = ctx.Queue()
        attacker = ctx.Process(target=attack, args=(server.addr, mode, args.ports,
                                                    args.attack_ips, duration, args.attack_core,
                                                    box), daemon=True)
        good.stop_at = time.monotonic() + duration + 1.0
        t0 = time.monotonic()
        attacker.start()
        good.start()
        rss: list[tuple[float, float]] = []
        while attacker.is_alive() and time.monotonic() < t0 + duration + 30:
            attacker.join(min(10.0, args.sample))
            rss.append((round(time.monotonic() - t0, 1), round(server.memory()["VmRSS"], 1)))
        flood = box.get(timeout=30)
        attacker.join(5)
        cpu = server.cpu_seconds() - cpu0
        wall = time.monotonic() - t0
        good.join(args.timeout + 5)
        after = server.report()
        mem1 = server.memory()
        processed = _queries(after["stats"]) - _queries(before["stats"])
        counters = {k: v - before["stats"].get(k, 0) for k, v in after["stats"].items()
                    if v != before["stats"].get(k, 0)}
        return {
            "mode": mode, "duration_s": duration, "datagram_budget": not args.no_budget,
            "exempt_loopback_off": server.exempt_loopback_field,
            "good_client": good.summary(),
            "flood": {**flood, "processed_by_node": processed,
                      "processed_per_s": round(processed / wall)},
            "node": {"cpu_core_share": round(cpu / wall, 3), "rss_mib_start": mem0["VmRSS"],
                     "rss_mib_end": mem1["VmRSS"], "rss_mib_peak": mem1["VmHWM"],
                     "rss_samples": rss if mode == "fill" else rss[-3:],
                     "stores_end": after["stores"], "counters": counters},
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="one-port,many-ports")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of each flood")
    ap.add_argument("--fill-duration", type=float, default=600.0,
                    help="seconds of the store-filling attack")
    ap.add_argument("--ports", type=int, default=1000)
    ap.add_argument("--attack-ips", type=int, default=1,
                    help="source addresses of the attack (1: 127.0.0.2; more: 127.1.x.y)")
    ap.add_argument("--pause", type=float, default=0.05,
                    help="seconds between the good client's rounds")
    ap.add_argument("--timeout", type=float, default=1.0,
                    help="the good client's wait for an answer")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--attack-core", type=int, default=1)
    ap.add_argument("--no-budget", action="store_true",
                    help="turn the node's per-source datagram budget off (a comparison)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if os.cpu_count() == 1:
        args.server_core = args.attack_core = None
    try:  # the code measured is the code at the start
        head: str | None = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                                          text=True, capture_output=True,
                                          check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = None
    results = []
    for mode in [m for m in args.modes.split(",") if m]:
        if mode not in ("one-port", "many-ports", "fill"):
            ap.error(f"unknown mode {mode!r}")
        print(f"flood: {mode} ...", file=sys.stderr, flush=True)
        results.append(run_mode(mode, args))
    doc = {"benchmark": "flood", "results": results,
           "config": {k: v for k, v in vars(args).items() if k != "out"},
           "targets": {"answered_pct": 99.0, "p95_ms": 10.0},
           "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "loadavg": os.getloadavg(), "git_head": head}}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
