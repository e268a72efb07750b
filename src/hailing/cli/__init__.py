"""The ``hailing`` command line. Every error is one line on stderr and a non-zero exit.

Exit codes: 0 success, 1 the operation failed (not found, nobody answered, bad data
file), 2 wrong usage (also an unknown or ambiguous contact name), 130 ``send``/``chat``
interrupted by Ctrl-C (one line on stderr; long-running commands such as ``listen`` stop
on Ctrl-C with 0).

Before a command runs, :func:`hailing.cli._shared.prepare` fills in the data directory
(``--data-dir``, else ``$HAILING_DATA_DIR``, else ``$XDG_DATA_HOME/hailing``), the settings
of its ``config.toml`` and the public keys of contacts given by name. A storage error's
line ends with how to recover (:mod:`hailing.cli._recovery`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import HailingError, NotFoundError, UsageError
from ._common import _Parser
from ._recovery import with_recovery
from ._shared import prepare
from .calls import add_call_commands
from .chain import add_chain_commands
from .config import add_config_commands
from .dht import add_dht_commands
from .identity import add_identity_commands
from .remote import route_through_daemon
from .up import add_up_command
from .wallet import add_wallet_commands


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hailing", description="Serverless WebRTC signaling over a Mainline DHT.")
    p.add_argument("--version", action="version", version=f"hailing {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    add_dht_commands(sub, _Parser)
    add_identity_commands(sub, _Parser)
    add_call_commands(sub, _Parser)
    add_wallet_commands(sub, _Parser)
    add_chain_commands(sub, _Parser)
    add_config_commands(sub, _Parser)
    add_up_command(sub)
    route_through_daemon(p)  # last: wraps the commands a running daemon serves
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        prepare(args)
        code: int = asyncio.run(args.func(args))
        return code
    except UsageError as exc:
        print(f"hailing: error: {exc} (see 'hailing --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except NotFoundError as exc:
        print(f"hailing: {exc}", file=sys.stderr)
        return 1
    except HailingError as exc:
        print(f"hailing: error: {with_recovery(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `hailing ... | head -1`): not an error worth a trace.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
