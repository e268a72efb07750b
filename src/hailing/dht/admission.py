"""Who may enter the routing table (issue 9, item 6: a table one address cannot take over).

Theory of operation
-------------------
Three checks stand between a node and a bucket, each cheap and each counted in the
core's ``stats`` when it refuses:

1. **BEP42** (:meth:`Admission.acceptable`): with ``enforce_node_id`` (the default), a
   node at a public address must carry an id derived from that address; local
   addresses (loopback, private, link-local) are exempt, as BEP42 says. Our own id is
   made compliant the same way once our peers' ``ip`` votes agree on a public address
   (:meth:`Admission.own_id`), or other enforcing nodes would keep us out of theirs.
2. **Per-IP limits**, in the table itself (:class:`~hailing.dht.routing.RoutingTable`,
   ``routing_max_per_ip`` / ``routing_max_per_net``).
3. **Verification** (:meth:`Admission.may_verify`): a node that only sent us a query
   enters the table after it answered a ping of ours (the ping's answer inserts it, as
   any answer does). The pings are bounded: one awaited per address, at most
   ``verify_pending`` awaited in all, and a token bucket of ``verify_rate`` a second
   (bursts of ``verify_burst``), so a flood of queries with forged source addresses
   makes us send at most that many small pings to the forged addresses.

No clock is read: every call that needs the time takes ``now``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Hashable

from ..krpc import AddressCodec
from . import bep42
from .config import DhtConfig

#: Answers naming the same public address for us before we take a BEP42 id for it: a
#: few peers (or liars) cannot move our id.
OWN_ID_VOTES = 8

_V4_MAPPED = bytes(10) + b"\xff\xff"


class Admission:
    """The BEP42 check and the budget of verification pings (module docstring)."""

    def __init__(self, config: DhtConfig, codec: AddressCodec, stats: Counter[str], now: float) -> None:
        self.config = config
        self.codec = codec
        self.stats = stats
        #: Addresses with a verification ping awaited -> when we stop waiting for it.
        self._pending: dict[Hashable, float] = {}
        self._tokens = float(config.verify_burst)
        self._refilled = now
        self._checked: tuple[bytes, bytes] | None = None
        #: Our address as our peers' answers name it (BEP42 ``ip``): address -> answers.
        self.votes: Counter[bytes] = Counter()

    def acceptable(self, node_id: bytes, addr: Hashable) -> bool:
        """BEP42 (when enforced): may ``node_id`` at ``addr`` enter the table?"""
        if not self.config.enforce_node_id:
            return True
        packed = self.codec.pack(addr)
        if packed is None:
            return True
        raw = packed[:-2]
        if raw[:12] == _V4_MAPPED:
            raw = raw[12:]
        if bep42.is_local_raw(raw) or bep42.node_id_ok_raw(node_id, raw):
            return True
        self.stats["rejected_node_id"] += 1
        return False

    def may_verify(self, addr: Hashable, now: float) -> bool:
        """Spend a verification ping on the query sender at ``addr``? True at most once
        per address at a time, within the pending cap and the rate limit."""
        pending = self._pending
        if addr in pending:
            if pending[addr] > now:
                return False
            del pending[addr]
        cfg = self.config
        if len(pending) >= cfg.verify_pending:
            for a in [a for a, until in pending.items() if until <= now]:
                del pending[a]
            if len(pending) >= cfg.verify_pending:
                self.stats["verify_refused_pending"] += 1
                return False
        self._tokens = min(float(cfg.verify_burst), self._tokens + (now - self._refilled) * cfg.verify_rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.stats["verify_refused_rate"] += 1
            return False
        self._tokens -= 1.0
        pending[addr] = now + cfg.query_timeout
        self.stats["verify_pings"] += 1
        return True

    @property
    def pending(self) -> int:
        """Verification pings awaited now."""
        return len(self._pending)

    def done(self, addr: Hashable) -> None:
        """The verification ping to ``addr`` was answered or failed."""
        self._pending.pop(addr, None)

    def vote(self, ip: bytes) -> bytes:
        """An answer says our address is ``ip`` (compact, BEP42's ``ip`` field): count it;
        returns the address most answers name (our external IP)."""
        votes = self.votes
        votes[ip[:-2]] += 1
        if sum(votes.values()) > 1000:
            self.votes = votes = Counter(dict(votes.most_common(10)))
        return votes.most_common(1)[0][0]

    def own_id(self, node_id: bytes) -> bytes:
        """Our id, or the BEP42 id derived from it (:func:`bep42.compliant_id`) once
        OWN_ID_VOTES answers agree on one public address of ours."""
        votes = self.votes
        if not self.config.enforce_node_id or not votes:
            return node_id
        ip, count = votes.most_common(1)[0]
        if count < OWN_ID_VOTES or self._checked == (ip, node_id):
            return node_id
        self._checked = (ip, node_id)  # checked once per address (and id)
        if len(ip) not in (4, 16) or bep42.is_local_raw(ip) or bep42.node_id_ok_raw(node_id, ip):
            return node_id
        new = bep42.compliant_id(node_id, str(ipaddress.ip_address(ip)))
        self._checked = (ip, new)
        return new
