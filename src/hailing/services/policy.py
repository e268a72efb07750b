"""The call policy: who may call, and who a node listens for.

**The callee decides first.** Every offer that opened correctly is put to
:meth:`CallPolicy.admit` before anything is answered. The rules, in order:

1. a blocked caller is refused (``blocked``);
2. a node in do-not-disturb refuses everyone (``do-not-disturb``), a busy node too
   (``busy``);
3. a contact (allowed) is accepted, and so is anyone else when the node accepts calls
   from strangers (``accept_any``, from the book or overridden by the caller);
4. everyone else is an ``unknown caller``.

A refused caller is told nothing at all: a block looks exactly like an offline callee.
The same object says which contacts a node listens for (:meth:`CallPolicy.allowed`) and
whether it also listens on its public inbox (:meth:`CallPolicy.accept_any`).
"""

from __future__ import annotations

from typing import Literal

from .contacts import ContactBook

__all__ = ["CallPolicy", "Verdict"]

Verdict = Literal["accepted", "blocked", "do-not-disturb", "busy", "unknown caller"]


class CallPolicy:
    """Admission over a :class:`ContactBook`. ``accept_any`` (when not None) overrides
    the book's own setting, e.g. ``hailing listen --accept-any``."""

    def __init__(self, book: ContactBook, accept_any: bool | None = None) -> None:
        self.book = book
        self.accept_any_override = accept_any

    def accept_any(self) -> bool:
        """Whether callers not in the book are accepted (and the public inbox listened)."""
        if self.accept_any_override is not None:
            return self.accept_any_override
        return self.book.accept_any()

    def allowed(self) -> list[bytes]:
        """The public keys of the contacts who may call (everyone in the book not blocked)."""
        return [c.pubkey for c in self.book.list() if not c.blocked]

    def admit(self, caller: bytes) -> Verdict:
        """``accepted`` or the reason of the refusal (see the module docstring)."""
        state = self.book.state(caller)
        if state == "blocked":
            return "blocked"
        status = self.book.status()
        if status == "dnd":
            return "do-not-disturb"
        if status == "busy":
            return "busy"
        if state == "allowed" or self.accept_any():
            return "accepted"
        return "unknown caller"

    def may_send_endpoint(self, sender: bytes) -> bool:
        """Only contacts' connection-info records are kept."""
        return self.book.state(sender) == "allowed"
