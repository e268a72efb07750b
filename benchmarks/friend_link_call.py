"""A call over an existing friend link vs one signaled through the DHT inbox (issue 12).

On a loopback DHT testnet (default 20 nodes), alice and bob are friends with one link
open between them (a data channel, as ``hailing up`` keeps to each friend from boot).
Alice then calls bob N times per path (default 20), the two paths interleaved call by
call so both see the same machine load:

- ``link``: the sealed offer and answer travel over the open link's data channel (the
  ``link`` coupler, the first rung of the default ladder);
- ``dht``: the sealed offer goes to bob's DHT inbox for the pair, the answer back to
  alice's (the ``dht`` coupler);
- ``network`` (with ``--network``): forwarded through the data-channel overlay to bob's
  node and back (the ``network`` coupler; both nodes also run a LinkDriver, with one
  data-channel link between them, as a friend link's ``hailing-dht`` channel gives).

Each call is a media call: alice offers an audio track (aiortc's silence), bob answers
with one; the time measured is ``Peer.connect()`` until the new connection's channel is
open and both identities are proven, with the audio negotiated both ways (``connect_ms``),
and, inside it, the signaling round trip alone: from the sealed offer handed to the
coupler to the answer arriving at alice (``signal_ms``; it includes bob making his
answer, the same on every path). Then it hangs up. Reports per path the percentiles and
failures, and the ratios of the medians.

    python benchmarks/friend_link_call.py [--calls 20] [--nodes 20] [--network] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit, pct
from connect_calls import serve

from hailing.peer import Peer
from hailing.rtc import set_host_addresses
from hailing.session.dialer import Rung
from hailing.testnet import testnet

PATHS = ("link", "dht", "network")


class Stamps:
    """When alice's offer went to a coupler and when the first answer came back."""

    def __init__(self, alice: Peer) -> None:
        self.offer = 0.0
        self.answer = 0.0
        for coupler in alice.couplers:
            self._wrap(coupler)
        manager = alice.manager
        assert manager is not None
        received = manager.answer_received

        def answer_received(opened: Any) -> None:
            if not self.answer:
                self.answer = time.perf_counter()
            received(opened)

        manager.answer_received = answer_received  # type: ignore[method-assign]

    def _wrap(self, coupler: Any) -> None:
        send = coupler.send

        async def timed(peer: bytes, blob: bytes, kind: str) -> int:
            if kind == "offer":
                self.offer, self.answer = time.perf_counter(), 0.0
            n: int = await send(peer, blob, kind)
            return n

        coupler.send = timed


