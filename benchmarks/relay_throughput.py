"""Relay throughput: bytes per second through a volunteer's coturn on loopback, and its CPU.

hailing's supervised coturn (``hailing.nat.turnserver.TurnServer``, the config
``hailing up --serve-relay`` writes, credentials minted as a volunteer mints them) on
127.0.0.1, measured two ways, each uncapped and with ``max-bps`` capped (``--cap``):

- ``aiortc``: two aiortc peers in this process forced through TURN
  (``RTCConfiguration(iceTransportPolicy=RELAY)``: only relay candidates, so every packet
  crosses coturn twice, peer A's allocation to peer B's), one data channel sending 16 KiB
  messages as fast as SCTP lets it for ``--seconds``; the receiver counts bytes;
- ``channel``: raw TURN channel data (aioice's TURN client): one allocation sends
  1000-byte ChannelData frames as fast as the event loop can (uncapped) or at 4x the cap
  (capped) to a plain UDP socket for ``--seconds``; the socket counts what arrives.

For each: received MB/s (10^6 bytes) over the window, and the turnserver's CPU
(utime + stime from ``/proc/PID/stat`` over the window, percent of one core, and CPU
seconds per GB relayed); the median of ``--runs`` runs, each with a fresh coturn.

    python benchmarks/relay_throughput.py [--runs 5] [--seconds 3] [--cap 500000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from turn_helpers import Allocation, Sink, free_udp_port, open_channel  # noqa: E402

from hailing.nat.turnserver import TurnConfig, TurnServer, rest_credentials  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PORTS = (61000, 61999)
MESSAGE = 16 * 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


async def channel_run(turn: TurnServer, seconds: float, cap: int) -> tuple[int, float]:
    """Raw ChannelData through one allocation to a UDP sink: (bytes received, over how
    many seconds)."""
    alloc = await Allocation.open(turn.address, *rest_credentials(turn.secret,
                                                                  int(time.time()) + 600))
    loop = asyncio.get_running_loop()
    sink_t, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    try:
        await alloc.allocate()
        peer = sink_t.get_extra_info("sockname")
        await alloc.proto.send_data(b"hello", peer)  # binds the channel
        await sink.queue.get()
        payload = bytes(1000)
        frame = struct.pack("!HH", alloc.proto.peer_to_channel[peer], len(payload)) + payload
        start_bytes = sink.bytes
        started = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - started < seconds:
            if cap and sent > 4 * cap * (now - started):  # 4x the cap, paced
                await asyncio.sleep(0.002)
                continue
            for _ in range(20):
                alloc.transport.sendto(frame)
            sent += 20 * len(payload)
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # what is in flight lands (counted: sent in the window)
        return sink.bytes - start_bytes, time.monotonic() - started
    finally:
        sink_t.close()
        await alloc.close()


async def aiortc_run(turn: TurnServer | None, seconds: float, cap: int) -> tuple[int, float]:
    """A reliable data channel between two aiortc peers forced through TURN (or, with
    ``turn`` None, on host candidates on 127.0.0.1): (bytes received, seconds)."""
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCIceTransportPolicy,
        RTCPeerConnection,
    )

    def config() -> RTCConfiguration:
        if turn is None:
            return RTCConfiguration(iceServers=[])
        user, password = rest_credentials(turn.secret, int(time.time()) + 600)
        host, port = turn.address
        return RTCConfiguration(
            iceServers=[RTCIceServer(urls=f"turn:{host}:{port}?transport=udp",
                                     username=user, credential=password)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    a, b = RTCPeerConnection(config()), RTCPeerConnection(config())
    received = [0]
    opened = asyncio.Event()

    @b.on("datachannel")
    def on_channel(channel: Any) -> None:
        @channel.on("message")
        def on_message(message: bytes) -> None:
            received[0] += len(message)

    channel = a.createDataChannel("bench")
    channel.on("open", opened.set)
    try:
        await open_channel(a, b, opened)
        pair = a.sctp.transport.transport._connection._nominated  # type: ignore
        kinds = {c.local_candidate.type for c in pair.values()}
        assert kinds == ({"host"} if turn is None else {"relay"}), kinds
        low = asyncio.Event()
        channel.bufferedAmountLowThreshold = 256 * 1024
        channel.on("bufferedamountlow", low.set)
        payload = bytes(MESSAGE)
        start = received[0]
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if channel.bufferedAmount > 1024 * 1024:
                low.clear()
                try:
                    async with asyncio.timeout(max(0.01, seconds - (time.monotonic() - started))):
                        await low.wait()
                except TimeoutError:
                    break
                continue
            channel.send(payload)
            await asyncio.sleep(0)
        return received[0] - start, time.monotonic() - started
    finally:
        await a.close()
        await b.close()


async def measure(kind: str, runs: int, seconds: float, cap: int) -> dict[str, Any]:
    rates, cpus, per_gb = [], [], []
    for _ in range(runs):
        if kind == "aiortc-direct":  # the baseline: no relay at all
            got, window = await aiortc_run(None, seconds, 0)
            rates.append(got / window / 1e6)
            continue
        with tempfile.TemporaryDirectory(prefix="hailing-relay-bench-") as tmp:
            cfg = TurnConfig("127.0.0.1", port=free_udp_port(), min_port=PORTS[0],
                             max_port=PORTS[1], allow_loopback_peers=True, max_bps=cap,
                             capacity_bps=0)
            async with TurnServer(Path(tmp) / "relay", cfg) as turn:
                assert turn.pid is not None
                cpu0 = cpu_seconds(turn.pid)
                got, window = await (channel_run(turn, seconds, cap) if kind == "channel"
                                     else aiortc_run(turn, seconds, cap))
                cpu = cpu_seconds(turn.pid) - cpu0  # setup included: a little high
        rates.append(got / window / 1e6)
        cpus.append(100 * cpu / window)
        per_gb.append(cpu / (got / 1e9) if got else float("nan"))
    out: dict[str, Any] = {
        "kind": kind, "max_bps": cap, "cap_MBps": cap / 1e6 if cap else None,
        "MBps_median": round(statistics.median(rates), 3), "MBps": [round(r, 3) for r in rates]}
    if cpus:
        out.update(turnserver_cpu_pct_median=round(statistics.median(cpus), 1),
                   turnserver_cpu_pct=[round(c, 1) for c in cpus],
                   turnserver_cpu_s_per_GB_median=round(statistics.median(per_gb), 2))
    return out


def coturn_version() -> str:
    out = subprocess.run(["turnserver", "--version"], capture_output=True, text=True,
                         check=False)
    return (out.stdout or out.stderr).strip().splitlines()[-1] if out.returncode == 0 else "?"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import hailing.rtc

    hailing.rtc.set_host_addresses(["127.0.0.1"])  # host candidates on loopback only
    results = []
    for kind in ("channel", "aiortc"):
        for cap in (0, args.cap):
            results.append(await measure(kind, args.runs, args.seconds, cap))
    results.append(await measure("aiortc-direct", args.runs, args.seconds, 0))
    return {"benchmark": "relay_throughput", "runs": args.runs, "seconds": args.seconds,
            "coturn": coturn_version(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "results": results}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--cap", type=int, default=500_000, help="max-bps of the capped runs")
    p.add_argument("--out", default=None)
    ns = p.parse_args()
    report = asyncio.run(main(ns))
    text = json.dumps(report, indent=2)
    print(text)
    if ns.out:
        Path(ns.out).write_text(text + "\n")
