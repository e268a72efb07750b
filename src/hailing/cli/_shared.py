"""What the peer command groups of the ``hailing`` CLI share: the passphrase, the contact
argument (a name or a contact id), JSON output lines, the ``--data-dir``, network and
``--via contract`` options, :func:`prepare` (which fills what the command line left out
from the environment and ``config.toml`` and resolves contact names, before a command
runs), and building a :class:`~hailing.peer.Peer` from the options.

Command modules (``identity``, ``calls``, ``chain``, ...) import this module and
:mod:`hailing.cli._common`, never each other (``tests/test_cli_modules.py`` checks it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import LocalProtocolError, NotFoundError, UsageError
from ..identity import PASSPHRASE_ENV, parse_contact_id
from ._common import _bootstrap, _hostport, _ice_ip, _stop_on_signal
from ._config import DATA_DIR_ENV, default_data_dir, load_config

ICE_HOSTS_ENV = "HAILING_ICE_HOSTS"
CONTACTS_DB = "peer.sqlite3"  # hailing.services.contacts.DB_NAME, without importing it
GAS_KEY_ENV = "HAILING_GAS_KEY"


def _passphrase() -> str | None:
    return os.environ.get(PASSPHRASE_ENV) or None


def _contact(text: str) -> bytes:
    try:
        return parse_contact_id(text)
    except LocalProtocolError as exc:
        if text.strip().lower().startswith("hlcard"):
            raise argparse.ArgumentTypeError("this is a contact card, not a contact id: add "
                                             "it with 'hailing contact import CARD'") from None
        raise argparse.ArgumentTypeError(str(exc)) from None


CONTACT_HELP = "a contact's name (as in 'hailing contact list') or contact id"


def add_contact_arg(p: argparse.ArgumentParser, *flags: str, dest: str = "contact",
                    required: bool = True, help: str = CONTACT_HELP) -> None:
    """A contact argument (positional ``dest``, or ``flags``): a name or a contact id,
    turned into the contact's public key by :func:`prepare`."""
    if flags:
        p.add_argument(*flags, dest=dest, required=required, default=None, metavar="CONTACT",
                       help=help)
    else:
        p.add_argument(dest, metavar="CONTACT", help=help)
    p.set_defaults(_contacts=(*(p.get_default("_contacts") or ()), dest))


def resolve_contact_arg(data_dir: str, text: str) -> bytes:
    """The public key that ``text`` (a contact id or a name) means in ``data_dir``'s
    contact book; :class:`UsageError` (exit 2) when unknown or ambiguous."""
    with contextlib.suppress(LocalProtocolError):
        return parse_contact_id(text)  # an id needs no contact book (even a corrupt one)
    from ..services.names import resolve_contact

    contacts: list[Any] = []
    if (Path(data_dir) / CONTACTS_DB).exists():
        from ..services.contacts import ContactBook

        with ContactBook(data_dir) as book:
            contacts = book.list()
    try:
        return resolve_contact(text, contacts)
    except (LocalProtocolError, NotFoundError) as exc:
        raise UsageError(str(exc)) from None


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def _stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM (see :func:`hailing.cli._common._stop_on_signal`)."""
    return _stop_on_signal()


# -- options -----------------------------------------------------------------------------


DATA_DIR_HELP = (f"the identity's directory: key, contacts, settings, DHT state (default "
                 f"${DATA_DIR_ENV}, else $XDG_DATA_HOME/hailing, i.e. ~/.local/share/hailing)")

#: The ``config.toml`` settings that :func:`prepare` applies to a peer command's options.
NETWORK_SETTINGS = ("bootstrap", "bind", "ice_hosts", "relay", "via", "downloads")


def add_data_dir(p: argparse.ArgumentParser, help: str = DATA_DIR_HELP) -> None:
    """``--data-dir``, defaulting to :func:`~hailing.cli._config.default_data_dir`."""
    p.add_argument("--data-dir", default=None, metavar="DIR", help=help)
    p.set_defaults(_default_data_dir=True)


def add_network_options(p: argparse.ArgumentParser) -> None:
    """``--data-dir``, the DHT/relay/ICE options and the contract options of a peer; the
    ones not given come from the data directory's ``config.toml`` (see :func:`prepare`)."""
    add_data_dir(p)
    p.add_argument("--bootstrap", type=_bootstrap, action="extend", default=[],
                   metavar="HOST:PORT", help="a DHT node to join through (repeatable; "
                   "'public': the public DHT's routers; required unless --relay or set in "
                   "config.toml: 'hailing config set bootstrap HOST:PORT')")
    p.add_argument("--relay", default=None, metavar="URL",
                   help="signal through this WebSocket relay (ws://HOST:PORT/ws) instead "
                   "of the DHT: the centralized baseline")
    p.add_argument("--bind", type=_hostport, default=None, metavar="HOST:PORT",
                   help="local UDP address of this peer's DHT node")
    p.add_argument("--ice-host", type=_ice_ip, action="append", default=[], metavar="IP",
                   help="only gather ICE host candidates on this address (repeatable; "
                   "also HAILING_ICE_HOSTS)")
    p.add_argument("--downloads", default=None, metavar="DIR",
                   help="where received files go (default DATA_DIR/downloads)")
    add_contract_options(p)
    p.set_defaults(_settings=NETWORK_SETTINGS)


