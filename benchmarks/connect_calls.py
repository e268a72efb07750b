"""Connect-time benchmark (seed 002's metrics): DHT signaling vs a WebSocket relay.

On a 20-node loopback DHT testnet, alice calls bob N times in a row (default 100): each
call runs ``Peer.connect()`` until an authenticated, open data channel (sealed offer
and answer, identity proof over the channel), sends one message, waits for bob's
acknowledgement, and hangs up. The same N calls go through the centralized baseline (a
WebSocket relay on loopback, same envelopes, same aiortc), interleaved call by call so
both see the same machine load. Reports connect-time percentiles, failures, the ratio
of medians, and the sizes of a sealed offer and answer. ``--long-session S`` also keeps
one connection open S seconds with a message a second and reports drops and ack times.

    python benchmarks/connect_calls.py [--calls 100] [--nodes 20] [--long-session 600]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hailing.peer import Peer
from hailing.rtc import set_host_addresses
from hailing.signaling.ws_relay import RelayServer
from hailing.testnet import testnet


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


async def serve(bob: Peer) -> None:
    """Answer every call: read until the caller hangs up."""

    async def drain(conn: Any) -> None:
        async for _ in conn:
            pass
        await conn.close()

    tasks = set()
    async for conn in bob.incoming():
        t = asyncio.ensure_future(drain(conn))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


async def one_call(alice: Peer, bob_id: str, timeout: float) -> float:
    conn = await alice.connect(bob_id, timeout=timeout)
    try:
        await conn.send_text("ping")
    finally:
        await conn.close()
    assert conn.connect_ms is not None
    return conn.connect_ms


async def sizes(alice: Peer, bob: Peer) -> dict[str, int]:
    """Sizes of a sealed offer and answer as the peers build them."""
    from aiortc import RTCPeerConnection

    from hailing.rtc.ice import rtc_configuration
    from hailing.signaling import envelope
    from hailing.signaling.sdp import encode_sdp

    assert alice.identity is not None and bob.identity is not None
    a = RTCPeerConnection(configuration=rtc_configuration())
    b = RTCPeerConnection(configuration=rtc_configuration())
    try:
        a.createDataChannel("hailing")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        offer, answer = encode_sdp(a.localDescription), encode_sdp(b.localDescription)
        now = time.time()
        # The same offer as a host behind NAT would send it: 4 and 8 candidates (documentation
        # addresses; these offers are only measured, never used).
        text = a.localDescription.sdp
        extra = [
            "a=candidate:2 1 udp 2130706431 2001:db8::20 50002 typ host",
            "a=candidate:3 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 192.0.2.20 rport 50000",
            "a=candidate:4 1 udp 16777215 198.51.100.9 3478 typ relay raddr 203.0.113.7 rport 61000",
            "a=candidate:5 1 udp 2130706431 192.0.2.21 50003 typ host",
            "a=candidate:6 1 udp 2130706431 2001:db8::21 50004 typ host",
            "a=candidate:7 1 udp 1694498815 203.0.113.8 61001 typ srflx raddr 192.0.2.21 rport 50003",
            "a=candidate:8 1 udp 2130706431 192.0.2.22 50005 typ host",
        ]
        first = text.index("a=candidate:")
        bigger = {}
        for n in (4, 8):
            lines = "\r\n".join(extra[: n - 1]) + "\r\n"
            compact = encode_sdp(("offer", text[:first] + lines + text[first:]))
            bigger[n] = (len(compact), len(envelope.seal(alice.identity, bob.identity.public_key,
                                                         envelope.KIND_OFFER, compact, now=now)))
        return {
            "compact_offer_4_candidates": bigger[4][0],
            "sealed_offer_4_candidates": bigger[4][1],
            "compact_offer_8_candidates": bigger[8][0],
            "sealed_offer_8_candidates": bigger[8][1],
            "sdp_text_offer": len(a.localDescription.sdp.encode()),
            "compact_offer": len(offer),
            "sealed_offer": len(envelope.seal(alice.identity, bob.identity.public_key,
                                              envelope.KIND_OFFER, offer, now=now)),
            "compact_answer": len(answer),
            "sealed_answer": len(envelope.seal(bob.identity, alice.identity.public_key,
                                               envelope.KIND_ANSWER, answer, now=now)),
            "offer_candidates": a.localDescription.sdp.count("a=candidate:"),
        }
    finally:
        await a.close()
        await b.close()


async def long_session(alice: Peer, bob_id: str, seconds: float) -> dict[str, Any]:
    conn = await alice.connect(bob_id, timeout=30)
    acks: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    i = 0
    try:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                await conn.send_text(f"message {i}")
                acks.append((time.perf_counter() - t0) * 1000)
            except Exception:
                failures += 1
            i += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    finally:
        await conn.close()
    return {"seconds": seconds, "messages": i, "acknowledged": len(acks), "failures": failures,
            "ack_ms": {"p50": pct(acks, 50), "p95": pct(acks, 95), "max": max(acks, default=None)}}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    set_host_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory(prefix="hailing-bench-") as tmp:
        root = Path(tmp)
        async with testnet(args.nodes) as nodes, RelayServer(rate=1e6, burst=1e6) as relay:
            boot = [nodes[0].address]
            dht_a, dht_b = Peer(root / "a", bootstrap=boot), Peer(root / "b", bootstrap=boot)
            ws_a = Peer(root / "wa", backend="ws", relay_url=relay.url)
            ws_b = Peer(root / "wb", backend="ws", relay_url=relay.url)
            for p in (dht_a, dht_b, ws_a, ws_b):
                await p.start()
            try:
                for caller, callee in ((dht_a, dht_b), (ws_a, ws_b)):
                    assert callee.contacts is not None
                    callee.contacts.add(caller.contact_id, "caller")
                await dht_b.refresh()
                servers = [asyncio.ensure_future(serve(p)) for p in (dht_b, ws_b)]
                times: dict[str, list[float]] = {"dht": [], "ws": []}
                fails: dict[str, list[str]] = {"dht": [], "ws": []}
                for i in range(args.calls):
                    order = [("dht", dht_a, dht_b), ("ws", ws_a, ws_b)]
                    if i % 2:
                        order.reverse()
                    for name, caller, callee in order:
                        try:
                            times[name].append(await one_call(caller, callee.contact_id, args.timeout))
                        except Exception as exc:
                            fails[name].append(f"{type(exc).__name__}: {exc}")
                    if (i + 1) % 10 == 0:
                        print(f"  {i + 1}/{args.calls} calls: dht p50 {pct(times['dht'], 50)} ms "
                              f"({len(fails['dht'])} failed), ws p50 {pct(times['ws'], 50)} ms "
                              f"({len(fails['ws'])} failed)", file=sys.stderr, flush=True)
                size = await sizes(dht_a, dht_b)
                session = (await long_session(dht_a, dht_b.contact_id, args.long_session)
                           if args.long_session > 0 else None)
                for s in servers:
                    s.cancel()
                await asyncio.gather(*servers, return_exceptions=True)
            finally:
                for p in (dht_a, dht_b, ws_a, ws_b):
                    await p.stop()
    result: dict[str, Any] = {"calls": args.calls, "testnet_nodes": args.nodes}
    for name in ("dht", "ws"):
        t = times[name]
        result[name] = {
            "connect_ms": {"p50": pct(t, 50), "p95": pct(t, 95), "mean": statistics.fmean(t) if t else None,
                           "min": min(t, default=None), "max": max(t, default=None)},
            "failures": len(fails[name]), "failure_samples": fails[name][:5],
        }
    d, w = result["dht"]["connect_ms"]["p50"], result["ws"]["connect_ms"]["p50"]
    result["ratio_p50_dht_over_ws"] = d / w if d and w else None
    result["sizes_bytes"] = size
    result["long_session"] = session
    result["python"] = platform.python_version()
    result["machine"] = platform.machine()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--long-session", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
