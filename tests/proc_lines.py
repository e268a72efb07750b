"""A subprocess's output lines, read by a thread, waited for with a deadline.

Shared by the CLI and daemon tests (``test_cli_peer.Daemon``), the browser harness and the
NAT lab's process helpers. No pytest import: the browser harness runs it in a subprocess.

:data:`START_TIMEOUT` is the one deadline for a process's first (ready) line, used by
every helper that waits for one.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

__all__ = ["START_TIMEOUT", "Lines", "end_by_stdin"]

#: Seconds a hailing process may take to print its first (ready) line. Starting is slow
#: but correct work: the interpreter, imports (aiortc, web3), binding, a chain connection,
#: a warp derivation (a second of scrypt). A contract daemon needs ~2.5 s of CPU for it:
#: on the 2-core CI machine, loaded with several daemons, Chromium and anvil (load 10 and
#: more), that took over 20 s.
START_TIMEOUT = 60.0


class Lines:
    """The lines of ``stream`` as they arrive; ``wait_for`` blocks until one matches.

    ``timeout`` is the default deadline of :meth:`wait_for`, in seconds.
    """

    def __init__(self, stream: IO[bytes], timeout: float = 30.0) -> None:
        self.lines: list[str] = []
        self.timeout = timeout
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:  # the end of the stream wakes a waiter at once
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[str], bool], start: int = 0,
                 timeout: float | None = None) -> int:
        """Index of the first line at or after ``start`` for which ``pred`` is true;
        AssertionError (with the last lines) when none came in time or the stream ended."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    if pred(self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():  # lines are appended under the lock
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"no matching line in time; last lines:\n{tail}")
                self.cond.wait(min(left, 0.5))

    def __len__(self) -> int:
        with self.cond:
            return len(self.lines)

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)


def end_by_stdin(procs: Iterable[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """End processes that exit when their stdin closes: close every one's stdin first (so
    they wind down together), then wait for each up to ``timeout`` seconds, and kill and
    reap the ones still running after that."""
    procs = list(procs)
    for proc in procs:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
