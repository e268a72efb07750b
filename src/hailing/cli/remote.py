"""CLI commands through a running daemon.

While ``hailing up`` runs for a data directory, ``send``, ``chat``, ``contact``,
``status`` and ``endpoint publish`` go through its local API instead of starting a DHT
node of their own (``--no-daemon`` forces the one-shot way). Their output is exactly
what the one-shot command prints (``send``: one JSON line with ``connect_ms`` and
``delivered``; errors: one line), so scripts cannot tell the difference, except that a
send through a daemon is quick and reuses the daemon's open link to the contact.

:func:`route_through_daemon` wires this in after the parser is built: each routed
command gets ``--no-daemon`` and its handler is wrapped to look for a daemon first
(``DATA_DIR/api.json`` and a liveness request; see :mod:`hailing.daemon.client`). A
``contact`` subcommand with no API route runs locally and then asks the daemon to listen
again, so a contact added that way is reachable at once too.

Only stdlib and :mod:`hailing.daemon.client` are imported on this path (``chat`` alone
imports aiohttp, for the event WebSocket).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ..daemon.client import DaemonClient, find_daemon

Command = Callable[[argparse.Namespace], Awaitable[int]]
Remote = Callable[[argparse.Namespace, DaemonClient], Awaitable[int]]

T = TypeVar("T")
#: Seconds a request may take beyond the send's own --timeout.
MARGIN = 15.0


def _ref(contact: object) -> str:
    """A contact argument (public key bytes, contact id or name) as the API takes it."""
    if isinstance(contact, bytes):
        from ..identity import format_contact_id

        return format_contact_id(contact)
    return str(contact)


def _path(ref: str) -> str:
    return quote(ref, safe="")


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# -- the commands ------------------------------------------------------------------------


async def send(args: argparse.Namespace, client: DaemonClient) -> int:
    from ..errors import LocalProtocolError, UsageError

    if (args.text is None) == (args.file is None):
        raise UsageError("give either TEXT or --file PATH")
    body: dict[str, Any] = {"contact": _ref(args.contact), "timeout": args.timeout}
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise LocalProtocolError(f"no such file: {args.file}")
        body["file"] = str(path.resolve())
        size = path.stat().st_size
        timeout = args.timeout + MARGIN + size / 1e6
    else:
        body["text"] = args.text
        timeout = args.timeout + MARGIN
    what = "the message" if args.file is None else "the file"
    interrupted, result = await _interruptible(
        client.request("POST", "/api/send", body, timeout=timeout))
    if interrupted or result is None:
        # Closing the request made the daemon cancel the send (a file is aborted at the
        # receiver), as the one-shot command does.
        print(f"hailing: interrupted; {what} was not delivered", file=sys.stderr, flush=True)
        return 130
    _out(result)
    return 0


async def _interruptible(work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run ``work``; SIGINT/SIGTERM cancel it. Returns (interrupted, result)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    signalled = False

    def on_signal() -> None:
        nonlocal signalled
        signalled = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        return False, await task
    except asyncio.CancelledError:
        if signalled and task.cancelled():
            return True, None
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _contact_line(c: dict[str, Any]) -> str:
    return f"{c['contact_id']} {c['state']} {c['name']}"


async def contact(args: argparse.Namespace, client: DaemonClient) -> int:
    action = args.contact_command
    if action == "list":
        for c in (await client.request("GET", "/api/contacts"))["contacts"]:
            print(_contact_line(c))
        return 0
    ref = _ref(args.contact)
    if action == "add":
        c = await client.request("POST", "/api/contacts", {"contact": ref, "name": args.name})
    elif action in ("block", "allow"):
        body = {"name": args.name} if getattr(args, "name", None) else {}
        c = await client.request("POST", f"/api/contacts/{_path(ref)}/{action}", body)
    elif action == "rename":
        c = await client.request("POST", f"/api/contacts/{_path(ref)}/rename",
                                 {"name": args.name})
    else:  # remove
        gone = await client.request("DELETE", f"/api/contacts/{_path(ref)}")
        print(f"removed {gone['removed']}")
        return 0
    print(_contact_line(c))
    return 0


async def status(args: argparse.Namespace, client: DaemonClient) -> int:
    body: dict[str, Any] = {}
    if args.status:
        body["status"] = args.status
    if args.accept_any is not None:
        body["accept_any"] = args.accept_any == "on"
    if body:
        now = await client.request("POST", "/api/status", body)
    else:
        now = await client.request("GET", "/api/status")
    print(f"status {now['status']}, accept-any {'on' if now['accept_any'] else 'off'}")
    return 0


async def endpoint_publish(args: argparse.Namespace, client: DaemonClient) -> int:
    body = {"to": _ref(args.to), "kind": args.kind, "endpoint": args.endpoint,
            "extra": dict(args.extra)}
    _out(await client.request("POST", "/api/endpoint", body, timeout=120.0))
    return 0


async def chat(args: argparse.Namespace, client: DaemonClient) -> int:
    """Interactive chat through the daemon: lines typed go out as messages (``/file PATH``
    sends a file, ``/quit`` ends); the contact's messages come from the event stream."""
    import aiohttp

    from ..errors import NotFoundError

    ref = _ref(args.contact)
    try:
        who = await client.request("GET", f"/api/contacts/{_path(ref)}")
        peer_id, name = who["contact_id"], who["name"] or who["contact_id"][:10]
    except NotFoundError:
        if not isinstance(args.contact, bytes):
            raise
        peer_id, name = ref, ref[:10]  # not a contact: call by id, as one-shot chat does
    headers = {"Authorization": f"Bearer {client.info.token}"}
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://127.0.0.1:{client.info.port}/api/events", headers=headers) as ws:
        print(f"calling {name}...", file=sys.stderr, flush=True)
        link = await client.request("POST", "/api/connect",
                                    {"contact": peer_id, "timeout": args.timeout},
                                    timeout=args.timeout + MARGIN)
        print(f"connected in {link['connect_ms']:.0f} ms; type messages, /file PATH, /quit",
              file=sys.stderr, flush=True)
        lines = _stdin_lines()

        async def show() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                ev = json.loads(msg.data)
                if peer_id not in (ev.get("from"), ev.get("to")):
                    continue
                if ev["event"] == "closed" and ev.get("links", 0) > 0:
                    continue  # another link to them stays (one was replaced or idle)
                line = _chat_line(name, ev)
                if line is not None:
                    print(line, flush=True)
                if ev["event"] == "closed":
                    break
            lines.put_nowait(None)

        shower = asyncio.ensure_future(show())
        try:
            interrupted, _ = await _interruptible(_chat_loop(client, peer_id, lines,
                                                             args.timeout))
        finally:
            shower.cancel()
            await asyncio.gather(shower, return_exceptions=True)
    if interrupted:
        print(f"hailing: interrupted; left the chat with {name}", file=sys.stderr, flush=True)
        return 130
    return 0


