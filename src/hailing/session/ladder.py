"""The default ladder and ladders written as text (``hailing up --ladder``, config.toml).

Theory of operation
-------------------
The :class:`~hailing.session.dialer.Dialer` tries the rungs of a ladder in order. The
default ladder, fastest and most private first (each rung only where it is available):

1. ``link`` (:data:`LINK_WAIT` s): the offer over an open link to the contact
   (:mod:`hailing.session.link_coupler`); with no link it fails at once;
2. ``network`` (:data:`NETWORK_WAIT` s): forwarded through the data-channel overlay to
   the contact's node (:mod:`hailing.session.network_coupler`); only on a node with an
   overlay; fails at once when the contact's node id is unknown;
3. ``dht``: the contact's DHT inbox, then ``mainline``, the BEP44 fallback, tried only
   when the inbox could not take the offer (see
   :data:`~hailing.session.dialer.FALLBACK_LADDER`); only on a node with a DHT node;
4. ``contract``: the signaling contract's events; only with a chain endpoint.

A ladder as text is a comma-separated list of coupler names, each optionally with its
own wait: ``link:3,dht,contract``. ``mainline`` right after ``dht`` is its fallback, as in
the default (tried only when the inbox failed); anywhere else it is a rung like the
others. :func:`describe` prints a ladder the same way (``hailing up`` lists the running
one in ``status`` and in its help).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import LocalProtocolError
from .dialer import Rung, parse_ladder

__all__ = ["COUPLERS", "LINK_WAIT", "NETWORK_WAIT", "default_ladder", "describe",
           "ladder_from_text"]

#: Every coupler name a ladder may use, in the default ladder's order (``ws`` last: the
#: WebSocket relay baseline, never in the default).
COUPLERS = ("link", "network", "dht", "mainline", "contract", "ws")
#: How long a call waits for an answer over an open link (seconds): an answer over a
#: link takes milliseconds; a link that went quiet must not hold the whole call.
LINK_WAIT = 5.0
#: How long a call waits on an answer forwarded through the overlay (seconds).
NETWORK_WAIT = 10.0


def default_ladder(*, link: bool = True, network: bool = False, dht: bool = False,
                   mainline: bool = False, contract: bool = False,
                   ws: bool = False) -> list[Rung]:
    """The default ladder of the rungs available (see the module docstring); ``ws`` (a
    relay given) comes where ``dht`` would. LocalProtocolError when none is."""
    rungs: list[Rung] = []
    if link:
        rungs.append(Rung("link", LINK_WAIT))
    if network:
        rungs.append(Rung("network", NETWORK_WAIT))
    if dht:
        rungs.append(Rung("dht"))
        if mainline:
            rungs.append(Rung("mainline", after_timeout=False))
    if ws:
        rungs.append(Rung("ws"))
    if contract:
        rungs.append(Rung("contract"))
    if not rungs:
        raise LocalProtocolError("a ladder has at least one coupler")
    return rungs


def ladder_from_text(items: str | Iterable[str]) -> list[Rung]:
    """Rungs from ``"link,dht:10,mainline"`` (or a list of such items); LocalProtocolError
    for an unknown name, a bad wait or a name twice."""
    parts = [items] if isinstance(items, str) else list(items)
    names = [p.strip() for part in parts for p in part.split(",") if p.strip()]
    rungs: list[Rung] = []
    for i, item in enumerate(names):
        name, _, wait = item.partition(":")
        name = name.strip().lower()
        if name not in COUPLERS:
            raise LocalProtocolError(f"unknown coupler {name!r} in the ladder (known: "
                                     f"{', '.join(COUPLERS)})")
        timeout: float | None = None
        if wait:
            try:
                timeout = float(wait)
            except ValueError:
                raise LocalProtocolError(f"the wait of {name!r} is seconds, not {wait!r}"
                                         ) from None
        fallback = name == "mainline" and i > 0 and names[i - 1].partition(":")[0] == "dht"
        rungs.append(Rung(name, timeout, after_timeout=not fallback))
    return parse_ladder(rungs)


def describe(ladder: Iterable[Rung]) -> str:
    """A ladder as :func:`ladder_from_text` reads it (``link:5,dht,mainline``)."""
    return ",".join(r.name if r.timeout is None else f"{r.name}:{r.timeout:g}"
                    for r in ladder)
