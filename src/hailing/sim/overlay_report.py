"""What a :class:`~hailing.sim.overlay.LinkOverlay` counts, and its report per phase."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OverlayStats:
    """What one phase of a run did (see :meth:`LinkOverlay.report`)."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    #: Signaling messages of each forwarded coupling whose target was alive at its start.
    messages: list[int] = field(default_factory=list)
    hops: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    flood_messages: list[int] = field(default_factory=list)
    flood_reached: int = 0
    flood_times: list[float] = field(default_factory=list)


def _pct(values: list[float] | list[int], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))  # nearest rank, as scenario.percentile
    return float(s[min(len(s), rank) - 1])


def phase_report(s: OverlayStats) -> dict[str, Any]:
    c = s.counts
    considered = len(s.messages)  # forwarded couplings whose target was alive at the start
    ok = c["succeeded"]
    opened = c["links_opened"]
    flood_n = len(s.flood_messages)
    return {
        "couplings": {
            "attempted": c["couplings"], "to_live_targets": considered, "succeeded": ok,
            "success_rate": ok / considered if considered else None,
            "failures": dict(sorted(s.failures.items())), "to_dead_targets": c["target_dead"],
            "for_dht": c["couplings_dht"], "for_pins": c["couplings_pin"],
            "bootstrap": c["bootstrap_couplings"], "bootstrap_ok": c["bootstrap_ok"],
            "first_hop_introducer": c["first_hop_introducer"],
            "stuck_target_unlinked": c["stuck_target_unlinked"],
            "rejoin_after_stuck": c["rejoin_after_stuck"],
        },
        # Overlay control frames on links (not signaling): link lists (lookahead) and
        # pinned neighbours telling their pins.
        "control": {"link_list_frames": c["link_list_frames"], "link_list_entries": c["link_list_entries"],
                    "link_list_frames_per_coupling": c["link_list_frames"] / considered if considered else None,
                    "neighbour_exchange": c["neighbour_exchange"]},
        "links": {"opened": opened, "opened_bootstrap": c["links_opened_bootstrap"],
                  "evicted": c["evicted"], "lost_to_churn": c["links_lost_to_churn"]},
        "signaling": {
            "messages": c["signaling_messages"],
            "per_new_link": c["signaling_messages"] / opened if opened else None,
            "to_dead_targets": c["signaling_to_dead"],
            "per_coupling": {"mean": sum(s.messages) / considered if considered else None,
                             "p50": _pct(s.messages, 50), "p95": _pct(s.messages, 95),
                             "max": max(s.messages, default=None)},
            "hops": {"p50": _pct(s.hops, 50), "p95": _pct(s.hops, 95), "max": max(s.hops, default=None)},
        },
        "coupling_ms": {"p50": _ms(_pct(s.times, 50)), "p95": _ms(_pct(s.times, 95))},
        "datagrams": {"queue_dropped": c["queue_dropped"], "dropped_on_failure": c["dropped_on_failure"]},
        "flood_samples": None if not flood_n else {
            "samples": flood_n, "reached": s.flood_reached / flood_n,
            "messages": {"mean": sum(s.flood_messages) / flood_n, "p50": _pct(s.flood_messages, 50),
                         "p95": _pct(s.flood_messages, 95)},
            "coupling_ms": {"p50": _ms(_pct(s.flood_times, 50)), "p95": _ms(_pct(s.flood_times, 95))},
        },
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)
