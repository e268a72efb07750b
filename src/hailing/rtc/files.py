"""Files over a :class:`~hailing.rtc.connection.Connection`: the receiving side, partial
files, and the checks a sender makes before anything goes out.

The receiver (:class:`FileReceiver`) streams a file to ``.partial-<pid>-<id>-<ns>`` in the
downloads directory, holding an exclusive ``flock`` on it while it writes, checks size and
SHA-256 at the end and renames it to a unique name. Its events: :class:`FileStarted`, then
:class:`FileReceived` or :class:`FileAborted`. :func:`clean_partials` removes the partial
files no live transfer holds (a crashed or killed receiver's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import HailingError, LocalProtocolError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: partial files are cleaned by age
    fcntl = None  # type: ignore[assignment]

CHUNK = 16 * 1024
MAX_FILE = 8 * 1024**3
PARTIAL_PREFIX = ".partial-"
#: A partial file younger than this, whose writer is alive, is never cleaned (it may have
#: been created a moment ago and not be locked yet).
PARTIAL_GRACE = 10.0
#: Without file locks (not POSIX), partial files older than this are cleaned.
PARTIAL_MAX_AGE = 3600.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")
_PARTIAL_PID = re.compile(r"\.partial-(\d+)-")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileReceived:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FileStarted:
    """The peer announced a file (``name`` as it will be saved, ``size`` in bytes)."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class FileAborted:
    """A file announced by :class:`FileStarted` will not arrive; nothing was kept."""

    name: str
    reason: str


FileEvent = FileStarted | FileReceived | FileAborted


