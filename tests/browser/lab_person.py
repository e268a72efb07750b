"""One person of the NAT lab's browser test: a ``hailing up`` daemon and a real Chromium
in the same network namespace (behind the same home router), driven through this
process's stdin and stdout.

Run inside a lab host's namespace (``host.popen``), so that this process, Playwright's
driver, Chromium and the daemon all see only that namespace's interfaces::

    python tests/browser/lab_person.py NAME DATA_DIR BOOTSTRAP [SHOT_DIR]

It starts ``hailing up --bootstrap BOOTSTRAP`` (its identity and contacts made already in
DATA_DIR), then Chromium (the browser suite's flags, :mod:`browser_harness`, without
``--allow-loopback-in-peer-connection``: ICE here gathers lab addresses, never loopback),
and signs a page in to the daemon's web app. Then one JSON command a line on stdin
(``{"op": ..., ...}``), one reply a line on stdout: ``@@ {"ok": true, "result": ...}``
or ``@@ {"ok": false, "error": "..."}`` (only reply lines start with ``@@``). The first
reply comes once the page is ready (``result``: the contact id). ``{"op": "quit"}``, or
the end of stdin, stops everything. Every wait is bounded by the command's ``timeout``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser_harness import (
    CHROMIUM_ARGS,
    Up,
    accept_call,
    chromium,
    frames_decoded,
    hang_up,
    new_context,
    open_app,
    start_call,
    wait_call_over,
    wait_frames_increase,
    wait_js,
    wait_until,
)

#: The browser suite's flags, but the one that lets ICE use loopback (not needed here).
LAB_CHROMIUM_ARGS = tuple(a for a in CHROMIUM_ARGS
                          if a != "--allow-loopback-in-peer-connection")

#: Before the app's code: every answer of ``GET /api/ice`` the page received (the JSON).
RECORD_ICE = """
(() => {
  if (window.__iceAnswers) return;
  window.__iceAnswers = [];
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {
    const res = await fetch0(...args);
    const url = String(args[0] && args[0].url ? args[0].url : args[0]);
    if (url.split("?")[0].endsWith("/api/ice")) {
      res.clone().json().then((j) => window.__iceAnswers.push(j), () => {});
    }
    return res;
  };
})();
"""

#: JS: what the page's connections used: each one's configured iceServers (as the page
#: gave them to RTCPeerConnection) and its local and remote candidates (getStats).
PAGE_ICE = """
async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    const cands = [];
    if (pc.connectionState !== "closed") {
      (await pc.getStats()).forEach((s) => {
        if (s.type === "local-candidate" || s.type === "remote-candidate") {
          cands.push({ side: s.type === "local-candidate" ? "local" : "remote",
                       type: s.candidateType, address: s.address || s.ip || "",
                       port: s.port, protocol: s.protocol, url: s.url || "",
                       relayProtocol: s.relayProtocol || "" });
        }
      });
    }
    out.push({ iceServers: pc.getConfiguration().iceServers || [],
               state: pc.connectionState, candidates: cands });
  }
  return { answers: window.__iceAnswers || [], pcs: out };
}
"""

#: JS: the current call's stats path (callstats.js), once ICE selected a pair.
STATS_PATH = """
async () => {
  const calls = window.hailingCalls;
  if (!calls || !calls.current) return null;
  const s = await calls.refreshStats();
  return s && s.path && s.path.local !== "?" && s.path.remote !== "?" ? s.path : null;
}
"""


def lab_env() -> dict[str, str]:
    """The daemon's environment in the lab: this checkout's sources, no hailing setting
    of the caller's (no ICE host restriction: the namespace has lab addresses only)."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILING_")}
    env["PYTHONPATH"] = src
    env["PYTHONUNBUFFERED"] = "1"
    env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    return env


def reply(ok: bool, value: Any) -> None:
    key = "result" if ok else "error"
    sys.stdout.write("@@ " + json.dumps({"ok": ok, key: value}) + "\n")
    sys.stdout.flush()


