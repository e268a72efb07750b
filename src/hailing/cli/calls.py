"""The peer commands of the ``hailing`` CLI: id, contact, status, listen, send, chat.

Registered by :func:`add_peer_commands` from :mod:`hailing.cli`. Output contracts
(scripts rely on them): ``id new`` prints the contact id as its first line; ``listen``
prints ``listening as <contact id>`` and then one JSON object per line per event;
``send`` prints one JSON line with at least ``connect_ms`` and ``delivered``; ``send`` and
``chat`` exit 130 with one line on Ctrl-C (see docs/connection.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..errors import HailingError, LocalProtocolError
from ..identity import (
    KEY_FILE,
    contact_qr,
    format_contact_id,
    load_identity,
    load_or_create_identity,
    parse_contact_id,
)
from ..node import Addr
from ..services.contacts import ContactBook
from ._common import Progress

PASSPHRASE_ENV = "HAILING_PASSPHRASE"


def _passphrase() -> str | None:
    return os.environ.get(PASSPHRASE_ENV) or None


def _contact(text: str) -> bytes:
    try:
        return parse_contact_id(text)
    except LocalProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# -- identity and contacts ---------------------------------------------------------------


async def cmd_id_new(args: argparse.Namespace) -> int:
    if (Path(args.data_dir) / KEY_FILE).exists():
        try:
            existing = load_identity(args.data_dir, _passphrase()).contact_id
        except HailingError as exc:  # encrypted (no or wrong passphrase) or damaged
            existing = f"cannot show it: {exc}"
        raise HailingError(f"{args.data_dir} already holds an identity: {existing}")
    ident = load_or_create_identity(args.data_dir, _passphrase())
    with ContactBook(args.data_dir) as book:
        if args.name:
            book.set_name(args.name)
    print(ident.contact_id, flush=True)
    if sys.stderr.isatty():
        with contextlib.suppress(LocalProtocolError):
            print(contact_qr(ident.contact_id), file=sys.stderr)
    return 0


async def cmd_id_show(args: argparse.Namespace) -> int:
    ident = load_identity(args.data_dir, _passphrase())
    with ContactBook(args.data_dir) as book:
        name = book.name()
    print(ident.contact_id)
    if name:
        print(f"name {name}")
    if args.qr:
        print(contact_qr(ident.contact_id))
    return 0


async def cmd_contact(args: argparse.Namespace) -> int:
    with ContactBook(args.data_dir) as book:
        action = args.contact_command
        if action == "add":
            c = book.add(args.contact, args.name)
        elif action == "block":
            c = book.block(args.contact)
        elif action == "allow":
            c = book.allow(args.contact)
        elif action == "remove":
            if not book.remove(args.contact):
                raise HailingError("no such contact")
            print(f"removed {format_contact_id(args.contact)}")
            return 0
        else:
            for c in book.list():
                print(f"{c.contact_id} {c.state} {c.name}")
            return 0
        print(f"{c.contact_id} {c.state} {c.name}")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    with ContactBook(args.data_dir) as book:
        if args.status:
            book.set_status(args.status)
        if args.accept_any is not None:
            book.set_accept_any(args.accept_any == "on")
        print(f"status {book.status()}, accept-any {'on' if book.accept_any() else 'off'}")
    return 0


# -- calls ---------------------------------------------------------------------------------


def _apply_ice(args: argparse.Namespace) -> None:
    from ..rtc import set_host_addresses

    if args.ice_host:
        set_host_addresses(args.ice_host)


def _peer(args: argparse.Namespace, accept_any: bool | None = None) -> Any:
    from ..peer import Peer

    if getattr(args, "via", None) == "contract":
        from .chain import contract_peer_kwargs

        _apply_ice(args)
        return Peer(args.data_dir, passphrase=_passphrase(), accept_any=accept_any,
                    downloads=args.downloads, **contract_peer_kwargs(args))
    if not args.bootstrap and not args.relay:
        raise LocalProtocolError("give --bootstrap HOST:PORT (or --relay URL)")
    _apply_ice(args)
    bind = args.bind or (("127.0.0.1", 0) if all(h.startswith("127.") for h, _ in args.bootstrap) else ("0.0.0.0", 0))
    return Peer(args.data_dir, bootstrap=args.bootstrap, bind=bind, passphrase=_passphrase(),
                accept_any=accept_any, downloads=args.downloads,
                backend="ws" if args.relay else "dht", relay_url=args.relay)


async def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


T = TypeVar("T")


async def _interruptible(work: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
    """Run ``work``; SIGINT/SIGTERM cancel it (it cleans up: hangs up, says ``abort``).
    Returns (interrupted, result). A second signal cancels the clean-up too."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        try:
            return False, await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if signals and task.cancelled() and (current is None or not current.cancelling()):
                return True, None
            raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _downloads(args: argparse.Namespace, peer: Any) -> Path:
    d = getattr(peer, "downloads", None)
    return Path(d) if d is not None else Path(args.downloads or Path(args.data_dir) / "downloads")


