"""The daemon's own DHT node: its settings, its start, and its overlay's status.

:class:`DhtSettings` says where the node binds, whom it joins through, whether it is a
BEP43 read-only node, and whether it also runs over WebRTC data-channel links (the
overlay, on by default: a :class:`~hailing.transport.datachannel.LinkDriver` with cap
``hailing up --links P``, :data:`DEFAULT_LINKS`; ``--links 0`` turns it off;
docs/overlay.md). :func:`open_dht_node` starts it and joins; :func:`overlay_status` is
the ``overlay`` of ``GET /api/status``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import QueryTimeout
from ..node import Addr, format_hostport

if TYPE_CHECKING:
    from ..session.iceservers import IceServerSource

__all__ = ["DEFAULT_LINKS", "MAX_LINKS", "DhtSettings", "open_dht_node", "overlay_status"]

#: The daemon's data-channel links by default (``hailing up --links``, config.toml's
#: ``links``): the simulator met >= 99 % of couplings at 10,000 nodes for p >= 32, not
#: below (docs/benchmarks.md, "The overlay in the simulator"); a daemon is not a browser
#: (no tab's limit of a few hundred connections shared with pages), and an idle link
#: costs a keepalive every 15 s. Friend links' DHT channels are pinned and count toward
#: it (they ride on the friend's connection: no connection of their own); when every
#: link is pinned the cap yields. docs/overlay.md, "Links to friends and the ladder".
DEFAULT_LINKS = 32
#: The most ``--links`` takes.
MAX_LINKS = 256


@dataclass(frozen=True)
class DhtSettings:
    """The daemon's own DHT node: where it binds, whom it joins through, and whether it
    is a BEP43 read-only node (answers no queries; for a node others cannot reach)."""

    bind: Addr = ("127.0.0.1", 0)
    bootstrap: tuple[Addr, ...] = ()
    read_only: bool = False
    #: Also run the DHT over data-channel links, at most this many open (0: UDP only):
    #: friend links carry its channel, and calls can be forwarded through it.
    links: int = DEFAULT_LINKS


async def open_dht_node(data_dir: Path, dht: DhtSettings,
                        ice: Callable[[], IceServerSource | None] | None = None) -> Any:
    """Start the daemon's DHT node (state in ``data_dir/dht``) and join through
    ``dht.bootstrap`` (or the nodes it knew). Raises QueryTimeout in one line when
    bootstrap addresses were given and none answered. ``ice``: where its overlay links'
    ICE servers come from when asked (the daemon's Peer's, docs/nat.md; None or
    returning None: no ICE server), :mod:`hailing.daemon.overlay_ice`."""
    from ..dht import DhtConfig
    from ..node import DhtNode

    links = None
    if dht.links:
        from .overlay_ice import IceLinkDriver

        links = IceLinkDriver(cap=dht.links, source=ice or (lambda: None))
        # The daemon's node has UDP: its lookups and forwarding need no overlay pins, and
        # the peers its table knows at link addresses are its friends' nodes, whose one
        # connection is the friend link (daemon/friend_links.py: pinned as "friend",
        # re-opened by FriendLinks). So the link manager pins nothing of its own (no
        # "closest"/"level" pin, hence no reconnection of its own) and couples no pin:
        # either would open a second connection to a friend's node after the friend link
        # went. Links-only nodes keep both (docs/overlay.md, "Pins over levels").
        links.closest = links.levels = 0
        links.fill_pins = False
    node = DhtNode(dht.bind, data_dir=data_dir / "dht", bootstrap=dht.bootstrap,
                   config=DhtConfig(read_only=dht.read_only), links=links)
    await node.start()
    try:
        if dht.bootstrap or len(node.core.table):
            try:
                size = await node.bootstrap()
            except QueryTimeout:
                size = 0
            if size == 0 and dht.bootstrap:
                where = ", ".join(format_hostport(a) for a in dht.bootstrap)
                raise QueryTimeout(f"no DHT node answered at {where}")
    except BaseException:
        await node.stop()
        raise
    return node


def overlay_status(node: Any, friends: Counter[str] | None) -> dict[str, Any] | None:
    """The node's data-channel links (``--links``), for ``status``; None without (``--links
    0``, or no DHT node). A link is ``routed`` when the routing table reaches its peer's
    node through it; ``stats`` are the driver's counters (``link_sent`` and
    ``link_received``: DHT datagrams over links)."""
    driver = getattr(node, "links", None)
    if driver is None:
        return None
    core = getattr(node, "core", None)

    def routed(link: Any) -> bool:
        entry = core.table.get(link.peer_id) if core is not None and link.peer_id else None
        return entry is not None and entry.addr == link.addr

    return {"cap": driver.cap, "dht_channels": friends["dht_channels"] if friends else 0,
            "links": [{"peer": x.peer_id.hex() if x.peer_id else None, "open": x.is_open,
                       "pins": sorted(x.pins), "routed": routed(x)} for x in driver.links()],
            "stats": dict(sorted(driver.stats.items()))}