def _address(text: str) -> str:
    from web3 import Web3

    if not Web3.is_address(text):
        raise argparse.ArgumentTypeError(f"not an Ethereum address: {text!r}")
    return str(Web3.to_checksum_address(text))


def _gas_key(text: str) -> str:
    if text == "rotating":
        return text
    raw = text.removeprefix("0x")
    if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise argparse.ArgumentTypeError("a gas key is a private key (64 hex digits) or "
                                         "'rotating'")
    return raw


def _rpc(text: str) -> str:
    if text != "embedded" and not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"--rpc is an http(s) URL or 'embedded', not {text!r}")
    return text


def _poll(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= 60:
        raise argparse.ArgumentTypeError("--poll is 0.01 to 60 seconds")
    return value


def add_contract_options(p: argparse.ArgumentParser, *, via: tuple[str, ...] = ("dht", "contract"),
                         default: str | None = None) -> None:
    """``--via`` and the options of the contract backend. ``--via`` not given comes from
    config.toml, else ``default``."""
    p.add_argument("--via", choices=via, default=None,
                   help="the rendezvous: the DHT, or the Ethereum signaling contract"
                   + (f" (default {default})" if default else ""))
    p.set_defaults(_via_default=default)
    p.add_argument("--rpc", type=_rpc, default=None, metavar="URL",
                   help="JSON-RPC endpoint of the chain (or 'embedded'); default: the one "
                   "recorded by 'contract deploy --data-dir'")
    p.add_argument("--contract", type=_address, default=None, metavar="ADDRESS",
                   help="the signaling contract (default: the recorded one)")
    p.add_argument("--gas-key", type=_gas_key, default=None, metavar="HEX",
                   help=f"private key of the wallet paying gas (or ${GAS_KEY_ENV}); "
                   "'rotating': pay from your own wallet of the day (fund it: 'hailing "
                   "wallet rotating'), which proves you to friends by wallet")
    p.add_argument("--poll", type=_poll, default=1.0, metavar="S",
                   help="seconds between two polls of the chain (default 1)")
    p.add_argument("--require-wallet", action="store_true",
                   help="(--via contract) refuse offers and records whose transaction was "
                   "not paid by the sender's own wallet of the day")


# -- defaults from the environment and config.toml ------------------------------------------


_METAVARS = {"bootstrap": "HOST:PORT", "bind": "HOST:PORT"}


def prepare(args: argparse.Namespace) -> None:
    """Fill in what the command line left out, before the command runs: the default data
    directory, and the ``config.toml`` settings the command takes (``args._settings``).
    A setting the command needs and nobody gave (``args._required``) is a usage error."""
    if getattr(args, "_default_data_dir", False):
        if args.data_dir is None:
            args.data_dir = str(default_data_dir())
            args._data_dir_from = (f"${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV)
                                   else "the default, $XDG_DATA_HOME/hailing")
        else:
            args._data_dir_from = "--data-dir"
    wanted: tuple[str, ...] = getattr(args, "_settings", ())
    if wanted:
        config = load_config(getattr(args, "data_dir", None) or default_data_dir())
        if "bootstrap" in wanted and not args.bootstrap:
            args.bootstrap = config.bootstrap
        if "bind" in wanted and args.bind is None:
            args.bind = config.bind
        if ("ice_hosts" in wanted and not args.ice_host and not os.environ.get(ICE_HOSTS_ENV)):
            args.ice_host = config.ice_hosts
        if "relay" in wanted and args.relay is None:
            args.relay = config.relay
        if "downloads" in wanted and args.downloads is None:
            args.downloads = config.downloads
        if "via" in wanted and args.via is None:
            args.via = config.via
        if "ladder" in wanted and args.ladder is None:
            args.ladder = config.ladder
        if "links" in wanted and args.links is None:
            args.links = config.links
    if hasattr(args, "_via_default") and args.via is None:
        args.via = args._via_default
    for name in getattr(args, "_contacts", ()):
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, resolve_contact_arg(args.data_dir, value))
    for name in getattr(args, "_required", ()):
        if not getattr(args, name):
            flag, what = "--" + name.replace("_", "-"), _METAVARS.get(name, "VALUE")
            raise UsageError(f"{flag} {what} is required (or set it once: 'hailing config "
                             f"set {name} {what}')")


