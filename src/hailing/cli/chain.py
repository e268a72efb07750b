"""The chain commands of the ``hailing`` CLI: ``chain serve``, ``contract deploy``,
``rotation show|set``, ``endpoint publish|list``, and the ``--via contract`` options that
``send``, ``listen`` and ``chat`` take.

Output contracts (scripts rely on them): ``chain serve`` prints ``chain listening on
http://HOST:PORT`` as its first stdout line (``contract ADDRESS`` second with
``--deploy``) and one ``account ADDRESS key HEX`` line per funded account on stderr;
``contract deploy`` prints the contract's address alone; ``rotation show`` prints one JSON
object with ``user_id`` and ``prefix``; ``endpoint publish`` one JSON line;
``endpoint list --format wireguard`` WireGuard ``[Peer]`` sections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ..errors import LocalProtocolError, NotFoundError
from ..identity import format_contact_id
from ._common import _hostport
from ._shared import (
    GAS_KEY_ENV,
    _gas_key,
    _out,
    _peer,
    _rpc,
    _stop_event,
    add_contact_arg,
    add_contract_options,
    add_data_dir,
)


def _extra(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--extra is KEY=VALUE, not {text!r}")
    return key, value


# -- chain serve, contract deploy --------------------------------------------------------


async def cmd_chain_serve(args: argparse.Namespace) -> int:
    from ..chain.client import SignalingContract
    from ..chain.embedded import EmbeddedChain
    from ..chain.rpc_server import RpcServer

    chain = await asyncio.to_thread(EmbeddedChain, args.accounts)
    contract = None
    if args.deploy:
        contract = await asyncio.to_thread(SignalingContract.deploy, chain.web3, chain.accounts[0])
    server = RpcServer(chain)
    url = await server.start(*args.bind)
    try:
        stop = await _stop_event()  # before the first line: a signal right after it is a clean stop
        print(f"chain listening on {url}", flush=True)
        if contract:
            print(f"contract {contract}", flush=True)
        for account in chain.accounts:
            print(f"account {account.address} key {bytes(account.key).hex()}", file=sys.stderr,
                  flush=True)
        await stop.wait()
    finally:
        await server.aclose()
    return 0


def _deploy(rpc: str, gas_key: str | None) -> str:
    from ..chain.client import SignalingContract
    from ..signaling.contract_rdv import EMBEDDED, embedded_contract, gas_account, open_chain

    link = open_chain(rpc)
    if link.url == EMBEDDED and gas_key is None:
        return embedded_contract()
    payer = gas_account(gas_key, link)
    if payer is None:
        raise LocalProtocolError("deploying needs a gas key (--gas-key HEX), not 'rotating'")
    return SignalingContract.deploy(link.web3, payer)


async def cmd_contract_deploy(args: argparse.Namespace) -> int:
    from ..signaling.store import ChainConfig, save_chain_config

    gas = args.gas_key or os.environ.get(GAS_KEY_ENV) or None
    address = await asyncio.to_thread(_deploy, args.rpc, gas)
    print(address, flush=True)
    path = save_chain_config(args.data_dir, ChainConfig(rpc=args.rpc, contract=address))
    print(f"recorded in {path}", file=sys.stderr)
    return 0


# -- rotation secrets --------------------------------------------------------------------


async def cmd_rotation_show(args: argparse.Namespace) -> int:
    from ..chain.wallet import load_or_create_rotation

    secret = load_or_create_rotation(args.data_dir)
    print(json.dumps({"user_id": secret.user_id, "prefix": secret.prefix}), flush=True)
    return 0


async def cmd_rotation_set(args: argparse.Namespace) -> int:
    from ..signaling.store import SignalStore

    with SignalStore(args.data_dir) as store:
        store.set_rotation(args.contact, args.prefix, args.user_id)
    print(f"{format_contact_id(args.contact)} rotation recorded", flush=True)
    return 0


# -- endpoint records --------------------------------------------------------------------


async def cmd_endpoint_publish(args: argparse.Namespace) -> int:
    from ..signaling.endpoint import EndpointRecord, encode_record

    record = EndpointRecord(args.kind, args.endpoint, dict(args.extra))
    encode_record(record)  # a bad record fails here, before any network
    async with _peer(args, short_lived=True) as peer:
        stored = await peer.publish_endpoint(args.to, record)
    _out({"to": format_contact_id(args.to), "kind": args.kind, "endpoint": args.endpoint,
          "via": args.via, "stored": stored})
    return 0


async def cmd_endpoint_list(args: argparse.Namespace) -> int:
    from ..services.contacts import ContactBook  # lazily: cheap startup
    from ..signaling.endpoint import format_wireguard
    from ..signaling.store import SignalStore
    with ContactBook(args.data_dir) as book, SignalStore(args.data_dir) as store:
        names = {c.pubkey: c.name for c in book.list() if not c.blocked}
        records = [r for r in store.endpoints(args.contact) if r.pubkey in names]
    if args.format == "wireguard":
        records = [r for r in records if r.kind == "wireguard"]
        if not records:
            raise NotFoundError("no WireGuard endpoint of a contact is known")
        print("\n".join(format_wireguard(r.endpoint, r.extra, f"{names[r.pubkey]} {r.contact_id}")
                        for r in records), end="", flush=True)
        return 0
    for r in records:
        if args.format == "json":
            _out({"contact": r.contact_id, "name": names[r.pubkey], "kind": r.kind,
                  "endpoint": r.endpoint, "extra": r.extra, "timestamp": r.timestamp,
                  "via": r.via})
        else:
            extra = " ".join(f"{k}={v}" for k, v in sorted(r.extra.items()))
            print(f"{r.contact_id} {names[r.pubkey]} {r.kind} {r.endpoint} {extra}".rstrip())
    return 0


# -- parser --------------------------------------------------------------------------------


def add_chain_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    hostport = _hostport

    data_dir = add_data_dir

    def group(name: str, help_: str) -> Any:
        g = sub.add_parser(name, help=help_)
        return g.add_subparsers(dest=f"{name}_command", required=True,
                                parser_class=parser_class, metavar="COMMAND")

    cs = group("chain", "a local dev chain (embedded EVM) for several processes")
    p = cs.add_parser("serve", help="serve the embedded EVM over JSON-RPC until Ctrl-C",
                      description="First stdout line: 'chain listening on http://HOST:PORT' "
                      "('contract ADDRESS' second with --deploy); the funded accounts' keys "
                      "go to stderr, one 'account ADDRESS key HEX' a line. Every transaction "
                      "is mined at once.")
    p.add_argument("--bind", type=hostport, required=True, metavar="HOST:PORT")
    p.add_argument("--accounts", type=int, choices=range(1, 65), default=8, metavar="N",
                   help="funded accounts (1-64, default 8)")
    p.add_argument("--deploy", action="store_true", help="also deploy the signaling contract")
    p.set_defaults(func=cmd_chain_serve)

    ks = group("contract", "the signaling contract")
    p = ks.add_parser("deploy", help="deploy the signaling contract; prints its address",
                      description="Deploy the contract (compiled from its Vyper source) and "
                      "print its address, and record the RPC URL and address in the data "
                      "directory's chain.json for later --via contract commands.")
    p.add_argument("--rpc", type=_rpc, required=True, metavar="URL")
    p.add_argument("--gas-key", type=_gas_key, default=None, metavar="HEX",
                   help=f"the paying wallet's private key (or ${GAS_KEY_ENV})")
    data_dir(p)
    p.set_defaults(func=cmd_contract_deploy)

    rs = group("rotation", "daily-rotating addresses: share yours, record friends'")
    p = rs.add_parser("show", help="print this node's rotation secret (give it to friends)",
                      description="Print {\"user_id\", \"prefix\"} as JSON: what a friend "
                      "records with 'rotation set' to reach you through the contract.")
    data_dir(p)
    p.set_defaults(func=cmd_rotation_show)
    p = rs.add_parser("set", help="record a contact's rotation secret")
    add_contact_arg(p)
    p.add_argument("--user-id", required=True)
    p.add_argument("--prefix", required=True)
    data_dir(p)
    p.set_defaults(func=cmd_rotation_set)

    es = group("endpoint", "connection info for SIP servers and VPN (WireGuard) peers")
    p = es.add_parser("publish", help="send a sealed endpoint record to a contact",
                      description="Seal 'reach me at HOST:PORT' (+ extras) to CONTACT and send "
                      "it through the contract (default) or the DHT. Prints one JSON line.")
    add_contact_arg(p, "--to", dest="to")
    p.add_argument("--kind", choices=("sip", "wireguard"), required=True)
    p.add_argument("--endpoint", required=True, metavar="HOST:PORT")
    p.add_argument("--extra", type=_extra, action="append", default=[], metavar="K=V",
                   help="e.g. pubkey=<WireGuard key>, allowed=10.0.0.2/32 (repeatable)")
    p.add_argument("--bootstrap", type=hostport, action="append", default=[],
                   metavar="HOST:PORT", help="a DHT node (with --via dht)")
    p.add_argument("--bind", type=hostport, default=None, metavar="HOST:PORT")
    data_dir(p)
    add_contract_options(p, via=("contract", "dht"), default="contract")
    p.set_defaults(func=cmd_endpoint_publish, relay=None, ice_host=[], downloads=None,
                   _settings=("bootstrap", "bind", "via"))
    p = es.add_parser("list", help="the latest verified endpoint records of contacts",
                      description="Print the latest endpoint record of each contact and kind "
                      "(received by 'listen'); --format wireguard prints [Peer] sections.")
    data_dir(p)
    add_contact_arg(p, "--contact", required=False,
                    help="only this contact's records (a name or contact id)")
    p.add_argument("--format", choices=("text", "json", "wireguard"), default="text")
    p.set_defaults(func=cmd_endpoint_list)


__all__ = ["add_chain_commands"]
