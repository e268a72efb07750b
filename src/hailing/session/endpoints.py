"""Endpoint records: a contact's connection info (SIP server, WireGuard peer).

A record is sealed to one contact (:func:`EndpointRecords.seal`, kind
:data:`~hailing.signaling.endpoint.KIND_ENDPOINT`, living as long as an envelope can)
and sent like an offer (:meth:`EndpointRecords.publish`): over an open channel to the
contact, else through the first coupler that takes it. A received one (from the
router) is kept only when its sender is a contact (``is_contact``) and it decodes; the
store keeps the newest per contact and kind (``endpoints``, ``refused_endpoints``,
``bad_endpoints`` in ``stats``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from ..errors import HailingError, LocalProtocolError
from ..identity import Identity
from ..rtc.connection import Connection
from ..signaling import envelope
from ..signaling.endpoint import (
    KIND_ENDPOINT,
    EndpointError,
    EndpointRecord,
    decode_record,
    encode_record,
)
from ..signaling.store import SignalStore, StoredEndpoint
from .coupler import Coupler
from .dialer import sender
from .router import Source

__all__ = ["ENDPOINT_TTL", "EndpointRecords"]

#: Lifetime of a sealed endpoint record (the longest an envelope can live, ~18 h).
ENDPOINT_TTL = envelope.MAX_TTL


class EndpointRecords:
    """Seals ours, keeps our contacts' (see the module docstring)."""

    def __init__(self, identity: Identity, store: SignalStore, *, stats: Counter[str],
                 is_contact: Callable[[bytes], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.store = store
        self.stats = stats
        self._is_contact = is_contact
        self._clock = clock

    def seal(self, peer: bytes, record: EndpointRecord) -> bytes:
        """The envelope carrying ``record`` to ``peer`` (LocalProtocolError if bad)."""
        return envelope.seal(self.identity, peer, KIND_ENDPOINT, encode_record(record),
                             now=self._clock(), ttl=ENDPOINT_TTL)

    async def publish(self, peer: bytes, record: EndpointRecord, *,
                      via: Connection | None = None, couplers: Sequence[Coupler] = ()) -> int:
        """Seal ``record`` to ``peer`` and send it over ``via`` (an open connection to
        it), else through the first of ``couplers`` that takes it (the last one's
        HailingError when none does). Returns how many carriers took it."""
        blob = self.seal(peer, record)
        if via is not None:
            via.send_signal(blob)
            return 1
        failure: HailingError = LocalProtocolError("no coupler to send the record through")
        for c in couplers:
            try:
                return int(await sender(c, peer, "endpoint")(blob))
            except HailingError as exc:
                failure = exc
        raise failure

    def received(self, opened: envelope.Opened, source: Source) -> None:
        """A router handler: keep a contact's record, drop anything else (counted)."""
        if not self._is_contact(opened.sender):
            self.stats["refused_endpoints"] += 1  # only contacts' records are kept
            return
        try:
            rec = decode_record(opened.body)
        except EndpointError:
            self.stats["bad_endpoints"] += 1
            return
        if self.store.put_endpoint(opened.sender, rec.kind, rec.endpoint, rec.extra,
                                   opened.timestamp, source.name):
            self.stats["endpoints"] += 1

    def stored(self, contact: str | bytes | None = None) -> list[StoredEndpoint]:
        """The records kept (of ``contact`` only, if given)."""
        return self.store.endpoints(contact)