class _Garbage(Exception):
    """A frame the connection drops and counts (``reason`` names the counter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- before sending ------------------------------------------------------------------------


def check_file(path: str | os.PathLike[str]) -> int:
    """The size of ``path`` if it can be sent: a readable regular file of at most
    :data:`MAX_FILE` bytes. Raises :class:`LocalProtocolError` with one clear line."""
    p = Path(path)
    try:
        st = p.stat()
        if not p.is_file():
            raise LocalProtocolError(f"not a regular file: {p}")
        with p.open("rb"):
            pass
    except FileNotFoundError:
        raise LocalProtocolError(f"no such file: {p}") from None
    except OSError as exc:
        raise LocalProtocolError(f"cannot read {p}: {exc.strerror}") from None
    if st.st_size > MAX_FILE:
        raise LocalProtocolError(
            f"{p} is {st.st_size} bytes; the most a file can be is {MAX_FILE} bytes")
    return st.st_size


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- partial files ---------------------------------------------------------------------------


def clean_partials(downloads: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """Remove the ``.partial-*`` files in ``downloads`` that no transfer is writing (a
    crashed or killed receiver's); return them."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(Path(downloads).glob(PARTIAL_PREFIX + "*"))
    except OSError:
        return removed
    for path in entries:
        with contextlib.suppress(OSError):
            age = now - path.stat().st_mtime
            if fcntl is None:
                if age > PARTIAL_MAX_AGE:
                    path.unlink()
                    removed.append(path)
                continue
            m = _PARTIAL_PID.match(path.name)
            if m is not None and _pid_alive(int(m.group(1))) and age < PARTIAL_GRACE:
                continue
            with path.open("rb") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live transfer holds it
                path.unlink()
                removed.append(path)
    return removed


#: Downloads directories cleaned by this process already (before its first transfer).
_cleaned: set[Path] = set()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # pragma: no cover - os.kill would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


class _Incoming:
    __slots__ = ("expected", "fid", "hasher", "name", "partial", "received", "sha256", "stream")

    def __init__(self, fid: int, name: str, size: int, sha256: str, partial: Path) -> None:
        self.fid = fid
        self.name = name
        self.expected = size
        self.sha256 = sha256
        self.partial = partial
        self.stream: IO[bytes] = partial.open("wb")
        if fcntl is not None:
            try:  # held while the file is written: clean_partials leaves it alone
                fcntl.flock(self.stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.stream.close()
                partial.unlink(missing_ok=True)
                raise
        self.hasher = hashlib.sha256()
        self.received = 0


# -- receiving -------------------------------------------------------------------------------


class FileReceiver:
    """The receiving side of file transfers on one connection: one file at a time.

    ``emit`` gets the events; ``reply`` sends a control frame (the acks) to the sender.
    The connection calls :meth:`start`, :meth:`chunk`, :meth:`end` and
    :meth:`sender_aborted` for the frames, :meth:`abort` when it closes and :meth:`stop`
    when it hangs up (nothing more is taken)."""

    def __init__(self, downloads: Path, emit: Callable[[FileEvent], None],
                 reply: Callable[[dict[str, Any]], None], stats: Counter[str]) -> None:
        self.downloads = downloads
        self._emit = emit
        self._reply = reply
        self.stats = stats
        self._incoming: _Incoming | None = None
        self._discarding = False  # the rest of a file given up midway is dropped quietly

    def start(self, fid: int, msg: dict[str, Any]) -> None:
        name: object = msg.get("name")
        size: object = msg.get("size")
        sha: object = msg.get("sha256")
        if (
            not isinstance(name, str) or not isinstance(size, int) or not isinstance(sha, str)
            or not 0 <= size <= MAX_FILE or not _SHA256_HEX.fullmatch(sha)
        ):
            raise _Garbage("shape")
        if self._incoming is not None:
            self.abort("a new file started")
        self._discarding = False
        safe = _safe_name(name)
        self._emit(FileStarted(safe, size))
        try:
            self.downloads.mkdir(parents=True, exist_ok=True)
            if self.downloads not in _cleaned:
                _cleaned.add(self.downloads)
                clean_partials(self.downloads)
            partial = self.downloads / f"{PARTIAL_PREFIX}{os.getpid()}-{fid}-{time.monotonic_ns()}"
            self._incoming = _Incoming(fid, safe, size, sha, partial)
        except OSError as exc:
            self.stats["files_rejected"] += 1
            self._emit(FileAborted(safe, f"cannot write it: {exc.strerror}"))
            self._discarding = True
            self._reply({"t": "ack", "id": fid, "ok": False, "error": "the receiver cannot store it"})

    def refuse(self, fid: int, why: str, *, file: bool) -> None:
        """Refuse a message or (``file``) a file ``fid`` unread (the reader is behind):
        the sender is told at once (``ok: false``); a file's data is dropped."""
        if file:
            self.abort("a new file started")
            self._discarding = True
        self.stats["refused_full"] += 1
        self._reply({"t": "ack", "id": fid, "ok": False, "error": why})

    def chunk(self, data: bytes) -> None:
        inc = self._incoming
        if inc is None and self._discarding:
            self.stats["discarded_bytes"] += len(data)
            return
        if inc is None:
            raise _Garbage("stray_binary")
        inc.received += len(data)
        if inc.received > inc.expected:  # no honest sender does that: no answer either
            self.abort("more data than announced")
            raise _Garbage("oversized_file")
        inc.hasher.update(data)
        try:
            inc.stream.write(data)
        except OSError as exc:  # a full disk: give up at once and tell the sender
            why = f"cannot write it: {exc.strerror}"
            self.abort(why)
            self._discarding = True
            self._reply({"t": "ack", "id": inc.fid, "ok": False, "error": why})

    def end(self, fid: int) -> None:
        inc = self._incoming
        if inc is None or inc.fid != fid:
            raise _Garbage("stray_end")
        self._incoming = None
        inc.stream.close()
        digest = inc.hasher.hexdigest()
        if inc.received != inc.expected or digest != inc.sha256:
            inc.partial.unlink(missing_ok=True)
            self.stats["files_rejected"] += 1
            self._emit(FileAborted(inc.name, "size or SHA-256 mismatch"))
            self._reply({"t": "ack", "id": fid, "ok": False, "error": "size or SHA-256 mismatch"})
            return
        try:
            final = _unique(self.downloads / inc.name)
            inc.partial.rename(final)
        except (OSError, HailingError) as exc:
            inc.partial.unlink(missing_ok=True)
            self._emit(FileAborted(inc.name, f"cannot keep it: {exc}"))
            self._reply({"t": "ack", "id": fid, "ok": False, "error": "the receiver cannot store it"})
            return
        self._emit(FileReceived(inc.name, final, inc.received, digest))
        self._reply({"t": "ack", "id": fid, "ok": True, "sha256": digest})

    def sender_aborted(self, fid: int) -> None:
        if self._incoming is None or self._incoming.fid != fid:
            raise _Garbage("stray_abort")
        self.abort("cancelled by the sender")

    def abort(self, why: str) -> None:
        """Drop the file being received (if any): its partial file goes, FileAborted."""
        inc = self._incoming
        self._incoming = None
        if inc is not None:
            inc.stream.close()
            inc.partial.unlink(missing_ok=True)
            self.stats["files_aborted"] += 1
            self._emit(FileAborted(inc.name, why))

    def stop(self, why: str) -> None:
        """Abort the file being received and take no data from now on."""
        self.abort(why)
        self._discarding = True


def _safe_name(name: str) -> str:
    base = _SAFE_NAME.sub("_", os.path.basename(name.replace("\\", "/")))[:128].strip(". ")
    return base or "file"


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem} ({i}){path.suffix}")
        if not candidate.exists():
            return candidate
    raise HailingError(f"too many files named {path.name}")