def _chat_line(name: str, ev: dict[str, Any]) -> str | None:
    """What one-shot ``chat`` prints for the same event (see :mod:`hailing.cli._chat`)."""
    kind = ev["event"]
    if kind == "message":
        return f"{name}: {ev['text']}"
    if kind == "file-started":
        return f"{name} is sending {ev['name']} ({ev['size']} bytes)..."
    if kind == "file-aborted":
        return f"{name}'s file {ev['name']} did not arrive: {ev['reason']}"
    if kind == "file":
        return f"{name} sent {ev['name']} ({ev['size']} bytes) -> {ev['path']}"
    if kind == "closed":
        reason = ev.get("reason") or "the connection was lost"
        return f"{name} left" if reason == "the peer hung up" else f"lost {name}: {reason}"
    return None


async def _chat_loop(client: DaemonClient, peer_id: str, lines: asyncio.Queue[str | None],
                     timeout: float) -> None:
    from ..errors import HailingError

    while (line := await lines.get()) is not None:
        if line == "/quit":
            break
        body: dict[str, Any] = {"contact": peer_id, "timeout": timeout}
        if line.startswith("/file "):
            body["file"] = str(Path(line[6:].strip()).resolve())
        elif line:
            body["text"] = line
        else:
            continue
        try:
            result = await client.request("POST", "/api/send", body, timeout=None)
        except HailingError as exc:
            print(f"(not sent: {exc})", file=sys.stderr)
            continue
        if "sha256" in result:
            print(f"(file sent, sha256 {result['sha256'][:16]}...)", file=sys.stderr)


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines of stdin, read by a thread on the raw fd (works for a terminal, a pipe and a
    file alike); None at the end."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    fd = sys.stdin.fileno()

    def put(line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(lines.put_nowait, line)

    def read() -> None:
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

    threading.Thread(target=read, name="hailing-chat-stdin", daemon=True).start()
    return lines


async def listen(args: argparse.Namespace, client: DaemonClient) -> int:
    """``listen`` beside a running daemon would be a second node answering the same calls."""
    from ..errors import DaemonError

    raise DaemonError(f"a daemon runs for {args.data_dir} (hailing up): it already listens, "
                      "and its events are on its stdout and on /api/events (--no-daemon to "
                      "listen anyway)")


async def refresh_after(args: argparse.Namespace, client: DaemonClient,
                        local: Command) -> int:
    """Run a command locally (it writes the data directory itself), then have the daemon
    listen again so what changed counts at once."""
    code = await local(args)
    if code == 0:
        await client.request("POST", "/api/refresh")
    return code


# -- wiring ------------------------------------------------------------------------------


ROUTES: dict[tuple[str, ...], Remote] = {
    ("send",): send,
    ("chat",): chat,
    ("listen",): listen,
    ("status",): status,
    ("contact", "add"): contact,
    ("contact", "block"): contact,
    ("contact", "allow"): contact,
    ("contact", "remove"): contact,
    ("contact", "rename"): contact,
    ("contact", "list"): contact,
    ("endpoint", "publish"): endpoint_publish,
}
#: Commands with no API route that change who may call: they run locally, then the
#: daemon listens again (a whole group when the path is one name).
REFRESH: tuple[tuple[str, ...], ...] = (("contact",), ("rotation", "set"))


def _through_daemon(local: Command, remote: Remote | None) -> Command:
    async def run(args: argparse.Namespace) -> int:
        data_dir = getattr(args, "data_dir", None)
        if getattr(args, "no_daemon", False) or not data_dir:
            return await local(args)
        client = await find_daemon(data_dir)
        if client is None:
            return await local(args)
        if remote is None:
            return await refresh_after(args, client, local)
        return await remote(args, client)

    run.__doc__ = local.__doc__
    return run


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def route_through_daemon(root: argparse.ArgumentParser) -> None:
    """Give the routed commands of ``root`` (the ``hailing`` parser) ``--no-daemon`` and
    a handler that goes through a running daemon when there is one."""
    commands = _subcommands(root)
    targets: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []
    for name, parser in commands.items():
        subs = _subcommands(parser)
        if subs:
            targets += [((name, sub), p) for sub, p in subs.items()]
        else:
            targets.append(((name,), parser))
    for path, parser in targets:
        remote = ROUTES.get(path)
        if remote is None and not any(path[: len(r)] == r for r in REFRESH):
            continue
        local = parser.get_default("func")
        if local is None:
            continue
        parser.add_argument("--no-daemon", action="store_true",
                            help="do not go through a running 'hailing up' of DIR")
        parser.set_defaults(func=_through_daemon(local, remote))


__all__ = ["ROUTES", "route_through_daemon"]
