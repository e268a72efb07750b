"""Which links a node pins: its closest peers, and links at shallower levels, spread with
a phase of its own.

Theory of operation
-------------------
A peer's *level* is the length of the prefix its id shares with ours (0: the far half of
the id space; the deeper, the closer). A hop toward a target at level L makes progress
only over a link at level L or deeper into the target's side, so a node whose links all
sit at the same few levels leaves greedy forwarding stuck (docs/overlay.md, "In the
simulator"). With p links for about log2(n) levels a node cannot hold one at every
level; if every node held the *same* spread of levels, the others would be missing
everywhere. So, the simulator's rule (``hailing.sim.overlay_route.pick_levels``, and
docs/overlay.md "What a real node must do to match"), over the levels at which the node
knows a peer (its links, and its routing table's peers for the pins it couples):

- ``"closest"``: at each of the ``closest`` deepest levels, one peer (the neighbourhood
  that lookups of our own region and the last hop of every message need);
- ``"level"``: ``levels`` of the other, shallower levels, spread evenly over them from
  an offset :func:`phase_of` our id, so that across nodes every shallow level is held by
  about the same share of them; one peer at each.

At a level, the peer is the closest one we have a link to, else the closest one we know
(to be coupled): a link that is there serves as the pin of its level, at both its ends.
A pin keeps its link from eviction and makes the manager reconnect it when it goes
(:mod:`hailing.transport.links`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["choose_pins", "level", "phase_of", "pick_levels"]

ID_BITS = 160


def level(own: bytes, peer: bytes) -> int:
    """The length of the prefix ``peer`` shares with ``own`` (0..160)."""
    x = int.from_bytes(own, "big") ^ int.from_bytes(peer, "big")
    return ID_BITS - x.bit_length()


def phase_of(node_id: bytes) -> float:
    """Where a node's shallow pins start, in [0, 1): bits 64..95 of its id (as the
    simulator's hosts)."""
    return ((int.from_bytes(node_id, "big") >> 64) & 0xFFFFFFFF) / 2**32


def pick_levels(levels: list[int], budget: int, phase: float) -> list[int]:
    """``budget`` of the sorted ``levels``, spread evenly from the offset ``phase`` (all
    of them when they are no more)."""
    s = len(levels)
    if s <= budget:
        return list(levels)
    if budget <= 0:
        return []
    picks = sorted({int((i + phase) * s / budget) % s for i in range(budget)})
    return [levels[i] for i in picks]


def choose_pins(own: bytes, peers: Iterable[bytes], closest: int, levels: int,
                linked: Collection[bytes] | None = None) -> dict[bytes, str]:
    """The peers to pin, each with its reason (``"closest"`` or ``"level"``), among
    ``peers``; at a level, one of ``linked`` (all of ``peers`` when None) goes first."""
    mine = int.from_bytes(own, "big")
    ranked = sorted(set(peers), key=lambda p: int.from_bytes(p, "big") ^ mine)
    at: dict[int, bytes] = {}  # the peer of each level: linked first, then the closest
    for p in ranked:
        lv = level(own, p)
        here = at.get(lv)
        if here is None or (linked is not None and p in linked and here not in linked):
            at[lv] = p
    known = sorted(at)
    deep = known[len(known) - max(0, closest):] if closest > 0 else []
    shallow = known[:len(known) - len(deep)]
    out = {at[lv]: "closest" for lv in deep}
    for lv in pick_levels(shallow, levels, phase_of(own)):
        out[at[lv]] = "level"
    return out