async def one_call(alice: Peer, bob_id: str, path: str, timeout: float,
                   stamps: Stamps) -> tuple[float, float]:
    from aiortc.mediastreams import AudioStreamTrack

    t0 = time.perf_counter()
    conn = await alice.connect(bob_id, timeout=timeout, coupler=path,
                               tracks=[AudioStreamTrack()])
    ms = (time.perf_counter() - t0) * 1000
    try:
        if conn.coupler != path or conn.tracks.kinds != ["audio"]:
            raise RuntimeError(f"went through {conn.coupler} with {conn.tracks.kinds}")
    finally:
        await conn.close()
    return ms, (stamps.answer - stamps.offer) * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from aiortc.mediastreams import AudioStreamTrack

    from hailing.node import DhtNode
    from hailing.transport.datachannel import LinkDriver, couple_direct
    from hailing.transport.forward import Forwarder

    set_host_addresses(["127.0.0.1"])
    paths = [p for p in PATHS if p != "network" or args.network]
    ladder = [Rung(p, 5.0 if p != "dht" else None) for p in paths]
    with tempfile.TemporaryDirectory(prefix="hailing-bench-") as tmp:
        root = Path(tmp)
        async with testnet(args.nodes) as nodes:
            boot = [nodes[0].address]
            own: list[DhtNode] = []
            if args.network:
                for _ in range(2):
                    node = DhtNode(("127.0.0.1", 0), links=LinkDriver(cap=4), bootstrap=boot)
                    await node.start()
                    await node.bootstrap()
                    own.append(node)
                assert own[0].links is not None and own[1].links is not None
                await couple_direct(own[0].links, own[1].links, pinned=True)
            alice = Peer(root / "a", bootstrap=boot, ladder=ladder,
                         node=own[0] if own else None)
            bob = Peer(root / "b", bootstrap=boot, ladder=ladder,
                       node=own[1] if own else None,
                       answer_tracks=lambda caller: [AudioStreamTrack()])
            forwarders = [Forwarder(n, n.links, udp=False) for n in own if n.links]
            if forwarders:
                alice.forwarder, bob.forwarder = forwarders
            for p in (alice, bob):
                await p.start()
            try:
                assert alice.contacts is not None and bob.contacts is not None
                alice.contacts.add(bob.contact_id, "bob")
                bob.contacts.add(alice.contact_id, "alice")
                await alice.refresh()
                await bob.refresh()
                link = await alice.connect(bob.contact_id, timeout=args.timeout)  # the friend link
                friend_link_ms = link.connect_ms
                node_ids = alice.node_ids
                assert node_ids is not None
                for _ in range(100):  # bob's node id, told over the link (kind 5)
                    if node_ids.of(bob.public_key) is not None:
                        break
                    await asyncio.sleep(0.05)
                server = asyncio.ensure_future(serve(bob))
                stamps = Stamps(alice)
                signal: dict[str, list[float]] = {p: [] for p in paths}
                times: dict[str, list[float]] = {p: [] for p in paths}
                fails: dict[str, list[str]] = {p: [] for p in paths}
                for i in range(args.calls):
                    order = list(paths) if i % 2 == 0 else list(reversed(paths))
                    for path in order:
                        try:
                            ms, sig = await one_call(alice, bob.contact_id, path,
                                                     args.timeout, stamps)
                            times[path].append(ms)
                            signal[path].append(sig)
                        except Exception as exc:
                            fails[path].append(f"{type(exc).__name__}: {exc}")
                    if (i + 1) % 5 == 0:
                        print(f"  {i + 1}/{args.calls}: " + ", ".join(
                            f"{p} p50 {pct(times[p], 50)} ms" for p in paths),
                            file=sys.stderr, flush=True)
                link_still_open = link.is_open
                await link.close()
                server.cancel()
                await asyncio.gather(server, return_exceptions=True)
            finally:
                for f in forwarders:
                    await f.aclose()
                for p in (alice, bob):
                    await p.stop()
                for n in own:
                    await n.stop()
    result: dict[str, Any] = {"calls": args.calls, "testnet_nodes": args.nodes,
                              "media": "audio (offered and answered)",
                              "friend_link_connect_ms": friend_link_ms,
                              "friend_link_open_after": link_still_open}
    for path in paths:
        result[path] = {"connect_ms": summary(times[path]), "signal_ms": summary(signal[path]),
                        "failures": len(fails[path]), "failure_samples": fails[path][:5]}
    for what in ("connect_ms", "signal_ms"):
        lk = result["link"][what]["median"]
        for other in paths[1:]:
            med = result[other][what]["median"]
            result[f"ratio_median_{what}_{other}_over_link"] = med / lk if lk and med else None
    result["python"] = platform.python_version()
    result["machine"] = platform.machine()
    return result


def summary(t: list[float]) -> dict[str, float | None]:
    return {"p50": pct(t, 50), "p95": pct(t, 95),
            "median": statistics.median(t) if t else None,
            "mean": statistics.fmean(t) if t else None,
            "min": min(t, default=None), "max": max(t, default=None)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20, help="calls per path")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--network", action="store_true",
                    help="also calls forwarded through the data-channel overlay")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    emit(asyncio.run(run(args)), Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
