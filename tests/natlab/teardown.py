"""Labs still open are torn down however the process ends.

A normal exit or an exception (KeyboardInterrupt included) leaves the ``with Lab()`` block,
which tears the lab down. For the rest, every open lab is registered here: ``atexit``
closes them at interpreter exit, and SIGTERM/SIGHUP (whose default action would end the
process without atexit) close them, then run the previous handler (or the default action).
SIGKILL cannot be caught: the next ``Lab`` removes what a dead owner left
(``netns.purge_dead_owners``).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from types import FrameType
from typing import Any, Protocol

__all__ = ["close_all", "register", "unregister"]


class _Closable(Protocol):
    def close(self) -> None: ...


_open: list[_Closable] = []
_lock = threading.RLock()
_installed = False
_previous: dict[int, Any] = {}


def register(lab: _Closable) -> None:
    """Close ``lab`` at exit or on SIGTERM/SIGHUP unless it was closed before."""
    global _installed
    with _lock:
        _open.append(lab)
        if not _installed:
            _installed = True
            atexit.register(close_all)
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGTERM, signal.SIGHUP):
                    _previous[signum] = signal.getsignal(signum)
                    signal.signal(signum, _on_signal)


def unregister(lab: _Closable) -> None:
    with _lock:
        if lab in _open:
            _open.remove(lab)


def close_all() -> None:
    """Close every open lab (newest first); errors are printed, not raised."""
    while True:
        with _lock:
            if not _open:
                return
            lab = _open.pop()
        try:
            lab.close()
        except Exception as e:  # teardown goes on with the other labs
            print(f"natlab: teardown failed: {e}", flush=True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    close_all()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