#: The close reason given to connections when ``listen`` stops.
LISTEN_STOPPED = "listen stopped"


async def cmd_listen(args: argparse.Namespace) -> int:
    from ..rtc.connection import FileAborted, FileReceived, FileStarted, TextMessage, clean_partials

    stop = await _stop_event()
    async with _peer(args, accept_any=True if args.accept_any else None) as peer:
        clean_partials(_downloads(args, peer))  # what a crashed or killed receiver left
        _out_line = f"listening as {peer.contact_id}"
        print(_out_line, flush=True)
        serving: dict[Any, asyncio.Task[None]] = {}

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
                if isinstance(item, TextMessage):
                    _out({"event": "message", "from": who, "text": item.text})
                elif isinstance(item, FileStarted):
                    _out({"event": "file-started", "from": who, "name": item.name, "size": item.size})
                elif isinstance(item, FileAborted):
                    _out({"event": "file-aborted", "from": who, "name": item.name, "reason": item.reason})
                elif isinstance(item, FileReceived):
                    _out({"event": "file", "from": who, "name": item.name, "path": str(item.path),
                          "size": item.size, "sha256": item.sha256})
            _out({"event": "closed", "from": who, "reason": conn.close_reason})

        async def accept_all() -> None:
            async for conn in peer.incoming():
                t = asyncio.ensure_future(serve(conn))
                serving[conn] = t
                t.add_done_callback(functools.partial(forget, conn))

        def forget(conn: Any, _: object) -> None:
            serving.pop(conn, None)

        workers = [asyncio.ensure_future(report_calls()), asyncio.ensure_future(accept_all())]
        if any(c.name == "contract" for c in peer.couplers):
            from .chain import report_chain

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
        raise LocalProtocolError("give either TEXT or --file PATH")
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

    progress = Progress()
    async with _peer(args) as peer:
        progress.update(f"calling {format_contact_id(args.contact)[:12]}...")
        try:
            conn = await peer.connect(args.contact, timeout=args.timeout)
        finally:
            progress.done()
        try:
            result: dict[str, Any] = {"to": format_contact_id(args.contact),
                                      "connect_ms": round(conn.connect_ms or 0.0, 1)}
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
    from ._chat import Chat, stdin_lines

    name = format_contact_id(args.contact)[:10]
    with ContactBook(args.data_dir) as book:
        c = book.get(args.contact)
        if c is not None and c.name:
            name = c.name
    chat: Chat | None = None

    async def run() -> None:
        nonlocal chat
        from ..rtc.connection import clean_partials

        progress = Progress()
        async with _peer(args) as peer:
            clean_partials(_downloads(args, peer))
            chat = Chat(peer, args.contact, name, args.timeout, progress.update, progress.done)
            await chat.run(stdin_lines(asyncio.get_running_loop()))

    interrupted, _ = await _interruptible(run())
    if interrupted:
        print(f"hailing: interrupted; left the chat with {name}", file=sys.stderr, flush=True)
        return 130
    return 0


# -- parser --------------------------------------------------------------------------------


