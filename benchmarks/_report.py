"""Not a benchmark: the report helpers the call benchmarks share.

Imported as a sibling module (a script's own folder is first on ``sys.path``, as
``_procs``): nearest-rank percentiles, the summary of connect times, one timed call
through ``Peer.connect()`` as a report row, and printing (and saving) the JSON report.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only in annotations: the simulator benchmarks import this without aiortc
    from hailing.peer import Peer


def pct(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p`` percentile of ``values`` (None for no values)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


def spread(values: list[float]) -> dict[str, float | None]:
    """p50, p95, min, max and mean of ``values`` (None each for no values)."""
    return {"p50": pct(values, 50), "p95": pct(values, 95), "min": min(values, default=None),
            "max": max(values, default=None),
            "mean": round(statistics.fmean(values), 3) if values else None}


async def timed_call(caller: Peer, callee_id: str, timeout: float,
                     row: dict[str, Any]) -> dict[str, Any]:
    """``caller`` calls ``callee_id`` until an authenticated, open data channel, sends one
    message and hangs up; ``row`` gains ``ok``, ``connect_s`` and ``coupler`` (or ``ok``
    False, ``error`` and ``seconds``) and the dialer's ``rungs`` (coupler, seconds, ok).
    A failed call is a result, not a crash."""
    t0 = time.perf_counter()
    try:
        conn = await caller.connect(callee_id, timeout=timeout)
        try:
            await conn.send_text("ping")
        finally:
            await conn.close()
        row.update(ok=True, connect_s=round(conn.connect_ms / 1000, 3), coupler=conn.coupler)
    except Exception as exc:
        row.update(ok=False, error=(str(exc).splitlines() or [repr(exc)])[0],
                   seconds=round(time.perf_counter() - t0, 3))
    dialer = caller.dialer
    row["rungs"] = [(a.coupler, round(a.seconds, 3), a.error is None)
                    for a in (dialer.last if dialer is not None else [])]
    return row


def emit(report: dict[str, Any], out: Path | None, indent: int = 2) -> None:
    """Print ``report`` as JSON, and write it to ``out`` too if one is given."""
    text = json.dumps(report, indent=indent)
    print(text)
    if out is not None:
        out.write_text(text + "\n")
