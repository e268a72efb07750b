"""Chat and files in the web app: what one browser sends reaches the other through both
daemons (their links over the loopback DHT), history survives a reload, and a 5 MB file
shows its progress and lands in the receiver's downloads intact."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser_harness import Up, contact_row, wait_js, wait_until

#: JS: from now on, record every value a file-progress bar takes (with its row's phase).
RECORD_PROGRESS = """
() => {
  window.__progress = [];
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      const bar = m.target;
      if (!bar.dataset || bar.dataset.testid !== "file-progress" || !bar.hasAttribute("value")) continue;
      const row = bar.closest('[data-testid="file-transfer"]');
      window.__progress.push({ phase: row ? row.dataset.phase || "" : "",
                               value: Number(bar.value), max: Number(bar.max) });
    }
  }).observe(document.body, { attributes: true, subtree: true, attributeFilter: ["value", "max"] });
}
"""


def open_chat(page: Any, name: str) -> None:
    row = contact_row(page, name)
    row.wait_for(state="visible", timeout=60_000)
    opener = row.locator('[data-testid="contact-open"]')
    (opener if opener.count() else row).first.click()
    page.locator('[data-testid="chat-input"]').wait_for(state="visible", timeout=30_000)


def message(page: Any, text: str, direction: str) -> Any:
    return page.locator(f'[data-testid="chat-message"][data-direction="{direction}"]',
                        has_text=text)


def send_text(page: Any, text: str) -> None:
    page.locator('[data-testid="chat-input"]').fill(text)
    page.locator('[data-testid="chat-send"]').click()


def delivered(page: Any, text: str, timeout_ms: float = 60_000) -> None:
    """The outgoing message is shown, no longer pending, not failed."""
    out = message(page, text, "out").last
    out.wait_for(state="visible", timeout=timeout_ms)
    page.locator('[data-testid="chat-message"][data-direction="out"]:not([data-pending])'
                 ':not([data-failed])', has_text=text).last.wait_for(timeout=timeout_ms)


def test_chat_between_two_browsers_survives_a_reload(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    pa, pb = app(alice), app(bob)
    open_chat(pa, "bob")
    open_chat(pb, "alice")
    hello = "hello bob, from a browser"
    send_text(pa, hello)
    delivered(pa, hello)
    message(pb, hello, "in").wait_for(timeout=60_000)
    bob.wait_event(event="message", text=hello)
    reply = "hi alice: got it \N{GRINNING FACE}"
    send_text(pb, reply)
    delivered(pb, reply)
    message(pa, reply, "in").wait_for(timeout=60_000)

    for page, other in ((pa, "bob"), (pb, "alice")):
        page.reload()
        open_chat(page, other)
        for text in (hello, reply):
            page.locator('[data-testid="chat-message"]', has_text=text).first.wait_for(
                timeout=30_000)
    assert [m.get("text") for m in alice.history(bob.contact_id)][-2:] == [hello, reply]


def test_a_5_mb_file_with_progress(trio: dict[str, Up], app: Callable[[Up], Any],
                                   tmp_path: Path) -> None:
    alice, bob = trio["alice"], trio["bob"]
    data = os.urandom(5 * 1024 * 1024)
    path = tmp_path / "five-megabytes.bin"
    path.write_bytes(data)
    pa, pb = app(alice), app(bob)
    open_chat(pa, "bob")
    open_chat(pb, "alice")
    pa.evaluate(RECORD_PROGRESS)
    pa.locator('[data-testid="file-input"]').set_input_files(str(path))

    sent = pa.locator('[data-testid="chat-message"][data-direction="out"][data-kind="file"]',
                      has_text=path.name)
    sent.last.wait_for(timeout=120_000)
    got = pb.locator('[data-testid="chat-message"][data-direction="in"][data-kind="file"]',
                     has_text=path.name)
    got.last.wait_for(timeout=120_000)

    downloads = bob.data_dir / "downloads"

    def landed() -> Path | None:
        for f in downloads.glob("five-megabytes*"):
            if f.stat().st_size == len(data):
                return f
        return None
    received: Path = wait_until(landed, 60.0, "the file in bob's downloads")
    assert hashlib.sha256(received.read_bytes()).digest() == hashlib.sha256(data).digest()

    # The progress the sender saw: the upload to its daemon, then the transfer, partway
    # and to the end.
    progress = pa.evaluate("() => window.__progress")
    partway = [p for p in progress if 0 < p["value"] < p["max"]]
    assert partway, progress
    assert any(p["max"] >= len(data) and p["value"] >= len(data) for p in progress), progress
    assert {p["phase"] for p in partway} & {"upload", "send"}, progress

    # The receiver's browser downloads the same bytes from its daemon.
    href = got.last.locator('[data-testid="file-download"]').get_attribute("href")
    assert href
    size = wait_js(pb, "async (u) => (await (await fetch(u)).arrayBuffer()).byteLength", href)
    assert size == len(data)
