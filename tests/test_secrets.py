"""hailing._secrets: the one module that writes and reads secret files."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from hailing import _secrets
from hailing._secrets import MAX_SECRET_SIZE, private_dir, read_secret, write_secret
from hailing.errors import StorageError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_then_read(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert write_secret(path, b"s3cret") is True
    assert read_secret(path) == b"s3cret"
    assert write_secret(path, b"other") is True  # overwrite is the default
    assert read_secret(path) == b"other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]  # no temporary left


@posix_only
def test_file_is_600_and_a_new_directory_700(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        path = tmp_path / "a" / "b" / "key"
        write_secret(path, b"k")
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700


@posix_only
def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    write_secret(d / "key", b"k")
    assert mode(d) == 0o755 and mode(d / "key") == 0o600


@posix_only
def test_overwriting_a_file_gives_it_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_secret(path, b"new")
    assert mode(path) == 0o600 and read_secret(path) == b"new"


def test_no_overwrite_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    assert write_secret(path, b"first", overwrite=False) is True
    assert write_secret(path, b"second", overwrite=False) is False
    assert read_secret(path) == b"first"
    (tmp_path / "dir").mkdir()
    assert write_secret(tmp_path / "dir", b"x", overwrite=False) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "identity.key"]


def test_no_overwrite_creates_exactly_once_under_a_race(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        results.append(write_secret(path, bytes([i]) * 32, overwrite=False))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert len(read_secret(path)) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]


@pytest.mark.parametrize("fail", ["write", "fsync", "replace", "link"])
def test_a_failed_write_leaves_no_partial_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    """Whatever step fails, the target holds its old content (or does not exist) and no
    temporary file is left behind; the error is one line naming the file."""
    existing = tmp_path / "existing"
    write_secret(existing, b"old content")
    real_write = os.write

    def failing(*args: object) -> object:
        raise OSError(28, "No space left on device")

    def half_write(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))  # some bytes reach the disk, then
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail, half_write if fail == "write" else failing)
    for path, overwrite in ((existing, True), (tmp_path / "new", False), (tmp_path / "n2", True)):
        if (fail == "link" and overwrite) or (fail == "replace" and not overwrite):
            continue  # that step is not taken in this mode
        with pytest.raises(StorageError, match=re.escape(str(path))) as info:
            write_secret(path, b"the new secret" * 100, overwrite=overwrite)
        assert "\n" not in str(info.value) and "No space left" in str(info.value)
    monkeypatch.undo()
    assert read_secret(existing) == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_read_missing(tmp_path: Path) -> None:
    path = tmp_path / "nothing"
    with pytest.raises(StorageError, match=f"{re.escape(str(path))} does not exist"):
        read_secret(path)
    assert read_secret(path, missing_ok=True) is None


def test_read_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big"
    write_secret(path, b"x" * 101)
    with pytest.raises(StorageError, match="larger than 100 bytes") as info:
        read_secret(path, limit=100)
    assert str(path) in str(info.value)
    assert read_secret(path, limit=101) == b"x" * 101
    write_secret(path, b"x" * (MAX_SECRET_SIZE + 1))
    with pytest.raises(StorageError, match="larger than"):
        read_secret(path)


@posix_only
@pytest.mark.parametrize("bad", [0o640, 0o604, 0o660, 0o666, 0o700, 0o620])
def test_read_refuses_a_file_others_can_access(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "key"
    write_secret(path, b"k")
    path.chmod(bad)
    if bad & 0o077:
        with pytest.raises(StorageError, match=re.escape(f"run 'chmod 600 {path}'")):
            read_secret(path)
        assert mode(path) == bad  # never "fixed" behind the user's back
    else:
        assert read_secret(path) == b"k"


@posix_only
def test_read_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(StorageError, match="not a regular file"):
        read_secret(tmp_path / "dir")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(StorageError, match="not a regular file"):  # and does not hang
        read_secret(fifo)


@posix_only
def test_read_follows_a_symlink_and_checks_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real"
    write_secret(target, b"k")
    (tmp_path / "link").symlink_to(target)
    assert read_secret(tmp_path / "link") == b"k"
    target.chmod(0o644)
    with pytest.raises(StorageError, match="chmod 600"):
        read_secret(tmp_path / "link")


def test_private_dir_on_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(StorageError, match="cannot create data directory"):
        private_dir(tmp_path / "f" / "sub")
    with pytest.raises(StorageError, match="cannot create data directory"):
        write_secret(tmp_path / "f" / "key", b"k")


def test_nothing_else_in_hailing_writes_secret_files() -> None:
    """Mode-0600 files are made here only: ``0o600``, ``O_EXCL`` or ``fchmod`` elsewhere is
    another copy of this module. A lock file (opened ``O_RDWR | O_CREAT`` to be flocked; it
    holds no secret) is not a secret file."""
    src = Path(_secrets.__file__).parent
    offenders = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel == "_secrets.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if (re.search(r"0o600|O_EXCL|fchmod", line)
                    and not re.search(r"O_RDWR \| os\.O_CREAT, 0o600\)", line)):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


@posix_only
def test_the_daemons_api_file_is_a_secret_file(tmp_path: Path) -> None:
    from hailing.daemon._files import API_FILE, ApiInfo, read_api_info, write_api_info

    info = ApiInfo(pid=os.getpid(), url="http://127.0.0.1:1234", port=1234, token="t" * 43,
                   contact_id="")
    path = write_api_info(tmp_path, info)
    assert path == tmp_path / API_FILE and mode(path) == 0o600
    assert read_api_info(tmp_path) == info
    path.chmod(0o644)  # a token others could have read is not trusted
    assert read_api_info(tmp_path) is None
    path.unlink()
    assert read_api_info(tmp_path) is None
