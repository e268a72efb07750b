"""A UDP agent in a lab namespace, driven line by line from the test: plain sockets.

``agent = UdpAgent(host)`` runs this file inside ``host``'s namespace (stdlib only) and
talks JSON lines with it over stdin/stdout:

* ``agent.bind(port=0) -> port`` opens a UDP socket on 0.0.0.0 (0: the OS picks);
* ``agent.send(port, (ip, port), data)`` sends ``data`` (text) from that socket;
* ``agent.recv(port, timeout=..., count=1, until=None)`` -> ``[(ip, port, data), ...]``:
  what the socket received since the last ``recv``, returned as soon as ``count``
  datagrams (or one whose data is ``until``) are there, or after ``timeout``.

The NAT tests use it to see mappings (the source a public agent observes) and filtering
(which senders reach a host behind a NAT).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lab import Host

__all__ = ["UdpAgent"]

Datagram = tuple[str, int, str]


class UdpAgent:
    """The test's side of an agent (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.proc = host.popen([sys.executable, "-u", __file__], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> UdpAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the UDP agent in {self.host.name} exited "
                               f"({self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"UDP agent in {self.host.name}: {reply['error']}")
        return reply

    def bind(self, port: int = 0) -> int:
        return int(self._call(op="bind", port=port)["port"])

    def send(self, port: int, to: tuple[str, int], data: str) -> None:
        self._call(op="send", port=port, to=list(to), data=data)

    def recv(self, port: int, *, timeout: float = 2.0, count: int = 1,
             until: str | None = None) -> list[Datagram]:
        got = self._call(op="recv", port=port, timeout=timeout, count=count, until=until)
        return [(str(ip), int(p), str(d)) for ip, p, d in got["got"]]

    def close(self) -> None:
        from proc_lines import end_by_stdin  # here: this file also runs as the agent

        if self.proc.poll() is None:
            end_by_stdin([self.proc], timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the agent itself (runs in the namespace) -------------------------------------------------

class _Socket:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", port))
        self.port: int = self.sock.getsockname()[1]
        self.queue: list[Datagram] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data, (ip, port) = self.sock.recvfrom(65536)
            except OSError:  # an ICMP error reported on the socket: not a datagram
                continue
            with self.cond:
                self.queue.append((ip, port, data.decode(errors="replace")))
                self.cond.notify_all()

    def take(self, timeout: float, count: int, until: str | None) -> list[Datagram]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                done = len(self.queue) >= count or any(d == until for _, _, d in self.queue)
                left = deadline - time.monotonic()
                if done or left <= 0:
                    out, self.queue = self.queue, []
                    return out
                self.cond.wait(left)


def _serve() -> None:
    sockets: dict[int, _Socket] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            op = msg["op"]
            if op == "bind":
                s = _Socket(int(msg["port"]))
                sockets[s.port] = s
                reply: dict[str, Any] = {"port": s.port}
            elif op == "send":
                ip, port = msg["to"]
                sockets[int(msg["port"])].sock.sendto(msg["data"].encode(), (ip, int(port)))
                reply = {}
            elif op == "recv":
                got = sockets[int(msg["port"])].take(float(msg["timeout"]), int(msg["count"]),
                                                     msg.get("until"))
                reply = {"got": got}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except (KeyError, ValueError, OSError) as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
