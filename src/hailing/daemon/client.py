"""Talking to a running daemon: how the CLI commands go through it.

:func:`find_daemon` reads ``DATA_DIR/api.json`` and checks the daemon is alive (its pid
exists, it holds the directory's lock, and its API answers ``GET /api/status`` with the
token); :class:`DaemonClient`
makes the API's JSON requests. Deliberately stdlib only (asyncio streams, HTTP/1.0, one
connection per request): ``hailing send`` through a daemon must not pay for importing an
HTTP library, aiortc or web3. An error the API returns is raised as the same
:class:`HailingError` subclass the daemon raised, with its one-line message.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from ..errors import (
    DaemonError,
    DaemonGone,
    HailingError,
    LocalProtocolError,
    NotFoundError,
    QueryTimeout,
    StorageError,
)
from ._files import ApiInfo, is_locked, pid_alive, read_api_info

#: How long the liveness check may take before the daemon is taken for gone.
PROBE_TIMEOUT = 3.0
#: Largest response read (a history page, the status).
MAX_RESPONSE = 16 * 1024 * 1024

_KINDS: dict[str, type[HailingError]] = {
    cls.__name__: cls
    for cls in (LocalProtocolError, NotFoundError, QueryTimeout, StorageError, DaemonError)
}


class DaemonClient:
    """Requests to the API described by ``info``."""

    def __init__(self, info: ApiInfo) -> None:
        self.info = info

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      timeout: float | None = 30.0) -> Any:
        """Send one request; the decoded JSON answer, or raise the API's error."""
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{self.info.port}\r\n"
                f"Authorization: Bearer {self.info.token}\r\nAccept: application/json\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        try:
            # not wait_for: Python 3.11's swallows a cancellation arriving as it ends
            async with asyncio.timeout(timeout):
                status, raw = await self._exchange(head.encode() + b"\r\n" + payload)
        except TimeoutError:
            raise DaemonError(f"the daemon did not answer {method} {path} in time") from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise DaemonError(f"the daemon answered {status} with something not JSON") from None
        if status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            kind = answer.get("kind", "") if isinstance(answer, dict) else ""
            raise _KINDS.get(kind, HailingError)(str(message or f"the daemon answered {status}"))
        return answer

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.info.port)
        except OSError as exc:
            raise DaemonGone(f"the daemon's API is not reachable: {exc.strerror}") from None
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read(MAX_RESPONSE)
            while chunk := await reader.read(MAX_RESPONSE):
                data += chunk
                if len(data) > MAX_RESPONSE:
                    raise DaemonError("the daemon's answer is too large")
        except ConnectionError as exc:
            raise DaemonGone(f"the daemon closed the connection: {exc}") from None
        finally:
            writer.close()
        head, sep, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if not sep or len(parts) < 2 or not parts[1].isdigit():
            raise DaemonGone("the daemon's API answered something that is not HTTP")
        return int(parts[1]), body


async def find_daemon(data_dir: str | os.PathLike[str]) -> DaemonClient | None:
    """A client of the daemon running for ``data_dir``, or None when none runs (no
    ``api.json``, or it was left by a daemon that is gone)."""
    info = read_api_info(Path(data_dir))
    if info is None or not pid_alive(info.pid) or not is_locked(Path(data_dir)):
        return None  # no daemon, or a file left by one that was killed
    client = DaemonClient(info)
    try:
        await client.request("GET", "/api/status", timeout=PROBE_TIMEOUT)
    except DaemonGone:
        return None
    except DaemonError as exc:  # it is there but does not answer: say so, do not go around it
        raise DaemonError(f"a daemon runs for {data_dir} (pid {info.pid}) but {exc}") from None
    return client
