"""Node ids over links: each side of a new link tells the other its DHT node id.

Theory of operation
-------------------
The ``network`` coupler (:mod:`hailing.session.network_coupler`) forwards a sealed
envelope toward a contact's **DHT node** through the data-channel overlay, so it needs
that node's id, which nothing public links to the contact's identity. It is learned from
an earlier link: when a connection to a contact opens (either direction),
:meth:`NodeIds.announce` sends over its data channel an envelope of kind
:data:`KIND_NODE` (sealed to the contact and signed like any envelope, living
:data:`NODE_TTL` seconds) whose body is our node's 20-byte id. The router hands the
contact's to :meth:`NodeIds.received`, which keeps it (``save``: the contact book's
table, :class:`~hailing.services.friends.FriendBook`, so a restart keeps it) only when

- it came over a data channel of that very contact (not through a coupler: a node id is
  only ever learned over a link), and
- the sender is a contact (``is_contact``), and the body is 20 bytes.

Anything else is dropped and counted (``node_ids_refused``, ``node_ids_bad``); a kept
one is counted ``node_ids_learned`` (``node_ids_sent`` for ours). A node without a DHT
node (a relay- or contract-only peer) announces nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..errors import HailingError
from ..identity import Identity
from ..signaling import envelope
from .router import Source

__all__ = ["KIND_NODE", "NODE_ID_SIZE", "NODE_TTL", "NodeIds"]

#: Envelope kind of a node-id announcement (1 offer, 2 answer, 3 endpoint, 4 cancel).
KIND_NODE = 5
#: A DHT node id (BEP5: 160 bits).
NODE_ID_SIZE = 20
#: Lifetime of an announcement (seconds): it is read as soon as it arrives.
NODE_TTL = 120


class NodeIds:
    """Announces our node id over new links and keeps contacts' (see the module
    docstring). ``own()`` is our node's id (None: no node); ``load(peer)`` /
    ``save(peer, node_id)`` read and write the kept ones."""

    def __init__(self, identity: Identity, *, stats: Counter[str],
                 own: Callable[[], bytes | None], is_contact: Callable[[bytes], bool],
                 load: Callable[[bytes], bytes | None],
                 save: Callable[[bytes, bytes], object],
                 clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.stats = stats
        self._own = own
        self._is_contact = is_contact
        self._load = load
        self._save = save
        self._clock = clock
        #: Learned in this run (also when the store cannot be written).
        self._known: dict[bytes, bytes] = {}

    def of(self, peer: bytes) -> bytes | None:
        """``peer``'s node id as it last announced it over a link, or None."""
        known = self._known.get(peer)
        if known is not None:
            return known
        try:
            return self._load(peer)
        except HailingError:
            self.stats["node_id_lookup_errors"] += 1
            return None

    def announce(self, conn: Any) -> bool:
        """Send our node id over ``conn`` (a new link to a contact); False when there is
        nothing to send (no node, not a contact) or the channel is gone."""
        own = self._own()
        if own is None or len(own) != NODE_ID_SIZE or not self._is_contact(conn.peer):
            return False
        blob = envelope.seal(self.identity, conn.peer, KIND_NODE, own, now=self._clock(),
                             ttl=NODE_TTL)
        try:
            conn.send_signal(blob)
        except HailingError:
            return False
        self.stats["node_ids_sent"] += 1
        return True

    def received(self, opened: envelope.Opened, source: Source) -> None:
        """A router handler for :data:`KIND_NODE` envelopes."""
        if source.channel is None or not self._is_contact(opened.sender):
            self.stats["node_ids_refused"] += 1
            return
        if len(opened.body) != NODE_ID_SIZE:
            self.stats["node_ids_bad"] += 1
            return
        self._known[opened.sender] = opened.body
        self.stats["node_ids_learned"] += 1
        with contextlib.suppress(HailingError):  # kept in memory for this run anyway
            self._save(opened.sender, opened.body)
