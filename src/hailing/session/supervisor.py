"""Supervisor: the one owner of a session's background tasks.

Theory of operation
-------------------
Every task the session layer starts (an inbox pump, a watcher, the handling of one
offer) is started with :meth:`Supervisor.spawn` and has exactly one owner, this object,
which awaits it when it ends or when :meth:`Supervisor.aclose` cancels it. Nothing is
fire-and-forget, and no failure is silent:

- a task that raises is counted (``stats["task_errors"]`` and
  ``stats["task_errors_<name>"]``), logged once with its traceback, and its ``on_error``
  callback runs: that is where a task closes what it owns (a peer connection) and
  surfaces the failure as an event (a ``failed`` :class:`~hailing.session.CallEvent`);
- a loop started with :meth:`Supervisor.loop` (one that must keep running, such as an
  inbox pump) is started again after a growing delay (:data:`RESTART_DELAYS`);
- the exception is always retrieved, so asyncio never reports "Task exception was never
  retrieved".

``aclose`` cancels again, every :data:`RECANCEL_AFTER` seconds, a task that is still
running after being cancelled (counted in ``stats["cancel_repeated"]`` and logged with its
name): a task may swallow one cancellation (Python 3.11's ``asyncio.wait_for`` does when
what it awaits ends in the same loop iteration), and a stop must not hang on it.

Unlike an :class:`asyncio.TaskGroup`, one failing task does not cancel its siblings: a
garbled offer must not hang up every other call. ``aclose`` cancels everything left and
waits for it, so a stopped session leaves no task behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["RECANCEL_AFTER", "RESTART_DELAYS", "Supervisor"]

log = logging.getLogger("hailing.session")

#: Seconds before restarting a crashed ``restart=True`` task: the n-th restart waits the
#: n-th value (the last one from then on).
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 15.0, 30.0)
#: Seconds :meth:`Supervisor.aclose` waits for cancelled tasks before cancelling those
#: still running again (long enough for a task's own cleanup, such as closing a peer
#: connection, on a loaded machine).
RECANCEL_AFTER = 5.0

ErrorHook = Callable[[BaseException], None]


class Supervisor:
    """Owns background tasks (see the module docstring). ``stats`` is shared with the
    owner, so failures show up in its counters."""

    def __init__(self, stats: Counter[str] | None = None) -> None:
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str,
              on_error: ErrorHook | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this supervisor; ``on_error(exc)`` runs if it
        raises (not when it is cancelled)."""
        if self._closing:
            coro.close()
            raise RuntimeError("the supervisor is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, name, on_error))
        return task

    async def settle(self, name: str, timeout: float) -> None:
        """Give the tasks spawned as ``name`` up to ``timeout`` seconds to end by
        themselves (e.g. a message on its way out before :meth:`aclose`)."""
        tasks = [t for t in self._tasks if t.get_name() == name]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def loop(self, make: Callable[[], Coroutine[Any, Any, Any]], *, name: str,
             on_error: ErrorHook | None = None) -> asyncio.Task[Any]:
        """Run ``make()`` and start it again (after :data:`RESTART_DELAYS`) whenever it
        fails: for loops that must keep running whatever one bad input does."""

        async def forever() -> None:
            failures = 0
            while True:
                try:
                    await make()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._count(name, exc)
                    if on_error is not None:
                        _call_hook(on_error, exc, name)
                    delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
                    failures += 1
                    self.stats["task_restarts"] += 1
                    await asyncio.sleep(delay)

        return self.spawn(forever(), name=name)

    def _done(self, task: asyncio.Task[Any], name: str, on_error: ErrorHook | None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: never "Task exception was never retrieved"
        if exc is None:
            return
        self._count(name, exc)
        if on_error is not None:
            _call_hook(on_error, exc, name)

    def _count(self, name: str, exc: BaseException) -> None:
        self.stats["task_errors"] += 1
        self.stats["task_errors_" + name.split(" ")[0]] += 1
        log.error("%s failed: %s: %s", name, type(exc).__name__, exc,
                  exc_info=(type(exc), exc, exc.__traceback__))

    async def aclose(self) -> None:
        """Cancel every task and wait until all have ended; a task still running
        :data:`RECANCEL_AFTER` seconds after its cancellation is cancelled again.
        Idempotent."""
        self._closing = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            _done, pending = await asyncio.wait(tasks, timeout=RECANCEL_AFTER)
            if pending:
                self.stats["cancel_repeated"] += len(pending)
                log.warning("still running after their cancellation, cancelled again: %s",
                            ", ".join(sorted(t.get_name() for t in pending)))
            self._tasks.difference_update(t for t in tasks if t.done())

    def reopen(self) -> None:
        """Accept new tasks again after :meth:`aclose` (a restarted session)."""
        self._closing = False


def _call_hook(hook: ErrorHook, exc: BaseException, name: str) -> None:
    try:
        hook(exc)
    except Exception:
        log.exception("the error hook of %s failed", name)
