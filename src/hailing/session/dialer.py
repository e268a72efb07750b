"""The Dialer: a call tries couplers in order (a fallback ladder), each with its own time.

Theory of operation
-------------------
A ladder is a list of :class:`Rung`: a coupler's name and, optionally, how long a call
waits on it. :meth:`Dialer.dial` runs one *attempt* per rung, in order, until one
succeeds; the attempt (supplied by the caller, see
:meth:`hailing.peer.Peer.connect`) seals a fresh offer whose lifetime is exactly the
rung's time, sends it through that coupler and waits for the answer. The time of a rung
is its own ``timeout`` when given (capped by what is left of the call's total), else an
equal share of the time left among the rungs still to try; the last rung gets whatever is
left. An attempt that times out or fails with a :class:`~hailing.errors.HailingError`
(the coupler cannot send, has no address for the callee, lost its endpoint, ...) is
recorded as an :class:`Attempt` and the next rung is tried. Two failures stop the ladder
at once: an :class:`~hailing.rtc.connection.AuthenticationError` (someone answered but
could not prove the identity: trying elsewhere would only call the impostor again) and
anything that is not a ``HailingError`` (a bug).

A rung with ``after_timeout`` False is tried only after the rung before it *failed*
(a fallback for "cannot send here", such as the BEP44 fallback after the DHT inbox),
and takes no share of the time from the rungs before it.

When every rung failed, a ladder that tried one rung re-raises its own error (so a clear
"the chain endpoint is unreachable" stays itself), and a longer one raises one
:class:`~hailing.errors.QueryTimeout` naming every coupler tried and what happened there.
A timed-out call always reads ``nobody answered within N s (offline, busy, or not
accepting calls)``: a callee that refused us looks exactly like one that is offline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import AuthenticationError, HailingError, LocalProtocolError, QueryTimeout
from ..signaling import envelope
from .coupler import Coupler, SignalKind

__all__ = ["FALLBACK_LADDER", "Attempt", "Dialer", "Rung", "nobody_answered", "parse_ladder",
           "sender"]

T = TypeVar("T")

#: The least time a rung gets (a rung with less left is not tried).
MIN_RUNG = 0.5


@dataclass(frozen=True, slots=True)
class Rung:
    """One step of a ladder: the coupler ``name`` and its own wait (None: a share).
    With ``after_timeout`` False the rung is tried only when the one before it failed
    (could not send), not when it timed out, and it takes no share of the time from the
    rungs before it (see :data:`FALLBACK_LADDER`)."""

    name: str
    timeout: float | None = None
    after_timeout: bool = True


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened on one rung: ``error`` is None for the one that carried the call."""

    coupler: str
    seconds: float
    error: str | None = None
    timed_out: bool = False


#: The daemon's ladder on a DHT node (``hailing up`` without ``--no-bep44-fallback``):
#: hailing's DHT inbox, and the BEP44 fallback only when the inbox could not take the
#: offer (``no hailing node answered near this key``: no hailing node is reachable),
#: which happens at once, so the fallback has the whole call. An offer the inbox stored
#: but nobody answered is not sent again through the fallback: the callee listens on
#: the same key at the same nodes, so it is offline, busy or refusing, and a second
#: offer would only ring an unanswered call twice.
FALLBACK_LADDER = (Rung("dht"), Rung("mainline", after_timeout=False))


