"""A lean asyncio UDP endpoint: one non-blocking socket watched with ``add_reader``.

asyncio's own datagram transport makes one trip through the event loop per datagram.
This endpoint drains up to :data:`RECV_BATCH` datagrams per readiness event and sends
directly with ``sendto``, queueing only when the kernel buffer is full, which roughly
halves the per-datagram overhead of a busy DHT node.

The socket asks for a :data:`RECV_BUFFER` receive buffer (issue 9 item 11): with the
kernel's default (``net.core.rmem_default``, 212,992 bytes on Linux) a few large junk
datagrams that arrive between two turns of the loop fill it, and the good queries that
follow are dropped by the kernel before any per-source limit can see them. The OS may
grant less (Linux caps it at ``net.core.rmem_max``); :attr:`UdpEndpoint.rcvbuf` is what
it granted, reported in the node's stats as ``udp_rcvbuf``.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import Callable
from typing import Any

from ..errors import LocalProtocolError
from ._ingress import SourceRateLimiter

Addr = tuple[str, int]

#: Datagrams read per readiness event before yielding to the loop.
RECV_BATCH = 64
#: Largest datagram read (KRPC messages are well under this).
MAX_DATAGRAM = 65535
#: Datagrams queued while the socket's send buffer is full; beyond this they are dropped.
MAX_SEND_QUEUE = 4096
#: Receive buffer asked of the OS (bytes); it may grant less (Linux: ``rmem_max``).
RECV_BUFFER = 4 * 1024 * 1024


class UdpEndpoint:
    """A bound UDP socket feeding ``on_datagram(data, addr)`` and ``on_batch_end()``.

    ``on_batch_end`` is called once after each batch of received datagrams, so the owner
    can flush replies and re-arm timers once per batch rather than once per datagram.
    With a ``limiter``, datagrams beyond their source's budget are dropped before
    ``on_datagram`` sees them and counted in :attr:`limited`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        bind: Addr,
        on_datagram: Callable[[bytes, Addr], None],
        on_batch_end: Callable[[], None],
        limiter: SourceRateLimiter | None = None,
    ) -> None:
        self._loop = loop
        self._limiter = limiter
        self._on_datagram = on_datagram
        self._on_batch_end = on_batch_end
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self.errors = 0
        self.dropped = 0
        #: Datagrams dropped unread because their source was over its budget.
        self.limited = 0
        host, port = bind
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise LocalProtocolError(f"cannot resolve {host!r}: {exc.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            _grow_receive_buffer(sock, RECV_BUFFER)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise LocalProtocolError(f"cannot bind UDP {host}:{port}: {exc.strerror or exc}") from None
        self.sock: socket.socket | None = sock
        #: The receive buffer the OS granted, as it reports it (Linux reports twice
        #: the size asked: the other half is its bookkeeping).
        self.rcvbuf: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        name = sock.getsockname()
        self.address: Addr = (name[0], name[1])
        loop.add_reader(sock.fileno(), self._read_ready)

    def close(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        self._loop.remove_reader(sock.fileno())
        if self._queue:
            self._loop.remove_writer(sock.fileno())
            self._queue.clear()
        sock.close()

    def sendto(self, data: bytes, addr: Any) -> None:
        sock = self.sock
        if sock is None:
            return
        if self._queue:
            self._enqueue(data, addr)
            return
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, addr)
            self._loop.add_writer(sock.fileno(), self._write_ready)
        except OSError:
            # Unreachable destination, bad address family...: the request will time out.
            self.errors += 1

    def _enqueue(self, data: bytes, addr: Any) -> None:
        if len(self._queue) >= MAX_SEND_QUEUE:
            self.dropped += 1
        else:
            self._queue.append((data, addr))

    def _write_ready(self) -> None:
        sock = self.sock
        if sock is None:
            return
        q = self._queue
        while q:
            data, addr = q[0]
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors += 1
            q.popleft()
        self._loop.remove_writer(sock.fileno())

    def _read_ready(self) -> None:
        sock = self.sock
        if sock is None:
            return
        recv = sock.recvfrom
        on_datagram = self._on_datagram
        limiter = self._limiter
        now = time.monotonic()
        try:
            for _ in range(RECV_BATCH):
                try:
                    data, addr = recv(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    # ICMP errors (port unreachable) surface here on Linux; count them.
                    self.errors += 1
                    continue
                if limiter is not None and not limiter.allow(addr[0], now):
                    self.limited += 1
                    continue
                on_datagram(data, (addr[0], addr[1]))
        finally:
            self._on_batch_end()


def _grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a ``size``-byte receive buffer; where the OS refuses that much, ask for
    less (halving) down to its default: a smaller buffer is no reason not to run."""
    default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    while size > default:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:  # some systems refuse above their maximum instead of capping
            size //= 2
        else:
            return
