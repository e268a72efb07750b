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

import signal

# Ctrl-C while the command line is still being imported (a few tenths of a second) ends
# the process quietly, as any program's would, not with a traceback from deep inside some
# import. The usual handler (KeyboardInterrupt) is back at the end of this module.
_SIGINT_AT_IMPORT = signal.getsignal(signal.SIGINT)
if _SIGINT_AT_IMPORT is signal.default_int_handler:
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    except ValueError:  # imported from a thread other than the main one
        _SIGINT_AT_IMPORT = None

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from .. import __version__  # noqa: E402
from ..errors import HailingError, NotFoundError, UsageError  # noqa: E402
from ._common import _Parser  # noqa: E402
from ._recovery import with_recovery  # noqa: E402
from ._shared import prepare  # noqa: E402
from .calls import add_call_commands  # noqa: E402
from .chain import add_chain_commands  # noqa: E402
from .config import add_config_commands  # noqa: E402
from .couple import add_couple_commands  # noqa: E402
from .dht import add_dht_commands  # noqa: E402
from .identity import add_identity_commands  # noqa: E402
from .media import add_media_commands  # noqa: E402
from .remote import route_through_daemon  # noqa: E402
from .up import add_up_command  # noqa: E402
from .wallet import add_wallet_commands  # noqa: E402
from .web import add_open_command  # noqa: E402

if _SIGINT_AT_IMPORT is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hailing", description="Serverless WebRTC signaling over a Mainline DHT.",
                epilog="Everyday use: 'hailing id new --name NAME' once, 'hailing config set "
                "bootstrap HOST:PORT' once, then keep 'hailing up' running (your node) and use "
                "'hailing send CONTACT TEXT', 'hailing chat CONTACT', 'hailing contact ...'. "
                "'hailing COMMAND --help' tells more; the README has a walkthrough.")
    p.add_argument("--version", action="version", version=f"hailing {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    add_dht_commands(sub, _Parser)
    add_identity_commands(sub, _Parser)
    add_call_commands(sub, _Parser)
    add_media_commands(sub, _Parser)
    add_wallet_commands(sub, _Parser)
    add_chain_commands(sub, _Parser)
    add_config_commands(sub, _Parser)
    add_couple_commands(sub, _Parser)
    add_up_command(sub)
    add_open_command(sub)
    route_through_daemon(p)  # last: wraps the commands a running daemon serves
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return 130
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
