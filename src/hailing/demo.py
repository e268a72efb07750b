"""``hailing demo``: the README's main job, on an embedded loopback testnet.

Starts a local DHT testnet (no server, no account, no internet), then shows a BEP44
immutable and mutable put/get round trip and a peer announce/lookup between two nodes
that never talked before, with the time of each step.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from .dht.bep44 import public_key
from .node import DhtNode, format_hostport
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
        if not await _peers(net):
            return 1
        queries = sum(sum(v for k, v in n.stats.items() if k.startswith("q_")) for n in net)
        print(f"ok: {nodes} nodes answered {queries} queries; no server was involved")
    await asyncio.sleep(0)
    return 0


async def _peers(net: list[DhtNode]) -> bool:
    """Two identities connect through the testnet: no server, sealed signaling."""
    from .peer import Peer
    from .rtc import set_host_addresses

    set_host_addresses(["127.0.0.1"])  # the demo stays on loopback
    boot = [net[0].address]
    print("two people, each with an identity and a DHT node of their own:")
    with tempfile.TemporaryDirectory(prefix="hailing-demo-") as tmp:
        root = Path(tmp)
        alice = await _step("alice starts (new identity, joins the DHT)",
                            Peer(root / "alice", bootstrap=boot).start())
        bob = await _step("bob starts (new identity, joins the DHT)",
                          Peer(root / "bob", bootstrap=boot).start())
        try:
            print(f"    alice is {alice.contact_id}")
            print(f"    bob   is {bob.contact_id}")
            assert alice.contacts is not None and bob.contacts is not None
            alice.contacts.add(bob.contact_id, "bob")
            bob.contacts.add(alice.contact_id, "alice")
            await _step("bob listens on today's key for alice", bob.refresh())
            conn = await _step("alice connects to bob (sealed offer via the DHT)",
                               alice.connect(bob.contact_id, timeout=20))
            incoming = await bob.accept(10)
            print(f"    authenticated data channel, connect time {conn.connect_ms:.0f} ms")
            await _step("alice sends a message; bob acknowledges", conn.send_text("hi bob!"))
            msg = await incoming.recv()
            print(f"    bob received: {getattr(msg, 'text', msg)!r}")
            path = root / "photo.bin"
            path.write_bytes(os.urandom(256 * 1024))
            digest = await _step("alice sends a 256 KiB file (SHA-256 checked)",
                                 conn.send_file(path))
            got = await incoming.recv()
            ok = getattr(got, "sha256", None) == digest
            print(f"    bob saved {getattr(got, 'path', '?')} ({'verified' if ok else 'MISMATCH'})")
            await conn.close()
            return ok
        finally:
            await alice.stop()
            await bob.stop()
