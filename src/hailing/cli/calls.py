"""The call commands of the ``hailing`` CLI: listen, send, chat, and the relay baseline.

Registered by :func:`add_call_commands` from :mod:`hailing.cli`. Output contracts
(scripts rely on them): ``listen``
prints ``listening as <contact id>`` and then one JSON object per line per event;
``send`` prints one JSON line with at least ``connect_ms`` and ``delivered``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import HailingError, LocalProtocolError
from ..identity import format_contact_id
from ..services.contacts import ContactBook
from ._common import _hostport
from ._shared import (
    _out,
    _peer,
    _stop_event,
    add_contact_arg,
    add_network_options,
    report_chain,
)


async def cmd_listen(args: argparse.Namespace) -> int:
    stop = await _stop_event()
    async with _peer(args, accept_any=True if args.accept_any else None) as peer:
        _out_line = f"listening as {peer.contact_id}"
        print(_out_line, flush=True)
        tasks: set[asyncio.Task[Any]] = set()

        async def report_calls() -> None:
            while True:
                ev = await peer.calls.get()
                if ev.failed:
                    _out({"event": "failed", "from": format_contact_id(ev.peer),
                          "reason": ev.reason})
                    continue
                _out({"event": "call", "from": format_contact_id(ev.peer),
                      "accepted": ev.accepted, "reason": ev.reason})

        async def serve(conn: Any) -> None:
            who = conn.contact_id
            _out({"event": "connected", "from": who})
            async for item in conn:
                if hasattr(item, "text"):
                    _out({"event": "message", "from": who, "text": item.text})
                else:
                    _out({"event": "file", "from": who, "name": item.name, "path": str(item.path),
                          "size": item.size, "sha256": item.sha256})
            _out({"event": "closed", "from": who})

        async def accept_all() -> None:
            async for conn in peer.incoming():
                t = asyncio.ensure_future(serve(conn))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        workers = [asyncio.ensure_future(report_calls()), asyncio.ensure_future(accept_all())]
        if any(c.name == "contract" for c in peer.couplers):
            workers.append(asyncio.ensure_future(report_chain(peer)))
        await stop.wait()
        for t in [*workers, *tasks]:
            t.cancel()
        await asyncio.gather(*workers, *tasks, return_exceptions=True)
    return 0


async def cmd_send(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.file is None):
        raise LocalProtocolError("give either TEXT or --file PATH")
    if args.file is not None and not Path(args.file).is_file():
        raise LocalProtocolError(f"no such file: {args.file}")
    async with _peer(args) as peer:
        conn = await peer.connect(args.contact, timeout=args.timeout)
        try:
            result: dict[str, Any] = {"to": format_contact_id(args.contact),
                                      "connect_ms": round(conn.connect_ms or 0.0, 1)}
            if args.file is not None:
                result["sha256"] = await conn.send_file(args.file)
                result["bytes"] = Path(args.file).stat().st_size
            else:
                await conn.send_text(args.text)
            result["delivered"] = True
        finally:
            await conn.close()
    _out(result)
    return 0


async def cmd_relay(args: argparse.Namespace) -> int:
    from ..signaling.ws_relay import serve_relay

    task = asyncio.ensure_future(serve_relay(args.bind))
    stop = await _stop_event()
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for t in (task, waiter):
        t.cancel()
    results = await asyncio.gather(task, waiter, return_exceptions=True)
    if task in done and isinstance(results[0], HailingError):
        raise results[0]
    return 0


async def cmd_chat(args: argparse.Namespace) -> int:
    async with _peer(args) as peer:
        name = format_contact_id(args.contact)[:10]
        with ContactBook(args.data_dir) as book:
            c = book.get(args.contact)
            if c is not None and c.name:
                name = c.name
        print(f"calling {name}...", file=sys.stderr, flush=True)
        conn = await peer.connect(args.contact, timeout=args.timeout)
        print(f"connected in {conn.connect_ms:.0f} ms; type messages, /file PATH, /quit",
              file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def put(line: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(lines.put_nowait, line)

        def read_stdin() -> None:
            # A thread on the raw fd: add_reader fails on a file or /dev/null as stdin,
            # and sys.stdin's buffer would hide lines that arrived in one read.
            pending = b""
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                *complete, pending = (pending + data).split(b"\n")
                for raw in complete:
                    put(raw.decode(errors="replace").rstrip("\r"))
            if pending:
                put(pending.decode(errors="replace"))
            put(None)

        fd = sys.stdin.fileno()
        threading.Thread(target=read_stdin, name="hailing-chat-stdin", daemon=True).start()

        async def show() -> None:
            async for item in conn:
                if hasattr(item, "text"):
                    print(f"{name}: {item.text}", flush=True)
                else:
                    print(f"{name} sent {item.name} ({item.size} bytes) -> {item.path}", flush=True)
            lines.put_nowait(None)

        shower = asyncio.ensure_future(show())
        try:
            while (line := await lines.get()) is not None:
                if line == "/quit":
                    break
                try:
                    if line.startswith("/file "):
                        digest = await conn.send_file(line[6:].strip())
                        print(f"(file sent, sha256 {digest[:16]}...)", file=sys.stderr)
                    elif line:
                        await conn.send_text(line)
                except HailingError as exc:
                    print(f"(not sent: {exc})", file=sys.stderr)
        finally:
            shower.cancel()
            await asyncio.gather(shower, return_exceptions=True)
            await conn.close()
    return 0


# -- parser --------------------------------------------------------------------------------


def add_call_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    network = add_network_options

    p = sub.add_parser("listen", help="wait for calls; one JSON line per event",
                       description="Listen for calls. First line: 'listening as <contact id>'; "
                       "then one JSON object per line per event (call, connected, message, "
                       "file, closed; failed when an accepted call did not connect; chain "
                       "with --via contract). Ctrl-C stops.")
    network(p)
    p.add_argument("--accept-any", action="store_true",
                   help="accept calls from anyone not blocked (not only contacts)")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("send", help="connect to CONTACT and send TEXT or a file",
                       description="Connect with no server and send TEXT (or --file PATH). "
                       "Prints one JSON line with connect_ms and delivered once the peer "
                       "acknowledged it; exit 1 with one line if nobody answered.")
    add_contact_arg(p)
    p.add_argument("text", nargs="?", default=None, metavar="TEXT")
    p.add_argument("--file", default=None, metavar="PATH")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    network(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("relay", help="run the WebSocket signaling relay (the centralized baseline)",
                       description="Run the baseline relay until Ctrl-C. First line: "
                       "'relay listening on ws://HOST:PORT/ws'.")
    p.add_argument("--bind", type=_hostport, required=True, metavar="HOST:PORT")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("chat", help="interactive chat with CONTACT")
    add_contact_arg(p)
    p.add_argument("--timeout", type=float, default=30.0)
    network(p)
    p.set_defaults(func=cmd_chat)


__all__ = ["add_call_commands"]
