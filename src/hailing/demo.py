"""``hailing demo``: the README's main job, on an embedded loopback testnet.

Starts a local DHT testnet (no server, no account, no internet), then shows a BEP44
immutable and mutable put/get round trip and a peer announce/lookup between two nodes
that never talked before, with the time of each step.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from typing import TypeVar

from .dht.bep44 import public_key
from .node import format_hostport
from .testnet import testnet

T = TypeVar("T")


async def _step(label: str, aw: Awaitable[T]) -> T:
    t0 = time.perf_counter()
    result = await aw
    print(f"  {label:<46} {(time.perf_counter() - t0) * 1000:8.1f} ms", flush=True)
    return result


async def run_demo(nodes: int = 20) -> int:
    print(f"hailing demo: a {nodes}-node DHT testnet on 127.0.0.1 (loopback only)", flush=True)
    t0 = time.perf_counter()
    async with testnet(nodes) as net:
        print(f"  {'start and bootstrap ' + str(nodes) + ' nodes':<46} "
              f"{(time.perf_counter() - t0) * 1000:8.1f} ms", flush=True)
        alice, bob = net[1], net[-1]
        print(f"alice = node {alice.node_id.hex()[:12]}… on {format_hostport(alice.address)}")
        print(f"bob   = node {bob.node_id.hex()[:12]}… on {format_hostport(bob.address)}")

        message = b"hello from alice, stored in the DHT"
        target = await _step("alice puts an immutable item", alice.put(message))
        got = await _step("bob gets it by its target", bob.get(target))
        print(f"    target {target.hex()} -> {got!r}")
        if got != message:
            print("demo FAILED: bob did not get alice's value")
            return 1

        seed = os.urandom(32)
        salt = b"status"
        await _step("alice puts a signed mutable item (seq 1)", alice.put_mutable(seed, b"online", salt))
        await _step("alice updates it (seq 2)", alice.put_mutable(seed, b"in a call", salt))
        item = await _step("bob gets the newest version", bob.get_mutable(public_key(seed), salt))
        if item is None or item.value != b"in a call" or item.seq != 2:
            print("demo FAILED: bob did not get alice's newest mutable item")
            return 1
        print(f"    key {item.pubkey.hex()[:16]}… salt {salt!r} -> {item.value!r} (seq {item.seq})")

        room = bytes(20)
        await _step("alice announces herself under an info-hash", alice.announce(room))
        peers = await _step("bob finds the peers of that info-hash", bob.get_peers(room))
        print(f"    peers: {', '.join(format_hostport(p) for p in peers)}")
        if alice.address not in peers:
            print("demo FAILED: bob did not find alice's announce")
            return 1
        queries = sum(sum(v for k, v in n.stats.items() if k.startswith("q_")) for n in net)
        print(f"ok: {nodes} nodes answered {queries} queries; no server was involved")
    await asyncio.sleep(0)
    return 0
