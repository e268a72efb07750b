"""What the BEP44 fallback costs an idle daemon, and a call through it once the inbox is down.

On loopback: ``--nodes`` libtorrent DHT sessions, ``--hailing`` hailing nodes among them
(storing nodes for inboxes: the inbox works), and two daemons' peers, bob and alice,
with the daemon's ladder (``dht``, then the ``mainline`` fallback). bob has
``--contacts`` contacts (alice and others that never call). Measured on bob's socket:
every KRPC query it sends, by method, and whether it is part of the fallback's polling
(a query whose ``target`` is one of the fallback's item targets) or not (inbox listens,
their renewals and holder checks, table upkeep, the sub-overlay).

Phases:

1. **inbox healthy**: ``--warmup`` seconds after the contacts are added (their first
   polls, the listens), then ``--window`` seconds measured;
2. **inbox down**: every hailing node stops without a word; the time until bob's
   fallback polls every contact at the fast schedule (its listens known lost), then
   ``--window`` seconds measured;
3. **calls through the fallback**: ``--calls`` calls alice -> bob, each after bob sat
   idle ``--idle`` seconds (uniform), connect time to an authenticated data channel.

``--holder-check`` sets the inbox's holder check interval (``HOLDER_CHECK``, 20 s; 30 s
before). ``--variant old`` runs the schedule as it was before (every contact at 2-8 s, every
poll a full get), ``health`` the health-aware schedule with full gets, ``new`` (the
default) the health-aware schedule with direct polls.

    python benchmarks/bep44_idle_cost.py [--variant new] [--contacts 20] [--window 120]
        [--calls 10] [--out FILE]
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
from collections import Counter
from pathlib import Path
from typing import Any

import libtorrent as lt
from _report import emit, spread, timed_call
from bep44_fallback import LOOPBACK, fallback_pair, libtorrent_nodes, serve

from hailing import bencode
from hailing.dht import inbox_client as inbox_client_mod
from hailing.identity import Identity
from hailing.node import DhtNode
from hailing.peer import Peer
from hailing.rtc import set_host_addresses
from hailing.session.coupler import MainlineCoupler
from hailing.signaling import bep44_direct, mainline_rdv


class QueryCounter:
    """Counts the KRPC queries a node sends (wraps its socket's sendto)."""

    def __init__(self, node: DhtNode, fallback_targets: set[bytes]) -> None:
        self.targets = fallback_targets
        self.by_method: Counter[str] = Counter()
        self.fallback = 0
        self.total = 0
        transport = node._transport
        assert transport is not None
        inner = transport.sendto

        def sendto(data: bytes, addr: Any) -> None:
            self._count(data)
            inner(data, addr)

        transport.sendto = sendto  # type: ignore[method-assign]

    def _count(self, data: bytes) -> None:
        try:
            msg = bencode.decode(data)
        except Exception:
            return  # STUN and the like
        if not isinstance(msg, dict) or msg.get(b"y") != b"q":
            return
        method = msg.get(b"q", b"?")
        args = msg.get(b"a", {})
        self.total += 1
        self.by_method[method.decode(errors="replace") if isinstance(method, bytes) else "?"] += 1
        if isinstance(args, dict) and args.get(b"target") in self.targets:
            self.fallback += 1

    def reset(self) -> None:
        self.by_method.clear()
        self.fallback = self.total = 0


def fallback_targets(rdv: mainline_rdv.MainlineRendezvous, peers: list[bytes]) -> set[bytes]:
    now = time.time()
    days = {mainline_rdv.day_of(now) + d for d in (-1, 0, 1)}
    return {rdv.inbox(p, d).target for p in peers for d in days}


async def window(counter: QueryCounter, seconds: float, contacts: int) -> dict[str, Any]:
    counter.reset()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    dt = time.perf_counter() - t0
    return {
        "seconds": round(dt, 1),
        "queries_per_s": round(counter.total / dt, 3),
        "queries_per_s_per_contact": round(counter.total / dt / contacts, 4),
        "fallback_queries_per_s_per_contact": round(counter.fallback / dt / contacts, 4),
        "other_queries_per_s_per_contact": round(
            (counter.total - counter.fallback) / dt / contacts, 4),
        "by_method": dict(counter.by_method.most_common()),
    }


def apply_variant(peer: Peer, variant: str) -> mainline_rdv.MainlineRendezvous:
    mainline = peer.coupler("mainline")
    assert isinstance(mainline, MainlineCoupler)
    rdv = mainline.rendezvous
    if variant == "old":
        rdv.inbox_live = None
    if variant in ("old", "health"):
        rdv.direct = None
    return rdv


async def run(args: argparse.Namespace) -> dict[str, Any]:
    set_host_addresses([LOOPBACK])
    rng = random.Random(args.seed)
    sessions = libtorrent_nodes(args.nodes)
    lt_addrs = [(LOOPBACK, s.listen_port()) for s in sessions]
    hailing: list[DhtNode] = []
    report: dict[str, Any] = {"benchmark": "bep44_idle_cost", "variant": args.variant,
                              "contacts": args.contacts, "libtorrent_nodes": args.nodes,
                              "hailing_nodes": args.hailing, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="hailing-b44cost-") as tmp:
        for _ in range(args.hailing):
            n = DhtNode((LOOPBACK, 0), bootstrap=[*lt_addrs[:3], *(h.address for h in hailing)])
            await n.start()
            await n.bootstrap()
            hailing.append(n)
        for n in hailing:
            await n.find_hailing_nodes()
        boot = [*lt_addrs[:3], *(h.address for h in hailing)]
        # as behind a NAT: the daemons' own nodes store nothing (read-only, BEP43)
        peers = fallback_pair(Path(tmp), boot)
        alice, bob = peers
        try:
            for p in peers:
                await p.start()
            rdvs = [apply_variant(p, args.variant) for p in peers]
            rdv = rdvs[1]
            assert alice.contacts is not None and bob.contacts is not None
            alice.contacts.add(bob.contact_id, "bob")
            others = [Identity.generate() for _ in range(args.contacts - 1)]
            bob.contacts.add(alice.contact_id, "alice")
            for i, o in enumerate(others):
                bob.contacts.add(o.contact_id, f"c{i}")
            contacts = [alice.public_key, *(o.public_key for o in others)]
            await alice.refresh()
            await bob.refresh()
            assert bob.node is not None
            counter = QueryCounter(bob.node, fallback_targets(rdv, contacts))
            await asyncio.sleep(args.warmup)
            report["healthy"] = await window(counter, args.window, args.contacts)
            report["healthy"]["contacts_polled_slowly"] = sum(
                rdv.polling_slow(c) for c in contacts)
            print(json.dumps({"healthy": report["healthy"]}), file=sys.stderr, flush=True)
            # the inbox goes down: every hailing node stops without a word
            t0 = time.perf_counter()
            await asyncio.gather(*(h.stop() for h in hailing))
            detect = None
            if args.variant != "old":
                deadline = t0 + 400
                while time.perf_counter() < deadline:
                    if not any(rdv.polling_slow(c) for c in contacts):
                        detect = time.perf_counter() - t0
                        break
                    await asyncio.sleep(0.2)
            report["down_detected_s"] = None if detect is None else round(detect, 1)
            report["down"] = await window(counter, args.window, args.contacts)
            print(json.dumps({"down": report["down"], "detected_s": report["down_detected_s"]}),
                  file=sys.stderr, flush=True)
            # calls through the fallback, the inbox down
            server = asyncio.ensure_future(serve(bob))
            calls: list[dict[str, Any]] = []
            for i in range(args.calls):
                pause = rng.uniform(*args.idle)
                await asyncio.sleep(pause)
                row = await timed_call(alice, bob.contact_id, args.timeout,
                                       {"call": i, "idle_s": round(pause, 2)})
                calls.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            ok = [r["connect_s"] for r in calls if r.get("ok")]
            report["calls"] = {
                "n": args.calls, "connected": len(ok),
                "via": dict(Counter(r.get("coupler", "-") for r in calls)),
                "connect_s": spread(ok),
                "results": calls}
            report["bob_stats"] = {k: v for k, v in bob.stats.items()
                                   if k.startswith(("mainline_", "inbox_listen"))}
            report["bob_node_stats"] = {k: v for k, v in bob.node.stats.items()
                                        if k.startswith(("listen", "queries_sent"))}
        finally:
            for p in peers:
                await p.stop()
            for h in hailing:
                await h.stop()
            for s in sessions:
                s.pause()
    report["schedule"] = {
        "fast_s": mainline_rdv.FAST_INTERVAL, "idle_min_s": mainline_rdv.IDLE_MIN,
        "idle_max_s": mainline_rdv.IDLE_MAX, "idle_healthy_s": mainline_rdv.IDLE_HEALTHY,
        "direct_nodes": bep44_direct.DIRECT_NODES, "full_every": bep44_direct.FULL_EVERY,
        "holder_check_s": inbox_client_mod.HOLDER_CHECK}
    report["python"] = platform.python_version()
    report["libtorrent"] = lt.__version__
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("old", "health", "new"), default="new")
    ap.add_argument("--contacts", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=16, help="libtorrent DHT nodes")
    ap.add_argument("--hailing", type=int, default=4, help="hailing nodes (inbox storing nodes)")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=120.0)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--idle", type=float, nargs=2, default=(14.0, 30.0), metavar=("MIN", "MAX"))
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--holder-check", type=float, default=None, metavar="SECONDS",
                    help="the inbox's holder check interval (default: HOLDER_CHECK; 30 before)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.holder_check is not None:
        inbox_client_mod.HOLDER_CHECK = args.holder_check
    report = asyncio.run(run(args))
    emit(report, args.out)


if __name__ == "__main__":
    main()
