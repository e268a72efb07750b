"""The routing table: k-buckets that split, replacement caches, ping-before-evict.

Theory of operation
-------------------
Bucket ``i`` holds the nodes whose id shares exactly ``i`` leading bits with ours; the
last bucket holds everything sharing at least ``len(buckets) - 1`` bits. Only the last
bucket (the one our own id falls in) splits when it overflows (BEP5). When any other
bucket is full, a new node goes to the bucket's replacement cache; if the bucket holds a
node that has failed or is questionable, :meth:`RoutingTable.add` returns it so the
protocol can ping it (ping-before-evict). A node that fails ``max_fail_count`` requests
in a row is removed and the freshest replacement takes its place.

**Per-IP limits** (against one host capturing the table, an eclipse): with a ``keys``
function (see :class:`SourceKeys`), an IP address (an IPv6 /64) holds at most
``max_per_ip`` entries in the whole table, and a network (an IPv4 /24, an IPv6 /64) at
most ``max_per_net`` entries in one bucket, replacement caches included, as libtorrent's
``restrict_routing_ips`` does. A node over a limit is refused (counted as
``routing_refused_ip`` / ``routing_refused_net`` in ``stats``); the entries already
there stay. Addresses for which ``keys`` returns None (local testnets, addresses
without an IP form) are not limited.

The table never reads a clock: every method that needs the time takes ``now``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

from ..krpc import AddressCodec
from .bep42 import is_local_raw
from .config import DhtConfig
from .ids import ID_BITS, NodeInfo, id_to_int

Keys = tuple[bytes, bytes] | None


class SourceKeys:
    """The per-IP keys of an address: (host, network) = (IPv4 address, its /24) or
    (IPv6 /64, the same /64); None when the address is not limited: it has no IP form,
    or it is local (BEP42's exempt blocks: loopback, private, link-local, and RFC 2544's
    benchmarking range 198.18.0.0/15, which is not routed on the Internet: where it
    appears it is a testbed, such as the NAT lab's one-/24 "internet") and
    ``exempt_local`` is set, so that testnets of many nodes on one host keep working.
    A class rather than a closure, so that a deep copy of a core stays self-contained."""

    __slots__ = ("codec", "exempt_local")

    def __init__(self, codec: AddressCodec, exempt_local: bool = True) -> None:
        self.codec = codec
        self.exempt_local = exempt_local

    def __call__(self, addr: Hashable) -> Keys:
        packed = self.codec.pack(addr)
        if packed is None:
            return None
        raw = packed[:-2]
        if self.exempt_local and (is_local_raw(raw) or _benchmarking(raw)):
            return None
        if len(raw) == 4:
            return raw, raw[:3]
        return raw[:8], raw[:8]


def _benchmarking(raw: bytes) -> bool:
    """RFC 2544's 198.18.0.0/15 (IPv4, or IPv4-mapped IPv6)."""
    if len(raw) == 16 and raw[:12] == bytes(10) + b"\xff\xff":
        raw = raw[12:]
    return len(raw) == 4 and raw[0] == 198 and raw[1] & 0xFE == 18


@dataclass(slots=True)
class NodeEntry:
    """Routing-table record of one node."""

    id: bytes
    addr: Hashable
    id_int: int
    last_seen: float
    fail_count: int = 0
    rtt: float | None = None
    #: Per-IP keys (see SourceKeys); None when not limited.
    keys: Keys = None

    def info(self) -> NodeInfo:
        return NodeInfo(self.id, self.addr)


@dataclass(slots=True)
class Bucket:
    nodes: list[NodeEntry] = field(default_factory=list)  # least recently seen first
    replacements: list[NodeEntry] = field(default_factory=list)
    last_changed: float = 0.0


class RoutingTable:
    """k-buckets around ``own_id``. See the module docstring."""

    def __init__(
        self,
        own_id: bytes,
        k: int = 8,
        replacement_cache: int = 8,
        max_fail_count: int = 2,
        questionable_after: float = 900.0,
        *,
        keys: SourceKeys | None = None,
        max_per_ip: int = 1,
        max_per_net: int = 1,
        stats: Counter[str] | None = None,
    ) -> None:
        self._questionable = questionable_after
        self.own_id = own_id
        self._own = id_to_int(own_id)
        self.k = k
        self._repl_max = replacement_cache
        self._max_fail = max_fail_count
        self.buckets: list[Bucket] = [Bucket()]
        self._by_id: dict[bytes, NodeEntry] = {}
        self._keys = keys
        self._max_ip = max_per_ip
        self._max_net = max_per_net
        #: Entries (bucket nodes and replacements) per host key.
        self._ips: Counter[bytes] = Counter()
        self.stats: Counter[str] = stats if stats is not None else Counter()

    @classmethod
    def configured(
        cls, own_id: bytes, cfg: DhtConfig, codec: AddressCodec, stats: Counter[str]
    ) -> RoutingTable:
        """A table with the parameters and per-IP limits of ``cfg``."""
        return cls(
            own_id, cfg.k, cfg.replacement_cache, cfg.max_fail_count, cfg.questionable_after,
            keys=SourceKeys(codec, cfg.exempt_loopback), max_per_ip=cfg.routing_max_per_ip,
            max_per_net=cfg.routing_max_per_net, stats=stats,
        )

    # -- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[NodeEntry]:
        for b in self.buckets:
            yield from b.nodes

    def get(self, node_id: bytes) -> NodeEntry | None:
        return self._by_id.get(node_id)

    def bucket_index(self, id_int: int) -> int:
        cpl = ID_BITS - (id_int ^ self._own).bit_length()
        last = len(self.buckets) - 1
        return cpl if cpl < last else last

    def closest(
        self, target: bytes, count: int | None = None, *, replacements: bool = False
    ) -> list[NodeEntry]:
        """The ``count`` (default k) known nodes closest to ``target``, closest first;
        with ``replacements``, the replacement caches' nodes count as known too.

        Buckets at and after the target's index are all closer than any bucket before
        it, so the search widens bucket by bucket and sorts only what it needs.
        """
        n = self.k if count is None else count
        t = id_to_int(target)
        idx = self.bucket_index(t)
        found: list[NodeEntry] = []
        for b in self.buckets[idx:]:
            found.extend(b.nodes)
            if replacements:
                found.extend(b.replacements)
        found.sort(key=lambda e: e.id_int ^ t)
        i = idx - 1
        while len(found) < n and i >= 0:
            b = self.buckets[i]
            more = sorted(b.nodes + b.replacements if replacements else b.nodes,
                          key=lambda e: e.id_int ^ t)
            found.extend(more)
            i -= 1
        return found[:n]

    # -- updates -----------------------------------------------------------------------

    def add(self, node_id: bytes, addr: Hashable, now: float, rtt: float | None = None) -> NodeEntry | None:
        """Record that ``node_id`` at ``addr`` is alive (it answered us or queried us).

        Returns a node the caller should ping (ping-before-evict), or None.
        """
        if node_id == self.own_id:
            return None
        entry = self._by_id.get(node_id)
        if entry is not None:
            if entry.addr != addr:
                # Same id from another address: keep the one we know works (anti-hijack).
                if entry.fail_count == 0:
                    return None
                keys = self._keys(addr) if self._keys is not None else None
                bucket = self.buckets[self.bucket_index(entry.id_int)]
                self._uncount(entry)
                old_keys, entry.keys = entry.keys, None  # not counted against itself
                if not self._room_for(keys, bucket):
                    entry.keys = old_keys
                    self._count(entry)
                    return None
                entry.addr, entry.keys = addr, keys
                self._count(entry)
            entry.last_seen = now
            entry.fail_count = 0
            if rtt is not None:
                entry.rtt = rtt if entry.rtt is None else 0.8 * entry.rtt + 0.2 * rtt
            bucket = self.buckets[self.bucket_index(entry.id_int)]
            bucket.nodes.remove(entry)
            bucket.nodes.append(entry)
            bucket.last_changed = now  # BEP5: a node in the bucket responded
            return None
        id_int = id_to_int(node_id)
        # A replacement seen again leaves its cache first: it is re-placed (and counted) below.
        self._drop_replacement(self.buckets[self.bucket_index(id_int)], node_id)
        keys = self._keys(addr) if self._keys is not None else None
        if keys is not None and self._ips[keys[0]] >= self._max_ip:
            self.stats["routing_refused_ip"] += 1
            return None
        while True:
            idx = self.bucket_index(id_int)
            bucket = self.buckets[idx]
            if len(bucket.nodes) < self.k:
                if not self._room_for(keys, bucket):
                    return None
                entry = NodeEntry(node_id, addr, id_int, now, 0, rtt, keys)
                bucket.nodes.append(entry)
                bucket.last_changed = now
                self._by_id[node_id] = entry
                self._count(entry)
                return None
            if idx == len(self.buckets) - 1 and len(self.buckets) < ID_BITS:
                self._split()
                continue
            break
        if not self._room_for(keys, bucket):
            return None
        # Full bucket that cannot split: a failed node is replaced at once by the newcomer
        # (which just proved alive); otherwise the newcomer waits in the replacement cache
        # and the stalest node gets pinged.
        for i, old in enumerate(bucket.nodes):
            if old.fail_count > 0:
                del bucket.nodes[i]
                del self._by_id[old.id]
                self._uncount(old)
                entry = NodeEntry(node_id, addr, id_int, now, 0, rtt, keys)
                bucket.nodes.append(entry)
                bucket.last_changed = now
                self._by_id[node_id] = entry
                self._count(entry)
                return None
        self._add_replacement(bucket, NodeEntry(node_id, addr, id_int, now, 0, rtt, keys))
        stalest = min(bucket.nodes, key=_last_seen)
        if now - stalest.last_seen >= self._questionable:
            return stalest
        return None

    def failed(self, node_id: bytes, addr: Hashable) -> None:
        """A request to ``node_id`` timed out; drop it after max_fail_count in a row."""
        entry = self._by_id.get(node_id)
        if entry is None or entry.addr != addr:
            return
        entry.fail_count += 1
        if entry.fail_count >= self._max_fail:
            bucket = self.buckets[self.bucket_index(entry.id_int)]
            self._remove_entry(bucket, entry)

    def remove(self, node_id: bytes) -> None:
        entry = self._by_id.get(node_id)
        if entry is not None:
            self._remove_entry(self.buckets[self.bucket_index(entry.id_int)], entry)

    def would_take(self, node_id: bytes, addr: Hashable) -> bool:
        """Whether :meth:`add` would put ``node_id`` at ``addr`` into a bucket (not only
        a replacement cache): it is new, within the per-IP limits, and its bucket has
        room, can split, or holds a failed node. The protocol asks before it spends a
        ping on verifying a node that only queried us."""
        if node_id == self.own_id or node_id in self._by_id:
            return False
        keys = self._keys(addr) if self._keys is not None else None
        if keys is not None and self._ips[keys[0]] >= self._max_ip:
            return False
        id_int = id_to_int(node_id)
        idx = self.bucket_index(id_int)
        bucket = self.buckets[idx]
        if keys is not None and self._net_count(bucket, keys[1]) >= self._max_net:
            return False
        return (
            len(bucket.nodes) < self.k
            or (idx == len(self.buckets) - 1 and len(self.buckets) < ID_BITS)
            or any(e.fail_count for e in bucket.nodes)
        )

    def stale_buckets(self, now: float, age: float) -> list[int]:
        """Indexes of buckets unchanged for ``age`` seconds (to refresh)."""
        return [i for i, b in enumerate(self.buckets) if now - b.last_changed >= age]

    def touch_bucket(self, index: int, now: float) -> None:
        self.buckets[index].last_changed = now

    def random_id_in_bucket(self, index: int, randbits: int) -> bytes:
        """An id that falls in bucket ``index``, built from ``randbits`` (160 random bits)."""
        mask = (1 << (ID_BITS - index)) - 1  # free low bits
        prefix = self._own & ~mask
        if index < len(self.buckets) - 1:
            bit = ID_BITS - 1 - index  # differ from us at bit `index`
            prefix |= (((self._own >> bit) & 1) ^ 1) << bit
            mask >>= 1
        return (prefix | (randbits & mask)).to_bytes(20, "big")

    # -- internals ---------------------------------------------------------------------

    def _split(self) -> None:
        last = self.buckets[-1]
        new = Bucket(last_changed=last.last_changed)
        depth = len(self.buckets) - 1
        self.buckets.append(new)
        keep: list[NodeEntry] = []
        for e in last.nodes:
            (new.nodes if self.bucket_index(e.id_int) > depth else keep).append(e)
        last.nodes = keep
        repl: list[NodeEntry] = []
        for e in last.replacements:
            (new.replacements if self.bucket_index(e.id_int) > depth else repl).append(e)
        last.replacements = repl

    def _room_for(self, keys: Keys, bucket: Bucket) -> bool:
        """Per-IP limits for a node with ``keys`` entering ``bucket`` (or its cache)."""
        if keys is None:
            return True
        if self._ips[keys[0]] >= self._max_ip:
            self.stats["routing_refused_ip"] += 1
            return False
        if self._net_count(bucket, keys[1]) >= self._max_net:
            self.stats["routing_refused_net"] += 1
            return False
        return True

    @staticmethod
    def _net_count(bucket: Bucket, net: bytes) -> int:
        n = 0
        for e in bucket.nodes:
            if e.keys is not None and e.keys[1] == net:
                n += 1
        for e in bucket.replacements:
            if e.keys is not None and e.keys[1] == net:
                n += 1
        return n

    def _count(self, entry: NodeEntry) -> None:
        if entry.keys is not None:
            self._ips[entry.keys[0]] += 1

    def _uncount(self, entry: NodeEntry) -> None:
        if entry.keys is not None:
            ip = entry.keys[0]
            left = self._ips[ip] - 1
            if left > 0:
                self._ips[ip] = left
            else:
                del self._ips[ip]

    def _remove_entry(self, bucket: Bucket, entry: NodeEntry) -> None:
        bucket.nodes.remove(entry)
        del self._by_id[entry.id]
        self._uncount(entry)
        if bucket.replacements:
            promoted = bucket.replacements.pop()  # freshest
            bucket.nodes.append(promoted)
            self._by_id[promoted.id] = promoted

    def _add_replacement(self, bucket: Bucket, entry: NodeEntry) -> None:
        self._drop_replacement(bucket, entry.id)
        bucket.replacements.append(entry)
        self._count(entry)
        if len(bucket.replacements) > self._repl_max:
            self._uncount(bucket.replacements.pop(0))

    def _drop_replacement(self, bucket: Bucket, node_id: bytes) -> None:
        for i, e in enumerate(bucket.replacements):
            if e.id == node_id:
                del bucket.replacements[i]
                self._uncount(e)
                return


def _last_seen(e: NodeEntry) -> float:
    return e.last_seen
