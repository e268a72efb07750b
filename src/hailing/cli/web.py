"""``hailing open``: open the web app of the running daemon in the default browser.

It asks the daemon of the data directory (through its API, with the token of
``api.json``) for a fresh one-time sign-in link and hands it to the browser
(:mod:`webbrowser`), or prints it (``--print``). Without a running daemon it fails with
one line. Standard library only on this path, as for the other commands through a daemon.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import DaemonError
from ._shared import add_data_dir


async def cmd_open(args: argparse.Namespace) -> int:
    from ..daemon.client import find_daemon

    client = await find_daemon(args.data_dir)
    if client is None:
        raise DaemonError(f"no daemon runs for {args.data_dir}: start it with 'hailing up'")
    answer = await client.request("POST", "/api/web/code", {})
    url = answer.get("url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url.startswith("http://127.0.0.1:"):
        raise DaemonError("the daemon gave no sign-in link (is it older than this command?)")
    if args.print:
        print(url, flush=True)
        return 0
    opened = False
    if _graphical():
        import webbrowser

        try:
            opened = webbrowser.open(url, new=2)
        except webbrowser.Error:
            opened = False
    if not opened:
        print("hailing: no browser could be started here; open this link (valid one minute, "
              "once):", file=sys.stderr)
        print(url, flush=True)
    return 0


def _graphical() -> bool:
    """Whether a graphical browser can be started: not on a bare terminal, where Python's
    webbrowser would fall back to a text browser (lynx, w3m) that runs no JavaScript.
    ``$BROWSER`` set means the user chose one."""
    if sys.platform in ("darwin", "win32") or os.environ.get("BROWSER"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def add_open_command(sub: Any) -> None:
    p = sub.add_parser(
        "open", help="open the web app of the running daemon in the browser",
        description="Ask the daemon that runs for the data directory ('hailing up') for a "
        "one-time sign-in link and open it in the default browser: the app is then signed "
        "in with a cookie. The link is valid for one minute and only once.")
    add_data_dir(p)
    p.add_argument("--print", action="store_true",
                   help="print the link instead of opening a browser")
    p.set_defaults(func=cmd_open)