def add_peer_commands(sub: Any, parser_class: type[argparse.ArgumentParser],
                      hostport: Callable[[str], Addr]) -> None:
    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True, metavar="DIR",
                       help="the identity's directory (key, contacts, DHT state)")

    def network(p: argparse.ArgumentParser) -> None:
        data_dir(p)
        p.add_argument("--bootstrap", type=hostport, action="append", default=[],
                       metavar="HOST:PORT", help="a DHT node to join through (repeatable; "
                       "required unless --relay)")
        p.add_argument("--relay", default=None, metavar="URL",
                       help="signal through this WebSocket relay (ws://HOST:PORT/ws) instead "
                       "of the DHT: the centralized baseline")
        p.add_argument("--bind", type=hostport, default=None, metavar="HOST:PORT",
                       help="local UDP address of this peer's DHT node")
        p.add_argument("--ice-host", action="append", default=[], metavar="IP",
                       help="only gather ICE host candidates on this address (repeatable; "
                       "also HAILING_ICE_HOSTS)")
        p.add_argument("--downloads", default=None, metavar="DIR",
                       help="where received files go (default DATA_DIR/downloads)")
        from .chain import add_contract_options

        add_contract_options(p)

    idp = sub.add_parser("id", help="create or show this node's identity")
    ids = idp.add_subparsers(dest="id_command", required=True, parser_class=parser_class, metavar="COMMAND")
    p = ids.add_parser("new", help="create an identity; prints its contact id first",
                       description="Create an identity in DIR. The first line of stdout is the "
                       f"contact id. The key is encrypted at rest if ${PASSPHRASE_ENV} is set.")
    data_dir(p)
    p.add_argument("--name", default=None, help="your display name")
    p.set_defaults(func=cmd_id_new)
    p = ids.add_parser("show", help="print the contact id (and name)")
    data_dir(p)
    p.add_argument("--qr", action="store_true", help="also print it as a QR code")
    p.set_defaults(func=cmd_id_show)

    cp = sub.add_parser("contact", help="manage contacts (allow/block lists)")
    cs = cp.add_subparsers(dest="contact_command", required=True, parser_class=parser_class, metavar="COMMAND")
    for name, help_ in (("add", "add (and allow) a contact"), ("block", "block a contact"),
                        ("allow", "allow a contact"), ("remove", "forget a contact")):
        p = cs.add_parser(name, help=help_)
        p.add_argument("contact", type=_contact, metavar="CONTACT")
        if name == "add":
            p.add_argument("--name", required=True)
        data_dir(p)
        p.set_defaults(func=cmd_contact)
    p = cs.add_parser("list", help="list contacts: '<contact id> <state> <name>' a line")
    data_dir(p)
    p.set_defaults(func=cmd_contact)

    p = sub.add_parser("status", help="show or set presence (available/busy/dnd) and accept-any")
    p.add_argument("status", nargs="?", choices=("available", "busy", "dnd"))
    p.add_argument("--accept-any", choices=("on", "off"), default=None,
                   help="accept calls from people not in the contacts")
    data_dir(p)
    p.set_defaults(func=cmd_status)

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
    p.add_argument("contact", type=_contact, metavar="CONTACT")
    p.add_argument("text", nargs="?", default=None, metavar="TEXT")
    p.add_argument("--file", default=None, metavar="PATH")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    network(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("relay", help="run the WebSocket signaling relay (the centralized baseline)",
                       description="Run the baseline relay until Ctrl-C. First line: "
                       "'relay listening on ws://HOST:PORT/ws'.")
    p.add_argument("--bind", type=hostport, required=True, metavar="HOST:PORT")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("chat", help="interactive chat with CONTACT",
                       description="Call CONTACT and take its calls: both sides may run "
                       "'hailing chat' at once. Type lines, '/file PATH', '/quit'. Shows "
                       "'<name> left' when the other side hangs up. Ctrl-C: one line, exit 130.")
    p.add_argument("contact", type=_contact, metavar="CONTACT")
    p.add_argument("--timeout", type=float, default=30.0)
    network(p)
    p.set_defaults(func=cmd_chat)
