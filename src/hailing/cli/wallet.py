"""The wallet commands of the ``hailing`` CLI: ``wallet warp`` and ``wallet rotating``.

Registered by :func:`add_wallet_commands` from :mod:`hailing.cli`. Output contracts
(scripts rely on them): ``wallet warp`` prints one JSON object with ``private_key`` (64
hex digits) and ``address`` (EIP-55); ``wallet rotating`` prints the day's address alone on
one line. A bad argument is one line and exit 2; an unusable data directory exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from ..chain.wallet import (
    ROTATION_FILE,
    Wallet,
    _utf8,
    load_or_create_rotation,
    utc_day,
    warp_wallet,
)
from ..errors import LocalProtocolError
from ._shared import add_data_dir

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _text_arg(what: str, allow_empty: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            _utf8(text, what, allow_empty=allow_empty)
        except LocalProtocolError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def _day(text: str) -> date:
    if _ISO_DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}")


async def _derive(fn: Callable[..., Wallet], *args: Any) -> Wallet:
    """Run a (blocking, ~1 s) warp derivation in a thread; a progress note on a terminal."""
    tty = sys.stderr.isatty()
    if tty:
        sys.stderr.write("deriving (scrypt, ~1 s)…")
        sys.stderr.flush()
    try:
        return await asyncio.to_thread(fn, *args)
    finally:
        if tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


async def cmd_warp(args: argparse.Namespace) -> int:
    wallet = await _derive(warp_wallet, args.passphrase, args.salt)
    print(json.dumps({"private_key": wallet.private_key, "address": wallet.address}), flush=True)
    return 0


async def cmd_rotating(args: argparse.Namespace) -> int:
    secret = load_or_create_rotation(args.data_dir)
    day = args.date if args.date is not None else utc_day(datetime.now(UTC))
    wallet = await _derive(secret.wallet_for, day)
    print(wallet.address, flush=True)
    return 0


def add_wallet_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    wp = sub.add_parser("wallet", help="Ethereum warp wallets and daily-rotating addresses")
    ws = wp.add_subparsers(dest="wallet_command", required=True, parser_class=parser_class,
                           metavar="COMMAND")

    p = ws.add_parser("warp", help="print the WarpWallet of a passphrase and salt as JSON",
                      description="keybase's WarpWallet derivation (scrypt N=2^18 r=8 p=1 and "
                      "PBKDF2-HMAC-SHA256 2^16, XORed), giving an Ethereum wallet. Prints one "
                      "JSON object: {\"private_key\": 64 hex, \"address\": EIP-55}. Note that "
                      "command-line arguments are visible to other local users.")
    p.add_argument("--passphrase", required=True, type=_text_arg("passphrase", False),
                   help="the passphrase (UTF-8, not empty)")
    p.add_argument("--salt", required=True, type=_text_arg("salt", True),
                   help="the salt (UTF-8; keybase suggests an email address; may be empty)")
    p.set_defaults(func=cmd_warp)

    p = ws.add_parser("rotating", help="print this node's address of a day",
                      description="Print the day's rotating address: warp(prefix + "
                      "'YYYY-MM-DD', user id) with the (prefix, user id) kept in "
                      f"DIR/{ROTATION_FILE}, created (mode 600) if missing.")
    add_data_dir(p)
    p.add_argument("--date", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="the day (default: today, UTC)")
    p.set_defaults(func=cmd_rotating)
