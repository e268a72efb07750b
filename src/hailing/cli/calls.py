"""The call commands of the ``hailing`` CLI: listen, send, chat, and the relay baseline.

Registered by :func:`add_call_commands` from :mod:`hailing.cli`. Output contracts
(scripts rely on them): ``listen``
prints ``listening as <contact id>`` and then one JSON object per line per event;
``send`` prints one JSON line with at least ``connect_ms``, ``path`` (the ICE path,
docs/nat.md) and ``delivered``; ``send`` and
``chat`` exit 130 with one line on Ctrl-C (see docs/connection.md).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import HailingError, UsageError
from ..identity import format_contact_id
from ._common import Progress, _hostport, _interruptible, _positive_seconds, stdin_lines
from ._shared import (
    _out,
    _peer,
    _stop_event,
    add_contact_arg,
    add_network_options,
    report_chain,
)


def _downloads(args: argparse.Namespace, peer: Any) -> Path:
    d = getattr(peer, "downloads", None)
    return Path(d) if d is not None else Path(args.downloads or Path(args.data_dir) / "downloads")


#: The close reason given to connections when ``listen`` stops.
LISTEN_STOPPED = "listen stopped"


async def cmd_listen(args: argparse.Namespace) -> int:
    from ..daemon.events import add_contact_name
    from ..rtc.connection import FileAborted, FileReceived, FileStarted, TextMessage, clean_partials

    stop = await _stop_event()
    async with _peer(args, accept_any=True if args.accept_any else None) as peer:
        clean_partials(_downloads(args, peer))  # what a crashed or killed receiver left
        _out_line = f"listening as {peer.contact_id}"
        print(_out_line, flush=True)
        serving: dict[Any, asyncio.Task[None]] = {}

        def name_of(contact_id: str) -> str | None:
            entry = peer.contacts.get(contact_id)
            return entry.name if entry is not None else None

        def _emit(event: dict[str, Any]) -> None:
            _out(add_contact_name(event, name_of))  # "contact": the book's name, if any

        async def report_calls() -> None:
            while True:
                ev = await peer.calls.get()
                if ev.failed:
                    _emit({"event": "failed", "from": format_contact_id(ev.peer),
                           "reason": ev.reason})
                    continue
                _emit({"event": "call", "from": format_contact_id(ev.peer),
                       "accepted": ev.accepted, "reason": ev.reason})

        async def serve(conn: Any) -> None:
            who = conn.contact_id
            _emit({"event": "connected", "from": who})
            media = None
            if conn.tracks.received:  # a media call: its frames are read and dropped
                from ..rtc.media import CallMedia

                media = CallMedia(conn.tracks.received)
                await media.start()
            try:
                async for item in conn:
                    if isinstance(item, TextMessage):
                        _emit({"event": "message", "from": who, "text": item.text})
                    elif isinstance(item, FileStarted):
                        _emit({"event": "file-started", "from": who, "name": item.name, "size": item.size})
                    elif isinstance(item, FileAborted):
                        _emit({"event": "file-aborted", "from": who, "name": item.name, "reason": item.reason})
                    elif isinstance(item, FileReceived):
                        _emit({"event": "file", "from": who, "name": item.name, "path": str(item.path),
                               "size": item.size, "sha256": item.sha256})
                _emit({"event": "closed", "from": who, "reason": conn.close_reason})
            finally:
                if media is not None:
                    await media.stop()

        async def accept_all() -> None:
            async for conn in peer.incoming():
                t = asyncio.ensure_future(serve(conn))
                serving[conn] = t
                t.add_done_callback(functools.partial(forget, conn))

        def forget(conn: Any, _: object) -> None:
            serving.pop(conn, None)

        workers = [asyncio.ensure_future(report_calls()), asyncio.ensure_future(accept_all())]
        if any(c.name == "contract" for c in peer.couplers):
            workers.append(asyncio.ensure_future(report_chain(peer)))
        await stop.wait()
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # Hang up on everyone; each connection still reports a transfer it aborts and its
        # end, so the last lines say what was cut short.
        open_now = dict(serving)
        await asyncio.gather(*(c.close(LISTEN_STOPPED) for c in open_now), return_exceptions=True)
        if open_now:
            await asyncio.wait(open_now.values(), timeout=2.0)
        for t in open_now.values():
            t.cancel()
        await asyncio.gather(*open_now.values(), return_exceptions=True)
    return 0


async def cmd_send(args: argparse.Namespace) -> int:
    from ..rtc.connection import check_file, check_text

    # Everything that can be checked here is, before any network: no connection is made
    # for a message or file that would be refused.
    if (args.text is None) == (args.file is None):
        raise UsageError("give either TEXT or --file PATH")
    if args.text is not None:
        check_text(args.text)
    else:
        check_file(args.file)
    what = "the message" if args.file is None else "the file"
    interrupted, result = await _interruptible(_send(args, what))
    if interrupted or result is None:
        print(f"hailing: interrupted; {what} was not delivered", file=sys.stderr, flush=True)
        return 130
    _out(result)
    return 0


async def _send(args: argparse.Namespace, what: str) -> dict[str, Any]:
    from ..errors import ConnectionClosed
    from ..rtc.ice import selected_path

    progress = Progress()
    async with _peer(args, short_lived=True) as peer:
        progress.update(f"calling {format_contact_id(args.contact)[:12]}...")
        try:
            conn = await peer.connect(args.contact, timeout=args.timeout)
        finally:
            progress.done()
        try:
            result: dict[str, Any] = {"to": format_contact_id(args.contact),
                                      "connect_ms": round(conn.connect_ms or 0.0, 1),
                                      "path": selected_path(conn.pc)}
            if args.file is not None:
                result["sha256"] = await conn.send_file(args.file, progress=_file_progress(progress, args.file))
                result["bytes"] = Path(args.file).stat().st_size
            else:
                await conn.send_text(args.text)
            result["delivered"] = True
        except ConnectionClosed:
            raise HailingError(f"{what} was not delivered: {conn.close_reason}") from None
        finally:
            progress.done()
            await conn.close()
    return result


def _file_progress(progress: Progress, path: str) -> Callable[[int, int], None]:
    last = 0.0
    name = os.path.basename(path)

    def update(sent: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 0.1 or sent == total:
            last = now
            progress.update(f"sending {name}: {sent / 1e6:.1f} of {total / 1e6:.1f} MB "
                            f"({100 * sent // max(total, 1)} %)")

    return update


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
    from ._chat import Chat

    name = format_contact_id(args.contact)[:10]
    from ..services.contacts import ContactBook  # lazily: cheap startup
    with ContactBook(args.data_dir) as book:
        c = book.get(args.contact)
        if c is not None and c.name:
            name = c.name
    chat: Chat | None = None

    async def run() -> None:
        nonlocal chat
        from ..rtc.connection import clean_partials

        progress = Progress()
        async with _peer(args, short_lived=True) as peer:
            clean_partials(_downloads(args, peer))
            chat = Chat(peer, args.contact, name, args.timeout, progress.update, progress.done)
            await chat.run(stdin_lines(asyncio.get_running_loop()))

    interrupted, _ = await _interruptible(run())
    if interrupted:
        print(f"hailing: interrupted; left the chat with {name}", file=sys.stderr, flush=True)
        return 130
    return 0


# -- parser --------------------------------------------------------------------------------


def add_call_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    network = add_network_options

    p = sub.add_parser("listen", help="wait for calls; one JSON line per event",
                       description="Listen for calls. First line: 'listening as <contact id>'; "
                       "then one JSON object per line per event (call, connected, message, "
                       "file-started, file, file-aborted, closed with its reason; failed when "
                       "an accepted call did not connect; chain with --via contract). Ctrl-C "
                       "stops (exit 0), reporting transfers it cuts short as file-aborted.")
    network(p)
    p.add_argument("--accept-any", action="store_true",
                   help="accept calls from anyone not blocked (not only contacts)")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("send", help="connect to CONTACT and send TEXT or a file",
                       description="Connect with no server and send TEXT (or --file PATH). "
                       "Prints one JSON line with connect_ms and delivered once the peer "
                       "acknowledged it; exit 1 with one line if nobody answered or the peer "
                       "hung up; Ctrl-C: one line, exit 130. Text (64 KiB) and file (8 GiB) "
                       "limits are checked before connecting.")
    add_contact_arg(p)
    p.add_argument("text", nargs="?", default=None, metavar="TEXT",
                   help="the message (quote it when it has spaces)")
    p.add_argument("--file", default=None, metavar="PATH", help="send this file instead of TEXT")
    p.add_argument("--timeout", type=_positive_seconds, default=30.0, metavar="S",
                   help="seconds to wait for an answer (default 30)")
    network(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("relay", help="run the WebSocket signaling relay (the centralized baseline)",
                       description="Run the baseline relay until Ctrl-C. First line: "
                       "'relay listening on ws://HOST:PORT/ws'.")
    p.add_argument("--bind", type=_hostport, required=True, metavar="HOST:PORT")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("chat", help="interactive chat with CONTACT",
                       description="Call CONTACT and take its calls: both sides may run "
                       "'hailing chat' at once. Type lines, '/file PATH', '/quit'. Shows "
                       "'<name> left' when the other side hangs up. Ctrl-C: one line, exit 130.")
    add_contact_arg(p)
    p.add_argument("--timeout", type=_positive_seconds, default=30.0, metavar="S",
                   help="seconds to wait for an answer (default 30)")
    network(p)
    p.set_defaults(func=cmd_chat)


__all__ = ["add_call_commands"]
