"""Events the session layer reports to its user (a CLI, the daemon, a UI)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["CallEvent"]


@dataclass(frozen=True)
class CallEvent:
    """An offer arrived: accepted or refused (and why); or an accepted call whose
    connection then failed (``failed``, with the reason). ``coupler`` names the way the
    offer came (``dht``, ``contract``, ``ws``, ``channel``) when known; ``media`` the
    kinds of media the offer has (``audio``, ``video``; empty for a data link)."""

    peer: bytes
    accepted: bool
    reason: str
    at: float = field(default_factory=time.time)
    failed: bool = False
    coupler: str | None = None
    media: tuple[str, ...] = ()
