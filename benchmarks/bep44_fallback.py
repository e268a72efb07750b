"""Connect time through the BEP44 fallback (issue 11's target: p50 <= 10 s).

On loopback: ``--nodes`` libtorrent DHT sessions (no bootstrap routers, 127.0.0.1 only)
and two hailing peers whose own nodes are BEP43 read-only (as behind a NAT), so no node
speaks hailing's inbox methods: every call's inbox rung fails at once and the call goes
as BEP44 mutable items stored by libtorrent, polled (docs/protocol.md, "BEP44
fallback"). The peers run the daemon's ladder (``FALLBACK_LADDER``) with the default
polling schedule.

Before each call the callee sits idle for a random ``--idle`` time (default 14-30 s:
past its back-off to the 8 s idle interval, at a random phase of it), so each call
meets an idle callee as a real one would; ``--idle 0 0`` measures calls back to back.
Each call runs ``Peer.connect()`` until an authenticated, open data channel, sends one
message and hangs up. Reports connect p50/p95, failures, the time of each rung, and the
gets and puts each side made. Loopback has no network latency: on the internet each get
and put is a lookup of about a second more (docs/protocol.md).

    python benchmarks/bep44_fallback.py [--calls 20] [--nodes 16] [--idle 14 30]
        [--seed 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libtorrent as lt
from _report import emit, spread, timed_call

from hailing.dht import DhtConfig
from hailing.peer import Peer
from hailing.rtc import set_host_addresses
from hailing.session.dialer import FALLBACK_LADDER
from hailing.signaling import mainline_rdv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "interop"))
from lt_loopback import LOOPBACK, lt_settings

#: A loopback-only libtorrent DHT node: the interop tests' settings (no routers, no
#: LSD/UPnP/NAT-PMP, the per-IP limits off: every node is 127.0.0.1), no alerts.
LT_SETTINGS: dict[str, Any] = lt_settings(alert_mask=0)


def libtorrent_nodes(n: int) -> list[Any]:
    sessions = [lt.session(LT_SETTINGS) for _ in range(n)]
    addrs = [(LOOPBACK, s.listen_port()) for s in sessions]
    for s, own in zip(sessions, addrs, strict=True):
        for a in addrs:
            if a != own:
                s.add_dht_node(a)
    return sessions


def fallback_pair(tmp: Path, boot: list[tuple[str, int]]) -> list[Peer]:
    """alice and bob (not started yet), with the daemon's ladder and, as behind a NAT,
    read-only DHT nodes (BEP43: they store nothing)."""
    return [Peer(tmp / name, bootstrap=boot, dht_config=DhtConfig(read_only=True),
                 ladder=list(FALLBACK_LADDER)) for name in ("alice", "bob")]


async def serve(bob: Peer) -> None:
    """Answer every call: read until the caller hangs up."""

    async def drain(conn: Any) -> None:
        async for _ in conn:
            pass
        await conn.close()

    tasks: set[asyncio.Task[None]] = set()
    async for conn in bob.incoming():
        t = asyncio.ensure_future(drain(conn))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


async def run(calls: int, nodes: int, idle: tuple[float, float], seed: int,
              timeout: float) -> dict[str, Any]:
    set_host_addresses([LOOPBACK])
    rng = random.Random(seed)
    sessions = libtorrent_nodes(nodes)
    boot = [(LOOPBACK, s.listen_port()) for s in sessions[:3]]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hailing-bep44-") as tmp:
        peers = fallback_pair(Path(tmp), boot)
        alice, bob = peers
        try:
            for p in peers:
                await p.start()
            assert alice.contacts is not None and bob.contacts is not None
            alice.contacts.add(bob.contact_id, "bob")
            bob.contacts.add(alice.contact_id, "alice")
            await alice.refresh()
            await bob.refresh()
            server = asyncio.ensure_future(serve(bob))
            started = time.perf_counter()
            for i in range(calls):
                pause = rng.uniform(*idle)
                await asyncio.sleep(pause)
                row = await timed_call(alice, bob.contact_id, timeout,
                                       {"call": i, "idle_s": round(pause, 2)})
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            elapsed = time.perf_counter() - started
            counters = {name: {k: v for k, v in p.stats.items() if k.startswith(
                ("mainline_", "inbox_listen"))} for name, p in (("alice", alice), ("bob", bob))}
            for name, p in (("alice", alice), ("bob", bob)):
                assert p.node is not None
                sent = p.node.stats.get("queries_sent", 0)
                counters[name]["dht_queries_sent"] = sent
                counters[name]["dht_queries_per_s"] = round(sent / elapsed, 2)
        finally:
            for p in peers:
                await p.stop()
            for s in sessions:
                s.pause()
    ok = [r["connect_s"] for r in results if r.get("ok")]
    return {
        "benchmark": "bep44_fallback",
        "calls": calls, "libtorrent_nodes": nodes, "idle_s": list(idle), "seed": seed,
        "schedule": {"fast_s": mainline_rdv.FAST_INTERVAL, "idle_min_s": mainline_rdv.IDLE_MIN,
                     "idle_max_s": mainline_rdv.IDLE_MAX,
                     "max_in_flight": mainline_rdv.MAX_IN_FLIGHT},
        "connected": len(ok), "failed": calls - len(ok),
        "connect_s": spread(ok),
        "target_p50_s": 10.0,
        "counters": counters,
        "results": results,
        "python": platform.python_version(), "libtorrent": lt.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=16, help="libtorrent DHT nodes")
    ap.add_argument("--idle", type=float, nargs=2, default=(14.0, 30.0), metavar=("MIN", "MAX"),
                    help="seconds the callee sits idle before each call (uniform)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    report = asyncio.run(run(args.calls, args.nodes, (args.idle[0], args.idle[1]), args.seed,
                             args.timeout))
    emit(report, args.out)


if __name__ == "__main__":
    main()