# -- building a peer ---------------------------------------------------------------------


def contract_peer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Peer keyword arguments for ``--via contract`` (falling back to the recorded config)."""
    from ..signaling.store import load_chain_config

    config = load_chain_config(args.data_dir)
    rpc = args.rpc or config.rpc
    if not rpc:
        raise LocalProtocolError("give --rpc URL (or record one with 'hailing contract deploy "
                                 "--rpc URL')")
    gas = args.gas_key or os.environ.get(GAS_KEY_ENV) or None
    return {"backend": "contract", "rpc_url": rpc,
            "contract_address": args.contract or config.contract, "gas_key": gas,
            "contract_options": {"poll_interval": args.poll,
                                 "require_wallet": getattr(args, "require_wallet", False)}}


def _apply_ice(args: argparse.Namespace) -> None:
    from ..rtc import set_host_addresses

    if args.ice_host:
        set_host_addresses(args.ice_host)


def _peer(args: argparse.Namespace, accept_any: bool | None = None, *,
          short_lived: bool = False) -> Any:
    """The Peer that ``args`` (network options) describe; not started. A ``short_lived``
    one (a one-shot send) runs its DHT node BEP43 read-only: it is gone in a second, and a
    node that others put in their routing tables would cost their lookups a timeout each
    once it exits (issue 8 item 11). It still hears its answers: the storing nodes push
    them over the connection it opened."""
    from ..dht import DhtConfig
    from ..peer import Peer

    if getattr(args, "via", None) == "contract":
        _apply_ice(args)
        return Peer(args.data_dir, passphrase=_passphrase(), accept_any=accept_any,
                    downloads=args.downloads, **contract_peer_kwargs(args))
    if not args.bootstrap and not args.relay:
        raise LocalProtocolError("give --bootstrap HOST:PORT (or --relay URL), or set it once: "
                                 "'hailing config set bootstrap HOST:PORT'")
    _apply_ice(args)
    bind = args.bind or (("127.0.0.1", 0) if all(h.startswith("127.") for h, _ in args.bootstrap) else ("0.0.0.0", 0))
    return Peer(args.data_dir, bootstrap=args.bootstrap, bind=bind, passphrase=_passphrase(),
                accept_any=accept_any, downloads=args.downloads,
                backend="ws" if args.relay else "dht", relay_url=args.relay,
                dht_config=DhtConfig(read_only=True) if short_lived else None)


async def report_chain(peer: Any) -> None:
    """Print the contract watcher's lost/back events as JSON lines (for ``listen``)."""
    while True:
        status = await peer.coupler("contract").status_events.get()
        _out({"event": "chain", "up": status.up, "error": status.error})


__all__ = [
    "GAS_KEY_ENV",
    "PASSPHRASE_ENV",
    "add_contact_arg",
    "add_contract_options",
    "add_data_dir",
    "add_network_options",
    "contract_peer_kwargs",
    "prepare",
    "report_chain",
]
