"""The daemon's two files in the data directory.

- ``daemon.lock``: held (``flock``, exclusive) for as long as a daemon runs there, so a
  second ``hailing up`` on the same directory fails at once with a clear error. The kernel
  drops the lock when the process dies, even on ``kill -9``: a stale file never blocks.
- ``api.json`` (mode 600): ``{"pid", "url", "port", "token", "contact_id"}``, written once
  the API listens, removed at a clean stop. Clients find the daemon with it; a file left
  by a killed daemon is recognised as stale (its pid is gone or nobody answers).

Only light imports (stdlib, errors, secret files): clients read ``api.json`` on their
fast path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .._secrets import read_secret, write_secret
from ..errors import DaemonError, StorageError

LOCK_FILE = "daemon.lock"
LOCK_TRIES = 10
API_FILE = "api.json"
_MAX_API_FILE = 4096


class DaemonLock:
    """The exclusive lock of one data directory. :meth:`acquire` or raise."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DaemonError(f"cannot open {self.path}: {exc.strerror}") from None
        # A client probing the lock (is_locked) holds it shared for a moment: try a few
        # times before concluding another daemon has it.
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt + 1 < LOCK_TRIES:
                    time.sleep(0.02)
        else:
            os.close(fd)
            holder = _read_pid(self.path)
            who = f" (pid {holder})" if holder else ""
            raise DaemonError(f"a daemon already runs for {self.path.parent}{who}; stop it "
                              "first or use another --data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def is_locked(data_dir: Path) -> bool:
    """Whether some process holds ``data_dir``'s daemon lock (a daemon runs there). Takes
    the lock shared for an instant when nobody holds it."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class ApiInfo:
    """What ``api.json`` says: where the daemon's API listens and its bearer token."""

    pid: int
    url: str
    port: int
    token: str
    contact_id: str

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "url": self.url, "port": self.port,
                           "token": self.token, "contact_id": self.contact_id})


def write_api_info(data_dir: Path, info: ApiInfo) -> Path:
    """Write ``api.json`` atomically with mode 600 (never readable by others, not even for
    a moment: it is a secret file, :mod:`hailing._secrets`)."""
    path = data_dir / API_FILE
    try:
        write_secret(path, (info.to_json() + "\n").encode("utf-8"))
    except StorageError as exc:
        raise DaemonError(str(exc)) from None
    return path


def read_api_info(data_dir: Path) -> ApiInfo | None:
    """``api.json`` of ``data_dir``, or None when there is none (or it is unreadable, or
    others could read it: the token is then not trusted)."""
    try:
        data = read_secret(data_dir / API_FILE, limit=_MAX_API_FILE, missing_ok=True)
        if data is None:
            return None
        raw = json.loads(data)
        info = ApiInfo(pid=raw["pid"], url=raw["url"], port=raw["port"], token=raw["token"],
                       contact_id=raw.get("contact_id", ""))
    except (StorageError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(info.pid, int) and isinstance(info.port, int)
            and isinstance(info.token, str) and 0 < info.port < 65536):
        return None
    return info


def remove_api_info(data_dir: Path, info: ApiInfo) -> None:
    """Remove ``api.json`` if it is still ours."""
    current = read_api_info(data_dir)
    if current is not None and current.token == info.token:
        with contextlib.suppress(OSError):
            (data_dir / API_FILE).unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
