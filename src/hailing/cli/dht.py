"""The DHT commands of the ``hailing`` CLI: dht serve/put/get/..., testnet, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._secrets import read_secret, write_secret
from ..errors import HailingError, LocalProtocolError, NotFoundError, QueryTimeout, StorageError
from ._common import (
    Progress,
    _announce_port,
    _bootstrap,
    _hex20,
    _hex32,
    _hostport,
    _nonneg,
    _port,
    _positive,
    _salt,
    _stop_on_signal,
)

if TYPE_CHECKING:
    from ..node import Addr

# The DHT itself is imported by the commands that run it (each function below), so that
# building the parser, which every command does, stays cheap.

# -- helpers ---------------------------------------------------------------------------


def _client_bind(args: argparse.Namespace) -> Addr:
    from ..node import parse_hostport

    if getattr(args, "bind", None):
        return parse_hostport(args.bind, default_host="127.0.0.1")
    hosts = [h for h, _ in args.bootstrap]
    if hosts and all(h.startswith("127.") or h == "localhost" for h in hosts):
        return ("127.0.0.1", 0)
    if hosts and all(":" in h for h in hosts):
        return ("::", 0)
    return ("0.0.0.0", 0)


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace, progress: Progress) -> Any:
    """A short-lived read-only node (BEP43) joined to the network through --bootstrap."""
    from ..dht import DhtConfig
    from ..node import DhtNode, format_hostport

    if not args.bootstrap:
        raise LocalProtocolError("--bootstrap HOST:PORT is required")
    node = DhtNode(_client_bind(args), bootstrap=args.bootstrap, config=DhtConfig(read_only=True))
    await node.start()
    try:
        progress.update("joining the DHT")
        where = ", ".join(format_hostport(a) for a in args.bootstrap)
        try:
            size = await node.bootstrap()
        except QueryTimeout:
            size = 0
        if size == 0:
            raise HailingError(f"no DHT node answered at {where}")
        yield node
    finally:
        progress.done()
        await node.stop()


def _print_value(value: Any, raw: bool) -> None:
    from .. import bencode

    if raw:
        sys.stdout.buffer.write(bencode.encode(value))
        sys.stdout.buffer.flush()
        return
    if isinstance(value, bytes):
        try:
            print(value.decode("utf-8"))
        except UnicodeDecodeError:
            print(value.hex())
    else:
        print(bencode.encode(value).hex())


def _load_seed(path: Path) -> tuple[bytes, bool]:
    """The 32-byte ed25519 seed in ``path`` (a secret file: mode 600); created if missing."""
    seed = read_secret(path, limit=1024, missing_ok=True)
    if seed is None:
        seed = os.urandom(32)
        if write_secret(path, seed, overwrite=False):
            return seed, True
        seed = read_secret(path, limit=1024)  # another process created it first
    if len(seed) != 32:
        raise StorageError(f"key file {path} must hold exactly 32 bytes, it holds {len(seed)}")
    return seed, False


# -- commands --------------------------------------------------------------------------


async def cmd_serve(args: argparse.Namespace) -> int:
    from ..dht import DhtConfig
    from ..node import DhtNode, format_hostport

    stop = _stop_on_signal()
    config = DhtConfig(enforce_node_id=args.enforce_node_id)
    node = DhtNode(args.bind, data_dir=args.data_dir, bootstrap=args.bootstrap, config=config)
    await node.start()
    try:
        print(f"node {node.node_id.hex()} listening on {format_hostport(node.address)}", flush=True)
        if args.bootstrap or len(node.core.table):
            try:
                size = await node.bootstrap()
                print(f"joined: {size} nodes in the routing table", file=sys.stderr, flush=True)
            except HailingError as exc:
                print(f"warning: bootstrap failed ({exc}); serving anyway", file=sys.stderr)
        await stop.wait()
    finally:
        await node.stop()
    return 0


async def cmd_testnet(args: argparse.Namespace) -> int:
    from ..node import format_hostport
    from ..testnet import start_testnet

    stop = _stop_on_signal()
    progress = Progress()
    progress.update(f"starting {args.nodes} nodes")
    nodes = await start_testnet(args.nodes, args.bind, args.base_port)
    progress.done()
    try:
        print(f"bootstrap {format_hostport(nodes[0].address)}", flush=True)
        sizes = sorted(len(n.core.table) for n in nodes)
        print(
            f"testnet of {len(nodes)} nodes ready (routing tables: median {sizes[len(sizes) // 2]} nodes);"
            " Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    return 0


async def cmd_put(args: argparse.Namespace) -> int:
    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("storing")
        report = await node.put_report(os.fsencode(args.value))
    print(report.target.hex())
    print(f"stored on {report.stored} nodes", file=sys.stderr)
    return 0


async def cmd_get(args: argparse.Namespace) -> int:
    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("looking up")
        value = await node.get(args.target)
    if value is None:
        raise NotFoundError(f"no node has an item with target {args.target.hex()}")
    _print_value(value, args.raw)
    return 0


async def cmd_put_mutable(args: argparse.Namespace) -> int:
    from ..dht.bep44 import public_key

    seed, created = _load_seed(Path(args.key_file))
    pub = public_key(seed)
    if created:
        print(f"created key file {args.key_file}", file=sys.stderr)
    print(f"public key {pub.hex()}", file=sys.stderr)
    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("storing")
        target = await node.put_mutable(seed, os.fsencode(args.value), salt=args.salt, seq=args.seq)
    print(target.hex())
    return 0


async def cmd_get_mutable(args: argparse.Namespace) -> int:
    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("looking up")
        item = await node.get_mutable(args.pubkey, args.salt)
    if item is None:
        raise NotFoundError(f"no node has a mutable item for key {args.pubkey.hex()}")
    if args.json:
        value = item.value
        print(json.dumps({
            "value": value.decode("utf-8", "replace") if isinstance(value, bytes) else None,
            "value_bencoded_hex": item.value_bencoded.hex(),
            "seq": item.seq,
            "target": item.target.hex(),
        }))
        return 0
    _print_value(item.value, args.raw)
    if not args.raw:
        print(f"seq {item.seq}")
    return 0


async def cmd_ping(args: argparse.Namespace) -> int:
    from ..dht import DhtConfig
    from ..node import DhtNode, format_hostport

    bind = ("::", 0) if ":" in args.addr[0] else ("127.0.0.1", 0) if args.addr[0].startswith("127.") else ("0.0.0.0", 0)
    async with DhtNode(bind, config=DhtConfig(read_only=True)) as node:
        t0 = time.perf_counter()
        try:
            nid = await node.ping(args.addr)
        except QueryTimeout:
            raise QueryTimeout(f"no answer from {format_hostport(args.addr)}") from None
        ms = (time.perf_counter() - t0) * 1000
    print(f"{nid.hex()} answered in {ms:.1f} ms")
    return 0


async def cmd_find_node(args: argparse.Namespace) -> int:
    from ..node import format_hostport

    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("looking up")
        nodes = await node.find_node(args.target)
    for n in nodes:
        print(f"{n.id.hex()} {format_hostport(n.addr)}")
    return 0


async def cmd_announce(args: argparse.Namespace) -> int:
    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("announcing")
        stored = await node.announce(args.info_hash, args.port)
    print(f"announced to {stored} nodes")
    return 0


async def cmd_get_peers(args: argparse.Namespace) -> int:
    from ..node import format_hostport

    progress = Progress()
    async with _client(args, progress) as node:
        progress.update("looking up")
        peers = await node.get_peers(args.info_hash)
    for p in peers:
        print(format_hostport(p))
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return await run_demo(nodes=args.nodes)



def add_dht_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run a local testnet and show a put/get round trip")
    demo.add_argument("--nodes", type=_positive, default=20, help="testnet size (default 20)")
    demo.set_defaults(func=cmd_demo)

    tn = sub.add_parser("testnet", help="run N DHT nodes on loopback until Ctrl-C",
                        description="Run N nodes that bootstrap off each other. The first line "
                        "on stdout is 'bootstrap HOST:PORT'.")
    tn.add_argument("--nodes", type=_positive, required=True, help="how many nodes")
    tn.add_argument("--base-port", type=_port, default=0,
                    help="first UDP port (nodes use P..P+N-1); default: ports chosen by the OS")
    tn.add_argument("--bind", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    tn.set_defaults(func=cmd_testnet)

    dht = sub.add_parser("dht", help="DHT node and client commands")
    ds = dht.add_subparsers(dest="dht_command", required=True, parser_class=parser_class, metavar="COMMAND")

    def client(name: str, help: str, func: Callable[[argparse.Namespace], Awaitable[int]]) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = ds.add_parser(name, help=help, description=help)
        c.add_argument("--bootstrap", type=_bootstrap, action="extend", default=[],
                       metavar="HOST:PORT", help="a node to join through (repeatable; default: "
                       "the data directory's config.toml)")
        c.add_argument("--bind", default=None, metavar="HOST[:PORT]",
                       help="local address for the client node (default: chosen from --bootstrap)")
        c.add_argument("--data-dir", default=None, metavar="DIR",
                       help="the data directory whose config.toml gives the default "
                       "--bootstrap (default $HAILING_DATA_DIR, else ~/.local/share/hailing)")
        c.set_defaults(func=func, _settings=("bootstrap",), _required=("bootstrap",))
        return c

    serve = ds.add_parser("serve", help="run a DHT node in the foreground",
                          description="Run a node until Ctrl-C. The first line on stdout is "
                          "'node <40-hex id> listening on HOST:PORT'.")
    serve.add_argument("--bind", type=_hostport, required=True, metavar="HOST:PORT")
    serve.add_argument("--bootstrap", type=_bootstrap, action="extend", default=[], metavar="HOST:PORT",
                       help="node to join through (repeatable)")
    serve.add_argument("--data-dir", default=None, metavar="DIR",
                       help="keep the node id and routing table here across restarts")
    serve.add_argument("--enforce-node-id", action=argparse.BooleanOptionalAction, default=True,
                       help="BEP42: keep only nodes whose id matches their public IP (local "
                       "addresses are exempt; default: on)")
    serve.set_defaults(func=cmd_serve)

    c = client("put", "store VALUE (UTF-8 text) as an immutable item; print its 40-hex target", cmd_put)
    c.add_argument("value", metavar="VALUE")
    c = client("get", "print the immutable item TARGET (text, else hex); exit 1 if not found", cmd_get)
    c.add_argument("target", type=_hex20, metavar="TARGET")
    c.add_argument("--raw", action="store_true", help="write the bencoded value bytes instead")
    c = client("put-mutable", "sign and store VALUE as a mutable item; print its target", cmd_put_mutable)
    c.add_argument("value", metavar="VALUE")
    c.add_argument("--key-file", required=True, metavar="FILE",
                   help="32-byte ed25519 seed (created if missing); the public key goes to stderr")
    c.add_argument("--salt", type=_salt, default=b"", help="BEP44 salt (UTF-8, at most 64 bytes)")
    c.add_argument("--seq", type=_nonneg, default=None,
                   help="sequence number (default: one more than the network's)")
    c = client("get-mutable", "print a mutable item's value, then 'seq N'", cmd_get_mutable)
    c.add_argument("pubkey", type=_hex32, metavar="PUBKEY_HEX")
    c.add_argument("--salt", type=_salt, default=b"")
    c.add_argument("--raw", action="store_true", help="write the bencoded value bytes only")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c = client("find-node", "print the nodes closest to TARGET, one 'id host:port' a line", cmd_find_node)
    c.add_argument("target", type=_hex20, metavar="TARGET")
    c = client("announce", "announce PORT for INFO_HASH (BEP5 announce_peer)", cmd_announce)
    c.add_argument("info_hash", type=_hex20, metavar="INFO_HASH")
    c.add_argument("--port", type=_announce_port, required=True, help="the port to announce (1..65535)")
    c = client("get-peers", "print the peers announced for INFO_HASH, one a line", cmd_get_peers)
    c.add_argument("info_hash", type=_hex20, metavar="INFO_HASH")

    ping = ds.add_parser("ping", help="ping a DHT node and print its id")
    ping.add_argument("addr", type=_hostport, metavar="HOST:PORT")
    ping.set_defaults(func=cmd_ping)

