"""Browser video calls: from the click on "call" to the first remote video frame rendered
at the caller, signaled through the DHT and through the WebSocket relay, in one run.

Two pairs of ``hailing up`` daemons (alice calls bob): one pair joins a loopback
``hailing testnet`` (signaling through the DHT inboxes), the other signals through a
``hailing relay`` (``--relay URL``, the centralized baseline). Each daemon has its own
Chromium context with the web app open (fake camera and microphone). The callee's page
accepts every ring at once (a MutationObserver clicks "accept": no human, no driver in
the loop). Calls go round-robin over the two paths, the order rotating every round, so
a slow spell of the machine hits both alike; ``--warmup`` untimed calls per path first.

A sample is the caller page's own timeline (``window.hailingCalls``, see docs/ui.md):
``firstRemoteFrame - clicked``, both from ``performance.timeOrigin + performance.now()``:
the click on the contact's video-call button to the first remote frame presented by the
``<video>`` element (``requestVideoFrameCallback``). Also recorded per call: the
daemon's ``signal_ms`` (offer sealed and sent to answer opened), the coupler it used and
the page's intermediate marks (offer ready, answered, ICE connected, channel open). A
call that shows no remote frame within ``--timeout`` seconds is a failure (its state and
reason are kept); it is hung up and both pages are reloaded.

Everything runs in a network namespace with only ``lo`` (the script re-runs itself under
``unshare --net`` when it is root and not in one).

    python benchmarks/browser_calls.py [--calls 30] [--warmup 2] [--nodes 8]
        [--timeout 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "browser"))

from browser_harness import (  # noqa: E402
    Up,
    chromium,
    chromium_path,
    daemons,
    hang_up,
    new_context,
    open_app,
    relay,
    run_in_loopback_netns,
    start_call,
    testnet,
    wait_call_over,
    wait_js,
    wait_ready,
)

PATHS = ("dht", "relay")

#: Installed on the callee's pages: accept every incoming call the moment it shows.
AUTO_ACCEPT = """
(() => {
  const click = () => {
    const b = document.querySelector('[data-testid="incoming-call"] [data-testid="accept"]');
    if (b && !b.disabled) b.click();
  };
  const start = () => new MutationObserver(click).observe(document.body,
    { childList: true, subtree: true, attributes: true });
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
"""

#: JS: the caller's newest call once it has a first remote frame or has ended.
CALL_DONE = """
() => {
  const calls = (window.hailingCalls && window.hailingCalls.calls) || [];
  const c = calls[calls.length - 1];
  if (!c) return null;
  if (c.firstRemoteFrameAt === undefined && c.state !== "ended") return null;
  return { state: c.state, reason: c.reason || null, timeline: c.timeline,
           first: c.firstRemoteFrameAt ?? null, signalMs: c.signalMs ?? null,
           coupler: c.coupler ?? null, calls: calls.length };
}
"""

#: JS: how many calls the page has made so far.
CALL_COUNT = "() => ((window.hailingCalls && window.hailingCalls.calls) || []).length"


class Side:
    """One path's caller and callee: daemons and their pages."""

    def __init__(self, name: str, caller: Up, callee: Up, browser: Any) -> None:
        self.name = name
        self.caller, self.callee = caller, callee
        self.caller_ctx = new_context(browser, caller)
        self.callee_ctx = new_context(browser, callee)
        self.callee_ctx.add_init_script(AUTO_ACCEPT)
        self.caller_page = open_app(self.caller_ctx, caller)
        self.callee_page = open_app(self.callee_ctx, callee)

    def call(self, timeout_s: float) -> dict[str, Any]:
        """One call, hung up after its first remote frame; what the caller's page saw."""
        page = self.caller_page
        before = page.evaluate(CALL_COUNT)
        close_ended(page)
        start_call(page, "bob", "video")
        wait_js(page, f"() => ({CALL_COUNT})() > {before}", timeout_s=30)
        try:
            seen: dict[str, Any] = wait_js(page, CALL_DONE, timeout_s=timeout_s,
                                           interval_s=0.05)
        except AssertionError:
            seen = {"state": "timeout", "first": None}
        ok = seen.get("first") is not None
        try:
            if page.locator('[data-testid="hang-up"]').is_visible():
                hang_up(page)
            wait_call_over(page, 30)
            wait_call_over(self.callee_page, 30)
        except Exception as exc:  # a stuck page: start both over
            seen["cleanup_error"] = str(exc).splitlines()[0]
            self.reload()
        close_ended(self.callee_page)
        if ok:
            tl = seen["timeline"]
            seen["ms"] = round(seen["first"] - tl["clicked"], 1)
            seen["marks_ms"] = {k: round(v - tl["clicked"], 1) for k, v in tl.items()
                                if isinstance(v, int | float)}
        return seen

    def reload(self) -> None:
        for page in (self.caller_page, self.callee_page):
            page.reload()
            wait_ready(page)

    def close(self) -> None:
        self.caller_ctx.close()
        self.callee_ctx.close()


def close_ended(page: Any) -> None:
    """Dismiss an ended call's view, if it still shows."""
    done = page.locator('[data-testid="call-close"]')
    if done.count() and done.first.is_visible():
        done.first.click()


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [s["ms"] for s in samples if "ms" in s]
    signal = [s["signalMs"] for s in samples if isinstance(s.get("signalMs"), int | float)]
    couplers: dict[str, int] = {}
    for s in samples:
        couplers[str(s.get("coupler"))] = couplers.get(str(s.get("coupler")), 0) + 1
    return {
        "calls": len(samples), "failures": len(samples) - len(ms),
        "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "min_ms": min(ms) if ms else None, "max_ms": max(ms) if ms else None,
        "signal_p50_ms": pct(signal, 50), "signal_p95_ms": pct(signal, 95),
        "couplers": couplers,
    }


def environment(browser: Any) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE,
                              check=False).stdout.strip()

    return {"chromium": browser.version, "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
            "git_head": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="timed calls per path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per path first")
    parser.add_argument("--nodes", type=int, default=8, help="nodes of the DHT testnet")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a call may take to show a remote frame")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    path, why = chromium_path()
    if path is None:
        raise SystemExit(f"error: {why}")
    run_in_loopback_netns()

    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    started, load_before = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hailing-browser-calls-") as tmp, \
            testnet(args.nodes) as bootstrap, relay() as relay_url, \
            daemons(Path(tmp) / "dht", ("alice", "bob"), ["--bootstrap", bootstrap]) as dht, \
            daemons(Path(tmp) / "relay", ("alice", "bob"), ["--relay", relay_url]) as ws, \
            chromium() as browser:
        sides = {"dht": Side("dht", dht["alice"], dht["bob"], browser),
                 "relay": Side("relay", ws["alice"], ws["bob"], browser)}
        try:
            for _ in range(args.warmup):
                for p in PATHS:
                    sides[p].call(args.timeout)
            for i in range(args.calls):
                order = PATHS if i % 2 == 0 else PATHS[::-1]
                for p in order:
                    s = sides[p].call(args.timeout)
                    s["round"] = i
                    samples[p].append(s)
                    print(f"{p:5} {i + 1:3}/{args.calls} "
                          f"{s.get('ms', 'FAILED ' + str(s.get('state')))}",
                          file=sys.stderr, flush=True)
            env = environment(browser)
        finally:
            for side in sides.values():
                side.close()
    result: dict[str, Any] = {
        "benchmark": "browser_calls",
        "measure": "click on the video-call button to the first remote video frame "
                   "rendered at the caller (ms)",
        "config": {"calls": args.calls, "warmup": args.warmup, "nodes": args.nodes,
                   "timeout_s": args.timeout},
        "paths": {p: summary(samples[p]) for p in PATHS},
        "samples": samples,
        "duration_s": round(time.time() - started, 1),
        "environment": {**env, "loadavg_at_start": load_before},
    }
    dht_p50, relay_p50 = result["paths"]["dht"]["p50_ms"], result["paths"]["relay"]["p50_ms"]
    if dht_p50 and relay_p50:
        ratio = dht_p50 / relay_p50
        result["dht_over_relay_p50"] = round(ratio, 3)
        result["targets"] = {
            "no_failures": all(result["paths"][p]["failures"] == 0 for p in PATHS),
            "dht_p50_at_most_1.3x_relay": ratio <= 1.3}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
