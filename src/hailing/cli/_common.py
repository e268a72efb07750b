"""What every command group of the ``hailing`` CLI shares: the one-line-error parser, the
terminal progress line, argument types, the stop-on-signal event and the stdin line reader."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from ..errors import LocalProtocolError

T = TypeVar("T")

if TYPE_CHECKING:  # the DHT is imported by the commands that use it, not by every command
    from ..node import Addr


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2).

    A command with an optional positional (``send CONTACT [TEXT]``) parses its arguments
    intermixed, so ``hailing send bob --timeout 5 "hi"`` works as well as ``hailing send
    bob "hi" --timeout 5`` (plain argparse binds the empty TEXT at ``bob`` and then
    refuses ``"hi"`` as an unrecognized argument)."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        positionals = self._get_positional_actions()
        optional = any(a.nargs in ("?", "*") for a in positionals)
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in positionals)
        if self._intermixing or not optional or nested:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back in here
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class Progress:
    """A one-line status on stderr when it is a terminal; silent otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._t0 = time.monotonic()

    def update(self, text: str) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self._t0
            self.stream.write(f"\r\x1b[K{text} ({elapsed:.1f} s)")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# -- argument types --------------------------------------------------------------------


def _hostport(text: str) -> Addr:
    from ..node import parse_hostport

    try:
        return parse_hostport(text)
    except LocalProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bootstrap(text: str) -> list[Addr]:
    """A ``--bootstrap`` value (``action="extend"``): HOST:PORT, or ``public``, the
    public Mainline DHT's well-known routers (:data:`hailing.node.PUBLIC_BOOTSTRAP`)."""
    from ..node import bootstrap_list

    try:
        return bootstrap_list([text])
    except LocalProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hex_bytes(size: int, what: str) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != size:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return raw

    return parse


_hex20 = _hex_bytes(20, "40 hex digits")
_hex32 = _hex_bytes(32, "a 64-hex-digit public key")


def _salt(text: str) -> bytes:
    raw = os.fsencode(text)
    from ..dht.bep44 import MAX_SALT_SIZE

    if len(raw) > MAX_SALT_SIZE:
        raise argparse.ArgumentTypeError(f"salt is {len(raw)} bytes; BEP44 allows {MAX_SALT_SIZE}")
    return raw


def _int_in(low: int, high: int | None = None, what: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < low or (high is not None and n > high):
            span = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{what or 'value'} must be {span}, got {n}")
        return n

    return parse


def _ice_ip(text: str) -> str:
    """``--ice-host``: an IP address ICE may gather host candidates on."""
    from ._config import _ip_value

    try:
        return _ip_value(text)
    except LocalProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (more than 0), got {text!r}")
    return value


_positive = _int_in(1)
_nonneg = _int_in(0)
_port = _int_in(0, 65535, "port")
_announce_port = _int_in(1, 65535, "port")


def _stop_on_signal() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM. Install it before printing the "ready" line, so a
    signal sent as soon as that line is read still means a clean stop (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines typed on stdin (None at its end), read in a thread on the raw fd: add_reader
    fails on a file or /dev/null as stdin, and sys.stdin's buffer would hide lines that
    arrived in one read."""
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
