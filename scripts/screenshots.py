"""Screenshots of the web app's main screens, in headless Chromium, into docs/ui/.

Run by ``scripts/screenshots.sh``. The scene is built with the browser tests' harness
(``tests/browser/browser_harness.py``): a loopback testnet, three ``hailing up`` daemons
(alice, bob, carol; friends of each other, and of dave, who is never online) and one
Chromium context each, in a network namespace with only ``lo`` (re-run under
``unshare --net`` when needed). Then, as a person would:

- ``contacts-chat.png``: alice's contacts and her chat with bob (a few messages and a file);
- ``card.png``: alice's contact card with its QR code (the add-contact dialog's partner);
- ``incoming-call.png``: bob's page while alice calls him with video;
- ``in-call.png``: alice in the video call, with the live stats;
- ``call-log.png``: bob's recent calls: alice's video call, carol's missed call, bob's
  own call to dave (offline) given up, carol's call refused while bob was busy.

    python scripts/screenshots.py [--out docs/ui] [--width 1100 --height 700]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "browser"))
sys.path.insert(0, str(REPO / "src"))

from browser_harness import (  # noqa: E402
    accept_call,
    chromium,
    chromium_path,
    contact_row,
    daemons,
    hang_up,
    new_context,
    open_app,
    run_in_loopback_netns,
    start_call,
    testnet,
    wait_call_over,
    wait_frames_increase,
    wait_js,
    wait_ready,
    wait_until,
)


def shoot(page: Any, out: Path, name: str) -> None:
    """A PNG of the page's viewport, after fonts and layout settled."""
    page.evaluate("() => document.fonts && document.fonts.ready")
    time.sleep(0.3)  # let transitions end: a screenshot, not a measurement
    path = out / name
    page.screenshot(path=str(path), type="png")
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
          f"({path.stat().st_size // 1024} KB)", file=sys.stderr)


def close_view(page: Any) -> None:
    """Dismiss an ended call's view, if it still shows."""
    close = page.locator('[data-testid="call-close"]')
    if close.count() and close.first.is_visible():
        close.first.click()


def open_chat(page: Any, name: str) -> None:
    row = contact_row(page, name)
    row.wait_for(state="visible", timeout=60_000)
    opener = row.locator('[data-testid="contact-open"]')
    (opener if opener.count() else row).first.click()
    page.locator('[data-testid="chat-input"]').wait_for(state="visible", timeout=30_000)


def say(page: Any, text: str) -> None:
    page.locator('[data-testid="chat-input"]').fill(text)
    page.locator('[data-testid="chat-send"]').click()
    page.locator('[data-testid="chat-message"][data-direction="out"]:not([data-pending])',
                 has_text=text).last.wait_for(timeout=60_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "ui"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=700)
    args = parser.parse_args()
    path, why = chromium_path()
    if path is None:
        raise SystemExit(f"error: {why}")
    run_in_loopback_netns()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    view = (args.width, args.height)

    with tempfile.TemporaryDirectory(prefix="hailing-screens-") as tmp, \
            testnet(8) as bootstrap, \
            daemons(Path(tmp), ("alice", "bob", "carol"), ["--bootstrap", bootstrap],
                    offline=("dave",)) as ups, \
            chromium() as browser:
        bob = ups["bob"]
        pages = {}
        for name, up in ups.items():
            pages[name] = open_app(new_context(browser, up, viewport=view), up)
        pa, pb, pc = pages["alice"], pages["bob"], pages["carol"]

        # Contacts and a chat.
        open_chat(pa, "bob")
        open_chat(pb, "alice")
        say(pa, "Hi Bob! Are we still on for the climbing trip on Saturday?")
        say(pb, "Yes! I'll bring the ropes. Can you send me the map?")
        notes = Path(tmp) / "route-map.pdf"
        notes.write_bytes(b"%PDF-1.4\n" + bytes(180_000))
        pa.locator('[data-testid="file-input"]').set_input_files(str(notes))
        pa.locator('[data-testid="chat-message"][data-kind="file"]').last.wait_for(
            timeout=120_000)
        say(pa, "Here it is. Call you tonight?")
        say(pb, "Sure, after 8.")
        pa.locator('[data-testid="chat-message"][data-direction="in"]',
                   has_text="after 8").last.wait_for(timeout=60_000)
        shoot(pa, out, "contacts-chat.png")

        # The contact card with its QR code.
        pa.locator('[data-testid="show-card"]').click()
        pa.locator('[data-testid="my-qr"]').wait_for(state="visible", timeout=30_000)
        wait_js(pa, "() => { const i = document.querySelector('[data-testid=\"my-qr\"]');"
                    " return i && i.complete && i.naturalWidth > 0; }")
        shoot(pa, out, "card.png")
        pa.locator('[data-testid="close-card"]').click()

        # Connect by text: carol's offer for alice, with its QR code.
        pc.locator('[data-testid="show-couple"]').click()
        pc.locator('[data-testid="couple-contact"]').select_option(label="alice")
        pc.locator('[data-testid="couple-make-offer"]').click()
        wait_js(pc, "() => { const i = document.querySelector("
                    "'[data-testid=\"couple-offer-qr\"]');"
                    " return i && i.complete && i.naturalWidth > 0; }")
        shoot(pc, out, "connect-by-text.png")
        pc.locator('[data-testid="close-couple"]').click()

        # A missed call for bob's call log: carol calls, then gives up.
        start_call(pc, "bob", "audio")
        pb.locator('[data-testid="incoming-call"]').wait_for(state="visible", timeout=60_000)
        hang_up(pc)
        wait_call_over(pc)
        pb.locator('[data-testid="incoming-call"]').wait_for(state="hidden", timeout=60_000)

        # An incoming video call, then the call itself.
        start_call(pa, "bob", "video")
        pb.locator('[data-testid="incoming-call"]').wait_for(state="visible", timeout=60_000)
        shoot(pb, out, "incoming-call.png")
        accept_call(pb)
        for page in (pa, pb):
            wait_frames_increase(page, 30)
        pa.locator('[data-testid="call-stats"] [data-stat="rtt"]').wait_for(timeout=30_000)
        time.sleep(2.5)  # the stats show rates over a few seconds
        shoot(pa, out, "in-call.png")
        hang_up(pa)
        wait_call_over(pa)
        wait_call_over(pb)
        close_view(pb)
        # More for the log: bob gives up calling dave (offline); carol calls while bob is
        # busy (refused: logged on bob's side only) and gives up.
        start_call(pb, "dave", "audio")
        wait_js(pb, "() => document.querySelector('[data-testid=\"call-state\"]')"
                    "?.dataset.state === 'calling'")
        time.sleep(1.0)
        hang_up(pb)
        wait_call_over(pb)
        close_view(pb)
        bob.ok("POST", "/api/status", {"status": "busy"})
        start_call(pc, "bob", "video")
        wait_until(lambda: any(c["state"] == "refused"
                               for c in bob.ok("GET", "/api/calls?limit=3")["calls"]),
                   60, "bob's log of carol's refused call")
        hang_up(pc)
        wait_call_over(pc)
        bob.ok("POST", "/api/status", {"status": "available"})
        pb.reload()
        wait_ready(pb)
        open_chat(pb, "alice")
        pb.locator('[data-testid="call-log"]').scroll_into_view_if_needed()
        pb.locator('[data-testid="missed-call"]').first.wait_for(timeout=30_000)
        shoot(pb, out, "call-log.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
