"""Namespaces, processes in them, and removal: the lab's low-level plumbing.

Every namespace the lab creates is named ``hl-<owner pid>-<lab number>-<role>``
(:data:`PREFIX`), so leftovers of a process that died without tearing its lab down (SIGKILL,
a power cut of the test runner) can be told apart from a live process's lab and removed by
the next :class:`~natlab.lab.Lab` (:func:`purge_dead_owners`).

Commands go through ``ip -batch`` (one process per namespace and step, not one per
command): building a lab is a handful of short processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

__all__ = [
    "NETNS_DIR",
    "PREFIX",
    "CommandError",
    "delete_namespaces",
    "ip_batch",
    "kill_namespace_processes",
    "lab_namespaces",
    "owner_alive",
    "purge_dead_owners",
    "run_checked",
]

#: Where ``ip netns add`` pins a namespace (a bind mount of /proc/<pid>/ns/net).
NETNS_DIR = "/run/netns"
#: The prefix of every lab namespace: ``hl-<owner pid>-<lab number>-<role>``.
PREFIX = "hl-"
_NAME = re.compile(r"^hl-(\d+)-")


class CommandError(RuntimeError):
    """A lab command failed: the command, its exit status and its stderr in one message."""


def ip_batch(lines: Iterable[str], ns: str | None = None, *, force: bool = False) -> None:
    """Run ``ip [-n ns] -batch -`` with ``lines`` (one ip command each, without ``ip``).

    ``force`` carries on after a failing line (teardown); otherwise the first failure
    raises :class:`CommandError`.
    """
    argv = ["ip"]
    if ns is not None:
        argv += ["-n", ns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    script = "".join(line + "\n" for line in lines)
    if not script:
        return
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and not force:
        raise CommandError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}\n--- input:\n{script}")


def run_checked(argv: Sequence[str], *, input: str | None = None, timeout: float = 30) -> str:
    """Run ``argv``; its stdout, or :class:`CommandError` with its stderr."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}")
    return proc.stdout


def lab_namespaces() -> list[str]:
    """The names of every lab namespace on the machine (any owner)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _NAME.match(n))


def owner_alive(name: str) -> bool:
    """Whether the process that created lab namespace ``name`` still runs."""
    m = _NAME.match(name)
    if m is None:
        return True  # not ours to judge
    pid = int(m.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def namespace_pids(names: Iterable[str]) -> list[int]:
    """Every process whose network namespace is one of ``names``."""
    wanted = {key for key in map(_ns_inode, names) if key is not None}
    if not wanted:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a zombie
        if (st.st_dev, st.st_ino) in wanted:
            found.append(int(entry))
    return found


def kill_namespace_processes(names: Sequence[str], deadline: float = 5.0) -> None:
    """SIGKILL every process inside the namespaces ``names`` and wait until none is left
    (a namespace with a process in it outlives ``ip netns delete``, veths and all)."""
    end = time.monotonic() + deadline
    while True:
        pids = namespace_pids(names)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > end:
            raise CommandError(f"processes {pids} did not leave the lab namespaces")
        time.sleep(0.01)


def delete_namespaces(names: Sequence[str]) -> None:
    """Kill what runs inside ``names`` and delete them (their veths go with them).
    Names that do not exist are ignored."""
    existing = [n for n in names if os.path.exists(os.path.join(NETNS_DIR, n))]
    if not existing:
        return
    try:
        kill_namespace_processes(existing)
    finally:  # a process that would not die keeps its namespace alive, not its name
        ip_batch((f"netns delete {n}" for n in existing), force=True)


def purge_dead_owners() -> list[str]:
    """Delete the lab namespaces whose owner process is gone; the names deleted.
    A live process's lab is never touched."""
    dead = [n for n in lab_namespaces() if not owner_alive(n)]
    delete_namespaces(dead)
    return dead
