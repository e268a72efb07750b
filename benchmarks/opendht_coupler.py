"""OpenDHT (Jami's DHT, PyPI ``opendht``) as a signaling path for hailing's calls: a
measurement peer for the benchmarks, not part of hailing.

Jami signals a call by a ``put`` to a key derived from the callee, on which the callee
keeps a ``listen``; the answer comes back the same way. :class:`OpenDhtCoupler` does
exactly that with hailing's own sealed envelopes at hailing's own rendezvous keys (the
20-byte pair keys of :mod:`hailing.signaling.rendezvous`, used as OpenDHT InfoHashes): it
is :class:`~hailing.signaling.rendezvous.DhtRendezvous` over an OpenDHT node instead of a
hailing node, so everything above the signaling path (envelopes, policy, aiortc) is the
same code. Jami uses ``putEncrypted`` because its values are not sealed otherwise; ours
are envelopes already, so a plain ``put`` carries them.

Loopback only: every runner binds 127.0.0.1 (no IPv6 socket), peer discovery (multicast)
is off and nothing is bootstrapped but the local testnet.

    python benchmarks/opendht_coupler.py testnet --nodes 20 [--bootstrap HOST:PORT]
        # first stdout line "bootstrap 127.0.0.1:PORT"; runs until stdin closes or SIGTERM

Caveat of the binding (opendht 4.4.2): ``ListenToken._cb`` is a class attribute shared by
all tokens, and ``cancelListen`` drops a reference to the callback of the *latest* listen,
not of the token's own: two cancels free a callback the DHT still calls (a crash). Every
cancel here goes through :func:`_cancel_listen`, which hands it a sacrificial reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

import opendht

from hailing.errors import HailingError, LocalProtocolError
from hailing.peer import Peer
from hailing.session.coupler import Capabilities, Inlet, NoReplyHints, SignalKind
from hailing.signaling.rendezvous import DhtRendezvous

LOOPBACK = "127.0.0.1"
#: The largest value OpenDHT stores (64 KiB, its ``MAX_VALUE_SIZE``).
OPENDHT_MAX_VALUE = 64 * 1024
#: Longest a put may take before it counts as failed (OpenDHT reports failure itself much
#: sooner when no node answers).
PUT_TIMEOUT = 30.0


def infohash(key: bytes) -> Any:
    """A 20-byte key as an OpenDHT InfoHash (its constructor takes hex)."""
    if len(key) != 20:
        raise ValueError("OpenDHT keys are 20 bytes")
    return opendht.InfoHash(key.hex().encode())


def loopback_config() -> Any:
    cfg = opendht.DhtConfig()
    cfg.setPeerDiscovery(False, False)  # no multicast discovery on the LAN
    return cfg


def start_runner(bootstrap: tuple[str, int] | None = None) -> Any:
    """A threaded DhtRunner on 127.0.0.1 (IPv4 only), port chosen by the OS."""
    runner = opendht.DhtRunner()
    runner.run(port=0, ipv4=LOOPBACK, config=loopback_config())
    if bootstrap is not None:
        runner.bootstrap(bootstrap[0], str(bootstrap[1]))
    return runner


def runner_address(runner: Any) -> tuple[str, int]:
    return (LOOPBACK, int(runner.getBound().getPort()))


class _Sacrifice:
    """What ``cancelListen`` drops a reference to instead of a live callback."""


def _cancel_listen(runner: Any, token: Any) -> None:
    sacrifice = _Sacrifice()
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(sacrifice))  # the reference cancel drops
    opendht.ListenToken._cb["cb"] = sacrifice
    runner.cancelListen(token)


def stop_runners(runners: list[Any], timeout: float = 10.0) -> None:
    """Shut every runner down and join its thread (blocking)."""
    done = threading.Semaphore(0)
    for r in runners:
        r.shutdown(done.release)
    for _ in runners:
        done.acquire(timeout=timeout)
    for r in runners:
        r.join()


class OpenDhtNode:
    """One OpenDHT runner with the async API hailing's DhtRendezvous asks of a node
    (``post``, ``listen``, ``unlisten``) plus :meth:`inbox` for what the listens hear.

    Callbacks run on the runner's own thread; they hand values to the event loop with
    ``call_soon_threadsafe`` (what an asyncio application of OpenDHT must do).
    """

    def __init__(self, bootstrap: tuple[str, int]) -> None:
        self.bootstrap = bootstrap
        self.runner: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[tuple[bytes, bytes, float]] = asyncio.Queue()
        self._tokens: dict[bytes, Any] = {}
        self._live: dict[bytes, list[bool]] = {}  # key -> [still listening] (thread-shared)

    @property
    def address(self) -> tuple[str, int]:
        return runner_address(self.runner)

    async def start(self) -> OpenDhtNode:
        self._loop = asyncio.get_running_loop()
        self.runner = start_runner(self.bootstrap)
        return self

    async def stop(self) -> None:
        if self.runner is None:
            return
        for flag in self._live.values():
            flag[0] = False
        runner, self.runner = self.runner, None
        await asyncio.to_thread(stop_runners, [runner])

    async def post(self, key: bytes, value: bytes) -> int:
        """``put`` ``value`` at ``key``; returns how many nodes stored it."""
        loop = self._loop
        assert loop is not None and self.runner is not None
        fut: asyncio.Future[tuple[bool, int]] = loop.create_future()

        def done(ok: bool, nodes: list[Any]) -> None:
            loop.call_soon_threadsafe(_settle, fut, (bool(ok), len(nodes)))

        self.runner.put(infohash(key), opendht.Value(value), done)
        ok, stored = await asyncio.wait_for(fut, PUT_TIMEOUT)
        if not ok:
            raise HailingError("the OpenDHT put failed (no node stored the value)")
        return stored

    async def listen(self, key: bytes, ttl: float = 300.0) -> int:
        """``listen`` on ``key`` until :meth:`unlisten` (OpenDHT renews it itself). OpenDHT
        does not report when the storing nodes registered the listen: returns 0."""
        loop = self._loop
        assert loop is not None and self.runner is not None
        if key in self._tokens:
            return 0
        live = [True]
        inbox = self._inbox

        def on_value(value: Any, expired: bool) -> bool:
            if not live[0]:
                return False  # stop listening
            if not expired:
                loop.call_soon_threadsafe(inbox.put_nowait, (key, value.data, time.perf_counter()))
            return True

        self._live[key] = live
        self._tokens[key] = self.runner.listen(infohash(key), on_value)
        return 0

    def unlisten(self, key: bytes) -> None:
        token = self._tokens.pop(key, None)
        live = self._live.pop(key, None)
        if live is not None:
            live[0] = False
        if token is not None and self.runner is not None:
            _cancel_listen(self.runner, token)

    async def inbox(self) -> tuple[bytes, bytes, float]:
        """(key, value, perf_counter when the runner's thread called back)."""
        return await self._inbox.get()


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


class OpenDhtCoupler(NoReplyHints):
    """hailing's rendezvous (pair keys, public inbox, listen set) over OpenDHT put/listen:
    a :class:`~hailing.session.coupler.Coupler` (named ``opendht``) for a Peer's
    ``couplers=``. Its ``owner`` (the Peer, set before it starts) gives the identity and
    the call policy's listen set when the coupler starts."""

    name = "opendht"
    capabilities = Capabilities(needs_wallet=False, typical_latency_s=0.05, private=True,
                                reach="anyone", max_blob=OPENDHT_MAX_VALUE)

    def __init__(self, bootstrap: tuple[str, int], owner: Peer | None = None) -> None:
        self.node = OpenDhtNode(bootstrap)
        self.owner = owner
        self.rendezvous: DhtRendezvous | None = None

    async def start(self, sink: Inlet) -> None:
        owner = self.owner
        if owner is None or owner.identity is None or owner.policy is None:
            raise LocalProtocolError("an OpenDhtCoupler starts with its started Peer")
        policy = owner.policy
        rdv = self.rendezvous = DhtRendezvous(self.node, owner.identity, policy.allowed,
                                              policy.accept_any, owner._clock)
        await self.node.start()
        await rdv.refresh()

        async def pump() -> None:
            while True:
                key, value, _ = await self.node.inbox()
                if rdv.knows(key):
                    sink.put_nowait(value)

        sink.loop(pump, "opendht pump")

    def _rdv(self) -> DhtRendezvous:
        if self.rendezvous is None:
            raise LocalProtocolError("the OpenDHT coupler is not started")
        return self.rendezvous

    async def expect_from(self, peer: bytes) -> None:
        await self._rdv().expect_from(peer)

    async def send(self, peer: bytes, blob: bytes, kind: SignalKind) -> int:
        # As hailing's DHT coupler: an offer goes to the public inbox too.
        return await self._rdv().send(peer, blob, public=kind == "offer", kind=kind)

    async def refresh(self) -> int:
        return await self._rdv().refresh()

    async def aclose(self) -> None:
        if self.rendezvous is not None:
            self.rendezvous.close()
        await self.node.stop()


def opendht_peer(data_dir: str | os.PathLike[str], bootstrap: tuple[str, int],
                 **kw: Any) -> Peer:
    """A Peer whose calls are signaled through OpenDHT, bootstrapped off ``bootstrap``;
    everything else (envelopes, policy, aiortc) is the Peer's own."""
    coupler = OpenDhtCoupler(bootstrap)
    peer = Peer(data_dir, couplers=[coupler], **kw)
    coupler.owner = peer
    return peer


# -- a testnet of OpenDHT runners -------------------------------------------------------


class OpenDhtTestnet:
    """N runners on 127.0.0.1 in this process (each its own thread), bootstrapped off the
    first. ``with OpenDhtTestnet(20) as net: net.bootstrap``."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("a testnet needs at least one node")
        self.n = n
        self.runners: list[Any] = []

    def start(self, settle: float = 1.0,
              join: tuple[str, int] | None = None) -> OpenDhtTestnet:
        """Start the runners (the first joins ``join``, a node of another testnet
        process, if given) and give their joins ``settle`` seconds."""
        first = start_runner(join)
        self.runners.append(first)
        boot = runner_address(first)
        for _ in range(1, self.n):
            self.runners.append(start_runner(boot))
        if self.n > 1:
            first.bootstrap(*map(str, runner_address(self.runners[1])))
        time.sleep(settle)  # let the joins' searches fill the routing tables
        return self

    @property
    def bootstrap(self) -> tuple[str, int]:
        return runner_address(self.runners[0])

    def stop(self) -> None:
        runners, self.runners = self.runners, []
        stop_runners(runners)

    def __enter__(self) -> OpenDhtTestnet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve_testnet(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    join = None
    if args.bootstrap:
        host, _, port = args.bootstrap.rpartition(":")
        join = (host, int(port))
    net = OpenDhtTestnet(args.nodes).start(join=join)
    try:
        host, port = net.bootstrap
        print(f"bootstrap {host}:{port}", flush=True)

        def watch_stdin() -> None:  # the parent went away: stop too
            with contextlib.suppress(Exception):
                sys.stdin.read()
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        stop.wait()
    finally:
        net.stop()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    tn = sub.add_parser("testnet", help="run N OpenDHT runners on 127.0.0.1")
    tn.add_argument("--nodes", type=int, default=20)
    tn.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                    help="join this node (of another testnet process) first")
    args = ap.parse_args()
    return _serve_testnet(args)


if __name__ == "__main__":
    sys.exit(main())
