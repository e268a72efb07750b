"""The replay defence in memory: a window of nonces per sender, and a budget for strangers.

Theory of operation
-------------------
An envelope opens at most once: its ``(sender, nonce)`` pair is remembered as long as
the envelope could still be accepted (its expiry plus :data:`CLOCK_SKEW`). Memory is
bounded, so something must give when too many envelopes arrive; what gives must never
let a replay in, and must never let one sender make another sender's envelopes fail.

- **One window per sender.** Each sender (the ed25519 key the inner box proves) has its
  own window of at most ``per_sender`` nonces. When a sender overflows its window, its
  oldest nonce goes and *that sender's* floor rises to its timestamp: from then on that
  sender's envelopes timestamped at or before it are refused (``below_floor``). Only the
  holder of a key can make envelopes from it, so a sender that floods hurts itself only.
- **Contacts are never evicted.** ``is_contact(sender)`` (the contact book, given by the
  session) decides; contacts' windows are only ever emptied by time.
- **Strangers share a budget.** Everyone else (identities are free to make) shares at
  most ``stranger_entries`` nonces in ``stranger_senders`` windows. When the budget is
  full, the least recently heard stranger's window goes, and the *strangers'* floor
  rises to the newest timestamp it held: strangers' envelopes timestamped at or before
  it are refused (``stranger_floor``). A flood of fresh identities can therefore delay
  other strangers' first calls while it lasts (and up to the clock skew after it), but
  it cannot touch a contact's window, and no eviction lets a replay in. (One corner:
  a stranger's window evicted under a flood, then that stranger added as a contact,
  then one of its evicted envelopes replayed within its lifetime: it opens once more,
  as a contact's. The replayer lacks the sender's DTLS key, so no session opens.)
- Envelopes timestamped more than the clock skew ahead are refused before they get here
  (:class:`~hailing.errors.FutureEnvelope`, counted ``future``), so no floor can rise
  more than :data:`CLOCK_SKEW` past the present.

Holds no clock: every call takes ``now``. Expired entries are swept every
:data:`SWEEP_INTERVAL` seconds of ``now`` (amortised O(1) per envelope).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable

from ..errors import LocalProtocolError, ReplayedEnvelope

__all__ = ["CLOCK_SKEW", "PER_SENDER", "STRANGER_ENTRIES", "STRANGER_SENDERS",
           "SWEEP_INTERVAL", "ReplayCache"]

CLOCK_SKEW = 60.0  # seconds of clock difference tolerated either way
#: Nonces kept per sender (a contact sends a handful of envelopes a minute at most).
PER_SENDER = 64
#: Nonces kept for all strangers together, and how many strangers have a window.
STRANGER_ENTRIES = 4096
STRANGER_SENDERS = 4096
#: Seconds of ``now`` between two sweeps of expired entries.
SWEEP_INTERVAL = 60.0


class _Window:
    """One sender's nonces (oldest first): nonce -> (keep until, timestamp); and the
    floor left by nonces evicted before they expired (``floor_until``: when the last of
    them would have expired, after which the floor protects nothing)."""

    __slots__ = ("floor", "floor_until", "seen")

    def __init__(self) -> None:
        self.seen: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        self.floor = -1
        self.floor_until = -math.inf

    def evict_oldest(self, now: float) -> None:
        _, (keep_until, ts) = self.seen.popitem(last=False)
        if keep_until >= now:
            self.floor = max(self.floor, ts)
            self.floor_until = max(self.floor_until, keep_until)

    def prune(self, now: float) -> int:
        """Drop expired nonces; how many went."""
        expired = [n for n, (keep_until, _) in self.seen.items() if keep_until < now]
        for n in expired:
            del self.seen[n]
        return len(expired)

    def idle(self, now: float) -> bool:
        return not self.seen and self.floor_until < now


def _refusal(message: str, reason: str) -> ReplayedEnvelope:
    exc = ReplayedEnvelope(message)
    exc.reason = reason
    return exc


class ReplayCache:
    """The ``(sender, nonce)`` pairs of envelopes opened recently, per sender, and the
    counters of every refusal (see the module docstring). ``is_contact(sender)`` says
    whose windows are never evicted (by default nobody's: everyone is a stranger)."""

    def __init__(self, *, per_sender: int = PER_SENDER,
                 stranger_entries: int = STRANGER_ENTRIES,
                 stranger_senders: int = STRANGER_SENDERS,
                 is_contact: Callable[[bytes], bool] | None = None) -> None:
        if min(per_sender, stranger_entries, stranger_senders) < 1:
            raise LocalProtocolError("a replay cache keeps at least one nonce per sender "
                                     "and one stranger")
        if per_sender > stranger_entries:
            raise LocalProtocolError("per_sender cannot exceed stranger_entries")
        self.per_sender = per_sender
        self.stranger_entries = stranger_entries
        self.stranger_senders = stranger_senders
        self.is_contact: Callable[[bytes], bool] = is_contact or (lambda _sender: False)
        self.stats: Counter[str] = Counter()
        self._contacts: dict[bytes, _Window] = {}
        self._strangers: OrderedDict[bytes, _Window] = OrderedDict()  # least recent first
        self._stranger_count = 0  # nonces in self._strangers
        self._stranger_floor = -1
        self._stranger_floor_until = -math.inf
        self._next_sweep = -math.inf

    def __len__(self) -> int:
        """How many nonces are kept in all."""
        return self._stranger_count + sum(len(w.seen) for w in self._contacts.values())

    @property
    def senders(self) -> int:
        """How many senders have a window (contacts and strangers)."""
        return len(self._contacts) + len(self._strangers)

    def check_and_add(self, sender: bytes, nonce: bytes, timestamp: int, expires: int,
                      now: float) -> None:
        """Record a pair; :class:`ReplayedEnvelope` if it was seen (or may have been)."""
        if now >= self._next_sweep:
            self._sweep(now)
        contact = self.is_contact(sender)
        win = self._take(sender, contact)
        if win is not None:
            entry = win.seen.get(nonce)
            if entry is not None and entry[0] >= now:
                self._put_back(sender, win, contact)
                raise _refusal("envelope replayed: this sender's nonce was seen before",
                               "replayed")
            if timestamp <= win.floor:
                self._put_back(sender, win, contact)
                raise _refusal("envelope older than its sender's replay window: refused",
                               "below_floor")
        if not contact and timestamp <= self._stranger_floor:
            if win is not None:
                self._put_back(sender, win, contact)
            raise _refusal("envelope from a stranger older than the strangers' replay "
                           "window: refused", "stranger_floor")
        if win is None:
            win = _Window()
        win.prune(now)
        while len(win.seen) >= self.per_sender:
            win.evict_oldest(now)
        win.seen[nonce] = (expires + CLOCK_SKEW, timestamp)
        self._put_back(sender, win, contact)
        if not contact:
            self._keep_strangers_in_budget(sender, now)

    # -- internals ---------------------------------------------------------------------

    def _take(self, sender: bytes, contact: bool) -> _Window | None:
        """Remove ``sender``'s window from wherever it is (it is put back by class)."""
        win = self._contacts.pop(sender, None)
        if win is None:
            win = self._strangers.pop(sender, None)
            if win is not None:
                self._stranger_count -= len(win.seen)
        return win

    def _put_back(self, sender: bytes, win: _Window, contact: bool) -> None:
        if contact:
            self._contacts[sender] = win
        else:
            self._strangers[sender] = win  # the most recently heard stranger: at the end
            self._stranger_count += len(win.seen)

    def _keep_strangers_in_budget(self, newest: bytes, now: float) -> None:
        while (self._stranger_count > self.stranger_entries
               or len(self._strangers) > self.stranger_senders):
            sender, win = next(iter(self._strangers.items()))
            if sender == newest:  # never the window just written (per_sender <= budget)
                break
            contact = self.is_contact(sender)  # before any change: it may raise
            del self._strangers[sender]
            self._stranger_count -= len(win.seen)
            if contact:  # became a contact since last heard: kept
                self._contacts[sender] = win
                continue
            self.stats["stranger_evictions"] += 1
            for keep_until, ts in win.seen.values():
                if keep_until >= now:
                    self._raise_stranger_floor(ts, keep_until)
            if win.floor_until >= now:
                self._raise_stranger_floor(win.floor, win.floor_until)

    def _raise_stranger_floor(self, ts: int, until: float) -> None:
        self._stranger_floor = max(self._stranger_floor, ts)
        self._stranger_floor_until = max(self._stranger_floor_until, until)

    def _sweep(self, now: float) -> None:
        """Drop expired nonces and idle windows everywhere (every SWEEP_INTERVAL)."""
        self._next_sweep = now + SWEEP_INTERVAL
        for sender, win in list(self._contacts.items()):
            win.prune(now)
            if win.idle(now):
                del self._contacts[sender]
        for sender, win in list(self._strangers.items()):
            self._stranger_count -= win.prune(now)
            if win.idle(now):
                del self._strangers[sender]
        if self._stranger_floor_until < now:
            self._stranger_floor, self._stranger_floor_until = -1, -math.inf
