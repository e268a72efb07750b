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

The table never reads a clock: every method that needs the time takes ``now``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

from .ids import ID_BITS, NodeInfo, id_to_int


@dataclass(slots=True)
class NodeEntry:
    """Routing-table record of one node."""

    id: bytes
    addr: Hashable
    id_int: int
    last_seen: float
    fail_count: int = 0
    rtt: float | None = None

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
    ) -> None:
        self._questionable = questionable_after
        self.own_id = own_id
        self._own = id_to_int(own_id)
        self.k = k
        self._repl_max = replacement_cache
        self._max_fail = max_fail_count
        self.buckets: list[Bucket] = [Bucket()]
        self._by_id: dict[bytes, NodeEntry] = {}

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
                entry.addr = addr
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
        while True:
            idx = self.bucket_index(id_int)
            bucket = self.buckets[idx]
            if len(bucket.nodes) < self.k:
                entry = NodeEntry(node_id, addr, id_int, now, 0, rtt)
                bucket.nodes.append(entry)
                bucket.last_changed = now
                self._by_id[node_id] = entry
                self._drop_replacement(bucket, node_id)
                return None
            if idx == len(self.buckets) - 1 and len(self.buckets) < ID_BITS:
                self._split()
                continue
            break
        # Full bucket that cannot split: a failed node is replaced at once by the newcomer
        # (which just proved alive); otherwise the newcomer waits in the replacement cache
        # and the stalest node gets pinged.
        for i, old in enumerate(bucket.nodes):
            if old.fail_count > 0:
                del bucket.nodes[i]
                del self._by_id[old.id]
                entry = NodeEntry(node_id, addr, id_int, now, 0, rtt)
                bucket.nodes.append(entry)
                bucket.last_changed = now
                self._by_id[node_id] = entry
                self._drop_replacement(bucket, node_id)
                return None
        self._add_replacement(bucket, NodeEntry(node_id, addr, id_int, now, 0, rtt))
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

    def _remove_entry(self, bucket: Bucket, entry: NodeEntry) -> None:
        bucket.nodes.remove(entry)
        del self._by_id[entry.id]
        if bucket.replacements:
            promoted = bucket.replacements.pop()  # freshest
            bucket.nodes.append(promoted)
            self._by_id[promoted.id] = promoted

    def _add_replacement(self, bucket: Bucket, entry: NodeEntry) -> None:
        self._drop_replacement(bucket, entry.id)
        bucket.replacements.append(entry)
        if len(bucket.replacements) > self._repl_max:
            del bucket.replacements[0]

    @staticmethod
    def _drop_replacement(bucket: Bucket, node_id: bytes) -> None:
        for i, e in enumerate(bucket.replacements):
            if e.id == node_id:
                del bucket.replacements[i]
                return


def _last_seen(e: NodeEntry) -> float:
    return e.last_seen
