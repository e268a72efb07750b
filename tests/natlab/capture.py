"""Packet capture in a lab namespace: ``tcpdump`` as a context manager.

``with host.capture("udp") as cap: ...`` starts ``tcpdump -i any`` inside the host's
namespace and returns once tcpdump listens; leaving the block waits ``settle`` seconds for
packets still in flight, stops tcpdump (SIGINT) and parses its text output.
``cap.packets()`` is then a list of :class:`Packet` ``(src, sport, dst, dport)`` (ports are 0
for packets without ports, such as ICMP); ``cap.lines`` is tcpdump's raw output.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple

from proc_lines import Lines

__all__ = ["Capture", "Packet", "parse_tcpdump"]

_LINE = re.compile(r"\bIP (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?:")


class Packet(NamedTuple):
    """One IPv4 packet seen by tcpdump."""

    src: str
    sport: int
    dst: str
    dport: int


def parse_tcpdump(lines: Sequence[str]) -> list[Packet]:
    """The IPv4 packets in tcpdump ``-n -q`` text output (other lines are skipped)."""
    out = []
    for line in lines:
        m = _LINE.search(line)
        if m:
            src, sport, dst, dport = m.groups()
            out.append(Packet(src, int(sport or 0), dst, int(dport or 0)))
    return out


class Capture:
    """tcpdump in a namespace (see the module docstring). Made by ``Host.capture``."""

    def __init__(self, exec_prefix: Sequence[str], filter: str = "", *,
                 interface: str = "any", settle: float = 0.2) -> None:
        self.argv = [*exec_prefix, "tcpdump", "-n", "-q", "-l", "--immediate-mode",
                     "-i", interface, *filter.split()]
        self.settle = settle
        self.lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Lines | None = None
        self._err: Lines | None = None

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(settle=self.settle if exc is None else 0.0)

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._out = Lines(self._proc.stdout)
        self._err = Lines(self._proc.stderr)
        try:
            self._err.wait_for(lambda line: "listening on" in line, timeout=10)
        except AssertionError as e:
            self.stop(settle=0.0)
            raise RuntimeError(f"tcpdump did not start: {' '.join(self.argv)}\n{e}") from None

    def stop(self, settle: float = 0.0) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if settle > 0 and proc.poll() is None:
            time.sleep(settle)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert self._out is not None
        self._out.thread.join(timeout=5)
        self.lines = list(self._out.lines)

    def packets(self) -> list[Packet]:
        """The packets captured (after the ``with`` block)."""
        return parse_tcpdump(self.lines)

    @property
    def stderr(self) -> str:
        return self._err.text() if self._err is not None else ""
