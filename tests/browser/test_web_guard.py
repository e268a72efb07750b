"""What a browser cannot do to a daemon: sign in with a wrong or spent code, use a wrong
token, or drive the API from another origin (a page of another 127.0.0.x site, or a
DNS-rebinding name that resolves to 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def daemon_responses(page: Any, up: Up) -> list[tuple[str, int]]:
    """(url, status) of every response the page gets from ``up``'s port, as they come."""
    seen: list[tuple[str, int]] = []
    page.on("response", lambda r: seen.append((r.url, r.status))
            if r.url.startswith(up.url) else None)
    return seen


def test_a_page_of_another_origin_cannot_drive_the_daemon(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice = trio["alice"]
    page = app(alice)  # signed in: this context holds the session cookie
    before = alice.ok("GET", "/api/status")["status"]
    with static_page(PAGE, host="127.0.0.2") as origin:
        other = page.context.new_page()
        other.goto(origin + "/")
        seen = daemon_responses(other, alice)
        out = other.evaluate(FOREIGN_ATTEMPTS, alice.url)
    assert out["get"] == "error", out  # no CORS: the page reads nothing
    assert out["ws"] != "open", out
    assert alice.ok("GET", "/api/status")["status"] == before  # the POST changed nothing
    assert seen, "the daemon answered nothing at all"
    assert {status for _, status in seen} == {403}, seen


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