class Person:
    """The daemon, the browser page, and the commands (``op_*``)."""

    def __init__(self, up: Up, page: Any) -> None:
        self.up = up
        self.page = page

    def op_api(self, method: str = "GET", path: str = "/api/ice", body: Any = None) -> Any:
        status, answer = self.up.request(method, path, body)
        return {"status": status, "body": answer}

    def op_wait_ice(self, timeout: float = 90.0) -> Any:
        """Until the daemon's ``/api/ice`` has a STUN server and a relay."""
        def both() -> Any:
            _, body = self.up.request("GET", "/api/ice")
            urls = [u for s in (body or {}).get("iceServers", []) for u in s.get("urls", [])]
            has = (any(u.startswith("stun:") for u in urls)
                   and any(u.startswith("turn:") for u in urls))
            return body if has else None

        return wait_until(both, timeout, f"{self.up.name}'s /api/ice with stun: and turn:")

    def op_call(self, name: str, media: str = "video") -> Any:
        start_call(self.page, name, media)
        return True

    def op_accept(self, timeout: float = 90.0) -> Any:
        accept_call(self.page, timeout_ms=timeout * 1000)
        return True

    def op_frames(self, timeout: float = 90.0) -> Any:
        """Remote video frames decoded: more than none, then more again."""
        first = wait_frames_increase(self.page, 0, timeout_s=timeout)
        second = wait_frames_increase(self.page, first, timeout_s=timeout)
        return [first, second]

    def op_frames_now(self) -> Any:
        return frames_decoded(self.page)

    def op_path(self, timeout: float = 60.0, want: str = "") -> Any:
        """The call's stats path: ``{"first": the first one seen, "path": ...}``; with
        ``want`` ("direct" or "relayed") ``path`` is the first one seen that is such (the
        last one seen when none was, within ``timeout``), else the first."""
        first = wait_js(self.page, STATS_PATH, timeout_s=timeout)
        if not want:
            return {"first": first, "path": first}

        def matches() -> Any:
            path = self.page.evaluate(STATS_PATH)
            relayed = bool(path) and "relay" in (path["local"], path["remote"])
            return path if path and relayed == (want == "relayed") else None

        try:
            return {"first": first, "path": wait_until(matches, timeout, f"a {want} path")}
        except AssertionError:
            return {"first": first, "path": self.page.evaluate(STATS_PATH)}

    def op_ice_used(self) -> Any:
        return self.page.evaluate(PAGE_ICE)

    def op_stats_panel(self, timeout: float = 60.0) -> Any:
        """The stats panel's ``data-path`` and text, once it shows a path and media
        coming in (a received bitrate above 0)."""
        wait_js(self.page, """() => { const b = document.querySelector(
            '[data-testid="call-stats"]'); return b && b.dataset.path
            && Number(b.dataset.recvKbps) > 0; }""", timeout_s=timeout)
        box = self.page.locator('[data-testid="call-stats"]')
        return {"path": box.get_attribute("data-path"), "text": box.inner_text()}

    def op_screenshot(self, path: str) -> Any:
        self.page.screenshot(path=path)
        return path

    def op_hang_up(self, timeout: float = 60.0) -> Any:
        hang_up(self.page)
        wait_call_over(self.page, timeout_s=timeout)
        return True

    def op_call_over(self, timeout: float = 60.0) -> Any:
        wait_call_over(self.page, timeout_s=timeout)
        return True


def main(argv: list[str]) -> int:
    name, data_dir, bootstrap = argv[:3]
    up: Up | None = None
    try:
        up = Up(name, Path(data_dir), ["--bootstrap", bootstrap], env=lab_env())
        with chromium(args=LAB_CHROMIUM_ARGS) as browser:
            ctx = new_context(browser, up)
            ctx.add_init_script(RECORD_ICE)
            page = open_app(ctx, up)
            person = Person(up, page)
            reply(True, up.contact_id)
            for line in sys.stdin:
                if not line.strip():
                    continue
                cmd = json.loads(line)
                op = cmd.pop("op")
                if op == "quit":
                    reply(True, None)
                    break
                handler: Callable[..., Any] | None = getattr(person, "op_" + op, None)
                try:
                    if handler is None:
                        raise ValueError(f"no such command {op!r}")
                    reply(True, handler(**cmd))
                except Exception:  # the test reads it and fails with it
                    reply(False, traceback.format_exc()[-3000:])
            ctx.close()
    except Exception:
        reply(False, traceback.format_exc()[-3000:]
              + ("" if up is None else "\n" + up.p.output()[-3000:]))
        return 1
    finally:
        if up is not None:
            up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
