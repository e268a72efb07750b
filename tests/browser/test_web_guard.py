"""What a browser cannot do to a daemon: sign in with a wrong or spent code, use a wrong
token, or drive the API from another origin (a page of another 127.0.0.x site, or a
DNS-rebinding name that resolves to 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from browser_harness import REBIND_HOST, Up, new_context, static_page

PAGE = b"<!doctype html><title>another site</title><p>another site"

#: JS run by a foreign page: a simple POST (no preflight), a GET with credentials and a
#: WebSocket to the daemon. What each did, as the page sees it.
FOREIGN_ATTEMPTS = """
async (api) => {
  const out = {};
  try {
    const r = await fetch(api + "/api/status", {
      method: "POST", mode: "no-cors", credentials: "include",
      headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ status: "dnd" }) });
    out.post = r.type;
  } catch (e) { out.post = "error"; }
  try {
    const r = await fetch(api + "/api/contacts", { credentials: "include" });
    out.get = r.status;
  } catch (e) { out.get = "error"; }
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(api.replace("http:", "ws:") + "/api/events");
    ws.onopen = () => { resolve("open"); ws.close(); };
    ws.onclose = (e) => resolve("closed " + e.code);
  });
  return out;
}
"""


@pytest.mark.parametrize("host", ["127.0.0.2", "127.0.0.1"],
                         ids=["another-site", "same-site-another-port"])
def test_a_page_of_another_origin_cannot_drive_the_daemon(
        trio: dict[str, Up], app: Callable[[Up], Any], host: str) -> None:
    """A page of another origin, in the browser that is signed in: on another loopback
    address (another site: the SameSite=Strict cookie stays home) or on another port of
    127.0.0.1 (the same site: the cookie goes along, so only the Origin check stops it).
    Its POST changes nothing, it reads nothing, and its WebSocket is refused (403)."""
    alice = trio["alice"]
    page = app(alice)  # signed in: this context holds the session cookie
    before = alice.ok("GET", "/api/status")["status"]
    assert before != "dnd"
    with static_page(PAGE, host=host) as origin:
        other = page.context.new_page()
        console: list[str] = []
        other.on("console", lambda m: console.append(m.text))
        other.goto(origin + "/")
        out = other.evaluate(FOREIGN_ATTEMPTS, alice.url)
    assert out["get"] == "error", out  # no CORS: the page reads nothing
    assert out["ws"] != "open", out
    assert any("WebSocket" in line and "403" in line for line in console), console
    assert alice.ok("GET", "/api/status")["status"] == before  # the POST changed nothing
    # The same requests from the app's own page work (the test would prove nothing else).
    own = page.evaluate(FOREIGN_ATTEMPTS.replace('"dnd"', '"busy"'), alice.url)
    assert own["get"] == 200 and own["ws"] == "open", own
    assert alice.ok("GET", "/api/status")["status"] == "busy"
    alice.ok("POST", "/api/status", {"status": before})


def test_a_rebinding_host_name_is_refused(trio: dict[str, Up], browser: Any) -> None:
    """A name that resolves to 127.0.0.1 (DNS rebinding) reaches the port, but the daemon
    answers only to its own Host: the app is not served, its API refuses."""
    alice = trio["alice"]
    ctx = new_context(browser, alice)
    try:
        page = ctx.new_page()
        rebound = alice.url.replace("127.0.0.1", REBIND_HOST)
        resp = page.goto(rebound + "/")
        assert resp is not None and resp.status == 403, resp and resp.status
        status = page.evaluate("async () => (await fetch('/api/status')).status")
        assert status == 403
        assert page.locator('[data-testid="my-card"]').count() == 0
    finally:
        ctx.close()


def test_a_wrong_or_spent_code_and_a_wrong_token_are_refused(
        trio: dict[str, Up], browser: Any) -> None:
    alice = trio["alice"]
    ctx = new_context(browser, alice)
    try:
        page = ctx.new_page()
        resp = page.goto(alice.url + "/open?code=not-a-code")
        assert resp is not None and resp.status in (401, 403), resp and resp.status
        assert not ctx.cookies(), ctx.cookies()
        assert page.evaluate("async () => (await fetch('/api/status')).status") == 401
        assert page.locator('[data-testid="my-card"]:visible').count() == 0

        # A code opens the app once: a second browser cannot reuse it.
        url = alice.login_url()
        one = browser.new_context()
        try:
            ok = one.new_page()
            ok.goto(url)
            ok.wait_for_url(alice.url + "/", timeout=30_000)
            assert ok.evaluate("async () => (await fetch('/api/status')).status") == 200
            again = page.goto(url)
            assert again is not None and again.status in (401, 403), again and again.status
            assert not ctx.cookies()
        finally:
            one.close()

        # The bearer token, wrong, from the app's own origin.
        wrong = page.evaluate("""async () => (await fetch('/api/status', {
            headers: { Authorization: 'Bearer not-the-token' } })).status""")
        assert wrong == 401
        right = page.evaluate("""async (token) => (await fetch('/api/status', {
            headers: { Authorization: 'Bearer ' + token } })).status""", alice.token)
        assert right == 200
    finally:
        ctx.close()
