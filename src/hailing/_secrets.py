"""Secret files: the one place that writes and reads them.

A secret file is a small file only its owner may read: an identity key, a DHT signing
seed, the rotation secret, the chain configuration (it may hold a gas key's address and an
RPC URL with credentials), the daemon's API token.

Policy, as OpenSSH applies it to private keys (POSIX only):

- :func:`write_secret` writes the whole content to a new temporary file in the same
  directory (mode 0600 from its creation, ``O_EXCL``), ``fsync``\\ s it, then renames it
  over the target (``overwrite=True``) or hard-links it into place only if the target does
  not exist (``overwrite=False``: an existing file, say a key, is never replaced). Readers
  see the old file or the new one, never a part; a failure leaves no temporary file. A
  missing parent directory is created with mode 0700 (an existing one is left as it is).
- :func:`read_secret` refuses a file that is not a regular file, that group or others can
  read or write (the message says which ``chmod`` fixes it: nothing here changes a mode
  behind the user's back), or that is larger than ``limit`` bytes (a secret file is small;
  a large one is not ours, and reading it whole would cost memory).

Every failure is a :class:`~hailing.errors.StorageError` whose one-line message names
the file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal, overload

from .errors import StorageError

__all__ = ["MAX_SECRET_SIZE", "check_private", "private_dir", "read_secret", "write_secret"]

#: Default largest secret file read (bytes); every secret file hailing writes is far smaller.
MAX_SECRET_SIZE = 64 * 1024
FILE_MODE = 0o600
DIR_MODE = 0o700

StrPath = str | os.PathLike[str]


def private_dir(directory: StrPath) -> Path:
    """``directory``, created with mode 0700 (and so are its missing parents) if it does not
    exist; an existing directory is left as it is."""
    path = Path(directory)
    missing = []
    for p in (path, *path.parents):  # Path.mkdir(parents=True) would make parents 0777 & ~umask
        if os.path.isdir(p):
            break
        missing.append(p)
    try:
        for p in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                p.mkdir(mode=DIR_MODE)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as exc:
        raise StorageError(f"cannot create data directory {path}: {exc.strerror}") from None
    return path


def check_private(path: StrPath, st: os.stat_result) -> None:
    """Refuse (:class:`StorageError`) what ``st`` describes unless it is a regular file
    that only its owner can read and write."""
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{path} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise StorageError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):03o}): "
            f"run 'chmod 600 {path}'"
        )


def _fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (best effort: not every platform or
    file system lets a directory be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_secret(path: StrPath, data: bytes, *, overwrite: bool = True) -> bool:
    """Write ``data`` to ``path`` atomically with mode 0600; True if written.

    With ``overwrite=False`` an existing ``path`` (of any kind) is left alone and the
    result is False: the way to create a key exactly once, even against another process
    doing the same.
    """
    target = Path(path)
    directory = private_dir(target.parent)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with contextlib.suppress(OSError):
                os.fchmod(fd, FILE_MODE)  # mkstemp's mode already; made explicit
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
            tmp = None
        else:
            try:
                os.link(tmp, target)  # atomic, and never replaces an existing file
            except FileExistsError:
                return False
    except OSError as exc:
        what = "write" if overwrite else "create"
        raise StorageError(f"cannot {what} {target}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(directory)
    return True


@overload
def read_secret(path: StrPath, *, limit: int = ..., missing_ok: Literal[False] = ...) -> bytes:
    ...


@overload
def read_secret(path: StrPath, *, limit: int = ..., missing_ok: bool) -> bytes | None:
    ...


def read_secret(path: StrPath, *, limit: int = MAX_SECRET_SIZE,
                missing_ok: bool = False) -> bytes | None:
    """The content of the secret file ``path`` (see the module's policy).

    A missing file is a :class:`StorageError` ("... does not exist"), or None with
    ``missing_ok``.
    """
    try:
        # O_NONBLOCK: a FIFO put in a secret file's place must not hang the reader
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            check_private(path, os.fstat(fd))
            data = b""
            while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
                data += chunk
        finally:
            os.close(fd)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise StorageError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise StorageError(f"{path} is not a regular file") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise StorageError(f"{path} is larger than {limit} bytes: not a file hailing wrote")
    return data