def parse_ladder(ladder: Iterable[str | tuple[str, float | None] | Rung]) -> list[Rung]:
    """Rungs from names, ``(name, timeout)`` pairs or rungs; LocalProtocolError if bad."""
    rungs: list[Rung] = []
    for item in ladder:
        if isinstance(item, Rung):
            rung = item
        elif isinstance(item, str):
            rung = Rung(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            rung = Rung(item[0], item[1])
        else:
            raise LocalProtocolError(f"a ladder step is a coupler name or (name, timeout), "
                                     f"not {item!r}")
        if rung.timeout is not None and not rung.timeout > 0:
            raise LocalProtocolError(f"the timeout of {rung.name!r} must be positive")
        if any(r.name == rung.name for r in rungs):
            raise LocalProtocolError(f"{rung.name!r} appears twice in the ladder")
        rungs.append(rung)
    if not rungs:
        raise LocalProtocolError("a ladder has at least one coupler")
    return rungs


def nobody_answered(timeout: float) -> str:
    return f"nobody answered within {timeout:.0f} s (offline, busy, or not accepting calls)"


class Dialer:
    """Tries ``couplers`` in ladder order (see the module docstring). Every rung must
    name one of the couplers; by default the ladder is the couplers' own order."""

    def __init__(self, couplers: Sequence[Coupler], ladder: Sequence[Rung] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.couplers = {c.name: c for c in couplers}
        self.ladder = list(ladder) if ladder is not None else [Rung(c.name) for c in couplers]
        unknown = [r.name for r in self.ladder if r.name not in self.couplers]
        if unknown:
            raise LocalProtocolError(f"no coupler named {', '.join(map(repr, unknown))} "
                                     f"(have {', '.join(self.couplers) or 'none'})")
        if not self.ladder:
            raise LocalProtocolError("a ladder has at least one coupler")
        self._clock = clock
        #: The attempts of the last :meth:`dial`, in order.
        self.last: list[Attempt] = []

    def rungs(self, only: str | None = None) -> list[Rung]:
        """The ladder, or the one rung named ``only``."""
        if only is None:
            return list(self.ladder)
        if only not in self.couplers:
            raise LocalProtocolError(f"no coupler named {only!r} "
                                     f"(have {', '.join(self.couplers)})")
        return [next((r for r in self.ladder if r.name == only), Rung(only))]

    async def dial(self, timeout: float, attempt: Callable[[Coupler, float], Awaitable[T]],
                   *, only: str | None = None) -> tuple[T, Coupler]:
        """Run ``attempt(coupler, seconds)`` rung by rung until one returns; returns its
        result and the coupler that carried it."""
        if not timeout > 0:
            raise LocalProtocolError("a call's timeout must be positive")
        rungs = self.rungs(only)
        deadline = self._clock() + timeout
        self.last = []
        errors: list[BaseException] = []
        timed_out = False
        for i, rung in enumerate(rungs):
            if errors and timed_out and not rung.after_timeout:
                continue  # only a failure of the rung before leads here
            left = deadline - self._clock()
            if left < MIN_RUNG and errors:
                self.last.append(Attempt(rung.name, 0.0, "no time left", True))
                continue
            # the share of the rungs still to try after a timeout
            sharing = 1 + sum(1 for r in rungs[i + 1:] if r.after_timeout)
            share = left / sharing
            wait = min(rung.timeout, left) if rung.timeout is not None else share
            wait = max(wait, MIN_RUNG)
            coupler = self.couplers[rung.name]
            t0 = self._clock()
            try:
                result = await attempt(coupler, wait)
            except AuthenticationError:
                raise
            except (HailingError, TimeoutError) as exc:
                timed_out = isinstance(exc, TimeoutError | QueryTimeout)
                self.last.append(Attempt(coupler.name, self._clock() - t0,
                                         _line(exc, wait), timed_out))
                errors.append(exc)
                continue
            self.last.append(Attempt(coupler.name, self._clock() - t0))
            return result, coupler
        if len(self.last) == 1 and errors:
            only_error = errors[0]
            if isinstance(only_error, TimeoutError):
                raise QueryTimeout(nobody_answered(timeout)) from None
            raise only_error
        raise QueryTimeout(nobody_answered(timeout) + "; tried " + "; ".join(
            f"{a.coupler}: {a.error}" for a in self.last))


def _line(exc: BaseException, wait: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer in {wait:.0f} s"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def sender(coupler: Coupler, peer: bytes, kind: SignalKind
           ) -> Callable[[bytes], Awaitable[int]]:
    """Send through ``coupler``, refusing at once an envelope larger than it carries."""

    async def send(blob: bytes) -> int:
        # a coupler may carry more, but no receiver opens an envelope over MAX_ENVELOPE
        limit = min(coupler.capabilities.max_blob, envelope.MAX_ENVELOPE)
        if len(blob) > limit:
            raise LocalProtocolError(f"a {len(blob)}-byte {kind} does not fit {coupler.name} "
                                     f"(at most {limit} bytes)")
        return await coupler.send(peer, blob, kind)

    return send
