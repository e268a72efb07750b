"""Chat and files in the web app: what one browser sends reaches the other through both
daemons (their links over the loopback DHT), history survives a reload, and a 5 MB file
shows its progress and lands in the receiver's downloads intact."""

from __future__ import annotations

import hashlib
import json
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


def test_connect_by_text_between_a_page_and_the_cli(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    """carol's page makes an offer text for alice (with its QR code), alice answers it
    with ``hailing couple answer`` (another process), carol's page pastes the answer and
    connects: both daemons have the link, and carol's chat to alice goes over it. Then
    the other way: ``hailing couple offer bob`` by carol, bob's page answers it, carol
    finishes with the CLI and bob's page says it is connected."""
    import subprocess

    from browser_harness import HAILING

    alice, carol = trio["alice"], trio["carol"]
    pc = app(carol)
    mark_a, mark_c = alice.mark(), carol.mark()
    pc.locator('[data-testid="show-couple"]').click()
    pc.locator('[data-testid="couple-contact"]').select_option(label="alice")
    pc.locator('[data-testid="couple-make-offer"]').click()
    offer_text = pc.locator('[data-testid="couple-offer-text"]')
    offer_text.wait_for(state="visible", timeout=30_000)
    offer = offer_text.inner_text().strip()
    assert offer.startswith("hailing:1:o:")
    wait_js(pc, "() => { const i = document.querySelector('[data-testid=\"couple-offer-qr\"]');"
                " return i && i.complete && i.naturalWidth > 0; }")
    # a damaged answer is one clear line in the dialog, and nothing connects
    pc.locator('[data-testid="couple-answer-in"]').fill("hailing:1:a:AAAA")
    pc.locator('[data-testid="couple-finish"]').click()
    error = pc.locator('[data-testid="couple-error"]')
    error.wait_for(state="visible", timeout=30_000)
    assert "damaged" in error.inner_text()

    answered = subprocess.run([*HAILING, "couple", "answer", "-", "--data-dir",
                               str(alice.data_dir)], input=offer, capture_output=True,
                              text=True, timeout=60, env=alice.env, check=False)
    assert answered.returncode == 0, answered.stderr
    answer = answered.stdout.strip()
    assert answer.startswith("hailing:1:a:")
    pc.locator('[data-testid="couple-answer-in"]').fill(answer)
    pc.locator('[data-testid="couple-finish"]').click()
    status = pc.locator('[data-testid="couple-status"]', has_text="Connected to alice")
    status.wait_for(state="visible", timeout=60_000)
    assert pc.locator('[data-testid="couple-error"]').is_hidden()
    carol.wait_event(mark_c, event="connected", to=alice.contact_id, via="text")
    alice.wait_event(mark_a, event="connected", **{"from": carol.contact_id})
    pc.locator('[data-testid="close-couple"]').click()

    open_chat(pc, "alice")
    text = "sent over the link two texts opened"
    send_text(pc, text)
    delivered(pc, text)
    alice.wait_event(mark_a, event="message", text=text)
    links = [lk for lk in carol.ok("GET", "/api/links")["links"]
             if lk["contact"] == alice.contact_id]
    assert len(links) == 1 and links[0]["outgoing"] is True

    bob = trio["bob"]
    pb = app(bob)
    offered = subprocess.run([*HAILING, "couple", "offer", "bob", "--data-dir",
                              str(carol.data_dir)], capture_output=True, text=True,
                             timeout=60, env=carol.env, check=False)
    assert offered.returncode == 0, offered.stderr
    pb.locator('[data-testid="show-couple"]').click()
    pb.locator('[data-testid="couple-tab-answer"]').click()
    pb.locator('[data-testid="couple-offer-in"]').fill(offered.stdout.strip())
    pb.locator('[data-testid="couple-make-answer"]').click()
    answer_text = pb.locator('[data-testid="couple-answer-text"]')
    answer_text.wait_for(state="visible", timeout=30_000)
    assert "carol" in pb.locator('[data-testid="couple-answer-note"]').inner_text()
    finished = subprocess.run([*HAILING, "couple", "finish", answer_text.inner_text().strip(),
                               "--data-dir", str(carol.data_dir)], capture_output=True,
                              text=True, timeout=90, env=carol.env, check=False)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["to"] == bob.contact_id
    pb.locator('[data-testid="couple-status"]', has_text="Connected to carol").wait_for(
        state="visible", timeout=60_000)


#: JS: every shown button, field and tab of the Connect-by-text dialog, each with where it
#: is and whether a click at its centre reaches it (not cut off by the window or by the
#: dialog's scrolling body); and the body's scroll and visible heights.
DIALOG_CONTROLS = """
() => {
  const dialog = document.querySelector('[data-testid="couple-dialog"]');
  const body = dialog.querySelector('[data-testid="couple-body"]') || dialog;
  const shown = [...dialog.querySelectorAll("button, textarea, select")]
    .filter((e) => e.getClientRects().length > 0);
  const controls = shown.map((e) => {
    const r = e.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return { id: e.dataset.testid, inBody: body.contains(e), top: r.top, bottom: r.bottom,
             left: r.left, right: r.right, reached: hit === e || e.contains(hit) };
  });
  return { controls, scrollHeight: body.scrollHeight, clientHeight: body.clientHeight,
           width: innerWidth, height: innerHeight };
}
"""


def focused(page: Any) -> str | None:
    return page.evaluate("() => document.activeElement?.dataset?.testid ?? null")


def test_connect_by_text_dialog_fits_the_window_and_works_from_the_keyboard(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    """The dialog with an offer in it (text, QR code, the answer field): at 1100x700 all
    of it shows at once, every button inside the window; at 800x600 too, or its body
    scrolls to what does not fit while the tabs and Close stay in view. From the
    keyboard: focus starts on the contact, goes to Copy offer once the offer is made, then
    on through the offer text, the answer field and Connect to Close; the arrow keys
    switch sides; Escape closes it."""
    bob = trio["bob"]
    page = app(bob)
    page.set_viewport_size({"width": 1100, "height": 700})
    page.locator('[data-testid="show-couple"]').click()
    assert focused(page) == "couple-contact"
    page.locator('[data-testid="couple-contact"]').select_option(label="dave")
    page.locator('[data-testid="couple-make-offer"]').click()
    page.locator('[data-testid="couple-offer-text"]').wait_for(state="visible", timeout=30_000)
    wait_js(page, "() => { const i = document.querySelector('[data-testid=\"couple-offer-qr\"]');"
                  " return i && i.complete && i.naturalWidth > 0; }")
    assert focused(page) == "couple-copy-offer"

    for width, height in ((1100, 700), (800, 600)):
        page.set_viewport_size({"width": width, "height": height})
        seen = page.evaluate(DIALOG_CONTROLS)
        assert (seen["width"], seen["height"]) == (width, height), seen
        ids = {c["id"] for c in seen["controls"]}
        for c in seen["controls"]:  # the tabs and Close are outside the scrolling body
            assert c["inBody"] == (c["id"] not in {"couple-tab-offer", "couple-tab-answer",
                                                   "close-couple"}), c
        assert {"couple-tab-offer", "couple-tab-answer", "couple-make-offer",
                "couple-copy-offer", "couple-answer-in", "couple-finish",
                "close-couple"} <= ids, seen
        if (width, height) == (1100, 700):  # everything at once, nothing to scroll
            assert seen["scrollHeight"] <= seen["clientHeight"], seen
        for c in seen["controls"]:
            if c["inBody"] and not c["reached"]:
                continue  # scrolled out of the body's view: reached below
            assert c["left"] >= 0 and c["right"] <= width, (width, height, c)
            assert c["top"] >= 0 and c["bottom"] <= height, (width, height, c)
            assert c["reached"], (width, height, c)
        for c in seen["controls"]:
            if not c["reached"]:  # only the scrolling body may hide something
                assert c["inBody"] and seen["scrollHeight"] > seen["clientHeight"], seen
                page.locator(f'[data-testid="{c["id"]}"]').scroll_into_view_if_needed()
                again = {d["id"]: d for d in page.evaluate(DIALOG_CONTROLS)["controls"]}
                assert again[c["id"]]["reached"], (width, height, again[c["id"]])
                assert again["close-couple"]["reached"], again

    page.set_viewport_size({"width": 1100, "height": 700})
    for expected in ("couple-offer-text", "couple-answer-in", "couple-finish", "close-couple"):
        page.keyboard.press("Tab")
        assert focused(page) == expected
    page.locator('[data-testid="couple-tab-offer"]').focus()
    page.keyboard.press("ArrowRight")
    assert focused(page) == "couple-tab-answer"
    assert page.locator('[data-testid="couple-tab-answer"]').get_attribute(
        "aria-selected") == "true"
    assert page.locator('[data-testid="couple-answer"]').is_visible()
    assert page.locator('[data-testid="couple-offer"]').is_hidden()
    page.keyboard.press("ArrowRight")  # wraps around
    assert focused(page) == "couple-tab-offer"
    page.keyboard.press("Escape")
    assert page.evaluate("() => document.querySelector('[data-testid=\"couple-dialog\"]').open"
                         ) is False
